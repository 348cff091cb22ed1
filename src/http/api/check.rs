//! The what-if check (`POST /v1/check`): an order or a delivery judged against the current state
//! with `Engine::simulate_order` / `simulate_delivery`, nothing changed.

use super::*;

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
