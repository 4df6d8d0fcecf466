//! The seed's first runbook: reboot each instance in place, without telling the load
//! balancer, then wait for it to be healthy before the next one.

use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use jiff::Timestamp;

use pitstop::aws::sdk::{SdkProvider, SdkSettings};
use pitstop::aws::{AwsProvider, CommandRequest, CommandStatus, TargetState};
use pitstop::machine::reboot_command;

use super::bands::BandRecorder;
use crate::sandbox::Sandbox;

/// An SDK provider pointed at the sandbox with its fixed keys.
pub(super) fn sandbox_provider(sandbox: &Sandbox) -> SdkProvider {
    SdkProvider::new(SdkSettings {
        endpoint_url: Some(sandbox.aws_endpoint_url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "test", "test", None, None, "sandbox",
        ))),
        ..SdkSettings::default()
    })
}

/// Reboots every instance of the sandbox in place, one after another.
pub(super) async fn reboot_in_place(sandbox: &Sandbox, bands: &mut BandRecorder) -> anyhow::Result<()> {
    let apis = sandbox_provider(sandbox).for_region(sandbox.region()).await;
    let poll = Duration::from_millis(200);
    for (index, instance_id) in sandbox.instance_ids().into_iter().enumerate() {
        let tag = format!("naive/{index}");
        let script = reboot_command(&tag);
        let request = CommandRequest {
            instance_id: instance_id.clone(),
            document_name: script.document_name,
            document_version: None,
            parameters: script.parameters,
            timeout: Duration::from_secs(120),
            comment: tag,
            alarms: Vec::new(),
            ignore_alarm_read_failures: false,
        };
        bands.phase(&instance_id, "Rebooting", Timestamp::now());
        let command_id = apis.commands.send(&request).await.context("SendCommand")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if tokio::time::Instant::now() > deadline {
                bail!("naive reboot of {instance_id} did not finish in 120 s");
            }
            tokio::time::sleep(poll).await;
            match apis.commands.invocation(&command_id, &instance_id).await {
                Ok(Some(invocation)) if invocation.status == CommandStatus::Success => break,
                Ok(Some(invocation)) if invocation.status.is_terminal() => {
                    bail!("naive reboot of {instance_id} ended {:?}", invocation.status)
                }
                _ => {}
            }
        }
        bands.phase(&instance_id, "Verifying", Timestamp::now());
        loop {
            if tokio::time::Instant::now() > deadline {
                bail!("{instance_id} did not become healthy after its naive reboot");
            }
            let group = apis
                .target_groups
                .target_health(sandbox.target_group_arn())
                .await
                .context("DescribeTargetHealth")?;
            if group
                .iter()
                .any(|t| t.target.instance_id == instance_id && t.state == TargetState::Healthy)
            {
                break;
            }
            tokio::time::sleep(poll).await;
        }
        bands.phase(&instance_id, "Registered", Timestamp::now());
    }
    Ok(())
}
