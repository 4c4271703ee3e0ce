//! testbed: the tapsplice rack simulator. See docs/testbed.md.

mod agent;
mod appliance;
mod bench;
mod bench_balance;
mod bench_fastpath;
mod bench_splice;
mod check;
mod cleanup;
mod cmd;
mod ctl;
mod demo;
mod detect;
mod fault;
mod guard;
mod netns;
mod network;
mod plot;
mod rackconfig;
mod report;
mod run;
mod runid;
mod topology;
mod workload;

use anyhow::{anyhow, Result};
use clap::{Args, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "testbed",
    about = "tapsplice rack simulator: namespaces, TAP ports, real TCP workloads, faults, benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct Bins {
    /// tapsplice binary (default: $TAPSPLICE_BIN, else `tapsplice` next to this binary)
    #[arg(long)]
    tapsplice: Option<PathBuf>,
    /// dpdk-testpmd binary
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: String,
    /// Override a key of every tapsplice rack config, e.g. --set workers.idle_backoff=false
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a topology, run its checks, workloads and faults, report, clean up
    Run {
        topology: PathBuf,
        /// Print the report as one JSON object on the last line of stdout
        #[arg(long)]
        json: bool,
        /// Run every appliance as this kind (tapsplice | testpmd)
        #[arg(long, value_name = "KIND")]
        appliance_kind: Option<String>,
        /// Also write the appliances' burst times and the requests' latency histograms as SVG to this file
        #[arg(long, value_name = "PATH.svg")]
        plot: Option<PathBuf>,
        #[command(flatten)]
        bins: Bins,
    },
    /// Run topologies/forward.toml and show the appliance's and the requests' latency histograms
    Demo {
        #[arg(long)]
        json: bool,
        /// Also write the appliance's burst times and the requests' latency histograms as SVG to this file
        #[arg(long, value_name = "PATH.svg")]
        plot: Option<PathBuf>,
        #[command(flatten)]
        bins: Bins,
    },
    /// Bulk TCP goodput through tapsplice versus dpdk-testpmd io-forward on the same TAP
    /// topology; `bench detect`: failure-detection time of a node that dies (--repeat = trials,
    /// ≥ 50; --fault kill|power-off); `bench balance`: packets per second of the balance fast
    /// path on one lcore versus io-forward on the same vhost ports (--seconds per trial)
    Bench {
        /// Topology name (topologies/NAME.toml) or path
        #[arg(default_value = "forward")]
        name: String,
        #[arg(long)]
        json: bool,
        /// Reply bytes per request and connection (default 50 MB, or 4 MB with --seconds)
        #[arg(long)]
        bytes: Option<u64>,
        /// Time-bounded: keep requesting for this many seconds
        #[arg(long)]
        seconds: Option<f64>,
        #[arg(long, default_value_t = 4)]
        connections: u32,
        /// Rounds (order alternates each round); medians are reported (bench balance:
        /// each mode's best trial, the medians beside)
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Comma-separated: tapsplice, testpmd, direct (a plain veth, no appliance)
        /// [default: tapsplice,testpmd]; bench balance: balance, forward, io
        /// [default: balance,forward,io]
        #[arg(long)]
        modes: Option<String>,
        /// bench balance: bursts of 64 packets per generator port kept circulating
        #[arg(long, default_value_t = 64)]
        bursts: u32,
        /// bench balance: run the DUT and the generator on 2 MiB hugepages (free ones
        /// must be reserved) instead of --no-huge
        #[arg(long)]
        hugepages: bool,
        /// bench splice: the wire between the namespaces: `tap` (the appliance and testpmd
        /// on TAP ports, veths with the kernel's offloads), `mtu` (offloads off on every
        /// link: MTU-sized frames for all three modes; net_af_xdp ports on veths) or
        /// `mtu-af-packet` (the same with net_af_packet ports)
        #[arg(long, value_enum, default_value_t = bench_splice::Wire::Tap)]
        wire: bench_splice::Wire,
        /// Also write goodput per trial, medians and ratio as SVG to this file
        #[arg(long, value_name = "PATH.svg")]
        plot: Option<PathBuf>,
        /// bench detect: how the node dies: kill (SIGKILL of its agent) or power-off (the
        /// simulated power switch cuts its plug)
        #[arg(long, default_value = "kill")]
        fault: String,
        #[command(flatten)]
        bins: Bins,
    },
    /// Remove leftovers of earlier runs (namespaces, interfaces, DPDK runtime dirs, run dirs)
    Cleanup {
        #[arg(long)]
        dry_run: bool,
    },
}

/// `--wire` is bench splice's: any other bench refuses another wire than the default.
/// `--hugepages` is a `bench balance` option.
fn only_balance_hugepages(hugepages: bool) -> Result<()> {
    if hugepages {
        return Err(anyhow!("--hugepages is for bench balance only"));
    }
    Ok(())
}

fn only_tap_wire(wire: bench_splice::Wire) -> Result<()> {
    match wire {
        bench_splice::Wire::Tap => Ok(()),
        w => Err(anyhow!("--wire {} is an option of bench splice only", clap::ValueEnum::to_possible_value(&w).map(|v| v.get_name().to_string()).unwrap_or_default())),
    }
}

/// The repository's `configs/` directory (from the working directory or this binary's).
fn find_configs_dir() -> Result<PathBuf> {
    let mut starts = vec![std::env::current_dir()?];
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    for start in starts {
        for dir in start.ancestors() {
            let c = dir.join("configs").join("forward.toml");
            if c.exists() {
                return Ok(dir.join("configs"));
            }
        }
    }
    Err(anyhow!(
        "cannot find configs/forward.toml: run testbed from the repository"
    ))
}

/// Find `topologies/NAME.toml`: as a path, under ./testbed/topologies, ./topologies, or
/// the crate's own topologies directory.
/// `--modes` (comma-separated, `default` when absent) parsed by `parse`; at least one.
fn bench_modes<T>(given: Option<&str>, default: &str, parse: fn(&str) -> Result<T>) -> Result<Vec<T>> {
    let modes = given.unwrap_or(default).split(',').filter(|s| !s.trim().is_empty()).map(parse).collect::<Result<Vec<_>>>()?;
    if modes.is_empty() {
        return Err(anyhow!("--modes: give at least one of {}", default.replace(',', ", ")));
    }
    Ok(modes)
}

/// `--repeat` within 1..100 and `--seconds` (default 5) within (0, 600].
fn repeat_and_seconds(repeat: u32, seconds: Option<f64>) -> Result<f64> {
    if repeat == 0 || repeat > 100 {
        return Err(anyhow!("--repeat must be 1..100"));
    }
    let seconds = seconds.unwrap_or(5.0);
    if !(seconds > 0.0 && seconds <= 600.0) {
        return Err(anyhow!("--seconds must be in (0, 600]"));
    }
    Ok(seconds)
}

fn find_topology(name: &str) -> Result<PathBuf> {
    let p = Path::new(name);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let file = if name.ends_with(".toml") {
        name.to_string()
    } else {
        format!("{}.toml", name)
    };
    let candidates = [
        PathBuf::from("testbed/topologies").join(&file),
        PathBuf::from("topologies").join(&file),
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("topologies")
            .join(&file),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .ok_or_else(|| {
            anyhow!(
                "topology `{}` not found (looked for {})",
                name,
                candidates[0].display()
            )
        })
}

fn options(
    bins: &Bins,
    kind: Option<topology::ApplianceKind>,
    topo: &topology::Topology,
) -> Result<run::Options> {
    let mut sets = BTreeMap::new();
    for s in &bins.sets {
        let (k, v) = rackconfig::parse_set(s)?;
        sets.insert(k, v);
    }
    let needs_tapsplice = !topo.agents.is_empty()
        || (0..topo.appliances.len())
            .any(|i| kind.unwrap_or(topo.appliances[i].kind) == topology::ApplianceKind::Tapsplice);
    let tapsplice = if needs_tapsplice {
        Some(appliance::locate_tapsplice(bins.tapsplice.as_deref())?)
    } else {
        None
    };
    Ok(run::Options {
        bins: appliance::Binaries {
            tapsplice,
            testpmd: bins.testpmd.clone(),
        },
        kind_override: kind,
        sets,
    })
}

fn parse_kind(s: &str) -> Result<topology::ApplianceKind> {
    match s {
        "tapsplice" => Ok(topology::ApplianceKind::Tapsplice),
        "testpmd" => Ok(topology::ApplianceKind::Testpmd),
        o => Err(anyhow!(
            "unknown appliance kind `{}` (tapsplice, testpmd)",
            o
        )),
    }
}

/// Returns the process exit code: 0 passed, 1 the run failed.
fn real_main(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Run {
            topology: path,
            json,
            appliance_kind,
            plot: plot_path,
            bins,
        } => {
            let kind = appliance_kind.as_deref().map(parse_kind).transpose()?;
            let topo = topology::load(&path)?;
            let opts = options(&bins, kind, &topo)?;
            if let Some(p) = &plot_path {
                plot::check_path(p)?;
            }
            run::require_root()?;
            let rep = run::run_topology(topo, opts)?;
            if json {
                rep.print_json();
            } else {
                rep.print_human();
            }
            if let Some(p) = &plot_path {
                plot::write(p, &plot::run_svg(&plot::RunPlot::from_report(&rep)))?;
            }
            Ok(if rep.passed { 0 } else { 1 })
        }
        Cmd::Demo {
            json,
            plot: plot_path,
            bins,
        } => {
            let topo = topology::load(&find_topology("forward")?)?;
            let opts = options(&bins, None, &topo)?;
            if let Some(p) = &plot_path {
                plot::check_path(p)?;
            }
            run::require_root()?;
            demo::run(topo, opts, json, plot_path.as_deref())
        }
        Cmd::Bench {
            name,
            json,
            repeat,
            bins,
            fault,
            wire,
            hugepages,
            ..
        } if name == "detect" => {
            only_tap_wire(wire)?;
            only_balance_hugepages(hugepages)?;
            run::require_root()?;
            let tapsplice = appliance::locate_tapsplice(bins.tapsplice.as_deref())?;
            let configs = find_configs_dir()?;
            let v = detect::run(
                &configs,
                &detect::DetectOptions {
                    tapsplice,
                    trials: repeat.clamp(50, 1000),
                    interval_ms: 10,
                    k: 3,
                    fault: detect::DetectFault::parse(&fault)?,
                },
            )?;
            eprintln!(
                "testbed: detect ({}): {} trials at {} ms, K = {}: down after p50 {} / p99 {} / max {} intervals of silence (bound {}); from the fault p50 {} / p99 {} / max {}",
                v["fault"], v["trials"], v["interval_ms"], v["k"], v["p50_intervals"], v["p99_intervals"], v["max_intervals"], v["bound_intervals"],
                v["from_fault_p50_intervals"], v["from_fault_p99_intervals"], v["from_fault_max_intervals"]
            );
            if json {
                println!("{v}");
            } else {
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            Ok(if v["passed"].as_bool().unwrap_or(false) {
                0
            } else {
                1
            })
        }
        Cmd::Bench {
            name,
            json,
            seconds,
            repeat,
            modes,
            bursts,
            hugepages,
            bins,
            plot,
            wire,
            ..
        } if name == "balance" => {
            only_tap_wire(wire)?;
            if let Some(p) = &plot {
                plot::check_path(p)?;
            }
            run::require_root()?;
            let tapsplice = appliance::locate_tapsplice(bins.tapsplice.as_deref())?;
            let modes = bench_modes(modes.as_deref(), "balance,forward,io", bench_balance::BMode::parse)?;
            let seconds = repeat_and_seconds(repeat, seconds)?;
            if !(1..=4096).contains(&bursts) {
                return Err(anyhow!("--bursts must be 1..4096"));
            }
            let v = bench_balance::run(&bench_balance::Options {
                tapsplice,
                testpmd: bins.testpmd.clone(),
                modes,
                repeat,
                seconds,
                bursts,
                hugepages,
            })?;
            if let Some(p) = &plot {
                plot::write(p, &plot::bench_balance_svg(&v))?;
            }
            if json {
                eprintln!(
                    "testbed: bench balance (best trials): balance {} Mpps, forward {} Mpps, io {} Mpps, ratio balance/io {} (target {}), balance/forward {}",
                    v["balance_mpps"], v["forward_mpps"], v["io_mpps"], v["ratio"], v["target"], v["ratio_vs_forward"]
                );
                println!("{}", v);
            } else {
                bench_balance::print_human(&v);
            }
            Ok(
                if v["passed"].as_bool().unwrap_or(false)
                    && v["target_met"].as_bool().unwrap_or(true)
                {
                    0
                } else {
                    1
                },
            )
        }
        Cmd::Bench {
            name,
            json,
            seconds,
            repeat,
            modes,
            bins,
            plot,
            wire,
            hugepages,
            ..
        } if name == "splice" => {
            only_balance_hugepages(hugepages)?;
            if plot.is_some() {
                return Err(anyhow!("--plot is not supported by bench splice"));
            }
            // The wire is the namespace modes' (tapsplice, haproxy, io); the fastpath modes
            // run on ports of their own whatever it is, so one run gives every ratio.
            let modes = bench_modes(modes.as_deref(), "tapsplice,haproxy,io,fastpath,fastpath-vhost", bench_splice::SMode::parse)?;
            let seconds = repeat_and_seconds(repeat, seconds)?;
            let mut topo = topology::load(&find_topology("splice-bench")?)?;
            bench_splice::mtu_sized_wire(&mut topo, wire);
            let opts = options(&bins, None, &topo)?;
            run::require_root()?;
            let v = bench_splice::run(topo, opts, &bench_splice::Options { modes, repeat, seconds, wire })?;
            if json {
                eprintln!(
                    "testbed: bench splice medians: goodput tapsplice {} / haproxy {} / io-forward {} Mbit/s, connections/s tapsplice {} / haproxy {}; goodput_vs_haproxy {}, goodput_vs_ioforward {}, conn_rate_vs_haproxy {}",
                    v["tapsplice_goodput_mbps"], v["haproxy_goodput_mbps"], v["ioforward_goodput_mbps"], v["tapsplice_conn_per_s"], v["haproxy_conn_per_s"],
                    v["goodput_vs_haproxy"], v["goodput_vs_ioforward"], v["conn_rate_vs_haproxy"]
                );
                println!("{}", v);
            } else {
                bench_splice::print_human(&v);
            }
            Ok(if v["passed"].as_bool().unwrap_or(false) { 0 } else { 1 })
        }
        Cmd::Bench {
            name,
            json,
            bytes,
            seconds,
            connections,
            repeat,
            modes,
            plot: plot_path,
            bins,
            fault: _,
            bursts: _,
            hugepages,
            wire,
        } => {
            only_tap_wire(wire)?;
            only_balance_hugepages(hugepages)?;
            let modes = modes
                .as_deref()
                .unwrap_or("tapsplice,testpmd")
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(bench::Mode::parse)
                .collect::<Result<Vec<_>>>()?;
            if modes.is_empty() {
                return Err(anyhow!(
                    "--modes: give at least one of tapsplice, testpmd, direct"
                ));
            }
            if repeat == 0 || repeat > 100 {
                return Err(anyhow!("--repeat must be 1..100"));
            }
            if connections == 0 || connections > 256 {
                return Err(anyhow!("--connections must be 1..256"));
            }
            if let Some(s) = seconds {
                if !(s > 0.0 && s <= 3600.0) {
                    return Err(anyhow!("--seconds must be in (0, 3600]"));
                }
            }
            if bytes == Some(0) {
                return Err(anyhow!("--bytes must be > 0"));
            }
            if let Some(p) = &plot_path {
                plot::check_path(p)?;
            }
            let topo = topology::load(&find_topology(&name)?)?;
            let kind = if modes.contains(&bench::Mode::Tapsplice) {
                None
            } else {
                Some(topology::ApplianceKind::Testpmd)
            };
            let mut opts = options(&bins, kind, &topo)?;
            // A benchmark measures the fast path as production runs it: testpmd busy-polls,
            // so tapsplice does too unless the caller says otherwise with --set.
            opts.sets
                .entry("workers.idle_backoff".into())
                .or_insert_with(|| toml::Value::Boolean(false));
            run::require_root()?;
            let v = bench::run(
                topo,
                opts,
                &bench::BenchOptions {
                    modes,
                    connections,
                    bytes,
                    seconds,
                    repeat,
                },
            )?;
            if json {
                bench::print_human_to_stderr(&v);
                println!("{}", v);
            } else {
                bench::print_human(&v);
            }
            if let Some(p) = &plot_path {
                plot::write(p, &plot::bench_svg(&v))?;
            }
            Ok(if v["passed"].as_bool().unwrap_or(false) {
                0
            } else {
                1
            })
        }
        Cmd::Cleanup { dry_run } => {
            run::require_root()?;
            let done = cleanup::cleanup(dry_run);
            if done.is_empty() {
                println!("nothing to clean up");
            }
            for l in done {
                println!("{}", l);
            }
            Ok(0)
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let json = match &cli.cmd {
        Cmd::Run { json, .. } | Cmd::Demo { json, .. } | Cmd::Bench { json, .. } => *json,
        Cmd::Cleanup { .. } => false,
    };
    guard::install_signal_handler();
    let code = match std::panic::catch_unwind(|| real_main(cli)) {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            let msg = format!("{:#}", e).replace('\n', " ");
            eprintln!("testbed: error: {}", msg);
            if json {
                println!("{}", serde_json::json!({ "passed": false, "error": msg }));
            }
            2
        }
        Err(_) => {
            eprintln!("testbed: internal error (panic); cleaned up");
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "passed": false, "error": "internal error (panic)" })
                );
            }
            3
        }
    };
    guard::cleanup_all();
    std::process::exit(code);
}
