//! The appliance's standard request handler: answers the read commands from the current
//! [`MetricsSnapshot`] (the same one the metrics server exposes; `status` and `ports` take
//! the ports' links live from the workers' cells), events from an event source, and
//! `fence` through a fencing callback.

use super::proto::*;
use crate::metrics::{self, MetricsSnapshot};
use dataplane::lcore_link::LinkStates;
use serde_json::Value;
use std::sync::Arc;

/// What the server calls for every well-formed request line.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;
/// Recent events, oldest first.
pub type EventsFn = Arc<dyn Fn() -> Vec<Event> + Send + Sync>;
/// Fences a node (the command was confirmed); the result object is sent back as is
/// (ideally a [`FenceResult`]). May take seconds: it runs on the connection's thread.
pub type FenceFn = Arc<dyn Fn(&str) -> Result<Value, ErrorBody> + Send + Sync>;
/// Lists spliced connections (asks the lcores; may take up to a second).
pub type SplicesFn = Arc<dyn Fn(&SplicesQuery) -> Result<SplicesResult, ErrorBody> + Send + Sync>;
/// Set once the splice role's workers run (the ctl server starts before them).
pub type SplicesSlot = Arc<std::sync::RwLock<Option<SplicesFn>>>;
/// The ports' links as the workers read them (indexed like the snapshot's ports), set once
/// the ports run; `status` and `ports` answer from it instead of the last snapshot's
/// copy, which is up to a publishing period (250 ms) older.
pub type LinksSlot = Arc<std::sync::RwLock<Option<LinkStates>>>;

/// Where the standard handler gets its answers.
#[derive(Clone)]
pub struct Sources {
    pub snapshot: metrics::Source,
    /// `None` = no event log yet (`events` answers an empty list).
    pub events: Option<EventsFn>,
    /// `None` = fencing not available (`fence` answers `not_implemented`).
    pub fence: Option<FenceFn>,
    /// Empty = no splice role (`splices` answers `not_implemented`).
    pub splices: SplicesSlot,
    /// Empty = the snapshot's links.
    pub links: LinksSlot,
}

/// The snapshot with each port's link as the workers see it now.
fn with_live_links(sources: &Sources) -> MetricsSnapshot {
    let mut s = (sources.snapshot)();
    if let Some(links) = sources.links.read().ok().and_then(|g| g.clone()) {
        for (i, p) in s.ports.iter_mut().enumerate() {
            p.link_up = links.is_up(i);
        }
    }
    s
}

/// The standard handler over `sources`.
pub fn standard(sources: Sources) -> Handler {
    Arc::new(move |req: Request| answer(&sources, &req))
}

/// Answers one request.
pub fn answer(sources: &Sources, req: &Request) -> Response {
    let cmd = match Command::parse(req) {
        Ok(c) => c,
        Err(e) => return Response::error(Some(req.id), e),
    };
    let id = req.id;
    match cmd {
        Command::Status => Response::ok_with(id, &status_result(&with_live_links(sources))),
        Command::Ports => Response::ok_with(id, &ports_result(&with_live_links(sources))),
        Command::Stats => Response::ok_with(id, &stats_result(&(sources.snapshot)())),
        Command::Histogram => Response::ok_with(id, &histogram_result(&(sources.snapshot)())),
        Command::Peers => Response::ok_with(id, &peers_result(&(sources.snapshot)())),
        Command::Servers => Response::ok_with(id, &ServersResult { pairs: (sources.snapshot)().pairs }),
        Command::Splices(q) => {
            let f = sources.splices.read().ok().and_then(|g| g.clone());
            match f {
                None => Response::error(Some(id), ErrorBody::new(ErrorCode::NotImplemented, "this node does not run the splice role")),
                Some(f) => match f(&q) {
                    Ok(r) => Response::ok_with(id, &r),
                    Err(e) => Response::error(Some(id), e),
                },
            }
        }
        Command::Members => {
            let s = (sources.snapshot)();
            Response::ok_with(id, &MembersResult { services: s.services, members: s.members })
        }
        Command::Events => {
            let events = sources.events.as_ref().map(|f| f()).unwrap_or_default();
            Response::ok_with(id, &EventsResult { events })
        }
        Command::Fence { node } => match &sources.fence {
            None => Response::err(
                Some(id),
                ErrorCode::NotImplemented,
                format!("fencing is not available on this appliance yet; {node} was not fenced"),
            ),
            Some(f) => match f(&node) {
                Ok(v) => Response::ok(id, v),
                Err(e) => Response::error(Some(id), e),
            },
        },
    }
}

pub fn status_result(s: &MetricsSnapshot) -> StatusResult {
    let mut t = Totals::default();
    for p in &s.ports {
        t.rx_packets += p.rx_packets;
        t.tx_packets += p.tx_packets;
        t.rx_bytes += p.rx_bytes;
        t.tx_bytes += p.tx_bytes;
        t.rx_missed += p.rx_missed;
        t.errors += p.rx_errors + p.tx_errors + p.rx_nombuf;
    }
    t.drops = s.lcores.iter().flat_map(|l| l.drops.values()).sum();
    StatusResult {
        node: s.node.clone(),
        role: s.role.clone(),
        version: if s.version.is_empty() { env!("CARGO_PKG_VERSION").to_string() } else { s.version.clone() },
        proto: PROTO_VERSION,
        uptime_s: s.uptime_s,
        ports: PortsSummary {
            total: s.ports.len(),
            up: s.ports.iter().filter(|p| p.link_up).count(),
            down: s.ports.iter().filter(|p| !p.link_up).map(|p| p.name.clone()).collect(),
        },
        lcores: s.lcores.len(),
        peers: s.peers.len(),
        totals: t,
        control_loop: s.control_loop,
        snapshot_age_ms: s.snapshot_age_ms,
    }
}

pub fn ports_result(s: &MetricsSnapshot) -> PortsResult {
    PortsResult {
        ports: s
            .ports
            .iter()
            .map(|p| PortInfo {
                name: p.name.clone(),
                device: p.device.clone(),
                mac: p.mac.clone(),
                link: LinkInfo { up: p.link_up, speed_mbps: p.speed_mbps },
                rx_packets: p.rx_packets,
                tx_packets: p.tx_packets,
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                rx_missed: p.rx_missed,
                rx_errors: p.rx_errors,
                tx_errors: p.tx_errors,
                rx_nombuf: p.rx_nombuf,
                rx_queue_packets: p.rx_queue_packets.clone(),
                bond: p.bond.clone(),
            })
            .collect(),
    }
}

pub fn stats_result(s: &MetricsSnapshot) -> StatsResult {
    let mut out = StatsResult::default();
    for l in &s.lcores {
        let drops: std::collections::BTreeMap<String, u64> =
            l.drops.iter().filter(|(_, n)| **n > 0).map(|(k, n)| (k.clone(), *n)).collect();
        for (k, n) in &drops {
            *out.drops.entry(k.clone()).or_default() += n;
        }
        out.lcores.push(LcoreInfo {
            lcore: l.lcore,
            rx_packets: l.rx_packets,
            tx_packets: l.tx_packets,
            rx_bytes: l.rx_bytes,
            tx_bytes: l.tx_bytes,
            local_replies: l.local_replies,
            polls: l.polls,
            empty_polls: l.empty_polls,
            idle_sleeps: l.idle_sleeps,
            punted: l.punted,
            control_tx: l.control_tx,
            emitted: l.emitted,
            tx_retries: l.tx_retries,
            handed_off: l.handed_off,
            handed_in: l.handed_in,
            drops,
        });
    }
    out.splice = s.splice.clone();
    out.splice_services = s.splice_services.clone();
    out
}

pub fn histogram_result(s: &MetricsSnapshot) -> HistogramResult {
    let b = &s.burst_latency;
    let mut buckets: Vec<Bucket> = b.buckets.iter().filter(|(_, n)| *n > 0).map(|&(le, count)| Bucket { le, count }).collect();
    let below: u64 = b.buckets.iter().map(|(_, n)| *n).sum();
    if !b.buckets.is_empty() && b.count > below {
        // Samples above the last fixed bound: their upper bound is the maximum.
        buckets.push(Bucket { le: b.max_ns, count: b.count - below });
    }
    HistogramResult {
        unit: "ns".into(),
        count: b.count,
        p50: b.p50_ns,
        p90: b.p90_ns,
        p99: b.p99_ns,
        p999: b.p999_ns,
        max: b.max_ns,
        buckets,
    }
}

pub fn peers_result(s: &MetricsSnapshot) -> PeersResult {
    PeersResult {
        peers: s.peers.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{LatencySnapshot, LcoreMetrics, PortMetrics};
    use serde_json::{json, Map};

    fn snap() -> MetricsSnapshot {
        let mut drops = std::collections::BTreeMap::new();
        drops.insert("no_route".to_string(), 3);
        drops.insert("tx_full".to_string(), 0);
        MetricsSnapshot {
            node: "fw1".into(),
            role: "forward".into(),
            uptime_s: 5.0,
            ports: vec![
                PortMetrics { name: "wan".into(), link_up: true, rx_packets: 5, rx_errors: 1, rx_nombuf: 1, ..Default::default() },
                PortMetrics { name: "lan".into(), link_up: false, tx_packets: 4, ..Default::default() },
            ],
            lcores: vec![LcoreMetrics { lcore: 1, drops, ..Default::default() }],
            burst_latency: LatencySnapshot {
                count: 5,
                max_ns: 5_000_000_000,
                buckets: vec![(64, 1), (128, 0), (256, 2)],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn sources() -> Sources {
        Sources { snapshot: Arc::new(snap), events: None, fence: None, splices: Default::default(), links: Default::default() }
    }

    #[test]
    fn status_sums_ports_and_drops() {
        let s = status_result(&snap());
        assert_eq!((s.ports.total, s.ports.up, s.ports.down.clone()), (2, 1, vec!["lan".to_string()]));
        assert_eq!((s.totals.rx_packets, s.totals.tx_packets, s.totals.errors, s.totals.drops), (5, 4, 2, 3));
        assert_eq!(s.proto, 1);
        assert_eq!(s.version, env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn status_and_ports_show_the_links_the_workers_read() {
        let src = sources();
        let links = LinkStates::new(2);
        links.set(0, false);
        let ports = |src: &Sources| -> Vec<bool> {
            let r = answer(src, &Request::new(1, "ports", Map::new())).result.unwrap();
            r["ports"].as_array().unwrap().iter().map(|p| p["link"]["up"].as_bool().unwrap()).collect()
        };
        assert_eq!(ports(&src), [true, false], "the snapshot's links until the ports run");
        *src.links.write().unwrap() = Some(links.clone());
        assert_eq!(ports(&src), [false, true], "the workers' cells");
        links.set(0, true);
        assert_eq!(ports(&src), [true, true], "read at every request");
        let st = answer(&src, &Request::new(2, "status", Map::new())).result.unwrap();
        assert_eq!(st["ports"]["up"], 2);
    }

    #[test]
    fn stats_keep_only_nonzero_drops_and_histogram_only_nonempty_buckets() {
        let st = stats_result(&snap());
        assert_eq!(st.lcores[0].drops.len(), 1);
        assert_eq!(st.drops["no_route"], 3);
        let h = histogram_result(&snap());
        assert_eq!(h.buckets, vec![Bucket { le: 64, count: 1 }, Bucket { le: 256, count: 2 }, Bucket { le: 5_000_000_000, count: 2 }]);
        assert_eq!(h.unit, "ns");
    }

    #[test]
    fn answers_every_command() {
        let src = sources();
        for cmd in ["status", "ports", "stats", "histogram", "events", "peers", "servers", "members"] {
            let r = answer(&src, &Request::new(4, cmd, Map::new()));
            assert!(r.ok, "{cmd}: {r:?}");
            assert_eq!(r.id, Some(4));
        }
        let r = answer(&src, &Request::new(5, "events", Map::new()));
        assert_eq!(r.result.unwrap(), json!({"events": []}));
        let r = answer(&src, &Request::new(5, "peers", Map::new()));
        assert_eq!(r.result.unwrap(), json!({"peers": []}));
        // splices: not on a node without the splice role; answered by the role's source
        // otherwise, with the query's arguments round-tripped and checked.
        let q = SplicesQuery { client: Some("10.0.0.1:4000".into()), state: Some("established".into()), limit: Some(5), ..Default::default() };
        let req = Command::Splices(q.clone()).to_request(7);
        assert!(answer(&src, &req).error.unwrap().is(ErrorCode::NotImplemented));
        let with_splices = sources();
        *with_splices.splices.write().unwrap() = Some(Arc::new(move |got: &SplicesQuery| {
            assert_eq!(got, &q);
            Ok(SplicesResult { matched: 3, ..Default::default() })
        }));
        assert_eq!(answer(&with_splices, &req).result.unwrap()["matched"], 3);
        let mut bad = req.clone();
        bad.args.insert("nope".into(), json!(1));
        assert!(answer(&with_splices, &bad).error.unwrap().is(ErrorCode::BadRequest));
        let fence = Command::Fence { node: "srv1".into() }.to_request(6);
        let r = answer(&src, &fence);
        assert!(r.error.unwrap().is(ErrorCode::NotImplemented));
        let mut with_fence = sources();
        with_fence.fence = Some(Arc::new(|n: &str| Ok(json!({"node": n, "outcome": "off"}))));
        assert_eq!(answer(&with_fence, &fence).result.unwrap()["outcome"], "off");
        let r = answer(&src, &Request::new(7, "conntrack", Map::new()));
        assert!(r.error.unwrap().is(ErrorCode::UnknownCommand));
    }
}
