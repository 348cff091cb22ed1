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
//! This file has the delivery items, the account's side and the check itself;
//! `delivery_events` how the engine applies delivery events and commands.

use super::account::{Account, Hold, OrderState};
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

impl Account {
    /// How an order stands, from the live orders and the memory of closed ones.
    pub fn order_standing(&self, order_id: &str) -> OrderStanding {
        match self.orders.get(order_id).map(|o| o.state) {
            Some(OrderState::Open) => OrderStanding::Open,
            Some(OrderState::Held) => OrderStanding::Held,
            None if self.closed_ids.contains_prefixed(REJECTED_ORDER, order_id) => {
                OrderStanding::Rejected
            }
            None if self.closed_ids.contains_prefixed(CANCELLED_ORDER, order_id) => {
                OrderStanding::Cancelled
            }
            None if self.closed_ids.contains_prefixed("o:", order_id) => OrderStanding::Shipped,
            None => OrderStanding::Unknown,
        }
    }

    /// How a delivery stands: `held`, `approved`, `rejected`, `cancelled`, `shipped` or
    /// `unknown`.
    pub fn delivery_standing(&self, delivery_id: &str) -> &'static str {
        match self.deliveries.get(delivery_id).map(|d| d.state) {
            Some(DeliveryState::Held) => "held",
            Some(DeliveryState::Approved) => "approved",
            None if self
                .closed_ids
                .contains_prefixed(REJECTED_DELIVERY, delivery_id) =>
            {
                "rejected"
            }
            None if self
                .closed_ids
                .contains_prefixed(CANCELLED_DELIVERY, delivery_id) =>
            {
                "cancelled"
            }
            None if self
                .closed_ids
                .contains_prefixed(CLOSED_DELIVERY, delivery_id) =>
            {
                "shipped"
            }
            None => "unknown",
        }
    }

    pub fn knows_delivery(&self, delivery_id: &str) -> bool {
        self.deliveries.contains_key(delivery_id)
            || [CLOSED_DELIVERY, REJECTED_DELIVERY, CANCELLED_DELIVERY]
                .iter()
                .any(|p| self.closed_ids.contains_prefixed(p, delivery_id))
    }

    /// What of an order's unshipped remainder is not yet taken by its approved deliveries.
    pub fn order_remainder(&self, order_id: &str) -> Decimal {
        let Some(order) = self
            .orders
            .get(order_id)
            .filter(|o| o.state == OrderState::Open)
        else {
            return Decimal::ZERO;
        };
        let taken: Decimal = self
            .deliveries
            .values()
            .filter(|d| d.order_id == order_id && d.state == DeliveryState::Approved)
            .map(|d| d.covered)
            .sum();
        (order.open_remaining - taken).max(Decimal::ZERO)
    }

    /// Clears a delivery: the excess beyond its order's remainder joins open orders, and under
    /// pay-before-ship it takes the order's earmark first, then free credit.
    pub fn approve_delivery(&mut self, delivery_id: &str, prepaid: bool) {
        let Some(d) = self.deliveries.get(delivery_id) else {
            return;
        };
        let (order_id, amount) = (d.order_id.clone(), d.amount_account);
        let remainder = self.order_remainder(&order_id);
        let covered = amount.min(remainder);
        let excess = amount - covered;
        let mut earmark = Decimal::ZERO;
        if prepaid {
            if let Some(o) = self.orders.get_mut(&order_id) {
                earmark = amount.min(o.prepaid);
                o.prepaid -= earmark;
            }
            let free = (self.unapplied_credit - self.earmarked).max(Decimal::ZERO);
            let extra = (amount - earmark).min(free);
            self.earmarked += extra;
            earmark += extra;
        }
        self.open_orders_total += excess;
        if let Some(d) = self.deliveries.get_mut(delivery_id) {
            d.state = DeliveryState::Approved;
            d.hold = None;
            d.covered = covered;
            d.excess = excess;
            d.prepaid = earmark;
        }
        self.held_deliveries.retain(|id| id != delivery_id);
    }

    /// Removes a live delivery, freeing what it reserved, and remembers its id (`mark`: the
    /// extra prefix of a rejected or cancelled delivery).
    pub fn close_delivery(&mut self, delivery_id: &str, mark: Option<&str>, cap: usize) {
        let Some(d) = self.deliveries.remove(delivery_id) else {
            return;
        };
        self.open_orders_total -= d.excess;
        self.earmarked -= d.prepaid;
        self.held_deliveries.retain(|id| id != delivery_id);
        let prefix = mark.unwrap_or(CLOSED_DELIVERY);
        self.closed_ids
            .insert(format!("{prefix}{delivery_id}"), cap);
    }

    /// Inserts a held delivery at its place in the delivery queue: (requested_at, id).
    pub fn enqueue_delivery(&mut self, delivery_id: &str) {
        let key = |id: &'_ str| {
            self.deliveries
                .get(id)
                .map(|d| (d.requested_at, &*d.delivery_id))
        };
        let new_key = key(delivery_id);
        let pos = self
            .held_deliveries
            .iter()
            .position(|id| key(id) > new_key)
            .unwrap_or(self.held_deliveries.len());
        self.held_deliveries.insert(pos, delivery_id.to_string());
    }

    /// The approved delivery a shipment carries out: the one it names, else the oldest
    /// approved delivery of its order.
    pub(super) fn delivery_for_shipment(
        &self,
        order_id: &str,
        named: Option<&str>,
    ) -> Option<String> {
        if let Some(id) = named {
            return self
                .deliveries
                .get(id)
                .filter(|d| d.state == DeliveryState::Approved)
                .map(|d| d.delivery_id.clone());
        }
        self.deliveries
            .values()
            .filter(|d| d.order_id == order_id && d.state == DeliveryState::Approved)
            .min_by_key(|d| (d.requested_at, d.delivery_id.as_str()))
            .map(|d| d.delivery_id.clone())
    }
}

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
            .orders
            .get(d.order_id)
            .map_or(Decimal::ZERO, |o| o.prepaid);
        let free = (account.unapplied_credit - account.earmarked).max(Decimal::ZERO);
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
