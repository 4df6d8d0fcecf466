//! The `pitstop` binary as users run it: its exit codes and messages for bad input, and
//! that it reaches an HTTPS apiserver without panicking.

use std::process::Command;

fn pitstop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pitstop"))
}

#[test]
fn crd_prints_the_checked_in_crd() {
    let output = pitstop().arg("crd").output().expect("pitstop runs");
    assert!(output.status.success());
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/maintenanceplan.yaml"))
        .expect("crds/maintenanceplan.yaml");
    assert!(
        String::from_utf8_lossy(&output.stdout) == checked_in,
        "pitstop crd differs from crds/maintenanceplan.yaml: run `make crds`"
    );
}

#[test]
fn crd_policy_prints_the_checked_in_policy_crd() {
    let output = pitstop().args(["crd", "policy"]).output().expect("pitstop runs");
    assert!(output.status.success());
    let checked_in = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/maintenancepolicy.yaml"))
        .expect("crds/maintenancepolicy.yaml");
    assert!(
        String::from_utf8_lossy(&output.stdout) == checked_in,
        "pitstop crd policy differs from crds/maintenancepolicy.yaml: run `make crds`"
    );
}

#[test]
fn run_with_a_bad_plan_file_exits_2_with_a_clear_message() {
    let dir = tempdir();
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata: {name: p}\nspec:\n  targetGroupArn: nope\n  instances: [i-0123456789abcdef0, i-0123456789abcdef0]\n",
    )
    .expect("write plan");
    let output = pitstop().arg("run").arg(&path).output().expect("pitstop runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("targetGroupArn"), "{stderr}");
    assert!(stderr.contains("more than once"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = pitstop()
        .arg("run")
        .arg(dir.join("missing.yaml"))
        .output()
        .expect("pitstop runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot read"));
}

#[test]
fn run_with_a_notify_url_that_is_no_webhook_exits_2_without_repeating_it() {
    let dir = tempdir();
    let path = dir.join("plan.yaml");
    std::fs::write(
        &path,
        "apiVersion: pitstop.dev/v1alpha1\nkind: MaintenancePlan\nmetadata: {name: p}\nspec:\n  targetGroupArn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef\n  instances: [i-0123456789abcdef0]\n",
    )
    .expect("write plan");
    let output = pitstop()
        .arg("run")
        .arg(&path)
        .env("PITSTOP_NOTIFY_URL", "ftp://hooks.example.com/secret-token")
        .output()
        .expect("pitstop runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--notify-url"), "{stderr}");
    assert!(stderr.contains("not http or https"), "{stderr}");
    assert!(!stderr.contains("secret-token"), "the URL may carry a token: {stderr}");
}

#[test]
fn controller_reports_an_unreachable_https_apiserver_instead_of_panicking() {
    let dir = tempdir();
    // A port nothing listens on: the connection is refused, which must be an error message.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .expect("write kubeconfig");
    let output = pitstop()
        .args(["controller", "--namespace", "x", "--http-addr", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("pitstop runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listing MaintenancePlans"), "{stderr}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pitstop-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
