//! The pure, deterministic credit core: `apply(event)` and `advance_clock(t)` turn validated
//! events into decisions, alerts and rejections. No I/O, no wall clock, no Kafka: the same input
//! and policy give the same output, byte for byte, which is what makes replay, backtesting,
//! property tests and the live runtime one code path.
//!
//! Time is event time. The engine clock is the highest `occurred_at` seen (or a tick from the
//! shell); time-driven warnings and hold expiry sit in an ordered index of due moments
//! (`timers`), so advancing the clock touches only what is due, never every account.
//! Index entries are validated when they fire, so a stale entry (an item paid since) does nothing.

pub mod account;
pub mod delivery;
pub mod fx;
pub mod ids;
mod replica;
pub mod rules;
pub mod warnings;

use crate::model::*;
use crate::policy::{days_us, Policy, ReleaseOrder};
pub use account::{Account, Order, OrderState, Receivable};
use account::{Conv, ShipmentAmount};
use fx::FxRates;
use rules::{Candidate, GroupView, Terms};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

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
    /// Stage 0: item passes its due date; 1..=n: aging buckets; n+1: write-off candidate.
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
struct Position {
    util: Option<Decimal>,
    exposure: Decimal,
    limit: Decimal,
    currency: Currency,
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
    /// shell must snapshot to the changelog).
    changed_accounts: BTreeSet<String>,
    changed_groups: BTreeSet<String>,
    /// A quote was taken since `take_rates_changed` was last called (the shell checkpoints
    /// the rates).
    rates_changed: bool,
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
            changed_accounts: BTreeSet::new(),
            changed_groups: BTreeSet::new(),
            rates_changed: false,
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
                out.push(Output::Rejection(rejection(
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
        for id in touched.iter().chain(event.customer_id.as_ref()) {
            if let Some(Err(e)) = self.accounts.get(id).map(|a| a.check_identity()) {
                panic!("invariant broken after {}: {e}", event.event_id);
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
            (Some(c), _) => c.clone(),
            (None, _) => {
                out.push(Output::Rejection(rejection(
                    event,
                    ErrorCode::MissingField,
                    "customer_id is required".into(),
                )));
                return Outcome::Rejected;
            }
        };
        let max_accounts = self.policy.bounds.max_accounts;
        if self.accounts.len() >= max_accounts && !self.accounts.contains_key(&customer_id) {
            out.push(Output::Rejection(rejection(
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
        self.changed_accounts.insert(customer_id.clone());
        let fingerprint = event.fingerprint();
        let acc = self.account_mut(&customer_id);
        if acc.recent_event_ids.contains(&event.event_id) {
            let first = acc.recent_event_ids.tag_of(&event.event_id);
            if first != 0 && first != fingerprint {
                out.push(Output::Rejection(rejection(
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
        self.judge_shipment(&customer_id, event, cause, out);
        self.dispatch_account_event(&customer_id, event, cause, out)
    }

    fn dispatch_account_event(
        &mut self,
        cid: &str,
        event: &Event,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        match &event.body {
            EventBody::OrderPlaced {
                order_id,
                amount,
                currency,
            } => self.on_order_placed(cid, event, order_id, *amount, *currency, cause, out),
            EventBody::OrderCancelled { order_id } => {
                self.on_order_cancelled(cid, event, order_id, cause, out)
            }
            EventBody::ShipmentShipped {
                shipment_id,
                order_id,
                amount,
                currency,
                due_at,
                ..
            } => self.on_shipment(
                cid,
                event,
                shipment_id,
                order_id,
                *amount,
                *currency,
                *due_at,
                out,
            ),
            EventBody::DeliveryRequested(req) => {
                self.on_delivery_requested(cid, event, req, cause, out)
            }
            EventBody::Settlement {
                kind,
                settlement_id,
                amount,
                currency,
                applies_to,
            } => self.on_settlement(
                cid,
                event,
                *kind,
                settlement_id,
                *amount,
                *currency,
                applies_to,
                cause,
                out,
            ),
            EventBody::CustomerProfile(p) => self.on_customer_profile(cid, event, p, cause, out),
            // Handled before an account is chosen (`dispatch`).
            EventBody::GroupProfile(_) | EventBody::FxRate(_) => Outcome::Rejected,
            EventBody::Command {
                kind: kind @ (CommandKind::ReleaseDelivery | CommandKind::RejectDelivery),
                delivery_id,
                actor,
                note,
                ..
            } => self.on_delivery_command(
                cid,
                event,
                *kind == CommandKind::ReleaseDelivery,
                delivery_id.as_deref().unwrap_or_default(),
                actor,
                note,
                cause,
                out,
            ),
            EventBody::Command {
                kind,
                order_id,
                actor,
                note,
                ..
            } => self.on_command(
                cid,
                event,
                *kind,
                order_id.as_deref(),
                actor,
                note,
                cause,
                out,
            ),
        }
    }

    /// The rejection for an event that would make this engine hold one group too many.
    fn group_capacity(&self, event: &Event, group_id: &str) -> Option<Rejection> {
        let max = self.policy.bounds.max_groups;
        (self.groups.len() >= max && !self.groups.contains_key(group_id)).then(|| {
            rejection(
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

    // ---------------------------------------------------------------- orders

    #[allow(clippy::too_many_arguments)]
    fn on_order_placed(
        &mut self,
        cid: &str,
        event: &Event,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let now = self.now();
        let policy = Arc::clone(&self.policy);
        let acc = &self.accounts[cid];
        if acc.knows_order(order_id) {
            if let Some(first) = acc
                .orders
                .get(order_id)
                .filter(|o| o.amount != amount || o.currency != currency)
            {
                let detail = format!(
                    "order {order_id} was placed before for {} {}; this one says {} {}; the first is kept",
                    format_money(first.amount),
                    first.currency,
                    format_money(amount),
                    currency
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
        if acc.orders.len() >= policy.bounds.items_per_account {
            out.push(Output::Rejection(rejection(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "account {cid} has {} live orders (limits.items_per_account); order {order_id} is not decided",
                    acc.orders.len()
                ),
            )));
            return Outcome::Rejected;
        }
        let terms = rules::terms(acc, &policy, now);
        let account_currency = terms.as_ref().map(|t| t.currency).or(acc.currency);
        let amount_account = match account_currency {
            Some(c) => self.rates.convert(amount, currency, c),
            None => Some(amount),
        };
        let group = self.group_view(acc);
        let candidate = Candidate {
            amount,
            currency,
            amount_account,
            order_id,
            rates: &self.rates,
        };
        let reasons = rules::check_order(
            acc,
            terms.as_ref(),
            group.as_ref(),
            &policy,
            now,
            &candidate,
        );
        let amount_acc = amount_account.unwrap_or(amount);
        let near_limit = terms.as_ref().is_some_and(|t| {
            warnings::utilization(acc.exposure_total() + amount_acc, t.limit_effective)
                .is_none_or(|u| u >= policy.limit_suggestions.increase_near_limit_utilization)
        });
        let anomaly = reasons.iter().any(|r| r.code == ReasonCode::AmountAnomaly);
        let typical = rules::typical_order(acc, &policy);

        let cap = policy.bounds.closed_ids_per_account;
        let conv = Conv {
            rates: &self.rates,
            account: account_currency.unwrap_or(currency),
        };
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let order = Order {
            order_id: order_id.to_string(),
            amount,
            currency,
            amount_account: amount_acc,
            placed_at: event.occurred_at,
            placed_event_id: event.event_id.clone(),
            state: OrderState::Held,
            shipped: Decimal::ZERO,
            open_remaining: Decimal::ZERO,
            prepaid: Decimal::ZERO,
            hold: None,
        };
        // A zero-amount order closes as soon as it opens, so decide from this copy.
        acc.orders
            .insert(order_id.to_string(), Box::new(order.clone()));
        let status = if reasons.is_empty() {
            acc.open_order(
                order_id,
                terms.as_ref().is_some_and(|t| t.prepay),
                cap,
                &conv,
            );
            DecisionStatus::Approved
        } else {
            if let Some(o) = acc.orders.get_mut(order_id) {
                o.hold = Some(account::Hold {
                    reasons: reasons.clone(),
                    held_at: event.occurred_at,
                    first_approver: None,
                });
            }
            acc.enqueue_hold(order_id);
            DecisionStatus::Held
        };
        // Behaviour the warnings learn from.
        let inactivity_before = warnings::inactivity_due(acc, &policy).map(|(due, _)| due);
        let b = &mut acc.behaviour;
        if !anomaly {
            b.order_amounts.push_back(amount_acc);
            while b.order_amounts.len() > policy.anomaly_window {
                b.order_amounts.pop_front();
            }
        }
        let pos = b
            .order_times
            .iter()
            .position(|t| *t > event.occurred_at)
            .unwrap_or(b.order_times.len());
        b.order_times.insert(pos, event.occurred_at);
        while b.order_times.len() > policy.inactivity_window + 1 {
            b.order_times.pop_front();
        }
        b.near_limit.push_back(near_limit);
        while b.near_limit.len() > policy.limit_suggestions.increase_recent_orders {
            b.near_limit.pop_front();
        }
        let inactivity = warnings::inactivity_due(acc, &policy);

        let decision = self.decision_for(cid, &order, status, reasons, cause, None, None, None);
        out.push(Output::Decision(decision));
        if anomaly {
            let typical = typical.unwrap_or_default();
            let alert = self.alert(
                AlertKind::AmountAnomaly,
                Severity::Warning,
                Some(cid),
                None,
                cause.at,
                order_id,
                vec![
                    ("order_id", json!(order_id)),
                    ("amount", money(amount_acc)),
                    ("typical_order", money(typical)),
                    (
                        "factor",
                        json!(policy.anomaly_factor.normalize().to_string()),
                    ),
                ],
            );
            out.push(Output::Alert(alert));
        }
        if status == DecisionStatus::Held && policy.hold_expiry_days > 0 {
            let at = event
                .occurred_at
                .plus_us(days_us(policy.hold_expiry_days) + 1);
            self.schedule(
                at,
                cid,
                TimerKind::HoldExpiry {
                    order_id: order_id.to_string(),
                },
            );
        }
        if let Some((due, _)) = inactivity {
            // One inactivity moment per account: the one this order replaces is dropped from
            // the index (it would fire as a no-op), so the index stays bounded by live items.
            if let Some(old) = inactivity_before.filter(|old| *old != due) {
                self.timers.remove(&Timer {
                    at: old,
                    customer_id: cid.to_string(),
                    kind: TimerKind::Inactivity,
                });
            }
            self.schedule(due, cid, TimerKind::Inactivity);
        }
        self.touch(cid);
        if status == DecisionStatus::Approved
            && self.accounts[cid]
                .deliveries
                .values()
                .any(|d| d.order_id == order_id)
        {
            self.recheck_deliveries(&[cid.to_string()], cause, out);
        }
        self.apply_pending_for(cid, order_id, cause, out);
        Outcome::Applied
    }

    fn on_order_cancelled(
        &mut self,
        cid: &str,
        event: &Event,
        order_id: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let cap = self.policy.bounds.closed_ids_per_account;
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let Some(order) = acc.orders.get(order_id) else {
            if acc.knows_order(order_id) {
                return Outcome::Duplicate;
            }
            return self.park(cid, event, out);
        };
        let was_held = order.state == OrderState::Held;
        if was_held {
            let decision = self.decision(
                cid,
                order_id,
                DecisionStatus::Cancelled,
                Vec::new(),
                cause,
                None,
                None,
            );
            out.push(Output::Decision(decision));
        }
        if let Some(acc) = self.accounts.get_mut(cid) {
            acc.close_order_as(order_id, delivery::CANCELLED_ORDER, cap);
        }
        self.cancel_order_deliveries(cid, order_id, cause, out);
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        Outcome::Applied
    }

    // ---------------------------------------------------------------- shipments and money

    /// Converts an amount into the account's currency, adopting the event's currency on an
    /// account that has none yet. `Err` is the rejection detail.
    fn convert_for_account(
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
            .orders
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

    #[allow(clippy::too_many_arguments)]
    fn on_shipment(
        &mut self,
        cid: &str,
        event: &Event,
        shipment_id: &str,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
        due_at: Option<Timestamp>,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let acc = &self.accounts[cid];
        if acc.knows_shipment(shipment_id) {
            let booked = acc
                .receivables
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
                out.push(Output::Rejection(rejection(
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
        self.ship(
            cid,
            event,
            shipment_id,
            order_id,
            amount,
            currency,
            due_at,
            out,
        )
    }

    /// Books a shipment (against its order, or none when the order never came).
    #[allow(clippy::too_many_arguments)]
    fn ship(
        &mut self,
        cid: &str,
        event: &Event,
        shipment_id: &str,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
        due_at: Option<Timestamp>,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let open = self.accounts[cid].receivables.len();
        if open >= self.policy.bounds.items_per_account {
            out.push(Output::Rejection(rejection(
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
                out.push(Output::Rejection(rejection(
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
        let named_delivery = match &event.body {
            EventBody::ShipmentShipped { delivery_id, .. } => delivery_id.as_deref(),
            _ => None,
        };
        self.ship_delivery(cid, order_id, named_delivery);
        let cap = policy.bounds.closed_ids_per_account;
        let conv = Conv {
            rates: &self.rates,
            account: self.accounts[cid].currency.unwrap_or(currency),
        };
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let open_item = acc
            .ship(
                shipment_id,
                order_id,
                shipped,
                event.occurred_at,
                due,
                cap,
                &conv,
            )
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

    #[allow(clippy::too_many_arguments)]
    fn on_settlement(
        &mut self,
        cid: &str,
        event: &Event,
        kind: SettlementKind,
        settlement_id: &str,
        amount: Decimal,
        currency: Currency,
        applies_to: &[String],
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let key = format!("p:{settlement_id}");
        if self.accounts[cid].closed_ids.contains(&key) {
            return Outcome::Duplicate;
        }
        if let Err(detail) = self.convert_for_account(cid, amount, currency) {
            out.push(Output::Rejection(rejection(
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
        let settled = acc.settle(
            kind,
            amount,
            currency,
            applies_to,
            event.occurred_at,
            cap,
            &conv,
        );
        acc.closed_ids.insert(key, cap);
        while acc.behaviour.settled.len() > history_cap {
            acc.behaviour.settled.pop_front();
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

    // ---------------------------------------------------------------- pending (reordering)

    /// Keeps a shipment or cancellation until its order arrives (bounded in count and time).
    fn park(&mut self, cid: &str, event: &Event, out: &mut Vec<Output>) -> Outcome {
        let bounds = self.policy.bounds.clone();
        let now = self.now();
        if bounds.pending_per_account == 0 {
            self.resolve_orphan(cid, event.clone(), out);
            return Outcome::Applied;
        }
        // A redelivery of an event that is already waiting waits once (even when the event-id
        // memory has forgotten it or is disabled): two copies would both apply later.
        if self.accounts[cid]
            .pending
            .iter()
            .any(|p| p.event.event_id == event.event_id)
        {
            return Outcome::Duplicate;
        }
        while self.accounts[cid].pending.len() >= bounds.pending_per_account {
            let oldest = self.account_mut(cid).pending.remove(0);
            self.forget_pending_timer(cid, &oldest);
            self.resolve_orphan(cid, oldest.event, out);
        }
        self.account_mut(cid).pending.push(account::Pending {
            event: event.clone(),
            received_at: now,
        });
        self.schedule(
            now.plus_us(bounds.pending_ttl_us),
            cid,
            TimerKind::PendingExpiry {
                event_id: event.event_id.clone(),
            },
        );
        Outcome::Pending
    }

    /// An event whose order never came: a shipment is still money owed, so it is booked
    /// without an order; a cancellation has nothing to cancel and is dead-lettered.
    fn resolve_orphan(&mut self, cid: &str, event: Event, out: &mut Vec<Output>) {
        match &event.body {
            EventBody::ShipmentShipped {
                shipment_id,
                order_id,
                amount,
                currency,
                due_at,
                ..
            } => {
                let outcome = self.ship(
                    cid,
                    &event,
                    shipment_id,
                    order_id,
                    *amount,
                    *currency,
                    *due_at,
                    out,
                );
                if outcome == Outcome::Rejected {
                    if let Some(Output::Rejection(r)) = out.last_mut() {
                        r.original = Some(crate::codec::encode_event(&event));
                    }
                }
            }
            EventBody::OrderCancelled { order_id } => {
                let mut r = rejection(
                    &event,
                    ErrorCode::OrderUnknown,
                    format!("order {order_id} never arrived; nothing to cancel"),
                );
                r.original = Some(crate::codec::encode_event(&event));
                out.push(Output::Rejection(r));
            }
            _ => {}
        }
    }

    fn apply_pending_for(
        &mut self,
        cid: &str,
        order_id: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let acc = self.account_mut(cid);
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut acc.pending).into_iter().partition(|p| {
            matches!(&p.event.body,
                EventBody::ShipmentShipped { order_id: o, .. } | EventBody::OrderCancelled { order_id: o } if o == order_id)
        });
        acc.pending = keep;
        for p in ready {
            self.forget_pending_timer(cid, &p);
            self.dispatch_account_event(cid, &p.event, cause, out);
        }
    }

    /// Drops the expiry moment of a parked event that was resolved before it expired.
    fn forget_pending_timer(&mut self, cid: &str, p: &account::Pending) {
        self.timers.remove(&Timer {
            at: p.received_at.plus_us(self.policy.bounds.pending_ttl_us),
            customer_id: cid.to_string(),
            kind: TimerKind::PendingExpiry {
                event_id: p.event.event_id.clone(),
            },
        });
    }

    // ---------------------------------------------------------------- profiles

    fn on_customer_profile(
        &mut self,
        cid: &str,
        event: &Event,
        profile: &CustomerProfile,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let acc = &self.accounts[cid];
        if acc.profile_at.is_some_and(|t| event.occurred_at < t) {
            return Outcome::Duplicate;
        }
        if let Some(r) = profile
            .group_id
            .as_deref()
            .and_then(|g| self.group_capacity(event, g))
        {
            out.push(Output::Rejection(r));
            return Outcome::Rejected;
        }
        let acc = &self.accounts[cid];
        if let Some(c) = acc
            .currency
            .filter(|c| *c != profile.currency && acc.holds_money())
        {
            out.push(Output::Rejection(rejection(
                event,
                ErrorCode::CurrencyMismatch,
                format!(
                    "account holds {c} items; its currency cannot change to {}",
                    profile.currency
                ),
            )));
            return Outcome::Rejected;
        }
        let old_group = acc.group_id().map(str::to_string);
        let acc = self.accounts.get_mut(cid).expect("account exists");
        acc.profile = Some(profile.clone());
        acc.profile_at = Some(event.occurred_at);
        acc.currency = Some(profile.currency);
        if old_group != profile.group_id {
            if let Some(g) = old_group.as_deref().and_then(|g| self.groups.get_mut(g)) {
                g.members.remove(cid);
            }
            if let Some(gid) = &profile.group_id {
                let g = self.groups.entry(gid.clone()).or_insert_with(|| Group {
                    group_id: gid.clone(),
                    ..Group::default()
                });
                g.members.insert(cid.to_string());
            }
        }
        let warn_days = i64::from(self.policy.review_warning_days);
        if let Some(review) = profile.review_date {
            self.schedule(review.plus_days(-warn_days), cid, TimerKind::ReviewWarning);
            self.schedule(review, cid, TimerKind::ReviewExpired);
        }
        if let Some(t) = &profile.temporary_limit {
            self.schedule(t.expires_at, cid, TimerKind::TempLimitExpiry);
        }
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        // Leaving a group frees the group's room: its remaining members' queue is re-checked.
        if old_group != profile.group_id {
            let remaining = old_group
                .as_deref()
                .and_then(|g| self.groups.get(g))
                .and_then(|g| g.members.iter().next().cloned());
            if let Some(member) = remaining {
                self.recheck_holds(&member, cause, out);
            }
        }
        Outcome::Applied
    }

    fn on_group_profile(
        &mut self,
        event: &Event,
        profile: &GroupProfile,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        if let Some(r) = self.group_capacity(event, &profile.group_id) {
            out.push(Output::Rejection(r));
            return Outcome::Rejected;
        }
        let g = self
            .groups
            .entry(profile.group_id.clone())
            .or_insert_with(|| Group {
                group_id: profile.group_id.clone(),
                ..Group::default()
            });
        if g.profile_at.is_some_and(|t| event.occurred_at < t)
            || g.recent_event_ids.contains(&event.event_id)
        {
            return Outcome::Duplicate;
        }
        g.recent_event_ids.insert(
            event.event_id.clone(),
            self.policy.bounds.event_ids_per_account,
        );
        self.changed_groups.insert(profile.group_id.clone());
        let g = self
            .groups
            .get_mut(&profile.group_id)
            .expect("entered above");
        g.profile = Some(profile.clone());
        g.profile_at = Some(event.occurred_at);
        let members: Vec<String> = g.members.iter().cloned().collect();
        // Re-check every member's queue; `recheck_holds` covers the whole group at once.
        if let Some(first) = members.first() {
            self.recheck_holds(first, cause, out);
        }
        for m in &members {
            self.touch(m);
        }
        Outcome::Applied
    }
}

impl Engine {
    // ---------------------------------------------------------------- commands

    #[allow(clippy::too_many_arguments)]
    fn on_command(
        &mut self,
        cid: &str,
        event: &Event,
        kind: CommandKind,
        order_id: Option<&str>,
        actor: &str,
        note: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        match kind {
            CommandKind::Block => {
                self.account_mut(cid).manual_block = Some(actor.to_string());
                self.touch(cid);
                Outcome::Applied
            }
            CommandKind::Unblock => {
                self.account_mut(cid).manual_block = None;
                self.touch(cid);
                self.recheck_holds(cid, cause, out);
                Outcome::Applied
            }
            // Dispatched to `on_delivery_command` (never here).
            CommandKind::ReleaseDelivery | CommandKind::RejectDelivery => Outcome::Rejected,
            CommandKind::ReleaseHold | CommandKind::RejectHold => {
                let order_id = order_id.unwrap_or_default();
                let held = self.accounts[cid]
                    .orders
                    .get(order_id)
                    .filter(|o| o.state == OrderState::Held);
                let Some(order) = held else {
                    out.push(Output::Rejection(rejection(
                        event,
                        ErrorCode::OrderNotHeld,
                        format!("order {order_id} is not held for customer {cid}"),
                    )));
                    return Outcome::Rejected;
                };
                if kind == CommandKind::RejectHold {
                    let detail = format!("rejected by {actor}: {note}");
                    let reasons = vec![Reason {
                        code: ReasonCode::Manual,
                        detail,
                    }];
                    let d = self.decision(
                        cid,
                        order_id,
                        DecisionStatus::Rejected,
                        reasons,
                        cause,
                        Some(actor),
                        Some(note),
                    );
                    out.push(Output::Decision(d));
                    let cap = self.policy.bounds.closed_ids_per_account;
                    self.account_mut(cid).close_rejected_order(order_id, cap);
                } else {
                    let four_eyes = self
                        .policy
                        .four_eyes_amount
                        .is_some_and(|max| order.amount_account > max);
                    let first = order.hold.as_ref().and_then(|h| h.first_approver.clone());
                    let detail = match (four_eyes, first) {
                        (false, _) => format!("released by {actor}: {note}"),
                        (true, None) => {
                            if let Some(h) = self
                                .account_mut(cid)
                                .orders
                                .get_mut(order_id)
                                .and_then(|o| o.hold.as_mut())
                            {
                                h.first_approver = Some(actor.to_string());
                            }
                            return Outcome::Applied;
                        }
                        (true, Some(first)) if first == actor => {
                            out.push(Output::Rejection(rejection(
                                event,
                                ErrorCode::FourEyesSameActor,
                                format!(
                                    "order {order_id} needs a second approver other than {actor}"
                                ),
                            )));
                            return Outcome::Rejected;
                        }
                        (true, Some(first)) => {
                            format!(
                                "released by {actor} (second approval; first by {first}): {note}"
                            )
                        }
                    };
                    let policy = Arc::clone(&self.policy);
                    let now = self.now();
                    let prepay =
                        rules::terms(&self.accounts[cid], &policy, now).is_some_and(|t| t.prepay);
                    let cap = policy.bounds.closed_ids_per_account;
                    // Reserve first so the decision shows the exposure after it.
                    let hold_id = ids::decision_id(cid, order_id, "initial");
                    let order_snapshot = self.accounts[cid].orders.get(order_id).cloned();
                    let account = self
                        .account_currency(&self.accounts[cid])
                        .or(order_snapshot.as_ref().map(|o| o.currency));
                    let conv = Conv {
                        rates: &self.rates,
                        account: account.unwrap_or_else(|| Currency::parse("EUR").expect("ISO")),
                    };
                    if let Some(acc) = self.accounts.get_mut(cid) {
                        acc.open_order(order_id, prepay, cap, &conv);
                    }
                    let reasons = vec![Reason {
                        code: ReasonCode::Manual,
                        detail,
                    }];
                    if let Some(o) = order_snapshot {
                        let d = self.decision_for(
                            cid,
                            &o,
                            DecisionStatus::Released,
                            reasons,
                            cause,
                            Some(actor),
                            Some(note),
                            Some(hold_id),
                        );
                        out.push(Output::Decision(d));
                    }
                }
                self.touch(cid);
                self.recheck_holds(cid, cause, out);
                Outcome::Applied
            }
        }
    }

    // ---------------------------------------------------------------- the hold queue

    /// Re-checks held orders after something freed room or cleared a reason. With a group
    /// profile the whole group's queue is re-checked, oldest first across members. Holds that
    /// need a person are skipped and block nothing. Under strict FIFO an order that still fails
    /// blocks the later orders of its customer (and of the whole group when the group limit is
    /// what it fails).
    fn recheck_holds(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let members: Vec<String> = match self.accounts.get(cid).and_then(|a| a.group_id()) {
            Some(gid) if self.groups.get(gid).is_some_and(|g| g.profile.is_some()) => {
                self.groups[gid].members.iter().cloned().collect()
            }
            _ => vec![cid.to_string()],
        };
        self.recheck_orders(&members, cause, out);
        self.recheck_deliveries(&members, cause, out);
    }

    /// The order pass of a re-check (see `recheck_holds`).
    fn recheck_orders(&mut self, members: &[String], cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        // The queue as (placed_at, member, position in the member's holds): each member's holds
        // are already in release order, so this sorts exactly as (placed_at, customer id,
        // order id) would, without copying an id. A released order leaves its member's holds,
        // which shifts that member's later positions down by one (`released`).
        let mut queue: Vec<(Timestamp, usize, usize)> = Vec::new();
        for (mi, m) in members.iter().enumerate() {
            if let Some(acc) = self.accounts.get(m) {
                for (pos, id) in acc.holds.iter().enumerate() {
                    let o = &acc.orders[id];
                    if !o.hold.as_ref().is_some_and(|h| h.needs_person()) {
                        queue.push((o.placed_at, mi, pos));
                    }
                }
            }
        }
        if queue.is_empty() {
            return;
        }
        queue.sort_unstable();
        let strict = policy.release_order == ReleaseOrder::StrictFifo;
        let mut blocked = vec![false; members.len()];
        let mut blocked_count = 0;
        let mut released = vec![0usize; members.len()];
        let mut group_blocked = false;
        let now = self.now();
        let cap = policy.bounds.closed_ids_per_account;
        for (_, mi, pos) in queue {
            if strict && (group_blocked || blocked_count == members.len()) {
                // Everything behind a failing order waits: nothing further can be released.
                break;
            }
            if strict && blocked[mi] {
                continue;
            }
            let c = members[mi].clone();
            let order_id = self.accounts[&c].holds[pos - released[mi]].clone();
            let acc = &self.accounts[&c];
            let terms = rules::terms(acc, &policy, now);
            let order = &acc.orders[&order_id];
            let amount_account = match &terms {
                Some(t) => self.rates.convert(order.amount, order.currency, t.currency),
                None => Some(order.amount_account),
            };
            let Some(amount_account) = amount_account else {
                continue; // Needs a person: no FX rate to the account's currency.
            };
            let group = self.group_view(acc);
            let candidate = Candidate {
                amount: order.amount,
                currency: order.currency,
                amount_account: Some(amount_account),
                order_id: &order_id,
                rates: &self.rates,
            };
            let reasons = rules::check_order(
                acc,
                terms.as_ref(),
                group.as_ref(),
                &policy,
                now,
                &candidate,
            );
            if reasons.iter().any(|r| r.code.needs_person()) {
                // A re-check runs every rule: an order that now fails one a person must decide
                // (a new order cap, an anomaly) stays held, and blocks nothing.
                continue;
            }
            if reasons.is_empty() {
                let prepay = terms.as_ref().is_some_and(|t| t.prepay);
                let conv = Conv {
                    rates: &self.rates,
                    account: terms.as_ref().map_or(order.currency, |t| t.currency),
                };
                let acc = self.accounts.get_mut(&c).expect("member exists");
                if let Some(o) = acc.orders.get_mut(&order_id) {
                    o.amount_account = amount_account;
                }
                let snapshot = acc.orders.get(&order_id).cloned();
                acc.open_order(&order_id, prepay, cap, &conv);
                if let Some(o) = snapshot {
                    let hold_id = ids::decision_id(&c, &order_id, "initial");
                    let d = self.decision_for(
                        &c,
                        &o,
                        DecisionStatus::Released,
                        Vec::new(),
                        cause,
                        None,
                        None,
                        Some(hold_id),
                    );
                    out.push(Output::Decision(d));
                }
                self.touch(&c);
                released[mi] += 1;
            } else if strict {
                if reasons
                    .iter()
                    .any(|r| r.code == ReasonCode::GroupLimitExceeded)
                {
                    group_blocked = true;
                }
                if !blocked[mi] {
                    blocked[mi] = true;
                    blocked_count += 1;
                }
            }
        }
    }

    /// The group position of an account's group, when the group has a profile.
    fn group_view(&self, acc: &Account) -> Option<GroupView> {
        let gid = acc.group_id()?;
        let g = self.groups.get(gid)?;
        let gp = g.profile.as_ref()?;
        let mut total = Ok(Decimal::ZERO);
        for m in &g.members {
            let Some(a) = self.accounts.get(m) else {
                continue;
            };
            let exposure = a.exposure_total();
            if exposure.is_zero() {
                continue;
            }
            let cur = a.currency.unwrap_or(gp.currency);
            total = match (total, self.rates.convert(exposure, cur, gp.currency)) {
                (Ok(t), Some(e)) => Ok(t + e),
                (Ok(_), None) => Err(format!(
                    "member {m} is in {cur}, group {gid} in {}, no FX rate",
                    gp.currency
                )),
                (err, _) => err,
            };
        }
        let tolerance = gp.tolerance_pct.unwrap_or_default();
        Some(GroupView {
            group_id: gid.to_string(),
            limit_with_tolerance: rules::with_tolerance(gp.credit_limit, tolerance),
            credit_limit: gp.credit_limit,
            currency: gp.currency,
            exposure: total,
        })
    }

    // ---------------------------------------------------------------- output builders

    #[allow(clippy::too_many_arguments)]
    fn decision(
        &self,
        cid: &str,
        order_id: &str,
        status: DecisionStatus,
        reasons: Vec<Reason>,
        cause: &Cause,
        actor: Option<&str>,
        note: Option<&str>,
    ) -> Decision {
        let order = self.accounts[cid]
            .orders
            .get(order_id)
            .cloned()
            .expect("decided order is live");
        let hold_id = matches!(
            status,
            DecisionStatus::Released | DecisionStatus::Rejected | DecisionStatus::Cancelled
        )
        .then(|| ids::decision_id(cid, order_id, "initial"));
        self.decision_for(cid, &order, status, reasons, cause, actor, note, hold_id)
    }

    #[allow(clippy::too_many_arguments)]
    fn decision_for(
        &self,
        cid: &str,
        order: &Order,
        status: DecisionStatus,
        reasons: Vec<Reason>,
        cause: &Cause,
        actor: Option<&str>,
        note: Option<&str>,
        hold_decision_id: Option<String>,
    ) -> Decision {
        let acc = &self.accounts[cid];
        let terms = rules::terms(acc, &self.policy, self.now());
        let exposure = acc.exposure();
        let limit = terms.as_ref().map(|t| t.limit_effective);
        let foreign = terms
            .as_ref()
            .map(|t| t.currency)
            .or(acc.currency)
            .filter(|c| *c != order.currency)
            .map(|c| (order.currency, c))
            .filter(|(from, to)| self.rates.multiplier(*from, *to).is_some());
        let phase = match status {
            DecisionStatus::Approved | DecisionStatus::Held => "initial",
            other => other.as_str(),
        };
        Decision {
            decision_id: ids::decision_id(cid, &order.order_id, phase),
            order_id: order.order_id.clone(),
            customer_id: cid.to_string(),
            status,
            reasons,
            amount: order.amount,
            currency: order.currency,
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
            group_id: acc.group_id().map(str::to_string),
            hold_decision_id,
            note: note.map(str::to_string),
            amount_account_currency: foreign.map(|_| order.amount_account),
            fx_rate: foreign.map(|(from, to)| {
                self.rates
                    .multiplier(from, to)
                    .map_or_else(String::new, |r| r.normalize().to_string())
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn alert(
        &self,
        kind: AlertKind,
        severity: Severity,
        customer_id: Option<&str>,
        group_id: Option<&str>,
        at: Timestamp,
        discriminator: &str,
        details: Vec<(&'static str, Value)>,
    ) -> Alert {
        let scope = if kind == AlertKind::GroupUtilizationThreshold {
            group_id.unwrap_or_default()
        } else {
            customer_id.or(group_id).unwrap_or_default()
        };
        Alert {
            alert_id: ids::alert_id(kind.as_str(), scope, discriminator),
            kind,
            severity,
            customer_id: customer_id.map(str::to_string),
            group_id: group_id.map(str::to_string),
            at,
            details: details.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }

    // ---------------------------------------------------------------- end-of-event warnings

    /// After an event or a timer: utilization thresholds (customer and group) and behaviour
    /// suggestions for every account whose position changed.
    fn finish(&mut self, cause: &Cause, out: &mut Vec<Output>) {
        let touched = std::mem::take(&mut self.touched);
        let mut groups_done: Vec<String> = Vec::new();
        for cid in &touched {
            self.utilization_alerts(cid, cause, out);
            self.behaviour_alerts(cid, cause, out);
            if let Some(gid) = self
                .accounts
                .get(cid)
                .and_then(|a| a.group_id())
                .map(str::to_string)
            {
                if !groups_done.contains(&gid) {
                    self.group_utilization_alerts(&gid, cid, cause, out);
                    groups_done.push(gid);
                }
            }
        }
    }

    fn utilization_alerts(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let Some(terms) = self.terms(cid) else { return };
        let acc = self.accounts.get_mut(cid).expect("touched account exists");
        let exposure = acc.exposure_total();
        let util = warnings::utilization(exposure, terms.limit_effective);
        let crossed =
            warnings::threshold_crossings(&policy, &mut acc.marks.utilization_fired, util);
        let position = Position {
            util,
            exposure,
            limit: terms.limit_effective,
            currency: terms.currency,
        };
        self.threshold_alerts(
            AlertKind::UtilizationThreshold,
            &crossed,
            cid,
            None,
            &position,
            cause,
            out,
        );
    }

    fn group_utilization_alerts(
        &mut self,
        gid: &str,
        cid: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        let Some(view) = self.accounts.get(cid).and_then(|acc| self.group_view(acc)) else {
            return;
        };
        let Ok(exposure) = view.exposure else { return };
        let util = warnings::utilization(exposure, view.credit_limit);
        let Some(g) = self.groups.get_mut(gid) else {
            return;
        };
        let members = g.members.len();
        let fired_before = g.utilization_fired;
        let crossed = warnings::threshold_crossings(&policy, &mut g.utilization_fired, util);
        if g.utilization_fired != fired_before {
            self.changed_groups.insert(gid.to_string());
        }
        let position = Position {
            util,
            exposure,
            limit: view.credit_limit,
            currency: view.currency,
        };
        let group = Some((gid, members));
        self.threshold_alerts(
            AlertKind::GroupUtilizationThreshold,
            &crossed,
            cid,
            group,
            &position,
            cause,
            out,
        );
    }

    /// One alert per threshold crossed (customer or group scope).
    #[allow(clippy::too_many_arguments)]
    fn threshold_alerts(
        &self,
        kind: AlertKind,
        crossed: &[usize],
        cid: &str,
        group: Option<(&str, usize)>,
        p: &Position,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        for &i in crossed {
            let t = &self.policy.utilization_thresholds[i];
            let threshold = format_ratio(t.ratio);
            let mut details = vec![
                ("threshold", json!(threshold)),
                (
                    "utilization",
                    p.util
                        .map_or(json!("unbounded"), |u| json!(format_ratio(u))),
                ),
                ("exposure", money(p.exposure)),
                ("credit_limit", money(p.limit)),
                ("currency", json!(p.currency.as_str())),
                ("source_event_id", json!(cause.source)),
            ];
            if cause.fx {
                details.push(("cause", json!("fx")));
            }
            if let Some((_, members)) = group {
                details.push(("members", json!(members)));
            }
            let disc = format!("{threshold}|{}|{}", cause.source, cause.at.0);
            let alert = self.alert(
                kind,
                t.severity,
                Some(cid),
                group.map(|g| g.0),
                cause.at,
                &disc,
                details,
            );
            out.push(Output::Alert(alert));
        }
    }

    /// Behavioural grade and limit suggestions, each edge-triggered (once per change).
    fn behaviour_alerts(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some(profile) = acc.profile.as_ref() else {
            return;
        };
        let profile_grade = profile.grade.unwrap_or(policy.default_grade);
        let limit = profile.credit_limit;
        let currency = profile.currency;
        // Built only when an alert fires (most events fire none).
        let disc = || format!("{}|{}", cause.source, cause.at.0);

        if let Some(ind) = warnings::behavioural_grade(acc, &policy, now, profile_grade) {
            let suggested = ind.combined;
            let acc = self.accounts.get_mut(cid).expect("exists");
            if suggested == profile_grade {
                acc.behaviour.grade_suggested = None;
                if policy.apply_behavioural_grade {
                    acc.grade_override = None;
                }
            } else if acc.behaviour.grade_suggested != Some(suggested) {
                acc.behaviour.grade_suggested = Some(suggested);
                if policy.apply_behavioural_grade {
                    acc.grade_override = Some(suggested);
                }
                let severity = if suggested > profile_grade {
                    Severity::Warning
                } else {
                    Severity::Info
                };
                let alert = self.alert(
                    AlertKind::GradeChangeSuggested,
                    severity,
                    Some(cid),
                    None,
                    cause.at,
                    &format!("{suggested}|{}", disc()),
                    vec![
                        ("current_grade", json!(profile_grade.as_str())),
                        ("suggested_grade", json!(suggested.as_str())),
                        ("applied", json!(policy.apply_behavioural_grade)),
                        (
                            "indicators",
                            json!({
                                "net_collection_rate": format_ratio(ind.net_collection_rate),
                                "collection_grade": ind.collection_grade.as_str(),
                                "avg_days_late": ind.avg_days_late.normalize().to_string(),
                                "timeliness_grade": ind.timeliness_grade.as_str(),
                                "profile_grade": ind.profile_grade.as_str(),
                                "amount_due": format_money(ind.amount_due),
                                "collected": format_money(ind.collected),
                                "window_days": policy.behaviour_window_days,
                            }),
                        ),
                    ],
                );
                out.push(Output::Alert(alert));
            }
        }

        let s = &policy.limit_suggestions;
        let acc = self.accounts.get_mut(cid).expect("exists");
        let avg_late = warnings::recent_avg_days_late(acc, s.settled_items);
        let decrease = avg_late.is_some_and(|a| a > s.decrease_avg_days_late_min);
        let near = acc.behaviour.near_limit.iter().filter(|n| **n).count();
        let increase = !decrease
            && avg_late.is_some_and(|a| a <= s.increase_avg_days_late_max)
            && near >= s.increase_near_limit_orders_min;
        let fire_decrease = decrease && !acc.behaviour.limit_decrease_active;
        let fire_increase = increase && !acc.behaviour.limit_increase_active;
        acc.behaviour.limit_decrease_active = decrease;
        acc.behaviour.limit_increase_active = increase;
        let avg = avg_late.unwrap_or_default().normalize().to_string();
        if fire_decrease {
            let suggested = (limit - limit * s.decrease_pct / Decimal::ONE_HUNDRED).round_dp(2);
            let alert = self.alert(
                AlertKind::LimitDecreaseSuggested,
                Severity::Warning,
                Some(cid),
                None,
                cause.at,
                &disc(),
                vec![
                    ("avg_days_late", json!(avg)),
                    ("settled_items", json!(s.settled_items)),
                    (
                        "threshold_days",
                        json!(s.decrease_avg_days_late_min.normalize().to_string()),
                    ),
                    ("credit_limit", money(limit)),
                    ("suggested_limit", money(suggested)),
                    ("currency", json!(currency.as_str())),
                ],
            );
            out.push(Output::Alert(alert));
        }
        if fire_increase {
            let suggested = (limit + limit * s.increase_pct / Decimal::ONE_HUNDRED).round_dp(2);
            let alert = self.alert(
                AlertKind::LimitIncreaseSuggested,
                Severity::Info,
                Some(cid),
                None,
                cause.at,
                &disc(),
                vec![
                    ("avg_days_late", json!(avg)),
                    ("settled_items", json!(s.settled_items)),
                    ("near_limit_orders", json!(near)),
                    ("recent_orders", json!(s.increase_recent_orders)),
                    ("credit_limit", money(limit)),
                    ("suggested_limit", money(suggested)),
                    ("currency", json!(currency.as_str())),
                ],
            );
            out.push(Output::Alert(alert));
        }
    }

    // ---------------------------------------------------------------- time-driven

    /// Fires every index entry due at or before `until`, in moment order, with the clock set
    /// to each entry's moment so that it is judged as of then.
    fn fire_due_until(&mut self, until: Timestamp, out: &mut Vec<Output>) {
        while self.timers.first().is_some_and(|t| t.at <= until) {
            let Some(timer) = self.timers.pop_first() else {
                break;
            };
            if self.clock.is_none_or(|c| c < timer.at) {
                self.clock = Some(timer.at);
            }
            // Entries for "has passed" moments sit 1 us after the moment; report the moment.
            let moment = match &timer.kind {
                TimerKind::HoldExpiry { .. }
                | TimerKind::DeliveryHoldExpiry { .. }
                | TimerKind::Receivable { stage: 0, .. } => timer.at.plus_us(-1),
                _ => timer.at,
            };
            let cause = Cause {
                source: format!("clock:{moment}"),
                at: moment,
                fx: false,
            };
            self.fire(&timer, &cause, out);
            self.finish(&cause, out);
        }
    }

    fn fire(&mut self, timer: &Timer, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let cid = timer.customer_id.as_str();
        if self.accounts.contains_key(cid) {
            self.changed_accounts.insert(cid.to_string());
        }
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        match &timer.kind {
            TimerKind::Receivable { shipment_id, stage } => {
                let Some(r) = acc
                    .receivables
                    .iter()
                    .find(|r| &r.shipment_id == shipment_id)
                else {
                    return;
                };
                if r.next_stage != *stage {
                    return;
                }
                let buckets = &policy.aging_buckets_days;
                let stage_i = usize::from(*stage);
                let (kind, severity, days) = if stage_i == 0 {
                    (AlertKind::ItemOverdue, Severity::Warning, 0)
                } else if stage_i <= buckets.len() {
                    let sev = if stage_i == buckets.len() {
                        Severity::Critical
                    } else {
                        Severity::Warning
                    };
                    (AlertKind::AgingBucket, sev, buckets[stage_i - 1])
                } else {
                    (
                        AlertKind::WriteOffCandidate,
                        Severity::Critical,
                        policy.write_off_days,
                    )
                };
                let mut details = vec![
                    ("shipment_id", json!(r.shipment_id)),
                    ("order_id", json!(r.order_id)),
                    ("amount_open", money(r.open)),
                    ("due_at", json!(r.due_at.to_rfc3339())),
                    ("currency", json!(acc.currency.map(|c| c.to_string()))),
                ];
                if kind != AlertKind::ItemOverdue {
                    details.push(("days_past_due", json!(days)));
                }
                if kind == AlertKind::AgingBucket {
                    details.push(("bucket", json!(format!("{days}+"))));
                }
                let due_at = r.due_at;
                let alert = self.alert(
                    kind,
                    severity,
                    Some(cid),
                    None,
                    cause.at,
                    &format!("{shipment_id}|{stage}"),
                    details,
                );
                out.push(Output::Alert(alert));
                let next = stage + 1;
                let next_at = receivable_timer_at(&policy, due_at, next);
                if let Some(r) = self.accounts.get_mut(cid).and_then(|a| {
                    a.receivables
                        .iter_mut()
                        .find(|r| &r.shipment_id == shipment_id)
                }) {
                    r.next_stage = next;
                }
                if let Some(at) = next_at {
                    self.schedule(
                        at,
                        cid,
                        TimerKind::Receivable {
                            shipment_id: shipment_id.clone(),
                            stage: next,
                        },
                    );
                }
                self.touch(cid);
            }
            TimerKind::ReviewWarning | TimerKind::ReviewExpired => {
                let Some(review) = acc.profile.as_ref().and_then(|p| p.review_date) else {
                    return;
                };
                let warning = timer.kind == TimerKind::ReviewWarning;
                let expected = if warning {
                    review.plus_days(-i64::from(policy.review_warning_days))
                } else {
                    review
                };
                let marks = &acc.marks;
                let already = if warning {
                    marks.review_warned_for
                } else {
                    marks.review_expired_for
                };
                if expected != timer.at
                    || already == Some(review)
                    || (warning && self.now() >= review)
                {
                    return;
                }
                let (kind, severity) = if warning {
                    (AlertKind::LimitReviewDue, Severity::Info)
                } else {
                    (AlertKind::LimitExpired, Severity::Warning)
                };
                let limit = acc
                    .profile
                    .as_ref()
                    .map(|p| p.credit_limit)
                    .unwrap_or_default();
                let alert = self.alert(
                    kind,
                    severity,
                    Some(cid),
                    None,
                    timer.at,
                    &review.0.to_string(),
                    vec![
                        ("review_date", json!(review.to_date())),
                        ("credit_limit", money(limit)),
                        (
                            "days_ahead",
                            json!(if warning {
                                policy.review_warning_days
                            } else {
                                0
                            }),
                        ),
                    ],
                );
                out.push(Output::Alert(alert));
                let acc = self.account_mut(cid);
                if warning {
                    acc.marks.review_warned_for = Some(review);
                } else {
                    acc.marks.review_expired_for = Some(review);
                }
            }
            TimerKind::TempLimitExpiry => {
                let Some(p) = acc.profile.as_ref() else {
                    return;
                };
                let Some(temp) = p.temporary_limit.as_ref() else {
                    return;
                };
                if temp.expires_at != timer.at
                    || acc.marks.temp_expired_for == Some(temp.expires_at)
                {
                    return;
                }
                let alert = self.alert(
                    AlertKind::TempLimitExpired,
                    Severity::Info,
                    Some(cid),
                    None,
                    timer.at,
                    &temp.expires_at.0.to_string(),
                    vec![
                        ("temporary_amount", money(temp.amount)),
                        ("expires_at", json!(temp.expires_at.to_rfc3339())),
                        ("credit_limit", money(p.credit_limit)),
                        ("exposure", money(acc.exposure_total())),
                    ],
                );
                out.push(Output::Alert(alert));
                self.account_mut(cid).marks.temp_expired_for = Some(timer.at);
                self.touch(cid);
            }
            TimerKind::Inactivity => {
                let Some((due, usual_days)) = warnings::inactivity_due(acc, &policy) else {
                    return;
                };
                let last = acc
                    .behaviour
                    .order_times
                    .back()
                    .copied()
                    .unwrap_or_default();
                if due != timer.at || acc.behaviour.inactivity_alerted_for == Some(last) {
                    return;
                }
                let alert = self.alert(
                    AlertKind::Inactivity,
                    Severity::Info,
                    Some(cid),
                    None,
                    timer.at,
                    &last.0.to_string(),
                    vec![
                        ("last_order_at", json!(last.to_rfc3339())),
                        (
                            "usual_interval_days",
                            json!(usual_days.normalize().to_string()),
                        ),
                        (
                            "silent_days",
                            json!(timer.at.days_since(last).normalize().to_string()),
                        ),
                    ],
                );
                out.push(Output::Alert(alert));
                self.account_mut(cid).behaviour.inactivity_alerted_for = Some(last);
            }
            TimerKind::HoldExpiry { order_id } => {
                let Some(order) = acc
                    .orders
                    .get(order_id)
                    .filter(|o| o.state == OrderState::Held)
                else {
                    return;
                };
                if order
                    .placed_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1)
                    != timer.at
                {
                    return;
                }
                let source = order.placed_event_id.clone();
                let expired_cause = Cause {
                    source,
                    at: cause.at,
                    fx: false,
                };
                let reasons = vec![Reason {
                    code: ReasonCode::HoldExpired,
                    detail: format!("held longer than {} days", policy.hold_expiry_days),
                }];
                let d = self.decision(
                    cid,
                    order_id,
                    DecisionStatus::Rejected,
                    reasons,
                    &expired_cause,
                    None,
                    None,
                );
                out.push(Output::Decision(d));
                self.account_mut(cid)
                    .close_rejected_order(order_id, policy.bounds.closed_ids_per_account);
                self.touch(cid);
                self.recheck_holds(cid, cause, out);
            }
            TimerKind::PendingExpiry { event_id } => {
                let acc = self.account_mut(cid);
                let Some(pos) = acc
                    .pending
                    .iter()
                    .position(|p| &p.event.event_id == event_id)
                else {
                    return;
                };
                let pending = acc.pending.remove(pos);
                self.resolve_orphan(cid, pending.event, out);
            }
            TimerKind::DeliveryHoldExpiry { delivery_id } => {
                self.expire_delivery(cid, delivery_id, timer.at, cause, out);
            }
        }
    }

    // ---------------------------------------------------------------- reads

    /// What would happen to this order now, without changing anything.
    pub fn simulate_order(
        &self,
        customer_id: &str,
        amount: Decimal,
        currency: Currency,
    ) -> (DecisionStatus, Vec<Reason>) {
        let now = self.now();
        let blank;
        let acc = match self.accounts.get(customer_id) {
            Some(a) => a,
            None => {
                blank = Account::new(customer_id);
                &blank
            }
        };
        let terms = rules::terms(acc, &self.policy, now);
        let account_currency = terms.as_ref().map(|t| t.currency).or(acc.currency);
        let amount_account = match account_currency {
            Some(c) => self.rates.convert(amount, currency, c),
            None => Some(amount),
        };
        let group = self.group_view(acc);
        let candidate = Candidate {
            amount,
            currency,
            amount_account,
            order_id: "",
            rates: &self.rates,
        };
        let reasons = rules::check_order(
            acc,
            terms.as_ref(),
            group.as_ref(),
            &self.policy,
            now,
            &candidate,
        );
        let status = if reasons.is_empty() {
            DecisionStatus::Approved
        } else {
            DecisionStatus::Held
        };
        (status, reasons)
    }

    /// Exposure, limits and holds summed per currency, in currency order.
    pub fn totals(&self) -> BTreeMap<Currency, CurrencyTotals> {
        let mut totals: BTreeMap<Currency, CurrencyTotals> = BTreeMap::new();
        for acc in self.accounts.values() {
            let Some(cur) = acc.currency else { continue };
            let t = totals.entry(cur).or_default();
            t.accounts += 1;
            t.exposure.open_orders += acc.open_orders_total;
            t.exposure.receivables += acc.receivables_total;
            t.exposure.unapplied_credit += acc.unapplied_credit;
            t.exposure.total += acc.exposure_total();
            t.credit_limit += acc
                .profile
                .as_ref()
                .map(|p| p.credit_limit)
                .unwrap_or_default();
            t.held_orders += acc.holds.len();
            t.held_amount += acc
                .holds
                .iter()
                .map(|id| acc.orders[id].amount_account)
                .sum::<Decimal>();
        }
        totals
    }

    /// Checks every account's exposure identity (foreign items valued at the latest rates)
    /// and the group memberships.
    pub fn verify_invariants(&self) -> Result<(), String> {
        let mut ids: Vec<&String> = self.accounts.keys().collect();
        ids.sort();
        for id in ids {
            let acc = &self.accounts[id];
            acc.check_identity()?;
            if let Some(account) = acc.currency {
                let mut copy = acc.clone();
                let conv = Conv {
                    rates: &self.rates,
                    account,
                };
                if copy.revalue(&conv) {
                    let orders = acc.orders.iter().filter_map(|(oid, o)| {
                        let c = &copy.orders[oid];
                        (c.open_remaining != o.open_remaining).then(|| {
                            format!(
                                "order {oid} ({} {}, {:?}, prepaid {}): {} valued {}",
                                o.amount,
                                o.currency,
                                o.state,
                                o.prepaid,
                                o.open_remaining,
                                c.open_remaining
                            )
                        })
                    });
                    let receivables = acc
                        .receivables
                        .iter()
                        .zip(&copy.receivables)
                        .filter(|(r, c)| r.open != c.open)
                        .map(|(r, c)| format!("a receivable: {} valued {}", r.open, c.open));
                    let which: Vec<String> = orders.chain(receivables).collect();
                    return Err(format!(
                        "{id}: a foreign item is not valued at the latest rate: {}",
                        which.join("; ")
                    ));
                }
            }
            if let Some(gid) = acc.group_id() {
                if !self.groups.get(gid).is_some_and(|g| g.members.contains(id)) {
                    return Err(format!("{id}: not a member of its group {gid}"));
                }
            }
        }
        for g in self.groups.values() {
            for m in &g.members {
                if self.accounts.get(m).and_then(|a| a.group_id()) != Some(g.group_id.as_str()) {
                    return Err(format!(
                        "group {}: member {m} names another group",
                        g.group_id
                    ));
                }
            }
        }
        Ok(())
    }
}

/// When a receivable due at `due_at` reaches aging stage `stage` (0: overdue; 1..=n: the
/// aging buckets; n+1: write-off candidate); `None` past the last stage.
fn receivable_timer_at(policy: &Policy, due_at: Timestamp, stage: u8) -> Option<Timestamp> {
    let buckets = &policy.aging_buckets_days;
    match usize::from(stage) {
        0 => Some(due_at.plus_us(1)),
        n if n <= buckets.len() => Some(due_at.plus_days(i64::from(buckets[n - 1]))),
        n if n == buckets.len() + 1 => Some(due_at.plus_days(i64::from(policy.write_off_days))),
        _ => None,
    }
}

pub(crate) fn rejection(event: &Event, error: ErrorCode, detail: String) -> Rejection {
    Rejection {
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

    /// Every due moment an account's state implies.
    fn schedule_account_timers(&mut self, cid: &str) {
        let policy = Arc::clone(&self.policy);
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let mut timers: Vec<(Timestamp, TimerKind)> = Vec::new();
        for r in &acc.receivables {
            if let Some(at) = receivable_timer_at(&policy, r.due_at, r.next_stage) {
                timers.push((
                    at,
                    TimerKind::Receivable {
                        shipment_id: r.shipment_id.clone(),
                        stage: r.next_stage,
                    },
                ));
            }
        }
        if let Some(p) = &acc.profile {
            if let Some(review) = p.review_date {
                timers.push((
                    review.plus_days(-i64::from(policy.review_warning_days)),
                    TimerKind::ReviewWarning,
                ));
                timers.push((review, TimerKind::ReviewExpired));
            }
            if let Some(t) = &p.temporary_limit {
                timers.push((t.expires_at, TimerKind::TempLimitExpiry));
            }
        }
        if let Some((due, _)) = warnings::inactivity_due(acc, &policy) {
            timers.push((due, TimerKind::Inactivity));
        }
        if policy.hold_expiry_days > 0 {
            for id in &acc.holds {
                let at = acc.orders[id]
                    .placed_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1);
                timers.push((
                    at,
                    TimerKind::HoldExpiry {
                        order_id: id.clone(),
                    },
                ));
            }
        }
        if policy.hold_expiry_days > 0 {
            for id in &acc.held_deliveries {
                let at = acc.deliveries[id]
                    .requested_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1);
                timers.push((
                    at,
                    TimerKind::DeliveryHoldExpiry {
                        delivery_id: id.clone(),
                    },
                ));
            }
        }
        for p in &acc.pending {
            timers.push((
                p.received_at.plus_us(policy.bounds.pending_ttl_us),
                TimerKind::PendingExpiry {
                    event_id: p.event.event_id.clone(),
                },
            ));
        }
        for (at, kind) in timers {
            self.schedule(at, cid, kind);
        }
    }

    /// Accounts and groups changed since the last call (sorted), and forgets them.
    pub fn take_changed(&mut self) -> (Vec<String>, Vec<String>) {
        let accounts = std::mem::take(&mut self.changed_accounts)
            .into_iter()
            .collect();
        let groups = std::mem::take(&mut self.changed_groups)
            .into_iter()
            .collect();
        (accounts, groups)
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
