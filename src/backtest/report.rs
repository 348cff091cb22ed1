//! The backtest report: the figures a script reads (`--json`), and the summary a person reads in
//! ten seconds on the terminal.

use super::compare::{Comparison, Effect, Tally, TradeOff};
use super::history::{History, Outcome};
use super::trail::{Fate, Trail};
use crate::model::*;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// What the figures rest on, written into every report.
pub const COUNTERFACTUAL: [&str; 5] = [
    "Every policy is replayed over the same events. The history's shipments, payments and commands stay in the file whatever a policy decided: a shipment against an order the candidate held still books a receivable (and raises SHIPPED_WITHOUT_RELEASE under that policy), and a release command of the history applies only where that policy holds the order.",
    "An order's outcome is what happened to it in the history, as the baseline policy booked it (due dates from its terms, payments applied oldest due first or as named): paid on time, paid late, still open and overdue at the end of the file, or a write-off candidate (open at least aging.write_off_days past due). It is not re-simulated: a customer the candidate would have stopped is assumed to have paid (or not) as it did.",
    "Bad orders: paid late_days or more late, still overdue, or write-off candidates. Good: paid, on time or less late. Neither: not shipped, settled by credit notes, or not yet due.",
    "Stricter means the candidate approved later (held, then released: delayed) or never (held and not released by the end: stopped) than the baseline; looser the reverse. Losses avoided and business delayed or lost are stricter orders; losses added and business gained looser ones.",
    "Amounts are the orders' amounts in the account's currency (foreign orders at the rate of their decision), summed per currency; an order counts once per effect and once under each reason it was held for.",
];

/// Input figures.
#[derive(Clone, Debug, Serialize)]
pub struct InputSummary {
    pub file: String,
    pub lines: u64,
    pub events: u64,
    /// Lines that are not a valid event (every policy dead-letters them alike).
    pub undecodable: u64,
    pub orders: u64,
    pub first_event: Option<Timestamp>,
    pub last_event: Option<Timestamp>,
}

/// Hold durations under one policy, in days.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HoldStats {
    pub holds: u64,
    pub still_held_at_end: u64,
    pub mean_days: Option<String>,
    pub median_days: Option<String>,
    pub p90_days: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeekCount {
    /// The Monday of the week.
    pub week: String,
    pub holds: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct BucketCount {
    pub bucket: &'static str,
    pub orders: u64,
}

/// What one policy did.
#[derive(Clone, Debug, Serialize)]
pub struct PolicySummary {
    pub label: String,
    pub source: String,
    pub orders_decided: u64,
    pub fates: BTreeMap<&'static str, u64>,
    pub decisions: BTreeMap<&'static str, u64>,
    pub delivery_decisions: BTreeMap<&'static str, u64>,
    pub alerts: BTreeMap<&'static str, u64>,
    pub dead_letters: u64,
    pub holds_per_week: Vec<WeekCount>,
    pub hold_days: HoldStats,
    /// Exposure / effective limit after each order's first decision.
    pub utilization: Vec<BucketCount>,
}

/// One value of a swept setting.
#[derive(Clone, Debug, Serialize)]
pub struct SweepRow {
    pub value: String,
    pub changed: u64,
    pub holds: u64,
    pub alerts: u64,
    pub totals: TradeOff,
}

#[derive(Clone, Debug, Serialize)]
pub struct Sweep {
    pub key: String,
    pub rows: Vec<SweepRow>,
}

/// Assumptions behind the figures.
#[derive(Clone, Debug, Serialize)]
pub struct Assumptions {
    pub late_days: u32,
    pub write_off_days: u32,
    pub counterfactual: Vec<&'static str>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub input: InputSummary,
    /// The account currency with the most orders: the one the charts and summary show.
    pub currency: Option<Currency>,
    pub assumptions: Assumptions,
    /// The history's orders by outcome.
    pub outcomes: BTreeMap<&'static str, Tally>,
    /// The baseline first, then each candidate.
    pub policies: Vec<PolicySummary>,
    /// Each candidate against the baseline.
    pub comparisons: Vec<Comparison>,
    pub sweep: Option<Sweep>,
}

/// The outcome tally of the history's orders.
pub fn outcomes(history: &History, write_off_days: u32) -> BTreeMap<&'static str, Tally> {
    let mut m: BTreeMap<&'static str, Tally> = BTreeMap::new();
    for k in Outcome::KINDS {
        m.insert(k, Tally::default());
    }
    for o in &history.orders {
        m.entry(history.outcome(o, write_off_days).kind())
            .or_default()
            .add(o.account_currency, o.amount_account);
    }
    m
}

/// The account currency with the most orders.
pub fn main_currency(history: &History) -> Option<Currency> {
    let mut n: BTreeMap<Currency, u64> = BTreeMap::new();
    for o in &history.orders {
        *n.entry(o.account_currency).or_default() += 1;
    }
    n.into_iter()
        .max_by_key(|(c, n)| (*n, std::cmp::Reverse(*c)))
        .map(|(c, _)| c)
}

/// What one policy did, summarised.
pub fn summarise(trail: &Trail, source: &str, end: Timestamp) -> PolicySummary {
    let mut fates: BTreeMap<&'static str, u64> = [Fate::Approved, Fate::Delayed, Fate::Stopped]
        .into_iter()
        .map(|f| (f.as_str(), 0))
        .collect();
    let mut days = Vec::new();
    let mut still = 0;
    let mut decided = 0;
    for t in trail.orders.iter().filter(|t| !t.statuses.is_empty()) {
        decided += 1;
        if let Some(f) = t.fate() {
            *fates.entry(f.as_str()).or_default() += 1;
        }
        if let Some(d) = t.hold_days(end) {
            days.push(d);
            still += u64::from(t.hold_ended_at.is_none());
        }
    }
    days.sort();
    let at = |q: usize| days.get((days.len() - 1) * q / 100).map(|d| two_places(*d));
    let hold_days = if days.is_empty() {
        HoldStats::default()
    } else {
        let sum: Decimal = days.iter().sum();
        HoldStats {
            holds: days.len() as u64,
            still_held_at_end: still,
            mean_days: Some(two_places(sum / Decimal::from(days.len()))),
            median_days: at(50),
            p90_days: at(90),
        }
    };
    PolicySummary {
        label: trail.label.clone(),
        source: source.to_string(),
        orders_decided: decided,
        fates,
        decisions: trail.decisions.clone(),
        delivery_decisions: trail.delivery_decisions.clone(),
        alerts: trail.alerts.clone(),
        dead_letters: trail.dead_letters,
        holds_per_week: weeks(trail),
        hold_days,
        utilization: trail
            .utilization_buckets()
            .into_iter()
            .map(|(bucket, orders)| BucketCount { bucket, orders })
            .collect(),
    }
}

/// Holds per week, every week from the first to the last with a hold (zeros included).
fn weeks(trail: &Trail) -> Vec<WeekCount> {
    let (Some(first), Some(last)) = (
        trail.holds_per_week.keys().next(),
        trail.holds_per_week.keys().next_back(),
    ) else {
        return Vec::new();
    };
    (*first..=*last)
        .step_by(7)
        .map(|w| WeekCount {
            week: Timestamp(w * DAY_US).to_date(),
            holds: trail.holds_per_week.get(&w).copied().unwrap_or(0),
        })
        .collect()
}

/// Days (or any figure) rounded half away from zero to exactly two places: `30.00`.
fn two_places(value: Decimal) -> String {
    format!(
        "{:.2}",
        value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
    )
}

/// Money with thousands separators, rounded half away from zero to cents for display
/// (amounts converted from another currency carry more places; the JSON keeps them exact):
/// `1,234,567.89`.
pub fn grouped(value: Decimal) -> String {
    let text =
        format_money(value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero));
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.as_str()),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let mut out = String::new();
    for (i, ch) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if frac.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{frac}")
    }
}

/// A count with thousands separators.
pub fn count(n: u64) -> String {
    grouped(Decimal::from(n))
        .trim_end_matches(".00")
        .to_string()
}

/// A tally as "N orders, EUR x" in the main currency (other currencies named after it).
pub fn tally_text(t: &Tally, main: Option<Currency>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = main {
        parts.push(format!("{c} {}", grouped(t.in_currency(c))));
    }
    for (c, a) in &t.amount {
        if Some(*c) != main {
            parts.push(format!("{c} {}", grouped(*a)));
        }
    }
    format!("{:>7} orders  {}", count(t.orders), parts.join(" + "))
}

/// The per-policy rows and each comparison's trade-off (a sweep shows its table instead).
fn policies_and_comparisons(s: &mut String, report: &Report) {
    let width = report
        .policies
        .iter()
        .map(|p| p.label.len())
        .max()
        .unwrap_or(8)
        .max(10);
    let _ = write!(s, "\n{:<34}", "");
    for p in &report.policies {
        let _ = write!(s, "{:>w$}", p.label, w = width + 2);
    }
    s.push('\n');
    let row = |s: &mut String, title: &str, f: &dyn Fn(&PolicySummary) -> String| {
        let _ = write!(s, "{title:<34}");
        for p in &report.policies {
            let _ = write!(s, "{:>w$}", f(p), w = width + 2);
        }
        s.push('\n');
    };
    let fate =
        |k: &'static str| move |p: &PolicySummary| count(p.fates.get(k).copied().unwrap_or(0));
    row(s, "orders approved at once", &fate("approved"));
    row(s, "held, then released", &fate("delayed"));
    row(s, "held, never released", &fate("stopped"));
    row(s, "median days on hold", &|p| {
        p.hold_days
            .median_days
            .clone()
            .unwrap_or_else(|| "-".into())
    });
    row(s, "alerts", &|p| count(p.alerts.values().sum()));
    for c in &report.comparisons {
        let _ = writeln!(
            s,
            "\n{} against baseline: {} orders decided differently (amounts in the account's currency)",
            c.label,
            count(c.changed)
        );
        for e in Effect::ALL {
            let t = c.totals.get(e);
            if t.orders > 0
                || matches!(
                    e,
                    Effect::LossAvoided | Effect::BusinessDelayed | Effect::BusinessLost
                )
            {
                let _ = writeln!(s, "  {:<28}{}", e.label(), tally_text(&t, report.currency));
            }
        }
    }
}

/// The summary a person reads in ten seconds.
pub fn terminal(report: &Report) -> String {
    let mut s = String::new();
    let i = &report.input;
    let span = match (i.first_event, i.last_event) {
        (Some(a), Some(b)) => format!("{} to {}", a.to_date(), b.to_date()),
        _ => "no events".into(),
    };
    let _ = writeln!(
        s,
        "backtest of {}: {} events ({span}), {} orders",
        i.file,
        count(i.events),
        count(i.orders)
    );
    if report.sweep.is_none() {
        policies_and_comparisons(&mut s, report);
    }
    if let Some(sw) = &report.sweep {
        let cur = report.currency.map(|c| c.to_string()).unwrap_or_default();
        let _ = writeln!(
            s,
            "\nsweep of {} against the baseline ({}):",
            sw.key,
            report.policies.first().map_or("", |p| p.source.as_str())
        );
        let _ = writeln!(
            s,
            "  {:<12} {:>9} {:>9} {:>16} {:>16} {:>16} {:>16} {:>16}",
            "value",
            "changed",
            "holds",
            format!("avoided {cur}"),
            format!("delayed {cur}"),
            format!("lost {cur}"),
            format!("added {cur}"),
            format!("gained {cur}")
        );
        for r in &sw.rows {
            let amt = |e| {
                report
                    .currency
                    .map(|c| grouped(r.totals.get(e).in_currency(c)))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                s,
                "  {:<12} {:>9} {:>9} {:>16} {:>16} {:>16} {:>16} {:>16}",
                r.value,
                count(r.changed),
                count(r.holds),
                amt(Effect::LossAvoided),
                amt(Effect::BusinessDelayed),
                amt(Effect::BusinessLost),
                amt(Effect::LossAdded),
                amt(Effect::BusinessGained),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nbad = paid {}+ days late, still overdue or write-off candidate; outcomes as the baseline booked the history (see the report's notes)",
        report.assumptions.late_days
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(grouped(Decimal::new(123456789, 2)), "1,234,567.89");
        assert_eq!(grouped(Decimal::new(-100000, 0)), "-100,000.00");
        assert_eq!(grouped(Decimal::new(999, 0)), "999.00");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(0), "0");
        assert_eq!(grouped(Decimal::new(128_132_386_572, 4)), "12,813,238.66");
        assert_eq!(grouped(Decimal::new(-5, 3)), "-0.01");
        assert_eq!(two_places(Decimal::new(30, 0)), "30.00");
        assert_eq!(two_places(Decimal::new(2125, 3)), "2.13");
    }
}
