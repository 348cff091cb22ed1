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

/// Replays `input` under `baseline` and each of `candidates` and compares them.
pub fn backtest<R: BufRead>(
    mut input: R,
    baseline: PolicyRun,
    candidates: Vec<PolicyRun>,
    opts: &Options,
) -> io::Result<Report> {
    let write_off_days = baseline.policy.write_off_days;
    let runs: Vec<PolicyRun> = std::iter::once(baseline).chain(candidates).collect();
    let mut engines: Vec<Engine> = runs
        .iter()
        .map(|r| Engine::with_policy(Arc::new(r.policy.clone())))
        .collect();
    let mut trails: Vec<Trail> = runs.iter().map(|r| Trail::new(&r.label)).collect();
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
    let mut buf = Vec::with_capacity(4096);
    let mut outputs = Vec::new();
    while let Some(len) =
        crate::replay::read_line_bounded(&mut input, &mut buf, opts.max_message_bytes)?
    {
        input_summary.lines += 1;
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = match (len <= opts.max_message_bytes)
            .then(|| codec::decode_event(&buf).ok())
            .flatten()
        {
            Some(e) => e,
            None => {
                input_summary.undecodable += 1;
                continue;
            }
        };
        input_summary.events += 1;
        let line = input_summary.lines;
        history.note_event(line, &event);
        for (i, (engine, trail)) in engines.iter_mut().zip(trails.iter_mut()).enumerate() {
            outputs.clear();
            engine.apply(&event, &mut outputs);
            if i == 0 {
                history.after_baseline(line, &event, engine, &outputs);
            }
            trail.observe(&outputs, &history);
        }
    }
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
    let sweep = opts.sweep.as_ref().map(|(key, values)| Sweep {
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
    });
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
