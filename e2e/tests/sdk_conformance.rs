//! pitstop's SDK implementation of the AWS traits (`SdkProvider`, unmodified AWS SDK, real HTTP) against the
//! sandbox, which has AWS's real semantics where moto has shortcuts: targets drain for the deregistration delay and
//! come back through `initial`, commands are invisible for a moment after SendCommand, run on real processes and
//! reboot the instance (whose agent reads `ConnectionLost` meanwhile), CancelCommand stops a running script, and
//! calls can be throttled.
//!
//! `controller/tests/aws_moto.rs` drives the same trait methods through the same `SdkProvider` against moto_server.
//! Together the two suites cover the whole trait surface; method by method:
//!
//! | Trait method | `controller/tests/aws_moto.rs` | `e2e/tests/sdk_conformance.rs` (this file) |
//! |---|---|---|
//! | `TargetGroups::target_health` | `target_health_of_group_and_of_single_instances` | `target_groups_drain_and_come_back_as_on_aws` |
//! | `TargetGroups::instance_health` | `target_health_of_group_and_of_single_instances` | `target_groups_drain_and_come_back_as_on_aws` |
//! | `TargetGroups::deregistration_delay` | `deregistration_delay_reads_the_attribute` | `target_groups_drain_and_come_back_as_on_aws` |
//! | `TargetGroups::deregister` | `deregister_and_register_round_trip` | `target_groups_drain_and_come_back_as_on_aws` |
//! | `TargetGroups::register` | `deregister_and_register_round_trip` | `target_groups_drain_and_come_back_as_on_aws` |
//! | `TargetGroups::tags` | `the_tags_a_policy_asks_for_are_read_for_groups_and_instances` | `target_group_tags_are_read_as_on_aws` |
//! | `Commands::send` | `send_then_find_and_read_commands` | `commands_reboot_find_and_cancel_as_on_aws` |
//! | `Commands::invocation` | `send_then_find_and_read_commands` | `commands_reboot_find_and_cancel_as_on_aws` |
//! | `Commands::find_by_comment` | `send_then_find_and_read_commands` | `commands_reboot_find_and_cancel_as_on_aws` |
//! | `Commands::cancel` | `cancel_and_agent_ping_are_not_implemented_by_moto` | `commands_reboot_find_and_cancel_as_on_aws` |
//! | `Commands::agent_ping` | `cancel_and_agent_ping_are_not_implemented_by_moto` | `commands_reboot_find_and_cancel_as_on_aws` |
//! | `Alarms::states` | none: moto 5.2 does not speak CloudWatch's Smithy RPC v2 CBOR, the SDK's only protocol | `cloudwatch_alarms_are_read_over_cbor_as_on_aws` |
//! | (SendCommand's `AlarmConfiguration`) | `send_command_takes_an_alarm_configuration` | `cloudwatch_alarms_are_read_over_cbor_as_on_aws` |
//! | (missing target group) | `missing_target_group_is_not_found` | `missing_target_group_is_not_found` |
//! | (throttling, retries) | none: moto never throttles | `throttling_is_throttled_and_adaptive_retry_recovers` |
//! | (endpoint from the environment) | `endpoint_url_and_credentials_from_the_environment` | none: `SdkSettings::endpoint_url` here |
//!
//! `mapping_names_every_trait_method_and_real_tests` keeps this table honest: every method of both traits must be
//! in it, and every test it names must exist in its file.
//!
//! Where moto and the sandbox (and AWS) part ways, moto's side is pinned in `aws_moto.rs` ("moto:") and AWS's side
//! here:
//! - registered targets: moto `healthy` at once; here `initial`, then `healthy` after the health checks;
//! - deregistered targets: moto `unused` at once; here `draining` (listed by the group's DescribeTargetHealth) for
//!   the deregistration delay, then `unused`;
//! - a repeated DeregisterTargets: moto answers `InvalidTarget` (the implementation then checks and succeeds); here
//!   it is accepted outright, so no call fails;
//! - GetCommandInvocation: moto has the invocation at once, already `Success`; here `InvocationDoesNotExist` first,
//!   then `InProgress` (through the reboot), then `Success`; an unknown command ID is `InvocationDoesNotExist`
//!   (moto: `InvalidCommandId`);
//! - CancelCommand and DescribeInstanceInformation: moto answers HTTP 500 (not implemented); here they work;
//! - SendCommand of a document that does not exist, or to an instance SSM does not manage: moto accepts both (it
//!   checks neither); here they are `InvalidDocument` / `InvalidInstanceId`, i.e. `NotFound`;
//! - DescribeTargetHealth naming an instance that does not exist: moto answers an `unused` row; here it is
//!   `InvalidTarget` (`NotFound`), so "unregistered reads `unused`" holds only for instances that exist.
//!
//! Every test that starts a sandbox holds [`ONE_SANDBOX_AT_A_TIME`]: a sandbox is a dozen processes and the tests
//! poll real health checks, which a 2-core machine running several at once would starve. Every wait is bounded by a
//! generous limit that only stops a hang; nothing asserts how long anything took. The one reliance on time is that
//! the read right after DeregisterTargets, RegisterTargets or SendCommand lands inside the state it checks (draining,
//! initial, not yet visible), and that polling sees the agent while the instance reboots; each test configures those
//! windows to last a second or more.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use pitstop::aws::sdk::{ApiOperation, OperationCounts, SdkProvider, SdkSettings};
use pitstop::aws::{
    AgentPing, AwsApis, AwsError, AwsErrorKind, AwsProvider, CommandKind, CommandRequest, CommandStatus, CommandTag,
    Target, TargetGroups, TargetState,
};
use pitstop::machine::reboot_command;
use pitstop_e2e::sandbox::{
    CallOutcome, Sandbox, SandboxConfig, check_haproxy_binary, default_haproxy_binary, instance_id,
};

/// One sandbox at a time (see the module documentation).
static ONE_SANDBOX_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Upper bound of every wait: far above what any of them takes, only there so a hang fails instead of blocking.
const LIMIT: Duration = Duration::from_secs(30);

/// Pause between two polls.
const POLL: Duration = Duration::from_millis(100);

/// An instance ID that is not part of any sandbox (the sandbox numbers its instances from `instance_id(0)`).
fn stranger() -> String {
    instance_id(4000)
}

// ---------------------------------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------------------------------

/// A sandbox quick enough for tests; each test widens the windows it needs to observe.
fn config() -> SandboxConfig {
    SandboxConfig::default()
        .with_backend_binary(env!("CARGO_BIN_EXE_pitstop-backend"))
        .with_health_interval(Duration::from_millis(300))
        .with_thresholds(2, 2)
        .with_deregistration_delay(Duration::from_secs(1))
        .with_boot_time(Duration::from_secs(1))
        .with_invocation_visibility_delay(Duration::from_millis(300))
}

/// Starts a sandbox, failing with the install hint when HAProxy is missing.
async fn start(cfg: SandboxConfig) -> Sandbox {
    if let Err(err) = check_haproxy_binary(&cfg.haproxy_binary) {
        panic!("{err} (default looked up: {})", default_haproxy_binary().display());
    }
    let sandbox = match Sandbox::start(cfg).await {
        Ok(sandbox) => sandbox,
        Err(err) => panic!("the sandbox did not start: {err:#}"),
    };
    // Only the calls of the test itself, so they can be matched against the provider's counters.
    sandbox.call_log().clear();
    sandbox
}

/// An `SdkProvider` pointed at the sandbox the way pitstop is pointed at any endpoint (as in
/// `pitstop_e2e::experiment::naive`), with `max_attempts` attempts per call.
fn provider(sandbox: &Sandbox, max_attempts: u32) -> SdkProvider {
    SdkProvider::new(SdkSettings {
        max_attempts,
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "sdk-conformance",
        ))),
        ..SdkSettings::default()
    })
}

async fn apis(sandbox: &Sandbox, provider: &SdkProvider) -> AwsApis {
    provider.for_region(sandbox.region()).await
}

/// Polls `probe` until `done` holds for what it returned, and returns every value seen, consecutive repeats
/// collapsed. Panics after [`LIMIT`], with what it saw.
async fn observe_until<T, F, Fut>(what: &str, mut probe: F, done: impl Fn(&T) -> bool) -> Vec<T>
where
    T: PartialEq + Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = tokio::time::Instant::now() + LIMIT;
    let mut seen: Vec<T> = Vec::new();
    loop {
        let value = probe().await;
        let finished = done(&value);
        if seen.last() != Some(&value) {
            seen.push(value);
        }
        if finished {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {LIMIT:?}; saw {seen:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Polls one target's state in the group until it is `end`; returns the states seen (see [`observe_until`]).
async fn target_states_until(
    tg_api: &dyn TargetGroups,
    tg: &str,
    target: &Target,
    what: &str,
    end: TargetState,
) -> Vec<TargetState> {
    observe_until(
        what,
        || async { tg_api.instance_health(tg, target).await.expect("instance_health").state },
        |s| *s == end,
    )
    .await
}

/// Checks the provider counted exactly the requests the sandbox answered, operation by operation: every attempt
/// (retries included) is a call, every refusal an error, every throttling answer a throttled error.
fn assert_stats_match_call_log(provider: &SdkProvider, sandbox: &Sandbox) {
    let stats = provider.stats().snapshot();
    let log = sandbox.call_log().records();
    for op in ApiOperation::ALL {
        let records: Vec<_> = log.iter().filter(|r| r.operation == op.as_str()).collect();
        let seen = OperationCounts {
            calls: records.len() as u64,
            errors: records.iter().filter(|r| r.outcome != CallOutcome::Ok).count() as u64,
            throttled: records.iter().filter(|r| r.outcome == CallOutcome::Throttled).count() as u64,
        };
        if op == ApiOperation::Other {
            assert_eq!(stats.get(op), OperationCounts::default(), "no call outside the traits");
        } else {
            assert_eq!(
                stats.get(op),
                seen,
                "{op}: the provider's counters against the sandbox's call log"
            );
        }
    }
    assert_eq!(
        stats.total().calls,
        log.len() as u64,
        "every call the sandbox answered was counted"
    );
}

fn counts(calls: u64, errors: u64, throttled: u64) -> OperationCounts {
    OperationCounts {
        calls,
        errors,
        throttled,
    }
}

fn assert_error(result: Result<impl Debug, AwsError>, kind: AwsErrorKind, code: &str) {
    let error = result.expect_err("an error");
    assert_eq!(error.kind, kind, "{error}");
    assert_eq!(error.code.as_deref(), Some(code), "{error}");
}

// ---------------------------------------------------------------------------------------------------------------------
// TargetGroups
// ---------------------------------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_groups_drain_and_come_back_as_on_aws() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    // A drain and an initial phase long enough that the read right after the call lands inside them.
    let cfg = config()
        .with_deregistration_delay(Duration::from_secs(3))
        .with_health_interval(Duration::from_millis(500))
        .with_thresholds(3, 2);
    let delay_seconds = cfg.deregistration_delay_seconds();
    let sandbox = start(cfg).await;
    let provider = provider(&sandbox, 2);
    let tg_api = apis(&sandbox, &provider).await.target_groups;
    let tg = sandbox.target_group_arn();
    let ids = sandbox.instance_ids();

    // target_health: every instance, healthy (the sandbox returned once its checks had passed).
    let rows = tg_api.target_health(tg).await.expect("target_health");
    let mut listed: Vec<&str> = rows.iter().map(|r| r.target.instance_id.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for row in &rows {
        assert_eq!(row.state, TargetState::Healthy, "{row:?}");
        assert_eq!(row.reason, None, "{row:?}");
        assert_eq!(row.target.port, Some(80), "registered on the group's port: {row:?}");
    }
    let target_of = |id: &str| {
        rows.iter()
            .find(|r| r.target.instance_id == id)
            .map(|r| r.target.clone())
            .expect("a listed target")
    };

    // instance_health of a registered instance.
    let staying = target_of(&ids[1]);
    let one = tg_api.instance_health(tg, &staying).await.expect("instance_health");
    assert_eq!((&one.target, one.state), (&staying, TargetState::Healthy));

    // deregistration_delay: the group's attribute, not moto's default of 300 s.
    let delay = tg_api.deregistration_delay(tg).await.expect("deregistration_delay");
    assert_eq!(delay, Duration::from_secs(delay_seconds));

    // deregister: draining (and still listed by the group) for the delay, then unused.
    let leaving = target_of(&ids[0]);
    tg_api.deregister(tg, &leaving).await.expect("deregister");
    let first = tg_api.instance_health(tg, &leaving).await.expect("instance_health");
    assert_eq!(
        first.state,
        TargetState::Draining,
        "right after DeregisterTargets: {first:?}"
    );
    assert_eq!(first.reason.as_deref(), Some("Target.DeregistrationInProgress"));
    assert!(!first.state.is_registered());
    let group = tg_api.target_health(tg).await.expect("target_health while draining");
    let draining = group
        .iter()
        .find(|r| r.target.instance_id == leaving.instance_id)
        .expect("a draining target is still listed by DescribeTargetHealth");
    assert_eq!(draining.state, TargetState::Draining);
    assert_eq!(group.len(), ids.len());

    // A second deregister, while draining, is accepted (idempotent) and does not restart anything visible.
    tg_api
        .deregister(tg, &leaving)
        .await
        .expect("deregister while draining");
    let states = target_states_until(tg_api.as_ref(), tg, &leaving, "the drain to end", TargetState::Unused).await;
    assert_eq!(states, [TargetState::Draining, TargetState::Unused]);

    // instance_health of an instance that is not registered: a row, `unused`, Target.NotRegistered.
    let unused = tg_api.instance_health(tg, &leaving).await.expect("instance_health");
    assert_eq!(unused.target.instance_id, leaving.instance_id);
    assert_eq!(unused.state, TargetState::Unused);
    assert_eq!(unused.reason.as_deref(), Some("Target.NotRegistered"));
    assert!(unused.description.is_some());
    let group = tg_api.target_health(tg).await.expect("target_health after the drain");
    assert_eq!(group.len(), ids.len() - 1);
    assert!(group.iter().all(|r| r.target.instance_id != leaving.instance_id));
    // And deregistering it once more is still fine.
    tg_api.deregister(tg, &leaving).await.expect("deregister when unused");

    // register: initial until the health checks pass, then healthy.
    tg_api.register(tg, &leaving).await.expect("register");
    let first = tg_api.instance_health(tg, &leaving).await.expect("instance_health");
    assert_eq!(
        first.state,
        TargetState::Initial,
        "right after RegisterTargets: {first:?}"
    );
    assert_eq!(first.reason.as_deref(), Some("Elb.InitialHealthChecking"));
    assert!(first.state.is_registered());
    let states = target_states_until(
        tg_api.as_ref(),
        tg,
        &leaving,
        "the registered target to pass its health checks",
        TargetState::Healthy,
    )
    .await;
    assert_eq!(states, [TargetState::Initial, TargetState::Healthy]);
    // Registering a registered target changes nothing (idempotent).
    tg_api.register(tg, &leaving).await.expect("register again");
    let group = tg_api.target_health(tg).await.expect("target_health at the end");
    assert_eq!(group.len(), ids.len());
    assert!(group.iter().all(|r| r.state == TargetState::Healthy), "{group:?}");

    // An instance that does not exist is not `unused` but refused, as ELBv2 refuses targets it cannot find.
    let stranger = Target {
        instance_id: stranger(),
        port: None,
    };
    assert_error(
        tg_api.instance_health(tg, &stranger).await,
        AwsErrorKind::NotFound,
        "InvalidTarget",
    );

    let stats = provider.stats().snapshot();
    assert_eq!(
        stats.get(ApiOperation::DeregisterTargets),
        counts(3, 0, 0),
        "every deregister accepted (moto refuses the repeats)"
    );
    assert_eq!(stats.get(ApiOperation::RegisterTargets), counts(2, 0, 0));
    assert_eq!(stats.get(ApiOperation::DescribeTargetGroupAttributes), counts(1, 0, 0));
    assert_eq!(
        stats.get(ApiOperation::DescribeTargetHealth).errors,
        1,
        "only the stranger"
    );
    assert_stats_match_call_log(&provider, &sandbox);
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_target_group_is_not_found() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    let sandbox = start(config().with_instances(1)).await;
    let provider = provider(&sandbox, 2);
    let tg_api = apis(&sandbox, &provider).await.target_groups;
    let missing = sandbox
        .target_group_arn()
        .replace("targetgroup/sandbox/", "targetgroup/gone/");
    assert_ne!(missing, sandbox.target_group_arn());
    let t = Target {
        instance_id: sandbox.instance_ids()[0].clone(),
        port: None,
    };

    let errors = [
        tg_api.target_health(&missing).await.err(),
        tg_api.instance_health(&missing, &t).await.err(),
        tg_api.deregistration_delay(&missing).await.err(),
        tg_api.deregister(&missing, &t).await.err(),
        tg_api.register(&missing, &t).await.err(),
        tg_api.tags(std::slice::from_ref(&missing)).await.err(),
    ];
    for error in errors {
        let error = error.expect("an error for a target group that does not exist");
        assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
        assert_eq!(error.code.as_deref(), Some("TargetGroupNotFound"), "{error}");
    }
    // Nothing changed: the instance is still registered and healthy.
    let rows = tg_api
        .target_health(sandbox.target_group_arn())
        .await
        .expect("target_health");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, TargetState::Healthy);

    let stats = provider.stats().snapshot();
    assert_eq!(stats.get(ApiOperation::DescribeTargetHealth), counts(3, 2, 0));
    for op in [
        ApiOperation::DescribeTargetGroupAttributes,
        ApiOperation::DeregisterTargets,
        ApiOperation::RegisterTargets,
        ApiOperation::DescribeTags,
    ] {
        assert_eq!(stats.get(op), counts(1, 1, 0), "{op}: one refused call, not retried");
    }
    assert!(sandbox.call_log().records().iter().all(|r| !r.is_effective_write()));
    assert_stats_match_call_log(&provider, &sandbox);
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn target_group_tags_are_read_as_on_aws() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    let sandbox = start(config().with_instances(1)).await;
    let provider = provider(&sandbox, 2);
    let tg_api = apis(&sandbox, &provider).await.target_groups;
    let arn = sandbox.target_group_arn().to_owned();
    let tags = tg_api.tags(std::slice::from_ref(&arn)).await.expect("DescribeTags");
    assert_eq!(
        tags.get(&arn)
            .and_then(|t| t.get("pitstop.dev/fleet"))
            .map(String::as_str),
        Some("sandbox"),
        "{tags:?}"
    );
    assert_eq!(
        provider.stats().snapshot().get(ApiOperation::DescribeTags),
        counts(1, 0, 0)
    );
    assert_stats_match_call_log(&provider, &sandbox);
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn cloudwatch_alarms_are_read_over_cbor_as_on_aws() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    let sandbox = start(config().with_instances(1)).await;
    let provider = provider(&sandbox, 2);
    let aws = apis(&sandbox, &provider).await;
    sandbox.set_alarm("web-5xx", "OK", "").expect("alarm");
    sandbox
        .set_alarm("web-latency", "INSUFFICIENT_DATA", "")
        .expect("alarm");
    sandbox.set_alarm("unrelated", "ALARM", "").expect("alarm");
    let names = ["web-5xx".to_owned(), "web-latency".to_owned(), "typo".to_owned()];
    let states = aws.alarms.states(&names).await.expect("DescribeAlarms");
    let values: BTreeMap<&str, &str> = states.iter().map(|(n, s)| (n.as_str(), s.value.as_str())).collect();
    assert_eq!(
        values,
        BTreeMap::from([("web-5xx", "OK"), ("web-latency", "INSUFFICIENT_DATA")]),
        "only the names asked for, and an unknown name left out"
    );
    // An operator (or the alarm's evaluation) sets the state through the same CBOR endpoint.
    let sdk_config = provider.sdk_config(sandbox.region()).await;
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk_config);
    cloudwatch
        .set_alarm_state()
        .alarm_name("web-5xx")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Alarm)
        .state_reason("Threshold Crossed: 5xx > 10")
        .send()
        .await
        .expect("SetAlarmState");
    let states = aws.alarms.states(&names[..1]).await.expect("DescribeAlarms");
    let firing = states.get("web-5xx").expect("listed");
    assert!(firing.in_alarm(), "{firing:?}");
    assert_eq!(firing.reason.as_deref(), Some("Threshold Crossed: 5xx > 10"));
    let unknown = cloudwatch
        .set_alarm_state()
        .alarm_name("typo")
        .state_value(aws_sdk_cloudwatch::types::StateValue::Ok)
        .state_reason("x")
        .send()
        .await
        .expect_err("no such alarm");
    assert_eq!(
        aws_sdk_cloudwatch::error::ProvideErrorMetadata::code(&unknown),
        Some("ResourceNotFound"),
        "{unknown:?}"
    );
    assert_eq!(
        provider.stats().snapshot().get(ApiOperation::DescribeAlarms),
        counts(2, 0, 0)
    );

    // SendCommand with the alarms as its AlarmConfiguration: accepted, and ListCommands shows it.
    let id = sandbox.instance_ids()[0].clone();
    let mut request = script_request(&id, &["true"], &tag(CommandKind::Maintenance, 1));
    request.alarms = vec!["web-5xx".to_owned(), "web-latency".to_owned()];
    request.ignore_alarm_read_failures = true;
    let command_id = aws.commands.send(&request).await.expect("SendCommand");
    let ssm = aws_sdk_ssm::Client::new(&sdk_config);
    let listed = ssm
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .expect("ListCommands");
    let config = listed
        .commands()
        .first()
        .and_then(|c| c.alarm_configuration())
        .expect("the command carries its alarm configuration");
    let alarm_names: Vec<&str> = config.alarms().iter().map(|a| a.name()).collect();
    assert_eq!(alarm_names, ["web-5xx", "web-latency"]);
    assert!(config.ignore_poll_alarm_failure());
    sandbox.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------------------------------

fn tag(kind: CommandKind, attempt: u32) -> String {
    CommandTag {
        plan_uid: "sdk-conformance".to_owned(),
        kind,
        attempt,
    }
    .comment()
}

fn script_request(instance_id: &str, lines: &[&str], comment: &str) -> CommandRequest {
    CommandRequest {
        instance_id: instance_id.to_owned(),
        document_name: "AWS-RunShellScript".to_owned(),
        document_version: None,
        parameters: BTreeMap::from([("commands".to_owned(), lines.iter().map(|l| (*l).to_owned()).collect())]),
        timeout: Duration::from_secs(60),
        comment: comment.to_owned(),
        alarms: Vec::new(),
        ignore_alarm_read_failures: false,
    }
}

/// One poll of a command and of its instance's agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    status: Option<CommandStatus>,
    ping: AgentPing,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_reboot_find_and_cancel_as_on_aws() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    // A reboot long enough to read the invocation while the instance is down, and an invisibility window long
    // enough for the read right after SendCommand to land in it.
    let cfg = config()
        .with_instances(2)
        .with_boot_time(Duration::from_secs(3))
        .with_invocation_visibility_delay(Duration::from_secs(1));
    let sandbox = start(cfg).await;
    let provider = provider(&sandbox, 2);
    let ssm = apis(&sandbox, &provider).await.commands;
    let ids = sandbox.instance_ids();
    let (rebooted, other) = (&ids[0], &ids[1]);

    // agent_ping: a running instance is Online; an instance SSM does not manage is NotManaged.
    assert_eq!(ssm.agent_ping(rebooted).await.expect("agent_ping"), AgentPing::Online);
    assert_eq!(
        ssm.agent_ping(&stranger()).await.expect("agent_ping"),
        AgentPing::NotManaged
    );

    // send: the seed's flag-file reboot, tagged as pitstop tags its maintenance command.
    let boots_before = sandbox.boot_counts();
    let maintenance_tag = tag(CommandKind::Maintenance, 1);
    let script = reboot_command(&maintenance_tag);
    let reboot = CommandRequest {
        instance_id: rebooted.clone(),
        document_name: script.document_name,
        document_version: script.document_version,
        parameters: script.parameters,
        timeout: Duration::from_secs(60),
        comment: maintenance_tag.clone(),
        alarms: Vec::new(),
        ignore_alarm_read_failures: false,
    };
    let reboot_id = ssm.send(&reboot).await.expect("send the reboot");
    // invocation: right after SendCommand SSM does not know the invocation yet (InvocationDoesNotExist).
    assert_eq!(
        ssm.invocation(&reboot_id, rebooted).await.expect("invocation"),
        None,
        "right after SendCommand"
    );
    // Then it runs, the instance reboots (its agent loses the connection, the invocation stays InProgress), and
    // the script, run again after the boot, succeeds.
    let seen = observe_until(
        "the reboot command to finish",
        || async {
            let invocation = ssm.invocation(&reboot_id, rebooted).await.expect("invocation");
            let ping = ssm.agent_ping(rebooted).await.expect("agent_ping");
            Seen {
                status: invocation.map(|i| i.status),
                ping,
            }
        },
        |s| s.status.is_some_and(CommandStatus::is_terminal),
    )
    .await;
    let mut statuses: Vec<CommandStatus> = seen.iter().filter_map(|s| s.status).collect();
    statuses.dedup();
    statuses.retain(|s| *s != CommandStatus::Pending);
    assert_eq!(
        statuses,
        [CommandStatus::InProgress, CommandStatus::Success],
        "observed: {seen:?}"
    );
    let mut pings: Vec<AgentPing> = seen.iter().map(|s| s.ping).collect();
    pings.dedup();
    assert!(
        pings.contains(&AgentPing::ConnectionLost),
        "the agent reads ConnectionLost while the instance is down; observed: {seen:?}"
    );
    assert!(
        pings
            .iter()
            .all(|p| matches!(p, AgentPing::Online | AgentPing::ConnectionLost)),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.status == Some(CommandStatus::InProgress) && s.ping == AgentPing::ConnectionLost),
        "the invocation is InProgress while its instance reboots; observed: {seen:?}"
    );
    assert_eq!(seen.last().map(|s| s.ping), Some(AgentPing::Online), "{seen:?}");
    let done = ssm
        .invocation(&reboot_id, rebooted)
        .await
        .expect("invocation")
        .expect("a finished invocation");
    assert_eq!(done.status, CommandStatus::Success);
    assert_eq!(done.response_code, Some(0));
    assert_eq!(done.status_details.as_deref(), Some("Success"));
    assert_eq!(done.stderr_tail, None);
    // One reboot of that instance, none of the other; the flag file is gone.
    let mut expected_boots = boots_before.clone();
    *expected_boots.get_mut(rebooted).expect("known instance") += 1;
    assert_eq!(sandbox.boot_counts(), expected_boots);
    let home = sandbox.instance_home(rebooted).expect("known instance");
    let leftovers: Vec<_> = std::fs::read_dir(&home)
        .expect("instance home")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".rebooted"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "the flag file is removed after the reboot: {leftovers:?}"
    );
    assert_eq!(ssm.agent_ping(rebooted).await.expect("agent_ping"), AgentPing::Online);

    // find_by_comment: the right command among two with different comments, nothing for other tags or instances.
    let verify_tag = tag(CommandKind::Verify, 1);
    let verify_id = ssm
        .send(&script_request(rebooted, &["echo verify"], &verify_tag))
        .await
        .expect("send verify");
    assert_ne!(verify_id, reboot_id);
    let found = |instance: String, comment: String| {
        let ssm = ssm.clone();
        async move {
            ssm.find_by_comment(&instance, &comment)
                .await
                .expect("find_by_comment")
                .map(|f| f.command_id)
        }
    };
    assert_eq!(
        found(rebooted.clone(), maintenance_tag.clone()).await,
        Some(reboot_id.clone())
    );
    assert_eq!(
        found(rebooted.clone(), verify_tag.clone()).await,
        Some(verify_id.clone())
    );
    assert_eq!(found(rebooted.clone(), tag(CommandKind::Maintenance, 2)).await, None);
    assert_eq!(found(other.clone(), maintenance_tag.clone()).await, None);

    // cancel: a running script ends Cancelled; cancelling it again, or a command that succeeded, is fine.
    let sleeper = ssm
        .send(&script_request(other, &["sleep 30"], "sdk-conformance/cancel"))
        .await
        .expect("send sleep");
    observe_until(
        "the sleep to run",
        || async {
            ssm.invocation(&sleeper, other)
                .await
                .expect("invocation")
                .map(|i| i.status)
        },
        |s| *s == Some(CommandStatus::InProgress),
    )
    .await;
    ssm.cancel(&sleeper, other).await.expect("cancel a running command");
    let statuses = observe_until(
        "the cancelled command to end",
        || async {
            ssm.invocation(&sleeper, other)
                .await
                .expect("invocation")
                .map(|i| i.status)
        },
        |s| s.is_some_and(CommandStatus::is_terminal),
    )
    .await;
    assert_eq!(statuses.last(), Some(&Some(CommandStatus::Cancelled)), "{statuses:?}");
    ssm.cancel(&sleeper, other).await.expect("cancel a cancelled command");
    ssm.cancel(&reboot_id, rebooted)
        .await
        .expect("cancel a command that succeeded");
    let after = ssm
        .invocation(&reboot_id, rebooted)
        .await
        .expect("invocation")
        .expect("the invocation");
    assert_eq!(
        after.status,
        CommandStatus::Success,
        "cancelling a finished command changes nothing"
    );

    // The error answers.
    let mut missing_document = script_request(rebooted, &["true"], "sdk-conformance/missing-document");
    missing_document.document_name = "Pitstop-NoSuchDocument".to_owned();
    assert_error(
        ssm.send(&missing_document).await,
        AwsErrorKind::NotFound,
        "InvalidDocument",
    );
    assert_error(
        ssm.send(&script_request(&stranger(), &["true"], "sdk-conformance/stranger"))
            .await,
        AwsErrorKind::NotFound,
        "InvalidInstanceId",
    );
    // An unknown command ID: AWS (and the sandbox) answer InvocationDoesNotExist, so Ok(None); moto says
    // InvalidCommandId.
    assert_eq!(
        ssm.invocation("00000000-0000-4000-8000-000000000000", rebooted)
            .await
            .expect("invocation of an unknown command"),
        None
    );

    let stats = provider.stats().snapshot();
    assert_eq!(
        stats.get(ApiOperation::SendCommand),
        counts(5, 2, 0),
        "reboot, verify, sleep; missing document and stranger refused"
    );
    assert_eq!(
        stats.get(ApiOperation::CancelCommand),
        counts(3, 0, 0),
        "no fallback read was needed"
    );
    assert_eq!(
        stats.get(ApiOperation::ListCommands),
        counts(4, 0, 0),
        "one page per look-up"
    );
    assert!(
        stats.get(ApiOperation::GetCommandInvocation).errors >= 2,
        "the InvocationDoesNotExist answers are refused calls"
    );
    assert_stats_match_call_log(&provider, &sandbox);
    sandbox.shutdown().await.expect("shutdown");
}

// ---------------------------------------------------------------------------------------------------------------------
// Throttling
// ---------------------------------------------------------------------------------------------------------------------

/// What one trait call cost in requests: the provider's counters before and after it.
fn requests_of(before: OperationCounts, after: OperationCounts) -> OperationCounts {
    counts(
        after.calls - before.calls,
        after.errors - before.errors,
        after.throttled - before.throttled,
    )
}

/// Whether the sandbox has answered `operation` with a throttling error.
fn throttled_once(sandbox: &Sandbox, operation: &str) -> bool {
    sandbox
        .call_log()
        .records()
        .iter()
        .any(|r| r.operation == operation && r.outcome == CallOutcome::Throttled)
}

/// Throttling, through the SDK's adaptive retry mode.
///
/// The SDK keeps one client-side rate limiter per service and region for the whole process, whichever client
/// uses it. Once throttled it lets about one request in two seconds through, and a retry after a throttle costs ten
/// of its tokens: a few throttles leave a debt that holds back the next requests of that service and region for tens
/// of seconds (the 5 s `max_backoff` bounds the wait before a retry, not the wait before a first attempt). So the
/// sandbox gets a region of its own, away from the other tests, and the retrying parts below work in regions nobody
/// used before (the sandbox does not look at the region a request is signed for).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_throttled_and_adaptive_retry_recovers() {
    let _one = ONE_SANDBOX_AT_A_TIME.lock().await;
    let sandbox = start(config().with_instances(2).with_region("eu-west-3")).await;
    let tg = sandbox.target_group_arn();
    let id = sandbox.instance_ids()[0].clone();

    // Every request throttled, one attempt per call: the error surfaces as Throttled, nothing is carried out.
    sandbox.faults().set_throttle_rate(1.0).expect("throttle rate");
    let single = provider(&sandbox, 1);
    let single_apis = apis(&sandbox, &single).await;
    assert_error(
        single_apis.target_groups.target_health(tg).await,
        AwsErrorKind::Throttled,
        "Throttling",
    );
    assert_error(
        single_apis.target_groups.deregistration_delay(tg).await,
        AwsErrorKind::Throttled,
        "Throttling",
    );
    assert_error(
        single_apis.commands.agent_ping(&id).await,
        AwsErrorKind::Throttled,
        "ThrottlingException",
    );
    assert_error(
        single_apis
            .commands
            .send(&script_request(&id, &["true"], "sdk-conformance/throttled"))
            .await,
        AwsErrorKind::Throttled,
        "ThrottlingException",
    );
    assert_eq!(
        single.stats().snapshot().total(),
        counts(4, 4, 4),
        "one attempt each, all throttled"
    );
    assert_stats_match_call_log(&single, &sandbox);
    assert!(
        sandbox
            .call_log()
            .records()
            .iter()
            .all(|r| r.outcome == CallOutcome::Throttled)
    );

    // Default settings: a call whose first attempt is throttled is retried by the SDK and succeeds once the
    // throttling stops, without the caller seeing it. The throttling stops as soon as both calls have been throttled.
    sandbox.call_log().clear();
    let retrying = provider(&sandbox, SdkSettings::default().max_attempts);
    let recovering = retrying.for_region("conformance-recover").await;
    let stop_throttling = async {
        observe_until(
            "a throttled attempt of each call",
            || async {
                throttled_once(&sandbox, "DescribeTargetHealth")
                    && throttled_once(&sandbox, "DescribeInstanceInformation")
            },
            |both| *both,
        )
        .await;
        sandbox.faults().set_throttle_rate(0.0).expect("throttle rate");
    };
    let (rows, ping, ()) = tokio::join!(
        recovering.target_groups.target_health(tg),
        recovering.commands.agent_ping(&id),
        stop_throttling
    );
    assert_eq!(rows.expect("target_health, retried past the throttling").len(), 2);
    assert_eq!(
        ping.expect("agent_ping, retried past the throttling"),
        AgentPing::Online
    );
    let stats = retrying.stats().snapshot();
    for op in [
        ApiOperation::DescribeTargetHealth,
        ApiOperation::DescribeInstanceInformation,
    ] {
        let c = stats.get(op);
        assert!(
            c.calls >= 2 && c.calls <= u64::from(SdkSettings::default().max_attempts),
            "{op}: {c:?}"
        );
        assert_eq!((c.errors, c.throttled), (c.calls - 1, c.calls - 1), "{op}: {c:?}");
    }
    assert_stats_match_call_log(&retrying, &sandbox);

    // Half the requests throttled, default settings: a call of each service eventually succeeds, retried inside the
    // SDK and, when all its attempts were throttled, called again as pitstop's next reconcile would. The two services
    // have separate rate limiters, so they run side by side.
    sandbox.call_log().clear();
    sandbox.faults().set_throttle_rate(0.5).expect("throttle rate");
    let halved = provider(&sandbox, SdkSettings::default().max_attempts);
    tokio::join!(
        eventually_succeeds(&halved, &sandbox, ApiOperation::DescribeTargetHealth),
        eventually_succeeds(&halved, &sandbox, ApiOperation::DescribeInstanceInformation),
    );
    assert_stats_match_call_log(&halved, &sandbox);
    sandbox.faults().clear();
    sandbox.shutdown().await.expect("shutdown");
}

/// Calls `operation` (`target_health` or `agent_ping`) until one call succeeds, each call through clients of a region
/// nobody used before, and checks what every call cost: a failed call used all its attempts, all throttled; the call
/// that succeeded had one good attempt after as many throttled ones as it took.
async fn eventually_succeeds(provider: &SdkProvider, sandbox: &Sandbox, operation: ApiOperation) {
    let max_attempts = u64::from(SdkSettings::default().max_attempts);
    let id = &sandbox.instance_ids()[0];
    let mut tries = Vec::new();
    loop {
        assert!(tries.len() < 10, "{operation}: ten calls failed in a row: {tries:?}");
        let region = format!("conformance-{operation}-{}", tries.len()).to_lowercase();
        let apis = provider.for_region(&region).await;
        let before = provider.stats().snapshot().get(operation);
        let result = match operation {
            ApiOperation::DescribeTargetHealth => apis
                .target_groups
                .target_health(sandbox.target_group_arn())
                .await
                .map(|rows| assert_eq!(rows.len(), sandbox.instance_ids().len())),
            ApiOperation::DescribeInstanceInformation => apis
                .commands
                .agent_ping(id)
                .await
                .map(|ping| assert_eq!(ping, AgentPing::Online)),
            other => panic!("no call for {other}"),
        };
        let requests = requests_of(before, provider.stats().snapshot().get(operation));
        tries.push((requests, result.clone().map_err(|e| e.kind)));
        match result {
            Ok(()) => {
                assert!((1..=max_attempts).contains(&requests.calls), "{operation}: {tries:?}");
                assert_eq!(
                    (requests.errors, requests.throttled),
                    (requests.calls - 1, requests.calls - 1),
                    "{operation}: {tries:?}"
                );
                return;
            }
            Err(error) => {
                assert_eq!(error.kind, AwsErrorKind::Throttled, "{error}");
                assert_eq!(
                    requests,
                    counts(max_attempts, max_attempts, max_attempts),
                    "{operation}: {tries:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------------
// The mapping in the module documentation
// ---------------------------------------------------------------------------------------------------------------------

/// (trait method, test in `aws_moto.rs`, test in this file); `None` where a suite has no counterpart.
const MAPPING: &[(&str, Option<&str>, Option<&str>)] = &[
    ("states", None, Some("cloudwatch_alarms_are_read_over_cbor_as_on_aws")),
    (
        "(SendCommand's `AlarmConfiguration`)",
        Some("send_command_takes_an_alarm_configuration"),
        Some("cloudwatch_alarms_are_read_over_cbor_as_on_aws"),
    ),
    (
        "target_health",
        Some("target_health_of_group_and_of_single_instances"),
        Some("target_groups_drain_and_come_back_as_on_aws"),
    ),
    (
        "instance_health",
        Some("target_health_of_group_and_of_single_instances"),
        Some("target_groups_drain_and_come_back_as_on_aws"),
    ),
    (
        "deregistration_delay",
        Some("deregistration_delay_reads_the_attribute"),
        Some("target_groups_drain_and_come_back_as_on_aws"),
    ),
    (
        "deregister",
        Some("deregister_and_register_round_trip"),
        Some("target_groups_drain_and_come_back_as_on_aws"),
    ),
    (
        "register",
        Some("deregister_and_register_round_trip"),
        Some("target_groups_drain_and_come_back_as_on_aws"),
    ),
    (
        "tags",
        Some("the_tags_a_policy_asks_for_are_read_for_groups_and_instances"),
        Some("target_group_tags_are_read_as_on_aws"),
    ),
    (
        "send",
        Some("send_then_find_and_read_commands"),
        Some("commands_reboot_find_and_cancel_as_on_aws"),
    ),
    (
        "invocation",
        Some("send_then_find_and_read_commands"),
        Some("commands_reboot_find_and_cancel_as_on_aws"),
    ),
    (
        "find_by_comment",
        Some("send_then_find_and_read_commands"),
        Some("commands_reboot_find_and_cancel_as_on_aws"),
    ),
    (
        "cancel",
        Some("cancel_and_agent_ping_are_not_implemented_by_moto"),
        Some("commands_reboot_find_and_cancel_as_on_aws"),
    ),
    (
        "agent_ping",
        Some("cancel_and_agent_ping_are_not_implemented_by_moto"),
        Some("commands_reboot_find_and_cancel_as_on_aws"),
    ),
    (
        "(missing target group)",
        Some("missing_target_group_is_not_found"),
        Some("missing_target_group_is_not_found"),
    ),
    (
        "(throttling, retries)",
        None,
        Some("throttling_is_throttled_and_adaptive_retry_recovers"),
    ),
    (
        "(endpoint from the environment)",
        Some("endpoint_url_and_credentials_from_the_environment"),
        None,
    ),
];

/// The method names declared by `trait <name>` in `source`.
fn trait_methods(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub trait {name}"))
        .unwrap_or_else(|| panic!("no trait {name}"));
    let body = &source[start..];
    let end = body.find("\n}").expect("end of the trait");
    body[..end]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("async fn "))
        .map(|l| l.split('(').next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn mapping_names_every_trait_method_and_real_tests() {
    let traits = include_str!("../../controller/src/aws/mod.rs");
    let moto = include_str!("../../controller/tests/aws_moto.rs");
    let this = include_str!("sdk_conformance.rs");
    let doc: Vec<&str> = this.lines().take_while(|l| l.starts_with("//!")).collect();

    let mut methods = Vec::new();
    for name in ["TargetGroups", "Commands"] {
        let found = trait_methods(traits, name);
        assert!(!found.is_empty(), "no methods found in trait {name}");
        methods.extend(found.into_iter().map(|m| (name, m)));
    }
    for (trait_name, method) in &methods {
        assert!(
            MAPPING
                .iter()
                .any(|(m, moto, here)| m == method && moto.is_some() && here.is_some()),
            "{trait_name}::{method} is not covered by both suites in MAPPING"
        );
    }
    for (method, moto_test, here_test) in MAPPING {
        if let Some(test) = moto_test {
            assert!(
                moto.contains(&format!("async fn {test}()")),
                "aws_moto.rs has no test {test}"
            );
        }
        if let Some(test) = here_test {
            assert!(this.contains(&format!("async fn {test}()")), "no test {test} here");
        }
        let row_names_it = |l: &&str| {
            l.contains(method.trim_matches(|c| c == '(' || c == ')'))
                && moto_test.is_none_or(|t| l.contains(&format!("`{t}`")))
                && here_test.is_none_or(|t| l.contains(&format!("`{t}`")))
        };
        assert!(
            doc.iter().any(row_names_it),
            "the documentation table has no row for {method}"
        );
    }
}
