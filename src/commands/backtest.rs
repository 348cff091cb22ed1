//! `credit-sentinel backtest`: the policies from the command line (baseline, candidate, the
//! values of a swept setting), the replay, and the three forms of the report.

use anyhow::{bail, Context, Result};
use credit_sentinel::backtest::{self, html, report, Options, PolicyRun};
use credit_sentinel::config;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

/// The command's arguments.
#[derive(clap::Args)]
pub struct Args {
    /// The history: input events as JSON Lines, all topics interleaved ("-" for stdin).
    #[arg(long, short)]
    pub input: PathBuf,
    /// The candidate: a settings file layered over the baseline's (so it need only hold what
    /// changes).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// The baseline's settings file (default: the current configuration, CREDIT_SENTINEL_CONFIG,
    /// else the embedded defaults).
    #[arg(long, env = "CREDIT_SENTINEL_CONFIG")]
    pub baseline: Option<PathBuf>,
    /// Write the HTML report (one self-contained file) here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// One candidate per value of one setting, over the candidate (or the baseline):
    /// KEY=V1,V2,... e.g. policy.grades.C.tolerance_pct=0,5,10.
    #[arg(long)]
    pub sweep: Option<String>,
    /// An order paid this many days late or more counts as bad.
    #[arg(long, default_value_t = 30)]
    pub late_days: u32,
    /// Do not print the summary.
    #[arg(long)]
    pub quiet: bool,
}

fn describe(files: &[&Path], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = vec!["defaults".into()];
    parts.extend(files.iter().map(|f| f.display().to_string()));
    if let Some((k, v)) = extra {
        parts.push(format!("{k}={v}"));
    }
    parts.join(" + ")
}

fn load(files: &[&Path], extra: Option<(&str, &str)>) -> Result<config::Settings> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    if let Some((k, v)) = extra {
        env.push((backtest::env_key(k), v.to_string()));
    }
    config::load_layers(files, env)
        .with_context(|| format!("the settings {} are not valid", describe(files, extra)))
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    if args.policy.is_none() && args.sweep.is_none() {
        bail!("backtest needs a candidate: --policy FILE, --sweep KEY=V1,V2,..., or both");
    }
    let base_files: Vec<&Path> = args.baseline.as_deref().into_iter().collect();
    let baseline_settings = load(&base_files, None)?;
    let baseline = PolicyRun {
        label: "baseline".into(),
        source: describe(&base_files, None),
        policy: baseline_settings.policy.clone(),
    };
    let mut cand_files = base_files.clone();
    cand_files.extend(args.policy.as_deref());
    let sweep = args
        .sweep
        .as_deref()
        .map(backtest::parse_sweep)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let candidates = match &sweep {
        None => vec![PolicyRun {
            label: "candidate".into(),
            source: describe(&cand_files, None),
            policy: load(&cand_files, None)?.policy,
        }],
        Some((key, values)) => {
            let short = key.rsplit('.').next().unwrap_or(key);
            values
                .iter()
                .map(|v| {
                    Ok(PolicyRun {
                        label: format!("{short}={v}"),
                        source: describe(&cand_files, Some((key, v))),
                        policy: load(&cand_files, Some((key, v)))?.policy,
                    })
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    let reader: Box<dyn io::BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let f = File::open(&args.input)
            .with_context(|| format!("cannot open {}", args.input.display()))?;
        Box::new(BufReader::with_capacity(1 << 16, f))
    };
    let opts = Options {
        file: args.input.display().to_string(),
        max_message_bytes: baseline_settings.max_message_bytes,
        late_days: args.late_days,
        sweep,
    };
    let report = backtest::backtest(reader, baseline, candidates, &opts)
        .context("backtest failed while reading the input")?;
    if let Some(path) = &args.json {
        let mut w = create(path)?;
        serde_json::to_writer_pretty(&mut w, &report).context("cannot write the JSON report")?;
        w.write_all(b"\n")?;
        w.flush()?;
    }
    if let Some(path) = &args.report {
        let mut w = create(path)?;
        w.write_all(html::render(&report).as_bytes())?;
        w.flush()?;
    }
    if !args.quiet {
        print!("{}", report::terminal(&report));
    }
    Ok(())
}

fn create(path: &Path) -> Result<io::BufWriter<File>> {
    Ok(io::BufWriter::new(File::create(path).with_context(
        || format!("cannot create {}", path.display()),
    )?))
}
