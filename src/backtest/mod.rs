//! `backtest`: replays one history under a baseline policy and one or more candidates, and
//! tells which orders change and what that would have saved or cost, judged by what actually
//! happened to each order in the history (its shipments and payments).
//!
//! The core is deterministic, so each policy's replay is exact; every engine sees the same
//! decoded events in one pass over the file. `history` reads each order's outcome off the
//! baseline, `trail` keeps what each policy decided, `compare` sets a candidate against the
//! baseline, `report` and `html` present it.

pub mod compare;
pub mod history;
pub mod html;
pub mod report;
pub mod trail;

use crate::codec;
use crate::engine::Engine;
use crate::model::Event;
use crate::policy::Policy;
use history::History;
use report::{Assumptions, InputSummary, Report, Sweep, SweepRow};
use std::io::{self, BufRead};
use std::sync::Arc;
use trail::Trail;

/// A policy to replay, with its label and where it came from.
#[derive(Clone, Debug)]
pub struct PolicyRun {
    pub label: String,
    /// Where the policy came from (files, swept setting), for the report.
    pub source: String,
    pub policy: Policy,
}

/// Settings of one backtest.
#[derive(Clone, Debug)]
pub struct Options {
    /// The input's name for the report.
    pub file: String,
    pub max_message_bytes: usize,
    /// Paid this many days late or more counts as bad.
    pub late_days: u32,
    /// When the candidates are the values of one swept setting: its key and the values.
    pub sweep: Option<(String, Vec<String>)>,
}

/// Events decoded per batch handed to the candidates' threads.
const BATCH: usize = 2048;

/// Replays `input` under `baseline` and each of `candidates` and compares them. The baseline
/// runs on this thread (with the history read off it), each candidate on a thread of its own,
/// all fed the same decoded events in order.
pub fn backtest<R: BufRead>(
    input: R,
    baseline: PolicyRun,
    candidates: Vec<PolicyRun>,
    opts: &Options,
) -> io::Result<Report> {
    let write_off_days = baseline.policy.write_off_days;
    let runs: Vec<PolicyRun> = std::iter::once(baseline).chain(candidates).collect();
    let mut history = History::default();
    let mut input_summary = InputSummary {
        file: opts.file.clone(),
        lines: 0,
        events: 0,
        undecodable: 0,
        orders: 0,
        first_event: None,
        last_event: None,
    };
    let trails = replay_all(input, &runs, opts, &mut history, &mut input_summary)?;
    input_summary.orders = history.orders.len() as u64;
    input_summary.first_event = history.first;
    input_summary.last_event = history.end;
    let end = history.end.unwrap_or_default();
    let comparisons: Vec<_> = trails[1..]
        .iter()
        .zip(&runs[1..])
        .map(|(t, r)| {
            compare::compare(
                &history,
                &trails[0],
                t,
                &r.source,
                opts.late_days,
                write_off_days,
            )
        })
        .collect();
    let policies: Vec<_> = trails
        .iter()
        .zip(&runs)
        .map(|(t, r)| report::summarise(t, &r.source, end))
        .collect();
    let sweep = sweep_of(opts, &comparisons, &policies);
    Ok(Report {
        input: input_summary,
        currency: report::main_currency(&history),
        assumptions: Assumptions {
            late_days: opts.late_days,
            write_off_days,
            counterfactual: report::COUNTERFACTUAL.to_vec(),
        },
        outcomes: report::outcomes(&history, write_off_days),
        policies,
        comparisons,
        sweep,
    })
}

/// The baseline (and the history) on this thread, each candidate on a thread of its own, all
/// fed the same decoded batches in order; every policy's trail, the baseline's first.
fn replay_all<R: BufRead>(
    input: R,
    runs: &[PolicyRun],
    opts: &Options,
    history: &mut History,
    input_summary: &mut InputSummary,
) -> io::Result<Vec<Trail>> {
    std::thread::scope(|scope| -> io::Result<Vec<Trail>> {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for run in &runs[1..] {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<Event>>>(4);
            senders.push(tx);
            workers.push(scope.spawn(move || replay_policy(run, rx)));
        }
        let mut engine = Engine::with_policy(Arc::new(runs[0].policy.clone()));
        let mut trail = Trail::new(&runs[0].label);
        let mut reader = Reader {
            input,
            buf: Vec::with_capacity(4096),
            max: opts.max_message_bytes,
        };
        let mut outputs = Vec::new();
        loop {
            let (batch, lines) = reader.batch(input_summary)?;
            if batch.is_empty() {
                break;
            }
            let batch = Arc::new(batch);
            for tx in &senders {
                // A worker gone early has panicked; its join below reports it.
                let _ = tx.send(Arc::clone(&batch));
            }
            for (event, line) in batch.iter().zip(lines) {
                history.note_event(line, event);
                outputs.clear();
                engine.apply(event, &mut outputs);
                history.after_baseline(line, event, &engine, &outputs);
                trail.observe(event, &outputs);
            }
        }
        drop(senders);
        let mut trails = vec![trail];
        for w in workers {
            trails.push(
                w.join()
                    .map_err(|_| io::Error::other("a candidate's replay panicked"))?,
            );
        }
        Ok(trails)
    })
}

/// With `--sweep`, one row per swept value (the candidates in order).
fn sweep_of(
    opts: &Options,
    comparisons: &[compare::Comparison],
    policies: &[report::PolicySummary],
) -> Option<Sweep> {
    opts.sweep.as_ref().map(|(key, values)| Sweep {
        key: key.clone(),
        rows: values
            .iter()
            .zip(comparisons.iter().zip(&policies[1..]))
            .map(|(value, (c, p))| SweepRow {
                value: value.clone(),
                changed: c.changed,
                holds: p.decisions.get("held").copied().unwrap_or(0),
                alerts: p.alerts.values().sum(),
                totals: c.totals.clone(),
            })
            .collect(),
    })
}

/// One candidate's engine over the batches it is sent.
fn replay_policy(run: &PolicyRun, rx: std::sync::mpsc::Receiver<Arc<Vec<Event>>>) -> Trail {
    let mut engine = Engine::with_policy(Arc::new(run.policy.clone()));
    let mut trail = Trail::new(&run.label);
    let mut outputs = Vec::new();
    for batch in rx {
        for event in batch.iter() {
            outputs.clear();
            engine.apply(event, &mut outputs);
            trail.observe(event, &outputs);
        }
    }
    trail
}

/// Reads and decodes the input in batches.
struct Reader<R> {
    input: R,
    buf: Vec<u8>,
    max: usize,
}

impl<R: BufRead> Reader<R> {
    /// Up to `BATCH` events and their line numbers; empty at the end of the input.
    fn batch(&mut self, summary: &mut InputSummary) -> io::Result<(Vec<Event>, Vec<u64>)> {
        let mut events = Vec::with_capacity(BATCH);
        let mut lines = Vec::with_capacity(BATCH);
        while events.len() < BATCH {
            let Some(len) =
                crate::replay::read_line_bounded(&mut self.input, &mut self.buf, self.max)?
            else {
                break;
            };
            summary.lines += 1;
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match (len <= self.max)
                .then(|| codec::decode_event(&self.buf).ok())
                .flatten()
            {
                Some(e) => {
                    summary.events += 1;
                    events.push(e);
                    lines.push(summary.lines);
                }
                None => summary.undecodable += 1,
            }
        }
        Ok((events, lines))
    }
}

/// The environment variable that sets a settings key (`policy.grades.C.tolerance_pct` is
/// `CREDIT_SENTINEL__POLICY__GRADES__C__TOLERANCE_PCT`), for `--sweep`.
pub fn env_key(key: &str) -> String {
    format!(
        "{}__{}",
        crate::config::ENV_PREFIX,
        key.split('.')
            .map(|p| p.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    )
}

/// Parses `--sweep KEY=V1,V2,...`.
pub fn parse_sweep(text: &str) -> Result<(String, Vec<String>), String> {
    let (key, values) = text
        .split_once('=')
        .ok_or_else(|| format!("--sweep {text:?}: expected KEY=V1,V2,..."))?;
    let key = key.trim();
    if key.is_empty() || !key.split('.').all(|p| !p.is_empty()) {
        return Err(format!("--sweep {text:?}: the key is empty or malformed"));
    }
    let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("--sweep {text:?}: an empty value"));
    }
    Ok((key.to_string(), values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_keys_and_values() {
        assert_eq!(
            env_key("policy.grades.C.tolerance_pct"),
            "CREDIT_SENTINEL__POLICY__GRADES__C__TOLERANCE_PCT"
        );
        assert_eq!(
            parse_sweep("policy.hold_expiry_days=10, 20,30").unwrap(),
            (
                "policy.hold_expiry_days".into(),
                vec!["10".into(), "20".into(), "30".into()]
            )
        );
        assert!(parse_sweep("policy.hold_expiry_days").is_err());
        assert!(parse_sweep("=1").is_err());
        assert!(parse_sweep("a..b=1").is_err());
        assert!(parse_sweep("a=1,,2").is_err());
    }
}
