//! TCP splicing (issue 5, design in `docs/splice.md`). Pure: bytes in, bytes out.
//!
//! * [`cookie`] — SYN cookies: a stateless handshake any appliance of the rack validates.
//! * [`translate`] — the per-segment rewrite of a spliced connection: addresses and ports,
//!   sequence and acknowledgement numbers by Δ, SACK blocks, window rescaling, timestamps,
//!   with incremental checksums.

pub mod cookie;
pub mod translate;
