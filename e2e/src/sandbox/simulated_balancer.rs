//! The light mode's stand-in for HAProxy: the same server states, driven by the same runtime API commands and by
//! health checks with the same `rise`/`fall` rules, kept in memory.
//!
//! `make bench-scale` runs a thousand instances in a hundred target groups: a thousand backend processes and a
//! HAProxy checking each of them would measure the machine, not pitstop. What pitstop sees stays the same: a
//! target is `initial` until its checks have passed `rise` times after registration, `unhealthy` after `fall`
//! failures, draining for the deregistration delay. A check passes when the instance is running and its health
//! fault file is absent, which is what the real backend's `/health` answers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use anyhow::{Context, bail};

use super::rotation::{AdminState, OperationalState, RotationState};

/// What a health check of one server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// `/health` answered 200.
    Passed,
    /// `/health` answered with this status (the service runs but is sick).
    Status(u16),
    /// Nothing listens: the instance is down.
    Refused,
}

/// One server of one backend.
#[derive(Debug, Clone)]
struct Server {
    admin: AdminState,
    up: bool,
    /// HAProxy's health counter: `0` down .. `rise + fall - 1` fully up; up from `rise` on.
    health: u32,
    check_status: String,
    check_code: Option<u16>,
}

impl Server {
    /// A server as the sandbox's HAProxy starts it: in maintenance, down, no check yet.
    fn new() -> Self {
        Self {
            admin: AdminState::Maint,
            up: false,
            health: 0,
            check_status: String::new(),
            check_code: None,
        }
    }

    fn state(&self) -> RotationState {
        let operational = if self.up {
            OperationalState::Up
        } else {
            OperationalState::Down
        };
        let status = match (self.admin, self.up) {
            (AdminState::Maint, _) => "MAINT",
            (AdminState::Drain, _) => "DRAIN",
            (AdminState::Ready, true) => "UP",
            (AdminState::Ready, false) => "DOWN",
        };
        RotationState {
            admin: self.admin,
            operational,
            check_status: self.check_status.clone(),
            check_code: self.check_code,
            check_health: self.health,
            haproxy_status: status.to_owned(),
        }
    }

    /// One check, counted as HAProxy counts them.
    fn check(&mut self, probe: Probe, rise: u32, fall: u32) {
        let top = rise + fall - 1;
        let (status, code, passed) = match probe {
            Probe::Passed => ("L7OK", Some(200), true),
            Probe::Status(code) => ("L7STS", Some(code), false),
            Probe::Refused => ("L4CON", None, false),
        };
        self.check_status = status.to_owned();
        self.check_code = code;
        if passed {
            self.health = (self.health + 1).min(top);
            if !self.up && self.health >= rise {
                self.up = true;
                self.health = top;
            }
        } else if self.up {
            self.health = self.health.saturating_sub(1);
            if self.health < rise {
                self.up = false;
                self.health = 0;
            }
        } else {
            self.health = 0;
        }
    }
}

/// Every backend's servers, and the check thresholds.
#[derive(Debug)]
pub(crate) struct SimulatedBalancer {
    backends: Mutex<HashMap<String, BTreeMap<String, Server>>>,
    rise: u32,
    fall: u32,
}

impl SimulatedBalancer {
    /// `backends`, each with its servers in maintenance, checked with `rise` and `fall` as HAProxy's are.
    pub(crate) fn new(backends: impl IntoIterator<Item = (String, Vec<String>)>, rise: u32, fall: u32) -> Self {
        let backends = backends
            .into_iter()
            .map(|(backend, servers)| (backend, servers.into_iter().map(|s| (s, Server::new())).collect()))
            .collect();
        Self {
            backends: Mutex::new(backends),
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, Server>>> {
        self.backends.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Carries out runtime API commands (those the sandbox sends: `set server B/S state ready|drain|maint`,
    /// `set server B/S health down|up`, `shutdown sessions server B/S`), all or none: an unknown command or server
    /// is refused, as HAProxy refuses it.
    pub(crate) fn apply(&self, commands: &[String]) -> anyhow::Result<()> {
        let parsed: Vec<Command> = commands
            .iter()
            .map(|c| Command::parse(c))
            .collect::<anyhow::Result<_>>()?;
        let mut backends = self.lock();
        for command in &parsed {
            let (backend, server) = command.target();
            let known = backends
                .get(backend)
                .is_some_and(|servers| servers.contains_key(server));
            if !known {
                bail!("No such server: {backend}/{server}");
            }
        }
        let top = self.rise + self.fall - 1;
        for command in parsed {
            let (backend, server) = command.target();
            let Some(server) = backends.get_mut(backend).and_then(|servers| servers.get_mut(server)) else {
                continue;
            };
            match command {
                Command::State { admin, .. } => server.admin = admin,
                Command::Health { up, .. } => {
                    server.up = up;
                    server.health = if up { top } else { 0 };
                }
                // Sessions are not simulated: there is no traffic in light mode.
                Command::ShutdownSessions { .. } => {}
            }
        }
        Ok(())
    }

    /// Every server's state in `backend`.
    pub(crate) fn server_states(&self, backend: &str) -> anyhow::Result<BTreeMap<String, RotationState>> {
        let backends = self.lock();
        let servers = backends
            .get(backend)
            .with_context(|| format!("Can't find backend {backend}"))?;
        Ok(servers.iter().map(|(name, s)| (name.clone(), s.state())).collect())
    }

    /// Runs one round of health checks: every server not in maintenance (HAProxy checks draining servers too) is
    /// probed with `probe(server name)`.
    pub(crate) fn run_checks(&self, probe: impl Fn(&str) -> Probe) {
        let (rise, fall) = (self.rise, self.fall);
        let mut backends = self.lock();
        for servers in backends.values_mut() {
            for (name, server) in servers.iter_mut() {
                if server.admin != AdminState::Maint {
                    server.check(probe(name), rise, fall);
                }
            }
        }
    }
}

/// A runtime API command the simulation understands.
#[derive(Debug, PartialEq, Eq)]
enum Command<'a> {
    State {
        backend: &'a str,
        server: &'a str,
        admin: AdminState,
    },
    Health {
        backend: &'a str,
        server: &'a str,
        up: bool,
    },
    ShutdownSessions {
        backend: &'a str,
        server: &'a str,
    },
}

impl<'a> Command<'a> {
    fn parse(line: &'a str) -> anyhow::Result<Self> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let split = |target: &'a str| {
            target
                .split_once('/')
                .with_context(|| format!("Require 'backend/server' in {line:?}"))
        };
        match words.as_slice() {
            ["set", "server", target, "state", state] => {
                let (backend, server) = split(target)?;
                let admin = match *state {
                    "ready" => AdminState::Ready,
                    "drain" => AdminState::Drain,
                    "maint" => AdminState::Maint,
                    other => bail!("'set server <srv> state' expects 'ready', 'drain' and 'maint', not {other:?}"),
                };
                Ok(Command::State { backend, server, admin })
            }
            ["set", "server", target, "health", health] => {
                let (backend, server) = split(target)?;
                let up = match *health {
                    "up" => true,
                    "down" => false,
                    other => bail!("'set server <srv> health' expects 'up', 'stopping', or 'down', not {other:?}"),
                };
                Ok(Command::Health { backend, server, up })
            }
            ["shutdown", "sessions", "server", target] => {
                let (backend, server) = split(target)?;
                Ok(Command::ShutdownSessions { backend, server })
            }
            _ => bail!("Unknown command: {line:?}"),
        }
    }

    fn target(&self) -> (&'a str, &'a str) {
        match *self {
            Command::State { backend, server, .. }
            | Command::Health { backend, server, .. }
            | Command::ShutdownSessions { backend, server } => (backend, server),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer() -> SimulatedBalancer {
        SimulatedBalancer::new([("be".to_owned(), vec!["i-a".to_owned(), "i-b".to_owned()])], 2, 3)
    }

    fn cmds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn state(b: &SimulatedBalancer, server: &str) -> RotationState {
        b.server_states("be").unwrap()[server].clone()
    }

    #[test]
    fn registered_server_comes_up_after_rise_passed_checks_and_not_before() {
        let b = balancer();
        assert_eq!(state(&b, "i-a").admin, AdminState::Maint);
        b.apply(&cmds(&[
            "set server be/i-a state drain",
            "set server be/i-a health down",
            "set server be/i-a state ready",
        ]))
        .unwrap();
        b.run_checks(|_| Probe::Passed);
        assert!(!state(&b, "i-a").in_rotation(), "one passed check of two");
        b.run_checks(|_| Probe::Passed);
        let s = state(&b, "i-a");
        assert!(s.in_rotation(), "{s:?}");
        assert_eq!((s.check_status.as_str(), s.check_health), ("L7OK", 4));
        // A server in maintenance is not checked.
        assert_eq!(state(&b, "i-b").check_status, "");
    }

    #[test]
    fn up_server_goes_down_after_fall_failed_checks() {
        let b = balancer();
        b.apply(&cmds(&["set server be/i-a state ready", "set server be/i-a health up"]))
            .unwrap();
        b.run_checks(|_| Probe::Refused);
        b.run_checks(|_| Probe::Refused);
        assert!(state(&b, "i-a").in_rotation(), "two failures of three");
        b.run_checks(|_| Probe::Status(503));
        let s = state(&b, "i-a");
        assert_eq!(
            (s.operational, s.check_status.as_str(), s.check_code),
            (OperationalState::Down, "L7STS", Some(503))
        );
    }

    #[test]
    fn draining_server_is_out_of_rotation_but_still_checked() {
        let b = balancer();
        b.apply(&cmds(&["set server be/i-a state ready", "set server be/i-a health up"]))
            .unwrap();
        b.apply(&cmds(&["set server be/i-a state drain"])).unwrap();
        b.run_checks(|_| Probe::Refused);
        let s = state(&b, "i-a");
        assert!(!s.in_rotation());
        assert_eq!((s.admin, s.check_status.as_str()), (AdminState::Drain, "L4CON"));
    }

    #[test]
    fn unknown_servers_and_commands_are_refused_and_change_nothing() {
        let b = balancer();
        let err = b
            .apply(&cmds(&[
                "set server be/i-a state ready",
                "set server be/i-zzz state ready",
            ]))
            .unwrap_err();
        assert!(err.to_string().contains("No such server"), "{err}");
        assert_eq!(state(&b, "i-a").admin, AdminState::Maint, "all or none");
        assert!(b.apply(&cmds(&["set server be/i-a weight 0"])).is_err());
        assert!(b.apply(&cmds(&["set server be/i-a state sideways"])).is_err());
        assert!(b.server_states("nope").is_err());
    }
}
