//! The ctl: the operator's view of a running appliance and its controls, over a Unix
//! socket (mode 0600) speaking JSON lines. Reference: `docs/ctl.md`.
//!
//! * [`proto`] — the protocol (requests, responses, error codes, result types), version 1.
//! * [`server`] — the socket server the appliance runs ([`server::spawn`]).
//! * [`handler`] — the appliance's standard handler: answers from the current
//!   [`crate::metrics::MetricsSnapshot`], events and a fencing callback.
//! * [`client`] — connects and sends requests.
//! * [`cli`] — `tapsplice ctl ...`: clap arguments, tables, exit statuses.
//! * [`services`] — ctl + metrics servers started and stopped together by `run`.

pub mod cli;
pub mod client;
pub mod handler;
pub mod proto;
pub mod server;
pub mod services;

pub use cli::{ctl_main, CtlArgs, CtlCmd};
pub use handler::{Handler, Sources};
pub use proto::{Command, ErrorBody, ErrorCode, Request, Response, PROTO_VERSION};
pub use server::spawn;
pub use services::ControlServices;
