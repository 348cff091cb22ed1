//! What the `pipeline` figures of `benches/core.rs` and `benches/instructions.rs` measure, in
//! one place: JSON lines in, decode, apply, every output encoded as a replay line (a
//! dead-letter counted by its detail, as its record needs the input's position).

use credit_sentinel::codec::{decode_event, replay_line};
use credit_sentinel::model::Output;
use credit_sentinel::Engine;

/// Feeds `lines` to `engine` and encodes what it produced; returns the bytes encoded.
pub fn decode_apply_encode(engine: &mut Engine, lines: &[String]) -> usize {
    let mut out = Vec::with_capacity(16);
    let mut bytes = 0usize;
    for l in lines {
        out.clear();
        if let Ok(e) = decode_event(l.as_bytes()) {
            engine.apply(&e, &mut out);
        }
        for o in out.drain(..) {
            bytes += match &o {
                Output::Decision(d) => {
                    replay_line("credit.decisions", Some(&d.customer_id), d).len()
                }
                Output::DeliveryDecision(d) => {
                    replay_line("credit.delivery-decisions", Some(&d.customer_id), d).len()
                }
                Output::Alert(a) => replay_line("credit.alerts", Some(a.key()), a).len(),
                Output::DeadLetter(r) => r.detail.len(),
            };
        }
    }
    bytes
}
