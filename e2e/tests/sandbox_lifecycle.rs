//! Starting and stopping sandboxes (library and `pitstop-sandbox` binary), the call log, and the promise that no
//! process outlives a sandbox.

mod sandbox_support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_ssm::types::{InstanceInformationFilter, InstanceInformationFilterKey};
use pitstop_e2e::sandbox::{Sandbox, SandboxInfo};
use sandbox_support::{clients, deregister, eventually, fast_config, start, target};

const LIMIT: Duration = Duration::from_secs(30);

/// Whether process `pid` still runs (a zombie waiting to be reaped has already stopped running).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the field after the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                != Some("Z")
        }
        Err(_) => false,
    }
}

/// PIDs of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|raw| String::from_utf8_lossy(&raw).contains(needle))
                .unwrap_or(false)
                && running(*pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_calls_are_logged_and_write_nothing() {
    let sandbox = start(fast_config()).await;
    let (elb, ssm) = clients(&sandbox, true).await;
    let arn = sandbox.target_group_arn().to_owned();
    let ids = sandbox.instance_ids();

    // What a dry run does: look, never touch.
    elb.describe_target_health()
        .target_group_arn(&arn)
        .send()
        .await
        .expect("health");
    for id in &ids {
        elb.describe_target_health()
            .target_group_arn(&arn)
            .targets(target(id))
            .send()
            .await
            .expect("health");
    }
    elb.describe_target_group_attributes()
        .target_group_arn(&arn)
        .send()
        .await
        .expect("attributes");
    let everyone = ssm
        .describe_instance_information()
        .send()
        .await
        .expect("instance information");
    assert_eq!(everyone.instance_information_list().len(), ids.len());
    let filter = InstanceInformationFilter::builder()
        .key(InstanceInformationFilterKey::InstanceIds)
        .value_set(&ids[1])
        .build()
        .expect("filter");
    let one = ssm
        .describe_instance_information()
        .instance_information_filter_list(filter)
        .send()
        .await;
    let one = one.expect("instance information by filter list");
    let listed: Vec<(Option<&str>, Option<&str>)> = one
        .instance_information_list()
        .iter()
        .map(|i| (i.instance_id(), i.ping_status().map(|p| p.as_str())))
        .collect();
    assert_eq!(listed, vec![(Some(ids[1].as_str()), Some("Online"))]);
    ssm.list_commands()
        .instance_id(&ids[0])
        .send()
        .await
        .expect("list commands");

    let log = sandbox.call_log();
    assert!(log.writes().is_empty(), "a dry run wrote: {:?}", log.writes());
    assert_eq!(log.len(), 5 + ids.len());
    assert_eq!(log.count("DescribeTargetHealth"), 1 + ids.len());
    assert_eq!(
        log.calls_for_instance(&ids[0]).len(),
        2,
        "its DescribeTargetHealth and ListCommands"
    );
    let second = log.calls_for_instance(&ids[1]);
    assert_eq!(
        second.len(),
        2,
        "its DescribeTargetHealth and DescribeInstanceInformation: {second:?}"
    );
    assert_eq!(
        sandbox.boot_counts().values().sum::<u64>(),
        ids.len() as u64,
        "nothing rebooted"
    );

    deregister(&elb, &arn, &ids[2]).await;
    let writes = log.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(
        (writes[0].operation.as_str(), writes[0].instance_ids.clone()),
        ("DeregisterTargets", vec![ids[2].clone()])
    );
    sandbox.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_no_process_and_no_directory() {
    let sandbox = start(fast_config()).await;
    let pids = sandbox.child_pids();
    assert_eq!(pids.len(), 4, "HAProxy and three backends");
    assert!(pids.iter().all(|pid| running(*pid)));
    let work_dir = sandbox.work_dir().to_owned();
    assert!(work_dir.join("haproxy.cfg").is_file());

    // A script still running at shutdown goes too.
    let (_, ssm) = clients(&sandbox, true).await;
    let id = sandbox.instance_ids()[0].clone();
    let marker = format!("sleep 3{}", std::process::id() % 100 + 100);
    sandbox_support::send_script(&ssm, &id, &marker, "long").await;
    eventually("the script to run", LIMIT, || async {
        (!processes_mentioning(&marker).is_empty()).then_some(())
    })
    .await;

    sandbox.shutdown().await.expect("shutdown");
    let alive: Vec<u32> = pids.into_iter().filter(|pid| running(*pid)).collect();
    assert!(alive.is_empty(), "still running after shutdown: {alive:?}");
    assert!(processes_mentioning(&marker).is_empty(), "the script survived");
    assert!(!work_dir.exists(), "the temporary work dir is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_sandbox_kills_its_processes() {
    let sandbox = start(fast_config().with_instances(2)).await;
    let pids = sandbox.child_pids();
    assert_eq!(pids.len(), 3);
    drop(sandbox);
    // SIGKILL is asynchronous; the processes are gone once the kernel has delivered it.
    eventually("the children to die", LIMIT, || async {
        pids.iter().all(|pid| !running(*pid)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn missing_haproxy_fails_with_the_install_hint() {
    let cfg = fast_config().with_haproxy_binary("/nonexistent/haproxy");
    let err = Sandbox::start(cfg).await.expect_err("no HAProxy, no sandbox");
    let message = format!("{err:#}");
    assert!(message.contains("apt-get install haproxy"), "{message}");
}

#[tokio::test]
async fn missing_backend_binary_is_named() {
    let cfg = fast_config().with_backend_binary("/nonexistent/pitstop-backend");
    let err = Sandbox::start(cfg).await.expect_err("no backend, no sandbox");
    assert!(format!("{err:#}").contains("/nonexistent/pitstop-backend"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_binary_prints_its_env_and_tears_down_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let info_file = dir.path().join("info.json");
    let work_dir = dir.path().join("work");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pitstop-sandbox"))
        .args([
            "--instances",
            "2",
            "--health-interval",
            "300ms",
            "--deregistration-delay",
            "1s",
            "--boot-time",
            "1s",
        ])
        .arg("--info-file")
        .arg(&info_file)
        .arg("--work-dir")
        .arg(&work_dir)
        .env("PITSTOP_BACKEND_BIN", env!("CARGO_BIN_EXE_pitstop-backend"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start pitstop-sandbox");

    let info: SandboxInfo = eventually("the info file", LIMIT, || async {
        let text = std::fs::read_to_string(&info_file).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    assert_eq!(info.instance_ids.len(), 2);
    assert_eq!(info.env.get("AWS_ACCESS_KEY_ID").map(String::as_str), Some("test"));
    assert_eq!(info.env.get("AWS_ENDPOINT_URL"), Some(&info.aws_endpoint_url));

    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(pitstop::aws::sdk::http_client::https_client())
        .endpoint_url(&info.aws_endpoint_url)
        .region(aws_config::Region::new(info.region.clone()))
        .credentials_provider(aws_sdk_ssm::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "binary-test",
        ))
        .load()
        .await;
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
    let health = elb
        .describe_target_health()
        .target_group_arn(&info.target_group_arn)
        .send()
        .await
        .expect("health");
    assert_eq!(health.target_health_descriptions().len(), 2);
    let work_needle = work_dir.to_string_lossy().into_owned();
    assert!(
        processes_mentioning(&work_needle).len() >= 3,
        "HAProxy and two backends run"
    );

    let pid = child.id().expect("running");
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(i32::try_from(pid).expect("pid fits"), libc::SIGTERM);
    }
    let status = tokio::time::timeout(LIMIT, child.wait())
        .await
        .expect("stops on SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status}");
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        tokio::io::AsyncReadExt::read_to_string(&mut out, &mut stdout)
            .await
            .expect("stdout");
    }
    assert!(
        stdout.contains(&format!("export AWS_ENDPOINT_URL={}", info.aws_endpoint_url)),
        "{stdout}"
    );
    assert!(stdout.contains(&info.target_group_arn), "{stdout}");
    assert!(
        processes_mentioning(&work_needle).is_empty(),
        "processes outlived the sandbox binary"
    );
    assert!(
        Path::new(&work_dir).join("haproxy.cfg").is_file(),
        "a given work dir is kept"
    );
}
