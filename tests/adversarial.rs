//! Adversarial input: each hostile message is either handled or dead-lettered with a reason,
//! the valid events around it are still decided, and the engine's memory stays inside its
//! configured bounds however much one customer sends or however many customers appear.

use credit_sentinel::model::*;
use credit_sentinel::{replay, state, Engine, Policy};
use rust_decimal::Decimal;
use serde_json::Value;

#[path = "common/hostile.rs"]
mod hostile;
use hostile::{order_line, MAX, PROFILE};

/// Replays `hostile` between a profile and a valid order; returns the dead-letter records
/// and checks that the order after it was still decided.
fn replay_between(hostile: &[u8]) -> Vec<Value> {
    let mut input = Vec::new();
    input.extend_from_slice(PROFILE.as_bytes());
    input.push(b'\n');
    input.extend_from_slice(hostile);
    input.push(b'\n');
    input.extend_from_slice(order_line("ok-1", "ACME", "O-OK", "10.00").as_bytes());
    input.push(b'\n');
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    // With the future-skew check (against the latest event time, as `replay
    // --max-future-skew-hours 720` does; `run` checks against the wall clock).
    replay::replay_guarded(
        &mut engine,
        input.as_slice(),
        &mut out,
        MAX,
        Some(720 * 3_600_000_000),
        |_| {},
    )
    .expect("replay");
    let records: Vec<Value> = String::from_utf8(out)
        .expect("utf8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json output"))
        .collect();
    assert!(
        records.iter().any(|r| r["topic"] == "credit.decisions"
            && r["value"]["order_id"] == "O-OK"
            && r["value"]["status"] == "approved"),
        "the valid order after the hostile input is decided"
    );
    records
        .into_iter()
        .filter(|r| r["topic"] == "credit.dead-letter")
        .map(|r| r["value"].clone())
        .collect()
}

#[test]
fn hostile_messages_are_dead_lettered_with_a_reason_and_processing_goes_on() {
    let cases = hostile::cases();
    let tried = cases.len();
    for (what, bytes, code) in cases {
        let dead = replay_between(&bytes);
        assert_eq!(dead.len(), 1, "{what}: one dead letter, got {dead:?}");
        assert_eq!(dead[0]["error"], code, "{what}: {}", dead[0]["detail"]);
        assert!(
            dead[0]["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: a reason"
        );
        // The original travels with it, bounded by the message limit.
        let original = dead[0]["original"].as_str().expect("original");
        assert!(
            original.len() <= MAX * 4 / 3 + 4,
            "{what}: original bounded"
        );
    }
    eprintln!("{tried} hostile inputs dead-lettered with a reason");
}

fn eur() -> Currency {
    Currency::parse("EUR").expect("EUR")
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .plus_us(seconds * 1_000_000)
}

fn event(n: u64, t: i64, customer: &str, body: EventBody) -> Event {
    Event {
        event_id: format!("e-{n}"),
        occurred_at: at(t),
        customer_id: Some(customer.to_string()),
        body,
    }
}

fn codes(out: &[Output]) -> std::collections::BTreeMap<&'static str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for o in out {
        if let Output::DeadLetter(r) = o {
            *m.entry(r.error.as_str()).or_default() += 1;
        }
    }
    m
}

#[test]
fn one_customer_sending_100000_events_stays_within_its_account_bounds() {
    let mut policy = Policy::default();
    policy.bounds.items_per_account = 500;
    let b = policy.bounds.clone();
    let mut engine = Engine::new(policy);
    let mut out = Vec::new();
    engine.apply(
        &event(
            0,
            0,
            "HOT",
            EventBody::CustomerProfile(Box::new(CustomerProfile {
                credit_limit: Decimal::new(1_000_000_000, 2),
                currency: eur(),
                grade: None,
                payment_terms_days: None,
                max_order_amount: None,
                tolerance_pct: None,
                status: AccountStatus::Active,
                group_id: None,
                temporary_limit: None,
                review_date: None,
                name: None,
            })),
        ),
        &mut out,
    );
    // 100,000 events: orders (a third never shipped), shipments of the rest, payments of
    // half of those, shipments for orders that never come, and redeliveries.
    let mut n = 0u64;
    let mut largest_snapshot = 0usize;
    while n < 100_000 {
        let i = n;
        let t = i as i64 * 30;
        let body = match i % 6 {
            0 | 1 => EventBody::OrderPlaced(OrderPlaced {
                order_id: format!("O-{i}"),
                amount: Decimal::new(1_000, 2),
                currency: eur(),
            }),
            2 => EventBody::ShipmentShipped(ShipmentShipped {
                shipment_id: format!("S-{i}"),
                order_id: format!("O-{}", i - 2),
                amount: Decimal::new(1_000, 2),
                currency: eur(),
                due_at: None,
                delivery_id: None,
            }),
            3 => EventBody::Settlement(Settlement {
                kind: SettlementKind::Payment,
                settlement_id: format!("P-{i}"),
                amount: Decimal::new(1_000, 2),
                currency: eur(),
                applies_to: if i % 12 == 3 {
                    vec![format!("S-{}", i - 1)]
                } else {
                    vec![]
                },
            }),
            4 => EventBody::ShipmentShipped(ShipmentShipped {
                shipment_id: format!("S-{i}"),
                order_id: format!("NEVER-{i}"),
                amount: Decimal::new(100, 2),
                currency: eur(),
                due_at: None,
                delivery_id: None,
            }),
            _ => EventBody::OrderPlaced(OrderPlaced {
                // A redelivery of an earlier order under a new event id.
                order_id: format!("O-{}", i - 5),
                amount: Decimal::new(1_000, 2),
                currency: eur(),
            }),
        };
        out.clear();
        engine.apply(&event(i + 1, t, "HOT", body), &mut out);
        n += 1;
        if n % 10_000 == 0 {
            let acc = engine.account("HOT").expect("account");
            assert!(acc.orders().len() <= b.items_per_account);
            assert!(acc.receivables().len() <= b.items_per_account);
            assert!(acc.pending.len() <= b.pending_per_account);
            assert!(acc.recent_event_ids.len() <= b.event_ids_per_account);
            largest_snapshot = largest_snapshot.max(
                state::encode_account(&engine, "HOT")
                    .expect("snapshot")
                    .1
                    .len(),
            );
            engine.verify_invariants().expect("invariants");
        }
    }
    let acc = engine.account("HOT").expect("account");
    assert_eq!(
        acc.orders().len(),
        b.items_per_account,
        "the order bound was reached"
    );
    assert!(acc.receivables().len() <= b.items_per_account);
    // Everything the account keeps is bounded, so its snapshot is too: 500 orders and 500
    // receivables at a few hundred bytes each, plus the bounded id rings.
    assert!(
        largest_snapshot < 2 * 500 * 600 + 64 * 1024,
        "snapshot {largest_snapshot} bytes"
    );
    // The due-moment index holds live items only (settled and resolved ones are dropped).
    let live = acc.holds().len() + acc.receivables().len() + acc.pending.len() + 4;
    assert!(
        engine.timers_len() <= live,
        "{} due moments for {live} live items: {:?}",
        engine.timers_len(),
        engine.timers_by_kind()
    );
    eprintln!(
        "100,000 events for one customer: {} live orders, {} receivables, largest snapshot {} bytes, {} due moments",
        acc.orders().len(),
        acc.receivables().len(),
        largest_snapshot,
        engine.timers_len()
    );
}

#[test]
fn a_flood_of_new_customers_stops_at_max_accounts() {
    let mut policy = Policy::default();
    policy.bounds.max_accounts = 10_000;
    policy.bounds.max_groups = 100;
    let mut engine = Engine::new(policy);
    let mut out = Vec::new();
    let flood = 1_000_000u64;
    let mut dead = 0u64;
    for i in 0..flood {
        out.clear();
        let body = EventBody::Settlement(Settlement {
            kind: SettlementKind::Payment,
            settlement_id: format!("P-{i}"),
            amount: Decimal::new(100, 2),
            currency: eur(),
            applies_to: vec![],
        });
        engine.apply(
            &event(i, i as i64 / 1000, &format!("C-{i}"), body),
            &mut out,
        );
        dead += codes(&out).get("CAPACITY_EXCEEDED").copied().unwrap_or(0) as u64;
    }
    assert_eq!(engine.accounts().count(), 10_000);
    assert_eq!(
        dead,
        flood - 10_000,
        "every event of a customer beyond the bound"
    );
    // Known customers carry on at the bound.
    out.clear();
    let body = EventBody::OrderPlaced(OrderPlaced {
        order_id: "O-1".into(),
        amount: Decimal::new(100, 2),
        currency: eur(),
    });
    engine.apply(&event(flood, 2_000, "C-7", body), &mut out);
    assert!(out.iter().any(|o| matches!(o, Output::Decision(_))));
    // Groups too.
    for g in 0..200u64 {
        out.clear();
        let e = Event {
            event_id: format!("g-{g}"),
            occurred_at: at(2_000),
            customer_id: None,
            body: EventBody::GroupProfile(GroupProfile {
                group_id: format!("G-{g}"),
                credit_limit: Decimal::new(100, 0),
                currency: eur(),
                tolerance_pct: None,
            }),
        };
        engine.apply(&e, &mut out);
    }
    assert_eq!(engine.group_ids().len(), 100);
    eprintln!(
        "{flood} events for distinct customers: {} accounts kept, {dead} dead-lettered CAPACITY_EXCEEDED",
        engine.accounts().count()
    );
}

/// Found by the `engine` fuzz target (fuzz/artifacts, 2026-11-23): with the event-id memory
/// disabled (`limits.event_ids_per_account = 0`), a redelivered cancellation that was waiting
/// for its order was parked twice; the expiry dropped one copy and the other cancelled the
/// order when it finally came, while a single delivery leaves it held.
#[test]
fn fuzz_regression_a_redelivered_waiting_event_waits_once() {
    let lines = [
        r#"{"event_id":"e0","type":"order.cancelled","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C-0","order_id":"O-0"}"#,
        r#"{"event_id":"e0","type":"profile.group","occurred_at":"2026-03-01T12:00:00Z","group_id":"G-0","credit_limit":"8269.55","currency":"EUR"}"#,
        r#"{"event_id":"e2","type":"order.placed","occurred_at":"2026-01-08T12:00:00Z","customer_id":"C-0","order_id":"O-0","amount":"0.00","currency":"EUR"}"#,
    ];
    let mut policy = Policy::default();
    policy.bounds.event_ids_per_account = 0;
    policy.bounds.closed_ids_per_account = 1;
    policy.bounds.pending_per_account = 3;
    let run = |copies: usize| -> Vec<String> {
        let mut engine = Engine::new(policy.clone());
        let mut out = Vec::new();
        for l in &lines {
            let e = credit_sentinel::codec::decode_event(l.as_bytes()).expect("valid");
            for _ in 0..copies {
                engine.apply(&e, &mut out);
            }
        }
        out.iter()
            .filter_map(|o| match o {
                Output::Decision(d) => Some(serde_json::to_string(d).expect("json")),
                Output::DeliveryDecision(d) => Some(serde_json::to_string(d).expect("json")),
                Output::Alert(a) => Some(serde_json::to_string(a).expect("json")),
                Output::DeadLetter(_) => None,
            })
            .collect()
    };
    assert_eq!(run(1), run(2));
}
