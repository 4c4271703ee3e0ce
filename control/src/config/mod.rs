//! Rack configuration: one TOML file per rack, validated at load.
//!
//! [`load`] / [`parse`] return a [`RackConfig`] or a [`ConfigErrors`] holding every problem
//! found, each displayed as `file:line:col: key.path: message`:
//!
//! ```text
//! configs/x.toml:12:13: port[1].rx_queues: must be between 1 and 64 (got 0)
//! ```
//!
//! Three passes, each reporting all it finds:
//! 1. **TOML syntax** (toml_edit). After an error on a `key = value` line the line is
//!    blanked and parsing resumes, so several broken lines are reported at once.
//! 2. **Types and keys** (serde, `deny_unknown_fields` everywhere). After an error the
//!    offending key is taken out and deserialization resumes (the key falls back to its
//!    default), so every wrong type and unknown key is reported.
//! 3. **Semantics** (ranges, names, references between sections, duplicates, roles).
//!    Findings about keys that already had a syntax or type error are left out.
//!
//! Locations come from toml_edit's spans: [`diag::Index`] maps every dotted path
//! (`port[1].rx_queues`, `forward.pairs[0][1]`) to its byte span, and byte offsets become
//! 1-based lines and columns (columns counted in characters).
//!
//! The reference of every key is `configs/README.md`.

mod diag;
mod eal;
mod schema;
mod types;
mod validate;

pub use diag::{ConfigError, ConfigErrors, Severity};
pub use eal::{classify_device, is_pci_address, parse_lcores, socket_port_iface, DataplanePort, DeviceKind, VdevDriver, MAX_LCORE};
pub use schema::*;
pub use types::{Cidr, MacAddr, PortRange};

use diag::{syntax_path, Index, Problems};
use std::path::{Path, PathBuf};
use toml_edit::{DocumentMut, ImDocument, Item, Value};

/// Upper bound on recovery rounds per pass (each round removes one bad line or key).
const MAX_ROUNDS: usize = 200;

/// Reads and validates a rack file. The file name in problems is `path` as given.
pub fn load(path: &Path) -> Result<RackConfig, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &name),
        Err(e) => Err(ConfigErrors {
            errors: vec![ConfigError {
                file: name,
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read the configuration file: {e}"),
                severity: Severity::Error,
            }],
        }),
    }
}

/// Parses and validates the text of a rack file; `file_name` is used in problems.
pub fn parse(text: &str, file_name: &str) -> Result<RackConfig, ConfigErrors> {
    let mut p = Problems::new(file_name, text);
    let Some(doc) = parse_document(text, &mut p) else {
        let (errors, _) = p.finish();
        return Err(ConfigErrors { errors });
    };
    let ix = Index::build(doc.as_table());
    let mut cfg = deserialize(&doc, &ix, &mut p);
    cfg.source = file_name.to_owned();
    if cfg.ctl.socket.as_os_str().is_empty() {
        let id = if cfg.node.id.is_empty() {
            "tapsplice"
        } else {
            cfg.node.id.as_str()
        };
        cfg.ctl.socket = PathBuf::from(format!("/run/tapsplice/{id}.sock"));
    }
    validate::validate(&cfg, &ix, &mut p);
    let (errors, warnings) = p.finish();
    if errors.is_empty() {
        cfg.warnings = warnings;
        Ok(cfg)
    } else {
        Err(ConfigErrors { errors })
    }
}

// ---------------------------------------------------------------------------------------
// Pass 1: syntax

fn parse_document(text: &str, p: &mut Problems<'_>) -> Option<ImDocument<String>> {
    let mut work = text.to_owned();
    for _ in 0..MAX_ROUNDS {
        let e = match ImDocument::parse(work.clone()) {
            Ok(doc) => return Some(doc),
            Err(e) => e,
        };
        let offset = e.span().map(|s| s.start).unwrap_or(0).min(work.len());
        let (line, _) = p.lines.line_col(offset);
        let key = syntax_path(&work, line);
        let msg = e
            .message()
            .trim()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        p.error_at(offset, &key, format!("TOML syntax error: {msg}"));
        if !key.is_empty() {
            p.broken.insert(key);
        }
        // Recover by blanking the line (keeping every byte offset), unless it is a table
        // header (its keys would land in the wrong table) or there is nothing left to blank.
        let range = p.lines.line_range(line);
        let content = work[range.clone()].trim();
        if content.is_empty() || content.starts_with('[') {
            return None;
        }
        let blank: String = work[range.clone()].bytes().map(|_| ' ').collect();
        work.replace_range(range, &blank);
    }
    None
}

// ---------------------------------------------------------------------------------------
// Pass 2: types and keys

#[derive(Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Splits a dotted path (as built by `join_key` / `join_index`) into segments.
fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut chars = path.chars().peekable();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Seg>| {
        if !cur.is_empty() {
            out.push(Seg::Key(std::mem::take(cur)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // A quoted key, as written by `{:?}`.
                let mut raw = String::from('"');
                while let Some(c) = chars.next() {
                    raw.push(c);
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            raw.push(n);
                        }
                    } else if c == '"' {
                        break;
                    }
                }
                cur.push_str(&serde_json::from_str::<String>(&raw).unwrap_or(raw));
            }
            '.' => flush(&mut cur, &mut out),
            '[' => {
                flush(&mut cur, &mut out);
                let n: String = chars.by_ref().take_while(|c| *c != ']').collect();
                out.push(Seg::Index(n.parse().unwrap_or(usize::MAX)));
            }
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

/// Removes the key at `segs` (a path ending in a key) from `item`.
fn remove_path(item: &mut Item, segs: &[Seg]) -> bool {
    match segs {
        [] => false,
        [Seg::Key(k)] => match item {
            Item::Table(t) => t.remove(k).is_some(),
            Item::Value(Value::InlineTable(t)) => t.remove(k).is_some(),
            _ => false,
        },
        [first, rest @ ..] => {
            let child = match first {
                Seg::Key(k) if item.get(k.as_str()).is_some() => item.get_mut(k.as_str()),
                Seg::Key(_) => None,
                Seg::Index(i) => item.get_mut(*i),
            };
            child.map(|c| remove_path(c, rest)).unwrap_or(false)
        }
    }
}

fn deserialize(doc: &ImDocument<String>, ix: &Index, p: &mut Problems<'_>) -> RackConfig {
    let mut work = Item::Table(doc.as_table().clone());
    for _ in 0..MAX_ROUNDS {
        let table = work.as_table().cloned().unwrap_or_default();
        let e = match toml_edit::de::from_document::<RackConfig>(DocumentMut::from(table)) {
            Ok(cfg) => return cfg,
            Err(e) => e,
        };
        let located = e
            .span()
            .and_then(|s| ix.entry_at(&s).map(|(en, is_key)| (en.clone(), is_key, s)));
        let (path, offset, is_key) = match located {
            Some((en, true, _)) => (
                en.path.clone(),
                en.key.as_ref().map(|k| k.start).unwrap_or(0),
                true,
            ),
            Some((en, false, s)) => (en.path.clone(), s.start, false),
            None => {
                // No span: the path serde reports (`in `a.b``), located as far as it goes.
                let text = e.to_string();
                let path = text
                    .lines()
                    .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')))
                    .unwrap_or("")
                    .to_owned();
                let off = ix.offset_of(&path);
                (path, off, false)
            }
        };
        let mut msg = serde_message(e.message(), is_key);
        let snippet = e.span().and_then(|s| doc.raw().get(s)).unwrap_or("").trim();
        if msg == "invalid IP address syntax" {
            msg = format!("{snippet} is not an IP address (e.g. \"10.0.0.10\")");
        } else if msg == "invalid socket address syntax" {
            msg = format!("{snippet} is not an address and port (e.g. \"127.0.0.1:9464\")");
        } else if !path.contains(['.', '[']) && msg.contains("expected an array, found table") {
            msg = format!("{msg}; write [[{path}]] for each entry (an array of tables)");
        } else if !path.contains(['.', '[']) && msg.contains("expected a table, found array") {
            msg = format!("{msg}; write [{path}] (a single table)");
        }
        p.error_at(offset, &path, msg);
        p.broken.insert(path.clone());
        // A misspelt key also explains the "missing" finding about the key it resembles.
        if let Some(sugg) = e
            .message()
            .strip_prefix("unknown field `")
            .and_then(|_| suggested(e.message()))
        {
            let parent = diag::parent(&path).unwrap_or("");
            p.broken.insert(diag::join_key(parent, &sugg));
        }
        // Take out the nearest key holding the bad value and try again.
        let mut segs = segments(&path);
        while matches!(segs.last(), Some(Seg::Index(_))) {
            segs.pop();
        }
        if !remove_path(&mut work, &segs) {
            p.broken.insert(String::new());
            return RackConfig::default();
        }
    }
    p.broken.insert(String::new());
    RackConfig::default()
}

/// serde's messages, in the configuration's words.
fn serde_message(msg: &str, is_key: bool) -> String {
    let msg = msg.trim();
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let hint = closest(key, &valid)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            let list = if valid.is_empty() {
                "this table takes no keys".into()
            } else {
                format!("valid keys: {}", valid.join(", "))
            };
            return format!("unknown key `{key}`{hint} ({list})");
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        if let Some((val, expected)) = rest.split_once('`') {
            let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            let hint = closest(val, &valid)
                .map(|s| format!("; did you mean \"{s}\"?"))
                .unwrap_or_default();
            let list: Vec<String> = valid.iter().map(|v| format!("\"{v}\"")).collect();
            return format!(
                "unknown value \"{val}\"{hint} (expected one of {})",
                list.join(", ")
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid value: integer `") {
        if let Some((n, expected)) = rest.split_once("`, expected ") {
            if let Some(max) = int_max(expected) {
                return format!("must be an integer between 0 and {max} (got {n})");
            }
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid type: ") {
        if let Some((found, expected)) = rest.rsplit_once(", expected ") {
            let expected = match int_max(expected) {
                Some(max) => format!("an integer between 0 and {max}"),
                None => match expected {
                    e if e.starts_with("struct ") || e == "a map" => "a table".into(),
                    "a sequence" => "an array".into(),
                    "a borrowed path" | "path string" => "a path string".into(),
                    "socket address" => "an address and port string (\"127.0.0.1:9464\")".into(),
                    "IP address" => "an IP address string".into(),
                    e => e.to_owned(),
                },
            };
            let found = found.replace("sequence", "array").replace("map", "table");
            return format!("wrong type: expected {expected}, found {found}");
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        if let Some((n, expected)) = rest.split_once(", expected ") {
            return format!("has {n} elements, expected {expected}");
        }
    }
    if is_key {
        return format!("bad key: {msg}");
    }
    msg.to_owned()
}

/// The key suggested for an unknown one, if any.
fn suggested(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let valid: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    closest(key, &valid).map(str::to_owned)
}

fn int_max(expected: &str) -> Option<u64> {
    Some(match expected {
        "u8" => u8::MAX as u64,
        "u16" => u16::MAX as u64,
        "u32" => u32::MAX as u64,
        "u64" => u64::MAX,
        _ => return None,
    })
}

/// The valid name closest to a misspelt one (edit distance ≤ 2, and less than half of it).
fn closest<'s>(word: &str, valid: &[&'s str]) -> Option<&'s str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut prev: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut cur = vec![i + 1];
            for (j, cb) in b.iter().enumerate() {
                cur.push(
                    (prev[j] + usize::from(ca != *cb))
                        .min(prev[j + 1] + 1)
                        .min(cur[j] + 1),
                );
            }
            prev = cur;
        }
        prev[b.len()]
    }
    valid
        .iter()
        .map(|v| (dist(word, v), *v))
        .filter(|(d, v)| *d <= 2 && *d * 2 < v.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments() {
        assert_eq!(
            segments("port[1].rx_queues"),
            vec![
                Seg::Key("port".into()),
                Seg::Index(1),
                Seg::Key("rx_queues".into())
            ]
        );
        assert_eq!(
            segments("forward.pairs[0][1]"),
            vec![
                Seg::Key("forward".into()),
                Seg::Key("pairs".into()),
                Seg::Index(0),
                Seg::Index(1)
            ]
        );
        assert_eq!(
            segments("fence_device[0].parameters.\"a.b\""),
            vec![
                Seg::Key("fence_device".into()),
                Seg::Index(0),
                Seg::Key("parameters".into()),
                Seg::Key("a.b".into())
            ]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("nme", &["name", "device"]), Some("name"));
        assert_eq!(
            closest("rx_queue", &["rx_queues", "rx_desc"]),
            Some("rx_queues")
        );
        assert_eq!(closest("zzz", &["name", "device"]), None);
    }
}
