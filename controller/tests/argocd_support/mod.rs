//! Runs the Argo CD health check the project ships (`deploy/argocd/health.lua`) on a plan, with
//! the Lua 5.1 that Argo CD's interpreter (gopher-lua) implements, as Argo CD does: the object
//! as the global `obj`, the script's result a table with `status` and `message`. `make test`
//! installs Debian's `lua5.1`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// The script's (status, message) for `plan` (a whole object: apiVersion, kind, metadata,
/// spec, status).
pub fn argocd_health(plan: &Value) -> (String, String) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/argocd/health.lua");
    let harness = format!(
        "obj = {}\nlocal hs = assert(loadfile({}))()\nio.write(hs.status, \"\\n\", hs.message or \"\")\n",
        lua_value(plan),
        lua_string(&script.display().to_string())
    );
    let lua = std::env::var("LUA").unwrap_or_else(|_| "lua5.1".to_owned());
    let out = Command::new(&lua)
        .arg("-e")
        .arg(&harness)
        .output()
        .unwrap_or_else(|e| panic!("{lua} runs (`make deps` installs Debian's lua5.1): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "health.lua failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, message) = stdout.split_once('\n').unwrap_or((stdout.as_str(), ""));
    (status.to_owned(), message.to_owned())
}

/// JSON as a Lua table constructor, as Argo CD hands objects to its scripts (arrays as
/// sequences from 1, null as nil).
fn lua_value(value: &Value) -> String {
    match value {
        Value::Null => "nil".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_value).collect::<Vec<_>>().join(", ")),
        Value::Object(fields) => format!(
            "{{{}}}",
            fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn lua_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
