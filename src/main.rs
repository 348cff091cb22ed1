//! The `credit-sentinel` command line: `run` (live enforcement on Kafka), `demo` (an embedded
//! broker with generated traffic and a live view), `replay` (the core over a JSON Lines
//! file), `loadgen` (generated traffic to any broker), `soak` (bounded load on the
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
mod tools;

use anyhow::Result;
use clap::{Parser, Subcommand};
use credit_sentinel::config;
use std::io;

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
    Run(commands::run::Args),
    /// Start an embedded Kafka-protocol broker, the engine, and generated traffic, with a live
    /// view. Any Kafka client can attach to the printed bootstrap address.
    Demo(commands::demo::Args),
    /// Run the engine on the embedded broker under generated load for a bounded time and report
    /// throughput, decision latency percentiles and resident memory per interval.
    Soak(commands::soak::Args),
    /// The end-to-end benchmark on the embedded broker (or `--brokers`): the engine's throughput
    /// against a null pipeline (same input, same records written, no engine) in both delivery modes, and the
    /// decision latency at a fixed order rate (docs/performance.md).
    Bench(commands::bench::Args),
    /// Send generated traffic to a broker (for load tests and trying a cluster).
    Loadgen(commands::loadgen::Args),
    /// Replay a JSON Lines file of input events and write every produced record.
    Replay(commands::replay::Args),
    /// Backtest a candidate policy on a history: which orders change, and what that would have
    /// saved or cost, judged by how each order was paid in the history.
    Backtest(commands::backtest::Args),
    /// Generate realistic sample traffic as JSON Lines.
    Generate(commands::generate::Args),
    /// Validate the settings and print the effective configuration.
    CheckConfig(commands::check_config::Args),
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
        Command::Run(args) => args.config.clone(),
        Command::Loadgen(args) => args.settings.config.clone(),
        Command::Replay(args) => args.settings.config.clone(),
        Command::CheckConfig(args) => args.config.clone(),
        Command::Backtest(args) => args.baseline.clone(),
        Command::Demo(_) | Command::Soak(_) | Command::Bench(_) | Command::Generate(_) => None,
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

/// The command table.
fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Demo(args) => commands::demo::run(args),
        Command::Soak(args) => commands::soak::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Loadgen(args) => commands::loadgen::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Backtest(args) => commands::backtest::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::CheckConfig(args) => commands::check_config::run(args),
    }
}
