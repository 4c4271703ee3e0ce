//! The heartbeat message: a versioned, fixed-layout binary record with an HMAC-SHA256
//! trailer (byte layout in `docs/heartbeat.md`).
//!
//! Pure: bytes and a key in, a [`Heartbeat`] or an [`HbDrop`] reason out. No input panics
//! the decoder, every rejection has a reason the receiver counts, and the MAC is compared
//! in constant time (`hmac`'s `verify_slice`), so a forger learns nothing from timing.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// First four bytes of every heartbeat. Also covered by the MAC, so a message of another
/// protocol keyed with the same rack key (splice replication) can never pass as a heartbeat.
pub const MAGIC: [u8; 4] = *b"TSHB";
/// The only layout this build sends and accepts (see "Versioning" in docs/heartbeat.md).
pub const VERSION: u8 = 1;
/// Bytes before the node id: magic, version, role, flags, id length, incarnation, seq,
/// send time, workload, TLV length.
pub const HEADER_LEN: usize = 36;
/// Full HMAC-SHA256 tag: 32 bytes cost nothing at heartbeat sizes, and avoid having to
/// argue about truncation.
pub const MAC_LEN: usize = 32;
/// Longest node id on the wire.
pub const MAX_NODE_ID: usize = 32;
/// Largest per-role status (TLV) area; keeps every heartbeat well inside one frame.
pub const MAX_TLV_AREA: usize = 512;
/// Shortest well-formed message (one-byte id, no TLVs).
pub const MIN_LEN: usize = HEADER_LEN + 1 + MAC_LEN;
/// Longest well-formed message; a receive buffer of this size never truncates a valid one.
pub const MAX_LEN: usize = HEADER_LEN + MAX_NODE_ID + MAX_TLV_AREA + MAC_LEN;
/// Smallest accepted key: shorter HMAC keys are brute-forceable.
pub const MIN_KEY_LEN: usize = 16;

// Field offsets (network byte order).
const OFF_VERSION: usize = 4;
const OFF_ROLE: usize = 5;
const OFF_FLAGS: usize = 6;
const OFF_ID_LEN: usize = 7;
const OFF_INCARNATION: usize = 8;
const OFF_SEQ: usize = 16;
const OFF_SENT: usize = 24;
const OFF_WORKLOAD: usize = 32;
const OFF_TLV_LEN: usize = 34;

/// Why a datagram was not accepted as a heartbeat. Every variant has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HbDrop {
    /// Shorter than its header or than its declared lengths say.
    Truncated,
    /// Does not start with [`MAGIC`]: not a heartbeat (stray traffic, port scan).
    BadMagic,
    /// A heartbeat of a layout this build does not know (a newer or older peer).
    BadVersion,
    /// The MAC does not verify: wrong rack key, corruption or forgery.
    BadMac,
    /// Authenticated (or structurally impossible) but invalid content: bad lengths,
    /// trailing bytes, unknown role, reserved flag bits, workload > 1, bad node id, bad TLVs.
    Malformed,
}

impl HbDrop {
    pub const ALL: [HbDrop; 5] = [
        HbDrop::Truncated,
        HbDrop::BadMagic,
        HbDrop::BadVersion,
        HbDrop::BadMac,
        HbDrop::Malformed,
    ];
    /// Stable snake_case name for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            HbDrop::Truncated => "truncated",
            HbDrop::BadMagic => "bad_magic",
            HbDrop::BadVersion => "bad_version",
            HbDrop::BadMac => "bad_mac",
            HbDrop::Malformed => "malformed",
        }
    }
}

impl fmt::Display for HbDrop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a heartbeat could not be encoded (a bug in the caller, never peer input).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// A TLV of type 0 (reserved).
    TlvKindZero,
    /// A TLV value longer than 255 bytes.
    TlvValueTooLong,
    /// TLVs larger than [`MAX_TLV_AREA`] in total.
    TlvAreaTooLong,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TlvKindZero => write!(f, "heartbeat TLV type 0 is reserved"),
            EncodeError::TlvValueTooLong => write!(f, "heartbeat TLV value longer than 255 bytes"),
            EncodeError::TlvAreaTooLong => {
                write!(
                    f,
                    "heartbeat TLVs longer than {MAX_TLV_AREA} bytes in total"
                )
            }
        }
    }
}

impl std::error::Error for EncodeError {}

/// A node id as it travels in heartbeats: 1..=32 bytes of `[A-Za-z0-9_.-]` (the config's
/// name alphabet). Validated once, so encoding cannot fail on it and replay tables and the
/// detector can key on it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    /// `None` if `s` is empty, longer than [`MAX_NODE_ID`] or has other characters.
    pub fn new(s: &str) -> Option<NodeId> {
        if Self::valid(s.as_bytes()) {
            Some(NodeId(s.to_string()))
        } else {
            None
        }
    }
    fn valid(b: &[u8]) -> bool {
        !b.is_empty()
            && b.len() <= MAX_NODE_ID
            && b.iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for NodeId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// What the sender is. Receivers use it for display and sanity, not for trust: the rack key
/// is shared, so every key holder can claim any role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HbRole {
    /// A tapsplice appliance (peer class `appliance`).
    Appliance = 0,
    /// A proxy that is a balance member (peer class `proxy`).
    Proxy = 1,
    /// A server speaking for itself without the agent (peer class `server`).
    Server = 2,
    /// `tapsplice agent` on a server, with an application health probe (peer class `server`).
    Agent = 3,
}

impl HbRole {
    pub fn from_u8(v: u8) -> Option<HbRole> {
        match v {
            0 => Some(HbRole::Appliance),
            1 => Some(HbRole::Proxy),
            2 => Some(HbRole::Server),
            3 => Some(HbRole::Agent),
            _ => None,
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            HbRole::Appliance => "appliance",
            HbRole::Proxy => "proxy",
            HbRole::Server => "server",
            HbRole::Agent => "agent",
        }
    }
}

/// Available capacity W_i in [0, 1] (thesis §4.5.2), fixed point in 1/10000 units so that
/// it round-trips exactly and needs no float on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Workload(u16);

impl Workload {
    /// 1.0 on the wire.
    pub const SCALE: u16 = 10_000;
    pub const FULL: Workload = Workload(Self::SCALE);
    pub const ZERO: Workload = Workload(0);

    /// Clamps to [0, 1]; NaN becomes 0 (a sender that cannot compute W offers nothing).
    pub fn from_f64(w: f64) -> Workload {
        if w.is_nan() || w <= 0.0 {
            Workload(0)
        } else if w >= 1.0 {
            Workload::FULL
        } else {
            Workload((w * f64::from(Self::SCALE)).round() as u16)
        }
    }
    /// `None` above [`Workload::SCALE`].
    pub fn from_raw(v: u16) -> Option<Workload> {
        (v <= Self::SCALE).then_some(Workload(v))
    }
    pub fn raw(&self) -> u16 {
        self.0
    }
    pub fn as_f64(&self) -> f64 {
        f64::from(self.0) / f64::from(Self::SCALE)
    }
}

/// Status bits. Reserved bits must be zero (new information goes into TLVs or a new
/// version), so a receiver never silently ignores something it does not understand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct StatusFlags {
    /// The node's service is healthy (the agent's probe passed; an appliance's workers run).
    /// Lets the detector tell "application crashed" (AppDown) from "machine dead" (Down).
    pub app_alive: bool,
    /// Serving, but impaired (e.g. one link of a bond down); informational.
    pub degraded: bool,
    /// Operator drain: take no new work, keep existing.
    pub draining: bool,
}

impl StatusFlags {
    pub const APP_ALIVE: u8 = 0x01;
    pub const DEGRADED: u8 = 0x02;
    pub const DRAINING: u8 = 0x04;
    pub const RESERVED: u8 = !(Self::APP_ALIVE | Self::DEGRADED | Self::DRAINING);

    pub fn to_bits(self) -> u8 {
        (if self.app_alive { Self::APP_ALIVE } else { 0 })
            | (if self.degraded { Self::DEGRADED } else { 0 })
            | (if self.draining { Self::DRAINING } else { 0 })
    }
    /// `None` if a reserved bit is set.
    pub fn from_bits(b: u8) -> Option<StatusFlags> {
        if b & Self::RESERVED != 0 {
            return None;
        }
        Some(StatusFlags {
            app_alive: b & Self::APP_ALIVE != 0,
            degraded: b & Self::DEGRADED != 0,
            draining: b & Self::DRAINING != 0,
        })
    }
}

/// One entry of the per-role status area: type (1..=255; 0 reserved), up to 255 bytes.
/// No types are defined yet; receivers keep unknown ones and ignore them, so adding a type
/// needs no version change.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    pub kind: u8,
    pub value: Vec<u8>,
}

/// One heartbeat, as sent and as accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    /// Who sends it (must be a configured peer of the receiver).
    pub node: NodeId,
    /// Process generation: strictly increasing across restarts (boot time in µs), so a
    /// restart is visible and old-life messages cannot be replayed.
    pub incarnation: u64,
    /// Per-incarnation counter, one per send round.
    pub seq: u64,
    pub role: HbRole,
    pub workload: Workload,
    pub status: StatusFlags,
    /// Sender's wall clock, µs since the UNIX epoch. Informational (clocks are not assumed
    /// synchronised); freshness comes from (incarnation, seq).
    pub sent_at_us: u64,
    /// Per-role status area.
    pub tlvs: Vec<Tlv>,
}

/// A keyed HMAC-SHA256 state, prepared once and cloned per message (cheaper than keying
/// for every heartbeat).
#[derive(Clone)]
pub struct MacKey(HmacSha256);

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(..)")
    }
}

/// The key given to [`MacKey::new`] is shorter than [`MIN_KEY_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyTooShort(pub usize);

impl fmt::Display for KeyTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HMAC key of {} bytes is too short (at least {MIN_KEY_LEN})",
            self.0
        )
    }
}

impl std::error::Error for KeyTooShort {}

impl MacKey {
    pub fn new(key: &[u8]) -> Result<MacKey, KeyTooShort> {
        if key.len() < MIN_KEY_LEN {
            return Err(KeyTooShort(key.len()));
        }
        // HMAC takes keys of any length; the error arm is unreachable in practice.
        <HmacSha256 as Mac>::new_from_slice(key)
            .map(MacKey)
            .map_err(|_| KeyTooShort(key.len()))
    }

    fn tag(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.0.clone();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = self.0.clone();
        m.update(data);
        m.verify_slice(tag).is_ok()
    }
}

fn tlv_area_len(tlvs: &[Tlv]) -> Result<usize, EncodeError> {
    let mut n = 0usize;
    for t in tlvs {
        if t.kind == 0 {
            return Err(EncodeError::TlvKindZero);
        }
        if t.value.len() > 255 {
            return Err(EncodeError::TlvValueTooLong);
        }
        n += 2 + t.value.len();
        if n > MAX_TLV_AREA {
            return Err(EncodeError::TlvAreaTooLong);
        }
    }
    Ok(n)
}

/// Appends the encoded, MACed heartbeat to `out`; returns its length. Reuse `out` to avoid
/// an allocation per send.
pub fn encode_into(hb: &Heartbeat, key: &MacKey, out: &mut Vec<u8>) -> Result<usize, EncodeError> {
    let tlv_len = tlv_area_len(&hb.tlvs)?;
    let id = hb.node.as_str().as_bytes();
    let start = out.len();
    out.reserve(HEADER_LEN + id.len() + tlv_len + MAC_LEN);
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(hb.role as u8);
    out.push(hb.status.to_bits());
    out.push(id.len() as u8);
    out.extend_from_slice(&hb.incarnation.to_be_bytes());
    out.extend_from_slice(&hb.seq.to_be_bytes());
    out.extend_from_slice(&hb.sent_at_us.to_be_bytes());
    out.extend_from_slice(&hb.workload.raw().to_be_bytes());
    out.extend_from_slice(&(tlv_len as u16).to_be_bytes());
    out.extend_from_slice(id);
    for t in &hb.tlvs {
        out.push(t.kind);
        out.push(t.value.len() as u8);
        out.extend_from_slice(&t.value);
    }
    let tag = key.tag(&out[start..]);
    out.extend_from_slice(&tag);
    Ok(out.len() - start)
}

/// Encodes and MACs a heartbeat into a fresh buffer.
pub fn encode(hb: &Heartbeat, key: &MacKey) -> Result<Vec<u8>, EncodeError> {
    let mut v = Vec::with_capacity(HEADER_LEN + MAX_NODE_ID + MAC_LEN);
    encode_into(hb, key, &mut v)?;
    Ok(v)
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

fn be_u16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// Decodes and authenticates one datagram.
///
/// Order of checks (so that each reason means one thing): magic, version and lengths are
/// structural and checked first (a layout we cannot parse cannot be MAC-checked); then the
/// MAC over everything before it; content rules only after the MAC, so unauthenticated
/// junk counts as `BadMac`, not `Malformed`.
pub fn decode(b: &[u8], key: &MacKey) -> Result<Heartbeat, HbDrop> {
    let m = b.len().min(MAGIC.len());
    if b[..m] != MAGIC[..m] {
        return Err(HbDrop::BadMagic);
    }
    if b.len() <= OFF_VERSION {
        return Err(HbDrop::Truncated);
    }
    if b[OFF_VERSION] != VERSION {
        return Err(HbDrop::BadVersion);
    }
    if b.len() < HEADER_LEN {
        return Err(HbDrop::Truncated);
    }
    let id_len = usize::from(b[OFF_ID_LEN]);
    let tlv_len = usize::from(be_u16(b, OFF_TLV_LEN));
    if id_len == 0 || id_len > MAX_NODE_ID || tlv_len > MAX_TLV_AREA {
        return Err(HbDrop::Malformed);
    }
    let body = HEADER_LEN + id_len + tlv_len;
    let total = body + MAC_LEN;
    if b.len() < total {
        return Err(HbDrop::Truncated);
    }
    if b.len() > total {
        return Err(HbDrop::Malformed);
    }
    if !key.verify(&b[..body], &b[body..]) {
        return Err(HbDrop::BadMac);
    }

    let role = HbRole::from_u8(b[OFF_ROLE]).ok_or(HbDrop::Malformed)?;
    let status = StatusFlags::from_bits(b[OFF_FLAGS]).ok_or(HbDrop::Malformed)?;
    let workload = Workload::from_raw(be_u16(b, OFF_WORKLOAD)).ok_or(HbDrop::Malformed)?;
    let id = &b[HEADER_LEN..HEADER_LEN + id_len];
    if !NodeId::valid(id) {
        return Err(HbDrop::Malformed);
    }
    // Valid ASCII by the check above.
    let node = NodeId(id.iter().map(|&c| c as char).collect());
    let mut tlvs = Vec::new();
    let mut area = &b[HEADER_LEN + id_len..body];
    while !area.is_empty() {
        if area.len() < 2 || area[0] == 0 {
            return Err(HbDrop::Malformed);
        }
        let n = usize::from(area[1]);
        if area.len() < 2 + n {
            return Err(HbDrop::Malformed);
        }
        tlvs.push(Tlv {
            kind: area[0],
            value: area[2..2 + n].to_vec(),
        });
        area = &area[2 + n..];
    }
    Ok(Heartbeat {
        node,
        incarnation: be_u64(b, OFF_INCARNATION),
        seq: be_u64(b, OFF_SEQ),
        role,
        workload,
        status,
        sent_at_us: be_u64(b, OFF_SENT),
        tlvs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> MacKey {
        MacKey::new(b"0123456789abcdef0123456789abcdef").unwrap()
    }

    fn sample() -> Heartbeat {
        Heartbeat {
            node: NodeId::new("proxy-1").unwrap(),
            incarnation: 1_700_000_000_000_000,
            seq: 42,
            role: HbRole::Proxy,
            workload: Workload::from_f64(0.75),
            status: StatusFlags {
                app_alive: true,
                degraded: false,
                draining: true,
            },
            sent_at_us: 1_700_000_000_123_456,
            tlvs: vec![Tlv {
                kind: 7,
                value: vec![1, 2, 3],
            }],
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let hb = sample();
        let b = encode(&hb, &key()).unwrap();
        assert_eq!(&b[0..4], b"TSHB");
        assert_eq!(b[4], 1);
        assert_eq!(b[5], 1); // proxy
        assert_eq!(b[6], 0x05); // app_alive | draining
        assert_eq!(b[7], 7);
        assert_eq!(&b[8..16], &hb.incarnation.to_be_bytes());
        assert_eq!(&b[16..24], &42u64.to_be_bytes());
        assert_eq!(&b[24..32], &hb.sent_at_us.to_be_bytes());
        assert_eq!(&b[32..34], &7500u16.to_be_bytes());
        assert_eq!(&b[34..36], &5u16.to_be_bytes());
        assert_eq!(&b[36..43], b"proxy-1");
        assert_eq!(&b[43..48], &[7, 3, 1, 2, 3]);
        assert_eq!(b.len(), 48 + 32);
        assert_eq!(decode(&b, &key()), Ok(hb));
    }

    #[test]
    fn rejections_have_their_reasons() {
        let k = key();
        let b = encode(&sample(), &k).unwrap();
        assert_eq!(decode(&[], &k), Err(HbDrop::Truncated));
        assert_eq!(decode(b"TS", &k), Err(HbDrop::Truncated));
        assert_eq!(decode(b"XX", &k), Err(HbDrop::BadMagic));
        assert_eq!(decode(b"GET / HTTP/1.1\r\n", &k), Err(HbDrop::BadMagic));
        assert_eq!(decode(&b[..4], &k), Err(HbDrop::Truncated));
        assert_eq!(decode(&b[..20], &k), Err(HbDrop::Truncated));
        assert_eq!(decode(&b[..b.len() - 1], &k), Err(HbDrop::Truncated));
        let mut v = b.clone();
        v[4] = 2;
        assert_eq!(decode(&v, &k), Err(HbDrop::BadVersion));
        let mut v = b.clone();
        v.push(0);
        assert_eq!(decode(&v, &k), Err(HbDrop::Malformed));
        let other = MacKey::new(b"another key of 16+ bytes").unwrap();
        assert_eq!(decode(&b, &other), Err(HbDrop::BadMac));
        let mut v = b.clone();
        let n = v.len();
        v[n - 1] ^= 1;
        assert_eq!(decode(&v, &k), Err(HbDrop::BadMac));
        let mut v = b.clone();
        v[7] = 0;
        assert_eq!(decode(&v, &k), Err(HbDrop::Malformed));
        let mut v = b;
        v[7] = 33;
        assert_eq!(decode(&v, &k), Err(HbDrop::Malformed));
    }

    /// Builds a message with a correct MAC over arbitrary header/body content, to reach
    /// the post-MAC content checks.
    fn forge(mut body: Vec<u8>, k: &MacKey) -> Vec<u8> {
        let t = k.tag(&body);
        body.extend_from_slice(&t);
        body
    }

    #[test]
    fn authenticated_but_invalid_content_is_malformed() {
        let k = key();
        let good = encode(&sample(), &k).unwrap();
        let body = good[..good.len() - MAC_LEN].to_vec();
        let cases: Vec<(usize, u8)> = vec![
            (OFF_ROLE, 4),        // unknown role
            (OFF_FLAGS, 0x08),    // reserved flag bit
            (OFF_WORKLOAD, 0x27), // 0x27xx > 10000
            (HEADER_LEN, b' '),   // bad node id character
            (HEADER_LEN + 7, 0),  // TLV type 0
            (HEADER_LEN + 8, 9),  // TLV overruns the area
        ];
        for (off, val) in cases {
            let mut b = body.clone();
            b[off] = val;
            if off == OFF_WORKLOAD {
                b[off + 1] = 0x11;
            }
            assert_eq!(
                decode(&forge(b, &k), &k),
                Err(HbDrop::Malformed),
                "offset {off}"
            );
        }
        // A TLV area with a dangling single byte.
        let mut hb = sample();
        hb.tlvs.clear();
        let good = encode(&hb, &k).unwrap();
        let mut b = good[..good.len() - MAC_LEN].to_vec();
        b[OFF_TLV_LEN + 1] = 1;
        b.push(9);
        assert_eq!(decode(&forge(b, &k), &k), Err(HbDrop::Malformed));
    }

    #[test]
    fn encode_refuses_bad_tlvs() {
        let k = key();
        let mut hb = sample();
        hb.tlvs = vec![Tlv {
            kind: 0,
            value: vec![],
        }];
        assert_eq!(encode(&hb, &k), Err(EncodeError::TlvKindZero));
        hb.tlvs = vec![Tlv {
            kind: 1,
            value: vec![0; 256],
        }];
        assert_eq!(encode(&hb, &k), Err(EncodeError::TlvValueTooLong));
        hb.tlvs = vec![
            Tlv {
                kind: 1,
                value: vec![0; 255]
            };
            3
        ];
        assert_eq!(encode(&hb, &k), Err(EncodeError::TlvAreaTooLong));
        hb.tlvs = vec![
            Tlv {
                kind: 1,
                value: vec![0; 254],
            },
            Tlv {
                kind: 2,
                value: vec![0; 254],
            },
        ];
        let b = encode(&hb, &k).unwrap();
        assert_eq!(b.len(), HEADER_LEN + 7 + MAX_TLV_AREA + MAC_LEN);
        assert_eq!(decode(&b, &k).unwrap(), hb);
    }

    #[test]
    fn node_ids_and_workload() {
        assert!(NodeId::new("").is_none());
        assert!(NodeId::new(&"a".repeat(33)).is_none());
        assert!(NodeId::new(&"a".repeat(32)).is_some());
        assert!(NodeId::new("a b").is_none());
        assert!(NodeId::new("é").is_none());
        assert_eq!(Workload::from_f64(f64::NAN), Workload::ZERO);
        assert_eq!(Workload::from_f64(-1.0), Workload::ZERO);
        assert_eq!(Workload::from_f64(7.0), Workload::FULL);
        assert_eq!(Workload::from_f64(0.12345).raw(), 1235);
        assert_eq!(Workload::from_raw(10_001), None);
        assert!(MacKey::new(&[0; 15]).is_err());
        assert!(MacKey::new(&[0; 16]).is_ok());
    }

    fn arb_hb() -> impl Strategy<Value = Heartbeat> {
        (
            "[A-Za-z0-9_.-]{1,32}",
            any::<u64>(),
            any::<u64>(),
            0u8..4,
            0u16..=10_000,
            0u8..8,
            any::<u64>(),
            proptest::collection::vec(
                (1u8..=255, proptest::collection::vec(any::<u8>(), 0..40)),
                0..5,
            ),
        )
            .prop_map(|(id, inc, seq, role, w, fl, sent, tl)| Heartbeat {
                node: NodeId::new(&id).unwrap(),
                incarnation: inc,
                seq,
                role: HbRole::from_u8(role).unwrap(),
                workload: Workload::from_raw(w).unwrap(),
                status: StatusFlags::from_bits(fl).unwrap(),
                sent_at_us: sent,
                tlvs: tl
                    .into_iter()
                    .map(|(kind, value)| Tlv { kind, value })
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn decode_never_panics(b in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = decode(&b, &key());
        }

        #[test]
        fn decode_never_panics_near_valid(hb in arb_hb(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6), cut in any::<usize>(), extra in proptest::collection::vec(any::<u8>(), 0..4)) {
            let k = key();
            let orig = encode(&hb, &k).unwrap();
            let mut b = orig.clone();
            for (i, v) in edits { let n = b.len(); b[i % n] = v; }
            b.truncate(cut % (b.len() + 1));
            b.extend_from_slice(&extra);
            let r = decode(&b, &k);
            if b != orig { prop_assert!(r.is_err()); }
        }

        #[test]
        fn round_trip(hb in arb_hb()) {
            let k = key();
            let b = encode(&hb, &k).unwrap();
            prop_assert!(b.len() >= MIN_LEN && b.len() <= MAX_LEN);
            prop_assert_eq!(decode(&b, &k), Ok(hb));
        }

        #[test]
        fn every_single_bit_flip_is_rejected(hb in arb_hb()) {
            let k = key();
            let b = encode(&hb, &k).unwrap();
            for bit in 0..b.len() * 8 {
                let mut v = b.clone();
                v[bit / 8] ^= 1 << (bit % 8);
                prop_assert!(decode(&v, &k).is_err(), "bit {} accepted", bit);
            }
        }
    }
}
