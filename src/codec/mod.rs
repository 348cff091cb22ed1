//! The wire format: decoding input bytes into validated events (every failure becomes a
//! rejection with a contract error code and a readable detail), and encoding events, output
//! records, dead-letters and replay lines as JSON.
//!
//! Every field is first captured raw and validated on its own, so a wrong type is
//! `INVALID_FIELD` naming the field, not a generic parse error, and amounts are parsed from
//! their exact text, never through binary floating point. The capture is `scan` (by hand) for
//! the usual shape of input, and serde_json's `RawValue` pass for everything else, which also
//! words every syntax error.

mod encode;
mod records;
mod scan;

pub use encode::encode_event;
pub use records::{replay_line, to_json, topics, DeadLetter, SourcePosition, ORIGINAL_MAX_BYTES};

use crate::model::*;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
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

/// A field's raw JSON text (a string with its quotes, a number, a literal, an array, an
/// object), as the first pass captured it: from serde_json's `RawValue`, or from `scan`,
/// which also knows the text holds no backslash (so a string is its text between the quotes).
/// Two are equal when their texts are.
#[derive(Clone, Copy, Debug)]
struct Raw<'a> {
    text: &'a str,
    plain: bool,
}

impl PartialEq for Raw<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'a> Raw<'a> {
    fn get(self) -> &'a str {
        self.text
    }
}

impl<'a> From<&'a RawValue> for Raw<'a> {
    fn from(r: &'a RawValue) -> Raw<'a> {
        Raw {
            text: r.get(),
            plain: false,
        }
    }
}

/// Declares the fields an input may carry, once for both first passes: `RawEvent` (serde's,
/// which also words every syntax error) and `Fields` (what the field decoders read), with the
/// conversion between them and the key lookup `scan` uses.
macro_rules! input_fields {
    ($($field:ident: $wire:literal),* $(,)?) => {
        /// Every field any input type may carry, captured raw. Unknown fields are ignored
        /// (adding optional fields is allowed by the contract); a repeated field is refused by
        /// serde.
        #[derive(Deserialize)]
        struct RawEvent<'a> {
            $( #[serde(borrow, rename = $wire)] $field: Option<&'a RawValue>, )*
        }

        /// The fields of one input object as raw text (`None`: absent or `null`).
        #[derive(Debug, Default, PartialEq)]
        struct Fields<'a> {
            $( $field: Option<Raw<'a>>, )*
        }

        impl<'a> From<RawEvent<'a>> for Fields<'a> {
            fn from(r: RawEvent<'a>) -> Fields<'a> {
                Fields { $( $field: r.$field.map(Raw::from), )* }
            }
        }

        impl<'a> Fields<'a> {
            /// Where a key's value goes; `None` for a key no input type has.
            fn slot(&mut self, key: &str) -> Option<&mut Option<Raw<'a>>> {
                match key {
                    $( $wire => Some(&mut self.$field), )*
                    _ => None,
                }
            }

            /// `null` values as absent, as serde's `Option` reads them.
            fn without_nulls(mut self) -> Fields<'a> {
                $( if self.$field.is_some_and(|r| r.text == "null") { self.$field = None; } )*
                self
            }
        }
    };
}

input_fields! {
    event_id: "event_id",
    kind: "type",
    occurred_at: "occurred_at",
    customer_id: "customer_id",
    order_id: "order_id",
    amount: "amount",
    currency: "currency",
    shipment_id: "shipment_id",
    due_date: "due_date",
    payment_id: "payment_id",
    credit_note_id: "credit_note_id",
    applies_to: "applies_to",
    credit_limit: "credit_limit",
    grade: "grade",
    payment_terms_days: "payment_terms_days",
    max_order_amount: "max_order_amount",
    tolerance_pct: "tolerance_pct",
    status: "status",
    group_id: "group_id",
    temporary_limit: "temporary_limit",
    review_date: "review_date",
    actor: "actor",
    note: "note",
    delivery_id: "delivery_id",
    name: "name",
    base: "base",
    quote: "quote",
    rate: "rate",
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
fn present(raw: Option<Raw<'_>>) -> Option<Raw<'_>> {
    raw.filter(|r| r.get() != "null")
}

/// A raw field as a string. The raw value is JSON the first pass has validated, so a string
/// without a backslash is its text between the quotes (what serde_json would borrow, without
/// a second parser per field); anything else goes through serde_json.
fn string<'a>(raw: Raw<'a>, name: &str) -> R<Cow<'a, str>> {
    let text = raw.get();
    if let Some(inner) = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .filter(|t| raw.plain || !t.contains('\\'))
    {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<Cow<'a, str>>(text).map_err(|_| invalid(name, "must be a string"))
}

fn id_opt(raw: Option<Raw<'_>>, name: &str) -> R<Option<String>> {
    let Some(raw) = present(raw) else {
        return Ok(None);
    };
    let s = string(raw, name)?;
    // The same rule as the HTTP API's for ids in paths. An ASCII id (the usual case) is
    // measured and checked by its bytes: the same answer as by `char`s, without decoding.
    let (n, control) = if s.is_ascii() {
        let b = s.as_bytes();
        (b.len(), b.iter().any(|&c| c < 0x20 || c == 0x7f))
    } else {
        (s.chars().count(), s.chars().any(char::is_control))
    };
    if n == 0 || n > ID_LEN_MAX || control {
        return Err(invalid(
            name,
            format_args!("must be 1 to {ID_LEN_MAX} characters without control characters"),
        ));
    }
    Ok(Some(s.into_owned()))
}

fn id(raw: Option<Raw<'_>>, name: &str) -> R<String> {
    id_opt(raw, name)?.ok_or_else(|| missing(name))
}

fn amount_opt(raw: Option<Raw<'_>>, name: &str) -> R<Option<Decimal>> {
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

fn fx_rate(raw: Option<Raw<'_>>) -> R<Decimal> {
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

fn amount(raw: Option<Raw<'_>>, name: &str) -> R<Decimal> {
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

fn currency(raw: Option<Raw<'_>>, name: &str) -> R<Currency> {
    let raw = present(raw).ok_or_else(|| missing(name))?;
    let s = string(raw, name)?;
    Currency::parse_iso(&s).ok_or_else(|| {
        invalid(
            name,
            format_args!("must be an ISO 4217 currency code (e.g. EUR), not {s:?}"),
        )
    })
}

fn timestamp(raw: Option<Raw<'_>>, name: &str) -> R<Timestamp> {
    let raw = present(raw).ok_or_else(|| missing(name))?;
    let s = string(raw, name)?;
    Timestamp::parse_rfc3339(&s)
        .ok_or_else(|| invalid(name, format_args!("must be {}", Timestamp::ACCEPTED)))
}

fn date_or_timestamp_opt(raw: Option<Raw<'_>>, name: &str) -> R<Option<Timestamp>> {
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

fn string_list(raw: Option<Raw<'_>>, name: &str) -> R<Vec<String>> {
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
    items
        .into_iter()
        .map(|r| id(Some(r.into()), name))
        .collect()
}

fn enum_opt<T>(
    raw: Option<Raw<'_>>,
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

fn note(raw: Option<Raw<'_>>) -> R<String> {
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

fn tolerance(raw: Option<Raw<'_>>) -> R<Option<Decimal>> {
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
pub fn decode_event(bytes: &[u8]) -> Result<Event, InputError> {
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            return Err(reject_plain(
                ErrorCode::MalformedJson,
                format!("not valid UTF-8: {e}"),
            ))
        }
    };
    let raw: Fields<'_> = match scan::fields(text) {
        Some(f) => f,
        None => match serde_json::from_str::<RawEvent<'_>>(text) {
            Ok(r) => r.into(),
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
        },
    };
    // On failure, a best-effort envelope for the dead-letter record (read only then).
    decode_fields(&raw).map_err(|Fail(error, detail)| InputError {
        error,
        detail,
        event_id: id_opt(raw.event_id, "event_id").ok().flatten(),
        event_type: present(raw.kind)
            .and_then(|r| string(r, "type").ok())
            .map(|s| s.into_owned()),
        customer_id: id_opt(raw.customer_id, "customer_id").ok().flatten(),
        original: None,
    })
}

fn reject_plain(error: ErrorCode, detail: String) -> InputError {
    InputError {
        error,
        detail,
        event_id: None,
        event_type: None,
        customer_id: None,
        original: None,
    }
}

fn decode_fields(raw: &Fields<'_>) -> R<Event> {
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
        types::ORDER_PLACED => EventBody::OrderPlaced(OrderPlaced {
            order_id: id(raw.order_id, "order_id")?,
            amount: non_negative(amount(raw.amount, "amount")?, "amount")?,
            currency: currency(raw.currency, "currency")?,
        }),
        types::ORDER_CANCELLED => EventBody::OrderCancelled {
            order_id: id(raw.order_id, "order_id")?,
        },
        types::SHIPMENT_SHIPPED => EventBody::ShipmentShipped(ShipmentShipped {
            shipment_id: id(raw.shipment_id, "shipment_id")?,
            order_id: id(raw.order_id, "order_id")?,
            amount: positive(amount(raw.amount, "amount")?, "amount")?,
            currency: currency(raw.currency, "currency")?,
            due_at: date_or_timestamp_opt(raw.due_date, "due_date")?,
            delivery_id: id_opt(raw.delivery_id, "delivery_id")?,
        }),
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
            EventBody::Settlement(Settlement {
                kind,
                settlement_id: id(id_raw, id_field)?,
                amount: positive(amount(raw.amount, "amount")?, "amount")?,
                currency: currency(raw.currency, "currency")?,
                applies_to: string_list(raw.applies_to, "applies_to")?,
            })
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

fn decode_command(raw: &Fields<'_>, kind: CommandKind) -> R<EventBody> {
    let (order_id, delivery_id) = match kind {
        CommandKind::ReleaseHold | CommandKind::RejectHold => {
            (Some(id(raw.order_id, "order_id")?), None)
        }
        CommandKind::ReleaseDelivery | CommandKind::RejectDelivery => {
            (None, Some(id(raw.delivery_id, "delivery_id")?))
        }
        CommandKind::Block | CommandKind::Unblock => (None, None),
    };
    Ok(EventBody::Command(Command {
        kind,
        order_id,
        delivery_id,
        actor: id(raw.actor, "actor")?,
        note: note(raw.note)?,
    }))
}

fn decode_profile(raw: &Fields<'_>) -> R<CustomerProfile> {
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
                    amount(t.amount.map(Raw::from), "temporary_limit.amount")?,
                    "temporary_limit.amount",
                )?,
                expires_at: timestamp(t.expires_at.map(Raw::from), "temporary_limit.expires_at")?,
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

fn customer_name(raw: Option<Raw<'_>>) -> R<Option<String>> {
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

#[cfg(test)]
mod tests;
