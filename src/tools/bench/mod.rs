//! `credit-sentinel bench`: the end-to-end benchmark, on the embedded broker or (with
//! `--brokers`) on a real cluster such as Apache Kafka.
//!
//! Throughput: the same generated input is preloaded once per delivery mode and consumed twice,
//! first by `run` (the engine), then by a null pipeline with the same client settings, batch
//! sizes and commit protocol (consume, produce as many records as the engine produced, commit)
//! but no engine, no JSON and no state. Each is timed from its first consumed message to the
//! moment everything is consumed and committed, so group joins and restores are left out of
//! both. The ratio engine / null is what the engine costs on top of Kafka itself.
//!
//! Latency: orders are produced at a fixed rate while the engine runs; a decision is
//! *readable* when a `read_committed` consumer of the decisions topic has read it and, in
//! `exactly_once`, its transaction has committed (the embedded broker shows records of open
//! transactions to `read_committed` readers, so the commit is taken from the engine's commit
//! feed). Latency is readable time minus the time the order was handed to the producer;
//! orders sent in the first second (`WARM_UP`) are not timed.
//!
//! Each pass gets topics of its own: on the embedded broker a new mock cluster, on a real
//! cluster fresh topics named `bench-<process>-<n>-<topic>` (created with the admin API, left
//! behind for inspection).

use super::generator::{generate, GeneratorConfig};
use super::traffic;
use anyhow::{Context as _, Result};
use credit_sentinel::config::{self, Delivery, Settings};
use credit_sentinel::feed::Feed;
use credit_sentinel::runtime::{self, Options, Stats};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Orders sent in this first part of a latency run are not timed (see `latency`).
mod latency;
mod state;

pub use latency::latency;
pub use state::{memory, restore_over_kafka, Memory, Restore};

pub const WARM_UP: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Customers of the generated throughput input (about 65 events each over 120 days).
    pub customers: usize,
    pub partitions: i32,
    /// Orders per second in the latency runs.
    pub rate: u64,
    /// Seconds of each latency run.
    pub seconds: u64,
    /// `kafka.batch_max_ms` values (the commit interval) for the exactly_once latency runs.
    pub commit_intervals_ms: Vec<u64>,
    /// Where the passes run.
    pub broker: BenchBroker,
}

/// The broker the throughput and latency passes run on.
#[derive(Clone, Debug, Default)]
pub enum BenchBroker {
    /// librdkafka's mock cluster in this process, a new one per pass.
    #[default]
    Embedded,
    /// A running cluster (bootstrap servers); each pass creates topics of its own.
    External {
        brokers: String,
        replication_factor: i32,
    },
}

impl BenchBroker {
    /// How the report names it.
    pub fn describe(&self) -> String {
        match self {
            BenchBroker::Embedded => "the embedded broker (librdkafka's mock cluster)".into(),
            BenchBroker::External {
                brokers,
                replication_factor,
            } => format!("{brokers} (replication factor {replication_factor})"),
        }
    }
}

/// Where one pass runs: the broker's address and the pass's own topics.
struct Site {
    /// Kept alive for the pass (the embedded broker stops when dropped).
    _cluster: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    brokers: String,
    topics: config::Topics,
    /// Extra topics (the null pipeline's sink), named for this pass.
    extra: Vec<String>,
    external: bool,
}

static PASSES: AtomicU64 = AtomicU64::new(0);

/// One throughput comparison.
#[derive(Clone, Debug)]
pub struct Throughput {
    pub delivery: Delivery,
    pub inputs: u64,
    pub outputs: u64,
    pub engine_per_s: f64,
    /// The engine's own work per input (the batch loop outside its polls), in microseconds.
    pub engine_busy_us: f64,
    /// The same engine with `kafka.changelog_interval_ms = 0` (snapshots and checkpoints with
    /// every batch, as before the changelog cadence), on a site of its own with the same input:
    /// events/s, records written, busy microseconds per input.
    pub every_batch: (f64, u64, f64),
    pub null_per_s: f64,
}

/// One latency run.
#[derive(Clone, Debug)]
pub struct Latency {
    pub delivery: Delivery,
    pub batch_max_ms: u64,
    pub rate: u64,
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Mean latency of the decisions of orders sent in each second of the run (from the first
    /// timed second): whether the engine kept up, or when it fell behind.
    pub by_second_ms: Vec<f64>,
}

fn settings(site: &Site, delivery: Delivery, tag: &str) -> Result<Settings> {
    let mut s = config::load(None)?;
    s.kafka.brokers = site.brokers.clone();
    s.kafka.topics = site.topics.clone();
    s.kafka.delivery = delivery;
    s.kafka.tick_ms = 0;
    let pass = PASSES.load(Ordering::Relaxed);
    s.kafka.group_id = format!("bench-{}-{pass}-{tag}-{:?}", std::process::id(), delivery);
    s.kafka.transactional_id = s.kafka.group_id.clone();
    s.http.enabled = false;
    // The embedded broker answers a fetch that finds no new record only after the consumer's
    // fetch.wait.max.ms (500 ms by default), even if records arrive meanwhile (a broker wakes
    // waiting fetches; librdkafka's mock cluster does not): without this, every decision that
    // follows an idle moment waits half a second on the broker, not on the engine. The same
    // setting on a real broker, so that both run the same client configuration.
    s.kafka
        .properties
        .insert("fetch.wait.max.ms".into(), "5".into());
    Ok(s)
}

/// A new place for one pass: a new embedded broker, or new topics on the external cluster.
fn new_site(cfg: &BenchConfig, extra: &[&str]) -> Result<Site> {
    let topics = config::load(None)?.kafka.topics;
    let pass = PASSES.fetch_add(1, Ordering::Relaxed) + 1;
    match &cfg.broker {
        BenchBroker::Embedded => {
            let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
            for topic in topics.all().into_iter().chain(extra.iter().copied()) {
                cluster
                    .create_topic(topic, cfg.partitions, 1)
                    .with_context(|| format!("cannot create {topic}"))?;
            }
            Ok(Site {
                brokers: cluster.bootstrap_servers(),
                _cluster: Some(cluster),
                topics,
                extra: extra.iter().map(|t| t.to_string()).collect(),
                external: false,
            })
        }
        BenchBroker::External {
            brokers,
            replication_factor,
        } => {
            let prefix = format!("bench-{}-{pass}-", std::process::id());
            let named = |t: &str| format!("{prefix}{t}");
            let topics = config::Topics {
                orders: named(&topics.orders),
                shipments: named(&topics.shipments),
                payments: named(&topics.payments),
                profiles: named(&topics.profiles),
                commands: named(&topics.commands),
                decisions: named(&topics.decisions),
                delivery_decisions: named(&topics.delivery_decisions),
                alerts: named(&topics.alerts),
                dead_letter: named(&topics.dead_letter),
                changelog: named(&topics.changelog),
                repartition: named(&topics.repartition),
            };
            let extra: Vec<String> = extra.iter().map(|t| named(t)).collect();
            let mut names: Vec<(String, bool)> = topics
                .all()
                .iter()
                .map(|t| (t.to_string(), *t == topics.changelog))
                .collect();
            names.extend(extra.iter().map(|t| (t.clone(), false)));
            create_topics(brokers, &names, cfg.partitions, *replication_factor)?;
            Ok(Site {
                _cluster: None,
                brokers: brokers.clone(),
                topics,
                extra,
                external: true,
            })
        }
    }
}

/// Creates topics on a cluster with the admin API (`compacted`: the changelog), waiting for
/// the result on a thread of its own (callers may be inside an async runtime).
fn create_topics(
    brokers: &str,
    names: &[(String, bool)],
    partitions: i32,
    replication_factor: i32,
) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        c.create().context("cannot create the admin client")?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(replication_factor),
            );
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(admin.create_topics(&topics, &options)))
            })
            .join()
    })
    .map_err(|_| anyhow::anyhow!("topic creation panicked"))??
    .context("cannot create the bench topics")?;
    for r in results {
        if let Err((name, code)) = r {
            anyhow::bail!("cannot create topic {name}: {code}");
        }
    }
    Ok(())
}

/// Records written to `topics`. On the embedded broker the sum of the high watermarks (it
/// writes no transaction markers and keeps no aborted records); on a real cluster the records
/// a read_committed reader reads (offsets there also count markers and aborted records).
fn records_in(site: &Site, s: &Settings, topics: &[&str], partitions: i32) -> Result<u64> {
    let mut cfg = runtime::client_config(&s.kafka);
    cfg.set("group.id", "bench-watermarks")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false");
    let c: BaseConsumer = cfg.create()?;
    let mut n = 0;
    for t in topics {
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in 0..partitions {
            let (low, high) = c.fetch_watermarks(t, p, Duration::from_secs(10))?;
            anyhow::ensure!(
                low == 0 || !s.kafka.topics.inputs().contains(t),
                "the embedded broker dropped the start of {t} partition {p} (over its 5 MiB per partition): use fewer customers or more partitions"
            );
            if !site.external {
                n += high as u64;
            } else if high > low {
                tpl.add_partition_offset(t, p, Offset::Offset(low))?;
                ends.insert(p, high);
            }
        }
        if ends.is_empty() {
            continue;
        }
        c.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let position = c.position()?;
            let done = ends.iter().all(|(p, end)| {
                matches!(position.find_partition(t, *p).map(|e| e.offset()), Some(Offset::Offset(o)) if o >= *end)
            });
            if done {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "counting {t} took over 120 s");
            if let Some(m) = c.poll(Duration::from_millis(100)) {
                m?;
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Runs the engine until it has consumed `inputs` messages; returns (first message → all
/// committed) in seconds, and the seconds the batch loop was busy (`Stats::busy_ns`).
fn engine_pass(s: &Settings, inputs: u64, options: Options) -> Result<(f64, f64)> {
    let shutdown = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let handle = {
        let (s, shutdown, stats) = (s.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        std::thread::spawn(move || runtime::run(s, shutdown, stats, options))
    };
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let events = stats.events.load(Ordering::Relaxed);
        if first.is_none() && events > 0 {
            first = Some(Instant::now());
        }
        // Counted when applied; the batch commits right after: wait for the batch count to move.
        if events >= inputs {
            let batches = stats.batches.load(Ordering::Relaxed);
            while stats.batches.load(Ordering::Relaxed) == batches
                && stats.events.load(Ordering::Relaxed) >= inputs
                && !handle.is_finished()
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            break;
        }
        anyhow::ensure!(!handle.is_finished(), "the engine stopped early");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the engine did not finish in 600 s"
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    let busy = stats.busy_ns.load(Ordering::Relaxed) as f64 / 1e9;
    shutdown.store(true, Ordering::Relaxed);
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
    Ok((elapsed, busy))
}

/// The null pipeline: the engine's consume-produce-commit loop without the engine. Each input
/// message is answered with `per_input` records on average (copies of the input's bytes to
/// `sink`), produced, acknowledged and committed per batch exactly as the engine does.
fn null_pass(s: &Settings, inputs: u64, outputs: u64, sink: &str) -> Result<f64> {
    let k = &s.kafka;
    let never = AtomicBool::new(false);
    let producer = runtime::create_producer(k, &never)?.context("no producer")?;
    let consumer: BaseConsumer = runtime::consumer_config(k).create()?;
    consumer.subscribe(&k.topics.inputs())?;
    let mut consumed = 0u64;
    let mut produced = 0u64;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut seq = 0usize;
    while consumed < inputs {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the null pipeline did not finish in 600 s"
        );
        let window = Duration::from_millis(k.batch_max_ms);
        let mut batch = Vec::with_capacity(k.batch_max_messages);
        runtime::poll_batch(&consumer, k.batch_max_messages, window, |m| batch.push(m));
        if batch.is_empty() {
            continue;
        }
        first.get_or_insert_with(Instant::now);
        seq += 1;
        producer.context().begin(seq);
        if k.delivery == Delivery::ExactlyOnce {
            producer.begin_transaction()?;
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for m in &batch {
            consumed += 1;
            // As many records as the engine wrote, spread evenly over the inputs.
            let due = outputs * consumed / inputs.max(1);
            let payload = m.payload().unwrap_or_default();
            while produced < due {
                let mut r: BaseRecord<'_, [u8], [u8], usize> =
                    BaseRecord::with_opaque_to(sink, seq).payload(payload);
                if let Some(key) = m.key() {
                    r = r.key(key);
                }
                runtime::send_record(&producer, r)?;
                produced += 1;
            }
            let e = next
                .entry((m.topic().to_string(), m.partition()))
                .or_default();
            *e = (*e).max(m.offset() + 1);
        }
        let mut offsets = TopicPartitionList::new();
        for ((t, p), o) in &next {
            offsets.add_partition_offset(t, *p, Offset::Offset(*o))?;
        }
        drop(batch);
        match k.delivery {
            Delivery::ExactlyOnce => {
                let meta = consumer.group_metadata().context("no group metadata")?;
                producer.send_offsets_to_transaction(&offsets, &meta, Duration::from_secs(30))?;
                runtime::flush_producer(&producer, Duration::from_secs(30))?;
                producer.commit_transaction(Duration::from_secs(60))?;
            }
            Delivery::AtLeastOnce => {
                runtime::flush_producer(&producer, Duration::from_secs(30))?;
                consumer.commit(&offsets, rdkafka::consumer::CommitMode::Async)?;
            }
        }
        anyhow::ensure!(
            producer.context().failed_in_batch() == 0,
            "null pipeline: records not delivered: {}",
            producer.context().last_error()
        );
    }
    Ok(first.map_or(0.0, |f| f.elapsed().as_secs_f64()))
}

/// The throughput comparison in both delivery modes, then (with `latency`) the latency runs:
/// at_least_once at the default commit interval, exactly_once at each of
/// `cfg.commit_intervals_ms`. Progress goes to stderr.
pub fn passes(cfg: &BenchConfig, latency_runs: bool) -> Result<(Vec<Throughput>, Vec<Latency>)> {
    let mut t = Vec::new();
    for delivery in [Delivery::AtLeastOnce, Delivery::ExactlyOnce] {
        let x = throughput(cfg, delivery)?;
        eprintln!(
            "{}: throughput {}: engine {:.0}/s, null {:.0}/s; changelog with every batch {:.0}/s",
            cfg.broker.describe(),
            delivery.as_str(),
            x.engine_per_s,
            x.null_per_s,
            x.every_batch.0
        );
        t.push(x);
    }
    let mut l = Vec::new();
    if latency_runs {
        let mut runs = vec![(
            Delivery::AtLeastOnce,
            config::load(None)?.kafka.batch_max_ms,
        )];
        runs.extend(
            cfg.commit_intervals_ms
                .iter()
                .map(|ms| (Delivery::ExactlyOnce, *ms)),
        );
        for (delivery, ms) in runs {
            let x = latency(cfg, delivery, ms)?;
            eprintln!(
                "{}: latency {} batch_max_ms={ms}: p50 {:.2} ms, p99 {:.2} ms",
                cfg.broker.describe(),
                delivery.as_str(),
                x.p50_ms,
                x.p99_ms
            );
            l.push(x);
        }
    }
    Ok((t, l))
}

/// Engine versus null pipeline on the same preloaded input, then (on a new site, the same
/// input) the engine writing its changelog with every batch: the changelog cadence's baseline.
pub fn throughput(cfg: &BenchConfig, delivery: Delivery) -> Result<Throughput> {
    let lines = generate(&GeneratorConfig {
        customers: cfg.customers,
        days: 120,
        faults: false,
        ..GeneratorConfig::default()
    });
    let site = new_site(cfg, &["bench.null"])?;
    let sink = site.extra[0].as_str();
    let s = settings(&site, delivery, "engine")?;
    let inputs = preload(&site, &s, &lines, cfg.partitions)?;
    let (engine_s, busy_s) = engine_pass(&s, inputs, Options::default())?;
    let outputs = written(&site, &s, cfg.partitions)?;
    let null = settings(&site, delivery, "null")?;
    let null_s = null_pass(&null, inputs, outputs, sink)?;
    drop(site);
    let site = new_site(cfg, &[])?;
    let mut every = settings(&site, delivery, "every-batch")?;
    every.kafka.changelog_interval_ms = 0;
    let every_inputs = preload(&site, &every, &lines, cfg.partitions)?;
    let (every_s, every_busy_s) = engine_pass(&every, every_inputs, Options::default())?;
    let every_outputs = written(&site, &every, cfg.partitions)?;
    let per_s = |n: u64, s: f64| n as f64 / s.max(1e-9);
    Ok(Throughput {
        delivery,
        inputs,
        outputs,
        engine_per_s: per_s(inputs, engine_s),
        engine_busy_us: busy_s * 1e6 / inputs.max(1) as f64,
        every_batch: (
            per_s(every_inputs, every_s),
            every_outputs,
            every_busy_s * 1e6 / every_inputs.max(1) as f64,
        ),
        null_per_s: per_s(inputs, null_s),
    })
}

/// Sends the generated lines to a site's input topics; how many records they hold.
fn preload(site: &Site, s: &Settings, lines: &[String], partitions: i32) -> Result<u64> {
    traffic::send(
        &s.kafka,
        lines,
        0,
        &AtomicBool::new(false),
        &AtomicU64::new(0),
    )?;
    records_in(site, s, &s.kafka.topics.inputs(), partitions)
}

/// The records an engine pass wrote: decisions, alerts, dead-letters and changelog.
fn written(site: &Site, s: &Settings, partitions: i32) -> Result<u64> {
    let t = &s.kafka.topics;
    records_in(
        site,
        s,
        &[&t.decisions, &t.alerts, &t.dead_letter, &t.changelog],
        partitions,
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The Markdown report of a bench run.
pub fn report(
    command: &str,
    broker: &BenchBroker,
    t: &[Throughput],
    l: &[Latency],
    m: Option<&Memory>,
    r: Option<&Restore>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Command: `{command}` ({} cores), throughput and latency on {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        broker.describe()
    );
    let _ = writeln!(s, "| delivery | inputs | records written | engine events/s | engine busy µs/event | changelog with every batch: events/s, records, busy µs/event | null pipeline events/s | engine / null |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |");
    for x in t {
        let (every_per_s, every_written, every_busy) = x.every_batch;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} | {:.2} | {every_per_s:.0}, {every_written}, {every_busy:.2} | {:.0} | {:.1}% |",
            x.delivery.as_str(),
            x.inputs,
            x.outputs,
            x.engine_per_s,
            x.engine_busy_us,
            x.null_per_s,
            100.0 * x.engine_per_s / x.null_per_s
        );
    }
    let _ = writeln!(s, "\n| delivery | batch_max_ms | events/s sent | decisions timed | p50 ms | p99 ms | max ms |");
    let _ = writeln!(s, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for x in l {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} |",
            x.delivery.as_str(),
            x.batch_max_ms,
            x.rate,
            x.samples,
            x.p50_ms,
            x.p99_ms,
            x.max_ms
        );
    }
    for x in l {
        let by_second: Vec<String> = x.by_second_ms.iter().map(|v| format!("{v:.0}")).collect();
        let _ = writeln!(
            s,
            "\nMean latency (ms) by the second the order was sent, {} batch_max_ms {}: {}",
            x.delivery.as_str(),
            x.batch_max_ms,
            by_second.join(", ")
        );
    }
    if let Some(m) = m {
        let _ = writeln!(
            s,
            "\nMemory: {} accounts with 5 open items each: resident memory grew {:.1} MiB, {:.0} bytes per account. Their snapshots ({:.1} MiB) decoded and restored into an empty engine in {:.2} s ({:.0} accounts/s, in process, no broker).",
            m.accounts,
            m.total_bytes as f64 / 1048576.0,
            m.bytes_per_account,
            m.snapshot_bytes as f64 / 1048576.0,
            m.restore_s,
            m.accounts as f64 / m.restore_s.max(1e-9)
        );
        // Best and worst of three, in milliseconds.
        let ms = |(best, worst): (f64, f64)| format!("{:.2} to {:.2} ms", best * 1e3, worst * 1e3);
        let _ = writeln!(
            s,
            "\nReaders: a `/metrics` answer over those {} accounts on a read replica (state gauges from its index, then rendered) took {} in three runs; walking every account instead (the baseline, as before the index) {}; with no accounts {:.2} ms (the target at 1M accounts: 50 ms).\nReaders: the first page of `/v1/holds` over those accounts with {} orders held (on the replica: the accounts holding orders listed, sorted, the page rendered) took {} in three runs; walking every account instead (the baseline) {}; with no accounts {:.1} µs (the target at 1M accounts: 50 ms).\nReaders: publishing on the decision loop: a full read replica of the {} accounts with its index {:.2} s (what an assignment costs; the index alone {:.2} s; resident memory grew {:.0} bytes per account); the commit that held those orders ({} accounts changed) {:.2} ms (the index alone {:.2} ms).",
            m.accounts,
            ms(m.scrape_s),
            ms(m.scrape_walk_s),
            m.scrape_empty_s * 1e3,
            m.held,
            ms(m.holds_page_s),
            ms(m.holds_page_walk_s),
            m.holds_page_empty_s * 1e6,
            m.accounts,
            m.replica_full_s,
            m.index_full_s,
            m.replica_bytes_per_account,
            m.published_accounts,
            m.publish_s * 1e3,
            m.reindex_s * 1e3
        );
    }
    if let Some(r) = r {
        let _ = writeln!(
            s,
            "\nRestore over the embedded broker: {} account snapshots ({:.1} MiB, {}) in {} changelog partitions, written in {:.1} s, restored by the runtime's assignment path (fence, read to the fence, decode, restore) in {:.2} s ({:.0} accounts/s); resident memory grew {:.0} bytes per restored account.",
            r.accounts,
            r.snapshot_bytes as f64 / 1048576.0,
            if r.json_v1 { "format 1, JSON" } else { "format 2" },
            r.partitions,
            r.write_s,
            r.restore_s,
            r.accounts as f64 / r.restore_s.max(1e-9),
            r.bytes_per_account
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
