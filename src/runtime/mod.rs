//! The live shell: consumes the input topics in batches, feeds the core, and produces
//! decisions, alerts and dead-letters, with the core's state written to the compacted
//! changelog so that a restart (or a new owner of a partition) carries on exactly where the
//! committed state left off.
//!
//! Exactly-once by construction (ARCHITECTURE.md, "Delivery guarantees"):
//! - every batch writes, after its outputs, a snapshot of each account and group it changed
//!   and a checkpoint per input partition (`c/<partition>`: the next offset of every input
//!   topic and the engine clock);
//! - on assignment, the accounts of the new partitions are restored from the changelog (read
//!   up to a fence record this restore wrote, not to a reported end offset) and consumption
//!   resumes at the checkpointed offsets, never at the group's committed offsets
//!   (which some brokers do not keep transactionally);
//! - in both modes a batch's outputs are acknowledged before its snapshots are written, and
//!   its snapshots before its checkpoints, so a crash or a failed record at worst repeats
//!   outputs with the same deterministic ids; `exactly_once` also puts all of them and the
//!   consumed offsets in one Kafka transaction, so that on a broker that honours
//!   `read_committed` not even that;
//! - a batch whose commit fails is rolled back by rebuilding the engine from the changelog
//!   and seeking back to the checkpoints.
//!
//! Partitioning: every input topic and the changelog have the same partition count. Each
//! input partition has its own engine (its own accounts and its own clock), so what a
//! partition decides depends only on that partition's input, exactly as a replay of it would;
//! its state lives in the same-numbered changelog partition. On the direct path group profiles
//! are applied to every partition engine of this instance, and a group's limit is enforced
//! over the members in each partition separately; with `kafka.repartition` the engine
//! consumes the repartition topic instead, where every event of a group's members is in the
//! group's one partition (see `router`).
//!
//! Assignment: the direct path uses the range assignor, which gives partition N of every input
//! topic to one instance (a sticky assignor could split them). The repartitioned engine reads
//! one topic and uses cooperative-sticky: when an instance joins or leaves, only the partitions
//! that move stop, are restored by their new owner, and resume; the others keep running.
//!
//! Files: this one has the batch loop, the rebalance callback and how a batch is applied;
//! `commit` the commit protocol and the rewind; `restore` the changelog restore; `read_model`
//! what readers see; `kafka` the clients; `router` the repartition stage.

mod commit;
mod kafka;
mod read_model;
mod restore;
pub mod router;

use crate::codec::{self, DeadLetter, SourcePosition};
use crate::config::{Delivery, KafkaSettings, Settings};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::model::*;
use crate::state::{self, StateRecord};
use anyhow::{Context as _, Result};
use commit::{commit_batch, rewind, ProducerStuck};
pub use kafka::{
    client_config, consumer_config, create_producer, flush_producer, is_secret, poll_batch,
    producer_config, send_record, Deliveries, EngineProducer,
};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::ClientContext;
pub use read_model::StateHandle;
use read_model::{publish, Changes, Published, Unpublished};
pub use restore::restore_changelog;
use restore::restore_partitions;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// Counters the runtime keeps for the demo's live view and, later, metrics.
#[derive(Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub decisions: [AtomicU64; 5],
    pub delivery_decisions: AtomicU64,
    pub alerts: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    pub aborted: AtomicU64,
    pub restored_accounts: AtomicU64,
    /// Batches rolled back in a row since the last commit: a batch that keeps failing (an
    /// output that cannot be written) is retried from its checkpoint, and this shows it.
    pub failed_in_a_row: AtomicU64,
    /// True while a failed producer is being replaced (a new one waiting for its transactions,
    /// e.g. while the coordinator still aborts the old one's): no batch can commit meanwhile.
    pub replacing_producer: AtomicBool,
    /// True once the first assignment is restored and consumption has started.
    pub ready: AtomicBool,
    /// Set by an admin (`POST /v1/admin/pause`, cleared by `/resume`): this instance stops
    /// consuming, deciding and ticking its clock, keeps its partitions and its group membership,
    /// and goes on reporting lag.
    pub pause_requested: AtomicBool,
    /// True once the loop has paused its partitions (what `/readyz` and the metric report).
    pub paused: AtomicBool,
    /// The most recent alerts, newest last (bounded).
    pub recent_alerts: Mutex<std::collections::VecDeque<String>>,
}

impl Stats {
    fn count(&self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Decision(d) => {
                    let i = DecisionStatus::ALL
                        .iter()
                        .position(|s| *s == d.status)
                        .unwrap_or(0);
                    self.decisions[i].fetch_add(1, Ordering::Relaxed);
                }
                Output::DeliveryDecision(_) => {
                    self.delivery_decisions.fetch_add(1, Ordering::Relaxed);
                }
                Output::Alert(a) => {
                    self.alerts.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut recent) = self.recent_alerts.lock() {
                        recent.push_back(format!(
                            "{} {} {} {}",
                            a.at,
                            a.severity.as_str(),
                            a.kind.as_str(),
                            a.key()
                        ));
                        while recent.len() > 8 {
                            recent.pop_front();
                        }
                    }
                }
                Output::Rejection(_) => {
                    self.dead_letters.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Options for embedding the runtime (the demo, the HTTP layer and tests).
#[derive(Clone, Default)]
pub struct Options {
    /// Where readers (the HTTP API, metrics) see the engines; a private one when `None`.
    pub state: Option<StateHandle>,
    /// The metric families to update; a private set when `None`.
    pub metrics: Option<Arc<Metrics>>,
    /// Where committed decisions, alerts and utilization points go for the console.
    pub feed: Option<Arc<crate::feed::Feed>>,
}

impl Options {
    /// Options for a runtime that serves readers: a shared state handle and metric set, to be
    /// given to the HTTP layer as well.
    pub fn served() -> Options {
        Options {
            state: Some(StateHandle::default()),
            metrics: Some(Arc::new(Metrics::new())),
            feed: Some(Arc::new(crate::feed::Feed::default())),
        }
    }
}

/// The checkpoint of one input partition, stored as `c/<partition>` in that changelog partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    v: u32,
    /// Next offset to consume, per input topic.
    offsets: BTreeMap<String, i64>,
    clock: Option<Timestamp>,
    /// The live FX quotes the partition's engine has taken (`fx.rate`), restored with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    fx: Vec<crate::engine::fx::Quote>,
}

fn checkpoint_key(partition: i32) -> String {
    format!("c/{partition}")
}

/// One input partition's engine and how far it has consumed each input topic.
struct PartitionState {
    engine: Engine,
    /// Next offset per input topic, as of the last applied message.
    positions: BTreeMap<String, i64>,
    /// The rebalance generation this partition was restored in: a message polled under an
    /// earlier generation was fetched for a previous assignment and is not applied.
    epoch: u64,
}

/// State shared between the processing loop and the rebalance callback (same thread).
struct Shared {
    policy: crate::policy::Policy,
    parts: BTreeMap<i32, PartitionState>,
    /// The open batch's console items, published when it commits.
    pending: crate::feed::Pending,
    /// What committed and readers do not see yet.
    unpublished: Unpublished,
    /// The readers' model (`StateHandle`), published to after each commit.
    published: Arc<Published>,
}

impl Shared {
    fn part(&mut self, p: i32) -> &mut PartitionState {
        let policy = &self.policy;
        self.parts.entry(p).or_insert_with(|| PartitionState {
            engine: Engine::new(policy.clone()),
            positions: BTreeMap::new(),
            epoch: 0,
        })
    }
}

struct Ctx {
    settings: Arc<Settings>,
    /// Bumped by every assignment and revocation (read by the poll loop without the lock).
    generation: Arc<AtomicU64>,
    shared: Arc<Mutex<Shared>>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
}

impl ClientContext for Ctx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka::count_error(&self.metrics.kafka_client_errors, "consumer", &error);
        kafka::librdkafka_error(&error, reason);
    }
}

impl ConsumerContext for Ctx {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                info!(
                    ?partitions,
                    cooperative = cooperative(consumer),
                    "partitions assigned; restoring their accounts from the changelog"
                );
                self.metrics.rebalances.with_label_values(&["assign"]).inc();
                let started = Instant::now();
                let mut shared = match self.shared.lock() {
                    Ok(s) => s,
                    Err(p) => p.into_inner(),
                };
                // A failed restore (broker trouble) is retried: without their state these
                // partitions cannot be processed, and nothing else would hand them back.
                let mut attempt = 0;
                let restored = loop {
                    attempt += 1;
                    match restore_partitions(
                        &self.settings,
                        &mut shared,
                        &partitions,
                        &self.stats,
                        &self.metrics,
                    ) {
                        Err(e) if attempt < 30 => {
                            warn!("restore failed (attempt {attempt}), retrying: {e:#}");
                            std::thread::sleep(Duration::from_secs(1));
                        }
                        other => break other,
                    }
                };
                let checkpoints = match restored {
                    Ok(c) => c,
                    Err(e) => {
                        // Without its state a partition must not be processed: leave it
                        // unassigned; the group will rebalance it again.
                        error!("restore failed, not taking partitions {partitions:?}: {e:#}");
                        if !cooperative(consumer) {
                            let _ = consumer.assign(&TopicPartitionList::new());
                        }
                        return;
                    }
                };
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                for p in &partitions {
                    if let Some(part) = shared.parts.get_mut(p) {
                        part.epoch = generation;
                    }
                }
                let elems: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect();
                for (topic, partition) in elems {
                    let offset = checkpoints
                        .get(&partition)
                        .and_then(|c| c.offsets.get(&topic))
                        .map_or(Offset::Stored, |o| Offset::Offset(*o));
                    let _ = tpl.set_partition_offset(&topic, partition, offset);
                }
                let now: BTreeSet<i32> = shared.parts.keys().copied().collect();
                shared.unpublished.full.extend(partitions.iter().copied());
                publish(&mut shared);
                drop(shared);
                // Cooperative: `tpl` holds only the partitions added; the others keep running.
                let assigned = if cooperative(consumer) {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                };
                if let Err(e) = assigned {
                    error!("assign failed: {e}");
                }
                // From the engine's own state: asking the consumer (`assignment()`) from inside
                // this callback can deadlock while the consumer closes (it waits for librdkafka's
                // main thread, which waits for this callback; seen in a demo's shutdown).
                info!(?now, "partitions owned after the assignment");
                self.stats.ready.store(true, Ordering::Relaxed);
                self.metrics.ready.set(1);
                self.metrics
                    .restore_duration
                    .observe(started.elapsed().as_secs_f64());
                info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "restore done; consuming"
                );
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                info!(
                    ?partitions,
                    lost, "partitions revoked; dropping their accounts"
                );
                self.metrics.rebalances.with_label_values(&["revoke"]).inc();
                self.generation.fetch_add(1, Ordering::SeqCst);
                let mut now = BTreeSet::new();
                if let Ok(mut shared) = self.shared.lock() {
                    for p in &partitions {
                        shared.parts.remove(p);
                        shared.unpublished.changed.remove(p);
                        shared.unpublished.full.remove(p);
                    }
                    now = shared.parts.keys().copied().collect();
                    publish(&mut shared);
                }
                // Nothing to commit here: every committed batch already wrote its checkpoints,
                // and what this instance polled but did not commit is dropped (`drop_stale`)
                // and read again by the new owner from those checkpoints.
                let unassigned = if cooperative(consumer) {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                };
                if let Err(e) = unassigned {
                    error!("unassign failed: {e}");
                }
                info!(?now, "partitions owned after the revocation");
            }
            other => error!("rebalance error: {other:?}"),
        }
    }
}

/// Whether the group runs the cooperative (incremental) rebalance protocol, where assign and
/// revoke name only the partitions that move.
fn cooperative(consumer: &BaseConsumer<Ctx>) -> bool {
    matches!(
        consumer.rebalance_protocol(),
        rdkafka::consumer::RebalanceProtocol::Cooperative
    )
}

/// The engine's producer and where each record kind goes.
struct Output_<'a> {
    producer: &'a Arc<kafka::EngineProducer>,
    k: &'a KafkaSettings,
    metrics: &'a Metrics,
    /// This batch's sequence number: every record it produces carries it, so that its
    /// delivery failures are told apart from late reports of earlier batches.
    seq: usize,
}

impl Output_<'_> {
    fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<()> {
        self.send_traced(topic, partition, key, value, None)
    }

    /// [`Output_::send`], with the trace-context headers of the span that made the record.
    fn send_traced(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        trace: Option<&rdkafka::message::OwnedHeaders>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, self.seq).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = trace {
            record = record.headers(h.clone());
            tracing::debug!(
                messaging.destination.name = topic,
                messaging.kafka.message.key = %String::from_utf8_lossy(key.unwrap_or_default()),
                "produced"
            );
        }
        kafka::send_record(self.producer, record)
            .with_context(|| format!("cannot produce to {topic}"))
    }

    /// Produces one output; decisions and alerts also go to `feed` (the console), as the same
    /// JSON text.
    fn emit(
        &self,
        output: Output,
        original: &[u8],
        original_key: Option<&[u8]>,
        source: &SourcePosition,
        feed: Option<&mut crate::feed::Pending>,
        trace: Option<&rdkafka::message::OwnedHeaders>,
    ) -> Result<()> {
        let t = &self.k.topics;
        match output {
            Output::Decision(d) => {
                let value = serde_json::to_string(&d)?;
                self.send_traced(
                    &t.decisions,
                    None,
                    Some(d.customer_id.as_bytes()),
                    value.as_bytes(),
                    trace,
                )?;
                if let Some(f) = feed {
                    f.record("decision", Some(d.customer_id), value);
                }
                Ok(())
            }
            Output::DeliveryDecision(d) => {
                let value = serde_json::to_string(&d)?;
                self.send_traced(
                    &t.delivery_decisions,
                    None,
                    Some(d.customer_id.as_bytes()),
                    value.as_bytes(),
                    trace,
                )?;
                if let Some(f) = feed {
                    f.record("delivery_decision", Some(d.customer_id), value);
                }
                Ok(())
            }
            Output::Alert(a) => {
                let value = serde_json::to_string(&a)?;
                self.send_traced(
                    &t.alerts,
                    None,
                    Some(a.key().as_bytes()),
                    value.as_bytes(),
                    trace,
                )?;
                if let Some(f) = feed {
                    f.record("alert", a.customer_id, value);
                }
                Ok(())
            }
            Output::Rejection(r) => {
                let dl = DeadLetter::new(r, original, source);
                let value = serde_json::to_vec(&dl)?;
                let key = original_key.or(dl.key().map(str::as_bytes));
                self.send_traced(&t.dead_letter, None, key, &value, trace)
            }
        }
    }
}

/// Runs the engine on Kafka until `shutdown` is set. Returns after the open batch is committed.
pub fn run(
    settings: Settings,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Stats>,
    options: Options,
) -> Result<()> {
    let settings = Arc::new(settings);
    let k = settings.kafka.clone();
    let shared = options.state.clone().unwrap_or_default().shared;
    if let Ok(mut sh) = shared.lock() {
        sh.policy = settings.policy.clone();
        sh.parts.clear();
    }
    let metrics = options.metrics.clone().unwrap_or_default();
    metrics.set_build_info(k.delivery.as_str());
    let producer = kafka::create_producer(&k, &shutdown)?;
    let Some(producer) = producer else {
        // The same outcome as at_least_once, which waits for the broker in `wait_for_topics`.
        anyhow::bail!("shut down while waiting for the broker");
    };
    producer
        .context()
        .count_errors_in(metrics.kafka_client_errors.clone());
    let mut producer = Arc::new(producer);
    let generation = Arc::new(AtomicU64::new(0));
    let ctx = Ctx {
        settings: Arc::clone(&settings),
        generation: Arc::clone(&generation),
        shared: Arc::clone(&shared),
        stats: Arc::clone(&stats),
        metrics: Arc::clone(&metrics),
    };
    let consumer: BaseConsumer<Ctx> = kafka::consumer_config(&k)
        .create_with_context(ctx)
        .context("cannot create the consumer")?;
    kafka::wait_for_topics(&consumer, &k, &shutdown)?;
    // With the repartition stage, this instance's router re-keys the inputs by credit account
    // and the engine consumes the one repartition topic.
    let router = k.repartition.then(|| {
        router::spawn(
            Arc::clone(&settings),
            Arc::clone(&shutdown),
            Arc::clone(&metrics),
        )
    });
    consumer
        .subscribe(&k.consumed_topics())
        .context("cannot subscribe to the input topics")?;
    info!(brokers = %k.brokers, delivery = ?k.delivery, repartition = k.repartition, "consuming");
    if k.command_keys.is_none() {
        warn!(
            topic = %k.topics.commands,
            "commands are not authenticated: anyone who can produce to the commands topic can release holds (set kafka.command_keys_file)"
        );
    }

    let mut last_tick = Instant::now();
    let mut last_lag = Instant::now();
    let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(k.batch_max_messages);
    let mut polled: Vec<Instant> = Vec::with_capacity(k.batch_max_messages);
    let mut polled_in: Vec<u64> = Vec::with_capacity(k.batch_max_messages);
    let mut decided: Vec<Instant> = Vec::new();
    let mut outputs = Vec::new();
    let mut seq = 0usize;
    let mut paused = false;
    while !shutdown.load(Ordering::Relaxed) {
        batch.clear();
        polled.clear();
        polled_in.clear();
        decided.clear();
        let pause = stats.pause_requested.load(Ordering::Relaxed);
        if pause != paused {
            paused = pause;
            set_paused(&consumer, paused);
            stats.paused.store(paused, Ordering::Relaxed);
            metrics.paused.set(i64::from(paused));
            info!(
                paused,
                "consumption {}",
                if paused { "paused" } else { "resumed" }
            );
        }
        if last_lag.elapsed() >= Duration::from_secs(1) {
            last_lag = Instant::now();
            if paused {
                // Partitions assigned since (a rebalance) start unpaused.
                set_paused(&consumer, true);
            }
            let mut guard = shared
                .lock()
                .map_err(|_| anyhow::anyhow!("engine state poisoned"))?;
            let failing = stats.failed_in_a_row.load(Ordering::Relaxed) > 0;
            update_lag(&consumer, &guard, failing, paused, &metrics);
            if guard.unpublished.deferred {
                publish(&mut guard);
            }
        }
        let window = Duration::from_millis(k.batch_max_ms);
        let failed = kafka::poll_batch(&consumer, k.batch_max_messages, window, |m| {
            batch.push(m);
            polled.push(Instant::now());
            polled_in.push(generation.load(Ordering::SeqCst));
        });
        if let Some(e) = failed {
            warn!("consumer: {e}");
        }
        if paused {
            // Read from a partition assigned after the pause took effect: it is paused now and
            // put back where these were read, so nothing is skipped when consumption resumes.
            if !batch.is_empty() {
                set_paused(&consumer, true);
                hold_back(&consumer, &batch);
            }
            continue;
        }
        let tick_due = k.tick_ms > 0 && last_tick.elapsed() >= Duration::from_millis(k.tick_ms);
        if batch.is_empty() && !tick_due {
            continue;
        }
        if tick_due {
            last_tick = Instant::now();
        }
        seq += 1;
        producer.context().begin(seq);
        let out = Output_ {
            producer: &producer,
            k: &k,
            metrics: &metrics,
            seq,
        };
        let mut guard = shared
            .lock()
            .map_err(|_| anyhow::anyhow!("engine state poisoned"))?;
        let sh = &mut *guard;
        drop_stale(sh, &mut batch, &mut polled, &polled_in);
        // The batch's span: processing, then the commit steps (and a rollback when it fails).
        let batch_span = tracing::debug_span!(
            "batch",
            seq,
            records = batch.len(),
            delivery = k.delivery.as_str(),
            otel.status_code = tracing::field::Empty,
        );
        let _batch_entered = batch_span.enter();
        let processing = tracing::debug_span!("process", records = batch.len()).entered();
        let result = process_batch(
            sh,
            Batch {
                messages: &batch,
                polled: &polled,
                decided: &mut decided,
            },
            tick_due,
            &out,
            &settings,
            &stats,
            &metrics,
            &options,
            &mut outputs,
        )
        .and_then(|touched| {
            drop(processing);
            commit_batch(
                sh,
                touched,
                &batch,
                &out,
                &consumer,
                &k,
                options.feed.is_some(),
            )
        });
        match result {
            Ok(changes) => {
                for (p, (accounts, groups)) in changes {
                    let c = sh.unpublished.changed.entry(p).or_default();
                    c.0.extend(accounts);
                    c.1.extend(groups);
                }
                publish(sh);
                if let Some(feed) = &options.feed {
                    feed.publish(&mut sh.pending);
                }
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.failed_in_a_row.store(0, Ordering::Relaxed);
                metrics.failed_batches_in_a_row.set(0);
                metrics.transactions.with_label_values(&["committed"]).inc();
                metrics.batch_size.observe(batch.len() as f64);
                let now = Instant::now();
                for t in &decided {
                    metrics
                        .decision_latency
                        .observe(now.duration_since(*t).as_secs_f64());
                }
            }
            Err(e) => {
                batch_span.record("otel.status_code", "ERROR");
                sh.pending.clear();
                stats.aborted.fetch_add(1, Ordering::Relaxed);
                let in_a_row = stats.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                metrics.failed_batches_in_a_row.set(in_a_row as i64);
                metrics.transactions.with_label_values(&["aborted"]).inc();
                error!("batch failed, rolling back to the last checkpoint: {e:#}");
                let stuck = e.chain().any(|c| c.is::<ProducerStuck>());
                let abort_failed = (k.delivery == Delivery::ExactlyOnce && !stuck)
                    .then(|| producer.abort_transaction(Duration::from_secs(30)).err())
                    .flatten();
                // A producer that cannot be used again is replaced. Stuck: the stuck call keeps
                // the old one alive on its thread, and the new one's epoch fences it (its
                // transaction is aborted by the coordinator, whatever it still sends is
                // refused). Failed fatally, or its transaction could not be aborted (librdkafka
                // then refuses every later transaction with "conflicting abort_transaction API
                // call already in progress", on Apache Kafka after a record the broker refused):
                // for exactly_once the new epoch also aborts anything the old one left open.
                let replace = if stuck {
                    Some("stuck in send_offsets_to_transaction past its deadline".to_string())
                } else if let Some((code, why)) = producer.client().fatal_error() {
                    if matches!(
                        code,
                        RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced
                    ) {
                        anyhow::bail!(
                            "fenced: another instance uses transactional_id {} ({why})",
                            k.transactional_id
                        );
                    }
                    Some(format!("failed fatally ({code:?}: {why})"))
                } else {
                    abort_failed.map(|e| format!("could not abort its transaction ({e})"))
                };
                if let Some(why) = replace {
                    error!("producer {why}; replacing it with a new one");
                    metrics.producers_replaced.inc();
                    drop(guard);
                    stats.replacing_producer.store(true, Ordering::Relaxed);
                    let replaced = kafka::create_producer(&k, &shutdown);
                    stats.replacing_producer.store(false, Ordering::Relaxed);
                    match replaced? {
                        Some(p) => {
                            p.context()
                                .count_errors_in(metrics.kafka_client_errors.clone());
                            producer = Arc::new(p);
                        }
                        None => break,
                    }
                    guard = shared
                        .lock()
                        .map_err(|_| anyhow::anyhow!("engine state poisoned"))?;
                }
                rewind(
                    &mut guard, &settings, &consumer, &stats, &metrics, &shutdown,
                )?;
            }
        }
    }
    info!("shutting down: the last batch is committed");
    kafka::flush_producer(&producer, Duration::from_secs(30)).ok();
    consumer.unsubscribe();
    if let Some(router) = router {
        if router.join().is_err() {
            error!("the repartition stage panicked");
        }
    }
    Ok(())
}

/// Drops the messages of the batch that a rebalance during polling made stale: their partition
/// was revoked (no longer ours), or revoked and assigned again (restored and sought back to its
/// checkpoint, from where they are read again). Applying them would run them against a
/// partition's state they do not belong to.
fn drop_stale(
    sh: &Shared,
    batch: &mut Vec<BorrowedMessage<'_>>,
    polled: &mut Vec<Instant>,
    polled_in: &[u64],
) {
    let current = |m: &BorrowedMessage<'_>, g: &u64| {
        sh.parts.get(&m.partition()).is_some_and(|s| s.epoch <= *g)
    };
    // The common case (no rebalance while polling) allocates nothing.
    if batch.iter().zip(polled_in).all(|(m, g)| current(m, g)) {
        return;
    }
    let keep: Vec<bool> = batch
        .iter()
        .zip(polled_in)
        .map(|(m, g)| current(m, g))
        .collect();
    let dropped = keep.iter().filter(|k| !**k).count();
    let mut i = 0;
    batch.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let mut i = 0;
    polled.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    info!(
        dropped,
        "messages polled before a rebalance dropped; they are read again from the checkpoint"
    );
}

/// Pauses (or resumes) fetching of every partition assigned now.
fn set_paused(consumer: &BaseConsumer<Ctx>, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    let done = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = done {
        warn!(pause, "cannot pause or resume the assigned partitions: {e}");
    }
}

/// Seeks each partition of `batch` back to the first message read from it, so the batch is
/// read again once consumption resumes.
fn hold_back(consumer: &BaseConsumer<Ctx>, batch: &[BorrowedMessage<'_>]) {
    let mut first: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        first
            .entry((m.topic(), m.partition()))
            .or_insert(m.offset());
    }
    for ((topic, partition), offset) in first {
        if let Err(e) = consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        ) {
            warn!(
                topic,
                partition, offset, "cannot seek back while paused: {e}"
            );
        }
    }
}

/// Sets the consumer lag gauge of every assigned partition. The high watermark comes from the
/// client's cache (no broker round trip) while the partitions are fetched, and from the broker
/// while they are paused (a paused partition is not fetched, so its cache goes stale). While
/// batches commit (or consumption is paused), lag is the high watermark less the consumer's
/// position (which steps over transaction markers); while they keep failing, less the next
/// offset the partition's committed state has applied, so a partition that is read again and
/// again from its checkpoint shows its lag growing instead of a position running ahead of what
/// was committed.
fn update_lag(
    consumer: &BaseConsumer<Ctx>,
    sh: &Shared,
    failing: bool,
    paused: bool,
    metrics: &Metrics,
) {
    let Ok(position) = consumer.position() else {
        return;
    };
    for e in position.elements() {
        let (topic, partition) = (e.topic(), e.partition());
        let watermarks = if paused {
            consumer
                .fetch_watermarks(topic, partition, Duration::from_millis(500))
                .ok()
        } else {
            cached_watermarks(consumer, topic, partition)
        };
        let Some((low, high)) = watermarks else {
            continue;
        };
        if high < 0 {
            continue;
        }
        let committed = || {
            sh.parts
                .get(&partition)
                .and_then(|p| p.positions.get(topic).copied())
                .unwrap_or(low.max(0))
        };
        let applied = match e.offset() {
            Offset::Offset(pos) if !failing => pos,
            _ => committed(),
        };
        metrics
            .consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set((high - applied).max(0));
    }
}

/// The (low, high) watermarks librdkafka last saw in a fetch response for this partition (no
/// broker round trip; rdkafka 0.39 has no safe wrapper for it).
fn cached_watermarks(
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    partition: i32,
) -> Option<(i64, i64)> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid while `consumer` is borrowed; the topic is a valid
    // NUL-terminated string for the duration of the call; low/high are valid out-pointers.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).then_some((low, high))
}

/// One polled batch: the messages, when each was read, and (filled in while processing) the
/// read times of the messages that produced a decision.
struct Batch<'a, 'm> {
    messages: &'a [BorrowedMessage<'m>],
    polled: &'a [Instant],
    decided: &'a mut Vec<Instant>,
}

/// Applies a batch (and a clock tick) to the engine and produces its outputs. Returns the input
/// partitions the batch touched.
#[allow(clippy::too_many_arguments)]
fn process_batch(
    sh: &mut Shared,
    batch: Batch<'_, '_>,
    tick: bool,
    out: &Output_<'_>,
    settings: &Settings,
    stats: &Stats,
    metrics: &Metrics,
    options: &Options,
    outputs: &mut Vec<Output>,
) -> Result<BTreeSet<i32>> {
    let k = &settings.kafka;
    let wall = wall_clock();
    // A producer with a broken clock must not move a partition's time far past the present.
    let guard = (settings.future_skew_max_us > 0).then_some(crate::engine::FutureGuard {
        reference: wall,
        max_skew_us: settings.future_skew_max_us,
        reference_name: "the wall clock",
        setting: "limits.future_skew_max_hours",
    });
    if k.delivery == Delivery::ExactlyOnce {
        out.producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
    }
    let mut touched = BTreeSet::new();
    let traced = crate::traces::enabled();
    for (i, m) in batch.messages.iter().enumerate() {
        let p = m.partition();
        touched.insert(p);
        // The record's span covers applying it and producing what it made (its outputs carry
        // the span's trace context while traces are exported).
        let span = tracing::debug_span!(
            "record",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = m.topic(),
            messaging.destination.partition.id = p,
            messaging.kafka.offset = m.offset(),
            event_type = tracing::field::Empty,
            event_id = tracing::field::Empty,
            customer_id = tracing::field::Empty,
            order_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            outputs = tracing::field::Empty,
        );
        if traced {
            crate::traces::continue_from(&span, m.headers());
        }
        let _entered = span.enter();
        sh.part(p)
            .positions
            .insert(m.topic().to_string(), m.offset() + 1);
        let payload = m.payload().unwrap_or_default();
        outputs.clear();
        let mut event_type = "invalid";
        let mut command = None;
        if payload.len() > settings.max_message_bytes {
            outputs.push(Output::Rejection(Rejection {
                error: ErrorCode::TooLarge,
                detail: format!(
                    "message of {} bytes exceeds limits.max_message_bytes = {}",
                    payload.len(),
                    settings.max_message_bytes
                ),
                event_id: None,
                event_type: None,
                customer_id: None,
                original: None,
            }));
        } else {
            match codec::decode_event(payload) {
                Ok(event) if unsigned(k, &event, payload).is_some() => {
                    let detail = unsigned(k, &event, payload).unwrap_or_default();
                    outputs.push(Output::Rejection(Rejection {
                        error: ErrorCode::InvalidField,
                        detail: format!("signature: {detail}"),
                        event_id: Some(event.event_id.clone()),
                        event_type: Some(event.type_str().to_string()),
                        customer_id: event.customer_id.clone(),
                        original: None,
                    }));
                }
                Ok(event) if !k.repartition && key_mismatch(m.key(), &event).is_some() => {
                    let detail = key_mismatch(m.key(), &event).unwrap_or_default();
                    outputs.push(Output::Rejection(Rejection {
                        error: ErrorCode::KeyMismatch,
                        detail,
                        event_id: Some(event.event_id.clone()),
                        event_type: Some(event.type_str().to_string()),
                        customer_id: event.customer_id.clone(),
                        original: None,
                    }));
                }
                Ok(event) => {
                    // Direct path: a group profile or an FX rate reaches every partition engine
                    // of this instance. Repartitioned, a group profile is routed to its group's
                    // one partition and a rate to every partition (by the router).
                    let is_group = !k.repartition
                        && matches!(
                            event.body,
                            EventBody::GroupProfile(_) | EventBody::FxRate(_)
                        );
                    event_type = event.type_str();
                    let order_id = match &event.body {
                        EventBody::OrderPlaced { order_id, .. }
                        | EventBody::OrderCancelled { order_id }
                        | EventBody::ShipmentShipped { order_id, .. } => Some(order_id.as_str()),
                        EventBody::DeliveryRequested(d) => Some(d.order_id.as_str()),
                        EventBody::Command { order_id, .. } => order_id.as_deref(),
                        _ => None,
                    };
                    span.record("event_type", event_type);
                    span.record("event_id", event.event_id.as_str());
                    span.record("customer_id", event.customer_id.as_deref().unwrap_or(""));
                    span.record("order_id", order_id.unwrap_or(""));
                    let outcome = sh.part(p).engine.apply_guarded(&event, outputs, guard);
                    span.record("outcome", outcome.as_str());
                    metrics.count_event(event_type, outcome);
                    if let EventBody::Command {
                        kind,
                        order_id,
                        delivery_id,
                        actor,
                        note,
                    } = &event.body
                    {
                        command = Some(AppliedCommand {
                            command_id: event.event_id.clone(),
                            kind: event_type,
                            customer_id: event.customer_id.clone(),
                            release: matches!(
                                kind,
                                CommandKind::ReleaseHold | CommandKind::ReleaseDelivery
                            ),
                            outcome,
                            asked: Some(Asked {
                                actor: actor.clone(),
                                note: note.clone(),
                                at: event.occurred_at,
                                order_id: order_id.clone(),
                                delivery_id: delivery_id.clone(),
                            }),
                        });
                    }
                    let lag_us = wall.0 - event.occurred_at.0;
                    metrics.event_time_lag.observe(lag_us.max(0) as f64 / 1e6);
                    debug!(
                        outcome = outcome.as_str(),
                        outputs = outputs.len(),
                        "applied"
                    );
                    if is_group {
                        // Every partition engine of this instance learns the group's limit or
                        // the rate.
                        let mut more = Vec::new();
                        for (q, part) in sh.parts.iter_mut().filter(|(q, _)| **q != p) {
                            part.engine.apply_guarded(&event, &mut more, guard);
                            touched.insert(*q);
                        }
                        outputs.extend(
                            more.into_iter()
                                .filter(|o| !matches!(o, Output::Rejection(_))),
                        );
                    }
                }
                Err(r) => outputs.push(Output::Rejection(r)),
            }
        }
        if event_type == "invalid" {
            metrics.count_event(event_type, crate::Outcome::Rejected);
        }
        if outputs.iter().any(|o| matches!(o, Output::Decision(_))) {
            if let Some(t) = batch.polled.get(i) {
                batch.decided.push(*t);
            }
        }
        stats.events.fetch_add(1, Ordering::Relaxed);
        stats.count(outputs);
        metrics.count_outputs(outputs);
        let original = &payload[..payload.len().min(settings.max_message_bytes)];
        // Only a dead-letter names its input (built here, off the common path).
        let (source, input_key) = if outputs.iter().any(|o| matches!(o, Output::Rejection(_))) {
            input_of(m, k.repartition)
        } else {
            (SourcePosition::default(), None)
        };
        if options.feed.is_some() {
            if let Some(c) = command_outcome(command, outputs) {
                sh.pending.command(c);
            }
        }
        span.record("outputs", outputs.len());
        let trace = if traced {
            crate::traces::headers_of(&span)
        } else {
            None
        };
        for o in outputs.drain(..) {
            let feed = options.feed.is_some().then_some(&mut sh.pending);
            out.emit(o, original, input_key, &source, feed, trace.as_ref())?;
        }
    }
    if tick {
        let now = wall_clock();
        for (p, part) in sh.parts.iter_mut() {
            outputs.clear();
            part.engine.advance_clock(now, outputs);
            stats.count(outputs);
            metrics.count_outputs(outputs);
            for o in outputs.drain(..) {
                let feed = options.feed.is_some().then_some(&mut sh.pending);
                out.emit(o, &[], None, &SourcePosition::default(), feed, None)?;
            }
            // The clock moved: every partition gets a fresh checkpoint.
            touched.insert(*p);
        }
    }
    Ok(touched)
}

/// A command the core applied (or refused), as the batch loop saw it.
struct AppliedCommand {
    command_id: String,
    kind: &'static str,
    customer_id: Option<String>,
    release: bool,
    outcome: crate::Outcome,
    /// Who, with what note, when, about which order or delivery (`None`: refused unread).
    asked: Option<Asked>,
}

/// What a command the core read says about itself.
struct Asked {
    actor: String,
    note: String,
    at: Timestamp,
    order_id: Option<String>,
    delivery_id: Option<String>,
}

/// What `GET /v1/commands/{id}` says about a command, from what applying it produced: `None`
/// for an input that is not a command. A command refused before the core (a bad signature, a
/// wrong key) is known by its dead-letter.
fn command_outcome(
    applied: Option<AppliedCommand>,
    outputs: &[Output],
) -> Option<crate::feed::CommandOutcome> {
    use crate::feed::{CommandDecision, CommandOutcome};
    let refusal = outputs.iter().find_map(|o| match o {
        Output::Rejection(r) => Some(r),
        _ => None,
    });
    let applied = match applied {
        Some(a) => a,
        None => {
            let r = refusal?;
            let kind = r
                .event_type
                .as_deref()
                .filter(|t| t.starts_with("command."))?;
            AppliedCommand {
                command_id: r.event_id.clone()?,
                kind: crate::model::types::ALL
                    .iter()
                    .copied()
                    .find(|t| *t == kind)?,
                customer_id: r.customer_id.clone(),
                release: false,
                outcome: crate::Outcome::Rejected,
                asked: None,
            }
        }
    };
    let decisions: Vec<CommandDecision> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Decision(d) => Some(CommandDecision {
                kind: "decision",
                id: d.decision_id.clone(),
                order_id: d.order_id.clone(),
                delivery_id: None,
                status: d.status.as_str(),
            }),
            Output::DeliveryDecision(d) => Some(CommandDecision {
                kind: "delivery_decision",
                id: d.delivery_decision_id.clone(),
                order_id: d.order_id.clone(),
                delivery_id: Some(d.delivery_id.clone()),
                status: d.status.as_str(),
            }),
            _ => None,
        })
        .collect();
    let status = match applied.outcome {
        crate::Outcome::Rejected => "refused",
        crate::Outcome::Duplicate => "duplicate",
        _ if applied.release && decisions.is_empty() => "awaiting_second_approver",
        _ => "applied",
    };
    let refused = applied.outcome == crate::Outcome::Rejected;
    let asked = applied.asked;
    Some(CommandOutcome {
        command_id: applied.command_id,
        kind: applied.kind.to_string(),
        customer_id: applied.customer_id,
        status,
        error: refusal.filter(|_| refused).map(|r| r.error.as_str()),
        detail: refusal.filter(|_| refused).map(|r| r.detail.clone()),
        decisions,
        actor: asked.as_ref().map(|a| a.actor.clone()),
        note: asked.as_ref().map(|a| a.note.clone()),
        at: asked.as_ref().map(|a| a.at),
        order_id: asked.as_ref().and_then(|a| a.order_id.clone()),
        delivery_id: asked.and_then(|a| a.delivery_id),
    })
}

/// Why a command is not accepted as written by the HTTP API (`None` when it is, or when
/// `kafka.command_keys_file` is not set): see `signing`.
fn unsigned(k: &KafkaSettings, event: &Event, payload: &[u8]) -> Option<String> {
    if !matches!(event.body, EventBody::Command { .. }) {
        return None;
    }
    let keys = k.command_keys.as_ref()?;
    keys.verify(event, crate::signing::signature_of(payload).as_deref())
        .err()
}

/// Why a record's Kafka key does not fit its event (`None` when it does): the key must be the
/// event's customer_id, or the group_id of a group profile, so that every event of an account
/// lands in the partition that owns it (CONTRACT.md, `KEY_MISMATCH`).
fn key_mismatch(key: Option<&[u8]>, event: &Event) -> Option<String> {
    let field = match &event.body {
        EventBody::GroupProfile(_) => "group_id",
        EventBody::FxRate(_) => "pair fx/BASE/QUOTE",
        _ => "customer_id",
    };
    let want = event.key();
    match key {
        Some(k) if k == want.as_bytes() => None,
        Some(k) => Some(format!(
            "record key {:?} is not the event's {field} {want:?}: produce it keyed by {field}, or its account is split across partitions",
            String::from_utf8_lossy(k)
        )),
        None => Some(format!(
            "record has no key; it must be keyed by the event's {field} {want:?}, or its account is split across partitions"
        )),
    }
}

/// The input record a message stands for, as a dead-letter names it: its position and key.
/// A routed record (`kafka.repartition`) carries its input's in headers; the routed key may be
/// a group's.
fn input_of<'m>(
    m: &'m BorrowedMessage<'_>,
    repartition: bool,
) -> (SourcePosition, Option<&'m [u8]>) {
    match repartition.then(|| router::source_of(m)).flatten() {
        Some(s) => (
            SourcePosition {
                topic: Some(s.topic),
                partition: Some(s.partition),
                offset: Some(s.offset),
                line: None,
            },
            s.key,
        ),
        None => (
            SourcePosition {
                topic: Some(m.topic().to_string()),
                partition: Some(m.partition()),
                offset: Some(m.offset()),
                line: None,
            },
            m.key(),
        ),
    }
}

fn wall_clock() -> Timestamp {
    Timestamp::now()
}

/// A customer's utilization now, for the console's chart (`None` without a limit).
fn utilization_point(engine: &Engine, customer_id: &str) -> Option<crate::feed::Point> {
    let limit = engine.terms(customer_id)?.limit_effective;
    let exposure = engine.account(customer_id)?.exposure().total;
    let u = crate::engine::warnings::utilization(exposure, limit)?;
    Some(crate::feed::Point {
        at: engine.clock()?,
        utilization: format_ratio(u),
    })
}
