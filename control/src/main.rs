//! `tapsplice`: the appliance binary.
//!
//! * `tapsplice run --config FILE` — boot the appliance (needs root and DPDK).
//! * `tapsplice check --config FILE` — validate a rack file; every problem on its own line
//!   with file, line, column and key.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tapsplice::config;
#[cfg(feature = "dpdk")]
use tapsplice::{plan, run};

#[derive(Parser)]
#[command(name = "tapsplice", version, about = "DPDK appliance that makes TCP services fault-tolerant and scalable")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot the appliance described by a rack configuration file.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Write the final statistics report as JSON to this file on exit.
        #[arg(long)]
        report_json: Option<PathBuf>,
        /// Print a progress line (packet and bit rates, drops) every this many seconds.
        #[arg(long, value_name = "SECONDS")]
        stats_interval: Option<f64>,
        /// Benchmarks only: start the splice role's first worker with N synthetic
        /// established connections (see `testbed bench splice`, fast path).
        #[arg(long, value_name = "N")]
        bench_splices: Option<usize>,
    },
    /// Validate a rack configuration file and exit (0 = valid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the heartbeat agent on a server or peer host (needs no DPDK).
    Agent {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Ask a running appliance through its ctl socket.
    Ctl(tapsplice::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Ctl(args) => tapsplice::ctl::ctl_main(args),
        Cmd::Agent { config: path } => {
            let file = match tapsplice::agent::config::load(&path) {
                Ok(f) => f,
                Err(errs) => {
                    for e in errs {
                        eprintln!("{e}");
                    }
                    return ExitCode::from(2);
                }
            };
            match tapsplice::agent::run(&file) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tapsplice agent: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Check { config: path } => match config::load(&path) {
            Ok(cfg) => {
                for w in &cfg.warnings {
                    eprintln!("{w}");
                }
                let roles: Vec<&str> = cfg.node.roles.iter().map(|r| r.as_str()).collect();
                println!(
                    "{}: ok (node {}, {} port(s), roles {})",
                    path.display(),
                    cfg.node.id,
                    cfg.port.len(),
                    roles.join(",")
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                eprint!("{errs}");
                if !errs.to_string().ends_with('\n') {
                    eprintln!();
                }
                ExitCode::from(2)
            }
        },
        #[cfg(not(feature = "dpdk"))]
        Cmd::Run { .. } => {
            eprintln!("tapsplice: this build has no DPDK support (built without the `dpdk` feature); rebuild with default features");
            ExitCode::from(1)
        }
        #[cfg(feature = "dpdk")]
        Cmd::Run { config: path, report_json, stats_interval, bench_splices } => {
            let cfg = match config::load(&path) {
                Ok(c) => c,
                Err(errs) => {
                    eprint!("{errs}");
                    if !errs.to_string().ends_with('\n') {
                        eprintln!();
                    }
                    eprintln!("tapsplice: {} is not a valid rack configuration (see `tapsplice check --config {}`)", path.display(), path.display());
                    return ExitCode::from(2);
                }
            };
            let plan = match plan::from_config(&cfg) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("tapsplice: {e}");
                    return ExitCode::from(2);
                }
            };
            let stats_interval =
                stats_interval.filter(|s| *s > 0.0).and_then(|s| std::time::Duration::try_from_secs_f64(s).ok());
            match run::run(&plan, &run::RunOptions { report_json, stats_interval, bench_splices }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tapsplice: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
