//! Bad input at start-up: each case gets one clear line naming the cause and the fix, a
//! non-zero exit, and no panic. These run the real binary; the cases that need root to set
//! up (mount namespaces, a second DPDK process) fail loudly when not run as root.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_tapsplice");

/// `tapsplice run --config CFG` to its end.
fn run_with(cfg: &Path) -> Output {
    Command::new(BIN).args(["run", "--config"]).arg(cfg).output().unwrap()
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests start DPDK and mount namespaces: run them as root");
}

/// A scratch directory unique to this test.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapsplice-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The forward example with unique TAP names and file prefix, and `edit` applied.
fn forward_config(dir: &Path, tag: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let base = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/forward.toml")).unwrap();
    let pid = std::process::id() % 100000;
    let text = base
        .replace("iface=tsw0", &format!("iface=tw{tag}{pid}"))
        .replace("iface=tse0", &format!("iface=te{tag}{pid}"))
        .replace("\"tapsplice-fw1\"", &format!("\"tscli-{tag}-{pid}\""))
        .replace("/run/tapsplice/fw1.sock", &dir.join(format!("{tag}.sock")).display().to_string())
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    let path = dir.join(format!("{tag}.toml"));
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The line tapsplice itself printed (EAL may print its own before it).
fn assert_one_clear_line(out: &Output, needle: &str) {
    let err = stderr_of(out);
    assert!(!out.status.success(), "expected failure, got success; stderr:\n{err}");
    assert!(!err.contains("panicked"), "panic instead of an error line:\n{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("tapsplice:")).collect();
    assert_eq!(ours.len(), 1, "expected exactly one tapsplice line, got:\n{err}");
    assert!(ours[0].contains(needle), "line does not name the cause ({needle:?}):\n{err}");
}

#[test]
fn check_reports_type_errors_and_unknown_keys_with_location_and_exits_2() {
    let dir = scratch("check");
    let cfg = forward_config(&dir, "ck", |t| {
        t.replace("rx_queues = 1", "rx_queues = \"one\"").replace("promiscuous = true", "promiscuous = true\nspeed = 100")
    });
    let out = Command::new(BIN).args(["check", "--config"]).arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    let name = cfg.display().to_string();
    let type_line = err.lines().find(|l| l.contains("port[0].rx_queues")).unwrap_or_else(|| panic!("no rx_queues error:\n{err}"));
    assert!(type_line.starts_with(&format!("{name}:")), "{type_line}");
    let line_no: usize = type_line[name.len() + 1..].split(':').next().unwrap().parse().unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.lines().nth(line_no - 1).unwrap().contains("rx_queues = \"one\""), "wrong line {line_no}: {type_line}");
    assert!(err.lines().any(|l| l.contains("speed") && l.starts_with(&format!("{name}:"))), "no unknown-key error:\n{err}");
    assert!(!err.contains("panicked"));
}

#[test]
fn run_with_an_invalid_config_refuses_to_start() {
    let dir = scratch("runbad");
    let cfg = forward_config(&dir, "rb", |t| t.replace("burst = 32", "burst = 0"));
    let out = run_with(&cfg);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("workers.burst"), "{err}");
    assert!(err.contains("tapsplice check"), "{err}");
}

#[test]
fn not_root_is_named() {
    require_root();
    let dir = scratch("nonroot");
    let cfg = forward_config(&dir, "nr", |t| t);
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN, "run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_one_clear_line(&out, "needs root");
}

/// Runs the binary in a private mount namespace after `mounts` (shell commands).
fn run_in_mount_ns(mounts: &str, cfg: &Path) -> Output {
    let script = format!("{mounts} && exec {BIN} run --config {}", cfg.display());
    Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap()
}

#[test]
fn missing_dpdk_libraries_are_named() {
    require_root();
    let dir = scratch("nodpdk");
    let cfg = forward_config(&dir, "nd", |t| t);
    let libdir = String::from_utf8(Command::new("pkg-config").args(["--variable=libdir", "libdpdk"]).output().unwrap().stdout).unwrap();
    let eal = format!("{}/librte_eal.so.23", libdir.trim());
    assert!(Path::new(&eal).exists(), "{eal} not found");
    let out = run_in_mount_ns(&format!("mount --bind /dev/null {eal}"), &cfg);
    assert_one_clear_line(&out, "DPDK libraries could not be loaded");
    assert!(stderr_of(&out).contains("apt-get install libdpdk-dev"));
}

#[test]
fn missing_tap_support_is_named() {
    require_root();
    let dir = scratch("notun");
    let cfg = forward_config(&dir, "nt", |t| t);
    let out = run_in_mount_ns("mount -t tmpfs none /dev/net", &cfg);
    assert_one_clear_line(&out, "/dev/net/tun");
    assert!(stderr_of(&out).contains("modprobe tun"));
}

/// The forward config with its first port (`net_tap0` and its `iface=` args) replaced
/// by `device` and `args`; checks that the edit applied.
fn first_port_as(dir: &Path, prefix: &str, device: &str, args: &str) -> PathBuf {
    let cfg = forward_config(dir, prefix, |t| {
        let t = t.replacen("\"net_tap0\"", &format!("\"{device}\""), 1);
        let args_start = t.find("args = \"iface=").unwrap();
        let args_end = args_start + t[args_start..].find('\n').unwrap();
        format!("{}args = \"{args}\"{}", &t[..args_start], &t[args_end..])
    });
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains(&format!("\"{device}\"")) && text.contains(&format!("args = \"{args}\"")), "config edit did not apply:\n{text}");
    cfg
}

#[test]
fn a_pci_port_that_does_not_exist_is_named() {
    require_root();
    let cfg = first_port_as(&scratch("nopci"), "np", "0000:7f:1f.7", "");
    let out = run_with(&cfg);
    assert_one_clear_line(&out, "0000:7f:1f.7 does not exist");
}

#[test]
fn an_af_xdp_port_on_a_missing_interface_is_named() {
    require_root();
    let cfg = first_port_as(&scratch("noxdpif"), "nx", "net_af_xdp0", "iface=tsnoxdp0");
    let out = run_with(&cfg);
    assert_one_clear_line(&out, "reads kernel interface 'tsnoxdp0' (iface=), which does not exist");
}

#[test]
fn a_second_instance_with_the_same_file_prefix_is_refused() {
    require_root();
    let dir = scratch("prefix");
    let cfg = forward_config(&dir, "fp", |t| t);
    let mut first = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut running = false;
    while Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) if l.contains("tapsplice: running") => {
                running = true;
                break;
            }
            Some(_) => continue,
            None => break,
        }
    }
    let second = run_with(&cfg);
    // SAFETY: plain kill(2) on our child.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let status = first.wait().unwrap();
    assert!(running, "the first instance never reported running");
    assert!(status.success(), "the first instance did not stop cleanly on SIGINT: {status:?}");
    assert_one_clear_line(&second, "file prefix");
}
