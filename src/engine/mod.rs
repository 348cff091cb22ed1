//! The pure, deterministic credit core: `apply(event)` and `advance_clock(t)` turn validated
//! events into decisions, alerts and rejections. No I/O, no wall clock, no Kafka: the same input
//! and policy give the same output, byte for byte, which is what makes replay, backtesting,
//! property tests and the live runtime one code path.
//!
//! Time is event time. The engine clock is the highest `occurred_at` seen (or a tick from the
//! shell); time-driven warnings and hold expiry sit in an ordered index of due moments
//! (`timers`), so advancing the clock touches only what is due, never every account.
//! Index entries are validated when they fire, so a stale entry (an item paid since) does nothing.
//!
//! Code map: this file holds the engine's state and the dispatch of an event to its handler.
//! `orders` (an `order.placed` from the check to its decision, and cancellations), `settlement`
//! (shipments, payments, credit notes), `reorder` (events parked until their order arrives),
//! `profiles`, `commands` (manual release/reject, four-eyes, block), `holds` (re-checking the
//! hold queue), `delivery` and `delivery_events` (the delivery check), `fx` (live rates and
//! revaluation), `outputs` (where decisions and alerts are minted), `alerts` and `warnings`
//! (early warnings), `timers` (due moments), `reads` (what-if, totals, invariants), `replica`
//! (read replicas for readers), `read_index` (what readers ask of every account, kept on a
//! replica), `rules` (the credit rules as pure functions), `account` (one
//! account's state and the money movements that keep its exposure identity), `items` (the
//! orders, holds and receivables it holds), `id_ring` (its bounded memory of ids).

pub mod account;
mod alerts;
mod commands;
pub mod delivery;
mod delivery_events;
pub mod fx;
mod holds;
mod id_ring;
pub mod ids;
mod items;
mod orders;
mod outputs;
mod profiles;
pub mod read_index;
mod reads;
mod reorder;
mod replica;
pub mod rules;
mod settlement;
mod timers;
pub mod warnings;

use crate::model::*;
use crate::policy::{days_us, Policy, ReleaseOrder};
pub use account::{Account, Order, OrderState, Receivable};
use account::{Booking, Conv, ShipmentAmount};
use fx::FxRates;
use outputs::{Ruling, Subject};
use rules::{Candidate, GroupView, Terms};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use timers::receivable_timer_at;

/// A customer group sharing one limit.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub group_id: String,
    pub profile: Option<GroupProfile>,
    pub profile_at: Option<Timestamp>,
    /// Customers whose profile names this group (derived from the accounts, not persisted).
    #[serde(skip)]
    pub members: BTreeSet<String>,
    pub utilization_fired: u32,
    /// Recent `profile.group` event ids (group events have no account to remember them).
    pub recent_event_ids: account::IdRing,
}

/// What a time-driven index entry is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// An item reaching aging stage `stage` (read with `timers::AgingStage`).
    Receivable {
        shipment_id: String,
        stage: u8,
    },
    ReviewWarning,
    ReviewExpired,
    TempLimitExpiry,
    Inactivity,
    HoldExpiry {
        order_id: String,
    },
    PendingExpiry {
        event_id: String,
    },
    DeliveryHoldExpiry {
        delivery_id: String,
    },
}

/// One due moment in the index. Ordered by moment, then customer, then kind: deterministic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    pub at: Timestamp,
    pub customer_id: String,
    pub kind: TimerKind,
}

/// What applying an event did (for metrics and the replay summary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Applied,
    /// A repeat (event id, order id, shipment id, payment id) or a stale profile: no change.
    Duplicate,
    /// A shipment or cancellation waiting for its order.
    Pending,
    /// Could not be applied; a rejection was emitted.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Pending => "pending",
            Outcome::Rejected => "dead_lettered",
        }
    }
}

/// Exposure and limits summed per currency (for summaries and metrics).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrencyTotals {
    pub accounts: usize,
    pub exposure: ExposureView,
    pub credit_limit: Decimal,
    pub held_orders: usize,
    pub held_amount: Decimal,
}

/// Where an account or group stands against its limit, for threshold alerts.
struct Position<'a> {
    util: Option<Decimal>,
    exposure: Decimal,
    limit: Decimal,
    currency: Currency,
    /// A group's position: `(group id, members)`; `None` for the account's own.
    group: Option<(&'a str, usize)>,
}

/// Who or what caused the outputs being built: an event, or the clock passing a moment.
#[derive(Clone, Debug)]
pub(crate) struct Cause {
    /// For alert ids and decisions' `source_event_id`.
    source: String,
    at: Timestamp,
    /// An `fx.rate` moved the positions: threshold alerts say `"cause": "fx"`.
    fx: bool,
}

/// How far ahead of a reference time an event may be: `run` measures against the wall clock
/// (`limits.future_skew_max_hours`), `replay --max-future-skew-hours` against the latest event
/// time seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FutureGuard {
    pub reference: Timestamp,
    pub max_skew_us: i64,
    /// What `reference` is, for the dead-letter's text ("the wall clock").
    pub reference_name: &'static str,
    /// The setting that sets the skew, for the dead-letter's text.
    pub setting: &'static str,
}

/// The credit engine.
#[derive(Clone)]
pub struct Engine {
    policy: Arc<Policy>,
    /// The rates conversions use: `policy.fx_rates`, then the `fx.rate` quotes seen.
    rates: FxRates,
    /// foldhash (seeded per process, as std's SipHash is): customer ids are hashed several
    /// times per event, and SipHash was a visible share of the core's profile.
    /// Boxed: a map slot holds a pointer, not the 728-byte account, so the table's spare
    /// capacity (up to half its slots after a doubling) costs 32 bytes a slot, not 752.
    accounts: HashMap<String, Box<Account>, foldhash::fast::RandomState>,
    groups: HashMap<String, Group, foldhash::fast::RandomState>,
    timers: BTreeSet<Timer>,
    clock: Option<Timestamp>,
    /// Accounts whose position changed during the current event or timer, first touch first.
    touched: Vec<String>,
    /// Accounts and groups whose state changed since `take_changed` was last called (what a
    /// shell must snapshot to the changelog). Hashed, not ordered: they are tested on every
    /// event and sorted once when taken.
    changed_accounts: HashSet<String, foldhash::fast::RandomState>,
    changed_groups: HashSet<String, foldhash::fast::RandomState>,
    /// A quote was taken since `take_rates_changed` was last called (the shell checkpoints
    /// the rates).
    rates_changed: bool,
    /// A read replica's index of what readers ask of every account (`None` on an engine that
    /// decides: see `read_index`).
    reader: Option<Box<read_index::ReaderIndex>>,
}

fn money(v: Decimal) -> Value {
    Value::String(format_money(v))
}

impl Engine {
    pub fn new(policy: Policy) -> Engine {
        Engine::with_policy(Arc::new(policy))
    }

    pub fn with_policy(policy: Arc<Policy>) -> Engine {
        Engine {
            rates: FxRates::from_policy(&policy),
            policy,
            accounts: HashMap::default(),
            groups: HashMap::default(),
            timers: BTreeSet::new(),
            clock: None,
            touched: Vec::new(),
            changed_accounts: HashSet::default(),
            changed_groups: HashSet::default(),
            rates_changed: false,
            reader: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The engine clock: the highest event time seen or ticked to.
    pub fn clock(&self) -> Option<Timestamp> {
        self.clock
    }

    pub fn account(&self, customer_id: &str) -> Option<&Account> {
        self.accounts.get(customer_id).map(|a| &**a)
    }

    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values().map(|a| &**a)
    }

    pub fn group(&self, group_id: &str) -> Option<&Group> {
        self.groups.get(group_id)
    }

    /// Entries in the due-moment index (stale ones included until they come due).
    /// Due moments in the index by kind (for diagnosis and the bounds tests).
    pub fn timers_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut m = BTreeMap::new();
        for t in &self.timers {
            let k = match t.kind {
                TimerKind::Receivable { .. } => "receivable",
                TimerKind::ReviewWarning | TimerKind::ReviewExpired => "review",
                TimerKind::TempLimitExpiry => "temporary_limit",
                TimerKind::Inactivity => "inactivity",
                TimerKind::HoldExpiry { .. } => "hold_expiry",
                TimerKind::PendingExpiry { .. } => "pending_expiry",
                TimerKind::DeliveryHoldExpiry { .. } => "delivery_hold_expiry",
            };
            *m.entry(k).or_default() += 1;
        }
        m
    }

    pub fn timers_len(&self) -> usize {
        self.timers.len()
    }

    /// The terms in force for a customer now.
    pub fn terms(&self, customer_id: &str) -> Option<Terms> {
        let acc = self.accounts.get(customer_id)?;
        rules::terms(acc, &self.policy, self.now())
    }

    fn now(&self) -> Timestamp {
        self.clock.unwrap_or_default()
    }

    /// The engine's FX rates (configured starting values and live quotes).
    pub fn rates(&self) -> &FxRates {
        &self.rates
    }

    /// The currency an account's amounts are in: its terms', else the one it adopted.
    fn account_currency(&self, acc: &Account) -> Option<Currency> {
        rules::terms(acc, &self.policy, self.now())
            .map(|t| t.currency)
            .or(acc.currency)
    }

    /// Applies one validated event; outputs are appended to `out` in production order:
    /// time-driven outputs due before the event, then the event's own, then any it made due.
    /// Event time may jump forward by any amount: every due moment in between fires in order.
    pub fn apply(&mut self, event: &Event, out: &mut Vec<Output>) -> Outcome {
        self.apply_guarded(event, out, None)
    }

    /// `apply`, but an event more than `guard.max_skew_us` ahead of `guard.reference` is
    /// dead-lettered `INVALID_FIELD` instead of moving time forward (one producer with a broken
    /// clock must not age every item and expire every hold on its partition).
    pub fn apply_guarded(
        &mut self,
        event: &Event,
        out: &mut Vec<Output>,
        guard: Option<FutureGuard>,
    ) -> Outcome {
        if let Some(g) = guard {
            let limit = g.reference.plus_us(g.max_skew_us);
            if event.occurred_at > limit {
                let detail = format!(
                    "occurred_at {} is more than {} hours ahead of {} {}: accepted up to {} ({})",
                    event.occurred_at,
                    g.max_skew_us / 3_600_000_000,
                    g.reference_name,
                    g.reference,
                    limit,
                    g.setting
                );
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::InvalidField,
                    detail,
                )));
                return Outcome::Rejected;
            }
        }
        self.advance_clock(event.occurred_at, out);
        let cause = Cause {
            source: event.event_id.clone(),
            at: event.occurred_at,
            fx: matches!(event.body, EventBody::FxRate(_)),
        };
        let outcome = self.dispatch(event, &cause, out);
        // Debug builds check the exposure identity of every account this event touched
        // (the property tests check all accounts after every event).
        let touched = if cfg!(debug_assertions) {
            self.touched.clone()
        } else {
            Vec::new()
        };
        self.finish(&cause, out);
        self.fire_due_until(self.now(), out);
        if cfg!(debug_assertions) {
            for id in touched.iter().chain(event.customer_id.as_ref()) {
                if let Some(Err(e)) = self.accounts.get(id).map(|a| a.check_identity()) {
                    panic!("invariant broken after {}: {e}", event.event_id);
                }
            }
        }
        outcome
    }

    /// Moves the clock forward (never back) and fires everything due by then.
    pub fn advance_clock(&mut self, to: Timestamp, out: &mut Vec<Output>) {
        self.fire_due_until(to, out);
        if self.clock.is_none_or(|c| c < to) {
            self.clock = Some(to);
        }
    }

    fn dispatch(&mut self, event: &Event, cause: &Cause, out: &mut Vec<Output>) -> Outcome {
        let customer_id = match (&event.customer_id, &event.body) {
            (_, EventBody::GroupProfile(g)) => return self.on_group_profile(event, g, cause, out),
            (_, EventBody::FxRate(q)) => return self.on_fx_rate(event, q, cause, out),
            (Some(c), _) => c.as_str(),
            (None, _) => {
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::MissingField,
                    "customer_id is required".into(),
                )));
                return Outcome::Rejected;
            }
        };
        let max_accounts = self.policy.bounds.max_accounts;
        if self.accounts.len() >= max_accounts && !self.accounts.contains_key(customer_id) {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "this engine holds {} accounts (limits.max_accounts); customer {customer_id} is new",
                    self.accounts.len()
                ),
            )));
            return Outcome::Rejected;
        }
        let cap = self.policy.bounds.event_ids_per_account;
        if !self.changed_accounts.contains(customer_id) {
            self.changed_accounts.insert(customer_id.to_string());
        }
        let fingerprint = event.fingerprint();
        let acc = self.account_mut(customer_id);
        if acc.recent_event_ids.contains(&event.event_id) {
            let first = acc.recent_event_ids.tag_of(&event.event_id);
            if first != 0 && first != fingerprint {
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::DuplicateConflict,
                    format!(
                        "event_id {} was seen before with other content; the first is kept",
                        event.event_id
                    ),
                )));
                return Outcome::Rejected;
            }
            return Outcome::Duplicate;
        }
        acc.recent_event_ids
            .insert_tagged(event.event_id.clone(), fingerprint, cap);
        // A shipment is judged as it arrives (not again when a parked one is applied).
        self.judge_shipment(customer_id, event, cause, out);
        self.dispatch_account_event(customer_id, event, cause, out)
    }

    fn dispatch_account_event(
        &mut self,
        cid: &str,
        event: &Event,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        match &event.body {
            EventBody::OrderPlaced(o) => self.on_order_placed(cid, event, o, cause, out),
            EventBody::OrderCancelled { order_id } => {
                self.on_order_cancelled(cid, event, order_id, cause, out)
            }
            EventBody::ShipmentShipped(s) => self.on_shipment(cid, event, s, out),
            EventBody::DeliveryRequested(req) => {
                self.on_delivery_requested(cid, event, req, cause, out)
            }
            EventBody::Settlement(s) => self.on_settlement(cid, event, s, cause, out),
            EventBody::CustomerProfile(p) => self.on_customer_profile(cid, event, p, cause, out),
            // Handled before an account is chosen (`dispatch`).
            EventBody::GroupProfile(_) | EventBody::FxRate(_) => Outcome::Rejected,
            EventBody::Command(c) if c.kind.is_delivery() => {
                self.on_delivery_command(cid, event, c, cause, out)
            }
            EventBody::Command(c) => self.on_command(cid, event, c, cause, out),
        }
    }

    /// The rejection for an event that would make this engine hold one group too many.
    fn group_capacity(&self, event: &Event, group_id: &str) -> Option<InputError> {
        let max = self.policy.bounds.max_groups;
        (self.groups.len() >= max && !self.groups.contains_key(group_id)).then(|| {
            input_error(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "this engine holds {} groups (limits.max_groups); group {group_id} is new",
                    self.groups.len()
                ),
            )
        })
    }

    fn account_mut(&mut self, customer_id: &str) -> &mut Account {
        if !self.accounts.contains_key(customer_id) {
            let mut acc = Box::new(Account::new(customer_id));
            // An account without a profile is judged under the policy's default limit for
            // unknown customers, when there is one: its items are kept in that limit's
            // currency, so that the terms and the exposure speak the same currency.
            acc.currency = self.policy.unknown_customer_limit.map(|(_, c)| c);
            self.accounts.insert(customer_id.to_string(), acc);
        }
        self.accounts.get_mut(customer_id).expect("inserted above")
    }

    fn touch(&mut self, customer_id: &str) {
        if !self.changed_accounts.contains(customer_id) {
            self.changed_accounts.insert(customer_id.to_string());
        }
        if !self.touched.iter().any(|c| c == customer_id) {
            self.touched.push(customer_id.to_string());
        }
    }

    fn schedule(&mut self, at: Timestamp, customer_id: &str, kind: TimerKind) {
        self.timers.insert(Timer {
            at,
            customer_id: customer_id.to_string(),
            kind,
        });
    }
}

pub(crate) fn input_error(event: &Event, error: ErrorCode, detail: String) -> InputError {
    InputError {
        error,
        detail,
        event_id: Some(event.event_id.clone()),
        event_type: Some(event.type_str().to_string()),
        customer_id: event.customer_id.clone(),
        original: None,
    }
}

impl Engine {
    // ---------------------------------------------------------------- snapshot and restore

    /// Puts a snapshotted account back (replacing any live copy), rejoins its group and
    /// re-derives its due moments: the index is derived state and is never persisted.
    pub fn restore_account(&mut self, account: Box<Account>) {
        let cid = account.customer_id.clone();
        if let Some(old) = self.accounts.remove(&cid) {
            if let Some(g) = old.group_id().and_then(|g| self.groups.get_mut(g)) {
                g.members.remove(&cid);
            }
        }
        if let Some(gid) = account.group_id() {
            let g = self.groups.entry(gid.to_string()).or_insert_with(|| Group {
                group_id: gid.to_string(),
                ..Group::default()
            });
            g.members.insert(cid.clone());
        }
        self.accounts.insert(cid.clone(), account);
        self.schedule_account_timers(&cid);
    }

    /// Puts a snapshotted group back, keeping the members the restored accounts named.
    pub fn restore_group(&mut self, group: Group) {
        let g = self
            .groups
            .entry(group.group_id.clone())
            .or_insert_with(|| Group {
                group_id: group.group_id.clone(),
                ..Group::default()
            });
        let members = std::mem::take(&mut g.members);
        *g = Group { members, ..group };
    }

    /// Moves the clock forward to a checkpointed moment without firing anything: the restored
    /// state already reflects everything due before it.
    pub fn restore_clock(&mut self, at: Timestamp) {
        if self.clock.is_none_or(|c| c < at) {
            self.clock = Some(at);
        }
    }

    /// Forgets an account (its partition was revoked). Its index entries become no-ops.
    pub fn drop_account(&mut self, customer_id: &str) {
        if let Some(acc) = self.accounts.remove(customer_id) {
            if let Some(g) = acc.group_id().and_then(|g| self.groups.get_mut(g)) {
                g.members.remove(customer_id);
            }
        }
    }

    /// Accounts and groups changed since the last call (sorted), and forgets them.
    pub fn take_changed(&mut self) -> (Vec<String>, Vec<String>) {
        let sorted = |set: &mut HashSet<String, foldhash::fast::RandomState>| {
            let mut ids: Vec<String> = set.drain().collect();
            ids.sort_unstable();
            ids
        };
        (
            sorted(&mut self.changed_accounts),
            sorted(&mut self.changed_groups),
        )
    }

    /// True once after a quote was taken (what a shell must checkpoint).
    pub fn take_rates_changed(&mut self) -> bool {
        std::mem::take(&mut self.rates_changed)
    }

    /// Puts checkpointed live quotes back (restore).
    pub fn restore_rates(&mut self, quotes: &[fx::Quote]) {
        self.rates.restore(quotes);
    }

    /// Group ids known to the engine, sorted.
    pub fn group_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.groups.keys().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }
}
