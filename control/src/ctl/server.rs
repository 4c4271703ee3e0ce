//! The ctl socket server: a Unix stream socket, mode 0600, one thread per connection
//! (bounded), JSON lines in and out. Whatever a client sends, the appliance keeps running:
//! malformed lines get a `bad_request` answer and the connection stays usable, over-long
//! lines are refused and the connection closed, handler panics become `internal` answers.

use super::handler::Handler;
use super::proto::{ErrorCode, Request, Response};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest request line accepted, in bytes (without the newline).
pub const MAX_LINE: usize = 64 * 1024;
/// Connections served at once; a further one waits up to 0.5 s for a slot, then is
/// answered `refused` and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// Longest `sun_path` (Linux: 108 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Tunables of the server (the defaults are what the appliance uses).
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_line: usize,
    pub max_connections: usize,
    /// A connection with no complete request for this long is closed.
    pub idle_timeout: Duration,
    /// A client that does not read its answers for this long is dropped.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: MAX_LINE,
            max_connections: MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// How often blocked threads look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

/// Binds the ctl socket at `path` (mode 0600 before any client can connect) and serves it
/// on a thread until `stop`; the thread then closes every connection, removes the socket
/// file and returns (within ~100 ms).
///
/// Creates the parent directory (0755) if missing. A stale socket file (nobody listening)
/// is replaced; a socket another live process listens on is refused (`AddrInUse`), as is
/// a path that exists and is not a socket (`AlreadyExists`).
pub fn spawn(path: &Path, handler: Handler, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
    spawn_with(path, handler, stop, Limits::default())
}

pub fn spawn_with(path: &Path, handler: Handler, stop: Arc<AtomicBool>, limits: Limits) -> io::Result<JoinHandle<()>> {
    let listener = bind(path)?;
    let identity = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("ctl-accept".into())
        .spawn(move || {
            accept_loop(&listener, &handler, &stop, &limits);
            drop(listener);
            remove_if_ours(&path, identity);
        })
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start the ctl thread: {e}")))
}

fn err(kind: io::ErrorKind, msg: String) -> io::Error {
    io::Error::new(kind, msg)
}

/// Parent directory, stale socket, bind, chmod 0600, listen.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    let shown = path.display();
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(err(io::ErrorKind::InvalidInput, "the ctl socket path is empty".into()));
    }
    if bytes.len() > MAX_SOCKET_PATH {
        return Err(err(
            io::ErrorKind::InvalidInput,
            format!("ctl socket path {shown} is {} bytes long; Unix sockets allow {MAX_SOCKET_PATH}", bytes.len()),
        ));
    }
    if bytes.contains(&0) {
        return Err(err(io::ErrorKind::InvalidInput, format!("ctl socket path {shown} contains a NUL byte")));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(parent).map_err(|e| {
                err(e.kind(), format!("cannot create the ctl socket directory {}: {e}", parent.display()))
            })?;
            // The umask may have taken bits away; clients need to traverse it.
            let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(err(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another process is serving the ctl socket {shown} (is a second appliance running for this node?); \
                         stop it, or give this one another [ctl] socket"
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Stale: left behind by an appliance that did not stop cleanly.
                std::fs::remove_file(path)
                    .map_err(|e| err(e.kind(), format!("cannot remove the stale ctl socket {shown}: {e}")))?;
            }
            Err(e) => return Err(err(e.kind(), format!("cannot check the existing ctl socket {shown}: {e}"))),
        },
        Ok(_) => {
            return Err(err(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket; remove it or choose another [ctl] socket"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e.kind(), format!("cannot inspect {shown}: {e}"))),
    }

    // socket + bind + chmod + listen by hand: std's UnixListener::bind listens at once, and
    // no client may connect before the mode is 0600. Until listen() a connect() is refused.
    // SAFETY: plain syscalls on a descriptor we own; the address is fully initialised.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(err(e.kind(), format!("cannot create the ctl socket: {e}")));
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_un is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_un of at least `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), &addr as *const libc::sockaddr_un as *const libc::sockaddr, len) } != 0 {
        let e = io::Error::last_os_error();
        return Err(err(e.kind(), format!("cannot bind the ctl socket {shown}: {e}")));
    }
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        let _ = std::fs::remove_file(path);
        return Err(err(e.kind(), format!("cannot set mode 0600 on the ctl socket {shown}: {e}")));
    }
    // SAFETY: fd is a bound socket.
    if unsafe { libc::listen(fd.as_raw_fd(), 64) } != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(path);
        return Err(err(e.kind(), format!("cannot listen on the ctl socket {shown}: {e}")));
    }
    let listener = UnixListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Removes the socket file unless someone replaced it since we bound it.
fn remove_if_ours(path: &PathBuf, identity: Option<(u64, u64)>) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if identity == Some((m.dev(), m.ino())) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn poll_readable(fd: i32, timeout: Duration) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call.
    unsafe { libc::poll(&mut p, 1, timeout.as_millis() as i32) > 0 }
}

fn accept_loop(listener: &UnixListener, handler: &Handler, stop: &Arc<AtomicBool>, limits: &Limits) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut last_error: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        if !poll_readable(listener.as_raw_fd(), TICK) {
            continue;
        }
        threads.retain(|t| !t.is_finished());
        match listener.accept() {
            Ok((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_write_timeout(Some(limits.write_timeout));
                if !wait_for_slot(&active, limits.max_connections, Duration::from_millis(500), stop) {
                    let msg = format!("too many ctl connections (limit {}); try again", limits.max_connections);
                    let line = Response::err(None, ErrorCode::Refused, msg).to_line() + "\n";
                    let mut s = stream;
                    let _ = s.write_all(line.as_bytes());
                    continue;
                }
                active.fetch_add(1, Ordering::SeqCst);
                let (handler, stop, limits, active2) = (handler.clone(), stop.clone(), limits.clone(), active.clone());
                let spawned = std::thread::Builder::new().name("ctl-conn".into()).spawn(move || {
                    let _ = catch_unwind(AssertUnwindSafe(|| serve_connection(stream, &handler, &stop, &limits)));
                    active2.fetch_sub(1, Ordering::SeqCst);
                });
                match spawned {
                    Ok(t) => threads.push(t),
                    Err(_) => {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
            Err(e) => {
                if last_error.map(|t| t.elapsed()).unwrap_or(Duration::MAX) > Duration::from_secs(10) {
                    eprintln!("tapsplice: ctl: accept failed: {e}");
                    last_error = Some(Instant::now());
                }
                std::thread::sleep(TICK / 2);
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

/// Waits (up to `patience`) until fewer than `max` connections are being served.
fn wait_for_slot(active: &AtomicUsize, max: usize, patience: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + patience;
    while active.load(Ordering::SeqCst) >= max {
        if Instant::now() >= deadline || stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// Serves one connection: one answer per request line, in order.
fn serve_connection(mut stream: UnixStream, handler: &Handler, stop: &AtomicBool, limits: &Limits) {
    let _ = stream.set_read_timeout(Some(TICK));
    let mut pending: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut last_activity = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                // EOF: a last line without its newline is still a request.
                if !pending.iter().all(u8::is_ascii_whitespace) && pending.len() <= limits.max_line {
                    let _ = answer_line(&mut stream, &pending, handler);
                }
                return;
            }
            Ok(n) => {
                last_activity = Instant::now();
                let scan_from = pending.len();
                pending.extend_from_slice(&chunk[..n]);
                let mut start = 0;
                let mut scan = scan_from;
                while let Some(off) = pending[scan..].iter().position(|&b| b == b'\n') {
                    let end = scan + off;
                    let line = &pending[start..end];
                    if line.len() > limits.max_line {
                        refuse_long(&mut stream, limits);
                        return;
                    }
                    if answer_line(&mut stream, line, handler).is_err() {
                        return;
                    }
                    start = end + 1;
                    scan = start;
                }
                pending.drain(..start);
                if pending.len() > limits.max_line {
                    refuse_long(&mut stream, limits);
                    return;
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted) => {
                if last_activity.elapsed() > limits.idle_timeout {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}

fn refuse_long(stream: &mut UnixStream, limits: &Limits) {
    let r = Response::err(
        None,
        ErrorCode::BadRequest,
        format!("request line longer than {} bytes; closing the connection", limits.max_line),
    );
    let _ = stream.write_all((r.to_line() + "\n").as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

/// Parses and answers one line. Blank lines are ignored. `Err` = the client is gone.
fn answer_line(stream: &mut UnixStream, line: &[u8], handler: &Handler) -> io::Result<()> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let response = match Request::parse_line(line) {
        Err(resp) => resp,
        Ok(req) => {
            let (id, cmd) = (req.id, req.cmd.clone());
            match catch_unwind(AssertUnwindSafe(|| handler(req))) {
                Ok(mut r) => {
                    r.id = Some(id);
                    r
                }
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    eprintln!("tapsplice: ctl: the handler of `{}` panicked: {what}", printable(&cmd));
                    Response::err(Some(id), ErrorCode::Internal, format!("the appliance failed to answer `{}`: {what}", printable(&cmd)))
                }
            }
        }
    };
    let mut out = response.to_line();
    out.push('\n');
    stream.write_all(out.as_bytes())
}

/// A command name safe to log (clients choose it).
fn printable(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    s
}
