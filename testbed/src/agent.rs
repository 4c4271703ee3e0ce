//! `tapsplice agent` processes inside namespaces (`[[agent]]` of a topology): one per
//! simulated server or balance member, heartbeating to an appliance. The testbed writes
//! each agent's config (the run's rack key, the appliance's heartbeat port from its run
//! config), starts it in its namespace, waits until the appliance reports the peer up, and
//! lets faults kill and restart it.

use crate::appliance::RunningAppliance;
use crate::guard;
use crate::runid::RunId;
use crate::topology::{Agent, Topology};
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub const READY_LINE: &str = "tapsplice agent: running";

/// The run's rack key file (`{run_dir}/rack.key`, mode 0600, 32 random bytes in hex): the
/// `keys.rack_key` of rack configs (`rack_key = "{run_dir}/rack.key"`) and of the agents.
pub fn rack_key_path(run: &RunId) -> PathBuf {
    run.run_dir().join("rack.key")
}

pub fn write_rack_key(run: &RunId) -> Result<()> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    let hex: String = b.iter().map(|x| format!("{:02x}", x)).collect();
    let p = rack_key_path(run);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)
        .with_context(|| format!("cannot create {}", p.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{}", hex).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentResult {
    pub id: String,
    pub ns: String,
    /// Times the agent was started (1 + start_agent faults).
    pub starts: u32,
    /// Exit status of its last process.
    pub exit: String,
    pub killed_by_fault: bool,
    pub error: Option<String>,
    pub log: String,
}

struct Proc {
    spec: Agent,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
    killed_by_fault: bool,
    error: Option<String>,
    last_exit: Option<String>,
}

/// The run's agents.
pub struct Agents {
    bin: PathBuf,
    run: RunId,
    procs: Mutex<Vec<Proc>>,
    /// Appliance name → (ctl socket, is tapsplice).
    ctl: BTreeMap<String, (PathBuf, bool)>,
    /// Agents are spawned by one thread that lives as long as this value: PDEATHSIG follows
    /// the spawning *thread*, so an agent started by a fault from the (short-lived) fault
    /// thread would be killed when that thread ends.
    spawner: Mutex<mpsc::Sender<SpawnJob>>,
}

type SpawnJob = Box<dyn FnOnce() + Send>;

fn spawner() -> mpsc::Sender<SpawnJob> {
    let (tx, rx) = mpsc::channel::<SpawnJob>();
    std::thread::Builder::new()
        .name("agent-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .expect("cannot start the agent spawner thread");
    tx
}

impl Agents {
    /// Write every agent's config and start them in their namespaces (in file order).
    pub fn start_all(
        topo: &Topology,
        run: &RunId,
        bin: Option<&Path>,
        apps: &[RunningAppliance],
    ) -> Result<Arc<Agents>> {
        let mut ctl = BTreeMap::new();
        for a in apps {
            ctl.insert(
                a.name.clone(),
                (
                    a.ctl_socket.clone(),
                    a.kind == crate::topology::ApplianceKind::Tapsplice,
                ),
            );
        }
        let agents = Arc::new(Agents {
            bin: match bin {
                Some(b) => b.to_path_buf(),
                None if topo.agents.is_empty() => PathBuf::new(),
                None => bail!("[[agent]] needs the tapsplice binary (--tapsplice PATH)"),
            },
            run: run.clone(),
            procs: Mutex::new(Vec::new()),
            ctl,
            spawner: Mutex::new(spawner()),
        });
        for a in &topo.agents {
            let what = format!("agent `{}`", a.id);
            let app = apps
                .iter()
                .find(|x| x.name == a.appliance)
                .ok_or_else(|| anyhow!("{}: appliance `{}` is not running", what, a.appliance))?;
            let port = app.heartbeat_port.ok_or_else(|| {
                anyhow!(
                    "{}: the rack config of appliance `{}` has no node.mgmt (the heartbeat port), e.g. mgmt = \"127.0.0.1:{{mgmt_port}}\"",
                    what,
                    a.appliance
                )
            })?;
            let ip: IpAddr = a
                .address
                .parse()
                .map_err(|_| anyhow!("{}: bad address {}", what, a.address))?;
            let config = run.run_dir().join(format!("agent-{}.toml", a.id));
            let text = format!(
                "# written by testbed for run {run}\n[agent]\nid = \"{id}\"\nclass = \"{class}\"\nrack_key = \"{key}\"\nbind = \"{bind}\"\nappliances = [\"{to}\"]\ninterval_ms = {iv}\n",
                run = run,
                id = a.id,
                class = a.class,
                key = rack_key_path(run).display(),
                bind = if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" },
                to = SocketAddr::new(ip, port),
                iv = a.interval_ms,
            );
            std::fs::write(&config, text)
                .with_context(|| format!("cannot write {}", config.display()))?;
            agents
                .procs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Proc {
                    spec: a.clone(),
                    config,
                    log: run.run_dir().join(format!("agent-{}.log", a.id)),
                    child: None,
                    starts: 0,
                    killed_by_fault: false,
                    error: None,
                    last_exit: None,
                });
            agents.start(&a.id)?;
        }
        Ok(agents)
    }

    /// Start (or restart) agent `id` and wait for its ready line.
    pub fn start(&self, id: &str) -> Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs
            .iter_mut()
            .find(|p| p.spec.id == id)
            .ok_or_else(|| anyhow!("no agent `{}`", id))?;
        if let Some(c) = p.child.as_mut() {
            if c.try_wait()?.is_none() {
                bail!("agent `{}` is already running", id);
            }
        }
        if let Some(mut c) = p.child.take() {
            p.last_exit = c.wait().ok().map(|s| s.to_string());
            guard::forget_child(c.id() as i32);
        }
        let loadavg = match p.spec.loadavg {
            Some(l) => {
                let f = self.run.run_dir().join(format!("agent-{}.loadavg", id));
                std::fs::write(&f, format!("{:.2} {:.2} {:.2} 1/100 1\n", l, l, l))
                    .with_context(|| format!("cannot write {}", f.display()))?;
                Some(f)
            }
            None => None,
        };
        let (bin, ns, config, log, nice) = (
            self.bin.clone(),
            self.run.netns(&p.spec.ns),
            p.config.clone(),
            p.log.clone(),
            p.spec.nice,
        );
        let (tx, rx) = mpsc::channel();
        self.spawner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Box::new(move || {
                let _ = tx.send(spawn_in_ns(
                    &bin,
                    &ns,
                    &config,
                    &log,
                    loadavg.as_deref(),
                    nice,
                ));
            }))
            .map_err(|_| anyhow!("agent `{}`: the spawner thread is gone", id))?;
        let child = rx
            .recv()
            .map_err(|_| anyhow!("agent `{}`: the spawner thread is gone", id))?
            .map_err(|e| anyhow!("agent `{}`: {:#}", id, e))?;
        p.child = Some(child);
        p.starts += 1;
        Ok(())
    }

    /// Signal agent `id` (a fault).
    pub fn kill(&self, id: &str, sig: nix::sys::signal::Signal) -> Result<()> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs
            .iter_mut()
            .find(|p| p.spec.id == id)
            .ok_or_else(|| anyhow!("no agent `{}`", id))?;
        let c = p
            .child
            .as_mut()
            .ok_or_else(|| anyhow!("agent `{}` is not running", id))?;
        if c.try_wait()?.is_some() {
            bail!("agent `{}` is not running", id);
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig)
            .map_err(|e| anyhow!("kill agent `{}`: {}", id, e))?;
        p.killed_by_fault = true;
        Ok(())
    }

    /// Wait until every agent's appliance (when it is tapsplice) reports the agent's peer
    /// `up` in `tapsplice ctl peers`.
    pub fn wait_up(&self) -> Result<()> {
        let specs: Vec<Agent> = self
            .procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|p| p.spec.clone())
            .collect();
        for a in specs {
            let Some((sock, true)) = self.ctl.get(&a.appliance).cloned() else {
                continue;
            };
            let deadline = Instant::now() + Duration::from_secs_f64(a.ready_timeout_s);
            let mut last;
            loop {
                if guard::interrupted() {
                    bail!("interrupted");
                }
                match crate::ctl::peer_state(&self.bin, &sock, &a.id) {
                    Ok(Some(s)) if s == "up" => break,
                    Ok(s) => {
                        last = format!("state {:?}", s.unwrap_or_else(|| "unknown peer".into()))
                    }
                    Err(e) => last = format!("{:#}", e),
                }
                if Instant::now() > deadline {
                    bail!(
                        "agent `{}`: appliance `{}` did not report peer `{}` up within {:.0} s (last: {}); see {}",
                        a.id,
                        a.appliance,
                        a.id,
                        a.ready_timeout_s,
                        last,
                        self.run.run_dir().join(format!("agent-{}.log", a.id)).display()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("testbed: agent {} is up at {}", a.id, a.appliance);
        }
        Ok(())
    }

    /// Stop every agent (SIGINT, then SIGKILL) and report.
    pub fn stop_all(&self) -> Vec<AgentResult> {
        let mut procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for p in procs.iter_mut() {
            let mut exit = p.last_exit.clone().unwrap_or_else(|| "not started".into());
            if let Some(mut c) = p.child.take() {
                let pid = c.id() as i32;
                let st = match c.try_wait() {
                    Ok(Some(st)) => Some(st),
                    _ => {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGINT,
                        );
                        let deadline = Instant::now() + Duration::from_secs(3);
                        loop {
                            match c.try_wait() {
                                Ok(Some(st)) => break Some(st),
                                Ok(None) if Instant::now() < deadline => {
                                    std::thread::sleep(Duration::from_millis(20))
                                }
                                _ => {
                                    p.error =
                                        Some("did not exit within 3 s of SIGINT; killed".into());
                                    let _ = c.kill();
                                    break c.wait().ok();
                                }
                            }
                        }
                    }
                };
                guard::forget_child(pid);
                exit = st
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "unknown".into());
                let ok = st.map(|s| s.success()).unwrap_or(false);
                if !ok && !p.killed_by_fault && p.error.is_none() {
                    p.error = Some(format!("exited with {}", exit));
                }
            }
            out.push(AgentResult {
                id: p.spec.id.clone(),
                ns: p.spec.ns.clone(),
                starts: p.starts,
                exit,
                killed_by_fault: p.killed_by_fault,
                error: p.error.clone(),
                log: p.log.display().to_string(),
            });
        }
        out
    }
}

/// Start `bin agent --config CONFIG` inside namespace `ns` (setns before exec), in its own
/// process group, with PDEATHSIG; wait (10 s) for the ready line; log its output to `log`.
/// With `loadavg`, the process gets a private mount namespace in which that file is
/// bind-mounted over `/proc/loadavg`.
fn spawn_in_ns(
    bin: &Path,
    ns: &str,
    config: &Path,
    log: &Path,
    loadavg: Option<&Path>,
    nice: i32,
) -> Result<Child> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let nsf = std::fs::File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("namespace {} does not exist", ns))?;
    let fd = nsf.as_raw_fd();
    let fake = loadavg
        .map(|p| CString::new(p.as_os_str().as_bytes()))
        .transpose()
        .map_err(|_| anyhow!("bad loadavg path"))?;
    let root = CString::new("/").unwrap_or_default();
    let proc_loadavg = CString::new("/proc/loadavg").unwrap_or_default();
    let mut cmd = Command::new(bin);
    cmd.arg("agent")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: only async-signal-safe calls (setns, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nice != 0 && libc::setpriority(libc::PRIO_PROCESS, 0, nice) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(f) = &fake {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    || libc::mount(
                        f.as_ptr(),
                        proc_loadavg.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} agent", bin.display()))?;
    drop(nsf);
    let pid = child.id() as i32;
    guard::add_child(pid, "agent");
    let logf = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?,
    ));
    let (tx, rx) = mpsc::channel::<String>();
    let pump =
        |r: Box<dyn std::io::Read + Send>, tag: &'static str, tx: Option<mpsc::Sender<String>>| {
            let logf = logf.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut f) = logf.lock() {
                        let _ = writeln!(f, "{}{}", tag, line);
                    }
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        };
    if let Some(o) = child.stdout.take() {
        pump(Box::new(o), "", Some(tx));
    }
    if let Some(e) = child.stderr.take() {
        pump(Box::new(e), "[stderr] ", None);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(l) if l.contains(READY_LINE) => break,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(100));
                let st = child.try_wait().ok().flatten();
                let _ = child.kill();
                let _ = child.wait();
                guard::forget_child(pid);
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(3).collect();
                bail!(
                    "exited before `{}` ({}): {}",
                    READY_LINE,
                    st.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                );
            }
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            guard::forget_child(pid);
            bail!(
                "no `{}` line within 10 s (log {})",
                READY_LINE,
                log.display()
            );
        }
    }
    std::thread::spawn(move || for _ in rx {});
    Ok(child)
}
