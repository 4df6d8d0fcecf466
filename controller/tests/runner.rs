//! `pitstop run`'s driver over the in-memory AWS: plans finish, plans on one target group
//! take turns instance by instance (a,b,a,b), an interrupt finishes the instance in flight, and a state file resumes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pitstop::api::{InstancePhase, PlanPhase};
use pitstop::aws::fake::FakeAws;
use pitstop::runner::{FileStore, PlanRun, RunEvent, RunObserver, RunOptions, run_plans};
use tokio::sync::watch;

const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
const IDS: [&str; 3] = ["i-0000000000000000a", "i-0000000000000000b", "i-0000000000000000c"];

fn instant_fake() -> FakeAws {
    let fake = FakeAws::new(ARN, &IDS, jiff::Timestamp::now());
    fake.behave(|b| {
        b.drain_time = Duration::ZERO;
        b.healthy_time = Duration::ZERO;
        b.command_time = Duration::ZERO;
        b.invocation_delay = Duration::ZERO;
    });
    fake
}

fn plan_yaml(name: &str, instances: &[&str]) -> String {
    format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n  targetGroupArn: {ARN}\n  instances: [{}]\n",
        instances.join(", ")
    )
}

fn runs(yaml: &str, stores: &pitstop::runner::FileStoreSet) -> Vec<PlanRun> {
    pitstop::runner::parse_plans(yaml, "test.yaml")
        .expect("valid plans")
        .into_iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let (store, uid) = stores.plan(&name, || format!("uid-{name}"));
            PlanRun {
                name,
                uid,
                spec: p.spec,
                store,
            }
        })
        .collect()
}

#[derive(Default)]
struct Recorder {
    lines: Mutex<Vec<String>>,
}

impl RunObserver for Recorder {
    fn event(&self, event: RunEvent<'_>) {
        let line = match event {
            RunEvent::Step { plan, report, .. } => report
                .transitions
                .iter()
                .map(|t| {
                    format!(
                        "{plan} {} {}->{}",
                        t.instance_id.as_deref().unwrap_or("plan"),
                        t.from,
                        t.to
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"),
            RunEvent::Retry { plan, error, .. } => format!("{plan} retry {error}"),
            RunEvent::Queued { plan, behind } => format!("{plan} queued behind {behind}"),
        };
        if !line.is_empty() {
            self.lines.lock().expect("lock").push(line);
        }
    }
}

fn options() -> RunOptions {
    RunOptions {
        poll_interval: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..RunOptions::default()
    }
}

#[tokio::test]
async fn two_plans_on_one_group_take_turns_instance_by_instance_and_both_succeed() {
    const FOUR: [&str; 4] = [
        "i-0000000000000000a",
        "i-0000000000000000b",
        "i-0000000000000000c",
        "i-0000000000000000d",
    ];
    let fake = FakeAws::new(ARN, &FOUR, jiff::Timestamp::now());
    fake.behave(|b| {
        b.drain_time = Duration::ZERO;
        b.healthy_time = Duration::ZERO;
        b.command_time = Duration::ZERO;
        b.invocation_delay = Duration::ZERO;
    });
    let yaml = format!(
        "{}---\n{}",
        plan_yaml("first", &FOUR[..2]),
        plan_yaml("second", &FOUR[2..])
    );
    let stores = FileStore::open(None).expect("memory store");
    let recorder = Recorder::default();
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        run_plans(
            Arc::new(fake.clone()),
            runs(&yaml, &stores),
            &options(),
            &recorder,
            interrupt,
        ),
    )
    .await
    .expect("finishes");
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        assert_eq!(
            outcome.status.as_ref().map(|s| s.phase),
            Some(PlanPhase::Succeeded),
            "{outcome:?}"
        );
    }
    assert_eq!(fake.max_out_at_once(), 1, "one instance of the group out at a time");
    let lines = recorder.lines.lock().expect("lock").join("\n");
    assert!(lines.contains("second queued behind first"), "{lines}");
    let deregistered: Vec<String> = fake
        .writes()
        .into_iter()
        .filter(|w| w.operation == "DeregisterTargets")
        .map(|w| w.instance_id)
        .collect();
    assert_eq!(deregistered, [FOUR[0], FOUR[2], FOUR[1], FOUR[3]], "a,b,a,b\n{lines}");
}

#[tokio::test]
async fn a_failing_command_fails_the_plan_and_the_instance_goes_back() {
    let fake = instant_fake();
    fake.behave(|b| b.failing_commands = vec![IDS[1].to_owned()]);
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = run_plans(
        Arc::new(fake.clone()),
        runs(&plan_yaml("web", &IDS), &stores),
        &options(),
        &Recorder::default(),
        interrupt,
    )
    .await;
    let status = outcomes[0].status.clone().expect("status");
    assert_eq!(status.phase, PlanPhase::Failed);
    let phases: Vec<_> = status.instances.iter().map(|i| i.phase).collect();
    assert_eq!(
        phases,
        [InstancePhase::Registered, InstancePhase::Failed, InstancePhase::Pending]
    );
    assert!(fake.state(ARN, IDS[1]).is_registered(), "put back after the failure");
    assert_eq!(pitstop::cli::run::exit_code(&outcomes), pitstop::cli::run::EXIT_FAILED);
}

#[tokio::test]
async fn an_interrupt_finishes_the_instance_in_flight_and_starts_no_other() {
    let fake = instant_fake();
    // Keep the first instance's command running until we interrupt.
    fake.behave(|b| b.command_time = Duration::from_secs(3600));
    let stores = FileStore::open(None).expect("memory store");
    let (stop, interrupt) = watch::channel(false);
    let recorder = Arc::new(Recorder::default());
    let task = {
        let fake = fake.clone();
        let runs = runs(&plan_yaml("web", &IDS), &stores);
        let recorder = recorder.clone();
        tokio::spawn(async move { run_plans(Arc::new(fake), runs, &options(), recorder.as_ref(), interrupt).await })
    };
    // Wait until the first instance is rebooting, then interrupt and let the command finish.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !recorder
            .lines
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains("Draining->Rebooting"))
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("first instance reaches Rebooting");
    stop.send(true).expect("runner listening");
    fake.behave(|b| b.command_time = Duration::ZERO);
    let outcomes = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("no panic");
    assert!(outcomes[0].interrupted);
    let status = outcomes[0].status.clone().expect("status");
    let phases: Vec<_> = status.instances.iter().map(|i| i.phase).collect();
    assert_eq!(
        phases,
        [
            InstancePhase::Registered,
            InstancePhase::Pending,
            InstancePhase::Pending
        ]
    );
    assert!(IDS.iter().all(|id| fake.state(ARN, id).is_registered()));
    assert_eq!(
        pitstop::cli::run::exit_code(&outcomes),
        pitstop::cli::run::EXIT_INTERRUPTED
    );
}

#[tokio::test]
async fn a_resumed_run_adopts_the_command_it_already_sent() {
    let fake = instant_fake();
    fake.behave(|b| b.command_time = Duration::from_secs(3600));
    let dir = std::env::temp_dir().join(format!("pitstop-resume-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.json");
    let yaml = plan_yaml("web", &IDS[..1]);
    let comment_sends = || fake.writes().iter().filter(|w| w.operation == "SendCommand").count();
    {
        // First run: killed (its task aborted) once the reboot command is out.
        let stores = FileStore::open(Some(&state)).expect("state file");
        let (stop, interrupt) = watch::channel(false);
        let runs = runs(&yaml, &stores);
        let aws = Arc::new(fake.clone());
        let task = tokio::spawn(async move {
            let _keep_sender = stop;
            run_plans(aws, runs, &options(), &Recorder::default(), interrupt).await
        });
        tokio::time::timeout(Duration::from_secs(10), async {
            while comment_sends() == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
        .await
        .expect("command sent");
        task.abort();
        let _ = task.await;
    }
    assert_eq!(comment_sends(), 1);
    fake.behave(|b| b.command_time = Duration::ZERO);
    let stores = FileStore::open(Some(&state)).expect("state file");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = run_plans(
        Arc::new(fake.clone()),
        runs(&yaml, &stores),
        &options(),
        &Recorder::default(),
        interrupt,
    )
    .await;
    assert_eq!(outcomes[0].status.as_ref().map(|s| s.phase), Some(PlanPhase::Succeeded));
    assert_eq!(
        comment_sends(),
        1,
        "the resumed run watched the first command; no second reboot"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_changed_plan_file_with_the_same_state_file_starts_a_new_run() {
    let fake = instant_fake();
    let dir = std::env::temp_dir().join(format!("pitstop-rerun-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let state = dir.join("state.json");
    let rehearsal = format!("{}  dryRun: true\n", plan_yaml("web", &IDS[..1]));
    let stores = FileStore::open(Some(&state)).expect("state file");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = run_plans(
        Arc::new(fake.clone()),
        runs(&rehearsal, &stores),
        &options(),
        &Recorder::default(),
        interrupt,
    )
    .await;
    assert_eq!(outcomes[0].status.as_ref().map(|s| s.phase), Some(PlanPhase::Succeeded));
    assert!(fake.writes().is_empty(), "the dry run wrote nothing");

    let stores = FileStore::open(Some(&state)).expect("state file");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = run_plans(
        Arc::new(fake.clone()),
        runs(&plan_yaml("web", &IDS[..1]), &stores),
        &options(),
        &Recorder::default(),
        interrupt,
    )
    .await;
    let status = outcomes[0].status.clone().expect("status");
    assert_eq!(status.phase, PlanPhase::Succeeded);
    assert_eq!(
        status.instances[0].phase,
        InstancePhase::Registered,
        "the real run maintained it"
    );
    assert_eq!(fake.writes().iter().filter(|w| w.operation == "SendCommand").count(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_denied_deregister_ends_the_run_at_once_and_leaves_the_instance_in() {
    let fake = instant_fake();
    fake.behave(|b| b.denied_operations = vec!["DeregisterTargets"]);
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let recorder = Recorder::default();
    let outcomes = tokio::time::timeout(
        Duration::from_secs(10),
        run_plans(
            Arc::new(fake.clone()),
            runs(&plan_yaml("web", &IDS), &stores),
            &options(),
            &recorder,
            interrupt,
        ),
    )
    .await
    .expect("ends at once, no retrying");
    let line = outcomes[0].aws_failure.clone().expect("stopped on AWS");
    println!("{line}");
    assert_eq!(
        line,
        "AWS denied elasticloadbalancing:DeregisterTargets in eu-west-1 (AccessDenied (HTTP 403): User: \
         arn:aws:sts::123456789012:assumed-role/pitstop/fake is not authorized to perform: \
         elasticloadbalancing:DeregisterTargets because no identity-based policy allows the \
         elasticloadbalancing:DeregisterTargets action): allow elasticloadbalancing:DeregisterTargets in the IAM \
         policy of the identity pitstop runs as"
    );
    assert!(!line.contains('\n'));
    assert_eq!(pitstop::cli::run::exit_code(&outcomes), pitstop::cli::run::EXIT_AWS);
    assert!(IDS.iter().all(|id| fake.state(ARN, id).is_registered()));
    assert_eq!(
        fake.writes().iter().map(|w| w.operation).collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "no write went through"
    );
    let lines = recorder.lines.lock().expect("lock").join("\n");
    assert!(!lines.contains("retry"), "{lines}");
}

#[tokio::test]
async fn a_denied_send_command_puts_the_instance_back_before_ending_the_run() {
    let fake = instant_fake();
    fake.behave(|b| b.denied_operations = vec!["SendCommand"]);
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(10),
        run_plans(
            Arc::new(fake.clone()),
            runs(&plan_yaml("web", &IDS), &stores),
            &options(),
            &Recorder::default(),
            interrupt,
        ),
    )
    .await
    .expect("ends at once");
    let line = outcomes[0].aws_failure.clone().expect("stopped on AWS");
    println!("{line}");
    assert!(line.starts_with("AWS denied ssm:SendCommand in eu-west-1 ("), "{line}");
    assert!(
        line.ends_with("; i-0000000000000000a was out of the target group and is registered again"),
        "{line}"
    );
    assert!(fake.state(ARN, IDS[0]).is_registered(), "put back");
    assert_eq!(pitstop::cli::run::exit_code(&outcomes), pitstop::cli::run::EXIT_AWS);
}

#[tokio::test]
async fn aws_unreachable_is_retried_then_given_up_naming_the_instance_still_out() {
    let fake = instant_fake();
    fake.behave(|b| b.command_time = Duration::from_secs(3600));
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let recorder = Recorder::default();
    let options = RunOptions {
        give_up_after: Duration::from_millis(300),
        ..options()
    };
    let fake_for_outage = fake.clone();
    let run = run_plans(
        Arc::new(fake.clone()),
        runs(&plan_yaml("web", &IDS), &stores),
        &options,
        &recorder,
        interrupt,
    );
    let outage = async move {
        // Once the first instance is out and its command runs, AWS goes away for good.
        while fake_for_outage.writes().iter().all(|w| w.operation != "SendCommand") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake_for_outage.behave(|b| b.fail_next = Some((u32::MAX, pitstop::aws::AwsErrorKind::Transient)));
    };
    let (outcomes, ()) = tokio::time::timeout(Duration::from_secs(10), futures::future::join(run, outage))
        .await
        .expect("gives up");
    let line = outcomes[0].aws_failure.clone().expect("stopped on AWS");
    println!("{line}");
    assert!(line.starts_with("AWS unreachable: "), "{line}");
    assert!(line.contains("giving up"), "{line}");
    assert!(
        line.contains("i-0000000000000000a is still out of target group"),
        "the instance left out is named: {line}"
    );
    assert!(!fake.state(ARN, IDS[0]).is_registered());
    let lines = recorder.lines.lock().expect("lock").join("\n");
    assert!(lines.contains("web retry AWS unreachable: "), "{lines}");
}

#[tokio::test]
async fn a_plan_that_stops_on_aws_with_an_instance_still_out_keeps_the_group_and_stops_the_others() {
    const FOUR: [&str; 4] = [
        "i-0000000000000000a",
        "i-0000000000000000b",
        "i-0000000000000000c",
        "i-0000000000000000d",
    ];
    let fake = FakeAws::new(ARN, &FOUR, jiff::Timestamp::now());
    fake.behave(|b| {
        b.drain_time = Duration::ZERO;
        b.healthy_time = Duration::ZERO;
        b.command_time = Duration::ZERO;
        b.invocation_delay = Duration::ZERO;
        // The first plan's instance goes out, then neither its command nor its return is allowed.
        b.denied_operations = vec!["SendCommand", "RegisterTargets"];
    });
    let yaml = format!(
        "{}---\n{}",
        plan_yaml("first", &FOUR[..2]),
        plan_yaml("second", &FOUR[2..])
    );
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        run_plans(
            Arc::new(fake.clone()),
            runs(&yaml, &stores),
            &options(),
            &Recorder::default(),
            interrupt,
        ),
    )
    .await
    .expect("the run ends: the other plan is stopped, not left waiting for the group");
    let first = outcomes.iter().find(|o| o.name == "first").expect("first");
    let second = outcomes.iter().find(|o| o.name == "second").expect("second");
    assert!(first.still_out, "{first:?}");
    assert!(
        first.aws_failure.as_deref().is_some_and(|l| l.contains("is still out")),
        "{first:?}"
    );
    assert!(second.interrupted, "{second:?}");
    assert_eq!(fake.max_out_at_once(), 1, "the second plan took nothing out");
    let deregistered = fake
        .writes()
        .iter()
        .filter(|w| w.operation == "DeregisterTargets")
        .count();
    assert_eq!(deregistered, 1);
}

/// `pitstop run` with plans over several target groups: every instance leaves, and comes
/// back into, both groups on its port in each; plans listing the shared groups in opposite
/// orders both finish (turns are taken in one sorted order), one instance out per group.
#[tokio::test]
async fn plans_sharing_two_groups_in_opposite_orders_both_finish_one_out_per_group() {
    const TLS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
    let fake = instant_fake();
    fake.add_group(TLS, &IDS, 8443);
    let plan = |name: &str, instances: &[&str], groups: [&str; 2]| {
        format!(
            "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: {name}\nspec:\n  targetGroupArns: [{}]\n  instances: [{}]\n",
            groups.join(", "),
            instances.join(", ")
        )
    };
    let yaml = format!(
        "{}---\n{}",
        plan("forward", &IDS[..2], [ARN, TLS]),
        plan("backward", &IDS[2..], [TLS, ARN])
    );
    let stores = FileStore::open(None).expect("memory store");
    let recorder = Recorder::default();
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        run_plans(
            Arc::new(fake.clone()),
            runs(&yaml, &stores),
            &options(),
            &recorder,
            interrupt,
        ),
    )
    .await
    .expect("finishes: no deadlock");
    for outcome in &outcomes {
        assert_eq!(
            outcome.status.as_ref().map(|s| s.phase),
            Some(PlanPhase::Succeeded),
            "{outcome:?}"
        );
    }
    assert_eq!(fake.max_out_at_once(), 1, "one instance out of each group at a time");
    for id in IDS {
        for (arn, port) in [(ARN, 8080), (TLS, 8443)] {
            let calls: Vec<_> = fake
                .writes()
                .into_iter()
                .filter(|w| w.instance_id == id && w.target_group_arn.as_deref() == Some(arn))
                .map(|w| (w.operation, w.port))
                .collect();
            assert_eq!(
                calls,
                [("DeregisterTargets", Some(port)), ("RegisterTargets", Some(port))],
                "{id} in {arn}"
            );
            assert!(fake.state(arn, id).is_registered());
        }
    }
}

/// A run stopped on AWS puts an instance that is out back into every group it left, on its
/// port in each (the merge of issue 14's put-back with several target groups).
#[tokio::test]
async fn a_denied_send_command_puts_the_instance_back_into_every_group_it_left() {
    const TLS: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-tls/fedcba9876543210";
    let fake = instant_fake();
    fake.add_group(TLS, &IDS, 8443);
    fake.behave(|b| b.denied_operations = vec!["SendCommand"]);
    let yaml = format!(
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata:\n  name: web\nspec:\n  targetGroupArns: [{ARN}, {TLS}]\n  instances: [{}]\n",
        IDS.join(", ")
    );
    let stores = FileStore::open(None).expect("memory store");
    let (_stop, interrupt) = watch::channel(false);
    let outcomes = tokio::time::timeout(
        Duration::from_secs(10),
        run_plans(
            Arc::new(fake.clone()),
            runs(&yaml, &stores),
            &options(),
            &Recorder::default(),
            interrupt,
        ),
    )
    .await
    .expect("ends at once");
    let line = outcomes[0].aws_failure.clone().expect("stopped on AWS");
    println!("{line}");
    assert!(!outcomes[0].still_out, "{line}");
    for (arn, port) in [(ARN, 8080), (TLS, 8443)] {
        assert!(
            line.contains(&format!(
                "{} was out of target group {arn} and is registered again",
                IDS[0]
            )),
            "{line}"
        );
        assert!(fake.state(arn, IDS[0]).is_registered(), "back in {arn}");
        let registers: Vec<_> = fake
            .writes()
            .into_iter()
            .filter(|w| w.operation == "RegisterTargets" && w.target_group_arn.as_deref() == Some(arn))
            .map(|w| (w.instance_id, w.port))
            .collect();
        assert_eq!(registers, [(IDS[0].to_owned(), Some(port))], "{arn}");
    }
    assert_eq!(pitstop::cli::run::exit_code(&outcomes), pitstop::cli::run::EXIT_AWS);
}
