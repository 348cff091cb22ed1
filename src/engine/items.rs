//! The items an account holds: orders and their holds, receivables and how they settle
//! (with the conversion of foreign amounts), settled items kept for the warnings, and events
//! parked until their order arrives.

use super::fx::FxRates;
use crate::model::*;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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
    /// Next time-driven aging stage (read with `timers::AgingStage`: overdue, a bucket, write-off).
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
    pub(super) fn settle_own(
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
    pub(super) fn own_of(&self, take_acc: Decimal, conv: &Conv<'_>) -> Decimal {
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

    pub(super) fn apply_portion(&mut self, kind: SettlementKind, take: Decimal, at: Timestamp) {
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
pub struct ParkedEvent {
    #[serde(with = "event_as_json")]
    pub event: Event,
    pub received_at: Timestamp,
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
