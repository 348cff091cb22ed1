//! `credit-sentinel generate`: deterministic sample traffic as JSON Lines.

use super::output_writer;
use crate::tools::generator::{self, GeneratorConfig};
use anyhow::{Context, Result};
use credit_sentinel::model::Timestamp;
use std::io::Write;
use std::path::PathBuf;

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Customers in the generated traffic.
    #[arg(long, default_value_t = 250)]
    pub customers: usize,
    /// Days of history to generate.
    #[arg(long, default_value_t = 120)]
    pub days: u32,
    /// Seed of the generator (the same seed gives the same traffic).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// First day of traffic (RFC 3339 date).
    #[arg(long, default_value = "2026-01-05")]
    pub start: String,
    /// Leave out duplicates, reordering and malformed lines.
    #[arg(long)]
    pub clean: bool,
    /// Where to write (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Writes the generated lines to the output (default stdout).
pub fn run(args: Args) -> Result<()> {
    let Args {
        customers,
        days,
        seed,
        start,
        clean,
        output,
    } = args;
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
