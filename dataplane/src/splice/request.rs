//! Routing of a connection by its first request: HTTP/1.x request line and headers
//! (`httparse`, no allocation) matched against a service's rules, or the destination port
//! alone for other protocols.
//!
//! Rules are tried in order; every matcher a rule has must match; the first matching rule
//! names the pool, and a request no rule matches goes to the service's default pool. A
//! service whose rules only look at the destination port is routed at the handshake's ACK
//! without waiting for any byte ([`Rules::needs_request`]).
//!
//! Host: the `Host` header (or, for an absolute-form request target, its authority),
//! without `:port`, compared case-insensitively; `*.example.com` matches any name that
//! ends in `.example.com` with at least one more label (not `example.com` itself). Path:
//! the request target's path (absolute-form: after the authority) starts with the prefix.
//! Method: one of the listed tokens, exactly (methods are case-sensitive, RFC 9110).

/// How a rule matches the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostMatch {
    /// The whole name (lower case).
    Exact(String),
    /// `*.example.com`: the suffix with its dot (`.example.com`, lower case).
    Suffix(String),
}

impl HostMatch {
    /// From the configuration's text (`"shop.example.com"` or `"*.example.com"`).
    pub fn parse(s: &str) -> HostMatch {
        match s.strip_prefix('*') {
            Some(rest) if rest.starts_with('.') => HostMatch::Suffix(rest.to_ascii_lowercase()),
            _ => HostMatch::Exact(s.to_ascii_lowercase()),
        }
    }

    fn matches(&self, host: &[u8]) -> bool {
        match self {
            HostMatch::Exact(h) => host.eq_ignore_ascii_case(h.as_bytes()),
            HostMatch::Suffix(sfx) => host.len() > sfx.len() && host[host.len() - sfx.len()..].eq_ignore_ascii_case(sfx.as_bytes()),
        }
    }
}

/// One routing rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rule {
    pub host: Option<HostMatch>,
    pub path_prefix: Option<String>,
    /// Empty: any method.
    pub methods: Vec<String>,
    /// Empty: any destination port.
    pub dst_ports: Vec<(u16, u16)>,
    /// The pool it sends matching connections to.
    pub pool: usize,
}

impl Rule {
    fn needs_request(&self) -> bool {
        self.host.is_some() || self.path_prefix.is_some() || !self.methods.is_empty()
    }

    fn port_ok(&self, port: u16) -> bool {
        self.dst_ports.is_empty() || self.dst_ports.iter().any(|&(lo, hi)| lo <= port && port <= hi)
    }
}

/// A service's rules and default pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub default_pool: usize,
}

/// What the first bytes decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the connection to this pool.
    Pool(usize),
    /// The request line and headers are not complete yet.
    NeedMore,
    /// Not an HTTP/1.x request (or a broken one).
    Malformed,
}

/// Headers parsed at most; a request with more is refused as malformed.
pub const MAX_HEADERS: usize = 64;

impl Rules {
    /// Whether the decision needs the request (some rule looks at host, path or method).
    pub fn needs_request(&self) -> bool {
        self.rules.iter().any(Rule::needs_request)
    }

    /// The pool for a connection to `dst_port` whose first bytes are `request` (ignored
    /// when no rule needs them).
    pub fn decide(&self, dst_port: u16, request: &[u8]) -> Decision {
        if !self.needs_request() {
            return Decision::Pool(self.by_port(dst_port));
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(request) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => return Decision::NeedMore,
            Err(_) => return Decision::Malformed,
        }
        let (Some(method), Some(target)) = (req.method, req.path) else {
            return Decision::Malformed;
        };
        let (authority, path) = split_target(target);
        let host = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
            .or(authority.map(str::as_bytes))
            .map(|h| strip_port(trim(h)))
            .unwrap_or(b"");
        for r in &self.rules {
            let ok = r.port_ok(dst_port)
                && r.host.as_ref().is_none_or(|m| m.matches(host))
                && r.path_prefix.as_ref().is_none_or(|p| path.starts_with(p.as_str()))
                && (r.methods.is_empty() || r.methods.iter().any(|m| m == method));
            if ok {
                return Decision::Pool(r.pool);
            }
        }
        Decision::Pool(self.default_pool)
    }

    /// Every pool a connection to `dst_port` may be sent to, whatever its request: the
    /// port's pool when no rule looks at the request; otherwise the pools of the rules that
    /// take the port, in order, up to the first that takes any request to it, else also
    /// the default pool. (A SYN is answered only when one of them has a live backend.)
    pub fn candidate_pools(&self, dst_port: u16) -> impl Iterator<Item = usize> + '_ {
        let by_request = self.needs_request();
        let by_port = (!by_request).then(|| self.by_port(dst_port));
        let mut done = !by_request;
        let rules = self.rules.iter().filter(move |r| by_request && r.port_ok(dst_port)).take_while(move |r| {
            let go = !done;
            done |= !r.needs_request();
            go
        });
        let default = by_request && !self.rules.iter().any(|r| r.port_ok(dst_port) && !r.needs_request());
        by_port.into_iter().chain(rules.map(|r| r.pool)).chain(default.then_some(self.default_pool))
    }

    fn by_port(&self, dst_port: u16) -> usize {
        self.rules.iter().find(|r| r.port_ok(dst_port)).map_or(self.default_pool, |r| r.pool)
    }
}

/// An absolute-form target's authority and path (`http://h:81/p?q` → (`h:81`, `/p?q`));
/// an origin-form target is all path.
fn split_target(target: &str) -> (Option<&str>, &str) {
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"));
    match rest {
        Some(r) => match r.find('/') {
            Some(i) => (Some(&r[..i]), &r[i..]),
            None => (Some(r), "/"),
        },
        None => (None, target),
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// `host:port` → `host` (an IPv6 literal `[::1]:80` keeps its brackets).
fn strip_port(h: &[u8]) -> &[u8] {
    if h.first() == Some(&b'[') {
        return h.iter().position(|&c| c == b']').map_or(h, |i| &h[..=i]);
    }
    h.iter().rposition(|&c| c == b':').map_or(h, |i| &h[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> Rules {
        Rules {
            rules: vec![
                Rule { host: Some(HostMatch::parse("static.example.com")), pool: 1, ..Rule::default() },
                Rule { path_prefix: Some("/assets/".into()), methods: vec!["GET".into(), "HEAD".into()], pool: 2, ..Rule::default() },
                Rule { host: Some(HostMatch::parse("*.api.example.com")), dst_ports: vec![(8080, 8080)], pool: 3, ..Rule::default() },
            ],
            default_pool: 0,
        }
    }

    #[test]
    fn the_candidate_pools_are_those_a_connection_to_the_port_can_reach() {
        let pools = |r: &Rules, port: u16| r.candidate_pools(port).collect::<Vec<_>>();
        // By request: every rule that takes the port, then the default.
        assert_eq!(pools(&rules(), 80), vec![1, 2, 0]);
        assert_eq!(pools(&rules(), 8080), vec![1, 2, 3, 0]);
        // By port only: the one pool the port selects.
        let by_port = Rules { rules: vec![Rule { dst_ports: vec![(443, 443)], pool: 4, ..Rule::default() }], default_pool: 0 };
        assert_eq!(pools(&by_port, 443), vec![4]);
        assert_eq!(pools(&by_port, 80), vec![0]);
        // A rule that takes every request to the port hides the ones after it and the default.
        let mut r = rules();
        r.rules.insert(1, Rule { dst_ports: vec![(8080, 8080)], pool: 5, ..Rule::default() });
        assert_eq!(pools(&r, 8080), vec![1, 5]);
        assert_eq!(pools(&r, 80), vec![1, 2, 0]);
        // Every candidate is a pool `decide` can choose for some request to the port.
        for port in [80, 8080] {
            for (m, t, h) in [("GET", "/", Some("static.example.com")), ("GET", "/assets/x", None), ("POST", "/", Some("a.api.example.com")), ("GET", "/", None)] {
                if let Decision::Pool(p) = r.decide(port, &req(m, t, h)) {
                    assert!(pools(&r, port).contains(&p), "{m} {t} {h:?} to :{port} goes to {p}, not a candidate");
                }
            }
        }
    }

    fn req(method: &str, target: &str, host: Option<&str>) -> Vec<u8> {
        let mut s = format!("{method} {target} HTTP/1.1\r\n");
        if let Some(h) = host {
            s.push_str(&format!("Host: {h}\r\n"));
        }
        s.push_str("User-Agent: t\r\n\r\n");
        s.into_bytes()
    }

    #[test]
    fn rules_route_by_host_path_method_and_port_first_match_wins() {
        let r = rules();
        assert!(r.needs_request());
        let d = |port, b: &[u8]| r.decide(port, b);
        assert_eq!(d(80, &req("GET", "/", Some("static.example.com"))), Decision::Pool(1));
        assert_eq!(d(80, &req("GET", "/", Some("STATIC.Example.com:80"))), Decision::Pool(1), "case and port ignored");
        assert_eq!(d(80, &req("GET", "/assets/a.css", Some("static.example.com"))), Decision::Pool(1), "first match wins");
        assert_eq!(d(80, &req("GET", "/assets/a.css", Some("shop.example.com"))), Decision::Pool(2));
        assert_eq!(d(80, &req("POST", "/assets/a.css", Some("shop.example.com"))), Decision::Pool(0), "method not listed");
        assert_eq!(d(80, &req("get", "/assets/a.css", Some("x"))), Decision::Pool(0), "methods are case-sensitive");
        assert_eq!(d(80, &req("GET", "/asset", Some("x"))), Decision::Pool(0));
        assert_eq!(d(8080, &req("GET", "/", Some("v1.api.example.com"))), Decision::Pool(3));
        assert_eq!(d(80, &req("GET", "/", Some("v1.api.example.com"))), Decision::Pool(0), "wrong port");
        assert_eq!(d(8080, &req("GET", "/", Some("api.example.com"))), Decision::Pool(0), "the bare suffix is not a subdomain");
        assert_eq!(d(80, &req("GET", "http://static.example.com/x", None)), Decision::Pool(1), "absolute form");
        assert_eq!(d(80, &req("GET", "http://h/assets/x", Some("other"))), Decision::Pool(2), "path after the authority");
        assert_eq!(d(80, &req("GET", "/", None)), Decision::Pool(0), "no host");
    }

    #[test]
    fn incomplete_and_broken_requests() {
        let r = rules();
        let full = req("GET", "/", Some("static.example.com"));
        for cut in 0..full.len() {
            assert_eq!(r.decide(80, &full[..cut]), Decision::NeedMore, "cut at {cut}");
        }
        assert_eq!(r.decide(80, b"\x16\x03\x01\x02\x00\x01"), Decision::Malformed, "TLS is not HTTP");
        assert_eq!(r.decide(80, b"GET / HTTP/1.1\r\nHost example\r\n\r\n"), Decision::Malformed);
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(r.decide(80, format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()), Decision::Malformed);
    }

    #[test]
    fn port_only_rules_decide_without_bytes() {
        let r = Rules { rules: vec![Rule { dst_ports: vec![(443, 443)], pool: 1, ..Rule::default() }], default_pool: 0 };
        assert!(!r.needs_request());
        assert_eq!(r.decide(443, b""), Decision::Pool(1));
        assert_eq!(r.decide(80, b"garbage"), Decision::Pool(0));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..300), port: u16) {
            let _ = rules().decide(port, &b);
        }
    }
}
