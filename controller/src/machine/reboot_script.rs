//! The default maintenance: the seed runbook's graceful reboot.

use std::collections::BTreeMap;

use crate::api::CommandSpec;

/// The built-in maintenance command, a reboot through the SSM agent: the script writes a
/// marker and exits 194, which makes the agent reboot the instance and run the script again
/// after boot; the second run finds the marker, removes it and succeeds.
///
/// The marker name carries the plan and attempt (`tag`) so a marker left behind by an
/// earlier, interrupted run can never make a new run skip its reboot. It lives in
/// `/var/tmp`, which survives reboots (unlike `/tmp` on many distributions);
/// `PITSTOP_STATE_DIR` overrides it (the sandbox points it at the instance's own disk).
pub fn reboot_command(tag: &str) -> CommandSpec {
    let marker_name: String = tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
        .collect();
    let script = [
        format!("marker=\"${{PITSTOP_STATE_DIR:-/var/tmp}}/{marker_name}.rebooted\""),
        "if [ ! -f \"$marker\" ]; then".to_owned(),
        "  touch \"$marker\"".to_owned(),
        "  echo \"pitstop: rebooting\"".to_owned(),
        "  exit 194".to_owned(),
        "fi".to_owned(),
        "rm -f \"$marker\"".to_owned(),
        "echo \"pitstop: back after reboot\"".to_owned(),
    ];
    CommandSpec {
        document_name: "AWS-RunShellScript".to_owned(),
        document_version: None,
        parameters: BTreeMap::from([("commands".to_owned(), script.to_vec())]),
        timeout_seconds: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_per_tag_and_shell_safe() {
        let a = reboot_command("pitstop/uid-1/maintenance/1");
        let b = reboot_command("pitstop/uid-1/maintenance/2");
        let first = |c: &CommandSpec| c.parameters["commands"][0].clone();
        assert_ne!(first(&a), first(&b));
        assert!(
            first(&a).contains("pitstop-uid-1-maintenance-1.rebooted"),
            "{}",
            first(&a)
        );
        assert!(a.parameters["commands"].iter().any(|l| l.trim() == "exit 194"));
    }
}
