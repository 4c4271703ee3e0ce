//! Bonds whose members' drivers raise no link-state interrupt: DPDK 22.11's bonding PMD
//! then never learns that a member's link went down (net_tap is such a driver) and keeps
//! sending into it. The control thread watches the members' links:
//!
//! * active-backup: it moves the primary itself, to the configured `primary` while its
//!   link is up, else to a member whose link is up;
//! * balance-xor: a member whose link disagrees with the PMD's active list (down but
//!   active, or up but inactive) gets the link-change callbacks run for it, as its driver
//!   would on an interrupt (`Port::signal_link_change`): the PMD re-reads the link and
//!   takes the member out of (or back into) the list its flows are hashed over.
//!
//! Where the PMD does see link changes this agrees with what it does on its own, so the
//! watch never fights it. 802.3ad needs neither: LACP takes a silent member out.

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

/// balance-xor: the members whose link the PMD's active list disagrees with.
pub fn stale_members(members: &[(u16, bool, bool)]) -> Vec<u16> {
    members.iter().filter(|&&(_, link_up, active)| link_up != active).map(|&(id, _, _)| id).collect()
}

struct Watched {
    /// Index in the run's port list.
    port: usize,
    name: String,
    mode: BondMode,
    /// The configured primary's member name (active-backup).
    preferred: Option<String>,
    /// active-backup: primary moves; balance-xor: member link changes signalled.
    failovers: u64,
    /// balance-xor: the link state last signalled per member port id (signalled once per
    /// change, so a PMD that ignores the event is not signalled every tick).
    signalled: Vec<(u16, bool)>,
}

/// The active-backup and balance-xor bonds of a run and how often the watch acted.
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
                let b = p.bond.as_ref().filter(|b| matches!(b.mode, BondMode::ActiveBackup | BondMode::BalanceXor))?;
                let preferred = b.primary.clone().or_else(|| b.members.first().map(|m| m.name.clone()));
                Some(Watched { port: i, name: p.name.clone(), mode: b.mode, preferred, failovers: 0, signalled: Vec::new() })
            })
            .collect();
        BondWatch { bonds }
    }

    /// Checks every watched bond once (cheap: a few driver calls per bond).
    pub fn tick(&mut self, plan: &RunPlan, ports: &[Port], log: &EventLog) {
        for w in &mut self.bonds {
            let (Some(port), Some(pp)) = (ports.get(w.port), plan.ports.get(w.port)) else { continue };
            let Some(bond) = pp.bond.as_ref() else { continue };
            if w.mode == BondMode::BalanceXor {
                let Some(members) = port.bond_members() else { continue };
                let states: Vec<(u16, bool, bool)> = members.iter().map(|m| (m.port_id, m.link_up, m.active)).collect();
                for id in stale_members(&states) {
                    let Some(m) = members.iter().find(|m| m.port_id == id) else { continue };
                    if w.signalled.contains(&(id, m.link_up)) {
                        continue;
                    }
                    w.signalled.retain(|&(p, _)| p != id);
                    w.signalled.push((id, m.link_up));
                    let name = bond.member_name(&m.device).unwrap_or(&m.device).to_string();
                    match port.signal_link_change(id) {
                        Ok(()) => {
                            w.failovers += 1;
                            let what = if m.link_up { "up: back in the bond" } else { "down: out of the bond" };
                            log.push("bond_member", None, format!("bond {}: member {name} link {what}", w.name), false);
                        }
                        Err(e) => log.push("bond_member_failed", None, format!("bond {}: {e}", w.name), true),
                    }
                }
                continue;
            }
            let (Some(members), Some(current)) = (port.bond_members(), port.bond_primary()) else { continue };
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

    /// How often the watch acted on the bond at port index `port` (active-backup: primary
    /// moves; balance-xor: member link changes signalled).
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
    fn balance_xor_members_are_signalled_when_link_and_activity_disagree() {
        // (port id, link up, active)
        assert!(stale_members(&[(0, true, true), (1, false, false)]).is_empty());
        assert_eq!(stale_members(&[(0, false, true), (1, true, true)]), vec![0], "down but still used");
        assert_eq!(stale_members(&[(0, true, false), (1, true, true)]), vec![0], "back up, not used yet");
        assert_eq!(stale_members(&[(0, false, true), (1, true, false)]), vec![0, 1]);
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
