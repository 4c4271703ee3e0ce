//! The `tapsplice` appliance's control side: configuration, start-up, reporting.
//! The control side never touches packets; it talks to the lcores through the dataplane's
//! port layer and the counters they publish.

pub mod agent;
pub mod balancer;
pub mod bondwatch;
pub mod config;
pub mod ctl;
pub mod detector;
pub mod events;
pub mod fence;
pub mod fencing;
pub mod garp;
pub mod heartbeat;
pub mod links;
pub mod loop_watch;
pub mod membership;
pub mod metrics;
pub mod neighbours;
pub mod plan;
pub mod preflight;
pub mod punts;
pub mod report;
#[cfg(feature = "dpdk")]
pub mod tap_signals;
#[cfg(feature = "dpdk")]
pub mod run;
pub mod splicer;
pub mod supervisor;
pub mod takeover;
