//! The HTTP surface (axum): the credit desk console at `/` (see `console`), `/metrics` for
//! Prometheus, `/healthz` and `/readyz` for probes,
//! `/openapi.json`, and the `/v1` API for people and tools: reads of the engine's state, a
//! what-if check, and commands (release, reject, block, unblock) that are *published* to the
//! commands topic so that the engine applies them in order — the HTTP layer never mutates
//! state itself.
//!
//! Hardening: bearer tokens with roles on every `/v1` route (no open mode), request bodies
//! capped at `http.max_body_bytes`, a per-request timeout, a bound on concurrent requests, and
//! JSON error bodies that never echo a token.

mod api;
pub use api::first_holds_page;
pub mod auth;
mod console;
mod limits;

use crate::config::{Role, Settings};
use crate::metrics::Metrics;
use crate::runtime::{StateHandle, Stats};
use anyhow::{Context as _, Result};
use api::verb;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rdkafka::producer::FutureProducer;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The OpenAPI description of this server, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// What the handlers share.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub state: StateHandle,
    pub metrics: Arc<Metrics>,
    pub stats: Arc<Stats>,
    /// Committed outputs for the console; `None` when the runtime keeps no feed.
    pub feed: Option<Arc<crate::feed::Feed>>,
    tokens: auth::Tokens,
    producer: FutureProducer,
    command_seq: std::sync::atomic::AtomicU64,
    /// First four-eyes approvals this server published that the engine may not have applied
    /// yet: (what, id) -> (approver, when). A second approval by the same person is refused
    /// with 409 before the engine's view shows the first (it would be dead-lettered).
    pub(crate) first_approvals:
        std::sync::Mutex<std::collections::HashMap<(String, String), (String, std::time::Instant)>>,
    /// Commands this server published, by command id: (type, customer, when), for
    /// `GET /v1/commands/{id}` until an engine's outcome is known. Bounded by
    /// [`api::PUBLISHED_KEPT`].
    pub(crate) published: std::sync::Mutex<
        std::collections::HashMap<String, (&'static str, String, std::time::Instant)>,
    >,
    /// Permits for live event streams (`http.max_streams`).
    streams: Arc<tokio::sync::Semaphore>,
    /// Set when the server shuts down: open event streams end, so the graceful shutdown does
    /// not wait for a console left open.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// A JSON error response: `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(json!({"error": self.code, "message": self.message})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"credit-sentinel\""),
            );
        }
        r
    }
}

/// The role a route needs, checked by the auth middleware.
#[derive(Clone, Copy)]
struct Needs(Role);

async fn require(
    State(app): State<Arc<AppState>>,
    axum::Extension(Needs(role)): axum::Extension<Needs>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let principal = match app.tokens.authenticate(header) {
        Ok(p) => p,
        Err(e) => {
            let message = match e {
                auth::AuthError::Missing => "missing Authorization: Bearer <token>",
                auth::AuthError::Malformed => "Authorization must be `Bearer <token>`",
                auth::AuthError::Unknown => "unknown token",
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
                .into_response();
        }
    };
    if principal.role < role {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "{} has role {}; this needs {}",
                principal.name,
                principal.role.as_str(),
                role.as_str()
            ),
        )
        .into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

async fn observe(State(app): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    app.metrics
        .http_requests
        .with_label_values(&[&route, &method, &status])
        .inc();
    app.metrics
        .http_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(%route, %method, %status, "http");
    response
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Batches rolled back in a row after which `/readyz` calls the instance stuck.
const STUCK_AFTER: u64 = 2;

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let failed_in_a_row = app.stats.failed_in_a_row.load(Ordering::Relaxed);
    // Stuck: the same batch rolled back again and again (an output that cannot be written),
    // or a failed producer not replaced yet; one or two rollbacks are a broker's hiccup.
    let replacing = app.stats.replacing_producer.load(Ordering::Relaxed);
    let stuck = failed_in_a_row > STUCK_AFTER || replacing;
    let ready = app.stats.ready.load(Ordering::Relaxed) && !stuck;
    let partitions = app.state.partitions();
    let body = Json(json!({
        "ready": ready,
        "partitions": partitions,
        "stuck": stuck,
        "failed_batches_in_a_row": failed_in_a_row,
        "replacing_producer": replacing,
        "paused": app.stats.paused.load(Ordering::Relaxed),
        "pause_requested": app.stats.pause_requested.load(Ordering::Relaxed),
    }));
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let m = Arc::clone(&app.metrics);
    let state = app.state.clone();
    let text = tokio::task::spawn_blocking(move || {
        state.read(|engines| m.refresh_state(engines.iter().copied()));
        m.render()
    })
    .await
    .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

/// The whole router.
pub fn router(app: Arc<AppState>) -> Router {
    let h = &app.settings.http;
    // The role each route group needs; the Extension is outermost so `require` sees it.
    let guarded = |router: Router<Arc<AppState>>, role: Role| {
        router
            .route_layer(middleware::from_fn_with_state(Arc::clone(&app), require))
            .route_layer(axum::Extension(Needs(role)))
    };
    let reads = guarded(
        Router::new()
            .route("/v1/customers/{id}", get(api::customer))
            .route("/v1/groups/{id}", get(api::group))
            .route("/v1/holds", get(api::holds))
            .route("/v1/holds/export", get(api::holds_export))
            .route("/v1/deliveries", get(api::deliveries))
            .route("/v1/deliveries/export", get(api::deliveries_export))
            .route("/v1/accounts/top", get(api::top))
            .route("/v1/check", post(api::check))
            .route("/v1/commands/{id}", get(api::command))
            .route("/v1/audit", get(api::audit))
            .route("/v1/me", get(console::me))
            .route("/v1/feed", get(console::feed))
            .route("/v1/customers/{id}/history", get(console::history)),
        Role::Viewer,
    );
    // Long-lived: outside the request timeout and the request concurrency bound (it has its
    // own, http.max_streams).
    let streams = guarded(
        Router::new().route("/v1/feed/stream", get(console::stream)),
        Role::Viewer,
    )
    .layer(middleware::from_fn_with_state(Arc::clone(&app), observe));
    let approvals = guarded(
        Router::new()
            .route(
                "/v1/holds/{order_id}/release",
                post(api::hold_command::<verb::Release>),
            )
            .route(
                "/v1/holds/{order_id}/reject",
                post(api::hold_command::<verb::Reject>),
            )
            .route(
                "/v1/deliveries/{delivery_id}/release",
                post(api::delivery_command::<verb::Release>),
            )
            .route(
                "/v1/deliveries/{delivery_id}/reject",
                post(api::delivery_command::<verb::Reject>),
            ),
        Role::Approver,
    );
    let admin = guarded(
        Router::new()
            .route(
                "/v1/customers/{id}/block",
                post(api::customer_command::<verb::Block>),
            )
            .route(
                "/v1/customers/{id}/unblock",
                post(api::customer_command::<verb::Unblock>),
            )
            .route("/v1/admin/pause", post(api::consumption::<verb::Pause>))
            .route("/v1/admin/resume", post(api::consumption::<verb::Resume>)),
        Role::Admin,
    );
    let mut scrape = Router::new().route("/metrics", get(metrics));
    if h.metrics_require_auth {
        scrape = guarded(scrape, Role::Viewer);
    }
    Router::new()
        .route("/", get(console::index))
        .route("/console.js", get(console::script))
        .route("/console.css", get(console::style))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .merge(scrape)
        .merge(reads)
        .merge(approvals)
        .merge(admin)
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(Arc::clone(&app), observe))
        .layer(axum::extract::DefaultBodyLimit::max(h.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(h.request_timeout_ms),
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            h.max_concurrent_requests,
        ))
        .merge(streams)
        .with_state(app)
}

/// The probe listener's routes: liveness and readiness only, no auth, no body.
fn probe_router(app: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(fallback)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(2),
        ))
        .with_state(app)
}

/// Builds the shared state (including the producer commands are published with).
pub fn app_state(
    settings: Arc<Settings>,
    state: StateHandle,
    metrics: Arc<Metrics>,
    stats: Arc<Stats>,
    feed: Option<Arc<crate::feed::Feed>>,
) -> Result<Arc<AppState>> {
    let mut cfg = crate::runtime::producer_config(&settings.kafka);
    cfg.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", "10000");
    let producer: FutureProducer = cfg
        .create()
        .context("cannot create the commands producer")?;
    if settings.http.tokens.is_empty() {
        tracing::warn!(
            "no API tokens configured (http.tokens / http.tokens_file): every /v1 request will be refused"
        );
    }
    Ok(Arc::new(AppState {
        tokens: auth::Tokens::new(&settings.http.tokens),
        streams: Arc::new(tokio::sync::Semaphore::new(settings.http.max_streams)),
        stopping: tokio::sync::watch::Sender::new(false),
        feed,
        settings,
        state,
        metrics,
        stats,
        producer,
        command_seq: std::sync::atomic::AtomicU64::new(0),
        first_approvals: std::sync::Mutex::new(std::collections::HashMap::new()),
        published: std::sync::Mutex::new(std::collections::HashMap::new()),
    }))
}

/// A running HTTP server: its address and the thread serving it.
pub struct Server {
    pub addr: SocketAddr,
    /// The probe listener's address (`http.probe_listen`).
    pub probe_addr: Option<SocketAddr>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Binds `http.listen` (port 0 picks a free port) and serves on a thread of its own until
/// `shutdown` is set.
pub fn spawn(app: Arc<AppState>, shutdown: Arc<AtomicBool>) -> Result<Server> {
    let listen = app.settings.http.listen;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(listen))
        .with_context(|| format!("cannot listen on {listen} (http.listen)"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP API listening");
    let probes = match app.settings.http.probe_listen {
        Some(at) => {
            let l = rt
                .block_on(tokio::net::TcpListener::bind(at))
                .with_context(|| format!("cannot listen on {at} (http.probe_listen)"))?;
            tracing::info!(addr = %l.local_addr()?, "probe listener (/healthz, /readyz)");
            Some(l)
        }
        None => None,
    };
    let probe_addr = probes.as_ref().and_then(|l| l.local_addr().ok());
    let stopping = app.stopping.clone();
    let app_limits = app.settings.http.clone();
    let probe_router = probe_router(Arc::clone(&app));
    let router = router(app);
    let thread = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            rt.block_on(async move {
                let probe_stop = stopping.subscribe();
                let stop = async move {
                    while !shutdown.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    stopping.send_replace(true);
                };
                if let Some(l) = probes {
                    // Its own slots: a probe needs one short request at a time.
                    let l = limits::Limited::new(
                        l,
                        limits::Bounds {
                            max: 32,
                            per_peer: 8,
                            idle: Duration::from_secs(10),
                            request: Duration::from_secs(5),
                        },
                    );
                    let mut probe_stop = probe_stop;
                    tokio::spawn(async move {
                        let stopped = async move {
                            let _ = probe_stop.wait_for(|s| *s).await;
                        };
                        if let Err(e) = axum::serve(l, probe_router)
                            .with_graceful_shutdown(stopped)
                            .await
                        {
                            tracing::error!("probe listener failed: {e}");
                        }
                    });
                }
                let listener = limits::Limited::new(
                    listener,
                    limits::Bounds {
                        max: app_limits.max_connections,
                        per_peer: app_limits.max_connections_per_peer,
                        idle: Duration::from_millis(app_limits.idle_timeout_ms),
                        request: Duration::from_millis(app_limits.request_read_timeout_ms),
                    },
                );
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stop)
                    .await
                {
                    tracing::error!("HTTP server failed: {e}");
                }
            });
        })
        .context("cannot spawn the HTTP thread")?;
    Ok(Server {
        addr,
        probe_addr,
        thread,
    })
}
