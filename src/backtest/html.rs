//! The backtest report as one self-contained HTML file: tables, charts drawn as inline SVG
//! (the trade-off, holds over time, the utilization distribution, a sweep's losses avoided
//! against business delayed), and a sortable table of changed orders, each linked to its
//! events. No script or style is fetched from anywhere.
//!
//! Chart geometry is computed in `f64` (pixels only); every figure printed comes from the
//! report's exact decimals.

use super::compare::{Comparison, Effect, TradeOff};
use super::report::{count, grouped, PolicySummary, Report};
use crate::model::*;
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::Decimal;
use std::fmt::Write as _;

/// Rows of the changed-orders table per candidate (the JSON report has them all).
pub const MAX_TABLE_ROWS: usize = 5_000;

const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

fn esc(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

fn f(d: Decimal) -> f64 {
    d.to_f64().unwrap_or(0.0)
}

/// A horizontal bar chart: one bar per (label, value, colour).
fn bars(title: &str, items: &[(String, Decimal, &str)], unit: &str) -> String {
    let max = items
        .iter()
        .map(|(_, v, _)| f(*v))
        .fold(0.0, f64::max)
        .max(1.0);
    let (left, width, row) = (220.0, 420.0, 26.0);
    let height = row * items.len() as f64 + 40.0;
    let mut s = format!(
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {height}" width="{w}" height="{height}"><title>{t}</title>"#,
        t = esc(title),
        w = left + width + 160.0
    );
    for (i, (label, value, colour)) in items.iter().enumerate() {
        let y = 20.0 + i as f64 * row;
        let len = f(*value) / max * width;
        let _ = write!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{label}</text><rect class="bar" x="{left}" y="{y}" width="{len:.1}" height="18" fill="{colour}"><title>{label}: {v} {unit}</title></rect><text x="{vx:.1}" y="{ty}">{v} {unit}</text>"#,
            lx = left - 8.0,
            ty = y + 14.0,
            label = esc(label),
            v = grouped(*value),
            vx = left + len + 6.0,
            unit = esc(unit),
        );
    }
    s.push_str("</svg>");
    s
}

/// The largest value of any series (at least 1, the scale's top).
fn series_max(series: &[(String, Vec<u64>)]) -> f64 {
    series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64
}

/// A colour key, one entry per series, in a row from (`left`, `y`).
fn legend(series: &[(String, Vec<u64>)], left: f64, y: f64) -> String {
    let mut s = String::new();
    for (k, (name, _)) in series.iter().enumerate() {
        let x = left + k as f64 * 160.0;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{y}" width="12" height="12" fill="{c}"/><text x="{tx}" y="{ty}">{n}</text>"#,
            tx = x + 16.0,
            ty = y + 10.0,
            c = COLOURS[k % COLOURS.len()],
            n = esc(name)
        );
    }
    s
}

/// An SVG chart's opening tag and title.
fn svg_open(title: &str, w: f64, h: f64) -> String {
    format!(
        r#"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{t}</title>"#,
        t = esc(title)
    )
}

/// A line chart of one series per policy over the same x labels.
fn lines(title: &str, x: &[String], series: &[(String, Vec<u64>)]) -> String {
    let (left, top, width, height) = (50.0, 20.0, 640.0, 220.0);
    let max = series_max(series);
    let step = if x.len() > 1 {
        width / (x.len() - 1) as f64
    } else {
        0.0
    };
    let mut s = svg_open(title, left + width + 20.0, top + height + 60.0);
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#888"/><text x="{lx}" y="{ty}" text-anchor="end">{max}</text><text x="{lx}" y="{b}" text-anchor="end">0</text>"##,
        b = top + height,
        r = left + width,
        lx = left - 4.0,
        ty = top + 4.0,
    );
    let every = (x.len() / 8).max(1);
    for (i, label) in x.iter().enumerate().step_by(every) {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{}</text>"#,
            left + i as f64 * step,
            top + height + 16.0,
            esc(label)
        );
    }
    for (k, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    left + i as f64 * step,
                    top + height - *v as f64 / max * height
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" fill="none" stroke="{colour}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            esc(name),
        );
        // A mark per point, so that a single week (no line to draw) still shows, and each
        // point names its week and value on hover.
        for ((point, value), label) in points.iter().zip(values).zip(x) {
            let (cx, cy) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(
                s,
                r#"<circle class="mark" cx="{cx}" cy="{cy}" r="3" fill="{colour}"><title>{}, {}: {value}</title></circle>"#,
                esc(name),
                esc(label),
            );
        }
    }
    s.push_str(&legend(series, left, top + height + 30.0));
    s.push_str("</svg>");
    s
}

/// Grouped vertical bars: one group per bucket, one bar per policy.
fn grouped_bars(title: &str, buckets: &[&str], series: &[(String, Vec<u64>)]) -> String {
    let (left, top, width, height) = (50.0, 20.0, 640.0, 200.0);
    let max = series_max(series);
    let group = width / buckets.len().max(1) as f64;
    let bar = (group - 10.0) / series.len().max(1) as f64;
    let mut s = svg_open(title, left + width + 20.0, top + height + 60.0);
    for (b, label) in buckets.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{}</text>"#,
            left + b as f64 * group + group / 2.0,
            top + height + 16.0,
            esc(label)
        );
        for (k, (name, values)) in series.iter().enumerate() {
            let v = values.get(b).copied().unwrap_or(0);
            let h = v as f64 / max * height;
            let _ = write!(
                s,
                r#"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {} orders ({})</title></rect>"#,
                left + b as f64 * group + 5.0 + k as f64 * bar,
                top + height - h,
                bar,
                COLOURS[k % COLOURS.len()],
                esc(name),
                count(v),
                esc(label)
            );
        }
    }
    s.push_str(&legend(series, left, top + height + 30.0));
    s.push_str("</svg>");
    s
}

/// A sweep's points: business delayed or lost (x) against losses avoided (y), one per value.
fn scatter(title: &str, points: &[(String, Decimal, Decimal)], currency: &str) -> String {
    let (left, top, width, height) = (80.0, 20.0, 560.0, 260.0);
    let max_x = points.iter().map(|p| f(p.1)).fold(0.0, f64::max).max(1.0);
    let max_y = points.iter().map(|p| f(p.2)).fold(0.0, f64::max).max(1.0);
    let mut s = format!(
        r##"<svg class="chart" role="img" aria-label="{t}" viewBox="0 0 {w} {h}" width="{w}" height="{h}"><title>{t}</title><line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#888"/><line x1="{left}" y1="{top}" x2="{left}" y2="{b}" stroke="#888"/><text x="{mx}" y="{xl}" text-anchor="middle">good business delayed or lost ({c})</text><text x="14" y="{my}" transform="rotate(-90 14 {my})" text-anchor="middle">losses avoided ({c})</text>"##,
        t = esc(title),
        w = left + width + 40.0,
        h = top + height + 50.0,
        b = top + height,
        r = left + width,
        mx = left + width / 2.0,
        xl = top + height + 36.0,
        my = top + height / 2.0,
        c = esc(currency),
    );
    let mut path = Vec::new();
    for (label, x, y) in points {
        let px = left + f(*x) / max_x * width;
        let py = top + height - f(*y) / max_y * height;
        path.push(format!("{px:.1},{py:.1}"));
        let _ = write!(
            s,
            r##"<circle class="point" cx="{px:.1}" cy="{py:.1}" r="5" fill="#e15759"><title>{l}: avoided {y}, delayed or lost {x}</title></circle><text x="{tx:.1}" y="{ty:.1}">{l}</text>"##,
            l = esc(label),
            x = grouped(*x),
            y = grouped(*y),
            tx = px + 8.0,
            ty = py - 6.0,
        );
    }
    let _ = write!(
        s,
        r##"<polyline fill="none" stroke="#e15759" stroke-dasharray="4 3" points="{}"/></svg>"##,
        path.join(" ")
    );
    s
}

fn effect_colour(e: Effect) -> &'static str {
    match e {
        Effect::LossAvoided | Effect::BusinessGained => "#59a14f",
        Effect::BusinessDelayed => "#f28e2b",
        Effect::BusinessLost | Effect::LossAdded => "#e15759",
        _ => "#bab0ac",
    }
}

fn tradeoff_table(title: &str, rows: &[(String, &TradeOff)], cur: Option<Currency>) -> String {
    let mut s = format!(
        "<h4>{}</h4><p class=\"note\">Orders · amount.</p><table class=\"sortable\"><thead><tr><th>{}</th>",
        esc(title),
        esc(title.split(' ').next_back().unwrap_or(""))
    );
    let shown = [
        Effect::LossAvoided,
        Effect::BusinessDelayed,
        Effect::BusinessLost,
        Effect::LossAdded,
        Effect::BusinessGained,
    ];
    for e in shown {
        let _ = write!(s, "<th data-num>{}</th>", e.label());
    }
    s.push_str("</tr></thead><tbody>");
    for (key, t) in rows {
        let _ = write!(s, "<tr><td>{}</td>", esc(key));
        for e in shown {
            let tally = t.get(e);
            let amount = cur.map(|c| tally.in_currency(c)).unwrap_or_default();
            let _ = write!(
                s,
                r#"<td class="num" data-sort="{amount}">{} · {}</td>"#,
                count(tally.orders),
                grouped(amount)
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn comparison_section(report: &Report, c: &Comparison, index: usize) -> String {
    let cur = report.currency;
    let cur_text = cur.map(|c| c.to_string()).unwrap_or_default();
    let mut s = format!(
        r#"<section class="candidate" id="candidate-{index}" data-label="{}"{}><h2>{} against the baseline</h2><p>Policy: <code>{}</code>. {} orders decided differently.</p>"#,
        esc(&c.label),
        if index == 0 { "" } else { " hidden" },
        esc(&c.label),
        esc(&c.source),
        count(c.changed)
    );
    let items: Vec<(String, Decimal, &str)> = Effect::ALL
        .iter()
        .map(|e| {
            let t = c.totals.get(*e);
            (
                format!("{} ({})", e.label(), count(t.orders)),
                cur.map(|k| t.in_currency(k)).unwrap_or_default(),
                effect_colour(*e),
            )
        })
        .collect();
    s.push_str("<h3>The trade-off</h3>");
    s.push_str(&bars("The trade-off: amounts by effect", &items, &cur_text));
    let other: Vec<String> = c
        .totals
        .0
        .values()
        .flat_map(|t| t.amount.keys())
        .filter(|k| Some(**k) != cur)
        .map(|k| k.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !other.is_empty() {
        let _ = write!(
            s,
            "<p class=\"note\">Accounts in {} are in the JSON report; the chart shows {cur_text}.</p>",
            esc(&other.join(", "))
        );
    }
    let rows = |m: &std::collections::BTreeMap<String, TradeOff>| -> Vec<(String, TradeOff)> {
        m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    for (title, m) in [
        ("By grade", &c.by_grade),
        ("By reason", &c.by_reason),
        ("By month", &c.by_month),
    ] {
        let r = rows(m);
        let refs: Vec<(String, &TradeOff)> = r.iter().map(|(k, v)| (k.clone(), v)).collect();
        s.push_str(&tradeoff_table(title, &refs, cur));
    }
    s.push_str(&changed_table(c, index));
    s.push_str("</section>");
    s
}

fn changed_table(c: &Comparison, index: usize) -> String {
    let mut rows: Vec<&super::compare::ChangedOrder> = c.changed_orders.iter().collect();
    rows.sort_by(|a, b| {
        b.amount_account
            .cmp(&a.amount_account)
            .then(a.order_id.cmp(&b.order_id))
    });
    let shown = rows.len().min(MAX_TABLE_ROWS);
    let mut s = format!(
        "<h3>Changed orders</h3><p>{} of {} (largest first; click a heading to sort, an order to see its events).</p>",
        count(shown as u64),
        count(rows.len() as u64)
    );
    s.push_str(r#"<table class="sortable changed"><thead><tr><th>order</th><th>customer</th><th>grade</th><th>placed</th><th data-num>amount</th><th>effect</th><th>outcome</th><th>baseline</th><th>candidate</th><th>reasons</th><th data-num>days on hold</th></tr></thead><tbody>"#);
    let mut details = String::new();
    for (n, o) in rows.iter().take(shown).enumerate() {
        let anchor = format!("c{index}-o{n}");
        let days = o
            .candidate_hold_days
            .or(o.baseline_hold_days)
            .unwrap_or_default();
        let outcome = match o.outcome_days {
            Some(d) => format!("{} ({d} d)", o.outcome.replace('_', " ")),
            None => o.outcome.replace('_', " "),
        };
        let _ = write!(
            s,
            r##"<tr><td><a href="#{anchor}">{}</a></td><td>{}</td><td>{}</td><td data-sort="{}">{}</td><td class="num" data-sort="{}">{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="num" data-sort="{days}">{days}</td></tr>"##,
            esc(&o.order_id),
            esc(&o.customer_id),
            o.grade.unwrap_or("-"),
            o.placed_at,
            o.placed_at.to_date(),
            o.amount_account,
            grouped(o.amount_account),
            o.account_currency,
            o.effect.replace('_', " "),
            esc(&outcome),
            o.baseline.join(" → "),
            o.candidate.join(" → "),
            o.reasons.join(", "),
        );
        let _ = write!(
            details,
            r#"<details id="{anchor}"><summary>{} of {}: {}</summary><ol>"#,
            esc(&o.order_id),
            esc(&o.customer_id),
            o.effect.replace('_', " ")
        );
        for e in &o.events {
            let _ = write!(
                details,
                "<li>line {}: <code>{}</code> {} at {}</li>",
                e.line,
                e.kind,
                esc(&e.event_id),
                e.at
            );
        }
        details.push_str("</ol></details>");
    }
    s.push_str("</tbody></table><h3>Events of the changed orders</h3>");
    s.push_str(&details);
    s
}

fn policy_table(policies: &[PolicySummary]) -> String {
    let mut s = String::from("<table><thead><tr><th></th>");
    for p in policies {
        let _ = write!(s, "<th>{}</th>", esc(&p.label));
    }
    s.push_str("</tr></thead><tbody>");
    type Cell = fn(&PolicySummary) -> String;
    let rows: [(&str, Cell); 9] = [
        ("policy", |p| format!("<code>{}</code>", esc(&p.source))),
        ("orders decided", |p| count(p.orders_decided)),
        ("approved at once", |p| {
            count(p.fates.get("approved").copied().unwrap_or(0))
        }),
        ("held, then released", |p| {
            count(p.fates.get("delayed").copied().unwrap_or(0))
        }),
        ("held, never released", |p| {
            count(p.fates.get("stopped").copied().unwrap_or(0))
        }),
        ("median days on hold", |p| {
            p.hold_days.median_days.clone().unwrap_or("-".into())
        }),
        ("90th percentile days on hold", |p| {
            p.hold_days.p90_days.clone().unwrap_or("-".into())
        }),
        ("still held at the end", |p| {
            count(p.hold_days.still_held_at_end)
        }),
        ("delivery decisions held", |p| {
            count(p.delivery_decisions.get("held").copied().unwrap_or(0))
        }),
    ];
    for (title, cell) in rows {
        let _ = write!(s, "<tr><th>{title}</th>");
        for p in policies {
            let _ = write!(s, "<td class=\"num\">{}</td>", cell(p));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn alerts_table(policies: &[PolicySummary]) -> String {
    let kinds: std::collections::BTreeSet<&str> = policies
        .iter()
        .flat_map(|p| p.alerts.keys().copied())
        .collect();
    let mut s = String::from("<table class=\"sortable\"><thead><tr><th>alert kind</th>");
    for p in policies {
        let _ = write!(s, "<th data-num>{}</th>", esc(&p.label));
    }
    s.push_str("</tr></thead><tbody>");
    for k in kinds {
        let _ = write!(s, "<tr><td>{k}</td>");
        for p in policies {
            let n = p.alerts.get(k).copied().unwrap_or(0);
            let _ = write!(s, "<td class=\"num\" data-sort=\"{n}\">{}</td>", count(n));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

fn sweep_section(report: &Report) -> String {
    let Some(sw) = &report.sweep else {
        return String::new();
    };
    let cur = report.currency;
    let cur_text = cur.map(|c| c.to_string()).unwrap_or_default();
    let amount = |t: &TradeOff, e: Effect| cur.map(|c| t.get(e).in_currency(c)).unwrap_or_default();
    let mut s = format!(
        "<section id=\"sweep\"><h2>Sweep of <code>{}</code></h2><table class=\"sortable\"><thead><tr><th>value</th><th data-num>changed</th><th data-num>holds</th><th data-num>alerts</th><th data-num>losses avoided</th><th data-num>business delayed</th><th data-num>business lost</th><th data-num>losses added</th><th data-num>business gained</th></tr></thead><tbody>",
        esc(&sw.key)
    );
    let mut points = Vec::new();
    for r in &sw.rows {
        let _ = write!(s, "<tr><td>{}</td>", esc(&r.value));
        for n in [r.changed, r.holds, r.alerts] {
            let _ = write!(s, "<td class=\"num\" data-sort=\"{n}\">{}</td>", count(n));
        }
        for e in [
            Effect::LossAvoided,
            Effect::BusinessDelayed,
            Effect::BusinessLost,
            Effect::LossAdded,
            Effect::BusinessGained,
        ] {
            let a = amount(&r.totals, e);
            let _ = write!(s, "<td class=\"num\" data-sort=\"{a}\">{}</td>", grouped(a));
        }
        s.push_str("</tr>");
        points.push((
            r.value.clone(),
            amount(&r.totals, Effect::BusinessDelayed) + amount(&r.totals, Effect::BusinessLost),
            amount(&r.totals, Effect::LossAvoided),
        ));
    }
    s.push_str("</tbody></table>");
    s.push_str(&scatter(
        "Losses avoided against good business delayed or lost, per value",
        &points,
        &cur_text,
    ));
    s.push_str("</section>");
    s
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}table{border-collapse:collapse;margin:8px 0 16px}th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}th{background:#f4f4f4}table.sortable th{cursor:pointer}th[aria-sort=ascending]::after{content:' ▲'}th[aria-sort=descending]::after{content:' ▼'}svg.chart{display:block;margin:8px 0 16px;font-size:12px}.note{color:#555}code{background:#f4f4f4;padding:0 3px}details{margin:2px 0}table.changed td{white-space:nowrap}";

const SCRIPT: &str = r#"
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var numeric = th.hasAttribute('data-num');
      var dir = th.getAttribute('aria-sort') === 'ascending' ? 'descending' : 'ascending';
      table.querySelectorAll('thead th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', dir);
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (r) {
        var c = r.cells[col];
        var v = c.getAttribute('data-sort');
        if (v === null) v = c.textContent;
        return numeric ? parseFloat(v) || 0 : v;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        var c = x < y ? -1 : x > y ? 1 : 0;
        return dir === 'ascending' ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
var pick = document.getElementById('candidate-pick');
if (pick) pick.addEventListener('change', function () {
  document.querySelectorAll('section.candidate').forEach(function (s) {
    s.hidden = s.id !== 'candidate-' + pick.value;
  });
});
document.querySelectorAll('table.changed a').forEach(function (a) {
  a.addEventListener('click', function () {
    var d = document.getElementById(a.getAttribute('href').slice(1));
    if (d) d.open = true;
  });
});
"#;

/// The report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut s = String::from("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>credit-sentinel backtest</title>");
    let _ = write!(s, "<style>{STYLE}</style></head><body>");
    let i = &report.input;
    let span = match (i.first_event, i.last_event) {
        (Some(a), Some(b)) => format!("{} to {}", a.to_date(), b.to_date()),
        _ => "no events".into(),
    };
    let _ = write!(
        s,
        "<h1>Backtest of <code>{}</code></h1><p>{} events ({span}), {} orders, {} lines that were not valid events.</p>",
        esc(&i.file),
        count(i.events),
        count(i.orders),
        count(i.undecodable)
    );
    s.push_str("<h2>Policies</h2>");
    s.push_str(&policy_table(&report.policies));
    let _ = write!(s, "<h2>How to read the figures</h2><ul class=\"note\">");
    for note in &report.assumptions.counterfactual {
        let _ = write!(s, "<li>{}</li>", esc(note));
    }
    let _ = write!(
        s,
        "<li>Here late_days = {} and aging.write_off_days = {}.</li></ul>",
        report.assumptions.late_days, report.assumptions.write_off_days
    );
    s.push_str(&sweep_section(report));
    if report.comparisons.len() > 1 {
        s.push_str("<p><label>Candidate shown: <select id=\"candidate-pick\">");
        for (n, c) in report.comparisons.iter().enumerate() {
            let _ = write!(s, "<option value=\"{n}\">{}</option>", esc(&c.label));
        }
        s.push_str("</select></label></p>");
    }
    for (n, c) in report.comparisons.iter().enumerate() {
        s.push_str(&comparison_section(report, c, n));
    }
    s.push_str(&holds_section(report));
    s.push_str(&utilization_section(report));
    s.push_str("<h2>Alerts per kind</h2>");
    s.push_str(&alerts_table(&report.policies));
    s.push_str("<h2>The history's orders by outcome</h2><table><thead><tr><th>outcome</th><th>orders</th><th>amount</th></tr></thead><tbody>");
    for (k, t) in &report.outcomes {
        let amount = report
            .currency
            .map(|c| t.in_currency(c))
            .unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            k.replace('_', " "),
            count(t.orders),
            grouped(amount)
        );
    }
    let _ = write!(s, "</tbody></table><script>{SCRIPT}</script></body></html>");
    s
}

/// New holds per week under each policy, as lines.
fn holds_section(report: &Report) -> String {
    let mut s = String::from("<h2>Holds over time</h2>");
    let weeks: std::collections::BTreeSet<String> = report
        .policies
        .iter()
        .flat_map(|p| p.holds_per_week.iter().map(|w| w.week.clone()))
        .collect();
    let weeks: Vec<String> = weeks.into_iter().collect();
    let series: Vec<(String, Vec<u64>)> = report
        .policies
        .iter()
        .map(|p| {
            let v = weeks
                .iter()
                .map(|w| {
                    p.holds_per_week
                        .iter()
                        .find(|x| &x.week == w)
                        .map_or(0, |x| x.holds)
                })
                .collect();
            (p.label.clone(), v)
        })
        .collect();
    s.push_str(&lines("New holds per week", &weeks, &series));
    s
}

/// Orders by utilization bucket after their first decision, a bar per policy.
fn utilization_section(report: &Report) -> String {
    let mut s = String::from("<h2>Utilization at each order's first decision</h2>");
    let buckets: Vec<&str> = report
        .policies
        .first()
        .map(|p| p.utilization.iter().map(|b| b.bucket).collect())
        .unwrap_or_default();
    let series: Vec<(String, Vec<u64>)> = report
        .policies
        .iter()
        .map(|p| {
            (
                p.label.clone(),
                p.utilization.iter().map(|b| b.orders).collect(),
            )
        })
        .collect();
    s.push_str(&grouped_bars(
        "Orders by utilization after their first decision",
        &buckets,
        &series,
    ));
    s
}
