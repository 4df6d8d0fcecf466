//! [`Commands`] over the SSM Run Command API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_sdk_ssm::Client;
use aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationError;
use aws_sdk_ssm::types::{Alarm, AlarmConfiguration, InstanceInformationStringFilter, PingStatus};

use super::errors::{error_code, from_sdk_error};
use super::stats::ApiCallStats;
use crate::aws::{
    AgentPing, AwsError, AwsErrorKind, CommandRequest, CommandStatus, Commands, FoundCommand, Invocation,
};

/// SSM's limit on a command's `Comment`, in characters.
pub const MAX_COMMENT_CHARS: usize = 100;

/// SSM's bounds on SendCommand's `TimeoutSeconds` (the delivery timeout).
pub const DELIVERY_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 30..=2_592_000;

/// The largest `executionTimeout` the AWS shell-script documents accept (their parameter's
/// allowed pattern stops at 48 hours); a larger value makes SendCommand fail.
pub const MAX_EXECUTION_TIMEOUT_SECS: u64 = 172_800;

/// Documents that take an `executionTimeout` parameter pitstop fills in.
pub const SCRIPT_DOCUMENTS: &[&str] = &["AWS-RunShellScript", "AWS-RunPowerShellScript"];

/// How much of standard error an [`Invocation`] keeps.
pub const STDERR_TAIL_CHARS: usize = 500;

/// ListCommands page size (the API's maximum).
const LIST_COMMANDS_PAGE: i32 = 50;

/// An SSM client for one region, in pitstop's words.
#[derive(Clone, Debug)]
pub struct SdkCommands {
    client: Client,
}

impl SdkCommands {
    /// Builds the client from `config`, counting its calls into `stats`.
    ///
    /// The config must carry a behavior version (a config made from an
    /// [`SdkConfig`](aws_config::SdkConfig) does); the SDK panics without one.
    pub fn new(config: aws_sdk_ssm::config::Builder, stats: &Arc<ApiCallStats>) -> Self {
        Self {
            client: Client::from_conf(config.interceptor(stats.interceptor()).build()),
        }
    }

    /// The underlying SDK client (for set-up in tests and tools; its calls are counted too).
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Whole seconds, rounded up so that a limit is never shortened.
fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// SendCommand's `TimeoutSeconds`: how long SSM keeps trying to deliver the command (e.g. to
/// an instance that is rebooting), within the bounds SSM accepts.
pub fn delivery_timeout_secs(timeout: Duration) -> i32 {
    let secs = ceil_secs(timeout).clamp(*DELIVERY_TIMEOUT_SECS.start(), *DELIVERY_TIMEOUT_SECS.end());
    // The upper bound fits an i32, so this never saturates.
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// The script's `executionTimeout`, within what the shell-script documents accept. pitstop
/// enforces the whole timeout itself; this keeps a hung script from holding the instance.
pub fn execution_timeout_secs(timeout: Duration) -> u64 {
    ceil_secs(timeout).clamp(1, MAX_EXECUTION_TIMEOUT_SECS)
}

/// Whether `document` (a name or an ARN) is one of [`SCRIPT_DOCUMENTS`].
fn is_script_document(document: &str) -> bool {
    let name = document.rsplit('/').next().unwrap_or(document);
    SCRIPT_DOCUMENTS.contains(&name)
}

/// The last `max` characters of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    match text.char_indices().rev().nth(max.saturating_sub(1)) {
        Some((start, _)) if max > 0 => &text[start..],
        Some(_) => "",
        None => text,
    }
}

/// SSM's `AlarmConfiguration` of the request: SSM stops the command once one of the alarms is
/// in `ALARM` (and refuses to start it while one is). None without alarms.
pub fn alarm_configuration(request: &CommandRequest) -> Option<AlarmConfiguration> {
    if request.alarms.is_empty() {
        return None;
    }
    let alarms = request
        .alarms
        .iter()
        .filter_map(|name| Alarm::builder().name(name).build().ok())
        .collect();
    AlarmConfiguration::builder()
        .set_alarms(Some(alarms))
        .ignore_poll_alarm_failure(request.ignore_alarm_read_failures)
        .build()
        .ok()
}

/// The parameters SendCommand gets: the caller's, plus `executionTimeout` for the shell-script
/// documents when the caller did not set one.
pub fn command_parameters(request: &CommandRequest) -> HashMap<String, Vec<String>> {
    let mut parameters: HashMap<String, Vec<String>> =
        request.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    if is_script_document(&request.document_name) && !parameters.contains_key("executionTimeout") {
        parameters.insert(
            "executionTimeout".to_owned(),
            vec![execution_timeout_secs(request.timeout).to_string()],
        );
    }
    parameters
}

#[async_trait]
impl Commands for SdkCommands {
    async fn send(&self, request: &CommandRequest) -> Result<String, AwsError> {
        const OP: &str = "SendCommand";
        let comment_chars = request.comment.chars().count();
        if comment_chars > MAX_COMMENT_CHARS {
            // Never shortened: the comment is the tag a restarted controller searches for, and a
            // cut tag would not match.
            return Err(AwsError::new(
                OP,
                AwsErrorKind::Rejected,
                None,
                format!("comment is {comment_chars} characters, SSM allows at most {MAX_COMMENT_CHARS}"),
            ));
        }
        let output = self
            .client
            .send_command()
            .instance_ids(&request.instance_id)
            .document_name(&request.document_name)
            .set_document_version(request.document_version.clone())
            .set_parameters(Some(command_parameters(request)))
            .comment(&request.comment)
            .timeout_seconds(delivery_timeout_secs(request.timeout))
            .set_alarm_configuration(alarm_configuration(request))
            .customize()
            // SendCommand is not idempotent (it has no client token): a retry after a lost
            // answer would run the document twice. One attempt; on an answer that never came
            // the state machine looks the command up by its tag before it sends again.
            .config_override(aws_sdk_ssm::config::Builder::default().retry_config(RetryConfig::disabled()))
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        match output.command().and_then(|c| c.command_id()) {
            Some(id) if !id.is_empty() => Ok(id.to_owned()),
            // Transient: the command may exist; the caller's find_by_comment will find it.
            _ => Err(AwsError::new(
                OP,
                AwsErrorKind::Transient,
                None,
                "SendCommand answered without a command ID",
            )),
        }
    }

    async fn invocation(&self, command_id: &str, instance_id: &str) -> Result<Option<Invocation>, AwsError> {
        const OP: &str = "GetCommandInvocation";
        let result = self
            .client
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance_id)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let does_not_exist = error
                    .as_service_error()
                    .is_some_and(GetCommandInvocationError::is_invocation_does_not_exist)
                    || error_code(&error) == Some("InvocationDoesNotExist");
                if does_not_exist {
                    return Ok(None);
                }
                return Err(from_sdk_error(OP, &error));
            }
        };
        let stderr_tail = output
            .standard_error_content()
            .map(|s| tail(s, STDERR_TAIL_CHARS))
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        Ok(Some(Invocation {
            // A missing status parses as Failed, so nothing waits on a status it cannot read.
            status: CommandStatus::parse(output.status().map_or("", |s| s.as_str())),
            status_details: output.status_details().filter(|s| !s.is_empty()).map(str::to_owned),
            response_code: Some(output.response_code()),
            stderr_tail,
        }))
    }

    async fn find_by_comment(&self, instance_id: &str, comment: &str) -> Result<Option<FoundCommand>, AwsError> {
        const OP: &str = "ListCommands";
        let mut pages = self
            .client
            .list_commands()
            .instance_id(instance_id)
            .max_results(LIST_COMMANDS_PAGE)
            .into_paginator()
            .send();
        // AWS lists newest first, so the first page with a match holds the newest match and
        // later pages need not be fetched. Within a page the newest is chosen explicitly, so the
        // answer does not depend on the order an emulator happens to list in.
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| from_sdk_error(OP, &e))?;
            let newest = page
                .commands()
                .iter()
                .filter(|c| c.comment() == Some(comment))
                .filter_map(|c| Some((c.requested_date_time().copied(), c.command_id()?)))
                .max_by(|(a, _), (b, _)| a.cmp(b));
            if let Some((_, command_id)) = newest {
                return Ok(Some(FoundCommand {
                    command_id: command_id.to_owned(),
                }));
            }
        }
        Ok(None)
    }

    async fn cancel(&self, command_id: &str, instance_id: &str) -> Result<(), AwsError> {
        const OP: &str = "CancelCommand";
        let result = self
            .client
            .cancel_command()
            .command_id(command_id)
            .instance_ids(instance_id)
            .send()
            .await;
        let Err(error) = result else {
            return Ok(());
        };
        let mapped = from_sdk_error(OP, &error);
        if error_code(&error) == Some("InvalidCommandId") {
            // SSM forgets commands after a while; a command it does not know is not running.
            return Ok(());
        }
        // Throttled or transient: the cancel may still be needed, let the caller retry it.
        if matches!(mapped.kind, AwsErrorKind::Throttled | AwsErrorKind::Transient) {
            return Err(mapped);
        }
        // Any other refusal is fine if the command has already finished on this instance.
        if let Ok(Some(invocation)) = self.invocation(command_id, instance_id).await
            && invocation.status.is_terminal()
        {
            tracing::debug!(command_id, instance_id, status = ?invocation.status, "cancel refused, command already finished");
            return Ok(());
        }
        Err(mapped)
    }

    async fn agent_ping(&self, instance_id: &str) -> Result<AgentPing, AwsError> {
        const OP: &str = "DescribeInstanceInformation";
        let filter = InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance_id)
            .build()
            .map_err(|e| AwsError::new(OP, AwsErrorKind::Rejected, None, e.to_string()))?;
        let output = self
            .client
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| from_sdk_error(OP, &e))?;
        let info = output
            .instance_information_list()
            .iter()
            .find(|i| i.instance_id() == Some(instance_id));
        let Some(info) = info else {
            return Ok(AgentPing::NotManaged);
        };
        Ok(match info.ping_status() {
            Some(PingStatus::Online) => AgentPing::Online,
            Some(PingStatus::Inactive) => AgentPing::Inactive,
            // ConnectionLost, a status this SDK does not know, or none: the agent is not
            // confirmed online, which is all a caller may rely on.
            _ => AgentPing::ConnectionLost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_timeout_is_clamped() {
        assert_eq!(delivery_timeout_secs(Duration::from_secs(5)), 30);
        assert_eq!(delivery_timeout_secs(Duration::from_secs(600)), 600);
        assert_eq!(delivery_timeout_secs(Duration::from_millis(600_001)), 601);
        assert_eq!(delivery_timeout_secs(Duration::from_secs(10_000_000)), 2_592_000);
    }

    #[test]
    fn execution_timeout_is_clamped() {
        assert_eq!(execution_timeout_secs(Duration::ZERO), 1);
        assert_eq!(execution_timeout_secs(Duration::from_secs(900)), 900);
        assert_eq!(execution_timeout_secs(Duration::from_secs(1_000_000)), 172_800);
    }

    #[test]
    fn tail_keeps_the_end_on_char_boundaries() {
        assert_eq!(tail("abcdef", 3), "def");
        assert_eq!(tail("ab", 3), "ab");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("abc", 0), "");
        assert_eq!(tail("xéü€", 3), "éü€");
    }

    fn request(document: &str, parameters: &[(&str, &str)]) -> CommandRequest {
        CommandRequest {
            instance_id: "i-1".into(),
            document_name: document.into(),
            document_version: None,
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            timeout: Duration::from_secs(1200),
            comment: "c".into(),
            alarms: Vec::new(),
            ignore_alarm_read_failures: false,
        }
    }

    #[test]
    fn execution_timeout_only_for_script_documents_and_only_if_unset() {
        let p = command_parameters(&request("AWS-RunShellScript", &[("commands", "true")]));
        assert_eq!(p["executionTimeout"], vec!["1200".to_owned()]);
        let p = command_parameters(&request(
            "arn:aws:ssm:eu-west-1::document/AWS-RunPowerShellScript",
            &[("commands", "true")],
        ));
        assert_eq!(p["executionTimeout"], vec!["1200".to_owned()]);
        let p = command_parameters(&request("AWS-RunShellScript", &[("executionTimeout", "60")]));
        assert_eq!(p["executionTimeout"], vec!["60".to_owned()]);
        let p = command_parameters(&request("AWS-RunPatchBaseline", &[("Operation", "Install")]));
        assert!(!p.contains_key("executionTimeout"));
    }
}
