//! Criterion benches of the core and the codec over the sample traffic, each next to a
//! baseline measured in the same run so results read as ratios:
//! - `decode/engine` vs `decode/serde_json_value` (generic JSON parse of the same lines);
//! - `core/apply` (pre-decoded events, one core) vs `core/clone_events` (touching the same
//!   events without deciding anything);
//! - `pipeline/decode_apply_encode` (JSON in, JSON out) vs `pipeline/parse_and_reserialize`.
//!
//! Run: `cargo bench --bench core` (add `-- --quick` for a short run).

/// The binary's traffic generator, compiled from its source.
#[allow(dead_code)]
#[path = "../src/tools/generator.rs"]
mod generator;
#[path = "support/pipeline.rs"]
mod pipeline;

// The allocator the binary ships with (src/main.rs), so these figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use credit_sentinel::codec::decode_event;
use credit_sentinel::model::Event;
use credit_sentinel::{Engine, Policy};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use generator::{generate, GeneratorConfig};
use std::hint::black_box;

fn sample() -> Vec<String> {
    generate(&GeneratorConfig {
        customers: 250,
        days: 120,
        faults: false,
        ..GeneratorConfig::default()
    })
}

fn decode(c: &mut Criterion) {
    let lines = sample();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("engine", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(decode_event(l.as_bytes()).ok());
            }
        })
    });
    g.bench_function("serde_json_value", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_str::<serde_json::Value>(l).ok());
            }
        })
    });
    g.finish();
}

fn core(c: &mut Criterion) {
    let events: Vec<Event> = sample()
        .iter()
        .filter_map(|l| decode_event(l.as_bytes()).ok())
        .collect();
    let mut g = c.benchmark_group("core");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("apply", |b| {
        b.iter_batched(
            || Engine::new(Policy::default()),
            |mut engine| {
                let mut out = Vec::with_capacity(16);
                for e in &events {
                    out.clear();
                    engine.apply(e, &mut out);
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("clone_events", |b| {
        b.iter(|| {
            for e in &events {
                black_box(e.clone());
            }
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let lines = sample();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("decode_apply_encode", |b| {
        b.iter_batched(
            || Engine::new(Policy::default()),
            |mut engine| {
                black_box(pipeline::decode_apply_encode(&mut engine, &lines));
                engine
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("parse_and_reserialize", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for l in &lines {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                    bytes += serde_json::to_string(&v).map(|s| s.len()).unwrap_or(0);
                }
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, decode, core, pipeline);
criterion_main!(benches);
