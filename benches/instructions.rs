//! Instructions per event, counted by callgrind, checked against the committed baseline in
//! `benches/instructions.toml`: the bench fails when a figure regresses by more than 20%.
//!
//! Instruction counts do not depend on what else the machine is doing, so unlike the criterion
//! benches this one can gate CI. Two figures over the same generated traffic as `core/apply`:
//! - `apply`: `Engine::apply` on pre-decoded events (the core alone);
//! - `pipeline`: JSON line in, decide, JSON lines out (decode, apply, encode).
//!
//! Run: `cargo bench --bench instructions` (needs valgrind). The bench runs itself under
//! `valgrind --tool=callgrind`, collecting only inside the measured loop, once per figure.

/// The binary's traffic generator, compiled from its source.
#[allow(dead_code)]
#[path = "../src/tools/generator.rs"]
mod generator;
#[path = "support/pipeline.rs"]
mod pipeline;

// The allocator the binary ships with (src/main.rs), so these figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use credit_sentinel::codec::decode_event;
use credit_sentinel::model::Event;
use credit_sentinel::{Engine, Policy};
use generator::{generate, GeneratorConfig};
use std::hint::black_box;
use std::process::{Command, ExitCode};

/// Which figure a child process measures.
const CHILD: &str = "CREDIT_SENTINEL_INSTRUCTIONS_CHILD";
/// A regression beyond this fraction of the baseline fails the bench.
const TOLERANCE: f64 = 0.20;
const FIGURES: [&str; 2] = ["apply", "pipeline"];

fn sample() -> Vec<String> {
    generate(&GeneratorConfig {
        customers: 100,
        days: 60,
        faults: false,
        ..GeneratorConfig::default()
    })
}

#[inline(never)]
fn measured_apply(engine: &mut Engine, events: &[Event]) -> usize {
    let mut out = Vec::with_capacity(16);
    let mut n = 0;
    for e in events {
        out.clear();
        engine.apply(e, &mut out);
        n += out.len();
    }
    n
}

#[inline(never)]
fn measured_pipeline(engine: &mut Engine, lines: &[String]) -> usize {
    pipeline::decode_apply_encode(engine, lines)
}

/// In the child: runs one figure's loop and prints how many events it measured.
fn child(figure: &str) -> ExitCode {
    let lines = sample();
    let mut engine = Engine::new(Policy::default());
    let n = match figure {
        "apply" => {
            let events: Vec<Event> = lines
                .iter()
                .filter_map(|l| decode_event(l.as_bytes()).ok())
                .collect();
            black_box(measured_apply(&mut engine, &events));
            events.len()
        }
        _ => {
            black_box(measured_pipeline(&mut engine, &lines));
            lines.len()
        }
    };
    println!("{n}");
    ExitCode::SUCCESS
}

/// Runs this executable under callgrind for one figure; instructions per event.
fn count(figure: &str) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out_file = std::env::temp_dir().join(format!(
        "credit-sentinel-callgrind-{figure}-{}",
        std::process::id()
    ));
    let output = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(format!("--toggle-collect=*measured_{figure}*"))
        .arg(&exe)
        .env(CHILD, figure)
        .output()
        .map_err(|e| format!("cannot run valgrind: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "callgrind run of {figure} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let events: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| "the child printed no event count".to_string())?;
    let profile = std::fs::read_to_string(&out_file).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out_file);
    let total: f64 = profile
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no instruction total in the callgrind profile")?;
    if total == 0.0 {
        return Err(format!("callgrind collected nothing in measured_{figure}"));
    }
    Ok(total / events)
}

/// The committed baseline: `figure = instructions per event` lines.
fn baseline() -> Result<Vec<(String, f64)>, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/instructions.toml");
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').ok_or(format!("{path}: bad line {l:?}"))?;
            let v = v.trim().replace('_', "");
            let v: f64 = v
                .parse()
                .map_err(|_| format!("{path}: bad number in {l:?}"))?;
            Ok((k.trim().to_string(), v))
        })
        .collect()
}

fn main() -> ExitCode {
    if let Ok(figure) = std::env::var(CHILD) {
        return child(&figure);
    }
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed: instructions per event not measured");
        return if std::env::var_os("CI").is_some() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    let base = match baseline() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for figure in FIGURES {
        let measured = match count(figure) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let Some((_, b)) = base.iter().find(|(k, _)| k == figure) else {
            eprintln!("{figure}: {measured:.0} instructions per event; no baseline for it");
            failed = true;
            continue;
        };
        let ratio = measured / b;
        let verdict = if ratio > 1.0 + TOLERANCE {
            failed = true;
            "REGRESSED (more than 20% over the baseline)"
        } else if ratio < 1.0 - TOLERANCE {
            "better by more than 20%: lower the baseline in benches/instructions.toml"
        } else {
            "within 20% of the baseline"
        };
        println!("{figure}: {measured:.0} instructions per event, baseline {b:.0} ({ratio:.2}x): {verdict}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
