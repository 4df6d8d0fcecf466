//! `pitstop crd`: print a CRD.

use anyhow::Context;

/// Which CRD to print.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrdKind {
    /// MaintenancePlan (namespaced; what tenants create).
    #[default]
    Plan,
    /// MaintenancePolicy (cluster-scoped; what the platform team allows).
    Policy,
}

/// Prints the CRD YAML to stdout.
pub fn print_crd(kind: CrdKind) -> anyhow::Result<()> {
    let yaml = match kind {
        CrdKind::Plan => crate::crdgen::crd_yaml(),
        CrdKind::Policy => crate::crdgen::policy_crd_yaml(),
    }
    .context("rendering the CRD as YAML")?;
    print!("{yaml}");
    Ok(())
}
