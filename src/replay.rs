//! The replay shell: reads a JSON Lines file of input events (all topics interleaved, in the
//! order to apply them), feeds the core, and writes the contract's replay output, one
//! `{"topic", "key", "value"}` object per produced record. Memory stays bounded apart from
//! account state: lines are read one at a time into a reused buffer capped at the message
//! size limit, and output is streamed.

use crate::codec::{self, DeadLetter, SourcePosition};
use crate::engine::{Engine, Outcome};
use crate::model::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, BufRead, Write};

/// Counts for the end-of-run summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub lines: u64,
    /// event type -> outcome -> count (undecodable lines count under type `(undecodable)`).
    pub events: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub decisions: BTreeMap<&'static str, u64>,
    pub delivery_decisions: BTreeMap<&'static str, u64>,
    pub reasons: BTreeMap<&'static str, u64>,
    pub alerts: BTreeMap<&'static str, u64>,
    pub dead_letters: BTreeMap<&'static str, u64>,
    pub records: u64,
}

impl Summary {
    fn count_outputs(&mut self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Decision(d) => {
                    *self.decisions.entry(d.status.as_str()).or_default() += 1;
                    for r in &d.reasons {
                        *self.reasons.entry(r.code.as_str()).or_default() += 1;
                    }
                }
                Output::DeliveryDecision(d) => {
                    *self
                        .delivery_decisions
                        .entry(d.status.as_str())
                        .or_default() += 1;
                    for r in &d.reasons {
                        *self.reasons.entry(r.code.as_str()).or_default() += 1;
                    }
                }
                Output::Alert(a) => *self.alerts.entry(a.kind.as_str()).or_default() += 1,
                Output::DeadLetter(r) => {
                    *self.dead_letters.entry(r.error.as_str()).or_default() += 1
                }
            }
        }
        self.records += outputs.len() as u64;
    }

    fn count_event(&mut self, event_type: &str, outcome: &'static str) {
        *self
            .events
            .entry(event_type.to_string())
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    /// Human-readable summary, with the engine's final exposure totals.
    pub fn render(&self, engine: &Engine) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay: {} lines, {} records produced",
            self.lines, self.records
        );
        let _ = writeln!(s, "events by type:");
        for (t, outcomes) in &self.events {
            let parts: Vec<String> = outcomes.iter().map(|(o, n)| format!("{o} {n}")).collect();
            let _ = writeln!(s, "  {t:<22} {}", parts.join(", "));
        }
        let line = |title: &str, m: &BTreeMap<&'static str, u64>| {
            let parts: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
            format!(
                "{title}: {}\n",
                if parts.is_empty() {
                    "none".to_string()
                } else {
                    parts.join(", ")
                }
            )
        };
        s.push_str(&line("decisions by status", &self.decisions));
        if !self.delivery_decisions.is_empty() {
            s.push_str(&line(
                "delivery decisions by status",
                &self.delivery_decisions,
            ));
        }
        s.push_str(&line("decisions by reason", &self.reasons));
        s.push_str(&line("alerts by kind", &self.alerts));
        s.push_str(&line("dead-letters by error", &self.dead_letters));
        let _ = writeln!(s, "final exposure by currency:");
        for (cur, t) in engine.totals() {
            let _ = writeln!(
                s,
                "  {cur}: {} accounts, open orders {}, receivables {}, unapplied credit {}, exposure {}, limits {}, held {} orders / {}",
                t.accounts,
                format_money(t.exposure.open_orders),
                format_money(t.exposure.receivables),
                format_money(t.exposure.unapplied_credit),
                format_money(t.exposure.total),
                format_money(t.credit_limit),
                t.held_orders,
                format_money(t.held_amount),
            );
        }
        s
    }
}

/// Reads one line into `buf` (without the newline), keeping at most `max + 1` bytes so a
/// huge line cannot exhaust memory. Returns `None` at end of input, else the full length.
pub(crate) fn read_line_bounded<R: BufRead>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>> {
    buf.clear();
    let mut total = 0usize;
    let mut any = false;
    loop {
        let chunk = input.fill_buf()?;
        if chunk.is_empty() {
            return Ok(any.then_some(total));
        }
        any = true;
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        let room = (max + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&part[..part.len().min(room)]);
        total += part.len();
        let used = done.unwrap_or(chunk.len());
        input.consume(used);
        if done.is_some() {
            if buf.last() == Some(&b'\r') && total <= max + 1 {
                buf.pop();
                total -= 1;
            }
            return Ok(Some(total));
        }
    }
}

/// Writes one output as a replay line.
pub fn write_output<W: Write>(
    out: &mut W,
    output: Output,
    original: &[u8],
    source: &SourcePosition,
) -> io::Result<()> {
    let line = match output {
        Output::Decision(d) => {
            codec::replay_line(codec::topics::DECISIONS, Some(&d.customer_id), &d)
        }
        Output::DeliveryDecision(d) => {
            codec::replay_line(codec::topics::DELIVERY_DECISIONS, Some(&d.customer_id), &d)
        }
        Output::Alert(a) => codec::replay_line(codec::topics::ALERTS, Some(a.key()), &a),
        Output::DeadLetter(r) => {
            let dl = DeadLetter::new(r, original, source);
            codec::replay_line(codec::topics::DEAD_LETTER, dl.key(), &dl)
        }
    };
    out.write_all(line.as_bytes())?;
    out.write_all(b"\n")
}

/// Replays `input` through `engine`, writing records to `output`. `on_progress` is called with
/// the bytes read so far every few thousand lines.
pub fn replay<R: BufRead, W: Write>(
    engine: &mut Engine,
    input: R,
    output: W,
    max_message_bytes: usize,
    on_progress: impl FnMut(u64),
) -> io::Result<Summary> {
    replay_guarded(engine, input, output, max_message_bytes, None, on_progress)
}

/// `replay`; with `max_future_skew_us`, an event more than that ahead of the latest event time
/// seen so far (the engine's clock) is dead-lettered `INVALID_FIELD`, as `run` does against the
/// wall clock (`replay --max-future-skew-hours`).
pub fn replay_guarded<R: BufRead, W: Write>(
    engine: &mut Engine,
    mut input: R,
    mut output: W,
    max_message_bytes: usize,
    max_future_skew_us: Option<i64>,
    mut on_progress: impl FnMut(u64),
) -> io::Result<Summary> {
    let mut summary = Summary::default();
    let mut buf = Vec::with_capacity(4096);
    let mut outputs = Vec::new();
    let mut bytes_read = 0u64;
    while let Some(len) = read_line_bounded(&mut input, &mut buf, max_message_bytes)? {
        summary.lines += 1;
        bytes_read += len as u64 + 1;
        if summary.lines % 4096 == 0 {
            on_progress(bytes_read);
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let source = SourcePosition {
            line: Some(summary.lines),
            ..SourcePosition::default()
        };
        outputs.clear();
        if len > max_message_bytes {
            buf.truncate(max_message_bytes);
            outputs.push(Output::DeadLetter(InputError {
                error: ErrorCode::TooLarge,
                detail: format!(
                    "message of {len} bytes exceeds limits.max_message_bytes = {max_message_bytes}; original truncated"
                ),
                event_id: None,
                event_type: None,
                customer_id: None,
                original: None,
            }));
            summary.count_event("(undecodable)", Outcome::Rejected.as_str());
        } else {
            match codec::decode_event(&buf) {
                Ok(event) => {
                    let guard = max_future_skew_us.and_then(|skew| {
                        Some(crate::engine::FutureGuard {
                            reference: engine.clock()?,
                            max_skew_us: skew,
                            reference_name: "the latest event time",
                            setting: "replay --max-future-skew-hours",
                        })
                    });
                    let outcome = engine.apply_guarded(&event, &mut outputs, guard);
                    summary.count_event(event.type_str(), outcome.as_str());
                }
                Err(rejection) => {
                    let t = rejection
                        .event_type
                        .clone()
                        .unwrap_or_else(|| "(undecodable)".into());
                    summary.count_event(&t, Outcome::Rejected.as_str());
                    outputs.push(Output::DeadLetter(rejection));
                }
            }
        }
        summary.count_outputs(&outputs);
        for o in outputs.drain(..) {
            write_output(&mut output, o, &buf, &source)?;
        }
    }
    on_progress(bytes_read);
    output.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lines() {
        let data = b"short\r\n0123456789abcdef\nlast";
        let mut r = io::BufReader::with_capacity(4, &data[..]);
        let mut buf = Vec::new();
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(5));
        assert_eq!(buf, b"short");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(16));
        assert_eq!(buf.len(), 9, "kept at most max + 1 bytes");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), Some(4));
        assert_eq!(buf, b"last");
        assert_eq!(read_line_bounded(&mut r, &mut buf, 8).unwrap(), None);
    }
}
