//! The engine's side of the delivery check: `delivery.requested` judged and booked, shipments
//! matched to the delivery that cleared them (or flagged `SHIPPED_WITHOUT_RELEASE`), held
//! deliveries re-checked, expired, released or rejected by a person, and the what-if.

use super::account::{Account, Hold};
use super::delivery::*;
use super::outputs::{ends_hold, phase, Ruling, Subject};
use super::{ids, input_error, Cause, Engine, Outcome, TimerKind};
use crate::model::*;
use crate::policy::{days_us, ReleaseOrder};
use rust_decimal::Decimal;
use serde_json::json;
use std::sync::Arc;

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

    /// A delivery request the engine does not decide: a repeat (the same: a duplicate; a
    /// different one under the same id: dead-lettered, the first kept), or one past the
    /// account's bound on live deliveries.
    fn screen_delivery(
        &self,
        cid: &str,
        event: &Event,
        req: &DeliveryRequest,
        out: &mut Vec<Output>,
    ) -> Option<Outcome> {
        let acc = &self.accounts[cid];
        if acc.knows_delivery(&req.delivery_id) {
            if let Some(first) = acc.deliveries().get(&req.delivery_id).filter(|d| {
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
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::DuplicateConflict,
                    detail,
                )));
                return Some(Outcome::Rejected);
            }
            return Some(Outcome::Duplicate);
        }
        if acc.deliveries().len() >= self.policy.bounds.items_per_account {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "account {cid} has {} live deliveries (limits.items_per_account); delivery {} is not decided",
                    acc.deliveries().len(),
                    req.delivery_id
                ),
            )));
            return Some(Outcome::Rejected);
        }
        None
    }

    /// `delivery.requested`: judged by the delivery check against the account as it stands and
    /// booked held (queued, with a hold-expiry moment) or cleared, with its decision.
    pub(super) fn on_delivery_requested(
        &mut self,
        cid: &str,
        event: &Event,
        req: &DeliveryRequest,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        if let Some(outcome) = self.screen_delivery(cid, event, req, out) {
            return outcome;
        }
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        let acc = &self.accounts[cid];
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
        acc.book_delivery(
            Delivery {
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
            },
            prepay,
        );
        let status = if held {
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
            DecisionStatus::Approved
        };
        let d = self.delivery_decision(
            cid,
            &req.delivery_id,
            Ruling::engine(status, reasons),
            cause,
        );
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
        let EventBody::ShipmentShipped(ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            delivery_id,
            ..
        }) = &event.body
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
            Subject::customer(cid),
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
            .deliveries()
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
                    Ruling::engine(DecisionStatus::Cancelled, Vec::new()),
                    cause,
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
    pub(super) fn on_delivery_command(
        &mut self,
        cid: &str,
        event: &Event,
        command: &Command,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let release = command.kind == CommandKind::ReleaseDelivery;
        let delivery_id = command.delivery_id.as_deref().unwrap_or_default();
        let (actor, note) = (command.actor.as_str(), command.note.as_str());
        let cap = self.policy.bounds.closed_ids_per_account;
        let held = self.accounts[cid]
            .deliveries()
            .get(delivery_id)
            .filter(|d| d.state == DeliveryState::Held);
        let Some(delivery) = held else {
            out.push(Output::DeadLetter(input_error(
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
                Ruling::person(DecisionStatus::Rejected, reasons, actor, note),
                cause,
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
                if let Some(h) = self.account_mut(cid).delivery_hold_mut(delivery_id) {
                    h.first_approver = Some(actor.to_string());
                }
                self.touch(cid);
                return Outcome::Applied;
            }
            (true, Some(first)) if first == actor => {
                out.push(Output::DeadLetter(input_error(
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
            Ruling::person(DecisionStatus::Released, reasons, actor, note),
            cause,
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
            if acc.held_deliveries().is_empty() {
                continue;
            }
            let queue = acc.held_deliveries().to_vec();
            for id in queue {
                let acc = &self.accounts[c];
                let Some(d) = acc.deliveries().get(&id) else {
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
                    if let Some(a) = amount_account {
                        acc.revalue_held_delivery(&id, a);
                    }
                    acc.approve_delivery(&id, prepay);
                    let dec = self.delivery_decision(
                        c,
                        &id,
                        Ruling::engine(DecisionStatus::Released, Vec::new()),
                        cause,
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
            .and_then(|a| a.deliveries().get(delivery_id))
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
            Ruling::engine(DecisionStatus::Rejected, reasons),
            &expired_cause,
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
        let acc = &*self.account_or_new(customer_id);
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
    fn delivery_decision(
        &self,
        cid: &str,
        delivery_id: &str,
        ruling: Ruling<'_>,
        cause: &Cause,
    ) -> Option<DeliveryDecision> {
        let (actor, note) = (ruling.actor(), ruling.note());
        let status = ruling.status;
        let acc = &self.accounts[cid];
        let d = acc.deliveries().get(delivery_id)?;
        let terms = self.terms(cid);
        let s = self.standing(acc, terms.as_ref(), d.currency);
        Some(DeliveryDecision {
            delivery_decision_id: ids::delivery_decision_id(cid, delivery_id, phase(status)),
            delivery_id: delivery_id.to_string(),
            order_id: d.order_id.clone(),
            customer_id: cid.to_string(),
            status,
            reasons: ruling.reasons,
            amount: d.amount,
            currency: d.currency,
            exposure: s.exposure,
            credit_limit: s.limit,
            available: s.limit.map(|l| l - s.exposure.total),
            decided_at: cause.at,
            source_event_id: cause.source.clone(),
            actor,
            utilization: s.utilization,
            excess: d.excess,
            hold_decision_id: ends_hold(status)
                .then(|| ids::delivery_decision_id(cid, delivery_id, "initial")),
            note,
            amount_account_currency: s.fx_rate.as_ref().map(|_| d.amount_account),
            fx_rate: s.fx_rate,
        })
    }
}
