//! The channels between the control thread and the worker lcores.
//!
//! Each worker has its own bounded command queue (control → lcore: derived state for the
//! role, frames to send) and all workers share one bounded punt queue (lcore → control:
//! frames the role hands over). The lcore only ever `try_recv`s and `try_send`s — it never
//! waits for the control thread; a full punt queue is a counted drop. Frames travel by
//! value in a fixed-size [`SmallFrame`] (heartbeats and ARP are small), so a bounded
//! crossbeam channel, whose slots are allocated when it is created, moves them without
//! allocating.
//!
//! Workers also pass frames to each other ([`Handoff`]): a role that receives a frame
//! whose state another lcore holds (a backend's segment for another lcore's NAT port)
//! says so (`Verdict::Handoff`), and the loop moves the mbuf itself, not a copy, to that
//! lcore's inbox.

use crate::role::PortIndex;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest frame a [`SmallFrame`] holds: a heartbeat with its headers and some TLVs.
pub const SMALL_FRAME: usize = 704;

/// A frame small enough to travel by value, with the port it arrived on or leaves by.
#[derive(Clone)]
pub struct SmallFrame {
    pub port: PortIndex,
    len: u16,
    bytes: [u8; SMALL_FRAME],
}

impl SmallFrame {
    /// A copy of `frame`; `None` when it is larger than [`SMALL_FRAME`].
    pub fn copy_from(port: PortIndex, frame: &[u8]) -> Option<SmallFrame> {
        SmallFrame::build(port, |buf| {
            buf.get_mut(..frame.len())?.copy_from_slice(frame);
            Some(frame.len())
        })
    }

    /// A frame written by `write` into the buffer, which returns the length it wrote.
    pub fn build(port: PortIndex, write: impl FnOnce(&mut [u8]) -> Option<usize>) -> Option<SmallFrame> {
        let mut f = SmallFrame { port, len: 0, bytes: [0; SMALL_FRAME] };
        let n = write(&mut f.bytes)?;
        f.len = u16::try_from(n).ok().filter(|&n| usize::from(n) <= SMALL_FRAME)?;
        Some(f)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for SmallFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SmallFrame {{ port: {}, len: {} }}", self.port, self.len)
    }
}

/// What the control thread asks of a worker. Frames travel inline (not boxed) on purpose:
/// the channel's slots are allocated once, so sending one allocates nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum ToLcore<U> {
    /// New derived state for the role ([`crate::role::Role::update`]).
    Update(U),
    /// Send this frame on `frame.port` from the worker's own TX queue.
    Transmit(SmallFrame),
}

/// A frame one worker passes to another: the address of its mbuf (ownership moves with
/// it) and the port it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handed {
    pub mbuf: usize,
    pub port: PortIndex,
}

/// A worker's links to the other workers for frames whose state they hold.
pub struct Handoff {
    /// This worker's index (0-based).
    pub me: u16,
    /// Frames other workers pass to this one.
    pub inbox: Receiver<Handed>,
    /// Every worker's inbox, by index (this worker's own too, never used).
    pub peers: Vec<Sender<Handed>>,
}

/// The worker's end.
pub struct LcoreEnd<U> {
    pub commands: Receiver<ToLcore<U>>,
    pub punts: Sender<SmallFrame>,
    pub handoff: Handoff,
}

/// The control thread's end: one command sender per worker, and the shared punt queue.
pub struct ControlEnd<U> {
    pub commands: Vec<Sender<ToLcore<U>>>,
    pub punts: Receiver<SmallFrame>,
}

/// Queue sizes: commands per worker, and punted frames from all workers.
pub const COMMAND_QUEUE: usize = 256;
pub const PUNT_QUEUE: usize = 4096;
/// Frames waiting in one worker's handoff inbox at most (a few bursts: a worker takes one
/// burst of them per loop round). Each is an mbuf of the pool: `check` counts them.
pub const HANDOFF_QUEUE: usize = 256;

/// Each port's link as the control side last read it (every 50 ms), shared with the
/// workers: a worker drops what it has for a port whose link is down (`link_down`)
/// instead of handing it to a driver that would fail it. A port not yet read, or beyond
/// the list, counts as up.
#[derive(Clone, Debug)]
pub struct LinkStates(Arc<[AtomicBool]>);

impl LinkStates {
    pub fn new(ports: usize) -> LinkStates {
        LinkStates((0..ports).map(|_| AtomicBool::new(true)).collect())
    }

    /// Stores only a change: every worker reads these cells each round.
    pub fn set(&self, port: usize, up: bool) {
        if let Some(s) = self.0.get(port).filter(|s| s.load(Ordering::Relaxed) != up) {
            s.store(up, Ordering::Relaxed);
        }
    }

    #[inline(always)]
    pub fn is_up(&self, port: usize) -> bool {
        self.0.get(port).is_none_or(|s| s.load(Ordering::Relaxed))
    }
}

/// Channels for `workers` workers.
pub fn links<U>(workers: usize) -> (ControlEnd<U>, Vec<LcoreEnd<U>>) {
    let (punt_tx, punt_rx) = bounded(PUNT_QUEUE);
    let mut commands = Vec::with_capacity(workers);
    let mut ends = Vec::with_capacity(workers);
    let (peers, inboxes): (Vec<_>, Vec<_>) = (0..workers).map(|_| bounded(HANDOFF_QUEUE)).unzip();
    for (me, inbox) in inboxes.into_iter().enumerate() {
        let (tx, rx) = bounded(COMMAND_QUEUE);
        commands.push(tx);
        let handoff = Handoff { me: me as u16, inbox, peers: peers.clone() };
        ends.push(LcoreEnd { commands: rx, punts: punt_tx.clone(), handoff });
    }
    (ControlEnd { commands, punts: punt_rx }, ends)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_frames_copy_exactly_and_refuse_what_does_not_fit() {
        let f = SmallFrame::copy_from(3, &[1, 2, 3]).unwrap();
        assert_eq!((f.port, f.bytes()), (3, &[1u8, 2, 3][..]));
        assert!(SmallFrame::copy_from(0, &[0u8; SMALL_FRAME]).is_some());
        assert!(SmallFrame::copy_from(0, &[0u8; SMALL_FRAME + 1]).is_none());
        assert!(SmallFrame::build(0, |_| Some(SMALL_FRAME + 1)).is_none());
        assert!(SmallFrame::build(0, |_| None).is_none());
    }

    #[test]
    fn every_worker_has_its_own_commands_and_all_share_the_punt_queue() {
        let (control, lcores) = links::<u32>(2);
        control.commands[1].try_send(ToLcore::Update(7)).unwrap();
        assert!(lcores[0].commands.try_recv().is_err());
        assert!(matches!(lcores[1].commands.try_recv(), Ok(ToLcore::Update(7))));
        lcores[0].punts.try_send(SmallFrame::copy_from(0, b"a").unwrap()).unwrap();
        lcores[1].punts.try_send(SmallFrame::copy_from(1, b"b").unwrap()).unwrap();
        let got: Vec<u16> = control.punts.try_iter().map(|f| f.port).collect();
        assert_eq!(got, vec![0, 1]);
        // A full queue refuses instead of blocking the lcore.
        for _ in 0..PUNT_QUEUE {
            lcores[0].punts.try_send(SmallFrame::copy_from(0, b"x").unwrap()).unwrap();
        }
        assert!(lcores[0].punts.try_send(SmallFrame::copy_from(0, b"x").unwrap()).is_err());
    }

    #[test]
    fn link_states_start_up_and_are_shared_by_every_handle() {
        let a = LinkStates::new(2);
        let b = a.clone();
        assert!(a.is_up(0) && a.is_up(1) && a.is_up(7), "unknown counts as up");
        a.set(1, false);
        assert!(b.is_up(0) && !b.is_up(1));
        a.set(9, false);
        assert!(b.is_up(9));
    }

    #[test]
    fn a_frame_handed_to_a_worker_reaches_only_that_worker() {
        let (_control, lcores) = links::<u32>(3);
        assert_eq!(lcores.iter().map(|l| l.handoff.me).collect::<Vec<_>>(), vec![0, 1, 2]);
        let f = Handed { mbuf: 0x1000, port: 1 };
        lcores[0].handoff.peers[2].try_send(f).unwrap();
        assert!(lcores[0].handoff.inbox.try_recv().is_err());
        assert!(lcores[1].handoff.inbox.try_recv().is_err());
        assert_eq!(lcores[2].handoff.inbox.try_recv(), Ok(f));
        for _ in 0..HANDOFF_QUEUE {
            lcores[1].handoff.peers[0].try_send(f).unwrap();
        }
        assert!(lcores[1].handoff.peers[0].try_send(f).is_err(), "a full inbox refuses");
    }
}
