//! Fence agents run for real: the testbed's power switch agent (testbed/fence/fence_testbed),
//! tiny scripts that record or fail on purpose, and the real fence_ipmilan of Debian's
//! fence-agents against OpenIPMI's simulated BMC (ipmi_sim) on 127.0.0.1.

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tapsplice::fence::{
    fence_off, monitor, power_on, run_agent, status, Action, AgentResult, ExitInfo, FailKind, FenceDevice,
    FenceEventKind, FenceOp, FenceRequest, FenceResult, FenceVerdict, Fencer, FencerConfig, OnVerdict,
    PowerState,
};

// ---------------------------------------------------------------------------------------
// helpers

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "tapsplice-fence-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn testbed_agent() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/fence/fence_testbed");
    let p = p.canonicalize().unwrap_or_else(|e| panic!("testbed agent {}: {e}", p.display()));
    assert!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o111 != 0,
        "{} must be executable (chmod +x)",
        p.display()
    );
    p
}

/// A device driving the testbed switch in `dir`.
fn switch(dir: &TempDir) -> FenceDevice {
    FenceDevice::new("testbed-switch", testbed_agent())
        .param("switch_dir", dir.s())
        .with_timeout(Duration::from_secs(10))
}

fn script(dir: &TempDir, name: &str, body: &str) -> PathBuf {
    let p = dir.path().join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// A child that stands for the machine behind a plug; killed on drop if still there.
struct Machine(Child);

impl Machine {
    fn start() -> Machine {
        Machine(Command::new("sleep").arg("1000").stdin(Stdio::null()).spawn().unwrap())
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    /// Waits (bounded) for it to die; returns the signal that killed it.
    fn wait_dead(&mut self, within: Duration) -> Option<i32> {
        let end = Instant::now() + within;
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st.signal();
            }
            assert!(Instant::now() < end, "pid {} still alive", self.pid());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// (pid, state) of every process whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<(u32, char)> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // after "pid (comm) ": state ppid pgrp ...
        if f.len() > 2 && f[2].parse::<u32>().ok() == Some(pgid) {
            v.push((pid, f[0].chars().next().unwrap_or('?')));
        }
    }
    v
}

fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rfind(')').map(|i| stat[i + 2..].starts_with('Z')).unwrap_or(false),
        Err(_) => false,
    }
}

fn wait_gone(pid: u32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    !alive(pid)
}

// ---------------------------------------------------------------------------------------
// the calling convention

#[test]
fn stdin_is_exactly_the_fence_agents_convention_and_argv_is_empty() {
    let dir = TempDir::new("record");
    let d = dir.s();
    let agent = script(
        &dir,
        "fence_record",
        &format!(
            "cat > {d}/stdin\necho \"$#\" > {d}/argc\ncat /proc/$$/cmdline > {d}/cmdline\ncp /proc/$$/environ {d}/environ\nexit 0"
        ),
    );
    let dev = FenceDevice::new("rec", &agent)
        .param("ip", "192.0.2.1")
        .param("username", "admin")
        .param("password", "s3cr3t-pw")
        .param("lanplus", true)
        .param("cipher", 3)
        .param("power_wait", 0)
        .param("ssl_insecure", false);
    let run = run_agent(&dev, Action::Off, Some("3"));
    assert_eq!(run.result, Ok(AgentResult::Success), "{run:?}");
    assert_eq!(
        fs::read(dir.path().join("stdin")).unwrap(),
        b"action=off\nplug=3\nip=192.0.2.1\nusername=admin\npassword=s3cr3t-pw\nlanplus=1\ncipher=3\npower_wait=0\nssl_insecure=0\n"
    );
    assert_eq!(fs::read_to_string(dir.path().join("argc")).unwrap(), "0\n", "agents must get no arguments");
    // The command line is the interpreter and the script path only: no secret in `ps`.
    let cmdline = fs::read(dir.path().join("cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cr3t"));
    assert!(cmdline.ends_with(format!("{}\0", agent.display()).as_bytes()), "{cmdline:?}");
    let environ = fs::read(dir.path().join("environ")).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains("s3cr3t"));
    // The loggable request masks it.
    assert!(run.request_for_log.contains("password=****\n") && !run.request_for_log.contains("s3cr3t"));

    // No plug, other actions: action first, then the parameters.
    for (action, word) in [(Action::Status, "status"), (Action::Monitor, "monitor"), (Action::On, "on"), (Action::Reboot, "reboot")] {
        let dev = FenceDevice::new("rec", &agent).param("ip", "192.0.2.1");
        let run = run_agent(&dev, action, None);
        assert!(run.result.is_ok(), "{run:?}");
        assert_eq!(fs::read_to_string(dir.path().join("stdin")).unwrap(), format!("action={word}\nip=192.0.2.1\n"));
    }
}

#[test]
fn status_exit_codes_are_mapped_by_the_convention() {
    let dir = TempDir::new("exit");
    for (code, expect) in [
        (0, Ok(AgentResult::PowerOn)),
        (2, Ok(AgentResult::PowerOff)),
        (1, Err(FailKind::AgentError)),
        (3, Err(FailKind::AgentError)),
        (8, Err(FailKind::AgentError)),
        (255, Err(FailKind::AgentError)),
    ] {
        let agent = script(&dir, &format!("fence_exit{code}"), &format!("cat >/dev/null\necho 'Status: whatever'\nexit {code}"));
        let dev = FenceDevice::new("x", agent);
        let run = run_agent(&dev, Action::Status, Some("1"));
        assert_eq!(run.exit, ExitInfo::Exited(code));
        assert_eq!(run.result.clone().map_err(|f| f.kind), expect, "status exit {code}: {run:?}");
        let st = status(&dev, Some("1"));
        match code {
            0 => assert_eq!(st.state, Ok(PowerState::On)),
            2 => assert_eq!(st.state, Ok(PowerState::Off)),
            _ => assert_eq!(st.state.unwrap_err().kind, FailKind::AgentError),
        }
        // For every other action only 0 is success: 2 is an error there.
        let off = run_agent(&dev, Action::Off, Some("1"));
        if code == 0 {
            assert_eq!(off.result, Ok(AgentResult::Success));
        } else {
            assert_eq!(off.result.unwrap_err().kind, FailKind::AgentError, "off exit {code}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// the testbed switch

#[test]
fn off_kills_the_machine_and_status_verifies_it() {
    let sw = TempDir::new("switch");
    let mut m = Machine::start();
    fs::write(sw.path().join("3.pids"), format!("{}\n", m.pid())).unwrap();
    let dev = switch(&sw);

    assert_eq!(status(&dev, Some("3")).state, Ok(PowerState::On));
    assert_eq!(monitor(&dev).result, Ok(()));
    let o = fence_off(&dev, Some("3"));
    assert_eq!(o.verdict, FenceVerdict::VerifiedOff, "{o:#?}");
    assert!(o.permits_promotion());
    assert_eq!(o.attempts.len(), 2);
    assert_eq!((o.attempts[0].action, o.attempts[0].exit), (Action::Off, ExitInfo::Exited(0)));
    assert_eq!((o.attempts[1].action, o.attempts[1].exit), (Action::Status, ExitInfo::Exited(2)));
    assert!(o.attempts.iter().all(|a| a.failure.is_none() && a.took > Duration::ZERO));
    assert_eq!(m.wait_dead(Duration::from_secs(5)), Some(libc::SIGKILL), "the machine is killed by the switch");
    assert_eq!(fs::read_to_string(sw.path().join("3.state")).unwrap().trim(), "off");
    assert_eq!(status(&dev, Some("3")).state, Ok(PowerState::Off));
    eprintln!(
        "testbed switch: off {:.1} ms + status {:.1} ms, total {:.1} ms",
        o.attempts[0].took.as_secs_f64() * 1e3,
        o.attempts[1].took.as_secs_f64() * 1e3,
        o.took.as_secs_f64() * 1e3
    );

    let on = power_on(&dev, Some("3"));
    assert_eq!(on.verdict, OnVerdict::VerifiedOn, "{on:#?}");
    assert_eq!(status(&dev, Some("3")).state, Ok(PowerState::On));
    // Another plug of the same switch was never touched.
    assert_eq!(status(&dev, Some("4")).state, Ok(PowerState::On));
    let log = fs::read_to_string(sw.path().join("log")).unwrap();
    assert!(log.contains(" off 3 off\n") && log.contains(" on 3 on\n"), "{log}");
}

#[test]
fn a_hanging_agent_times_out_and_its_whole_process_group_is_killed() {
    let sw = TempDir::new("hang");
    let timeout = Duration::from_millis(400);
    let dev = switch(&sw).param("hang", true).with_timeout(timeout).with_attempts(1);
    let t0 = Instant::now();
    let run = run_agent(&dev, Action::Off, Some("1"));
    let took = t0.elapsed();
    assert_eq!(run.exit, ExitInfo::TimedOut);
    assert_eq!(run.result.as_ref().unwrap_err().kind, FailKind::Timeout);
    assert!(took >= timeout && took < timeout + Duration::from_millis(1000), "took {took:?}");
    assert!(run.took >= timeout && run.took < timeout + Duration::from_millis(200), "{:?}", run.took);
    // The agent's child (a sleep it started and waits for) went with it.
    let grandchild: u32 = fs::read_to_string(sw.path().join("1.hang.pid")).unwrap().trim().parse().unwrap();
    assert!(wait_gone(grandchild, Duration::from_secs(2)), "grandchild {grandchild} survived the timeout");
    let pgid = run.pid.unwrap();
    let left: Vec<_> = group_members(pgid).into_iter().filter(|(_, s)| *s != 'Z').collect();
    assert!(left.is_empty(), "process group {pgid} still has {left:?}");

    // Through fence_off: a timeout is a failure, never a promotion.
    let o = fence_off(&dev.clone().with_attempts(2), Some("1"));
    assert_eq!(o.attempts.len(), 2);
    assert_eq!(o.verdict.failure().unwrap().kind, FailKind::Timeout);
    assert!(!o.permits_promotion());
    assert!(o.took < 2 * timeout + Duration::from_millis(1500), "{:?}", o.took);
}

#[test]
fn a_verification_that_hangs_forbids_promotion() {
    let sw = TempDir::new("hangstatus");
    let dev = switch(&sw)
        .param("hang", true)
        .param("fault_action", "status")
        .with_timeout(Duration::from_millis(300))
        .with_attempts(1);
    let o = fence_off(&dev, Some("2"));
    assert_eq!(o.attempts[0].exit, ExitInfo::Exited(0));
    assert_eq!(o.attempts[1].exit, ExitInfo::TimedOut);
    let f = o.verdict.failure().unwrap();
    assert_eq!(f.kind, FailKind::Timeout);
    assert!(f.detail.contains("verification"), "{f}");
    assert!(!o.permits_promotion());
}

#[test]
fn a_crashing_agent_is_a_failure() {
    let sw = TempDir::new("crash");
    let dev = switch(&sw).param("crash", 1).with_attempts(1);
    let run = run_agent(&dev, Action::Off, Some("1"));
    assert_eq!(run.exit, ExitInfo::Signaled(libc::SIGSEGV));
    let f = run.result.unwrap_err();
    assert_eq!(f.kind, FailKind::Crashed);
    assert!(f.detail.contains("SIGSEGV"), "{f}");
    let st = status(&dev, Some("1"));
    assert_eq!(st.state.unwrap_err().kind, FailKind::Crashed);
    let o = fence_off(&dev, Some("1"));
    assert!(!o.permits_promotion());
    assert_eq!(o.verdict.failure().unwrap().kind, FailKind::Crashed);
    // A compiled program that dies by a signal, for good measure.
    let dir = TempDir::new("abort");
    let agent = script(&dir, "fence_abort", "exec /bin/sh -c 'kill -ABRT $$'");
    let run = run_agent(&FenceDevice::new("a", agent), Action::Status, None);
    assert_eq!(run.exit, ExitInfo::Signaled(libc::SIGABRT));
    assert_eq!(run.result.unwrap_err().kind, FailKind::Crashed);
}

#[test]
fn garbage_output_with_a_failing_exit_is_a_failure() {
    let sw = TempDir::new("garbage");
    let dev = switch(&sw).param("garbage", "yes").with_attempts(1);
    let run = run_agent(&dev, Action::Off, Some("1"));
    assert_eq!(run.exit, ExitInfo::Exited(1));
    assert!(!run.stdout.bytes.is_empty() && run.stdout.bytes.starts_with(b"Success: "));
    let f = run.result.as_ref().unwrap_err();
    assert_eq!(f.kind, FailKind::AgentError, "printing 'Success' does not make it one");
    // Excerpts are one printable line.
    let ex = run.output_excerpt(400);
    assert!(!ex.chars().any(|c| c.is_control()), "{ex:?}");
    let o = fence_off(&dev, Some("1"));
    assert!(!o.permits_promotion());
    assert_eq!(status(&dev, Some("1")).state.unwrap_err().kind, FailKind::AgentError);
}

#[test]
fn a_failing_agent_is_retried_and_then_fails() {
    let sw = TempDir::new("fail");
    let dev = switch(&sw).param("fail", 1).param("fault_action", "off").with_attempts(3);
    let o = fence_off(&dev, Some("1"));
    assert_eq!(o.attempts.len(), 3, "{o:#?}");
    assert!(o.attempts.iter().all(|a| a.action == Action::Off && a.exit == ExitInfo::Exited(1)));
    assert!(o.attempts[0].output_excerpt.contains("simulated failure"), "{}", o.attempts[0].output_excerpt);
    assert_eq!(o.verdict.failure().unwrap().kind, FailKind::AgentError);
    assert!(!o.permits_promotion());
}

#[test]
fn a_transient_failure_is_healed_by_the_next_attempt() {
    let sw = TempDir::new("transient");
    let mut m = Machine::start();
    fs::write(sw.path().join("5.pids"), format!("{}\n", m.pid())).unwrap();
    let dev = switch(&sw).param("fail_times", 1).param("fault_action", "off").with_attempts(2);
    let o = fence_off(&dev, Some("5"));
    assert_eq!(o.verdict, FenceVerdict::VerifiedOff, "{o:#?}");
    let seen: Vec<_> = o.attempts.iter().map(|a| (a.attempt, a.action, a.exit)).collect();
    assert_eq!(
        seen,
        vec![
            (1, Action::Off, ExitInfo::Exited(1)),
            (2, Action::Off, ExitInfo::Exited(0)),
            (2, Action::Status, ExitInfo::Exited(2)),
        ]
    );
    assert_eq!(m.wait_dead(Duration::from_secs(5)), Some(libc::SIGKILL));
}

#[test]
fn a_switch_that_ignores_off_fails_verification() {
    let sw = TempDir::new("stuck");
    let mut m = Machine::start();
    fs::write(sw.path().join("1.pids"), format!("{}\n", m.pid())).unwrap();
    let dev = switch(&sw).param("stuck_on", 1).with_attempts(2);
    let o = fence_off(&dev, Some("1"));
    assert_eq!(o.attempts.len(), 4);
    assert_eq!(o.verdict.failure().unwrap().kind, FailKind::WrongState);
    assert!(!o.permits_promotion());
    assert!(m.0.try_wait().unwrap().is_none(), "the machine is still running");
    // Without verification the agent's word is taken, and the verdict says so.
    let o = fence_off(&dev.clone().with_verify(false), Some("1"));
    assert_eq!(o.verdict, FenceVerdict::OffUnverified);
    assert!(o.permits_promotion());
}

#[test]
fn missing_and_unrunnable_agents_are_failures() {
    let dir = TempDir::new("missing");
    let cases: Vec<(PathBuf, FailKind)> = vec![
        (dir.path().join("fence_nothing"), FailKind::AgentMissing),
        (PathBuf::from("fence_relative"), FailKind::AgentPath),
        (dir.path().to_path_buf(), FailKind::AgentNotExecutable),
        (
            {
                let p = dir.path().join("fence_noexec");
                fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
                p
            },
            FailKind::AgentNotExecutable,
        ),
        (
            {
                let p = dir.path().join("fence_binary_junk");
                fs::write(&p, [0x7fu8, b'E', b'L', b'F', 0, 1, 2, 3]).unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
                p
            },
            FailKind::AgentNotExecutable,
        ),
        (
            {
                // A script whose interpreter does not exist.
                let p = dir.path().join("fence_bad_interpreter");
                fs::write(&p, "#!/nonexistent/python9\n").unwrap();
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
                p
            },
            FailKind::AgentMissing,
        ),
    ];
    for (path, kind) in cases {
        let dev = FenceDevice::new("m", &path).with_attempts(3);
        let run = run_agent(&dev, Action::Off, Some("1"));
        assert_eq!(run.exit, ExitInfo::NotRun, "{}", path.display());
        assert_eq!(run.result.as_ref().unwrap_err().kind, kind, "{}: {run:?}", path.display());
        let o = fence_off(&dev, Some("1"));
        assert_eq!(o.attempts.len(), 1, "retrying cannot help: {}", path.display());
        assert!(!o.permits_promotion());
        assert_eq!(status(&dev, None).state.unwrap_err().kind, kind);
    }
}

#[test]
fn secrets_never_reach_captured_output() {
    let sw = TempDir::new("leak");
    let dev = switch(&sw).param("password", "Pa55-w0rd!").param("leak", 1).param("fault_action", "status");
    let st = status(&dev, Some("1"));
    assert_eq!(st.state, Ok(PowerState::On));
    let run = run_agent(&dev, Action::Status, Some("1"));
    let all = format!("{}{}{}{}", run.stdout.text(), run.stderr.text(), run.request_for_log, st.record.output_excerpt);
    assert!(!all.contains("Pa55-w0rd!"), "{all}");
    assert!(run.stderr.text().contains("password=****"), "{}", run.stderr.text());
    assert!(!format!("{dev:?}").contains("Pa55"));
}

#[test]
fn refused_requests_never_start_the_agent() {
    let dir = TempDir::new("refuse");
    let marker = dir.path().join("ran");
    let agent = script(&dir, "fence_marker", &format!("touch {}\nexit 0", marker.display()));
    for dev in [
        FenceDevice::new("x", &agent).param("action", "on"),
        FenceDevice::new("x", &agent).param("ip", "192.0.2.1\naction=on"),
    ] {
        let o = fence_off(&dev, Some("1"));
        assert_eq!(o.verdict.failure().unwrap().kind, FailKind::BadRequest);
        assert!(!marker.exists(), "the agent must not run");
    }
    let o = fence_off(&FenceDevice::new("x", &agent), Some("1\naction=on"));
    assert_eq!(o.verdict.failure().unwrap().kind, FailKind::BadRequest);
    assert!(!marker.exists());
}

#[test]
fn large_output_is_bounded_and_does_not_block_the_agent() {
    let dir = TempDir::new("big");
    // 4 MB on stdout and on stderr: more than any pipe buffer, more than we keep.
    let agent = script(&dir, "fence_chatty", "head -c 4000000 /dev/zero | tr '\\0' x\nhead -c 4000000 /dev/zero | tr '\\0' y >&2\nexit 0");
    let run = run_agent(&FenceDevice::new("c", agent).with_timeout(Duration::from_secs(10)), Action::Off, None);
    assert_eq!(run.result, Ok(AgentResult::Success));
    assert_eq!(run.stdout.bytes.len(), tapsplice::fence::agent::CAPTURE_LIMIT);
    assert_eq!(run.stdout.bytes.len() as u64 + run.stdout.truncated, 4_000_000);
    assert_eq!(run.stderr.bytes.len() as u64 + run.stderr.truncated, 4_000_000);
}

#[test]
fn leftovers_of_a_finished_agent_are_killed() {
    let dir = TempDir::new("leftover");
    let pidfile = dir.path().join("bg.pid");
    let agent = script(&dir, "fence_leaves", &format!("sleep 1000 >/dev/null 2>&1 &\necho $! > {}\nexit 0", pidfile.display()));
    let run = run_agent(&FenceDevice::new("l", agent), Action::Off, None);
    assert_eq!(run.result, Ok(AgentResult::Success));
    let bg: u32 = fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert!(wait_gone(bg, Duration::from_secs(2)), "background process {bg} of the agent survived");
}

// ---------------------------------------------------------------------------------------
// the Fencer service with the testbed switch

fn next_finished(rx: &crossbeam_channel::Receiver<tapsplice::fence::FenceEvent>) -> tapsplice::fence::FenceEvent {
    loop {
        let e = rx.recv_timeout(Duration::from_secs(20)).expect("a fence event");
        if matches!(e.kind, FenceEventKind::Finished(_)) {
            return e;
        }
    }
}

#[test]
fn fencer_runs_devices_in_parallel_and_one_device_in_order() {
    let sw_a = TempDir::new("fa");
    let sw_b = TempDir::new("fb");
    let mut ma = Machine::start();
    fs::write(sw_a.path().join("1.pids"), format!("{}\n", ma.pid())).unwrap();
    let a = Arc::new(FenceDevice { name: "switch-a".into(), ..switch(&sw_a).param("delay_ms", 300) });
    let b = Arc::new(FenceDevice { name: "switch-b".into(), ..switch(&sw_b).param("delay_ms", 300) });
    let f = Fencer::start(FencerConfig { workers: 2, queue: 16 }).unwrap();
    let ev = f.events();
    let t0 = Instant::now();
    let off_a = f.submit(FenceRequest::off("srv-a", Arc::clone(&a), Some("1"))).unwrap();
    let on_a = f.submit(FenceRequest::new("srv-a", Arc::clone(&a), Some("1"), FenceOp::On)).unwrap();
    let off_b = f.submit(FenceRequest::off("srv-b", Arc::clone(&b), Some("7"))).unwrap();
    assert!(t0.elapsed() < Duration::from_millis(100), "submit returned after {:?}", t0.elapsed());

    let mut all = Vec::new();
    let mut finished = Vec::new();
    while finished.len() < 3 {
        let e = ev.recv_timeout(Duration::from_secs(20)).expect("event");
        if matches!(e.kind, FenceEventKind::Finished(_)) {
            finished.push(e.request);
        }
        all.push(e);
    }
    // Per device in order: the off of switch-a finished before its on started.
    let pos = |id: u64, started: bool| {
        all.iter()
            .position(|e| e.request == id && matches!(e.kind, FenceEventKind::Started) == started && (started || matches!(e.kind, FenceEventKind::Finished(_))))
            .unwrap()
    };
    assert!(pos(off_a, false) < pos(on_a, true), "on overtook off on one device");
    // Across devices in parallel: b started before a's first request finished.
    assert!(pos(off_b, true) < pos(off_a, false), "devices were not fenced in parallel");
    for e in &all {
        assert!(e.ts_unix_ms > 0);
        if let FenceEventKind::Finished(r) = &e.kind {
            assert!(r.succeeded(), "{}", e.message());
            assert_eq!(r.permits_promotion(), e.request != on_a);
        }
    }
    assert_eq!(ma.wait_dead(Duration::from_secs(5)), Some(libc::SIGKILL));
    let s = f.counters().snapshot();
    assert_eq!((s.requests, s.completed, s.successes, s.failures, s.in_progress), (3, 3, 3, 0, 0));
    assert_eq!(s.agent_runs, 6);
    assert!(s.last_off_us >= 300_000 && s.max_off_us >= s.last_off_us, "{s:?}");
    f.shutdown();
}

#[test]
fn fencer_counts_failures_by_reason_and_reports_them_as_events() {
    let sw = TempDir::new("ffail");
    let hang = Arc::new(FenceDevice { name: "hang".into(), ..switch(&sw).param("hang", 1).with_timeout(Duration::from_millis(200)).with_attempts(2) });
    let crash = Arc::new(FenceDevice { name: "crash".into(), ..switch(&sw).param("crash", 1).with_attempts(1) });
    let gone = Arc::new(FenceDevice::new("gone", "/nonexistent/fence_gone"));
    let f = Fencer::start(FencerConfig::default()).unwrap();
    let ev = f.events();
    for d in [&hang, &crash, &gone] {
        f.submit(FenceRequest::off("srv", Arc::clone(d), Some("1"))).unwrap();
    }
    for _ in 0..3 {
        let e = next_finished(&ev);
        let FenceEventKind::Finished(r) = &e.kind else { unreachable!() };
        assert!(!r.permits_promotion());
        assert_eq!(e.kind_str(), "fence_failed");
        assert!(e.message().contains("promotion FORBIDDEN"), "{}", e.message());
    }
    let c = f.counters();
    assert_eq!(c.failures_of(FailKind::Timeout), 1);
    assert_eq!(c.failures_of(FailKind::Crashed), 1);
    assert_eq!(c.failures_of(FailKind::AgentMissing), 1);
    let s = c.snapshot();
    assert_eq!((s.failures, s.successes, s.agent_runs, s.agent_run_failures), (3, 0, 4, 4));
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"timeout\",1"), "{json}");
}

#[test]
fn fencer_shutdown_cancels_what_is_queued() {
    let sw = TempDir::new("fcancel");
    let slow = Arc::new(switch(&sw).param("delay_ms", 400));
    let f = Fencer::start(FencerConfig { workers: 1, queue: 16 }).unwrap();
    let ev = f.events();
    let ids: Vec<u64> = (0..4).map(|i| f.submit(FenceRequest::off(format!("n{i}"), Arc::clone(&slow), Some("1"))).unwrap()).collect();
    // Let the first one start, then stop.
    loop {
        let e = ev.recv_timeout(Duration::from_secs(5)).unwrap();
        if matches!(e.kind, FenceEventKind::Started) {
            break;
        }
    }
    let t0 = Instant::now();
    f.shutdown();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let mut results = std::collections::HashMap::new();
    while let Ok(e) = ev.try_recv() {
        if let FenceEventKind::Finished(r) = e.kind {
            results.insert(e.request, r);
        }
    }
    assert_eq!(results.len(), 4, "every request gets its Finished event");
    assert!(results[&ids[0]].permits_promotion(), "the running fence completed");
    for id in &ids[1..] {
        let r = &results[id];
        assert!(matches!(r, FenceResult::Cancelled(_)), "{r:?}");
        assert_eq!(r.failure().unwrap().kind, FailKind::Cancelled);
        assert!(!r.permits_promotion());
    }
}

// ---------------------------------------------------------------------------------------
// the real fence_ipmilan against OpenIPMI's simulated BMC

const FENCE_IPMILAN: &str = "/usr/sbin/fence_ipmilan";

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install Debian's {package} package (scripts/setup.sh installs fence-agents, openipmi and ipmitool)"
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
}

/// ipmi_sim on 127.0.0.1:<free port>, killed (by pid, with its group) on drop.
struct Bmc {
    child: Child,
    port: u16,
    power_file: PathBuf,
    _dir: TempDir,
}

impl Bmc {
    fn start(user: &str, password: &str) -> Bmc {
        let ipmi_sim = which("ipmi_sim").unwrap_or_else(|| {
            panic!("ipmi_sim is missing: install Debian's openipmi package (scripts/setup.sh installs fence-agents, openipmi and ipmitool)")
        });
        let dir = TempDir::new("bmc");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testbed/fence/ipmi_sim");
        let port = {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let power_file = dir.path().join("power");
        fs::write(&power_file, "1\n").unwrap();
        let conf = fs::read_to_string(src.join("lan.conf.in"))
            .unwrap()
            .replace("@PORT@", &port.to_string())
            .replace("@CHASSIS_CONTROL@", &src.join("chassis_control").canonicalize().unwrap().display().to_string())
            .replace("@POWER_FILE@", &power_file.display().to_string())
            .replace("@USER@", user)
            .replace("@PASSWORD@", password);
        fs::write(dir.path().join("lan.conf"), conf).unwrap();
        fs::create_dir_all(dir.path().join("state")).unwrap();
        let log = fs::File::create(dir.path().join("ipmi_sim.log")).unwrap();
        let child = Command::new(ipmi_sim)
            .arg("-c")
            .arg(dir.path().join("lan.conf"))
            .arg("-f")
            .arg(src.join("sim.emu"))
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let bmc = Bmc { child, port, power_file, _dir: dir };
        // Ready when the port is taken.
        let end = Instant::now() + Duration::from_secs(10);
        while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            assert!(Instant::now() < end, "ipmi_sim did not bind 127.0.0.1:{port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        bmc
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

#[test]
fn real_fence_ipmilan_against_the_openipmi_simulated_bmc() {
    require(FENCE_IPMILAN, "fence-agents");
    require("/usr/bin/ipmitool", "ipmitool");
    let bmc = Bmc::start("admin", "bmc-Secret-42");
    let dev = FenceDevice::new("ipmi-sim", FENCE_IPMILAN)
        .param("ip", "127.0.0.1")
        .param("ipport", bmc.port)
        .param("username", "admin")
        .param("password", "bmc-Secret-42")
        .param("lanplus", true)
        .param("cipher", 3)
        .param("power_wait", 0)
        .with_timeout(Duration::from_secs(30))
        .with_attempts(2);

    let mut times = Vec::new();
    let st = status(&dev, None);
    assert_eq!(st.state, Ok(PowerState::On), "{st:#?}");
    times.push(("status (first)", st.record.took));
    let st = status(&dev, None);
    assert_eq!(st.state, Ok(PowerState::On), "{st:#?}");
    times.push(("status", st.record.took));
    assert_eq!(monitor(&dev).result, Ok(()));

    let o = fence_off(&dev, None);
    assert_eq!(o.verdict, FenceVerdict::VerifiedOff, "{o:#?}");
    assert_eq!(o.attempts.len(), 2);
    times.push(("off", o.attempts[0].took));
    times.push(("verify status", o.attempts[1].took));
    times.push(("fence_off total", o.took));
    assert_eq!(fs::read_to_string(&bmc.power_file).unwrap().trim(), "0", "the simulated chassis is off");
    assert_eq!(status(&dev, None).state, Ok(PowerState::Off));

    let on = power_on(&dev, None);
    assert_eq!(on.verdict, OnVerdict::VerifiedOn, "{on:#?}");
    times.push(("power_on total", on.took));
    assert_eq!(fs::read_to_string(&bmc.power_file).unwrap().trim(), "1");

    // A wrong password is an error, not a state.
    let wrong = FenceDevice { parameters: dev.parameters.iter().map(|(k, v)| if k == "password" { (k.clone(), "nope-nope".into()) } else { (k.clone(), v.clone()) }).collect(), attempts: 1, ..dev.clone() };
    let st = status(&wrong, None);
    assert_eq!(st.state.clone().unwrap_err().kind, FailKind::AgentError, "{st:#?}");
    let o = fence_off(&wrong, None);
    assert!(!o.permits_promotion());
    for a in &o.attempts {
        assert!(!a.output_excerpt.contains("nope-nope") && !a.output_excerpt.contains("bmc-Secret"));
    }

    for (what, t) in &times {
        eprintln!("fence_ipmilan vs ipmi_sim: {what}: {:.3} s", t.as_secs_f64());
    }
}
