//! The credit desk console: a single web page for the people who work the hold queue, served
//! by the engine itself (`/`, with its script and style embedded in the binary), and the API
//! it needs beyond the reads and commands of `api`: who the signed-in token is (`/v1/me`),
//! the latest committed decisions and alerts (`/v1/feed`), a live stream of them as
//! server-sent events (`/v1/feed/stream`), and a customer's recent outputs and utilization
//! over time (`/v1/customers/{id}/history`).
//!
//! The page holds the bearer token in the tab's session storage and sends it in the
//! `Authorization` header (the event stream is read with `fetch`, not `EventSource`, for that
//! reason): a token never appears in a URL, so never in an access log.

use super::{ApiError, AppState};
use crate::http::auth::Principal;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = include_str!("../../console/index.html");
const SCRIPT: &str = include_str!("../../console/console.js");
const STYLE: &str = include_str!("../../console/console.css");

/// Same-origin only: no inline script, no third-party anything, not framable.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

/// The signed-in token's name and role (the console shows them and hides what the role
/// cannot do; the API enforces it regardless).
pub async fn me(Extension(p): Extension<Principal>) -> Json<Value> {
    Json(json!({"name": p.name, "role": p.role.as_str()}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    limit: Option<usize>,
}

fn feed_of(app: &AppState) -> Result<&crate::feed::Feed, ApiError> {
    app.feed.as_deref().ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no_feed",
            "this server has no feed of committed outputs",
        )
    })
}

/// The latest committed decisions and alerts, oldest first.
pub async fn feed(
    State(app): State<Arc<AppState>>,
    q: Result<Query<FeedQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > crate::feed::RECENT {
        return Err(ApiError::bad_request(format!(
            "limit must be 1..{}",
            crate::feed::RECENT
        )));
    }
    let items = feed_of(&app)?.recent(limit);
    let items: Vec<&crate::feed::FeedItem> = items.iter().map(|i| &**i).collect();
    Ok(Json(json!({ "items": items })))
}

/// Every decision and alert committed from now on, as server-sent events named `decision`
/// and `alert` whose data is the record; `lagged` if this client fell too far behind (it
/// should then re-read `/v1/feed`).
pub async fn stream(
    State(app): State<Arc<AppState>>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let permit = Arc::clone(&app.streams).try_acquire_owned().map_err(|_| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "too_many_streams",
            format!(
                "{} live streams are open (http.max_streams)",
                app.settings.http.max_streams
            ),
        )
    })?;
    let rx = feed_of(&app)?.subscribe();
    let stop = app.stopping.subscribe();
    // The permit lives as long as the stream: a closed connection frees it.
    let events = futures_util::stream::unfold(
        (rx, stop, permit),
        |(mut rx, mut stop, permit)| async move {
            use tokio::sync::broadcast::error::RecvError;
            let received = tokio::select! {
                r = rx.recv() => r,
                _ = stop.wait_for(|stopping| *stopping) => return None,
            };
            let event = match received {
                Ok(item) => Event::default()
                    .event(item.kind)
                    .id(item.seq.to_string())
                    .data(&*item.record),
                Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), (rx, stop, permit)))
        },
    );
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// A customer's latest decisions and alerts (oldest first) and utilization after each change.
pub async fn history(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    super::api::valid_id("customer id", &id)?;
    super::api::known_customer(&app, &id)?;
    let (items, points) = feed_of(&app)?.customer(&id);
    let items: Vec<&crate::feed::FeedItem> = items.iter().map(|i| &**i).collect();
    Ok(Json(json!({
        "customer_id": id,
        "items": items,
        "utilization": points,
    })))
}
