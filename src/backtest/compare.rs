//! The trade-off between two policies over one history: every order they decide differently,
//! classed by what happened to it in the history (losses avoided or added, good business
//! delayed, lost or gained), with money per account currency, by grade, reason and month.

use super::history::{EventRef, History, Risk};
use super::trail::{Fate, Trail};
use crate::model::*;
use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;

/// A count of orders and their amounts (in each account currency).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tally {
    pub orders: u64,
    pub amount: BTreeMap<Currency, Decimal>,
}

impl Tally {
    pub fn add(&mut self, currency: Currency, amount: Decimal) {
        self.orders += 1;
        *self.amount.entry(currency).or_default() += amount;
    }

    /// The amount in `currency` (zero when none).
    pub fn in_currency(&self, currency: Currency) -> Decimal {
        self.amount.get(&currency).copied().unwrap_or_default()
    }
}

impl Serialize for Tally {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let amount: BTreeMap<String, String> = self
            .amount
            .iter()
            .map(|(c, a)| (c.to_string(), format_money(*a)))
            .collect();
        let mut st = s.serialize_struct("Tally", 2)?;
        st.serialize_field("orders", &self.orders)?;
        st.serialize_field("amount", &amount)?;
        st.end()
    }
}

/// What the candidate's different decision on one order means, given its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// Stricter on an order that went badly (paid late past the limit, still overdue, or a
    /// write-off candidate).
    LossAvoided,
    /// Stricter (held, then released) on an order that was paid.
    BusinessDelayed,
    /// Stricter (held and never released) on an order that was paid.
    BusinessLost,
    /// Stricter on an order with no outcome yet (not shipped, credited, not yet due).
    StricterNoOutcome,
    /// Looser on an order that went badly.
    LossAdded,
    /// Looser on an order that was paid.
    BusinessGained,
    LooserNoOutcome,
    /// The same fate, by a different sequence of decisions (e.g. released at another time).
    SameFate,
}

impl Effect {
    pub const ALL: [Effect; 8] = [
        Effect::LossAvoided,
        Effect::BusinessDelayed,
        Effect::BusinessLost,
        Effect::StricterNoOutcome,
        Effect::LossAdded,
        Effect::BusinessGained,
        Effect::LooserNoOutcome,
        Effect::SameFate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Effect::LossAvoided => "losses_avoided",
            Effect::BusinessDelayed => "business_delayed",
            Effect::BusinessLost => "business_lost",
            Effect::StricterNoOutcome => "stricter_no_outcome",
            Effect::LossAdded => "losses_added",
            Effect::BusinessGained => "business_gained",
            Effect::LooserNoOutcome => "looser_no_outcome",
            Effect::SameFate => "same_fate",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Effect::LossAvoided => "losses avoided",
            Effect::BusinessDelayed => "good business delayed",
            Effect::BusinessLost => "good business lost",
            Effect::StricterNoOutcome => "stricter, no outcome yet",
            Effect::LossAdded => "losses added",
            Effect::BusinessGained => "good business gained",
            Effect::LooserNoOutcome => "looser, no outcome yet",
            Effect::SameFate => "same fate, other decisions",
        }
    }

    /// The effect of a candidate fate against the baseline's, for an order of `risk`.
    pub fn of(baseline: Fate, candidate: Fate, risk: Risk) -> Option<Effect> {
        use std::cmp::Ordering::*;
        Some(match (candidate.cmp(&baseline), risk) {
            (Greater, Risk::Bad) => Effect::LossAvoided,
            (Greater, Risk::Good) if candidate == Fate::Delayed => Effect::BusinessDelayed,
            (Greater, Risk::Good) => Effect::BusinessLost,
            (Greater, Risk::Neutral) => Effect::StricterNoOutcome,
            (Less, Risk::Bad) => Effect::LossAdded,
            (Less, Risk::Good) => Effect::BusinessGained,
            (Less, Risk::Neutral) => Effect::LooserNoOutcome,
            (Equal, _) => return None,
        })
    }
}

/// Tallies per effect.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TradeOff(pub BTreeMap<Effect, Tally>);

impl TradeOff {
    pub fn add(&mut self, effect: Effect, currency: Currency, amount: Decimal) {
        self.0.entry(effect).or_default().add(currency, amount);
    }

    pub fn get(&self, effect: Effect) -> Tally {
        self.0.get(&effect).cloned().unwrap_or_default()
    }

    pub fn orders(&self) -> u64 {
        self.0.values().map(|t| t.orders).sum()
    }
}

impl Serialize for TradeOff {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(Effect::ALL.len()))?;
        for e in Effect::ALL {
            m.serialize_entry(e.as_str(), &self.get(e))?;
        }
        m.end()
    }
}

/// One order the two policies decided differently.
#[derive(Clone, Debug, Serialize)]
pub struct ChangedOrder {
    pub customer_id: String,
    pub order_id: String,
    pub grade: Option<&'static str>,
    pub placed_at: Timestamp,
    #[serde(serialize_with = "ser_dec")]
    pub amount: Decimal,
    pub currency: Currency,
    #[serde(serialize_with = "ser_dec")]
    pub amount_account: Decimal,
    pub account_currency: Currency,
    pub effect: &'static str,
    pub outcome: &'static str,
    pub outcome_days: Option<u32>,
    pub baseline: Vec<&'static str>,
    pub candidate: Vec<&'static str>,
    pub baseline_fate: &'static str,
    pub candidate_fate: &'static str,
    /// The hold reasons of the stricter policy.
    pub reasons: Vec<&'static str>,
    #[serde(serialize_with = "ser_dec_opt")]
    pub baseline_hold_days: Option<Decimal>,
    #[serde(serialize_with = "ser_dec_opt")]
    pub candidate_hold_days: Option<Decimal>,
    pub events: Vec<EventRef>,
}

fn ser_dec<S: Serializer>(d: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_money(*d))
}

fn ser_dec_opt<S: Serializer>(d: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

/// The candidate against the baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub label: String,
    pub source: String,
    /// Orders decided differently (any effect, same fate included).
    pub changed: u64,
    pub totals: TradeOff,
    pub by_grade: BTreeMap<String, TradeOff>,
    /// Each order counts under every reason the stricter policy held it for.
    pub by_reason: BTreeMap<String, TradeOff>,
    /// By the month the order was placed.
    pub by_month: BTreeMap<String, TradeOff>,
    pub changed_orders: Vec<ChangedOrder>,
}

/// Compares `candidate` with `baseline` over `history`.
pub fn compare(
    history: &History,
    baseline: &Trail,
    candidate: &Trail,
    source: &str,
    late_days: u32,
    write_off_days: u32,
) -> Comparison {
    let end = history.end.unwrap_or_default();
    let mut c = Comparison {
        label: candidate.label.clone(),
        source: source.to_string(),
        changed: 0,
        totals: TradeOff::default(),
        by_grade: BTreeMap::new(),
        by_reason: BTreeMap::new(),
        by_month: BTreeMap::new(),
        changed_orders: Vec::new(),
    };
    for (idx, order) in history.orders.iter().enumerate() {
        let (Some(b), Some(k)) = (baseline.order(idx), candidate.order(idx)) else {
            continue;
        };
        let (Some(bf), Some(kf)) = (b.fate(), k.fate()) else {
            continue;
        };
        if b.statuses == k.statuses {
            continue;
        }
        let outcome = history.outcome(order, write_off_days);
        let effect = Effect::of(bf, kf, outcome.risk(late_days)).unwrap_or(Effect::SameFate);
        let stricter = if kf >= bf { k } else { b };
        let reasons: Vec<&'static str> = stricter.hold_reasons.iter().map(|r| r.as_str()).collect();
        let (cur, amount) = (order.account_currency, order.amount_account);
        c.changed += 1;
        c.totals.add(effect, cur, amount);
        let grade = order.grade.map(|g| g.as_str());
        c.by_grade
            .entry(grade.unwrap_or("none").to_string())
            .or_default()
            .add(effect, cur, amount);
        for r in &reasons {
            c.by_reason
                .entry(r.to_string())
                .or_default()
                .add(effect, cur, amount);
        }
        c.by_month
            .entry(order.placed_at.to_date()[..7].to_string())
            .or_default()
            .add(effect, cur, amount);
        c.changed_orders.push(ChangedOrder {
            customer_id: order.customer_id.clone(),
            order_id: order.order_id.clone(),
            grade,
            placed_at: order.placed_at,
            amount: order.amount,
            currency: order.currency,
            amount_account: amount,
            account_currency: cur,
            effect: effect.as_str(),
            outcome: outcome.kind(),
            outcome_days: outcome.days(),
            baseline: b.statuses.iter().map(|s| s.as_str()).collect(),
            candidate: k.statuses.iter().map(|s| s.as_str()).collect(),
            baseline_fate: bf.as_str(),
            candidate_fate: kf.as_str(),
            reasons,
            baseline_hold_days: b.hold_days(end),
            candidate_hold_days: k.hold_days(end),
            events: order.events.clone(),
        });
    }
    c
}
