//! Heartbeats over real UDP on 127.0.0.1: the receiver's acceptance rules and counters,
//! and the detector driven by a live sender/receiver pair.

use crossbeam_channel::{bounded, Receiver as ChanRx, RecvTimeoutError};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tapsplice::config::PeerClass;
use tapsplice::detector::{Detector, DetectorConfig, PeerSpec, PeerState, Reason};
use tapsplice::heartbeat::replay::ReplayDrop;
use tapsplice::heartbeat::udp::{next_incarnation, now_unix_us};
use tapsplice::heartbeat::{
    encode, HbCounters, HbDrop, HbEvent, HbRole, HbSender, Heartbeat, LocalStatus, MacKey, NodeId,
    Receiver, ReceiverConfig, Reject, SenderConfig, StatusCell, StatusFlags, Workload,
};

const KEY: &[u8] = b"integration-test rack key 0123456789";

fn key() -> MacKey {
    MacKey::new(KEY).unwrap()
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).unwrap()
}

fn hb(node: &str, inc: u64, seq: u64) -> Heartbeat {
    Heartbeat {
        node: id(node),
        incarnation: inc,
        seq,
        role: HbRole::Proxy,
        workload: Workload::from_f64(0.5),
        status: StatusFlags {
            app_alive: true,
            ..Default::default()
        },
        sent_at_us: now_unix_us(),
        tlvs: vec![],
    }
}

struct Rx {
    addr: SocketAddr,
    events: ChanRx<HbEvent>,
    counters: Arc<HbCounters>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Rx {
    fn start(peers: &[&str]) -> Rx {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let (tx, events) = bounded(1024);
        let counters = Arc::new(HbCounters::new());
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let mut cfg = ReceiverConfig::new(key(), peers.iter().map(|p| id(p)).collect());
        cfg.poll = Duration::from_millis(20);
        cfg.log_lines_per_sec = 100;
        let thread = Receiver::new(sock, cfg, tx, counters.clone(), stop.clone())
            .unwrap()
            .with_log(Box::new(move |l: &str| {
                sink.lock().unwrap().push(l.to_string())
            }))
            .spawn()
            .unwrap();
        Rx {
            addr,
            events,
            counters,
            stop,
            thread: Some(thread),
            log,
        }
    }

    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.thread.take() {
            h.join().unwrap();
        }
        t.elapsed()
    }
}

impl Drop for Rx {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn receiver_accepts_valid_and_counts_every_rejection() {
    let mut rx = Rx::start(&["px1", "px2"]);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let k = key();
    let send = |b: &[u8]| {
        tx.send_to(b, rx.addr).unwrap();
    };

    let valid = encode(&hb("px1", 100, 1), &k).unwrap();
    send(&valid);
    let ev = rx
        .events
        .recv_timeout(Duration::from_secs(5))
        .expect("valid heartbeat not delivered");
    assert_eq!(ev.peer.as_str(), "px1");
    assert_eq!((ev.hb.incarnation, ev.hb.seq), (100, 1));
    assert_eq!(ev.from, tx.local_addr().unwrap());

    let wrong_key = MacKey::new(b"some other rack's key!!").unwrap();
    send(&encode(&hb("px1", 100, 2), &wrong_key).unwrap()); // bad_mac
    send(&encode(&hb("intruder", 1, 1), &k).unwrap()); // unknown_node
    send(&valid); // replayed
    send(&valid[..valid.len() - 5]); // truncated
    send(&encode(&hb("px1", 99, 50), &k).unwrap()); // old_incarnation
    send(b"GET / HTTP/1.0\r\n\r\n"); // bad_magic
    let mut v2 = encode(&hb("px1", 100, 3), &k).unwrap();
    v2[4] = 2;
    send(&v2); // bad_version
    let mut trailing = encode(&hb("px1", 100, 4), &k).unwrap();
    trailing.push(0);
    send(&trailing); // malformed
                     // Loopback keeps order: once this one arrives, everything before was handled.
    send(&encode(&hb("px1", 100, 5), &k).unwrap());
    let ev = rx
        .events
        .recv_timeout(Duration::from_secs(5))
        .expect("sentinel not delivered");
    assert_eq!(ev.hb.seq, 5, "a rejected message produced an event");
    assert!(rx.events.try_recv().is_err());

    let s = rx.counters.snapshot();
    println!("counters: {s:?}");
    assert_eq!(s.received, 10);
    assert_eq!(s.accepted, 2);
    for r in [
        Reject::Wire(HbDrop::BadMac),
        Reject::Replay(ReplayDrop::UnknownNode),
        Reject::Replay(ReplayDrop::Replayed),
        Reject::Wire(HbDrop::Truncated),
        Reject::Replay(ReplayDrop::OldIncarnation),
        Reject::Wire(HbDrop::BadMagic),
        Reject::Wire(HbDrop::BadVersion),
        Reject::Wire(HbDrop::Malformed),
    ] {
        assert_eq!(s.rejected(r), 1, "{r}");
    }
    assert_eq!(s.rejected_total(), 8);

    let took = rx.stop();
    assert!(
        took < Duration::from_secs(2),
        "receiver took {took:?} to stop"
    );
    let log = rx.log.lock().unwrap().clone();
    for l in &log {
        println!("log: {l}");
    }
    assert_eq!(log.len(), 8);
    for reason in [
        "bad_mac",
        "unknown_node",
        "replayed",
        "truncated",
        "old_incarnation",
        "bad_magic",
        "bad_version",
        "malformed",
    ] {
        assert!(
            log.iter().any(|l| l.contains(reason)),
            "no log line for {reason}"
        );
    }
    assert!(log.iter().any(|l| l.contains("node intruder")));
}

#[test]
fn rejected_floods_are_logged_with_a_rate_limit() {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let (tx, _events) = bounded(16);
    let counters = Arc::new(HbCounters::new());
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = log.clone();
    let mut cfg = ReceiverConfig::new(key(), vec![id("px1")]);
    cfg.log_lines_per_sec = 3;
    cfg.poll = Duration::from_millis(20);
    let h = Receiver::new(sock, cfg, tx, counters.clone(), stop.clone())
        .unwrap()
        .with_log(Box::new(move |l: &str| {
            sink.lock().unwrap().push(l.to_string())
        }))
        .spawn()
        .unwrap();
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    let flood = Instant::now();
    for _ in 0..200 {
        out.send_to(b"junk", addr).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.snapshot().received < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let received = counters.snapshot().received;
    let flood_secs = flood.elapsed().as_secs();
    // After the window, the suppressed count is reported by a line of its own.
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    let s = counters.snapshot();
    let log = log.lock().unwrap().clone();
    println!("received {received}, log lines {}: {log:?}", log.len());
    assert!(received > 3, "loopback dropped nearly everything");
    assert_eq!(s.rejected(Reject::Wire(HbDrop::BadMagic)), received);
    let per_datagram = log
        .iter()
        .filter(|l| l.starts_with("rejected datagram"))
        .count() as u64;
    // Every datagram is either logged or counted as suppressed, and at most 3 lines per
    // second (one window per started second of flood) get through.
    assert_eq!(per_datagram + s.log_suppressed, received);
    assert!(per_datagram <= 3 * (flood_secs + 1), "{per_datagram} lines");
    // The suppressed ones are all reported, in "(N similar ...)" suffixes or "N more" lines.
    let reported: u64 = log
        .iter()
        .filter_map(|l| {
            if let Some(n) = l.strip_suffix(" more rejected heartbeat messages were not logged") {
                n.parse::<u64>().ok()
            } else {
                l.split(" (")
                    .nth(2)
                    .and_then(|x| x.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
            }
        })
        .sum();
    assert_eq!(reported, s.log_suppressed, "{log:?}");
    assert!(log.last().unwrap().contains("more rejected"), "{log:?}");
}

#[test]
fn detector_fed_by_receiver_declares_down_within_k_plus_1_intervals() {
    const INTERVAL: Duration = Duration::from_millis(10);
    const K: u32 = 3;
    let mut rx = Rx::start(&["px1"]);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let status = Arc::new(StatusCell::new(LocalStatus {
        role: HbRole::Proxy,
        workload: Workload::from_f64(0.8),
        status: StatusFlags {
            app_alive: true,
            ..Default::default()
        },
        tlvs: vec![],
    }));
    let tx_counters = Arc::new(HbCounters::new());
    let tx_stop = Arc::new(AtomicBool::new(false));
    let sender = HbSender::new(
        sock,
        SenderConfig {
            node: id("px1"),
            incarnation: next_incarnation(now_unix_us(), None),
            interval: INTERVAL,
            peers: vec![rx.addr],
            key: key(),
            poll: Duration::from_millis(20),
            mirror: None,
        },
        status.clone(),
        tx_counters.clone(),
        tx_stop.clone(),
    )
    .spawn()
    .unwrap();

    // No flap damping: a descheduled sender must not turn into a hold-down here.
    let cfg = DetectorConfig {
        flap_damping: false,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut det = Detector::new(
        cfg,
        vec![PeerSpec {
            id: id("px1"),
            class: PeerClass::Proxy,
            interval: INTERVAL,
            missed: K,
        }],
        t0,
    );
    let tick = det.max_tick_period();
    assert_eq!(tick, INTERVAL / 2);

    let mut stopped_at: Option<Instant> = None;
    let mut down = None;
    let mut false_downs = 0;
    let mut up_since: Option<Instant> = None;
    let deadline = t0 + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut evs = Vec::new();
        match rx.events.recv_timeout(tick) {
            Ok(ev) => evs.extend(det.on_event(&ev)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("receiver gone"),
        }
        evs.extend(det.tick(Instant::now()));
        for e in &evs {
            println!(
                "{:>8.1} ms  {e}",
                e.at.duration_since(t0).as_secs_f64() * 1e3
            );
            if e.to == PeerState::Down {
                if stopped_at.is_some() {
                    down = Some(e.clone());
                } else {
                    false_downs += 1;
                }
            }
        }
        if down.is_some() {
            break;
        }
        let state = det.state("px1").unwrap();
        if state == PeerState::Up {
            up_since.get_or_insert_with(Instant::now);
        } else {
            up_since = None;
        }
        // Stop the sender once the peer has been up for 300 ms.
        if stopped_at.is_none()
            && up_since.is_some_and(|u| u.elapsed() > Duration::from_millis(300))
        {
            tx_stop.store(true, Ordering::Relaxed);
            stopped_at = Some(Instant::now());
        }
    }
    let down = down.expect("peer never declared down after its heartbeats stopped");
    let Reason::Missed { intervals, silent } = down.reason else {
        panic!("{:?}", down.reason)
    };
    assert_eq!(intervals, K);
    let view = det.peer("px1").unwrap();
    let since_last = down.at.duration_since(view.last_heard.unwrap());
    let since_stop = down.at.saturating_duration_since(stopped_at.unwrap());
    println!(
        "declared down {:.2} ms after the last accepted heartbeat (bound (K+1)·i = {} ms, K·i = {} ms), {:.2} ms after the sender was stopped; {} heartbeats sent, {} accepted, {} false downs while sending",
        since_last.as_secs_f64() * 1e3,
        (INTERVAL * (K + 1)).as_millis(),
        (INTERVAL * K).as_millis(),
        since_stop.as_secs_f64() * 1e3,
        tx_counters.snapshot().sent,
        rx.counters.snapshot().accepted,
        false_downs,
    );
    assert_eq!(silent, since_last);
    assert!(
        since_last >= INTERVAL * K,
        "declared before K intervals: {since_last:?}"
    );
    // (K+1)·i is what the detector guarantees when ticked on time; the slack absorbs a
    // descheduled test thread on a loaded two-core machine.
    let slack = Duration::from_millis(200);
    assert!(
        since_last <= INTERVAL * (K + 1) + slack,
        "declared too late: {since_last:?}"
    );
    assert!(view
        .workload_smoothed
        .is_some_and(|w| (w - 0.8).abs() < 1e-9));

    let t = Instant::now();
    sender.join().unwrap();
    assert!(rx.stop() < Duration::from_secs(2));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "threads took {:?} to stop",
        t.elapsed()
    );
    assert!(tx_counters.snapshot().sent > 20);
    assert_eq!(tx_counters.snapshot().send_errors, 0);
}
