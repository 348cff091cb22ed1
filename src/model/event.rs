//! Input events after validation: the envelope every event carries and one typed body per
//! contract type (`order.placed`, `shipment.shipped`, ...). Decoding and validation live in
//! `codec`; these types are what the core consumes, so every field here is already known good.

use super::money::Currency;
use super::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A customer's credit grade. Grades order from best (A) to worst (D).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum Grade {
    A,
    B,
    C,
    D,
}

impl Grade {
    pub const ALL: [Grade; 4] = [Grade::A, Grade::B, Grade::C, Grade::D];

    pub fn parse(s: &str) -> Option<Grade> {
        match s {
            "A" => Some(Grade::A),
            "B" => Some(Grade::B),
            "C" => Some(Grade::C),
            "D" => Some(Grade::D),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grade::A => "A",
            Grade::B => "B",
            Grade::C => "C",
            Grade::D => "D",
        }
    }
}

impl fmt::Display for Grade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A customer's status as set by its profile.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Active,
    Blocked,
    PrepayOnly,
    Closed,
}

impl AccountStatus {
    pub fn parse(s: &str) -> Option<AccountStatus> {
        match s {
            "active" => Some(AccountStatus::Active),
            "blocked" => Some(AccountStatus::Blocked),
            "prepay_only" => Some(AccountStatus::PrepayOnly),
            "closed" => Some(AccountStatus::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Blocked => "blocked",
            AccountStatus::PrepayOnly => "prepay_only",
            AccountStatus::Closed => "closed",
        }
    }
}

/// A limit increase that holds until `expires_at` (exclusive).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct TemporaryLimit {
    #[serde(with = "crate::model::money::dec")]
    pub amount: Decimal,
    pub expires_at: Timestamp,
}

/// `profile.customer`: the credit terms people set for one customer (an upsert).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct CustomerProfile {
    #[serde(with = "crate::model::money::dec")]
    pub credit_limit: Decimal,
    pub currency: Currency,
    pub grade: Option<Grade>,
    pub payment_terms_days: Option<u32>,
    #[serde(with = "crate::model::money::dec_opt")]
    pub max_order_amount: Option<Decimal>,
    #[serde(with = "crate::model::money::dec_opt")]
    pub tolerance_pct: Option<Decimal>,
    pub status: AccountStatus,
    pub group_id: Option<String>,
    pub temporary_limit: Option<TemporaryLimit>,
    pub review_date: Option<Timestamp>,
    /// The customer's name (1..200 characters), shown and searched by the API and console; no
    /// part of any decision. Not in the postcard layout of format 2: snapshots carry it in the
    /// account's extension (see `state`).
    #[serde(skip)]
    pub name: Option<String>,
}

/// `profile.group`: a limit shared by every customer whose profile names the group.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct GroupProfile {
    pub group_id: String,
    #[serde(with = "crate::model::money::dec")]
    pub credit_limit: Decimal,
    pub currency: Currency,
    #[serde(with = "crate::model::money::dec_opt")]
    pub tolerance_pct: Option<Decimal>,
}

/// `fx.rate`: 1 `base` = `rate` `quote` (CONTRACT.md, "Foreign currencies").
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct FxQuote {
    pub base: Currency,
    pub quote: Currency,
    pub rate: Decimal,
    /// `fx/BASE/QUOTE`, the record's key.
    pub key: String,
}

/// `delivery.requested`: the delivery check's input.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct DeliveryRequest {
    pub delivery_id: String,
    pub order_id: String,
    pub amount: Decimal,
    pub currency: Currency,
}

/// Whether money received is a payment (collected cash) or a credit note (a claim, a return).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum SettlementKind {
    Payment,
    CreditNote,
}

/// A command from a credit manager.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum CommandKind {
    ReleaseHold,
    RejectHold,
    ReleaseDelivery,
    RejectDelivery,
    Block,
    Unblock,
}

/// `order.placed`: a customer's order, to be checked against its credit.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount: Decimal,
    pub currency: Currency,
}

/// `shipment.shipped`: goods of an order left; a receivable falls due.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ShipmentShipped {
    pub shipment_id: String,
    pub order_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub due_at: Option<Timestamp>,
    /// The delivery this shipment carries out, when the pipeline names it.
    pub delivery_id: Option<String>,
}

/// `payment.received` or `credit_note.issued`: money settling receivables.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Settlement {
    pub kind: SettlementKind,
    pub settlement_id: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub applies_to: Vec<String>,
}

/// `command.*`: a credit manager's decision.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Command {
    pub kind: CommandKind,
    /// Set for release/reject of a hold, `None` otherwise.
    pub order_id: Option<String>,
    /// Set for release/reject of a delivery, `None` otherwise.
    pub delivery_id: Option<String>,
    pub actor: String,
    pub note: String,
}

impl CommandKind {
    /// Whether the command releases or rejects a held delivery.
    pub fn is_delivery(self) -> bool {
        matches!(
            self,
            CommandKind::ReleaseDelivery | CommandKind::RejectDelivery
        )
    }
}

/// The typed payload of an input event.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum EventBody {
    OrderPlaced(OrderPlaced),
    OrderCancelled {
        order_id: String,
    },
    ShipmentShipped(ShipmentShipped),
    /// `delivery.requested`: goods of an order are about to leave; the delivery check.
    DeliveryRequested(DeliveryRequest),
    /// `payment.received` or `credit_note.issued`.
    Settlement(Settlement),
    CustomerProfile(Box<CustomerProfile>),
    GroupProfile(GroupProfile),
    FxRate(FxQuote),
    Command(Command),
}

/// One validated input event: the envelope plus its body.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Event {
    pub event_id: String,
    pub occurred_at: Timestamp,
    /// Required on every type but `profile.group` and `fx.rate`.
    pub customer_id: Option<String>,
    pub body: EventBody,
}

/// The contract's type strings.
pub mod types {
    pub const ORDER_PLACED: &str = "order.placed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const DELIVERY_REQUESTED: &str = "delivery.requested";
    pub const SHIPMENT_SHIPPED: &str = "shipment.shipped";
    pub const PAYMENT_RECEIVED: &str = "payment.received";
    pub const CREDIT_NOTE_ISSUED: &str = "credit_note.issued";
    pub const PROFILE_CUSTOMER: &str = "profile.customer";
    pub const PROFILE_GROUP: &str = "profile.group";
    pub const FX_RATE: &str = "fx.rate";
    pub const COMMAND_RELEASE_HOLD: &str = "command.release_hold";
    pub const COMMAND_REJECT_HOLD: &str = "command.reject_hold";
    pub const COMMAND_RELEASE_DELIVERY: &str = "command.release_delivery";
    pub const COMMAND_REJECT_DELIVERY: &str = "command.reject_delivery";
    pub const COMMAND_BLOCK: &str = "command.block";
    pub const COMMAND_UNBLOCK: &str = "command.unblock";

    /// Every input type, in contract order.
    pub const ALL: [&str; 15] = [
        ORDER_PLACED,
        ORDER_CANCELLED,
        DELIVERY_REQUESTED,
        SHIPMENT_SHIPPED,
        PAYMENT_RECEIVED,
        CREDIT_NOTE_ISSUED,
        PROFILE_CUSTOMER,
        PROFILE_GROUP,
        FX_RATE,
        COMMAND_RELEASE_HOLD,
        COMMAND_REJECT_HOLD,
        COMMAND_RELEASE_DELIVERY,
        COMMAND_REJECT_DELIVERY,
        COMMAND_BLOCK,
        COMMAND_UNBLOCK,
    ];
}

impl Event {
    /// A fingerprint of the event's content (everything but how it was spelt): two events with
    /// the same id and different content are a conflict, not a repeat. Never 0 (0 means
    /// "unknown" where fingerprints are kept). Stable across processes of one build.
    pub fn fingerprint(&self) -> u64 {
        use std::hash::BuildHasher;
        foldhash::fast::FixedState::with_seed(0x6576_656e_7473).hash_one(self) | 1
    }

    /// The contract type string of this event.
    pub fn type_str(&self) -> &'static str {
        match &self.body {
            EventBody::OrderPlaced(_) => types::ORDER_PLACED,
            EventBody::OrderCancelled { .. } => types::ORDER_CANCELLED,
            EventBody::ShipmentShipped(_) => types::SHIPMENT_SHIPPED,
            EventBody::DeliveryRequested(_) => types::DELIVERY_REQUESTED,
            EventBody::Settlement(Settlement {
                kind: SettlementKind::Payment,
                ..
            }) => types::PAYMENT_RECEIVED,
            EventBody::Settlement(Settlement {
                kind: SettlementKind::CreditNote,
                ..
            }) => types::CREDIT_NOTE_ISSUED,
            EventBody::CustomerProfile(_) => types::PROFILE_CUSTOMER,
            EventBody::GroupProfile(_) => types::PROFILE_GROUP,
            EventBody::FxRate(_) => types::FX_RATE,
            EventBody::Command(Command { kind, .. }) => match kind {
                CommandKind::ReleaseHold => types::COMMAND_RELEASE_HOLD,
                CommandKind::RejectHold => types::COMMAND_REJECT_HOLD,
                CommandKind::ReleaseDelivery => types::COMMAND_RELEASE_DELIVERY,
                CommandKind::RejectDelivery => types::COMMAND_REJECT_DELIVERY,
                CommandKind::Block => types::COMMAND_BLOCK,
                CommandKind::Unblock => types::COMMAND_UNBLOCK,
            },
        }
    }

    /// The partition key of this event: its customer, for `profile.group` its group, for
    /// `fx.rate` `fx/BASE/QUOTE`.
    pub fn key(&self) -> &str {
        match (&self.customer_id, &self.body) {
            (_, EventBody::GroupProfile(g)) => &g.group_id,
            (_, EventBody::FxRate(q)) => &q.key,
            (Some(c), _) => c,
            (None, _) => "",
        }
    }
}
