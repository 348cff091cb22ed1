//! Sends generated traffic to Kafka: each event to its contract topic (orders, shipments,
//! payments, profiles, commands), keyed by customer (or group), at a bounded rate (`loadgen`,
//! `soak`) or on a simulated clock (`demo`: history at a pace a person can follow, then real
//! time). Malformed lines from the generator go to the orders topic unkeyed, as a broken
//! producer would send them.

use anyhow::{Context as _, Result};
use credit_sentinel::codec::decode_event;
use credit_sentinel::config::{KafkaSettings, Topics};
use credit_sentinel::model::{EventBody, Settlement, SettlementKind, Timestamp};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The topic and key a generated line belongs on.
pub fn route<'a>(topics: &'a Topics, line: &str) -> (&'a str, Option<String>) {
    match decode_event(line.as_bytes()) {
        Ok(ev) => {
            let topic = match &ev.body {
                EventBody::OrderPlaced(_) | EventBody::OrderCancelled { .. } => &topics.orders,
                EventBody::ShipmentShipped(_) | EventBody::DeliveryRequested(_) => {
                    &topics.shipments
                }
                EventBody::Settlement(Settlement {
                    kind: SettlementKind::Payment | SettlementKind::CreditNote,
                    ..
                }) => &topics.payments,
                EventBody::CustomerProfile(_)
                | EventBody::GroupProfile(_)
                | EventBody::FxRate(_) => &topics.profiles,
                EventBody::Command(_) => &topics.commands,
            };
            (topic.as_str(), Some(ev.key().to_string()))
        }
        Err(_) => (topics.orders.as_str(), None),
    }
}

/// When message `n` is due: `rate` per second on average over each 10 s cycle, with the first
/// second of every cycle at five times the rate of the other nine.
pub(crate) fn burst_schedule(n: u64, rate: u64) -> Duration {
    let per_cycle = rate * 10;
    let cycle = n / per_cycle.max(1);
    let within = n % per_cycle.max(1);
    // 5 shares in the burst second, 5 shares spread over the other nine seconds.
    let burst = per_cycle / 2;
    let offset = if within < burst {
        within as f64 / burst.max(1) as f64
    } else {
        1.0 + 9.0 * (within - burst) as f64 / (per_cycle - burst).max(1) as f64
    };
    Duration::from_secs_f64(cycle as f64 * 10.0 + offset)
}

/// Sends `lines` at `rate` per second on average (bursts included; 0: as fast as possible).
pub fn send(
    k: &KafkaSettings,
    lines: &[String],
    rate: u64,
    shutdown: &AtomicBool,
    sent: &AtomicU64,
) -> Result<u64> {
    let started = Instant::now();
    send_each(k, lines, shutdown, sent, |n, _| {
        if rate > 0 {
            // Bursts: one second in every ten runs at five times the rate, as order entry does
            // at the top of the hour; the schedule catches up after.
            let due = burst_schedule(n as u64, rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    })
}

/// The simulated time `elapsed` after a simulation began at `start`, running `speed` times as
/// fast as real time until it reaches the wall clock `wall`, and with the wall clock after.
pub(crate) fn simulated_now(
    start: Timestamp,
    speed: f64,
    elapsed: Duration,
    wall: Timestamp,
) -> Timestamp {
    let fast = start
        .0
        .saturating_add((elapsed.as_secs_f64() * speed * 1e6) as i64);
    Timestamp(fast.min(wall.0))
}

/// Sends each line when the simulated clock (see [`simulated_now`]) reaches its `occurred_at`:
/// the history up to now at `speed`, what lies ahead in real time, so no event is ever ahead
/// of the wall clock. A line that does not decode goes with the line before it. `clock` shows
/// the simulated time (microseconds) to the caller.
pub fn send_simulated(
    k: &KafkaSettings,
    lines: &[String],
    start: Timestamp,
    speed: f64,
    shutdown: &AtomicBool,
    sent: &AtomicU64,
    clock: &AtomicI64,
) -> Result<u64> {
    let started = Instant::now();
    let now = || simulated_now(start, speed, started.elapsed(), wall_clock());
    send_each(k, lines, shutdown, sent, |_, line| {
        let Ok(event) = decode_event(line.as_bytes()) else {
            return;
        };
        loop {
            let sim = now();
            clock.store(sim.0, Ordering::Relaxed);
            if sim >= event.occurred_at || shutdown.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn wall_clock() -> Timestamp {
    Timestamp::now()
}

/// Sends every line to its topic, keyed, calling `wait(n, line)` before line `n`; stops at
/// shutdown. Returns how many were sent, after every one is acknowledged.
fn send_each(
    k: &KafkaSettings,
    lines: &[String],
    shutdown: &AtomicBool,
    sent: &AtomicU64,
    mut wait: impl FnMut(usize, &str),
) -> Result<u64> {
    let mut cfg = credit_sentinel::runtime::producer_config(k);
    cfg.set("linger.ms", "5").set("enable.idempotence", "true");
    let producer: ThreadedProducer<credit_sentinel::runtime::Deliveries> = cfg
        .create_with_context(credit_sentinel::runtime::Deliveries::default())
        .context("cannot create the traffic producer")?;
    let mut n = 0u64;
    for (i, line) in lines.iter().enumerate() {
        wait(i, line);
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        let (topic, key) = route(&k.topics, line);
        let mut record: BaseRecord<'_, str, str, usize> =
            BaseRecord::with_opaque_to(topic, 0).payload(line.as_str());
        if let Some(key) = key.as_deref() {
            record = record.key(key);
        }
        credit_sentinel::runtime::send_record(&producer, record).context("cannot send traffic")?;
        n += 1;
        sent.fetch_add(1, Ordering::Relaxed);
    }
    producer
        .flush(Duration::from_secs(30))
        .context("traffic not acknowledged")?;
    let failed = producer.context().failed();
    if failed > 0 {
        anyhow::bail!(
            "{failed} traffic record(s) not delivered; last error: {}",
            producer.context().last_error()
        );
    }
    Ok(n)
}
