//! Deterministic content: requests and replies are pseudo-random streams addressed by
//! (seed, offset), so any byte can be regenerated and verified at any position.
//!
//! Request layout (little endian, `request_bytes` long, ≥ 32):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | magic `TBRQ` |
//! | 4 | mode: 0 = echo (reply is the request itself), 1 = generated reply |
//! | 5..8 | zero |
//! | 8..16 | seed |
//! | 16..24 | reply length in bytes |
//! | 24..28 | request length |
//! | 28..32 | zero |
//! | 32.. | padding: stream(seed ^ PAD_KEY) |
//!
//! A generated reply is stream(seed)[0..reply length].

use crate::runid::splitmix;

pub const MAGIC: &[u8; 4] = b"TBRQ";
const PAD_KEY: u64 = 0x005e_ed0f_9ad0_0001;
pub const HEADER: usize = 32;

/// Word `k` of stream `seed`.
#[inline]
fn word(seed: u64, k: u64) -> u64 {
    splitmix(seed ^ k.wrapping_mul(0xD6E8_FEB8_6659_FD93))
}

/// Fill `buf` with stream(seed)[offset .. offset + buf.len()].
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = 0usize;
    let mut k = offset / 8;
    let skip = (offset % 8) as usize;
    if skip != 0 {
        let w = word(seed, k).to_le_bytes();
        let n = (8 - skip).min(buf.len());
        buf[..n].copy_from_slice(&w[skip..skip + n]);
        pos = n;
        k += 1;
    }
    let mut chunks = buf[pos..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&word(seed, k).to_le_bytes());
        k += 1;
    }
    let rem = chunks.into_remainder();
    if !rem.is_empty() {
        let w = word(seed, k).to_le_bytes();
        let n = rem.len();
        rem.copy_from_slice(&w[..n]);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub echo: bool,
    pub seed: u64,
    pub reply_len: u64,
    pub len: u32,
}

impl Request {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.len as usize];
        b[0..4].copy_from_slice(MAGIC);
        b[4] = if self.echo { 0 } else { 1 };
        b[8..16].copy_from_slice(&self.seed.to_le_bytes());
        b[16..24].copy_from_slice(&self.reply_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        fill(self.seed ^ PAD_KEY, 0, &mut b[HEADER..]);
        b
    }

    /// Decode and verify a request (header and every padding byte).
    pub fn decode(b: &[u8]) -> Result<Request, String> {
        if b.len() < HEADER || &b[0..4] != MAGIC {
            return Err("bad request magic".into());
        }
        let u64at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = u32::from_le_bytes(b[24..28].try_into().unwrap_or([0; 4]));
        if len as usize != b.len() {
            return Err(format!("request length field {} != {}", len, b.len()));
        }
        let r = Request {
            echo: b[4] == 0,
            seed: u64at(8),
            reply_len: u64at(16),
            len,
        };
        if r.echo && r.reply_len != len as u64 {
            return Err("echo request with a reply length != request length".into());
        }
        let mut pad = vec![0u8; b.len() - HEADER];
        fill(r.seed ^ PAD_KEY, 0, &mut pad);
        if pad != b[HEADER..] {
            return Err("request padding corrupted".into());
        }
        Ok(r)
    }
}

/// Seed of request `req` on connection `conn` of a workload seeded with `seed`.
pub fn request_seed(seed: u64, conn: u64, req: u64) -> u64 {
    splitmix(splitmix(seed ^ (conn << 40)) ^ req)
}

/// Number of differing bytes between `got` and `want` (same length).
pub fn mismatches(got: &[u8], want: &[u8]) -> u64 {
    if got == want {
        0
    } else {
        got.iter().zip(want).filter(|(a, b)| a != b).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_position_addressable() {
        let mut whole = vec![0u8; 1000];
        fill(42, 0, &mut whole);
        for (off, len) in [(0, 1), (3, 5), (7, 9), (8, 16), (13, 300), (999, 1)] {
            let mut part = vec![0u8; len];
            fill(42, off as u64, &mut part);
            assert_eq!(&part[..], &whole[off..off + len], "off {} len {}", off, len);
        }
        let mut other = vec![0u8; 1000];
        fill(43, 0, &mut other);
        assert!(mismatches(&whole, &other) > 900);
    }

    #[test]
    fn request_round_trip_and_corruption() {
        let r = Request {
            echo: false,
            seed: 7,
            reply_len: 10240,
            len: 150,
        };
        let mut b = r.encode();
        assert_eq!(Request::decode(&b).unwrap(), r);
        b[100] ^= 1;
        assert!(Request::decode(&b).is_err());
        let e = Request {
            echo: true,
            seed: 9,
            reply_len: 150,
            len: 150,
        };
        assert_eq!(Request::decode(&e.encode()).unwrap(), e);
    }
}
