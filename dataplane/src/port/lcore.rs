//! The worker lcore: a run-to-completion burst loop, generic over the role.
//!
//! Per iteration (a round) it polls each of its RX queues once, hands every frame to the
//! role, batches the round's frames per egress port and transmits them on its own TX queue
//! of that port (one TX queue per worker on every port, so no TX queue is shared), one
//! `tx_burst` per port and round. Counters and the per-burst latency histogram (one value
//! per timed round: first frame received to last transmitted; one round with frames in
//! [`HIST_SAMPLE`] is timed, since reading the TSC is not free) are the lcore's own; a snapshot is published to the control thread about ten
//! times a second with `try_lock`, so the lcore never waits for the control thread.
//! Between bursts it takes commands from the control thread (role updates, frames to send)
//! with `try_recv`, and it hands punted frames over with `try_send` (see `lcore_link`).
//! Frames a role says belong to another worker (`Verdict::Handoff`) go to that worker's
//! inbox as mbufs; each round starts with up to a burst of the frames handed in.

use super::mempool::Mempool;
use super::{dpdk, eal::rdtsc, sys, PortError};
use crate::lcore_link::{Handed, LcoreEnd, LinkStates, SmallFrame, ToLcore};
use crate::role::{Ctx, Emit, PortIndex, Role, Verdict};
use crate::stats::{new_cycle_histogram, DropReason, LcoreCounters};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest burst the loop supports (the configured burst is capped to this).
pub const MAX_BURST: usize = 512;

/// One RX queue that a worker polls.
#[derive(Clone, Copy, Debug)]
pub struct RxSource {
    /// The port's index in the configuration (what roles see).
    pub port: PortIndex,
    /// The DPDK port id.
    pub dpdk_port: u16,
    pub queue: u16,
}

/// Loop tuning from the `[workers]` section.
#[derive(Clone, Copy, Debug)]
pub struct LoopConfig {
    pub burst: u16,
    /// Sleep progressively after `idle_polls` empty polls (off for production benchmarks).
    pub idle_backoff: bool,
    pub idle_polls: u32,
    pub idle_max_sleep_us: u32,
}

/// What a worker publishes for the control thread.
pub struct Published {
    pub lcore: u32,
    pub counters: LcoreCounters,
    /// Per-burst processing time (rx to tx done) in TSC cycles, non-empty bursts only.
    pub burst_cycles: Histogram<u64>,
}

pub type Slot = Arc<Mutex<Published>>;

pub fn new_slot(lcore: u32) -> Slot {
    Arc::new(Mutex::new(Published { lcore, counters: LcoreCounters::default(), burst_cycles: new_cycle_histogram() }))
}

/// Frames queued for one egress port during a burst, and their bytes (frames that
/// `tx_burst` refuses are still ours, so their bytes are taken back out of the sum).
struct TxBatch {
    mbufs: Vec<*mut sys::rte_mbuf>,
    bytes: u64,
    /// The first `emitted` mbufs are the role's own frames (they go out first).
    emitted: usize,
}

/// The lcore's [`Emit`]: frames a role originates, in fresh mbufs from the worker's
/// mempool, held until the round's frames go out (then put at the head of their port's batch).
struct MbufEmit {
    pool: Mempool,
    frames: Vec<(PortIndex, *mut sys::rte_mbuf)>,
    /// Frames per round at most (the batches are sized for it, so pushing never allocates).
    budget: usize,
}

impl Emit for MbufEmit {
    fn frame(&mut self, port: PortIndex, len: usize) -> Option<&mut [u8]> {
        if self.frames.len() >= self.budget {
            return None;
        }
        let lib = dpdk();
        // SAFETY: the pool lives as long as the process; a fresh mbuf is ours until it is
        // handed to tx_burst or freed; the slice covers `len` bytes of its data room,
        // checked just before, and lives no longer than our borrow of `self`.
        unsafe {
            let m = lib.ts_pktmbuf_alloc(self.pool.raw);
            if m.is_null() {
                return None;
            }
            let mb = &mut *m;
            let room = (mb.buf_len as usize).saturating_sub(mb.data_off as usize);
            if len > room || len > usize::from(u16::MAX) {
                lib.ts_pktmbuf_free(m);
                return None;
            }
            mb.data_len = len as u16;
            mb.pkt_len = len as u32;
            self.frames.push((port, m));
            Some(std::slice::from_raw_parts_mut((mb.buf_addr as *mut u8).add(mb.data_off as usize), len))
        }
    }
}

/// A worker lcore's whole state. Built by the control side, moved onto the lcore.
pub struct Worker<R: Role> {
    pub lcore: u32,
    pub role: R,
    pub rx: Vec<RxSource>,
    /// DPDK port id for each configured port index.
    pub dpdk_ports: Vec<u16>,
    /// 802.3ad bonding ports (DPDK ids): the bonding PMD sends its LACPDUs only from
    /// inside `tx_burst`, so the loop calls it with no frames at least every
    /// [`LACP_TX_EVERY`] (the PMD wants one call per 100 ms) on ports it had nothing for.
    pub lacp_ports: Vec<u16>,
    /// This worker's TX queue id (the same on every port).
    pub tx_queue: u16,
    pub cfg: LoopConfig,
    pub stop: Arc<AtomicBool>,
    pub slot: Slot,
    pub tsc_hz: u64,
    /// Commands from and punts to the control thread.
    pub link: LcoreEnd<R::Update>,
    /// Where frames the control thread asks for are allocated.
    pub pool: Mempool,
    /// Each port's link: frames for a port whose link is down are dropped (`link_down`).
    pub links: LinkStates,
}

/// How often an idle 802.3ad bond gets an empty `tx_burst` (see `Worker::lacp_ports`).
pub const LACP_TX_EVERY: Duration = Duration::from_millis(20);

/// The loop reads the clock (for publishing, LACP and `Ctx::now_tsc`) every this many
/// iterations: a few µs apart when busy.
const CLOCK_EVERY: u32 = 16;
/// One round with frames in this many is timed for the per-burst histogram.
pub const HIST_SAMPLE: u32 = 8;

/// `tx_burst` calls per port and round before the frames a full ring refused are dropped.
const TX_TRIES: u32 = 4;

/// Commands taken per loop iteration, so a flood of them cannot stall the RX queues.
const COMMANDS_PER_ROUND: usize = 16;

impl<R: Role + 'static> Worker<R> {
    /// Starts this worker on its lcore (`rte_eal_remote_launch`).
    pub fn launch(self) -> Result<(), PortError> {
        let lcore = self.lcore;
        let stop = self.stop.clone();
        launch_on(lcore, Box::new(move || {
            // A panicking worker would leave its queues unpolled: stop the whole appliance
            // so the failure is visible (the control side reports which lcore failed).
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run())) {
                Ok(()) => 0,
                Err(e) => {
                    stop.store(true, Ordering::SeqCst);
                    eprintln!("tapsplice: worker lcore {lcore} stopped by an internal error: {}", panic_text(&*e));
                    -1
                }
            }
        }))
    }

    /// The burst loop; returns when `stop` is set.
    pub fn run(mut self) {
        if self.rx.is_empty() {
            // More workers than RX queues: nothing to poll, so do not burn a core. Frames
            // another worker hands here (a NAT port of this worker's slice, which holds no
            // splice) are given back, so that they cannot pin mbufs.
            let mut counters = LcoreCounters::default();
            let no_bursts = new_cycle_histogram();
            let free = |counters: &mut LcoreCounters| {
                for h in self.link.handoff.inbox.try_iter() {
                    counters.handed_in += 1;
                    counters.drops.count(DropReason::NoSplice);
                    // SAFETY: the worker that handed it over gave up the mbuf with it.
                    unsafe { dpdk().ts_pktmbuf_free(h.mbuf as *mut sys::rte_mbuf) };
                }
            };
            while !self.stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                free(&mut counters);
                if let Ok(mut slot) = self.slot.try_lock() {
                    publish(&mut slot, &counters, &no_bursts);
                }
            }
            free(&mut counters);
            return;
        }
        let lib = dpdk();
        let burst = (self.cfg.burst as usize).clamp(1, MAX_BURST);
        let mut rx_buf: Vec<*mut sys::rte_mbuf> = vec![std::ptr::null_mut(); burst];
        // A round holds at most one burst from each RX queue; sized so that pushing never
        // allocates on the fast path.
        // Frames handed in by other workers (at most a burst per round) count as one
        // more RX queue.
        let round = burst * (self.rx.len() + 1);
        // Roles emit rarely (handshakes, resets); two frames per received frame is ample.
        let mut emitter = MbufEmit { pool: self.pool, frames: Vec::with_capacity(2 * round), budget: 2 * round };
        let mut out = RoundOut {
            tx: self.dpdk_ports.iter().map(|_| TxBatch { mbufs: Vec::with_capacity(3 * round), bytes: 0, emitted: 0 }).collect(),
            to_free: Vec::with_capacity(3 * round),
        };
        let mut handed: Vec<Handed> = Vec::with_capacity(burst);
        let several_workers = self.link.handoff.peers.len() > 1;
        let mut counters = LcoreCounters::default();
        let mut hist = new_cycle_histogram();
        let publish_every = (self.tsc_hz / 10).max(1);
        let mut clock = rdtsc();
        let mut iteration: u32 = 0;
        let mut rounds_with_frames: u32 = 0;
        let mut next_publish = clock + publish_every;
        let lacp_every = (self.tsc_hz * LACP_TX_EVERY.as_millis() as u64 / 1000).max(1);
        let mut next_lacp = clock + lacp_every;
        let mut idle_rounds: u32 = 0;
        let mut sleep_us: u32 = 0;

        while !self.stop.load(Ordering::Relaxed) {
            let mut got = false;
            for _ in 0..COMMANDS_PER_ROUND {
                match self.link.commands.try_recv() {
                    Ok(ToLcore::Update(u)) => self.role.update(u),
                    Ok(ToLcore::Transmit(f)) => {
                        transmit(&f, self.pool, &self.dpdk_ports, &self.links, self.tx_queue, &mut counters);
                        got = true;
                    }
                    Err(_) => break,
                }
            }
            // Frames of every RX queue polled in this round go out together: a balancer
            // whose members sit on several ports would otherwise send each burst as several
            // small tx_bursts, and a PMD's cost is per call as much as per frame.
            let mut round_start: Option<(u64, bool)> = None;
            // Frames other workers passed here (their state is ours): first, they have
            // waited already. (`is_empty` is two plain loads; an empty `try_recv` would
            // cost a fence every round.)
            if several_workers && !self.link.handoff.inbox.is_empty() {
                handed.extend(self.link.handoff.inbox.try_iter().take(burst));
            }
            if !handed.is_empty() {
                got = true;
                let (t0, _) = *round_start.get_or_insert_with(|| start_round(&mut rounds_with_frames, clock));
                let mut ctx = Ctx { now_tsc: t0, counters: &mut counters, emit: &mut emitter, clock: Some(rdtsc) };
                for h in handed.drain(..) {
                    let m = h.mbuf as *mut sys::rte_mbuf;
                    ctx.counters.handed_in += 1;
                    // SAFETY: the worker that handed it over gave up the mbuf with it.
                    let (frame, _) = unsafe { mbuf_frame(m) };
                    let verdict = self.role.handle(h.port, frame, &mut ctx);
                    out.place(verdict, m, h.port, &mut ctx, &self.link, true);
                }
            }
            for src in &self.rx {
                counters.polls += 1;
                // SAFETY: rx_buf has room for `burst` pointers; the queue belongs to us.
                let n = unsafe { lib.ts_rx_burst(src.dpdk_port, src.queue, rx_buf.as_mut_ptr(), burst as u16) } as usize;
                if n == 0 {
                    counters.empty_polls += 1;
                    continue;
                }
                got = true;
                let (t0, _) = *round_start.get_or_insert_with(|| start_round(&mut rounds_with_frames, clock));
                counters.rx_packets += n as u64;
                let mut rx_bytes = 0u64;
                // First a look at every frame of the burst, so that the role's table
                // fetches overlap (Role::prefetch); then the frames one by one.
                for &m in rx_buf[..n].iter().filter(|_| R::PREFETCH) {
                    // SAFETY: as below; read only.
                    let (frame, _) = unsafe { mbuf_frame(m) };
                    self.role.prefetch(frame);
                }
                let mut ctx = Ctx { now_tsc: t0, counters: &mut counters, emit: &mut emitter, clock: Some(rdtsc) };
                for &m in &rx_buf[..n] {
                    // SAFETY: m is a valid mbuf that rx_burst handed to us.
                    let (frame, pkt_len) = unsafe { mbuf_frame(m) };
                    rx_bytes += u64::from(pkt_len);
                    let verdict = self.role.handle(src.port, frame, &mut ctx);
                    out.place(verdict, m, src.port, &mut ctx, &self.link, false);
                }
                counters.rx_bytes += rx_bytes;
            }
            // Frames the role emitted from `tick` (timers) go out with the next round, even
            // when it received nothing.
            if round_start.is_some() || !emitter.frames.is_empty() {
                let (t0, timed) = round_start.unwrap_or((clock, false));
                for (port, m) in emitter.frames.drain(..) {
                    match out.tx.get_mut(usize::from(port)) {
                        Some(batch) => {
                            // Ahead of the forwarded frames: when a full ring refuses the
                            // tail of the batch, it is data that TCP retransmits within an
                            // RTT, not a handshake segment whose loss costs a timeout.
                            batch.mbufs.insert(batch.emitted, m);
                            batch.emitted += 1;
                            // SAFETY: an mbuf the emitter allocated and set up.
                            batch.bytes += u64::from(unsafe { (*m).pkt_len });
                            counters.emitted += 1;
                        }
                        None => {
                            counters.drops.count(DropReason::NoRoute);
                            out.to_free.push(m);
                        }
                    }
                }
                for (p, batch) in out.tx.iter_mut().enumerate() {
                    if batch.mbufs.is_empty() {
                        continue;
                    }
                    if !self.links.is_up(p) {
                        // A driver fails these (a TAP whose interface is down: EIO, a TX
                        // error); dropped here they are counted with their reason.
                        counters.drops.add(DropReason::LinkDown, batch.mbufs.len() as u64);
                        out.to_free.extend_from_slice(&batch.mbufs);
                        batch.mbufs.clear();
                        batch.bytes = 0;
                        batch.emitted = 0;
                        continue;
                    }
                    let len = batch.mbufs.len().min(usize::from(u16::MAX));
                    // A full TX ring usually drains within microseconds: try the rest a
                    // few more times before dropping it (bounded, so a stuck port cannot
                    // stall the loop).
                    let mut sent = 0usize;
                    for _ in 0..TX_TRIES {
                        // SAFETY: the mbufs are ours; tx_burst takes ownership of those it sends.
                        sent += unsafe {
                            lib.ts_tx_burst(self.dpdk_ports[p], self.tx_queue, batch.mbufs[sent..].as_mut_ptr(), (len - sent) as u16)
                        } as usize;
                        if sent >= len {
                            break;
                        }
                        counters.tx_retries += 1;
                    }
                    counters.tx_packets += sent as u64;
                    if sent < batch.mbufs.len() {
                        for &m in &batch.mbufs[sent..] {
                            // SAFETY: tx_burst did not take this mbuf; it is still ours.
                            batch.bytes -= u64::from(unsafe { (*m).pkt_len });
                            counters.drops.count(DropReason::TxFull);
                        }
                        out.to_free.extend_from_slice(&batch.mbufs[sent..]);
                    }
                    counters.tx_bytes += batch.bytes;
                    batch.mbufs.clear();
                    batch.bytes = 0;
                    batch.emitted = 0;
                }
                out.free_all();
                if timed {
                    hist.saturating_record(rdtsc().saturating_sub(t0).max(1));
                }
            }

            if got {
                idle_rounds = 0;
                sleep_us = 0;
            } else if self.cfg.idle_backoff {
                idle_rounds = idle_rounds.saturating_add(1);
                if idle_rounds > self.cfg.idle_polls {
                    // Progressive back-off: 1, 2, 4 ... µs up to the configured ceiling.
                    sleep_us = (sleep_us.saturating_mul(2)).clamp(1, self.cfg.idle_max_sleep_us.max(1));
                    counters.idle_sleeps += 1;
                    std::thread::sleep(Duration::from_micros(sleep_us as u64));
                }
            }

            iteration = iteration.wrapping_add(1);
            if iteration % CLOCK_EVERY != 0 {
                continue;
            }
            clock = rdtsc();
            let now = clock;
            self.role.tick(&mut Ctx { now_tsc: now, counters: &mut counters, emit: &mut emitter, clock: Some(rdtsc) });
            if now >= next_lacp {
                next_lacp = now + lacp_every;
                for &port in &self.lacp_ports {
                    // SAFETY: an empty burst: the PMD only flushes its own control frames.
                    unsafe { lib.ts_tx_burst(port, self.tx_queue, out.to_free.as_mut_ptr(), 0) };
                }
            }
            if now >= next_publish {
                next_publish = now + publish_every;
                if let Ok(mut slot) = self.slot.try_lock() {
                    publish(&mut slot, &counters, &hist);
                }
            }
        }
        // Frames handed here after the last round are ours to give back.
        out.to_free.extend(self.link.handoff.inbox.try_iter().map(|h| h.mbuf as *mut sys::rte_mbuf));
        out.free_all();
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        publish(&mut slot, &counters, &hist);
    }
}

/// The clock of a round that has frames: every [`HIST_SAMPLE`]th such round is timed (a
/// fresh TSC read, and `true`), the others take the loop's last clock reading.
#[inline(always)]
fn start_round(rounds_with_frames: &mut u32, clock: u64) -> (u64, bool) {
    *rounds_with_frames = rounds_with_frames.wrapping_add(1);
    let timed = *rounds_with_frames % HIST_SAMPLE == 0;
    (if timed { rdtsc() } else { clock }, timed)
}

/// A received frame's bytes and its packet length.
///
/// # Safety
/// `m` must be a valid single-segment mbuf that the caller owns; the slice must not
/// outlive the caller's ownership of it.
#[inline(always)]
unsafe fn mbuf_frame<'a>(m: *mut sys::rte_mbuf) -> (&'a mut [u8], u32) {
    // SAFETY: as the caller promises.
    unsafe {
        let mb = &*m;
        let data = (mb.buf_addr as *mut u8).add(mb.data_off as usize);
        (std::slice::from_raw_parts_mut(data, mb.data_len as usize), mb.pkt_len)
    }
}

/// Where a round's frames go: a batch per egress port, and the mbufs to give back.
struct RoundOut {
    tx: Vec<TxBatch>,
    to_free: Vec<*mut sys::rte_mbuf>,
}

impl RoundOut {
    /// Acts on the role's verdict for the frame in `m` (which arrived on `ingress`; `handed`:
    /// another worker passed it here): into its port's batch, to the control thread, to
    /// another worker, or back to the pool, counted.
    #[inline(always)]
    fn place<U>(&mut self, verdict: Verdict, m: *mut sys::rte_mbuf, ingress: PortIndex, ctx: &mut Ctx<'_>, link: &LcoreEnd<U>, handed: bool) {
        let port = match verdict {
            Verdict::Tx(p) => p,
            Verdict::Reply => {
                ctx.counters.local_replies += 1;
                ingress
            }
            Verdict::Drop(r) => {
                ctx.counters.drops.count(r);
                return self.to_free.push(m);
            }
            Verdict::Consumed => return self.to_free.push(m),
            Verdict::Punt => {
                // SAFETY: m is ours (see `mbuf_frame`); read only, for the copy.
                let (frame, _) = unsafe { mbuf_frame(m) };
                match SmallFrame::copy_from(ingress, frame) {
                    Some(f) => match link.punts.try_send(f) {
                        Ok(()) => ctx.counters.punted += 1,
                        Err(_) => ctx.counters.drops.count(DropReason::PuntQueueFull),
                    },
                    None => ctx.counters.drops.count(DropReason::PuntTooBig),
                }
                return self.to_free.push(m);
            }
            Verdict::Handoff(w) => {
                let peer = link.handoff.peers.get(usize::from(w)).filter(|_| w != link.handoff.me && !handed);
                match peer.map(|p| p.try_send(Handed { mbuf: m as usize, port: ingress })) {
                    Some(Ok(())) => ctx.counters.handed_off += 1,
                    Some(Err(_)) => {
                        ctx.counters.drops.count(DropReason::HandoffFull);
                        self.to_free.push(m);
                    }
                    // No such lcore, or a frame that was handed here already: a role whose
                    // lcores disagree on an owner must not bounce frames between them.
                    None => {
                        ctx.counters.drops.count(DropReason::NoRoute);
                        self.to_free.push(m);
                    }
                }
                return;
            }
        };
        match self.tx.get_mut(usize::from(port)) {
            Some(batch) => {
                batch.mbufs.push(m);
                // SAFETY: m is ours (see `mbuf_frame`).
                batch.bytes += u64::from(unsafe { (*m).pkt_len });
            }
            None => {
                ctx.counters.drops.count(DropReason::NoRoute);
                self.to_free.push(m);
            }
        }
    }

    /// Gives every mbuf in `to_free` back to its pool.
    fn free_all(&mut self) {
        if !self.to_free.is_empty() {
            // SAFETY: each pointer is an mbuf we own and hand back exactly once.
            unsafe { dpdk().ts_pktmbuf_free_bulk(self.to_free.as_mut_ptr(), self.to_free.len() as u32) };
            self.to_free.clear();
        }
    }
}

/// Sends one frame the control thread built, from this worker's TX queue; a frame that
/// cannot be sent is counted, never retried (the control thread sends the next one).
fn transmit(f: &SmallFrame, pool: Mempool, dpdk_ports: &[u16], links: &LinkStates, tx_queue: u16, counters: &mut LcoreCounters) {
    let Some(&dpdk_port) = dpdk_ports.get(f.port as usize) else {
        counters.drops.count(DropReason::NoRoute);
        return;
    };
    if !links.is_up(usize::from(f.port)) {
        counters.drops.count(DropReason::LinkDown);
        return;
    }
    let lib = dpdk();
    let bytes = f.bytes();
    // SAFETY: the pool is live for the process; a fresh mbuf is ours until tx_burst takes
    // it or we free it; the copy is bounded by the room checked just before.
    unsafe {
        let m = lib.ts_pktmbuf_alloc(pool.raw);
        if m.is_null() {
            counters.drops.count(DropReason::NoMbuf);
            return;
        }
        let mb = &mut *m;
        let room = (mb.buf_len as usize).saturating_sub(mb.data_off as usize);
        if room < bytes.len() {
            lib.ts_pktmbuf_free(m);
            counters.drops.count(DropReason::PuntTooBig);
            return;
        }
        let data = (mb.buf_addr as *mut u8).add(mb.data_off as usize);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), data, bytes.len());
        mb.data_len = bytes.len() as u16;
        mb.pkt_len = bytes.len() as u32;
        let mut one = [m];
        if lib.ts_tx_burst(dpdk_port, tx_queue, one.as_mut_ptr(), 1) == 1 {
            counters.control_tx += 1;
            counters.tx_packets += 1;
            counters.tx_bytes += bytes.len() as u64;
        } else {
            lib.ts_pktmbuf_free(m);
            counters.drops.count(DropReason::TxFull);
        }
    }
}

fn publish(slot: &mut Published, counters: &LcoreCounters, hist: &Histogram<u64>) {
    slot.counters = counters.clone();
    slot.burst_cycles.reset();
    // Same bounds on both sides, so this cannot fail.
    let _ = slot.burst_cycles.add(hist);
}

type LcoreJob = Box<dyn FnOnce() -> i32 + Send>;

unsafe extern "C" fn trampoline(arg: *mut std::os::raw::c_void) -> i32 {
    // SAFETY: arg is the Box<LcoreJob> leaked by launch_on, consumed exactly once here.
    let job: Box<LcoreJob> = unsafe { Box::from_raw(arg as *mut LcoreJob) };
    // A panic must not unwind into C (Worker::launch catches its own; this is the backstop).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Runs `job` on worker lcore `lcore`.
pub fn launch_on(lcore: u32, job: LcoreJob) -> Result<(), PortError> {
    let arg = Box::into_raw(Box::new(job)) as *mut std::os::raw::c_void;
    // SAFETY: the trampoline takes ownership of arg.
    let rc = unsafe { dpdk().rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: not launched, so we still own arg.
        drop(unsafe { Box::from_raw(arg as *mut LcoreJob) });
        return Err(PortError::Eal(format!("cannot launch a worker on lcore {lcore} (rc {rc}); is it listed in eal.lcores and not the main lcore?")));
    }
    Ok(())
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| e.downcast_ref::<String>().cloned()).unwrap_or_default()
}

/// Waits for every worker lcore to return.
pub fn wait_all() {
    // SAFETY: EAL is initialised.
    unsafe { dpdk().rte_eal_mp_wait_lcore() };
}

/// Waits for one worker lcore and returns its job's return value (0 = clean stop).
pub fn wait(lcore: u32) -> i32 {
    // SAFETY: EAL is initialised; waiting on an idle lcore returns at once.
    unsafe { dpdk().rte_eal_wait_lcore(lcore) }
}
