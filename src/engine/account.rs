//! One customer's credit account: profile, open orders, held orders, open receivables,
//! unapplied credit, and the bounded memory of ids and behaviour the rules and warnings need.
//!
//! Every money movement goes through the methods here (`reserve`, `ship`, `settle`, `cancel`),
//! which keep the cached totals equal to the items they summarise; `check_identity` verifies
//! that exposure = open orders + receivables - unapplied credit after every apply.

use super::delivery::{Delivery, DeliveryState};
use super::fx::FxRates;
use crate::model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A bounded set of ids that forgets the oldest first. Serialized as the list, oldest first.
///
/// Each id is stored once, in `order`; the index holds only a hash per id (and how many of the
/// remembered ids share it), and a hit is confirmed against `order`, so a collision can cost a
/// scan of at most `cap` ids but never a wrong answer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct IdRing {
    hashes: HashMap<u64, u32, foldhash::fast::FixedState>,
    order: VecDeque<String>,
    /// A tag per id, aligned with `order` (the content fingerprint of a remembered event; 0
    /// when unknown). Not in the format-2 layout: the account extension carries the tags of
    /// its event ids (see `state`).
    tags: VecDeque<u64>,
}

/// A fast, fixed-seed hash: ids come from input, but a crafted collision costs at most a scan
/// of `cap` ids (see above), so a keyed hash buys nothing here.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6372_6564_6974).hash_one(id)
}

impl From<Vec<String>> for IdRing {
    fn from(ids: Vec<String>) -> IdRing {
        let mut hashes: HashMap<u64, u32, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for id in &ids {
            *hashes.entry(id_hash(id)).or_default() += 1;
        }
        IdRing {
            hashes,
            tags: std::iter::repeat_n(0, ids.len()).collect(),
            order: ids.into(),
        }
    }
}

// Written in place (`into = "Vec<String>"` would copy every id for each snapshot).
impl Serialize for IdRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.order)
    }
}

impl IdRing {
    pub fn contains(&self, id: &str) -> bool {
        self.contains_hashed(id, id_hash(id))
    }

    fn contains_hashed(&self, id: &str, hash: u64) -> bool {
        self.hashes.contains_key(&hash) && self.order.iter().any(|x| x == id)
    }

    /// Remembers `id`, forgetting the oldest ids beyond `cap`. Returns false if already known.
    pub fn insert(&mut self, id: String, cap: usize) -> bool {
        self.insert_tagged(id, 0, cap)
    }

    /// `insert`, with a tag kept beside the id (0: none).
    pub fn insert_tagged(&mut self, id: String, tag: u64, cap: usize) -> bool {
        let hash = id_hash(&id);
        if cap == 0 || self.contains_hashed(&id, hash) {
            return false;
        }
        while self.order.len() >= cap {
            self.tags.pop_front();
            if let Some(old) = self.order.pop_front() {
                let h = id_hash(&old);
                if let Some(n) = self.hashes.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        self.hashes.remove(&h);
                    }
                }
            }
        }
        *self.hashes.entry(hash).or_default() += 1;
        self.order.push_back(id);
        self.tags.push_back(tag);
        true
    }

    /// The tag a remembered id was inserted with (0: none or unknown).
    pub fn tag_of(&self, id: &str) -> u64 {
        if !self.contains(id) {
            return 0;
        }
        self.order
            .iter()
            .position(|x| x == id)
            .and_then(|i| self.tags.get(i).copied())
            .unwrap_or(0)
    }

    /// The tags, aligned with `iter()` (what a snapshot keeps).
    pub fn tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.tags.iter().copied()
    }

    /// Puts snapshotted tags back; ignored unless there is one per id.
    pub fn set_tags(&mut self, tags: Vec<u64>) {
        if tags.len() == self.order.len() {
            self.tags = tags.into();
        }
    }

    /// `contains(prefix + id)` without allocating the joined id (up to 136 bytes: any ASCII id of the contract's 128 characters and its prefix).
    pub fn contains_prefixed(&self, prefix: &str, id: &str) -> bool {
        let n = prefix.len() + id.len();
        let mut buf = [0u8; 136];
        if n > buf.len() {
            return self.contains(&format!("{prefix}{id}"));
        }
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..n].copy_from_slice(id.as_bytes());
        // Two valid UTF-8 strings joined are valid UTF-8.
        std::str::from_utf8(&buf[..n]).is_ok_and(|joined| self.contains(joined))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }
}

/// Where an order stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderState {
    /// Approved (or released): its unshipped remainder counts in exposure.
    Open,
    /// Waiting in the hold queue: counts nowhere until released.
    Held,
}

/// A hold on an order: every rule it failed, and the first approver under four-eyes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hold {
    pub reasons: Vec<Reason>,
    pub held_at: Timestamp,
    pub first_approver: Option<String>,
}

impl Hold {
    /// A hold that only a person can release (skipped by the automatic re-check).
    pub fn needs_person(&self) -> bool {
        self.reasons.iter().any(|r| r.code.needs_person())
    }
}

/// A live order (approved with an unshipped remainder, or held).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    /// Amount and currency as ordered.
    #[serde(with = "crate::model::money::dec")]
    pub amount: Decimal,
    pub currency: Currency,
    /// The amount in the account's currency (equal to `amount` unless converted by an FX rate).
    #[serde(with = "crate::model::money::dec")]
    pub amount_account: Decimal,
    pub placed_at: Timestamp,
    pub placed_event_id: String,
    pub state: OrderState,
    /// Shipped so far, in the order's currency.
    #[serde(with = "crate::model::money::dec")]
    pub shipped: Decimal,
    /// Unshipped remainder counted in open orders (0 while held).
    #[serde(with = "crate::model::money::dec")]
    pub open_remaining: Decimal,
    /// Unapplied credit earmarked for this prepaid order, not yet consumed by a shipment.
    #[serde(with = "crate::model::money::dec")]
    pub prepaid: Decimal,
    pub hold: Option<Hold>,
}

/// One open receivable: a shipment not yet fully paid or credited.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Receivable {
    pub shipment_id: String,
    pub order_id: String,
    #[serde(with = "crate::model::money::dec")]
    pub amount: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub open: Decimal,
    pub shipped_at: Timestamp,
    pub due_at: Timestamp,
    /// Settled so far by payments (including unapplied credit) and by credit notes.
    #[serde(with = "crate::model::money::dec")]
    pub paid: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub credited: Decimal,
    /// Sum over paid portions of portion x days late (for the timeliness indicator).
    #[serde(with = "crate::model::money::dec")]
    pub late_weighted: Decimal,
    /// Next time-driven stage: 0 = overdue, 1..=n aging buckets, n+1 = write-off candidate.
    pub next_stage: u8,
    /// A receivable in another currency than the account's: that currency and the open amount
    /// in it (`open` is its value in the account's currency at the latest rate). Not in the
    /// format-2 layout: snapshots carry it in the account's extension (see `state`).
    #[serde(skip)]
    pub foreign: Option<ForeignOpen>,
}

/// The open amount of a foreign-currency item, in its own currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignOpen {
    pub currency: Currency,
    #[serde(with = "crate::model::money::dec")]
    pub open: Decimal,
}

/// How an account converts: the engine's rates and the account's currency.
#[derive(Clone, Copy)]
pub struct Conv<'a> {
    pub rates: &'a FxRates,
    pub account: Currency,
}

impl Conv<'_> {
    /// `own` in `currency` as an amount of the account's currency. An open amount never
    /// converts to nothing: a positive one is worth at least 0.0001.
    pub fn value(&self, own: Decimal, currency: Currency) -> Decimal {
        let v = self
            .rates
            .convert(own, currency, self.account)
            .unwrap_or(own);
        if own > Decimal::ZERO && v <= Decimal::ZERO {
            Decimal::new(1, 4)
        } else {
            v
        }
    }

    pub fn convert(&self, amount: Decimal, from: Currency, to: Currency) -> Option<Decimal> {
        self.rates.convert(amount, from, to)
    }
}

/// A shipment's amount: in the account's currency, and as shipped.
#[derive(Clone, Copy, Debug)]
pub struct ShipmentAmount {
    pub account: Decimal,
    pub own: Decimal,
    pub currency: Currency,
}

impl Receivable {
    /// The open amount in the receivable's own currency.
    pub fn open_own(&self) -> Decimal {
        self.foreign.map_or(self.open, |f| f.open)
    }

    pub fn currency_or(&self, account: Currency) -> Currency {
        self.foreign.map_or(account, |f| f.currency)
    }

    /// Settles `take_own` of the open amount (own currency); returns what that was worth in
    /// the account's currency.
    fn settle_own(
        &mut self,
        kind: SettlementKind,
        take_own: Decimal,
        at: Timestamp,
        conv: &Conv<'_>,
    ) -> Decimal {
        let delta = match self.foreign.as_mut() {
            None => take_own,
            Some(f) => {
                f.open -= take_own;
                let new_open = if f.open.is_zero() {
                    Decimal::ZERO
                } else {
                    conv.value(f.open, f.currency)
                };
                self.open - new_open
            }
        };
        self.apply_portion(kind, delta, at);
        delta
    }

    /// The most of the open amount (own currency) that `take_acc` of the account's currency
    /// settles: all of it when `take_acc` covers the whole open amount, else a part whose
    /// value (after rounding) is not more than `take_acc`.
    fn own_of(&self, take_acc: Decimal, conv: &Conv<'_>) -> Decimal {
        let Some(f) = self.foreign else {
            return take_acc;
        };
        if take_acc >= self.open {
            return f.open;
        }
        let mut own = conv
            .convert(take_acc, conv.account, f.currency)
            .unwrap_or(Decimal::ZERO)
            .min(f.open);
        let step = Decimal::new(1, 4);
        for _ in 0..4 {
            let left = f.open - own;
            let worth = self.open
                - if left.is_zero() {
                    left
                } else {
                    conv.value(left, f.currency)
                };
            if worth <= take_acc || own.is_zero() {
                break;
            }
            own = (own - step).max(Decimal::ZERO);
        }
        own
    }

    fn apply_portion(&mut self, kind: SettlementKind, take: Decimal, at: Timestamp) {
        self.open -= take;
        match kind {
            SettlementKind::Payment => {
                self.paid += take;
                if at > self.due_at {
                    self.late_weighted += take * at.days_since(self.due_at);
                }
            }
            SettlementKind::CreditNote => self.credited += take,
        }
    }
}

/// A receivable after it was settled, kept (bounded) for the behavioural indicators.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettledItem {
    pub shipment_id: String,
    #[serde(with = "crate::model::money::dec")]
    pub amount: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub paid: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub credited: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub late_weighted: Decimal,
    pub due_at: Timestamp,
    pub settled_at: Timestamp,
}

/// A shipment or cancellation that arrived before its order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    #[serde(with = "event_as_json")]
    pub event: Event,
    pub received_at: Timestamp,
}

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
}

/// Alert bookkeeping that stops repeats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertMarks {
    /// Bit i set: utilization threshold i fired and waits to re-arm.
    pub utilization_fired: u32,
    pub review_warned_for: Option<Timestamp>,
    pub review_expired_for: Option<Timestamp>,
    pub temp_expired_for: Option<Timestamp>,
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
    pub orders: BTreeMap<String, Box<Order>>,
    /// Held order ids in release order: (placed_at, order_id).
    pub holds: Vec<String>,
    /// Open receivables, oldest due first: (due_at, shipment_id).
    pub receivables: Vec<Receivable>,
    #[serde(with = "crate::model::money::dec")]
    pub open_orders_total: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub receivables_total: Decimal,
    #[serde(with = "crate::model::money::dec")]
    pub unapplied_credit: Decimal,
    /// Part of unapplied credit earmarked for approved prepaid orders.
    #[serde(with = "crate::model::money::dec")]
    pub earmarked: Decimal,
    pub recent_event_ids: IdRing,
    /// Closed order ids (`o:`, rejected `r:`, cancelled `c:`), settled shipment ids (`s:`),
    /// payment and credit note ids (`p:`), closed delivery ids (`d:`, rejected `dx:`, cancelled
    /// `dc:`).
    pub closed_ids: IdRing,
    pub pending: Vec<Pending>,
    pub behaviour: Behaviour,
    pub marks: AlertMarks,
    /// Live deliveries by id: held, or cleared and not yet shipped. Not in the postcard layout
    /// of format 2: snapshots carry them in the account's extension (see `state`).
    #[serde(skip)]
    pub deliveries: BTreeMap<String, Box<Delivery>>,
    /// Held delivery ids in release order: (requested_at, delivery_id). Derived from
    /// `deliveries` on restore.
    #[serde(skip)]
    pub held_deliveries: Vec<String>,
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
                matches!(&p.event.body, EventBody::ShipmentShipped { shipment_id: s, .. } if s == shipment_id)
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
        let free_credit = self.unapplied_credit - self.earmarked;
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
            remaining.min(free_credit.max(Decimal::ZERO))
        } else {
            Decimal::ZERO
        };
        self.open_orders_total += remaining;
        self.earmarked += order.prepaid;
        self.holds.retain(|id| id != order_id);
        if remaining.is_zero() {
            self.close_order(order_id, closed_ids_cap);
        }
    }

    /// Removes a live order, freeing whatever it still reserves, and remembers its id.
    pub fn close_order(&mut self, order_id: &str, closed_ids_cap: usize) -> Option<Box<Order>> {
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
            .insert(format!("{prefix}{order_id}"), closed_ids_cap);
        Some(order)
    }

    /// `close_order` for an order rejected (by a person or hold expiry), remembered as such
    /// for the delivery check.
    pub fn close_rejected_order(&mut self, order_id: &str, closed_ids_cap: usize) {
        self.close_order_as(order_id, super::delivery::REJECTED_ORDER, closed_ids_cap);
    }

    /// Inserts a held order at its place in the FIFO queue.
    pub fn enqueue_hold(&mut self, order_id: &str) {
        let key = |id: &'_ str| self.orders.get(id).map(|o| (o.placed_at, &*o.order_id));
        let new_key = key(order_id);
        let pos = self
            .holds
            .iter()
            .position(|id| key(id) > new_key)
            .unwrap_or(self.holds.len());
        self.holds.insert(pos, order_id.to_string());
    }

    /// Ships against an order (or none), creating a receivable; returns it when it stays open.
    /// Unapplied credit (the order's earmark first, then free credit) settles it at once.
    #[allow(clippy::too_many_arguments)]
    pub fn ship(
        &mut self,
        shipment_id: &str,
        order_id: &str,
        s: ShipmentAmount,
        at: Timestamp,
        due_at: Timestamp,
        closed_ids_cap: usize,
        conv: &Conv<'_>,
    ) -> Option<&Receivable> {
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
        let free = (self.unapplied_credit - self.earmarked).max(Decimal::ZERO);
        let take = free.min(amount);
        if take > Decimal::ZERO {
            let own = r.own_of(take, conv);
            let taken = r.settle_own(SettlementKind::Payment, own, at, conv);
            // Never more credit than there is (a rounding step that did not fit settles nothing).
            self.unapplied_credit -= taken.min(self.unapplied_credit);
        }
        if r.open.is_zero() {
            self.remember_settled(r, at, closed_ids_cap);
            return None;
        }
        self.receivables_total += r.open;
        let key = (r.due_at, r.shipment_id.clone());
        let pos = self
            .receivables
            .iter()
            .position(|x| (x.due_at, x.shipment_id.clone()) > key)
            .unwrap_or(self.receivables.len());
        self.receivables.insert(pos, r);
        self.receivables.get(pos)
    }

    /// Applies a payment or credit note: named receivables first, then oldest due first; the
    /// rest stays as unapplied credit. Fully settled items move to the behaviour history; they
    /// are returned as (shipment id, due moment, next aging stage), whose due moments are void.
    ///
    /// `amount` is in `currency`: receivables of that currency are settled before others
    /// (those at the current rate), and what is left becomes credit in the account's currency.
    #[allow(clippy::too_many_arguments)]
    pub fn settle(
        &mut self,
        kind: SettlementKind,
        amount: Decimal,
        currency: Currency,
        applies_to: &[String],
        at: Timestamp,
        closed_ids_cap: usize,
        conv: &Conv<'_>,
    ) -> Vec<(String, Timestamp, u8)> {
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
        closed
    }

    fn remember_settled(&mut self, r: Receivable, at: Timestamp, closed_ids_cap: usize) {
        self.closed_ids
            .insert(format!("s:{}", r.shipment_id), closed_ids_cap);
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
        moved
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

/// What an order's unshipped remainder is worth in the account's currency.
fn order_remainder_value(order: &Order, conv: &Conv<'_>) -> Decimal {
    let own = (order.amount - order.shipped).max(Decimal::ZERO);
    if order.currency == conv.account || own.is_zero() {
        own
    } else {
        conv.value(own, order.currency)
    }
}

/// Parked events are kept in snapshots in their contract JSON form.
mod event_as_json {
    use crate::codec::{decode_event, encode_event};
    use crate::model::Event;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(event: &Event, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode_event(event))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Event, D::Error> {
        let text = String::deserialize(d)?;
        decode_event(text.as_bytes()).map_err(|r| serde::de::Error::custom(r.detail))
    }
}

#[cfg(test)]
mod tests {
    use super::IdRing;

    #[test]
    fn the_id_ring_remembers_the_newest_ids_up_to_its_cap() {
        let mut ring = IdRing::default();
        for i in 0..5 {
            assert!(ring.insert(format!("ev-{i}"), 3));
        }
        assert!(!ring.insert("ev-4".into(), 3), "a known id is refused");
        assert_eq!(ring.len(), 3);
        assert!(!ring.contains("ev-1"), "forgotten beyond the cap");
        assert!(ring.contains("ev-2") && ring.contains("ev-4"));
        let restored = IdRing::from(ring.iter().cloned().collect::<Vec<String>>());
        assert_eq!(restored, ring, "the serialized list restores the same ring");
        assert!(
            !IdRing::default().insert("x".into(), 0),
            "cap 0 remembers nothing"
        );
    }

    #[test]
    fn prefixed_lookups_match_joined_ids_of_any_length() {
        let long = "x".repeat(200);
        let mut ring = IdRing::default();
        ring.insert("o:SO-1".into(), 8);
        ring.insert(format!("s:{long}"), 8);
        assert!(ring.contains_prefixed("o:", "SO-1"));
        assert!(!ring.contains_prefixed("s:", "SO-1"));
        assert!(!ring.contains_prefixed("o:", "SO-"));
        assert!(
            ring.contains_prefixed("s:", &long),
            "past the 128-byte buffer"
        );
        assert!(!ring.contains_prefixed("o:", &long));
    }
}
