//! The role interface: what a worker lcore does with each received frame.
//!
//! The lcore loop (in `port::lcore`) owns the mbufs; it hands each frame to the role as a
//! mutable byte slice and acts on the returned [`Verdict`]. A role never sees DPDK, so it is
//! unit-tested with plain buffers. New roles (balance, splice, tap) are added as new types
//! implementing [`Role`] beside [`forward::Forward`], and selected at start-up; the loop is
//! generic over the role, so dispatch costs nothing per packet.

pub mod balance;
pub mod forward;
pub mod local;
pub mod splice;

use crate::stats::{DropReason, LcoreCounters};

/// Index of a port in the appliance's configured port list (not the DPDK port id).
pub type PortIndex = u16;

/// What to do with a frame after the role has looked at it (and maybe rewritten it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit on this port.
    Tx(PortIndex),
    /// Transmit back out of the port it came in on (the frame was turned into a reply).
    Reply,
    /// Free it and count it under the reason.
    Drop(DropReason),
    /// Hand a copy to the control thread (in-band heartbeats, ARP replies for the
    /// neighbour table), then free it. Counted as `punted`, or dropped and counted when
    /// it is too big to copy or the control thread's queue is full.
    Punt,
    /// The frame belongs to another worker lcore's state (this one's index among the
    /// workers, 0-based): the loop passes it to that lcore, which handles it as if it had
    /// received it on the same port. Counted `handed_off`; dropped as `handoff_full` when
    /// that lcore's queue is full, and as `no_route` where there is no such lcore.
    Handoff(u16),
    /// The role is done with the frame and it is not a drop (what it meant has been
    /// answered with frames from [`Ctx::emit`], e.g. a SYN answered by a SYN-ACK): free it.
    Consumed,
}

/// Frames a role originates: new frames (a SYN toward a backend, an ACK, a RST) or a
/// received frame at another length (a SYN-ACK with other options than the SYN had).
/// They leave with the round's frames, in the order they were emitted, after nothing
/// else the role emitted before them.
pub trait Emit {
    /// A buffer of exactly `len` bytes (contents unspecified: write every byte) that is
    /// sent on `port`; `None` when no buffer is left (the lcore's mempool or its per-round
    /// budget is exhausted), which the role counts as [`DropReason::NoMbuf`].
    fn frame(&mut self, port: PortIndex, len: usize) -> Option<&mut [u8]>;
}

/// An emitter that has no buffers: for roles that never emit (and their tests).
pub struct NoEmit;

impl Emit for NoEmit {
    fn frame(&mut self, _port: PortIndex, _len: usize) -> Option<&mut [u8]> {
        None
    }
}

/// An emitter into plain vectors, for tests and tools that drive a role without DPDK.
#[derive(Debug, Default)]
pub struct VecEmit {
    /// Emitted frames with their ports, oldest first.
    pub frames: Vec<(PortIndex, Vec<u8>)>,
    /// Refuse buffers once this many frames are held (`None`: no limit).
    pub limit: Option<usize>,
}

impl Emit for VecEmit {
    fn frame(&mut self, port: PortIndex, len: usize) -> Option<&mut [u8]> {
        if self.limit.is_some_and(|l| self.frames.len() >= l) {
            return None;
        }
        self.frames.push((port, vec![0; len]));
        self.frames.last_mut().map(|(_, f)| f.as_mut_slice())
    }
}

/// Per-call context: the clock, the lcore's own counters and its emitter.
pub struct Ctx<'a> {
    /// TSC at the start of the burst, or read within the last few loop iterations (µs)
    /// before it (the loop does not read the clock for every burst).
    pub now_tsc: u64,
    pub counters: &'a mut LcoreCounters,
    /// Where the role writes frames it originates (rare: handshakes, resets).
    pub emit: &'a mut dyn Emit,
    /// A precise clock (the TSC), for the rare events a role times to the microsecond
    /// (`now_tsc` may be a few loop rounds old); `None` = use `now_tsc` (tests).
    pub clock: Option<fn() -> u64>,
}

impl Ctx<'_> {
    /// The TSC now: precise when the lcore gave a clock, else `now_tsc`.
    pub fn tsc(&self) -> u64 {
        self.clock.map_or(self.now_tsc, |f| f())
    }

    /// A buffer for a new frame of `len` bytes on `port`; counts `no_mbuf` when none is
    /// left.
    pub fn emit(&mut self, port: PortIndex, len: usize) -> Option<&mut [u8]> {
        let f = self.emit.frame(port, len);
        if f.is_none() {
            self.counters.drops.count(DropReason::NoMbuf);
        }
        f
    }
}

/// A packet-processing role. One instance per worker lcore; never shared between lcores.
pub trait Role: Send {
    /// Short name for logs, ctl and metrics.
    fn name(&self) -> &'static str;

    /// Derived state the control thread pushes to the lcore (selection tables, member
    /// lists), applied between bursts by [`Role::update`]. `()` for roles without any.
    type Update: Send + 'static;

    /// Decide one frame that arrived on `ingress`. The role may rewrite the bytes in place
    /// (the length stays the same).
    fn handle(&mut self, ingress: PortIndex, frame: &mut [u8], ctx: &mut Ctx<'_>) -> Verdict;

    /// Whether the lcore calls [`Role::prefetch`] (a role without it pays nothing for the
    /// extra pass over the burst).
    const PREFETCH: bool = false;

    /// Called for every frame of a burst before the first is handled (when
    /// [`Role::PREFETCH`]): the role may ask the CPU to fetch what `handle` will read for
    /// the frame (its table bucket), so that the fetches of the whole burst overlap
    /// instead of stalling one frame after the other. A hint only: it changes nothing.
    #[inline(always)]
    fn prefetch(&self, frame: &[u8]) {
        let _ = frame;
    }

    /// Timers (connection attempts, expiry): called on the lcore every few loop
    /// iterations, busy or idle, with a fresh clock in `ctx.now_tsc`. Frames it emits
    /// leave with the next round.
    fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// Takes new derived state from the control thread. Called on the lcore between
    /// bursts, never concurrently with `handle`. Whatever it replaces is dropped here, so
    /// updates should be cheap to drop (an `Arc` whose last owner is the control thread).
    fn update(&mut self, update: Self::Update) {
        let _ = update;
    }
}
