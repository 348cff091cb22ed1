//! What the core produces: decisions (`credit.decisions`), alerts (`credit.alerts`) and
//! rejections (input the core could not apply; the shell turns them into `credit.dead-letter`
//! records with the original bytes). Field names and order follow CONTRACT.md exactly.

use super::money::{ser_money, ser_money_opt, Currency};
use super::time::Timestamp;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// `status` of a decision.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    Approved,
    Held,
    Released,
    Rejected,
    Cancelled,
}

impl DecisionStatus {
    pub const ALL: [DecisionStatus; 5] = [
        DecisionStatus::Approved,
        DecisionStatus::Held,
        DecisionStatus::Released,
        DecisionStatus::Rejected,
        DecisionStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DecisionStatus::Approved => "approved",
            DecisionStatus::Held => "held",
            DecisionStatus::Released => "released",
            DecisionStatus::Rejected => "rejected",
            DecisionStatus::Cancelled => "cancelled",
        }
    }
}

/// Reason codes carried by decisions (CONTRACT.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    CustomerUnknown,
    AccountBlocked,
    PrepaymentRequired,
    OrderLimitExceeded,
    LimitExpired,
    OverdueDays,
    OverdueAmount,
    CreditLimitExceeded,
    GroupLimitExceeded,
    AmountAnomaly,
    CurrencyMismatch,
    HoldExpired,
    Manual,
    /// At delivery: the delivery's order is unknown, held, rejected or cancelled.
    OrderNotApproved,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 14] = [
        ReasonCode::CustomerUnknown,
        ReasonCode::AccountBlocked,
        ReasonCode::PrepaymentRequired,
        ReasonCode::OrderLimitExceeded,
        ReasonCode::LimitExpired,
        ReasonCode::OverdueDays,
        ReasonCode::OverdueAmount,
        ReasonCode::CreditLimitExceeded,
        ReasonCode::GroupLimitExceeded,
        ReasonCode::AmountAnomaly,
        ReasonCode::CurrencyMismatch,
        ReasonCode::HoldExpired,
        ReasonCode::Manual,
        ReasonCode::OrderNotApproved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::CustomerUnknown => "CUSTOMER_UNKNOWN",
            ReasonCode::AccountBlocked => "ACCOUNT_BLOCKED",
            ReasonCode::PrepaymentRequired => "PREPAYMENT_REQUIRED",
            ReasonCode::OrderLimitExceeded => "ORDER_LIMIT_EXCEEDED",
            ReasonCode::LimitExpired => "LIMIT_EXPIRED",
            ReasonCode::OverdueDays => "OVERDUE_DAYS",
            ReasonCode::OverdueAmount => "OVERDUE_AMOUNT",
            ReasonCode::CreditLimitExceeded => "CREDIT_LIMIT_EXCEEDED",
            ReasonCode::GroupLimitExceeded => "GROUP_LIMIT_EXCEEDED",
            ReasonCode::AmountAnomaly => "AMOUNT_ANOMALY",
            ReasonCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ReasonCode::HoldExpired => "HOLD_EXPIRED",
            ReasonCode::Manual => "MANUAL",
            ReasonCode::OrderNotApproved => "ORDER_NOT_APPROVED",
        }
    }

    /// Holds for these reasons need a person: the automatic re-check skips them and they do
    /// not block the queue behind them (DOMAIN.md, "Holds and releases").
    pub fn needs_person(self) -> bool {
        matches!(
            self,
            ReasonCode::AmountAnomaly
                | ReasonCode::OrderLimitExceeded
                | ReasonCode::CurrencyMismatch
        )
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed rule, with the numbers behind it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

/// The exposure breakdown after a decision.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize)]
pub struct ExposureView {
    #[serde(serialize_with = "ser_money")]
    pub open_orders: Decimal,
    #[serde(serialize_with = "ser_money")]
    pub receivables: Decimal,
    #[serde(serialize_with = "ser_money")]
    pub unapplied_credit: Decimal,
    #[serde(serialize_with = "ser_money")]
    pub total: Decimal,
}

/// A `credit.decisions` record.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Decision {
    pub decision_id: String,
    pub order_id: String,
    pub customer_id: String,
    pub status: DecisionStatus,
    pub reasons: Vec<Reason>,
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
    pub currency: Currency,
    pub exposure: ExposureView,
    /// The effective limit (credit limit plus any live temporary limit); `null` for a customer
    /// without a profile.
    #[serde(serialize_with = "ser_money_opt")]
    pub credit_limit: Option<Decimal>,
    #[serde(serialize_with = "ser_money_opt")]
    pub available: Option<Decimal>,
    pub decided_at: Timestamp,
    pub source_event_id: String,
    pub actor: Option<String>,
    // Optional fields beyond the contract's minimum.
    /// Exposure / effective limit after the decision, four places; `null` without a limit.
    pub utilization: Option<String>,
    pub group_id: Option<String>,
    /// The decision this one ends (the `held` decision of a released/rejected/cancelled order).
    pub hold_decision_id: Option<String>,
    /// The note of the command behind a manual decision.
    pub note: Option<String>,
    /// For an order in another currency than the account's: its amount in the account's
    /// currency at `fx_rate` (CONTRACT.md, "Foreign currencies"); absent otherwise.
    #[serde(
        serialize_with = "ser_money_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub amount_account_currency: Option<Decimal>,
    /// The rate from the order's currency to the account's that `amount_account_currency` used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fx_rate: Option<String>,
}

/// A `credit.delivery-decisions` record (CONTRACT.md, "Delivery check").
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct DeliveryDecision {
    pub delivery_decision_id: String,
    pub delivery_id: String,
    pub order_id: String,
    pub customer_id: String,
    pub status: DecisionStatus,
    pub reasons: Vec<Reason>,
    #[serde(serialize_with = "ser_money")]
    pub amount: Decimal,
    pub currency: Currency,
    pub exposure: ExposureView,
    #[serde(serialize_with = "ser_money_opt")]
    pub credit_limit: Option<Decimal>,
    #[serde(serialize_with = "ser_money_opt")]
    pub available: Option<Decimal>,
    pub decided_at: Timestamp,
    pub source_event_id: String,
    pub actor: Option<String>,
    // Optional fields beyond the contract's minimum.
    pub utilization: Option<String>,
    /// The part of the delivery beyond its order's open remainder: new exposure, the only part
    /// the credit rule judges.
    #[serde(serialize_with = "ser_money")]
    pub excess: Decimal,
    /// The decision this one ends (the `held` decision of a released/rejected/cancelled delivery).
    pub hold_decision_id: Option<String>,
    pub note: Option<String>,
    /// As on decisions, for a delivery in another currency than the account's.
    #[serde(
        serialize_with = "ser_money_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub amount_account_currency: Option<Decimal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fx_rate: Option<String>,
}

/// `severity` of an alert.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Alert kinds (CONTRACT.md).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertKind {
    UtilizationThreshold,
    GroupUtilizationThreshold,
    ItemOverdue,
    AgingBucket,
    WriteOffCandidate,
    LimitReviewDue,
    LimitExpired,
    TempLimitExpired,
    Inactivity,
    AmountAnomaly,
    LimitDecreaseSuggested,
    LimitIncreaseSuggested,
    GradeChangeSuggested,
    ShippedWithoutRelease,
}

impl AlertKind {
    pub const ALL: [AlertKind; 14] = [
        AlertKind::UtilizationThreshold,
        AlertKind::GroupUtilizationThreshold,
        AlertKind::ItemOverdue,
        AlertKind::AgingBucket,
        AlertKind::WriteOffCandidate,
        AlertKind::LimitReviewDue,
        AlertKind::LimitExpired,
        AlertKind::TempLimitExpired,
        AlertKind::Inactivity,
        AlertKind::AmountAnomaly,
        AlertKind::LimitDecreaseSuggested,
        AlertKind::LimitIncreaseSuggested,
        AlertKind::GradeChangeSuggested,
        AlertKind::ShippedWithoutRelease,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::UtilizationThreshold => "UTILIZATION_THRESHOLD",
            AlertKind::GroupUtilizationThreshold => "GROUP_UTILIZATION_THRESHOLD",
            AlertKind::ItemOverdue => "ITEM_OVERDUE",
            AlertKind::AgingBucket => "AGING_BUCKET",
            AlertKind::WriteOffCandidate => "WRITE_OFF_CANDIDATE",
            AlertKind::LimitReviewDue => "LIMIT_REVIEW_DUE",
            AlertKind::LimitExpired => "LIMIT_EXPIRED",
            AlertKind::TempLimitExpired => "TEMP_LIMIT_EXPIRED",
            AlertKind::Inactivity => "INACTIVITY",
            AlertKind::AmountAnomaly => "AMOUNT_ANOMALY",
            AlertKind::LimitDecreaseSuggested => "LIMIT_DECREASE_SUGGESTED",
            AlertKind::LimitIncreaseSuggested => "LIMIT_INCREASE_SUGGESTED",
            AlertKind::GradeChangeSuggested => "GRADE_CHANGE_SUGGESTED",
            AlertKind::ShippedWithoutRelease => "SHIPPED_WITHOUT_RELEASE",
        }
    }
}

/// A `credit.alerts` record. `details` keys are sorted, so output is deterministic.
#[derive(Clone, PartialEq, Debug, Serialize)]
pub struct Alert {
    pub alert_id: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub customer_id: Option<String>,
    pub group_id: Option<String>,
    pub at: Timestamp,
    pub details: BTreeMap<&'static str, serde_json::Value>,
}

impl Alert {
    /// The record key: the group for group-wide alerts, else the customer.
    pub fn key(&self) -> &str {
        if self.kind == AlertKind::GroupUtilizationThreshold {
            if let Some(g) = &self.group_id {
                return g;
            }
        }
        self.customer_id
            .as_deref()
            .or(self.group_id.as_deref())
            .unwrap_or("")
    }
}

/// Dead-letter error codes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not a JSON object, not UTF-8, truncated, nested too deep, duplicate keys.
    MalformedJson,
    MissingField,
    InvalidField,
    UnknownType,
    /// A shipment, payment or credit note in another currency than the account's, or a
    /// profile changing the currency of an account that still holds items.
    CurrencyMismatch,
    /// A message larger than the configured maximum.
    TooLarge,
    /// A command for an order that is not held (unknown, already decided).
    OrderNotHeld,
    /// A second four-eyes approval by the actor who gave the first.
    FourEyesSameActor,
    /// A cancellation whose order never arrived within the pending window.
    OrderUnknown,
    /// A bound of `[limits]` reached: too many live items in the account, or too many
    /// accounts or groups in the engine.
    CapacityExceeded,
    /// The record's Kafka key is not its customer_id (group_id for a group profile): applied
    /// in that partition it would split the customer's account (direct path only).
    KeyMismatch,
    /// A release/reject command for a delivery that is not held (unknown, already decided).
    DeliveryNotHeld,
    /// A repeat that is not identical: a known `event_id` with other content, or a known
    /// order, shipment or delivery id with another amount, currency or order. The first wins.
    DuplicateConflict,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::MalformedJson,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::UnknownType,
        ErrorCode::CurrencyMismatch,
        ErrorCode::TooLarge,
        ErrorCode::OrderNotHeld,
        ErrorCode::FourEyesSameActor,
        ErrorCode::OrderUnknown,
        ErrorCode::CapacityExceeded,
        ErrorCode::KeyMismatch,
        ErrorCode::DeliveryNotHeld,
        ErrorCode::DuplicateConflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "MALFORMED_JSON",
            ErrorCode::MissingField => "MISSING_FIELD",
            ErrorCode::InvalidField => "INVALID_FIELD",
            ErrorCode::UnknownType => "UNKNOWN_TYPE",
            ErrorCode::CurrencyMismatch => "CURRENCY_MISMATCH",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::OrderNotHeld => "ORDER_NOT_HELD",
            ErrorCode::FourEyesSameActor => "FOUR_EYES_SAME_ACTOR",
            ErrorCode::OrderUnknown => "ORDER_UNKNOWN",
            ErrorCode::CapacityExceeded => "CAPACITY_EXCEEDED",
            ErrorCode::KeyMismatch => "KEY_MISMATCH",
            ErrorCode::DeliveryNotHeld => "DELIVERY_NOT_HELD",
            ErrorCode::DuplicateConflict => "DUPLICATE_CONFLICT",
        }
    }
}

/// Input the core (or the decoder) could not apply. The shell adds the original bytes and the
/// source position to make a `credit.dead-letter` record.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InputError {
    pub error: ErrorCode,
    pub detail: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub customer_id: Option<String>,
    /// The event re-encoded, when the core rejects an event other than the one being applied
    /// (a pending cancellation whose order never came); `None` means the input being applied.
    pub original: Option<String>,
}

/// Everything the core emits, in production order.
// Decisions are the common case; boxing them would cost an allocation per decision.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Debug)]
pub enum Output {
    Decision(Decision),
    DeliveryDecision(DeliveryDecision),
    Alert(Alert),
    /// Input that could not be applied.
    DeadLetter(InputError),
}
