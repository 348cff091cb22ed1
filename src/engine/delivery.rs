//! The delivery check (CONTRACT.md, "Delivery check"): credit control while the sale runs. A
//! `delivery.requested` is judged against the account as it stands when the goods are about to
//! leave; held deliveries wait in the account's own queue (apart from held orders: the two never
//! block each other), are re-checked by the same triggers, expire, and are released or rejected
//! by a person. A shipment the engine did not clear raises `SHIPPED_WITHOUT_RELEASE`.
//!
//! Money: a delivery within its order's open remainder reserves nothing new (the order already
//! counts in open orders); only the excess beyond it is new exposure, counted in open orders
//! until it ships, and only that excess meets the credit rule. Under pay-before-ship an approved
//! delivery earmarks unapplied credit (the order's earmark first), consumed when it ships.
//!
//! This file has the delivery items and the check itself; `account/deliveries.rs` the
//! account's side (how an order or delivery stands, a delivery's money movements);
//! `delivery_events` how the engine applies delivery events and commands.

use super::account::{Account, Hold};
use super::rules::Terms;
use crate::model::*;
use crate::policy::Policy;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Where a delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Cleared (approved or released) and not yet shipped: its excess counts in open orders.
    Approved,
    /// Waiting in the account's delivery queue: reserves nothing.
    Held,
}

/// A live delivery: held, or cleared and waiting for its shipment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub order_id: String,
    #[serde(with = "crate::model::money::dec")]
    pub amount: Decimal,
    pub currency: Currency,
    /// The amount in the account's currency.
    #[serde(with = "crate::model::money::dec")]
    pub amount_account: Decimal,
    pub requested_at: Timestamp,
    pub requested_event_id: String,
    pub state: DeliveryState,
    /// Approved: the part within its order's open remainder (already in open orders).
    #[serde(with = "crate::model::money::dec")]
    pub covered: Decimal,
    /// Approved: the part beyond it, counted in open orders until the delivery ships.
    #[serde(with = "crate::model::money::dec")]
    pub excess: Decimal,
    /// Approved under pay-before-ship: unapplied credit earmarked for it.
    #[serde(with = "crate::model::money::dec")]
    pub prepaid: Decimal,
    pub hold: Option<Hold>,
}

/// How the delivery's order stands, for `ORDER_NOT_APPROVED` and `SHIPPED_WITHOUT_RELEASE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderStanding {
    /// Approved or released, with an unshipped remainder.
    Open,
    /// Approved and since shipped in full (nothing left to cover a delivery).
    Shipped,
    Held,
    Rejected,
    Cancelled,
    Unknown,
}

impl OrderStanding {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStanding::Open => "approved",
            OrderStanding::Shipped => "shipped",
            OrderStanding::Held => "held",
            OrderStanding::Rejected => "rejected",
            OrderStanding::Cancelled => "cancelled",
            OrderStanding::Unknown => "unknown",
        }
    }

    pub(super) fn approved(self) -> bool {
        matches!(self, OrderStanding::Open | OrderStanding::Shipped)
    }
}

/// Closed-id prefixes, one id per closed item: deliveries shipped (`d:`), rejected (`dx:`) or
/// cancelled (`dc:`); orders rejected (`r:`) or cancelled (`c:`) beside `o:` for the others.
pub(super) const CLOSED_DELIVERY: &str = "d:";
pub(super) const REJECTED_DELIVERY: &str = "dx:";
pub(super) const CANCELLED_DELIVERY: &str = "dc:";
pub(super) const REJECTED_ORDER: &str = "r:";
pub(super) const CANCELLED_ORDER: &str = "c:";

/// The delivery being checked.
pub struct DeliveryCheck<'a> {
    pub delivery_id: &'a str,
    pub order_id: &'a str,
    /// In the account's currency; `None` when no FX rate converts it.
    pub amount_account: Option<Decimal>,
    pub amount: Decimal,
    pub currency: Currency,
}

pub(super) fn m(v: Decimal) -> String {
    format_money(v)
}

/// The rules at delivery, all run, every failure reported, in the contract's order.
pub fn check_delivery(
    account: &Account,
    terms: Option<&Terms>,
    policy: &Policy,
    now: Timestamp,
    d: &DeliveryCheck<'_>,
) -> Vec<Reason> {
    let mut reasons = Vec::new();
    let amount = d.amount_account.unwrap_or(d.amount);
    let standing = account.order_standing(d.order_id);
    if let Some(t) = terms {
        reasons.extend(super::rules::blocked(account, t));
        // The order's own earmark is credit for its goods too.
        let order_earmark = account
            .orders()
            .get(d.order_id)
            .map_or(Decimal::ZERO, |o| o.prepaid);
        let free = account.free_credit();
        reasons.extend(super::rules::prepayment(
            t,
            free + order_earmark,
            amount,
            "delivery",
        ));
        reasons.extend(super::rules::review_passed(t, now));
        reasons.extend(super::rules::overdue(account, t, policy, now));
    }
    let mut fail = |code: ReasonCode, detail: String| reasons.push(Reason { code, detail });
    if !standing.approved() {
        fail(
            ReasonCode::OrderNotApproved,
            format!("order {} is {}", d.order_id, standing.as_str()),
        );
    } else if let Some(t) = terms {
        let remainder = account.order_remainder(d.order_id);
        let excess = (amount - remainder).max(Decimal::ZERO);
        let exposure = account.exposure_total();
        let ceiling = t.limit_with_tolerance();
        if excess > Decimal::ZERO && exposure + excess > ceiling {
            fail(
                ReasonCode::CreditLimitExceeded,
                format!(
                    "exposure {} + delivery {} beyond order {}'s open remainder {} > limit {}",
                    m(exposure),
                    m(excess),
                    d.order_id,
                    m(remainder),
                    m(ceiling)
                ),
            );
        }
    }
    if d.amount_account.is_none() {
        fail(
            ReasonCode::CurrencyMismatch,
            format!(
                "delivery in {}, account in {}, no FX rate",
                d.currency,
                terms.map_or_else(|| "?".to_string(), |t| t.currency.to_string())
            ),
        );
    }
    reasons
}

/// A delivery hold a re-check passes over: it waits for a person (no FX rate) and blocks
/// nothing.
pub(super) fn needs_person(reasons: &[Reason]) -> bool {
    reasons
        .iter()
        .any(|r| r.code == ReasonCode::CurrencyMismatch)
}

/// A delivery hold that blocks no other delivery: waiting for its order or for a person.
pub(super) fn blocks_nothing(reasons: &[Reason]) -> bool {
    needs_person(reasons)
        || reasons
            .iter()
            .all(|r| r.code == ReasonCode::OrderNotApproved)
}
