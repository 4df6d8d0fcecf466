//! HAProxy as the sandbox's load balancer: its config, its process and its runtime API.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

use super::process::{log_tail, tie_to_parent};
use super::rotation::{AdminState, OperationalState, RotationState};

/// Name of the HAProxy backend of the first target group, holding one server per instance.
pub(crate) const BACKEND: &str = "be_sandbox";

/// Name of the HAProxy backend of target group `index` (0 is [`BACKEND`]); every target group is its own backend,
/// with its own servers and health checks, behind its own frontend.
pub(crate) fn backend_name(index: usize) -> String {
    match index {
        0 => BACKEND.to_owned(),
        n => format!("{BACKEND}_{}", n + 1),
    }
}

/// Name of the HAProxy frontend of target group `index`.
fn frontend_name(index: usize) -> String {
    match index {
        0 => "fe_sandbox".to_owned(),
        n => format!("fe_sandbox_{}", n + 1),
    }
}

/// Longest path a unix socket accepts (`sun_path` is 108 bytes with the trailing NUL).
const MAX_SOCKET_PATH: usize = 107;

/// What the HAProxy config is made from.
pub(crate) struct HaproxySettings {
    /// Loopback port of each target group's frontend clients use, one per target group.
    pub frontend_ports: Vec<u16>,
    /// `(server name, loopback port)`, one per instance.
    pub servers: Vec<(String, u16)>,
    /// Health-check interval (`inter`).
    pub interval: Duration,
    /// Passed checks to go up (`rise`).
    pub rise: u32,
    /// Failed checks to go down (`fall`).
    pub fall: u32,
    /// Path of the admin-level runtime API socket.
    pub socket: PathBuf,
}

/// Renders the config: ALB-like behaviour, so a dead backend costs the client an error.
///
/// `retries 0` and no `option redispatch`: an ALB does not retry a request on another target, so neither does the
/// sandbox, or failed requests would be hidden.
pub(crate) fn render_config(settings: &HaproxySettings) -> String {
    let inter = settings.interval.as_millis().max(1);
    // A check must finish within its interval, as on AWS where the timeout is shorter than the interval.
    let check_timeout = inter.clamp(50, 2000);
    let mut cfg = String::new();
    let _ = writeln!(cfg, "global");
    let _ = writeln!(
        cfg,
        "    stats socket {} mode 600 level admin",
        settings.socket.display()
    );
    let _ = writeln!(cfg, "    maxconn 4096");
    let _ = writeln!(cfg, "    hard-stop-after 5s");
    let _ = writeln!(cfg);
    let _ = writeln!(cfg, "defaults");
    let _ = writeln!(cfg, "    mode http");
    let _ = writeln!(cfg, "    option http-keep-alive");
    let _ = writeln!(cfg, "    retries 0");
    let _ = writeln!(cfg, "    timeout connect 1s");
    let _ = writeln!(cfg, "    timeout client 30s");
    let _ = writeln!(cfg, "    timeout server 30s");
    let _ = writeln!(cfg, "    timeout http-keep-alive 30s");
    let _ = writeln!(cfg, "    timeout check {check_timeout}ms");
    let _ = writeln!(cfg);
    for (index, port) in settings.frontend_ports.iter().enumerate() {
        let backend = backend_name(index);
        let _ = writeln!(cfg, "frontend {}", frontend_name(index));
        let _ = writeln!(cfg, "    bind 127.0.0.1:{port}");
        let _ = writeln!(cfg, "    default_backend {backend}");
        let _ = writeln!(cfg);
        let _ = writeln!(cfg, "backend {backend}");
        let _ = writeln!(cfg, "    balance roundrobin");
        let _ = writeln!(cfg, "    option httpchk GET /health");
        let _ = writeln!(cfg, "    http-check expect status 200");
        let _ = writeln!(
            cfg,
            "    default-server inter {inter}ms rise {} fall {}",
            settings.rise, settings.fall
        );
        for (name, port) in &settings.servers {
            let _ = writeln!(cfg, "    server {name} 127.0.0.1:{port} check");
        }
        let _ = writeln!(cfg);
    }
    cfg
}

/// Writes the config, checks it with `haproxy -c` and starts HAProxy in the foreground (`-db`), returning once its
/// runtime API answers and every server is in maintenance (an unused target), ready to be registered.
///
/// Maintenance is set through the runtime API rather than with `disabled` in the config: a config-disabled server
/// keeps a config-maintenance flag that `set server ... state drain` does not clear, and registration passes
/// through drain.
pub(crate) async fn start(binary: &Path, dir: &Path, settings: &HaproxySettings) -> anyhow::Result<Child> {
    super::config::check_haproxy_binary(binary)?;
    let socket_len = settings.socket.as_os_str().len();
    if socket_len > MAX_SOCKET_PATH {
        bail!(
            "HAProxy's socket path {} is {socket_len} bytes, over the unix limit of {MAX_SOCKET_PATH}: use a shorter work dir",
            settings.socket.display()
        );
    }
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, render_config(settings)).with_context(|| format!("write {}", cfg_path.display()))?;

    let check = Command::new(binary)
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(&cfg_path)
        .output()
        .await
        .with_context(|| format!("run {} -c", binary.display()))?;
    if !check.status.success() {
        bail!(
            "HAProxy rejected {}: {}{}",
            cfg_path.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }

    let log_path = dir.join("haproxy.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
    let log_err = log.try_clone().context("clone HAProxy log handle")?;
    let mut cmd = Command::new(binary);
    cmd.arg("-db")
        .arg("-f")
        .arg(&cfg_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    tie_to_parent(&mut cmd);
    let mut child = cmd.spawn().with_context(|| format!("start {}", binary.display()))?;

    let api = RuntimeApi::new(settings.socket.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().context("poll HAProxy")? {
            bail!("HAProxy exited at start ({status}): {}", log_tail(&log_path, 2000));
        }
        if api.command("show info").await.is_ok() {
            let park: Vec<String> = (0..settings.frontend_ports.len())
                .flat_map(|index| {
                    let backend = backend_name(index);
                    settings
                        .servers
                        .iter()
                        .map(move |(name, _)| format!("set server {backend}/{name} state maint"))
                })
                .collect();
            // In chunks: one command line must fit HAProxy's buffer.
            for chunk in park.chunks(20) {
                api.apply(chunk).await?;
            }
            return Ok(child);
        }
        if Instant::now() >= deadline {
            // Dropping the child kills it (kill_on_drop).
            bail!(
                "HAProxy's runtime API did not answer within 10 s: {}",
                log_tail(&log_path, 2000)
            );
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Client of HAProxy's runtime API over its unix socket, one command per connection (non-interactive mode, where
/// HAProxy closes the connection after answering, so the answer is everything up to EOF).
#[derive(Debug, Clone)]
pub(crate) struct RuntimeApi {
    socket: PathBuf,
}

impl RuntimeApi {
    /// A client of the socket at `socket`.
    pub(crate) fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// Sends `command` (several may be joined with `;`) and returns HAProxy's raw answer.
    pub(crate) async fn command(&self, command: &str) -> anyhow::Result<String> {
        timeout(Duration::from_secs(5), self.command_inner(command))
            .await
            .with_context(|| format!("HAProxy did not answer {command:?} within 5 s"))?
    }

    async fn command_inner(&self, command: &str) -> anyhow::Result<String> {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .with_context(|| format!("connect to HAProxy's socket {}", self.socket.display()))?;
        stream
            .write_all(format!("{command}\n").as_bytes())
            .await
            .context("send to HAProxy")?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .context("read HAProxy's answer")?;
        Ok(answer)
    }

    /// Runs state-changing commands, whose success is an empty answer; any text is HAProxy's error message.
    pub(crate) async fn apply(&self, commands: &[String]) -> anyhow::Result<()> {
        let joined = commands.join("; ");
        let answer = self.command(&joined).await?;
        let answer = answer.trim();
        if !answer.is_empty() {
            bail!("HAProxy refused {joined:?}: {answer}");
        }
        Ok(())
    }

    /// Every server's state in `backend`, by name, read from `show servers state` (admin and operational state) and
    /// `show stat` (check status).
    pub(crate) async fn server_states(&self, backend: &str) -> anyhow::Result<BTreeMap<String, RotationState>> {
        let states = self.command(&format!("show servers state {backend}")).await?;
        let stat = self.command(&format!("show stat {backend} 4 -1")).await?;
        parse_server_states(&states, &stat)
    }
}

/// Joins the two runtime API answers into one [`RotationState`] per server.
pub(crate) fn parse_server_states(
    servers_state: &str,
    stat_csv: &str,
) -> anyhow::Result<BTreeMap<String, RotationState>> {
    let stats = parse_stat_csv(stat_csv)?;
    let mut header: Option<Vec<&str>> = None;
    let mut out = BTreeMap::new();
    for line in servers_state.lines() {
        let line = line.trim();
        if let Some(names) = line.strip_prefix('#') {
            header = Some(names.split_whitespace().collect());
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // The first line is the format version, a lone number.
        if fields.len() < 2 {
            continue;
        }
        let Some(names) = header.as_ref() else {
            bail!("`show servers state` answered data before its header: {servers_state:?}");
        };
        let field = |name: &str| -> anyhow::Result<&str> {
            names
                .iter()
                .position(|n| *n == name)
                .and_then(|idx| fields.get(idx).copied())
                .with_context(|| format!("`show servers state` has no {name} in {line:?}"))
        };
        let name = field("srv_name")?.to_owned();
        let op: u32 = field("srv_op_state")?.parse().context("srv_op_state")?;
        let admin: u32 = field("srv_admin_state")?.parse().context("srv_admin_state")?;
        let health: u32 = field("srv_check_health")?.parse().context("srv_check_health")?;
        let stat = stats.get(&name);
        let state = RotationState {
            admin: admin_state(admin),
            operational: operational_state(op),
            check_status: stat.map(|s| s.check_status.clone()).unwrap_or_default(),
            check_code: stat.and_then(|s| s.check_code),
            check_health: health,
            haproxy_status: stat.map(|s| s.status.clone()).unwrap_or_default(),
        };
        out.insert(name, state);
    }
    if header.is_none() {
        bail!("`show servers state` answered without a header: {servers_state:?}");
    }
    Ok(out)
}

/// HAProxy's admin flags (`srv_admin_state`): any maintenance bit wins over drain.
fn admin_state(flags: u32) -> AdminState {
    // FMAINT 0x01, IMAINT 0x02, CMAINT 0x04, RMAINT 0x20 put a server in maintenance; FDRAIN 0x08, IDRAIN 0x10 drain.
    if flags & 0x27 != 0 {
        AdminState::Maint
    } else if flags & 0x18 != 0 {
        AdminState::Drain
    } else {
        AdminState::Ready
    }
}

/// HAProxy's `srv_op_state`: 0 stopped, 1 starting (slow start, takes traffic), 2 running, 3 stopping (no new
/// traffic).
fn operational_state(op: u32) -> OperationalState {
    match op {
        1 | 2 => OperationalState::Up,
        3 => OperationalState::Stopping,
        _ => OperationalState::Down,
    }
}

/// The fields of one `show stat` server row the sandbox uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatRow {
    status: String,
    check_status: String,
    check_code: Option<u16>,
}

fn parse_stat_csv(csv: &str) -> anyhow::Result<BTreeMap<String, StatRow>> {
    let mut lines = csv.lines();
    let header_line = lines.next().context("empty `show stat` answer")?;
    let header_line = header_line
        .strip_prefix("# ")
        .context("`show stat` answer without a header")?;
    let header = split_csv(header_line);
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("`show stat` has no {name}"))
    };
    let (sv, status, check_status, check_code) =
        (col("svname")?, col("status")?, col("check_status")?, col("check_code")?);
    let mut out = BTreeMap::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let row = split_csv(line);
        let get = |idx: usize| row.get(idx).cloned().unwrap_or_default();
        // A check in progress shows as "* L7OK": the star says nothing about the result.
        let check = get(check_status).trim_start_matches("* ").to_owned();
        out.insert(
            get(sv),
            StatRow {
                status: get(status),
                check_status: check,
                check_code: get(check_code).parse().ok(),
            },
        );
    }
    Ok(out)
}

/// Splits one CSV line as HAProxy writes it: fields with commas or quotes are quoted, quotes doubled.
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            _ => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVERS_STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight \
        srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state \
        srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord\n\
        3 be 1 s1 127.0.0.1 2 0 1 1 29 6 3 3 6 0 0 0 - 18081 -\n\
        3 be 2 s2 127.0.0.1 0 5 1 1 0 8 2 0 14 0 0 0 - 18082 -\n\
        3 be 3 s3 127.0.0.1 2 8 1 1 0 8 2 3 14 0 0 0 - 18083 -\n\n";

    const STAT: &str = "# pxname,svname,status,check_status,check_code,last_chk\n\
        be,s1,UP,L7OK,200,\"a, b\"\n\
        be,s2,MAINT,,,\n\
        be,s3,DRAIN,* L7STS,503,x\n";

    #[test]
    fn joins_servers_state_and_stat() {
        let states = parse_server_states(SERVERS_STATE, STAT).unwrap();
        let s1 = &states["s1"];
        assert_eq!((s1.admin, s1.operational), (AdminState::Ready, OperationalState::Up));
        assert_eq!((s1.check_status.as_str(), s1.check_code), ("L7OK", Some(200)));
        assert!(s1.in_rotation());
        assert_eq!(states["s2"].admin, AdminState::Maint);
        let s3 = &states["s3"];
        assert_eq!(
            (s3.admin, s3.check_status.as_str(), s3.check_code),
            (AdminState::Drain, "L7STS", Some(503))
        );
        assert!(!s3.in_rotation());
    }

    #[test]
    fn csv_quotes_are_honoured() {
        assert_eq!(split_csv("a,\"b,c\",\"d\"\"e\","), vec!["a", "b,c", "d\"e", ""]);
    }

    #[test]
    fn config_mirrors_the_target_group() {
        let cfg = render_config(&HaproxySettings {
            frontend_ports: vec![8080, 8443],
            servers: vec![("i-0".into(), 20001)],
            interval: Duration::from_millis(1500),
            rise: 3,
            fall: 4,
            socket: "/tmp/x.sock".into(),
        });
        assert!(cfg.contains("default-server inter 1500ms rise 3 fall 4"), "{cfg}");
        assert!(cfg.contains("retries 0"));
        assert!(!cfg.contains("redispatch"));
        assert!(cfg.contains("server i-0 127.0.0.1:20001 check\n"));
        // One frontend and backend per target group, each with its own checks.
        assert!(
            cfg.contains("frontend fe_sandbox\n    bind 127.0.0.1:8080\n    default_backend be_sandbox\n"),
            "{cfg}"
        );
        assert!(
            cfg.contains("frontend fe_sandbox_2\n    bind 127.0.0.1:8443\n    default_backend be_sandbox_2\n"),
            "{cfg}"
        );
        assert_eq!(cfg.matches("option httpchk GET /health").count(), 2);
        assert!(cfg.contains("stats socket /tmp/x.sock mode 600 level admin"));
    }
}
