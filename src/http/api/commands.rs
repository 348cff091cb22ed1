//! Manual decisions over HTTP: release and reject of held orders and deliveries, block and
//! unblock, pause and resume; validated here (four-eyes refused early where the API can know),
//! signed and published to the commands topic for the engine to apply in order, their outcome
//! readable at `/v1/commands/{id}`.

use super::*;

/// Publishes one command to the commands topic and answers 202 with its id.
pub(super) async fn publish(
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

/// A held item found in the read model: the customer holding it, its first approver, and
/// whether four-eyes applies to it.
pub(super) type HeldHere = (String, Option<String>, bool);

/// Finds the customer holding `order_id` and what four-eyes says about `actor` releasing it.
pub(super) fn find_hold(app: &AppState, order_id: &str) -> Option<HeldHere> {
    app.state.read(|engines| {
        for e in engines {
            for acc in e.accounts_holding(false) {
                if !acc.holds().iter().any(|h| h == order_id) {
                    continue;
                }
                let o = acc.orders().get(order_id)?;
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

/// `POST /v1/holds/{order_id}/release` or `/reject` (`V`).
pub async fn hold_command<V: verb::OnHeld>(
    State(app): State<Arc<AppState>>,
    Path(order_id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let asked = Asked {
        id: &order_id,
        release: V::RELEASES,
        principal: &principal,
    };
    held_item_command(&app, &HELD_ORDER, asked, &headers, body).await
}

/// `POST /v1/deliveries/{delivery_id}/release` or `/reject` (`V`).
pub async fn delivery_command<V: verb::OnHeld>(
    State(app): State<Arc<AppState>>,
    Path(delivery_id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let asked = Asked {
        id: &delivery_id,
        release: V::RELEASES,
        principal: &principal,
    };
    held_item_command(&app, &HELD_DELIVERY, asked, &headers, body).await
}

/// One of the two queues a person releases from or rejects in: held orders, held deliveries.
struct HeldQueue {
    /// `order` or `delivery`, in messages and in the remembered first approvals.
    what: &'static str,
    /// The command's field naming the item, and its id's name in errors.
    field: &'static str,
    id_name: &'static str,
    release: &'static str,
    reject: &'static str,
    /// The error code when the item is not held here.
    not_held: &'static str,
    /// The customer holding the item, its first approver and whether four-eyes applies.
    find: fn(&AppState, &str) -> Option<HeldHere>,
}

const HELD_ORDER: HeldQueue = HeldQueue {
    what: "order",
    field: "order_id",
    id_name: "order id",
    release: crate::model::types::COMMAND_RELEASE_HOLD,
    reject: crate::model::types::COMMAND_REJECT_HOLD,
    not_held: "order_not_held",
    find: find_hold,
};

const HELD_DELIVERY: HeldQueue = HeldQueue {
    what: "delivery",
    field: "delivery_id",
    id_name: "delivery id",
    release: crate::model::types::COMMAND_RELEASE_DELIVERY,
    reject: crate::model::types::COMMAND_REJECT_DELIVERY,
    not_held: "delivery_not_held",
    find: find_held_delivery,
};

/// A person's release or rejection of one held item.
struct Asked<'a> {
    id: &'a str,
    release: bool,
    principal: &'a Principal,
}

/// Publishes a release or rejection of a held order or delivery: 404 when it is not held here,
/// four-eyes answered (409 for a second approval by the first approver), a first approval
/// remembered until the engine's view shows it.
async fn held_item_command(
    app: &AppState,
    queue: &HeldQueue,
    asked: Asked<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Asked {
        id,
        release,
        principal,
    } = asked;
    let kind = if release { queue.release } else { queue.reject };
    valid_id(queue.id_name, id)?;
    let v = json_body(headers, body)?;
    let note = note(&v)?;
    let (customer_id, first, four_eyes) = (queue.find)(app, id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            queue.not_held,
            format!("{} {id} is not on hold here", queue.what),
        )
    })?;
    let first = first.or_else(|| in_flight_approval(app, queue.what, id));
    let is_first_approval = release && four_eyes && first.is_none();
    let extra = if release {
        four_eyes_answer(four_eyes, first, principal, queue.what, id)?
    } else {
        json!({})
    };
    let target = Some((queue.field, id));
    let published = publish(app, kind, &customer_id, target, principal, &note, extra).await;
    if published.is_ok() && is_first_approval {
        note_first_approval(app, queue.what, id, principal);
    }
    published
}

/// Commands published here that are remembered while no outcome is known (the oldest
/// forgotten first), and for how long.
pub const PUBLISHED_KEPT: usize = 10_000;

pub(super) const PUBLISHED_FOR: Duration = Duration::from_secs(3_600);

pub(super) fn note_published(
    app: &AppState,
    command_id: &str,
    kind: &'static str,
    customer_id: &str,
) {
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

/// How long a first approval published here counts as in flight (the engine applies a command
/// within a batch; its view then shows it).
pub(super) const APPROVAL_IN_FLIGHT: Duration = Duration::from_secs(60);

/// The approver of a first approval this server published for (what, id) that may not be
/// applied yet.
pub(super) fn in_flight_approval(app: &AppState, what: &str, id: &str) -> Option<String> {
    let mut m = app.first_approvals.lock().ok()?;
    m.retain(|_, (_, at)| at.elapsed() < APPROVAL_IN_FLIGHT);
    m.get(&(what.to_string(), id.to_string()))
        .map(|(actor, _)| actor.clone())
}

/// Shows a first four-eyes approval published here that the engine has not applied yet (so a
/// second approver who opens the queue at once sees who asked, as the API's checks do).
pub(super) fn in_flight_first_approvals(app: &AppState, what: &str, items: &mut [Value]) {
    let Ok(mut m) = app.first_approvals.lock() else {
        return;
    };
    m.retain(|_, (_, at)| at.elapsed() < APPROVAL_IN_FLIGHT);
    if m.is_empty() {
        return;
    }
    let id_field = format!("{what}_id");
    for v in items.iter_mut().filter(|v| v["first_approver"].is_null()) {
        let Some(id) = v[&id_field].as_str() else {
            continue;
        };
        if let Some((actor, _)) = m.get(&(what.to_string(), id.to_string())) {
            v["first_approver"] = json!(actor);
        }
    }
}

pub(super) fn note_first_approval(app: &AppState, what: &str, id: &str, principal: &Principal) {
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
pub(super) fn four_eyes_answer(
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
pub(super) fn find_held_delivery(app: &AppState, delivery_id: &str) -> Option<HeldHere> {
    app.state.read(|engines| {
        for e in engines {
            for acc in e.accounts_holding(true) {
                let Some(d) = acc
                    .deliveries()
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

/// `POST /v1/admin/pause` and `/v1/admin/resume` (admin, with a note): this instance stops
/// (or resumes) consuming its partitions. Nothing is decided while paused; the partitions stay
/// assigned and lag goes on being reported. Instance-local: pausing a whole deployment means
/// pausing each instance. Takes effect within one batch window; `/readyz` says when it has.
pub async fn consumption<V: verb::OnConsumption>(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    let pause = V::PAUSES;
    let was = app.stats.pause_requested.swap(pause, Ordering::Relaxed);
    tracing::warn!(
        by = %principal.name,
        %note,
        changed = was != pause,
        "consumption {} by an admin",
        if pause { "pause requested" } else { "resume requested" }
    );
    let body = json!({
        "pause_requested": pause,
        "paused": app.stats.paused.load(Ordering::Relaxed),
        "by": principal.name,
        "note": note,
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `POST /v1/customers/{id}/block` or `/unblock` (`V`).
pub async fn customer_command<V: verb::OnCustomer>(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let kind = V::COMMAND;
    valid_id("customer id", &id)?;
    let v = json_body(&headers, body)?;
    let note = note(&v)?;
    known_customer(&app, &id)?;
    publish(&app, kind, &id, None, &principal, &note, json!({})).await
}
