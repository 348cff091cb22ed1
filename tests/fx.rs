//! Live FX (CONTRACT.md, "Foreign currencies"): orders, shipments and payments in another
//! currency than the account's, converted at the latest `fx.rate`; revaluation moving accounts
//! across thresholds and freeing room for holds; payments settling their own currency first.

mod common;

use common::*;
use credit_sentinel::model::*;
use credit_sentinel::{state, Engine, Outcome, Policy};
use serde_json::json;

const T0: &str = "2026-03-02T08:00:00Z";
const T1: &str = "2026-03-03T08:00:00Z";
const T2: &str = "2026-03-04T08:00:00Z";

fn rate(s: &mut Scenario, at: &str, base: &str, quote: &str, rate: &str) -> Vec<Output> {
    let line = json!({"event_id": format!("fx-{base}-{quote}-{at}"), "type": "fx.rate", "occurred_at": at, "base": base, "quote": quote, "rate": rate});
    s.raw(line.to_string().as_bytes())
}

fn order_in(s: &mut Scenario, at: &str, order_id: &str, amount: &str, cur: &str) -> Vec<Output> {
    s.send(
        at,
        "order.placed",
        "ACME",
        json!({"order_id": order_id, "amount": amount, "currency": cur}),
    )
}

#[test]
fn an_order_in_usd_on_a_eur_account_is_judged_at_the_converted_amount() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    rate(&mut s, T0, "EUR", "USD", "1.25");
    let out = order_in(&mut s, T1, "O-1", "1000", "USD");
    let d = only_decision(&out);
    assert_eq!(d.status, DecisionStatus::Approved);
    assert_eq!(d.exposure.open_orders, dec("800"));
    assert_eq!(d.amount_account_currency, Some(dec("800")));
    let v = serde_json::to_value(d).unwrap();
    assert_eq!(v["amount"], "1000.00");
    assert_eq!(v["currency"], "USD");
    assert_eq!(v["amount_account_currency"], "800.00");
    assert_eq!(v["fx_rate"], "0.8");
    // A EUR order carries neither field.
    let out = order_in(&mut s, T1, "O-2", "10", "EUR");
    let v = serde_json::to_value(only_decision(&out)).unwrap();
    assert!(v.get("fx_rate").is_none() && v.get("amount_account_currency").is_none());
}

#[test]
fn without_a_rate_an_order_is_held_currency_mismatch_and_still_needs_a_person_after_one() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    let d = only_decision(&order_in(&mut s, T0, "O-1", "10", "GBP")).clone();
    assert_eq!(codes(&d), ["CURRENCY_MISMATCH"]);
    let out = rate(&mut s, T1, "GBP", "EUR", "1.15");
    assert!(decisions(&out).is_empty(), "a person decides: {out:?}");
    // A shipment or payment in a currency without a rate is dead-lettered.
    let out = s.send(
        T1,
        "payment.received",
        "ACME",
        json!({"payment_id": "P-1", "amount": "5", "currency": "JPY"}),
    );
    assert_eq!(dead_letters(&out)[0].error, ErrorCode::CurrencyMismatch);
}

#[test]
fn a_rate_move_revalues_foreign_items_and_alerts_across_a_threshold() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    rate(&mut s, T0, "USD", "EUR", "0.60");
    // 1000 USD = 600 EUR: utilization 0.60, below the first threshold (0.70).
    order_in(&mut s, T0, "O-1", "1000", "USD");
    s.send(
        T0,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "1000", "currency": "USD"}),
    );
    assert_eq!(s.exposure("ACME").receivables, dec("600"));
    // The dollar rises: 1000 USD = 900 EUR, crossing 0.70 and 0.85.
    let out = rate(&mut s, T1, "USD", "EUR", "0.90");
    assert_eq!(s.exposure("ACME").receivables, dec("900"));
    let a = alerts_of(&out, AlertKind::UtilizationThreshold);
    assert_eq!(a.len(), 2, "{out:?}");
    assert_eq!(a[0].details["cause"], "fx");
    assert_eq!(a[1].details["threshold"], "0.85");
    assert_eq!(a[1].details["utilization"], "0.90");
    // An older quote arriving late changes nothing.
    let (outcome, out) = s.outcome_of(
        T0,
        "fx.rate",
        "ACME",
        json!({"base": "USD", "quote": "EUR", "rate": "0.10"}),
    );
    assert_eq!((outcome, out.len()), (Outcome::Duplicate, 0));
    assert_eq!(s.exposure("ACME").receivables, dec("900"));
    // The reverse quote is the same pair: EUR/USD 2 means USD/EUR 0.5.
    rate(&mut s, T2, "EUR", "USD", "2");
    assert_eq!(s.exposure("ACME").receivables, dec("500"));
}

#[test]
fn a_rate_move_that_frees_room_releases_a_hold() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({"tolerance_pct": "0"}));
    rate(&mut s, T0, "USD", "EUR", "0.90");
    order_in(&mut s, T0, "O-1", "1000", "USD"); // 900 EUR
    let held = only_decision(&order_in(&mut s, T0, "O-2", "200", "EUR")).clone();
    assert_eq!(codes(&held), ["CREDIT_LIMIT_EXCEEDED"]);
    // The dollar falls: the USD order is worth 750 EUR and O-2 fits.
    let out = rate(&mut s, T1, "USD", "EUR", "0.75");
    let r = only_decision(&out);
    assert_eq!(
        (r.order_id.as_str(), r.status),
        ("O-2", DecisionStatus::Released)
    );
    assert_eq!(r.exposure.open_orders, dec("950"));
    // A held USD order is re-checked at the rate of the moment too.
    let held = only_decision(&order_in(&mut s, T1, "O-3", "200", "USD")).clone();
    assert_eq!(codes(&held), ["CREDIT_LIMIT_EXCEEDED"], "150 EUR > 50 left");
    let out = rate(&mut s, T2, "USD", "EUR", "0.20");
    // O-1 now 200 EUR, O-2 200: O-3 (40 EUR) fits.
    let r = only_decision(&out);
    assert_eq!(
        (r.order_id.as_str(), r.status),
        ("O-3", DecisionStatus::Released)
    );
    assert_eq!(r.exposure.open_orders, dec("440"));
}

#[test]
fn a_payment_settles_its_own_currency_first_then_others_at_the_current_rate() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "100000", json!({}));
    rate(&mut s, T0, "USD", "EUR", "0.50");
    // S-1 (EUR, older) and S-2 (USD, newer).
    order_in(&mut s, T0, "O-1", "100", "EUR");
    order_in(&mut s, T0, "O-2", "300", "USD");
    s.send(T0, "shipment.shipped", "ACME", json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "100", "currency": "EUR", "due_date": "2026-03-10"}));
    s.send(T0, "shipment.shipped", "ACME", json!({"shipment_id": "S-2", "order_id": "O-2", "amount": "300", "currency": "USD", "due_date": "2026-03-20"}));
    assert_eq!(s.exposure("ACME").receivables, dec("250"));
    // 400 USD: S-2 (USD) first, then 100 USD = 50 EUR of S-1.
    s.send(
        T1,
        "payment.received",
        "ACME",
        json!({"payment_id": "P-1", "amount": "400", "currency": "USD"}),
    );
    let acc = s.engine.account("ACME").unwrap();
    assert_eq!(acc.receivables().len(), 1);
    assert_eq!(acc.receivables()[0].shipment_id, "S-1");
    assert_eq!(acc.receivables()[0].open, dec("50"));
    // 200 USD more: 50 EUR of S-1 (100 USD), the other 100 USD becomes 50 EUR of credit.
    s.send(
        T1,
        "payment.received",
        "ACME",
        json!({"payment_id": "P-2", "amount": "200", "currency": "USD"}),
    );
    let e = s.exposure("ACME");
    assert_eq!((e.receivables, e.unapplied_credit), (dec("0"), dec("50")));
}

#[test]
fn conversions_round_half_even_to_four_places() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "100000", json!({}));
    rate(&mut s, T0, "USD", "EUR", "0.00005");
    // 1 USD = 0.00005 EUR: half-even to 0.0000 would be nothing; an open item is worth at
    // least 0.0001. 3 USD = 0.00015 -> 0.0002.
    order_in(&mut s, T0, "O-1", "3", "USD");
    assert_eq!(s.exposure("ACME").open_orders, dec("0.0002"));
}

#[test]
fn fx_rate_is_validated() {
    let mut s = Scenario::default();
    for (rate, why) in [
        ("0", "rate"),
        ("-1", "rate"),
        ("1.12345678901", "rate"),
        ("abc", "rate"),
    ] {
        let out = s.raw(
            json!({"event_id": "x", "type": "fx.rate", "occurred_at": T0, "base": "EUR", "quote": "USD", "rate": rate})
                .to_string()
                .as_bytes(),
        );
        let r = dead_letters(&out);
        assert_eq!(r[0].error, ErrorCode::InvalidField, "{rate}");
        assert!(r[0].detail.starts_with(why), "{}", r[0].detail);
    }
    let out = s.raw(
        json!({"event_id": "x", "type": "fx.rate", "occurred_at": T0, "base": "EUR", "quote": "EUR", "rate": "1"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(dead_letters(&out)[0].error, ErrorCode::InvalidField);
    let ok = s.raw(
        json!({"event_id": "y", "type": "fx.rate", "occurred_at": T0, "base": "EUR", "quote": "USD", "rate": 1.0845})
            .to_string()
            .as_bytes(),
    );
    assert!(ok.is_empty(), "{ok:?}");
}

#[test]
fn a_restore_keeps_foreign_items_and_the_rates() {
    let mut s = Scenario::default();
    s.profile(T0, "ACME", "1000", json!({}));
    rate(&mut s, T0, "USD", "EUR", "0.50");
    order_in(&mut s, T0, "O-1", "1000", "USD");
    s.send(
        T0,
        "shipment.shipped",
        "ACME",
        json!({"shipment_id": "S-1", "order_id": "O-1", "amount": "400", "currency": "USD"}),
    );
    let mut restored = Engine::new(Policy::default());
    for (key, value) in state::snapshot_all(&s.engine) {
        state::restore(&mut restored, state::decode(&key, &value).unwrap());
    }
    restored.restore_clock(s.engine.clock().unwrap());
    restored.restore_rates(&s.engine.rates().live());
    restored.verify_invariants().unwrap();
    assert_eq!(restored.account("ACME"), s.engine.account("ACME"));
    // The restored engine revalues like the original.
    let line = json!({"event_id": "fx2", "type": "fx.rate", "occurred_at": T1, "base": "USD", "quote": "EUR", "rate": "1"});
    let ev = credit_sentinel::codec::decode_event(line.to_string().as_bytes()).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    s.engine.apply(&ev, &mut a);
    restored.apply(&ev, &mut b);
    assert_eq!(a, b);
    assert_eq!(
        restored.account("ACME").unwrap().exposure().total,
        dec("1000")
    );
}

/// Found by the fuzz target: with a default limit in EUR for unknown customers, a credit note
/// in USD made the account a USD one while its terms spoke EUR, so a EUR order was booked
/// unconverted and the next revaluation found it valued wrongly. The account of a customer
/// without a profile now keeps the default limit's currency.
#[test]
fn an_item_booked_after_a_rate_is_valued_as_revaluation_would_value_it() {
    let mut policy = credit_sentinel::config::load_with_env(None, Vec::<(String, String)>::new())
        .unwrap()
        .policy;
    policy.unknown_customer_limit = Some((dec("1000"), Currency::parse("EUR").unwrap()));
    policy.bounds.event_ids_per_account = 0;
    policy.bounds.closed_ids_per_account = 1;
    policy.bounds.pending_per_account = 0;
    let mut s = Scenario::new(policy);
    let lines = [
        r#"{"event_id":"e0","type":"credit_note.issued","occurred_at":"2026-02-28T09:59:59Z","customer_id":"C-3","credit_note_id":"P-4","amount":"5524.48","currency":"USD","applies_to":["S-4","S-1"]}"#,
        r#"{"event_id":"e1","type":"fx.rate","occurred_at":"2026-01-07T04:00:00Z","base":"USD","quote":"EUR","rate":"1.08765"}"#,
        r#"{"event_id":"e2","type":"fx.rate","occurred_at":"2026-01-13T08:00:00Z","base":"USD","quote":"EUR","rate":"1.08765"}"#,
        r#"{"event_id":"e3","type":"fx.rate","occurred_at":"2026-01-22T04:00:00Z","base":"USD","quote":"EUR","rate":"1.08765"}"#,
        r#"{"event_id":"e4","type":"fx.rate","occurred_at":"2026-01-28T08:00:00Z","base":"USD","quote":"EUR","rate":"1.08765"}"#,
        r#"{"event_id":"e5","type":"order.placed","occurred_at":"2026-02-06T12:00:00Z","customer_id":"C-3","order_id":"O-7","amount":"49.00","currency":"EUR"}"#,
    ];
    for l in lines {
        s.raw(l.as_bytes());
        s.engine.verify_invariants().unwrap();
    }
    let order = s.engine.account("C-3").unwrap().orders()["O-7"].clone();
    assert_eq!(order.open_remaining, dec("49"));
    let acc = s.engine.account("C-3").unwrap();
    assert_eq!(acc.currency, Currency::parse("EUR"));
}

/// A fuzz finding (CI, 2026-12-02): an account with no profile and no default limit took no
/// currency from its orders, so a later USD payment made it a USD account whose EUR orders
/// were then valued as if they were foreign and had never been converted. Such an account now
/// takes its first order's currency at its first money event.
#[test]
fn an_account_without_a_profile_takes_its_first_orders_currency() {
    let mut s = Scenario::default();
    order_in(&mut s, T0, "O-1", "1000.00", "EUR");
    // Held (an unknown customer); a person releases it, so it is open exposure.
    let out = s.command(T0, "command.release_hold", "ACME", Some("O-1"), "alice");
    assert_eq!(only_decision(&out).status, DecisionStatus::Released);
    rate(&mut s, T0, "USD", "EUR", "0.9");
    // Scenario::raw checks the invariants (foreign items at the latest rate) after each event.
    let out = s.send(
        T1,
        "payment.received",
        "ACME",
        json!({"payment_id": "P-1", "amount": "100.00", "currency": "USD"}),
    );
    assert!(dead_letters(&out).is_empty(), "{out:?}");
    let acc = s.engine.account("ACME").unwrap();
    assert_eq!(acc.currency, Currency::parse("EUR"));
    assert_eq!(acc.orders()["O-1"].open_remaining, dec("1000"));
    assert_eq!(s.exposure("ACME").total, dec("910"));
}
