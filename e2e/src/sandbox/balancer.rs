//! Where the sandbox's target groups live: a real HAProxy (the default), or the light mode's in-memory
//! simulation of it ([`SimulatedBalancer`]). Both take the same runtime API commands and report the same
//! server states, so the ELBv2 emulation above them is one and the same.

use std::collections::BTreeMap;

use super::haproxy::RuntimeApi;
use super::rotation::RotationState;
use super::simulated_balancer::SimulatedBalancer;

/// The load balancer behind the target groups.
#[derive(Debug)]
pub(crate) enum Balancer {
    /// A real HAProxy, driven through its runtime API socket.
    Haproxy(RuntimeApi),
    /// The light mode's simulation: no process, no traffic.
    Simulated(SimulatedBalancer),
}

impl Balancer {
    /// Runs state-changing runtime API commands.
    pub(crate) async fn apply(&self, commands: &[String]) -> anyhow::Result<()> {
        match self {
            Balancer::Haproxy(api) => api.apply(commands).await,
            Balancer::Simulated(sim) => sim.apply(commands),
        }
    }

    /// Every server's state in `backend`, by name.
    pub(crate) async fn server_states(&self, backend: &str) -> anyhow::Result<BTreeMap<String, RotationState>> {
        match self {
            Balancer::Haproxy(api) => api.server_states(backend).await,
            Balancer::Simulated(sim) => sim.server_states(backend),
        }
    }
}
