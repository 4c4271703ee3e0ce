//! TCP splicing (issue 5, design in `docs/splice.md`). Pure: bytes in, bytes out.
//!
//! * [`cookie`] — SYN cookies: a stateless handshake any appliance of the rack validates.
//! * [`options`] — the options a SYN offers, and the option block of the handshake
//!   segments the appliance sends.
//! * [`translate`] — the per-segment rewrite of a spliced connection: addresses and ports,
//!   sequence and acknowledgement numbers by Δ, SACK blocks, window rescaling, timestamps,
//!   with incremental checksums.

pub mod cookie;
pub mod options;
pub mod translate;
