//! The ctl protocol, version 1: JSON lines over a Unix stream socket.
//!
//! One request per line, one response line per request, in order, on the same connection:
//!
//! ```text
//! → {"v":1,"id":7,"cmd":"ports","args":{}}
//! ← {"v":1,"id":7,"ok":true,"result":{"ports":[...]}}
//! → {"v":1,"id":8,"cmd":"fence","args":{"node":"srv3"}}
//! ← {"v":1,"id":8,"ok":false,"error":{"code":"refused","message":"..."}}
//! ```
//!
//! `v` is optional in requests (absent = 1) and always present in responses. `args` is
//! optional (absent or `null` = `{}`). The full reference is `docs/ctl.md`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

/// The protocol version this build speaks.
pub const PROTO_VERSION: u32 = 1;

/// Commands this build answers (anything else gets `unknown_command`). `drain`, `resplice`
/// and `splices` are reserved for later releases.
pub const COMMANDS: [&str; 10] = ["status", "peers", "ports", "stats", "histogram", "events", "servers", "members", "splices", "fence"];

/// Why a request failed. The wire form is the snake_case name (`as_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not JSON, not an object, missing or mistyped `id`/`cmd`/`args`, unsupported `v`,
    /// bad arguments, or a line longer than the limit.
    BadRequest,
    /// `cmd` is not a command this appliance knows.
    UnknownCommand,
    /// A known command this appliance (role, build) cannot carry out yet.
    NotImplemented,
    /// The handler failed (panicked); the appliance keeps running.
    Internal,
    /// Understood and deliberately refused: missing confirmation, too many connections,
    /// an operation the current state forbids.
    Refused,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 5] =
        [ErrorCode::BadRequest, ErrorCode::UnknownCommand, ErrorCode::NotImplemented, ErrorCode::Internal, ErrorCode::Refused];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::NotImplemented => "not_implemented",
            ErrorCode::Internal => "internal",
            ErrorCode::Refused => "refused",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `error` member of a failed response. `code` is kept as a string so that a client
/// understands codes a newer appliance adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code: code.as_str().to_string(), message: message.into() }
    }
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.as_str()
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One request line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    pub id: u64,
    pub cmd: String,
    pub args: Map<String, Value>,
}

impl Request {
    pub fn new(id: u64, cmd: impl Into<String>, args: Map<String, Value>) -> Request {
        Request { v: PROTO_VERSION, id, cmd: cmd.into(), args }
    }

    /// The request as one line of JSON, without the trailing newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("a request always serializes")
    }

    /// Parses one line (without its newline). On failure, the error response to send
    /// (with the request's id when it could be read).
    pub fn parse_line(line: &[u8]) -> Result<Request, Response> {
        let value: Value = serde_json::from_slice(line)
            .map_err(|e| Response::err(None, ErrorCode::BadRequest, format!("malformed JSON: {e}")))?;
        Request::from_value(value)
    }

    /// Checks the shape of a parsed line.
    pub fn from_value(value: Value) -> Result<Request, Response> {
        let Value::Object(mut obj) = value else {
            return Err(Response::err(None, ErrorCode::BadRequest, "a request must be a JSON object"));
        };
        let id = match obj.remove("id") {
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
            Some(other) => {
                return Err(Response::err(
                    None,
                    ErrorCode::BadRequest,
                    format!("\"id\" must be a non-negative integer (got {})", short_json(&other)),
                ))
            }
            None => return Err(Response::err(None, ErrorCode::BadRequest, "missing \"id\" (a non-negative integer)")),
        };
        let fail = |msg: String| Err(Response::err(Some(id), ErrorCode::BadRequest, msg));
        let v = match obj.remove("v") {
            None | Some(Value::Null) => PROTO_VERSION,
            Some(Value::Number(n)) if n.as_u64() == Some(PROTO_VERSION as u64) => PROTO_VERSION,
            Some(other) => {
                return fail(format!(
                    "unsupported protocol version {}: this appliance speaks \"v\":{PROTO_VERSION}",
                    short_json(&other)
                ))
            }
        };
        let cmd = match obj.remove("cmd") {
            Some(Value::String(s)) if !s.is_empty() => s,
            Some(other) => return fail(format!("\"cmd\" must be a non-empty string (got {})", short_json(&other))),
            None => return fail("missing \"cmd\" (e.g. \"status\")".to_string()),
        };
        let args = match obj.remove("args") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return fail(format!("\"args\" must be an object (got {})", short_json(&other))),
        };
        if let Some(k) = obj.keys().next() {
            return fail(format!("unknown request member {k:?} (expected v, id, cmd, args)"));
        }
        Ok(Request { v, id, cmd, args })
    }
}

/// At most 60 characters of a JSON value, for error messages.
fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// One response line. Exactly one of `result` (when `ok`) and `error` (when not) is present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    /// The request's id; `null` when the request could not be read far enough to know it.
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Response {
    pub fn ok(id: u64, result: Value) -> Response {
        Response { v: PROTO_VERSION, id: Some(id), ok: true, result: Some(result), error: None }
    }

    /// A successful response whose result is any serializable value.
    pub fn ok_with<T: Serialize>(id: u64, result: &T) -> Response {
        match serde_json::to_value(result) {
            Ok(v) => Response::ok(id, v),
            Err(e) => Response::err(Some(id), ErrorCode::Internal, format!("cannot encode the result: {e}")),
        }
    }

    pub fn err(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Response {
        Response::error(id, ErrorBody::new(code, message))
    }

    pub fn error(id: Option<u64>, body: ErrorBody) -> Response {
        Response { v: PROTO_VERSION, id, ok: false, result: None, error: Some(body) }
    }

    /// The response as one line of JSON, without the trailing newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Only reachable with a non-string map key in a hand-built result.
            Response::err(self.id, ErrorCode::Internal, format!("cannot encode the response: {e}")).to_line()
        })
    }

    /// `Ok(result)` or `Err(error)`; a response that claims `ok` without a result gives
    /// `Ok(null)`, one that claims failure without an error gives an `internal` error.
    pub fn into_result(self) -> Result<Value, ErrorBody> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(self.error.unwrap_or_else(|| ErrorBody::new(ErrorCode::Internal, "error response without an error")))
        }
    }
}

/// A request's command with its arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Status,
    Peers,
    Ports,
    Stats,
    Histogram,
    Events,
    /// `[[server]]` pairs and their takeover phase.
    Servers,
    /// Balance role: per service and member, state, weight, table share, traffic (splice: per pool and backend).
    Members,
    /// Splice role: the connections, filtered.
    Splices(SplicesQuery),
    /// Power-fence (and isolate) a node. Only built from a request with `"confirm":true`.
    Fence { node: String },
}

/// `splices` arguments, all optional: `client` and `backend` as `ADDR` or `ADDR:PORT`,
/// `state` (`routing`, `connecting`, `established`, `closed`), `limit` (rows, default
/// [`SPLICES_DEFAULT_LIMIT`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplicesQuery {
    pub client: Option<String>,
    pub backend: Option<String>,
    pub state: Option<String>,
    pub limit: Option<u32>,
}

/// Rows `splices` returns when the request gives no limit.
pub const SPLICES_DEFAULT_LIMIT: u32 = 100;

/// `splices`: matching connections (up to the limit) and how many matched in all.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SplicesResult {
    pub splices: Vec<SpliceRow>,
    /// Connections that matched the filter, on all lcores (may exceed the rows shown).
    pub matched: u64,
}

/// One spliced connection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpliceRow {
    /// Index of the worker whose table holds it.
    pub worker: usize,
    pub service: String,
    pub pool: String,
    /// `addr:port` of each end: the client, the VIP, the backend and our NAT address.
    pub client: String,
    pub vip: String,
    pub backend: String,
    pub nat: String,
    pub state: String,
    /// Δ = a0 − s0 (the sequence offset between the legs).
    pub delta: u32,
    pub timestamps: bool,
    /// Window shifts: promised to the client, announced by the backend.
    pub ws_client: u8,
    pub ws_server: u8,
    pub age_s: u32,
    pub idle_s: u32,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Peers => "peers",
            Command::Ports => "ports",
            Command::Stats => "stats",
            Command::Histogram => "histogram",
            Command::Events => "events",
            Command::Servers => "servers",
            Command::Members => "members",
            Command::Splices(_) => "splices",
            Command::Fence { .. } => "fence",
        }
    }

    /// The request that carries this command (fence requests carry `"confirm":true`).
    pub fn to_request(&self, id: u64) -> Request {
        let mut args = Map::new();
        if let Command::Fence { node } = self {
            args.insert("node".into(), Value::String(node.clone()));
            args.insert("confirm".into(), Value::Bool(true));
        }
        if let Command::Splices(q) = self {
            if let Ok(Value::Object(m)) = serde_json::to_value(q) {
                args.extend(m.into_iter().filter(|(_, v)| !v.is_null()));
            }
        }
        Request::new(id, self.name(), args)
    }

    /// Checks a request's command and arguments.
    pub fn parse(req: &Request) -> Result<Command, ErrorBody> {
        let no_args = |c: Command| -> Result<Command, ErrorBody> {
            match req.args.keys().next() {
                Some(k) => Err(ErrorBody::new(ErrorCode::BadRequest, format!("`{}` takes no arguments (got {k:?})", c.name()))),
                None => Ok(c),
            }
        };
        match req.cmd.as_str() {
            "status" => no_args(Command::Status),
            "peers" => no_args(Command::Peers),
            "ports" => no_args(Command::Ports),
            "stats" => no_args(Command::Stats),
            "histogram" => no_args(Command::Histogram),
            "events" => no_args(Command::Events),
            "servers" => no_args(Command::Servers),
            "members" => no_args(Command::Members),
            "splices" => {
                if let Some(k) = req.args.keys().find(|k| !["client", "backend", "state", "limit"].contains(&k.as_str())) {
                    return Err(ErrorBody::new(ErrorCode::BadRequest, format!("unknown argument {k:?} of `splices` (expected client, backend, state, limit)")));
                }
                serde_json::from_value(Value::Object(req.args.clone()))
                    .map(Command::Splices)
                    .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, format!("`splices`: {e}")))
            }
            "fence" => {
                for k in req.args.keys() {
                    if k != "node" && k != "confirm" {
                        return Err(ErrorBody::new(
                            ErrorCode::BadRequest,
                            format!("unknown argument {k:?} of `fence` (expected node, confirm)"),
                        ));
                    }
                }
                let node = match req.args.get("node") {
                    Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
                    _ => return Err(ErrorBody::new(ErrorCode::BadRequest, "`fence` needs \"node\": the node id to fence")),
                };
                match req.args.get("confirm") {
                    Some(Value::Bool(true)) => Ok(Command::Fence { node }),
                    _ => Err(ErrorBody::new(
                        ErrorCode::Refused,
                        format!("fencing powers {node} off: repeat the request with \"confirm\":true"),
                    )),
                }
            }
            other => Err(ErrorBody::new(
                ErrorCode::UnknownCommand,
                format!("unknown command {other:?} (this appliance knows: {})", COMMANDS.join(", ")),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Results. Every result is an object (so members can be added); every member has a default
// so a client reads results of older and newer appliances.

/// `status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusResult {
    pub node: String,
    pub role: String,
    pub version: String,
    pub proto: u32,
    pub uptime_s: f64,
    pub ports: PortsSummary,
    pub lcores: usize,
    pub peers: usize,
    pub totals: Totals,
    /// How punctually the control thread's loop ran.
    pub control_loop: crate::loop_watch::LoopStats,
    /// How old the snapshot this answer reads is, ms (published every 250 ms; more is a
    /// control thread not running now).
    pub snapshot_age_ms: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortsSummary {
    pub total: usize,
    pub up: usize,
    /// Names of the ports whose link is down.
    pub down: Vec<String>,
}

/// Sums over all ports (packets and bytes as the ports counted them) and all lcores (drops).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    /// rx_errors + tx_errors + rx_nombuf over all ports.
    pub errors: u64,
    /// Frames dropped by the lcores, all reasons.
    pub drops: u64,
}

/// `ports`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortsResult {
    pub ports: Vec<PortInfo>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinkInfo {
    pub up: bool,
    pub speed_mbps: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PortInfo {
    pub name: String,
    pub device: String,
    /// The port's MAC address.
    pub mac: String,
    pub link: LinkInfo,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
    /// Packets received per RX queue.
    pub rx_queue_packets: Vec<u64>,
    /// A `[[bond]]`'s members and their state; absent for a plain port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bond: Option<BondInfo>,
}

/// A bonding port's mode and members (in `ports`, the report and the metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BondInfo {
    /// `802.3ad`, `balance-xor` or `active-backup`.
    pub mode: String,
    pub members: Vec<BondMemberInfo>,
    /// active-backup: the member in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
    /// active-backup: how often the appliance moved the primary to follow member links;
    /// balance-xor: how often it signalled a member's link change to the bonding PMD.
    pub primary_moves: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BondMemberInfo {
    /// The member's `[[port]]` name.
    pub name: String,
    pub device: String,
    pub link_up: bool,
    /// Carrying traffic (in the bond's active list; 802.3ad: collecting and distributing).
    pub active: bool,
    /// The member's own packet counters.
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// 802.3ad: the actor's and the partner's state flags (`active`, `short_timeout`,
    /// `aggregation`, `sync`, `collecting`, `distributing`, `defaulted`, `expired`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actor: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub partner: Vec<String>,
    /// 802.3ad: the partner's system MAC, once a LACPDU has been received.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner_system: Option<String>,
}

impl BondMemberInfo {
    /// 802.3ad: the actor distributes (sends) on this member.
    pub fn distributing(&self) -> bool {
        self.actor.iter().any(|f| f == "distributing")
    }
}

/// The names of IEEE 802.1AX actor/partner state bits, lowest bit first.
pub const LACP_STATE_FLAGS: [&str; 8] = ["active", "short_timeout", "aggregation", "sync", "collecting", "distributing", "defaulted", "expired"];

/// The flags set in an 802.1AX state byte.
pub fn lacp_flags(state: u8) -> Vec<String> {
    LACP_STATE_FLAGS.iter().enumerate().filter(|(i, _)| state & (1 << i) != 0).map(|(_, n)| n.to_string()).collect()
}

/// `stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatsResult {
    pub lcores: Vec<LcoreInfo>,
    /// Drops by reason, summed over lcores (only reasons that occurred).
    pub drops: BTreeMap<String, u64>,
    /// Splice role events summed over the workers, by name (`SpliceStat`; empty without
    /// the splice role).
    pub splice: BTreeMap<String, u64>,
    /// The same per splice service (by its name).
    pub splice_services: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LcoreInfo {
    pub lcore: u32,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub local_replies: u64,
    pub polls: u64,
    pub empty_polls: u64,
    pub idle_sleeps: u64,
    pub punted: u64,
    pub control_tx: u64,
    /// Frames the role originated (handshake answers, backend SYNs, resets).
    #[serde(default)]
    pub emitted: u64,
    /// `tx_burst` calls repeated because a TX ring took only part of a batch.
    #[serde(default)]
    pub tx_retries: u64,
    /// Frames passed to another worker lcore that holds their state (a backend's reply to its NAT port).
    #[serde(default)]
    pub handed_off: u64,
    /// Frames another worker lcore passed to this one.
    #[serde(default)]
    pub handed_in: u64,
    /// Drops by reason (only reasons that occurred).
    pub drops: BTreeMap<String, u64>,
}

/// `histogram`: per-burst processing time of all workers, merged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistogramResult {
    /// Always "ns".
    pub unit: String,
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    #[serde(rename = "p99.9")]
    pub p999: u64,
    pub max: u64,
    /// Non-empty buckets, ascending: values `<= le` (and above the previous bucket's `le`).
    pub buckets: Vec<Bucket>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Bucket {
    pub le: u64,
    pub count: u64,
}

/// `events`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EventsResult {
    pub events: Vec<Event>,
}

/// Something the control thread decided or observed (peer suspected, peer down, fence
/// started/succeeded/failed, takeover, re-splice, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Event {
    /// Wall-clock time, milliseconds since the Unix epoch (UTC).
    pub ts_unix_ms: u64,
    /// Machine-readable kind, snake_case (e.g. `peer_down`, `fence_ok`).
    pub kind: String,
    /// The node the event is about, if any.
    pub node: Option<String>,
    /// Human-readable detail.
    pub message: String,
}

/// `peers`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PeersResult {
    pub peers: Vec<PeerInfo>,
}

/// `servers`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServersResult {
    pub pairs: Vec<PairInfo>,
}

/// `members`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MembersResult {
    pub services: Vec<crate::balancer::ServiceView>,
    pub members: Vec<crate::balancer::MemberView>,
}

/// A `servers` row: one `[[server]]` pair's takeover phase (see `crate::takeover`).
pub type PairInfo = crate::takeover::PairView;

/// A `peers` row: the detector's view of one peer (state is one of
/// `metrics::PEER_STATES`; `last_heard_ms` is `None` when never heard).
pub type PeerInfo = crate::metrics::PeerMetrics;

/// `fence`: what the handler reports. The shape beyond `node` and `outcome` is the
/// fencing module's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FenceResult {
    pub node: String,
    /// e.g. `isolated`, `off`, `off_verified`, `failed`.
    pub outcome: String,
    pub message: String,
    pub duration_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: Value) -> Result<Request, Response> {
        Request::from_value(v)
    }

    #[test]
    fn request_round_trips_and_defaults_v_and_args() {
        let r = Request::parse_line(br#"{"id":3,"cmd":"status"}"#).unwrap();
        assert_eq!(r, Request::new(3, "status", Map::new()));
        let line = r.to_line();
        assert!(line.contains("\"v\":1"), "{line}");
        assert_eq!(Request::parse_line(line.as_bytes()).unwrap(), r);
        let r = Request::parse_line(br#"{"v":1,"id":4,"cmd":"ports","args":null}"#).unwrap();
        assert_eq!(r.id, 4);
    }

    #[test]
    fn malformed_requests_are_bad_request_with_id_when_known() {
        let e = Request::parse_line(b"{not json").unwrap_err();
        assert_eq!((e.id, e.error.as_ref().unwrap().code.as_str()), (None, "bad_request"));
        let e = req(json!([1, 2])).unwrap_err();
        assert_eq!(e.id, None);
        let e = req(json!({"id": -1, "cmd": "status"})).unwrap_err();
        assert_eq!(e.id, None);
        let e = req(json!({"id": 5})).unwrap_err();
        assert_eq!(e.id, Some(5));
        assert!(e.error.unwrap().message.contains("cmd"));
        let e = req(json!({"id": 5, "v": 2, "cmd": "status"})).unwrap_err();
        assert!(e.error.unwrap().message.contains("version"));
        let e = req(json!({"id": 5, "cmd": "status", "args": [1]})).unwrap_err();
        assert!(e.error.unwrap().is(ErrorCode::BadRequest));
        let e = req(json!({"id": 5, "cmd": "status", "extra": 1})).unwrap_err();
        assert!(e.error.unwrap().message.contains("extra"));
        assert!(Request::parse_line(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn commands_parse_and_fence_needs_node_and_confirmation() {
        let mk = |cmd: &str, args: Value| Request::new(1, cmd, args.as_object().cloned().unwrap());
        assert_eq!(Command::parse(&mk("status", json!({}))), Ok(Command::Status));
        assert_eq!(Command::parse(&mk("histogram", json!({}))), Ok(Command::Histogram));
        assert!(Command::parse(&mk("status", json!({"x":1}))).unwrap_err().is(ErrorCode::BadRequest));
        let e = Command::parse(&mk("drain", json!({}))).unwrap_err();
        assert!(e.is(ErrorCode::UnknownCommand), "{e}");
        assert!(Command::parse(&mk("fence", json!({"confirm": true}))).unwrap_err().is(ErrorCode::BadRequest));
        assert!(Command::parse(&mk("fence", json!({"node": "s1"}))).unwrap_err().is(ErrorCode::Refused));
        assert!(Command::parse(&mk("fence", json!({"node": "s1", "confirm": "yes"}))).unwrap_err().is(ErrorCode::Refused));
        assert_eq!(
            Command::parse(&mk("fence", json!({"node": "s1", "confirm": true}))),
            Ok(Command::Fence { node: "s1".into() })
        );
        let r = Command::Fence { node: "s1".into() }.to_request(9);
        assert_eq!(Command::parse(&r), Ok(Command::Fence { node: "s1".into() }));
        for name in COMMANDS {
            if name != "fence" {
                let c = Command::parse(&mk(name, json!({}))).unwrap();
                assert_eq!(c.name(), name);
                assert_eq!(c.to_request(1).cmd, name);
            }
        }
    }

    #[test]
    fn responses_serialize_one_of_result_and_error() {
        let ok = Response::ok(2, json!({"a": 1})).to_line();
        assert_eq!(ok, r#"{"v":1,"id":2,"ok":true,"result":{"a":1}}"#);
        let err = Response::err(None, ErrorCode::UnknownCommand, "nope").to_line();
        assert_eq!(err, r#"{"v":1,"id":null,"ok":false,"error":{"code":"unknown_command","message":"nope"}}"#);
        let back: Response = serde_json::from_str(&err).unwrap();
        assert!(back.into_result().unwrap_err().is(ErrorCode::UnknownCommand));
        for c in ErrorCode::ALL {
            assert_eq!(c.to_string(), c.as_str());
        }
    }

    #[test]
    fn results_read_with_missing_and_extra_members() {
        let s: StatusResult = serde_json::from_value(json!({"node": "a", "future": 1})).unwrap();
        assert_eq!(s.node, "a");
        let h: HistogramResult = serde_json::from_value(json!({"p99.9": 7})).unwrap();
        assert_eq!(h.p999, 7);
        assert!(serde_json::to_string(&h).unwrap().contains("\"p99.9\":7"));
    }
}
