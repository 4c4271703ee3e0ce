//! What the appliance's integration tests share: the binary, a running appliance whose
//! output is collected, a private cookie-key file, polling and `ctl`; network namespaces
//! and a small HTTP/1.1 server for the splice tests' real peers.
#![allow(dead_code)] // each test file uses its own part

use std::ffi::OsStr;
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");

/// A `tapsplice run` child: its stdout lines arrive on `lines`, its stderr is collected.
/// Stopped with SIGINT (killed after 10 s) by [`Appliance::stop`] or on drop.
pub struct Appliance {
    child: Option<Child>,
    pub lines: mpsc::Receiver<String>,
    errs: Option<JoinHandle<String>>,
}

impl Appliance {
    /// `tapsplice run --config CFG ARGS...`, once it printed "tapsplice: running" (30 s;
    /// panics with its stderr otherwise).
    pub fn start<S: AsRef<OsStr>>(cfg: &Path, args: &[S]) -> Appliance {
        let mut child = Command::new(BIN).args(["run", "--config"]).arg(cfg).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn tapsplice");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l))));
        let err = child.stderr.take().expect("piped stderr");
        let errs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = BufReader::new(err).read_to_string(&mut s);
            s
        });
        let a = Appliance { child: Some(child), lines, errs: Some(errs) };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut running = false;
        while !running && Instant::now() < deadline {
            running = a.lines.recv_timeout(Duration::from_millis(200)).is_ok_and(|l| l.contains("tapsplice: running"));
        }
        if !running {
            let (status, stderr) = a.stop();
            panic!("the appliance did not start ({status}): {stderr}");
        }
        a
    }

    /// Stops it; its exit status and everything it wrote on stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        let status = self.interrupt().expect("the child is there until stopped");
        let stderr = self.errs.take().and_then(|e| e.join().ok()).unwrap_or_default();
        (status, stderr)
    }

    fn interrupt(&mut self) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.interrupt();
    }
}

/// A SYN-cookie secret in `dir`, private (0600) as the appliance demands.
pub fn cookie_key(dir: &Path) -> PathBuf {
    let key = dir.join("cookie.key");
    std::fs::write(&key, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    key
}

/// Polls `ok` every 100 ms for up to `limit`.
pub fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

/// `tapsplice ctl --socket SOCK ARGS...`.
pub fn ctl(sock: &Path, args: &[&str]) -> Output {
    Command::new(BIN).args(["ctl", "--socket"]).arg(sock).args(args).output().expect("tapsplice ctl")
}

/// `tapsplice ctl --json WHAT`, parsed (`Null` when the appliance does not answer yet).
pub fn ctl_json(sock: &Path, what: &str) -> serde_json::Value {
    serde_json::from_slice(&ctl(sock, &["--json", what]).stdout).unwrap_or_default()
}

// ---- Network namespaces and a test HTTP server (the splice tests' real peers) ----

/// `ip ARGS...`, which must succeed.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {:?}: {}", args, String::from_utf8_lossy(&out.stderr));
}

pub fn in_ns(ns: &str, args: &[&str]) -> std::process::Output {
    Command::new("ip").args(["netns", "exec", ns]).args(args).output().expect("ip netns exec")
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn spawn_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns file");
        // SAFETY: setns(2) moves only this thread into the namespace.
        let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
}

/// The generated download body: byte i of /bytes/N.
pub fn gen_byte(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// A small HTTP/1.1 server with keep-alive: `GET /whoami` → its name, `GET /bytes/N` → N
/// generated bytes, `POST /upload` → "NAME LEN SHA256HEX" of the body. Every response
/// carries `X-Server: NAME`.
pub fn rust_server(listener: TcpListener, name: &'static str, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).unwrap();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                std::thread::spawn(move || {
                    let _ = serve_conn(s, name);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

pub fn serve_conn(s: TcpStream, name: &str) -> std::io::Result<()> {
    s.set_nonblocking(false)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut w = s;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            r.read_line(&mut h)?;
            if h == "\r\n" || h.is_empty() {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let body: Vec<u8> = match (method.as_str(), path.as_str()) {
            ("POST", "/upload") => {
                let mut b = vec![0u8; len];
                r.read_exact(&mut b)?;
                format!("{name} {len} {:x}", Sha256::digest(&b)).into_bytes()
            }
            ("GET", p) if p.starts_with("/bytes/") => (0..p[7..].parse::<usize>().unwrap_or(0)).map(gen_byte).collect(),
            _ => name.as_bytes().to_vec(),
        };
        write!(w, "HTTP/1.1 200 OK\r\nX-Server: {name}\r\nContent-Length: {}\r\n\r\n", body.len())?;
        w.write_all(&body)?;
    }
}


/// A rack file for a one-worker splice appliance on TAP ports: `ports` are (name, TAP
/// interface, address/prefix); `services` is the rack's pools, services and their
/// sections; the SYN-cookie key and the ctl socket are in `dir`, metrics are off.
pub fn splice_rack(id: &str, ports: &[(&str, &str, &str)], services: &str, dir: &Path) -> String {
    let mut s = format!(
        "[node]\nid = \"{id}\"\nroles = [\"splice\"]\n\n[eal]\nlcores = \"0,1\"\nmemory_mb = 256\nhugepages = false\nfile_prefix = \"tapsplice-{id}\"\n\n[mempool]\nmbufs = 8191\n\n[workers]\nidle_backoff = true\n"
    );
    for (i, (name, iface, addr)) in ports.iter().enumerate() {
        s += &format!("\n[[port]]\nname = \"{name}\"\ndevice = \"net_tap{i}\"\nargs = \"iface={iface}\"\naddresses = [\"{addr}\"]\n");
    }
    s += "\n";
    s += services;
    s += &format!("\n[keys]\nsyn_cookie_secret = \"{d}/cookie.key\"\n\n[ctl]\nsocket = \"{d}/ctl.sock\"\n\n[metrics]\nenabled = false\n", d = dir.display());
    s
}

/// A test's network namespaces, its appliance, its server threads (told to stop through
/// `stop`) and child processes, and its directory: all gone on drop, the appliance
/// before the namespaces its TAPs were moved into.
pub struct Lab {
    pub appliance: Option<Appliance>,
    pub children: Vec<Child>,
    pub stop: Arc<AtomicBool>,
    pub dir: PathBuf,
    namespaces: Vec<&'static str>,
}

impl Lab {
    /// Fresh namespaces (stale ones of an earlier run removed), loopback up; `dir` created.
    pub fn new(namespaces: &[&'static str], dir: PathBuf) -> Lab {
        std::fs::create_dir_all(&dir).unwrap();
        for ns in namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        Lab { appliance: None, children: Vec::new(), stop: Arc::new(AtomicBool::new(false)), dir, namespaces: namespaces.to_vec() }
    }

    /// Writes `rack` as `rack.toml` in the lab's directory, starts the appliance on it with
    /// `args`, then moves its TAPs into their namespaces ([`Lab::attach`]).
    pub fn start(&mut self, rack: &str, args: &[&OsStr], taps: &[(&str, &str, &str)]) {
        let cfg = self.dir.join("rack.toml");
        std::fs::write(&cfg, rack).unwrap();
        self.appliance = Some(Appliance::start(&cfg, args));
        self.attach(taps);
    }

    /// Moves each (TAP, namespace, address/prefix) into its namespace, addressed and up.
    pub fn attach(&self, taps: &[(&str, &str, &str)]) {
        for (tap, ns, addr) in taps {
            ip(&["link", "set", tap, "netns", ns]);
            ip(&["-n", ns, "addr", "add", addr, "dev", tap]);
            ip(&["-n", ns, "link", "set", tap, "up"]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(self.appliance.take());
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits (20 s at most) until `ctl members` lists `n` members, every one up and in its
/// table (a weight above 0: the state changes at once, the table at most every 500 ms).
pub fn members_up(sock: &Path, n: usize) -> bool {
    members_up_of(sock, n, n)
}

/// As [`members_up`], for `up` of the `total` members listed.
pub fn members_up_of(sock: &Path, up: usize, total: usize) -> bool {
    wait_for(Duration::from_secs(20), || {
        ctl_json(sock, "members")["members"].as_array().is_some_and(|m| m.len() == total && m.iter().filter(|m| m["state"] == "up" && m["effective_weight"].as_u64() > Some(0)).count() == up)
    })
}
