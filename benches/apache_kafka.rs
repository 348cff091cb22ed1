//! The end-to-end bench on Apache Kafka next to the embedded broker, in one process: a
//! single-node KRaft broker from the test harness (`tests/common/apache_kafka.rs`), then
//! `credit-sentinel bench`'s throughput (engine against the null pipeline on the same broker)
//! and latency (a fixed event rate, per commit interval) passes on it and on the embedded
//! broker. Prints the two Markdown reports (docs/performance.md quotes them).
//!
//! `cargo bench --bench apache_kafka` (defaults as `credit-sentinel bench`);
//! `cargo bench --bench apache_kafka -- --customers 600 --rate 5000 --seconds 5` for a quick run.

/// The binary's tools (bench, generator, soak, traffic), compiled from its source (what the
/// binary's commands use of them, and their unit tests, are unused here).
#[allow(dead_code, unused_imports)]
#[path = "../src/tools/mod.rs"]
mod tools;

#[path = "../tests/common/apache_kafka.rs"]
mod apache_kafka;

use tools::bench::{self, BenchBroker, BenchConfig};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes `--bench`; nothing else is expected.
    let mut cfg = BenchConfig {
        customers: arg(&args, "--customers", 1500),
        partitions: arg(&args, "--partitions", 4),
        rate: arg(&args, "--rate", 20_000),
        seconds: arg(&args, "--seconds", 10),
        commit_intervals_ms: vec![5, 20, 100],
        broker: BenchBroker::Embedded,
    };
    let started = std::time::Instant::now();
    let cluster = apache_kafka::ApacheKafka::single();
    eprintln!(
        "Apache Kafka {} up in {:.1} s, {:?} MiB resident",
        apache_kafka::kafka_version(),
        started.elapsed().as_secs_f64(),
        cluster.memory_mib()
    );
    cfg.broker = BenchBroker::External {
        brokers: cluster.bootstrap(),
        replication_factor: 1,
    };
    let command = format!(
        "cargo bench --bench apache_kafka -- --customers {} --partitions {} --rate {} --seconds {}",
        cfg.customers, cfg.partitions, cfg.rate, cfg.seconds
    );
    let (t, l) = bench::passes(&cfg, true)?;
    let on_kafka = bench::report(&command, &cfg.broker, &t, &l, None, None);
    eprintln!(
        "broker memory after the passes: {:?} MiB",
        cluster.memory_mib()
    );
    drop(cluster);
    cfg.broker = BenchBroker::Embedded;
    let (t, l) = bench::passes(&cfg, true)?;
    let embedded = bench::report(&command, &cfg.broker, &t, &l, None, None);
    println!(
        "## Apache Kafka {}\n\n{on_kafka}\n## Embedded broker (same run)\n\n{embedded}",
        apache_kafka::kafka_version()
    );
    Ok(())
}
