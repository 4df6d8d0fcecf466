//! `pitstop run PLAN.yaml`: the controller's engine without a cluster, with live progress
//! on the terminal and the final status printed as YAML.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::watch;

use crate::api::{MaintenancePlan, Notify, NotifyFormat, PlanPhase};
use crate::aws::AwsProvider;
use crate::aws::problem::REASON_THROTTLED;
use crate::notify::{Delivery, Notifier, PlanRef, from_transitions, webhook_url};
use crate::runner::{FileStore, PlanOutcome, PlanRun, RunEvent, RunObserver, RunOptions, load_plans, run_plans};
use crate::telemetry::Metrics;

/// Arguments of `pitstop run`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A YAML file with one or more MaintenancePlan manifests (the files you would `kubectl apply`).
    pub plan_file: PathBuf,

    /// Wait between looks at AWS while an instance drains, reboots or warms up.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Keep each plan's status in this JSON file, written before every AWS action, so that
    /// a run that was killed resumes where it stopped (same command tags, no second reboot).
    #[arg(long)]
    pub state_file: Option<PathBuf>,

    /// The Prometheus server of plans whose `spec.gates.prometheus` names no URL.
    #[arg(long, env = "PITSTOP_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,

    /// A webhook that is sent every plan's events (run started, instance maintained or
    /// failed, run finished, gate blocked), as the controller sends `spec.notify`'s. A plan's
    /// `spec.notify.events` still chooses which. Best effort: never holds the run up; at exit,
    /// events not delivered within a few seconds are dropped.
    #[arg(long, env = "PITSTOP_NOTIFY_URL")]
    pub notify_url: Option<String>,

    /// The body of `--notify-url`'s events; by default the plan's `spec.notify.format`, else
    /// `cloud-events`.
    #[arg(long, value_enum)]
    pub notify_format: Option<NotifyFormatArg>,
}

/// `--notify-format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyFormatArg {
    /// A CloudEvents 1.0 JSON event.
    CloudEvents,
    /// A Slack-compatible `{"text": "..."}`.
    Slack,
}

impl From<NotifyFormatArg> for NotifyFormat {
    fn from(format: NotifyFormatArg) -> Self {
        match format {
            NotifyFormatArg::CloudEvents => Self::CloudEvents,
            NotifyFormatArg::Slack => Self::Slack,
        }
    }
}

/// How long `pitstop run` waits at exit for the events still queued for `--notify-url`.
const NOTIFY_FLUSH: Duration = Duration::from_secs(15);

/// Exit code when every plan succeeded.
pub const EXIT_SUCCEEDED: u8 = 0;
/// Exit code when a plan failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code for an unusable plan file or state file.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code when a plan is suspended (`spec.suspend`): nothing failed, nothing finished.
pub const EXIT_SUSPENDED: u8 = 3;
/// Exit code when the run stopped on an AWS failure that waiting does not fix (no
/// credentials, an action IAM does not allow, an unknown region, a target group or document
/// that does not exist), or on AWS unreachable for longer than the run waits. The last line
/// on standard error says what failed, the usual fix, and any instance still out.
pub const EXIT_AWS: u8 = 4;
/// Exit code when the run was interrupted (after putting the in-flight instance back).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Runs the plans in `args.plan_file`; returns the process exit code.
pub async fn run(args: RunArgs, aws: Arc<dyn AwsProvider>) -> anyhow::Result<ExitCode> {
    let plans = match load_plans(&args.plan_file) {
        Ok(plans) => plans,
        Err(error) => {
            eprintln!("pitstop: {error}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let notify_url = match args.notify_url.as_deref().map(webhook_url).transpose() {
        Ok(url) => url,
        Err(why) => {
            eprintln!("pitstop: --notify-url (or PITSTOP_NOTIFY_URL) cannot be used: {why}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let stores = match FileStore::open(args.state_file.as_deref()) {
        Ok(stores) => stores,
        Err(error) => {
            eprintln!("pitstop: {error}");
            return Ok(ExitCode::from(EXIT_BAD_INPUT));
        }
    };
    let runs: Vec<PlanRun> = plans
        .iter()
        .map(|plan| {
            let name = plan.metadata.name.clone().unwrap_or_default();
            let (store, uid) = stores.plan(&name, || {
                plan.metadata
                    .uid
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
            });
            PlanRun {
                name,
                uid,
                spec: plan.spec.clone(),
                store,
            }
        })
        .collect();

    let progress = TerminalProgress::new(&plans);
    let (stop, interrupt) = watch::channel(false);
    let state_file = args.state_file.clone();
    let progress_for_signal = progress.multi.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        let _ = stop.send(true);
        let _ = progress_for_signal
            .println("interrupted: finishing the instance in flight and putting it back; Ctrl-C again aborts at once");
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "pitstop: aborted; an instance may still be out of its target group{}",
                state_file
                    .map(|p| format!(" — run again with --state-file {} to put it back", p.display()))
                    .unwrap_or_default()
            );
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
    });

    let options = RunOptions {
        poll_interval: args.poll_interval,
        gates: crate::gates::GateReaders::http(args.prometheus_url.clone()),
        ..RunOptions::default()
    };
    let notifying = notify_url.map(|url| Notifying::new(&progress, url, args.notify_format.map(Into::into), &plans));
    let observer: &dyn RunObserver = notifying.as_ref().map_or(&progress, |n| n as &dyn RunObserver);
    let outcomes = run_plans(aws, runs, &options, observer, interrupt).await;
    if let Some(notifying) = &notifying {
        notifying.notifier.close(NOTIFY_FLUSH).await;
    }
    progress.finish(&outcomes);
    print_final(&plans, &outcomes).context("printing the final status")?;
    for outcome in &outcomes {
        if let Some(line) = &outcome.aws_failure {
            eprintln!("pitstop: {}: {line}", outcome.name);
        }
    }
    Ok(ExitCode::from(exit_code(&outcomes)))
}

/// The exit code for a set of outcomes.
pub fn exit_code(outcomes: &[PlanOutcome]) -> u8 {
    let phase = |o: &PlanOutcome| o.status.as_ref().map(|s| s.phase);
    if outcomes.iter().any(|o| o.aws_failure.is_some()) {
        EXIT_AWS
    } else if outcomes.iter().any(|o| phase(o) == Some(PlanPhase::Failed)) {
        EXIT_FAILED
    } else if outcomes.iter().any(|o| o.interrupted) {
        EXIT_INTERRUPTED
    } else if outcomes.iter().any(|o| phase(o) == Some(PlanPhase::Suspended)) {
        EXIT_SUSPENDED
    } else if outcomes.iter().all(|o| phase(o) == Some(PlanPhase::Succeeded)) {
        EXIT_SUCCEEDED
    } else {
        EXIT_FAILED
    }
}

fn print_final(plans: &[MaintenancePlan], outcomes: &[PlanOutcome]) -> anyhow::Result<()> {
    let mut documents = Vec::new();
    for plan in plans {
        let mut plan = plan.clone();
        plan.status = outcomes
            .iter()
            .find(|o| Some(&o.name) == plan.metadata.name.as_ref())
            .and_then(|o| o.status.clone());
        documents.push(plan);
    }
    print!("{}", serde_saphyr::to_string_multiple(&documents)?);
    Ok(())
}

/// Sends each round's events to `--notify-url`, and passes every [`RunEvent`] on.
struct Notifying<'a> {
    inner: &'a dyn RunObserver,
    notifier: Notifier,
    url: String,
    /// `--notify-format`, which overrides the plans' own.
    format: Option<NotifyFormat>,
    /// Per plan name: who it is, and its `spec.notify` (for its events and format).
    plans: HashMap<String, (PlanRef, Option<Notify>)>,
    /// Counts outcomes; `pitstop run` serves no metrics, so only the log lines show them.
    metrics: Metrics,
}

impl<'a> Notifying<'a> {
    fn new(inner: &'a dyn RunObserver, url: String, format: Option<NotifyFormat>, plans: &[MaintenancePlan]) -> Self {
        let plans = plans
            .iter()
            .map(|plan| {
                let name = plan.metadata.name.clone().unwrap_or_default();
                let plan_ref = PlanRef {
                    namespace: plan.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
                    name: name.clone(),
                };
                (name, (plan_ref, plan.spec.notify.clone()))
            })
            .collect();
        Self {
            inner,
            notifier: Notifier::http(),
            url,
            format,
            plans,
            metrics: Metrics::default(),
        }
    }
}

impl RunObserver for Notifying<'_> {
    fn event(&self, event: RunEvent<'_>) {
        if let RunEvent::Step { plan, report, at } = &event
            && let Some((plan_ref, spec)) = self.plans.get(*plan)
        {
            let format = self.format.or(spec.as_ref().map(|s| s.format)).unwrap_or_default();
            for notification in from_transitions(plan_ref, &report.transitions, &report.status, *at) {
                if spec.as_ref().is_none_or(|s| s.wants(notification.kind)) {
                    let delivery = Delivery {
                        url: self.url.clone(),
                        format,
                        notification,
                    };
                    self.notifier.send(delivery, &self.metrics);
                }
            }
        }
        self.inner.event(event);
    }
}

/// Progress bars on a terminal, plain lines elsewhere (CI logs, pipes).
struct TerminalProgress {
    multi: MultiProgress,
    bars: Vec<(String, ProgressBar)>,
    /// Per plan, the cause of the last failed round printed (cleared by a good round).
    last_retry: Mutex<HashMap<String, String>>,
}

impl TerminalProgress {
    fn new(plans: &[MaintenancePlan]) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{prefix:>16} [{bar:24}] {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let bars = plans
            .iter()
            .map(|plan| {
                let name = plan.metadata.name.clone().unwrap_or_default();
                let bar = multi.add(ProgressBar::new(plan.spec.instances.len() as u64));
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar.set_message("waiting to start");
                bar.enable_steady_tick(Duration::from_millis(250));
                (name, bar)
            })
            .collect();
        Self {
            multi,
            bars,
            last_retry: Mutex::default(),
        }
    }

    fn bar(&self, plan: &str) -> Option<&ProgressBar> {
        self.bars.iter().find(|(name, _)| name == plan).map(|(_, bar)| bar)
    }

    fn line(&self, text: String) {
        if self.multi.is_hidden() {
            eprintln!("{text}");
        } else {
            let _ = self.multi.println(text);
        }
    }

    fn finish(&self, outcomes: &[PlanOutcome]) {
        for outcome in outcomes {
            if let Some(bar) = self.bar(&outcome.name) {
                let message = if outcome.aws_failure.is_some() {
                    "stopped on an AWS error (below)".to_owned()
                } else {
                    outcome
                        .status
                        .as_ref()
                        .and_then(|s| s.message.clone())
                        .unwrap_or_else(|| "not started".to_owned())
                };
                bar.finish_with_message(message);
            }
        }
    }
}

impl RunObserver for TerminalProgress {
    fn event(&self, event: RunEvent<'_>) {
        match event {
            RunEvent::Step { plan, report, at } => {
                self.last_retry
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .remove(plan);
                for t in &report.transitions {
                    let subject = t.instance_id.as_deref().unwrap_or("plan");
                    let message = if t.message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", t.message)
                    };
                    let at = at.strftime("%H:%M:%S");
                    self.line(format!("{at} {plan} {subject} {} -> {}{message}", t.from, t.to));
                }
                if let Some(bar) = self.bar(plan) {
                    let done = report.status.instances.iter().filter(|i| i.phase.is_finished()).count();
                    // A selected plan learns its instances when its run starts.
                    bar.set_length(report.status.instances.len() as u64);
                    bar.set_position(done as u64);
                    let current = report
                        .status
                        .current_instance
                        .as_ref()
                        .and_then(|id| report.status.instances.iter().find(|i| &i.instance_id == id))
                        .map(|i| format!("{} {}", i.instance_id, i.phase));
                    bar.set_message(current.unwrap_or_else(|| format!("{:?}", report.status.phase)));
                }
            }
            RunEvent::Retry {
                plan,
                error,
                cause,
                after,
            } => {
                let after = humantime::format_duration(after);
                if let Some(bar) = self.bar(plan) {
                    let what = if cause == Some(REASON_THROTTLED) {
                        "AWS throttling"
                    } else {
                        "AWS unreachable"
                    };
                    bar.set_message(match cause {
                        Some(_) => format!("{what}, retrying in {after}"),
                        None => format!("retrying in {after}"),
                    });
                }
                // One line per cause, not per retry: the bar shows that it goes on.
                let mut last = self.last_retry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let key = cause.map_or_else(|| error.clone(), str::to_owned);
                if last.get(plan).is_none_or(|previous| *previous != key) {
                    self.line(format!("{plan}: {error}"));
                    last.insert(plan.to_owned(), key);
                }
            }
            RunEvent::Queued { plan, behind } => {
                self.line(format!(
                    "{plan}: waiting for {behind}, which uses the same target group"
                ));
            }
        }
    }
}
