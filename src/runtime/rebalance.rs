//! The consumer's client context: librdkafka's log and errors into tracing and metrics, and
//! the rebalance callback that restores assigned partitions and drops revoked ones.

use super::*;

/// The consumer's client context: librdkafka's log and errors into tracing and metrics, and
/// the rebalance callback that restores assigned partitions and drops revoked ones.
pub(super) struct RebalanceContext {
    pub(super) settings: Arc<Settings>,
    /// Bumped by every assignment and revocation (read by the poll loop without the lock).
    pub(super) generation: Arc<AtomicU64>,
    pub(super) state: Arc<Mutex<LoopState>>,
    pub(super) stats: Arc<Stats>,
    pub(super) metrics: Arc<Metrics>,
    /// The group assigns cooperatively (`kafka::is_cooperative` of the consumer's
    /// configuration): assignments and revocations are applied incrementally.
    pub(super) cooperative: bool,
    /// Set by SIGTERM (and before the engine leaves its group): an assignment that arrives
    /// then is applied as given (librdkafka expects it) but not restored, since nothing is
    /// processed any more; a restore under way stops (its partitions are not taken), and a
    /// failed one is not tried again.
    pub(super) shutdown: Arc<AtomicBool>,
}

impl ClientContext for RebalanceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka::count_error(&self.metrics.kafka_client_errors, "consumer", &error);
        kafka::librdkafka_error(&error, reason);
    }
}

impl ConsumerContext for RebalanceContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        let partitions: BTreeSet<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.assign(consumer, &partitions, tpl)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.revoke(consumer, &partitions, tpl)
            }
            other => error!("rebalance error: {other:?}"),
        }
    }
}

impl RebalanceContext {
    /// Restores the assigned partitions' accounts from the changelog and starts each input at
    /// its checkpoint; a partition whose state cannot be restored is not taken.
    fn assign(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &BTreeSet<i32>,
        tpl: &mut TopicPartitionList,
    ) {
        if self.shutdown.load(Ordering::Relaxed) {
            info!(
                ?partitions,
                "partitions assigned while shutting down: not restored"
            );
            if let Err(e) = kafka::apply_rebalance(consumer, self.cooperative, true, tpl) {
                error!("assign failed: {e}");
            }
            return;
        }
        info!(
            ?partitions,
            cooperative = self.cooperative,
            "partitions assigned; restoring their accounts from the changelog"
        );
        self.metrics.rebalances.with_label_values(&["assign"]).inc();
        let started = Instant::now();
        let mut shared = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let restored = self.restore(&mut shared, partitions);
        let checkpoints = match restored {
            Ok(c) => c,
            Err(e) => {
                // Without its state a partition must not be processed: assign nothing
                // (the callback must still assign, or librdkafka waits for it and the
                // consumer can neither rebalance nor close); the group will rebalance it
                // again.
                if self.shutdown.load(Ordering::Relaxed) {
                    info!("shutting down: not taking partitions {partitions:?} ({e:#})");
                } else {
                    error!("restore failed, not taking partitions {partitions:?}: {e:#}");
                }
                let _ = kafka::apply_rebalance(
                    consumer,
                    self.cooperative,
                    true,
                    &TopicPartitionList::new(),
                );
                return;
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        for p in partitions {
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
        if let Err(e) = kafka::apply_rebalance(consumer, self.cooperative, true, tpl) {
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

    /// Restores `partitions`, retrying a failed restore (broker trouble): without their state
    /// these partitions cannot be processed, and nothing else would hand them back. Not once
    /// shutdown is asked for: the next owner restores them.
    fn restore(
        &self,
        shared: &mut LoopState,
        partitions: &BTreeSet<i32>,
    ) -> Result<BTreeMap<i32, Checkpoint>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match restore_partitions(
                &self.settings,
                shared,
                partitions,
                &self.stats,
                &self.metrics,
                &self.shutdown,
            ) {
                Err(e) if attempt < 30 && !self.shutdown.load(Ordering::Relaxed) => {
                    warn!("restore failed (attempt {attempt}), retrying: {e:#}");
                    std::thread::sleep(Duration::from_secs(1));
                }
                other => break other,
            }
        }
    }

    /// Writes the snapshots and checkpoints an at_least_once backlog left pending for the
    /// revoked `partitions` (see `kafka.changelog_interval_ms`), with a producer of its own,
    /// so that their next owner does not read their last batches again. Not for partitions
    /// lost (another member may own them already); if it fails, the next owner reads those
    /// batches again from the older checkpoints, repeating their outputs with the same ids.
    fn write_pending_changelog(&self, shared: &mut LoopState, partitions: &BTreeSet<i32>) {
        if shared.unlogged.is_disjoint(partitions) {
            return;
        }
        let k = &self.settings.kafka;
        let written = kafka::create_producer(k, &self.shutdown).and_then(|producer| {
            let producer = Arc::new(producer.context("no producer")?);
            producer.context().begin(1);
            let out = RecordSink {
                producer: &producer,
                k,
                metrics: &self.metrics,
                seq: 1,
            };
            let written = commit::write_changelog(shared, &out, Some(partitions));
            kafka::drop_within(producer, "revocation producer", kafka::CLOSE_WITHIN);
            written
        });
        match written {
            Ok(_) => info!(
                ?partitions,
                "revoked partitions' pending snapshots and checkpoints written"
            ),
            Err(e) => warn!(
                ?partitions,
                "revoked partitions' pending snapshots not written ({e:#}): their next owner reads their last batches again"
            ),
        }
    }

    /// Drops the revoked partitions' accounts (their state lives on in the changelog).
    fn revoke(
        &self,
        consumer: &BaseConsumer<Self>,
        partitions: &BTreeSet<i32>,
        tpl: &mut TopicPartitionList,
    ) {
        let lost = consumer.assignment_lost();
        info!(
            ?partitions,
            lost, "partitions revoked; dropping their accounts"
        );
        self.metrics.rebalances.with_label_values(&["revoke"]).inc();
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut now = BTreeSet::new();
        if let Ok(mut shared) = self.state.lock() {
            if !lost {
                self.write_pending_changelog(&mut shared, partitions);
            }
            for p in partitions {
                shared.unlogged.remove(p);
                shared.parts.remove(p);
                shared.unpublished.changed.remove(p);
                shared.unpublished.full.remove(p);
            }
            now = shared.parts.keys().copied().collect();
            publish(&mut shared);
        }
        // Nothing more to commit here: every committed batch already wrote its checkpoints
        // (or they were written above), and what this instance polled but did not commit is
        // dropped (`drop_stale`) and read again by the new owner from those checkpoints.
        if let Err(e) = kafka::apply_rebalance(consumer, self.cooperative, false, tpl) {
            error!("unassign failed: {e}");
        }
        info!(?now, "partitions owned after the revocation");
    }
}
