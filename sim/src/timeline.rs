//! The failure report a person reads: one self-contained HTML page with the history of a run
//! on a time line. Each client is a row of bars (one per operation, from invocation to answer;
//! green answered, orange refused, grey unknown), each member a row of fault bands (down,
//! paused, cut off) and marks (clock jumps, disk damage), and the operations the failure names
//! are drawn in red. Hovering a bar shows the request and its answer.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::checker::linearizability::RequestSummary;
use crate::history::{Op, Outcome, SimNanos};
use crate::world::{FaultKind, FaultMark, World};

const WIDTH: f64 = 1400.0;
const LEFT: f64 = 110.0;
const ROW: f64 = 22.0;
const BAR: f64 = 14.0;

/// Renders the run of `world` (normally the shrunk case of a failing seed) as HTML.
pub fn render(world: &World, title: &str) -> String {
    let end = world.now.max(1);
    let x = |t: SimNanos| LEFT + (t as f64 / end as f64) * (WIDTH - LEFT - 10.0);
    let named = named_ops(world.failure.as_ref().map_or("", |f| f.what.as_str()));
    let clients: Vec<u64> = {
        let mut c: Vec<u64> = world.ops.iter().map(|op| op.client).collect();
        c.sort_unstable();
        c.dedup();
        c
    };
    let members: Vec<u64> = world.member_ids();
    let rows = members.len() + 1 + clients.len();
    let height = (rows as f64 + 2.0) * ROW + 20.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="monospace" font-size="11">"#
    );
    axis(&mut svg, end, &x, height);
    let mut row = 1.0;
    label(&mut svg, row, "network");
    fault_row(&mut svg, &world.fault_marks, 0, row, end, &x);
    for m in &members {
        row += 1.0;
        label(&mut svg, row, &format!("member {m}"));
        fault_row(&mut svg, &world.fault_marks, *m, row, end, &x);
    }
    let row_of: BTreeMap<u64, f64> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (*c, row + 1.0 + i as f64))
        .collect();
    for (c, r) in &row_of {
        label(&mut svg, *r, &format!("client {c}"));
    }
    for op in &world.ops {
        op_bar(
            &mut svg,
            op,
            row_of[&op.client],
            named.contains(&op.id),
            end,
            &x,
        );
    }
    if let Some(f) = &world.failure {
        let fx = x(f.at);
        let _ = write!(
            svg,
            r#"<line x1="{fx}" y1="0" x2="{fx}" y2="{height}" stroke="red" stroke-dasharray="4"/>"#
        );
    }
    svg.push_str("</svg>");
    let what = world
        .failure
        .as_ref()
        .map_or("no failure", |f| f.what.as_str());
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body>\
         <h3>{}</h3><p>{}</p><p>options: <code>{}</code></p>{svg}</body></html>\n",
        escape(title),
        escape(title),
        escape(what),
        escape(&world.options.overrides())
    )
}

/// The op ids a failure message names ("op 12 (client ...").
fn named_ops(what: &str) -> Vec<u64> {
    what.match_indices("op ")
        .filter_map(|(i, _)| {
            let digits: String = what[i + 3..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect()
}

fn axis(svg: &mut String, end: SimNanos, x: &dyn Fn(SimNanos) -> f64, height: f64) {
    let step = tick_step(end);
    let mut t = 0;
    while t <= end {
        let tx = x(t);
        let _ = write!(
            svg,
            r##"<line x1="{tx}" y1="12" x2="{tx}" y2="{height}" stroke="#eee"/><text x="{tx}" y="10">{}ms</text>"##,
            t / 1_000_000
        );
        t += step;
    }
}

/// A round step (1, 2 or 5 times a power of ten milliseconds) giving at most ten grid lines.
fn tick_step(end: SimNanos) -> SimNanos {
    let rough = (end / 10).max(1);
    let mut base: SimNanos = 1_000_000;
    loop {
        for factor in [1, 2, 5] {
            if factor * base >= rough {
                return factor * base;
            }
        }
        base *= 10;
    }
}

fn label(svg: &mut String, row: f64, text: &str) {
    let y = row * ROW + BAR;
    let _ = write!(svg, r#"<text x="4" y="{y}">{}</text>"#, escape(text));
}

/// Bands between a fault and its end on one row, and marks for instant faults.
fn fault_row(
    svg: &mut String,
    marks: &[FaultMark],
    member: u64,
    row: f64,
    end: SimNanos,
    x: &dyn Fn(SimNanos) -> f64,
) {
    let y = row * ROW + 2.0;
    let mut open: BTreeMap<&str, SimNanos> = BTreeMap::new();
    let mut band = |svg: &mut String, from: SimNanos, to: SimNanos, kind: &str| {
        let color = match kind {
            "down" => "#d33",
            "paused" => "#e90",
            _ => "#88c",
        };
        let (x1, x2) = (x(from), x(to).max(x(from) + 1.0));
        let _ = write!(
            svg,
            r#"<rect x="{x1}" y="{y}" width="{}" height="{BAR}" fill="{color}" opacity="0.6"><title>{kind} {}ms..{}ms</title></rect>"#,
            x2 - x1,
            from / 1_000_000,
            to / 1_000_000
        );
    };
    for m in marks {
        let mine = m.member == member;
        // Healing the network ends every member's partition and clog too.
        let heals_links = m.what == FaultKind::LinksHealed;
        if !mine && !heals_links {
            continue;
        }
        match m.what {
            FaultKind::Crash | FaultKind::RefusedToStart if mine => {
                open.entry("down").or_insert(m.at);
            }
            FaultKind::Start if mine => close(&mut open, "down", m.at, svg, &mut band),
            FaultKind::Pause if mine => {
                open.entry("paused").or_insert(m.at);
            }
            FaultKind::Resume if mine => close(&mut open, "paused", m.at, svg, &mut band),
            FaultKind::Partition | FaultKind::Clog if mine => {
                open.entry("cut off or clogged").or_insert(m.at);
            }
            FaultKind::LinksHealed => close(&mut open, "cut off or clogged", m.at, svg, &mut band),
            FaultKind::ClockJump | FaultKind::DiskDamage if mine => {
                let mx = x(m.at);
                let what = if m.what == FaultKind::ClockJump {
                    "clock jump"
                } else {
                    "disk damage"
                };
                let _ = write!(
                    svg,
                    r#"<circle cx="{mx}" cy="{}" r="4" fill="purple"><title>{what} at {}ms</title></circle>"#,
                    y + BAR / 2.0,
                    m.at / 1_000_000
                );
            }
            _ => {}
        }
    }
    for (kind, from) in open {
        band(svg, from, end, kind);
    }
}

fn close(
    open: &mut BTreeMap<&str, SimNanos>,
    kind: &str,
    at: SimNanos,
    svg: &mut String,
    band: &mut dyn FnMut(&mut String, SimNanos, SimNanos, &str),
) {
    if let Some(from) = open.remove(kind) {
        band(svg, from, at, kind);
    }
}

fn op_bar(
    svg: &mut String,
    op: &Op,
    row: f64,
    named: bool,
    end: SimNanos,
    x: &dyn Fn(SimNanos) -> f64,
) {
    let (to, color, answer) = match &op.outcome {
        Outcome::Ok {
            response,
            returned_at,
        } => (
            *returned_at,
            "#4a4",
            format!("ok, revision {}", response.revision().unwrap_or(0)),
        ),
        Outcome::Err { error, returned_at } => (*returned_at, "#f93", format!("error: {error}")),
        Outcome::Unknown => (end, "#bbb", "no answer".to_string()),
    };
    let (x1, x2) = (x(op.invoked_at), x(to).max(x(op.invoked_at) + 2.0));
    let y = row * ROW + 2.0;
    let (fill, stroke) = if named {
        ("red", r#" stroke="black" stroke-width="2""#)
    } else {
        (color, "")
    };
    let _ = write!(
        svg,
        r#"<rect x="{x1}" y="{y}" width="{}" height="{BAR}" fill="{fill}"{stroke}><title>op {} at member {}: {} -> {}</title></rect>"#,
        x2 - x1,
        op.id,
        op.member,
        escape(&RequestSummary(&op.request).to_string()),
        escape(&answer)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
