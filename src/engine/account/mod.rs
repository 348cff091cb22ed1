//! One customer's credit account: profile, open orders, held orders, open receivables,
//! unapplied credit, and the bounded memory of ids and behaviour the rules and warnings need.
//!
//! The money-bearing fields (live orders, receivables, deliveries, the two hold queues, the
//! cached totals, unapplied and earmarked credit) are private: every money movement goes
//! through the methods here and in `deliveries` (`book_order`, `open_order`, `close_order_as`,
//! `ship`, `settle`, `revalue`, `approve_delivery`, `close_delivery`), which keep the cached
//! totals equal to the items they summarise and end with a debug assertion of the account's
//! bounds (`debug_assert_money`). Readers get shared references (`orders()`, `receivables()`,
//! ...); `check_identity` re-sums everything and is run after every apply in debug builds and
//! by the property tests.

use super::delivery::Delivery;
use crate::model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

pub use super::id_ring::IdRing;
pub use super::items::*;

mod deliveries;
mod identity;

/// What the warnings remember about the customer's behaviour (all bounded).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Behaviour {
    /// Amounts (account currency) of recent non-anomalous orders, newest last.
    #[serde(with = "crate::model::money::dec_deque")]
    pub order_amounts: VecDeque<Decimal>,
    /// Placement times of recent orders, ascending.
    pub order_times: VecDeque<Timestamp>,
    /// The silence (`last order time`) an INACTIVITY alert was already sent for.
    pub inactivity_alerted_for: Option<Timestamp>,
    /// For recent orders: did the order find the account at or above the near-limit utilization.
    pub near_limit: VecDeque<bool>,
    pub settled: VecDeque<SettledItem>,
    /// The last behavioural grade suggested (reset when it matches the profile again).
    pub grade_suggested: Option<Grade>,
    pub limit_decrease_active: bool,
    pub limit_increase_active: bool,
    /// What the warnings derive from `settled`, kept between events; not stored (a restored
    /// account derives it again) and cleared by every change to `settled`.
    #[serde(skip)]
    pub derived: SettledDerived,
}

/// Figures derived from the settled items (see `warnings`), reused while they cannot change.
/// Never part of an account's identity: any two compare equal.
#[derive(Clone, Debug, Default)]
pub struct SettledDerived {
    /// The behavioural grade's window over the settled items.
    pub window: Option<WindowFigures>,
    /// `recent_avg_days_late` and the item count it was derived for.
    pub recent_late: Option<(usize, Option<Decimal>)>,
}

impl PartialEq for SettledDerived {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The sums over the settled items due within the behaviour window, valid for every `now` in
/// `from..until` (no item enters or leaves the window in that span).
#[derive(Clone, Copy, Debug)]
pub struct WindowFigures {
    pub window_days: u32,
    pub from: i64,
    pub until: i64,
    /// `(amount due, collected, net collection rate, average days late)`; `None` when
    /// nothing was due.
    pub figures: Option<(Decimal, Decimal, Decimal, Decimal)>,
}

/// Alert bookkeeping that stops repeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertMarks {
    /// Bit i set: utilization threshold i fired and waits to re-arm.
    pub utilization_fired: u32,
    pub review_warned_for: Option<Timestamp>,
    pub review_expired_for: Option<Timestamp>,
    pub temp_expired_for: Option<Timestamp>,
    /// The exposure and limit the fired bits were last brought up to date for.
    #[serde(skip)]
    pub utilization_seen: UtilizationSeen,
}

/// `(exposure, limit)` at the last threshold evaluation. Crossing is idempotent (a second
/// evaluation at the same figures changes no bit and fires nothing), so while neither moved
/// the evaluation, and its division, can be skipped. A cache: never part of an account's
/// identity (any two compare equal) and not stored (a restored account evaluates again).
#[derive(Clone, Copy, Debug, Default)]
pub struct UtilizationSeen(pub Option<(Decimal, Decimal)>);

impl PartialEq for UtilizationSeen {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// When a shipment or settlement is booked, how many closed ids the account remembers, and
/// how it converts.
pub struct Booking<'a> {
    pub at: Timestamp,
    pub closed_ids_cap: usize,
    pub conv: Conv<'a>,
}

/// One customer's account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub customer_id: String,
    pub profile: Option<CustomerProfile>,
    pub profile_at: Option<Timestamp>,
    /// The account's currency: the profile's, or the first money event's until a profile comes.
    pub currency: Option<Currency>,
    /// Set by `command.block` (the actor), cleared by `command.unblock`.
    pub manual_block: Option<String>,
    /// A behavioural grade applied when the policy lets the engine apply it.
    pub grade_override: Option<Grade>,
    /// Live orders by id (deterministic iteration). Boxed: a B-tree leaf has room for 11
    /// entries, which for 200-byte orders inline is 2.5 KB even for one order.
    orders: BTreeMap<String, Box<Order>>,
    /// Held order ids in release order: (placed_at, order_id).
    holds: Vec<String>,
    /// Open receivables, oldest due first: (due_at, shipment_id).
    receivables: Vec<Receivable>,
    #[serde(with = "crate::model::money::dec")]
    open_orders_total: Decimal,
    #[serde(with = "crate::model::money::dec")]
    receivables_total: Decimal,
    #[serde(with = "crate::model::money::dec")]
    unapplied_credit: Decimal,
    /// Part of unapplied credit earmarked for approved prepaid orders.
    #[serde(with = "crate::model::money::dec")]
    earmarked: Decimal,
    pub recent_event_ids: IdRing,
    /// Closed order ids (`o:`, rejected `r:`, cancelled `c:`), settled shipment ids (`s:`),
    /// payment and credit note ids (`p:`), closed delivery ids (`d:`, rejected `dx:`, cancelled
    /// `dc:`).
    pub closed_ids: IdRing,
    pub pending: Vec<ParkedEvent>,
    pub behaviour: Behaviour,
    pub marks: AlertMarks,
    /// Live deliveries by id: held, or cleared and not yet shipped. Not in the postcard layout
    /// of format 2: snapshots carry them in the account's extension (see `state`).
    #[serde(skip)]
    deliveries: BTreeMap<String, Box<Delivery>>,
    /// Held delivery ids in release order: (requested_at, delivery_id). Derived from
    /// `deliveries` on restore.
    #[serde(skip)]
    held_deliveries: Vec<String>,
}

impl Account {
    pub fn new(customer_id: &str) -> Account {
        Account {
            customer_id: customer_id.to_string(),
            profile: None,
            profile_at: None,
            currency: None,
            manual_block: None,
            grade_override: None,
            orders: BTreeMap::new(),
            holds: Vec::new(),
            receivables: Vec::new(),
            open_orders_total: Decimal::ZERO,
            receivables_total: Decimal::ZERO,
            unapplied_credit: Decimal::ZERO,
            earmarked: Decimal::ZERO,
            recent_event_ids: IdRing::default(),
            closed_ids: IdRing::default(),
            pending: Vec::new(),
            behaviour: Behaviour::default(),
            marks: AlertMarks::default(),
            deliveries: BTreeMap::new(),
            held_deliveries: Vec::new(),
        }
    }

    /// Live orders by id (held and open).
    pub fn orders(&self) -> &BTreeMap<String, Box<Order>> {
        &self.orders
    }

    /// Held order ids in release order.
    pub fn holds(&self) -> &[String] {
        &self.holds
    }

    /// Open receivables, oldest due first.
    pub fn receivables(&self) -> &[Receivable] {
        &self.receivables
    }

    /// Live deliveries by id (held, or cleared and not yet shipped).
    pub fn deliveries(&self) -> &BTreeMap<String, Box<Delivery>> {
        &self.deliveries
    }

    /// Held delivery ids in release order.
    pub fn held_deliveries(&self) -> &[String] {
        &self.held_deliveries
    }

    /// What open orders (and cleared deliveries' excess) reserve, account currency.
    pub fn open_orders_total(&self) -> Decimal {
        self.open_orders_total
    }

    /// The open amount of every receivable, account currency.
    pub fn receivables_total(&self) -> Decimal {
        self.receivables_total
    }

    /// Credit received and not yet applied to a receivable.
    pub fn unapplied_credit(&self) -> Decimal {
        self.unapplied_credit
    }

    /// The part of unapplied credit earmarked for approved prepaid orders and deliveries.
    pub fn earmarked(&self) -> Decimal {
        self.earmarked
    }

    /// Unapplied credit not earmarked (never below zero).
    pub fn free_credit(&self) -> Decimal {
        (self.unapplied_credit - self.earmarked).max(Decimal::ZERO)
    }

    /// Books a new order: reserved at once when `hold` is `None` (approved), else queued as
    /// held, reserving nothing.
    pub fn book_order(
        &mut self,
        order: Order,
        hold: Option<Hold>,
        prepaid: bool,
        closed_ids_cap: usize,
        conv: &Conv<'_>,
    ) {
        let order_id = order.order_id.clone();
        let held = hold.is_some();
        let mut order = Box::new(order);
        order.hold = hold;
        self.orders.insert(order_id.clone(), order);
        if held {
            self.enqueue_hold(&order_id);
        } else {
            self.open_order(&order_id, prepaid, closed_ids_cap, conv);
        }
    }

    /// Sets a held order's value in the account's currency (a re-check found a new rate); it
    /// reserves nothing while held, so no total moves. Returns the order.
    pub fn revalue_held_order(
        &mut self,
        order_id: &str,
        amount_account: Decimal,
    ) -> Option<&Order> {
        let o = self.orders.get_mut(order_id)?;
        debug_assert!(
            o.state == OrderState::Held,
            "revalue_held_order on an open order"
        );
        o.amount_account = amount_account;
        Some(o)
    }

    /// The hold of a held order, to record a first approver (no money moves).
    pub fn order_hold_mut(&mut self, order_id: &str) -> Option<&mut Hold> {
        self.orders.get_mut(order_id).and_then(|o| o.hold.as_mut())
    }

    pub fn exposure_total(&self) -> Decimal {
        self.open_orders_total + self.receivables_total - self.unapplied_credit
    }

    pub fn exposure(&self) -> ExposureView {
        ExposureView {
            open_orders: self.open_orders_total,
            receivables: self.receivables_total,
            unapplied_credit: self.unapplied_credit,
            total: self.exposure_total(),
        }
    }

    /// True if the account holds any money (orders, receivables or credit).
    pub fn holds_money(&self) -> bool {
        !self.open_orders_total.is_zero()
            || !self.receivables_total.is_zero()
            || !self.unapplied_credit.is_zero()
            || !self.holds.is_empty()
            || !self.deliveries.is_empty()
    }

    pub fn group_id(&self) -> Option<&str> {
        self.profile.as_ref().and_then(|p| p.group_id.as_deref())
    }

    /// Is this order id known (live, or closed within memory)?
    pub fn knows_order(&self, order_id: &str) -> bool {
        self.orders.contains_key(order_id)
            || self.closed_ids.contains_prefixed("o:", order_id)
            || self
                .closed_ids
                .contains_prefixed(super::delivery::REJECTED_ORDER, order_id)
            || self
                .closed_ids
                .contains_prefixed(super::delivery::CANCELLED_ORDER, order_id)
    }

    pub fn knows_shipment(&self, shipment_id: &str) -> bool {
        self.receivables.iter().any(|r| r.shipment_id == shipment_id)
            || self.closed_ids.contains_prefixed("s:", shipment_id)
            || self.pending.iter().any(|p| {
                matches!(&p.event.body, EventBody::ShipmentShipped(ShipmentShipped { shipment_id: s, .. }) if s == shipment_id)
            })
    }

    /// Overdue receivables at `now`: (total open amount, oldest item's due moment).
    pub fn overdue(&self, now: Timestamp) -> (Decimal, Option<&Receivable>) {
        let mut total = Decimal::ZERO;
        let mut oldest: Option<&Receivable> = None;
        for r in self.receivables.iter().filter(|r| r.due_at < now) {
            total += r.open;
            if oldest.is_none_or(|o| r.due_at < o.due_at) {
                oldest = Some(r);
            }
        }
        (total, oldest)
    }

    /// Reserves an approved order's remainder as an open order, earmarking unapplied credit
    /// when it is prepaid.
    pub fn open_order(
        &mut self,
        order_id: &str,
        prepaid: bool,
        closed_ids_cap: usize,
        conv: &Conv<'_>,
    ) {
        let free_credit = self.free_credit();
        let Some(order) = self.orders.get_mut(order_id) else {
            return;
        };
        // The first money an account without a profile reserves fixes its currency (as the
        // first receivable does), so a profile in another currency is refused while it is held.
        self.currency.get_or_insert(conv.account);
        let remaining = order_remainder_value(order, conv);
        order.state = OrderState::Open;
        order.hold = None;
        order.open_remaining = remaining;
        order.prepaid = if prepaid {
            remaining.min(free_credit)
        } else {
            Decimal::ZERO
        };
        self.open_orders_total += remaining;
        self.earmarked += order.prepaid;
        self.holds.retain(|id| id != order_id);
        if remaining.is_zero() {
            self.close_order(order_id, closed_ids_cap);
        }
        self.debug_assert_money();
    }

    /// Removes a live order, freeing whatever it still reserves, and remembers its id.
    fn close_order(&mut self, order_id: &str, closed_ids_cap: usize) -> Option<Box<Order>> {
        self.close_order_as(order_id, "o:", closed_ids_cap)
    }

    /// `close_order`, remembering how it ended: `o:` (shipped or closed), `r:` (rejected) or
    /// `c:` (cancelled), one id each (the delivery check asks which).
    pub fn close_order_as(
        &mut self,
        order_id: &str,
        prefix: &str,
        closed_ids_cap: usize,
    ) -> Option<Box<Order>> {
        let order = self.orders.remove(order_id)?;
        self.open_orders_total -= order.open_remaining;
        self.earmarked -= order.prepaid;
        self.holds.retain(|id| id != order_id);
        self.closed_ids
            .insert(super::id_ring::joined(prefix, order_id), closed_ids_cap);
        self.debug_assert_money();
        Some(order)
    }

    /// `close_order` for an order rejected (by a person or hold expiry), remembered as such
    /// for the delivery check.
    pub fn close_rejected_order(&mut self, order_id: &str, closed_ids_cap: usize) {
        self.close_order_as(order_id, super::delivery::REJECTED_ORDER, closed_ids_cap);
    }

    /// Inserts a held order at its place in the FIFO queue.
    fn enqueue_hold(&mut self, order_id: &str) {
        let key = |id: &'_ str| self.orders.get(id).map(|o| (o.placed_at, &*o.order_id));
        let new_key = key(order_id);
        let pos = self
            .holds
            .iter()
            .position(|id| key(id) > new_key)
            .unwrap_or(self.holds.len());
        self.holds.insert(pos, order_id.to_string());
    }

    /// Ships against an order (or none), creating a receivable due at `due_at`; returns it
    /// when it stays open. Unapplied credit (the order's earmark first, then free credit)
    /// settles it at once.
    pub fn ship(
        &mut self,
        shipment_id: &str,
        order_id: &str,
        s: ShipmentAmount,
        due_at: Timestamp,
        b: &Booking<'_>,
    ) -> Option<&Receivable> {
        let (at, closed_ids_cap, conv) = (b.at, b.closed_ids_cap, &b.conv);
        let amount = s.account;
        let mut close = false;
        if let Some(order) = self.orders.get_mut(order_id) {
            order.shipped += if order.currency == s.currency {
                s.own
            } else {
                conv.convert(amount, conv.account, order.currency)
                    .unwrap_or(amount)
            };
            if order.state == OrderState::Open {
                let new_open = order_remainder_value(order, conv);
                let take = (order.open_remaining - new_open).max(Decimal::ZERO);
                order.open_remaining -= take;
                self.open_orders_total -= take;
                let earmark_used = amount.min(order.prepaid);
                order.prepaid -= earmark_used;
                self.earmarked -= earmark_used;
                close = order.open_remaining.is_zero();
            }
        }
        if close {
            self.close_order(order_id, closed_ids_cap);
        }
        let mut r = Receivable {
            shipment_id: shipment_id.to_string(),
            order_id: order_id.to_string(),
            amount,
            open: amount,
            shipped_at: at,
            due_at,
            paid: Decimal::ZERO,
            credited: Decimal::ZERO,
            late_weighted: Decimal::ZERO,
            next_stage: 0,
            foreign: (s.currency != conv.account).then_some(ForeignOpen {
                currency: s.currency,
                open: s.own,
            }),
        };
        // The order's earmark was released above, so free credit now includes it.
        let take = self.free_credit().min(amount);
        if take > Decimal::ZERO {
            let own = r.own_of(take, conv);
            let taken = r.settle_own(SettlementKind::Payment, own, at, conv);
            // Never more credit than there is (a rounding step that did not fit settles nothing).
            self.unapplied_credit -= taken.min(self.unapplied_credit);
        }
        if r.open.is_zero() {
            self.remember_settled(r, at, closed_ids_cap);
            self.debug_assert_money();
            return None;
        }
        self.receivables_total += r.open;
        let key = (r.due_at, r.shipment_id.as_str());
        let pos = self
            .receivables
            .iter()
            .position(|x| (x.due_at, x.shipment_id.as_str()) > key)
            .unwrap_or(self.receivables.len());
        self.receivables.insert(pos, r);
        self.debug_assert_money();
        self.receivables.get(pos)
    }

    /// Applies a payment or credit note: named receivables first, then oldest due first; the
    /// rest stays as unapplied credit. Fully settled items move to the behaviour history; they
    /// are returned as (shipment id, due moment, next aging stage), whose due moments are void.
    ///
    /// `amount` is in `currency`: receivables of that currency are settled before others
    /// (those at the current rate), and what is left becomes credit in the account's currency.
    pub fn settle(
        &mut self,
        kind: SettlementKind,
        amount: Decimal,
        currency: Currency,
        applies_to: &[String],
        b: &Booking<'_>,
    ) -> Vec<(String, Timestamp, u8)> {
        let (at, closed_ids_cap, conv) = (b.at, b.closed_ids_cap, &b.conv);
        let mut remaining = amount;
        let account = conv.account;
        // Settles what `remaining` covers of receivable `i`; returns the amount used.
        let settle_one = |r: &mut Receivable, remaining: Decimal| -> (Decimal, Decimal) {
            let own_currency = r.currency_or(account);
            let (take_own, used) = if own_currency == currency {
                let t = remaining.min(r.open_own());
                (t, t)
            } else {
                let Some(available) = conv.convert(remaining, currency, own_currency) else {
                    return (Decimal::ZERO, Decimal::ZERO);
                };
                if available >= r.open_own() {
                    let used = conv
                        .convert(r.open_own(), own_currency, currency)
                        .map_or(remaining, |u| u.min(remaining));
                    (r.open_own(), used)
                } else {
                    (available, remaining)
                }
            };
            let delta = r.settle_own(kind, take_own, at, conv);
            (delta, used)
        };
        for sid in applies_to {
            if remaining.is_zero() {
                break;
            }
            if let Some(r) = self.receivables.iter_mut().find(|r| &r.shipment_id == sid) {
                let (delta, used) = settle_one(r, remaining);
                remaining -= used;
                self.receivables_total -= delta;
            }
        }
        // Own currency first, then the others at the current rate.
        for own_pass in [true, false] {
            for r in self.receivables.iter_mut() {
                if remaining.is_zero() {
                    break;
                }
                if (r.currency_or(account) == currency) != own_pass {
                    continue;
                }
                let (delta, used) = settle_one(r, remaining);
                remaining -= used;
                self.receivables_total -= delta;
            }
        }
        self.unapplied_credit += conv
            .convert(remaining, currency, account)
            .unwrap_or(remaining);
        let (settled, open): (Vec<_>, Vec<_>) = std::mem::take(&mut self.receivables)
            .into_iter()
            .partition(|r| r.open.is_zero());
        self.receivables = open;
        let mut closed = Vec::with_capacity(settled.len());
        for r in settled {
            closed.push((r.shipment_id.clone(), r.due_at, r.next_stage));
            self.remember_settled(r, at, closed_ids_cap);
        }
        self.debug_assert_money();
        closed
    }

    fn remember_settled(&mut self, r: Receivable, at: Timestamp, closed_ids_cap: usize) {
        self.closed_ids
            .insert(super::id_ring::joined("s:", &r.shipment_id), closed_ids_cap);
        self.behaviour.derived = SettledDerived::default();
        self.behaviour.settled.push_back(SettledItem {
            shipment_id: r.shipment_id,
            amount: r.amount,
            paid: r.paid,
            credited: r.credited,
            late_weighted: r.late_weighted,
            due_at: r.due_at,
            settled_at: at,
        });
    }

    /// Revalues every foreign-currency item at the current rates (open orders' remainders and
    /// receivables); true when anything moved.
    pub fn revalue(&mut self, conv: &Conv<'_>) -> bool {
        let mut moved = false;
        for o in self.orders.values_mut() {
            if o.currency == conv.account || o.state != OrderState::Open {
                continue;
            }
            let new = order_remainder_value(o, conv);
            if new != o.open_remaining {
                self.open_orders_total += new - o.open_remaining;
                o.open_remaining = new;
                moved = true;
            }
            if let Some(a) = conv.convert(o.amount, o.currency, conv.account) {
                o.amount_account = a;
            }
        }
        for r in self.receivables.iter_mut() {
            let Some(f) = r.foreign else { continue };
            let new = conv.value(f.open, f.currency);
            if new != r.open {
                self.receivables_total += new - r.open;
                r.open = new;
                moved = true;
            }
        }
        self.debug_assert_money();
        moved
    }

    /// Records the aging stage a receivable's next alert will be (no money moves).
    pub fn set_next_stage(&mut self, shipment_id: &str, stage: u8) {
        if let Some(r) = self
            .receivables
            .iter_mut()
            .find(|r| r.shipment_id == shipment_id)
        {
            r.next_stage = stage;
        }
    }

    /// Puts back a receivable's foreign-currency side (a snapshot's extension); its value in
    /// the account's currency is already in the restored totals.
    pub fn restore_foreign(&mut self, shipment_id: &str, foreign: ForeignOpen) {
        if let Some(r) = self
            .receivables
            .iter_mut()
            .find(|r| r.shipment_id == shipment_id)
        {
            r.foreign = Some(foreign);
        }
    }

    /// True when the account holds an open item in `currency` (not its own).
    pub fn holds_currency(&self, currency: Currency) -> bool {
        self.orders.values().any(|o| o.currency == currency)
            || self
                .receivables
                .iter()
                .any(|r| r.foreign.is_some_and(|f| f.currency == currency))
            || self.deliveries.values().any(|d| d.currency == currency)
    }
}

/// What an order's unshipped remainder is worth in the account's currency.
fn order_remainder_value(order: &Order, conv: &Conv<'_>) -> Decimal {
    let own = (order.amount - order.shipped).max(Decimal::ZERO);
    if order.currency == conv.account || own.is_zero() {
        own
    } else {
        conv.value(own, order.currency)
    }
}
