//! The server side: a listener in the server namespace, a handler thread per connection.

use super::pattern::{fill, Request};
use super::{read_some, write_all, Ctx};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

/// The listener of server `idx` (of `ctx.spec.server_ns`).
pub(crate) fn serve(ctx: Arc<Ctx>, idx: usize, ready: Sender<Result<(), String>>) {
    let ns = &ctx.spec.server_ns[idx];
    if let Err(e) = crate::netns::enter(ns) {
        let _ = ready.send(Err(format!("{:#}", e)));
        return;
    }
    let listener = match TcpListener::bind(ctx.spec.listen) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(format!(
                "cannot listen on {} in {}: {}",
                ctx.spec.listen, ns, e
            )));
            return;
        }
    };
    // std listens with a backlog of 128; hundreds of clients connect at once here.
    // SAFETY: listen(2) again on our own listening socket only changes its backlog.
    unsafe {
        libc::listen(std::os::unix::io::AsRawFd::as_raw_fd(&listener), 4096);
    }
    if let Err(e) = listener.set_nonblocking(true) {
        let _ = ready.send(Err(format!("listener: {}", e)));
        return;
    }
    let _ = ready.send(Ok(()));
    let mut handlers = Vec::new();
    while !ctx.stopping() && std::time::Instant::now() < ctx.deadline {
        match listener.accept() {
            Ok((s, peer)) => {
                if let Ok(mut m) = ctx.accepted.lock() {
                    m.insert(peer, idx);
                }
                ctx.accepts[idx].fetch_add(1, Ordering::Relaxed);
                let hctx = ctx.clone();
                match std::thread::Builder::new()
                    .name(format!("srv-{}-c", ctx.spec.name))
                    .stack_size(256 * 1024)
                    .spawn(move || handle(&hctx, s))
                {
                    Ok(h) => {
                        // A finished thread keeps its stack until its handle is joined or
                        // dropped: drop the finished ones as we go, or tens of thousands
                        // of short connections exhaust the address space.
                        if handlers.len() >= 64 {
                            handlers.retain(|h: &std::thread::JoinHandle<()>| !h.is_finished());
                        }
                        handlers.push(h)
                    }
                    Err(e) => ctx
                        .live
                        .error(format!("server: cannot start a handler thread: {}", e)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => {
                ctx.live.error(format!("server: accept: {}", e));
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    drop(listener);
    for h in handlers {
        // Handlers are bounded by the same deadline and by the stop flag.
        let _ = h.join();
    }
}

fn handle(ctx: &Ctx, mut s: TcpStream) {
    if let Err(e) = serve_requests(ctx, &mut s) {
        if !ctx.stopping() {
            ctx.live.error(format!("server: {}", e));
        }
    }
}

fn serve_requests(ctx: &Ctx, s: &mut TcpStream) -> Result<(), String> {
    s.set_nonblocking(false).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let req_len = ctx.spec.request_bytes as usize;
    let mut req = vec![0u8; req_len];
    let mut out = vec![0u8; 256 * 1024];
    loop {
        // Read one request; EOF before its first byte is the client's normal close.
        let mut got = 0;
        while got < req_len {
            match read_some(s, &mut req[got..], ctx) {
                Ok(0) if got == 0 => return Ok(()),
                Ok(0) => {
                    return Err(format!(
                        "connection closed after {} of {} request bytes",
                        got, req_len
                    ))
                }
                Ok(n) => got += n,
                Err(e) if ctx.stopping() => return Err(format!("stopped: {}", e)),
                Err(e) => return Err(format!("reading request: {}", e)),
            }
        }
        let r = match Request::decode(&req) {
            Ok(r) => r,
            Err(e) => {
                ctx.live.mismatched_bytes.fetch_add(1, Ordering::Relaxed);
                return Err(format!("bad request: {}", e));
            }
        };
        if r.echo {
            write_all(s, &req, ctx).map_err(|e| format!("writing echo: {}", e))?;
            ctx.live
                .bytes_sent
                .fetch_add(req_len as u64, Ordering::Relaxed);
            continue;
        }
        let started = std::time::Instant::now();
        while started.elapsed() < ctx.spec.reply_delay {
            if ctx.stopping() {
                return Err("stopped while delaying the reply".into());
            }
            std::thread::sleep(Duration::from_millis(20).min(ctx.spec.reply_delay));
        }
        let mut off = 0u64;
        while off < r.reply_len {
            let n = ((r.reply_len - off) as usize).min(out.len());
            fill(r.seed, off, &mut out[..n]);
            write_all(s, &out[..n], ctx)
                .map_err(|e| format!("writing reply at byte {}: {}", off, e))?;
            ctx.live.bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
            off += n as u64;
        }
    }
}
