//! The `[policy]` and `[limits]` sections: their raw shape, and their validation into the
//! engine's [`Policy`] (grade rules merged case-insensitively, thresholds ascending, bounds).

use super::*;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrade {
    pub tolerance_pct: Option<String>,
    pub overdue_days_max: Option<u32>,
    pub payment_terms_days: Option<u32>,
    pub prepay: Option<bool>,
}

impl RawGrade {
    /// Fields set in `over` win (the environment layer arrives lower-cased: `grades.b`).
    fn merged(&self, over: &RawGrade) -> RawGrade {
        RawGrade {
            tolerance_pct: over
                .tolerance_pct
                .clone()
                .or_else(|| self.tolerance_pct.clone()),
            overdue_days_max: over.overdue_days_max.or(self.overdue_days_max),
            payment_terms_days: over.payment_terms_days.or(self.payment_terms_days),
            prepay: over.prepay.or(self.prepay),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    pub factor: String,
    pub window: usize,
    pub min_orders: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInactivity {
    pub window: usize,
    pub min_gaps: usize,
    pub extra_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUtilization {
    pub thresholds: Vec<String>,
    pub severities: Vec<String>,
    pub rearm_margin: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAging {
    pub buckets_days: Vec<u32>,
    pub write_off_days: u32,
    pub review_warning_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitSuggestions {
    pub settled_items: usize,
    pub decrease_avg_days_late_min: String,
    pub decrease_pct: String,
    pub increase_avg_days_late_max: String,
    pub increase_near_limit_utilization: String,
    pub increase_near_limit_orders_min: usize,
    pub increase_recent_orders: usize,
    pub increase_pct: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub default_grade: String,
    pub release_order: String,
    pub hold_expiry_days: u32,
    pub small_order_amount: Option<String>,
    pub overdue_amount_max: Option<String>,
    pub overdue_share_max: Option<String>,
    pub four_eyes_amount: Option<String>,
    pub unknown_customer_limit: Option<String>,
    pub unknown_customer_currency: Option<String>,
    pub apply_behavioural_grade: bool,
    pub behaviour_window_days: u32,
    pub grades: BTreeMap<String, RawGrade>,
    #[serde(default)]
    pub fx_rates: BTreeMap<String, String>,
    pub anomaly: RawAnomaly,
    pub inactivity: RawInactivity,
    pub utilization: RawUtilization,
    pub aging: RawAging,
    pub limit_suggestions: RawLimitSuggestions,
}

/// `[policy]` (with the bounds of `[limits]`) validated into the engine's [`Policy`]; the first
/// error found names its key.
pub(super) fn validate_policy(p: &RawPolicy, l: &RawLimits) -> Result<Policy, ConfigError> {
    let grades = grade_rules(p)?;
    let default_grade = Grade::parse(&p.default_grade)
        .ok_or_else(|| invalid("policy.default_grade", "must be A, B, C or D"))?;
    let release_order = release_order(p)?;
    let unknown_customer_limit = unknown_customer_limit(p)?;
    let fx_rates = fx_rates(p)?;
    let u = &p.utilization;
    let utilization_thresholds = utilization_thresholds(u)?;
    check_aging(p)?;
    let ls = limit_suggestions(&p.limit_suggestions)?;
    if l.max_message_bytes < 1024 {
        return Err(invalid("limits.max_message_bytes", "must be at least 1024"));
    }
    Ok(Policy {
        grades,
        default_grade,
        unknown_customer_limit,
        small_order_amount: opt_decimal("policy.small_order_amount", &p.small_order_amount)?,
        overdue_amount_max: opt_decimal("policy.overdue_amount_max", &p.overdue_amount_max)?,
        overdue_share_max: opt_decimal("policy.overdue_share_max", &p.overdue_share_max)?,
        four_eyes_amount: opt_decimal("policy.four_eyes_amount", &p.four_eyes_amount)?,
        release_order,
        hold_expiry_days: p.hold_expiry_days,
        fx_rates,
        anomaly_factor: decimal_min("policy.anomaly.factor", &p.anomaly.factor, Decimal::ONE)?,
        anomaly_window: p.anomaly.window.max(1),
        anomaly_min_orders: p.anomaly.min_orders,
        inactivity_window: p.inactivity.window.max(1),
        inactivity_min_gaps: p.inactivity.min_gaps,
        inactivity_extra_days: p.inactivity.extra_days,
        utilization_thresholds,
        utilization_rearm_margin: decimal_min(
            "policy.utilization.rearm_margin",
            &u.rearm_margin,
            Decimal::ZERO,
        )?,
        aging_buckets_days: p.aging.buckets_days.clone(),
        write_off_days: p.aging.write_off_days,
        review_warning_days: p.aging.review_warning_days,
        behaviour_window_days: p.behaviour_window_days,
        apply_behavioural_grade: p.apply_behavioural_grade,
        limit_suggestions: ls,
        bounds: bounds(l),
    })
}

/// The grade rules: tables merged case-insensitively (`A` from files, `a` from the
/// environment), every field required, every grade A-D present.
fn grade_rules(p: &RawPolicy) -> Result<BTreeMap<Grade, GradeRule>, ConfigError> {
    let mut merged: BTreeMap<String, RawGrade> = BTreeMap::new();
    let mut names: Vec<&String> = p.grades.keys().collect();
    names.sort_by_key(|n| (n.to_uppercase(), n.chars().any(|c| c.is_lowercase())));
    for name in names {
        let upper = name.to_uppercase();
        let g = &p.grades[name];
        let entry = match merged.get(&upper) {
            Some(prev) => prev.merged(g),
            None => g.clone(),
        };
        merged.insert(upper, entry);
    }
    let mut grades = BTreeMap::new();
    for (name, g) in &merged {
        let key = format!("policy.grades.{name}");
        let grade = Grade::parse(name).ok_or_else(|| invalid(&key, "grades are A, B, C and D"))?;
        let need = |field: &str| invalid(&format!("{key}.{field}"), "is required");
        let tolerance = g
            .tolerance_pct
            .as_deref()
            .ok_or_else(|| need("tolerance_pct"))?;
        grades.insert(
            grade,
            GradeRule {
                tolerance_pct: decimal_min(
                    &format!("{key}.tolerance_pct"),
                    tolerance,
                    Decimal::ZERO,
                )?,
                overdue_days_max: g.overdue_days_max.ok_or_else(|| need("overdue_days_max"))?,
                payment_terms_days: g
                    .payment_terms_days
                    .ok_or_else(|| need("payment_terms_days"))?,
                prepay: g.prepay.ok_or_else(|| need("prepay"))?,
            },
        );
    }
    for g in Grade::ALL {
        if !grades.contains_key(&g) {
            return Err(invalid(
                &format!("policy.grades.{g}"),
                "every grade A-D needs a rule",
            ));
        }
    }
    Ok(grades)
}

fn release_order(p: &RawPolicy) -> Result<ReleaseOrder, ConfigError> {
    Ok(match p.release_order.as_str() {
        "strict_fifo" => ReleaseOrder::StrictFifo,
        "first_fit" => ReleaseOrder::FirstFit,
        _ => {
            return Err(invalid(
                "policy.release_order",
                "must be \"strict_fifo\" or \"first_fit\"",
            ))
        }
    })
}

/// The limit of a customer without a profile, with its currency (both or neither).
fn unknown_customer_limit(p: &RawPolicy) -> Result<Option<(Decimal, Currency)>, ConfigError> {
    Ok(
        match (&p.unknown_customer_limit, &p.unknown_customer_currency) {
            (None, None) => None,
            (Some(l), Some(c)) => Some((
                decimal_min("policy.unknown_customer_limit", l, Decimal::ZERO)?,
                currency("policy.unknown_customer_currency", c)?,
            )),
            _ => {
                return Err(invalid(
                    "policy.unknown_customer_limit",
                    "set together with policy.unknown_customer_currency",
                ))
            }
        },
    )
}

/// The configured FX rates (starting values until `fx.rate` events arrive).
fn fx_rates(p: &RawPolicy) -> Result<BTreeMap<(Currency, Currency), Decimal>, ConfigError> {
    let mut fx_rates = BTreeMap::new();
    for (pair, rate) in &p.fx_rates {
        let key = format!("policy.fx_rates.{pair}");
        let (from, to) = pair
            .split_once('/')
            .ok_or_else(|| invalid(&key, "pairs are written \"FROM/TO\""))?;
        let rate = decimal(&key, rate)?;
        if rate <= Decimal::ZERO {
            return Err(invalid(&key, "a rate must be positive"));
        }
        fx_rates.insert((currency(&key, from)?, currency(&key, to)?), rate);
    }
    Ok(fx_rates)
}

/// The utilization thresholds, ascending, each with its severity.
fn utilization_thresholds(u: &RawUtilization) -> Result<Vec<Threshold>, ConfigError> {
    if u.thresholds.len() != u.severities.len()
        || u.thresholds.is_empty()
        || u.thresholds.len() > 32
    {
        return Err(invalid(
            "policy.utilization.severities",
            "needs one severity per threshold (1 to 32 thresholds)",
        ));
    }
    let mut utilization_thresholds = Vec::new();
    for (t, s) in u.thresholds.iter().zip(&u.severities) {
        let ratio = decimal_min("policy.utilization.thresholds", t, Decimal::ZERO)?;
        if utilization_thresholds
            .last()
            .is_some_and(|prev: &Threshold| prev.ratio >= ratio)
        {
            return Err(invalid(
                "policy.utilization.thresholds",
                "must be in ascending order",
            ));
        }
        let severity = Severity::parse(s).ok_or_else(|| {
            invalid(
                "policy.utilization.severities",
                format!("{s:?} is not info, warning or critical"),
            )
        })?;
        utilization_thresholds.push(Threshold { ratio, severity });
    }
    Ok(utilization_thresholds)
}

/// The aging buckets ascend, are at most 16 and stay below the write-off age.
fn check_aging(p: &RawPolicy) -> Result<(), ConfigError> {
    if p.aging.buckets_days.windows(2).any(|w| w[0] >= w[1])
        || p.aging
            .buckets_days
            .last()
            .is_some_and(|last| *last >= p.aging.write_off_days)
        || p.aging.buckets_days.len() > 16
    {
        return Err(invalid(
            "policy.aging.buckets_days",
            "must ascend, be at most 16, and stay below write_off_days",
        ));
    }
    Ok(())
}

fn limit_suggestions(s: &RawLimitSuggestions) -> Result<LimitSuggestions, ConfigError> {
    Ok(LimitSuggestions {
        settled_items: s.settled_items,
        decrease_avg_days_late_min: decimal(
            "policy.limit_suggestions.decrease_avg_days_late_min",
            &s.decrease_avg_days_late_min,
        )?,
        decrease_pct: decimal_min(
            "policy.limit_suggestions.decrease_pct",
            &s.decrease_pct,
            Decimal::ZERO,
        )?,
        increase_avg_days_late_max: decimal(
            "policy.limit_suggestions.increase_avg_days_late_max",
            &s.increase_avg_days_late_max,
        )?,
        increase_near_limit_utilization: decimal_min(
            "policy.limit_suggestions.increase_near_limit_utilization",
            &s.increase_near_limit_utilization,
            Decimal::ZERO,
        )?,
        increase_near_limit_orders_min: s.increase_near_limit_orders_min,
        increase_recent_orders: s.increase_recent_orders,
        increase_pct: decimal_min(
            "policy.limit_suggestions.increase_pct",
            &s.increase_pct,
            Decimal::ZERO,
        )?,
    })
}

fn bounds(l: &RawLimits) -> Bounds {
    Bounds {
        event_ids_per_account: l.event_ids_per_account,
        closed_ids_per_account: l.closed_ids_per_account.max(1),
        pending_per_account: l.pending_per_account,
        pending_ttl_us: i64::from(l.pending_ttl_hours) * 3_600_000_000,
        settled_history_per_account: l.settled_history_per_account,
        items_per_account: l.items_per_account.max(1),
        max_accounts: l.max_accounts.max(1),
        max_groups: l.max_groups,
    }
}
