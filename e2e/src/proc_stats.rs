//! What Linux tells about a running process, from `/proc`: its memory and CPU time, for the
//! experiments' and benchmarks' figures.

/// A `/proc/<pid>/status` value in KiB, by its field name (`VmRSS:` now, `VmHWM:` the peak).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A process's resident memory now, in KiB, and how it splits between its own heap and stacks (anonymous) and
/// pages of files it maps (mostly its own binary's code).
#[derive(Clone, Copy, Debug, Default)]
pub struct Resident {
    /// `VmRSS`: all of it.
    pub total_kib: u64,
    /// `RssAnon`: heap, stacks and other private memory.
    pub anon_kib: u64,
    /// `RssFile`: mapped file pages, shared with the page cache.
    pub file_kib: u64,
}

/// The resident memory of `pid` now, or all zeros once the process is gone.
pub fn resident(pid: u32) -> Resident {
    Resident {
        total_kib: status_kib(pid, "VmRSS:").unwrap_or(0),
        anon_kib: status_kib(pid, "RssAnon:").unwrap_or(0),
        file_kib: status_kib(pid, "RssFile:").unwrap_or(0),
    }
}

/// User plus system CPU time of the process so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), from the state (field 3): utime is 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_second.max(1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        let rss = status_kib(pid, "VmRSS:").expect("VmRSS");
        let peak = status_kib(pid, "VmHWM:").expect("VmHWM");
        assert!(rss > 0 && peak >= rss, "rss {rss} KiB, peak {peak} KiB");
        assert!(cpu_seconds(pid).is_some_and(|s| s >= 0.0));
        assert_eq!(status_kib(pid, "NoSuchField:"), None);
        let now = resident(pid);
        assert!(now.anon_kib > 0 && now.file_kib > 0, "{now:?}");
        assert!(now.anon_kib + now.file_kib <= now.total_kib, "{now:?}");
    }
}
