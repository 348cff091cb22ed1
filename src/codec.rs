//! The wire format: decoding input bytes into validated events (every failure becomes a
//! rejection with a contract error code and a readable detail), and encoding events, output
//! records, dead-letters and replay lines as JSON.
//!
//! Every field is first captured raw (`RawValue`) and validated on its own, so a wrong type is
//! `INVALID_FIELD` naming the field, not a generic parse error, and amounts are parsed from
//! their exact text, never through binary floating point.

use crate::model::*;
use base64::Engine as _;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::borrow::Cow;

/// Longest id (event, customer, order, ...) accepted, in characters.
pub const ID_LEN_MAX: usize = 128;
/// Longest customer name accepted, in characters.
pub const NAME_LEN_MAX: usize = 200;
/// Longest command note accepted, in characters.
pub const NOTE_LEN_MAX: usize = 2000;
/// Most shipment ids one payment may name.
pub const APPLIES_TO_MAX: usize = 1000;
/// Longest payment terms accepted, in days.
pub const TERMS_DAYS_MAX: u32 = 3650;

#[derive(Deserialize)]
struct RawTemporaryLimit<'a> {
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    #[serde(borrow)]
    expires_at: Option<&'a RawValue>,
}

/// Every field any input type may carry, captured raw. Unknown fields are ignored (adding
/// optional fields is allowed by the contract); a repeated field is refused by serde.
#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    occurred_at: Option<&'a RawValue>,
    #[serde(borrow)]
    customer_id: Option<&'a RawValue>,
    #[serde(borrow)]
    order_id: Option<&'a RawValue>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
    #[serde(borrow)]
    currency: Option<&'a RawValue>,
    #[serde(borrow)]
    shipment_id: Option<&'a RawValue>,
    #[serde(borrow)]
    due_date: Option<&'a RawValue>,
    #[serde(borrow)]
    payment_id: Option<&'a RawValue>,
    #[serde(borrow)]
    credit_note_id: Option<&'a RawValue>,
    #[serde(borrow)]
    applies_to: Option<&'a RawValue>,
    #[serde(borrow)]
    credit_limit: Option<&'a RawValue>,
    #[serde(borrow)]
    grade: Option<&'a RawValue>,
    #[serde(borrow)]
    payment_terms_days: Option<&'a RawValue>,
    #[serde(borrow)]
    max_order_amount: Option<&'a RawValue>,
    #[serde(borrow)]
    tolerance_pct: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    group_id: Option<&'a RawValue>,
    #[serde(borrow)]
    temporary_limit: Option<&'a RawValue>,
    #[serde(borrow)]
    review_date: Option<&'a RawValue>,
    #[serde(borrow)]
    actor: Option<&'a RawValue>,
    #[serde(borrow)]
    note: Option<&'a RawValue>,
    #[serde(borrow)]
    delivery_id: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    base: Option<&'a RawValue>,
    #[serde(borrow)]
    quote: Option<&'a RawValue>,
    #[serde(borrow)]
    rate: Option<&'a RawValue>,
}

/// A decode failure, before it is turned into a rejection.
struct Fail(ErrorCode, String);

type R<T> = Result<T, Fail>;

fn missing(name: &str) -> Fail {
    Fail(ErrorCode::MissingField, format!("{name} is required"))
}

fn invalid(name: &str, why: impl std::fmt::Display) -> Fail {
    Fail(ErrorCode::InvalidField, format!("{name} {why}"))
}

/// A present, non-null field.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

fn string<'a>(raw: &'a RawValue, name: &str) -> R<Cow<'a, str>> {
    serde_json::from_str::<Cow<'a, str>>(raw.get()).map_err(|_| invalid(name, "must be a string"))
}

fn id_opt(raw: Option<&RawValue>, name: &str) -> R<Option<String>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let s = string(raw, name)?;
    let n = s.chars().count();
    // The same rule as the HTTP API's for ids in paths.
    if n == 0 || n > ID_LEN_MAX || s.chars().any(char::is_control) {
        return Err(invalid(
            name,
            format_args!("must be 1 to {ID_LEN_MAX} characters without control characters"),
        ));
    }
    Ok(Some(s.into_owned()))
}

fn id(raw: Option<&RawValue>, name: &str) -> R<String> {
    id_opt(raw, name)?.ok_or_else(|| missing(name))
}

fn amount_opt(raw: Option<&RawValue>, name: &str) -> R<Option<Decimal>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let text = raw.get();
    let value = if text.starts_with('"') {
        let s = string(raw, name)?;
        parse_amount(&s)
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        parse_amount(text)
    } else {
        return Err(invalid(name, "must be a decimal string or number"));
    };
    value.map(Some).map_err(|e| invalid(name, e))
}

/// Most decimal places of an FX rate (rates are quoted finer than money).
pub const RATE_DP_MAX: u32 = 10;

fn fx_rate(raw: Option<&RawValue>) -> R<Decimal> {
    let raw = present(raw).ok_or_else(|| missing("rate"))?;
    let text = raw.get();
    let s = if text.starts_with('"') {
        string(raw, "rate")?.into_owned()
    } else {
        text.to_string()
    };
    let bad = || {
        invalid(
            "rate",
            format_args!(
                "must be a decimal greater than 0 and below 10^9 with at most {RATE_DP_MAX} decimal places"
            ),
        )
    };
    if !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let v = Decimal::from_str_exact(&s).map_err(|_| bad())?;
    if v <= Decimal::ZERO || v.scale() > RATE_DP_MAX || v >= Decimal::from(1_000_000_000) {
        return Err(bad());
    }
    Ok(v)
}

fn amount(raw: Option<&RawValue>, name: &str) -> R<Decimal> {
    amount_opt(raw, name)?.ok_or_else(|| missing(name))
}

fn positive(v: Decimal, name: &str) -> R<Decimal> {
    if v > Decimal::ZERO {
        Ok(v)
    } else {
        Err(invalid(name, "must be greater than 0"))
    }
}

fn non_negative(v: Decimal, name: &str) -> R<Decimal> {
    if v >= Decimal::ZERO {
        Ok(v)
    } else {
        Err(invalid(name, "must not be negative"))
    }
}

fn currency(raw: Option<&RawValue>, name: &str) -> R<Currency> {
    let raw = present(raw).ok_or_else(|| missing(name))?;
    let s = string(raw, name)?;
    Currency::parse_iso(&s).ok_or_else(|| {
        invalid(
            name,
            format_args!("must be an ISO 4217 currency code (e.g. EUR), not {s:?}"),
        )
    })
}

fn timestamp(raw: Option<&RawValue>, name: &str) -> R<Timestamp> {
    let raw = present(raw).ok_or_else(|| missing(name))?;
    let s = string(raw, name)?;
    Timestamp::parse_rfc3339(&s)
        .ok_or_else(|| invalid(name, format_args!("must be {}", Timestamp::ACCEPTED)))
}

fn date_or_timestamp_opt(raw: Option<&RawValue>, name: &str) -> R<Option<Timestamp>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let s = string(raw, name)?;
    Timestamp::parse_date_or_timestamp(&s)
        .map(Some)
        .ok_or_else(|| {
            invalid(
                name,
                "must be an RFC 3339 date or timestamp, from 1900-01-01 to 2199-12-31",
            )
        })
}

fn string_list(raw: Option<&RawValue>, name: &str) -> R<Vec<String>> {
    let Some(raw) = present(raw) else {
        return Ok(Vec::new());
    };
    let items: Vec<&RawValue> = serde_json::from_str(raw.get())
        .map_err(|_| invalid(name, "must be a list of shipment ids"))?;
    if items.len() > APPLIES_TO_MAX {
        return Err(invalid(
            name,
            format_args!("names more than {APPLIES_TO_MAX} items"),
        ));
    }
    items.into_iter().map(|r| id(Some(r), name)).collect()
}

fn enum_opt<T>(
    raw: Option<&RawValue>,
    name: &str,
    parse: fn(&str) -> Option<T>,
    allowed: &str,
) -> R<Option<T>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let s = string(raw, name)?;
    parse(&s)
        .map(Some)
        .ok_or_else(|| invalid(name, format_args!("must be one of {allowed}")))
}

fn note(raw: Option<&RawValue>) -> R<String> {
    let Some(raw) = present(raw) else {
        return Ok(String::new());
    };
    let s = string(raw, "note")?;
    if s.chars().count() > NOTE_LEN_MAX {
        return Err(invalid(
            "note",
            format_args!("must be at most {NOTE_LEN_MAX} characters"),
        ));
    }
    Ok(s.into_owned())
}

fn tolerance(raw: Option<&RawValue>) -> R<Option<Decimal>> {
    let v = amount_opt(raw, "tolerance_pct")?;
    if let Some(v) = v {
        if v < Decimal::ZERO || v > Decimal::from(1000) {
            return Err(invalid(
                "tolerance_pct",
                "must be between 0 and 1000 (percent)",
            ));
        }
    }
    Ok(v)
}

/// Decodes one input message. `Err` carries everything known about the event for the
/// dead-letter record.
// The error path is the cold one; boxing the rejection would not speed the hot path.
#[allow(clippy::result_large_err)]
pub fn decode_event(bytes: &[u8]) -> Result<Event, Rejection> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(reject_plain(
                ErrorCode::MalformedJson,
                format!("not valid UTF-8: {e}"),
            ))
        }
    };
    let raw: RawEvent<'_> = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            let msg = e.to_string();
            let code = if msg.starts_with("duplicate field") {
                ErrorCode::InvalidField
            } else {
                ErrorCode::MalformedJson
            };
            let detail = if msg.contains("expected struct RawEvent") {
                "not a JSON object".to_string()
            } else {
                format!("not a valid JSON object: {msg}")
            };
            return Err(reject_plain(code, detail));
        }
    };
    // Best-effort envelope for the dead-letter record, even when validation fails below.
    let event_id = id_opt(raw.event_id, "event_id").ok().flatten();
    let customer_id = id_opt(raw.customer_id, "customer_id").ok().flatten();
    let type_text = present(raw.kind)
        .and_then(|r| string(r, "type").ok())
        .map(|s| s.into_owned());
    decode_fields(&raw).map_err(|Fail(error, detail)| Rejection {
        error,
        detail,
        event_id,
        event_type: type_text,
        customer_id,
        original: None,
    })
}

fn reject_plain(error: ErrorCode, detail: String) -> Rejection {
    Rejection {
        error,
        detail,
        event_id: None,
        event_type: None,
        customer_id: None,
        original: None,
    }
}

fn decode_fields(raw: &RawEvent<'_>) -> R<Event> {
    let event_id = id(raw.event_id, "event_id")?;
    let kind_raw = present(raw.kind).ok_or_else(|| missing("type"))?;
    let kind = string(kind_raw, "type")?;
    if !types::ALL.contains(&kind.as_ref()) {
        return Err(Fail(
            ErrorCode::UnknownType,
            format!("unknown event type {kind:?}"),
        ));
    }
    let occurred_at = timestamp(raw.occurred_at, "occurred_at")?;
    let customer_id = if kind == types::PROFILE_GROUP || kind == types::FX_RATE {
        id_opt(raw.customer_id, "customer_id")?
    } else {
        Some(id(raw.customer_id, "customer_id")?)
    };
    let body = match kind.as_ref() {
        types::ORDER_PLACED => EventBody::OrderPlaced {
            order_id: id(raw.order_id, "order_id")?,
            amount: non_negative(amount(raw.amount, "amount")?, "amount")?,
            currency: currency(raw.currency, "currency")?,
        },
        types::ORDER_CANCELLED => EventBody::OrderCancelled {
            order_id: id(raw.order_id, "order_id")?,
        },
        types::SHIPMENT_SHIPPED => EventBody::ShipmentShipped {
            shipment_id: id(raw.shipment_id, "shipment_id")?,
            order_id: id(raw.order_id, "order_id")?,
            amount: positive(amount(raw.amount, "amount")?, "amount")?,
            currency: currency(raw.currency, "currency")?,
            due_at: date_or_timestamp_opt(raw.due_date, "due_date")?,
            delivery_id: id_opt(raw.delivery_id, "delivery_id")?,
        },
        types::DELIVERY_REQUESTED => EventBody::DeliveryRequested(DeliveryRequest {
            delivery_id: id(raw.delivery_id, "delivery_id")?,
            order_id: id(raw.order_id, "order_id")?,
            amount: positive(amount(raw.amount, "amount")?, "amount")?,
            currency: currency(raw.currency, "currency")?,
        }),
        types::PAYMENT_RECEIVED | types::CREDIT_NOTE_ISSUED => {
            let (kind, id_field, id_raw) = if kind == types::PAYMENT_RECEIVED {
                (SettlementKind::Payment, "payment_id", raw.payment_id)
            } else {
                (
                    SettlementKind::CreditNote,
                    "credit_note_id",
                    raw.credit_note_id,
                )
            };
            EventBody::Settlement {
                kind,
                settlement_id: id(id_raw, id_field)?,
                amount: positive(amount(raw.amount, "amount")?, "amount")?,
                currency: currency(raw.currency, "currency")?,
                applies_to: string_list(raw.applies_to, "applies_to")?,
            }
        }
        types::PROFILE_CUSTOMER => EventBody::CustomerProfile(Box::new(decode_profile(raw)?)),
        types::PROFILE_GROUP => EventBody::GroupProfile(GroupProfile {
            group_id: id(raw.group_id, "group_id")?,
            credit_limit: non_negative(amount(raw.credit_limit, "credit_limit")?, "credit_limit")?,
            currency: currency(raw.currency, "currency")?,
            tolerance_pct: tolerance(raw.tolerance_pct)?,
        }),
        types::FX_RATE => {
            let base = currency(raw.base, "base")?;
            let quote = currency(raw.quote, "quote")?;
            if base == quote {
                return Err(invalid("quote", "must differ from base"));
            }
            EventBody::FxRate(FxQuote {
                base,
                quote,
                rate: fx_rate(raw.rate)?,
                key: format!("fx/{base}/{quote}"),
            })
        }
        // Every command type by name; none is a fallback for another.
        types::COMMAND_RELEASE_HOLD => decode_command(raw, CommandKind::ReleaseHold)?,
        types::COMMAND_REJECT_HOLD => decode_command(raw, CommandKind::RejectHold)?,
        types::COMMAND_RELEASE_DELIVERY => decode_command(raw, CommandKind::ReleaseDelivery)?,
        types::COMMAND_REJECT_DELIVERY => decode_command(raw, CommandKind::RejectDelivery)?,
        types::COMMAND_BLOCK => decode_command(raw, CommandKind::Block)?,
        types::COMMAND_UNBLOCK => decode_command(raw, CommandKind::Unblock)?,
        // A type in `types::ALL` that no arm above decodes (a type added to the list before
        // its decoder): refused, never mapped to another type's meaning.
        other => {
            return Err(Fail(
                ErrorCode::UnknownType,
                format!("event type {other:?} has no decoder"),
            ))
        }
    };
    Ok(Event {
        event_id,
        occurred_at,
        customer_id,
        body,
    })
}

fn decode_command(raw: &RawEvent<'_>, kind: CommandKind) -> R<EventBody> {
    let (order_id, delivery_id) = match kind {
        CommandKind::ReleaseHold | CommandKind::RejectHold => {
            (Some(id(raw.order_id, "order_id")?), None)
        }
        CommandKind::ReleaseDelivery | CommandKind::RejectDelivery => {
            (None, Some(id(raw.delivery_id, "delivery_id")?))
        }
        CommandKind::Block | CommandKind::Unblock => (None, None),
    };
    Ok(EventBody::Command {
        kind,
        order_id,
        delivery_id,
        actor: id(raw.actor, "actor")?,
        note: note(raw.note)?,
    })
}

fn decode_profile(raw: &RawEvent<'_>) -> R<CustomerProfile> {
    let terms = match present(raw.payment_terms_days) {
        None => None,
        Some(r) => match serde_json::from_str::<u32>(r.get()) {
            Ok(d) if d <= TERMS_DAYS_MAX => Some(d),
            _ => {
                return Err(invalid(
                    "payment_terms_days",
                    format_args!("must be a whole number of days from 0 to {TERMS_DAYS_MAX}"),
                ))
            }
        },
    };
    let temporary_limit = match present(raw.temporary_limit) {
        None => None,
        Some(r) => {
            let t: RawTemporaryLimit<'_> = serde_json::from_str(r.get()).map_err(|_| {
                invalid(
                    "temporary_limit",
                    "must be an object with amount and expires_at",
                )
            })?;
            Some(TemporaryLimit {
                amount: non_negative(
                    amount(t.amount, "temporary_limit.amount")?,
                    "temporary_limit.amount",
                )?,
                expires_at: timestamp(t.expires_at, "temporary_limit.expires_at")?,
            })
        }
    };
    Ok(CustomerProfile {
        credit_limit: non_negative(amount(raw.credit_limit, "credit_limit")?, "credit_limit")?,
        currency: currency(raw.currency, "currency")?,
        grade: enum_opt(raw.grade, "grade", Grade::parse, "A, B, C, D")?,
        payment_terms_days: terms,
        max_order_amount: amount_opt(raw.max_order_amount, "max_order_amount")?
            .map(|v| non_negative(v, "max_order_amount"))
            .transpose()?,
        tolerance_pct: tolerance(raw.tolerance_pct)?,
        status: enum_opt(
            raw.status,
            "status",
            AccountStatus::parse,
            "active, blocked, prepay_only, closed",
        )?
        .unwrap_or_default(),
        group_id: id_opt(raw.group_id, "group_id")?,
        temporary_limit,
        review_date: date_or_timestamp_opt(raw.review_date, "review_date")?,
        name: customer_name(raw.name)?,
    })
}

fn customer_name(raw: Option<&RawValue>) -> R<Option<String>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let s = string(raw, "name")?;
    let n = s.chars().count();
    if n == 0 || n > NAME_LEN_MAX || s.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            format_args!("must be 1 to {NAME_LEN_MAX} characters without control characters"),
        ));
    }
    Ok(Some(s.into_owned()))
}

// -------------------------------------------------------------------- encoding

/// Writes a JSON object with fields in the given order.
fn ordered_object(fields: Vec<(&str, Value)>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.into_iter().filter(|(_, v)| !v.is_null()).enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&Value::String(k.to_string()).to_string());
        s.push(':');
        s.push_str(&v.to_string());
    }
    s.push('}');
    s
}

fn money_value(v: Decimal) -> Value {
    Value::String(format_money(v))
}

/// Encodes a validated event as contract JSON (envelope first; absent optional fields left out).
pub fn encode_event(event: &Event) -> String {
    let mut f: Vec<(&str, Value)> = vec![
        ("event_id", json!(event.event_id)),
        ("type", json!(event.type_str())),
        ("occurred_at", json!(event.occurred_at.to_rfc3339())),
        ("customer_id", json!(event.customer_id)),
    ];
    match &event.body {
        EventBody::OrderPlaced {
            order_id,
            amount,
            currency,
        } => f.extend([
            ("order_id", json!(order_id)),
            ("amount", money_value(*amount)),
            ("currency", json!(currency.as_str())),
        ]),
        EventBody::OrderCancelled { order_id } => f.push(("order_id", json!(order_id))),
        EventBody::ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            due_at,
            delivery_id,
        } => f.extend([
            ("shipment_id", json!(shipment_id)),
            ("order_id", json!(order_id)),
            ("amount", money_value(*amount)),
            ("currency", json!(currency.as_str())),
            ("due_date", json!(due_at.map(|d| d.to_rfc3339()))),
            ("delivery_id", json!(delivery_id)),
        ]),
        EventBody::DeliveryRequested(d) => f.extend([
            ("delivery_id", json!(d.delivery_id)),
            ("order_id", json!(d.order_id)),
            ("amount", money_value(d.amount)),
            ("currency", json!(d.currency.as_str())),
        ]),
        EventBody::Settlement {
            kind,
            settlement_id,
            amount,
            currency,
            applies_to,
        } => {
            let id_name = match kind {
                SettlementKind::Payment => "payment_id",
                SettlementKind::CreditNote => "credit_note_id",
            };
            f.extend([
                (id_name, json!(settlement_id)),
                ("amount", money_value(*amount)),
                ("currency", json!(currency.as_str())),
            ]);
            if !applies_to.is_empty() {
                f.push(("applies_to", json!(applies_to)));
            }
        }
        EventBody::CustomerProfile(p) => f.extend([
            ("credit_limit", money_value(p.credit_limit)),
            ("currency", json!(p.currency.as_str())),
            ("grade", json!(p.grade.map(Grade::as_str))),
            ("payment_terms_days", json!(p.payment_terms_days)),
            ("max_order_amount", json!(p.max_order_amount.map(format_money))),
            ("tolerance_pct", json!(p.tolerance_pct.map(|t| t.normalize().to_string()))),
            ("status", json!(p.status.as_str())),
            ("group_id", json!(p.group_id)),
            (
                "temporary_limit",
                p.temporary_limit.as_ref().map_or(Value::Null, |t| {
                    json!({"amount": format_money(t.amount), "expires_at": t.expires_at.to_rfc3339()})
                }),
            ),
            ("review_date", json!(p.review_date.map(|d| d.to_rfc3339()))),
            ("name", json!(p.name)),
        ]),
        EventBody::FxRate(q) => f.extend([
            ("base", json!(q.base.as_str())),
            ("quote", json!(q.quote.as_str())),
            ("rate", json!(q.rate.normalize().to_string())),
        ]),
        EventBody::GroupProfile(g) => f.extend([
            ("group_id", json!(g.group_id)),
            ("credit_limit", money_value(g.credit_limit)),
            ("currency", json!(g.currency.as_str())),
            ("tolerance_pct", json!(g.tolerance_pct.map(|t| t.normalize().to_string()))),
        ]),
        EventBody::Command {
            order_id,
            delivery_id,
            actor,
            note,
            ..
        } => f.extend([
            ("order_id", json!(order_id)),
            ("delivery_id", json!(delivery_id)),
            ("actor", json!(actor)),
            ("note", json!(note)),
        ]),
    }
    ordered_object(f)
}

/// Where a dead-lettered input came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Line number in a replay file (1-based).
    pub line: Option<u64>,
}

/// A `credit.dead-letter` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub error: ErrorCode,
    pub detail: String,
    /// The original bytes: text when valid UTF-8, else base64 (see `original_encoding`).
    pub original: String,
    pub original_encoding: &'static str,
    /// Set when `original` holds only the first `ORIGINAL_MAX_BYTES` of a larger input:
    /// the full record is at `topic`/`partition`/`offset` (or `line`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub original_truncated: bool,
    /// The size of the whole original, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_bytes: Option<usize>,
    /// SHA-256 of the whole original (hex), when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_sha256: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub customer_id: Option<String>,
}

/// The most of an input a dead-letter embeds. Escaped as JSON (up to six bytes for one) or as
/// base64 it stays far below Kafka's default message limit (1 MB), so a dead-letter can always
/// be produced, however large the input the topic accepted.
pub const ORIGINAL_MAX_BYTES: usize = 64 * 1024;

impl DeadLetter {
    /// Builds the record for a rejection of the input `original` (the rejection's own
    /// re-encoded event wins when it has one: it concerns an earlier, parked event).
    pub fn new(rejection: Rejection, original: &[u8], source: &SourcePosition) -> DeadLetter {
        let whole: &[u8] = match &rejection.original {
            Some(text) => text.as_bytes(),
            None => original,
        };
        let truncated = whole.len() > ORIGINAL_MAX_BYTES;
        let kept = if truncated {
            &whole[..ORIGINAL_MAX_BYTES]
        } else {
            whole
        };
        let (original, original_encoding) = match std::str::from_utf8(kept) {
            Ok(text) => (text.to_string(), "utf8"),
            // Cut inside a character: the valid prefix as text.
            Err(e) if truncated && e.error_len().is_none() => (
                String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(),
                "utf8",
            ),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(kept),
                "base64",
            ),
        };
        let sha256 = truncated.then(|| {
            use sha2::{Digest, Sha256};
            Sha256::digest(whole)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        DeadLetter {
            error: rejection.error,
            detail: rejection.detail,
            original,
            original_encoding,
            original_truncated: truncated,
            original_bytes: truncated.then_some(whole.len()),
            original_sha256: sha256,
            topic: source.topic.clone(),
            partition: source.partition,
            offset: source.offset,
            line: source.line,
            event_id: rejection.event_id,
            event_type: rejection.event_type,
            customer_id: rejection.customer_id,
        }
    }

    /// The record key: the original message's key, else the customer when known.
    pub fn key(&self) -> Option<&str> {
        self.customer_id.as_deref()
    }
}

/// The default topic names (CONTRACT.md); the runtime may rename them.
pub mod topics {
    pub const DECISIONS: &str = "credit.decisions";
    pub const DELIVERY_DECISIONS: &str = "credit.delivery-decisions";
    pub const ALERTS: &str = "credit.alerts";
    pub const DEAD_LETTER: &str = "credit.dead-letter";
}

#[derive(Serialize)]
struct ReplayLine<'a, T: Serialize> {
    topic: &'a str,
    key: Option<&'a str>,
    value: &'a T,
}

/// One replay output line: `{"topic": ..., "key": ..., "value": {...}}` (no newline).
pub fn replay_line<T: Serialize>(topic: &str, key: Option<&str>, value: &T) -> String {
    serde_json::to_string(&ReplayLine { topic, key, value }).unwrap_or_else(|e| {
        // Serializing our own records cannot fail; if it ever does, say so in the stream.
        json!({"topic": topic, "key": key, "value": {"error": e.to_string()}}).to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(bytes: &[u8]) -> ErrorCode {
        decode_event(bytes).expect_err("must be rejected").error
    }

    #[test]
    fn ids_with_control_characters_and_non_iso_currencies_are_refused() {
        // The HTTP API refused both; Kafka accepted them.
        let order = |customer: &str, currency: &str| {
            format!(
                r#"{{"event_id":"e","type":"order.placed","occurred_at":"2026-05-04T09:00:00Z","customer_id":"{customer}","order_id":"SO-1","amount":"1.00","currency":"{currency}"}}"#
            )
        };
        assert!(decode_event(order("ACME", "EUR").as_bytes()).is_ok());
        let r = decode_event(order("AC\\u0007ME", "EUR").as_bytes()).unwrap_err();
        assert_eq!(r.error, ErrorCode::InvalidField);
        assert!(
            r.detail.contains("without control characters"),
            "{}",
            r.detail
        );
        let r = decode_event(order("ACME", "ZZZ").as_bytes()).unwrap_err();
        assert_eq!(r.error, ErrorCode::InvalidField);
        assert!(r.detail.contains("ISO 4217"), "{}", r.detail);
        assert!(decode_event(order("ACME", "CHF").as_bytes()).is_ok());
    }

    #[test]
    fn a_dead_letter_embeds_at_most_64_kib_of_its_original() {
        let big = format!("{{\"x\":\"{}\"", "\"\\".repeat(500_000));
        let r = decode_event(big.as_bytes()).expect_err("malformed");
        let source = SourcePosition {
            topic: Some("credit.orders".into()),
            partition: Some(1),
            offset: Some(42),
            line: None,
        };
        let dl = DeadLetter::new(r, big.as_bytes(), &source);
        assert!(dl.original_truncated);
        assert_eq!(dl.original_bytes, Some(big.len()));
        assert_eq!(dl.original.len(), ORIGINAL_MAX_BYTES);
        assert_eq!(dl.original_sha256.as_deref().map(str::len), Some(64));
        let json = serde_json::to_vec(&dl).unwrap();
        assert!(
            json.len() < 6 * ORIGINAL_MAX_BYTES + 4096,
            "{} bytes",
            json.len()
        );
        // A small original is embedded whole, with no truncation fields.
        let small = br#"{"event_id":"e"}"#;
        let dl = DeadLetter::new(decode_event(small).unwrap_err(), small, &source);
        let v: serde_json::Value = serde_json::to_value(&dl).unwrap();
        assert_eq!(v["original"], std::str::from_utf8(small).unwrap());
        assert!(v.get("original_truncated").is_none() && v.get("original_sha256").is_none());
    }

    #[test]
    fn every_command_type_decodes_to_its_own_kind_and_round_trips() {
        for (t, order) in [
            (types::COMMAND_RELEASE_HOLD, true),
            (types::COMMAND_REJECT_HOLD, true),
            (types::COMMAND_BLOCK, false),
            (types::COMMAND_UNBLOCK, false),
        ] {
            let order_id = if order { r#","order_id":"SO-1""# } else { "" };
            let line = format!(
                r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n"{order_id}}}"#
            );
            let ev = decode_event(line.as_bytes()).unwrap();
            assert_eq!(ev.type_str(), t, "{line}");
            let again = decode_event(encode_event(&ev).as_bytes()).unwrap();
            assert_eq!(ev, again);
        }
        for t in [
            types::COMMAND_RELEASE_DELIVERY,
            types::COMMAND_REJECT_DELIVERY,
        ] {
            let line = format!(
                r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n","delivery_id":"DN-1"}}"#
            );
            let ev = decode_event(line.as_bytes()).unwrap();
            assert_eq!(ev.type_str(), t, "{line}");
            assert_eq!(decode_event(encode_event(&ev).as_bytes()).unwrap(), ev);
            let no_delivery = line.replace(r#","delivery_id":"DN-1""#, "");
            assert_eq!(code(no_delivery.as_bytes()), ErrorCode::MissingField, "{t}");
        }
        // Types the contract does not name are refused.
        for t in ["command.anything", "delivery.shipped"] {
            let line = format!(
                r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n","order_id":"SO-1"}}"#
            );
            assert_eq!(code(line.as_bytes()), ErrorCode::UnknownType, "{t}");
        }
    }

    #[test]
    fn decodes_an_order_and_round_trips() {
        let line = br#"{"event_id":"e1","type":"order.placed","occurred_at":"2026-05-04T09:00:00+02:00","customer_id":"ACME","order_id":"SO-1","amount":"30000.00","currency":"EUR","extra":{"ignored":[1,2]}}"#;
        let ev = decode_event(line).unwrap();
        assert_eq!(ev.occurred_at.to_rfc3339(), "2026-05-04T07:00:00Z");
        let again = decode_event(encode_event(&ev).as_bytes()).unwrap();
        assert_eq!(ev, again);
    }

    #[test]
    fn numbers_are_exact() {
        let line = br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":0.1,"currency":"EUR"}"#;
        match decode_event(line).unwrap().body {
            EventBody::OrderPlaced { amount, .. } => assert_eq!(amount, Decimal::new(1, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_codes() {
        assert_eq!(
            code(b"{\"event_id\": \"g2\", \"type\": \"order.placed\", "),
            ErrorCode::MalformedJson
        );
        assert_eq!(code(b"[1,2]"), ErrorCode::MalformedJson);
        assert_eq!(code(&[0xff, 0xfe]), ErrorCode::MalformedJson);
        assert_eq!(code(br#"{"event_id":"e","type":"order.shipped","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C"}"#), ErrorCode::UnknownType);
        assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","currency":"EUR"}"#), ErrorCode::MissingField);
        assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":"1.23456","currency":"EUR"}"#), ErrorCode::InvalidField);
        assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":true,"currency":"EUR"}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(br#"{"event_id":"e","event_id":"f","type":"order.placed"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(br#"{"event_id":"","type":"order.placed"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"yesterday","customer_id":"C"}"#), ErrorCode::InvalidField);
        // Deep nesting never recurses: serde_json skips values iteratively, so a deeply
        // nested unknown field is harmless and the event is judged on its real fields.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            code(format!("{{\"x\":{deep}}}").as_bytes()),
            ErrorCode::MissingField
        );
        let nested_amount = format!(
            r#"{{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":{deep},"currency":"EUR"}}"#
        );
        assert_eq!(code(nested_amount.as_bytes()), ErrorCode::InvalidField);
    }

    #[test]
    fn rejection_keeps_what_is_known() {
        let r = decode_event(br#"{"event_id":"g3","type":"order.placed","occurred_at":"2026-01-01T09:00:00Z","customer_id":"CORK","order_id":"SO-9","amount":"12.345678","currency":"EUR"}"#).unwrap_err();
        assert_eq!(r.event_id.as_deref(), Some("g3"));
        assert_eq!(r.customer_id.as_deref(), Some("CORK"));
        assert!(r.detail.contains("amount"), "{}", r.detail);
    }

    #[test]
    fn dead_letter_of_binary_is_base64() {
        let r = decode_event(&[0xff]).unwrap_err();
        let dl = DeadLetter::new(r, &[0xff], &SourcePosition::default());
        assert_eq!(dl.original_encoding, "base64");
        assert_eq!(dl.original, "/w==");
    }
}
