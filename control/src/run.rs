//! `tapsplice run`: boot DPDK from the rack configuration, start the worker lcores with
//! their role, wait for SIGINT/SIGTERM, stop cleanly and report.

use crate::bondwatch::BondWatch;
use crate::config::MacAddr;
use crate::plan::RunPlan;
use crate::ctl::handler::EventsFn;
use crate::ctl::ControlServices;
use crate::events::EventLog;
use crate::loop_watch::{LoopStats, LoopWatch};
use crate::metrics::MetricsSnapshot;
use crate::supervisor::Supervisor;
use crate::preflight;
use crate::ctl::proto::{lacp_flags, BondInfo, BondMemberInfo};
use crate::report::{LcoreReport, PortReport, Quantiles, Report};
use dataplane::port::eal::Eal;
use dataplane::port::ethdev::{Port, PortRss, PortSpec};
use dataplane::splice::rss::{RssSteer, Toeplitz};
use dataplane::port::lcore::{self, new_slot, LoopConfig, RxSource, Slot, Worker};
use dataplane::port::mempool::Mempool;
use dataplane::role::forward::Forward;
use dataplane::role::local::LocalAddrs;
use crate::neighbours::PortAddrs;
use crate::balancer::{table_sink, Balancer};
use dataplane::lcore_link::{links, ControlEnd, LinkStates, ToLcore};
use crate::links::{LinkWatch, WatchedPort};
use dataplane::role::balance::{Balance, VipSpec};
use dataplane::role::splice::{Clock, Splice, SpliceSettings, SpliceUpdate};
use dataplane::port::eal::rdtsc;
use dataplane::balance::member_key;
use crate::heartbeat::keyfile::load_rack_key;
use crate::splicer::{SplicePlan, Splicer};
use dataplane::role::{PortIndex, Role};
use dataplane::stats::{new_cycle_histogram, LcoreCounters};
use hdrhistogram::Histogram;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Options of the `run` command that are not in the rack file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub report_json: Option<PathBuf>,
    /// Print a progress line (rates, drops) this often; `None` = only the final report.
    pub stats_interval: Option<Duration>,
    /// Benchmarks: synthetic established splices for the first worker.
    pub bench_splices: Option<usize>,
}

/// The appliance's statistics now: ports (read from the drivers), lcores and the merged
/// per-burst histogram (from what the workers last published).
/// The report of the run so far; `control_loop` is the control loop's punctuality.
#[allow(clippy::too_many_arguments)]
fn build_report(
    plan: &RunPlan,
    ports: &[Port],
    links: &LinkStates,
    bonds: &BondWatch,
    slots: &[Slot],
    started: Instant,
    tsc_hz: u64,
    control_loop: LoopStats,
) -> (Report, Histogram<u64>) {
    let (_, lcores, hist) = collect(slots);
    let port_reports: Vec<PortReport> = ports
        .iter()
        .zip(&plan.ports)
        .enumerate()
        .map(|(i, (p, pp))| {
            let s = p.stats();
            // The link as the watch read it (a TAP in another namespace: its interface's).
            let (_, link_speed_mbps) = p.link();
            let link_up = links.is_up(i);
            PortReport {
                name: p.name.clone(),
                device: p.device.clone(),
                mac: MacAddr(p.mac).to_string(),
                link_up,
                link_speed_mbps,
                rx_packets: s.rx_packets,
                tx_packets: s.tx_packets,
                rx_bytes: s.rx_bytes,
                tx_bytes: s.tx_bytes,
                rx_missed: s.rx_missed,
                rx_errors: s.rx_errors,
                tx_errors: s.tx_errors,
                rx_nombuf: s.rx_nombuf,
                rx_queue_packets: s.rx_queue_packets,
                bond: pp.bond.as_ref().map(|b| bond_info(b, p, bonds.failovers(i))),
            }
        })
        .collect();
    let burst_cycles = Quantiles::of(&hist);
    let report = Report {
        node: plan.node_id.clone(),
        role: plan.role.clone(),
        uptime_s: started.elapsed().as_secs_f64(),
        tsc_hz,
        ports: port_reports,
        lcores,
        burst_ns: burst_cycles.cycles_to_ns(tsc_hz),
        burst_cycles,
        splice: Default::default(),
        splice_services: Default::default(),
        splice_setup_us: None,
        control_loop,
    };
    (report, hist)
}

/// A bond's members as the bonding PMD sees them, named as in the rack file;
/// `primary_moves` from the bond watch.
fn bond_info(plan: &crate::plan::PlanBond, port: &Port, primary_moves: u64) -> BondInfo {
    let found = port.bond_members().unwrap_or_default();
    let name = |device: &str| plan.member_name(device).unwrap_or(device).to_string();
    let primary = port
        .bond_primary()
        .and_then(|id| found.iter().find(|m| m.port_id == id))
        .map(|m| name(&m.device))
        .filter(|_| plan.mode == crate::config::BondMode::ActiveBackup);
    let members = found
        .iter()
        .map(|m| BondMemberInfo {
            name: name(&m.device),
            device: m.device.clone(),
            link_up: m.link_up,
            active: m.active,
            rx_packets: m.rx_packets,
            tx_packets: m.tx_packets,
            actor: m.lacp.map(|l| lacp_flags(l.actor_state)).unwrap_or_default(),
            partner: m.lacp.map(|l| lacp_flags(l.partner_state)).unwrap_or_default(),
            partner_system: m.lacp.filter(|l| l.partner_system != [0; 6]).map(|l| MacAddr(l.partner_system).to_string()),
        })
        .collect();
    BondInfo { mode: plan.mode.as_str().to_string(), members, primary, primary_moves }
}

/// Merges what the workers published: totals, per-lcore reports, and the histogram.
fn collect(slots: &[Slot]) -> (LcoreCounters, Vec<LcoreReport>, Histogram<u64>) {
    let mut hist = new_cycle_histogram();
    let mut total = LcoreCounters::default();
    let mut lcores = Vec::new();
    for slot in slots {
        let s = slot.lock().unwrap_or_else(|p| p.into_inner());
        let _ = hist.add(&s.burst_cycles);
        total.merge(&s.counters);
        lcores.push(LcoreReport::from_counters(s.lcore, &s.counters));
    }
    (total, lcores, hist)
}

/// One progress line: packet and bit rates since the previous line, drops so far.
fn rate_line(prev: &LcoreCounters, now: &LcoreCounters, dt: Duration) -> String {
    let secs = dt.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    format!(
        "rx {:.0} pps {:.1} Mbit/s, tx {:.0} pps {:.1} Mbit/s, drops {}",
        rate(prev.rx_packets, now.rx_packets),
        rate(prev.rx_bytes, now.rx_bytes) * 8e-6,
        rate(prev.tx_packets, now.tx_packets),
        rate(prev.tx_bytes, now.tx_bytes) * 8e-6,
        now.drops.total()
    )
}

/// RX and TX queue counts for a port: every worker needs its own TX queue, and net_tap
/// and the socket ports insist on as many RX as TX queues (the kernel spreads flows over
/// all of them, so every RX queue configured is also polled); `paired` (see
/// `PlanPort::paired_queues`) also for a bond over such members.
pub fn queue_counts(paired: bool, rx_queues: u16, workers: u16) -> (u16, u16) {
    let tx = workers.max(rx_queues).max(1);
    if paired {
        (tx, tx)
    } else {
        (rx_queues.max(1), tx)
    }
}

/// Distributes every (port, RX queue) over the workers; a port is (its RX queues, whether
/// its queues are paired: a TAP or socket port). Such a port gives queue `q` to worker
/// `q % workers`: RX queue `w` and TX queue `w` are one kernel queue (or socket), and the kernel steers a flow's frames to the queue
/// that last sent for it, so the worker that sends a flow's frames from its TX queue `w`
/// must be the one that polls RX queue `w`. Other ports' queues are dealt round-robin
/// across ports, so that the workers get equal shares of queues.
pub fn assign_rx_queues(ports: &[(u16, bool)], workers: usize) -> Vec<Vec<(PortIndex, u16)>> {
    let n = workers.max(1);
    let mut out = vec![Vec::new(); n];
    let mut next = 0;
    for (pidx, &(nq, tap)) in ports.iter().enumerate() {
        for q in 0..nq {
            let w = if tap {
                usize::from(q) % n
            } else {
                next = (next + 1) % n;
                (next + n - 1) % n
            };
            out[w].push((pidx as PortIndex, q));
        }
    }
    out
}

pub fn run(plan: &RunPlan, opts: &RunOptions) -> Result<(), String> {
    let needs: Vec<preflight::PortNeed<'_>> = plan.ports.iter().flat_map(|p| p.devices()).collect();
    preflight::check(&plan.file_prefix, plan.hugepages, plan.memory_mb, &needs)?;
    if plan.pairs.is_empty() {
        eprintln!("tapsplice: warning: [forward] pairs is empty: every frame that is not for the appliance itself is dropped (no_route)");
    }

    let stop = Arc::new(AtomicBool::new(false));
    // First, before any thread exists: every thread but one inherits net_tap's RX
    // signals blocked (`tap_signals`).
    let tap_signals = crate::tap_signals::route_to_own_thread()?;
    {
        let stop = stop.clone();
        // The first signal stops cleanly; a second one exits at once, in case a driver
        // hangs while stopping.
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("tapsplice: second signal, exiting without clean-up");
                std::process::exit(130);
            }
        })
        .map_err(|e| format!("cannot install the SIGINT/SIGTERM handler: {e}"))?;
    }

    // The ctl socket and metrics come up before EAL: a second appliance for the same node
    // fails here with one line (dropping `services` on any error path stops them).
    // Heartbeats and the failure detector (when the rack has peers) likewise.
    let log = EventLog::new();
    let mut supervisor = Supervisor::start(plan, stop.clone(), log.clone())?;
    let events: EventsFn = Arc::new(move || log.snapshot());
    // `tapsplice ctl fence NODE --yes-really` goes through the supervisor's fencer.
    let services = ControlServices::start(
        &plan.ctl_socket,
        plan.metrics,
        MetricsSnapshot::starting(&plan.node_id, &plan.role),
        Some(events),
        supervisor.manual_fence(),
    )?;

    let eal = Eal::init(&plan.eal_args).map_err(|e| e.to_string())?;
    let mut ports: Vec<Port> = Vec::with_capacity(plan.ports.len());
    let result = serve(plan, opts, &eal, &stop, &mut ports, &services, &mut supervisor);
    services.stop();
    stop.store(true, Ordering::SeqCst);
    supervisor.shutdown();
    // Whatever happened, ports are stopped and EAL's runtime files removed before exit.
    for p in &ports {
        p.shutdown();
    }
    eal.cleanup();
    // The ports are closed: no TAP queue signals any more.
    drop(tap_signals);
    let report = result?;
    if let Some(path) = &opts.report_json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("cannot write the report to {}: {e}", path.display()))?;
    }
    Ok(())
}

/// What every worker lcore is started with; [`WorkerSetup::start`] is generic over the role.
struct WorkerSetup<'a> {
    plan: &'a RunPlan,
    eal: &'a Eal,
    stop: &'a Arc<AtomicBool>,
    ports: &'a [Port],
    pool: Mempool,
    /// The ports that carry in-band heartbeats.
    inband: &'a [PortAddrs],
    /// Announced by gratuitous ARP when a port's link is seen up (`garp::Announcer`).
    announce: crate::garp::AnnounceSetup,
    /// The ports' links as the punt thread last read them.
    links: LinkStates,
}

impl WorkerSetup<'_> {
    /// Each worker's RX queues: (port index, queue).
    fn rx_assignment(&self) -> Vec<Vec<(PortIndex, u16)>> {
        let ports: Vec<(u16, bool)> = self.ports.iter().zip(&self.plan.ports).map(|(p, pp)| (p.rx_queues, pp.paired_queues())).collect();
        assign_rx_queues(&ports, self.plan.workers.len())
    }

    /// Per worker, per port: the port's RSS as that worker sees it (`None` where it cannot
    /// be read: the worker's backend replies are then handed over when they land elsewhere).
    fn rss_steering(&self) -> Vec<Vec<Option<RssSteer>>> {
        let assignment = self.rx_assignment();
        // The Toeplitz tables once per port (12 KB each), cloned for each worker.
        let rss: Vec<Option<(Toeplitz, PortRss)>> = self.ports.iter().map(|p| p.rss().and_then(|r| Some((Toeplitz::new(&r.key)?, r)))).collect();
        if assignment.len() > 1 {
            for (p, r) in self.ports.iter().zip(&rss) {
                match r {
                    Some((_, r)) => eprintln!("tapsplice: port {}: RSS key of {} bytes, RETA of {}: FullNAT ports toward backends on it are chosen so that replies return to their worker", p.name, r.key.len(), r.reta.len()),
                    None if p.rx_queues > 1 => eprintln!("tapsplice: port {}: RSS key or RETA not readable: a backend reply that lands on another worker's queue is handed to its owner", p.name),
                    None => {}
                }
            }
        }
        assignment
            .iter()
            .map(|mine| {
                rss.iter()
                    .enumerate()
                    .map(|(p, r)| {
                        let queues: Vec<u16> = mine.iter().filter(|(port, _)| usize::from(*port) == p).map(|&(_, q)| q).collect();
                        r.as_ref().and_then(|(hash, r)| RssSteer::with_hash(hash.clone(), r.reta.clone(), &queues))
                    })
                    .collect()
            })
            .collect()
    }

    /// Creates the control-thread links, starts the punt thread and launches one worker
    /// per worker lcore with the role `make_role` builds for it; returns the workers'
    /// publication slots and the control end of the links.
    fn start<R: Role + 'static>(
        &self,
        supervisor: &mut Supervisor,
        mut make_role: impl FnMut(usize) -> Result<R, String>,
    ) -> Result<(Vec<Slot>, ControlEnd<R::Update>), String> {
        let (plan, ports) = (self.plan, self.ports);
        let (control_end, lcore_ends) = links::<R::Update>(plan.workers.len());
        let mut lcore_ends = lcore_ends.into_iter();
        // In-band heartbeats and ARP requests go out through worker 0 (every worker has a
        // TX queue on every port).
        let to_worker0 = control_end.commands.first().cloned().ok_or("internal: no worker lcore")?;
        supervisor.start_punts(self.inband.to_vec(), self.announce.clone(), control_end.punts.clone(), || {
            let to = to_worker0.clone();
            Box::new(move |f| to.try_send(ToLcore::Transmit(f)).is_ok())
        })?;
        let dpdk_ports: Vec<u16> = ports.iter().map(|p| p.id).collect();
        // 802.3ad bonds send LACPDUs only from inside tx_burst: every worker calls it on
        // them now and then even when it has nothing to send.
        let lacp_ports: Vec<u16> = ports
            .iter()
            .zip(&plan.ports)
            .filter(|(_, pp)| pp.bond.as_ref().is_some_and(|b| b.mode == crate::config::BondMode::Lacp))
            .map(|(p, _)| p.id)
            .collect();
        let assignment = self.rx_assignment();
        let mut slots: Vec<Slot> = Vec::new();
        for (w, &lcore_id) in plan.workers.iter().enumerate() {
            let slot = new_slot(lcore_id);
            slots.push(slot.clone());
            let launched = make_role(w).and_then(|role| {
                let worker = Worker {
                    lcore: lcore_id,
                    role,
                    rx: assignment[w]
                        .iter()
                        .map(|&(port, queue)| RxSource { port, dpdk_port: dpdk_ports[port as usize], queue })
                        .collect(),
                    dpdk_ports: dpdk_ports.clone(),
                    lacp_ports: lacp_ports.clone(),
                    tx_queue: w as u16,
                    cfg: LoopConfig {
                        burst: plan.burst,
                        idle_backoff: plan.idle_backoff,
                        idle_polls: plan.idle_polls,
                        idle_max_sleep_us: plan.idle_max_sleep_us,
                    },
                    stop: self.stop.clone(),
                    slot,
                    tsc_hz: self.eal.tsc_hz,
                    link: lcore_ends.next().ok_or("internal: fewer lcore links than workers")?,
                    pool: self.pool,
                    links: self.links.clone(),
                };
                worker.launch().map_err(|e| e.to_string())
            });
            if let Err(e) = launched {
                self.stop.store(true, Ordering::SeqCst);
                lcore::wait_all();
                return Err(e);
            }
        }
        Ok((slots, control_end))
    }
}

/// The synthetic connections' layout for `--bench-splices`: the first service's VIP and
/// first port, its default pool's first backend, our address on that backend's port.
fn synthetic_layout(sp: &SplicePlan, local: &[LocalAddrs], client_ports: &[PortIndex], nat_first: u16) -> Result<dataplane::splice::synthetic::Layout, String> {
    use dataplane::splice::synthetic::{Layout, BACKEND_MAC, CLIENT_MAC};
    use dataplane::splice::translate::Endpoint;
    let spec = sp.specs.first().ok_or("--bench-splices needs a splice service")?;
    let pool = sp.services.get(spec.rules.default_pool).ok_or("--bench-splices: the service has no pool")?;
    let vip_port = spec.ports.first().map(|r| r.0).ok_or("--bench-splices: the service has no port")?;
    let member = pool.members.first().ok_or("--bench-splices: the service's pool has no backend")?;
    let nat = local.get(usize::from(member.port)).and_then(|l| l.ipv4.first().copied()).ok_or("--bench-splices: the backend's port has no IPv4 address")?;
    Ok(Layout {
        vip: Endpoint { addr: spec.vip, port: vip_port },
        backend: Endpoint { addr: member.address, port: member.tcp_port.unwrap_or(vip_port) },
        nat,
        nat_first,
        client_if: client_ports.first().copied().unwrap_or(0) as u8,
        backend_if: member.port as u8,
        client_mac: CLIENT_MAC,
        backend_mac: BACKEND_MAC,
    })
}

/// Starts the workers with the splice role: its backends are resolved and weighted by a
/// balancer over the splice services, its cookie keys come from the splicer.
fn start_splice(
    sp: &SplicePlan,
    plan: &RunPlan,
    eal: &Eal,
    workers: WorkerSetup<'_>,
    supervisor: &mut Supervisor,
    services: &ControlServices,
    local: &[LocalAddrs],
    port_addrs: &[PortAddrs],
    bench_splices: Option<usize>,
) -> Result<(Vec<Slot>, Box<dyn std::any::Any>), String> {
    let secret = load_rack_key(&sp.secret).map_err(|e| format!("keys.syn_cookie_secret: {e}"))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|e| e.to_string())?;
    let mut splicer = Splicer::new(secret.bytes().to_vec(), sp.rotation_s, now.as_secs());
    let mut balancer = Balancer::new(sp.services.clone(), supervisor.neighbours(), supervisor.log(), port_addrs).with_connections().with_links(workers.links.clone());
    let client_ports = sp.client_ports(plan.ports.len());
    let forward = (!plan.pairs.is_empty()).then_some(&plan.pairs[..]);
    let clock = Clock { tsc_hz: eal.tsc_hz, tsc0: rdtsc(), unix_ms0: now.as_millis() as u64 };
    let nat = sp.nat_slices(plan.workers.len())?;
    let rss = workers.rss_steering();
    let mut counters = Vec::new();
    let mut member_counters = Vec::new();
    let (slots, end) = workers.start(supervisor, |w| {
        let settings = SpliceSettings {
            mss: sp.mss,
            wscale: sp.wscale,
            capacity: sp.capacity(),
            handshakes: sp.handshakes,
            request_buffer_bytes: sp.request_buffer_bytes,
            nat,
            worker: w as u16,
            rss: rss.get(w).cloned().unwrap_or_default(),
            // The same on every appliance of the rack: a client goes to the same backend
            // whichever appliance answers it.
            seed: member_key(b"tapsplice splice backends"),
            clock,
        };
        let mut role = Splice::new(sp.specs.clone(), sp.pools(), settings, splicer.keys(now.as_secs()), balancer.initial_tables(), local.to_vec(), &client_ports, forward)
            .map_err(|e| e.to_string())?;
        if let (Some(n), 0) = (bench_splices, w) {
            let layout = synthetic_layout(sp, local, &client_ports, nat.slice(0).0)?;
            let added = role.preload_synthetic(&layout, n);
            eprintln!("tapsplice: benchmark: {added} synthetic splices on the first worker (clients 10.2.x.y:10000+i → {}:{})", layout.vip.addr, layout.vip.port);
        }
        counters.push(role.counters());
        member_counters.push(role.member_counters());
        Ok(role)
    })?;
    balancer.attach(end.commands.iter().map(|tx| table_sink(tx.clone(), SpliceUpdate::Tables)).collect(), member_counters);
    splicer.attach(end.commands.clone(), counters, sp.names.clone());
    let pools = sp.services.iter().map(|p| p.name.clone()).collect();
    services.set_splices(crate::splicer::splices_fn(end.commands.clone(), sp.names.clone(), pools));
    supervisor.set_balancer(balancer);
    supervisor.set_splicer(splicer);
    Ok((slots, Box::new(end)))
}

/// Sets up the pool and ports (pushing every started port into `ports` so the caller can
/// stop them on any path), runs the workers until `stop`, and returns the final report.
fn serve(
    plan: &RunPlan,
    opts: &RunOptions,
    eal: &Eal,
    stop: &Arc<AtomicBool>,
    ports: &mut Vec<Port>,
    services: &ControlServices,
    supervisor: &mut Supervisor,
) -> Result<Report, String> {
    let pool = Mempool::create("ts_pool", plan.mbufs, plan.mempool_cache, plan.data_room).map_err(|e| e.to_string())?;
    let workers = plan.workers.len() as u16;
    for p in &plan.ports {
        let (rx_queues, tx_queues) = queue_counts(p.paired_queues(), p.rx_queues, workers);
        let spec = PortSpec {
            name: p.name.clone(),
            device: p.device.clone(),
            rx_queues,
            tx_queues,
            rx_desc: p.rx_desc,
            tx_desc: p.tx_desc,
            promiscuous: p.promiscuous,
            mtu: p.mtu,
        };
        let port = Port::setup(&spec, &pool).map_err(|e| match &p.bond {
            // The bonding PMD gives every member the bond's MAC in these modes.
            Some(b) if b.mode != crate::config::BondMode::Lacp => format!(
                "{e} (bond mode {} sets its members' MAC address to the bond's; every member device must allow that: net_tap and NICs do, net_vhost does not)",
                b.mode.as_str()
            ),
            _ => e.to_string(),
        })?;
        for w in &port.warnings {
            eprintln!("tapsplice: warning: {w}");
        }
        ports.push(port);
    }

    // Ports that carry in-band heartbeats punt UDP to the heartbeat port to the control thread.
    let (inband_ports, hb_port) = match &plan.membership {
        Some(m) => (m.inband_ports(), Some(m.mgmt.port())),
        None => (Vec::new(), None),
    };
    let local: Vec<LocalAddrs> = ports
        .iter()
        .zip(&plan.ports)
        .enumerate()
        .map(|(i, (port, pp))| LocalAddrs {
            mac: port.mac,
            ipv4: pp.ipv4.iter().map(|a| a.0).collect(),
            punt_udp: hb_port.filter(|_| inband_ports.contains(&(i as PortIndex))),
            // Replies to the control thread's ARP requests (only wanted ones are learned).
            punt_arp: true,
        })
        .collect();
    let port_addrs: Vec<PortAddrs> = ports
        .iter()
        .zip(&plan.ports)
        .enumerate()
        .map(|(i, (p, pp))| PortAddrs { index: i as PortIndex, mac: p.mac, ipv4: pp.ipv4.clone() })
        .collect();
    let inband: Vec<PortAddrs> = port_addrs.iter().filter(|p| inband_ports.contains(&p.index)).cloned().collect();
    // Every VIP on the ports where the role answers ARP for it, and the ports' own
    // addresses (the same client ports the roles are given).
    let mut vips: Vec<(std::net::Ipv4Addr, Vec<PortIndex>)> = Vec::new();
    let balance_ports = crate::balancer::client_ports(&plan.balance, plan.ports.len());
    vips.extend(plan.balance.iter().map(|s| (s.vip, balance_ports.clone())));
    if let Some(sp) = &plan.splice {
        let splice_ports = sp.client_ports(plan.ports.len());
        vips.extend(sp.services.iter().map(|s| (s.vip, splice_ports.clone())));
    }
    // A TAP's interface by the name the kernel gives it now: DPDK has just created it in
    // our namespace (whatever `iface` said: a name, a `%d` pattern, or nothing).
    let watched: Vec<WatchedPort> = ports
        .iter()
        .zip(&plan.ports)
        .map(|(p, pp)| {
            let tap = pp.bond.is_none() && (pp.device.starts_with("net_tap") || pp.device.starts_with("net_tun"));
            // `kernel_iface` is a socket port's own (a bond has none).
            WatchedPort { name: pp.name.clone(), dpdk_id: p.id, tap_iface: tap.then(|| p.kernel_ifname()).flatten(), socket_iface: pp.kernel_iface.clone() }
        })
        .collect();
    let link_watch = LinkWatch::new(&watched);
    let link_states = link_watch.states().clone();
    services.set_links(link_states.clone());
    let announce = crate::garp::AnnounceSetup { list: crate::garp::announcements(&port_addrs, &vips), links: Arc::new(std::sync::Mutex::new(link_watch)) };
    let workers = WorkerSetup { plan, eal, stop, ports, pool, inband: &inband, announce, links: link_states.clone() };
    // `_links` keeps the command queues open for the run.
    let (slots, _links): (Vec<Slot>, Box<dyn std::any::Any>) = if let Some(sp) = &plan.splice {
        start_splice(sp, plan, eal, workers, supervisor, services, &local, &port_addrs, opts.bench_splices)?
    } else if plan.balance.is_empty() {
        let (slots, end) = workers.start(supervisor, |_| Ok(Forward::new(&plan.pairs, local.clone())))?;
        (slots, Box::new(end))
    } else {
        let mut balancer = Balancer::new(plan.balance.clone(), supervisor.neighbours(), supervisor.log(), &port_addrs).with_links(link_states.clone());
        let vips: Vec<VipSpec> = plan.balance.iter().map(|s| s.vip_spec()).collect();
        let client_ports = crate::balancer::client_ports(&plan.balance, plan.ports.len());
        let forward = (!plan.pairs.is_empty()).then_some(&plan.pairs[..]);
        let mut counters = Vec::new();
        let (slots, end) = workers.start(supervisor, |_| {
            let role = Balance::new(vips.clone(), balancer.initial_tables(), local.clone(), &client_ports, forward).map_err(|e| e.to_string())?;
            counters.push(role.counters());
            Ok(role)
        })?;
        balancer.attach(end.commands.iter().map(|tx| table_sink(tx.clone(), |t| t)).collect(), counters);
        supervisor.set_balancer(balancer);
        (slots, Box::new(end))
    };

    let started = Instant::now();
    for (i, p) in ports.iter().enumerate() {
        let (_, speed) = p.link();
        let up = link_states.is_up(i);
        eprintln!(
            "tapsplice: port {} ({}) dpdk id {} mac {} link {} {} Mbit/s, {} rx queue(s)",
            p.name, p.device, p.id, MacAddr(p.mac), if up { "up" } else { "down" }, speed, p.rx_queues
        );
    }
    eprintln!("tapsplice: {}", services.describe());
    println!("tapsplice: running");
    let _ = std::io::stdout().flush();

    let mut last = (Instant::now(), LcoreCounters::default());
    let mut published: Option<Instant> = None;
    let mut bond_watch = BondWatch::new(plan);
    let log = supervisor.log();
    // The detector needs a tick at least every half heartbeat interval.
    let period = supervisor.poll_period();
    let mut watch = LoopWatch::new(period);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(period);
        if let Some(gap) = watch.tick(Instant::now()) {
            log.push(
                "control_stall",
                None,
                format!(
                    "warning: the control thread ran {:.0} ms after its previous round (period {:.0} ms): peers' silences, table updates and fencing were judged that late",
                    gap.as_secs_f64() * 1e3,
                    period.as_secs_f64() * 1e3
                ),
                false,
            );
        }
        supervisor.poll(Instant::now());
        bond_watch.tick(plan, ports, &log);
        if published.is_none_or(|t| t.elapsed() >= Duration::from_millis(250)) {
            let (report, hist) = build_report(plan, ports, &link_states, &bond_watch, &slots, started, eal.tsc_hz, watch.stats());
            let mut snap = MetricsSnapshot::from_report(&report, Some(&hist));
            supervisor.fill(&mut snap, Instant::now());
            services.publish(snap);
            published = Some(Instant::now());
        }
        if let Some(every) = opts.stats_interval {
            if last.0.elapsed() >= every {
                let (total, _, _) = collect(&slots);
                eprintln!("tapsplice: {}", rate_line(&last.1, &total, last.0.elapsed()));
                last = (Instant::now(), total);
            }
        }
    }
    eprintln!("tapsplice: stopping");
    let failed: Vec<u32> = plan.workers.iter().copied().filter(|&l| lcore::wait(l) != 0).collect();

    let (mut report, hist) = build_report(plan, ports, &link_states, &bond_watch, &slots, started, eal.tsc_hz, watch.stats());
    (report.splice, report.splice_services) = supervisor.splice_counters();
    report.splice_setup_us = supervisor.splice_setup().map(|b| crate::splicer::SetupSummary::of(&b));
    print!("{}", report.to_text(Some(&hist)));
    let _ = std::io::stdout().flush();
    if !failed.is_empty() {
        return Err(format!("worker lcore(s) {failed:?} stopped by an internal error (see above); the report is partial"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_worker_gets_a_tx_queue_and_tap_ports_get_as_many_rx_queues() {
        assert_eq!(queue_counts(true, 1, 1), (1, 1));
        assert_eq!(queue_counts(true, 2, 1), (2, 2));
        assert_eq!(queue_counts(true, 1, 3), (3, 3));
        assert_eq!(queue_counts(false, 1, 3), (1, 3));
        assert_eq!(queue_counts(false, 4, 2), (4, 4));
    }

    #[test]
    fn rx_queues_are_spread_round_robin_over_workers() {
        let a = assign_rx_queues(&[(2, false), (2, false)], 2);
        assert_eq!(a, vec![vec![(0, 0), (1, 0)], vec![(0, 1), (1, 1)]]);
        let one = assign_rx_queues(&[(1, false), (1, false)], 1);
        assert_eq!(one, vec![vec![(0, 0), (1, 0)]]);
        // Two NIC ports of 3 queues: 3 and 3, not 4 and 2.
        let nic = assign_rx_queues(&[(3, false), (3, false)], 2);
        assert_eq!(nic.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 3]);
        // A single-queue port before two TAP ports: each worker still polls its own
        // queue index of the TAP ports (the kernel queue its TX queue writes to).
        let mixed = assign_rx_queues(&[(1, false), (2, true), (2, true), (1, false)], 2);
        assert_eq!(mixed, vec![vec![(0, 0), (1, 0), (2, 0)], vec![(1, 1), (2, 1), (3, 0)]]);
    }
}
