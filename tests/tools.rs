//! The binary's tools that tests elsewhere lean on, compiled here from their source
//! (`src/tools/`): the traffic generator (deterministic, decodable but for its planted faults,
//! exercising the delivery check, a second currency and short periods) and the load sender's
//! clock and pacing.

#[allow(dead_code)]
#[path = "../src/tools/generator.rs"]
mod generator;
#[allow(dead_code)]
#[path = "../src/tools/traffic.rs"]
mod traffic;

use credit_sentinel::model::*;
use generator::{generate, usd, GeneratorConfig};
use std::time::Duration;
use traffic::{burst_schedule, simulated_now};

#[test]
fn deterministic_and_decodable() {
    let cfg = GeneratorConfig {
        customers: 30,
        days: 40,
        ..GeneratorConfig::default()
    };
    let a = generate(&cfg);
    assert_eq!(a, generate(&cfg));
    let bad = a
        .iter()
        .filter(|l| credit_sentinel::codec::decode_event(l.as_bytes()).is_err())
        .count();
    assert_eq!(bad, 3, "exactly the three planted malformed lines");
}

#[test]
fn the_traffic_exercises_the_delivery_check_and_a_second_currency() {
    let cfg = GeneratorConfig {
        customers: 80,
        days: 90,
        faults: false,
        ..GeneratorConfig::default()
    };
    let mut engine = credit_sentinel::Engine::new(credit_sentinel::Policy::default());
    let mut out = Vec::new();
    let (mut rates, mut named) = (0, 0);
    for line in generate(&cfg) {
        let event = credit_sentinel::codec::decode_event(line.as_bytes()).expect("valid");
        match &event.body {
            EventBody::FxRate(_) => rates += 1,
            EventBody::CustomerProfile(p) if p.name.is_some() => named += 1,
            _ => {}
        }
        engine.apply(&event, &mut out);
    }
    assert_eq!(rates, 91, "one quote a day");
    assert!(named >= 80, "{named}");
    let statuses: std::collections::BTreeSet<&str> = out
        .iter()
        .filter_map(|o| match o {
            Output::DeliveryDecision(d) => Some(d.status.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        statuses.contains("approved") && statuses.contains("held"),
        "{statuses:?}"
    );
    let usd_decided = out
        .iter()
        .any(|o| matches!(o, Output::Decision(d) if d.currency == usd() && d.fx_rate.is_some()));
    assert!(usd_decided, "a USD order converted at the day's rate");
    engine.verify_invariants().expect("identity");
}

#[test]
fn short_periods_give_valid_profiles() {
    // Before the fix, `--days` under 10 gave temporary limits expiring in year -292,000.
    for days in 1..=12 {
        let cfg = GeneratorConfig {
            customers: 40,
            days,
            faults: false,
            ..GeneratorConfig::default()
        };
        let start = cfg.start;
        let mut engine = credit_sentinel::Engine::new(credit_sentinel::Policy::default());
        let mut out = Vec::new();
        let mut temporary = 0;
        for line in generate(&cfg) {
            let event = credit_sentinel::codec::decode_event(line.as_bytes()).expect("valid");
            if let EventBody::CustomerProfile(p) = &event.body {
                if let Some(t) = &p.temporary_limit {
                    temporary += 1;
                    assert!(
                        t.expires_at > start && t.expires_at <= start.plus_days(i64::from(days)),
                        "days {days}: {line}"
                    );
                }
            }
            engine.apply(&event, &mut out);
        }
        assert!(temporary > 0, "days {days}: some temporary limits");
        assert!(
            !out.iter()
                .any(|o| matches!(o, credit_sentinel::model::Output::DeadLetter(_))),
            "days {days}: nothing dead-lettered"
        );
    }
}

#[test]
fn the_simulated_clock_runs_fast_then_with_the_wall_clock() {
    let start = Timestamp::parse_rfc3339("2026-08-01T00:00:00Z").unwrap();
    let wall = Timestamp::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
    let day = 86_400.0;
    // One simulated day every 3 s.
    let at = |s: u64| simulated_now(start, day / 3.0, Duration::from_secs(s), wall).to_rfc3339();
    assert_eq!(at(0), "2026-08-01T00:00:00Z");
    assert_eq!(at(3), "2026-08-02T00:00:00Z");
    assert_eq!(at(30), "2026-08-11T00:00:00Z");
    // Never ahead of the wall clock: the future comes in real time.
    assert_eq!(at(3 * 200), "2026-12-01T00:00:00Z");
}

#[test]
fn bursts_then_steady() {
    // rate 100: 1000 per 10 s cycle, 500 in the first second, 500 over the next nine.
    assert_eq!(burst_schedule(0, 100), Duration::ZERO);
    assert!(burst_schedule(499, 100) < Duration::from_secs(1));
    assert!(burst_schedule(500, 100) >= Duration::from_secs(1));
    assert!(burst_schedule(999, 100) < Duration::from_secs(10));
    assert_eq!(burst_schedule(1000, 100), Duration::from_secs(10));
}

/// A read replica's index (state gauges, accounts holding orders or deliveries), kept up to
/// date with each batch's changes and the clock, equals a walk over every account after every
/// batch of generated traffic (faults included: duplicates, reordering, bad lines).
#[test]
fn the_reader_index_equals_a_walk_after_every_batch() {
    use credit_sentinel::engine::read_index::StateGauges;
    use credit_sentinel::{Engine, Policy};
    use std::collections::BTreeSet;
    let lines = generate(&GeneratorConfig {
        customers: 40,
        days: 75,
        seed: 11,
        ..GeneratorConfig::default()
    });
    let mut engine = Engine::new(Policy::default());
    let mut replica = engine.read_replica();
    let mut out = Vec::new();
    let (mut held, mut overdue_batches) = (0, 0);
    for (n, batch) in lines.chunks(29).enumerate() {
        for l in batch {
            if let Ok(e) = credit_sentinel::codec::decode_event(l.as_bytes()) {
                out.clear();
                engine.apply(&e, &mut out);
            }
        }
        let (accounts, groups) = engine.take_changed();
        let accounts: BTreeSet<String> = accounts.into_iter().collect();
        let groups: BTreeSet<String> = groups.into_iter().collect();
        engine.update_replica(&mut replica, &accounts, &groups);
        let g = replica.state_gauges().into_owned();
        assert_eq!(g, StateGauges::walk(&replica), "batch {n}");
        assert_eq!(g, StateGauges::walk(&engine), "batch {n}");
        for deliveries in [false, true] {
            let indexed: Vec<&str> = replica
                .accounts_holding(deliveries)
                .map(|a| a.customer_id.as_str())
                .collect();
            let mut walked: Vec<&str> = engine
                .accounts()
                .filter(|a| {
                    if deliveries {
                        !a.held_deliveries().is_empty()
                    } else {
                        !a.holds().is_empty()
                    }
                })
                .map(|a| a.customer_id.as_str())
                .collect();
            walked.sort_unstable();
            assert_eq!(indexed, walked, "batch {n}, deliveries {deliveries}");
        }
        held += usize::from(g.held_orders > 0);
        overdue_batches += usize::from(g.per_currency.values().any(|c| !c.overdue.is_zero()));
    }
    assert!(held > 10, "the traffic holds orders ({held} batches)");
    assert!(
        overdue_batches > 10,
        "the traffic has overdue items ({overdue_batches} batches)"
    );
}
