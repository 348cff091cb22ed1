//! Test harness shared by the integration tests: a scenario is a policy and a stream of
//! events written as JSON (the way producers write them); each step returns the records the
//! engine produced for it, so tests read as "events in, decisions and alerts out".
#![allow(dead_code)]

pub mod apache_kafka;
pub mod applied;
pub mod broker;
/// The binary's traffic generator, compiled from its source (`src/tools/generator.rs`).
#[path = "../../src/tools/generator.rs"]
pub mod generator;
pub mod hostile;
pub mod http_get;
pub mod live;
/// The binary's load sender, compiled from its source (`src/tools/traffic.rs`).
#[path = "../../src/tools/traffic.rs"]
pub mod traffic;

use credit_sentinel::codec;
use credit_sentinel::model::*;
use credit_sentinel::{Engine, Outcome, Policy};
use serde_json::{json, Value};

pub struct Scenario {
    pub engine: Engine,
    next_id: u64,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new(Policy::default())
    }
}

impl Scenario {
    pub fn new(policy: Policy) -> Scenario {
        Scenario {
            engine: Engine::new(policy),
            next_id: 0,
        }
    }

    /// Sends raw bytes as a producer would; a decode failure becomes a rejection output.
    pub fn raw(&mut self, bytes: &[u8]) -> Vec<Output> {
        let mut out = Vec::new();
        match codec::decode_event(bytes) {
            Ok(ev) => {
                self.engine.apply(&ev, &mut out);
            }
            Err(r) => out.push(Output::DeadLetter(r)),
        }
        self.engine.verify_invariants().expect("exposure identity");
        out
    }

    /// Sends an event of `type_` for `customer` at `at` with the extra fields; the event id
    /// is generated. Returns the outputs.
    pub fn send(&mut self, at: &str, type_: &str, customer: &str, fields: Value) -> Vec<Output> {
        self.next_id += 1;
        let id = format!("t-{}", self.next_id);
        self.send_with_id(&id, at, type_, customer, fields)
    }

    pub fn send_with_id(
        &mut self,
        id: &str,
        at: &str,
        type_: &str,
        customer: &str,
        fields: Value,
    ) -> Vec<Output> {
        let mut obj =
            json!({"event_id": id, "type": type_, "occurred_at": at, "customer_id": customer});
        if let (Some(o), Some(f)) = (obj.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                o.insert(k.clone(), v.clone());
            }
        }
        self.raw(obj.to_string().as_bytes())
    }

    pub fn outcome_of(
        &mut self,
        at: &str,
        type_: &str,
        customer: &str,
        fields: Value,
    ) -> (Outcome, Vec<Output>) {
        self.next_id += 1;
        let mut obj = json!({"event_id": format!("t-{}", self.next_id), "type": type_, "occurred_at": at, "customer_id": customer});
        if let (Some(o), Some(f)) = (obj.as_object_mut(), fields.as_object()) {
            for (k, v) in f {
                o.insert(k.clone(), v.clone());
            }
        }
        let ev = codec::decode_event(obj.to_string().as_bytes()).expect("valid event");
        let mut out = Vec::new();
        let outcome = self.engine.apply(&ev, &mut out);
        (outcome, out)
    }

    pub fn profile(&mut self, at: &str, customer: &str, limit: &str, fields: Value) -> Vec<Output> {
        let mut f = json!({"credit_limit": limit, "currency": "EUR"});
        if let (Some(o), Some(extra)) = (f.as_object_mut(), fields.as_object()) {
            for (k, v) in extra {
                o.insert(k.clone(), v.clone());
            }
        }
        self.send(at, "profile.customer", customer, f)
    }

    pub fn order(&mut self, at: &str, customer: &str, order_id: &str, amount: &str) -> Vec<Output> {
        self.send(
            at,
            "order.placed",
            customer,
            json!({"order_id": order_id, "amount": amount, "currency": "EUR"}),
        )
    }

    pub fn ship(
        &mut self,
        at: &str,
        customer: &str,
        shipment_id: &str,
        order_id: &str,
        amount: &str,
    ) -> Vec<Output> {
        self.send(
            at,
            "shipment.shipped",
            customer,
            json!({"shipment_id": shipment_id, "order_id": order_id, "amount": amount, "currency": "EUR"}),
        )
    }

    pub fn pay(
        &mut self,
        at: &str,
        customer: &str,
        payment_id: &str,
        amount: &str,
        applies_to: &[&str],
    ) -> Vec<Output> {
        let mut f = json!({"payment_id": payment_id, "amount": amount, "currency": "EUR"});
        if !applies_to.is_empty() {
            f["applies_to"] = json!(applies_to);
        }
        self.send(at, "payment.received", customer, f)
    }

    pub fn command(
        &mut self,
        at: &str,
        type_: &str,
        customer: &str,
        order_id: Option<&str>,
        actor: &str,
    ) -> Vec<Output> {
        let mut f = json!({"actor": actor, "note": "checked"});
        if let Some(o) = order_id {
            f["order_id"] = json!(o);
        }
        self.send(at, type_, customer, f)
    }

    /// `delivery.requested` in EUR.
    pub fn deliver(
        &mut self,
        at: &str,
        customer: &str,
        delivery_id: &str,
        order_id: &str,
        amount: &str,
    ) -> Vec<Output> {
        self.send(
            at,
            "delivery.requested",
            customer,
            json!({"delivery_id": delivery_id, "order_id": order_id, "amount": amount, "currency": "EUR"}),
        )
    }

    /// `command.release_delivery` / `command.reject_delivery`.
    pub fn delivery_command(
        &mut self,
        at: &str,
        type_: &str,
        customer: &str,
        delivery_id: &str,
        actor: &str,
    ) -> Vec<Output> {
        self.send(
            at,
            type_,
            customer,
            json!({"delivery_id": delivery_id, "actor": actor, "note": "checked"}),
        )
    }

    pub fn tick(&mut self, at: &str) -> Vec<Output> {
        let mut out = Vec::new();
        self.engine.advance_clock(ts(at), &mut out);
        out
    }

    pub fn exposure(&self, customer: &str) -> ExposureView {
        self.engine.account(customer).expect("account").exposure()
    }
}

pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).expect("test timestamp")
}

pub fn decisions(out: &[Output]) -> Vec<&Decision> {
    out.iter()
        .filter_map(|o| match o {
            Output::Decision(d) => Some(d),
            _ => None,
        })
        .collect()
}

pub fn alerts(out: &[Output]) -> Vec<&Alert> {
    out.iter()
        .filter_map(|o| match o {
            Output::Alert(a) => Some(a),
            _ => None,
        })
        .collect()
}

pub fn alerts_of(out: &[Output], kind: AlertKind) -> Vec<&Alert> {
    alerts(out).into_iter().filter(|a| a.kind == kind).collect()
}

pub fn dead_letters(out: &[Output]) -> Vec<&InputError> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeadLetter(r) => Some(r),
            _ => None,
        })
        .collect()
}

pub fn delivery_decisions(out: &[Output]) -> Vec<&DeliveryDecision> {
    out.iter()
        .filter_map(|o| match o {
            Output::DeliveryDecision(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// The one delivery decision in `out`, asserting there is exactly one.
pub fn only_delivery(out: &[Output]) -> &DeliveryDecision {
    let d = delivery_decisions(out);
    assert_eq!(d.len(), 1, "expected one delivery decision, got {out:#?}");
    d[0]
}

pub fn delivery_codes(d: &DeliveryDecision) -> Vec<&'static str> {
    d.reasons.iter().map(|r| r.code.as_str()).collect()
}

/// The one decision in `out`, asserting there is exactly one.
pub fn only_decision(out: &[Output]) -> &Decision {
    let d = decisions(out);
    assert_eq!(d.len(), 1, "expected one decision, got {out:#?}");
    d[0]
}

pub fn codes(d: &Decision) -> Vec<&'static str> {
    d.reasons.iter().map(|r| r.code.as_str()).collect()
}

pub fn dec(s: &str) -> rust_decimal::Decimal {
    parse_amount(s).expect("test amount")
}

/// Replays JSON Lines through a fresh engine into replay output bytes.
pub fn replay_bytes(policy: Policy, input: &[u8]) -> Vec<u8> {
    let mut engine = Engine::new(policy);
    let mut out = Vec::new();
    credit_sentinel::replay::replay(&mut engine, input, &mut out, 1 << 20, |_| {}).expect("replay");
    out
}
