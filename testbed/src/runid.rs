//! Run identity and the names derived from it.
//!
//! A run id is `t` + 6 lowercase hex digits (from pid and time). Every name a run creates
//! starts with it, so `testbed cleanup` can find leftovers and nothing collides with
//! another run or with the host:
//!
//! | object | name |
//! | --- | --- |
//! | network namespace | `<id>-<topology ns name>` (fabric: `<id>-fabric`) |
//! | TAP interface while in the root namespace | `<id><k>` (k = base-36 index, ≤ 9 chars) |
//! | DPDK file prefix | `<id>-<appliance name>` |
//! | run directory (configs, logs, reports) | `/tmp/testbed-<id>` |
//! | liveness file | `/run/testbed/<id>.pid` |
//! | vhost-user sockets | `{run_dir}/...` in a rack config's port args; elsewhere only with `{run_id}` in the name, recorded in `/run/testbed/<id>.sockets` |

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub const STATE_DIR: &str = "/run/testbed";
pub const FABRIC: &str = "fabric";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunId(String);

impl RunId {
    /// A fresh id that no live or leftover run uses.
    pub fn fresh() -> RunId {
        let pid = std::process::id() as u64;
        let mut salt = 0u64;
        loop {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            let h = splitmix(pid.wrapping_mul(0x1000_0001) ^ nanos ^ salt.wrapping_mul(0x9E37));
            let id = RunId(format!("t{:06x}", h & 0xff_ffff));
            if !id.state_file().exists()
                && !id.sockets_file().exists()
                && !id.run_dir().exists()
                && !id.any_netns_exists()
            {
                return id;
            }
            salt += 1;
        }
    }

    pub fn netns(&self, logical: &str) -> String {
        format!("{}-{}", self.0, logical)
    }

    pub fn fabric_ns(&self) -> String {
        self.netns(FABRIC)
    }

    /// Name of the k-th TAP interface of this run while it lives in the root namespace.
    pub fn tap_ifname(&self, k: usize) -> String {
        format!("{}{}", self.0, base36(k))
    }

    pub fn file_prefix(&self, appliance: &str) -> String {
        format!("{}-{}", self.0, appliance)
    }

    pub fn run_dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/testbed-{}", self.0))
    }

    pub fn state_file(&self) -> PathBuf {
        PathBuf::from(format!("{}/{}.pid", STATE_DIR, self.0))
    }

    /// Record of the run's vhost-user sockets outside its run directory (rarely exists).
    pub fn sockets_file(&self) -> PathBuf {
        PathBuf::from(format!("{}/{}.sockets", STATE_DIR, self.0))
    }

    fn any_netns_exists(&self) -> bool {
        let prefix = format!("{}-", self.0);
        std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            })
            .unwrap_or(false)
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn base36(mut k: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[k % 36]);
        k /= 36;
        if k == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// If `name` starts with a run id (`t` + 6 hex), return it.
pub fn run_id_of(name: &str) -> Option<&str> {
    let b = name.as_bytes();
    if b.len() >= 7
        && b[0] == b't'
        && b[1..7]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
    {
        Some(&name[..7])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_prefixed() {
        let id = RunId("t0a1b2c".into());
        assert_eq!(id.tap_ifname(0), "t0a1b2c0");
        assert_eq!(id.tap_ifname(37), "t0a1b2c11");
        assert!(id.tap_ifname(1295).len() <= 15);
        assert_eq!(id.netns("client"), "t0a1b2c-client");
        assert_eq!(run_id_of("t0a1b2c-client"), Some("t0a1b2c"));
        assert_eq!(run_id_of("t0a1b2c3"), Some("t0a1b2c"));
        assert_eq!(run_id_of("tap0"), None);
        assert_eq!(run_id_of("tptest"), None);
    }
}
