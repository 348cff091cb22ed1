//! The audit of manual decisions (`/v1/audit`): who released, rejected, blocked or unblocked what,
//! when, with which note and which first approver, filtered by person and day.

use super::*;

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
