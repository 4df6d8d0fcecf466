//! Starting an instance's web service, the `pitstop-backend` binary, as an OS process.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

use super::instance::Instance;
use super::process::tie_to_parent;

/// Starts `binary` for `instance`: its ID, its port, and the file whose presence makes `/health` fail.
///
/// Output is appended to the instance's log so the log tells the story across reboots.
pub(crate) fn spawn(binary: &Path, instance: &Instance) -> anyhow::Result<Child> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&instance.log_file)
        .with_context(|| format!("open {}", instance.log_file.display()))?;
    let log_err = log.try_clone().context("clone backend log handle")?;
    let mut cmd = Command::new(binary);
    cmd.arg("--instance-id")
        .arg(&instance.id)
        .arg("--port")
        .arg(instance.port.to_string())
        .arg("--health-file")
        .arg(&instance.sick_file)
        .current_dir(&instance.home)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    tie_to_parent(&mut cmd);
    cmd.spawn()
        .with_context(|| format!("start {} for {}", binary.display(), instance.id))
}
