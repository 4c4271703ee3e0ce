//! `tapsplice agent`: the small daemon on servers and peer hosts. It probes the local
//! application, computes the workload factor, and sends authenticated heartbeats to the
//! appliances. It needs no DPDK.

pub mod config;
pub mod load;
pub mod probe;
