//! What readers ask of every account, kept up to date on a read replica instead of walked per
//! request: the state gauges `/metrics` exposes (each account's share, summed per currency and
//! per utilization band) and which accounts hold an order or a delivery (the rows of
//! `/v1/holds` and `/v1/deliveries`). A replica updates its index for the accounts a commit
//! changed, and for those whose share moves with the clock alone (a receivable falling overdue,
//! a temporary limit expiring) when the clock passes that moment; a scrape then reads a few
//! sums, and a hold listing visits only the accounts that hold something.
//!
//! The live engine carries no index (deciding never pays for it). A walk over every account
//! ([`StateGauges::walk`]) is the definition; tests hold the index equal to it.

use super::account::Account;
use super::{rules, warnings, Engine};
use crate::model::*;
use crate::policy::Policy;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Utilization bands of the `credit_sentinel_accounts_by_utilization` gauge.
pub const UTILIZATION_BANDS: [&str; 5] = ["0-70", "70-85", "85-100", "100+", "no_limit"];

/// The band (an index into [`UTILIZATION_BANDS`]) of a utilization; `None` is an account with
/// exposure and no limit.
pub fn utilization_band(u: Option<Decimal>) -> usize {
    match u {
        None => 4,
        Some(u) if u >= Decimal::ONE => 3,
        Some(u) if u >= Decimal::new(85, 2) => 2,
        Some(u) if u >= Decimal::new(70, 2) => 1,
        Some(_) => 0,
    }
}

/// One currency's state gauges: accounts in it and their sums.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CurrencyGauges {
    pub accounts: i64,
    pub exposure: Decimal,
    pub credit_limit: Decimal,
    pub held_amount: Decimal,
    pub overdue: Decimal,
}

impl CurrencyGauges {
    /// Adds (`sign` 1) or takes away (`sign` -1) another set's sums.
    fn add(&mut self, other: &CurrencyGauges, sign: i64) {
        self.accounts += sign * other.accounts;
        for (sum, v) in [
            (&mut self.exposure, other.exposure),
            (&mut self.credit_limit, other.credit_limit),
            (&mut self.held_amount, other.held_amount),
            (&mut self.overdue, other.overdue),
        ] {
            if sign > 0 {
                *sum += v;
            } else {
                *sum -= v;
            }
        }
    }
}

/// The state gauges over a set of accounts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateGauges {
    /// Sums per account currency (accounts that adopted none are left out, as before).
    pub per_currency: BTreeMap<Currency, CurrencyGauges>,
    /// Accounts per utilization band, in [`UTILIZATION_BANDS`] order.
    pub bands: [i64; 5],
    pub over_limit: i64,
    pub held_orders: i64,
}

impl StateGauges {
    /// The gauges by walking every account of `engine` (the definition the index is held to).
    pub fn walk(engine: &Engine) -> StateGauges {
        let now = engine.now();
        let mut g = StateGauges::default();
        for acc in engine.accounts() {
            g.add(&Share::of(acc, &engine.policy, now), 1);
        }
        g
    }

    /// Adds the gauges of another set of accounts (another partition).
    pub fn merge(&mut self, other: &StateGauges) {
        for (cur, c) in &other.per_currency {
            self.per_currency.entry(*cur).or_default().add(c, 1);
        }
        for (b, n) in self.bands.iter_mut().zip(other.bands) {
            *b += n;
        }
        self.over_limit += other.over_limit;
        self.held_orders += other.held_orders;
    }

    /// Adds (`sign` 1) or takes away (`sign` -1) one account's share.
    fn add(&mut self, s: &Share, sign: i64) {
        self.bands[s.band as usize] += sign;
        self.over_limit += sign * i64::from(s.over);
        self.held_orders += sign * s.held;
        let Some(cur) = s.currency else { return };
        let c = self.per_currency.entry(cur).or_default();
        c.add(&s.sums, sign);
        if c.accounts == 0 {
            // Sums of shares taken away again are zero: a currency with no account has no
            // series, as in a walk.
            self.per_currency.remove(&cur);
        }
    }
}

/// One account's share of the state gauges at one moment, and until when it holds.
#[derive(Clone, Debug, PartialEq)]
struct Share {
    /// The account's currency, which its sums are in.
    currency: Option<Currency>,
    /// The account's sums (`accounts` 1).
    sums: CurrencyGauges,
    held: i64,
    band: u8,
    over: bool,
    /// The last moment this share is right at without the account changing: a receivable
    /// falls overdue once the clock passes its due moment, a temporary limit stops counting
    /// at its expiry. `None`: nothing ahead of the clock moves it.
    valid_through: Option<Timestamp>,
}

impl Share {
    fn of(acc: &Account, policy: &Policy, now: Timestamp) -> Share {
        let exposure = acc.exposure_total();
        let terms = rules::terms(acc, policy, now);
        let u = terms
            .as_ref()
            .and_then(|t| warnings::utilization(exposure, t.limit_effective));
        let due = acc
            .receivables()
            .iter()
            .map(|r| r.due_at)
            .filter(|d| *d >= now)
            .min();
        let expiry = acc
            .profile
            .as_ref()
            .and_then(|p| p.temporary_limit.as_ref())
            .filter(|t| now < t.expires_at)
            .map(|t| Timestamp(t.expires_at.0 - 1));
        Share {
            currency: acc.currency,
            sums: CurrencyGauges {
                accounts: 1,
                exposure,
                credit_limit: acc
                    .profile
                    .as_ref()
                    .map(|p| p.credit_limit)
                    .unwrap_or_default(),
                held_amount: acc
                    .holds()
                    .iter()
                    .filter_map(|id| acc.orders().get(id))
                    .map(|o| o.amount_account)
                    .sum(),
                overdue: acc.overdue(now).0,
            },
            held: acc.holds().len() as i64,
            band: utilization_band(u) as u8,
            over: terms.is_some_and(|t| exposure > t.limit_effective),
            valid_through: due.into_iter().chain(expiry).min(),
        }
    }
}

/// A read replica's index (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct ReaderIndex {
    gauges: StateGauges,
    shares: HashMap<String, Share, foldhash::fast::RandomState>,
    /// Accounts by the moment their share stops holding.
    recheck: BTreeSet<(Timestamp, String)>,
    /// Accounts holding at least one order, and at least one delivery.
    held_orders: BTreeSet<String>,
    held_deliveries: BTreeSet<String>,
}

impl ReaderIndex {
    /// The index of every account of `engine`.
    pub(super) fn build(engine: &Engine) -> ReaderIndex {
        let now = engine.now();
        let mut gauges = StateGauges::default();
        let mut shares =
            HashMap::with_capacity_and_hasher(engine.accounts.len(), Default::default());
        // Collected, then built at once from sorted runs: cheaper than an insert per account.
        let (mut recheck, mut held_orders, mut held_deliveries) =
            (Vec::new(), Vec::new(), Vec::new());
        for acc in engine.accounts() {
            let id = &acc.customer_id;
            let share = Share::of(acc, &engine.policy, now);
            gauges.add(&share, 1);
            if let Some(t) = share.valid_through {
                recheck.push((t, id.clone()));
            }
            if !acc.holds().is_empty() {
                held_orders.push(id.clone());
            }
            if !acc.held_deliveries().is_empty() {
                held_deliveries.push(id.clone());
            }
            shares.insert(id.clone(), share);
        }
        ReaderIndex {
            gauges,
            shares,
            recheck: recheck.into_iter().collect(),
            held_orders: held_orders.into_iter().collect(),
            held_deliveries: held_deliveries.into_iter().collect(),
        }
    }

    /// Brings the index up to date for `customer_id` (changed, added or gone) at the engine's
    /// clock.
    pub(super) fn account(&mut self, engine: &Engine, customer_id: &str) {
        let acc = engine.account(customer_id);
        let share = acc.map(|a| Share::of(a, &engine.policy, engine.now()));
        let old = match (self.shares.get_mut(customer_id), share) {
            (Some(slot), Some(new)) => Some(std::mem::replace(slot, new)),
            (None, Some(new)) => {
                self.shares.insert(customer_id.to_string(), new);
                None
            }
            (Some(_), None) => self.shares.remove(customer_id),
            (None, None) => None,
        };
        let new = self.shares.get(customer_id);
        if let Some(old) = &old {
            self.gauges.add(old, -1);
        }
        if let Some(new) = new {
            self.gauges.add(new, 1);
        }
        let through = |s: Option<&Share>| s.and_then(|s| s.valid_through);
        let (was, is) = (through(old.as_ref()), through(new));
        if was != is {
            if let Some(t) = was {
                self.recheck.remove(&(t, customer_id.to_string()));
            }
            if let Some(t) = is {
                self.recheck.insert((t, customer_id.to_string()));
            }
        }
        for (set, holds) in [
            (
                &mut self.held_orders,
                acc.is_some_and(|a| !a.holds().is_empty()),
            ),
            (
                &mut self.held_deliveries,
                acc.is_some_and(|a| !a.held_deliveries().is_empty()),
            ),
        ] {
            if holds {
                if !set.contains(customer_id) {
                    set.insert(customer_id.to_string());
                }
            } else {
                set.remove(customer_id);
            }
        }
    }

    /// Re-evaluates the accounts whose share stopped holding before the engine's clock.
    pub(super) fn clock_moved(&mut self, engine: &Engine) {
        let now = engine.now();
        while let Some((t, id)) = self.recheck.first().cloned() {
            if t >= now {
                break;
            }
            self.account(engine, &id);
        }
    }

    pub fn gauges(&self) -> &StateGauges {
        &self.gauges
    }
}

impl Engine {
    /// The state gauges of this engine's accounts: from the index on a read replica, by a walk
    /// over every account otherwise.
    pub fn state_gauges(&self) -> std::borrow::Cow<'_, StateGauges> {
        match &self.reader {
            Some(ix) => std::borrow::Cow::Borrowed(ix.gauges()),
            None => std::borrow::Cow::Owned(StateGauges::walk(self)),
        }
    }

    /// The accounts holding at least one order (`deliveries`: one delivery), in id order on a
    /// read replica; every account, for the caller to filter, otherwise.
    pub fn accounts_holding(&self, deliveries: bool) -> Box<dyn Iterator<Item = &Account> + '_> {
        match &self.reader {
            Some(ix) => {
                let set = if deliveries {
                    &ix.held_deliveries
                } else {
                    &ix.held_orders
                };
                Box::new(set.iter().filter_map(|id| self.account(id)))
            }
            None => Box::new(self.accounts()),
        }
    }
}
