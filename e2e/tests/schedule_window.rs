//! A maintenance window that closes in the middle of a plan, end to end: the real `pitstop` binary (`pitstop run`)
//! against the sandbox (real HAProxy, real backend processes, the AWS-compatible endpoint).
//!
//! The schedule is built from the wall clock when the test starts: one-minute windows at two minutes of the hour
//! two apart (`cron: "{m1},{m2} * * * *"`, UTC, `windowMinutes: 1`), the first opening 5 to 65 seconds later. The
//! fleet is slowed down (a 12 s deregistration delay, a 20 s boot) so that maintaining one instance takes more
//! than half a window and less than a whole one: the first window maintains the first instance and closes while
//! the second is out; that one is finished and put back while the window is closed; nothing else is taken out
//! until the second window opens; the second window maintains the third and the plan succeeds.
//!
//! Every check compares what the sandbox recorded (its AWS call log and HAProxy's states, stamped with the
//! sandbox's clock and mapped onto the wall clock by calls the test makes itself) and what pitstop wrote in its
//! state file with the window boundaries the test computed: the order of events against the windows, never how
//! long anything took.
//!
//! Cron has minute granularity, so this test takes 2.5 to 4 minutes: up to a minute until the first window opens,
//! then two minutes until the second, then the last instance.
//!
//! Build the binaries first (`cargo build --workspace --bins`; `make test` does).

mod pitstop_support;
mod sandbox_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use pitstop::api::{InstancePhase, MaintenancePlanStatus, PlanPhase};
use pitstop_e2e::sandbox::{CallOutcome, CallRecord, RotationSnapshot, Sandbox, SandboxConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use pitstop_support::{assert_all_in_rotation, describe_writes, instance, phases, plan, reboots_since, start_pitstop};
use sandbox_support::clients;

/// The plan's name.
const PLAN: &str = "windowed";

/// The target group's deregistration delay and the instances' boot time: one instance takes at least their sum
/// plus two health checks, 33 s, more than half of a one-minute window (so at most two instances start in the
/// first window, and the second is still out when it closes), and, on any machine fit to run tests, well under
/// a minute (so the second starts in the first window and the third ends within the second).
const DEREGISTRATION_DELAY: Duration = Duration::from_secs(12);
const BOOT_TIME: Duration = Duration::from_secs(20);

/// The first window opens at least this long after the schedule is made, so pitstop is seen waiting for it.
const LEAD_SECONDS: i64 = 5;

/// Minutes from the first window's opening to the second's; each is open for one minute.
const GAP_MINUTES: i64 = 2;

/// Safety net against a hang, once the second window is near: not a timing assertion.
const FINISH_LIMIT: Duration = Duration::from_secs(180);

/// A maintenance window, as the test computes it: [start, end) on the wall clock.
#[derive(Clone, Copy, Debug)]
struct Window {
    start: Timestamp,
    end: Timestamp,
}

impl Window {
    fn start_ms(self) -> i64 {
        self.start.as_millisecond()
    }

    fn end_ms(self) -> i64 {
        self.end.as_millisecond()
    }
}

/// The schedule given to the plan and the two windows it opens.
#[derive(Debug)]
struct TestSchedule {
    cron: String,
    first: Window,
    second: Window,
    /// When the window after the second opens (the first's minute, an hour later).
    after: Timestamp,
}

/// Two one-minute windows two minutes apart, the first opening at the first whole minute at least
/// [`LEAD_SECONDS`] after `now`.
///
/// Only the minute field is set: `m1,m2 * * * *` matches every hour of every day, so windows that straddle an hour
/// (or day) boundary (`m1` = 58 or 59) need nothing more. The minute `now` is in (`m1 - 1` or `m1 - 2`) and the
/// one between the windows (`m1 + 1`) are neither `m1` nor `m1 + 2` (mod 60): no window is open now, none opens
/// before `m1`, and the next after `m2` is `m1` an hour later. Unix time counts no leap seconds, so its minutes
/// are UTC's.
fn schedule_from(now: Timestamp) -> TestSchedule {
    let earliest = now.as_second() + LEAD_SECONDS;
    let first_start = (earliest.div_euclid(60) + 1) * 60;
    let m1 = first_start.div_euclid(60).rem_euclid(60);
    let m2 = (m1 + GAP_MINUTES).rem_euclid(60);
    let (low, high) = (m1.min(m2), m1.max(m2));
    let at = |second: i64| Timestamp::from_second(second).expect("a valid time");
    let window = |start: i64| Window {
        start: at(start),
        end: at(start + 60),
    };
    TestSchedule {
        cron: format!("{low},{high} * * * *"),
        first: window(first_start),
        second: window(first_start + GAP_MINUTES * 60),
        after: at(first_start + 3600),
    }
}

/// When an event the sandbox recorded happened on the wall clock: at some time in [lo, hi] (ms since the epoch).
/// The width is the uncertainty of the mapping from the sandbox's clock, a few milliseconds.
#[derive(Clone, Copy, Debug)]
struct Span {
    lo: i64,
    hi: i64,
}

impl Span {
    /// Certainly before `t` (ms).
    fn surely_before(self, t: i64) -> bool {
        self.hi < t
    }

    /// Certainly at or after `t` (ms).
    fn surely_after(self, t: i64) -> bool {
        self.lo >= t
    }

    /// Possibly inside `window`: not certainly outside it.
    fn may_be_in(self, window: Window) -> bool {
        self.hi >= window.start_ms() && self.lo < window.end_ms()
    }
}

/// The sandbox's clock (milliseconds since it started: `CallRecord::elapsed_ms`, `RotationSnapshot::elapsed`)
/// against the wall clock: wall = elapsed + offset, with the offset in [lo, hi].
#[derive(Clone, Copy, Debug)]
struct SandboxClock {
    lo: i64,
    hi: i64,
}

impl SandboxClock {
    /// Measures the offset: calls the sandbox between two readings of the wall clock and finds the call in its log.
    async fn measure(sandbox: &Sandbox, elb: &aws_sdk_elasticloadbalancingv2::Client) -> SandboxClock {
        let (mut lo, mut hi) = (i64::MIN, i64::MAX);
        for _ in 0..5 {
            let last = sandbox.call_log().records().last().map(|r| r.seq);
            let before = Timestamp::now().as_millisecond();
            elb.describe_target_health()
                .target_group_arn(sandbox.target_group_arn())
                .send()
                .await
                .expect("DescribeTargetHealth");
            let after = Timestamp::now().as_millisecond();
            let record = sandbox
                .call_log()
                .records()
                .into_iter()
                .find(|r| Some(r.seq) > last && r.operation == "DescribeTargetHealth")
                .expect("the sandbox logged the call");
            let elapsed = i64::try_from(record.elapsed_ms).expect("elapsed fits");
            // Both clocks are read in whole milliseconds, rounded down: one more each way.
            lo = lo.max(before - elapsed - 1);
            hi = hi.min(after - elapsed + 1);
        }
        assert!(
            lo <= hi,
            "the wall clock and the sandbox's clock disagree: [{lo}, {hi}]"
        );
        SandboxClock { lo, hi }
    }

    /// An offset range that holds both measurements, so that any drift between them is within the uncertainty.
    fn union(self, other: SandboxClock) -> SandboxClock {
        SandboxClock {
            lo: self.lo.min(other.lo),
            hi: self.hi.max(other.hi),
        }
    }

    /// When a call the sandbox logged happened.
    fn call(self, record: &CallRecord) -> Span {
        let elapsed = i64::try_from(record.elapsed_ms).expect("elapsed fits");
        Span {
            lo: elapsed + self.lo,
            hi: elapsed + self.hi,
        }
    }

    /// When HAProxy's states were read for a snapshot. The rotation record counts from an instant taken just
    /// before the call log's (in the same struct initialisation): one more millisecond of uncertainty each way.
    fn snapshot(self, snapshot: &RotationSnapshot) -> Span {
        let elapsed = i64::try_from(snapshot.elapsed.as_millis()).expect("elapsed fits");
        Span {
            lo: elapsed + self.lo - 1,
            hi: elapsed + self.hi + 1,
        }
    }
}

/// Event times relative to the first window's opening, for messages and the timeline.
#[derive(Clone, Copy)]
struct Relative(i64);

impl Relative {
    fn span(self, span: Span) -> String {
        let mid = (span.lo + span.hi) / 2 - self.0;
        format!("w1{:+.3}s (±{}ms)", mid as f64 / 1000.0, (span.hi - span.lo + 1) / 2)
    }

    fn time(self, t: Timestamp) -> String {
        format!("w1{:+.3}s", (t.as_millisecond() - self.0) as f64 / 1000.0)
    }
}

/// One time an instance was out of HAProxy's rotation: when it went out and when it came back.
#[derive(Debug)]
struct OutOfRotation {
    id: String,
    out: Span,
    back: Option<Span>,
}

/// The times each instance was out of rotation, from HAProxy's recorded states, oldest first.
fn out_of_rotation(history: &[RotationSnapshot], clock: SandboxClock) -> Vec<OutOfRotation> {
    let mut periods: Vec<OutOfRotation> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for snapshot in history {
        let at = clock.snapshot(snapshot);
        let out = snapshot.out_of_rotation();
        for id in &out {
            if !open.contains_key(id) {
                open.insert(id.clone(), periods.len());
                periods.push(OutOfRotation {
                    id: id.clone(),
                    out: at,
                    back: None,
                });
            }
        }
        let back: Vec<String> = open.keys().filter(|id| !out.contains(id)).cloned().collect();
        for id in back {
            if let Some(index) = open.remove(&id) {
                periods[index].back = Some(at);
            }
        }
    }
    periods
}

/// A status pitstop wrote to its state file, and when the test first read it.
#[derive(Debug)]
struct Sample {
    read_at: Timestamp,
    status: MaintenancePlanStatus,
}

/// Reads the plan's status from the state file every 100 ms, and once more on `stop`, keeping each new one.
fn sample_state_file(path: PathBuf, mut stop: watch::Receiver<bool>) -> JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let mut samples: Vec<Sample> = Vec::new();
        loop {
            let last_read = *stop.borrow_and_update();
            let read_at = Timestamp::now();
            if let Some(status) = pitstop_support::read_saved_status(&path, PLAN)
                && samples.last().is_none_or(|s| s.status != status)
            {
                samples.push(Sample { read_at, status });
            }
            if last_read {
                return samples;
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => {}
            }
        }
    })
}

/// Sleeps until the wall clock reads `t` (at once if it is past).
async fn sleep_until(t: Timestamp) {
    let wait: Duration = Timestamp::now().duration_until(t).try_into().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

fn is_in_flight(phase: InstancePhase) -> bool {
    matches!(
        phase,
        InstancePhase::Draining | InstancePhase::Rebooting | InstancePhase::Verifying
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_closes_mid_plan_finishes_the_instance_out_and_the_next_window_resumes() {
    let sandbox = sandbox_support::start(
        SandboxConfig::default()
            .with_backend_binary(env!("CARGO_BIN_EXE_pitstop-backend"))
            .with_deregistration_delay(DEREGISTRATION_DELAY)
            .with_boot_time(BOOT_TIME),
    )
    .await;
    let ids = sandbox.instance_ids();
    assert_eq!(ids.len(), 3);
    let (elb, _ssm) = clients(&sandbox, true).await;
    let clock_at_start = SandboxClock::measure(&sandbox, &elb).await;

    // The sandbox starts its rotation record from HAProxy's states read once every target was healthy, so every
    // later entry is a change seen while pitstop ran.
    let baseline = sandbox
        .rotation_history()
        .into_iter()
        .next()
        .expect("the record's first entry");
    assert!(baseline.out_of_rotation().is_empty(), "{baseline:?}");

    // The schedule is made from the wall clock now, once the sandbox is up.
    let schedule = schedule_from(Timestamp::now());
    let TestSchedule { first, second, .. } = schedule;
    let rel = Relative(first.start_ms());
    eprintln!(
        "schedule {:?} (UTC): first window [{}, {}), second [{}, {}); now {}",
        schedule.cron,
        first.start,
        first.end,
        second.start,
        second.end,
        rel.time(Timestamp::now())
    );
    let yaml = plan(
        &sandbox,
        PLAN,
        &ids,
        &format!(
            "  schedule:\n    cron: \"{}\"\n    timeZone: UTC\n    windowMinutes: 1\n",
            schedule.cron
        ),
    );
    let boots_before = sandbox.boot_counts();
    sandbox.call_log().clear();

    // The state file outlives the run, so the sampler reads the last status too.
    let dir = tempfile::tempdir().expect("temp dir");
    let state_file = dir.path().join("state.json");
    let mut running = start_pitstop(&sandbox, &yaml, Some(&state_file));
    let (stop_sampling, stop) = watch::channel(false);
    let sampler = sample_state_file(state_file.clone(), stop);

    // Live look at the fleet late in the closed gap: the instance that was out is back, nothing else was touched,
    // and pitstop is still running (waiting for the second window, not finished or dead).
    sleep_until(second.start - SignedDuration::from_secs(10)).await;
    let gap_rotation = sandbox.rotation_states().await.expect("HAProxy state");
    let gap_reboots = reboots_since(&sandbox, &boots_before);
    let gap_status = running.saved_status(PLAN);
    let exited_in_gap = running.has_exited();

    let run = running.finish_within(FINISH_LIMIT).await;
    let _ = stop_sampling.send(true);
    let samples = sampler.await.expect("the sampler ran");
    let calls = sandbox.call_log().records();
    let history = sandbox.rotation_history();
    let clock = clock_at_start.union(SandboxClock::measure(&sandbox, &elb).await);
    let periods = out_of_rotation(&history, clock);

    // The timeline, for whoever reads the output.
    eprintln!(
        "sandbox clock offset known to ±{}ms; first window opened at {}",
        (clock.hi - clock.lo + 1) / 2,
        first.start
    );
    for w in calls.iter().filter(|c| c.write) {
        eprintln!(
            "  {} {} {:?} {:?}",
            rel.span(clock.call(w)),
            w.operation,
            w.instance_ids,
            w.outcome
        );
    }
    for p in &periods {
        eprintln!(
            "  {} out of rotation {} .. {}",
            p.id,
            rel.span(p.out),
            p.back.map_or_else(|| "never back".to_owned(), |b| rel.span(b))
        );
    }
    for s in &samples {
        eprintln!(
            "  {} state file: {:?} {:?} {:?}",
            rel.time(s.read_at),
            s.status.phase,
            phases(&s.status),
            s.status.message
        );
    }
    let mut gap_reads: BTreeMap<&str, usize> = BTreeMap::new();
    for c in calls.iter().filter(|c| {
        let at = clock.call(c);
        at.surely_after(first.end_ms()) && at.surely_before(second.start_ms())
    }) {
        *gap_reads.entry(c.operation.as_str()).or_default() += 1;
    }
    eprintln!("  calls while the window was closed: {gap_reads:?}");
    eprintln!("pitstop's progress lines:\n{}", run.stderr);

    // Everything pitstop asked of AWS that changes something: one deregistration, one command and a
    // registration per instance, in that order, all carried out.
    let writes: Vec<CallRecord> = calls.iter().filter(|c| c.write).cloned().collect();
    let described = describe_writes(&writes);
    assert!(
        writes.iter().all(|w| w.outcome == CallOutcome::Ok
            && matches!(
                w.operation.as_str(),
                "DeregisterTargets" | "SendCommand" | "RegisterTargets"
            )),
        "{described:?}"
    );
    let calls_of = |operation: &str, id: &str| -> Vec<&CallRecord> {
        writes
            .iter()
            .filter(|w| w.operation == operation && w.instance_ids.iter().any(|i| i == id))
            .collect()
    };
    let mut deregistered: Vec<(String, Span)> = Vec::new();
    for id in &ids {
        let (deregs, sends, regs) = (
            calls_of("DeregisterTargets", id),
            calls_of("SendCommand", id),
            calls_of("RegisterTargets", id),
        );
        assert_eq!(deregs.len(), 1, "{id} taken out once: {described:?}");
        assert_eq!(sends.len(), 1, "one maintenance command for {id}: {described:?}");
        assert!(!regs.is_empty(), "{id} put back: {described:?}");
        assert!(
            deregs[0].seq < sends[0].seq && regs.iter().all(|r| sends[0].seq < r.seq),
            "{id}: out, maintained, back, in that order: {described:?}"
        );
        deregistered.push((id.clone(), clock.call(deregs[0])));
    }
    assert_eq!(
        writes.iter().filter(|w| w.operation == "DeregisterTargets").count(),
        ids.len(),
        "nothing else taken out: {described:?}"
    );

    // (a) No instance is taken out of the target group outside a window.
    for (id, at) in &deregistered {
        assert!(
            at.may_be_in(first) || at.may_be_in(second),
            "{id} was deregistered at {}, outside both windows",
            rel.span(*at)
        );
    }
    let taken_in = |window: Window| -> Vec<String> {
        deregistered
            .iter()
            .filter(|(_, at)| at.may_be_in(window))
            .map(|(id, _)| id.clone())
            .collect()
    };
    assert_eq!(
        (taken_in(first), taken_in(second)),
        (ids[0..2].to_vec(), ids[2..3].to_vec()),
        "two instances taken out in the first window (an instance takes more than half of it), the third in \
         the second: {:?}",
        deregistered
            .iter()
            .map(|(id, at)| format!("{id} at {}", rel.span(*at)))
            .collect::<Vec<_>>()
    );

    // (b) The instance out when the first window closed was still maintained and put back after the close.
    let in_flight = &ids[1];
    assert!(
        deregistered[1].1.surely_before(first.end_ms()),
        "{in_flight} was out before the close"
    );
    for registration in calls_of("RegisterTargets", in_flight) {
        let at = clock.call(registration);
        assert!(
            at.surely_after(first.end_ms()) && at.surely_before(second.start_ms()),
            "{in_flight} was registered again after the first window closed, before the second opened: {}",
            rel.span(at)
        );
    }
    // The one before it was done within the first window.
    for registration in calls_of("RegisterTargets", &ids[0]) {
        let at = clock.call(registration);
        assert!(
            at.surely_before(first.end_ms()),
            "{} was back before the first window closed: {}",
            ids[0],
            rel.span(at)
        );
    }
    // pitstop knew the window was closed while it finished that instance.
    assert!(
        samples.iter().any(|s| s.status.window_end.is_none()
            && s.status.next_window == Some(second.start)
            && is_in_flight(instance(&s.status, in_flight).phase)),
        "a saved status shows {in_flight} in flight with the window closed"
    );

    // What HAProxy did, sampled through the run: each instance out of rotation exactly once, one at a time, each
    // time starting within a window; the one out at the close came back while the window was closed.
    assert!(
        history.first().is_some_and(|s| s.out_of_rotation().is_empty()),
        "every instance in rotation at the start: {:?}",
        history.first()
    );
    assert_eq!(
        periods.iter().map(|p| p.id.clone()).collect::<Vec<_>>(),
        ids,
        "each instance out of rotation once, in the plan's order: {periods:?}"
    );
    assert_eq!(
        sandbox.max_out_of_rotation(),
        1,
        "one instance out at a time: {periods:?}"
    );
    for p in &periods {
        assert!(
            p.out.may_be_in(first) || p.out.may_be_in(second),
            "{} went out of rotation at {}, outside both windows",
            p.id,
            rel.span(p.out)
        );
        assert!(p.back.is_some(), "{} came back into rotation: {p:?}", p.id);
    }
    let out_at_close = &periods[1];
    let back = out_at_close.back.expect("back");
    assert!(
        out_at_close.out.surely_before(first.end_ms())
            && back.surely_after(first.end_ms())
            && back.surely_before(second.start_ms()),
        "{in_flight}: out of rotation at {}, back at {}: in flight at the close, back before the second window",
        rel.span(out_at_close.out),
        rel.span(back)
    );

    // (c) Between the windows, nothing new was taken out: the third instance kept serving until the second window
    // opened, and the gap's state (seen live and in pitstop's state file) is two done, one waiting.
    assert!(
        !periods[2].out.surely_before(second.start_ms()),
        "{} went out of rotation at {}, before the second window",
        ids[2],
        rel.span(periods[2].out)
    );
    assert!(
        gap_rotation.values().all(|r| r.in_rotation()),
        "late in the gap every instance serves: {gap_rotation:?}"
    );
    assert_eq!(
        ids.iter().map(|id| gap_reboots.get(id).copied()).collect::<Vec<_>>(),
        [Some(1), Some(1), Some(0)],
        "late in the gap: two instances maintained, the third untouched"
    );
    let gap_status = gap_status.expect("a saved status in the gap");
    assert_eq!(
        phases(&gap_status),
        [
            InstancePhase::Registered,
            InstancePhase::Registered,
            InstancePhase::Pending
        ],
        "{gap_status:?}"
    );
    let last_before_second = samples
        .iter()
        .rev()
        .find(|s| s.read_at < second.start)
        .expect("a status read before the second window");
    let gap = &last_before_second.status;
    assert_eq!(gap.phase, PlanPhase::Running, "{gap:?}");
    assert_eq!(gap.progress.as_deref(), Some("2/3"), "{gap:?}");
    assert_eq!(gap.window_start, Some(first.start), "{gap:?}");
    assert_eq!(gap.window_end, None, "closed: {gap:?}");
    assert_eq!(gap.next_window, Some(second.start), "{gap:?}");
    assert!(
        gap.message
            .as_deref()
            .is_some_and(|m| m.contains("waiting for the maintenance window")),
        "{gap:?}"
    );

    // Before the first window, pitstop was already running and waited.
    let before_first: Vec<&Sample> = samples.iter().filter(|s| s.read_at < first.start).collect();
    assert!(
        !before_first.is_empty(),
        "pitstop wrote a status before the first window"
    );
    for s in &before_first {
        let waiting = &s.status;
        assert_eq!(waiting.phase, PlanPhase::Pending, "{waiting:?}");
        assert!(
            waiting.instances.iter().all(|i| i.phase == InstancePhase::Pending),
            "{waiting:?}"
        );
        assert_eq!(waiting.window_end, None, "{waiting:?}");
        assert_eq!(waiting.next_window, Some(first.start), "{waiting:?}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.status.window_start == Some(first.start) && s.status.window_end == Some(first.end)),
        "a saved status shows the first window open"
    );

    // pitstop's own account: the plan succeeded, every instance once, in one run spread over two windows.
    assert_eq!(run.code, Some(0), "the plan succeeds; stderr:\n{}", run.stderr);
    assert!(!exited_in_gap, "pitstop was still running between the windows");
    let status = run.status(PLAN);
    assert_eq!(status.phase, PlanPhase::Succeeded, "{status:?}");
    for id in &ids {
        let me = instance(status, id);
        assert_eq!(me.phase, InstancePhase::Registered, "{me:?}");
        assert_eq!(me.attempt, 1, "maintained on the first try: {me:?}");
        assert!(!me.out_of_rotation, "{me:?}");
    }
    assert_eq!(status.progress.as_deref(), Some("3/3"), "{status:?}");
    // The status's window fields as the code defines them: windowStart is the window the run last went on in,
    // windowEnd the end of the window open when it finished, nextWindow the next opening; the run was not
    // finished when the second window opened, so it went on (no new run, no run history).
    assert_eq!(status.window_start, Some(second.start), "{status:?}");
    assert_eq!(
        status.window_end,
        Some(second.end),
        "finished inside the second window: {status:?}"
    );
    assert_eq!(status.next_window, Some(schedule.after), "{status:?}");
    assert!(
        status.runs.is_empty(),
        "one run, resumed, not a new one: {:?}",
        status.runs
    );
    let started_at = status.started_at.expect("startedAt");
    let finished_at = status.finished_at.expect("finishedAt");
    assert!(
        first.start <= started_at && started_at < first.end,
        "the run started in the first window: {}",
        rel.time(started_at)
    );
    assert!(
        second.start <= finished_at && finished_at < second.end,
        "the run finished in the second window: {}",
        rel.time(finished_at)
    );

    // (d) The second window resumed the run: every instance maintained exactly once, all back in rotation.
    let reboots = reboots_since(&sandbox, &boots_before);
    assert_eq!(
        ids.iter().map(|id| reboots.get(id).copied()).collect::<Vec<_>>(),
        [Some(1), Some(1), Some(1)],
        "each instance rebooted exactly once"
    );
    assert_all_in_rotation(&sandbox).await;
    sandbox.shutdown().await.expect("sandbox stops");
}
