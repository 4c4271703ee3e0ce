//! TCP splicing (issue 5, design in `docs/splice.md`). Pure: bytes in, bytes out.
//!
//! * [`cookie`] — SYN cookies: a stateless handshake any appliance of the rack validates.
//! * [`fuzz`] — the splice's pure logic on arbitrary bytes (fuzz target and proptest).
//! * [`index`] — the connection index: a leg's tuple to its slot in one cache line.
//! * [`options`] — the options a SYN offers, and the option block of the handshake
//!   segments the appliance sends.
//! * [`request`] — routing a connection by its first HTTP/1.x request (or its port).
//! * [`rss`] — FullNAT ports whose replies a NIC's RSS brings to the lcore that chose them.
//! * [`synthetic`] — connections for the fast-path benchmark (entries and their frames).
//! * [`table`] — the splice table (fixed capacity, both legs' keys, idle expiry) and the
//!   FullNAT port ring.
//! * [`translate`] — the per-segment rewrite of a spliced connection: addresses and ports,
//!   sequence and acknowledgement numbers by Δ, SACK blocks, window rescaling, timestamps,
//!   with incremental checksums.

pub mod cookie;
pub mod fuzz;
pub mod index;
pub mod options;
pub mod request;
pub mod rss;
pub mod synthetic;
pub mod table;
pub mod translate;
