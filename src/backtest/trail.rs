//! What one policy did over the history: each order's decision sequence and fate, holds per
//! week and how long they lasted, alerts per kind, and utilization at each order's decision.

use super::history::OrderIndex;
use crate::model::*;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// How an order fared under one policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// Approved at once.
    Approved,
    /// Held, then released (automatically or by a command of the history).
    Delayed,
    /// Held and never released: rejected, cancelled, or still held at the end.
    Stopped,
}

impl Fate {
    pub fn as_str(self) -> &'static str {
        match self {
            Fate::Approved => "approved",
            Fate::Delayed => "delayed",
            Fate::Stopped => "stopped",
        }
    }
}

/// One order's decisions under one policy.
#[derive(Clone, Debug, Default)]
pub struct OrderTrail {
    pub statuses: Vec<DecisionStatus>,
    /// The reasons of the first `held` decision.
    pub hold_reasons: Vec<ReasonCode>,
    pub held_at: Option<Timestamp>,
    /// When the hold ended (released, rejected or cancelled).
    pub hold_ended_at: Option<Timestamp>,
}

impl OrderTrail {
    pub fn fate(&self) -> Option<Fate> {
        let first = *self.statuses.first()?;
        if first == DecisionStatus::Approved {
            return Some(Fate::Approved);
        }
        if self.statuses.contains(&DecisionStatus::Released) {
            Some(Fate::Delayed)
        } else {
            Some(Fate::Stopped)
        }
    }

    /// Days on hold (to `end` for a hold still open), two places.
    pub fn hold_days(&self, end: Timestamp) -> Option<Decimal> {
        let from = self.held_at?;
        Some(self.hold_ended_at.unwrap_or(end).days_since(from))
    }
}

/// Upper bounds of the utilization buckets (exposure / effective limit after an order's first
/// decision), and their labels; one more bucket above the last and one for "no limit".
const UTILIZATION_BOUNDS: [(i64, &str); 6] = [
    (50, "below 50%"),
    (70, "50-70%"),
    (85, "70-85%"),
    (100, "85-100%"),
    (110, "100-110%"),
    (i64::MAX, "110% and above"),
];

/// Everything one policy did.
pub struct Trail {
    pub label: String,
    /// Orders numbered as `History` numbers them (built from the same events).
    index: OrderIndex,
    pub orders: Vec<OrderTrail>,
    pub decisions: BTreeMap<&'static str, u64>,
    pub delivery_decisions: BTreeMap<&'static str, u64>,
    pub alerts: BTreeMap<&'static str, u64>,
    pub dead_letters: u64,
    /// New holds by the Monday of their week (days since the epoch).
    pub holds_per_week: BTreeMap<i64, u64>,
    pub utilization: [u64; UTILIZATION_BOUNDS.len()],
    pub utilization_no_limit: u64,
}

/// The Monday (days since 1970-01-01, a Thursday) of the week of `at`.
pub fn week_of(at: Timestamp) -> i64 {
    let day = at.0.div_euclid(DAY_US);
    day - (day + 3).rem_euclid(7)
}

impl Trail {
    pub fn new(label: &str) -> Trail {
        Trail {
            label: label.to_string(),
            index: OrderIndex::default(),
            orders: Vec::new(),
            decisions: BTreeMap::new(),
            delivery_decisions: BTreeMap::new(),
            alerts: BTreeMap::new(),
            dead_letters: 0,
            holds_per_week: BTreeMap::new(),
            utilization: [0; UTILIZATION_BOUNDS.len()],
            utilization_no_limit: 0,
        }
    }

    /// Counts what this policy's engine produced for `event`.
    pub fn observe(&mut self, event: &Event, outputs: &[Output]) {
        self.index.note(event);
        for o in outputs {
            match o {
                Output::Decision(d) => self.decision(d),
                Output::DeliveryDecision(d) => {
                    *self
                        .delivery_decisions
                        .entry(d.status.as_str())
                        .or_default() += 1
                }
                Output::Alert(a) => *self.alerts.entry(a.kind.as_str()).or_default() += 1,
                Output::DeadLetter(_) => self.dead_letters += 1,
            }
        }
    }

    fn decision(&mut self, d: &Decision) {
        *self.decisions.entry(d.status.as_str()).or_default() += 1;
        let Some(idx) = self.index.get(&d.customer_id, &d.order_id) else {
            return;
        };
        let idx = idx as usize;
        if self.orders.len() <= idx {
            self.orders.resize_with(idx + 1, OrderTrail::default);
        }
        if self.orders[idx].statuses.is_empty() {
            self.count_utilization(d);
        }
        let t = &mut self.orders[idx];
        t.statuses.push(d.status);
        match d.status {
            DecisionStatus::Held if t.held_at.is_none() => {
                t.held_at = Some(d.decided_at);
                t.hold_reasons = d.reasons.iter().map(|r| r.code).collect();
                *self
                    .holds_per_week
                    .entry(week_of(d.decided_at))
                    .or_default() += 1;
            }
            DecisionStatus::Released | DecisionStatus::Rejected | DecisionStatus::Cancelled
                if t.held_at.is_some() && t.hold_ended_at.is_none() =>
            {
                t.hold_ended_at = Some(d.decided_at);
            }
            _ => {}
        }
    }

    fn count_utilization(&mut self, d: &Decision) {
        let Some(u) = d
            .utilization
            .as_deref()
            .and_then(|u| u.parse::<Decimal>().ok())
        else {
            self.utilization_no_limit += 1;
            return;
        };
        let pct = u * Decimal::ONE_HUNDRED;
        let bucket = UTILIZATION_BOUNDS
            .iter()
            .position(|(bound, _)| *bound == i64::MAX || pct < Decimal::from(*bound))
            .unwrap_or(UTILIZATION_BOUNDS.len() - 1);
        self.utilization[bucket] += 1;
    }

    /// The utilization buckets with their labels, then "no limit".
    pub fn utilization_buckets(&self) -> Vec<(&'static str, u64)> {
        UTILIZATION_BOUNDS
            .iter()
            .zip(self.utilization)
            .map(|((_, label), n)| (*label, n))
            .chain([("no limit", self.utilization_no_limit)])
            .collect()
    }

    pub fn order(&self, idx: usize) -> Option<&OrderTrail> {
        self.orders.get(idx).filter(|t| !t.statuses.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_start_on_monday() {
        for (day, monday) in [
            ("2026-03-02T00:00:00Z", "2026-03-02"),
            ("2026-03-08T23:59:59Z", "2026-03-02"),
            ("2026-03-09T00:00:00Z", "2026-03-09"),
            ("1969-12-31T12:00:00Z", "1969-12-29"),
        ] {
            let w = week_of(Timestamp::parse_rfc3339(day).unwrap());
            assert_eq!(Timestamp(w * DAY_US).to_date(), monday, "{day}");
        }
    }
}
