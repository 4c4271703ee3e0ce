//! The client side: one thread per connection, requests one after the other, every reply
//! byte verified.

use super::pattern::{fill, mismatches, request_seed, Request};
use super::{new_histogram, read_some, write_all, Ctx};
use hdrhistogram::Histogram;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) struct ConnResult {
    pub hist: Histogram<u64>,
    pub ended: Instant,
    /// Every TCP connection this client thread opened.
    pub conns: Vec<ConnRecord>,
}

/// One TCP connection of a client thread.
#[derive(Debug, Clone)]
pub(crate) struct ConnRecord {
    /// The client's address and port (how the server that accepted it is found).
    pub local: Option<SocketAddr>,
    pub requests: u64,
    pub bytes_verified: u64,
    /// It ended in an error after it was established.
    pub broken: bool,
}

pub(crate) fn run_connection(ctx: &Ctx, conn: u64, started: Instant) -> ConnResult {
    let mut hist = new_histogram();
    let mut conns = Vec::new();
    if let Err(e) = connection(ctx, conn, started, &mut hist, &mut conns) {
        ctx.live.error(format!("client {}: {}", conn, e));
    }
    ctx.live.conns_done.fetch_add(1, Ordering::Relaxed);
    ConnResult {
        hist,
        ended: Instant::now(),
        conns,
    }
}

/// Counts a client connection open while it lives.
struct OpenGuard<'a>(&'a Ctx);

impl<'a> OpenGuard<'a> {
    fn new(ctx: &'a Ctx) -> OpenGuard<'a> {
        let now = ctx.open.fetch_add(1, Ordering::Relaxed) + 1;
        ctx.max_open.fetch_max(now, Ordering::Relaxed);
        OpenGuard(ctx)
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn connect(ctx: &Ctx) -> Result<TcpStream, String> {
    // 10 s per attempt: a SYN lost twice (hundreds of clients connecting at once through a
    // TAP) is retransmitted at 1, 3 and 7 s.
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ctx
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(10));
        if left.is_zero() {
            return Err("time limit reached before connecting".into());
        }
        match TcpStream::connect_timeout(&ctx.spec.connect, left) {
            Ok(s) => return Ok(s),
            // Refused / unreachable right after a topology change: retry briefly.
            Err(e) if Instant::now() < give_up && !ctx.stopping() => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("connect {}: {}", ctx.spec.connect, e)),
        }
    }
}

fn connection(
    ctx: &Ctx,
    conn: u64,
    started: Instant,
    hist: &mut Histogram<u64>,
    conns: &mut Vec<ConnRecord>,
) -> Result<(), String> {
    let spec = &ctx.spec;
    let ns = &spec.client_ns[(conn as usize) % spec.client_ns.len()];
    crate::netns::enter(ns).map_err(|e| format!("{:#}", e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let stop_new = spec.duration.map(|d| started + d);
    let mut j = 0u64;
    let more = |j: u64| {
        let done = spec.requests != 0 && j >= spec.requests;
        let late = stop_new.is_some_and(|t| Instant::now() >= t);
        !(done || late || ctx.stopping())
    };
    // One TCP connection per `requests_per_connection` requests (all on one by default).
    while more(j) {
        let mut s = connect(ctx)?;
        let _open = OpenGuard::new(ctx);
        let mut rec = ConnRecord {
            local: s.local_addr().ok(),
            requests: 0,
            bytes_verified: 0,
            broken: false,
        };
        let r = requests(
            ctx, conn, &mut s, &mut j, &mut rec, hist, &mut buf, &mut want, &more,
        );
        match r {
            Ok(()) => {
                let _ = s.shutdown(std::net::Shutdown::Write);
                conns.push(rec);
            }
            Err(e) => {
                rec.broken = true;
                conns.push(rec);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Requests on one connection until the per-connection limit or the end.
#[allow(clippy::too_many_arguments)]
fn requests(
    ctx: &Ctx,
    conn: u64,
    s: &mut TcpStream,
    j: &mut u64,
    rec: &mut ConnRecord,
    hist: &mut Histogram<u64>,
    buf: &mut [u8],
    want: &mut [u8],
    more: &dyn Fn(u64) -> bool,
) -> Result<(), String> {
    let spec = &ctx.spec;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut on_this = 0u64;
    while more(*j) && (spec.requests_per_connection == 0 || on_this < spec.requests_per_connection)
    {
        let j_now = *j;
        let seed = request_seed(spec.seed, conn, j_now);
        let req = Request {
            echo: spec.echo(),
            seed,
            reply_len: spec.reply_bytes,
            len: spec.request_bytes,
        };
        let bytes = req.encode();
        let t0 = Instant::now();
        ctx.live
            .bytes_expected
            .fetch_add(spec.reply_bytes, Ordering::Relaxed);
        write_all(s, &bytes, ctx).map_err(|e| format!("request {}: sending: {}", j_now, e))?;
        let mut off = 0u64;
        let mut bad = 0u64;
        while off < spec.reply_bytes {
            let cap = ((spec.reply_bytes - off) as usize).min(buf.len());
            let n = match read_some(s, &mut buf[..cap], ctx) {
                Ok(0) => {
                    return Err(format!(
                        "request {}: connection closed after {} of {} reply bytes",
                        j_now, off, spec.reply_bytes
                    ))
                }
                Ok(n) => n,
                Err(e) => {
                    return Err(format!(
                        "request {}: reading reply at byte {}: {}",
                        j_now, off, e
                    ))
                }
            };
            let w = &mut want[..n];
            if req.echo {
                w.copy_from_slice(&bytes[off as usize..off as usize + n]);
            } else {
                fill(seed, off, w);
            }
            let m = mismatches(&buf[..n], w);
            bad += m;
            ctx.live
                .bytes_received
                .fetch_add(n as u64, Ordering::Relaxed);
            ctx.live
                .bytes_verified
                .fetch_add(n as u64 - m, Ordering::Relaxed);
            rec.bytes_verified += n as u64 - m;
            off += n as u64;
        }
        let us = t0.elapsed().as_micros().max(1) as u64;
        let _ = hist.record(us.min(3_600_000_000));
        if bad > 0 {
            ctx.live.mismatched_bytes.fetch_add(bad, Ordering::Relaxed);
            ctx.live.error(format!(
                "client {}: request {}: {} reply bytes differ",
                conn, j_now, bad
            ));
        } else {
            ctx.live.requests_ok.fetch_add(1, Ordering::Relaxed);
            rec.requests += 1;
        }
        *j += 1;
        on_this += 1;
    }
    Ok(())
}
