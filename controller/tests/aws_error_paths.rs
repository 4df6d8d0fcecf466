//! The SDK implementation's answers to what moto cannot produce: throttling, access denied,
//! server errors, `InvocationDoesNotExist` right after SendCommand, SSM agent ping states,
//! cancelling finished commands, pagination. Uses aws-smithy-mocks: the SDK runs unmodified
//! (serialisation, retries, error parsing), only the HTTP exchange is canned.
//!
//! Error answers are given as raw HTTP responses in the services' wire formats wherever
//! possible, so the SDK's own error parsing produces the codes the mapping sees.
//!
//! Each test uses its own region: the SDK keeps adaptive-retry state (the client-side rate
//! limiter) per service and region for the whole process, and a throttled test must not slow
//! down another.

use std::sync::Arc;

use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_elasticloadbalancingv2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ssm as ssm;
use aws_smithy_mocks::{MockResponse, Rule, RuleMode, create_mock_http_client, mock};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::retry::RetryMode;
use pitstop::aws::problem::describe;
use pitstop::aws::sdk::{
    ApiCallStats, ApiOperation, OperationCounts, SdkCommands, SdkProvider, SdkSettings, SdkTargetGroups, retry_config,
};
use pitstop::aws::{
    AgentPing, AwsErrorKind, AwsProvider, CommandRequest, CommandStatus, Commands, Target, TargetGroups, TargetState,
};

const TG: &str = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/0123456789abcdef";
const INSTANCE: &str = "i-0123456789abcdef0";
const COMMAND: &str = "11111111-2222-4333-8444-555555555555";

fn mock_interceptor(rules: &[&Rule]) -> aws_smithy_mocks::MockResponseInterceptor {
    let mut interceptor = aws_smithy_mocks::MockResponseInterceptor::new().rule_mode(RuleMode::MatchAny);
    for rule in rules {
        interceptor = interceptor.with_rule(rule);
    }
    interceptor
}

/// An ELBv2 implementation whose HTTP exchanges are the `rules`, with pitstop's retry
/// configuration.
fn elb(region: &'static str, max_attempts: u32, rules: &[&Rule]) -> (SdkTargetGroups, Arc<ApiCallStats>) {
    let stats = Arc::new(ApiCallStats::new());
    let config = elbv2::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(retry_config(max_attempts))
        .http_client(create_mock_http_client())
        .interceptor(mock_interceptor(rules));
    (SdkTargetGroups::new(config, &stats), stats)
}

/// An SSM implementation whose HTTP exchanges are the `rules`.
fn ssm(region: &'static str, max_attempts: u32, rules: &[&Rule]) -> (SdkCommands, Arc<ApiCallStats>) {
    let stats = Arc::new(ApiCallStats::new());
    let config = ssm::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(region))
        .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
        .retry_config(retry_config(max_attempts))
        .http_client(create_mock_http_client())
        .interceptor(mock_interceptor(rules));
    (SdkCommands::new(config, &stats), stats)
}

/// An ELBv2 (awsQuery protocol) error answer.
fn elb_error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = format!(
        r#"<ErrorResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>0f6d5a8e-0000-4000-8000-000000000000</RequestId></ErrorResponse>"#
    );
    HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body))
}

/// An SSM (awsJson 1.1 protocol) error answer.
fn ssm_error(status: u16, code: &str, message: &str) -> HttpResponse {
    let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#);
    let mut response = HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body));
    response
        .headers_mut()
        .insert("content-type", "application/x-amz-json-1.1");
    response
}

fn healthy_row(id: &str) -> elbv2::types::TargetHealthDescription {
    elbv2::types::TargetHealthDescription::builder()
        .target(elbv2::types::TargetDescription::builder().id(id).port(8080).build())
        .target_health(
            elbv2::types::TargetHealth::builder()
                .state(elbv2::types::TargetHealthStateEnum::Healthy)
                .build(),
        )
        .build()
}

fn target() -> Target {
    Target {
        instance_id: INSTANCE.to_owned(),
        port: Some(8080),
    }
}

fn request(comment: &str) -> CommandRequest {
    CommandRequest {
        instance_id: INSTANCE.to_owned(),
        document_name: "AWS-RunShellScript".to_owned(),
        document_version: None,
        parameters: [("commands".to_owned(), vec!["exit 194".to_owned()])].into(),
        timeout: std::time::Duration::from_secs(900),
        comment: comment.to_owned(),
        alarms: Vec::new(),
        ignore_alarm_read_failures: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Throttling and retries
// ---------------------------------------------------------------------------------------------

// Paused clock: after a throttle, adaptive retry waits up to 20 s (the SDK's max backoff)
// before retrying; tokio's paused time lets the test skip the wait, not the behaviour.
#[tokio::test(start_paused = true)]
async fn throttling_that_outlasts_the_retries_is_throttled() {
    let rule = mock!(elbv2::Client::describe_target_health)
        .sequence()
        .http_response(|| elb_error(400, "Throttling", "Rate exceeded"))
        .repeatedly()
        .build();
    let (tg, stats) = elb("eu-north-1", 2, &[&rule]);

    let error = tg.target_health(TG).await.expect_err("throttled");
    assert_eq!(error.kind, AwsErrorKind::Throttled, "{error}");
    assert_eq!(error.code.as_deref(), Some("Throttling"));
    assert_eq!(error.operation, "DescribeTargetHealth");
    assert_eq!(rule.num_calls(), 2, "the SDK retried once (max_attempts = 2)");
    assert_eq!(
        stats.snapshot().get(ApiOperation::DescribeTargetHealth),
        OperationCounts {
            calls: 2,
            errors: 2,
            throttled: 2
        }
    );
}

// Paused clock: after a throttle, adaptive retry waits up to 20 s (the SDK's max backoff)
// before retrying; tokio's paused time lets the test skip the wait, not the behaviour.
#[tokio::test(start_paused = true)]
async fn throttled_then_ok_succeeds_with_adaptive_retry() {
    let rule = mock!(elbv2::Client::describe_target_health)
        .sequence()
        .http_response(|| elb_error(400, "Throttling", "Rate exceeded"))
        .output(|| {
            elbv2::operation::describe_target_health::DescribeTargetHealthOutput::builder()
                .target_health_descriptions(healthy_row(INSTANCE))
                .build()
        })
        .build();
    let (tg, stats) = elb("eu-west-2", 3, &[&rule]);

    let retry = tg.client().config().retry_config().expect("a retry config");
    assert_eq!(retry.mode(), RetryMode::Adaptive);
    assert_eq!(retry.max_attempts(), 3);

    let rows = tg.target_health(TG).await.expect("the retry succeeds");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, TargetState::Healthy);
    assert_eq!(rows[0].target, target());
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(
        stats.snapshot().get(ApiOperation::DescribeTargetHealth),
        OperationCounts {
            calls: 2,
            errors: 1,
            throttled: 1
        }
    );
}

#[tokio::test]
async fn every_throttling_code_is_throttled() {
    for (i, code) in [
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
    ]
    .into_iter()
    .enumerate()
    {
        let rule = mock!(ssm::Client::send_command)
            .sequence()
            .http_response(move || ssm_error(400, code, "Rate exceeded"))
            .repeatedly()
            .build();
        // A region per code keeps their rate limiters apart (see the module comment).
        let region = ["us-east-2", "ca-central-1", "eu-west-3", "ap-northeast-1"][i];
        let (commands, stats) = ssm(region, 1, &[&rule]);
        let error = commands
            .send(&request("pitstop/u/maintenance/1"))
            .await
            .expect_err(code);
        assert_eq!(error.kind, AwsErrorKind::Throttled, "{code}: {error}");
        assert_eq!(error.code.as_deref(), Some(code));
        assert_eq!(stats.snapshot().get(ApiOperation::SendCommand).throttled, 1, "{code}");
    }
}

// Paused clock: skips the retry's backoff.
#[tokio::test(start_paused = true)]
async fn server_errors_are_transient_and_retried() {
    let rule = mock!(elbv2::Client::describe_target_group_attributes)
        .sequence()
        .http_status(503, None)
        .repeatedly()
        .build();
    let (tg, stats) = elb("ap-south-1", 2, &[&rule]);
    let error = tg.deregistration_delay(TG).await.expect_err("503");
    assert_eq!(error.kind, AwsErrorKind::Transient, "{error}");
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(
        stats.snapshot().get(ApiOperation::DescribeTargetGroupAttributes),
        OperationCounts {
            calls: 2,
            errors: 2,
            throttled: 0
        }
    );
}

#[tokio::test]
async fn unreachable_endpoint_is_transient() {
    // Connection refused: a port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let provider = SdkProvider::new(SdkSettings {
        max_attempts: 1,
        endpoint_url: Some(format!("http://127.0.0.1:{port}")),
        credentials: Some(aws_sdk_ssm::config::SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))),
        ..SdkSettings::default()
    });
    let retry = provider
        .sdk_config("me-south-1")
        .await
        .retry_config()
        .cloned()
        .expect("a retry config");
    assert_eq!(retry.mode(), RetryMode::Adaptive);
    assert_eq!(retry.max_attempts(), 1);
    let apis = provider.for_region("me-south-1").await;
    let error = apis.target_groups.target_health(TG).await.expect_err("nobody listens");
    assert_eq!(error.kind, AwsErrorKind::Transient, "{error}");
    assert_eq!(error.code, None);
    println!("{}", describe(&error, "me-south-1"));
    assert_readable(&error.to_string());
    assert_readable(&describe(&error, "me-south-1"));
    let error = apis.commands.agent_ping(INSTANCE).await.expect_err("nobody listens");
    assert_eq!(error.kind, AwsErrorKind::Transient, "{error}");

    // The provider caches its clients per region and shares one set of counters.
    let again = provider.for_region("me-south-1").await;
    assert!(Arc::ptr_eq(&apis.target_groups, &again.target_groups));
    assert!(Arc::ptr_eq(&apis.commands, &again.commands));
    let other = provider.for_region("me-central-1").await;
    assert!(!Arc::ptr_eq(&apis.commands, &other.commands));
    let stats = provider.stats().snapshot();
    assert_eq!(stats.get(ApiOperation::DescribeTargetHealth).errors, 1);
    assert_eq!(stats.get(ApiOperation::DescribeInstanceInformation).errors, 1);
}

// ---------------------------------------------------------------------------------------------
// Not found, rejected
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn target_group_not_found_is_not_found() {
    let health = mock!(elbv2::Client::describe_target_health)
        .then_http_response(|| elb_error(400, "TargetGroupNotFound", "One or more target groups not found"));
    let attributes = mock!(elbv2::Client::describe_target_group_attributes)
        .then_http_response(|| elb_error(400, "TargetGroupNotFound", "One or more target groups not found"));
    let (tg, _) = elb("af-south-1", 3, &[&health, &attributes]);

    for error in [
        tg.target_health(TG).await.expect_err("missing"),
        tg.deregistration_delay(TG).await.expect_err("missing"),
    ] {
        assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
        assert_eq!(error.code.as_deref(), Some("TargetGroupNotFound"));
        assert!(error.message.contains("One or more target groups not found"), "{error}");
    }
    assert_eq!(health.num_calls(), 1, "not-found is not retried");
}

#[tokio::test]
async fn access_denied_names_the_iam_action() {
    let elb_rule = mock!(elbv2::Client::register_targets).then_http_response(|| {
        elb_error(
            403,
            "AccessDenied",
            "User is not authorized to perform: elasticloadbalancing:RegisterTargets",
        )
    });
    let (tg, _) = elb("eu-south-1", 3, &[&elb_rule]);
    let error = tg.register(TG, &target()).await.expect_err("denied");
    assert_eq!(error.kind, AwsErrorKind::AccessDenied, "{error}");
    assert_eq!(error.code.as_deref(), Some("AccessDenied"));
    assert_eq!(error.iam_action(), "elasticloadbalancing:RegisterTargets");
    assert_readable(&error.to_string());
    assert_eq!(elb_rule.num_calls(), 1, "rejections are not retried");

    let ssm_rule = mock!(ssm::Client::send_command).then_http_response(|| {
        ssm_error(
            400,
            "AccessDeniedException",
            "not authorized to perform ssm:SendCommand",
        )
    });
    let (commands, _) = ssm("eu-south-1", 3, &[&ssm_rule]);
    let error = commands
        .send(&request("pitstop/u/maintenance/1"))
        .await
        .expect_err("denied");
    assert_eq!(error.kind, AwsErrorKind::AccessDenied, "{error}");
    assert_eq!(error.code.as_deref(), Some("AccessDeniedException"));
    assert_eq!(error.iam_action(), "ssm:SendCommand");
    let line = describe(&error, "eu-south-1");
    assert!(
        line.starts_with("AWS denied ssm:SendCommand in eu-south-1 (AccessDeniedException (HTTP 400)"),
        "{line}"
    );
    assert_readable(&line);
}

#[tokio::test]
async fn refused_credentials_are_credentials() {
    for (code, status) in [
        ("InvalidClientTokenId", 403),
        ("ExpiredToken", 400),
        ("SignatureDoesNotMatch", 403),
    ] {
        let rule = mock!(elbv2::Client::describe_target_health).then_http_response(move || {
            elb_error(status, code, "The security token included in the request is invalid.")
        });
        let (tg, _) = elb("ap-south-2", 3, &[&rule]);
        let error = tg.target_health(TG).await.expect_err(code);
        assert_eq!(error.kind, AwsErrorKind::Credentials, "{code}: {error}");
        assert_eq!(rule.num_calls(), 1, "{code} is not retried");
        assert_readable(&describe(&error, "ap-south-2"));
    }
    let rule = mock!(ssm::Client::describe_instance_information).then_http_response(|| {
        ssm_error(
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    });
    let (commands, _) = ssm("ap-south-2", 3, &[&rule]);
    let error = commands.agent_ping(INSTANCE).await.expect_err("refused");
    assert_eq!(error.kind, AwsErrorKind::Credentials, "{error}");
}

/// A real credential provider of the SDK's default chain (the profile file one) that finds
/// no credentials: the error the SDK raises before sending anything.
#[tokio::test]
#[allow(deprecated)] // ProfileFiles is aws-runtime's EnvConfigFiles, a crate pitstop does not depend on
async fn no_credentials_is_credentials_in_one_readable_line() {
    let dir = std::env::temp_dir().join(format!("pitstop-no-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let empty = dir.join("credentials");
    std::fs::write(&empty, "").expect("empty credentials file");
    let files = aws_config::profile::profile_file::ProfileFiles::builder()
        .with_file(aws_config::profile::profile_file::ProfileFileKind::Credentials, &empty)
        .with_file(aws_config::profile::profile_file::ProfileFileKind::Config, &empty)
        .build();
    // Configured with pitstop's HTTP client, as its loader configures the default chain (the SDK's own is off).
    let provider_config = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(pitstop::aws::sdk::http_client::https_client());
    let profile = aws_config::profile::ProfileFileCredentialsProvider::builder()
        .configure(&provider_config)
        .profile_files(files)
        .profile_name("pitstop-test-missing")
        .build();
    let provider = SdkProvider::new(SdkSettings {
        max_attempts: 1,
        endpoint_url: Some("http://127.0.0.1:9".to_owned()),
        credentials: Some(aws_sdk_ssm::config::SharedCredentialsProvider::new(profile)),
        ..SdkSettings::default()
    });
    let apis = provider.for_region("ca-west-1").await;
    let error = apis.target_groups.target_health(TG).await.expect_err("no credentials");
    assert_eq!(error.kind, AwsErrorKind::Credentials, "{error}");
    let line = describe(&error, "ca-west-1");
    println!("{line}");
    assert!(
        line.starts_with("no AWS credentials for DescribeTargetHealth in ca-west-1 ("),
        "{line}"
    );
    assert!(
        line.ends_with("set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an instance role is available (in a cluster: IRSA or EKS Pod Identity on the controller's service account)"),
        "{line}"
    );
    assert_readable(&line);
    assert_readable(&error.to_string());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn a_region_without_an_endpoint_is_endpoint() {
    let provider = SdkProvider::new(SdkSettings {
        max_attempts: 1,
        credentials: Some(aws_sdk_ssm::config::SharedCredentialsProvider::new(Credentials::new(
            "AKIDTEST", "secret", None, None, "test",
        ))),
        ..SdkSettings::default()
    });
    let apis = provider.for_region("not a region").await;
    let error = apis.target_groups.target_health(TG).await.expect_err("no endpoint");
    println!("{}", describe(&error, "not a region"));
    assert_eq!(error.kind, AwsErrorKind::Endpoint, "{error}");
    assert_readable(&error.to_string());
}

/// No `Debug` rendering of an SDK error (what `DisplayErrorContext` appends, or `{:?}`):
/// Rust struct and variant syntax has no place in a log line or a status message.
fn assert_readable(text: &str) {
    for debug in [
        "DispatchFailure(",
        "ConnectorError {",
        "ServiceError(",
        "ConstructionFailure(",
        "TimeoutError(",
        "ResponseError(",
        "{ source",
        "{ kind",
        "Some(",
    ] {
        assert!(!text.contains(debug), "{debug:?} in {text}");
    }
}

#[tokio::test]
async fn missing_instance_or_document_is_not_found() {
    for code in ["InvalidInstanceId", "InvalidDocument"] {
        let rule = mock!(ssm::Client::send_command).then_http_response(move || ssm_error(400, code, "no such thing"));
        let (commands, _) = ssm("il-central-1", 3, &[&rule]);
        let error = commands
            .send(&request("pitstop/u/maintenance/1"))
            .await
            .expect_err(code);
        assert_eq!(error.kind, AwsErrorKind::NotFound, "{code}: {error}");
        assert_eq!(error.code.as_deref(), Some(code));
    }
}

// ---------------------------------------------------------------------------------------------
// SendCommand
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn comment_over_100_characters_is_rejected_without_a_call() {
    let rule = mock!(ssm::Client::send_command).then_output(|| {
        ssm::operation::send_command::SendCommandOutput::builder()
            .command(ssm::types::Command::builder().command_id(COMMAND).build())
            .build()
    });
    let (commands, stats) = ssm("ap-east-1", 3, &[&rule]);

    let error = commands.send(&request(&"x".repeat(101))).await.expect_err("too long");
    assert_eq!(error.kind, AwsErrorKind::Rejected, "{error}");
    assert_eq!(rule.num_calls(), 0);
    assert_eq!(stats.snapshot().total().calls, 0);

    // The limit is in characters: 100 two-byte characters are fine.
    let id = commands.send(&request(&"é".repeat(100))).await.expect("100 characters");
    assert_eq!(id, COMMAND);
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn send_sets_timeouts_comment_and_document() {
    let rule = mock!(ssm::Client::send_command)
        .match_requests(|req| {
            let parameters = req.parameters().cloned().unwrap_or_default();
            req.instance_ids() == [INSTANCE.to_owned()]
                && req.document_name() == Some("AWS-RunShellScript")
                && req.document_version() == Some("7")
                && req.comment() == Some("pitstop/u/maintenance/3")
                // Delivery: the request's timeout (at least 30 s).
                && req.timeout_seconds() == Some(900)
                && parameters.get("executionTimeout") == Some(&vec!["900".to_owned()])
                && parameters.get("commands") == Some(&vec!["exit 194".to_owned()])
        })
        .then_output(|| {
            ssm::operation::send_command::SendCommandOutput::builder()
                .command(ssm::types::Command::builder().command_id(COMMAND).build())
                .build()
        });
    let (commands, _) = ssm("ap-southeast-1", 1, &[&rule]);
    let mut req = request("pitstop/u/maintenance/3");
    req.document_version = Some("7".to_owned());
    assert_eq!(commands.send(&req).await.expect("sent"), COMMAND);

    // A short timeout still gets SSM's minimum delivery window; the caller's own
    // executionTimeout is kept.
    let short = mock!(ssm::Client::send_command)
        .match_requests(|req| {
            let parameters = req.parameters().cloned().unwrap_or_default();
            req.timeout_seconds() == Some(30) && parameters.get("executionTimeout") == Some(&vec!["5".to_owned()])
        })
        .then_output(|| {
            ssm::operation::send_command::SendCommandOutput::builder()
                .command(ssm::types::Command::builder().command_id(COMMAND).build())
                .build()
        });
    let (commands, _) = ssm("ap-southeast-3", 1, &[&short]);
    let mut req = request("pitstop/u/maintenance/4");
    req.timeout = std::time::Duration::from_secs(10);
    req.parameters
        .insert("executionTimeout".to_owned(), vec!["5".to_owned()]);
    assert_eq!(commands.send(&req).await.expect("sent"), COMMAND);
}

// ---------------------------------------------------------------------------------------------
// GetCommandInvocation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn invocation_does_not_exist_is_none() {
    // As SSM answers it on the wire...
    let wire =
        mock!(ssm::Client::get_command_invocation).then_http_response(|| ssm_error(400, "InvocationDoesNotExist", ""));
    let (commands, stats) = ssm("ap-northeast-2", 3, &[&wire]);
    assert_eq!(
        commands.invocation(COMMAND, INSTANCE).await.expect("not an error"),
        None
    );
    assert_eq!(wire.num_calls(), 1, "not retried");
    assert_eq!(stats.snapshot().get(ApiOperation::GetCommandInvocation).errors, 1);

    // ...and as a modeled error without metadata (matched by its variant).
    let modeled = mock!(ssm::Client::get_command_invocation).then_error(|| {
        ssm::operation::get_command_invocation::GetCommandInvocationError::InvocationDoesNotExist(
            ssm::types::error::InvocationDoesNotExist::builder().build(),
        )
    });
    let (commands, _) = ssm("ap-northeast-3", 3, &[&modeled]);
    assert_eq!(
        commands.invocation(COMMAND, INSTANCE).await.expect("not an error"),
        None
    );
}

#[tokio::test]
async fn invocation_reports_status_code_and_stderr_tail() {
    let stderr = format!("{}THE END", "a".repeat(1000));
    let rule = mock!(ssm::Client::get_command_invocation).then_output(move || {
        ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
            .command_id(COMMAND)
            .instance_id(INSTANCE)
            .status(ssm::types::CommandInvocationStatus::Failed)
            .status_details("Failed")
            .response_code(3)
            .standard_error_content(stderr.clone())
            .build()
    });
    let (commands, _) = ssm("us-west-1", 1, &[&rule]);
    let invocation = commands
        .invocation(COMMAND, INSTANCE)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(invocation.status, CommandStatus::Failed);
    assert_eq!(invocation.status_details.as_deref(), Some("Failed"));
    assert_eq!(invocation.response_code, Some(3));
    let tail = invocation.stderr_tail.expect("stderr");
    assert_eq!(tail.chars().count(), 500);
    assert!(tail.ends_with("THE END"));

    let delayed = mock!(ssm::Client::get_command_invocation).then_output(|| {
        ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
            .status(ssm::types::CommandInvocationStatus::Delayed)
            .response_code(-1)
            .build()
    });
    let (commands, _) = ssm("us-west-1", 1, &[&delayed]);
    let invocation = commands
        .invocation(COMMAND, INSTANCE)
        .await
        .expect("ok")
        .expect("exists");
    assert_eq!(invocation.status, CommandStatus::Delayed);
    assert_eq!(invocation.stderr_tail, None);
}

// ---------------------------------------------------------------------------------------------
// ListCommands
// ---------------------------------------------------------------------------------------------

fn listed(id: &str, comment: &str, at_secs: i64) -> ssm::types::Command {
    ssm::types::Command::builder()
        .command_id(id)
        .comment(comment)
        .requested_date_time(aws_smithy_types::DateTime::from_secs(at_secs))
        .build()
}

#[tokio::test]
async fn find_by_comment_pages_until_found_and_no_further() {
    let page1 = mock!(ssm::Client::list_commands)
        .match_requests(|req| req.instance_id() == Some(INSTANCE) && req.next_token().is_none())
        .then_output(|| {
            ssm::operation::list_commands::ListCommandsOutput::builder()
                .commands(listed("c-new", "pitstop/u/verify/2", 300))
                .next_token("page-2")
                .build()
        });
    let page2 = mock!(ssm::Client::list_commands)
        .match_requests(|req| req.next_token() == Some("page-2"))
        .then_output(|| {
            ssm::operation::list_commands::ListCommandsOutput::builder()
                .commands(listed("c-older", "pitstop/u/maintenance/2", 200))
                .commands(listed("c-other", "pitstop/u/verify/1", 150))
                .commands(listed("c-newer", "pitstop/u/maintenance/2", 250))
                .next_token("page-3")
                .build()
        });
    let page3 = mock!(ssm::Client::list_commands)
        .match_requests(|req| req.next_token() == Some("page-3"))
        .then_output(|| {
            ssm::operation::list_commands::ListCommandsOutput::builder()
                .commands(listed("c-oldest", "pitstop/u/maintenance/2", 100))
                .build()
        });
    let (commands, _) = ssm("eu-central-2", 1, &[&page1, &page2, &page3]);

    let found = commands
        .find_by_comment(INSTANCE, "pitstop/u/maintenance/2")
        .await
        .expect("ok");
    assert_eq!(found.map(|f| f.command_id).as_deref(), Some("c-newer"), "newest match");
    assert_eq!((page1.num_calls(), page2.num_calls(), page3.num_calls()), (1, 1, 0));

    let none = commands
        .find_by_comment(INSTANCE, "pitstop/u/maintenance/9")
        .await
        .expect("ok");
    assert_eq!(none, None);
    assert_eq!(page3.num_calls(), 1, "a miss reads every page");
}

// ---------------------------------------------------------------------------------------------
// CancelCommand
// ---------------------------------------------------------------------------------------------

fn invocation_with(status: ssm::types::CommandInvocationStatus) -> Rule {
    mock!(ssm::Client::get_command_invocation).then_output(move || {
        ssm::operation::get_command_invocation::GetCommandInvocationOutput::builder()
            .status(status.clone())
            .build()
    })
}

#[tokio::test]
async fn cancel_of_a_finished_or_unknown_command_is_ok() {
    let ok = mock!(ssm::Client::cancel_command)
        .match_requests(|req| req.command_id() == Some(COMMAND) && req.instance_ids() == [INSTANCE.to_owned()])
        .then_output(|| ssm::operation::cancel_command::CancelCommandOutput::builder().build());
    let (commands, _) = ssm("eu-north-1", 1, &[&ok]);
    commands.cancel(COMMAND, INSTANCE).await.expect("cancelled");

    let unknown =
        mock!(ssm::Client::cancel_command).then_http_response(|| ssm_error(400, "InvalidCommandId", "unknown"));
    let (commands, _) = ssm("eu-north-1", 1, &[&unknown]);
    commands
        .cancel(COMMAND, INSTANCE)
        .await
        .expect("unknown command: nothing to cancel");

    // Refused, and the command has finished on the instance: fine.
    let refused = mock!(ssm::Client::cancel_command)
        .then_http_response(|| ssm_error(400, "InvalidInstanceId", "command already completed"));
    let finished = invocation_with(ssm::types::CommandInvocationStatus::Success);
    let (commands, _) = ssm("eu-north-1", 1, &[&refused, &finished]);
    commands.cancel(COMMAND, INSTANCE).await.expect("already finished");
    assert_eq!(finished.num_calls(), 1);

    // Refused while it still runs: the refusal stands.
    let running = invocation_with(ssm::types::CommandInvocationStatus::InProgress);
    let (commands, _) = ssm("eu-north-1", 1, &[&refused, &running]);
    let error = commands.cancel(COMMAND, INSTANCE).await.expect_err("still running");
    assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
    assert_eq!(error.code.as_deref(), Some("InvalidInstanceId"));

    // Throttled: returned for the caller to retry, without looking at the invocation.
    let throttled =
        mock!(ssm::Client::cancel_command).then_http_response(|| ssm_error(400, "ThrottlingException", "slow down"));
    let untouched = invocation_with(ssm::types::CommandInvocationStatus::Success);
    let (commands, _) = ssm("eu-west-1", 1, &[&throttled, &untouched]);
    let error = commands.cancel(COMMAND, INSTANCE).await.expect_err("throttled");
    assert_eq!(error.kind, AwsErrorKind::Throttled);
    assert_eq!(untouched.num_calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// DeregisterTargets
// ---------------------------------------------------------------------------------------------

fn target_state(state: elbv2::types::TargetHealthStateEnum) -> Rule {
    mock!(elbv2::Client::describe_target_health).then_output(move || {
        elbv2::operation::describe_target_health::DescribeTargetHealthOutput::builder()
            .target_health_descriptions(
                elbv2::types::TargetHealthDescription::builder()
                    .target(
                        elbv2::types::TargetDescription::builder()
                            .id(INSTANCE)
                            .port(8080)
                            .build(),
                    )
                    .target_health(elbv2::types::TargetHealth::builder().state(state.clone()).build())
                    .build(),
            )
            .build()
    })
}

#[tokio::test]
async fn deregister_invalid_target_is_ok_only_when_out_of_the_group() {
    let invalid = mock!(elbv2::Client::deregister_targets)
        .then_http_response(|| elb_error(400, "InvalidTarget", "The specified target does not exist"));

    let unused = target_state(elbv2::types::TargetHealthStateEnum::Unused);
    let (tg, _) = elb("ca-west-1", 1, &[&invalid, &unused]);
    tg.deregister(TG, &target()).await.expect("already out");

    let draining = target_state(elbv2::types::TargetHealthStateEnum::Draining);
    let (tg, _) = elb("ca-west-1", 1, &[&invalid, &draining]);
    tg.deregister(TG, &target()).await.expect("already leaving");

    let healthy = target_state(elbv2::types::TargetHealthStateEnum::Healthy);
    let (tg, _) = elb("ca-west-1", 1, &[&invalid, &healthy]);
    let error = tg.deregister(TG, &target()).await.expect_err("still in the group");
    assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
    assert_eq!(error.code.as_deref(), Some("InvalidTarget"));
}

#[tokio::test]
async fn instance_health_without_a_row_is_unused() {
    let empty = mock!(elbv2::Client::describe_target_health)
        .then_output(|| elbv2::operation::describe_target_health::DescribeTargetHealthOutput::builder().build());
    let (tg, _) = elb("mx-central-1", 1, &[&empty]);
    let health = tg.instance_health(TG, &target()).await.expect("ok");
    assert_eq!(health.state, TargetState::Unused);
    assert_eq!(health.target, target());
}

// ---------------------------------------------------------------------------------------------
// DescribeInstanceInformation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn agent_ping_maps_ping_status() {
    use ssm::types::PingStatus;
    let cases = [
        (Some(PingStatus::Online), AgentPing::Online),
        (Some(PingStatus::ConnectionLost), AgentPing::ConnectionLost),
        (Some(PingStatus::Inactive), AgentPing::Inactive),
        (None, AgentPing::NotManaged),
    ];
    for (ping, expected) in cases {
        let rule = mock!(ssm::Client::describe_instance_information)
            .match_requests(|req| {
                req.filters().len() == 1
                    && req.filters()[0].key() == "InstanceIds"
                    && req.filters()[0].values() == [INSTANCE.to_owned()]
            })
            .then_compute_response(move |_| {
                let mut out =
                    ssm::operation::describe_instance_information::DescribeInstanceInformationOutput::builder();
                if let Some(ping) = &ping {
                    out = out.instance_information_list(
                        ssm::types::InstanceInformation::builder()
                            .instance_id(INSTANCE)
                            .ping_status(ping.clone())
                            .build(),
                    );
                }
                MockResponse::Output(out.build())
            });
        let (commands, _) = ssm("us-gov-west-1", 1, &[&rule]);
        assert_eq!(commands.agent_ping(INSTANCE).await.expect("ok"), expected);
        assert_eq!(rule.num_calls(), 1);
    }
}
