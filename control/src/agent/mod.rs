//! `tapsplice agent`: the small daemon on servers and peer hosts. It probes the local
//! application, computes the workload factor, and sends authenticated heartbeats to the
//! appliances. It needs no DPDK.

pub mod config;
pub mod load;
pub mod probe;

use crate::heartbeat::keyfile::load_rack_key;
use crate::heartbeat::udp::{next_incarnation, now_unix_us, HbSender, LocalStatus, SenderConfig, StatusCell};
use crate::heartbeat::wire::{HbRole, NodeId, StatusFlags, Workload};
use crate::heartbeat::HbCounters;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The heartbeat role for the agent's class.
fn role_for(class: &str) -> HbRole {
    match class {
        "appliance" => HbRole::Appliance,
        "proxy" => HbRole::Proxy,
        _ => HbRole::Agent,
    }
}

/// Runs the agent until SIGINT/SIGTERM: heartbeats every `interval_ms` from a sender
/// thread, the probe and workload factor refreshed every `probe.interval_ms` here.
pub fn run(file: &config::AgentFile) -> Result<(), String> {
    let a = &file.agent;
    let key = load_rack_key(&a.rack_key).map_err(|e| e.to_string())?;
    let node = NodeId::new(&a.id).ok_or_else(|| format!("agent.id {:?} cannot be sent in a heartbeat", a.id))?;
    let socket = UdpSocket::bind(a.bind).map_err(|e| format!("cannot bind the heartbeat socket to {}: {e}", a.bind))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .map_err(|e| format!("cannot install the SIGINT/SIGTERM handler: {e}"))?;
    }
    let role = role_for(&a.class);
    let probe = file.probe.probe();
    let probe_timeout = Duration::from_millis(file.probe.timeout_ms);
    let first = probe.check(probe_timeout);
    let status = Arc::new(StatusCell::new(LocalStatus {
        role,
        workload: Workload::from_f64(load::workload_factor(&load::sample(), a.max_connections)),
        status: StatusFlags { app_alive: first.alive, ..Default::default() },
        tlvs: Vec::new(),
    }));
    let counters = Arc::new(HbCounters::default());
    let sender = HbSender::new(
        socket,
        SenderConfig {
            node,
            incarnation: next_incarnation(now_unix_us(), None),
            interval: Duration::from_millis(a.interval_ms),
            peers: a.appliances.clone(),
            key: key.mac_key(),
            poll: Duration::from_millis(a.interval_ms.min(50)),
            mirror: None,
        },
        status.clone(),
        counters.clone(),
        stop.clone(),
    )
    .spawn()
    .map_err(|e| format!("cannot start the heartbeat sender: {e}"))?;
    eprintln!(
        "tapsplice agent: {} ({}) sending heartbeats every {} ms to {} appliance(s); application {}",
        a.id,
        a.class,
        a.interval_ms,
        a.appliances.len(),
        if first.alive { "alive" } else { "NOT alive" }
    );
    println!("tapsplice agent: running");
    let mut was_alive = first.alive;
    let mut next_probe = Instant::now() + Duration::from_millis(file.probe.interval_ms);
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
        if Instant::now() < next_probe {
            continue;
        }
        next_probe = Instant::now() + Duration::from_millis(file.probe.interval_ms);
        let r = probe.check(probe_timeout);
        if r.alive != was_alive {
            eprintln!(
                "tapsplice agent: application {}{}",
                if r.alive { "alive again" } else { "NOT alive: " },
                r.detail
            );
            was_alive = r.alive;
        }
        let w = Workload::from_f64(load::workload_factor(&load::sample(), a.max_connections));
        status.update(|s| {
            s.status.app_alive = r.alive;
            s.workload = w;
        });
    }
    let _ = sender.join();
    let snap = counters.snapshot();
    eprintln!("tapsplice agent: stopped; {snap:?}");
    Ok(())
}
