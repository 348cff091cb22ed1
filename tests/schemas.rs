//! The JSON Schemas in docs/schemas are the published contract: every record the engine
//! produces must validate against them, every valid input must validate against its type's
//! schema, and the schemas must reject records that break the contract.

mod common;

use common::replay_bytes;
use credit_sentinel::model::types;
use credit_sentinel::Policy;
use jsonschema::Validator;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str) -> Value {
    let path = root().join("docs/schemas").join(name);
    serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compile(schema: &Value) -> Validator {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("schema compiles")
}

/// The replay-line schema with its `$ref`s to sibling files inlined.
fn replay_line_validator() -> Validator {
    let mut s = load("replay-line.schema.json");
    for branch in s["allOf"].as_array_mut().expect("allOf") {
        let value = &mut branch["then"]["properties"]["value"];
        let file = value["$ref"].as_str().expect("$ref").to_string();
        let mut inner = load(&file);
        inner.as_object_mut().expect("object").remove("$schema");
        inner.as_object_mut().expect("object").remove("$id");
        *value = inner;
    }
    compile(&s)
}

fn errors(v: &Validator, instance: &Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn write_off_stream() -> &'static str {
    concat!(
        r#"{"event_id":"w1","type":"profile.customer","occurred_at":"2026-01-01T00:00:00Z","customer_id":"W","credit_limit":"100","currency":"EUR","review_date":"2026-12-31"}"#,
        "\n",
        r#"{"event_id":"w2","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"W","order_id":"O","amount":"90","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"w3","type":"shipment.shipped","occurred_at":"2026-01-01T00:00:00Z","customer_id":"W","shipment_id":"S","order_id":"O","amount":"90","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"w4","type":"order.placed","occurred_at":"2026-03-15T00:00:00Z","customer_id":"W","order_id":"O2","amount":"1","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"w5","type":"order.placed","occurred_at":"2026-05-15T00:00:00Z","customer_id":"W","order_id":"O3","amount":"1","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"w6","type":"order.placed","occurred_at":"2026-08-01T00:00:00Z","customer_id":"W","order_id":"O4","amount":"9","currency":"EUR"}"#,
        "\n",
    )
}

/// Deliveries approved, held, released, rejected (by a person and by expiry) and cancelled,
/// and a shipment nobody cleared.
fn delivery_stream() -> &'static str {
    concat!(
        r#"{"event_id":"d1","type":"profile.customer","occurred_at":"2026-01-01T00:00:00Z","customer_id":"D","credit_limit":"100","currency":"EUR","name":"Dee & Co"}"#,
        "\n",
        r#"{"event_id":"d2","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"D","order_id":"O1","amount":"50","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d3","type":"delivery.requested","occurred_at":"2026-01-02T00:00:00Z","customer_id":"D","delivery_id":"DN1","order_id":"O1","amount":"50","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d4","type":"delivery.requested","occurred_at":"2026-01-02T00:00:00Z","customer_id":"D","delivery_id":"DN2","order_id":"O1","amount":"80","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d5","type":"command.release_delivery","occurred_at":"2026-01-03T00:00:00Z","customer_id":"D","delivery_id":"DN2","actor":"ann","note":"ok"}"#,
        "\n",
        r#"{"event_id":"d6","type":"delivery.requested","occurred_at":"2026-01-03T00:00:00Z","customer_id":"D","delivery_id":"DN3","order_id":"O9","amount":"5","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d7","type":"command.reject_delivery","occurred_at":"2026-01-04T00:00:00Z","customer_id":"D","delivery_id":"DN3","actor":"ann","note":"no"}"#,
        "\n",
        r#"{"event_id":"d8","type":"order.placed","occurred_at":"2026-01-04T00:00:00Z","customer_id":"D","order_id":"O2","amount":"500","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d9","type":"delivery.requested","occurred_at":"2026-01-04T00:00:00Z","customer_id":"D","delivery_id":"DN4","order_id":"O2","amount":"5","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d10","type":"order.cancelled","occurred_at":"2026-01-05T00:00:00Z","customer_id":"D","order_id":"O2"}"#,
        "\n",
        r#"{"event_id":"d11","type":"delivery.requested","occurred_at":"2026-01-05T00:00:00Z","customer_id":"D","delivery_id":"DN5","order_id":"O8","amount":"5","currency":"EUR"}"#,
        "\n",
        r#"{"event_id":"d12","type":"shipment.shipped","occurred_at":"2026-01-06T00:00:00Z","customer_id":"D","shipment_id":"S1","order_id":"O1","amount":"50","currency":"EUR","delivery_id":"DN1"}"#,
        "\n",
        r#"{"event_id":"d13","type":"shipment.shipped","occurred_at":"2026-01-06T00:00:00Z","customer_id":"D","shipment_id":"S2","order_id":"O8","amount":"5","currency":"EUR","delivery_id":"DN5"}"#,
        "\n",
        r#"{"event_id":"d14","type":"command.release_delivery","occurred_at":"2026-03-01T00:00:00Z","customer_id":"D","delivery_id":"DN404","actor":"ann","note":"?"}"#,
        "\n",
        r#"{"event_id":"d15","type":"fx.rate","occurred_at":"2026-03-01T00:00:00Z","base":"USD","quote":"EUR","rate":"0.9"}"#,
        "\n",
        r#"{"event_id":"d16","type":"order.placed","occurred_at":"2026-03-01T00:00:00Z","customer_id":"D","order_id":"O5","amount":"10","currency":"USD"}"#,
        "\n",
        r#"{"event_id":"d17","type":"delivery.requested","occurred_at":"2026-03-01T00:00:00Z","customer_id":"D","delivery_id":"DN6","order_id":"O5","amount":"10","currency":"USD"}"#,
        "\n",
    )
}

#[test]
fn every_output_record_validates() {
    let validator = replay_line_validator();
    let sample = std::fs::read(root().join("examples/sample-events.jsonl")).expect("sample file");
    let mut inputs: Vec<Vec<u8>> = vec![
        sample,
        write_off_stream().as_bytes().to_vec(),
        delivery_stream().as_bytes().to_vec(),
    ];
    for f in ["limit-and-release", "overdue", "bad-input"] {
        inputs.push(std::fs::read(root().join(format!("tests/data/{f}.jsonl"))).expect("example"));
    }
    let mut statuses = BTreeSet::new();
    let mut kinds = BTreeSet::new();
    let mut dead = BTreeSet::new();
    let mut delivery_statuses = BTreeSet::new();
    let mut checked = 0;
    for input in inputs {
        let out = String::from_utf8(replay_bytes(Policy::default(), &input)).expect("utf-8 output");
        for line in out.lines() {
            let v: Value = serde_json::from_str(line).expect("each line is JSON");
            let errs = errors(&validator, &v);
            assert!(errs.is_empty(), "{line}\n{errs:#?}");
            match v["topic"].as_str() {
                Some("credit.decisions") => {
                    statuses.insert(v["value"]["status"].as_str().unwrap_or("").to_string())
                }
                Some("credit.alerts") => {
                    kinds.insert(v["value"]["kind"].as_str().unwrap_or("").to_string())
                }
                Some("credit.delivery-decisions") => delivery_statuses
                    .insert(v["value"]["status"].as_str().unwrap_or("").to_string()),
                _ => dead.insert(v["value"]["error"].as_str().unwrap_or("").to_string()),
            };
            checked += 1;
        }
    }
    assert!(checked > 5000, "{checked}");
    assert_eq!(
        statuses.len(),
        5,
        "every decision status was exercised: {statuses:?}"
    );
    assert_eq!(kinds.len(), 14, "every alert kind was exercised: {kinds:?}");
    assert_eq!(
        delivery_statuses.len(),
        5,
        "every delivery decision status was exercised: {delivery_statuses:?}"
    );
    assert!(dead.contains("DELIVERY_NOT_HELD"), "{dead:?}");
    assert!(dead.len() >= 4, "{dead:?}");
}

#[test]
fn every_valid_input_validates_against_its_type_schema() {
    let validators: Vec<(String, Validator)> = types::ALL
        .iter()
        .map(|t| {
            (
                t.to_string(),
                compile(&load(&format!("input.{t}.schema.json"))),
            )
        })
        .collect();
    let sample =
        std::fs::read_to_string(root().join("examples/sample-events.jsonl")).expect("sample");
    let mut seen = BTreeSet::new();
    for line in sample
        .lines()
        .chain(write_off_stream().lines())
        .chain(delivery_stream().lines())
    {
        if credit_sentinel::codec::decode_event(line.as_bytes()).is_err() {
            continue;
        }
        let v: Value = serde_json::from_str(line).expect("json");
        let t = v["type"].as_str().expect("type");
        let (_, validator) = validators
            .iter()
            .find(|(name, _)| name == t)
            .expect("schema for type");
        let errs = errors(validator, &v);
        assert!(errs.is_empty(), "{line}\n{errs:#?}");
        seen.insert(t.to_string());
    }
    assert!(seen.len() >= 14, "{seen:?}");
    // The schema refuses what the engine dead-letters for the same reason.
    let order = &validators
        .iter()
        .find(|(n, _)| n == "order.placed")
        .expect("order")
        .1;
    let base = json!({"event_id": "e", "type": "order.placed", "occurred_at": "2026-01-01T09:00:00Z", "customer_id": "C", "order_id": "O", "amount": "12.34", "currency": "EUR"});
    assert!(order.is_valid(&base));
    for (field, bad) in [
        ("amount", json!("12.345678")),
        ("currency", json!("eur")),
        ("occurred_at", json!("yesterday")),
        ("event_id", json!("")),
    ] {
        let mut b = base.clone();
        b[field] = bad;
        assert!(!order.is_valid(&b), "{field} should be refused");
    }
}

#[test]
fn schemas_refuse_records_that_break_the_contract() {
    let decision = compile(&load("decision.schema.json"));
    let good = json!({
        "decision_id": "dec-00000000000000000000000000000000", "order_id": "O-1001", "customer_id": "C-42",
        "status": "held", "reasons": [{"code": "CREDIT_LIMIT_EXCEEDED", "detail": "exposure 9500.00 + order 2000.00 > limit 10000.00"}],
        "amount": "2000.00", "currency": "EUR",
        "exposure": {"open_orders": "3500.00", "receivables": "6000.00", "unapplied_credit": "0.00", "total": "9500.00"},
        "credit_limit": "10000.00", "available": "500.00", "decided_at": "2026-03-01T10:00:00Z", "source_event_id": "evt-77", "actor": null
    });
    assert!(
        errors(&decision, &good).is_empty(),
        "{:#?}",
        errors(&decision, &good)
    );
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "missing reasons",
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("reasons");
            }),
        ),
        (
            "held without reasons",
            Box::new(|v| v["reasons"] = json!([])),
        ),
        (
            "unknown reason code",
            Box::new(|v| v["reasons"][0]["code"] = json!("TOO_RISKY")),
        ),
        (
            "unknown status",
            Box::new(|v| v["status"] = json!("pending")),
        ),
        ("float amount", Box::new(|v| v["amount"] = json!(2000.0))),
        (
            "renamed field",
            Box::new(|v| {
                let o = v.as_object_mut().unwrap();
                let x = o.remove("decided_at").unwrap();
                o.insert("decidedAt".into(), x);
            }),
        ),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!decision.is_valid(&bad), "{what} should be refused");
    }
    let alert = compile(&load("alert.schema.json"));
    let a = json!({"alert_id": "alr-00000000000000000000000000000000", "kind": "UTILIZATION_THRESHOLD", "severity": "warning",
        "customer_id": "C-42", "group_id": null, "at": "2026-03-01T10:00:00Z",
        "details": {"threshold": "0.85", "utilization": "0.8731", "exposure": "8731.00", "credit_limit": "10000.00", "currency": "EUR"}});
    assert!(alert.is_valid(&a));
    let mut bad = a.clone();
    bad["severity"] = json!("fatal");
    assert!(!alert.is_valid(&bad));
    let mut bad = a;
    bad["details"].as_object_mut().unwrap().remove("threshold");
    assert!(
        !alert.is_valid(&bad),
        "utilization alerts must name their threshold"
    );
}
