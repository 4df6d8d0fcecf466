//! Child processes of the sandbox (HAProxy, backends, scripts): none may outlive it.

use tokio::process::Command;

/// Makes the process started from `cmd` die with the sandbox (or the test that started it), even when that is killed
/// without a chance to clean up: SIGKILL on drop of its handle, and `PR_SET_PDEATHSIG` so the kernel kills it when
/// the spawning thread (a runtime worker, alive as long as the runtime) goes away.
pub fn tie_to_parent(cmd: &mut Command) {
    cmd.kill_on_drop(true);
    // SAFETY: the closure runs in the forked child before exec; it only calls prctl(2), which is async-signal-safe,
    // and allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends SIGKILL to every process of the group `pgid` (a script and whatever it started).
pub(crate) fn kill_process_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    if pgid <= 1 {
        // Never signal group 0 (our own) or 1 (everything): a bad id must not take the test runner down.
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; a stale group only yields ESRCH.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The last `max` bytes of a log file, for error messages about a child that died.
pub(crate) fn log_tail(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}
