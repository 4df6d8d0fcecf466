//! Serving the sandbox's AWS endpoint, with the two network faults a plain `axum::serve` cannot make: resetting
//! one connection after its call was carried out (a lost answer), and refusing every connection for a while (an
//! endpoint outage).
//!
//! Each connection is served by hyper on its own task. Its [`ConnectionHandle`] travels in the request's
//! extensions, so a handler can ask for the connection to be reset; the task then drops it with `SO_LINGER` 0,
//! which makes the kernel send a TCP RST, exactly what a client sees when a NAT gateway forgets a flow.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Lets a handler reset the connection its request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    reset: Arc<Notify>,
}

impl ConnectionHandle {
    /// Resets the connection: no answer is written, the client's read fails with "connection reset".
    pub(crate) fn reset(&self) {
        self.reset.notify_one();
    }
}

/// Asks a running endpoint for an outage.
#[derive(Debug, Clone)]
pub(crate) struct OutageSwitch {
    requests: mpsc::UnboundedSender<Duration>,
}

impl OutageSwitch {
    /// Closes every open connection and refuses new ones (nothing listens on the port) for `length`.
    pub(crate) fn refuse_connections(&self, length: Duration) {
        // Fails only once the endpoint is stopped, when there is nothing left to refuse.
        let _ = self.requests.send(length);
    }
}

/// A switch, and the receiver [`serve`] takes its requests from.
pub(crate) fn outage_switch() -> (OutageSwitch, mpsc::UnboundedReceiver<Duration>) {
    let (requests, receiver) = mpsc::unbounded_channel();
    (OutageSwitch { requests }, receiver)
}

/// Accepts and serves connections until `stop` fires; an outage request closes the listener and every open
/// connection, waits, and binds the same address again.
pub(crate) async fn serve(
    mut listener: TcpListener,
    app: Router,
    mut outages: mpsc::UnboundedReceiver<Duration>,
    mut stop: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            Some(length) = outages.recv() => {
                drop(listener);
                connections.abort_all();
                tracing::info!(%addr, ?length, "AWS endpoint outage: refusing connections");
                tokio::select! {
                    _ = &mut stop => return Ok(()),
                    () = tokio::time::sleep(length) => {}
                }
                listener = rebind(addr).await?;
                tracing::info!(%addr, "AWS endpoint back");
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    while connections.try_join_next().is_some() {}
                    connections.spawn(serve_connection(stream, app.clone()));
                }
                // A connection that failed before it was accepted (reset by the client, say) is its own business.
                Err(err) => tracing::debug!(%err, "accept failed"),
            },
        }
    }
}

/// Binds `addr` again after an outage. The port was ours a moment ago; a client's connection still in TIME_WAIT
/// does not stand in the way (tokio sets `SO_REUSEADDR`), but give the kernel a few tries.
async fn rebind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(err) if tries < 50 => {
                tries += 1;
                tracing::debug!(%addr, %err, "rebinding the AWS endpoint");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => return Err(anyhow::Error::from(err).context(format!("bind {addr} again after an outage"))),
        }
    }
}

async fn serve_connection(stream: TcpStream, app: Router) {
    let fd = stream.as_raw_fd();
    let reset = Arc::new(Notify::new());
    let handle = ConnectionHandle {
        reset: Arc::clone(&reset),
    };
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(handle.clone());
        app.clone().oneshot(request)
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(err) = result {
                tracing::debug!(%err, "AWS endpoint connection ended");
            }
        }
        () = reset.notified() => {
            // The stream is still open here (the connection owns it until the end of this arm).
            linger_zero(fd);
        }
    }
}

/// Sets `SO_LINGER` to zero seconds, so closing the socket sends a RST instead of a FIN.
fn linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` belongs to a TcpStream that is still open (the caller holds it), and the option value is a
    // properly sized `linger` struct. No Rust-side state depends on the option.
    let result = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::from_ref(&linger).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::linger>()).unwrap_or(libc::socklen_t::MAX),
        )
    };
    if result != 0 {
        tracing::warn!(err = %std::io::Error::last_os_error(), "could not set SO_LINGER; the connection closes with a FIN");
    }
}
