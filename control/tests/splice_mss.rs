//! The client's MSS reaches the backend through the SYN cookie, with real peers: the
//! appliance keeps no state before the client's ACK, so the MSS the client offered travels
//! in the cookie (rounded down to one of its table values) and the backend leg's SYN
//! repeats it. A backend's kernel then sends segments of that size, which the client can
//! take without fragmentation — and no smaller than it has to.
//!
//! ```text
//!  ns tsm-c 10.74.0.11 ── [clients  sp  backends] ── ns tsm-b 10.74.1.21 :7
//!           (route advmss N,          10.74.1.2        replies with its TCP_MAXSEG
//!            no timestamps)  VIP 10.74.0.100:7
//! ```
//!
//! The client namespace has TCP timestamps off, so the backend's segment size is the MSS
//! it was offered exactly (with timestamps Linux takes 12 bytes of options off it).

mod common;
use common::{cookie_key, in_ns, ip, members_up, spawn_in_ns, splice_rack, wait_for, Lab};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

const NS: [&str; 2] = ["tsm-c", "tsm-b"];
const VIP: &str = "10.74.0.100";

fn rack(dir: &Path) -> String {
    let ports = [("clients", "tsm-c0", "10.74.0.2/24"), ("backends", "tsm-b0", "10.74.1.2/24")];
    let services = format!(
        r#"[[pool]]
name = "echo"
members = [{{ address = "10.74.1.21", port = 7 }}]

[[service]]
name = "mss"
vip = "{VIP}"
ports = [7]
mode = "splice"
pool = "echo"
via = "clients"
fault_tolerance = "none"
"#
    );
    splice_rack("spm", &ports, &services, dir)
}

/// The segment size the backend's kernel settled on for an accepted connection.
fn maxseg(s: &TcpStream) -> i32 {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket we own, into a c_int of the length given.
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_MAXSEG, (&mut v as *mut libc::c_int).cast(), &mut len) };
    assert_eq!(rc, 0, "TCP_MAXSEG");
    v
}

/// Connects from the client namespace with `advmss` on its route to the VIP; what the
/// backend answered (its segment size for this connection).
fn backend_mss(advmss: u16) -> i32 {
    ip(&["-n", NS[0], "route", "replace", "10.74.0.0/24", "dev", "tsm-c0", "proto", "kernel", "scope", "link", "src", "10.74.0.11", "advmss", &advmss.to_string()]);
    spawn_in_ns(NS[0], || {
        let mut s = TcpStream::connect_timeout(&format!("{VIP}:7").parse().unwrap(), Duration::from_secs(5)).expect("connect to the VIP");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"?\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).expect("the backend's answer");
        got.trim().parse::<i32>().unwrap_or_else(|_| panic!("not a number: {got:?}"))
    })
    .join()
    .expect("client thread")
}

#[test]
fn the_clients_mss_reaches_the_backend_through_the_cookie() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "needs root (network namespaces, TAP ports)");
    let mut lab = Lab::new(&NS, std::env::temp_dir().join(format!("tsm-{}", std::process::id())));
    let dir = lab.dir.clone();
    cookie_key(&dir);
    lab.start(&rack(&dir), &[], &[("tsm-c0", NS[0], "10.74.0.11/24"), ("tsm-b0", NS[1], "10.74.1.21/24")]);
    let out = in_ns(NS[0], &["sysctl", "-qw", "net.ipv4.tcp_timestamps=0"]);
    assert!(out.status.success(), "tcp_timestamps off in the client namespace: {out:?}");
    assert!(members_up(&dir.join("ctl.sock"), 1), "backend not resolved");

    // The backend: tells each connection the segment size its kernel uses for it.
    let stop = lab.stop.clone();
    let (ltx, lrx) = mpsc::channel();
    spawn_in_ns(NS[1], move || {
        let l = TcpListener::bind("0.0.0.0:7").expect("bind :7");
        l.set_nonblocking(true).unwrap();
        ltx.send(()).unwrap();
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    // A client that never writes must not hold up the next one for long.
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut q = [0u8; 2];
                    let _ = s.read_exact(&mut q);
                    let _ = s.write_all(format!("{}\n", maxseg(&s)).as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    lrx.recv_timeout(Duration::from_secs(5)).expect("backend listening");
    assert!(wait_for(Duration::from_secs(10), || std::panic::catch_unwind(|| backend_mss(1460)).is_ok()), "no connection through the splice");

    // (client's MSS, what the cookie carries to the backend): the common sizes pass as
    // they are; the others are rounded down to the next table value.
    for (offered, expected) in [(1460, 1460), (1452, 1452), (1440, 1440), (1400, 1360), (1360, 1360), (1300, 1300), (1250, 1220)] {
        assert_eq!(backend_mss(offered), expected, "a client offering MSS {offered}");
    }
}
