//! The client side: one thread per connection, requests one after the other, every reply
//! byte verified.

use super::pattern::{fill, mismatches, request_seed, Request};
use super::{new_histogram, read_some, write_all, Ctx};
use hdrhistogram::Histogram;
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) struct ConnResult {
    pub hist: Histogram<u64>,
    pub ended: Instant,
}

pub(crate) fn run_connection(ctx: &Ctx, conn: u64, started: Instant) -> ConnResult {
    let mut hist = new_histogram();
    if let Err(e) = connection(ctx, conn, started, &mut hist) {
        ctx.live.error(format!("client {}: {}", conn, e));
    }
    ctx.live.conns_done.fetch_add(1, Ordering::Relaxed);
    ConnResult {
        hist,
        ended: Instant::now(),
    }
}

fn connect(ctx: &Ctx) -> Result<TcpStream, String> {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let left = ctx
            .deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(5));
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
) -> Result<(), String> {
    let spec = &ctx.spec;
    let ns = &spec.client_ns[(conn as usize) % spec.client_ns.len()];
    crate::netns::enter(ns).map_err(|e| format!("{:#}", e))?;
    let mut s = connect(ctx)?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut want = vec![0u8; 256 * 1024];
    let stop_new = spec.duration.map(|d| started + d);
    let mut j = 0u64;
    loop {
        if spec.requests != 0 && j >= spec.requests {
            break;
        }
        if stop_new.map(|t| Instant::now() >= t).unwrap_or(false) || ctx.stopping() {
            break;
        }
        let seed = request_seed(spec.seed, conn, j);
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
        write_all(&mut s, &bytes, ctx).map_err(|e| format!("request {}: sending: {}", j, e))?;
        let mut off = 0u64;
        let mut bad = 0u64;
        while off < spec.reply_bytes {
            let cap = ((spec.reply_bytes - off) as usize).min(buf.len());
            let n = match read_some(&mut s, &mut buf[..cap], ctx) {
                Ok(0) => {
                    return Err(format!(
                        "request {}: connection closed after {} of {} reply bytes",
                        j, off, spec.reply_bytes
                    ))
                }
                Ok(n) => n,
                Err(e) => {
                    return Err(format!(
                        "request {}: reading reply at byte {}: {}",
                        j, off, e
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
            off += n as u64;
        }
        let us = t0.elapsed().as_micros().max(1) as u64;
        let _ = hist.record(us.min(3_600_000_000));
        if bad > 0 {
            ctx.live.mismatched_bytes.fetch_add(bad, Ordering::Relaxed);
            ctx.live.error(format!(
                "client {}: request {}: {} reply bytes differ",
                conn, j, bad
            ));
        } else {
            ctx.live.requests_ok.fetch_add(1, Ordering::Relaxed);
        }
        j += 1;
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    Ok(())
}
