//! Network namespace primitives: create, delete, enter (per thread), interfaces.

use crate::cmd::{ip, ip_ns};
use anyhow::{Context, Result};
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::path::Path;

pub fn exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Create a namespace (IPv6 off) and bring its loopback up.
///
/// The workloads are IPv4. With IPv6 on, every interface that comes up sends router and
/// neighbour solicitations and MLD reports on its own; an appliance forwards them, and one
/// that reaches a TAP interface while the testbed is still moving it into its namespace
/// (down for a moment) is a TX error of the appliance's port — noise that makes the port
/// counters the tests check depend on timing.
pub fn create(ns: &str) -> Result<()> {
    ip(&["netns", "add", ns])?;
    ip(&["netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])?;
    ip_ns(ns, &["link", "set", "lo", "up"])?;
    Ok(())
}

pub fn delete(ns: &str) -> Result<()> {
    if exists(ns) {
        ip(&["netns", "del", ns])?;
    }
    Ok(())
}

/// All namespaces (names under /run/netns).
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Move the calling thread into namespace `ns`. Sockets created afterwards by this thread
/// live in that namespace (and keep it after the thread leaves). Never call this on the
/// main thread.
pub fn enter(ns: &str) -> Result<()> {
    let f = File::open(Path::new("/run/netns").join(ns))
        .with_context(|| format!("namespace {} does not exist", ns))?;
    setns(&f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {}", ns))?;
    Ok(())
}

/// Does interface `ifname` exist in the root namespace (of this process)?
pub fn root_link_exists(ifname: &str) -> bool {
    Path::new("/sys/class/net").join(ifname).exists()
}

pub fn link_exists(ns: &str, ifname: &str) -> bool {
    ip_ns(ns, &["link", "show", "dev", ifname]).is_ok()
}

/// Configure an interface inside a namespace: optional rename, MTU, MAC, address, master,
/// then `up`.
pub struct IfConfig<'a> {
    pub mtu: Option<u32>,
    pub mac: Option<&'a str>,
    pub address: Option<&'a str>,
    pub master: Option<&'a str>,
}

pub fn configure(ns: &str, ifname: &str, c: &IfConfig) -> Result<()> {
    if let Some(mtu) = c.mtu {
        ip_ns(ns, &["link", "set", "dev", ifname, "mtu", &mtu.to_string()])?;
    }
    if let Some(mac) = c.mac {
        ip_ns(ns, &["link", "set", "dev", ifname, "address", mac])?;
    }
    if let Some(master) = c.master {
        ip_ns(ns, &["link", "set", "dev", ifname, "master", master])?;
    }
    if let Some(addr) = c.address {
        ip_ns(ns, &["addr", "add", addr, "dev", ifname])?;
    }
    ip_ns(ns, &["link", "set", "dev", ifname, "up"])?;
    Ok(())
}

/// Move an interface from the root namespace into `ns`, renaming it to `new_name` there.
pub fn move_from_root(ifname: &str, ns: &str, new_name: &str) -> Result<()> {
    ip(&["link", "set", "dev", ifname, "netns", ns])?;
    if ifname != new_name {
        ip_ns(ns, &["link", "set", "dev", ifname, "name", new_name])?;
    }
    Ok(())
}

pub fn set_link(ns: &str, ifname: &str, up: bool) -> Result<()> {
    ip_ns(
        ns,
        &["link", "set", "dev", ifname, if up { "up" } else { "down" }],
    )?;
    Ok(())
}
