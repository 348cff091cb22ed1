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

use super::account::{Account, Hold, OrderState};
use super::rules::Terms;
use super::{ids, rejection, warnings, Cause, Engine, Outcome, TimerKind};
use crate::model::*;
use crate::policy::{days_us, Policy, ReleaseOrder};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

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

    fn approved(self) -> bool {
        matches!(self, OrderStanding::Open | OrderStanding::Shipped)
    }
}

/// Closed-id prefixes, one id per closed item: deliveries shipped (`d:`), rejected (`dx:`) or
/// cancelled (`dc:`); orders rejected (`r:`) or cancelled (`c:`) beside `o:` for the others.
pub(super) const CLOSED_DELIVERY: &str = "d:";
const REJECTED_DELIVERY: &str = "dx:";
const CANCELLED_DELIVERY: &str = "dc:";
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
    fn delivery_for_shipment(&self, order_id: &str, named: Option<&str>) -> Option<String> {
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

fn m(v: Decimal) -> String {
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
fn needs_person(reasons: &[Reason]) -> bool {
    reasons
        .iter()
        .any(|r| r.code == ReasonCode::CurrencyMismatch)
}

/// A delivery hold that blocks no other delivery: waiting for its order or for a person.
fn blocks_nothing(reasons: &[Reason]) -> bool {
    needs_person(reasons)
        || reasons
            .iter()
            .all(|r| r.code == ReasonCode::OrderNotApproved)
}

impl Engine {
    /// The delivery's amount in the account's currency (`None`: no FX rate).
    fn delivery_amount_account(
        &self,
        acc: &Account,
        amount: Decimal,
        currency: Currency,
    ) -> Option<Decimal> {
        let terms = super::rules::terms(acc, &self.policy, self.now());
        match terms.map(|t| t.currency).or(acc.currency) {
            Some(c) => self.rates.convert(amount, currency, c),
            None => Some(amount),
        }
    }

    pub(super) fn on_delivery_requested(
        &mut self,
        cid: &str,
        event: &Event,
        req: &DeliveryRequest,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        let acc = &self.accounts[cid];
        if acc.knows_delivery(&req.delivery_id) {
            if let Some(first) = acc.deliveries.get(&req.delivery_id).filter(|d| {
                d.order_id != req.order_id || d.amount != req.amount || d.currency != req.currency
            }) {
                let detail = format!(
                    "delivery {} was requested before for order {}, {} {}; this one says order {}, {} {}; the first is kept",
                    req.delivery_id,
                    first.order_id,
                    format_money(first.amount),
                    first.currency,
                    req.order_id,
                    format_money(req.amount),
                    req.currency
                );
                out.push(Output::Rejection(rejection(
                    event,
                    ErrorCode::DuplicateConflict,
                    detail,
                )));
                return Outcome::Rejected;
            }
            return Outcome::Duplicate;
        }
        if acc.deliveries.len() >= policy.bounds.items_per_account {
            out.push(Output::Rejection(rejection(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "account {cid} has {} live deliveries (limits.items_per_account); delivery {} is not decided",
                    acc.deliveries.len(),
                    req.delivery_id
                ),
            )));
            return Outcome::Rejected;
        }
        let terms = super::rules::terms(acc, &policy, now);
        let amount_account = self.delivery_amount_account(acc, req.amount, req.currency);
        let check = DeliveryCheck {
            delivery_id: &req.delivery_id,
            order_id: &req.order_id,
            amount_account,
            amount: req.amount,
            currency: req.currency,
        };
        let reasons = check_delivery(acc, terms.as_ref(), &policy, now, &check);
        let prepay = terms.as_ref().is_some_and(|t| t.prepay);
        let held = !reasons.is_empty();
        let acc = self.accounts.get_mut(cid).expect("account exists");
        acc.deliveries.insert(
            req.delivery_id.clone(),
            Box::new(Delivery {
                delivery_id: req.delivery_id.clone(),
                order_id: req.order_id.clone(),
                amount: req.amount,
                currency: req.currency,
                amount_account: amount_account.unwrap_or(req.amount),
                requested_at: event.occurred_at,
                requested_event_id: event.event_id.clone(),
                state: DeliveryState::Held,
                covered: Decimal::ZERO,
                excess: Decimal::ZERO,
                prepaid: Decimal::ZERO,
                hold: held.then(|| Hold {
                    reasons: reasons.clone(),
                    held_at: event.occurred_at,
                    first_approver: None,
                }),
            }),
        );
        let status = if held {
            acc.enqueue_delivery(&req.delivery_id);
            if policy.hold_expiry_days > 0 {
                let at = event
                    .occurred_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1);
                self.schedule(
                    at,
                    cid,
                    TimerKind::DeliveryHoldExpiry {
                        delivery_id: req.delivery_id.clone(),
                    },
                );
            }
            DecisionStatus::Held
        } else {
            acc.approve_delivery(&req.delivery_id, prepay);
            DecisionStatus::Approved
        };
        let d = self.delivery_decision(cid, &req.delivery_id, status, reasons, cause, None, None);
        out.extend(d.map(Output::DeliveryDecision));
        self.touch(cid);
        Outcome::Applied
    }

    /// Judges a shipment as it arrives: `SHIPPED_WITHOUT_RELEASE` when its order is not
    /// approved or the delivery it names is held or rejected. The receivable is booked anyway.
    pub(super) fn judge_shipment(
        &self,
        cid: &str,
        event: &Event,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let EventBody::ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            delivery_id,
            ..
        } = &event.body
        else {
            return;
        };
        let acc = &self.accounts[cid];
        if acc.knows_shipment(shipment_id) {
            return;
        }
        let delivery_id = delivery_id.as_deref();
        let order = acc.order_standing(order_id);
        let delivery = delivery_id.map(|id| acc.delivery_standing(id));
        if order.approved() && !matches!(delivery, Some("held" | "rejected")) {
            return;
        }
        let alert = self.alert(
            AlertKind::ShippedWithoutRelease,
            Severity::Critical,
            Some(cid),
            None,
            cause.at,
            shipment_id,
            vec![
                ("shipment_id", json!(shipment_id)),
                ("order_id", json!(order_id)),
                ("order_status", json!(order.as_str())),
                ("delivery_id", json!(delivery_id)),
                ("delivery_status", json!(delivery)),
                ("amount", json!(format_money(*amount))),
                ("currency", json!(currency.as_str())),
                ("source_event_id", json!(cause.source)),
            ],
        );
        out.push(Output::Alert(alert));
    }

    /// Before a shipment books its receivable: the approved delivery it carries out stops
    /// reserving (its excess leaves open orders; its earmark becomes free credit the shipment
    /// then consumes).
    pub(super) fn ship_delivery(&mut self, cid: &str, order_id: &str, named: Option<&str>) {
        let cap = self.policy.bounds.closed_ids_per_account;
        let acc = self.account_mut(cid);
        if let Some(id) = acc.delivery_for_shipment(order_id, named) {
            acc.close_delivery(&id, None, cap);
        }
    }

    /// An order was cancelled: its held deliveries are cancelled, its approved ones freed.
    pub(super) fn cancel_order_deliveries(
        &mut self,
        cid: &str,
        order_id: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let cap = self.policy.bounds.closed_ids_per_account;
        let acc = &self.accounts[cid];
        let mut ids: Vec<(Timestamp, String, DeliveryState)> = acc
            .deliveries
            .values()
            .filter(|d| d.order_id == order_id)
            .map(|d| (d.requested_at, d.delivery_id.clone(), d.state))
            .collect();
        ids.sort();
        for (_, id, state) in ids {
            if state == DeliveryState::Held {
                let d = self.delivery_decision(
                    cid,
                    &id,
                    DecisionStatus::Cancelled,
                    Vec::new(),
                    cause,
                    None,
                    None,
                );
                out.extend(d.map(Output::DeliveryDecision));
                self.account_mut(cid)
                    .close_delivery(&id, Some(CANCELLED_DELIVERY), cap);
            } else {
                self.account_mut(cid).close_delivery(&id, None, cap);
            }
        }
    }

    /// `command.release_delivery` / `command.reject_delivery`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_delivery_command(
        &mut self,
        cid: &str,
        event: &Event,
        release: bool,
        delivery_id: &str,
        actor: &str,
        note: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let cap = self.policy.bounds.closed_ids_per_account;
        let held = self.accounts[cid]
            .deliveries
            .get(delivery_id)
            .filter(|d| d.state == DeliveryState::Held);
        let Some(delivery) = held else {
            out.push(Output::Rejection(rejection(
                event,
                ErrorCode::DeliveryNotHeld,
                format!("delivery {delivery_id} is not held for customer {cid}"),
            )));
            return Outcome::Rejected;
        };
        if !release {
            let reasons = vec![Reason {
                code: ReasonCode::Manual,
                detail: format!("rejected by {actor}: {note}"),
            }];
            let d = self.delivery_decision(
                cid,
                delivery_id,
                DecisionStatus::Rejected,
                reasons,
                cause,
                Some(actor),
                Some(note),
            );
            out.extend(d.map(Output::DeliveryDecision));
            self.account_mut(cid)
                .close_delivery(delivery_id, Some(REJECTED_DELIVERY), cap);
            self.touch(cid);
            self.recheck_holds(cid, cause, out);
            return Outcome::Applied;
        }
        let four_eyes = self
            .policy
            .four_eyes_amount
            .is_some_and(|max| delivery.amount_account > max);
        let first = delivery
            .hold
            .as_ref()
            .and_then(|h| h.first_approver.clone());
        let detail = match (four_eyes, first) {
            (false, _) => format!("released by {actor}: {note}"),
            (true, None) => {
                if let Some(h) = self
                    .account_mut(cid)
                    .deliveries
                    .get_mut(delivery_id)
                    .and_then(|d| d.hold.as_mut())
                {
                    h.first_approver = Some(actor.to_string());
                }
                self.touch(cid);
                return Outcome::Applied;
            }
            (true, Some(first)) if first == actor => {
                out.push(Output::Rejection(rejection(
                    event,
                    ErrorCode::FourEyesSameActor,
                    format!("delivery {delivery_id} needs a second approver other than {actor}"),
                )));
                return Outcome::Rejected;
            }
            (true, Some(first)) => {
                format!("released by {actor} (second approval; first by {first}): {note}")
            }
        };
        let prepay = self.terms(cid).is_some_and(|t| t.prepay);
        self.account_mut(cid).approve_delivery(delivery_id, prepay);
        let reasons = vec![Reason {
            code: ReasonCode::Manual,
            detail,
        }];
        let d = self.delivery_decision(
            cid,
            delivery_id,
            DecisionStatus::Released,
            reasons,
            cause,
            Some(actor),
            Some(note),
        );
        out.extend(d.map(Output::DeliveryDecision));
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        Outcome::Applied
    }

    /// The delivery pass of a re-check, after the order pass: each member's held deliveries,
    /// oldest first. Under strict FIFO a delivery that still fails a credit rule blocks its
    /// customer's later deliveries; one waiting for its order or for a person blocks nothing.
    pub(super) fn recheck_deliveries(
        &mut self,
        members: &[String],
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        let strict = policy.release_order == ReleaseOrder::StrictFifo;
        let now = self.now();
        for c in members {
            let Some(acc) = self.accounts.get(c) else {
                continue;
            };
            if acc.held_deliveries.is_empty() {
                continue;
            }
            let queue = acc.held_deliveries.clone();
            for id in queue {
                let acc = &self.accounts[c];
                let Some(d) = acc.deliveries.get(&id) else {
                    continue;
                };
                if d.hold.as_ref().is_some_and(|h| needs_person(&h.reasons)) {
                    continue;
                }
                let terms = super::rules::terms(acc, &policy, now);
                let amount_account = self.delivery_amount_account(acc, d.amount, d.currency);
                let check = DeliveryCheck {
                    delivery_id: &id,
                    order_id: &d.order_id,
                    amount_account,
                    amount: d.amount,
                    currency: d.currency,
                };
                let reasons = check_delivery(acc, terms.as_ref(), &policy, now, &check);
                if reasons.is_empty() {
                    let prepay = terms.as_ref().is_some_and(|t| t.prepay);
                    let acc = self.account_mut(c);
                    if let (Some(d), Some(a)) = (acc.deliveries.get_mut(&id), amount_account) {
                        d.amount_account = a;
                    }
                    acc.approve_delivery(&id, prepay);
                    let dec = self.delivery_decision(
                        c,
                        &id,
                        DecisionStatus::Released,
                        Vec::new(),
                        cause,
                        None,
                        None,
                    );
                    out.extend(dec.map(Output::DeliveryDecision));
                    self.touch(c);
                } else if strict && !blocks_nothing(&reasons) {
                    break;
                }
            }
        }
    }

    /// Hold expiry of a delivery: rejected `HOLD_EXPIRED`, and the queues behind re-checked.
    pub(super) fn expire_delivery(
        &mut self,
        cid: &str,
        delivery_id: &str,
        timer_at: Timestamp,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        let Some(d) = self
            .accounts
            .get(cid)
            .and_then(|a| a.deliveries.get(delivery_id))
            .filter(|d| d.state == DeliveryState::Held)
        else {
            return;
        };
        if d.requested_at.plus_us(days_us(policy.hold_expiry_days) + 1) != timer_at {
            return;
        }
        let expired_cause = Cause {
            source: d.requested_event_id.clone(),
            at: cause.at,
            fx: false,
        };
        let reasons = vec![Reason {
            code: ReasonCode::HoldExpired,
            detail: format!("held longer than {} days", policy.hold_expiry_days),
        }];
        let dec = self.delivery_decision(
            cid,
            delivery_id,
            DecisionStatus::Rejected,
            reasons,
            &expired_cause,
            None,
            None,
        );
        out.extend(dec.map(Output::DeliveryDecision));
        self.account_mut(cid).close_delivery(
            delivery_id,
            Some(REJECTED_DELIVERY),
            policy.bounds.closed_ids_per_account,
        );
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
    }

    /// What the delivery check would decide now for goods of `order_id`, changing nothing.
    pub fn simulate_delivery(
        &self,
        customer_id: &str,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
    ) -> (DecisionStatus, Vec<Reason>) {
        let blank;
        let acc = match self.accounts.get(customer_id) {
            Some(a) => a,
            None => {
                blank = Account::new(customer_id);
                &blank
            }
        };
        let terms = super::rules::terms(acc, &self.policy, self.now());
        let check = DeliveryCheck {
            delivery_id: "",
            order_id,
            amount_account: self.delivery_amount_account(acc, amount, currency),
            amount,
            currency,
        };
        let reasons = check_delivery(acc, terms.as_ref(), &self.policy, self.now(), &check);
        let status = if reasons.is_empty() {
            DecisionStatus::Approved
        } else {
            DecisionStatus::Held
        };
        (status, reasons)
    }

    /// The record of a decision about a live delivery, with the account as it stands now.
    #[allow(clippy::too_many_arguments)]
    fn delivery_decision(
        &self,
        cid: &str,
        delivery_id: &str,
        status: DecisionStatus,
        reasons: Vec<Reason>,
        cause: &Cause,
        actor: Option<&str>,
        note: Option<&str>,
    ) -> Option<DeliveryDecision> {
        let acc = &self.accounts[cid];
        let d = acc.deliveries.get(delivery_id)?;
        let terms = self.terms(cid);
        let exposure = acc.exposure();
        let limit = terms.as_ref().map(|t| t.limit_effective);
        let foreign = terms
            .as_ref()
            .map(|t| t.currency)
            .or(acc.currency)
            .filter(|c| *c != d.currency)
            .map(|c| (d.currency, c))
            .filter(|(from, to)| self.rates.multiplier(*from, *to).is_some());
        let phase = match status {
            DecisionStatus::Approved | DecisionStatus::Held => "initial",
            other => other.as_str(),
        };
        let ends_hold = matches!(
            status,
            DecisionStatus::Released | DecisionStatus::Rejected | DecisionStatus::Cancelled
        );
        Some(DeliveryDecision {
            delivery_decision_id: ids::delivery_decision_id(cid, delivery_id, phase),
            delivery_id: delivery_id.to_string(),
            order_id: d.order_id.clone(),
            customer_id: cid.to_string(),
            status,
            reasons,
            amount: d.amount,
            currency: d.currency,
            exposure,
            credit_limit: limit,
            available: limit.map(|l| l - exposure.total),
            decided_at: cause.at,
            source_event_id: cause.source.clone(),
            actor: actor.map(str::to_string),
            utilization: limit.map(|l| match warnings::utilization(exposure.total, l) {
                Some(u) => format_ratio(u),
                None => "unbounded".to_string(),
            }),
            excess: d.excess,
            hold_decision_id: ends_hold
                .then(|| ids::delivery_decision_id(cid, delivery_id, "initial")),
            note: note.map(str::to_string),
            amount_account_currency: foreign.map(|_| d.amount_account),
            fx_rate: foreign.map(|(from, to)| {
                self.rates
                    .multiplier(from, to)
                    .map_or_else(String::new, |r| r.normalize().to_string())
            }),
        })
    }
}
