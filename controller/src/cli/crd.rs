//! `pitstop crd`: print the CRD.

use anyhow::Context;

/// Prints the CRD YAML to stdout.
pub fn print_crd() -> anyhow::Result<()> {
    let yaml = crate::crdgen::crd_yaml().context("rendering the CRD as YAML")?;
    print!("{yaml}");
    Ok(())
}
