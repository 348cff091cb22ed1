//! The credit policy the core enforces: grade table, rule thresholds, alert settings, FX rates
//! and the bounds on per-account state. Built from configuration by `config`; `Policy::default()`
//! is exactly what `config/default.toml` says.

use crate::model::{Currency, Grade, Severity, DAY_US};
use rust_decimal::Decimal;
use std::collections::BTreeMap;

/// What one grade allows.
#[derive(Clone, Debug, PartialEq)]
pub struct GradeRule {
    /// Percentage over the effective limit an order may go (10 = 10%).
    pub tolerance_pct: Decimal,
    /// Most days the oldest unpaid item may be past due before orders hold (`0`: any overdue).
    pub overdue_days_max: u32,
    /// Payment terms when the profile does not set its own.
    pub payment_terms_days: u32,
    /// Pay before ship: orders need unapplied credit covering them.
    pub prepay: bool,
}

/// How the hold queue is re-checked after something frees room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReleaseOrder {
    /// Oldest first; an order that still fails blocks the ones behind it.
    StrictFifo,
    /// Oldest first; any order that now passes is released.
    FirstFit,
}

/// A utilization threshold and the severity of crossing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Threshold {
    pub ratio: Decimal,
    pub severity: Severity,
}

/// Behaviour-based limit suggestion settings.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitSuggestions {
    /// How many of the most recently settled items the average days late is taken over.
    pub settled_items: usize,
    /// `LIMIT_DECREASE_SUGGESTED` when their amount-weighted average days late exceeds this.
    pub decrease_avg_days_late_min: Decimal,
    /// Suggested cut, percent of the current limit.
    pub decrease_pct: Decimal,
    /// `LIMIT_INCREASE_SUGGESTED` needs the average days late at or below this...
    pub increase_avg_days_late_max: Decimal,
    /// ...and at least `increase_near_limit_orders_min` of the last `increase_recent_orders`
    /// orders to have found the account at or above this utilization.
    pub increase_near_limit_utilization: Decimal,
    pub increase_near_limit_orders_min: usize,
    pub increase_recent_orders: usize,
    /// Suggested raise, percent of the current limit.
    pub increase_pct: Decimal,
}

/// Bounds on per-account state (TIGER_STYLE: put a limit on everything).
#[derive(Clone, Debug, PartialEq)]
pub struct Bounds {
    /// Recent event ids remembered per account for duplicate detection.
    pub event_ids_per_account: usize,
    /// Closed order ids and settled shipment/payment ids remembered per account.
    pub closed_ids_per_account: usize,
    /// Shipments/cancellations waiting for their order, per account.
    pub pending_per_account: usize,
    /// How long (event time) such an event waits before it is resolved without its order.
    pub pending_ttl_us: i64,
    /// Settled items kept for the behavioural indicators, per account.
    pub settled_history_per_account: usize,
    /// Live orders (open or held) per account, and open receivables per account (each).
    pub items_per_account: usize,
    /// Accounts one engine (one input partition) holds.
    pub max_accounts: usize,
    /// Groups one engine (one input partition) holds.
    pub max_groups: usize,
}

/// The whole policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub grades: BTreeMap<Grade, GradeRule>,
    pub default_grade: Grade,
    /// Limit (and currency) given to customers without a profile; `None`: hold them.
    pub unknown_customer_limit: Option<(Decimal, Currency)>,
    /// Orders at or below this amount skip rules 5-9.
    pub small_order_amount: Option<Decimal>,
    /// `OVERDUE_AMOUNT` when overdue total exceeds this absolute amount...
    pub overdue_amount_max: Option<Decimal>,
    /// ...or this share of the effective limit (0.10 = 10%).
    pub overdue_share_max: Option<Decimal>,
    /// Manual releases above this amount need two distinct actors.
    pub four_eyes_amount: Option<Decimal>,
    pub release_order: ReleaseOrder,
    /// Held orders older than this are rejected with `HOLD_EXPIRED`; 0 disables expiry.
    pub hold_expiry_days: u32,
    /// FX rates, `(from, to) -> rate`: 1 unit of `from` is `rate` units of `to`.
    pub fx_rates: BTreeMap<(Currency, Currency), Decimal>,
    /// `AMOUNT_ANOMALY` above `anomaly_factor` x the median of the last `anomaly_window`
    /// orders, once `anomaly_min_orders` are known.
    pub anomaly_factor: Decimal,
    pub anomaly_window: usize,
    pub anomaly_min_orders: usize,
    /// `INACTIVITY` after the median of the last `inactivity_window` gaps between orders plus
    /// `inactivity_extra_days`, once `inactivity_min_gaps` gaps are known.
    pub inactivity_window: usize,
    pub inactivity_min_gaps: usize,
    pub inactivity_extra_days: u32,
    pub utilization_thresholds: Vec<Threshold>,
    /// A threshold re-arms once utilization falls this far below it (0.05 = 5 points).
    pub utilization_rearm_margin: Decimal,
    pub aging_buckets_days: Vec<u32>,
    pub write_off_days: u32,
    pub review_warning_days: u32,
    /// Items that came due within this many days feed the behavioural grade.
    pub behaviour_window_days: u32,
    /// Apply the behavioural grade to the account instead of only suggesting it.
    pub apply_behavioural_grade: bool,
    pub limit_suggestions: LimitSuggestions,
    pub bounds: Bounds,
}

impl Policy {
    /// The rule for a grade; every grade has one (validated when the policy is built).
    pub fn grade(&self, grade: Grade) -> &GradeRule {
        &self.grades[&grade]
    }

    /// Converts `amount` from one currency to another with a configured rate (direct, or the
    /// inverse of the reverse pair), rounded to four places. `None` when no rate is configured.
    pub fn convert(&self, amount: Decimal, from: Currency, to: Currency) -> Option<Decimal> {
        if from == to {
            return Some(amount);
        }
        if let Some(rate) = self.fx_rates.get(&(from, to)) {
            return amount.checked_mul(*rate).map(|v| v.round_dp(4));
        }
        let rate = self.fx_rates.get(&(to, from))?;
        if rate.is_zero() {
            return None;
        }
        amount.checked_div(*rate).map(|v| v.round_dp(4))
    }
}

fn pct(n: i64) -> Decimal {
    Decimal::from(n)
}

fn ratio(n: i64) -> Decimal {
    Decimal::new(n, 2)
}

impl Default for Policy {
    fn default() -> Self {
        let grades = BTreeMap::from([
            (
                Grade::A,
                GradeRule {
                    tolerance_pct: pct(10),
                    overdue_days_max: 30,
                    payment_terms_days: 60,
                    prepay: false,
                },
            ),
            (
                Grade::B,
                GradeRule {
                    tolerance_pct: pct(5),
                    overdue_days_max: 15,
                    payment_terms_days: 30,
                    prepay: false,
                },
            ),
            (
                Grade::C,
                GradeRule {
                    tolerance_pct: pct(0),
                    overdue_days_max: 0,
                    payment_terms_days: 30,
                    prepay: false,
                },
            ),
            (
                Grade::D,
                GradeRule {
                    tolerance_pct: pct(0),
                    overdue_days_max: 0,
                    payment_terms_days: 0,
                    prepay: true,
                },
            ),
        ]);
        Policy {
            grades,
            default_grade: Grade::B,
            unknown_customer_limit: None,
            small_order_amount: None,
            overdue_amount_max: None,
            overdue_share_max: None,
            four_eyes_amount: None,
            release_order: ReleaseOrder::StrictFifo,
            hold_expiry_days: 30,
            fx_rates: BTreeMap::new(),
            anomaly_factor: pct(5),
            anomaly_window: 20,
            anomaly_min_orders: 5,
            inactivity_window: 10,
            inactivity_min_gaps: 3,
            inactivity_extra_days: 3,
            utilization_thresholds: vec![
                Threshold {
                    ratio: ratio(70),
                    severity: Severity::Info,
                },
                Threshold {
                    ratio: ratio(85),
                    severity: Severity::Warning,
                },
                Threshold {
                    ratio: ratio(100),
                    severity: Severity::Critical,
                },
            ],
            utilization_rearm_margin: ratio(5),
            aging_buckets_days: vec![30, 60, 90],
            write_off_days: 180,
            review_warning_days: 30,
            behaviour_window_days: 180,
            apply_behavioural_grade: false,
            limit_suggestions: LimitSuggestions {
                settled_items: 5,
                decrease_avg_days_late_min: pct(15),
                decrease_pct: pct(20),
                increase_avg_days_late_max: pct(0),
                increase_near_limit_utilization: ratio(85),
                increase_near_limit_orders_min: 3,
                increase_recent_orders: 10,
                increase_pct: pct(20),
            },
            bounds: Bounds {
                event_ids_per_account: 64,
                closed_ids_per_account: 256,
                pending_per_account: 256,
                pending_ttl_us: 24 * 3_600_000_000,
                settled_history_per_account: 64,
                items_per_account: 10_000,
                max_accounts: 5_000_000,
                max_groups: 100_000,
            },
        }
    }
}

/// One day in microseconds, re-exported for policy arithmetic.
pub const fn days_us(days: u32) -> i64 {
    days as i64 * DAY_US
}
