//! `credit-sentinel soak`: the embedded run under generated load for a bounded time, a row per
//! interval (throughput, decision latency, memory, accounts, holds) and a Markdown report.

use super::embedded::{embedded, Load};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// An external broker with the topics created (default: the embedded broker), e.g. to
    /// keep the broker's log out of the engine process's memory.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Seconds to run.
    #[arg(long)]
    pub duration: u64,
    /// Events per second of generated traffic.
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Customers in the generated traffic.
    #[arg(long, default_value_t = 5000)]
    pub customers: usize,
    /// Days of generated history (more days, more events before the traffic runs out).
    #[arg(long, default_value_t = 365)]
    pub days: u32,
    /// Partitions of every topic on the embedded broker.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// "exactly_once" or "at_least_once".
    #[arg(long, default_value = "exactly_once")]
    pub delivery: String,
    /// Seconds between report rows.
    #[arg(long, default_value_t = 60)]
    pub interval: u64,
    /// Also write the Markdown report here.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Runs the soak for `--duration` seconds and prints (and writes) its report.
pub fn run(args: Args) -> Result<()> {
    let Args {
        brokers,
        duration,
        rate,
        customers,
        days,
        partitions,
        delivery,
        interval,
        output,
    } = args;
    soak(
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
    )
}

/// `soak`: the embedded run, sampled every `interval`; the report goes to stdout and `output`.
fn soak(load: &Load, interval: u64, output: Option<&PathBuf>) -> Result<()> {
    use crate::tools::soak::{self, Buckets, Sample};
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
                    h + eng.accounts().map(|x| x.holds().len()).sum::<usize>(),
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
