//! kill -9 of `pitstop run`, at random moments or right after SendCommand, each followed by a restart on the same
//! state file, until the plan is done.

use std::time::Duration;

use anyhow::Context;

use super::ChaosConfig;
use super::run::{Run, RunOutcome};
use crate::sandbox::{LostAnswer, LostAnswerMode, Sandbox};

/// Kills per run at the most; after them the run is let finish.
const MAX_KILLS: u32 = 8;

/// Kills `pitstop run` after a random 0.1–3 s, again and again, restarting it each time.
pub(super) async fn random_kills(sandbox: &Sandbox, config: &ChaosConfig, name: &str) -> anyhow::Result<RunOutcome> {
    let run = Run::start(sandbox, config, name)?;
    let mut kills = 0;
    while kills < MAX_KILLS && !run.overdue() {
        let mut child = run.command(&[]).spawn().context("start pitstop run")?;
        let after = Duration::from_millis(fastrand::u64(100..3000));
        tokio::select! {
            status = child.wait() => {
                let status = status.context("wait for pitstop run")?;
                return run.end(kills, status.success()).await;
            }
            () = tokio::time::sleep(after) => {
                child.start_kill().context("kill -9")?;
                let _ = child.wait().await;
                kills += 1;
            }
        }
    }
    let succeeded = run.finish_pitstop(&[]).await?;
    run.end(kills, succeeded).await
}

/// How long the sandbox holds each SendCommand answer in this scenario (well within the attempt limit), so that
/// the kill always lands after AWS acted and before pitstop heard back: the window a crash is most costly in.
const ANSWER_DELAY: Duration = Duration::from_millis(400);

/// Kills `pitstop run` the moment the sandbox has carried out a SendCommand, before pitstop can have recorded its
/// answer, once per command; restarts it each time.
pub(super) async fn kills_after_send(
    sandbox: &Sandbox,
    config: &ChaosConfig,
    name: &str,
) -> anyhow::Result<RunOutcome> {
    sandbox.faults().set_lost_answer(
        "SendCommand",
        Some(LostAnswer::share(LostAnswerMode::Hold, 1.0).holding(ANSWER_DELAY)),
    )?;
    let outcome = kill_at_each_send(sandbox, config, name).await;
    sandbox.faults().set_lost_answer("SendCommand", None)?;
    outcome
}

async fn kill_at_each_send(sandbox: &Sandbox, config: &ChaosConfig, name: &str) -> anyhow::Result<RunOutcome> {
    let run = Run::start(sandbox, config, name)?;
    let sends = || {
        sandbox
            .call_log()
            .records()
            .iter()
            .filter(|c| c.operation == "SendCommand" && c.is_effective_write())
            .count()
    };
    let mut kills = 0;
    loop {
        let seen = sends();
        let mut child = run.command(&[]).spawn().context("start pitstop run")?;
        let status = loop {
            if let Some(status) = child.try_wait().context("poll pitstop run")? {
                break Some(status);
            }
            if sends() > seen || run.overdue() {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        match status {
            Some(status) => return run.end(kills, status.success()).await,
            None if run.overdue() => {
                let _ = child.kill().await;
                return run.end(kills, false).await;
            }
            None => {
                child.start_kill().context("kill -9")?;
                let _ = child.wait().await;
                kills += 1;
                tracing::debug!(state = %run.state_file().display(), kills, "killed right after SendCommand");
            }
        }
    }
}
