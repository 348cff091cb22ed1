//! The hold queue: held orders and held deliveries across every partition, searched, sorted and
//! paged (`/v1/holds`, `/v1/deliveries`), and exported as CSV (`.../export`).

use super::*;
use crate::engine::account::{Account, Hold};

#[derive(Default, Deserialize)]
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

pub(super) fn amount_param(name: &str, v: &Option<String>) -> Result<Option<Decimal>, ApiError> {
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
    let mut page = app
        .state
        .read(|engines| filter.page(held_orders(engines, &filter), hold_json));
    in_flight_first_approvals(&app, "order", &mut page.items);
    Ok(Json(page.json()))
}

/// What `GET /v1/holds` with no parameters answers over `engines` once it holds the read
/// model (the first page, oldest hold first), less the in-flight approvals it merges in: what
/// the bench times at scale.
pub fn first_holds_page(engines: &[&Engine]) -> Value {
    let Ok(filter) = HoldFilter::from_query(&HoldsQuery::default()) else {
        return Value::Null;
    };
    filter.page(held_orders(engines, &filter), hold_json).json()
}

/// `GET /v1/holds/export`: every held order the filters and search select, sorted the same
/// way, as CSV (no paging).
pub async fn holds_export(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    Ok(app.state.read(|engines| {
        let mut rows = held_orders(engines, &filter);
        filter.sort(&mut rows);
        queue_csv(&rows, false)
    }))
}

/// `GET /v1/deliveries/export`: the held deliveries `/v1/deliveries` selects, as CSV.
pub async fn deliveries_export(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    Ok(app.state.read(|engines| {
        let mut rows = held_deliveries(engines, &filter);
        filter.sort(&mut rows);
        queue_csv(&rows, true)
    }))
}

/// A hold queue as CSV, one row per hold (deliveries with their order's id).
pub(super) fn queue_csv(rows: &[QueueRow<'_>], deliveries: bool) -> Response {
    let mut csv = String::from(if deliveries {
        "held_at,days_on_hold,delivery_id,order_id,customer_id,customer_name,amount,currency,reasons,details,first_approver\r\n"
    } else {
        "held_at,days_on_hold,order_id,customer_id,customer_name,amount,currency,reasons,details,first_approver\r\n"
    });
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let json = if deliveries {
        held_delivery_json
    } else {
        hold_json
    };
    for r in rows {
        let Some(v) = json(r.acc, r.id) else { continue };
        let v = &v;
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
            r.id.to_string(),
        ];
        if deliveries {
            fields.push(text(&v["order_id"]));
        }
        fields.extend([
            r.acc.customer_id.clone(),
            customer_name(r.acc).unwrap_or_default().to_string(),
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
pub(super) fn csv_field(text: &str) -> String {
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
pub(super) fn held_orders<'a>(engines: &[&'a Engine], filter: &HoldFilter) -> Vec<QueueRow<'a>> {
    held_rows(engines, filter, false, held_order_items)
}

fn held_order_items(acc: &Account) -> Vec<HeldItem<'_>> {
    acc.holds()
        .iter()
        .filter_map(|id| {
            let o = acc.orders().get(id)?;
            Some((id.as_str(), o.hold.as_ref()?, o.amount, None))
        })
        .collect()
}

/// A held item as the queues see it: its id, its hold, its amount, and another id the search
/// also finds it by (a delivery's order).
type HeldItem<'a> = (&'a str, &'a Hold, Decimal, Option<&'a str>);

/// Every held item the filter selects from what `held` lists per account. Only accounts that
/// hold something are visited (a read replica's index lists them), or the one account the
/// filter names. Rows carry what they are sorted and filtered by; their JSON is built for the
/// page shown only.
fn held_rows<'a>(
    engines: &[&'a Engine],
    filter: &HoldFilter,
    deliveries: bool,
    held: impl Fn(&'a Account) -> Vec<HeldItem<'a>>,
) -> Vec<QueueRow<'a>> {
    let mut rows = Vec::new();
    for e in engines {
        let now = e.clock();
        let accounts: Box<dyn Iterator<Item = &'a Account>> = match &filter.customer_id {
            Some(c) => Box::new(e.account(c).into_iter()),
            None => e.accounts_holding(deliveries),
        };
        for acc in accounts {
            for (id, h, amount, also) in held(acc) {
                let found = filter.finds(id, acc) || also.is_some_and(|a| filter.finds(a, acc));
                if !filter.accepts(&h.reasons, amount) || !found {
                    continue;
                }
                rows.push(QueueRow::new(
                    acc,
                    id,
                    h.held_at,
                    amount,
                    &h.reasons,
                    now,
                    filter.sort == SortBy::Customer,
                ));
            }
        }
    }
    rows
}

/// A held order or delivery as a queue lists it.
pub(super) struct QueueRow<'a> {
    held_at: Timestamp,
    id: &'a str,
    acc: &'a Account,
    /// The name (else the id) lower-cased, when the queue is sorted by customer.
    customer_key: Option<String>,
    amount: Decimal,
    /// The first failed rule's code (what the queue sorts by "reason").
    reason: &'static str,
    /// Whole days between the hold and the partition's clock.
    days_on_hold: i64,
}

impl<'a> QueueRow<'a> {
    fn new(
        acc: &'a Account,
        id: &'a str,
        held_at: Timestamp,
        amount: Decimal,
        reasons: &[Reason],
        now: Option<Timestamp>,
        by_customer: bool,
    ) -> QueueRow<'a> {
        let days_on_hold = now.map_or(0, |n| ((n.0 - held_at.0) / DAY_US).max(0));
        QueueRow {
            held_at,
            id,
            acc,
            customer_key: by_customer.then(|| {
                customer_name(acc)
                    .unwrap_or(&acc.customer_id)
                    .to_lowercase()
            }),
            amount,
            reason: reasons.first().map_or("", |r| r.code.as_str()),
            days_on_hold,
        }
    }

    /// The row as the API shows it, `json` being the held item's view.
    fn value(&self, json: fn(&Account, &str) -> Option<Value>) -> Option<Value> {
        let mut v = json(self.acc, self.id)?;
        v["days_on_hold"] = json!(self.days_on_hold);
        Some(v)
    }
}

/// One page of a hold queue.
pub(super) struct Page {
    total: usize,
    offset: usize,
    limit: usize,
    pub(super) items: Vec<Value>,
}

impl Page {
    fn json(self) -> Value {
        json!({
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "items": self.items,
        })
    }
}

/// What a hold queue is sorted by.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SortBy {
    HeldAt,
    Amount,
    Customer,
    Reason,
    DaysOnHold,
}

/// The filters and page of a hold listing (`/v1/holds`, `/v1/deliveries`).
pub(super) struct HoldFilter {
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
    fn sort(&self, rows: &mut [QueueRow<'_>]) {
        rows.sort_by(|a, b| {
            let key = match self.sort {
                SortBy::HeldAt => std::cmp::Ordering::Equal,
                SortBy::Amount => a.amount.cmp(&b.amount),
                SortBy::Customer => a
                    .customer_key
                    .cmp(&b.customer_key)
                    .then_with(|| a.acc.customer_id.cmp(&b.acc.customer_id)),
                SortBy::Reason => a.reason.cmp(b.reason),
                SortBy::DaysOnHold => a.days_on_hold.cmp(&b.days_on_hold),
            };
            let key = key
                .then_with(|| a.held_at.cmp(&b.held_at))
                .then_with(|| a.id.cmp(b.id));
            if self.descending {
                key.reverse()
            } else {
                key
            }
        });
    }

    /// Sorts and answers one page with the total, each row shown by `json`.
    fn page(&self, mut rows: Vec<QueueRow<'_>>, json: fn(&Account, &str) -> Option<Value>) -> Page {
        self.sort(&mut rows);
        Page {
            total: rows.len(),
            offset: self.offset,
            limit: self.limit,
            items: rows
                .iter()
                .skip(self.offset)
                .take(self.limit)
                .filter_map(|r| r.value(json))
                .collect(),
        }
    }
}

/// `GET /v1/deliveries`: held deliveries, oldest first, filtered and paged like `/v1/holds`.
pub async fn deliveries(
    State(app): State<Arc<AppState>>,
    q: Result<Query<HoldsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let filter = HoldFilter::from_query(&q)?;
    let mut page = app
        .state
        .read(|engines| filter.page(held_deliveries(engines, &filter), held_delivery_json));
    in_flight_first_approvals(&app, "delivery", &mut page.items);
    Ok(Json(page.json()))
}

/// Every held delivery the filter selects (the search also finds its order's id).
pub(super) fn held_deliveries<'a>(
    engines: &[&'a Engine],
    filter: &HoldFilter,
) -> Vec<QueueRow<'a>> {
    held_rows(engines, filter, true, held_delivery_items)
}

fn held_delivery_items(acc: &Account) -> Vec<HeldItem<'_>> {
    acc.held_deliveries()
        .iter()
        .filter_map(|id| {
            let d = acc.deliveries().get(id)?;
            Some((
                id.as_str(),
                d.hold.as_ref()?,
                d.amount,
                Some(d.order_id.as_str()),
            ))
        })
        .collect()
}
