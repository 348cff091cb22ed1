//! Criterion benches of the core under large or adversarial state, each with the baseline it is
//! read against measured in the same run:
//! - `hold_queue/payment_1000_held` (a payment for a customer with 1,000 held orders, each
//!   payment rechecking the queue) vs `hold_queue/payment_none_held` (the same payment stream
//!   for a customer with an empty queue);
//! - `timers/advance_3_days_100k_due` (three days of clock with about 1,000,000 receivable
//!   due moments pending, in which the 100,000 receivables shipped first fall due, each an
//!   OVERDUE alert) vs `timers/advance_hour_none_due` (the same engine, an hour in which
//!   nothing is due: the cost of having the moments pending);
//! - `restore/decode_and_restore` (100,000 account snapshots decoded and restored into an
//!   empty engine) vs `restore/decode_only`, and `restore/decode_and_restore_json_v1` (the
//!   same snapshots in the JSON format earlier builds wrote);
//! - `snapshot/encode` and `snapshot/decode` (every account of the sample traffic: 250
//!   customers, 120 days, with their id and settlement histories) vs `snapshot/encode_json_v1`
//!   and `snapshot/decode_json_v1` (the same accounts in the earlier JSON format).
//!
//! Run: `cargo bench --bench state` (add `-- --quick` for a short run).

/// The binary's traffic generator, compiled from its source.
#[allow(dead_code)]
#[path = "../src/tools/generator.rs"]
mod generator;

// The allocator the binary ships with (src/main.rs), so these figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use credit_sentinel::codec::decode_event;
use credit_sentinel::model::{Event, Output, Timestamp};
use credit_sentinel::state::{self, StateRecord};
use credit_sentinel::{Engine, Policy};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

const DAY_US: i64 = 86_400_000_000;

fn ev(json: String) -> Event {
    decode_event(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e:?}"))
}

fn at(day: i64, second: i64) -> String {
    let t = Timestamp(
        Timestamp::parse_rfc3339("2026-01-05T00:00:00Z")
            .expect("date")
            .0
            + day * DAY_US
            + second * 1_000_000,
    );
    t.to_string()
}

fn apply_all(engine: &mut Engine, events: &[Event]) {
    let mut out: Vec<Output> = Vec::new();
    for e in events {
        out.clear();
        engine.apply(e, &mut out);
    }
}

/// A customer at its limit with `held` orders waiting, and 100 payments of 10 to apply.
fn hold_setup(held: usize) -> (Engine, Vec<Event>) {
    let mut engine = Engine::new(Policy::default());
    let mut events = vec![
        ev(format!(
            r#"{{"event_id":"p","type":"profile.customer","occurred_at":"{}","customer_id":"C","credit_limit":"100000.00","currency":"EUR","grade":"B","tolerance_pct":"0","payment_terms_days":30}}"#,
            at(0, 0)
        )),
        ev(format!(
            r#"{{"event_id":"o0","type":"order.placed","occurred_at":"{}","customer_id":"C","order_id":"SO-0","amount":"100000.00","currency":"EUR"}}"#,
            at(0, 1)
        )),
        ev(format!(
            r#"{{"event_id":"s0","type":"shipment.shipped","occurred_at":"{}","customer_id":"C","shipment_id":"DN-0","order_id":"SO-0","amount":"100000.00","currency":"EUR"}}"#,
            at(0, 2)
        )),
    ];
    for i in 0..held {
        events.push(ev(format!(r#"{{"event_id":"o{}","type":"order.placed","occurred_at":"{}","customer_id":"C","order_id":"SO-{}","amount":"5000.00","currency":"EUR"}}"#, i + 1, at(1, i as i64), i + 1)));
    }
    apply_all(&mut engine, &events);
    let payments = (0..100)
        .map(|i| ev(format!(r#"{{"event_id":"pay{i}","type":"payment.received","occurred_at":"{}","customer_id":"C","payment_id":"PAY-{i}","amount":"10.00","currency":"EUR","applies_to":["DN-0"]}}"#, at(2, i))))
        .collect();
    (engine, payments)
}

fn hold_queue(c: &mut Criterion) {
    let mut g = c.benchmark_group("hold_queue");
    g.throughput(Throughput::Elements(100));
    for (name, held) in [("payment_1000_held", 1000), ("payment_none_held", 0)] {
        let (engine, payments) = hold_setup(held);
        assert_eq!(
            engine.accounts().map(|a| a.holds().len()).sum::<usize>(),
            held,
            "the setup holds what it says"
        );
        g.bench_function(name, |b| {
            b.iter_batched(
                || engine.clone(),
                |mut e| {
                    apply_all(&mut e, &payments);
                    e
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// 100,000 customers with 10 shipped orders each, shipped over 30 days: about 1,000,000
/// receivables whose due moments are pending.
fn timers_setup() -> Engine {
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    let customers = 100_000;
    for c in 0..customers {
        out.clear();
        engine.apply(&ev(format!(r#"{{"event_id":"p{c}","type":"profile.customer","occurred_at":"{}","customer_id":"C{c}","credit_limit":"1000000.00","currency":"EUR","grade":"B","payment_terms_days":30}}"#, at(0, 0))), &mut out);
    }
    for k in 0..10 {
        for c in 0..customers {
            let day = (k * 3 + c % 3) as i64;
            let second = (c % 80_000) as i64;
            out.clear();
            engine.apply(&ev(format!(r#"{{"event_id":"o{c}-{k}","type":"order.placed","occurred_at":"{}","customer_id":"C{c}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#, at(day, second))), &mut out);
            out.clear();
            engine.apply(&ev(format!(r#"{{"event_id":"s{c}-{k}","type":"shipment.shipped","occurred_at":"{}","customer_id":"C{c}","shipment_id":"DN-{c}-{k}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#, at(day, second + 1))), &mut out);
        }
    }
    engine
}

fn timers(c: &mut Criterion) {
    let engine = timers_setup();
    let pending = engine.timers_by_kind().values().sum::<usize>();
    assert!(pending >= 1_000_000, "{pending} due moments pending");
    let now = engine.clock().expect("clock");
    // The first shipments (days 0 to 2) fall due on days 30 to 32.
    let due_day = Timestamp(now.0 + 3 * DAY_US);
    let mut check = engine.clone();
    let mut fired = Vec::new();
    check.advance_clock(due_day, &mut fired);
    assert!(
        fired.len() >= 99_000,
        "{} outputs fired in the three days",
        fired.len()
    );
    eprintln!("timers: {} outputs fire in the three days", fired.len());
    drop(check);
    let mut g = c.benchmark_group("timers");
    g.sample_size(10);
    g.bench_function("advance_3_days_100k_due", |b| {
        b.iter_batched(
            || engine.clone(),
            |mut e| {
                let mut out = Vec::new();
                e.advance_clock(due_day, &mut out);
                black_box(out.len());
                e
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("advance_hour_none_due", |b| {
        b.iter_batched(
            || engine.clone(),
            |mut e| {
                let mut out = Vec::new();
                e.advance_clock(Timestamp(now.0 + DAY_US / 24), &mut out);
                black_box(out.len());
                e
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn restore(c: &mut Criterion) {
    // 100,000 accounts with 5 open items each (3 open orders, 2 receivables).
    let mut engine = Engine::new(Policy::default());
    let mut out = Vec::new();
    for c in 0..100_000 {
        let mut one = vec![ev(format!(
            r#"{{"event_id":"p{c}","type":"profile.customer","occurred_at":"{}","customer_id":"C{c}","credit_limit":"1000000.00","currency":"EUR","grade":"B","payment_terms_days":30}}"#,
            at(0, 0)
        ))];
        for k in 0..5 {
            one.push(ev(format!(r#"{{"event_id":"o{c}-{k}","type":"order.placed","occurred_at":"{}","customer_id":"C{c}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#, at(0, 10 + k))));
        }
        for k in 0..2 {
            one.push(ev(format!(r#"{{"event_id":"s{c}-{k}","type":"shipment.shipped","occurred_at":"{}","customer_id":"C{c}","shipment_id":"DN-{c}-{k}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#, at(0, 20 + k))));
        }
        for e in &one {
            out.clear();
            engine.apply(e, &mut out);
        }
    }
    let snapshots: Vec<(String, Vec<u8>)> = engine
        .accounts()
        .filter_map(|a| state::encode_account(&engine, &a.customer_id))
        .collect();
    drop(engine);
    let json: Vec<(String, Vec<u8>)> = snapshots
        .iter()
        .filter_map(|(k, v)| match state::decode(k, v) {
            Ok(StateRecord::Account(a)) => Some((k.clone(), state::encode_json_v1(a.as_ref()))),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    g.throughput(Throughput::Elements(snapshots.len() as u64));
    let restore_all = |records: &[(String, Vec<u8>)]| {
        let mut e = Engine::new(Policy::default());
        for (k, v) in records {
            if let Ok(StateRecord::Account(a)) = state::decode(k, v) {
                e.restore_account(a);
            }
        }
        e
    };
    g.bench_function("decode_and_restore", |b| b.iter(|| restore_all(&snapshots)));
    g.bench_function("decode_and_restore_json_v1", |b| {
        b.iter(|| restore_all(&json))
    });
    g.bench_function("decode_only", |b| {
        b.iter(|| {
            for (k, v) in &snapshots {
                black_box(state::decode(k, v).ok());
            }
        })
    });
    g.finish();
}

fn snapshot(c: &mut Criterion) {
    use generator::GeneratorConfig;
    let engine = generator::replayed(
        &GeneratorConfig {
            customers: 250,
            days: 120,
            faults: false,
            ..GeneratorConfig::default()
        },
        Policy::default(),
    );
    let ids: Vec<String> = engine.accounts().map(|a| a.customer_id.clone()).collect();
    let binary: Vec<(String, Vec<u8>)> = ids
        .iter()
        .filter_map(|id| state::encode_account(&engine, id))
        .collect();
    let json: Vec<(String, Vec<u8>)> = ids
        .iter()
        .filter_map(|id| {
            Some((
                state::account_key(id),
                state::encode_json_v1(engine.account(id)?),
            ))
        })
        .collect();
    let size = |r: &[(String, Vec<u8>)]| r.iter().map(|(_, v)| v.len()).sum::<usize>() / r.len();
    eprintln!(
        "snapshot: {} accounts, {} bytes each in format 2, {} in JSON (format 1)",
        ids.len(),
        size(&binary),
        size(&json)
    );
    let mut g = c.benchmark_group("snapshot");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("encode", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(state::encode_account(&engine, id));
            }
        })
    });
    g.bench_function("encode_json_v1", |b| {
        b.iter(|| {
            for id in &ids {
                black_box(engine.account(id).map(state::encode_json_v1));
            }
        })
    });
    g.bench_function("decode", |b| {
        b.iter(|| {
            for (k, v) in &binary {
                black_box(state::decode(k, v).ok());
            }
        })
    });
    g.bench_function("decode_json_v1", |b| {
        b.iter(|| {
            for (k, v) in &json {
                black_box(state::decode(k, v).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, hold_queue, timers, restore, snapshot);
criterion_main!(benches);
