//! The operator-facing services of a running appliance, started and stopped together: the
//! ctl socket and (if enabled) the metrics endpoint, both reading one [`SnapshotCell`].
//!
//! ```text
//! let services = ControlServices::start(&socket, Some(metrics_addr), MetricsSnapshot::starting(node, role), None, None)?;
//! // ... every ~250 ms: services.publish(MetricsSnapshot::from_report(&report, Some(&hist)));
//! eprintln!("tapsplice: {}", services.describe());
//! services.stop(); // or drop it: stops both, removes the socket file
//! ```

use super::handler::{self, EventsFn, FenceFn, LinksSlot, Sources, SplicesFn, SplicesSlot};
use dataplane::lcore_link::LinkStates;
use super::server;
use crate::metrics::{self, MetricsSnapshot, SnapshotCell};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The ctl server and the metrics server; stopped (threads joined, socket removed) by
/// [`ControlServices::stop`] or on drop.
pub struct ControlServices {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Where the ctl socket is.
    pub socket: PathBuf,
    /// The address the metrics server is bound to (`None` = disabled).
    pub metrics_addr: Option<SocketAddr>,
    /// What both servers read; [`ControlServices::publish`] replaces it.
    pub cell: SnapshotCell,
    splices: SplicesSlot,
    links: LinksSlot,
}

impl ControlServices {
    /// Binds the ctl socket and, if `metrics` is `Some`, the metrics listener. Errors are one
    /// line naming the cause (a second appliance on the same socket, a busy metrics port).
    pub fn start(
        socket: &Path,
        metrics: Option<SocketAddr>,
        initial: MetricsSnapshot,
        events: Option<EventsFn>,
        fence: Option<FenceFn>,
    ) -> Result<ControlServices, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let cell = SnapshotCell::new(initial);
        let mut me = ControlServices {
            stop: stop.clone(),
            threads: Vec::new(),
            socket: socket.to_path_buf(),
            metrics_addr: None,
            cell: cell.clone(),
            splices: SplicesSlot::default(),
            links: LinksSlot::default(),
        };
        let handler = handler::standard(Sources { snapshot: cell.source(), events, fence, splices: me.splices.clone(), links: me.links.clone() });
        me.threads.push(server::spawn(socket, handler, stop.clone()).map_err(|e| format!("ctl: {e}"))?);
        if let Some(addr) = metrics {
            // On error `me` is dropped, which stops the ctl server again.
            let (bound, t) = metrics::spawn(addr, cell.source(), stop).map_err(|e| e.to_string())?;
            me.threads.push(t);
            me.metrics_addr = Some(bound);
        }
        Ok(me)
    }

    /// Where `ctl splices` gets the connections, once the splice role runs.
    pub fn set_splices(&self, f: SplicesFn) {
        if let Ok(mut g) = self.splices.write() {
            *g = Some(f);
        }
    }

    /// Where `ctl status` and `ctl ports` read the links, once the ports run (the
    /// workers' own cells, so that ctl never shows a link the workers see otherwise).
    pub fn set_links(&self, links: LinkStates) {
        if let Ok(mut g) = self.links.write() {
            *g = Some(links);
        }
    }

    /// Replaces the snapshot both servers answer from.
    pub fn publish(&self, snapshot: MetricsSnapshot) {
        self.cell.publish(snapshot);
    }

    /// One line for the log: `ctl socket PATH, metrics http://ADDR/metrics` (or `metrics off`).
    pub fn describe(&self) -> String {
        match self.metrics_addr {
            Some(a) => format!("ctl socket {}, metrics http://{a}/metrics", self.socket.display()),
            None => format!("ctl socket {}, metrics off", self.socket.display()),
        }
    }

    /// Stops both servers and waits for them (≈ 100 ms).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ControlServices {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::client::Client;
    use crate::ctl::proto::{Command, StatusResult};
    use std::io::{Read, Write};

    #[test]
    fn start_serve_and_stop_both() {
        let dir = std::env::temp_dir().join(format!("tsctl-svc-{}", std::process::id()));
        let socket = dir.join("n1.sock");
        let start = || MetricsSnapshot::starting("n1", "forward");
        let svc = ControlServices::start(&socket, Some("127.0.0.1:0".parse().unwrap()), start(), None, None).unwrap();
        let addr = svc.metrics_addr.unwrap();
        assert_eq!(svc.describe(), format!("ctl socket {}, metrics http://{addr}/metrics", socket.display()));
        let status = || -> StatusResult {
            serde_json::from_value(Client::connect(&socket).unwrap().call(&Command::Status).unwrap()).unwrap()
        };
        assert_eq!((status().node.as_str(), status().role.as_str(), status().uptime_s), ("n1", "forward", 0.0));
        svc.publish(MetricsSnapshot { uptime_s: 3.0, ..start() });
        assert_eq!(status().uptime_s, 3.0);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.contains("tapsplice_node_info{node=\"n1\",role=\"forward\""), "{body}");

        // A second appliance on the same socket fails with one line, and leaves the first alone.
        let e = ControlServices::start(&socket, None, start(), None, None).err().unwrap();
        assert!(e.starts_with("ctl: another process is serving the ctl socket"), "{e}");
        // A busy metrics port fails too, and releases the ctl socket it had bound.
        let other = dir.join("n2.sock");
        let e = ControlServices::start(&other, Some(addr), start(), None, None).err().unwrap();
        assert!(e.contains("cannot serve metrics on"), "{e}");
        assert!(!other.exists(), "the ctl socket of the failed start is removed");

        svc.stop();
        assert!(!socket.exists());
        assert!(std::net::TcpStream::connect(addr).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
