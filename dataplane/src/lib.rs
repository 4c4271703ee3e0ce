//! tapsplice's poll-mode side.
//!
//! * [`packet`] — zero-copy typed views over frame bytes, checksums, flow keys. Pure.
//! * [`balance`] — member selection for the balance role: flow hash by policy and a
//!   weighted Maglev table. Pure.
//! * [`hugemem`] — fixed-size arrays on transparent huge pages for the big tables.
//! * [`lcore_link`] — the bounded channels between the control thread and the lcores.
//! * [`role`] — what an lcore does with a frame: the `Role` trait and its implementations
//!   (forward today; balance, splice and tap beside it). Pure: bytes and a clock in,
//!   verdicts and bytes out.
//! * [`splice`] — TCP splicing (issue 5): the per-segment rewrite of a spliced connection.
//!   Pure.
//! * [`stats`] — per-lcore counters, drop reasons and latency histograms.
//! * `port` (feature `dpdk`) — the only code that touches DPDK: EAL, mempools, ports,
//!   mbufs and the lcore burst loop.

pub mod balance;
pub mod hugemem;
pub mod lcore_link;
pub mod packet;
pub mod role;
pub mod splice;
pub mod stats;

#[cfg(feature = "dpdk")]
pub mod port;
