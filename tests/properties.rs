//! Property tests of the core's invariants: the exposure identity holds after every event;
//! feeding any event twice changes nothing; the same input gives byte-identical output; no
//! input, however broken, makes the engine panic; every order gets exactly one initial decision.

mod common;

use common::replay_bytes;
use credit_sentinel::codec::{decode_event, encode_event};
use credit_sentinel::model::*;
use credit_sentinel::policy::ReleaseOrder;
use credit_sentinel::{state, Engine, Policy};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::HashMap;

const CUSTOMERS: [&str; 3] = ["C-1", "C-2", "C-3"];

fn eur() -> Currency {
    Currency::parse("EUR").unwrap()
}

fn money() -> impl Strategy<Value = Decimal> {
    prop_oneof![
        (0i64..=2_000_000).prop_map(|c| Decimal::new(c, 2)),
        Just(Decimal::ZERO),
        (1i64..=5).prop_map(|n| Decimal::new(n * 999_999_999_999_999, 0) / Decimal::new(10, 0)),
    ]
}

fn positive_money() -> impl Strategy<Value = Decimal> {
    (1i64..=2_000_000).prop_map(|c| Decimal::new(c, 2))
}

fn id(prefix: &'static str) -> impl Strategy<Value = String> {
    (0u8..8).prop_map(move |n| format!("{prefix}-{n}"))
}

fn body() -> impl Strategy<Value = EventBody> {
    prop_oneof![
        4 => (id("O"), money(), prop::bool::weighted(0.05)).prop_map(|(order_id, amount, usd)| EventBody::OrderPlaced(OrderPlaced {
            order_id,
            amount,
            currency: if usd { Currency::parse("USD").unwrap() } else { eur() },
        })),
        1 => id("O").prop_map(|order_id| EventBody::OrderCancelled { order_id }),
        3 => (id("S"), id("O"), positive_money(), prop::option::of(-40i64..60), prop::option::of(id("D")), prop::bool::weighted(0.1)).prop_map(|(shipment_id, order_id, amount, due, delivery_id, usd)| {
            EventBody::ShipmentShipped(ShipmentShipped {
                shipment_id,
                order_id,
                amount,
                currency: if usd { Currency::parse("USD").unwrap() } else { eur() },
                due_at: due.map(|d| Timestamp::parse_rfc3339("2026-01-15T00:00:00Z").unwrap().plus_days(d)),
                delivery_id,
            })
        }),
        2 => (id("D"), id("O"), positive_money()).prop_map(|(delivery_id, order_id, amount)| {
            EventBody::DeliveryRequested(DeliveryRequest { delivery_id, order_id, amount, currency: eur() })
        }),
        1 => (50u32..200, any::<bool>()).prop_map(|(cents, eur_base)| {
            let (eur, usd) = (eur(), Currency::parse("USD").unwrap());
            let (base, quote) = if eur_base { (eur, usd) } else { (usd, eur) };
            EventBody::FxRate(FxQuote { base, quote, rate: Decimal::new(i64::from(cents), 2), key: format!("fx/{base}/{quote}") })
        }),
        3 => (id("P"), positive_money(), prop::collection::vec(id("S"), 0..3), any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(settlement_id, amount, applies_to, credit_note, usd)| EventBody::Settlement(Settlement {
                kind: if credit_note { SettlementKind::CreditNote } else { SettlementKind::Payment },
                settlement_id,
                amount,
                currency: if usd { Currency::parse("USD").unwrap() } else { eur() },
                applies_to,
            })
        ),
        2 => (
            money(),
            prop::option::of(prop::sample::select(vec![Grade::A, Grade::B, Grade::C, Grade::D])),
            prop::option::of(0u32..90),
            prop::option::of(money()),
            prop::sample::select(vec![AccountStatus::Active, AccountStatus::Active, AccountStatus::Blocked, AccountStatus::PrepayOnly]),
            prop::option::of(Just("G".to_string())),
            prop::option::of((money(), 0i64..30)),
            prop::option::of(0i64..60),
        )
            .prop_map(|(limit, grade, terms, max_order, status, group, temp, review)| {
                let base = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
                EventBody::CustomerProfile(Box::new(CustomerProfile {
                    credit_limit: limit,
                    currency: eur(),
                    grade,
                    payment_terms_days: terms,
                    max_order_amount: max_order,
                    tolerance_pct: None,
                    status,
                    group_id: group,
                    temporary_limit: temp.map(|(amount, d)| TemporaryLimit { amount, expires_at: base.plus_days(d) }),
                    review_date: review.map(|d| base.plus_days(d)),
                    name: None,
                }))
            }),
        1 => money().prop_map(|limit| EventBody::GroupProfile(GroupProfile {
            group_id: "G".into(),
            credit_limit: limit,
            currency: eur(),
            tolerance_pct: None,
        })),
        2 => (id("O"), prop::sample::select(vec![CommandKind::ReleaseHold, CommandKind::RejectHold, CommandKind::Block, CommandKind::Unblock, CommandKind::ReleaseDelivery, CommandKind::RejectDelivery]), prop::sample::select(vec!["ann", "bob"]), id("D"))
            .prop_map(|(order_id, kind, actor, delivery_id)| EventBody::Command(Command {
                kind,
                order_id: matches!(kind, CommandKind::ReleaseHold | CommandKind::RejectHold).then_some(order_id),
                delivery_id: matches!(kind, CommandKind::ReleaseDelivery | CommandKind::RejectDelivery).then_some(delivery_id),
                actor: actor.into(),
                note: "n".into(),
            })),
    ]
}

/// A stream of valid events, mostly in time order with some stragglers, as encoded bytes.
fn stream(max: usize) -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        (body(), 0usize..3, 0i64..96, prop::bool::weighted(0.1)),
        1..max,
    )
    .prop_map(|items| {
        let mut t = Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap();
        items
            .into_iter()
            .enumerate()
            .map(|(i, (body, c, hours, straggler))| {
                t = t.plus_us(hours * 3_600_000_000);
                let at = if straggler {
                    t.plus_us(-50 * 3_600_000_000)
                } else {
                    t
                };
                let customer_id =
                    (!matches!(body, EventBody::GroupProfile(_) | EventBody::FxRate(_)))
                        .then(|| CUSTOMERS[c].to_string());
                let ev = Event {
                    event_id: format!("e{i}"),
                    occurred_at: at,
                    customer_id,
                    body,
                };
                encode_event(&ev).into_bytes()
            })
            .collect()
    })
}

fn policy(first_fit: bool, four_eyes: bool) -> Policy {
    let mut p = Policy::default();
    if first_fit {
        p.release_order = ReleaseOrder::FirstFit;
    }
    if four_eyes {
        p.four_eyes_amount = Some(Decimal::from(1000));
    }
    p.small_order_amount = Some(Decimal::from(5));
    // A starting rate, so that USD items are accepted; fx.rate events move it.
    p.fx_rates
        .insert((Currency::parse("USD").unwrap(), eur()), Decimal::new(9, 1));
    p.bounds.pending_ttl_us = 48 * 3_600_000_000;
    p
}

fn run(policy: &Policy, lines: &[Vec<u8>]) -> (Vec<Output>, Engine) {
    let mut engine = Engine::new(policy.clone());
    let mut out = Vec::new();
    for l in lines {
        let ev = decode_event(l).expect("generated events are valid");
        engine.apply(&ev, &mut out);
        engine
            .verify_invariants()
            .unwrap_or_else(|e| panic!("identity broken after {}: {e}", ev.event_id));
    }
    (out, engine)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn exposure_identity_and_one_initial_decision_per_order(lines in stream(60), ff in any::<bool>(), fe in any::<bool>()) {
        let (out, engine) = run(&policy(ff, fe), &lines);
        let mut initial: HashMap<(String, String), usize> = HashMap::new();
        let mut finals: HashMap<(String, String), usize> = HashMap::new();
        for o in &out {
            if let Output::Decision(d) = o {
                prop_assert_eq!(d.exposure.total, d.exposure.open_orders + d.exposure.receivables - d.exposure.unapplied_credit);
                let key = (d.customer_id.clone(), d.order_id.clone());
                match d.status {
                    DecisionStatus::Approved | DecisionStatus::Held => *initial.entry(key).or_default() += 1,
                    _ => {
                        prop_assert!(initial.contains_key(&key), "a final decision without an initial one");
                        *finals.entry(key).or_default() += 1;
                    }
                }
            }
        }
        prop_assert!(initial.values().all(|n| *n == 1), "an order decided twice: {:?}", initial);
        prop_assert!(finals.values().all(|n| *n == 1), "an order ended twice: {:?}", finals);
        for acc in engine.accounts() {
            let e = acc.exposure();
            prop_assert_eq!(e.total, e.open_orders + e.receivables - e.unapplied_credit);
        }
    }

    #[test]
    fn feeding_any_event_twice_changes_nothing(lines in stream(50), pick in any::<prop::sample::Index>(), gap in 0usize..20) {
        let p = policy(false, true);
        let (want, _) = run(&p, &lines);
        let i = pick.index(lines.len());
        let mut dup = lines.clone();
        let at = (i + 1 + gap).min(dup.len());
        dup.insert(at, lines[i].clone());
        let (got, _) = run(&p, &dup);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn restoring_from_the_changelog_mid_stream_changes_nothing(lines in stream(60), cut in any::<prop::sample::Index>()) {
        // The first engine writes a compacted changelog the way the runtime does: after each
        // event, a record for every account and group `take_changed` reports.
        let p = policy(false, true);
        let (want, _) = run(&p, &lines);
        let k = cut.index(lines.len() + 1);
        let mut first = Engine::new(p.clone());
        let mut got = Vec::new();
        let mut changelog: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
        for l in &lines[..k] {
            first.apply(&decode_event(l).expect("valid"), &mut got);
            let (accounts, groups) = first.take_changed();
            for g in groups {
                let (key, value) = state::encode_group(&first, &g).expect("changed group exists");
                changelog.insert(key, value);
            }
            for a in accounts {
                let (key, value) = state::encode_account(&first, &a).expect("changed account exists");
                changelog.insert(key, value);
            }
        }
        prop_assert_eq!(changelog.len(), state::snapshot_all(&first).len(), "every account and group was written");
        let mut second = Engine::new(p.clone());
        // Groups sort before accounts ("g/" > "a/" is false), so restore groups first explicitly.
        for (key, value) in changelog.iter().filter(|(k, _)| k.starts_with("g/")).chain(changelog.iter().filter(|(k, _)| k.starts_with("a/"))) {
            let record = state::decode(key, value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            state::restore(&mut second, record);
        }
        if let Some(c) = first.clock() {
            second.restore_clock(c);
        }
        // The runtime's checkpoint carries the live FX quotes beside the clock.
        second.restore_rates(&first.rates().live());
        second.verify_invariants().map_err(TestCaseError::fail)?;
        for l in &lines[k..] {
            second.apply(&decode_event(l).expect("valid"), &mut got);
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn replaying_the_same_input_twice_is_byte_identical(lines in stream(60), junk in prop::collection::vec(any::<Vec<u8>>(), 0..4)) {
        let mut input = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            input.extend_from_slice(l);
            input.push(b'\n');
            if let Some(j) = junk.get(i) {
                input.extend(j.iter().filter(|b| **b != b'\n'));
                input.push(b'\n');
            }
        }
        let a = replay_bytes(policy(false, false), &input);
        let b = replay_bytes(policy(false, false), &input);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(lines in prop::collection::vec(any::<Vec<u8>>(), 0..20)) {
        let mut engine = Engine::new(Policy::default());
        let mut out = Vec::new();
        for l in &lines {
            if let Ok(ev) = decode_event(l) {
                engine.apply(&ev, &mut out);
            }
        }
    }

    /// Arbitrary bytes almost never decode, so they rarely reach the engine: here a valid
    /// stream is damaged in a few places (a byte changed, a line cut short, two lines spliced),
    /// so that most lines still reach the engine, mixed with damaged ones that decode into
    /// something else or not at all. No panic, and the exposure identity holds after each.
    #[test]
    fn a_damaged_stream_reaches_the_engine_without_panic_or_a_broken_identity(
        mut lines in stream(30),
        damage in prop::collection::vec(
            (any::<prop::sample::Index>(), any::<prop::sample::Index>(), any::<u8>(), 0u8..3),
            1..8,
        ),
    ) {
        for (line, at, byte, how) in &damage {
            let n = lines.len();
            let l = line.index(n);
            if lines[l].is_empty() || lines[(l + 1) % n].is_empty() {
                continue;
            }
            let pos = at.index(lines[l].len());
            match how {
                0 => lines[l][pos] = *byte,
                1 => lines[l].truncate(pos),
                _ => {
                    let other = lines[(l + 1) % n].clone();
                    lines[l].truncate(pos);
                    lines[l].extend_from_slice(&other[at.index(other.len())..]);
                }
            }
        }
        let mut engine = Engine::new(Policy::default());
        let mut out = Vec::new();
        let mut applied = 0usize;
        for l in &lines {
            if let Ok(ev) = decode_event(l) {
                engine.apply(&ev, &mut out);
                applied += 1;
                engine.verify_invariants().map_err(TestCaseError::fail)?;
            }
        }
        prop_assert!(
            applied + damage.len() >= lines.len(),
            "every undamaged line reaches the engine: {} of {}", applied, lines.len()
        );
    }

    #[test]
    fn damaged_or_arbitrary_snapshots_are_refused_without_panic(
        lines in stream(30),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        junk in any::<Vec<u8>>(),
    ) {
        let (_, engine) = run(&policy(false, false), &lines);
        for (key, value) in state::snapshot_all(&engine) {
            // The positive control: the snapshot as written reads back.
            prop_assert!(state::decode(&key, &value).is_ok(), "{} reads back", key);
            let mut damaged = value.clone();
            for (i, b) in &flips {
                let at = 2 + i.index(damaged.len() - 2);
                damaged[at] ^= b | 1;
            }
            // Either refused or read as some state: never a panic.
            let _ = state::decode(&key, &damaged);
            let _ = state::decode(&key, &value[..cut.index(value.len())]);
            let mut arbitrary = vec![0u8, 2];
            arbitrary.extend_from_slice(&junk);
            let _ = state::decode(&key, &arbitrary);
        }
    }

    #[test]
    fn json_shaped_garbage_never_panics(fields in prop::collection::vec((
        prop::sample::select(vec!["event_id", "type", "occurred_at", "customer_id", "order_id", "amount", "currency", "shipment_id", "payment_id", "applies_to", "credit_limit", "grade", "status", "temporary_limit", "review_date", "due_date", "actor", "group_id", "payment_terms_days", "tolerance_pct"]),
        prop::sample::select(vec!["\"order.placed\"", "\"payment.received\"", "\"profile.customer\"", "\"shipment.shipped\"", "\"command.release_hold\"", "\"profile.group\"", "\"EUR\"", "\"1e400\"", "1e400", "-0", "\"-5\"", "\"2026-01-01T00:00:00Z\"", "\"9999-12-31T23:59:59Z\"", "\"0000-01-01T00:00:00+23:59\"", "\"2026-02-30\"", "null", "[]", "{}", "{\"amount\":\"1\",\"expires_at\":\"2026-01-01T00:00:00Z\"}", "[\"S-1\",\"S-1\"]", "\"\"", "\"x\"", "true", "4294967296", "99999999999999999999999", "\"A\"", "\"prepay_only\""]),
    ), 0..14)) {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        let line = format!("{{{}}}", body.join(","));
        let mut engine = Engine::new(Policy::default());
        let mut out = Vec::new();
        for _ in 0..2 {
            if let Ok(ev) = decode_event(line.as_bytes()) {
                engine.apply(&ev, &mut out);
                engine.verify_invariants().map_err(TestCaseError::fail)?;
            }
        }
    }
}
