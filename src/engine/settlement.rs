//! Shipments and settlement: conversion into the account currency, shipments booking receivables, and payments and credit notes applied to them.

use super::*;

impl Engine {
    /// Converts an amount into the account's currency, adopting the event's currency on an
    /// account that has none yet. `Err` is the rejection detail.
    pub(super) fn convert_for_account(
        &mut self,
        cid: &str,
        amount: Decimal,
        currency: Currency,
    ) -> Result<Decimal, String> {
        let acc = self.account_mut(cid);
        // An account without a currency yet (no profile, no default limit, no money) takes
        // its first order's, when it has orders (they are booked in theirs): a payment or
        // shipment in another currency is then converted instead of re-denominating them.
        let first_order = acc
            .orders()
            .values()
            .min_by_key(|o| (o.placed_at, o.order_id.as_str()))
            .map(|o| o.currency);
        let acc_currency = *acc.currency.get_or_insert(first_order.unwrap_or(currency));
        self.rates
            .convert(amount, currency, acc_currency)
            .ok_or_else(|| {
                format!("{currency} amount on a {acc_currency} account and no FX rate configured")
            })
    }

    pub(super) fn on_shipment(
        &mut self,
        cid: &str,
        event: &Event,
        shipment: &ShipmentShipped,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            ..
        } = shipment;
        let (shipment_id, order_id) = (shipment_id.as_str(), order_id.as_str());
        let (amount, currency) = (*amount, *currency);
        let acc = &self.accounts[cid];
        if acc.knows_shipment(shipment_id) {
            let booked = acc
                .receivables()
                .iter()
                .find(|r| r.shipment_id == shipment_id)
                .map(|r| (r.order_id.as_str(), r.foreign.map_or(r.amount, |_| amount)));
            if let Some((first_order, first_amount)) = booked
                .filter(|(o, a)| *o != order_id || (acc.currency == Some(currency) && *a != amount))
            {
                let detail = format!(
                    "shipment {shipment_id} was booked before for order {first_order}, {}; this one says order {order_id}, {}; the first is kept",
                    format_money(first_amount),
                    format_money(amount)
                );
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::DuplicateConflict,
                    detail,
                )));
                return Outcome::Rejected;
            }
            return Outcome::Duplicate;
        }
        if !acc.knows_order(order_id) {
            return self.park(cid, event, out);
        }
        self.ship(cid, event, shipment, out)
    }

    /// Books a shipment (against its order, or none when the order never came).
    pub(super) fn ship(
        &mut self,
        cid: &str,
        event: &Event,
        shipment: &ShipmentShipped,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            due_at,
            delivery_id: named_delivery,
        } = shipment;
        let (shipment_id, order_id) = (shipment_id.as_str(), order_id.as_str());
        let (amount, currency, due_at) = (*amount, *currency, *due_at);
        let open = self.accounts[cid].receivables().len();
        if open >= self.policy.bounds.items_per_account {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "account {cid} has {open} open receivables (limits.items_per_account); shipment {shipment_id} is not booked"
                ),
            )));
            return Outcome::Rejected;
        }
        let shipped = match self.convert_for_account(cid, amount, currency) {
            Ok(a) => ShipmentAmount {
                account: a,
                own: amount,
                currency,
            },
            Err(detail) => {
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::CurrencyMismatch,
                    detail,
                )));
                return Outcome::Rejected;
            }
        };
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        let acc = &self.accounts[cid];
        let terms_days = rules::terms(acc, &policy, now)
            .map_or(policy.grade(policy.default_grade).payment_terms_days, |t| {
                t.payment_terms_days
            });
        let due = due_at.unwrap_or_else(|| event.occurred_at.plus_days(i64::from(terms_days)));
        self.ship_delivery(cid, order_id, named_delivery.as_deref());
        let cap = policy.bounds.closed_ids_per_account;
        let conv = Conv {
            rates: &self.rates,
            account: self.accounts[cid].currency.unwrap_or(currency),
        };
        let booking = Booking {
            at: event.occurred_at,
            closed_ids_cap: cap,
            conv,
        };
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let open_item = acc
            .ship(shipment_id, order_id, shipped, due, &booking)
            .map(|r| (r.due_at, r.shipment_id.clone()));
        if let Some((due, sid)) = open_item {
            self.schedule(
                due.plus_us(1),
                cid,
                TimerKind::Receivable {
                    shipment_id: sid,
                    stage: 0,
                },
            );
        }
        self.touch(cid);
        Outcome::Applied
    }

    pub(super) fn on_settlement(
        &mut self,
        cid: &str,
        event: &Event,
        settlement: &Settlement,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let Settlement {
            kind,
            settlement_id,
            amount,
            currency,
            applies_to,
        } = settlement;
        let (kind, amount, currency) = (*kind, *amount, *currency);
        let settlement_id = settlement_id.as_str();
        let key = id_ring::joined("p:", settlement_id);
        if self.accounts[cid].closed_ids.contains(&key) {
            return Outcome::Duplicate;
        }
        if let Err(detail) = self.convert_for_account(cid, amount, currency) {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CurrencyMismatch,
                detail,
            )));
            return Outcome::Rejected;
        }
        let cap = self.policy.bounds.closed_ids_per_account;
        let history_cap = self.policy.bounds.settled_history_per_account;
        let conv = Conv {
            rates: &self.rates,
            account: self.accounts[cid].currency.unwrap_or(currency),
        };
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let booking = Booking {
            at: event.occurred_at,
            closed_ids_cap: cap,
            conv,
        };
        let settled = acc.settle(kind, amount, currency, applies_to, &booking);
        acc.closed_ids.insert(key, cap);
        while acc.behaviour.settled.len() > history_cap {
            acc.behaviour.settled.pop_front();
            acc.behaviour.derived = account::SettledDerived::default();
        }
        // A settled item's next aging moment would fire as a no-op: drop it from the index,
        // which then stays bounded by the open items rather than by the payment rate.
        for (shipment_id, due_at, stage) in settled {
            if let Some(at) = receivable_timer_at(&self.policy, due_at, stage) {
                self.timers.remove(&Timer {
                    at,
                    customer_id: cid.to_string(),
                    kind: TimerKind::Receivable { shipment_id, stage },
                });
            }
        }
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        Outcome::Applied
    }
}
