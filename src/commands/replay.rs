//! `credit-sentinel replay`: the core over a JSON Lines file, every produced record written in
//! production order, the summary to stderr.

use super::output_writer;
use anyhow::{Context, Result};
use credit_sentinel::config::{self, Progress};
use credit_sentinel::{replay, Engine};
use std::fs::File;
use std::io::{self, BufReader, IsTerminal};
use std::path::PathBuf;

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// Input events, one JSON object per line ("-" for stdin).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Where to write records (default: stdout).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub settings: super::SettingsFile,
    /// Do not print the summary to stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Dead-letter (INVALID_FIELD) an event more than this many hours ahead of the latest
    /// event time seen so far, as `run` does against the wall clock (default: no check;
    /// gaps between events are never refused).
    #[arg(long)]
    pub max_future_skew_hours: Option<u32>,
}

/// Replays the file (or stdin) with a progress bar on a terminal.
pub fn run(args: Args) -> Result<()> {
    let Args {
        input,
        output,
        settings,
        quiet,
        max_future_skew_hours,
    } = args;
    let settings = config::load(settings.config.as_deref())?;
    let mut engine = Engine::new(settings.policy.clone());
    let (reader, size): (Box<dyn io::BufRead>, u64) = if input.as_os_str() == "-" {
        (Box::new(BufReader::new(io::stdin().lock())), 0)
    } else {
        let f = File::open(&input).with_context(|| format!("cannot open {}", input.display()))?;
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
