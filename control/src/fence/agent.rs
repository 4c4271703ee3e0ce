//! One run of a fence agent, by the fence-agents calling convention.
//!
//! The convention (fence-agents' `fencing.py`, and the FenceAgentAPI of the ClusterLabs
//! project):
//!
//! - The agent is started **without arguments**; that is what makes it read its options
//!   from stdin (with any argument it parses its command line instead and ignores stdin).
//! - Options are `key=value` lines on stdin, one per line, ended by closing stdin. Later
//!   lines override earlier ones, so tapsplice writes `action=` first and refuses an
//!   `action` parameter: a parameter could otherwise turn an `off` into an `on`.
//! - Exit status 0 is success. For `action=status`, 0 means the plug is on and 2 means it
//!   is off; anything else is an error (fence-agents' own failures exit 1).
//!
//! Here, in addition: the agent gets its own process group and a deadline; past it the
//! whole group is killed with SIGKILL and the run is a [`FailKind::Timeout`] failure. When
//! the agent exits, what it left running in its group is killed too. stdout and stderr are
//! captured up to [`CAPTURE_LIMIT`] bytes each, with secret parameter values masked. The
//! command line carries nothing (there is none), so secrets never show in `ps`.

use super::{mask_secrets, FailKind, Failure, FenceDevice, MASK};
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of stdout and of stderr kept per run (the rest is counted, not kept).
pub const CAPTURE_LIMIT: usize = 64 * 1024;

/// How long after the agent exited its output pipes are still read, for output that was
/// in flight. Something that escaped the process group and holds the pipes open cannot
/// delay the result longer than this.
const DRAIN_GRACE: Duration = Duration::from_millis(200);

/// The `action=` given to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Off,
    On,
    Status,
    Monitor,
    Reboot,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::On => "on",
            Action::Status => "status",
            Action::Monitor => "monitor",
            Action::Reboot => "reboot",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitInfo {
    /// The agent exited with this status.
    Exited(i32),
    /// The agent was killed by this signal (not by tapsplice).
    Signaled(i32),
    /// The deadline passed; tapsplice killed the process group.
    TimedOut,
    /// The agent was never started (bad request, missing or not executable).
    NotRun,
    /// tapsplice lost track of the agent (waiting failed); the group was killed.
    Lost,
}

impl fmt::Display for ExitInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitInfo::Exited(c) => write!(f, "exit {c}"),
            ExitInfo::Signaled(s) => write!(f, "killed by signal {s} ({})", signal_name(*s)),
            ExitInfo::TimedOut => f.write_str("timed out"),
            ExitInfo::NotRun => f.write_str("not run"),
            ExitInfo::Lost => f.write_str("lost"),
        }
    }
}

/// Captured output of one stream: the first [`CAPTURE_LIMIT`] bytes, secrets masked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// Bytes that were read but not kept.
    pub truncated: u64,
}

impl Captured {
    /// The kept bytes as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// The last `max` characters or so, on one line (line breaks shown as ` | `, control
    /// characters dropped): for events and logs.
    pub fn excerpt(&self, max: usize) -> String {
        let text = self.text();
        let cleaned: String = text
            .trim()
            .chars()
            .map(|c| if c == '\n' { '\u{1}' } else { c })
            .filter(|c| *c == '\u{1}' || !c.is_control())
            .collect::<String>()
            .replace('\u{1}', " | ");
        let n = cleaned.chars().count();
        if n <= max {
            cleaned
        } else {
            let tail: String = cleaned.chars().skip(n - max).collect();
            format!("...{tail}")
        }
    }

    fn push(&mut self, data: &[u8]) {
        let room = CAPTURE_LIMIT.saturating_sub(self.bytes.len());
        let keep = room.min(data.len());
        self.bytes.extend_from_slice(&data[..keep]);
        self.truncated += (data.len() - keep) as u64;
    }
}

/// What a run that ended in an exit status means for its action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentResult {
    /// `off`, `on`, `reboot`, `monitor`: exit 0.
    Success,
    /// `status`: exit 0.
    PowerOn,
    /// `status`: exit 2.
    PowerOff,
}

/// One agent run.
#[derive(Clone, Debug)]
pub struct AgentRun {
    pub action: Action,
    /// Process id of the agent, which is also its process group id.
    pub pid: Option<u32>,
    pub exit: ExitInfo,
    /// From just before the agent was started until its exit (or the kill) was seen.
    pub took: Duration,
    pub stdout: Captured,
    pub stderr: Captured,
    /// The stdin lines with secrets masked: what may be logged.
    pub request_for_log: String,
    /// The result; `Err` for every kind of failure, never a success by default.
    pub result: Result<AgentResult, Failure>,
}

impl AgentRun {
    /// stderr, or stdout when stderr is empty, as an excerpt for events.
    pub fn output_excerpt(&self, max: usize) -> String {
        let e = self.stderr.excerpt(max);
        if e.is_empty() {
            self.stdout.excerpt(max)
        } else {
            e
        }
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The exact stdin of an agent run: `action=...`, then `plug=...` when a plug is given,
/// then the parameters in order, each line ended by `\n`. A `plug` parameter is left out
/// when a plug is given (the server's plug wins). Refused: an `action` parameter, a key
/// that is not a parameter name, a line break in a key, value or plug.
pub fn render_stdin(action: Action, plug: Option<&str>, params: &[(String, String)]) -> Result<String, Failure> {
    if let Some(p) = plug {
        if p.contains(['\n', '\r']) {
            return Err(Failure::new(FailKind::BadRequest, "the plug contains a line break"));
        }
    }
    for (k, v) in params {
        if !valid_key(k) {
            return Err(Failure::new(
                FailKind::BadRequest,
                format!("{:?} is not a fence-agent parameter name (letters, digits, '_', '-')", k),
            ));
        }
        if k.eq_ignore_ascii_case("action") || k.eq_ignore_ascii_case("option") {
            // fence-agents read `option=` as an old name of `action=`.
            return Err(Failure::new(
                FailKind::BadRequest,
                format!("parameter \"{k}\" would override action={action}; tapsplice sets the action itself"),
            ));
        }
        if v.contains(['\n', '\r']) {
            return Err(Failure::new(FailKind::BadRequest, format!("parameter \"{k}\" contains a line break")));
        }
    }
    Ok(render_stdin_unchecked(action, plug, params, false))
}

pub(crate) fn render_stdin_unchecked(
    action: Action,
    plug: Option<&str>,
    params: &[(String, String)],
    masked: bool,
) -> String {
    let mut s = String::with_capacity(64 + params.len() * 24);
    s.push_str("action=");
    s.push_str(action.as_str());
    s.push('\n');
    if let Some(p) = plug {
        s.push_str("plug=");
        s.push_str(p);
        s.push('\n');
    }
    for (k, v) in params {
        if plug.is_some() && k == "plug" {
            continue;
        }
        s.push_str(k);
        s.push('=');
        if masked && super::is_secret_key(k) {
            s.push_str(MASK);
        } else {
            s.push_str(v);
        }
        s.push('\n');
    }
    s
}

fn not_run(action: Action, request_for_log: String, f: Failure) -> AgentRun {
    AgentRun {
        action,
        pid: None,
        exit: ExitInfo::NotRun,
        took: Duration::ZERO,
        stdout: Captured::default(),
        stderr: Captured::default(),
        request_for_log,
        result: Err(f),
    }
}

/// Checks that `path` names an executable file, before trying to run it.
fn check_agent_path(path: &Path) -> Result<(), Failure> {
    if !path.is_absolute() {
        return Err(Failure::new(
            FailKind::AgentPath,
            format!("agent path {} is not absolute", path.display()),
        ));
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(Failure::new(
                FailKind::AgentMissing,
                format!("no fence agent at {} (is the fence-agents package installed?)", path.display()),
            ))
        }
        Err(e) => {
            return Err(Failure::new(
                FailKind::AgentNotExecutable,
                format!("cannot inspect fence agent {}: {e}", path.display()),
            ))
        }
    };
    if !meta.is_file() {
        return Err(Failure::new(
            FailKind::AgentNotExecutable,
            format!("fence agent {} is not a regular file", path.display()),
        ));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Failure::new(
            FailKind::AgentNotExecutable,
            format!("fence agent {} is not executable (mode {:o})", path.display(), meta.permissions().mode() & 0o7777),
        ));
    }
    Ok(())
}

/// Runs `device`'s agent once with `action` (and `plug`), waiting at most the device's
/// timeout. Never panics and never reports a success it did not see: every way of not
/// getting the expected exit status is an `Err` in [`AgentRun::result`].
pub fn run_agent(device: &FenceDevice, action: Action, plug: Option<&str>) -> AgentRun {
    let request_for_log = device.stdin_for_log(action, plug);
    let input = match device.stdin_for(action, plug) {
        Ok(s) => s,
        Err(f) => return not_run(action, request_for_log, f),
    };
    if let Err(f) = check_agent_path(&device.agent) {
        return not_run(action, request_for_log, f);
    }
    let secrets = device.secrets();
    let agent = device.agent.display().to_string();

    let mut cmd = Command::new(&device.agent);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .current_dir("/")
        // Its own process group: a timeout kills the agent and everything it started.
        .process_group(0);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let kind = match e.kind() {
                ErrorKind::NotFound => FailKind::AgentMissing,
                ErrorKind::PermissionDenied => FailKind::AgentNotExecutable,
                _ if e.raw_os_error() == Some(libc::ENOEXEC) => FailKind::AgentNotExecutable,
                _ => FailKind::SpawnFailed,
            };
            // ENOENT for a file that exists: the interpreter of its #! line is missing.
            let hint = if kind == FailKind::AgentMissing { " (the interpreter on its #! line is missing)" } else { "" };
            return not_run(action, request_for_log, Failure::new(kind, format!("cannot start {agent}: {e}{hint}")));
        }
    };
    let pid = child.id();
    let mut io = ChildIo::new(&mut child, input.into_bytes());
    let deadline = started + device.timeout;

    let waited = io.wait_until(pid, deadline);
    let took = started.elapsed();
    // Whatever is still in the group (the agent on timeout, leftovers otherwise) goes.
    // The leader is not reaped yet, so the group id cannot have been reused.
    kill_group(pid);
    let exit = match waited {
        Waited::Exited => match child.wait() {
            Ok(st) => match (st.code(), st.signal()) {
                (Some(c), _) => ExitInfo::Exited(c),
                (None, Some(s)) => ExitInfo::Signaled(s),
                (None, None) => ExitInfo::Lost,
            },
            Err(_) => ExitInfo::Lost,
        },
        Waited::TimedOut => {
            let _ = child.wait();
            ExitInfo::TimedOut
        }
        Waited::Error(_) => {
            let _ = child.wait();
            ExitInfo::Lost
        }
    };
    io.drain(Instant::now() + DRAIN_GRACE);
    let (mut stdout, mut stderr) = io.finish();
    stdout.bytes = mask_secrets(&stdout.bytes, &secrets);
    stderr.bytes = mask_secrets(&stderr.bytes, &secrets);
    stdout.bytes.truncate(CAPTURE_LIMIT);
    stderr.bytes.truncate(CAPTURE_LIMIT);

    let tail = |c: &Captured| c.excerpt(200);
    let result = match (exit, &waited) {
        (ExitInfo::Exited(0), _) => Ok(if action == Action::Status { AgentResult::PowerOn } else { AgentResult::Success }),
        (ExitInfo::Exited(2), _) if action == Action::Status => Ok(AgentResult::PowerOff),
        (ExitInfo::Exited(c), _) => {
            let out = if stderr.bytes.iter().any(|b| !b.is_ascii_whitespace()) { tail(&stderr) } else { tail(&stdout) };
            let what = if action == Action::Status { " (status: 0 = on, 2 = off, else error)" } else { "" };
            Err(Failure::new(
                FailKind::AgentError,
                format!("{agent} action={action} exited with {c}{what}{}{out}", if out.is_empty() { "" } else { ": " }),
            ))
        }
        (ExitInfo::Signaled(s), _) => Err(Failure::new(
            FailKind::Crashed,
            format!("{agent} action={action} was killed by signal {s} ({})", signal_name(s)),
        )),
        (ExitInfo::TimedOut, _) => Err(Failure::new(
            FailKind::Timeout,
            format!(
                "{agent} action={action} did not finish within {} ms; its process group was killed",
                device.timeout.as_millis()
            ),
        )),
        (_, Waited::Error(e)) => Err(Failure::new(FailKind::Io, format!("waiting for {agent} (pid {pid}): {e}"))),
        (_, _) => Err(Failure::new(FailKind::Io, format!("lost track of {agent} (pid {pid})"))),
    };
    AgentRun { action, pid: Some(pid), exit, took, stdout, stderr, request_for_log, result }
}

fn kill_group(pgid: u32) {
    // SAFETY: plain syscall; a negative pid addresses the process group.
    unsafe {
        libc::kill(-(pgid as libc::pid_t), libc::SIGKILL);
    }
}

fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

enum Waited {
    Exited,
    TimedOut,
    Error(std::io::Error),
}

/// The agent's three pipes, driven with poll(2) from one thread: stdin is written as the
/// agent reads it (an agent that never reads cannot block us), stdout and stderr are read
/// as they come (an agent that writes a lot cannot block on a full pipe).
struct ChildIo {
    stdin: Option<std::process::ChildStdin>,
    input: Vec<u8>,
    written: usize,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
    out: Captured,
    err: Captured,
    pidfd: Option<OwnedFd>,
}

impl ChildIo {
    fn new(child: &mut Child, input: Vec<u8>) -> Self {
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        for fd in [
            stdin.as_ref().map(|s| s.as_raw_fd()),
            stdout.as_ref().map(|s| s.as_raw_fd()),
            stderr.as_ref().map(|s| s.as_raw_fd()),
        ]
        .into_iter()
        .flatten()
        {
            set_nonblocking(fd);
        }
        // A pidfd becomes readable when the process exits: exact exit times without
        // polling. Kernels before 5.3 lack it; then poll wakes up every millisecond.
        // SAFETY: plain syscall; the returned fd (if any) is owned from here on.
        let pidfd = unsafe {
            let fd = libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0);
            if fd >= 0 {
                Some(OwnedFd::from_raw_fd(fd as RawFd))
            } else {
                None
            }
        };
        let mut io = ChildIo {
            stdin,
            input,
            written: 0,
            stdout,
            stderr,
            out: Captured::default(),
            err: Captured::default(),
            pidfd,
        };
        if io.input.is_empty() {
            io.stdin = None;
        }
        io
    }

    /// Pumps the pipes until the agent exits (seen without reaping it) or the deadline.
    fn wait_until(&mut self, pid: u32, deadline: Instant) -> Waited {
        loop {
            match exited_without_reaping(pid) {
                Ok(true) => return Waited::Exited,
                Ok(false) => {}
                Err(e) => return Waited::Error(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Waited::TimedOut;
            }
            let mut wait = deadline - now;
            if self.pidfd.is_none() {
                wait = wait.min(Duration::from_millis(1));
            }
            self.poll_once(wait, true);
        }
    }

    /// Reads what is left in stdout and stderr until both are closed or `until`.
    fn drain(&mut self, until: Instant) {
        self.stdin = None;
        self.pidfd = None;
        while self.stdout.is_some() || self.stderr.is_some() {
            let now = Instant::now();
            if now >= until {
                break;
            }
            self.poll_once(until - now, false);
        }
    }

    fn finish(self) -> (Captured, Captured) {
        (self.out, self.err)
    }

    fn poll_once(&mut self, wait: Duration, with_pidfd: bool) {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(4);
        let mut which: Vec<u8> = Vec::with_capacity(4);
        if let Some(s) = &self.stdin {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLOUT, revents: 0 });
            which.push(0);
        }
        if let Some(s) = &self.stdout {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            which.push(1);
        }
        if let Some(s) = &self.stderr {
            fds.push(libc::pollfd { fd: s.as_raw_fd(), events: libc::POLLIN, revents: 0 });
            which.push(2);
        }
        if with_pidfd {
            if let Some(p) = &self.pidfd {
                fds.push(libc::pollfd { fd: p.as_raw_fd(), events: libc::POLLIN, revents: 0 });
                which.push(3);
            }
        }
        let ms = wait.as_millis().clamp(if wait.is_zero() { 0 } else { 1 }, 1000) as libc::c_int;
        // SAFETY: fds is a valid array of fds.len() pollfd structures.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n <= 0 {
            return; // timeout, or EINTR: the caller loops
        }
        for (pfd, w) in fds.iter().zip(which) {
            if pfd.revents == 0 {
                continue;
            }
            match w {
                0 => self.write_stdin(),
                1 if read_available(self.stdout.as_mut(), &mut self.out) => self.stdout = None,
                2 if read_available(self.stderr.as_mut(), &mut self.err) => self.stderr = None,
                _ => {}
            }
        }
    }

    fn write_stdin(&mut self) {
        let Some(s) = self.stdin.as_mut() else { return };
        loop {
            match s.write(&self.input[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    if self.written >= self.input.len() {
                        // Closing stdin is the end of the request.
                        self.stdin = None;
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    // EPIPE: the agent closed its stdin (or exited) without reading it all.
                    self.stdin = None;
                    return;
                }
            }
        }
    }
}

/// Reads until the pipe would block; true when it reached end of file (or failed).
fn read_available<R: Read>(r: Option<&mut R>, into: &mut Captured) -> bool {
    let Some(r) = r else { return true };
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.push(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// Whether `pid` has exited, leaving it a zombie so that its process group id stays
/// reserved until we have killed the group.
fn exited_without_reaping(pid: u32) -> std::io::Result<bool> {
    // SAFETY: waitid fills a zeroed siginfo_t we own.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(info.si_pid() != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn stdin_is_action_plug_then_parameters_in_order() {
        let p = params(&[("ip", "192.0.2.1"), ("username", "admin"), ("password", "pw"), ("lanplus", "1")]);
        assert_eq!(
            render_stdin(Action::Off, Some("3"), &p).unwrap(),
            "action=off\nplug=3\nip=192.0.2.1\nusername=admin\npassword=pw\nlanplus=1\n"
        );
        assert_eq!(render_stdin(Action::Status, None, &p[..1]).unwrap(), "action=status\nip=192.0.2.1\n");
        assert_eq!(
            render_stdin_unchecked(Action::Off, Some("3"), &p, true),
            "action=off\nplug=3\nip=192.0.2.1\nusername=admin\npassword=****\nlanplus=1\n"
        );
    }

    #[test]
    fn a_plug_parameter_yields_to_the_given_plug() {
        let p = params(&[("plug", "7"), ("ip", "x")]);
        assert_eq!(render_stdin(Action::On, Some("3"), &p).unwrap(), "action=on\nplug=3\nip=x\n");
        assert_eq!(render_stdin(Action::On, None, &p).unwrap(), "action=on\nplug=7\nip=x\n");
    }

    #[test]
    fn requests_that_could_change_the_action_are_refused() {
        for bad in [
            params(&[("action", "on")]),
            params(&[("Action", "on")]),
            params(&[("option", "on")]),
            params(&[("ip", "1.2.3.4\naction=on")]),
            params(&[("ip", "1.2.3.4\r")]),
            params(&[("a=b", "1")]),
            params(&[("", "1")]),
        ] {
            let e = render_stdin(Action::Off, None, &bad).unwrap_err();
            assert_eq!(e.kind, FailKind::BadRequest, "{bad:?}");
        }
        let e = render_stdin(Action::Off, Some("3\naction=on"), &[]).unwrap_err();
        assert_eq!(e.kind, FailKind::BadRequest);
    }

    #[test]
    fn capture_is_bounded_and_excerpts_are_one_line() {
        let mut c = Captured::default();
        c.push(&vec![b'a'; CAPTURE_LIMIT - 1]);
        c.push(b"bcd");
        assert_eq!(c.bytes.len(), CAPTURE_LIMIT);
        assert_eq!(c.truncated, 2);
        let c = Captured { bytes: b"line one\nline\x07 two\n".to_vec(), truncated: 0 };
        assert_eq!(c.excerpt(100), "line one | line two");
        assert_eq!(c.excerpt(3), "...two");
    }

    #[test]
    fn missing_relative_and_non_executable_agents_are_not_run() {
        let d = FenceDevice::new("x", "fence_ipmilan");
        let r = run_agent(&d, Action::Status, None);
        assert_eq!((r.exit, r.result.unwrap_err().kind), (ExitInfo::NotRun, FailKind::AgentPath));
        let d = FenceDevice::new("x", "/nonexistent/fence_nothing");
        let r = run_agent(&d, Action::Status, None);
        assert_eq!(r.result.unwrap_err().kind, FailKind::AgentMissing);
        let d = FenceDevice::new("x", "/");
        assert_eq!(run_agent(&d, Action::Status, None).result.unwrap_err().kind, FailKind::AgentNotExecutable);
        let d = FenceDevice::new("x", "/etc/hostname");
        if Path::new("/etc/hostname").exists() {
            assert_eq!(run_agent(&d, Action::Status, None).result.unwrap_err().kind, FailKind::AgentNotExecutable);
        }
    }

    #[test]
    fn exit_codes_map_by_action() {
        let t = FenceDevice::new("t", "/bin/true");
        assert_eq!(run_agent(&t, Action::Off, None).result, Ok(AgentResult::Success));
        assert_eq!(run_agent(&t, Action::Status, None).result, Ok(AgentResult::PowerOn));
        let f = FenceDevice::new("f", "/bin/false");
        let r = run_agent(&f, Action::Status, None);
        assert_eq!(r.exit, ExitInfo::Exited(1));
        assert_eq!(r.result.unwrap_err().kind, FailKind::AgentError);
        assert_eq!(run_agent(&f, Action::Off, None).result.unwrap_err().kind, FailKind::AgentError);
    }
}
