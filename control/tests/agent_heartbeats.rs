//! `tapsplice agent` end to end on loopback: the real binary sends authenticated heartbeats
//! that an appliance-side `Ingress` accepts, reports whether its application answers the
//! probe, and refuses a rack key that others can read.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tapsplice::heartbeat::wire::{HbRole, NodeId};
use tapsplice::heartbeat::{load_rack_key, Ingress};

const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapsplice-agent-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write_key(dir: &Path, mode: u32) -> PathBuf {
    let p = dir.join("rack.key");
    std::fs::write(&p, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn write_config(dir: &Path, key: &Path, to: std::net::SocketAddr, app: std::net::SocketAddr) -> PathBuf {
    let p = dir.join("agent.toml");
    std::fs::write(
        &p,
        format!(
            "[agent]\nid = \"web1\"\nclass = \"server\"\nrack_key = \"{}\"\nbind = \"127.0.0.1:0\"\nappliances = [\"{to}\"]\ninterval_ms = 10\n\n[probe]\nkind = \"tcp\"\naddress = \"{app}\"\ninterval_ms = 20\ntimeout_ms = 20\n",
            key.display()
        ),
    )
    .unwrap();
    p
}

struct Agent(Child);
impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

fn start(cfg: &Path) -> Agent {
    let mut child = Command::new(BIN).args(["agent", "--config"]).arg(cfg).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    assert!(line.contains("tapsplice agent: running"), "agent did not start: {line:?}");
    Agent(child)
}

#[test]
fn heartbeats_are_authentic_and_carry_the_probe_verdict() {
    let dir = scratch("hb");
    let key = write_key(&dir, 0o600);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let app = TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = write_config(&dir, &key, rx.local_addr().unwrap(), app.local_addr().unwrap());
    let _agent = start(&cfg);

    let mac = load_rack_key(&key).unwrap().mac_key();
    let mut ingress = Ingress::new(mac, vec![NodeId::new("web1").unwrap()]);
    let mut buf = [0u8; 2048];
    let mut recv_until = |want_alive: bool, limit: Duration| -> usize {
        let deadline = Instant::now() + limit;
        let mut accepted = 0;
        while Instant::now() < deadline {
            let Ok(n) = rx.recv(&mut buf) else { continue };
            let (hb, _) = ingress.accept(&buf[..n]).unwrap_or_else(|e| panic!("agent heartbeat rejected: {e:?}"));
            assert_eq!(hb.role, HbRole::Agent);
            assert!((0.0..=1.0).contains(&hb.workload.as_f64()));
            accepted += 1;
            if hb.status.app_alive == want_alive && accepted >= 5 {
                return accepted;
            }
        }
        panic!("no heartbeat with app_alive = {want_alive} within {limit:?} ({accepted} accepted)");
    };
    recv_until(true, Duration::from_secs(5));
    // The application dies: the machine keeps heartbeating, saying so.
    drop(app);
    recv_until(false, Duration::from_secs(5));
}

#[test]
fn a_rack_key_readable_by_others_is_refused() {
    let dir = scratch("key");
    let key = write_key(&dir, 0o644);
    let cfg = write_config(&dir, &key, "127.0.0.1:9".parse().unwrap(), "127.0.0.1:9".parse().unwrap());
    let out = Command::new(BIN).args(["agent", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("chmod 600"), "{err}");
}
