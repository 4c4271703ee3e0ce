//! `testbed demo`: topologies/forward.toml end to end — a bulk transfer and an echo run
//! through the appliance — then the appliance's per-burst latency and the requests'
//! latency as text histograms (and with `--plot`, as SVG bar charts).

use crate::report::{burst_table, histogram_table};
use crate::run::Options;
use crate::topology::{Topology, WorkloadKind};
use anyhow::Result;
use serde_json::Value;
use std::path::Path;

pub fn run(mut topo: Topology, opts: Options, json: bool, plot: Option<&Path>) -> Result<i32> {
    // Only the bulk and echo workloads of the topology (the demo's two runs).
    topo.workloads
        .retain(|w| matches!(w.kind, WorkloadKind::Bulk | WorkloadKind::Echo));
    let rep = crate::run::run_topology(topo, opts)?;
    let write_plot = || -> Result<()> {
        match plot {
            Some(p) => crate::plot::write(
                p,
                &crate::plot::run_svg(&crate::plot::RunPlot::from_report(&rep)),
            ),
            None => Ok(()),
        }
    };
    if json {
        rep.print_json();
        write_plot()?;
        return Ok(if rep.passed { 0 } else { 1 });
    }
    rep.print_human();
    println!();
    for a in rep.appliances.values() {
        let Some(r) = &a.report else { continue };
        println!(
            "appliance {}: per-burst processing time (from its report)",
            a.name
        );
        match r.get("burst_cycles") {
            Some(bc) => print!(
                "{}",
                burst_table(bc, r.get("tsc_hz").and_then(Value::as_f64))
            ),
            None => println!("  (no burst_cycles in the report)"),
        }
        if let Some(lc) = r.get("lcores").and_then(Value::as_array) {
            for l in lc {
                let drops = l.get("drops").and_then(Value::as_object).map(|d| {
                    d.iter()
                        .map(|(k, v)| format!("{}={}", k, v))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                println!(
                    "  lcore {}: rx {} tx {} drops {}",
                    l.get("lcore").unwrap_or(&Value::Null),
                    l.get("rx_packets").unwrap_or(&Value::Null),
                    l.get("tx_packets").unwrap_or(&Value::Null),
                    drops
                        .filter(|s| !s.is_empty())
                        .unwrap_or_else(|| "none".into())
                );
            }
        }
        println!();
    }
    for w in &rep.workloads {
        println!(
            "workload {} ({}): request latency, {} requests (p50 {} µs, p99 {} µs, max {} µs)",
            w.name,
            w.kind.as_str(),
            w.latency_us.count,
            w.latency_us.p50,
            w.latency_us.p99,
            w.latency_us.max
        );
        print!("{}", histogram_table(&w.histogram, "µs"));
        println!();
    }
    write_plot()?;
    Ok(if rep.passed { 0 } else { 1 })
}
