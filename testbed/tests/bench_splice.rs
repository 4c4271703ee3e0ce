//! `testbed bench splice --json`: goodput and connections per second through the splice
//! role, through HAProxy (tcp mode, kernel splicing) and through dpdk-testpmd io-forward on
//! the same network, in one run; the last stdout line carries `goodput_vs_haproxy`,
//! `goodput_vs_ioforward`, `conn_rate_vs_haproxy` and `fastpath_vs_ioforward` (figures to
//! read, not asserted: the targets are benchmark figures, see docs/splice.md), and the fast
//! path on vhost-user ports beside it (`fastpath_vhost_vs_ioforward`).

mod common;
use common::*;
use std::time::Duration;

#[test]
fn bench_splice_prints_its_ratios() {
    require_root();
    let bin = tapsplice();
    let out = run(&["bench", "splice", "--json", "--repeat", "1", "--seconds", "2", "--tapsplice", bin.to_str().unwrap()], Duration::from_secs(600));
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "{}", dump(&out));
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 5, "{}", v);
    for t in trials.iter().filter(|t| t["mode"] != "fastpath" && t["mode"] != "fastpath-vhost") {
        // Every byte verified and no connection failed in any mode.
        assert_eq!(t["passed"], true, "{}", t);
        assert_eq!(t["errors"], 0, "{}", t);
        assert!(t["goodput_mbps"].as_f64().unwrap() > 0.0, "{}", t);
        assert!(t["connections"].as_u64().unwrap() > 100, "{}", t);
    }
    for k in ["goodput_vs_haproxy", "goodput_vs_ioforward", "conn_rate_vs_haproxy", "tapsplice_goodput_mbps", "haproxy_goodput_mbps", "ioforward_goodput_mbps"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{}: {}", k, v);
    }
    // The fast path alone (synthetic spliced traffic both ways) against io-forward.
    // ... and on vhost-user ports, where each frame goes round through the splice both ways.
    for k in ["fastpath_vs_ioforward", "fastpath_mpps", "fastpath_io_mpps", "fastpath_vhost_vs_ioforward", "fastpath_vhost_mpps", "fastpath_vhost_io_mpps"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{}: {}", k, v);
    }
    // vhost: every DUT read at the generator once a second; a trial's figure is its best
    // second, the summary's the best trial (one round here: that trial).
    let vt = trials.iter().find(|t| t["mode"] == "fastpath-vhost").unwrap();
    for (dut, fig, sum) in [("splice", "fastpath_mpps", "fastpath_vhost_mpps"), ("forward", "fastpath_forward_mpps", "fastpath_vhost_forward_mpps"), ("io", "fastpath_io_mpps", "fastpath_vhost_io_mpps")] {
        let samples: Vec<f64> = vt["fastpath_samples_mpps"][dut].as_array().unwrap_or_else(|| panic!("{dut} samples: {vt}")).iter().map(|x| x.as_f64().unwrap()).collect();
        assert_eq!(samples.len(), 2, "{dut}: one sample a second for 2 s: {vt}");
        let best = samples.iter().copied().fold(0.0, f64::max);
        assert!(best > 0.0 && (vt[fig].as_f64().unwrap() - best).abs() < 0.006, "{dut}: figure {} vs best second {best}", vt[fig]);
        assert_eq!(v[sum], vt[fig], "{sum}");
    }
    assert!(v["fastpath_vhost_vs_ioforward_of_medians"].as_f64().is_some_and(|x| x > 0.0), "{v}");
    // The appliance's own histograms from the tapsplice trial: one setup per connection.
    let setup = &v["splice_setup_us"];
    let ts = trials.iter().find(|t| t["mode"] == "tapsplice").unwrap();
    assert!(setup["count"].as_u64().unwrap() >= ts["connections"].as_u64().unwrap(), "{setup} {ts}");
    assert!(v["burst_ns"]["p50"].as_u64().is_some(), "{v}");
    eprintln!(
        "bench splice: goodput vs HAProxy {}, vs io-forward {}, connections/s vs HAProxy {}, fast path vs io-forward {}",
        v["goodput_vs_haproxy"], v["goodput_vs_ioforward"], v["conn_rate_vs_haproxy"], v["fastpath_vs_ioforward"]
    );
    assert_eq!(v["passed"], true);
    assert!(out.status.success(), "{}", dump(&out));
}

/// `--wire mtu`: the same three ways through the network, on an MTU-sized wire (every
/// link's offloads off; the appliance and testpmd on net_af_xdp ports over veths the
/// testbed makes and removes); `--wire mtu-af-packet`: the appliance on net_af_packet
/// ports there.
#[test]
fn bench_splice_on_an_mtu_sized_wire() {
    mtu_sized_wire("mtu", "tapsplice,haproxy,io", "net_af_xdp");
}

#[test]
fn bench_splice_on_an_mtu_sized_wire_with_af_packet_ports() {
    mtu_sized_wire("mtu-af-packet", "tapsplice", "net_af_packet");
}

/// `bench splice --wire WIRE --modes MODES` runs and reports every trial, the appliance
/// really ran on `driver` ports (its own report says so), and nothing of the run is left.
fn mtu_sized_wire(wire: &str, modes: &str, driver: &str) {
    require_root();
    let bin = tapsplice();
    let out = run(
        &["bench", "splice", "--json", "--wire", wire, "--modes", modes, "--repeat", "1", "--seconds", "2", "--tapsplice", bin.to_str().unwrap()],
        Duration::from_secs(600),
    );
    let v = last_json(&out);
    assert!(v.get("error").is_none(), "{}", dump(&out));
    assert_eq!(v["wire"], wire, "{v}");
    let ports: Vec<&str> = v["tapsplice_ports"].as_array().expect("the appliance's ports").iter().filter_map(|p| p.as_str()).collect();
    assert!(ports.len() == 2 && ports.iter().all(|d| d.starts_with(driver)), "{ports:?}");
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), modes.split(',').count(), "{}", v);
    for t in trials {
        assert_eq!(t["passed"], true, "{}", t);
        assert_eq!(t["errors"], 0, "{}", t);
        assert!(t["goodput_mbps"].as_f64().unwrap() > 0.0, "{}", t);
        assert!(t["connections"].as_u64().unwrap() > 100, "{}", t);
    }
    if modes.contains("haproxy") {
        for k in ["goodput_vs_haproxy", "goodput_vs_ioforward", "conn_rate_vs_haproxy"] {
            assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{}: {}", k, v);
        }
        eprintln!("bench splice --wire {wire}: goodput vs HAProxy {}, vs io-forward {}, connections/s vs HAProxy {}", v["goodput_vs_haproxy"], v["goodput_vs_ioforward"], v["conn_rate_vs_haproxy"]);
    }
    // No interface of the run (named after its id) is left in the root namespace. (That
    // each appliance's veths go at its stop shows in the trials themselves: the next
    // appliance of the run makes pairs of the same names.)
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr.split("testbed: run ").nth(1).and_then(|r| r.split_whitespace().next()).expect("the run's id on stderr").to_string();
    let links = std::process::Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    let left: Vec<String> = String::from_utf8_lossy(&links.stdout).lines().filter(|l| l.split(':').nth(1).is_some_and(|n| n.trim().starts_with(&id))).map(str::to_string).collect();
    assert!(left.is_empty(), "interfaces of run {id} left: {left:#?}");
    // Nor the nftables tables that kept the root kernel off the veths.
    let tables = std::process::Command::new("nft").args(["list", "tables", "netdev"]).output().unwrap();
    let tables = String::from_utf8_lossy(&tables.stdout);
    assert!(!tables.contains(&format!("table netdev {id}")), "nftables tables of run {id} left: {tables}");
    assert!(out.status.success(), "{}", dump(&out));
}
