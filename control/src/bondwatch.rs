//! Active-backup bonds whose members' drivers raise no link-state interrupt: DPDK 22.11's
//! bonding PMD then never learns that its primary member's link went down (net_tap is
//! such a driver) and keeps sending into it. The control thread watches the members'
//! links and moves the primary itself: to the configured `primary` while its link is up,
//! else to a member whose link is up. Where the PMD does see link changes this agrees with
//! what it does on its own, so the watch never fights it.
//!
//! balance-xor and 802.3ad are not covered: the PMD would have to drop the member from its
//! active list (see docs/balance.md, "Bonded uplinks").

use crate::config::BondMode;
use crate::events::EventLog;
use crate::plan::RunPlan;
use dataplane::port::ethdev::Port;

/// A member's DPDK port id and link state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLink {
    pub port_id: u16,
    pub link_up: bool,
}

/// The primary an active-backup bond should have, when it differs from `current`: the
/// configured one (`preferred`) while its link is up; else `current` while its link is up;
/// else the first member whose link is up. `None`: keep `current` (also when no link is
/// up: nothing better to move to).
pub fn wanted_primary(preferred: Option<u16>, current: u16, members: &[MemberLink]) -> Option<u16> {
    let up = |id: u16| members.iter().any(|m| m.port_id == id && m.link_up);
    let want = match preferred.filter(|&p| up(p)) {
        Some(p) => p,
        None if up(current) => current,
        None => members.iter().find(|m| m.link_up)?.port_id,
    };
    (want != current).then_some(want)
}

struct Watched {
    /// Index in the run's port list.
    port: usize,
    name: String,
    /// The configured primary's member name.
    preferred: Option<String>,
    failovers: u64,
}

/// The active-backup bonds of a run and how often their primary was moved.
pub struct BondWatch {
    bonds: Vec<Watched>,
}

impl BondWatch {
    pub fn new(plan: &RunPlan) -> BondWatch {
        let bonds = plan
            .ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                let b = p.bond.as_ref().filter(|b| b.mode == BondMode::ActiveBackup)?;
                let preferred = b.primary.clone().or_else(|| b.members.first().map(|m| m.name.clone()));
                Some(Watched { port: i, name: p.name.clone(), preferred, failovers: 0 })
            })
            .collect();
        BondWatch { bonds }
    }

    /// Checks every watched bond once (cheap: a few driver calls per bond).
    pub fn tick(&mut self, plan: &RunPlan, ports: &[Port], log: &EventLog) {
        for w in &mut self.bonds {
            let (Some(port), Some(pp)) = (ports.get(w.port), plan.ports.get(w.port)) else { continue };
            let (Some(members), Some(current)) = (port.bond_members(), port.bond_primary()) else { continue };
            let Some(bond) = pp.bond.as_ref() else { continue };
            let id_of = |name: &str| {
                let device = bond.members.iter().find(|m| m.name == name).map(|m| m.device.as_str())?;
                members.iter().find(|m| m.device == device).map(|m| m.port_id)
            };
            let links: Vec<MemberLink> = members.iter().map(|m| MemberLink { port_id: m.port_id, link_up: m.link_up }).collect();
            let Some(want) = wanted_primary(w.preferred.as_deref().and_then(id_of), current, &links) else { continue };
            let name_of = |id: u16| {
                let device = members.iter().find(|m| m.port_id == id).map_or("?", |m| m.device.as_str());
                bond.member_name(device).unwrap_or(device).to_string()
            };
            match port.set_bond_primary(want) {
                Ok(()) => {
                    w.failovers += 1;
                    log.push(
                        "bond_primary",
                        None,
                        format!("bond {}: primary member {} -> {} (link of {} {})", w.name, name_of(current), name_of(want), name_of(current), if links.iter().any(|m| m.port_id == current && m.link_up) { "up, preferred member back" } else { "down" }),
                        false,
                    );
                }
                Err(e) => log.push("bond_primary_failed", None, format!("bond {}: {e}", w.name), true),
            }
        }
    }

    /// How often the primary of the bond at port index `port` was moved.
    pub fn failovers(&self, port: usize) -> u64 {
        self.bonds.iter().find(|w| w.port == port).map_or(0, |w| w.failovers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(l: &[(u16, bool)]) -> Vec<MemberLink> {
        l.iter().map(|&(port_id, link_up)| MemberLink { port_id, link_up }).collect()
    }

    #[test]
    fn the_primary_follows_the_links() {
        // All up, on the preferred member: keep.
        assert_eq!(wanted_primary(Some(0), 0, &links(&[(0, true), (1, true)])), None);
        // Preferred member's link down: to the other one.
        assert_eq!(wanted_primary(Some(0), 0, &links(&[(0, false), (1, true)])), Some(1));
        // Back up: back to the preferred member.
        assert_eq!(wanted_primary(Some(0), 1, &links(&[(0, true), (1, true)])), Some(0));
        // No preference: stay while up, move when down.
        assert_eq!(wanted_primary(None, 1, &links(&[(0, true), (1, true)])), None);
        assert_eq!(wanted_primary(None, 1, &links(&[(0, true), (1, false)])), Some(0));
        // Nothing up: keep (no better choice); preferred unknown: ignored.
        assert_eq!(wanted_primary(Some(0), 1, &links(&[(0, false), (1, false)])), None);
        assert_eq!(wanted_primary(Some(9), 0, &links(&[(0, true), (1, true)])), None);
        // Three members, the current and the preferred down: the first one up.
        assert_eq!(wanted_primary(Some(0), 1, &links(&[(0, false), (1, false), (2, true)])), Some(2));
    }
}
