//! The live shell: consumes the input topics in batches, feeds the core, and produces
//! decisions, alerts and dead-letters, with the core's state written to the compacted
//! changelog so that a restart (or a new owner of a partition) carries on exactly where the
//! committed state left off.
//!
//! Exactly-once by construction (ARCHITECTURE.md, "Delivery guarantees"):
//! - every batch writes, after its outputs, a snapshot of each account and group it changed
//!   and a checkpoint per input partition (`c/<partition>`: the next offset of every input
//!   topic and the engine clock); in at_least_once, batches that come full (a backlog) leave
//!   them to a later batch at most `kafka.changelog_interval_ms` on, and the group's offsets
//!   are committed only with checkpoints;
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
//! Files: this one has the partition state and the batch loop; `batch` how a batch is
//! applied; `sink` where its records go; `commit` the commit protocol and the rewind;
//! `rebalance` the consumer's callbacks; `restore` the changelog restore; `read_model` what
//! readers see; `stats` the live counters; `kafka` the clients; `router` the repartition stage.

mod batch;
mod commit;
mod kafka;
mod read_model;
mod rebalance;
mod restore;
pub mod router;
mod sink;
mod stats;

use crate::codec::{self, DeadLetter, SourcePosition};
use crate::config::{Delivery, KafkaSettings, Settings};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::model::*;
use crate::state::{self, StateRecord};
use anyhow::{Context as _, Result};
use batch::{process_batch, Applying, Batch};
use commit::{commit_batch, rewind, Changelog, ProducerStuck};
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
use rebalance::RebalanceContext;
pub use restore::restore_changelog;
use restore::restore_partitions;
use serde::{Deserialize, Serialize};
use sink::RecordSink;
pub use stats::{Options, Stats};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

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
struct LoopState {
    policy: crate::policy::Policy,
    parts: BTreeMap<i32, PartitionState>,
    /// The open batch's console items, published when it commits.
    pending: crate::feed::BatchFeed,
    /// What committed and readers do not see yet.
    unpublished: Unpublished,
    /// at_least_once: the partitions whose latest batches wrote no snapshot or checkpoint yet
    /// (a backlog: see `kafka.changelog_interval_ms`); their changed accounts wait in their
    /// engines for the next changelog write.
    unlogged: BTreeSet<i32>,
    /// The readers' model (`StateHandle`), published to after each commit.
    published: Arc<Published>,
}

impl LoopState {
    fn part(&mut self, p: i32) -> &mut PartitionState {
        let policy = &self.policy;
        self.parts.entry(p).or_insert_with(|| PartitionState {
            engine: Engine::new(policy.clone()),
            positions: BTreeMap::new(),
            epoch: 0,
        })
    }
}

/// Runs the engine on Kafka until `shutdown` is set. Returns after the open batch is committed
/// and the clients are closed (each within a bound); on an error that ends the batch loop
/// (fenced, a restore that kept failing), after closing them too, and with `shutdown` set so
/// that the repartition stage stops.
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
    let Some(producer) = new_producer(&k, &shutdown, &metrics)? else {
        // The same outcome as at_least_once, which waits for the broker in `wait_for_topics`.
        anyhow::bail!("shut down while waiting for the broker");
    };
    let generation = Arc::new(AtomicU64::new(0));
    let config = kafka::consumer_config(&k);
    let ctx = RebalanceContext {
        settings: Arc::clone(&settings),
        generation: Arc::clone(&generation),
        state: Arc::clone(&shared),
        stats: Arc::clone(&stats),
        metrics: Arc::clone(&metrics),
        cooperative: kafka::is_cooperative(&config),
        shutdown: Arc::clone(&shutdown),
    };
    let consumer: BaseConsumer<RebalanceContext> = config
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
    let mut batches = BatchLoop {
        settings: &settings,
        shared: &shared,
        stats: &stats,
        metrics: &metrics,
        options: &options,
        shutdown: &shutdown,
        consumer: &consumer,
        generation: &generation,
        producer: Arc::new(producer),
        seq: 0,
        paused: false,
        last_tick: Instant::now(),
        last_lag: Instant::now(),
        last_publish: Instant::now(),
        last_changelog: Instant::now(),
        publish_owed: false,
    };
    let consumed = batches.consume();
    match &consumed {
        Ok(()) => info!("shutting down: the last batch is committed"),
        // Fenced, or a restore that kept failing: the clients are closed the same bounded
        // way before the error is returned, and the repartition stage is told to stop.
        Err(_) => warn!("stopping on an error (returned below); closing the clients first"),
    }
    shutdown.store(true, Ordering::Relaxed);
    let stopping = Instant::now();
    kafka::flush_producer(&batches.producer, Duration::from_secs(30)).ok();
    let producer = Arc::clone(&batches.producer);
    drop(batches);
    kafka::drop_within(producer, "engine producer", kafka::CLOSE_WITHIN);
    kafka::close_consumer(consumer, "engine", kafka::CLOSE_WITHIN);
    if let Some(router) = router {
        router::join(router);
    }
    info!(
        elapsed_ms = stopping.elapsed().as_millis() as u64,
        "stopped: clients closed, groups left"
    );
    consumed
}

/// A new engine producer whose client errors are counted; `None` when shut down while waiting.
fn new_producer(
    k: &KafkaSettings,
    shutdown: &AtomicBool,
    metrics: &Metrics,
) -> Result<Option<kafka::EngineProducer>> {
    let producer = kafka::create_producer(k, shutdown)?;
    if let Some(p) = &producer {
        p.context()
            .count_errors_in(metrics.kafka_client_errors.clone());
    }
    Ok(producer)
}

/// The batch loop: what it works with, and what it carries from one batch to the next.
struct BatchLoop<'a> {
    settings: &'a Arc<Settings>,
    shared: &'a Arc<Mutex<LoopState>>,
    stats: &'a Stats,
    metrics: &'a Metrics,
    options: &'a Options,
    shutdown: &'a AtomicBool,
    consumer: &'a BaseConsumer<RebalanceContext>,
    /// The rebalance generation (see `RebalanceContext`).
    generation: &'a AtomicU64,
    /// Replaced when it fails fatally or gets stuck (see `recover`).
    producer: Arc<kafka::EngineProducer>,
    /// The open batch's sequence number (see `RecordSink::seq`).
    seq: usize,
    paused: bool,
    last_tick: Instant,
    last_lag: Instant,
    /// When the readers' model was last published to.
    last_publish: Instant,
    /// When snapshots and checkpoints were last written (at_least_once).
    last_changelog: Instant,
    /// A commit was not published yet (a backlog: see [`PUBLISH_IN_A_BACKLOG_EVERY`]).
    publish_owed: bool,
}

/// How often the readers' model is published to while the engine works through a backlog
/// (batches that come full): every commit's changes are copied to it otherwise. An account
/// changed by twenty batches in a row is then copied once, not twenty times; readers see the
/// committed state at most this much late, and as soon as the backlog is worked off (a batch
/// that does not come full, or a poll that finds nothing) they are caught up.
const PUBLISH_IN_A_BACKLOG_EVERY: Duration = Duration::from_millis(100);

/// What one poll read, reused from batch to batch: the messages, when each was read, the
/// rebalance generation it was read in, and (filled in while processing) the read times of the
/// messages that produced a decision.
struct Polled<'m> {
    messages: Vec<BorrowedMessage<'m>>,
    at: Vec<Instant>,
    generation: Vec<u64>,
    decided: Vec<Instant>,
}

impl<'a> BatchLoop<'a> {
    /// Polls, applies and commits batches until shutdown: a batch that fails is rolled back to
    /// the last checkpoint and read again.
    fn consume(&mut self) -> Result<()> {
        let k = &self.settings.kafka;
        let mut polled = Polled {
            messages: Vec::with_capacity(k.batch_max_messages),
            at: Vec::with_capacity(k.batch_max_messages),
            generation: Vec::with_capacity(k.batch_max_messages),
            decided: Vec::new(),
        };
        let mut outputs = Vec::new();
        while !self.shutdown.load(Ordering::Relaxed) {
            polled.messages.clear();
            polled.at.clear();
            polled.generation.clear();
            polled.decided.clear();
            self.follow_pause_request();
            if self.last_lag.elapsed() >= Duration::from_secs(1) {
                self.each_second()?;
            }
            self.poll(&mut polled);
            if self.paused {
                // Read from a partition assigned after the pause took effect: it is paused now
                // and put back where these were read, so nothing is skipped when consumption
                // resumes.
                if !polled.messages.is_empty() {
                    set_paused(self.consumer, true);
                    hold_back(self.consumer, &polled.messages);
                }
                continue;
            }
            let tick_due =
                k.tick_ms > 0 && self.last_tick.elapsed() >= Duration::from_millis(k.tick_ms);
            if polled.messages.is_empty() && !tick_due {
                // Nothing more to read: the changelog and the readers catch up with the last
                // batches.
                self.write_pending_changelog()?;
                if self.publish_owed {
                    let mut guard = self.lock()?;
                    self.publish_now(&mut guard);
                }
                continue;
            }
            if tick_due {
                self.last_tick = Instant::now();
            }
            self.seq += 1;
            self.producer.context().begin(self.seq);
            let mut guard = self.lock()?;
            drop_stale(
                &guard,
                &mut polled.messages,
                &mut polled.at,
                &polled.generation,
            );
            // The batch's span: processing, then the commit steps (and a rollback when it fails).
            let batch_span = tracing::debug_span!(
                "batch",
                seq = self.seq,
                records = polled.messages.len(),
                delivery = k.delivery.as_str(),
                otel.status_code = tracing::field::Empty,
            );
            let _batch_entered = batch_span.enter();
            let busy = Instant::now();
            match self.apply_and_commit(&mut guard, &mut polled, tick_due, &mut outputs) {
                Ok(changes) => {
                    self.committed(&mut guard, changes, &polled);
                    self.stats
                        .busy_ns
                        .fetch_add(busy.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    batch_span.record("otel.status_code", "ERROR");
                    if !self.recover(guard, e)? {
                        break;
                    }
                }
            }
        }
        // A clean stop: a restart resumes where this instance stopped.
        if let Err(e) = self.write_pending_changelog() {
            warn!("the last batches' snapshots not written ({e:#}): the next owner reads their input again");
        }
        Ok(())
    }

    /// The engine state, taken by the loop for a batch (and by the rebalance callback, on the
    /// same thread).
    fn lock(&self) -> Result<std::sync::MutexGuard<'a, LoopState>> {
        let shared: &'a Arc<Mutex<LoopState>> = self.shared;
        shared
            .lock()
            .map_err(|_| anyhow::anyhow!("engine state poisoned"))
    }

    /// Pauses or resumes consumption when an admin asked for it since the last batch.
    fn follow_pause_request(&mut self) {
        let pause = self.stats.pause_requested.load(Ordering::Relaxed);
        if pause == self.paused {
            return;
        }
        self.paused = pause;
        set_paused(self.consumer, pause);
        self.stats.paused.store(pause, Ordering::Relaxed);
        self.metrics.paused.set(i64::from(pause));
        info!(
            paused = pause,
            "consumption {}",
            if pause { "paused" } else { "resumed" }
        );
    }

    /// Once a second: the pause applied to partitions assigned since, the lag, and a publish
    /// that a reader put off.
    fn each_second(&mut self) -> Result<()> {
        self.last_lag = Instant::now();
        if self.paused {
            // Partitions assigned since (a rebalance) start unpaused.
            set_paused(self.consumer, true);
        }
        let mut guard = self.lock()?;
        let failing = self.stats.failed_in_a_row.load(Ordering::Relaxed) > 0;
        update_lag(self.consumer, &guard, failing, self.paused, self.metrics);
        if guard.unpublished.deferred {
            publish(&mut guard);
        }
        Ok(())
    }

    /// Reads one batch (up to `batch_max_messages`, for at most `batch_max_ms`).
    fn poll(&self, polled: &mut Polled<'a>) {
        let k = &self.settings.kafka;
        let window = Duration::from_millis(k.batch_max_ms);
        let consumer: &'a BaseConsumer<RebalanceContext> = self.consumer;
        let failed = kafka::poll_batch(consumer, k.batch_max_messages, window, |m| {
            polled.messages.push(m);
            polled.at.push(Instant::now());
            polled
                .generation
                .push(self.generation.load(Ordering::SeqCst));
        });
        if let Some(e) = failed {
            warn!("consumer: {e}");
        }
    }

    /// Applies the batch (and a clock tick) and commits it: outputs, then snapshots, then
    /// checkpoints (and the transaction). Returns what changed, per partition.
    fn apply_and_commit(
        &self,
        sh: &mut LoopState,
        polled: &mut Polled<'a>,
        tick: bool,
        outputs: &mut Vec<Output>,
    ) -> Result<Changes> {
        let k = &self.settings.kafka;
        let out = RecordSink {
            producer: &self.producer,
            k,
            metrics: self.metrics,
            seq: self.seq,
        };
        let processing = tracing::debug_span!("process", records = polled.messages.len()).entered();
        let cx = Applying::new(self.settings, self.stats, self.metrics, self.options);
        let batch = Batch {
            messages: &polled.messages,
            polled: &polled.at,
            decided: &mut polled.decided,
            tick,
        };
        let touched = process_batch(sh, batch, &cx, &out, outputs)?;
        drop(processing);
        let log = if k.delivery == Delivery::AtLeastOnce
            && self.in_a_backlog(polled)
            && self.last_changelog.elapsed() < Duration::from_millis(k.changelog_interval_ms)
            && !self.shutdown.load(Ordering::Relaxed)
        {
            Changelog::Later
        } else {
            Changelog::Now
        };
        commit_batch(
            sh,
            touched,
            &polled.messages,
            &out,
            self.consumer,
            k,
            (self.options.feed.is_some(), log),
        )
    }

    /// Whether the batch came full: more input is probably waiting (a backlog), so the
    /// changelog (at_least_once) and the readers' model can wait for a later batch.
    fn in_a_backlog(&self, polled: &Polled<'_>) -> bool {
        polled.messages.len() >= self.settings.kafka.batch_max_messages
    }

    /// Writes the snapshots and checkpoints an at_least_once backlog left pending (before a
    /// clean stop: a restart then resumes where this instance stopped, repeating nothing).
    fn write_pending_changelog(&mut self) -> Result<()> {
        let mut guard = self.lock()?;
        if guard.unlogged.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        self.producer.context().begin(self.seq);
        let out = RecordSink {
            producer: &self.producer,
            k: &self.settings.kafka,
            metrics: self.metrics,
            seq: self.seq,
        };
        let written = guard.unlogged.clone();
        let changes = match commit::write_changelog(&mut guard, &out, None) {
            Ok(changes) => {
                // The group's offsets catch up with the checkpoints just written (for lag).
                commit::commit_group_offsets(&guard, &written, self.consumer);
                changes
            }
            Err(e) => {
                // As a failed batch: back to the checkpoints, read again.
                self.recover(guard, e)?;
                return Ok(());
            }
        };
        self.last_changelog = Instant::now();
        guard.unpublished.add(changes);
        self.publish_now(&mut guard);
        Ok(())
    }

    /// After a commit: readers and the console see what it changed (in a backlog, readers at
    /// most [`PUBLISH_IN_A_BACKLOG_EVERY`] later), and it is counted.
    fn committed(&mut self, sh: &mut LoopState, changes: Changes, polled: &Polled<'_>) {
        sh.unpublished.add(changes);
        if sh.unlogged.is_empty() {
            self.last_changelog = Instant::now();
        }
        if !self.in_a_backlog(polled) || self.last_publish.elapsed() >= PUBLISH_IN_A_BACKLOG_EVERY {
            self.publish_now(sh);
        } else {
            self.publish_owed = true;
        }
        if let Some(feed) = &self.options.feed {
            feed.publish(&mut sh.pending);
        }
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.failed_in_a_row.store(0, Ordering::Relaxed);
        self.metrics.failed_batches_in_a_row.set(0);
        self.metrics
            .transactions
            .with_label_values(&["committed"])
            .inc();
        self.metrics
            .batch_size
            .observe(polled.messages.len() as f64);
        let now = Instant::now();
        for t in &polled.decided {
            self.metrics
                .decision_latency
                .observe(now.duration_since(*t).as_secs_f64());
        }
    }

    /// Publishes what committed since the last publish to the readers' model.
    fn publish_now(&mut self, sh: &mut LoopState) {
        publish(sh);
        self.last_publish = Instant::now();
        self.publish_owed = false;
    }

    /// After a failed batch: its transaction aborted, the producer replaced when it cannot be
    /// used again, and every partition rewound to its checkpoint. False when shutdown came
    /// while waiting for a new producer.
    fn recover(
        &mut self,
        mut guard: std::sync::MutexGuard<'a, LoopState>,
        e: anyhow::Error,
    ) -> Result<bool> {
        guard.pending.clear();
        self.stats.aborted.fetch_add(1, Ordering::Relaxed);
        let in_a_row = self.stats.failed_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        self.metrics.failed_batches_in_a_row.set(in_a_row as i64);
        self.metrics
            .transactions
            .with_label_values(&["aborted"])
            .inc();
        error!("batch failed, rolling back to the last checkpoint: {e:#}");
        if let Some(why) = self.why_replace(&e)? {
            error!("producer {why}; replacing it with a new one");
            self.metrics.producers_replaced.inc();
            drop(guard);
            self.stats.replacing_producer.store(true, Ordering::Relaxed);
            let replaced = new_producer(&self.settings.kafka, self.shutdown, self.metrics);
            self.stats
                .replacing_producer
                .store(false, Ordering::Relaxed);
            match replaced? {
                Some(p) => self.producer = Arc::new(p),
                None => return Ok(false),
            }
            guard = self.lock()?;
        }
        rewind(
            &mut guard,
            self.settings,
            self.consumer,
            self.stats,
            self.metrics,
            self.shutdown,
        )?;
        Ok(true)
    }

    /// Aborts the failed batch's transaction (exactly_once) and says why the producer must be
    /// replaced, if it must. Stuck: the stuck call keeps the old one alive on its thread, and the
    /// new one's epoch fences it (its transaction is aborted by the coordinator, whatever it
    /// still sends is refused). Failed fatally, or its transaction could not be aborted
    /// (librdkafka then refuses every later transaction with "conflicting abort_transaction API
    /// call already in progress", on Apache Kafka after a record the broker refused): for
    /// exactly_once the new epoch also aborts anything the old one left open. Fenced by another
    /// instance: an error, the loop ends.
    fn why_replace(&self, e: &anyhow::Error) -> Result<Option<String>> {
        let k = &self.settings.kafka;
        let stuck = e.chain().any(|c| c.is::<ProducerStuck>());
        let abort_failed = (k.delivery == Delivery::ExactlyOnce && !stuck)
            .then(|| {
                self.producer
                    .abort_transaction(Duration::from_secs(30))
                    .err()
            })
            .flatten();
        Ok(if stuck {
            Some("stuck in send_offsets_to_transaction past its deadline".to_string())
        } else if let Some((code, why)) = self.producer.client().fatal_error() {
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
        })
    }
}

/// Drops the messages of the batch that a rebalance during polling made stale: their partition
/// was revoked (no longer ours), or revoked and assigned again (restored and sought back to its
/// checkpoint, from where they are read again). Applying them would run them against a
/// partition's state they do not belong to.
fn drop_stale(
    sh: &LoopState,
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
fn set_paused(consumer: &BaseConsumer<RebalanceContext>, pause: bool) {
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
fn hold_back(consumer: &BaseConsumer<RebalanceContext>, batch: &[BorrowedMessage<'_>]) {
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
    consumer: &BaseConsumer<RebalanceContext>,
    sh: &LoopState,
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
    consumer: &BaseConsumer<RebalanceContext>,
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
