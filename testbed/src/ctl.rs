//! Asking a running appliance through `tapsplice ctl --json` (bounded: a wedged appliance
//! cannot hang the testbed).

use anyhow::{Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// `tapsplice ctl --socket SOCK --json CMD`: the result object.
pub fn json(bin: &Path, sock: &Path, cmd: &str) -> Result<Value> {
    let out = crate::cmd::run(
        &bin.to_string_lossy(),
        &["ctl", "--socket", &sock.to_string_lossy(), "--json", cmd],
        Duration::from_secs(5),
    )?;
    serde_json::from_str(out.trim()).with_context(|| format!("tapsplice ctl {cmd}: not JSON"))
}

/// The detector's state of peer `id` (`None` before the appliance has published it).
pub fn peer_state(bin: &Path, sock: &Path, id: &str) -> Result<Option<String>> {
    let v = json(bin, sock, "peers")?;
    Ok(v["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["node"] == id))
        .and_then(|p| p["state"].as_str().map(String::from)))
}
