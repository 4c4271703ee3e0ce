//! When a `[[server]]` pair's primary is lost, who may take over: the decision half of the
//! ST-TCP takeover (thesis §5.3.5, DESIGN.md "Tap and the ST-TCP backup").
//!
//! Pure state machine, driven by the control thread with two inputs — detector decisions
//! about the pair's nodes and the results of power fencing — and producing two outputs:
//! fence requests to submit and events to log. It never blocks and never runs an agent.
//!
//! The rule it enforces: **a backup is promotable only after its primary was shown to be
//! powered off** (a fence verdict that permits promotion). A fence that fails, times out
//! or cannot even be queued leaves the pair `refused`, loudly, until an operator fences the
//! primary by hand (`tapsplice ctl fence NODE --yes-really`, whose verified success also
//! permits the promotion). Two live primaries are worse than an outage.
//!
//! Further choices:
//! * The primary is fenced when the detector says `down`, `app_down` (the application
//!   died but the machine still speaks: it must be stopped before a replica answers for
//!   it) or `held_down` (flapping).
//! * The primary is **not** fenced while the backup is unusable (not `up`): shooting the
//!   only node that might come back buys nothing. The pair waits, `unprotected`, and the
//!   fence starts as soon as the backup is up.
//! * A primary that recovers before its fence started goes back to `serving`; a fence
//!   that has started runs to its end (an agent cannot be recalled halfway), and its
//!   verdict decides.
//! * Promotion itself — rewriting the dataplane so the backup's output reaches the
//!   clients — is the tap role's job; `promotable` is the state it acts on. With
//!   `promote_after = "isolation"` the tap role may promote once it has cut the primary
//!   off in the dataplane; the power fence still runs and is still verified here.

use crate::config::RackConfig;
use crate::detector::PeerState;
use crate::fencing::FenceTarget;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where a pair stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The primary is in charge (or not heard from yet).
    Serving,
    /// The primary is lost but the backup is not usable: nothing is fenced.
    Unprotected,
    /// The primary is lost; its power fence is running.
    Fencing,
    /// The primary was shown to be off: the backup may be promoted.
    Promotable,
    /// The primary is lost and could not be shown to be off: the backup must not be
    /// promoted. Only a verified manual fence leaves this phase.
    Refused,
}

impl Phase {
    pub const ALL: [Phase; 5] = [Phase::Serving, Phase::Unprotected, Phase::Fencing, Phase::Promotable, Phase::Refused];

    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Unprotected => "unprotected",
            Phase::Fencing => "fencing",
            Phase::Promotable => "promotable",
            Phase::Refused => "refused",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[server]]` pair as the takeover logic needs it.
#[derive(Clone, Debug)]
pub struct PairSpec {
    pub name: String,
    pub primary: String,
    pub backup: String,
    /// How the primary is powered off; `None` = no power fence configured (then only
    /// `promote_after = "isolation"` is valid, and the pair is never promotable here).
    pub fence: Option<FenceTarget>,
}

impl PairSpec {
    /// Every `[[server]]` of the rack, with the primary's fence target from `targets`.
    pub fn from_config(cfg: &RackConfig, targets: &[FenceTarget]) -> Vec<PairSpec> {
        cfg.server
            .iter()
            .map(|s| PairSpec {
                name: s.name.clone(),
                primary: s.primary.clone(),
                backup: s.backup.clone(),
                fence: targets.iter().find(|t| t.node == s.primary && s.fence.is_some()).cloned(),
            })
            .collect()
    }
}

/// Something the control thread must do.
#[derive(Clone, Debug)]
pub enum Action {
    /// Power this node off through this target and report the verdict back through
    /// [`Takeover::on_fence_result`].
    Fence(FenceTarget),
}

/// A line for the event log. `loud` ones go to stderr as errors too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// snake_case event kind (`pair_fencing`, `promotion_permitted`, ...).
    pub kind: &'static str,
    /// The node the notice is about.
    pub node: String,
    pub message: String,
    pub loud: bool,
}

/// What the control thread gets back from one input.
#[derive(Debug, Default)]
pub struct Outcome {
    pub actions: Vec<Action>,
    pub notices: Vec<Notice>,
}

/// The operator view of one pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairView {
    pub name: String,
    pub primary: String,
    pub backup: String,
    pub phase: Phase,
    pub primary_state: String,
    pub backup_state: String,
    /// Why the pair is in its phase (empty while serving).
    pub reason: String,
}

#[derive(Debug)]
struct Pair {
    spec: PairSpec,
    phase: Phase,
    primary: PeerState,
    backup: PeerState,
    reason: String,
}

/// The takeover decisions for every pair of the rack.
#[derive(Debug, Default)]
pub struct Takeover {
    pairs: Vec<Pair>,
}

fn lost(s: PeerState) -> bool {
    matches!(s, PeerState::Down | PeerState::AppDown | PeerState::HeldDown)
}

impl Takeover {
    pub fn new(specs: Vec<PairSpec>) -> Takeover {
        Takeover {
            pairs: specs
                .into_iter()
                .map(|spec| Pair {
                    spec,
                    phase: Phase::Serving,
                    primary: PeerState::Unknown,
                    backup: PeerState::Unknown,
                    reason: String::new(),
                })
                .collect(),
        }
    }

    /// A detector decision: `node` is now `state`.
    pub fn on_peer(&mut self, node: &str, state: PeerState) -> Outcome {
        let mut out = Outcome::default();
        for p in &mut self.pairs {
            if p.spec.primary == node {
                p.primary = state;
                p.primary_changed(&mut out);
            } else if p.spec.backup == node {
                p.backup = state;
                p.backup_changed(&mut out);
            }
        }
        out
    }

    /// The verdict of a power-off of `node` (automatic or manual): `permits` is
    /// [`crate::fence::FenceResult::permits_promotion`], `detail` the human verdict.
    pub fn on_fence_result(&mut self, node: &str, permits: bool, detail: &str) -> Outcome {
        let mut out = Outcome::default();
        for p in self.pairs.iter_mut().filter(|p| p.spec.primary == node) {
            p.fence_result(permits, detail, &mut out);
        }
        out
    }

    /// A fence that could not even be queued (the fencer is full or stopped).
    pub fn on_fence_not_submitted(&mut self, node: &str, why: &str) -> Outcome {
        self.on_fence_result(node, false, &format!("fence not started: {why}"))
    }

    pub fn views(&self) -> Vec<PairView> {
        self.pairs
            .iter()
            .map(|p| PairView {
                name: p.spec.name.clone(),
                primary: p.spec.primary.clone(),
                backup: p.spec.backup.clone(),
                phase: p.phase.clone(),
                primary_state: p.primary.as_str().to_string(),
                backup_state: p.backup.as_str().to_string(),
                reason: p.reason.clone(),
            })
            .collect()
    }
}

impl Pair {
    fn set(&mut self, phase: Phase, reason: String, kind: &'static str, loud: bool, out: &mut Outcome) {
        let message = format!("pair {}: {} -> {}: {reason}", self.spec.name, self.phase, phase);
        self.phase = phase;
        self.reason = reason;
        out.notices.push(Notice { kind, node: self.spec.primary.clone(), message, loud });
    }

    fn primary_changed(&mut self, out: &mut Outcome) {
        match (&self.phase, lost(self.primary)) {
            (Phase::Serving, true) => self.primary_lost(out),
            (Phase::Unprotected, false) => {
                self.set(Phase::Serving, format!("primary {} is {} again", self.spec.primary, self.primary), "pair_serving", false, out)
            }
            // Fencing runs to its verdict; promotable and refused are left only by a
            // fence verdict (or an operator), never by the primary talking again: a
            // node we tried to shoot is not trusted because it says it is fine.
            _ => {}
        }
    }

    fn backup_changed(&mut self, out: &mut Outcome) {
        if self.phase == Phase::Unprotected && self.backup == PeerState::Up {
            self.primary_lost(out);
        } else if self.backup != PeerState::Up && self.backup != PeerState::Unknown {
            out.notices.push(Notice {
                kind: "pair_backup_lost",
                node: self.spec.backup.clone(),
                message: format!("pair {}: backup {} is {}: no takeover possible while it is", self.spec.name, self.spec.backup, self.backup),
                loud: self.phase != Phase::Serving,
            });
        }
    }

    fn primary_lost(&mut self, out: &mut Outcome) {
        let what = format!("primary {} is {}", self.spec.primary, self.primary);
        if self.backup != PeerState::Up {
            let r = format!("{what} and backup {} is {}: not fencing the only node that may come back", self.spec.backup, self.backup);
            self.set(Phase::Unprotected, r, "pair_unprotected", true, out);
            return;
        }
        match &self.spec.fence {
            Some(t) => {
                out.actions.push(Action::Fence(t.clone()));
                let r = format!("{what}: powering it off through {}", t.device.name);
                self.set(Phase::Fencing, r, "pair_fencing", false, out);
            }
            None => {
                let r = format!("{what} and no power fence is configured: the backup is not promoted here");
                self.set(Phase::Refused, r, "promotion_refused", true, out);
            }
        }
    }

    fn fence_result(&mut self, permits: bool, detail: &str, out: &mut Outcome) {
        match (&self.phase, permits) {
            (Phase::Promotable, _) => {}
            (_, true) => {
                let r = format!("primary {} is off ({detail}): backup {} may be promoted", self.spec.primary, self.spec.backup);
                self.set(Phase::Promotable, r, "promotion_permitted", false, out);
            }
            (Phase::Fencing, false) => {
                let r = format!("fencing primary {} FAILED ({detail}): backup {} will NOT be promoted", self.spec.primary, self.spec.backup);
                self.set(Phase::Refused, r, "promotion_refused", true, out);
            }
            // A failed manual fence of a serving, unprotected or refused pair changes
            // nothing (the fence's own event says it failed).
            (_, false) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fence::FenceDevice;
    use PeerState::*;

    fn spec(fence: bool) -> PairSpec {
        PairSpec {
            name: "db".into(),
            primary: "p".into(),
            backup: "b".into(),
            fence: fence.then(|| FenceTarget { node: "p".into(), device: FenceDevice::new("sw", "/bin/true"), plug: Some("1".into()) }),
        }
    }

    fn phase(t: &Takeover) -> Phase {
        t.views()[0].phase.clone()
    }

    fn up(t: &mut Takeover) {
        t.on_peer("p", Up);
        t.on_peer("b", Up);
    }

    #[test]
    fn a_lost_primary_is_fenced_and_a_verified_fence_permits_promotion() {
        let mut t = Takeover::new(vec![spec(true)]);
        up(&mut t);
        let o = t.on_peer("p", Down);
        assert!(matches!(&o.actions[..], [Action::Fence(f)] if f.node == "p" && f.plug.as_deref() == Some("1")));
        assert_eq!(o.notices[0].kind, "pair_fencing");
        assert_eq!(phase(&t), Phase::Fencing);
        // Recovering while the fence runs changes nothing: the verdict decides.
        assert!(t.on_peer("p", Up).actions.is_empty());
        assert_eq!(phase(&t), Phase::Fencing);
        let o = t.on_fence_result("p", true, "verified off");
        assert_eq!(o.notices[0].kind, "promotion_permitted");
        assert_eq!(phase(&t), Phase::Promotable);
    }

    #[test]
    fn a_failed_fence_refuses_promotion_loudly_until_a_manual_fence_succeeds() {
        let mut t = Takeover::new(vec![spec(true)]);
        up(&mut t);
        t.on_peer("p", AppDown);
        let o = t.on_fence_result("p", false, "timeout");
        assert_eq!(phase(&t), Phase::Refused);
        assert!(o.notices[0].loud && o.notices[0].message.contains("NOT be promoted"), "{o:?}");
        // The primary talking again does not clear a refusal, nor does a failed retry.
        t.on_peer("p", Up);
        t.on_fence_result("p", false, "timeout");
        assert_eq!(phase(&t), Phase::Refused);
        t.on_fence_result("p", true, "verified off");
        assert_eq!(phase(&t), Phase::Promotable);
    }

    #[test]
    fn a_fence_that_cannot_be_queued_is_a_failed_fence() {
        let mut t = Takeover::new(vec![spec(true)]);
        up(&mut t);
        t.on_peer("p", Down);
        let o = t.on_fence_not_submitted("p", "the fencing queue is full");
        assert_eq!(phase(&t), Phase::Refused);
        assert!(o.notices[0].message.contains("queue is full"));
    }

    #[test]
    fn the_primary_is_not_fenced_while_the_backup_is_unusable() {
        let mut t = Takeover::new(vec![spec(true)]);
        t.on_peer("p", Up);
        let o = t.on_peer("p", Down);
        assert!(o.actions.is_empty());
        assert_eq!(phase(&t), Phase::Unprotected);
        assert!(o.notices[0].loud);
        // Primary back: serving again, nothing fenced.
        assert!(t.on_peer("p", Up).actions.is_empty());
        assert_eq!(phase(&t), Phase::Serving);
        // Lost again, then the backup comes up: now it is fenced.
        t.on_peer("p", Down);
        let o = t.on_peer("b", Up);
        assert_eq!(o.actions.len(), 1);
        assert_eq!(phase(&t), Phase::Fencing);
    }

    #[test]
    fn without_a_power_fence_the_pair_is_refused_not_promoted() {
        let mut t = Takeover::new(vec![spec(false)]);
        up(&mut t);
        let o = t.on_peer("p", Down);
        assert!(o.actions.is_empty());
        assert_eq!(phase(&t), Phase::Refused);
    }

    #[test]
    fn backup_events_never_fence_and_a_lost_backup_is_reported() {
        let mut t = Takeover::new(vec![spec(true)]);
        up(&mut t);
        let o = t.on_peer("b", Down);
        assert!(o.actions.is_empty());
        assert_eq!(o.notices[0].kind, "pair_backup_lost");
        assert_eq!(phase(&t), Phase::Serving);
        // Unrelated nodes and fence results for other nodes are ignored.
        let o = t.on_peer("x", Down);
        assert!(o.actions.is_empty() && o.notices.is_empty());
        let o = t.on_fence_result("b", true, "off");
        assert!(o.actions.is_empty() && o.notices.is_empty());
        assert_eq!(phase(&t), Phase::Serving);
    }

    #[test]
    fn a_manual_fence_of_a_serving_primary_permits_promotion() {
        let mut t = Takeover::new(vec![spec(true)]);
        up(&mut t);
        t.on_fence_result("p", true, "verified off");
        assert_eq!(phase(&t), Phase::Promotable);
    }
}
