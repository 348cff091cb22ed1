//! The `/v1` handlers: views of customers, groups, held orders and deliveries and top accounts
//! built from the engines under a short read lock; the what-if check of an order or a delivery
//! (`Engine::simulate_order` / `simulate_delivery`, no state change); and the commands,
//! validated here and published to the commands topic for the engine to apply in order.

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

/// Days past due of every open receivable, in the policy's aging buckets.
fn aging(engine: &Engine, acc: &crate::engine::account::Account) -> Value {
    let now = engine.clock().unwrap_or(Timestamp(0));
    let buckets = &engine.policy().aging_buckets_days;
    let mut labels = vec!["current".to_string()];
    let mut lower = 1u32;
    for b in buckets {
        labels.push(format!("{lower}-{b}"));
        lower = b + 1;
    }
    labels.push(format!("{lower}+"));
    let mut sums = vec![Decimal::ZERO; labels.len()];
    for r in &acc.receivables {
        let idx = if now <= r.due_at {
            0
        } else {
            let days = now.days_since(r.due_at);
            1 + buckets
                .iter()
                .position(|b| days <= Decimal::from(*b))
                .unwrap_or(buckets.len())
        };
        sums[idx] += r.open;
    }
    let mut m = serde_json::Map::new();
    for (l, s) in labels.into_iter().zip(sums) {
        m.insert(l, Value::String(format_money(s)));
    }
    Value::Object(m)
}

fn hold_json(acc: &crate::engine::account::Account, order_id: &str) -> Option<Value> {
    let o = acc.orders.get(order_id)?;
    let h = o.hold.as_ref()?;
    Some(json!({
        "order_id": o.order_id,
        "customer_id": acc.customer_id,
        "customer_name": customer_name(acc),
        "amount": format_money(o.amount),
        "currency": o.currency.as_str(),
        "placed_at": o.placed_at,
        "held_at": h.held_at,
        "reasons": h.reasons,
        "needs_person": h.needs_person(),
        "first_approver": h.first_approver,
    }))
}

fn profile_json(p: &CustomerProfile) -> Value {
    json!({
        "credit_limit": format_money(p.credit_limit),
        "currency": p.currency.as_str(),
        "grade": p.grade.map(Grade::as_str),
        "payment_terms_days": p.payment_terms_days,
        "max_order_amount": money_opt(p.max_order_amount),
        "tolerance_pct": p.tolerance_pct.map(|t| t.normalize().to_string()),
        "status": p.status.as_str(),
        "group_id": p.group_id,
        "temporary_limit": p.temporary_limit.as_ref().map(|t| json!({
            "amount": format_money(t.amount),
            "expires_at": t.expires_at,
        })),
        "review_date": p.review_date,
        "name": p.name,
    })
}

fn customer_json(engine: &Engine, acc: &crate::engine::account::Account) -> Value {
    let terms = engine.terms(&acc.customer_id);
    let exposure = acc.exposure();
    let limit = terms.as_ref().map(|t| t.limit_effective);
    let available = limit.map(|l| l - exposure.total);
    let utilization = limit.and_then(|l| warnings::utilization(exposure.total, l));
    json!({
        "customer_id": acc.customer_id,
        "name": customer_name(acc),
        "currency": acc.currency.map(|c| c.as_str().to_string()),
        "profile": acc.profile.as_ref().map(profile_json),
        "grade": terms.as_ref().map(|t| t.grade.as_str()),
        "status": terms.as_ref().map(|t| t.status.as_str()),
        "manual_block": acc.manual_block.as_ref().map(|actor| json!({"actor": actor})),
        "group_id": acc.group_id(),
        "credit_limit": money_opt(terms.as_ref().map(|t| t.credit_limit)),
        "limit_effective": money_opt(limit),
        "exposure": exposure,
        "available": money_opt(available),
        "utilization": utilization.map(format_ratio),
        "aging": aging(engine, acc),
        "open_orders": acc.orders.values().filter(|o| o.hold.is_none()).count(),
        "open_receivables": acc.receivables.len(),
        "held_orders": acc.holds.iter().filter_map(|id| hold_json(acc, id)).collect::<Vec<_>>(),
        "held_deliveries": acc.held_deliveries.iter().filter_map(|id| held_delivery_json(acc, id)).collect::<Vec<_>>(),
        "cleared_deliveries": acc.deliveries.values().filter(|d| d.state == DeliveryState::Approved).map(|d| json!({
            "delivery_id": d.delivery_id,
            "order_id": d.order_id,
            "amount": format_money(d.amount),
            "currency": d.currency.as_str(),
            "amount_account_currency": format_money(d.amount_account),
            "requested_at": d.requested_at,
            "excess": format_money(d.excess),
        })).collect::<Vec<_>>(),
        "orders": acc.orders.values().map(|o| json!({
            "order_id": o.order_id,
            "amount": format_money(o.amount),
            "currency": o.currency.as_str(),
            "amount_account_currency": format_money(o.amount_account),
            "placed_at": o.placed_at,
            "state": match o.state { OrderState::Open => "open", OrderState::Held => "held" },
            "shipped": format_money(o.shipped),
            "open_remaining": format_money(o.open_remaining),
        })).collect::<Vec<_>>(),
        "receivables": acc.receivables.iter().map(|r| {
            let now = engine.clock().unwrap_or(Timestamp(0));
            let overdue = if now > r.due_at { now.days_since(r.due_at).floor() } else { Decimal::ZERO };
            let account_currency = acc.currency.unwrap_or_else(|| Currency::parse("EUR").expect("ISO"));
            json!({
                "shipment_id": r.shipment_id,
                "order_id": r.order_id,
                "amount": format_money(r.amount),
                "open": format_money(r.open),
                "currency": r.currency_or(account_currency).as_str(),
                "open_in_currency": format_money(r.open_own()),
                "shipped_at": r.shipped_at,
                "due_at": r.due_at,
                "days_overdue": overdue.normalize().to_string(),
            })
        }).collect::<Vec<_>>(),
        "as_of": engine.clock(),
    })
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

pub async fn customer(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id("customer id", &id)?;
    let found = app.state.read(|engines| {
        let mut views = engines
            .iter()
            .filter_map(|e| e.account(&id).map(|a| customer_json(e, a)));
        let first = views.next();
        (first, 1 + views.count())
    });
    match found {
        (Some(view), 1) => Ok(Json(view)),
        // Records keyed by something else than the customer (written before KEY_MISMATCH was
        // enforced, or with the repartition stage switched on or off) left state in several
        // partitions: no single answer is right.
        (Some(_), n) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "split_account",
            format!("customer {id} has state in {n} partitions of this instance (input records keyed by something else than the customer id); see docs/operations.md, KEY_MISMATCH"),
        )),
        (None, _) => Err(ApiError::not_found(format!(
            "customer {id} is not known to this instance"
        ))),
    }
}

pub async fn group(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    valid_id("group id", &id)?;
    app.state
        .read(|engines| {
            let mut profile = None;
            let mut members = std::collections::BTreeSet::new();
            for e in engines {
                if let Some(g) = e.group(&id) {
                    if profile.is_none() {
                        profile = g.profile.clone();
                    }
                    members.extend(g.members.iter().cloned());
                }
            }
            if profile.is_none() && members.is_empty() {
                return None;
            }
            let mut exposure = Decimal::ZERO;
            let mut unconverted = Vec::new();
            let mut member_views = Vec::new();
            for m in &members {
                let Some((e, a)) = engines.iter().find_map(|e| e.account(m).map(|a| (e, a)))
                else {
                    continue;
                };
                let total = a.exposure_total();
                if let (Some(p), Some(cur)) = (&profile, a.currency) {
                    match e.policy().convert(total, cur, p.currency) {
                        Some(v) => exposure += v,
                        None => unconverted.push(m.clone()),
                    }
                }
                member_views.push(json!({
                    "customer_id": m,
                    "currency": a.currency.map(|c| c.as_str().to_string()),
                    "exposure": format_money(total),
                    "held_orders": a.holds.len(),
                }));
            }
            let limit = profile.as_ref().map(|p| p.credit_limit);
            Some(json!({
                "group_id": id,
                "profile": profile.as_ref().map(|p| json!({
                    "credit_limit": format_money(p.credit_limit),
                    "currency": p.currency.as_str(),
                    "tolerance_pct": p.tolerance_pct.map(|t| t.normalize().to_string()),
                })),
                "members": member_views,
                "exposure": format_money(exposure),
                "available": money_opt(limit.map(|l| l - exposure)),
                "utilization": limit.and_then(|l| warnings::utilization(exposure, l)).map(format_ratio),
                "members_without_fx_rate": unconverted,
            }))
        })
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("group {id} is not known to this instance")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldsQuery {
    reason: Option<String>,
    customer_id: Option<String>,
    min_amount: Option<String>,
    max_amount: Option<String>,
    /// Search: part of the order id (or delivery id), customer id or customer name, any case.
    q: Option<String>,
    /// `held_at` (default), `amount`, `customer`, `reason` or `days_on_hold`.
    sort: Option<String>,
    /// `asc` (default) or `desc`.
    order: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
}

fn amount_param(name: &str, v: &Option<String>) -> Result<Option<Decimal>, ApiError> {
    v.as_deref()
        .map(|s| parse_amount(s).map_err(|e| ApiError::bad_request(format!("{name} {s:?}: {e}"))))
        .transpose()
}

pub async fn holds(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    let mut rows = app.state.read(|engines| held_orders(engines, &filter));
    in_flight_first_approvals(&app, "order", &mut rows);
    Ok(Json(filter.page(&mut rows)))
}

/// `GET /v1/holds/export`: every held order the filters and search select, sorted the same
/// way, as CSV (no paging).
pub async fn holds_export(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    let mut rows = app.state.read(|engines| held_orders(engines, &filter));
    filter.sort(&mut rows);
    Ok(queue_csv(&rows, false))
}

/// `GET /v1/deliveries/export`: the held deliveries `/v1/deliveries` selects, as CSV.
pub async fn deliveries_export(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    let mut rows = app.state.read(|engines| held_deliveries(engines, &filter));
    filter.sort(&mut rows);
    Ok(queue_csv(&rows, true))
}

/// A hold queue as CSV, one row per hold (deliveries with their order's id).
fn queue_csv(rows: &[QueueRow], deliveries: bool) -> Response {
    let mut csv = String::from(if deliveries {
        "held_at,days_on_hold,delivery_id,order_id,customer_id,customer_name,amount,currency,reasons,details,first_approver\r\n"
    } else {
        "held_at,days_on_hold,order_id,customer_id,customer_name,amount,currency,reasons,details,first_approver\r\n"
    });
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for r in rows {
        let v = &r.value;
        let reasons = v["reasons"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let codes: Vec<&str> = reasons.iter().filter_map(|x| x["code"].as_str()).collect();
        let details: Vec<&str> = reasons
            .iter()
            .filter_map(|x| x["detail"].as_str())
            .collect();
        let mut fields = vec![
            text(&v["held_at"]),
            r.days_on_hold.to_string(),
            r.id.clone(),
        ];
        if deliveries {
            fields.push(text(&v["order_id"]));
        }
        fields.extend([
            r.customer_id.clone(),
            r.customer_name.clone().unwrap_or_default(),
            text(&v["amount"]),
            text(&v["currency"]),
            codes.join(" "),
            details.join("; "),
            text(&v["first_approver"]),
        ]);
        let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
        csv.push_str(&line.join(","));
        csv.push_str("\r\n");
    }
    let file = if deliveries {
        "attachment; filename=\"held-deliveries.csv\""
    } else {
        "attachment; filename=\"held-orders.csv\""
    };
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (header::CONTENT_DISPOSITION, file),
        ],
        csv,
    )
        .into_response()
}

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break; a field a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) is prefixed with `'`.
fn csv_field(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// Every held order the filter selects, each with what it is sorted by.
fn held_orders(engines: &[&Engine], filter: &HoldFilter) -> Vec<QueueRow> {
    let mut rows = Vec::new();
    for e in engines {
        let now = e.clock();
        for acc in e.accounts() {
            if !filter.customer(acc) {
                continue;
            }
            for id in &acc.holds {
                let Some(o) = acc.orders.get(id) else {
                    continue;
                };
                let Some(h) = o.hold.as_ref() else { continue };
                if !filter.accepts(&h.reasons, o.amount) || !filter.finds(id, acc) {
                    continue;
                }
                if let Some(v) = hold_json(acc, id) {
                    rows.push(QueueRow::new(
                        acc, id, h.held_at, o.amount, &h.reasons, now, v,
                    ));
                }
            }
        }
    }
    rows
}

/// A held order or delivery as a queue lists it.
struct QueueRow {
    held_at: Timestamp,
    id: String,
    customer_id: String,
    customer_name: Option<String>,
    amount: Decimal,
    /// The first failed rule's code (what the queue sorts by "reason").
    reason: &'static str,
    /// Whole days between the hold and the partition's clock.
    days_on_hold: i64,
    value: Value,
}

impl QueueRow {
    fn new(
        acc: &crate::engine::account::Account,
        id: &str,
        held_at: Timestamp,
        amount: Decimal,
        reasons: &[Reason],
        now: Option<Timestamp>,
        mut value: Value,
    ) -> QueueRow {
        let days_on_hold = now.map_or(0, |n| ((n.0 - held_at.0) / DAY_US).max(0));
        value["days_on_hold"] = json!(days_on_hold);
        QueueRow {
            held_at,
            id: id.to_string(),
            customer_id: acc.customer_id.clone(),
            customer_name: customer_name(acc).map(str::to_string),
            amount,
            reason: reasons.first().map_or("", |r| r.code.as_str()),
            days_on_hold,
            value,
        }
    }
}

/// What a hold queue is sorted by.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SortBy {
    HeldAt,
    Amount,
    Customer,
    Reason,
    DaysOnHold,
}

/// The filters and page of a hold listing (`/v1/holds`, `/v1/deliveries`).
struct HoldFilter {
    reason: Option<ReasonCode>,
    min: Option<Decimal>,
    max: Option<Decimal>,
    customer_id: Option<String>,
    /// The search, lower-cased.
    search: Option<String>,
    sort: SortBy,
    descending: bool,
    limit: usize,
    offset: usize,
}

impl HoldFilter {
    fn from_query(q: &HoldsQuery) -> Result<HoldFilter, ApiError> {
        let reason = match q.reason.as_deref() {
            None => None,
            Some(r) => Some(
                ReasonCode::ALL
                    .into_iter()
                    .find(|c| c.as_str() == r)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("reason {r:?} is not a reason code"))
                    })?,
            ),
        };
        let limit = q.limit.unwrap_or(50);
        if limit == 0 || limit > PAGE_MAX {
            return Err(ApiError::bad_request(format!(
                "limit must be 1..{PAGE_MAX}"
            )));
        }
        let sort = match q.sort.as_deref().unwrap_or("held_at") {
            "held_at" => SortBy::HeldAt,
            "amount" => SortBy::Amount,
            "customer" => SortBy::Customer,
            "reason" => SortBy::Reason,
            "days_on_hold" => SortBy::DaysOnHold,
            other => {
                return Err(ApiError::bad_request(format!(
                    "sort {other:?}: use held_at, amount, customer, reason or days_on_hold"
                )))
            }
        };
        let descending = match q.order.as_deref().unwrap_or("asc") {
            "asc" => false,
            "desc" => true,
            other => {
                return Err(ApiError::bad_request(format!(
                    "order {other:?}: use asc or desc"
                )))
            }
        };
        let search = q.q.as_deref().map(str::trim).filter(|t| !t.is_empty());
        if search.is_some_and(|t| t.chars().count() > 128) {
            return Err(ApiError::bad_request("q is longer than 128 characters"));
        }
        Ok(HoldFilter {
            reason,
            min: amount_param("min_amount", &q.min_amount)?,
            max: amount_param("max_amount", &q.max_amount)?,
            customer_id: q.customer_id.clone(),
            search: search.map(str::to_lowercase),
            sort,
            descending,
            limit,
            offset: q.offset.unwrap_or(0),
        })
    }

    fn customer(&self, acc: &crate::engine::account::Account) -> bool {
        self.customer_id
            .as_deref()
            .is_none_or(|c| c == acc.customer_id)
    }

    /// Whether the search finds `id` (an order or delivery id) or the customer (id or name).
    fn finds(&self, id: &str, acc: &crate::engine::account::Account) -> bool {
        let Some(t) = &self.search else {
            return true;
        };
        let has = |s: &str| s.to_lowercase().contains(t.as_str());
        has(id) || has(&acc.customer_id) || customer_name(acc).is_some_and(has)
    }

    fn accepts(&self, reasons: &[Reason], amount: Decimal) -> bool {
        !(self
            .reason
            .is_some_and(|r| !reasons.iter().any(|x| x.code == r))
            || self.min.is_some_and(|m| amount < m)
            || self.max.is_some_and(|m| amount > m))
    }

    /// Sorts by the chosen key, then held since and id (a total order: pages never overlap).
    fn sort(&self, rows: &mut [QueueRow]) {
        rows.sort_by(|a, b| {
            let key = match self.sort {
                SortBy::HeldAt => std::cmp::Ordering::Equal,
                SortBy::Amount => a.amount.cmp(&b.amount),
                SortBy::Customer => a
                    .customer_name
                    .as_deref()
                    .unwrap_or(&a.customer_id)
                    .to_lowercase()
                    .cmp(
                        &b.customer_name
                            .as_deref()
                            .unwrap_or(&b.customer_id)
                            .to_lowercase(),
                    )
                    .then_with(|| a.customer_id.cmp(&b.customer_id)),
                SortBy::Reason => a.reason.cmp(b.reason),
                SortBy::DaysOnHold => a.days_on_hold.cmp(&b.days_on_hold),
            };
            let key = key
                .then_with(|| a.held_at.cmp(&b.held_at))
                .then_with(|| a.id.cmp(&b.id));
            if self.descending {
                key.reverse()
            } else {
                key
            }
        });
    }

    /// Sorts and answers one page with the total.
    fn page(&self, rows: &mut Vec<QueueRow>) -> Value {
        self.sort(rows);
        let total = rows.len();
        let page: Vec<Value> = rows
            .drain(..)
            .skip(self.offset)
            .take(self.limit)
            .map(|r| r.value)
            .collect();
        json!({
            "total": total,
            "offset": self.offset,
            "limit": self.limit,
            "items": page,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopQuery {
    by: Option<String>,
    limit: Option<usize>,
}

pub async fn top(
    State(app): State<Arc<AppState>>,
    q: Result<Query<TopQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let by = q.by.unwrap_or_else(|| "utilization".into());
    if by != "utilization" && by != "exposure" {
        return Err(ApiError::bad_request(
            "by must be \"utilization\" or \"exposure\"",
        ));
    }
    let limit = q.limit.unwrap_or(10);
    if limit == 0 || limit > 100 {
        return Err(ApiError::bad_request("limit must be 1..100"));
    }
    let mut rows: Vec<(Decimal, String, Value)> = app.state.read(|engines| {
        let mut rows = Vec::new();
        for e in engines {
            for acc in e.accounts() {
                let exposure = acc.exposure_total();
                let limit = e.terms(&acc.customer_id).map(|t| t.limit_effective);
                let u = limit.and_then(|l| warnings::utilization(exposure, l));
                let key = if by == "utilization" {
                    match u {
                        Some(u) => u,
                        None => continue,
                    }
                } else {
                    exposure
                };
                rows.push((
                    key,
                    acc.customer_id.clone(),
                    json!({
                        "customer_id": acc.customer_id,
                        "customer_name": customer_name(acc),
                        "currency": acc.currency.map(|c| c.as_str().to_string()),
                        "exposure": format_money(exposure),
                        "limit_effective": money_opt(limit),
                        "utilization": u.map(format_ratio),
                        "held_orders": acc.holds.len(),
                    }),
                ));
            }
        }
        rows
    });
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    rows.truncate(limit);
    Ok(Json(json!({
        "by": by,
        "items": rows.into_iter().map(|(_, _, v)| v).collect::<Vec<_>>(),
    })))
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

pub async fn check(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let v = json_body(&headers, body)?;
    only_fields(&v, &["customer_id", "amount", "currency", "order_id"])?;
    let customer_id = string_field(&v, "customer_id", ID_MAX)?.to_string();
    // With `order_id`: the delivery check for goods of that order; without: the order check.
    let order_id = match v.get("order_id") {
        None | Some(Value::Null) => None,
        Some(_) => Some(string_field(&v, "order_id", ID_MAX)?.to_string()),
    };
    let amount_text = match v.get("amount") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(ApiError::bad_request(
                "amount must be a decimal string or number",
            ))
        }
        None => return Err(ApiError::bad_request("amount is required")),
    };
    let amount = parse_amount(&amount_text)
        .map_err(|e| ApiError::bad_request(format!("amount {amount_text:?}: {e}")))?;
    if amount.is_sign_negative() {
        return Err(ApiError::bad_request("amount must be >= 0"));
    }
    let currency_text = string_field(&v, "currency", 3)?;
    let currency = Currency::parse_iso(currency_text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "currency {currency_text:?} is not an ISO 4217 code"
        ))
    })?;
    app.state
        .read(|engines| {
            let e = engines.iter().find(|e| e.account(&customer_id).is_some())?;
            let (status, reasons) = match &order_id {
                Some(o) => e.simulate_delivery(&customer_id, o, amount, currency),
                None => e.simulate_order(&customer_id, amount, currency),
            };
            let acc = e.account(&customer_id)?;
            let limit = e.terms(&customer_id).map(|t| t.limit_effective);
            Some(json!({
                "check": if order_id.is_some() { "delivery" } else { "order" },
                "order_id": order_id,
                "customer_id": customer_id,
                "amount": format_money(amount),
                "currency": currency.as_str(),
                "status": status.as_str(),
                "reasons": reasons,
                "exposure": acc.exposure(),
                "limit_effective": money_opt(limit),
                "available": money_opt(limit.map(|l| l - acc.exposure_total())),
                "as_of": e.clock(),
            }))
        })
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "customer {customer_id} is not known to this instance"
            ))
        })
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// Publishes one command to the commands topic and answers 202 with its id.
async fn publish(
    app: &AppState,
    kind: &'static str,
    customer_id: &str,
    target: Option<(&'static str, &str)>,
    actor: &Principal,
    note: &str,
    extra: Value,
) -> Result<Response, ApiError> {
    // A command takes effect at the event time of the customer's partition (its engine's
    // clock), not the wall clock: where event time runs behind the wall clock (a simulated or
    // replayed stream, a quiet partition without clock ticks), a wall-clock time would move
    // that partition's time forward, ageing its items and expiring its holds.
    let at = app
        .state
        .read(|engines| {
            engines
                .iter()
                .find(|e| e.account(customer_id).is_some())
                .and_then(|e| e.clock())
        })
        .unwrap_or_else(now);
    let seq = app.command_seq.fetch_add(1, Ordering::Relaxed);
    let digest = {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(actor.name.as_bytes());
        h.update(at.0.to_be_bytes());
        h.update(seq.to_be_bytes());
        h.update(std::process::id().to_be_bytes());
        h.update(customer_id.as_bytes());
        h.finalize()
    };
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    let command_id = format!("cmd-{hex}");
    let mut record = json!({
        "event_id": command_id,
        "type": kind,
        "occurred_at": at,
        "customer_id": customer_id,
        "actor": actor.name,
        "note": note,
    });
    if let Some((field, id)) = target {
        record[field] = json!(id);
    }
    let internal = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e);
    if let Some(keys) = &app.settings.kafka.command_keys {
        // Signed over the command as the engine will decode it.
        let bytes = serde_json::to_vec(&record).map_err(|e| internal(e.to_string()))?;
        let event = crate::codec::decode_event(&bytes).map_err(|r| internal(r.detail))?;
        if let Some(signature) = keys.sign(&event) {
            record["signature"] = json!(signature);
        }
    }
    let payload = serde_json::to_vec(&record).map_err(|e| internal(e.to_string()))?;
    let topic = &app.settings.kafka.topics.commands;
    app.producer
        .send(
            FutureRecord::to(topic).key(customer_id).payload(&payload),
            Duration::from_secs(5),
        )
        .await
        .map_err(|(e, _)| {
            tracing::error!(%topic, "cannot publish command: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the command could not be published to {topic}; retry later"),
            )
        })?;
    app.metrics
        .commands_published
        .with_label_values(&[kind])
        .inc();
    note_published(app, &command_id, kind, customer_id);
    let target_id = target.map_or("", |(_, id)| id);
    tracing::info!(command_id = %command_id, kind, customer_id, target = target_id, actor = %actor.name, "command published");
    let mut body = json!({
        "command_id": command_id,
        "type": kind,
        "customer_id": customer_id,
        "actor": actor.name,
        "topic": topic,
        "outcome_url": format!("/v1/commands/{command_id}"),
    });
    if let Some((field, id)) = target {
        body[field] = json!(id);
    } else {
        body["order_id"] = Value::Null;
    }
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn note(v: &Value) -> Result<String, ApiError> {
    only_fields(v, &["note"])?;
    Ok(string_field(v, "note", NOTE_MAX)?.to_string())
}

/// Finds the customer holding `order_id` and what four-eyes says about `actor` releasing it.
fn find_hold(app: &AppState, order_id: &str) -> Option<(String, Option<String>, bool)> {
    app.state.read(|engines| {
        for e in engines {
            for acc in e.accounts() {
                if !acc.holds.iter().any(|h| h == order_id) {
                    continue;
                }
                let o = acc.orders.get(order_id)?;
                let first = o.hold.as_ref().and_then(|h| h.first_approver.clone());
                let four_eyes = e
                    .policy()
                    .four_eyes_amount
                    .is_some_and(|max| o.amount_account > max);
                return Some((acc.customer_id.clone(), first, four_eyes));
            }
        }
        None
    })
}

/// Which command a route publishes (the routes share one handler each).
pub const RELEASE: bool = true;
pub const REJECT: bool = false;
pub const BLOCK: bool = true;
pub const UNBLOCK: bool = false;

/// `POST /v1/holds/{order_id}/release` (`RELEASE_HOLD`) or `/reject`.
pub async fn hold_command<const RELEASE_HOLD: bool>(
    State(app): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = if RELEASE_HOLD {
        crate::model::types::COMMAND_RELEASE_HOLD
    } else {
        crate::model::types::COMMAND_REJECT_HOLD
    };
    valid_id("order id", &order_id)?;
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    let (customer_id, first, four_eyes) = find_hold(&app, &order_id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "order_not_held",
            format!("order {order_id} is not on hold here"),
        )
    })?;
    let first = first.or_else(|| in_flight_approval(&app, "order", &order_id));
    let is_first_approval = RELEASE_HOLD && four_eyes && first.is_none();
    let extra = if RELEASE_HOLD {
        four_eyes_answer(four_eyes, first, &principal, "order", &order_id)?
    } else {
        json!({})
    };
    let published = publish(
        &app,
        kind,
        &customer_id,
        Some(("order_id", &order_id)),
        &principal,
        &note,
        extra,
    )
    .await;
    if published.is_ok() && is_first_approval {
        note_first_approval(&app, "order", &order_id, &principal);
    }
    published
}

/// Commands published here that are remembered while no outcome is known (the oldest
/// forgotten first), and for how long.
pub const PUBLISHED_KEPT: usize = 10_000;
const PUBLISHED_FOR: Duration = Duration::from_secs(3_600);

fn note_published(app: &AppState, command_id: &str, kind: &'static str, customer_id: &str) {
    if let Ok(mut m) = app.published.lock() {
        m.retain(|_, (_, _, at)| at.elapsed() < PUBLISHED_FOR);
        if m.len() >= PUBLISHED_KEPT {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, _, at))| *at)
                .map(|(id, _)| id.clone())
            {
                m.remove(&oldest);
            }
        }
        m.insert(
            command_id.to_string(),
            (kind, customer_id.to_string(), std::time::Instant::now()),
        );
    }
}

/// `GET /v1/commands/{id}`: what became of a command. Its outcome once an engine of this
/// process applied or refused it (the batch committed): `applied` with the decisions it
/// produced, `awaiting_second_approver`, `refused` with the dead-letter's error and detail,
/// or `duplicate`. `published` while this server published it and no outcome is known yet
/// (also for good when another instance owns the customer's partition: that instance
/// answers). 404 for a command this process never saw.
pub async fn command(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    valid_id("command id", &id)?;
    if let Some(outcome) = app.feed.as_deref().and_then(|f| f.command(&id)) {
        return Ok(Json(&*outcome).into_response());
    }
    let published = app.published.lock().ok().and_then(|m| {
        m.get(&id)
            .map(|(kind, customer, _)| (*kind, customer.clone()))
    });
    match published {
        Some((kind, customer_id)) => Ok(Json(json!({
            "command_id": id,
            "type": kind,
            "customer_id": customer_id,
            "status": "published",
            "decisions": [],
            "detail": "published to the commands topic; no engine of this instance has applied it yet (the instance that owns the customer's partition applies it)",
        }))
        .into_response()),
        None => Err(ApiError::not_found(format!(
            "command {id} is unknown here (never published by this server, or forgotten)"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this person's commands (exact name).
    actor: Option<String>,
    /// Only commands of this day (`YYYY-MM-DD`, UTC, by the command's `occurred_at`).
    day: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/audit`: the manual decisions this instance's engines applied or refused, newest
/// first: who, when, the note, the outcome, and for a four-eyes release which approval it was
/// (a second approval names the first approver). Bounded like the command outcomes (the last
/// 10,000 per process, not kept across a restart); the decisions topic is the durable record.
pub async fn audit(
    State(app): State<Arc<AppState>>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > PAGE_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..{PAGE_MAX}"
        )));
    }
    let day = match q.day.as_deref().filter(|d| !d.is_empty()) {
        None => None,
        Some(d) => {
            let start = Timestamp::parse_rfc3339(&format!("{d}T00:00:00Z")).ok_or_else(|| {
                ApiError::bad_request(format!("day {d:?} is not a date (YYYY-MM-DD)"))
            })?;
            Some((start, start.plus_days(1)))
        }
    };
    let actor = q.actor.as_deref().map(str::trim).filter(|a| !a.is_empty());
    let Some(feed) = app.feed.as_deref() else {
        return Ok(Json(json!({"items": []})));
    };
    // Every remembered command, to pair each four-eyes release with its first approval.
    let all = feed.commands(usize::MAX, |c| c.actor.is_some());
    let first_of = |c: &crate::feed::CommandOutcome| -> Option<String> {
        if c.status != "applied" || !c.kind.starts_with("command.release") {
            return None;
        }
        all.iter()
            .filter(|o| {
                o.status == "awaiting_second_approver"
                    && o.kind == c.kind
                    && o.order_id == c.order_id
                    && o.delivery_id == c.delivery_id
                    && o.at <= c.at
            })
            .find_map(|o| o.actor.clone())
    };
    let items: Vec<Value> = all
        .iter()
        .filter(|c| actor.is_none_or(|a| c.actor.as_deref() == Some(a)))
        .filter(|c| day.is_none_or(|(from, to)| c.at.is_some_and(|t| t >= from && t < to)))
        .take(limit)
        .map(|c| {
            let mut v = json!(&**c);
            v["first_approver"] = json!(first_of(c));
            v
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

/// How long a first approval published here counts as in flight (the engine applies a command
/// within a batch; its view then shows it).
const APPROVAL_IN_FLIGHT: Duration = Duration::from_secs(60);

/// The approver of a first approval this server published for (what, id) that may not be
/// applied yet.
fn in_flight_approval(app: &AppState, what: &str, id: &str) -> Option<String> {
    let mut m = app.first_approvals.lock().ok()?;
    m.retain(|_, (_, at)| at.elapsed() < APPROVAL_IN_FLIGHT);
    m.get(&(what.to_string(), id.to_string()))
        .map(|(actor, _)| actor.clone())
}

/// Shows a first four-eyes approval published here that the engine has not applied yet (so a
/// second approver who opens the queue at once sees who asked, as the API's checks do).
fn in_flight_first_approvals(app: &AppState, what: &str, rows: &mut [QueueRow]) {
    let Ok(mut m) = app.first_approvals.lock() else {
        return;
    };
    m.retain(|_, (_, at)| at.elapsed() < APPROVAL_IN_FLIGHT);
    if m.is_empty() {
        return;
    }
    for r in rows
        .iter_mut()
        .filter(|r| r.value["first_approver"].is_null())
    {
        if let Some((actor, _)) = m.get(&(what.to_string(), r.id.clone())) {
            r.value["first_approver"] = json!(actor);
        }
    }
}

fn note_first_approval(app: &AppState, what: &str, id: &str, principal: &Principal) {
    if let Ok(mut m) = app.first_approvals.lock() {
        // Bounded: entries older than the in-flight window are dropped on every lookup.
        if m.len() < 10_000 {
            m.insert(
                (what.to_string(), id.to_string()),
                (principal.name.clone(), std::time::Instant::now()),
            );
        }
    }
}

/// What four-eyes says about `principal` releasing a hold: 409 when the engine would refuse
/// it (the same approver twice), else the answer's `four_eyes` part (empty without four-eyes).
fn four_eyes_answer(
    four_eyes: bool,
    first: Option<String>,
    principal: &Principal,
    what: &str,
    id: &str,
) -> Result<Value, ApiError> {
    if !four_eyes {
        return Ok(json!({}));
    }
    match first {
        Some(f) if f == principal.name => Err(ApiError::new(
            StatusCode::CONFLICT,
            "four_eyes_same_actor",
            format!(
                "{what} {id} needs a second approver other than {}",
                principal.name
            ),
        )),
        Some(f) => Ok(json!({"four_eyes": {"first_approver": f, "this": "second approval"}})),
        None => Ok(
            json!({"four_eyes": {"first_approver": null, "this": "first approval; a second approver must release it too"}}),
        ),
    }
}

/// Finds the customer holding delivery `delivery_id` and what four-eyes says about releasing it.
fn find_held_delivery(app: &AppState, delivery_id: &str) -> Option<(String, Option<String>, bool)> {
    app.state.read(|engines| {
        for e in engines {
            for acc in e.accounts() {
                let Some(d) = acc
                    .deliveries
                    .get(delivery_id)
                    .filter(|d| d.state == DeliveryState::Held)
                else {
                    continue;
                };
                let first = d.hold.as_ref().and_then(|h| h.first_approver.clone());
                let four_eyes = e
                    .policy()
                    .four_eyes_amount
                    .is_some_and(|max| d.amount_account > max);
                return Some((acc.customer_id.clone(), first, four_eyes));
            }
        }
        None
    })
}

/// `POST /v1/deliveries/{delivery_id}/release` (`RELEASE_DELIVERY`) or `/reject`.
pub async fn delivery_command<const RELEASE_DELIVERY: bool>(
    State(app): State<Arc<AppState>>,
    Path(delivery_id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = if RELEASE_DELIVERY {
        crate::model::types::COMMAND_RELEASE_DELIVERY
    } else {
        crate::model::types::COMMAND_REJECT_DELIVERY
    };
    valid_id("delivery id", &delivery_id)?;
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    let (customer_id, first, four_eyes) =
        find_held_delivery(&app, &delivery_id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "delivery_not_held",
                format!("delivery {delivery_id} is not on hold here"),
            )
        })?;
    let first = first.or_else(|| in_flight_approval(&app, "delivery", &delivery_id));
    let is_first_approval = RELEASE_DELIVERY && four_eyes && first.is_none();
    let extra = if RELEASE_DELIVERY {
        four_eyes_answer(four_eyes, first, &principal, "delivery", &delivery_id)?
    } else {
        json!({})
    };
    let published = publish(
        &app,
        kind,
        &customer_id,
        Some(("delivery_id", &delivery_id)),
        &principal,
        &note,
        extra,
    )
    .await;
    if published.is_ok() && is_first_approval {
        note_first_approval(&app, "delivery", &delivery_id, &principal);
    }
    published
}

/// One held delivery as the API shows it.
fn held_delivery_json(acc: &crate::engine::account::Account, delivery_id: &str) -> Option<Value> {
    let d = acc.deliveries.get(delivery_id)?;
    let h = d.hold.as_ref()?;
    Some(json!({
        "delivery_id": d.delivery_id,
        "order_id": d.order_id,
        "customer_id": acc.customer_id,
        "customer_name": customer_name(acc),
        "amount": format_money(d.amount),
        "currency": d.currency.as_str(),
        "amount_account_currency": format_money(d.amount_account),
        "requested_at": d.requested_at,
        "held_at": h.held_at,
        "reasons": h.reasons,
        "order_status": acc.order_standing(&d.order_id).as_str(),
        "first_approver": h.first_approver,
    }))
}

fn customer_name(acc: &crate::engine::account::Account) -> Option<&str> {
    acc.profile.as_ref().and_then(|p| p.name.as_deref())
}

/// `GET /v1/deliveries`: held deliveries, oldest first, filtered and paged like `/v1/holds`.
pub async fn deliveries(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    let mut rows = app.state.read(|engines| held_deliveries(engines, &filter));
    in_flight_first_approvals(&app, "delivery", &mut rows);
    Ok(Json(filter.page(&mut rows)))
}

/// Every held delivery the filter selects (the search also finds its order's id).
fn held_deliveries(engines: &[&Engine], filter: &HoldFilter) -> Vec<QueueRow> {
    let mut rows = Vec::new();
    for e in engines {
        let now = e.clock();
        for acc in e.accounts() {
            if !filter.customer(acc) {
                continue;
            }
            for id in &acc.held_deliveries {
                let Some(d) = acc.deliveries.get(id) else {
                    continue;
                };
                let Some(h) = d.hold.as_ref() else { continue };
                if !filter.accepts(&h.reasons, d.amount)
                    || !(filter.finds(id, acc) || filter.finds(&d.order_id, acc))
                {
                    continue;
                }
                if let Some(v) = held_delivery_json(acc, id) {
                    rows.push(QueueRow::new(
                        acc, id, h.held_at, d.amount, &h.reasons, now, v,
                    ));
                }
            }
        }
    }
    rows
}

/// `POST /v1/customers/{id}/block` (`BLOCK_CUSTOMER`) or `/unblock`.
/// `POST /v1/admin/pause` and `/v1/admin/resume` (admin, with a note): this instance stops
/// (or resumes) consuming its partitions. Nothing is decided while paused; the partitions stay
/// assigned and lag goes on being reported. Instance-local: pausing a whole deployment means
/// pausing each instance. Takes effect within one batch window; `/readyz` says when it has.
pub async fn consumption<const PAUSE: bool>(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    let was = app.stats.pause_requested.swap(PAUSE, Ordering::Relaxed);
    tracing::warn!(
        by = %principal.name,
        %note,
        changed = was != PAUSE,
        "consumption {} by an admin",
        if PAUSE { "pause requested" } else { "resume requested" }
    );
    let body = json!({
        "pause_requested": PAUSE,
        "paused": app.stats.paused.load(Ordering::Relaxed),
        "by": principal.name,
        "note": note,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

pub async fn customer_command<const BLOCK_CUSTOMER: bool>(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = if BLOCK_CUSTOMER {
        crate::model::types::COMMAND_BLOCK
    } else {
        crate::model::types::COMMAND_UNBLOCK
    };
    valid_id("customer id", &id)?;
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    known_customer(&app, &id)?;
    publish(&app, kind, &id, None, &principal, &note, json!({})).await
}
