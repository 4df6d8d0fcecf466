//! Ticks for `reconcile_all_on`, from a watch of something every plan depends on (policies,
//! namespace labels, the stop ConfigMap).

use futures::StreamExt;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

/// A stream that ticks after each item of `changes`, bursts coalesced into one pending tick
/// (one tick reconciles every plan, so a second queued behind it adds nothing). The watch is
/// driven by a task of its own, so its store stays current even while nobody polls the ticks;
/// it stops at `shutdown`.
pub fn coalesced_ticks(
    mut changes: BoxStream<'static, ()>,
    shutdown: CancellationToken,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let (tick, ticks) = tokio::sync::mpsc::channel::<()>(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                change = changes.next() => match change {
                    // A full channel already holds a tick that will re-check every plan.
                    Some(()) => { let _ = tick.try_send(()); }
                    None => break,
                },
                () = shutdown.cancelled() => break,
            }
        }
    });
    futures::stream::unfold(
        ticks,
        |mut ticks| async move { ticks.recv().await.map(|()| ((), ticks)) },
    )
}
