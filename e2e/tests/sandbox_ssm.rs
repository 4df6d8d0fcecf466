//! The sandbox's SSM side, through the unmodified AWS SDK: scripts run on real instance processes, `exit 194`
//! reboots them.

mod sandbox_support;

use std::time::Duration;

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::CommandInvocationStatus;
use pitstop_e2e::sandbox::Power;
use sandbox_support::{
    FLAG_FILE_REBOOT, clients, eventually, fast_config, finished_invocation, ping_status, send_script, start,
};

const LIMIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_file_reboot_script_reboots_once_and_succeeds() {
    // A boot longer than the visibility delay, so the invocation can be read while the instance is down.
    let cfg = fast_config()
        .with_instances(2)
        .with_boot_time(Duration::from_secs(3))
        .with_invocation_visibility_delay(Duration::from_secs(1));
    let sandbox = start(cfg).await;
    let (_, ssm) = clients(&sandbox, false).await;
    let id = sandbox.instance_ids()[0].clone();
    let before = sandbox.boot_count(&id).expect("known instance");

    let sent = ssm
        .send_command()
        .instance_ids(&id)
        .document_name("AWS-RunShellScript")
        .parameters(
            "commands",
            vec![
                r#"echo "boot $(cat "$PITSTOP_STATE_DIR/boot-count")""#.to_owned(),
                FLAG_FILE_REBOOT.to_owned(),
            ],
        )
        .comment("pitstop reboot test")
        .timeout_seconds(60)
        .send()
        .await
        .expect("SendCommand");
    let command = sent.command().expect("command");
    let command_id = command.command_id().expect("command ID").to_owned();
    assert_eq!(command.comment(), Some("pitstop reboot test"));

    let err = ssm
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&id)
        .send()
        .await;
    let err = err.expect_err("a fresh command's invocation is not visible yet");
    assert_eq!(err.code(), Some("InvocationDoesNotExist"));
    assert!(err.into_service_error().is_invocation_does_not_exist());

    // While the instance is down its agent reads ConnectionLost and the invocation stays InProgress.
    let status_while_down = eventually(
        "the invocation to be readable while the instance is down",
        LIMIT,
        || async {
            let invocation = ssm
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(&id)
                .send()
                .await
                .ok()?;
            (ping_status(&ssm, &id).await == "ConnectionLost").then(|| invocation.status().cloned())
        },
    )
    .await;
    assert_eq!(status_while_down, Some(CommandInvocationStatus::InProgress));

    let invocation = finished_invocation(&ssm, &command_id, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(invocation.response_code(), 0);
    let stdout = invocation.standard_output_content().unwrap_or_default();
    assert!(
        stdout.contains(&format!("boot {before}")) && stdout.contains(&format!("boot {}", before + 1)),
        "{stdout}"
    );
    assert_eq!(sandbox.boot_count(&id), Some(before + 1), "exactly one reboot");
    let other = &sandbox.instance_ids()[1];
    assert_eq!(sandbox.boot_count(other), Some(1), "the other instance was not touched");
    let home = sandbox.instance_home(&id).expect("home");
    assert!(!home.join("flag").exists(), "the second run removed the flag");
    assert_eq!(
        std::fs::read_to_string(home.join("boot-count"))
            .expect("boot-count")
            .trim(),
        "2"
    );
    assert_eq!(sandbox.power(&id), Some(Power::Running));
    assert_eq!(ping_status(&ssm, &id).await, "Online");

    // ListCommands finds it by instance, newest first, with its comment.
    let second = send_script(&ssm, &id, "true", "second").await;
    let listed = ssm.list_commands().instance_id(&id).send().await.expect("ListCommands");
    let comments: Vec<&str> = listed.commands().iter().filter_map(|c| c.comment()).collect();
    assert_eq!(comments, vec!["second", "pitstop reboot test"]);
    assert_eq!(listed.commands()[0].command_id(), Some(second.as_str()));
    let by_id = ssm
        .list_commands()
        .command_id(&command_id)
        .send()
        .await
        .expect("ListCommands by ID");
    assert_eq!(by_id.commands().len(), 1);
    assert_eq!(by_id.commands()[0].status().map(|s| s.as_str()), Some("Success"));
    let none = ssm
        .list_commands()
        .instance_id(other)
        .send()
        .await
        .expect("ListCommands other");
    assert!(none.commands().is_empty());
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_script_reports_its_exit_code_and_output() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (_, ssm) = clients(&sandbox, false).await;
    let id = sandbox.instance_ids()[0].clone();

    let script = r#"echo "dir=$PITSTOP_STATE_DIR pwd=$(pwd)"; echo broken >&2; exit 3"#;
    let command_id = send_script(&ssm, &id, script, "fails").await;
    let invocation = finished_invocation(&ssm, &command_id, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Failed));
    assert_eq!(invocation.response_code(), 3);
    assert_eq!(invocation.standard_error_content(), Some("broken\n"));
    let home = sandbox.instance_home(&id).expect("home");
    let home = home.to_string_lossy();
    assert_eq!(
        invocation.standard_output_content(),
        Some(format!("dir={home} pwd={home}\n").as_str())
    );
    assert_eq!(sandbox.boot_count(&id), Some(1), "a failing script does not reboot");
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_documents_and_unknown_instances_are_refused() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (_, ssm) = clients(&sandbox, false).await;
    let id = sandbox.instance_ids()[0].clone();

    let err = ssm
        .send_command()
        .instance_ids(&id)
        .document_name("AWS-RunPatchBaseline")
        .parameters("Operation", vec!["Install".to_owned()])
        .send()
        .await
        .expect_err("only AWS-RunShellScript runs");
    assert_eq!(err.code(), Some("InvalidDocument"));

    let err = ssm
        .send_command()
        .instance_ids("i-00000000000000bad")
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["true".to_owned()])
        .send()
        .await
        .expect_err("unknown instance");
    assert_eq!(err.code(), Some("InvalidInstanceId"));

    let err = ssm
        .list_commands()
        .command_id("00000000-0000-0000-0000-000000000000")
        .send()
        .await;
    assert_eq!(err.expect_err("unknown command").code(), Some("InvalidCommandId"));
    assert!(
        sandbox
            .call_log()
            .writes()
            .iter()
            .all(|w| w.outcome != pitstop_e2e::sandbox::CallOutcome::Ok)
    );
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_script_and_timeouts_end_long_ones() {
    let sandbox = start(fast_config().with_instances(1)).await;
    let (_, ssm) = clients(&sandbox, false).await;
    let id = sandbox.instance_ids()[0].clone();

    let cancelled = send_script(&ssm, &id, "sleep 30", "to cancel").await;
    eventually("the script to run", LIMIT, || async {
        let out = ssm
            .get_command_invocation()
            .command_id(&cancelled)
            .instance_id(&id)
            .send()
            .await
            .ok()?;
        (out.status() == Some(&CommandInvocationStatus::InProgress)).then_some(())
    })
    .await;
    ssm.cancel_command()
        .command_id(&cancelled)
        .send()
        .await
        .expect("CancelCommand");
    let invocation = finished_invocation(&ssm, &cancelled, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Cancelled));

    let timed_out = ssm
        .send_command()
        .instance_ids(&id)
        .document_name("AWS-RunShellScript")
        .parameters("commands", vec!["sleep 30".to_owned()])
        .parameters("executionTimeout", vec!["1".to_owned()])
        .send()
        .await
        .expect("SendCommand")
        .command()
        .and_then(|c| c.command_id())
        .expect("command ID")
        .to_owned();
    let invocation = finished_invocation(&ssm, &timed_out, &id).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::TimedOut));
    assert_eq!(invocation.status_details(), Some("Execution Timed Out"));

    let listed = ssm.list_commands().instance_id(&id).send().await.expect("ListCommands");
    let statuses: Vec<&str> = listed
        .commands()
        .iter()
        .filter_map(|c| c.status())
        .map(|s| s.as_str())
        .collect();
    assert_eq!(statuses, vec!["TimedOut", "Cancelled"]);
    sandbox.shutdown().await.expect("shutdown");
}
