//! The embedded runs that `demo` and `soak` share: the embedded broker (or an external one),
//! the engine, the HTTP API unless off, and generated traffic, observed every interval until
//! Ctrl-C or the duration.

use super::{shutdown_on_signal, start_http};
use crate::tools::generator::{self, GeneratorConfig};
use crate::tools::traffic;
use anyhow::{Context, Result};
use credit_sentinel::model::Timestamp;
use credit_sentinel::{config, runtime};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the embedded runs (`demo`, `soak`) start: broker, engine, HTTP and generated traffic.
pub(crate) struct Load {
    /// An external broker instead of the embedded one.
    pub(crate) brokers: Option<String>,
    pub(crate) duration: Option<u64>,
    pub(crate) rate: u64,
    pub(crate) customers: usize,
    pub(crate) days: u32,
    pub(crate) partitions: i32,
    pub(crate) delivery: String,
    pub(crate) http: String,
    /// `demo`: simulated seconds per real second for the history, which ends now (then real
    /// time). `None` (`soak`): the history, ending now, is sent at `rate`.
    pub(crate) speed: Option<f64>,
}

/// Days of generated traffic past the present, which `demo` sends in real time.
const LIVE_DAYS: u32 = 30;

/// What an embedded run's observer sees every interval.
pub(crate) struct Embedded {
    pub(crate) started: Instant,
    pub(crate) stats: Arc<runtime::Stats>,
    pub(crate) state: runtime::StateHandle,
    pub(crate) metrics: Arc<credit_sentinel::metrics::Metrics>,
    pub(crate) sent: Arc<AtomicU64>,
    /// The simulated time the traffic has reached (microseconds), with `speed`.
    pub(crate) simulated: Arc<std::sync::atomic::AtomicI64>,
}

/// Starts the embedded broker, the engine (and HTTP unless "off") and generated traffic, calls
/// `observe` every `every` until Ctrl-C or `load.duration`, then stops everything cleanly.
pub(crate) fn embedded(
    load: &Load,
    every: Duration,
    mut observe: impl FnMut(&Embedded),
) -> Result<()> {
    let mut settings = settings(load)?;
    // Dropped (the broker stopped) when the run is over.
    let _cluster = start_broker(load, &mut settings)?;
    let shutdown = shutdown_on_signal();
    let stats = Arc::new(runtime::Stats::default());
    let options = runtime::Options::served();
    let server = start_http(&settings, &options, &stats, &shutdown)?;
    if let Some(s) = &server {
        print_http(s, &settings);
    }
    let state = options.state.clone().unwrap_or_default();
    let metrics = options.metrics.clone().unwrap_or_default();
    let engine = {
        let (s, sh, st) = (settings.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        std::thread::spawn(move || runtime::run(s, sh, st, options))
    };
    let sent = Arc::new(AtomicU64::new(0));
    let (start, lines) = traffic_of(load);
    let simulated = Arc::new(std::sync::atomic::AtomicI64::new(start.0));
    let producer = {
        let (k, sh, n, clock) = (
            settings.kafka.clone(),
            Arc::clone(&shutdown),
            Arc::clone(&sent),
            Arc::clone(&simulated),
        );
        let (speed, rate) = (load.speed, load.rate);
        std::thread::spawn(move || match speed {
            Some(speed) => traffic::send_simulated(&k, &lines, start, speed, &sh, &n, &clock),
            None => traffic::send(&k, &lines, rate, &sh, &n),
        })
    };
    let view = Embedded {
        started: Instant::now(),
        stats: Arc::clone(&stats),
        state,
        metrics,
        sent,
        simulated,
    };
    let mut last_view = Instant::now();
    while !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1).min(every));
        let elapsed = view.started.elapsed();
        if load
            .duration
            .is_some_and(|d| elapsed >= Duration::from_secs(d))
        {
            shutdown.store(true, Ordering::Relaxed);
        }
        if last_view.elapsed() >= every || shutdown.load(Ordering::Relaxed) {
            last_view = Instant::now();
            observe(&view);
        }
    }
    let _ = producer.join();
    if let Some(s) = server {
        let _ = s.thread.join();
    }
    match engine.join() {
        Ok(r) => r?,
        Err(_) => anyhow::bail!("the engine thread panicked"),
    }
    Ok(())
}

/// The embedded defaults with the run's delivery mode, clock and HTTP listener (and, for a
/// demo with no tokens configured, demo credentials, printed at start).
fn settings(load: &Load) -> Result<config::Settings> {
    let mut settings = config::load(None)?;
    settings.kafka.delivery = match load.delivery.as_str() {
        "exactly_once" => config::Delivery::ExactlyOnce,
        "at_least_once" => config::Delivery::AtLeastOnce,
        other => anyhow::bail!("--delivery {other:?}: use exactly_once or at_least_once"),
    };
    if load.speed.is_some() {
        // Simulated time: the clock moves with the events only. A tick would move every
        // partition to the wall clock, months past the history being sent, and expire it.
        settings.kafka.tick_ms = 0;
    }
    let http_listen = load.http.as_str();
    if http_listen == "off" {
        settings.http.enabled = false;
        return Ok(settings);
    }
    settings.http.listen = http_listen
        .parse()
        .with_context(|| format!("--http {http_listen:?} is not an address:port"))?;
    if settings.http.tokens.is_empty() {
        // A demo has demo credentials, printed here; `run` has none unless configured.
        for (name, role) in [
            ("demo-viewer", config::Role::Viewer),
            ("demo-approver", config::Role::Approver),
            ("demo-admin", config::Role::Admin),
        ] {
            settings.http.tokens.push(config::Token {
                name: name.into(),
                role,
                secret: format!("{name}-token-not-a-secret"),
            });
        }
    }
    Ok(settings)
}

/// The embedded broker with every topic created, unless an external one is named (its topics
/// must exist); `settings` point at it.
fn start_broker(
    load: &Load,
    settings: &mut config::Settings,
) -> Result<Option<rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>>>
{
    if let Some(brokers) = &load.brokers {
        settings.kafka.brokers = brokers.clone();
        println!("external broker: {brokers}");
        return Ok(None);
    }
    let t = &settings.kafka.topics;
    let cluster =
        rdkafka::mocking::MockCluster::new(1).context("cannot start the embedded broker")?;
    for topic in t.all() {
        cluster
            .create_topic(topic, load.partitions, 1)
            .with_context(|| format!("cannot create {topic}"))?;
    }
    println!(
        "embedded broker: {}  (attach any Kafka client, e.g. kcat -b {} -C -t {})",
        cluster.bootstrap_servers(),
        cluster.bootstrap_servers(),
        t.decisions
    );
    settings.kafka.brokers = cluster.bootstrap_servers();
    Ok(Some(cluster))
}

/// Where the console and the API listen, and the demo tokens.
fn print_http(server: &credit_sentinel::http::Server, settings: &config::Settings) {
    println!(
        "Credit desk console: http://{}/  (sign in with a token below)",
        server.addr
    );
    println!(
        "HTTP API: http://{}  (metrics at /metrics, spec at /openapi.json)",
        server.addr
    );
    for t in &settings.http.tokens {
        if t.secret.ends_with("-token-not-a-secret") {
            println!("  demo token ({}): {}", t.role.as_str(), t.secret);
        }
    }
}

/// The generated traffic and its first day. The history ends today: every event is in the past
/// when it is sent, as the engine's wall-clock guard (limits.future_skew_max_hours) requires;
/// a demo goes on for `LIVE_DAYS` in real time.
fn traffic_of(load: &Load) -> (Timestamp, Vec<String>) {
    let now = Timestamp::now();
    let today = now.0 - now.0.rem_euclid(credit_sentinel::model::DAY_US);
    let start = Timestamp(today).plus_days(-i64::from(load.days));
    let lines = generator::generate(&GeneratorConfig {
        customers: load.customers,
        days: load.days + if load.speed.is_some() { LIVE_DAYS } else { 0 },
        seed: 7,
        start,
        faults: true,
    });
    (start, lines)
}
