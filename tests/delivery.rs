//! The delivery check (CONTRACT.md, "Delivery check"): one scenario per rule at delivery, the
//! delivery queue's re-check triggers, expiry, commands with four-eyes, cancellation, the money a
//! cleared delivery reserves, `SHIPPED_WITHOUT_RELEASE`, and a restore carrying held deliveries.

mod common;

use common::*;
use credit_sentinel::model::*;
use credit_sentinel::{state, Engine, Outcome, Policy};
use serde_json::json;

const T0: &str = "2026-03-02T08:00:00Z";
const T1: &str = "2026-03-03T08:00:00Z";
const T2: &str = "2026-03-04T08:00:00Z";

/// ACME with a 10,000 limit (grade B unless `extra` says otherwise) and an approved order
/// O-1 of 4,000.
fn acme_with_order(policy: Policy, extra: serde_json::Value) -> Scenario {
    let mut s = Scenario::new(policy);
    s.profile(T0, "ACME", "10000", extra);
    assert_eq!(
        only_decision(&s.order(T0, "ACME", "O-1", "4000")).status,
        DecisionStatus::Approved
    );
    s
}

#[test]
fn a_delivery_within_its_approved_order_is_approved_and_reserves_nothing_new() {
    let mut s = acme_with_order(Policy::default(), json!({}));
    let out = s.deliver(T1, "ACME", "DN-1", "O-1", "1500");
    let d = only_delivery(&out);
    assert_eq!(d.status, DecisionStatus::Approved);
    assert!(d.reasons.is_empty());
    assert_eq!(d.delivery_id, "DN-1");
    assert_eq!(d.order_id, "O-1");
    assert_eq!(d.exposure.open_orders, dec("4000"), "no new exposure");
    assert_eq!(d.available, Some(dec("6000")));
    assert!(d.delivery_decision_id.starts_with("ddc-"));
    // The JSON record carries the contract's fields.
    let v = serde_json::to_value(d).unwrap();
    for f in [
        "delivery_decision_id",
        "delivery_id",
        "order_id",
        "customer_id",
        "status",
        "reasons",
        "amount",
        "currency",
        "exposure",
        "credit_limit",
        "available",
        "decided_at",
        "source_event_id",
        "actor",
    ] {
        assert!(v.get(f).is_some(), "{f} missing in {v}");
    }
    assert_eq!(v["amount"], "1500.00");
    assert_eq!(v["status"], "approved");
    // Shipping it moves the money from open orders to receivables, as before.
    let out = s.send(
        T2,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "1500", "currency": "EUR", "delivery_id": "DN-1"}),
    );
    assert!(alerts_of(&out, AlertKind::ShippedWithoutRelease).is_empty());
    let e = s.exposure("ACME");
    assert_eq!((e.open_orders, e.receivables), (dec("2500"), dec("1500")));
    assert!(s.engine.account("ACME").unwrap().deliveries().is_empty());
}

#[test]
fn only_the_part_beyond_the_orders_remainder_meets_the_credit_rule() {
    let mut s = acme_with_order(Policy::default(), json!({"tolerance_pct": "0"}));
    // Remainder 4,000; another order brings exposure to 9,000.
    s.order(T0, "ACME", "O-2", "5000");
    // 4,000 of the 4,800 is covered; 800 is new exposure: 9,000 + 800 <= 10,000.
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "4800")).clone();
    assert_eq!(d.status, DecisionStatus::Approved);
    assert_eq!(d.excess, dec("800"));
    assert_eq!(d.exposure.open_orders, dec("9800"), "the excess counts");
    // O-1's remainder is now taken by DN-1: a second delivery is all excess (1,000 > 200).
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-2", "O-1", "1000")).clone();
    assert_eq!(d.status, DecisionStatus::Held);
    assert_eq!(delivery_codes(&d), ["CREDIT_LIMIT_EXCEEDED"]);
    assert_eq!(
        d.reasons[0].detail,
        "exposure 9800.00 + delivery 1000.00 beyond order O-1's open remainder 0.00 > limit 10000.00"
    );
    // The held delivery reserves nothing.
    assert_eq!(s.exposure("ACME").open_orders, dec("9800"));
    // DN-1 ships: its excess leaves open orders; the payment frees room and DN-2 is released.
    s.send(
        T2,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "4800", "currency": "EUR", "delivery_id": "DN-1"}),
    );
    assert_eq!(s.exposure("ACME").open_orders, dec("5000"));
    assert_eq!(s.exposure("ACME").receivables, dec("4800"));
    let out = s.pay(T2, "ACME", "P-1", "4800", &[]);
    let r = only_delivery(&out);
    assert_eq!(r.delivery_id, "DN-2");
    assert_eq!(r.status, DecisionStatus::Released);
    assert_eq!(
        r.hold_decision_id.as_deref(),
        Some(d.delivery_decision_id.as_str())
    );
}

#[test]
fn a_customer_downgraded_to_d_after_ordering_prepays_at_delivery() {
    let mut s = acme_with_order(Policy::default(), json!({"grade": "B"}));
    s.profile(T1, "ACME", "10000", json!({"grade": "D"}));
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "1000")).clone();
    assert_eq!(d.status, DecisionStatus::Held);
    assert_eq!(delivery_codes(&d), ["PREPAYMENT_REQUIRED"]);
    assert_eq!(
        d.reasons[0].detail,
        "grade D pays before shipment: unapplied credit 0.00 < delivery 1000.00"
    );
    // The prepayment arrives: the delivery is released and the credit earmarked for it.
    let out = s.pay(T2, "ACME", "P-1", "1000", &[]);
    let r = only_delivery(&out);
    assert_eq!(r.status, DecisionStatus::Released);
    assert_eq!(r.exposure.unapplied_credit, dec("1000"));
    let acc = s.engine.account("ACME").unwrap();
    assert_eq!(acc.earmarked(), dec("1000"), "the credit is the delivery's");
    // A second delivery cannot use the same credit.
    let d = only_delivery(&s.deliver(T2, "ACME", "DN-2", "O-1", "500")).clone();
    assert_eq!(delivery_codes(&d), ["PREPAYMENT_REQUIRED"]);
    // Shipping consumes it: the receivable is settled at once.
    s.send(
        T2,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "1000", "currency": "EUR", "delivery_id": "DN-1"}),
    );
    let e = s.exposure("ACME");
    assert_eq!(
        (e.open_orders, e.receivables, e.unapplied_credit),
        (dec("3000"), dec("0"), dec("0"))
    );
}

#[test]
fn an_overdue_customers_delivery_is_held_and_released_by_the_payment() {
    let mut s = acme_with_order(Policy::default(), json!({"grade": "B"}));
    s.send(
        T0,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "1000", "currency": "EUR", "due_date": "2026-03-10"}),
    );
    let d = only_delivery(&s.deliver("2026-03-28T08:00:00Z", "ACME", "DN-1", "O-1", "500")).clone();
    assert_eq!(d.status, DecisionStatus::Held);
    assert_eq!(delivery_codes(&d), ["OVERDUE_DAYS"]);
    assert_eq!(
        d.reasons[0].detail,
        "oldest overdue item S-1 is 18.33 days past due > 15 allowed"
    );
    let out = s.pay("2026-03-29T08:00:00Z", "ACME", "P-1", "1000", &["S-1"]);
    assert_eq!(only_delivery(&out).status, DecisionStatus::Released);
}

#[test]
fn the_overdue_amount_cap_holds_a_delivery() {
    let p = Policy {
        overdue_amount_max: Some(dec("500")),
        ..Policy::default()
    };
    let mut s = acme_with_order(p, json!({"grade": "A"}));
    s.send(
        T0,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "600", "currency": "EUR", "due_date": "2026-03-03"}),
    );
    let d = only_delivery(&s.deliver("2026-03-05T08:00:00Z", "ACME", "DN-1", "O-1", "100")).clone();
    assert_eq!(delivery_codes(&d), ["OVERDUE_AMOUNT"]);
    assert_eq!(d.reasons[0].detail, "overdue 600.00 > cap 500.00");
}

#[test]
fn a_blocked_account_and_an_expired_limit_hold_deliveries() {
    let mut s = acme_with_order(Policy::default(), json!({"review_date": "2026-03-03"}));
    s.command(T0, "command.block", "ACME", None, "risk@example.com");
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "100")).clone();
    assert_eq!(delivery_codes(&d), ["ACCOUNT_BLOCKED", "LIMIT_EXPIRED"]);
    assert_eq!(d.reasons[0].detail, "account blocked by risk@example.com");
    // Unblocking re-checks the queue; the expired limit still holds it.
    let out = s.command(T1, "command.unblock", "ACME", None, "risk@example.com");
    assert!(delivery_decisions(&out).is_empty());
    // A profile with a new review date re-checks it and releases it.
    let out = s.profile(T2, "ACME", "10000", json!({"review_date": "2026-12-31"}));
    assert_eq!(only_delivery(&out).status, DecisionStatus::Released);
}

#[test]
fn a_delivery_for_a_held_order_waits_for_the_order() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    assert_eq!(
        only_decision(&s.order(T0, "ACME", "O-1", "3000")).status,
        DecisionStatus::Held
    );
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "3000")).clone();
    assert_eq!(d.status, DecisionStatus::Held);
    assert_eq!(
        delivery_codes(&d),
        ["ORDER_NOT_APPROVED"],
        "not the credit rule"
    );
    assert_eq!(d.reasons[0].detail, "order O-1 is held");
    // The order is released by a person: the delivery is released after it, in the same pass.
    let out = s.command(
        T2,
        "command.release_hold",
        "ACME",
        Some("O-1"),
        "cm@example.com",
    );
    assert_eq!(only_decision(&out).status, DecisionStatus::Released);
    let r = only_delivery(&out);
    assert_eq!(r.status, DecisionStatus::Released);
    let order_pos = out.iter().position(|o| matches!(o, Output::Decision(_)));
    let delivery_pos = out
        .iter()
        .position(|o| matches!(o, Output::DeliveryDecision(_)));
    assert!(order_pos < delivery_pos, "orders first, then deliveries");
}

#[test]
fn a_delivery_before_its_order_is_released_when_the_order_is_approved() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "10000", json!({}));
    let d = only_delivery(&s.deliver(T0, "ACME", "DN-1", "O-1", "100")).clone();
    assert_eq!(d.reasons[0].detail, "order O-1 is unknown");
    let out = s.order(T1, "ACME", "O-1", "100");
    assert_eq!(only_decision(&out).status, DecisionStatus::Approved);
    assert_eq!(only_delivery(&out).status, DecisionStatus::Released);
}

#[test]
fn deliveries_of_rejected_and_cancelled_orders_are_not_approved() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    s.order(T0, "ACME", "O-1", "3000");
    s.command(
        T0,
        "command.reject_hold",
        "ACME",
        Some("O-1"),
        "cm@example.com",
    );
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "10")).clone();
    assert_eq!(d.reasons[0].detail, "order O-1 is rejected");
    s.order(T0, "ACME", "O-2", "10");
    s.send(T1, "order.cancelled", "ACME", json!({"order_id": "O-2"}));
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-2", "O-2", "10")).clone();
    assert_eq!(d.reasons[0].detail, "order O-2 is cancelled");
}

#[test]
fn every_failed_rule_is_reported_in_the_contracts_order() {
    let p = Policy {
        overdue_amount_max: Some(dec("1")),
        ..Policy::default()
    };
    let mut s = Scenario::new(p);
    s.profile(
        T0,
        "ACME",
        "10000",
        json!({"grade": "D", "status": "blocked", "review_date": "2026-03-01"}),
    );
    s.send(
        T0,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "X", "amount": "600", "currency": "EUR", "due_date": "2026-03-01"}),
    );
    let d = only_delivery(&s.deliver(T2, "ACME", "DN-1", "O-9", "100")).clone();
    assert_eq!(
        delivery_codes(&d),
        [
            "ACCOUNT_BLOCKED",
            "PREPAYMENT_REQUIRED",
            "LIMIT_EXPIRED",
            "OVERDUE_DAYS",
            "OVERDUE_AMOUNT",
            "ORDER_NOT_APPROVED"
        ]
    );
}

#[test]
fn cancelling_an_order_cancels_its_held_deliveries_and_frees_the_approved_ones() {
    let mut s = acme_with_order(Policy::default(), json!({"tolerance_pct": "0"}));
    // DN-1 approved with 1,000 of excess; DN-2 held for credit.
    assert_eq!(
        only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "5000")).excess,
        dec("1000")
    );
    assert_eq!(s.exposure("ACME").open_orders, dec("5000"));
    s.order(T1, "ACME", "O-2", "5000");
    let held = only_delivery(&s.deliver(T1, "ACME", "DN-2", "O-1", "3000")).clone();
    assert_eq!(held.status, DecisionStatus::Held);
    let out = s.send(T2, "order.cancelled", "ACME", json!({"order_id": "O-1"}));
    let c = only_delivery(&out);
    assert_eq!(
        (c.delivery_id.as_str(), c.status),
        ("DN-2", DecisionStatus::Cancelled)
    );
    assert_eq!(
        c.hold_decision_id.as_deref(),
        Some(held.delivery_decision_id.as_str())
    );
    assert_eq!(
        s.exposure("ACME").open_orders,
        dec("5000"),
        "O-1's remainder and DN-1's excess are freed; O-2 stays"
    );
    assert!(s.engine.account("ACME").unwrap().deliveries().is_empty());
}

#[test]
fn a_held_delivery_expires() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    s.order(T0, "ACME", "O-1", "3000");
    let held = only_delivery(&s.deliver(T0, "ACME", "DN-1", "O-1", "10")).clone();
    // The order expires first (placed at the same moment, orders first), then the delivery.
    let out = s.tick("2026-04-02T08:00:00.000001Z");
    assert_eq!(only_decision(&out).status, DecisionStatus::Rejected);
    let r = only_delivery(&out);
    assert_eq!(r.status, DecisionStatus::Rejected);
    assert_eq!(delivery_codes(r), ["HOLD_EXPIRED"]);
    assert_eq!(r.source_event_id, held.source_event_id);
    assert_eq!(r.decided_at.to_rfc3339(), "2026-04-01T08:00:00Z");
}

#[test]
fn deliveries_are_released_and_rejected_by_people_with_four_eyes() {
    let p = Policy {
        four_eyes_amount: Some(dec("1000")),
        ..Policy::default()
    };
    let mut s = Scenario::new(p);
    s.profile(T0, "ACME", "100", json!({}));
    s.order(T0, "ACME", "O-1", "5000");
    s.command(T0, "command.release_hold", "ACME", Some("O-1"), "ann");
    s.command(T0, "command.release_hold", "ACME", Some("O-1"), "bob");
    // Over the limit: a delivery beyond the order is held.
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-1", "O-1", "6000")).clone();
    assert_eq!(delivery_codes(&d), ["CREDIT_LIMIT_EXCEEDED"]);
    // First approval: nothing decided yet; the same approver again is dead-lettered.
    let out = s.delivery_command(T1, "command.release_delivery", "ACME", "DN-1", "ann");
    assert!(out.is_empty(), "{out:?}");
    let out = s.delivery_command(T1, "command.release_delivery", "ACME", "DN-1", "ann");
    assert_eq!(dead_letters(&out)[0].error, ErrorCode::FourEyesSameActor);
    let out = s.delivery_command(T1, "command.release_delivery", "ACME", "DN-1", "bob");
    let r = only_delivery(&out);
    assert_eq!(r.status, DecisionStatus::Released);
    assert_eq!(r.actor.as_deref(), Some("bob"));
    assert_eq!(
        r.reasons[0].detail,
        "released by bob (second approval; first by ann): checked"
    );
    assert_eq!(
        r.exposure.open_orders,
        dec("6000"),
        "order 5,000 + excess 1,000"
    );
    // Reject: a small delivery needs one person.
    s.order(T1, "ACME", "O-2", "50");
    let d = only_delivery(&s.deliver(T1, "ACME", "DN-2", "O-2", "50")).clone();
    assert_eq!(d.status, DecisionStatus::Held);
    let out = s.delivery_command(T2, "command.reject_delivery", "ACME", "DN-2", "ann");
    let r = only_delivery(&out);
    assert_eq!(
        (r.status, r.reasons[0].code),
        (DecisionStatus::Rejected, ReasonCode::Manual)
    );
    // Commands for deliveries that are not held are dead-lettered.
    for id in ["DN-1", "DN-2", "DN-404"] {
        let out = s.delivery_command(T2, "command.reject_delivery", "ACME", id, "ann");
        assert_eq!(
            dead_letters(&out)[0].error,
            ErrorCode::DeliveryNotHeld,
            "{id}"
        );
    }
}

#[test]
fn a_repeated_delivery_id_is_a_duplicate() {
    let mut s = acme_with_order(Policy::default(), json!({}));
    s.deliver(T1, "ACME", "DN-1", "O-1", "100");
    let (outcome, out) = s.outcome_of(
        T1,
        "delivery.requested",
        "ACME",
        json!({"delivery_id": "DN-1", "order_id": "O-1", "amount": "100.00", "currency": "EUR"}),
    );
    assert_eq!((outcome, out.len()), (Outcome::Duplicate, 0));
    // Another amount under the same delivery id is a conflict, dead-lettered; the first stays.
    let out = s.deliver(T1, "ACME", "DN-1", "O-1", "999");
    assert_eq!(dead_letters(&out)[0].error, ErrorCode::DuplicateConflict);
    assert_eq!(
        s.engine.account("ACME").unwrap().deliveries()["DN-1"].amount,
        dec("100")
    );
}

#[test]
fn a_shipment_of_a_held_order_raises_shipped_without_release_and_books_the_receivable() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    s.order(T0, "ACME", "O-1", "3000");
    let out = s.ship(T1, "ACME", "S-1", "O-1", "3000");
    let a = alerts_of(&out, AlertKind::ShippedWithoutRelease);
    assert_eq!(a.len(), 1, "{out:?}");
    assert_eq!(a[0].severity, Severity::Critical);
    assert_eq!(a[0].details["order_status"], "held");
    assert_eq!(a[0].details["delivery_status"], serde_json::Value::Null);
    assert_eq!(a[0].details["shipment_id"], "S-1");
    assert_eq!(s.exposure("ACME").receivables, dec("3000"), "still owed");
    // An approved order shipping raises nothing.
    s.profile(T1, "ACME", "100000", json!({}));
    s.order(T1, "ACME", "O-2", "10");
    let out = s.ship(T2, "ACME", "S-2", "O-2", "10");
    assert!(alerts_of(&out, AlertKind::ShippedWithoutRelease).is_empty());
}

#[test]
fn a_shipment_naming_a_held_delivery_raises_shipped_without_release() {
    let mut s = acme_with_order(Policy::default(), json!({}));
    s.command(T0, "command.block", "ACME", None, "risk");
    s.deliver(T1, "ACME", "DN-1", "O-1", "100");
    let out = s.send(
        T2,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "100", "currency": "EUR", "delivery_id": "DN-1"}),
    );
    let a = alerts_of(&out, AlertKind::ShippedWithoutRelease);
    assert_eq!(a.len(), 1);
    assert_eq!(
        (
            &a[0].details["order_status"],
            &a[0].details["delivery_status"]
        ),
        (&json!("approved"), &json!("held"))
    );
    // A redelivered shipment is a duplicate: judged once.
    let out = s.send(
        T2,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "100", "currency": "EUR", "delivery_id": "DN-1"}),
    );
    assert!(out.is_empty());
}

#[test]
fn a_restart_restores_held_and_cleared_deliveries() {
    let mut s = acme_with_order(
        Policy::default(),
        json!({"tolerance_pct": "0", "name": "Acme Tools GmbH"}),
    );
    s.deliver(T1, "ACME", "DN-1", "O-1", "5000"); // approved, 1,000 excess
    s.command(T1, "command.block", "ACME", None, "risk");
    s.deliver(T1, "ACME", "DN-2", "O-1", "10"); // held
    let mut restored = Engine::new(Policy::default());
    for (key, value) in state::snapshot_all(&s.engine) {
        assert_eq!(&value[..2], &[0, 3]);
        state::restore(&mut restored, state::decode(&key, &value).expect("decodes"));
    }
    restored.restore_clock(s.engine.clock().unwrap());
    restored.verify_invariants().unwrap();
    let acc = restored.account("ACME").unwrap();
    assert_eq!(acc.held_deliveries(), ["DN-2"]);
    assert_eq!(acc.deliveries().len(), 2);
    assert_eq!(acc.exposure().open_orders, dec("5000"));
    assert_eq!(
        acc.profile.as_ref().and_then(|p| p.name.as_deref()),
        Some("Acme Tools GmbH")
    );
    assert_eq!(acc, s.engine.account("ACME").unwrap());
    // The restored queue works: unblocking releases DN-2, and its expiry moment is re-derived.
    assert_eq!(
        restored.timers_by_kind().get("delivery_hold_expiry"),
        Some(&1)
    );
    let ev = credit_sentinel::codec::decode_event(
        br#"{"event_id":"u","type":"command.unblock","occurred_at":"2026-03-04T08:00:00Z","customer_id":"ACME","actor":"risk","note":"ok"}"#,
    )
    .unwrap();
    let mut out = Vec::new();
    restored.apply(&ev, &mut out);
    assert_eq!(only_delivery(&out).status, DecisionStatus::Released);
}

#[test]
fn delivery_decisions_are_replayed_to_their_topic_and_deterministic() {
    let input = br#"{"event_id":"p","type":"profile.customer","occurred_at":"2026-03-02T08:00:00Z","customer_id":"ACME","credit_limit":"1000","currency":"EUR"}
{"event_id":"o","type":"order.placed","occurred_at":"2026-03-02T08:00:00Z","customer_id":"ACME","order_id":"O-1","amount":"500","currency":"EUR"}
{"event_id":"d","type":"delivery.requested","occurred_at":"2026-03-03T08:00:00Z","customer_id":"ACME","delivery_id":"DN-1","order_id":"O-1","amount":"500","currency":"EUR"}
"#;
    let a = replay_bytes(Policy::default(), input);
    assert_eq!(a, replay_bytes(Policy::default(), input));
    let text = String::from_utf8(a).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["topic"], "credit.delivery-decisions");
    assert_eq!(last["key"], "ACME");
    assert_eq!(last["value"]["status"], "approved");
}
