//! `--plot PATH.svg`: self-contained SVG bar charts, written by hand (no dependency, no
//! scripts, no external style sheets or fonts: generic `sans-serif` text only).
//!
//! - `bench`: goodput of every trial as bars, grouped by round and coloured by mode, the
//!   medians as dashed lines; the medians and the tapsplice/testpmd ratio in the title; the
//!   per-burst processing time of the median tapsplice trial below.
//! - `demo` / `run`: every tapsplice appliance's per-burst processing time quantiles (log
//!   scale) and every workload's request-latency histogram in power-of-two buckets.
//!
//! A page is a stack of panels; each panel is one `Chart`.

use crate::report::{log2_buckets, RunReport};
use crate::workload::Latency;
use anyhow::{anyhow, Context, Result};
use serde_json::Value;
use std::fmt::Write;
use std::path::Path;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 340.0;
const LEFT: f64 = 92.0;
const RIGHT: f64 = 28.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 84.0;
/// Rough width of one character of 11 px sans-serif text (for layout decisions only).
const CHAR_W: f64 = 6.4;
/// Widest bar (a histogram with one bucket would otherwise be one wide block).
const MAX_BAR_W: f64 = 120.0;

/// Colours: modes of a benchmark, then a cycle for appliances and workloads.
pub const TAPSPLICE: &str = "#1f77b4";
pub const TESTPMD: &str = "#ff7f0e";
pub const DIRECT: &str = "#2ca02c";
const PALETTE: &[&str] = &[
    "#1f77b4", "#9467bd", "#2ca02c", "#d62728", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    Linear,
    /// Base-10 logarithmic; non-positive values are drawn as empty bars.
    Log,
}

#[derive(Debug, Clone)]
pub struct Bar {
    pub value: f64,
    pub color: &'static str,
    /// Text above the bar (omitted when it does not fit).
    pub label: String,
    /// Tooltip (`<title>`).
    pub tip: String,
}

/// Bars drawn side by side above one x-axis label.
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub bars: Vec<Bar>,
}

/// A horizontal reference line (a median).
#[derive(Debug, Clone)]
pub struct HLine {
    pub value: f64,
    pub color: &'static str,
    pub label: String,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub scale: Scale,
    pub groups: Vec<Group>,
    pub lines: Vec<HLine>,
    pub legend: Vec<(String, &'static str)>,
    /// Formats y-axis tick values.
    pub tick_fmt: fn(f64) -> String,
}

/// A page: a title, a subtitle, panels.
#[derive(Debug, Clone)]
pub struct Page {
    pub title: String,
    pub subtitle: String,
    pub charts: Vec<Chart>,
}

pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Up to 3 significant digits, no trailing zeros: 1, 2.5, 12.5, 125, 1250.
pub fn fmt_sig(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let a = x.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{:.0}", x)
    } else if a >= 10.0 {
        format!("{:.1}", x)
    } else if a >= 1.0 {
        format!("{:.2}", x)
    } else {
        format!("{:.3}", x)
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A duration given in nanoseconds: `850 ns`, `1.2 µs`, `35 ms`, `2.5 s`.
pub fn fmt_ns(ns: f64) -> String {
    let a = ns.abs();
    if a < 1e3 {
        format!("{} ns", fmt_sig(ns))
    } else if a < 1e6 {
        format!("{} µs", fmt_sig(ns / 1e3))
    } else if a < 1e9 {
        format!("{} ms", fmt_sig(ns / 1e6))
    } else {
        format!("{} s", fmt_sig(ns / 1e9))
    }
}

/// A duration given in microseconds.
pub fn fmt_us(us: f64) -> String {
    fmt_ns(us * 1e3)
}

/// A power-of-two bucket bound in µs: exact below 10 ms (`512 µs`, `1024 µs`, `8192 µs`),
/// then 3 significant digits (`16.4 ms`, `524 ms`, `1.05 s`).
pub fn fmt_bucket_us(us: u64) -> String {
    if us < 10_000 {
        format!("{} µs", us)
    } else {
        fmt_us(us as f64)
    }
}

/// A count: `950`, `12.5k`, `3.2M`.
pub fn fmt_count(x: f64) -> String {
    let a = x.abs();
    if a < 1e4 {
        format!("{:.0}", x)
    } else if a < 1e6 {
        format!("{}k", fmt_sig(x / 1e3))
    } else {
        format!("{}M", fmt_sig(x / 1e6))
    }
}

pub fn fmt_plain(x: f64) -> String {
    fmt_sig(x)
}

fn fmt_cycles(x: f64) -> String {
    format!("{} cyc", fmt_count(x))
}

/// A "nice" number near `x` (1, 2, 5 × 10^k), rounded up when `up`.
fn nice(x: f64, up: bool) -> f64 {
    if x.is_nan() || x <= 0.0 || !x.is_finite() {
        return 1.0;
    }
    let e = x.log10().floor();
    let f = x / 10f64.powi(e as i32);
    let n = if up {
        if f <= 1.0 {
            1.0
        } else if f <= 2.0 {
            2.0
        } else if f <= 5.0 {
            5.0
        } else {
            10.0
        }
    } else if f < 1.5 {
        1.0
    } else if f < 3.5 {
        2.0
    } else if f < 7.5 {
        5.0
    } else {
        10.0
    };
    n * 10f64.powi(e as i32)
}

/// The y axis: range and ticks.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
    pub scale: Scale,
}

impl Axis {
    pub fn new(scale: Scale, values: &[f64]) -> Axis {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        match scale {
            Scale::Linear => {
                let max = finite.iter().copied().fold(0.0, f64::max);
                let step = nice(if max > 0.0 { max * 1.1 / 5.0 } else { 0.2 }, false);
                let hi = ((max * 1.1 / step).ceil() * step).max(step);
                let n = (hi / step).round() as usize;
                let ticks = (0..=n).map(|i| i as f64 * step).collect();
                Axis {
                    lo: 0.0,
                    hi,
                    ticks,
                    scale,
                }
            }
            Scale::Log => {
                let pos: Vec<f64> = finite.into_iter().filter(|v| *v > 0.0).collect();
                let (mn, mx) = if pos.is_empty() {
                    (1.0, 10.0)
                } else {
                    (
                        pos.iter().copied().fold(f64::INFINITY, f64::min),
                        pos.iter().copied().fold(0.0, f64::max),
                    )
                };
                // A decade of room below the smallest bar when it would be barely visible.
                let mut lo_e = mn.log10().floor();
                if mn < 2.0 * 10f64.powi(lo_e as i32) {
                    lo_e -= 1.0;
                }
                let mut hi_e = (mx.log10() + 1e-9).ceil();
                if hi_e <= lo_e {
                    hi_e = lo_e + 1.0;
                }
                let decades = (hi_e - lo_e) as i32;
                let mut ticks = Vec::new();
                for e in 0..=decades {
                    let base = 10f64.powi(lo_e as i32 + e);
                    ticks.push(base);
                    if decades <= 2 && e < decades {
                        ticks.push(2.0 * base);
                        ticks.push(5.0 * base);
                    }
                }
                Axis {
                    lo: 10f64.powi(lo_e as i32),
                    hi: 10f64.powi(hi_e as i32),
                    ticks,
                    scale,
                }
            }
        }
    }

    /// Position of `v` in [0, 1] (clamped).
    pub fn frac(&self, v: f64) -> f64 {
        let f = match self.scale {
            Scale::Linear => (v - self.lo) / (self.hi - self.lo),
            Scale::Log => {
                if v <= 0.0 {
                    return 0.0;
                }
                (v.log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
            }
        };
        if f.is_finite() {
            f.clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

fn text_w(s: &str, px: f64) -> f64 {
    s.chars().count() as f64 * CHAR_W * px / 11.0
}

fn header_h(page: &Page) -> f64 {
    let lines = page.title.lines().count().max(1) as f64;
    14.0 + 22.0 * lines + if page.subtitle.is_empty() { 0.0 } else { 18.0 } + 12.0
}

/// Render a page as an SVG document. A title with several lines (`\n`) is drawn as such.
pub fn render(page: &Page) -> String {
    let n = page.charts.len().max(1);
    let head = header_h(page);
    let height = head + PANEL_H * n as f64 + 10.0;
    let mut o = String::new();
    let _ = writeln!(o, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">"#,
        w = WIDTH,
        h = height
    );
    let _ = writeln!(
        o,
        "<title>{}</title>",
        esc(&page.title.lines().collect::<Vec<_>>().join(" — "))
    );
    let _ = writeln!(
        o,
        r##"<rect x="0" y="0" width="{}" height="{}" fill="#ffffff"/>"##,
        WIDTH, height
    );
    let mut y = 14.0;
    for (i, line) in page.title.lines().enumerate() {
        y += 22.0;
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" font-size="{}" font-weight="bold" fill="#111111">{}</text>"##,
            LEFT - 70.0,
            y - 4.0,
            if i == 0 { 16 } else { 14 },
            esc(line)
        );
    }
    if !page.subtitle.is_empty() {
        y += 18.0;
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" font-size="12" fill="#444444">{}</text>"##,
            LEFT - 70.0,
            y - 2.0,
            esc(&page.subtitle)
        );
    }
    if page.charts.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{}" y="{}" font-size="13" fill="#666666">no data to plot</text>"##,
            LEFT,
            head + 40.0
        );
    }
    for (i, c) in page.charts.iter().enumerate() {
        let y0 = head + PANEL_H * i as f64;
        let _ = writeln!(o, r#"<g transform="translate(0,{})">"#, y0);
        render_chart(&mut o, c);
        let _ = writeln!(o, "</g>");
    }
    let _ = writeln!(o, "</svg>");
    o
}

fn render_chart(o: &mut String, c: &Chart) {
    let x0 = LEFT;
    // Reference lines are labelled in the right margin.
    let line_labels = c
        .lines
        .iter()
        .map(|l| text_w(&l.label, 10.0) * 1.1)
        .fold(0.0, f64::max);
    let x1 = WIDTH
        - RIGHT
        - if c.lines.is_empty() {
            0.0
        } else {
            line_labels + 4.0
        };
    let y_top = TOP;
    let y_bot = PANEL_H - BOTTOM;
    let ph = y_bot - y_top;
    let pw = x1 - x0;
    // Separator and title.
    let _ = writeln!(
        o,
        r##"<line x1="8" y1="0.5" x2="{}" y2="0.5" stroke="#dddddd"/>"##,
        WIDTH - 8.0
    );
    let _ = writeln!(
        o,
        r##"<text x="{}" y="24" font-size="13" font-weight="bold" fill="#222222">{}</text>"##,
        x0,
        esc(&c.title)
    );
    // Legend, right-aligned on the title row.
    let mut lx = x1;
    for (name, color) in c.legend.iter().rev() {
        let w = text_w(name, 11.0) + 18.0;
        lx -= w + 6.0;
        let _ = writeln!(
            o,
            r##"<rect x="{:.1}" y="15" width="11" height="11" fill="{}"/><text x="{:.1}" y="25" fill="#333333">{}</text>"##,
            lx,
            color,
            lx + 15.0,
            esc(name)
        );
    }

    let mut values: Vec<f64> = c
        .groups
        .iter()
        .flat_map(|g| g.bars.iter().map(|b| b.value))
        .collect();
    values.extend(c.lines.iter().map(|l| l.value));
    let axis = Axis::new(c.scale, &values);
    let y_of = |v: f64| y_bot - axis.frac(v) * ph;

    // Grid and y ticks.
    for t in &axis.ticks {
        let y = y_of(*t);
        let _ = writeln!(
            o,
            r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#e6e6e6"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333333">{}</text>"##,
            x0,
            y,
            x1,
            y,
            x0 - 6.0,
            y + 4.0,
            esc(&(c.tick_fmt)(*t))
        );
    }
    // Axes.
    let _ = writeln!(
        o,
        r##"<line x1="{x0:.1}" y1="{y_top:.1}" x2="{x0:.1}" y2="{y_bot:.1}" stroke="#333333"/><line x1="{x0:.1}" y1="{y_bot:.1}" x2="{x1:.1}" y2="{y_bot:.1}" stroke="#333333"/>"##
    );
    // Axis labels (the x label below the tick labels: lower when those are rotated).
    let slot = pw / c.groups.len().max(1) as f64;
    let max_label = c
        .groups
        .iter()
        .map(|g| text_w(&g.label, 11.0))
        .fold(0.0, f64::max);
    let rotate = max_label > slot - 4.0;
    let _ = writeln!(
        o,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12" fill="#222222">{}</text>"##,
        (x0 + x1) / 2.0,
        if rotate { PANEL_H - 12.0 } else { y_bot + 40.0 },
        esc(&c.x_label)
    );
    let _ = writeln!(
        o,
        r##"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle" font-size="12" fill="#222222">{}</text>"##,
        (y_top + y_bot) / 2.0,
        esc(&c.y_label)
    );

    if c.groups.is_empty() {
        let _ = writeln!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666666">no samples</text>"##,
            (x0 + x1) / 2.0,
            (y_top + y_bot) / 2.0
        );
        return;
    }
    // With very many groups, label every k-th one.
    let every = if rotate {
        ((14.0 / slot).ceil() as usize).max(1)
    } else {
        1
    };
    for (gi, g) in c.groups.iter().enumerate() {
        let gx = x0 + slot * gi as f64;
        let nb = g.bars.len().max(1) as f64;
        let bw = (slot * 0.8 / nb).min(MAX_BAR_W);
        let pad = (slot - bw * nb) / 2.0;
        for (bi, b) in g.bars.iter().enumerate() {
            let bx = gx + pad + bw * bi as f64;
            let y = y_of(b.value);
            let h = (y_bot - y).max(0.0);
            let _ = writeln!(
                o,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                bx + 0.5,
                y,
                (bw - 1.0).max(0.5),
                h,
                b.color,
                esc(&b.tip)
            );
            if !b.label.is_empty() && text_w(&b.label, 10.0) <= bw + pad.min(slot * 0.1) {
                let _ = writeln!(
                    o,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10" fill="#222222">{}</text>"##,
                    bx + bw / 2.0,
                    (y - 4.0).max(y_top - 2.0),
                    esc(&b.label)
                );
            }
        }
        if gi % every == 0 {
            let cx = gx + slot / 2.0;
            if rotate {
                let _ = writeln!(
                    o,
                    r##"<text transform="translate({:.1},{:.1}) rotate(-40)" text-anchor="end" fill="#333333">{}</text>"##,
                    cx + 3.0,
                    y_bot + 14.0,
                    esc(&g.label)
                );
            } else {
                let _ = writeln!(
                    o,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333333">{}</text>"##,
                    cx,
                    y_bot + 16.0,
                    esc(&g.label)
                );
            }
        }
    }
    // Reference lines (medians), labelled in the right margin at their height, moved apart
    // when two are closer than a line of text.
    let mut labels: Vec<(f64, &HLine)> = Vec::new();
    for l in &c.lines {
        let y = y_of(l.value);
        let _ = writeln!(
            o,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="1.5" stroke-dasharray="6 4"/>"#,
            x0, y, x1, y, l.color
        );
        labels.push((y + 3.5, l));
    }
    labels.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    for i in 1..labels.len() {
        if labels[i].0 - labels[i - 1].0 < 12.0 {
            labels[i].0 = labels[i - 1].0 + 12.0;
        }
    }
    for (ty, l) in labels {
        let _ = writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" font-weight="bold" fill="{}">{}</text>"#,
            x1 + 6.0,
            ty,
            l.color,
            esc(&l.label)
        );
    }
}

fn mode_color(m: &str) -> &'static str {
    match m {
        "tapsplice" => TAPSPLICE,
        "testpmd" => TESTPMD,
        _ => DIRECT,
    }
}

/// A bench result's `burst_cycles` (with its `tsc_hz`) as [`burst_chart`] draws them.
fn bench_burst_chart(v: &Value, title: &str) -> Option<Chart> {
    let bc = v.get("burst_cycles").filter(|b| b.is_object())?;
    burst_chart(title, &serde_json::json!({ "burst_cycles": bc, "tsc_hz": v.get("tsc_hz") }), TAPSPLICE)
}

/// Quantile bars of a tapsplice report's per-burst processing time (ns when the report
/// has `burst_ns` or `tsc_hz`, else cycles), or None without a summary.
fn burst_chart(title: &str, report: &Value, color: &'static str) -> Option<Chart> {
    let tsc = report
        .get("tsc_hz")
        .and_then(Value::as_f64)
        .filter(|h| *h > 0.0);
    let (q, to_ns, in_ns) = match (report.get("burst_ns"), report.get("burst_cycles"), tsc) {
        (Some(ns), _, _) if ns.is_object() => (ns, 1.0, true),
        (_, Some(c), Some(h)) if c.is_object() => (c, 1e9 / h, true),
        (_, Some(c), None) if c.is_object() => (c, 1.0, false),
        _ => return None,
    };
    let count = q.get("count").and_then(Value::as_u64).unwrap_or(0);
    let fmt: fn(f64) -> String = if in_ns { fmt_ns } else { fmt_cycles };
    let groups: Vec<Group> = ["p50", "p90", "p99", "p99.9", "max"]
        .iter()
        .filter_map(|k| {
            let v = q.get(*k).and_then(Value::as_f64)? * to_ns;
            Some(Group {
                label: k.to_string(),
                bars: vec![Bar {
                    value: v,
                    color,
                    label: fmt(v),
                    tip: format!("{}: {}", k, fmt(v)),
                }],
            })
        })
        .collect();
    Some(Chart {
        title: format!("{} ({} bursts)", title, fmt_count(count as f64)),
        x_label: "quantile over all bursts".into(),
        y_label: format!(
            "processing time per burst{} (log scale)",
            if in_ns { "" } else { ", TSC cycles" }
        ),
        scale: Scale::Log,
        groups,
        lines: vec![],
        legend: vec![],
        tick_fmt: fmt,
    })
}

/// The SVG of `testbed bench`'s result (the JSON object it prints).
pub fn bench_svg(v: &Value) -> String {
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut modes: Vec<String> = Vec::new();
    for m in ["tapsplice", "testpmd", "direct"] {
        let has = v["trials"]
            .as_array()
            .map(|ts| ts.iter().any(|t| t["mode"] == m))
            .unwrap_or(false);
        if has {
            modes.push(m.to_string());
        }
    }
    let mut parts = Vec::new();
    for m in &modes {
        if let Some(x) = f(&format!("{}_mbps", m)) {
            parts.push(format!("{} {} Mbit/s", m, fmt_sig(x)));
        }
    }
    let ratio = f("ratio")
        .map(|r| format!(": ratio tapsplice/testpmd {:.3}", r))
        .unwrap_or_default();
    let title = format!(
        "bench {}{}\nmedians: {}",
        v["bench"].as_str().unwrap_or("?"),
        ratio,
        if parts.is_empty() {
            "-".to_string()
        } else {
            parts.join(", ")
        },
    );
    let per_req = v["bytes_per_request"].as_f64().unwrap_or(0.0);
    let what = match v["seconds"].as_f64() {
        Some(s) => format!(
            "requests of {} MB for {} s",
            fmt_sig(per_req / 1e6),
            fmt_sig(s)
        ),
        None => format!("{} MB each", fmt_sig(per_req / 1e6)),
    };
    let subtitle = format!(
        "run {} — bulk TCP, {} connection(s), {} — {} round(s), order alternating — {}",
        v["run_id"].as_str().unwrap_or("?"),
        v["connections"],
        what,
        v["repeat"],
        if v["passed"].as_bool().unwrap_or(false) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    let trials = v["trials"].as_array().cloned().unwrap_or_default();
    let rounds = trials
        .iter()
        .filter_map(|t| t["repeat"].as_u64())
        .max()
        .map(|r| r + 1)
        .unwrap_or(0);
    let mut groups = Vec::new();
    for r in 0..rounds {
        let mut bars = Vec::new();
        for m in &modes {
            for t in trials
                .iter()
                .filter(|t| t["repeat"].as_u64() == Some(r) && t["mode"] == m.as_str())
            {
                let g = t["goodput_mbps"].as_f64().unwrap_or(0.0);
                let ok = t["passed"].as_bool().unwrap_or(false);
                bars.push(Bar {
                    value: g,
                    color: mode_color(m),
                    label: if ok { fmt_sig(g) } else { "FAILED".into() },
                    tip: format!(
                        "round {} {}: {} Mbit/s, {} B verified in {} s, {} errors{}",
                        r + 1,
                        m,
                        fmt_sig(g),
                        t["bytes_verified"],
                        fmt_sig(t["elapsed_s"].as_f64().unwrap_or(0.0)),
                        t["errors"],
                        if ok { "" } else { ", FAILED" }
                    ),
                });
            }
        }
        groups.push(Group {
            label: format!("round {}", r + 1),
            bars,
        });
    }
    let lines = modes
        .iter()
        .filter_map(|m| {
            f(&format!("{}_mbps", m)).map(|x| HLine {
                value: x,
                color: mode_color(m),
                label: format!("median {} {}", m, fmt_sig(x)),
            })
        })
        .collect();
    let mut charts = vec![Chart {
        title: "goodput per trial (dashed: medians)".into(),
        x_label: "trial round (the modes' order alternates every round)".into(),
        y_label: "goodput (Mbit/s)".into(),
        scale: Scale::Linear,
        groups,
        lines,
        legend: modes.iter().map(|m| (m.clone(), mode_color(m))).collect(),
        tick_fmt: fmt_plain,
    }];
    charts.extend(bench_burst_chart(v, "tapsplice: per-burst processing time, trial closest to the median"));
    render(&Page {
        title,
        subtitle,
        charts,
    })
}

/// The SVG of `testbed bench balance`'s result: every trial's one-second rates at the
/// generator as bars (a trial's figure is its best second), dashed lines at each mode's
/// best trial, and the balance DUT's per-burst time. The bars show what the figures are
/// made of: on a shared host a trial can sit in a slow regime for seconds.
pub fn bench_balance_svg(v: &Value) -> String {
    let modes = [("balance", TAPSPLICE), ("forward", DIRECT), ("io", TESTPMD)];
    let color = |m: &str| modes.iter().find(|(n, _)| *n == m).map_or(PALETTE[3], |(_, c)| *c);
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let figures: Vec<String> = modes.iter().filter_map(|(m, _)| f(&format!("{m}_mpps")).map(|x| format!("{m} {x:.2} Mpps"))).collect();
    let title = format!(
        "bench balance: ratio {} (best balance / best io-forward; target {})\nbest trials: {}",
        f("ratio").map_or("-".to_string(), |r| format!("{r:.3}")),
        f("target").map_or("-".to_string(), fmt_plain),
        if figures.is_empty() { "-".to_string() } else { figures.join(", ") },
    );
    let subtitle = format!(
        "run {} — {} round(s) of {} s, order alternating, {} — ratio of medians {} — {}",
        v["run_id"].as_str().unwrap_or("?"),
        v["repeat"],
        v["seconds"],
        if v["hugepages"] == true { "hugepages" } else { "--no-huge" },
        f("ratio_of_medians").map_or("-".to_string(), |r| format!("{r:.3}")),
        if v["passed"].as_bool().unwrap_or(false) { "PASS" } else { "FAIL" }
    );
    let groups: Vec<Group> = v["trials"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let m = t["mode"].as_str().unwrap_or("?");
            let round = t["round"].as_u64().unwrap_or(0) + 1;
            let samples: Vec<f64> = t["samples"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect();
            let bars = if samples.is_empty() {
                vec![Bar { value: 0.0, color: color(m), label: "FAILED".into(), tip: format!("round {round} {m}: {}", t["error"].as_str().unwrap_or("no samples")) }]
            } else {
                samples
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| Bar { value: x, color: color(m), label: String::new(), tip: format!("round {round} {m}, second {}: {x:.3} Mpps", i + 1) })
                    .collect()
            };
            Group { label: format!("{round} {m}"), bars }
        })
        .collect();
    let lines = modes
        .iter()
        .filter_map(|(m, c)| f(&format!("{m}_mpps")).map(|x| HLine { value: x, color: c, label: format!("best {m} {x:.2}") }))
        .collect();
    let mut charts = vec![Chart {
        title: "the generator's receive rate, each second of each trial (dashed: each mode's best trial)".into(),
        x_label: "trial (round, mode)".into(),
        y_label: "Mpps".into(),
        scale: Scale::Linear,
        groups,
        lines,
        legend: modes.iter().map(|(m, c)| (m.to_string(), *c)).collect(),
        tick_fmt: fmt_plain,
    }];
    charts.extend(bench_burst_chart(v, "tapsplice balance: per-burst processing time, best balance trial"));
    render(&Page { title, subtitle, charts })
}

/// What a run's plot shows, taken from its report.
#[derive(Debug, Clone)]
pub struct RunPlot {
    pub title: String,
    pub subtitle: String,
    /// (appliance name, its report) — tapsplice appliances with a report.
    pub appliances: Vec<(String, Value)>,
    pub workloads: Vec<WorkloadPlot>,
}

#[derive(Debug, Clone)]
pub struct WorkloadPlot {
    pub name: String,
    pub kind: String,
    pub connections: u32,
    /// (lo, hi, count): requests with latency in [lo, hi) µs.
    pub buckets: Vec<(u64, u64, u64)>,
    pub latency: Latency,
}

impl RunPlot {
    pub fn from_report(rep: &RunReport) -> RunPlot {
        RunPlot {
            title: format!(
                "run {} — topology {} — {}",
                rep.run_id,
                rep.topology,
                if rep.passed { "PASS" } else { "FAIL" }
            ),
            subtitle: rep.description.clone().unwrap_or_default(),
            appliances: rep
                .appliances
                .values()
                .filter_map(|a| a.report.clone().map(|r| (a.name.clone(), r)))
                .collect(),
            workloads: rep
                .workloads
                .iter()
                .map(|w| WorkloadPlot {
                    name: w.name.clone(),
                    kind: w.kind.as_str().to_string(),
                    connections: w.connections,
                    buckets: log2_buckets(&w.histogram),
                    latency: w.latency_us.clone(),
                })
                .collect(),
        }
    }
}

/// The SVG of a run (`demo`, `run`).
pub fn run_svg(p: &RunPlot) -> String {
    let mut charts = Vec::new();
    for (i, (name, rep)) in p.appliances.iter().enumerate() {
        if let Some(c) = burst_chart(
            &format!("appliance {}: per-burst processing time", name),
            rep,
            PALETTE[i % PALETTE.len()],
        ) {
            charts.push(c);
        }
    }
    for (i, w) in p.workloads.iter().enumerate() {
        let color = PALETTE[(p.appliances.len() + i) % PALETTE.len()];
        let total: u64 = w.buckets.iter().map(|b| b.2).sum();
        let groups = w
            .buckets
            .iter()
            .map(|(lo, hi, c)| Group {
                label: fmt_bucket_us(*lo),
                bars: vec![Bar {
                    value: *c as f64,
                    color,
                    label: if *c > 0 {
                        fmt_count(*c as f64)
                    } else {
                        String::new()
                    },
                    tip: format!(
                        "{} .. {}: {} requests ({:.1}%)",
                        fmt_us(*lo as f64),
                        fmt_us(*hi as f64),
                        c,
                        *c as f64 * 100.0 / total.max(1) as f64
                    ),
                }],
            })
            .collect();
        let l = &w.latency;
        charts.push(Chart {
            title: format!(
                "workload {} ({}, {} conn): request latency, {} requests — p50 {}, p99 {}, max {}",
                w.name,
                w.kind,
                w.connections,
                l.count,
                fmt_us(l.p50 as f64),
                fmt_us(l.p99 as f64),
                fmt_us(l.max as f64)
            ),
            x_label: "request latency (log2 buckets: from the label to twice it)".into(),
            y_label: "requests".into(),
            scale: Scale::Linear,
            groups,
            lines: vec![],
            legend: vec![],
            tick_fmt: fmt_count,
        });
    }
    render(&Page {
        title: p.title.clone(),
        subtitle: p.subtitle.clone(),
        charts,
    })
}

/// Fail early (before a run) when the plot cannot be written there.
pub fn check_path(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(anyhow!(
            "--plot {}: directory {} does not exist",
            path.display(),
            dir.display()
        ));
    }
    if path.is_dir() {
        return Err(anyhow!("--plot {}: is a directory", path.display()));
    }
    Ok(())
}

pub fn write(path: &Path, svg: &str) -> Result<()> {
    std::fs::write(path, svg)
        .with_context(|| format!("--plot: cannot write {}", path.display()))?;
    eprintln!("testbed: plot written to {}", path.display());
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    /// A tiny XML well-formedness check: one root element, tags balance, attributes are
    /// quoted, `&` only starts an entity, no `<` in text. Returns the element names in order.
    pub fn check_xml(s: &str) -> Result<Vec<String>, String> {
        let b = s.as_bytes();
        let mut stack: Vec<String> = Vec::new();
        let mut names = Vec::new();
        let mut roots = 0;
        let mut i = 0;
        let entity_ok = |rest: &str| {
            ["amp;", "lt;", "gt;", "quot;", "apos;"]
                .iter()
                .any(|e| rest.starts_with(e))
                || (rest.starts_with('#')
                    && rest[1..].find(';').map(|n| n > 0 && n < 8).unwrap_or(false))
        };
        while i < b.len() {
            match b[i] {
                b'<' => {
                    let end = s[i..]
                        .find('>')
                        .map(|n| i + n)
                        .ok_or_else(|| format!("unterminated tag at {}", i))?;
                    let tag = &s[i + 1..end];
                    if tag.starts_with('?') {
                        if !tag.ends_with('?') || i != 0 {
                            return Err("bad XML declaration".into());
                        }
                    } else if let Some(name) = tag.strip_prefix('/') {
                        let top = stack.pop().ok_or_else(|| format!("stray </{}>", name))?;
                        if top != name.trim() {
                            return Err(format!("</{}> closes <{}>", name, top));
                        }
                    } else {
                        let self_closing = tag.ends_with('/');
                        let body = tag.trim_end_matches('/');
                        let name: String = body
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == ':' || *c == '-')
                            .collect();
                        if name.is_empty() {
                            return Err(format!("tag without a name: <{}>", tag));
                        }
                        // Attributes: name="value" pairs, values without < and with entities.
                        let mut rest = body[name.len()..].trim();
                        while !rest.is_empty() {
                            let eq = rest
                                .find('=')
                                .ok_or_else(|| format!("attribute without value in <{}>", tag))?;
                            let an = rest[..eq].trim();
                            if an.is_empty() || an.contains(char::is_whitespace) {
                                return Err(format!("bad attribute name in <{}>", tag));
                            }
                            let after = &rest[eq + 1..];
                            if !after.starts_with('"') {
                                return Err(format!("unquoted attribute in <{}>", tag));
                            }
                            let close = after[1..]
                                .find('"')
                                .ok_or_else(|| format!("unterminated attribute in <{}>", tag))?;
                            let val = &after[1..1 + close];
                            if val.contains('<') {
                                return Err(format!("< in attribute of <{}>", tag));
                            }
                            for (k, _) in val.match_indices('&') {
                                if !entity_ok(&val[k + 1..]) {
                                    return Err(format!("bare & in attribute of <{}>", tag));
                                }
                            }
                            rest = after[close + 2..].trim_start();
                        }
                        if stack.is_empty() {
                            roots += 1;
                        }
                        names.push(name.clone());
                        if !self_closing {
                            stack.push(name);
                        }
                    }
                    i = end + 1;
                }
                b'&' => {
                    if !entity_ok(&s[i + 1..]) {
                        return Err(format!("bare & in text at {}", i));
                    }
                    i += 1;
                }
                b'>' => return Err(format!("stray > in text at {}", i)),
                _ => {
                    if !stack.is_empty() || b[i].is_ascii_whitespace() {
                        i += 1;
                    } else {
                        return Err(format!("text outside the root element at {}", i));
                    }
                }
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed elements: {:?}", stack));
        }
        if roots != 1 {
            return Err(format!("{} root elements", roots));
        }
        Ok(names)
    }

    fn assert_sane(svg: &str) -> Vec<String> {
        let names = check_xml(svg).unwrap_or_else(|e| panic!("{}\n{}", e, svg));
        assert_eq!(names.first().map(String::as_str), Some("svg"));
        for bad in ["NaN", "inf", "-0.0\"", "{"] {
            assert!(!svg.contains(bad), "{} in\n{}", bad, svg);
        }
        names
    }

    #[test]
    fn checker_rejects_broken_xml() {
        assert!(check_xml("<svg><g></svg>").is_err());
        assert!(check_xml("<svg><g/></svg><svg/>").is_err());
        assert!(check_xml("<svg a=b/>").is_err());
        assert!(check_xml("<svg>a & b</svg>").is_err());
        assert!(check_xml("<svg>a &amp; b</svg>").is_ok());
        assert!(check_xml("<svg x=\"1\"><text>t</text></svg>").is_ok());
    }

    fn bench_value() -> Value {
        let t = |mode: &str, r: u64, g: f64| {
            json!({"mode": mode, "repeat": r, "goodput_mbps": g, "bytes_verified": 200000000u64,
                   "elapsed_s": 1.5, "errors": 0, "passed": true})
        };
        json!({
            "bench": "forward", "run_id": "t0a1b2c", "passed": true,
            "tapsplice_mbps": 1520.4, "testpmd_mbps": 1601.0, "direct_mbps": null,
            "ratio": 0.95, "connections": 4, "bytes_per_request": 50000000u64,
            "seconds": null, "repeat": 3,
            "burst_cycles": {"count": 12345, "p50": 2000, "p90": 4000, "p99": 30000, "p99.9": 200000, "max": 2000000},
            "tsc_hz": 2000000000u64,
            "trials": [t("tapsplice", 0, 1500.0), t("testpmd", 0, 1601.0),
                       t("testpmd", 1, 1590.0), t("tapsplice", 1, 1520.4),
                       t("tapsplice", 2, 1530.0), t("testpmd", 2, 1610.0)]
        })
    }

    #[test]
    fn bench_plot_has_bars_medians_and_ratio() {
        let svg = bench_svg(&bench_value());
        let names = assert_sane(&svg);
        // 6 trial bars + 5 burst quantile bars, each with a tooltip.
        assert_eq!(names.iter().filter(|n| *n == "rect").count(), 1 + 2 + 6 + 5);
        for s in [
            "bench forward: ratio tapsplice/testpmd 0.950</text>",
            ">medians: tapsplice 1520 Mbit/s, testpmd 1601 Mbit/s</text>",
            "<title>bench forward: ratio tapsplice/testpmd 0.950 — medians: tapsplice 1520 Mbit/s, testpmd 1601 Mbit/s</title>",
            "round 1",
            "round 3",
            "goodput (Mbit/s)",
            ">median tapsplice 1520<",
            ">median testpmd 1601<",
            ">1590<",
            "4 connection(s)",
            "tapsplice: per-burst processing time",
            // 2000 cycles at 2 GHz = 1 µs; max 2e6 cycles = 1 ms
            ">1 µs<",
            ">1 ms<",
            "PASS",
        ] {
            assert!(svg.contains(s), "missing {:?} in\n{}", s, svg);
        }
        assert!(
            !svg.contains("direct"),
            "no direct trials, no direct legend"
        );
    }

    #[test]
    fn bench_balance_plot_has_every_second_and_the_best_trials() {
        let t = |mode: &str, round: u64, samples: &[f64]| json!({"mode": mode, "round": round, "samples": samples, "passed": true});
        let v = json!({
            "bench": "balance", "run_id": "t0b1", "passed": true, "repeat": 2, "seconds": 3.0, "hugepages": false,
            "balance_mpps": 13.48, "forward_mpps": 15.09, "io_mpps": 16.43, "ratio": 0.821, "ratio_of_medians": 0.851, "target": 0.8,
            "burst_cycles": {"count": 100, "p50": 2000, "p90": 4000, "p99": 30000, "p99.9": 200000, "max": 2000000},
            "tsc_hz": 2000000000u64,
            "trials": [t("balance", 0, &[13.0, 13.48, 9.1]), t("forward", 0, &[15.09, 15.0, 14.9]), t("io", 0, &[16.43, 10.2, 16.0]),
                       t("io", 1, &[16.1, 16.2, 16.3]), t("forward", 1, &[9.3, 9.2, 9.1]),
                       json!({"mode": "balance", "round": 1, "samples": [], "passed": false, "error": "DUT died"})]
        });
        let svg = bench_balance_svg(&v);
        let names = assert_sane(&svg);
        // Frame + legend swatches (3) + 5 trials × 3 seconds + 1 failed bar + 5 burst bars.
        assert_eq!(names.iter().filter(|n| *n == "rect").count(), 1 + 3 + 15 + 1 + 5);
        for s in [
            "bench balance: ratio 0.821 (best balance / best io-forward; target 0.8)",
            "best trials: balance 13.48 Mpps, forward 15.09 Mpps, io 16.43 Mpps",
            "ratio of medians 0.851",
            "--no-huge",
            ">best io 16.43<",
            "round 1 io, second 2: 10.200 Mpps",
            "round 2 balance: DUT died",
            "1 balance",
            "2 io",
            "per-burst processing time",
        ] {
            assert!(svg.contains(s), "missing {:?} in\n{}", s, svg);
        }
    }

    #[test]
    fn failed_trial_and_no_ratio() {
        let mut v = bench_value();
        v["trials"][0]["passed"] = json!(false);
        v["ratio"] = Value::Null;
        v["testpmd_mbps"] = Value::Null;
        v["burst_cycles"] = Value::Null;
        let svg = bench_svg(&v);
        assert_sane(&svg);
        assert!(svg.contains(">FAILED<"));
        assert!(!svg.contains("ratio"));
    }

    fn run_plot() -> RunPlot {
        RunPlot {
            title: "run t0a1b2c — topology forward — PASS".into(),
            subtitle: "client <10.99.0.1> & server".into(),
            appliances: vec![(
                "fw1".into(),
                json!({"tsc_hz": 1000000000u64,
                       "burst_cycles": {"count": 50, "p50": 900, "p90": 2500, "p99": 40000, "p99.9": 90000, "max": 1500000},
                       "burst_ns": {"count": 50, "p50": 900, "p90": 2500, "p99": 40000, "p99.9": 90000, "max": 1500000}}),
            )],
            workloads: vec![
                WorkloadPlot {
                    name: "echo".into(),
                    kind: "echo".into(),
                    connections: 16,
                    buckets: vec![
                        (256, 512, 120),
                        (512, 1024, 3000),
                        (1024, 2048, 0),
                        (2048, 4096, 80),
                    ],
                    latency: Latency {
                        count: 3200,
                        mean: 600.0,
                        p50: 542,
                        p90: 736,
                        p99: 986,
                        p99_9: 4275,
                        max: 5527,
                    },
                },
                WorkloadPlot {
                    name: "empty".into(),
                    kind: "bulk".into(),
                    connections: 1,
                    buckets: vec![],
                    latency: Latency::default(),
                },
            ],
        }
    }

    #[test]
    fn run_plot_has_quantiles_and_histograms() {
        let svg = run_svg(&run_plot());
        let names = assert_sane(&svg);
        // background + 5 quantile bars + 4 buckets
        assert_eq!(names.iter().filter(|n| *n == "rect").count(), 1 + 5 + 4);
        for s in [
            "appliance fw1: per-burst processing time (50 bursts)",
            ">p50<",
            ">p99.9<",
            ">max<",
            ">900 ns<",
            ">1.5 ms<",
            "workload echo (echo, 16 conn): request latency, 3200 requests — p50 542 µs, p99 986 µs, max 5.53 ms",
            ">256 µs<",
            ">1024 µs<",
            ">3000<",
            "requests",
            "client &lt;10.99.0.1&gt; &amp; server",
            "no samples",
        ] {
            assert!(svg.contains(s), "missing {:?} in\n{}", s, svg);
        }
        // An empty page still is a document.
        let empty = run_svg(&RunPlot {
            title: "t".into(),
            subtitle: String::new(),
            appliances: vec![("pmd".into(), json!({"ports": []}))],
            workloads: vec![],
        });
        assert_sane(&empty);
        assert!(empty.contains("no data to plot"));
    }

    #[test]
    fn axes() {
        let a = Axis::new(Scale::Log, &[900.0, 1.5e6]);
        assert_eq!(a.lo, 100.0);
        assert_eq!(a.hi, 1e7);
        assert_eq!(a.ticks, vec![100.0, 1e3, 1e4, 1e5, 1e6, 1e7]);
        assert_eq!(a.frac(1e4), 0.4);
        assert_eq!(a.frac(0.0), 0.0);
        let a = Axis::new(Scale::Log, &[3.0, 40.0]);
        assert_eq!(a.ticks, vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]);
        // 102: a decade below so that its bar shows.
        let a = Axis::new(Scale::Log, &[102.0, 1500.0]);
        assert_eq!((a.lo, a.hi), (10.0, 1e4));
        let a = Axis::new(Scale::Log, &[10.0]);
        assert!(a.hi > a.lo);
        let a = Axis::new(Scale::Linear, &[1601.0, 1500.0]);
        assert_eq!(a.lo, 0.0);
        assert!(a.hi >= 1601.0 && a.hi <= 2000.0, "{:?}", a);
        assert_eq!(a.ticks.first(), Some(&0.0));
        assert!(a.ticks.len() >= 4 && a.ticks.len() <= 11, "{:?}", a);
        let z = Axis::new(Scale::Linear, &[0.0, f64::NAN]);
        assert!(z.hi > 0.0 && z.frac(0.0) == 0.0);
    }

    #[test]
    fn formats() {
        assert_eq!(fmt_ns(850.0), "850 ns");
        assert_eq!(fmt_ns(1234.0), "1.23 µs");
        assert_eq!(fmt_ns(35_000_000.0), "35 ms");
        assert_eq!(fmt_us(1.0), "1 µs");
        assert_eq!(fmt_us(1024.0), "1.02 ms");
        assert_eq!(fmt_bucket_us(1024), "1024 µs");
        assert_eq!(fmt_bucket_us(524_288), "524 ms");
        assert_eq!(fmt_count(950.0), "950");
        assert_eq!(fmt_count(12_500.0), "12.5k");
        assert_eq!(fmt_sig(1520.4), "1520");
        assert_eq!(fmt_sig(0.5), "0.5");
        assert_eq!(esc("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
