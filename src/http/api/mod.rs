//! The `/v1` handlers, a file per concern: `views` (a customer, a group, the top accounts),
//! `queue` (held orders and deliveries: search, sort, paging, CSV), `check` (the what-if check,
//! no state change), `commands` (manual decisions, validated here and published to the
//! commands topic for the engine to apply in order) and `audit`. Shared here: request parsing
//! (strict JSON bodies, ids, notes) and the money and name formatting the views share.

use super::auth::Principal;
use super::{ApiError, AppState};
use crate::engine::account::OrderState;
use crate::engine::delivery::DeliveryState;
use crate::engine::{warnings, Engine};
use crate::model::*;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use rdkafka::producer::FutureRecord;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

mod audit;
mod check;
mod commands;
mod queue;
mod views;
pub use audit::*;
pub use check::*;
pub use commands::*;
pub use queue::*;
pub use views::*;

const ID_MAX: usize = 128;
const NOTE_MAX: usize = 1000;
const PAGE_MAX: usize = 500;

pub(super) fn valid_id(what: &str, id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.chars().count() > ID_MAX || id.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1..{ID_MAX} characters without control characters"
        )));
    }
    Ok(())
}

fn money_opt(v: Option<Decimal>) -> Value {
    v.map_or(Value::Null, |d| Value::String(format_money(d)))
}

/// 404 unless a partition engine of this instance knows the customer.
pub(super) fn known_customer(app: &AppState, id: &str) -> Result<(), ApiError> {
    let known = app
        .state
        .read(|engines| engines.iter().any(|e| e.account(id).is_some()));
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "customer {id} is not known to this instance"
        )))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
}

/// Parses a JSON object body, with 415 for another content type and 400 naming the problem.
fn json_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(|e| {
        ApiError::new(
            e.status(),
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            },
            e.body_text(),
        )
    })?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/json",
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("body must be a JSON object"));
    }
    // A key given twice is refused, as on Kafka (serde_json keeps the last silently).
    serde_json::from_slice::<UniqueKeys>(&body)
        .map_err(|e| ApiError::bad_request(format!("body is not valid: {e}")))?;
    Ok(v)
}

/// A JSON object whose keys are all different (its values are not kept).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<UniqueKeys, A::Error> {
                let mut seen = std::collections::BTreeSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate field {key:?}")));
                    }
                }
                Ok(UniqueKeys)
            }
        }
        d.deserialize_map(Keys)
    }
}

fn only_fields(v: &Value, allowed: &[&str]) -> Result<(), ApiError> {
    if let Some(o) = v.as_object() {
        if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!(
                "unknown field {k:?}; allowed: {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

fn string_field<'a>(v: &'a Value, name: &str, max: usize) -> Result<&'a str, ApiError> {
    let s = v
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a string")))?;
    if s.trim().is_empty() || s.chars().count() > max {
        return Err(ApiError::bad_request(format!(
            "{name} must be 1..{max} characters"
        )));
    }
    Ok(s)
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn note(v: &Value) -> Result<String, ApiError> {
    only_fields(v, &["note"])?;
    Ok(string_field(v, "note", NOTE_MAX)?.to_string())
}

/// The verb a route fixes for a handler its routes share, as a type (`hold_command::<Release>`):
/// each handler accepts only its own verbs, so a route cannot hand a block to a release.
pub mod verb {
    /// Release a held order or delivery.
    pub enum Release {}
    /// Reject a held order or delivery.
    pub enum Reject {}
    /// Block a customer.
    pub enum Block {}
    /// Unblock a customer.
    pub enum Unblock {}
    /// Stop consuming.
    pub enum Pause {}
    /// Consume again.
    pub enum Resume {}

    /// A verb on a held item: does it release it (else it rejects it)?
    pub trait OnHeld {
        const RELEASES: bool;
    }
    impl OnHeld for Release {
        const RELEASES: bool = true;
    }
    impl OnHeld for Reject {
        const RELEASES: bool = false;
    }

    /// A verb on a customer: the command type it publishes.
    pub trait OnCustomer {
        const COMMAND: &'static str;
    }
    impl OnCustomer for Block {
        const COMMAND: &'static str = crate::model::types::COMMAND_BLOCK;
    }
    impl OnCustomer for Unblock {
        const COMMAND: &'static str = crate::model::types::COMMAND_UNBLOCK;
    }

    /// A verb on consumption: does it pause it (else it resumes it)?
    pub trait OnConsumption {
        const PAUSES: bool;
    }
    impl OnConsumption for Pause {
        const PAUSES: bool = true;
    }
    impl OnConsumption for Resume {
        const PAUSES: bool = false;
    }
}

fn customer_name(acc: &crate::engine::account::Account) -> Option<&str> {
    acc.profile.as_ref().and_then(|p| p.name.as_deref())
}
