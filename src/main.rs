//! The `credit-sentinel` command line: `replay` (backtest a policy over a JSON Lines file of
//! events), `generate` (realistic sample traffic) and `check-config` (print the effective
//! settings or the error naming the bad key).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use credit_sentinel::config::{self, Progress};
use credit_sentinel::generator::{self, GeneratorConfig};
use credit_sentinel::model::Timestamp;
use credit_sentinel::{replay, Engine};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

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
    /// Replay a JSON Lines file of input events and write every produced record.
    Replay {
        /// Input events, one JSON object per line ("-" for stdin).
        #[arg(long, short)]
        input: PathBuf,
        /// Where to write records (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// Settings file layered over the embedded defaults.
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
        /// Do not print the summary to stderr.
        #[arg(long)]
        quiet: bool,
    },
    /// Generate realistic sample traffic as JSON Lines.
    Generate {
        #[arg(long, default_value_t = 250)]
        customers: usize,
        #[arg(long, default_value_t = 120)]
        days: u32,
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
        #[arg(long, short, env = "CREDIT_SENTINEL_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
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

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Replay {
            input,
            output,
            config,
            quiet,
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
            let summary = replay::replay(
                &mut engine,
                reader,
                writer,
                settings.max_message_bytes,
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
            let text = toml::to_string_pretty(&settings.raw).context("cannot print settings")?;
            println!("# effective settings (defaults, file, environment): OK\n{text}");
            Ok(())
        }
    }
}
