//! The order check (DOMAIN.md, "Order check"): the credit terms that apply to an account right
//! now, and the ten rules an order is held for. Every failed rule is reported with the numbers
//! behind it, not just the first. Pure functions over borrowed state.

use super::account::Account;
use super::warnings;
use crate::model::*;
use crate::policy::Policy;
use rust_decimal::Decimal;

/// The credit terms in force for an account at one moment: profile merged with its grade.
#[derive(Clone, Debug, PartialEq)]
pub struct Terms {
    pub grade: Grade,
    pub credit_limit: Decimal,
    /// `credit_limit` plus a temporary limit that has not expired.
    pub limit_effective: Decimal,
    pub currency: Currency,
    pub tolerance_pct: Decimal,
    pub overdue_days_max: u32,
    pub payment_terms_days: u32,
    pub prepay: bool,
    pub max_order_amount: Option<Decimal>,
    pub status: AccountStatus,
    pub review_date: Option<Timestamp>,
}

impl Terms {
    /// The most exposure an order may bring the account to: limit x (1 + tolerance).
    pub fn limit_with_tolerance(&self) -> Decimal {
        with_tolerance(self.limit_effective, self.tolerance_pct)
    }
}

pub fn with_tolerance(limit: Decimal, tolerance_pct: Decimal) -> Decimal {
    limit + limit * tolerance_pct / Decimal::ONE_HUNDRED
}

/// The terms for an account at `now`; `None` for a customer without a profile when the policy
/// names no default limit for unknown customers.
pub fn terms(account: &Account, policy: &Policy, now: Timestamp) -> Option<Terms> {
    match &account.profile {
        Some(p) => {
            let grade = account
                .grade_override
                .or(p.grade)
                .unwrap_or(policy.default_grade);
            let rule = policy.grade(grade);
            let temp = p
                .temporary_limit
                .as_ref()
                .filter(|t| now < t.expires_at)
                .map_or(Decimal::ZERO, |t| t.amount);
            Some(Terms {
                grade,
                credit_limit: p.credit_limit,
                limit_effective: p.credit_limit + temp,
                currency: p.currency,
                tolerance_pct: p.tolerance_pct.unwrap_or(rule.tolerance_pct),
                overdue_days_max: rule.overdue_days_max,
                payment_terms_days: p.payment_terms_days.unwrap_or(rule.payment_terms_days),
                prepay: rule.prepay || p.status == AccountStatus::PrepayOnly,
                max_order_amount: p.max_order_amount,
                status: p.status,
                review_date: p.review_date,
            })
        }
        None => {
            let (limit, currency) = policy.unknown_customer_limit?;
            let grade = account.grade_override.unwrap_or(policy.default_grade);
            let rule = policy.grade(grade);
            Some(Terms {
                grade,
                credit_limit: limit,
                limit_effective: limit,
                currency,
                tolerance_pct: rule.tolerance_pct,
                overdue_days_max: rule.overdue_days_max,
                payment_terms_days: rule.payment_terms_days,
                prepay: rule.prepay,
                max_order_amount: None,
                status: AccountStatus::Active,
                review_date: None,
            })
        }
    }
}

/// A group's position for the group-limit rule.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupView {
    pub group_id: String,
    pub limit_with_tolerance: Decimal,
    pub credit_limit: Decimal,
    pub currency: Currency,
    /// Sum of the members' exposure in the group's currency; `Err` names a member whose
    /// currency has no FX rate to the group's.
    pub exposure: Result<Decimal, String>,
}

/// The order being checked.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub amount: Decimal,
    pub currency: Currency,
    /// The amount in the account's currency; `None` when no FX rate converts it.
    pub amount_account: Option<Decimal>,
    /// The order id, excluded from the account's own earmarks.
    pub order_id: &'a str,
    /// The engine's rates (the group limit converts to the group's currency).
    pub rates: &'a super::fx::FxRates,
}

fn m(v: Decimal) -> String {
    format_money(v)
}

/// Runs every rule; returns all that fail, in rule order. Empty means approve.
pub fn check_order(
    account: &Account,
    terms: Option<&Terms>,
    group: Option<&GroupView>,
    policy: &Policy,
    now: Timestamp,
    order: &Candidate<'_>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let mut fail = |code: ReasonCode, detail: String| reasons.push(Reason { code, detail });
    let Some(t) = terms else {
        fail(
            ReasonCode::CustomerUnknown,
            format!("customer {} has no credit profile", account.customer_id),
        );
        return reasons;
    };
    let amount = order.amount_account.unwrap_or(order.amount);
    let exposure = account.exposure_total();

    // 1. Blocked or closed account.
    reasons.extend(blocked(account, t));
    // 2. Pay before ship.
    let free = account.free_credit();
    reasons.extend(prepayment(t, free, amount, "order"));
    let mut fail = |code: ReasonCode, detail: String| reasons.push(Reason { code, detail });
    // 3. Order credit limit.
    if let Some(max) = t.max_order_amount.filter(|max| amount > *max) {
        fail(
            ReasonCode::OrderLimitExceeded,
            format!("order {} > max order amount {}", m(amount), m(max)),
        );
    }
    // 4. Review date passed.
    fail_all(&mut fail, review_passed(t, now));
    let small = policy.small_order_amount.is_some_and(|s| amount <= s);
    if !small {
        // 5. Days past due of the oldest unpaid item; 6. overdue amount cap.
        fail_all(&mut fail, overdue(account, t, policy, now));
        // 7. Credit limit (with tolerance).
        fail_all(
            &mut fail,
            credit_limit(t, exposure, amount).into_iter().collect(),
        );
        // 8. Group limit.
        if let Some(g) = group {
            let r = group_limit(g, order.rates, t.currency, amount);
            fail_all(&mut fail, r.into_iter().collect());
        }
        // 9. Amount far above the customer's typical order.
        let r = amount_anomaly(account, policy, amount);
        fail_all(&mut fail, r.into_iter().collect());
    }
    // 10. Currency without an FX rate.
    if order.amount_account.is_none() {
        fail(
            ReasonCode::CurrencyMismatch,
            format!(
                "order in {}, account in {}, no FX rate configured",
                order.currency, t.currency
            ),
        );
    }
    reasons
}

/// Rule 7: the exposure with this amount over the limit (with its tolerance).
fn credit_limit(t: &Terms, exposure: Decimal, amount: Decimal) -> Option<Reason> {
    let ceiling = t.limit_with_tolerance();
    if exposure + amount <= ceiling {
        return None;
    }
    let limit_text = if t.tolerance_pct.is_zero() {
        format!("limit {}", m(t.limit_effective))
    } else {
        format!(
            "limit {} + {}% tolerance = {}",
            m(t.limit_effective),
            t.tolerance_pct.normalize(),
            m(ceiling)
        )
    };
    Some(Reason {
        code: ReasonCode::CreditLimitExceeded,
        detail: format!(
            "exposure {} + order {} > {}",
            m(exposure),
            m(amount),
            limit_text
        ),
    })
}

/// Rule 8: the group's exposure with this amount (in the group's currency) over the group's
/// limit, or no rate to convert it.
fn group_limit(
    g: &GroupView,
    rates: &super::fx::FxRates,
    currency: Currency,
    amount: Decimal,
) -> Option<Reason> {
    let fail = |code, detail| Some(Reason { code, detail });
    let group_exposure = match &g.exposure {
        Ok(e) => *e,
        Err(why) => return fail(ReasonCode::CurrencyMismatch, why.clone()),
    };
    match rates.convert(amount, currency, g.currency) {
        Some(a) if group_exposure + a > g.limit_with_tolerance => fail(
            ReasonCode::GroupLimitExceeded,
            format!(
                "group {} exposure {} + order {} > group limit {}",
                g.group_id,
                m(group_exposure),
                m(a),
                m(g.limit_with_tolerance)
            ),
        ),
        Some(_) => None,
        None => fail(
            ReasonCode::CurrencyMismatch,
            format!(
                "no FX rate from {} to group {} currency {}",
                currency, g.group_id, g.currency
            ),
        ),
    }
}

/// Rule 9: an amount far above the customer's typical order.
fn amount_anomaly(account: &Account, policy: &Policy, amount: Decimal) -> Option<Reason> {
    let typical = typical_order(account, policy)?;
    (amount > policy.anomaly_factor * typical).then(|| Reason {
        code: ReasonCode::AmountAnomaly,
        detail: format!(
            "order {} > {}x typical order {}",
            m(amount),
            policy.anomaly_factor.normalize(),
            m(typical)
        ),
    })
}

fn fail_all(fail: &mut impl FnMut(ReasonCode, String), reasons: Vec<Reason>) {
    for r in reasons {
        fail(r.code, r.detail);
    }
}

/// `ACCOUNT_BLOCKED`: status blocked or closed, or a `command.block`. (Shared by the order
/// check and the delivery check.)
pub fn blocked(account: &Account, t: &Terms) -> Option<Reason> {
    let detail = if matches!(t.status, AccountStatus::Blocked | AccountStatus::Closed) {
        format!("account status is {}", t.status.as_str())
    } else {
        format!("account blocked by {}", account.manual_block.as_ref()?)
    };
    Some(Reason {
        code: ReasonCode::AccountBlocked,
        detail,
    })
}

/// `PREPAYMENT_REQUIRED`: pay-before-ship and `credit` (what unapplied credit is free for it)
/// below `amount`; `what` names the order or delivery in the detail.
pub fn prepayment(t: &Terms, credit: Decimal, amount: Decimal, what: &str) -> Option<Reason> {
    if !t.prepay || credit >= amount {
        return None;
    }
    let why = if t.status == AccountStatus::PrepayOnly {
        "status prepay_only".to_string()
    } else {
        format!("grade {} pays before shipment", t.grade)
    };
    Some(Reason {
        code: ReasonCode::PrepaymentRequired,
        detail: format!(
            "{why}: unapplied credit {} < {what} {}",
            m(credit),
            m(amount)
        ),
    })
}

/// `LIMIT_EXPIRED`: the review date has passed.
pub fn review_passed(t: &Terms, now: Timestamp) -> Vec<Reason> {
    t.review_date
        .filter(|r| *r <= now)
        .map(|review| Reason {
            code: ReasonCode::LimitExpired,
            detail: format!("credit limit review date {} has passed", review.to_date()),
        })
        .into_iter()
        .collect()
}

/// `OVERDUE_DAYS` (the oldest unpaid item past the grade's allowance) and `OVERDUE_AMOUNT`
/// (overdue total above the policy's cap), in that order.
pub fn overdue(account: &Account, t: &Terms, policy: &Policy, now: Timestamp) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let (overdue_total, oldest) = account.overdue(now);
    if let Some(item) = oldest {
        let allowed_us = i64::from(t.overdue_days_max) * DAY_US;
        if now.0 - item.due_at.0 > allowed_us {
            reasons.push(Reason {
                code: ReasonCode::OverdueDays,
                detail: format!(
                    "oldest overdue item {} is {} days past due > {} allowed",
                    item.shipment_id,
                    now.days_since(item.due_at),
                    t.overdue_days_max
                ),
            });
        }
    }
    let share_cap = policy.overdue_share_max.map(|s| s * t.limit_effective);
    let cap = match (policy.overdue_amount_max, share_cap) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(cap) = cap.filter(|cap| overdue_total > *cap) {
        reasons.push(Reason {
            code: ReasonCode::OverdueAmount,
            detail: format!("overdue {} > cap {}", m(overdue_total), m(cap)),
        });
    }
    reasons
}

/// The median of the customer's recent orders, once enough are known.
pub fn typical_order(account: &Account, policy: &Policy) -> Option<Decimal> {
    let amounts = &account.behaviour.order_amounts;
    if amounts.len() < policy.anomaly_min_orders.max(1) {
        return None;
    }
    warnings::median_decimal(amounts)
}
