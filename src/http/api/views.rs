//! Read views of one customer, one group and the top accounts by utilization, built from the
//! published read model: exposure, limits, aging, holds and profile as the API and console show them.

use super::*;

/// Days past due of every open receivable, in the policy's aging buckets.
pub(super) fn aging(engine: &Engine, acc: &crate::engine::account::Account) -> Value {
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
    for r in acc.receivables() {
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

pub(super) fn hold_json(acc: &crate::engine::account::Account, order_id: &str) -> Option<Value> {
    let o = acc.orders().get(order_id)?;
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

pub(super) fn profile_json(p: &CustomerProfile) -> Value {
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

pub(super) fn customer_json(engine: &Engine, acc: &crate::engine::account::Account) -> Value {
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
        "open_orders": acc.orders().values().filter(|o| o.hold.is_none()).count(),
        "open_receivables": acc.receivables().len(),
        "held_orders": acc.holds().iter().filter_map(|id| hold_json(acc, id)).collect::<Vec<_>>(),
        "held_deliveries": acc.held_deliveries().iter().filter_map(|id| held_delivery_json(acc, id)).collect::<Vec<_>>(),
        "cleared_deliveries": acc.deliveries().values().filter(|d| d.state == DeliveryState::Approved).map(|d| json!({
            "delivery_id": d.delivery_id,
            "order_id": d.order_id,
            "amount": format_money(d.amount),
            "currency": d.currency.as_str(),
            "amount_account_currency": format_money(d.amount_account),
            "requested_at": d.requested_at,
            "excess": format_money(d.excess),
        })).collect::<Vec<_>>(),
        "orders": acc.orders().values().map(|o| json!({
            "order_id": o.order_id,
            "amount": format_money(o.amount),
            "currency": o.currency.as_str(),
            "amount_account_currency": format_money(o.amount_account),
            "placed_at": o.placed_at,
            "state": match o.state { OrderState::Open => "open", OrderState::Held => "held" },
            "shipped": format_money(o.shipped),
            "open_remaining": format_money(o.open_remaining),
        })).collect::<Vec<_>>(),
        "receivables": acc.receivables().iter().map(|r| {
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
                    "held_orders": a.holds().len(),
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
                        "held_orders": acc.holds().len(),
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

/// One held delivery as the API shows it.
pub(super) fn held_delivery_json(
    acc: &crate::engine::account::Account,
    delivery_id: &str,
) -> Option<Value> {
    let d = acc.deliveries().get(delivery_id)?;
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
