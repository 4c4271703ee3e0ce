//! Heartbeats between the nodes of a rack (docs/heartbeat.md).
//!
//! Split the sans-IO way, so every rule is tested without a socket:
//!
//! - [`wire`]: the versioned binary message with its HMAC-SHA256 trailer (pure).
//! - [`replay`]: per-node (incarnation, sequence) anti-replay window (pure).
//! - [`ingress`]: decode + authenticate + replay check for one path, and the counters (pure).
//! - [`ratelimit`]: rate limit for log lines about rejected messages (pure).
//! - [`keyfile`]: loading and checking the rack key file.
//! - [`udp`]: the thin sender and receiver threads on the management network.
//!
//! Liveness decisions are not made here: accepted heartbeats go to [`crate::detector`].

pub mod inband;
pub mod ingress;
pub mod keyfile;
pub mod ratelimit;
pub mod replay;
pub mod udp;
pub mod wire;

pub use ingress::{HbCounters, HbStats, Ingress, Reject, Rejected};
pub use keyfile::{load_rack_key, KeyFileError, RackKey};
pub use replay::{Fresh, ReplayDrop, ReplayGuard};
pub use udp::{HbEvent, HbSender, LocalStatus, Receiver, ReceiverConfig, SenderConfig, StatusCell};
pub use wire::{
    decode, encode, HbDrop, HbRole, Heartbeat, MacKey, NodeId, StatusFlags, Tlv, Workload,
};

use crate::config::{PeerClass, PeerConfig};
use std::net::SocketAddr;

/// The node ids of `[[peer]]`s, for [`ReceiverConfig::peers`]. Err: one line naming the
/// first id that cannot travel in a heartbeat (longer than 32 bytes).
pub fn peer_node_ids(peers: &[PeerConfig]) -> Result<Vec<NodeId>, String> {
    peers
        .iter()
        .map(|p| {
            NodeId::new(&p.id).ok_or_else(|| {
                format!(
                    "peer id \"{}\" cannot be sent in heartbeats (at most {} characters: letters, digits, '_', '-', '.')",
                    p.id,
                    wire::MAX_NODE_ID
                )
            })
        })
        .collect()
}

/// The management addresses heartbeats are sent to (peers without `mgmt` are in-band only).
pub fn mgmt_targets(peers: &[PeerConfig]) -> Vec<SocketAddr> {
    peers.iter().filter_map(|p| p.mgmt).collect()
}

/// Whether a heartbeat role is what a peer of `class` should send. The detector does not
/// refuse mismatches (the rack key is shared, so the role proves nothing); callers may
/// warn about a miswired rack.
pub fn role_fits_class(role: HbRole, class: PeerClass) -> bool {
    matches!(
        (class, role),
        (PeerClass::Appliance, HbRole::Appliance)
            | (PeerClass::Proxy, HbRole::Proxy)
            | (PeerClass::Proxy, HbRole::Appliance)
            | (PeerClass::Server, HbRole::Server)
            | (PeerClass::Server, HbRole::Agent)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_from_config() {
        let peers = vec![
            PeerConfig {
                id: "a1".into(),
                mgmt: Some("10.0.0.1:7400".parse().unwrap()),
                ..Default::default()
            },
            PeerConfig {
                id: "s1".into(),
                class: PeerClass::Server,
                ..Default::default()
            },
        ];
        let ids = peer_node_ids(&peers).unwrap();
        assert_eq!(
            ids.iter().map(|i| i.as_str()).collect::<Vec<_>>(),
            ["a1", "s1"]
        );
        assert_eq!(
            mgmt_targets(&peers),
            vec!["10.0.0.1:7400".parse::<SocketAddr>().unwrap()]
        );
        let long = vec![PeerConfig {
            id: "x".repeat(33),
            ..Default::default()
        }];
        let e = peer_node_ids(&long).unwrap_err();
        assert!(e.contains(&"x".repeat(33)) && e.contains("32"), "{e}");
        assert!(role_fits_class(HbRole::Agent, PeerClass::Server));
        assert!(!role_fits_class(HbRole::Agent, PeerClass::Appliance));
    }
}
