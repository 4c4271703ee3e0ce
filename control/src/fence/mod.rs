//! Power fencing through fence-agents programs (docs/fencing.md).
//!
//! - [`agent`]: one run of a fence agent, following the fence-agents calling convention
//!   exactly (no arguments, `key=value` lines on stdin, exit codes), in its own process
//!   group, with a timeout that kills the whole group and bounded, secret-masked capture of
//!   its output.
//! - [`ops`]: the fencing operations built on it: [`fence_off`] (retries, verification by
//!   `status`, a [`FenceVerdict`]), [`power_on`], [`status`], [`monitor`]; every step timed.
//! - [`service`]: the [`Fencer`], which runs those operations on its own worker threads for
//!   the control thread, emits timestamped [`FenceEvent`]s and keeps [`FenceCounters`].
//!
//! The promotion rule — a primary that could not be fenced is never replaced by its backup
//! — is applied by the caller, from [`FenceVerdict::permits_promotion`]: only
//! [`FenceVerdict::VerifiedOff`], or [`FenceVerdict::OffUnverified`] when the device's
//! configuration turned verification off, permits it. Every failure, of any kind, forbids it.

pub mod agent;
pub mod ops;
pub mod service;

pub use agent::{run_agent, Action, AgentResult, AgentRun, Captured, ExitInfo};
pub use ops::{
    fence_off, fence_off_with, monitor, power_on, power_on_with, status, AttemptRecord,
    FenceOutcome, FenceVerdict, MonitorOutcome, OnVerdict, PowerOnOutcome, PowerState,
    StatusOutcome,
};
pub use service::{
    FenceCounters, FenceCountersSnapshot, FenceEvent, FenceEventKind, FenceOp, FenceRequest,
    FenceResult, Fencer, FencerConfig, SubmitError,
};

use crate::config::FenceDeviceConfig;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A power switch or BMC reached through a fence agent: what `[[fence_device]]` configures.
///
/// `Debug` masks secret parameter values (see [`is_secret_key`]).
#[derive(Clone, PartialEq, Eq)]
pub struct FenceDevice {
    /// Name of the device (for events, counters and logs).
    pub name: String,
    /// Absolute path of the agent program (`/usr/sbin/fence_ipmilan`).
    pub agent: PathBuf,
    /// `key=value` lines written after `action=` and `plug=`, in this order.
    pub parameters: Vec<(String, String)>,
    /// One agent run longer than this is killed (with its whole process group) and fails.
    pub timeout: Duration,
    /// Run `status` after `off` (and after `on`) and require the new state.
    pub verify: bool,
    /// Tries of the whole operation (`off` + verification) before it is declared failed.
    pub attempts: u32,
}

/// A parameter value as the agent receives it: booleans become `1`/`0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamValue(pub String);

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue(v)
    }
}
impl From<&String> for ParamValue {
    fn from(v: &String) -> Self {
        ParamValue(v.clone())
    }
}
impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue(if v { "1" } else { "0" }.to_owned())
    }
}
macro_rules! param_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for ParamValue {
            fn from(v: $t) -> Self {
                ParamValue(v.to_string())
            }
        }
    )*};
}
param_from_int!(u8, u16, u32, u64, usize, i8, i16, i32, i64);

impl FenceDevice {
    /// A device with the `[[fence_device]]` defaults: 30 s timeout, verify, 2 attempts.
    pub fn new(name: impl Into<String>, agent: impl Into<PathBuf>) -> Self {
        FenceDevice {
            name: name.into(),
            agent: agent.into(),
            parameters: Vec::new(),
            timeout: Duration::from_millis(30_000),
            verify: true,
            attempts: 2,
        }
    }

    /// From the rack configuration. Parameters keep the configuration's (sorted) order;
    /// booleans were already turned into `1`/`0` when the file was read.
    pub fn from_config(c: &FenceDeviceConfig) -> Self {
        FenceDevice {
            name: c.name.clone(),
            agent: c.agent.clone(),
            parameters: c.parameters.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            timeout: Duration::from_millis(u64::from(c.timeout_ms)),
            verify: c.verify,
            attempts: c.attempts.max(1),
        }
    }

    /// Adds a `key=value` parameter (after the ones already there).
    pub fn param(mut self, key: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        self.parameters.push((key.into(), value.into().0));
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    pub fn with_attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts.max(1);
        self
    }

    /// The values of secret parameters, to be masked wherever output is kept or logged.
    pub fn secrets(&self) -> Vec<&str> {
        self.parameters
            .iter()
            .filter(|(k, v)| is_secret_key(k) && !v.is_empty())
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The exact bytes given to the agent on stdin for `action` (see
    /// [`agent::render_stdin`]), or why the request cannot be sent.
    pub fn stdin_for(&self, action: Action, plug: Option<&str>) -> Result<String, Failure> {
        agent::render_stdin(action, plug, &self.parameters)
    }

    /// The same lines with secret values replaced by `****`: what may be logged.
    pub fn stdin_for_log(&self, action: Action, plug: Option<&str>) -> String {
        agent::render_stdin_unchecked(action, plug, &self.parameters, true)
    }
}

impl From<&FenceDeviceConfig> for FenceDevice {
    fn from(c: &FenceDeviceConfig) -> Self {
        FenceDevice::from_config(c)
    }
}

impl fmt::Debug for FenceDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let params: Vec<(String, String)> = self
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), if is_secret_key(k) { MASK.to_owned() } else { v.clone() }))
            .collect();
        f.debug_struct("FenceDevice")
            .field("name", &self.name)
            .field("agent", &self.agent)
            .field("parameters", &params)
            .field("timeout", &self.timeout)
            .field("verify", &self.verify)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What replaces a secret in anything kept or logged.
pub const MASK: &str = "****";

/// Whether a parameter holds a secret: `password`, `passwd`, and any key containing
/// `passw` or `secret` (`snmp_priv_passwd`, `password_script` — the latter is only a path,
/// masked anyway), and SNMP's `community`.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("passw") || k.contains("secret") || k == "community"
}

/// Replaces every occurrence of each secret in `bytes` with [`MASK`]. A very short secret
/// masks unrelated text too; leaking it would be worse.
pub fn mask_secrets(bytes: &[u8], secrets: &[&str]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for s in secrets {
        let s = s.as_bytes();
        if s.is_empty() || out.len() < s.len() {
            continue;
        }
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(s) {
                next.extend_from_slice(MASK.as_bytes());
                i += s.len();
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    out
}

/// Why an agent run or a fencing operation failed. The kinds are what counters count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailKind {
    /// A parameter or the plug cannot be passed (line break, `action` among the parameters,
    /// a key that is not a parameter name). Nothing was run.
    BadRequest,
    /// The agent path is not absolute. Nothing was run.
    AgentPath,
    /// No file at the agent path.
    AgentMissing,
    /// The agent exists but cannot be executed (permissions, a directory, not a program).
    AgentNotExecutable,
    /// The agent could not be started for another reason.
    SpawnFailed,
    /// The agent ran longer than the device's timeout; its process group was killed.
    Timeout,
    /// The agent was killed by a signal (crash).
    Crashed,
    /// The agent exited with a status that means failure for its action.
    AgentError,
    /// `status` after `off` said on (or after `on` said off).
    WrongState,
    /// Waiting for or talking to the agent failed in tapsplice itself.
    Io,
    /// The fencer was shut down before the request ran.
    Cancelled,
}

impl FailKind {
    pub const ALL: [FailKind; 11] = [
        FailKind::BadRequest,
        FailKind::AgentPath,
        FailKind::AgentMissing,
        FailKind::AgentNotExecutable,
        FailKind::SpawnFailed,
        FailKind::Timeout,
        FailKind::Crashed,
        FailKind::AgentError,
        FailKind::WrongState,
        FailKind::Io,
        FailKind::Cancelled,
    ];

    /// snake_case name (counter labels, event kinds).
    pub fn as_str(self) -> &'static str {
        match self {
            FailKind::BadRequest => "bad_request",
            FailKind::AgentPath => "agent_path",
            FailKind::AgentMissing => "agent_missing",
            FailKind::AgentNotExecutable => "agent_not_executable",
            FailKind::SpawnFailed => "spawn_failed",
            FailKind::Timeout => "timeout",
            FailKind::Crashed => "crashed",
            FailKind::AgentError => "agent_error",
            FailKind::WrongState => "wrong_state",
            FailKind::Io => "io",
            FailKind::Cancelled => "cancelled",
        }
    }

    pub(crate) fn index(self) -> usize {
        FailKind::ALL.iter().position(|k| *k == self).unwrap_or(0)
    }
}

impl fmt::Display for FailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure with its kind and a one-line, secret-free explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailKind, detail: impl Into<String>) -> Self {
        Failure { kind, detail: detail.into() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Failure {}

/// Milliseconds since the Unix epoch, for event timestamps.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_recognised_and_masked() {
        for k in ["password", "passwd", "PASSWORD", "snmp_priv_passwd", "password_script", "community", "api_secret"] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["ip", "username", "login", "plug", "lanplus", "cipher"] {
            assert!(!is_secret_key(k), "{k}");
        }
        let out = mask_secrets(b"auth failed for s3cr3t (s3cr3t)", &["s3cr3t"]);
        assert_eq!(out, b"auth failed for **** (****)");
        assert_eq!(mask_secrets(b"abc", &[""]), b"abc");
    }

    #[test]
    fn debug_hides_passwords() {
        let d = FenceDevice::new("ipmi-a", "/usr/sbin/fence_ipmilan")
            .param("ip", "192.0.2.1")
            .param("password", "hunter2")
            .param("lanplus", true);
        let s = format!("{d:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(s.contains("****") && s.contains("192.0.2.1"), "{s}");
        assert_eq!(d.secrets(), vec!["hunter2"]);
        assert_eq!(d.parameters[2], ("lanplus".into(), "1".into()));
    }

    #[test]
    fn from_config_keeps_order_and_units() {
        let mut c = FenceDeviceConfig { name: "pdu".into(), agent: "/usr/sbin/fence_apc_snmp".into(), ..Default::default() };
        c.parameters.insert("ip".into(), "192.0.2.5".into());
        c.parameters.insert("community".into(), "private".into());
        c.timeout_ms = 1500;
        c.attempts = 0;
        let d = FenceDevice::from(&c);
        assert_eq!(d.parameters, vec![("community".into(), "private".into()), ("ip".into(), "192.0.2.5".into())]);
        assert_eq!(d.timeout, Duration::from_millis(1500));
        assert_eq!(d.attempts, 1);
        assert!(d.verify);
    }

    #[test]
    fn fail_kinds_have_distinct_names_and_indices() {
        let mut names: Vec<_> = FailKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FailKind::ALL.len());
        for (i, k) in FailKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
