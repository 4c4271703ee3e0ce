//! Problems and where they are: `file:line:col: key.path: message`.
//!
//! [`Index`] maps every key, table, array-of-tables element and array element of the parsed
//! document to its dotted path (`port[1].rx_queues`, `forward.pairs[0][1]`) and byte spans,
//! both ways: from a serde error's span to the path, and from a validator's path to the
//! line and column.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use toml_edit::{Item, Table, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem of a rack file. `line` and `column` are 1-based (column counted in
/// characters); both are 0 when the problem is not about a place in the file (the file
/// cannot be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `port[1].rx_queues`; empty for the document as a whole.
    pub key: String,
    pub message: String,
    pub severity: Severity,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        if self.severity == Severity::Warning {
            write!(f, "warning: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a rack file, in file order. Displays one problem per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn len(&self) -> usize {
        self.errors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.errors.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.iter()
    }
}

// ---------------------------------------------------------------------------------------
// Paths

/// Appends `key` to a dotted path, quoting it when it is not a bare TOML key.
pub(crate) fn join_key(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let k = if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        k
    } else {
        format!("{prefix}.{k}")
    }
}

pub(crate) fn join_index(prefix: &str, i: usize) -> String {
    format!("{prefix}[{i}]")
}

/// The parent of a dotted path (`port[1].rx_queues` → `port[1]` → `port` → ``).
pub(crate) fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let mut in_quote = false;
    let mut cut = 0;
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'.' | b'[' if !in_quote => cut = i,
            _ => {}
        }
        i += 1;
    }
    Some(&path[..cut])
}

/// Whether `a` is `b`, or one is inside the other.
pub(crate) fn related(a: &str, b: &str) -> bool {
    fn under(x: &str, y: &str) -> bool {
        x.len() > y.len() && x.starts_with(y) && matches!(x.as_bytes()[y.len()], b'.' | b'[')
    }
    a == b || under(a, b) || under(b, a)
}

// ---------------------------------------------------------------------------------------
// The span index

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub path: String,
    /// Span of the key (absent for array elements).
    pub key: Option<Range<usize>>,
    /// Span of the value, table (header and body) or array-of-tables element.
    pub span: Option<Range<usize>>,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
}

impl Index {
    pub fn build(root: &Table) -> Index {
        let mut ix = Index::default();
        ix.table(root, "");
        ix
    }

    fn push(&mut self, path: String, key: Option<Range<usize>>, span: Option<Range<usize>>) {
        self.by_path.insert(path.clone(), self.entries.len());
        self.entries.push(Entry { path, key, span });
    }

    fn table(&mut self, t: &Table, prefix: &str) {
        for (k, item) in t.iter() {
            let path = join_key(prefix, k);
            let key_span = t.key(k).and_then(|k| k.span());
            self.item(item, path, key_span);
        }
    }

    fn item(&mut self, item: &Item, path: String, key_span: Option<Range<usize>>) {
        match item {
            Item::None => {}
            Item::Table(t) => {
                self.push(path.clone(), key_span, t.span());
                self.table(t, &path);
            }
            Item::ArrayOfTables(a) => {
                self.push(path.clone(), key_span, a.span());
                for (i, t) in a.iter().enumerate() {
                    let p = join_index(&path, i);
                    self.push(p.clone(), None, t.span());
                    self.table(t, &p);
                }
            }
            Item::Value(v) => self.value(v, path, key_span),
        }
    }

    fn value(&mut self, v: &Value, path: String, key_span: Option<Range<usize>>) {
        self.push(path.clone(), key_span, v.span());
        match v {
            Value::Array(a) => {
                for (i, e) in a.iter().enumerate() {
                    self.value(e, join_index(&path, i), None);
                }
            }
            Value::InlineTable(t) => {
                for (k, e) in t.iter() {
                    let ks = t.key(k).and_then(|k| k.span());
                    self.value(e, join_key(&path, k), ks);
                }
            }
            _ => {}
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// The byte offset a problem about `path` points at: the value (or table header) at
    /// `path`, else the nearest enclosing key that is in the document, else the start.
    pub fn offset_of(&self, path: &str) -> usize {
        let mut p = Some(path);
        while let Some(cur) = p {
            if let Some(&i) = self.by_path.get(cur) {
                let e = &self.entries[i];
                if let Some(s) = e.span.as_ref().or(e.key.as_ref()) {
                    return s.start;
                }
            }
            p = parent(cur);
        }
        0
    }

    /// The entry a serde error's span designates: a key whose span is exactly `span`, else
    /// the smallest value or table span that contains it.
    pub fn entry_at(&self, span: &Range<usize>) -> Option<(&Entry, bool)> {
        if let Some(e) = self.entries.iter().find(|e| e.key.as_ref() == Some(span)) {
            return Some((e, true));
        }
        self.entries
            .iter()
            .filter(|e| matches!(&e.span, Some(s) if s.start <= span.start && span.end <= s.end))
            .min_by_key(|e| {
                let s = e.span.as_ref().unwrap();
                (s.end - s.start, std::cmp::Reverse(e.path.len()))
            })
            .map(|e| (e, false))
    }
}

// ---------------------------------------------------------------------------------------
// Offsets to lines and columns

pub(crate) struct Lines<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> Lines<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { text, starts }
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset) - 1;
        let start = self.starts[line];
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        (line + 1, col + 1)
    }

    /// Byte range of the 1-based line (without its newline).
    pub fn line_range(&self, line: usize) -> Range<usize> {
        let start = self.starts[line - 1];
        let end = self
            .starts
            .get(line)
            .map(|e| e - 1)
            .unwrap_or(self.text.len());
        start..end
    }
}

// ---------------------------------------------------------------------------------------
// Collecting problems

pub(crate) struct Problems<'a> {
    pub file: &'a str,
    pub lines: Lines<'a>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
    /// Paths that already carry a syntax or type error: validation findings about the same
    /// keys (or keys inside or around them) would only repeat them.
    pub broken: BTreeSet<String>,
}

impl<'a> Problems<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        Problems {
            file,
            lines: Lines::new(text),
            errors: Vec::new(),
            warnings: Vec::new(),
            broken: BTreeSet::new(),
        }
    }

    pub fn at(&self, offset: usize, key: &str, message: String, severity: Severity) -> ConfigError {
        let (line, column) = self.lines.line_col(offset);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message,
            severity,
        }
    }

    pub fn error_at(&mut self, offset: usize, key: &str, message: String) {
        let e = self.at(offset, key, message, Severity::Error);
        self.errors.push(e);
    }

    pub fn is_broken(&self, path: &str) -> bool {
        self.broken.iter().any(|b| b.is_empty() || related(b, path))
    }

    pub fn finish(mut self) -> (Vec<ConfigError>, Vec<ConfigError>) {
        let key = |e: &ConfigError| (e.line, e.column);
        self.errors.sort_by_key(key);
        self.errors.dedup();
        self.warnings.sort_by_key(key);
        self.warnings.dedup();
        (self.errors, self.warnings)
    }
}

// ---------------------------------------------------------------------------------------
// Syntax errors: which key were we in?

/// The dotted path of the key on the given 1-based line, for a document that does not
/// parse: the last table header above it (with array-of-tables indexes counted) plus the
/// key that starts the line, or the last key above it within the same table.
pub(crate) fn syntax_path(text: &str, line: usize) -> String {
    let mut table = String::new();
    // Count of [[name]] elements, keyed by the resolved path of the array.
    let mut aot_counts: HashMap<String, usize> = HashMap::new();
    let mut last_key: Option<String> = None;
    for (i, raw) in text.split('\n').enumerate().take(line) {
        let l = raw.trim();
        let is_current = i + 1 == line;
        if let Some(h) = header(l) {
            let (name, aot) = h;
            let resolved = if aot {
                // The array itself is not indexed; only the tables above it are.
                let (parent_name, last) = name.rsplit_once('.').unwrap_or(("", &name));
                join_key(&resolve(parent_name, &aot_counts), last)
            } else {
                resolve(&name, &aot_counts)
            };
            if aot {
                let n = aot_counts.entry(resolved.clone()).or_insert(0);
                *n += 1;
                // Nested arrays of tables under a new element start counting again.
                let prefix = format!("{resolved}[");
                aot_counts.retain(|k, _| !k.starts_with(&prefix));
                table = join_index(&resolved, *aot_counts.get(&resolved).unwrap() - 1);
            } else {
                table = resolved;
            }
            last_key = None;
            continue;
        }
        if let Some(k) = line_key(l) {
            last_key = Some(k);
        } else if is_current && l.starts_with('[') {
            // A malformed header: the table as far as it can be read.
            let name: String = l
                .trim_start_matches('[')
                .chars()
                .take_while(|c| *c != ']')
                .collect();
            return name.trim().to_owned();
        }
    }
    match last_key {
        Some(k) => {
            if table.is_empty() {
                k
            } else {
                format!("{table}.{k}")
            }
        }
        None => table,
    }
}

fn is_bare(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == ' ')
}

/// `[a.b]` → ("a.b", false), `[[a.b]]` → ("a.b", true); anything else (an array value on
/// its own line, a malformed header) → None.
fn header(l: &str) -> Option<(String, bool)> {
    let l = match l.find('#') {
        Some(i) => l[..i].trim_end(),
        None => l,
    };
    let (inner, aot) = if let Some(r) = l.strip_prefix("[[").and_then(|r| r.strip_suffix("]]")) {
        (r, true)
    } else if let Some(r) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        (r, false)
    } else {
        return None;
    };
    if !is_bare(inner.trim()) {
        return None;
    }
    let name = inner
        .split('.')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(".");
    Some((name, aot))
}

/// Resolves `service.route` to `service[2].route` using the current element counts.
fn resolve(name: &str, counts: &HashMap<String, usize>) -> String {
    let mut out = String::new();
    for part in name.split('.').filter(|p| !p.is_empty()) {
        out = join_key(&out, part);
        if let Some(n) = counts.get(&out) {
            out = join_index(&out, n.saturating_sub(1));
        }
    }
    out
}

/// The (possibly dotted) key at the start of a `key = value` line.
fn line_key(l: &str) -> Option<String> {
    let eq = l.find('=')?;
    let k = l[..eq].trim();
    if !is_bare(k) {
        return None;
    }
    Some(k.split('.').map(str::trim).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_and_relations() {
        assert_eq!(parent("port[1].rx_queues"), Some("port[1]"));
        assert_eq!(parent("port[1]"), Some("port"));
        assert_eq!(parent("port"), Some(""));
        assert_eq!(parent(""), None);
        assert_eq!(
            parent("fence_device[0].parameters.\"a.b\""),
            Some("fence_device[0].parameters")
        );
        assert!(related("port[1]", "port[1].name"));
        assert!(related("port[1].name", "port[1]"));
        assert!(!related("port[1]", "port[10]"));
        assert!(!related("port", "ports"));
    }

    #[test]
    fn line_columns() {
        let l = Lines::new("ab\nçd\n\nx");
        assert_eq!(l.line_col(0), (1, 1));
        assert_eq!(l.line_col(3), (2, 1));
        assert_eq!(l.line_col(5), (2, 2)); // after the two-byte ç
        assert_eq!(l.line_col(8), (4, 1));
        assert_eq!(l.line_range(2), 3..6);
    }

    #[test]
    fn syntax_paths() {
        let t = "[node]\nid = 1\n[[port]]\nname = 1\n[[port]]\nname = \"x\nmtu = 2\n[[service]]\n[[service.route]]\nhost = 1\n[[service]]\n[[service.route]]\n[[service.route]]\npool = ?\n";
        assert_eq!(syntax_path(t, 2), "node.id");
        assert_eq!(syntax_path(t, 4), "port[0].name");
        assert_eq!(syntax_path(t, 6), "port[1].name");
        assert_eq!(syntax_path(t, 10), "service[0].route[0].host");
        assert_eq!(syntax_path(t, 14), "service[1].route[1].pool");
    }
}
