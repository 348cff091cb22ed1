//! The account's side of the delivery check: how an order or delivery stands, and the money
//! movements of a delivery (cleared: its excess joins open orders and, under pay-before-ship,
//! it earmarks credit; closed: both freed). The check itself is `engine::delivery`.

use super::Account;
use crate::engine::account::{Hold, OrderState};
use crate::engine::delivery::{
    Delivery, DeliveryState, OrderStanding, CANCELLED_DELIVERY, CANCELLED_ORDER, CLOSED_DELIVERY,
    REJECTED_DELIVERY, REJECTED_ORDER,
};
use rust_decimal::Decimal;

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
            let extra = (amount - earmark).min(self.free_credit());
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
        self.debug_assert_money();
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
            .insert(crate::engine::id_ring::joined(prefix, delivery_id), cap);
        self.debug_assert_money();
    }

    /// Inserts a held delivery at its place in the delivery queue: (requested_at, id).
    fn enqueue_delivery(&mut self, delivery_id: &str) {
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
    pub(crate) fn delivery_for_shipment(
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

    /// Books a new delivery request, held (queued, reserving nothing) or cleared at once
    /// (`approve_delivery`).
    pub fn book_delivery(&mut self, delivery: Delivery, prepaid: bool) {
        debug_assert!(
            delivery.state == DeliveryState::Held
                && delivery.covered.is_zero()
                && delivery.excess.is_zero()
                && delivery.prepaid.is_zero(),
            "a new delivery reserves nothing until it is cleared"
        );
        let id = delivery.delivery_id.clone();
        let held = delivery.hold.is_some();
        self.deliveries.insert(id.clone(), Box::new(delivery));
        if held {
            self.enqueue_delivery(&id);
        } else {
            self.approve_delivery(&id, prepaid);
        }
    }

    /// Sets a held delivery's value in the account's currency (a re-check found a new rate);
    /// it reserves nothing while held, so no total moves.
    pub fn revalue_held_delivery(&mut self, delivery_id: &str, amount_account: Decimal) {
        if let Some(d) = self.deliveries.get_mut(delivery_id) {
            debug_assert!(
                d.state == DeliveryState::Held,
                "revalue of a cleared delivery"
            );
            d.amount_account = amount_account;
        }
    }

    /// The hold of a held delivery, to record a first approver (no money moves).
    pub fn delivery_hold_mut(&mut self, delivery_id: &str) -> Option<&mut Hold> {
        self.deliveries
            .get_mut(delivery_id)
            .and_then(|d| d.hold.as_mut())
    }

    /// Puts restored deliveries back (a snapshot's extension): cleared ones already count in
    /// the restored totals; the held queue is rebuilt in release order.
    pub fn restore_deliveries(&mut self, deliveries: impl IntoIterator<Item = Delivery>) {
        for d in deliveries {
            self.deliveries.insert(d.delivery_id.clone(), Box::new(d));
        }
        let mut held: Vec<(crate::model::Timestamp, &str)> = self
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Held)
            .map(|d| (d.requested_at, d.delivery_id.as_str()))
            .collect();
        held.sort();
        self.held_deliveries = held.into_iter().map(|(_, id)| id.to_string()).collect();
    }
}
