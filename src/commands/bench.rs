//! `credit-sentinel bench`: the end-to-end benchmark (the engine against a null pipeline in both
//! delivery modes, decision latency per commit interval, memory and restore at scale) and its
//! Markdown report.

use crate::tools::bench::{BenchBroker, BenchConfig};
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Customers of the generated throughput input (about 65 events each).
    #[arg(long, default_value_t = 1500)]
    pub customers: usize,
    /// Partitions of every topic of a pass.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Events per second in the latency runs.
    #[arg(long, default_value_t = 20000)]
    pub rate: u64,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Commit intervals (kafka.batch_max_ms) for the latency runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "5,20,100")]
    pub commit_intervals_ms: Vec<u64>,
    /// Only the throughput comparison.
    #[arg(long)]
    pub no_latency: bool,
    /// Accounts for the memory and restore measurement (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    pub memory_accounts: usize,
    /// Accounts for the restore over the embedded broker (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    pub restore_accounts: usize,
    /// Changelog partitions for that restore (the embedded broker keeps 5 MiB per
    /// partition: at least one per 2,000 accounts).
    #[arg(long, default_value_t = 1024)]
    pub restore_partitions: i32,
    /// Write that restore's snapshots in format 1 (JSON, as builds before format 2 wrote
    /// them): the baseline for the restore figure.
    #[arg(long)]
    pub restore_json_v1: bool,
    /// Also write the Markdown report here.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Run the throughput and latency passes on this cluster (bootstrap servers) instead
    /// of the embedded broker; each pass creates topics of its own (`bench-<pid>-<n>-...`).
    #[arg(long)]
    pub brokers: Option<String>,
    /// Replication factor of the topics created with `--brokers`.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,
}

/// Runs the passes the arguments ask for and prints (and writes) the report.
pub fn run(args: Args) -> Result<()> {
    let Args {
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
    } = args;
    bench(
        &BenchConfig {
            customers,
            partitions,
            rate,
            seconds,
            commit_intervals_ms,
            broker: match brokers {
                Some(brokers) => BenchBroker::External {
                    brokers,
                    replication_factor,
                },
                None => BenchBroker::Embedded,
            },
        },
        !no_latency,
        memory_accounts,
        (restore_accounts, restore_partitions, restore_json_v1),
        output.as_ref(),
    )
}

/// `bench`: throughput in both modes, latency per commit interval, then memory and restore at
/// scale; prints the report.
fn bench(
    cfg: &BenchConfig,
    latency: bool,
    memory_accounts: usize,
    restore: (usize, i32, bool),
    output: Option<&PathBuf>,
) -> Result<()> {
    use crate::tools::bench;
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
