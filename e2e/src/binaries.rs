//! Finding the workspace's own binaries (pitstop, pitstop-backend) from tests and tools.

use std::path::PathBuf;

/// The binary `name`: `$env_var` if set, else next to the running executable or one
/// directory up (test binaries live in `target/<profile>/deps/`).
pub fn sibling_binary(env_var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let name = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    let Ok(exe) = std::env::current_exe() else {
        return PathBuf::from(name);
    };
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|dir| dir.join(&name)).collect();
    candidates
        .iter()
        .find(|candidate| candidate.is_file())
        .or(candidates.first())
        .cloned()
        .unwrap_or_else(|| PathBuf::from(name))
}
