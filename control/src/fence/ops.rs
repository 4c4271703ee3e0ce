//! Fencing operations on a [`FenceDevice`]: power off with retries and verification, power
//! on, status, monitor. Every agent run is recorded and timed.
//!
//! One *attempt* of `off` is: run `action=off`; if it succeeded and the device verifies,
//! run `action=status` and require exit 2 (off). An attempt that fails in any way (the
//! agent failed, timed out or crashed, `status` failed, or `status` said on) is followed by
//! the next, up to the device's `attempts`. The verdict is decided by the last attempt.

use super::agent::{run_agent, Action, AgentResult, AgentRun, ExitInfo};
use super::{unix_ms_now, FailKind, Failure, FenceDevice};
use std::fmt;
use std::time::{Duration, Instant};

/// Characters of agent output kept in an [`AttemptRecord`].
pub const EXCERPT_CHARS: usize = 400;

/// One agent run within an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRecord {
    /// 1-based attempt of the operation this run belongs to (an `off` attempt and its
    /// verifying `status` share the number).
    pub attempt: u32,
    pub action: Action,
    pub pid: Option<u32>,
    pub exit: ExitInfo,
    pub took: Duration,
    /// End of stderr (or of stdout when stderr was empty), one line, secrets masked.
    pub output_excerpt: String,
    /// `None` when the run gave what its action needs; for a verifying `status`, a state
    /// other than the expected one is a failure ([`FailKind::WrongState`]).
    pub failure: Option<Failure>,
}

impl AttemptRecord {
    fn from_run(attempt: u32, run: &AgentRun, failure: Option<Failure>) -> Self {
        AttemptRecord {
            attempt,
            action: run.action,
            pid: run.pid,
            exit: run.exit,
            took: run.took,
            output_excerpt: run.output_excerpt(EXCERPT_CHARS),
            failure,
        }
    }
}

impl fmt::Display for AttemptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt {} action={}: {} in {:.3} s", self.attempt, self.action, self.exit, self.took.as_secs_f64())?;
        if let Some(e) = &self.failure {
            write!(f, " — {e}")?;
        }
        Ok(())
    }
}

/// The verdict of [`fence_off`]. Only [`permits_promotion`](Self::permits_promotion) may
/// decide whether the backup of a fenced node can take over.
#[must_use = "a fence verdict decides whether the backup may be promoted"]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FenceVerdict {
    /// `off` succeeded and `status` then reported the plug off (exit 2).
    VerifiedOff,
    /// `off` succeeded; verification is turned off for this device (`verify = false`), so
    /// the agent's word is all there is. Produced only when the device says so.
    OffUnverified,
    /// The node could not be shown to be off. It must be treated as running.
    Failed(Failure),
}

impl FenceVerdict {
    /// True only for [`VerifiedOff`](Self::VerifiedOff) and
    /// [`OffUnverified`](Self::OffUnverified). A node whose fencing failed is never
    /// replaced by its backup: two live primaries is worse than an outage.
    pub fn permits_promotion(&self) -> bool {
        matches!(self, FenceVerdict::VerifiedOff | FenceVerdict::OffUnverified)
    }

    pub fn failure(&self) -> Option<&Failure> {
        match self {
            FenceVerdict::Failed(f) => Some(f),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            FenceVerdict::VerifiedOff => "verified_off",
            FenceVerdict::OffUnverified => "off_unverified",
            FenceVerdict::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for FenceVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FenceVerdict::VerifiedOff => f.write_str("verified off"),
            FenceVerdict::OffUnverified => f.write_str("off (unverified: verify = false)"),
            FenceVerdict::Failed(e) => write!(f, "FAILED ({e})"),
        }
    }
}

/// The result of [`fence_off`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceOutcome {
    pub device: String,
    pub plug: Option<String>,
    /// Every agent run, in order.
    pub attempts: Vec<AttemptRecord>,
    pub verdict: FenceVerdict,
    pub started_unix_ms: u64,
    /// Wall time of the whole operation, all attempts included.
    pub took: Duration,
}

impl FenceOutcome {
    /// See [`FenceVerdict::permits_promotion`].
    pub fn permits_promotion(&self) -> bool {
        self.verdict.permits_promotion()
    }

    /// Agent runs with `action=off`.
    pub fn off_runs(&self) -> usize {
        self.attempts.iter().filter(|a| a.action == Action::Off).count()
    }
}

/// The verdict of [`power_on`].
#[must_use]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OnVerdict {
    VerifiedOn,
    OnUnverified,
    Failed(Failure),
}

impl OnVerdict {
    pub fn is_on(&self) -> bool {
        matches!(self, OnVerdict::VerifiedOn | OnVerdict::OnUnverified)
    }
}

/// The result of [`power_on`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PowerOnOutcome {
    pub device: String,
    pub plug: Option<String>,
    pub attempts: Vec<AttemptRecord>,
    pub verdict: OnVerdict,
    pub started_unix_ms: u64,
    pub took: Duration,
}

/// Power state reported by `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerState {
    On,
    Off,
}

/// The result of [`status`]: one run, no retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusOutcome {
    pub device: String,
    pub plug: Option<String>,
    pub record: AttemptRecord,
    pub state: Result<PowerState, Failure>,
}

/// The result of [`monitor`]: one run, no retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorOutcome {
    pub device: String,
    pub record: AttemptRecord,
    pub result: Result<(), Failure>,
}

/// Powers `plug` off through `device`: see the module documentation.
pub fn fence_off(device: &FenceDevice, plug: Option<&str>) -> FenceOutcome {
    fence_off_with(device, plug, &mut |_| {})
}

/// [`fence_off`], calling `on_run` after each agent run (for live events).
pub fn fence_off_with(device: &FenceDevice, plug: Option<&str>, on_run: &mut dyn FnMut(&AttemptRecord)) -> FenceOutcome {
    let (attempts, last, started_unix_ms, took) = with_attempts(device, plug, Action::Off, PowerState::Off, on_run);
    let verdict = match last {
        Ok(true) => FenceVerdict::VerifiedOff,
        Ok(false) => FenceVerdict::OffUnverified,
        Err(f) => FenceVerdict::Failed(f),
    };
    FenceOutcome { device: device.name.clone(), plug: plug.map(str::to_owned), attempts, verdict, started_unix_ms, took }
}

/// Powers `plug` on through `device`, with the same attempts and verification (`status`
/// must then exit 0).
pub fn power_on(device: &FenceDevice, plug: Option<&str>) -> PowerOnOutcome {
    power_on_with(device, plug, &mut |_| {})
}

/// [`power_on`], calling `on_run` after each agent run.
pub fn power_on_with(device: &FenceDevice, plug: Option<&str>, on_run: &mut dyn FnMut(&AttemptRecord)) -> PowerOnOutcome {
    let (attempts, last, started_unix_ms, took) = with_attempts(device, plug, Action::On, PowerState::On, on_run);
    let verdict = match last {
        Ok(true) => OnVerdict::VerifiedOn,
        Ok(false) => OnVerdict::OnUnverified,
        Err(f) => OnVerdict::Failed(f),
    };
    PowerOnOutcome { device: device.name.clone(), plug: plug.map(str::to_owned), attempts, verdict, started_unix_ms, took }
}

/// Runs the attempts; `Ok(verified)` on success, the last failure otherwise.
fn with_attempts(
    device: &FenceDevice,
    plug: Option<&str>,
    action: Action,
    want: PowerState,
    on_run: &mut dyn FnMut(&AttemptRecord),
) -> (Vec<AttemptRecord>, Result<bool, Failure>, u64, Duration) {
    let started_unix_ms = unix_ms_now();
    let started = Instant::now();
    let mut records = Vec::new();
    let mut last = Err(Failure::new(FailKind::Io, "no attempt was made"));
    for attempt in 1..=device.attempts.max(1) {
        let run = run_agent(device, action, plug);
        let failure = run.result.as_ref().err().cloned();
        let rec = AttemptRecord::from_run(attempt, &run, failure.clone());
        on_run(&rec);
        records.push(rec);
        if let Some(f) = failure {
            let stop = matches!(f.kind, FailKind::BadRequest | FailKind::AgentPath | FailKind::AgentMissing | FailKind::AgentNotExecutable);
            last = Err(f);
            if stop {
                break; // nothing will change by trying again
            }
            continue;
        }
        if !device.verify {
            last = Ok(false);
            break;
        }
        let st = run_agent(device, Action::Status, plug);
        let failure = match &st.result {
            Ok(AgentResult::PowerOff) if want == PowerState::Off => None,
            Ok(AgentResult::PowerOn) if want == PowerState::On => None,
            Ok(AgentResult::PowerOn) => Some(Failure::new(
                FailKind::WrongState,
                format!("{action} succeeded but status reports the plug still on (exit 0)"),
            )),
            Ok(AgentResult::PowerOff) => Some(Failure::new(
                FailKind::WrongState,
                format!("{action} succeeded but status reports the plug still off (exit 2)"),
            )),
            Ok(AgentResult::Success) => Some(Failure::new(FailKind::Io, "status gave no power state")),
            Err(f) => Some(Failure::new(f.kind, format!("verification failed: {}", f.detail))),
        };
        let rec = AttemptRecord::from_run(attempt, &st, failure.clone());
        on_run(&rec);
        records.push(rec);
        match failure {
            None => {
                last = Ok(true);
                break;
            }
            Some(f) => last = Err(f),
        }
    }
    (records, last, started_unix_ms, started.elapsed())
}

/// Asks for the power state of `plug`: exit 0 = on, exit 2 = off, anything else fails.
pub fn status(device: &FenceDevice, plug: Option<&str>) -> StatusOutcome {
    let run = run_agent(device, Action::Status, plug);
    let state = match &run.result {
        Ok(AgentResult::PowerOn) => Ok(PowerState::On),
        Ok(AgentResult::PowerOff) => Ok(PowerState::Off),
        Ok(AgentResult::Success) => Err(Failure::new(FailKind::Io, "status gave no power state")),
        Err(f) => Err(f.clone()),
    };
    let record = AttemptRecord::from_run(1, &run, state.as_ref().err().cloned());
    StatusOutcome { device: device.name.clone(), plug: plug.map(str::to_owned), record, state }
}

/// Checks that the fence device answers (`action=monitor`, exit 0).
pub fn monitor(device: &FenceDevice) -> MonitorOutcome {
    let run = run_agent(device, Action::Monitor, None);
    let result = run.result.as_ref().map(|_| ()).map_err(Clone::clone);
    let record = AttemptRecord::from_run(1, &run, result.as_ref().err().cloned());
    MonitorOutcome { device: device.name.clone(), record, result }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_off_verdicts_permit_promotion() {
        assert!(FenceVerdict::VerifiedOff.permits_promotion());
        assert!(FenceVerdict::OffUnverified.permits_promotion());
        for k in FailKind::ALL {
            assert!(!FenceVerdict::Failed(Failure::new(k, "x")).permits_promotion(), "{k}");
        }
    }

    #[test]
    fn a_missing_agent_is_tried_once_and_fails() {
        let d = FenceDevice::new("x", "/nonexistent/fence_x").with_attempts(5);
        let o = fence_off(&d, Some("1"));
        assert_eq!(o.attempts.len(), 1);
        assert_eq!(o.verdict.failure().map(|f| f.kind), Some(FailKind::AgentMissing));
        assert!(!o.permits_promotion());
    }

    #[test]
    fn true_as_agent_fails_verification_because_status_says_on() {
        // /bin/true exits 0 for everything: off "succeeds", status says on.
        let d = FenceDevice::new("t", "/bin/true").with_attempts(2);
        let o = fence_off(&d, None);
        assert_eq!(o.attempts.len(), 4);
        assert_eq!(o.verdict.failure().map(|f| f.kind), Some(FailKind::WrongState));
        assert!(!o.permits_promotion());
        let o = fence_off(&d.clone().with_verify(false), None);
        assert_eq!(o.verdict, FenceVerdict::OffUnverified);
        assert_eq!(o.attempts.len(), 1);
        let on = power_on(&d, None);
        assert_eq!(on.verdict, OnVerdict::VerifiedOn);
        assert_eq!(status(&d, None).state, Ok(PowerState::On));
        assert_eq!(monitor(&d).result, Ok(()));
    }
}
