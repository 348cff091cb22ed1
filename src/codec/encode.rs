//! Encoding validated events back into contract JSON (envelope first, fields in contract
//! order, absent optional fields left out).

use crate::model::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};

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
        EventBody::OrderPlaced(OrderPlaced {
            order_id,
            amount,
            currency,
        }) => f.extend([
            ("order_id", json!(order_id)),
            ("amount", money_value(*amount)),
            ("currency", json!(currency.as_str())),
        ]),
        EventBody::OrderCancelled { order_id } => f.push(("order_id", json!(order_id))),
        EventBody::ShipmentShipped(ShipmentShipped {
            shipment_id,
            order_id,
            amount,
            currency,
            due_at,
            delivery_id,
        }) => f.extend([
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
        EventBody::Settlement(Settlement {
            kind,
            settlement_id,
            amount,
            currency,
            applies_to,
        }) => {
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
        EventBody::CustomerProfile(p) => f.extend(profile_fields(p)),
        EventBody::FxRate(q) => f.extend([
            ("base", json!(q.base.as_str())),
            ("quote", json!(q.quote.as_str())),
            ("rate", json!(q.rate.normalize().to_string())),
        ]),
        EventBody::GroupProfile(g) => f.extend([
            ("group_id", json!(g.group_id)),
            ("credit_limit", money_value(g.credit_limit)),
            ("currency", json!(g.currency.as_str())),
            (
                "tolerance_pct",
                json!(g.tolerance_pct.map(|t| t.normalize().to_string())),
            ),
        ]),
        EventBody::Command(Command {
            order_id,
            delivery_id,
            actor,
            note,
            ..
        }) => f.extend([
            ("order_id", json!(order_id)),
            ("delivery_id", json!(delivery_id)),
            ("actor", json!(actor)),
            ("note", json!(note)),
        ]),
    }
    ordered_object(f)
}

/// A customer profile's fields, in the contract's order.
fn profile_fields(p: &CustomerProfile) -> [(&'static str, Value); 11] {
    [
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
    ]
}
