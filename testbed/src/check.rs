//! Reachability checks run inside namespaces: ICMP echo (`ping`) and neighbour resolution
//! (`arp`). ping is implemented here with a raw socket (no ping binary needed).

use crate::topology::{Check, CheckKind, Expect};
use anyhow::{anyhow, Result};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub kind: String,
    pub ns: String,
    pub address: String,
    pub expect: String,
    pub passed: bool,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_us: Option<Vec<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lladdr: Option<String>,
}

/// Run a check; `ns` is the host's namespace name.
pub fn run(c: &Check, ns: &str) -> CheckResult {
    let addr: Ipv4Addr = c.address.parse().unwrap_or(Ipv4Addr::UNSPECIFIED);
    let timeout = Duration::from_secs_f64(c.timeout_s);
    let (ok, detail, rtt, lladdr) = match c.kind {
        CheckKind::Ping => match ping_in(ns, addr, c.count, timeout) {
            Ok(r) => {
                let ok = r.len() as u32 == c.count;
                (
                    ok,
                    format!("{}/{} echo replies", r.len(), c.count),
                    Some(r),
                    None,
                )
            }
            Err(e) => (false, format!("{:#}", e), None, None),
        },
        CheckKind::Arp => match arp_in(ns, addr, timeout) {
            Ok((mac, state)) => (
                true,
                format!("{} at {} ({})", addr, mac, state),
                None,
                Some(mac),
            ),
            Err(e) => (false, format!("{:#}", e), None, None),
        },
    };
    let passed = match c.expect {
        Expect::Success => ok,
        Expect::Fail => !ok,
    };
    CheckResult {
        kind: format!("{:?}", c.kind).to_lowercase(),
        ns: c.ns.clone(),
        address: c.address.clone(),
        expect: format!("{:?}", c.expect).to_lowercase(),
        passed,
        detail,
        rtt_us: rtt,
        lladdr,
    }
}

fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        crate::netns::enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("check thread panicked"))?
}

/// Send `count` ICMP echo requests (one every 200 ms) from namespace `ns`; return the RTT
/// of each answered one (µs).
pub fn ping_in(ns: &str, addr: Ipv4Addr, count: u32, timeout: Duration) -> Result<Vec<u64>> {
    in_ns(ns, move || ping(addr, count, timeout))
}

fn checksum(b: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in b.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ping(addr: Ipv4Addr, count: u32, timeout: Duration) -> Result<Vec<u64>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if fd < 0 {
        return Err(anyhow!(
            "raw ICMP socket: {} (needs root)",
            std::io::Error::last_os_error()
        ));
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 50_000,
    };
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    let dst = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    let id = (std::process::id() as u16)
        ^ (crate::runid::splitmix(
            Instant::now().elapsed().as_nanos() as u64 ^ u32::from(addr) as u64,
        ) as u16);
    let deadline = Instant::now() + timeout;
    let mut rtts = Vec::new();
    for seq in 0..count as u16 {
        let mut pkt = vec![0u8; 8 + 32];
        pkt[0] = 8;
        pkt[4..6].copy_from_slice(&id.to_be_bytes());
        pkt[6..8].copy_from_slice(&seq.to_be_bytes());
        for (i, b) in pkt[8..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let cs = checksum(&pkt);
        pkt[2..4].copy_from_slice(&cs.to_be_bytes());
        let t0 = Instant::now();
        let r = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                pkt.as_ptr() as *const libc::c_void,
                pkt.len(),
                0,
                &dst as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        if r < 0 {
            // e.g. no route: counts as unanswered.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let wait_until = (t0 + Duration::from_millis(1000)).min(deadline);
        let mut buf = [0u8; 1500];
        while Instant::now() < wait_until {
            let n = unsafe {
                libc::recv(
                    sock.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                continue;
            }
            let b = &buf[..n as usize];
            let ihl = ((b[0] & 0x0f) as usize) * 4;
            if b.len() < ihl + 8 || b[12..16] != addr.octets() {
                continue;
            }
            let icmp = &b[ihl..];
            if icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes() {
                rtts.push(t0.elapsed().as_micros() as u64);
                break;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        let next = t0 + Duration::from_millis(200);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    Ok(rtts)
}

/// Flush the neighbour entry for `addr` in `ns`, trigger resolution, and wait until it
/// resolves. Returns (lladdr, state).
pub fn arp_in(ns: &str, addr: Ipv4Addr, timeout: Duration) -> Result<(String, String)> {
    let a = addr.to_string();
    let _ = crate::cmd::ip_ns(ns, &["neigh", "flush", "to", &a]);
    let deadline = Instant::now() + timeout;
    let _ = ping_in(ns, addr, 1, Duration::from_millis(300));
    loop {
        let out = crate::cmd::ip_ns(ns, &["neigh", "show", "to", &a])?;
        // "10.99.0.254 dev eth0 lladdr 02:..:01 REACHABLE"
        let words: Vec<&str> = out.split_whitespace().collect();
        let state = words.last().copied().unwrap_or("");
        if let Some(i) = words.iter().position(|w| *w == "lladdr") {
            if let Some(mac) = words.get(i + 1) {
                if !matches!(state, "FAILED" | "INCOMPLETE") {
                    return Ok((mac.to_string(), state.to_string()));
                }
            }
        }
        if Instant::now() >= deadline {
            let st = if out.trim().is_empty() {
                "no entry".to_string()
            } else {
                out.trim().to_string()
            };
            return Err(anyhow!("{} did not resolve in {:?}: {}", addr, timeout, st));
        }
        let _ = ping_in(ns, addr, 1, Duration::from_millis(300));
    }
}
