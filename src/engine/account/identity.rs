//! The exposure identity of one account: the cheap bounds every money movement asserts in
//! debug builds, and the full check that re-sums every item (after every `apply` in debug
//! builds, after every event in the property tests).

use super::Account;
use crate::engine::account::OrderState;
use crate::engine::delivery::DeliveryState;
use rust_decimal::Decimal;

impl Account {
    /// The bounds every money movement keeps, asserted in debug builds at the end of each (the
    /// cheap half of `check_identity`: no sums over the items).
    pub(super) fn debug_assert_money(&self) {
        debug_assert!(
            self.open_orders_total >= Decimal::ZERO,
            "{}: open orders {} below zero",
            self.customer_id,
            self.open_orders_total
        );
        debug_assert!(
            self.receivables_total >= Decimal::ZERO,
            "{}: receivables {} below zero",
            self.customer_id,
            self.receivables_total
        );
        debug_assert!(
            Decimal::ZERO <= self.earmarked && self.earmarked <= self.unapplied_credit,
            "{}: earmarked {} outside 0..=credit {}",
            self.customer_id,
            self.earmarked,
            self.unapplied_credit
        );
    }

    /// Recomputes every cached total from the items; `Err` names the first that disagrees.
    pub fn check_identity(&self) -> Result<(), String> {
        let approved = || {
            self.deliveries
                .values()
                .filter(|d| d.state == DeliveryState::Approved)
        };
        let open: Decimal = self
            .orders
            .values()
            .map(|o| o.open_remaining)
            .sum::<Decimal>()
            + approved().map(|d| d.excess).sum::<Decimal>();
        let rec: Decimal = self.receivables.iter().map(|r| r.open).sum();
        let earmarked: Decimal = self.orders.values().map(|o| o.prepaid).sum::<Decimal>()
            + approved().map(|d| d.prepaid).sum::<Decimal>();
        let id = &self.customer_id;
        if open != self.open_orders_total {
            return Err(format!(
                "{id}: open orders {open} != cached {}",
                self.open_orders_total
            ));
        }
        if rec != self.receivables_total {
            return Err(format!(
                "{id}: receivables {rec} != cached {}",
                self.receivables_total
            ));
        }
        if earmarked != self.earmarked || earmarked > self.unapplied_credit {
            return Err(format!(
                "{id}: earmarked {earmarked} / cached {} / credit {}",
                self.earmarked, self.unapplied_credit
            ));
        }
        if self.unapplied_credit < Decimal::ZERO
            || self.receivables.iter().any(|r| r.open <= Decimal::ZERO)
        {
            return Err(format!("{id}: negative credit or a settled item left open"));
        }
        // The queue holds exactly the held orders: as many, each one held (a lookup each,
        // not a scan of the queue per held order: accounts can hold thousands).
        let held = self
            .orders
            .values()
            .filter(|o| o.state == OrderState::Held)
            .count();
        let queued: std::collections::BTreeSet<&str> =
            self.holds.iter().map(String::as_str).collect();
        if held != self.holds.len()
            || queued.len() != self.holds.len()
            || self.holds.iter().any(|id| {
                self.orders
                    .get(id)
                    .is_none_or(|o| o.state != OrderState::Held)
            })
        {
            return Err(format!("{id}: hold queue does not match held orders"));
        }
        if self
            .orders
            .values()
            .any(|o| o.state == OrderState::Held && !o.open_remaining.is_zero())
        {
            return Err(format!("{id}: a held order counts in exposure"));
        }
        let held_deliveries = self
            .deliveries
            .values()
            .filter(|d| d.state == DeliveryState::Held);
        let queued_deliveries: std::collections::BTreeSet<&str> =
            self.held_deliveries.iter().map(String::as_str).collect();
        if held_deliveries.clone().count() != self.held_deliveries.len()
            || queued_deliveries.len() != self.held_deliveries.len()
            || held_deliveries.clone().any(|d| {
                !(queued_deliveries.contains(d.delivery_id.as_str())
                    && d.excess.is_zero()
                    && d.prepaid.is_zero())
            })
        {
            return Err(format!(
                "{id}: delivery queue does not match held deliveries, or a held one reserves"
            ));
        }
        Ok(())
    }
}
