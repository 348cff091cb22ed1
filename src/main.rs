//! The `credit-sentinel` command line: `run` (live enforcement on Kafka), `demo` (an embedded
//! broker with generated traffic and a live view), `replay` (backtest a policy over a JSON
//! Lines file), `loadgen` (generated traffic to any broker), `soak` (bounded load on the
//! embedded broker with a throughput, latency and memory report), `bench` (engine against a
//! null pipeline, decision latency, memory and restore at scale, on the embedded broker),
//! `backtest` (a candidate policy against a baseline on a history), `generate` (sample traffic
//! to a file) and `check-config` (the effective settings, or the
//! error naming the bad key).

/// mimalloc instead of the system allocator: the engine and its restore allocate many small
/// strings and collections (docs/performance.md has the before and after).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use credit_sentinel::config::{self, Progress};
use credit_sentinel::generator::{self, GeneratorConfig};
use credit_sentinel::model::Timestamp;
use credit_sentinel::{http, replay, runtime, traffic, Engine};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "credit-sentinel",
    version,
    about = "Streaming credit-limit enforcement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Enforce credit limits live: consume the input topics, produce decisions and alerts.
    Run {
        /// Settings file (TOML) layered over the embedded defaults; environment variables
        /// CREDIT_SENTINEL__SECTION__KEY override both.
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Start an embedded Kafka-protocol broker, the engine, and generated traffic, with a live
    /// view. Any Kafka client can attach to the printed bootstrap address.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Simulated days per real minute while the history (which ends today) is sent; then
        /// the traffic goes on in real time until stopped. The default, 20, is one day every
        /// 3 s: a 30-day hold expires after 90 s.
        #[arg(long, default_value_t = 20.0)]
        speed: f64,
        /// Days of history before today.
        #[arg(long, default_value_t = 120)]
        days: u32,
        /// Customers in the generated traffic.
        #[arg(long, default_value_t = 200)]
        customers: usize,
        /// Partitions of every topic on the embedded broker.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// "exactly_once" or "at_least_once".
        #[arg(long, default_value = "exactly_once")]
        delivery: String,
        /// Where the HTTP API and /metrics listen ("off" to disable).
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
    },
    /// Run the engine on the embedded broker under generated load for a bounded time and report
    /// throughput, decision latency percentiles and resident memory per interval.
    Soak {
        /// An external broker with the topics created (default: the embedded broker), e.g. to
        /// keep the broker's log out of the engine process's memory.
        #[arg(long)]
        brokers: Option<String>,
        /// Seconds to run.
        #[arg(long)]
        duration: u64,
        /// Events per second of generated traffic.
        #[arg(long, default_value_t = 500)]
        rate: u64,
        /// Customers in the generated traffic.
        #[arg(long, default_value_t = 5000)]
        customers: usize,
        /// Days of generated history (more days, more events before the traffic runs out).
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Partitions of every topic on the embedded broker.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// "exactly_once" or "at_least_once".
        #[arg(long, default_value = "exactly_once")]
        delivery: String,
        /// Seconds between report rows.
        #[arg(long, default_value_t = 60)]
        interval: u64,
        /// Also write the Markdown report here.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// The end-to-end benchmark on the embedded broker (or `--brokers`): the engine's throughput
    /// against a null pipeline (same input, same records written, no engine) in both delivery modes, and the
    /// decision latency at a fixed order rate (docs/performance.md).
    Bench {
        /// Customers of the generated throughput input (about 65 events each).
        #[arg(long, default_value_t = 1500)]
        customers: usize,
        /// Partitions of every topic of a pass.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Events per second in the latency runs.
        #[arg(long, default_value_t = 20000)]
        rate: u64,
        /// Seconds of each latency run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Commit intervals (kafka.batch_max_ms) for the latency runs, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "5,20,100")]
        commit_intervals_ms: Vec<u64>,
        /// Only the throughput comparison.
        #[arg(long)]
        no_latency: bool,
        /// Accounts for the memory and restore measurement (0: skip it).
        #[arg(long, default_value_t = 1_000_000)]
        memory_accounts: usize,
        /// Accounts for the restore over the embedded broker (0: skip it).
        #[arg(long, default_value_t = 1_000_000)]
        restore_accounts: usize,
        /// Changelog partitions for that restore (the embedded broker keeps 5 MiB per
        /// partition: at least one per 2,000 accounts).
        #[arg(long, default_value_t = 1024)]
        restore_partitions: i32,
        /// Write that restore's snapshots in format 1 (JSON, as builds before format 2 wrote
        /// them): the baseline for the restore figure.
        #[arg(long)]
        restore_json_v1: bool,
        /// Also write the Markdown report here.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Run the throughput and latency passes on this cluster (bootstrap servers) instead
        /// of the embedded broker; each pass creates topics of its own (`bench-<pid>-<n>-...`).
        #[arg(long)]
        brokers: Option<String>,
        /// Replication factor of the topics created with `--brokers`.
        #[arg(long, default_value_t = 1)]
        replication_factor: i32,
    },
    /// Send generated traffic to a broker (for load tests and trying a cluster).
    Loadgen {
        /// Bootstrap servers of the cluster to send to (its topics must exist).
        #[arg(long, default_value = "localhost:9092")]
        brokers: String,
        /// Events per second (0: as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Customers in the generated traffic.
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        /// Days of generated history.
        #[arg(long, default_value_t = 120)]
        days: u32,
        /// Seed of the generator (the same seed gives the same traffic).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Settings file (TOML) layered over the embedded defaults; environment variables
        /// CREDIT_SENTINEL__SECTION__KEY override both.
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Replay a JSON Lines file of input events and write every produced record.
    Replay {
        /// Input events, one JSON object per line ("-" for stdin).
        #[arg(long, short)]
        input: PathBuf,
        /// Where to write records (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Settings file (TOML) layered over the embedded defaults; environment variables
        /// CREDIT_SENTINEL__SECTION__KEY override both.
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
        /// Do not print the summary to stderr.
        #[arg(long)]
        quiet: bool,
        /// Dead-letter (INVALID_FIELD) an event more than this many hours ahead of the latest
        /// event time seen so far, as `run` does against the wall clock (default: no check;
        /// gaps between events are never refused).
        #[arg(long)]
        max_future_skew_hours: Option<u32>,
    },
    /// Backtest a candidate policy on a history: which orders change, and what that would have
    /// saved or cost, judged by how each order was paid in the history.
    Backtest(commands::backtest::Args),
    /// Generate realistic sample traffic as JSON Lines.
    Generate {
        /// Customers in the generated traffic.
        #[arg(long, default_value_t = 250)]
        customers: usize,
        /// Days of history to generate.
        #[arg(long, default_value_t = 120)]
        days: u32,
        /// Seed of the generator (the same seed gives the same traffic).
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day of traffic (RFC 3339 date).
        #[arg(long, default_value = "2026-01-05")]
        start: String,
        /// Leave out duplicates, reordering and malformed lines.
        #[arg(long)]
        clean: bool,
        /// Where to write (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Validate the settings and print the effective configuration.
    CheckConfig {
        /// Settings file (TOML) layered over the embedded defaults; environment variables
        /// CREDIT_SENTINEL__SECTION__KEY override both.
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// Logs to stderr in the configured format (`log.format`), filtered by `CREDIT_SENTINEL_LOG`
/// or else `log.level`, and exports decision-path spans over OTLP when `tracing.otlp_endpoint`
/// is set (the guard flushes them at exit). A settings error is reported by the command
/// itself; logging then falls back to human-readable `info`, without traces.
fn init_logging(cli: &Cli) -> Option<credit_sentinel::traces::Guard> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let file = match &cli.command {
        Command::Run { config }
        | Command::Loadgen { config, .. }
        | Command::Replay { config, .. }
        | Command::CheckConfig { config } => config.clone(),
        Command::Backtest(args) => args.baseline.clone(),
        Command::Demo { .. }
        | Command::Soak { .. }
        | Command::Bench { .. }
        | Command::Generate { .. } => None,
    };
    let settings = config::load(file.as_deref()).ok();
    let (format, level) = match &settings {
        Some(s) => (s.log_format, s.log_level.clone()),
        None => (config::LogFormat::Human, "info".to_string()),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDIT_SENTINEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(io::stderr)
        // Colour codes only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(io::IsTerminal::is_terminal(&io::stderr()));
    let fmt = match format {
        config::LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
        config::LogFormat::Human => fmt.with_filter(filter).boxed(),
    };
    let traces = settings.as_ref().and_then(|s| {
        credit_sentinel::traces::layer(&s.tracing, s.kafka.delivery.as_str())
            .map_err(|e| eprintln!("error: traces off: {e:#}"))
            .ok()
            .flatten()
    });
    match traces {
        Some((layer, guard)) => {
            tracing_subscriber::registry().with(fmt).with(layer).init();
            Some(guard)
        }
        None => {
            tracing_subscriber::registry().with(fmt).init();
            None
        }
    }
}

fn main() {
    let cli = Cli::parse();
    let traces = init_logging(&cli);
    let result = run(cli);
    // The last spans are exported before the process ends (also on an error).
    drop(traces);
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}

fn output_writer(path: Option<&PathBuf>) -> Result<Box<dyn Write>> {
    Ok(match path {
        Some(p) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

/// Starts the HTTP server when `http.enabled`, sharing the runtime's state and metrics.
fn start_http(
    settings: &config::Settings,
    options: &runtime::Options,
    stats: &Arc<runtime::Stats>,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<http::Server>> {
    if !settings.http.enabled {
        return Ok(None);
    }
    let app = http::app_state(
        Arc::new(settings.clone()),
        options.state.clone().unwrap_or_default(),
        options.metrics.clone().unwrap_or_default(),
        Arc::clone(stats),
        options.feed.clone(),
    )?;
    Ok(Some(http::spawn(app, Arc::clone(shutdown))?))
}

/// A flag set by SIGINT or SIGTERM.
fn shutdown_on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = Arc::clone(&flag);
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            #[cfg(unix)]
            {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(_) => return,
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            {
                let _ = tokio::signal::ctrl_c().await;
            }
            tracing::info!("signal received: finishing the open batch");
            f.store(true, Ordering::Relaxed);
        });
    });
    flag
}

/// Held orders and the five highest utilizations, for the demo's live view (read once a
/// second through the state handle, off the decision path's per-batch work).
fn live_holds_and_top(engines: &[&Engine]) -> (usize, Vec<String>, Option<String>) {
    let mut held = 0;
    let mut top = Vec::new();
    // The earliest-held order by id, for the demo to offer as one to release.
    let mut example: Option<String> = None;
    for engine in engines {
        for a in engine.accounts() {
            held += a.holds.len();
            if let Some(first) = a.holds.first() {
                if example.as_ref().is_none_or(|e| first < e) {
                    example = Some(first.clone());
                }
            }
            let Some(limit) = engine.terms(&a.customer_id).map(|t| t.limit_effective) else {
                continue;
            };
            if let Some(u) =
                credit_sentinel::engine::warnings::utilization(a.exposure_total(), limit)
            {
                top.push((u, a.customer_id.clone()));
            }
        }
    }
    top.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    let top = top
        .into_iter()
        .take(5)
        .map(|(u, c)| format!("{c} {}", credit_sentinel::model::format_ratio(u)))
        .collect();
    (held, top, example)
}

/// What the embedded runs (`demo`, `soak`) start: broker, engine, HTTP and generated traffic.
struct Load {
    /// An external broker instead of the embedded one.
    brokers: Option<String>,
    duration: Option<u64>,
    rate: u64,
    customers: usize,
    days: u32,
    partitions: i32,
    delivery: String,
    http: String,
    /// `demo`: simulated seconds per real second for the history, which ends now (then real
    /// time). `None` (`soak`): the history, ending now, is sent at `rate`.
    speed: Option<f64>,
}

/// Days of generated traffic past the present, which `demo` sends in real time.
const LIVE_DAYS: u32 = 30;

/// What an embedded run's observer sees every interval.
struct Embedded {
    started: Instant,
    stats: Arc<runtime::Stats>,
    state: runtime::StateHandle,
    metrics: Arc<credit_sentinel::metrics::Metrics>,
    sent: Arc<AtomicU64>,
    /// The simulated time the traffic has reached (microseconds), with `speed`.
    simulated: Arc<std::sync::atomic::AtomicI64>,
}

/// Starts the embedded broker, the engine (and HTTP unless "off") and generated traffic, calls
/// `observe` every `every` until Ctrl-C or `load.duration`, then stops everything cleanly.
fn embedded(load: &Load, every: Duration, mut observe: impl FnMut(&Embedded)) -> Result<()> {
    use rdkafka::mocking::MockCluster;
    let (rate, customers, partitions) = (load.rate, load.customers, load.partitions);
    let (delivery, http_listen) = (load.delivery.as_str(), load.http.as_str());
    let mut settings = config::load(None)?;
    settings.kafka.delivery = match delivery {
        "exactly_once" => config::Delivery::ExactlyOnce,
        "at_least_once" => config::Delivery::AtLeastOnce,
        other => anyhow::bail!("--delivery {other:?}: use exactly_once or at_least_once"),
    };
    if load.speed.is_some() {
        // Simulated time: the clock moves with the events only. A tick would move every
        // partition to the wall clock, months past the history being sent, and expire it.
        settings.kafka.tick_ms = 0;
    }
    let t = settings.kafka.topics.clone();
    // The embedded broker, unless an external one is named (its topics must exist).
    let _cluster = match &load.brokers {
        Some(brokers) => {
            settings.kafka.brokers = brokers.clone();
            println!("external broker: {brokers}");
            None
        }
        None => {
            let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
            settings.kafka.brokers = cluster.bootstrap_servers();
            for topic in t.all() {
                cluster
                    .create_topic(topic, partitions, 1)
                    .with_context(|| format!("cannot create {topic}"))?;
            }
            println!(
                "embedded broker: {}  (attach any Kafka client, e.g. kcat -b {} -C -t {})",
                cluster.bootstrap_servers(),
                cluster.bootstrap_servers(),
                t.decisions
            );
            Some(cluster)
        }
    };
    let shutdown = shutdown_on_signal();
    let stats = Arc::new(runtime::Stats::default());
    let options = runtime::Options::served();
    if http_listen == "off" {
        settings.http.enabled = false;
    } else {
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
    }
    let server = start_http(&settings, &options, &stats, &shutdown)?;
    if let Some(s) = &server {
        println!(
            "Credit desk console: http://{}/  (sign in with a token below)",
            s.addr
        );
        println!(
            "HTTP API: http://{}  (metrics at /metrics, spec at /openapi.json)",
            s.addr
        );
        for t in &settings.http.tokens {
            if t.secret.ends_with("-token-not-a-secret") {
                println!("  demo token ({}): {}", t.role.as_str(), t.secret);
            }
        }
    }
    let state = options.state.clone().unwrap_or_default();
    let metrics = options.metrics.clone().unwrap_or_default();
    let engine = {
        let (s, sh, st) = (settings.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        std::thread::spawn(move || runtime::run(s, sh, st, options))
    };
    let sent = Arc::new(AtomicU64::new(0));
    let now = Timestamp::now();
    // The history ends today: every event is in the past when it is sent, as the engine's
    // wall-clock guard (limits.future_skew_max_hours) requires.
    let today = now.0 - now.0.rem_euclid(credit_sentinel::model::DAY_US);
    let start = Timestamp(today).plus_days(-i64::from(load.days));
    let lines = generator::generate(&GeneratorConfig {
        customers,
        days: load.days + if load.speed.is_some() { LIVE_DAYS } else { 0 },
        seed: 7,
        start,
        faults: true,
    });
    let simulated = Arc::new(std::sync::atomic::AtomicI64::new(start.0));
    let producer = {
        let (k, sh, n, clock) = (
            settings.kafka.clone(),
            Arc::clone(&shutdown),
            Arc::clone(&sent),
            Arc::clone(&simulated),
        );
        let speed = load.speed;
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

/// `demo`: the embedded run with a live terminal view once a second.
fn demo(load: &Load) -> Result<()> {
    let mut last = (Instant::now(), 0u64);
    let speed = load.speed.unwrap_or(1.0);
    embedded(load, Duration::from_secs(1), |e| {
        let (stats, sent, started) = (&e.stats, &e.sent, e.started);
        let events = stats.events.load(Ordering::Relaxed);
        let rate_now = (events - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001);
        last = (Instant::now(), events);
        let d: Vec<String> = credit_sentinel::model::DecisionStatus::ALL
            .iter()
            .zip(&stats.decisions)
            .map(|(s, n)| format!("{} {}", s.as_str(), n.load(Ordering::Relaxed)))
            .collect();
        let (held, top, example) = e.state.read(live_holds_and_top);
        let simulated = Timestamp(e.simulated.load(Ordering::Relaxed));
        let pace = if Timestamp::now().0 - simulated.0 < 60_000_000 {
            "live, real time".to_string()
        } else {
            format!(
                "history, {:.0} simulated days a minute",
                speed * 60.0 / 86_400.0
            )
        };
        let mut view = format!(
            "\n[{:>4}s] {} ({pace}) | sent {} | consumed {} ({:.0}/s) | batches {} | {} | holds waiting {} | alerts {} | dead-letters {}\n",
            started.elapsed().as_secs(),
            simulated.to_date(),
            sent.load(Ordering::Relaxed),
            events,
            rate_now,
            stats.batches.load(Ordering::Relaxed),
            d.join(", "),
            held,
            stats.alerts.load(Ordering::Relaxed),
            stats.dead_letters.load(Ordering::Relaxed),
        );
        view.push_str(&format!("  top utilization: {}\n", top.join(", ")));
        if let Some(order) = example {
            view.push_str(&format!(
                "  a held order to try: {order}  (POST /v1/holds/{order}/release with the approver token; README)\n"
            ));
        }
        if let Ok(recent) = stats.recent_alerts.lock() {
            for a in recent.iter().rev().take(4) {
                view.push_str(&format!("  alert: {a}\n"));
            }
        }
        print!("{view}");
        io::stdout().flush().ok();
    })?;
    println!("demo stopped");
    Ok(())
}

/// `soak`: the embedded run, sampled every `interval`; the report goes to stdout and `output`.
fn soak(load: &Load, interval: u64, output: Option<&PathBuf>) -> Result<()> {
    use credit_sentinel::soak::{self, Buckets, Sample};
    let mut samples: Vec<Sample> = Vec::new();
    let mut last = (Instant::now(), 0u64, Buckets::default());
    println!(
        "soak: {} s at {} events/s, {} customers; a row every {interval} s",
        load.duration.unwrap_or(0),
        load.rate,
        load.customers
    );
    println!("{}", soak::HEADER);
    embedded(load, Duration::from_secs(interval.max(1)), |e| {
        let events = e.stats.events.load(Ordering::Relaxed);
        let buckets = Buckets::of(&e.metrics.decision_latency);
        let (accounts, held) = e.state.read(|engines| {
            engines.iter().fold((0, 0), |(a, h), eng| {
                (
                    a + eng.accounts().count(),
                    h + eng.accounts().map(|x| x.holds.len()).sum::<usize>(),
                )
            })
        });
        let sample = Sample {
            elapsed: e.started.elapsed(),
            events_per_s: (events - last.1) as f64 / last.0.elapsed().as_secs_f64().max(0.001),
            events_total: events,
            decisions_total: e
                .stats
                .decisions
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum(),
            p50: buckets.quantile_since(&last.2, 0.5),
            p99: buckets.quantile_since(&last.2, 0.99),
            max_bucket: buckets.quantile_since(&last.2, 1.0),
            rss_bytes: soak::resident_bytes(),
            accounts,
            held,
        };
        println!("{}", soak::row(&sample));
        samples.push(sample);
        last = (Instant::now(), events, buckets);
    })?;
    let command = format!(
        "credit-sentinel soak {}--duration {} --rate {} --customers {} --days {} --partitions {} --delivery {} --interval {interval}",
        load.brokers.as_ref().map_or(String::new(), |b| format!("--brokers {b} ")),
        load.duration.unwrap_or(0),
        load.rate,
        load.customers,
        load.days,
        load.partitions,
        load.delivery
    );
    let broker = load.brokers.as_ref().map_or_else(
        || "Embedded broker (librdkafka mock cluster, in this process)".to_string(),
        |b| format!("External broker {b} (another process)"),
    );
    let settings = format!(
        "{broker}, {} partitions, {}; generated traffic (faults included) sent at {} events/s; {} cores. Resident memory is the whole process: the engine, the traffic (generated up front and held in memory) and, with the embedded broker, the broker's log.",
        load.partitions,
        load.delivery,
        load.rate,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let text = soak::report(&command, &settings, &samples);
    println!("\n{text}");
    if let Some(path) = output {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// `bench`: throughput in both modes, latency per commit interval, then memory and restore at
/// scale; prints the report.
fn bench(
    cfg: &credit_sentinel::bench::BenchConfig,
    latency: bool,
    memory_accounts: usize,
    restore: (usize, i32, bool),
    output: Option<&PathBuf>,
) -> Result<()> {
    use credit_sentinel::bench;
    let (t, l) = bench::passes(cfg, latency)?;
    let memory = if memory_accounts > 0 {
        let m = bench::memory(memory_accounts)?;
        eprintln!(
            "memory: {:.0} bytes per account, restore {:.2} s",
            m.bytes_per_account, m.restore_s
        );
        Some(m)
    } else {
        None
    };
    let (restore_accounts, restore_partitions, restore_json_v1) = restore;
    let restored = if restore_accounts > 0 {
        let r = bench::restore_over_kafka(restore_accounts, restore_partitions, restore_json_v1)?;
        eprintln!(
            "restore over the embedded broker: {} accounts in {:.2} s",
            r.accounts, r.restore_s
        );
        Some(r)
    } else {
        None
    };
    let command = format!(
        "credit-sentinel bench --customers {} --partitions {} --rate {} --seconds {} --commit-intervals-ms {} --memory-accounts {memory_accounts} --restore-accounts {restore_accounts} --restore-partitions {restore_partitions}{}{}",
        cfg.customers,
        cfg.partitions,
        cfg.rate,
        cfg.seconds,
        cfg.commit_intervals_ms.iter().map(u64::to_string).collect::<Vec<_>>().join(","),
        if latency { "" } else { " --no-latency" },
        if restore_json_v1 { " --restore-json-v1" } else { "" }
    );
    let command = match &cfg.broker {
        bench::BenchBroker::Embedded => command,
        bench::BenchBroker::External {
            brokers,
            replication_factor,
        } => format!("{command} --brokers {brokers} --replication-factor {replication_factor}"),
    };
    let text = bench::report(
        &command,
        &cfg.broker,
        &t,
        &l,
        memory.as_ref(),
        restored.as_ref(),
    );
    println!("{text}");
    if let Some(path) = output {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Bench {
            customers,
            partitions,
            rate,
            seconds,
            commit_intervals_ms,
            no_latency,
            memory_accounts,
            restore_accounts,
            restore_partitions,
            restore_json_v1,
            output,
            brokers,
            replication_factor,
        } => bench(
            &credit_sentinel::bench::BenchConfig {
                customers,
                partitions,
                rate,
                seconds,
                commit_intervals_ms,
                broker: match brokers {
                    Some(brokers) => credit_sentinel::bench::BenchBroker::External {
                        brokers,
                        replication_factor,
                    },
                    None => credit_sentinel::bench::BenchBroker::Embedded,
                },
            },
            !no_latency,
            memory_accounts,
            (restore_accounts, restore_partitions, restore_json_v1),
            output.as_ref(),
        ),
        Command::Run { config } => {
            let settings = config::load(config.as_deref())?;
            let shutdown = shutdown_on_signal();
            let stats = Arc::new(runtime::Stats::default());
            let options = runtime::Options::served();
            let server = start_http(&settings, &options, &stats, &shutdown)?;
            let result = runtime::run(settings, Arc::clone(&shutdown), stats, options);
            shutdown.store(true, Ordering::Relaxed);
            if let Some(s) = server {
                let _ = s.thread.join();
            }
            result
        }
        Command::Demo {
            duration,
            speed,
            days,
            customers,
            partitions,
            delivery,
            http,
        } => {
            anyhow::ensure!(
                speed > 0.0 && speed.is_finite(),
                "--speed must be a positive number of simulated days per minute"
            );
            demo(&Load {
                brokers: None,
                duration,
                rate: 0,
                customers,
                days,
                partitions,
                delivery,
                http,
                speed: Some(speed * 86_400.0 / 60.0),
            })
        }
        Command::Soak {
            brokers,
            duration,
            rate,
            customers,
            days,
            partitions,
            delivery,
            interval,
            output,
        } => soak(
            &Load {
                brokers,
                duration: Some(duration),
                rate,
                customers,
                days,
                partitions,
                delivery,
                http: "off".into(),
                speed: None,
            },
            interval,
            output.as_ref(),
        ),
        Command::Loadgen {
            brokers,
            rate,
            customers,
            days,
            seed,
            config,
        } => {
            let mut settings = config::load(config.as_deref())?;
            settings.kafka.brokers = brokers;
            let lines = generator::generate(&GeneratorConfig {
                customers,
                days,
                seed,
                ..GeneratorConfig::default()
            });
            let shutdown = shutdown_on_signal();
            let sent = AtomicU64::new(0);
            let started = Instant::now();
            let n = traffic::send(&settings.kafka, &lines, rate, &shutdown, &sent)?;
            eprintln!(
                "loadgen: sent {n} events in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        Command::Replay {
            input,
            output,
            config,
            quiet,
            max_future_skew_hours,
        } => {
            let settings = config::load(config.as_deref())?;
            let mut engine = Engine::new(settings.policy.clone());
            let (reader, size): (Box<dyn io::BufRead>, u64) = if input.as_os_str() == "-" {
                (Box::new(BufReader::new(io::stdin().lock())), 0)
            } else {
                let f = File::open(&input)
                    .with_context(|| format!("cannot open {}", input.display()))?;
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                (Box::new(BufReader::with_capacity(1 << 16, f)), size)
            };
            let show = match settings.progress {
                Progress::Always => true,
                Progress::Never => false,
                Progress::Auto => io::stderr().is_terminal() && size > 0,
            };
            let bar = show.then(|| {
                let bar = indicatif::ProgressBar::new(size);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar
            });
            let writer = output_writer(output.as_ref())?;
            let summary = replay::replay_guarded(
                &mut engine,
                reader,
                writer,
                settings.max_message_bytes,
                max_future_skew_hours.map(|h| i64::from(h) * 3_600_000_000),
                |n| {
                    if let Some(b) = &bar {
                        b.set_position(n);
                    }
                },
            )
            .context("replay failed while reading input or writing output")?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            if !quiet {
                eprint!("{}", summary.render(&engine));
            }
            Ok(())
        }
        Command::Backtest(args) => commands::backtest::run(args),
        Command::Generate {
            customers,
            days,
            seed,
            start,
            clean,
            output,
        } => {
            let start = Timestamp::parse_date_or_timestamp(&start)
                .with_context(|| format!("--start {start:?} is not an RFC 3339 date"))?;
            let cfg = GeneratorConfig {
                customers,
                days,
                seed,
                start,
                faults: !clean,
            };
            let mut w = output_writer(output.as_ref())?;
            for line in generator::generate(&cfg) {
                w.write_all(line.as_bytes())?;
                w.write_all(b"\n")?;
            }
            w.flush()?;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let settings = config::load(config.as_deref())?;
            let mut raw = settings.raw.clone();
            for (k, v) in raw.kafka.properties.iter_mut() {
                if runtime::is_secret(k) {
                    *v = "<redacted>".into();
                }
            }
            for t in raw.http.tokens.values_mut() {
                t.token = "<redacted>".into();
            }
            let text = toml::to_string_pretty(&raw).context("cannot print settings")?;
            println!("# effective settings (defaults, file, environment): OK\n{text}");
            Ok(())
        }
    }
}
