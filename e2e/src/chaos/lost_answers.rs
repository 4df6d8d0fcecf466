//! Lost answers on every write: each of the sandbox's writes loses its answer at random, in a random mode.

use super::ChaosConfig;
use super::run::{Run, RunOutcome};
use crate::sandbox::{CallOutcome, LOSABLE_WRITES, LostAnswer, LostAnswerMode, Sandbox};

/// Share of each write's answers lost.
const SHARE: f64 = 0.4;

/// pitstop's attempt limit in these runs, and a hold that outlasts it.
const ATTEMPT: &str = "1s";
const HOLD: std::time::Duration = std::time::Duration::from_millis(2500);

/// One run with every write losing [`SHARE`] of its answers, each write in a mode drawn for the run.
pub(super) async fn every_write(sandbox: &Sandbox, config: &ChaosConfig, name: &str) -> anyhow::Result<RunOutcome> {
    let modes = [LostAnswerMode::Reset, LostAnswerMode::Error500, LostAnswerMode::Hold];
    for operation in LOSABLE_WRITES {
        let mode = modes[fastrand::usize(..modes.len())];
        sandbox
            .faults()
            .set_lost_answer(operation, Some(LostAnswer::share(mode, SHARE).holding(HOLD)))?;
    }
    let before = lost(sandbox);
    let run = Run::start(sandbox, config, name)?;
    let succeeded = run.finish_pitstop(&[("PITSTOP_AWS_ATTEMPT_TIMEOUT", ATTEMPT)]).await?;
    for operation in LOSABLE_WRITES {
        sandbox.faults().set_lost_answer(operation, None)?;
    }
    let injected = lost(sandbox).saturating_sub(before);
    run.end(u32::try_from(injected).unwrap_or(u32::MAX), succeeded).await
}

fn lost(sandbox: &Sandbox) -> usize {
    sandbox
        .call_log()
        .records()
        .iter()
        .filter(|c| matches!(c.outcome, CallOutcome::AnswerLost { .. }))
        .count()
}
