//! `credit-sentinel loadgen`: generated traffic sent to a broker's input topics at a rate.

use super::shutdown_on_signal;
use crate::tools::generator::{self, GeneratorConfig};
use crate::tools::traffic;
use anyhow::Result;
use credit_sentinel::config;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Bootstrap servers of the cluster to send to (its topics must exist).
    #[arg(long, default_value = "localhost:9092")]
    pub brokers: String,
    /// Events per second (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Customers in the generated traffic.
    #[arg(long, default_value_t = 1000)]
    pub customers: usize,
    /// Days of generated history.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// Seed of the generator (the same seed gives the same traffic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub settings: super::SettingsFile,
}

/// Generates the traffic, then sends it until done or a signal.
pub fn run(args: Args) -> Result<()> {
    let Args {
        brokers,
        rate,
        customers,
        days,
        seed,
        settings,
    } = args;
    let mut settings = config::load(settings.config.as_deref())?;
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
