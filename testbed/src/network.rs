//! Building a topology's network: namespaces, the fabric namespace with its bridges, veth
//! links, routes. Appliance TAPs are placed by `appliance`.

use crate::cmd::ip_ns;
use crate::guard;
use crate::netns::{self, IfConfig};
use crate::runid::RunId;
use crate::topology::{Endpoint, Topology};
use anyhow::{anyhow, Result};
use std::io::Write;

/// Interface name of a link end that sits on a bridge (in the fabric namespace).
pub fn bridge_end_name(ep: &Endpoint, link_index: usize, end: usize) -> String {
    ep.ifname
        .clone()
        .unwrap_or_else(|| format!("l{}{}", link_index, if end == 0 { 'a' } else { 'b' }))
}

/// Create every namespace (and the fabric namespace), bridges and links.
pub fn build(topo: &Topology, run: &RunId) -> Result<()> {
    let fabric = run.fabric_ns();
    guard::add_namespace(&fabric);
    netns::create(&fabric).map_err(|e| anyhow!("fabric namespace: {:#}", e))?;
    for n in &topo.namespaces {
        let ns = run.netns(&n.name);
        guard::add_namespace(&ns);
        netns::create(&ns).map_err(|e| anyhow!("namespace {}: {:#}", n.name, e))?;
        if n.forwarding {
            sysctl(&ns, "net/ipv4/ip_forward", "1")?;
        }
        for (k, v) in &n.sysctl {
            let v = crate::topology::sysctl_value(v).unwrap_or_default();
            sysctl(&ns, &k.replace('.', "/"), &v)
                .map_err(|e| anyhow!("namespace {}: sysctl {}: {:#}", n.name, k, e))?;
        }
        for a in &n.loopback {
            ip_ns(&ns, &["addr", "add", a, "dev", "lo"])
                .map_err(|e| anyhow!("namespace {}: loopback address {}: {:#}", n.name, a, e))?;
        }
    }
    for b in &topo.bridges {
        ip_ns(&fabric, &["link", "add", "name", &b.name, "type", "bridge"])
            .map_err(|e| anyhow!("bridge {}: {:#}", b.name, e))?;
        ip_ns(&fabric, &["link", "set", "dev", &b.name, "up"])?;
    }
    for (li, l) in topo.links.iter().enumerate() {
        let what = l.name.clone().unwrap_or_else(|| format!("#{}", li + 1));
        let end = |ep: &Endpoint, i: usize| -> (String, String) {
            match &ep.ns {
                Some(ns) => (run.netns(ns), ep.ifname.clone().unwrap_or_default()),
                None => (fabric.clone(), bridge_end_name(ep, li, i)),
            }
        };
        let (ans, aif) = end(&l.a, 0);
        let (bns, bif) = end(&l.b, 1);
        crate::cmd::ip(&[
            "link", "add", &aif, "netns", &ans, "type", "veth", "peer", "name", &bif, "netns", &bns,
        ])
        .map_err(|e| anyhow!("link {}: {:#}", what, e))?;
        for ((ns, ifn), ep) in [((&ans, &aif), &l.a), ((&bns, &bif), &l.b)] {
            netns::configure(
                ns,
                ifn,
                &IfConfig {
                    mtu: l.mtu,
                    mac: ep.mac.as_deref(),
                    address: ep.address.as_deref(),
                    master: ep.bridge.as_deref(),
                },
            )
            .map_err(|e| anyhow!("link {}: {:#}", what, e))?;
            if !l.offloads {
                no_offloads(Some(ns), ifn).map_err(|e| anyhow!("link {}: {:#}", what, e))?;
            }
        }
    }
    for b in &topo.bridges {
        if let Some(rules) = &b.nft {
            let file = run.run_dir().join(format!("{}.nft", b.name));
            nft(Some(&fabric), rules, &file).map_err(|e| anyhow!("bridge {}: nft: {:#}", b.name, e))?;
        }
    }
    Ok(())
}

/// TSO, GSO and TX checksum offload off on `ifname` in namespace `ns` (the root
/// namespace for `None`) (ethtool): its kernel then finishes every frame sent through it.
pub fn no_offloads(ns: Option<&str>, ifname: &str) -> Result<()> {
    let ethtool = ["ethtool", "-K", ifname, "tso", "off", "gso", "off", "tx", "off"];
    match ns {
        Some(ns) => crate::cmd::run("ip", &[&["netns", "exec", ns][..], &ethtool].concat(), std::time::Duration::from_secs(10)),
        None => crate::cmd::run(ethtool[0], &ethtool[1..], std::time::Duration::from_secs(10)),
    }
    .map(|_| ())
    .map_err(|e| anyhow!("ethtool -K {} (scripts/setup.sh installs ethtool): {:#}", ifname, e))
}

/// Load an nftables ruleset into namespace `ns` (`ip netns exec NS nft -f FILE`), or into
/// the root namespace.
fn nft(ns: Option<&str>, rules: &str, path: &std::path::Path) -> Result<()> {
    std::fs::write(path, rules).map_err(|e| anyhow!("{}: {}", path.display(), e))?;
    let p = path.to_string_lossy().into_owned();
    let timeout = std::time::Duration::from_secs(10);
    match ns {
        Some(ns) => crate::cmd::run("ip", &["netns", "exec", ns, "nft", "-f", &p], timeout),
        None => crate::cmd::run("nft", &["-f", &p], timeout),
    }
    .map(|_| ())
}

/// Keeps the root kernel off the frames arriving on `iface`, whose socket reader (a
/// net_af_packet or net_af_xdp port) must see them alone: an nftables netdev ingress chain
/// named after the interface drops them all (packet sockets see a frame before that hook;
/// an XDP socket takes it before it, and this drops what its program passes on). The
/// ruleset is written to `dir`.
pub fn drop_ingress(iface: &str, dir: &std::path::Path) -> Result<()> {
    let rules = format!("table netdev {iface} {{\n  chain ingress {{\n    type filter hook ingress device \"{iface}\" priority 0; policy drop;\n  }}\n}}\n");
    nft(None, &rules, &dir.join(format!("{iface}.nft"))).map_err(|e| anyhow!("nft ingress drop on {}: {:#}", iface, e))
}

/// Removes [`drop_ingress`]'s table for `iface` (an error when there is none).
pub fn undo_drop_ingress(iface: &str) -> Result<()> {
    crate::cmd::run("nft", &["delete", "table", "netdev", iface], std::time::Duration::from_secs(10)).map(|_| ())
}

/// The interfaces that have a [`drop_ingress`] table (any netdev table, by name).
pub fn ingress_drops() -> Vec<String> {
    crate::cmd::run("nft", &["list", "tables", "netdev"], std::time::Duration::from_secs(10))
        .map(|out| out.lines().filter_map(|l| l.strip_prefix("table netdev ")).map(|n| n.trim().to_string()).collect())
        .unwrap_or_default()
}

/// Add the namespaces' routes (again after appliances restart, since a route disappears
/// with its interface).
pub fn routes(topo: &Topology, run: &RunId) -> Result<()> {
    for n in &topo.namespaces {
        let ns = run.netns(&n.name);
        for r in &n.routes {
            let mut args = vec!["route", "replace"];
            args.extend(r.split_whitespace());
            ip_ns(&ns, &args)
                .map_err(|e| anyhow!("namespace {}: route `{}`: {:#}", n.name, r, e))?;
        }
    }
    Ok(())
}

/// Write a sysctl inside a namespace (from a thread that entered it).
fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    let ns2 = ns.to_string();
    let path = format!("/proc/sys/{}", key);
    let value = value.to_string();
    std::thread::spawn(move || -> Result<()> {
        netns::enter(&ns2)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| anyhow!("{}: {}", path, e))?;
        f.write_all(value.as_bytes())
            .map_err(|e| anyhow!("{}: {}", path, e))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow!("sysctl thread panicked"))?
    .map_err(|e| anyhow!("namespace {}: {:#}", ns, e))
}
