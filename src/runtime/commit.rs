//! The commit protocol of a batch (outputs, then snapshots, then checkpoints, each
//! acknowledged; in exactly_once one transaction with the consumed offsets), the bounded
//! `send_offsets_to_transaction`, and the rewind that rolls a failed batch back.

use super::*;

/// Writes snapshots of what changed and the checkpoints, then commits; with `points`, also
/// notes the utilization of every changed account for the console.
///
/// In both delivery modes the batch is written in three acknowledged steps: its outputs, then
/// the snapshots of what it changed, then the checkpoints saying how far the state reaches.
/// A record that failed for good fails the batch before anything after it is written, so the
/// changelog never claims more than was produced, whatever the broker shows of an aborted
/// transaction (ARCHITECTURE.md: correctness does not rest on the broker alone). Without
/// this, a restore that sees an aborted transaction's checkpoint (librdkafka's mock cluster
/// shows them to `read_committed` readers) resumed after outputs that were never written.
///
/// In at_least_once with [`Changelog::Later`] (a backlog), only the outputs are acknowledged:
/// the batch's partitions join `unlogged` and its changed accounts stay marked in their
/// engines, for the next batch that writes the changelog (or [`write_changelog`]); nothing is
/// returned for the readers until then.
pub(super) fn commit_batch(
    sh: &mut LoopState,
    touched: BTreeSet<i32>,
    batch: &[BorrowedMessage<'_>],
    out: &RecordSink<'_>,
    consumer: &BaseConsumer<RebalanceContext>,
    k: &KafkaSettings,
    (points, log): (bool, Changelog),
) -> Result<Changes> {
    let started = Instant::now();
    let span = tracing::debug_span!("commit", snapshots = tracing::field::Empty).entered();
    acknowledged(out, "outputs")?;
    sh.unlogged.extend(touched);
    let changes = if log == Changelog::Later && k.delivery == Delivery::AtLeastOnce {
        Changes::new()
    } else {
        let touched = std::mem::take(&mut sh.unlogged);
        let changelog = &k.topics.changelog;
        let (changes, snapshots) = write_snapshots(sh, out, changelog, points, None)?;
        span.record("snapshots", snapshots);
        if snapshots > 0 {
            acknowledged(out, "snapshots")?;
        }
        write_checkpoints(sh, &touched, out, changelog)?;
        changes
    };
    let offsets = consumed_offsets(batch)?;
    match k.delivery {
        Delivery::ExactlyOnce => {
            if offsets.count() > 0 {
                let meta = consumer
                    .group_metadata()
                    .context("no consumer group metadata")?;
                let _send = tracing::debug_span!("send_offsets").entered();
                send_offsets_bounded(out.producer, offsets, meta)?;
            }
            // A failed checkpoint fails the commit itself (librdkafka makes it abortable).
            // rdkafka's commit flushes first, in its slow way (see `flush_producer`): nothing
            // is left for it to wait for after this.
            let flush = tracing::debug_span!("flush", step = "checkpoints").entered();
            let flushing = Instant::now();
            kafka::flush_producer(out.producer, Duration::from_secs(30))
                .context("checkpoints not acknowledged")?;
            flushed(out, "checkpoints", flushing);
            drop(flush);
            let _commit = tracing::debug_span!("commit_transaction").entered();
            out.producer
                .commit_transaction(Duration::from_secs(60))
                .context("commit failed")?;
        }
        // Not while checkpoints are pending: a partition with no checkpoint yet resumes at the
        // group's offset, which must then not be ahead of its changelog.
        Delivery::AtLeastOnce if !sh.unlogged.is_empty() => {}
        Delivery::AtLeastOnce => {
            acknowledged(out, "checkpoints")?;
            commit_async(consumer, &offsets);
        }
    }
    out.metrics
        .commit_duration
        .observe(started.elapsed().as_secs_f64());
    Ok(changes)
}

/// When a batch writes its snapshots and checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Changelog {
    /// With the batch (always in exactly_once).
    Now,
    /// at_least_once, in a backlog: with a later batch.
    Later,
}

/// Records how long a flush step took.
fn flushed(out: &RecordSink<'_>, step: &str, since: Instant) {
    out.metrics
        .flush_duration
        .with_label_values(&[step])
        .observe(since.elapsed().as_secs_f64());
}

/// Waits until every record sent so far is acknowledged, none failed (a failure is rolled back
/// and the batch retried from the checkpoint, never skipped).
fn acknowledged(out: &RecordSink<'_>, what: &str) -> Result<()> {
    let _flush = tracing::debug_span!("flush", step = what).entered();
    let flushing = Instant::now();
    kafka::flush_producer(out.producer, Duration::from_secs(30))
        .with_context(|| format!("{what} not acknowledged"))?;
    flushed(out, what, flushing);
    let failed = out.producer.context().failed_in_batch();
    if failed > 0 {
        anyhow::bail!(
            "{failed} record(s) not delivered before the {what} were acknowledged; last error: {}",
            out.producer.context().last_error()
        );
    }
    Ok(())
}

/// Writes what at_least_once batches left pending (the snapshots of the accounts their
/// partitions' engines still mark changed, then the checkpoints of `unlogged`), each step
/// acknowledged; with `only`, for those partitions alone. Returns what changed, per partition.
pub(super) fn write_changelog(
    sh: &mut LoopState,
    out: &RecordSink<'_>,
    only: Option<&BTreeSet<i32>>,
) -> Result<Changes> {
    let touched: BTreeSet<i32> = match only {
        Some(ps) => sh.unlogged.intersection(ps).copied().collect(),
        None => sh.unlogged.clone(),
    };
    if touched.is_empty() {
        return Ok(Changes::new());
    }
    let changelog = &out.k.topics.changelog;
    let (changes, snapshots) = write_snapshots(sh, out, changelog, false, Some(&touched))?;
    if snapshots > 0 {
        acknowledged(out, "snapshots")?;
    }
    write_checkpoints(sh, &touched, out, changelog)?;
    acknowledged(out, "checkpoints")?;
    for p in &touched {
        sh.unlogged.remove(p);
    }
    Ok(changes)
}

/// Commits the group's offsets of `partitions` to how far their engines have consumed (what
/// their checkpoints, just written, say), asynchronously: they serve lag monitoring.
pub(super) fn commit_group_offsets(
    sh: &LoopState,
    partitions: &BTreeSet<i32>,
    consumer: &BaseConsumer<RebalanceContext>,
) {
    let mut offsets = TopicPartitionList::new();
    for p in partitions {
        if let Some(part) = sh.parts.get(p) {
            for (topic, next) in &part.positions {
                let _ = offsets.add_partition_offset(topic, *p, Offset::Offset(*next));
            }
        }
    }
    commit_async(consumer, &offsets);
}

/// Commits group offsets without waiting. They serve lag monitoring; restore uses the
/// checkpoints, and the group's offset only for a partition that has none yet (which is why
/// at_least_once commits them only with checkpoints).
fn commit_async(consumer: &BaseConsumer<RebalanceContext>, offsets: &TopicPartitionList) {
    if offsets.count() > 0 {
        if let Err(e) = consumer.commit(offsets, rdkafka::consumer::CommitMode::Async) {
            warn!("offset commit failed (restore does not depend on it): {e}");
        }
    }
}

/// Writes a snapshot of every account and group the batch changed to its changelog partition
/// (with `points`, notes each changed account's utilization for the console); returns what
/// changed, per partition, and how many snapshots were sent. With `only`, for those
/// partitions alone.
fn write_snapshots(
    sh: &mut LoopState,
    out: &RecordSink<'_>,
    changelog: &str,
    points: bool,
    only: Option<&BTreeSet<i32>>,
) -> Result<(Changes, usize)> {
    let mut changes = Changes::new();
    let mut snapshots = 0usize;
    for (p, part) in sh
        .parts
        .iter_mut()
        .filter(|(p, _)| only.is_none_or(|ps| ps.contains(p)))
    {
        let (accounts, groups) = part.engine.take_changed();
        for g in &groups {
            if let Some((key, value)) = state::encode_group(&part.engine, g) {
                out.send(changelog, Some(*p), Some(key.as_bytes()), &value)?;
                snapshots += 1;
            }
        }
        for a in &accounts {
            if let Some((key, value)) = state::encode_account(&part.engine, a) {
                out.send(changelog, Some(*p), Some(key.as_bytes()), &value)?;
                snapshots += 1;
            }
            if points {
                if let Some(point) = utilization_point(&part.engine, a) {
                    sh.pending.point(a, point);
                }
            }
        }
        if !accounts.is_empty() || !groups.is_empty() {
            // Moved, not copied: the read model's publish needs them once the batch commits.
            changes.insert(
                *p,
                (accounts.into_iter().collect(), groups.into_iter().collect()),
            );
        }
    }
    Ok((changes, snapshots))
}

/// Writes the checkpoint of every partition the batch touched: how far each input topic was
/// consumed, the engine clock and the live FX quotes.
fn write_checkpoints(
    sh: &LoopState,
    touched: &BTreeSet<i32>,
    out: &RecordSink<'_>,
    changelog: &str,
) -> Result<()> {
    for (p, part) in sh.parts.iter() {
        if touched.contains(p) {
            let c = Checkpoint {
                v: state::FORMAT_VERSION,
                offsets: part.positions.clone(),
                clock: part.engine.clock(),
                fx: part.engine.rates().live(),
            };
            out.send(
                changelog,
                Some(*p),
                Some(checkpoint_key(*p).as_bytes()),
                &serde_json::to_vec(&c)?,
            )?;
        }
    }
    Ok(())
}

/// The next offset of every topic partition the batch read, for the group's committed offsets.
fn consumed_offsets(batch: &[BorrowedMessage<'_>]) -> Result<TopicPartitionList> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_default();
        *e = (*e).max(m.offset() + 1);
    }
    let mut offsets = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    }
    Ok(offsets)
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

/// How long `send_offsets_to_transaction` is given, and how much longer the engine waits for
/// it before it declares the producer stuck.
pub(super) const SEND_OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const SEND_OFFSETS_GRACE: Duration = Duration::from_secs(5);

/// The producer did not return from `send_offsets_to_transaction` by its deadline.
#[derive(Debug, thiserror::Error)]
#[error("send_offsets_to_transaction did not return within {0:?} (librdkafka ignores its timeout when the group coordinator's broker is gone)")]
pub(super) struct ProducerStuck(Duration);

/// Adds the batch's input offsets to the transaction, with a deadline librdkafka does not
/// keep by itself: in librdkafka 2.12 the call can wait forever once the consumer group's
/// coordinator broker has died (its coordinator-request timeout is never checked,
/// confluentinc/librdkafka#5456 and #5511), and the engine thread with it, deaf to SIGTERM.
/// The call runs on a thread of its own; past the deadline the error is [`ProducerStuck`],
/// and the batch loop replaces the producer and rolls back.
pub(super) fn send_offsets_bounded(
    producer: &Arc<kafka::EngineProducer>,
    offsets: TopicPartitionList,
    meta: rdkafka::consumer::ConsumerGroupMetadata,
) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let p = Arc::clone(producer);
    std::thread::Builder::new()
        .name("send-offsets".into())
        .spawn(move || {
            let r = p.send_offsets_to_transaction(&offsets, &meta, SEND_OFFSETS_TIMEOUT);
            // The receiver is gone when the engine gave up on this call.
            let _ = tx.send(r);
        })
        .context("cannot start the send-offsets thread")?;
    let deadline = SEND_OFFSETS_TIMEOUT + SEND_OFFSETS_GRACE;
    match rx.recv_timeout(deadline) {
        Ok(r) => r.context("cannot add offsets to the transaction"),
        Err(_) => Err(ProducerStuck(deadline).into()),
    }
}

/// How long a rewind retries a restore that fails before the runtime gives up (and exits
/// with the error, for its supervisor to restart it).
pub(super) const REWIND_GIVES_UP_AFTER: Duration = Duration::from_secs(300);

/// Rebuilds the engine from the changelog and seeks every assigned partition back to its
/// checkpoint: what a failed batch did to the in-memory state is thrown away. A failing
/// restore is retried every second, until a shutdown is asked for (then nothing is sought:
/// the loop ends, and the next owner restores from the same checkpoints) or for at most
/// [`REWIND_GIVES_UP_AFTER`].
pub(super) fn rewind(
    sh: &mut LoopState,
    settings: &Settings,
    consumer: &BaseConsumer<RebalanceContext>,
    stats: &Stats,
    metrics: &Metrics,
    shutdown: &AtomicBool,
) -> Result<()> {
    let _span = tracing::debug_span!("rewind").entered();
    // Every partition goes back to its checkpoint: nothing is pending any more.
    sh.unlogged.clear();
    let assigned: BTreeSet<i32> = sh.parts.keys().copied().collect();
    let started = Instant::now();
    let checkpoints = loop {
        match restore_partitions(settings, sh, &assigned, stats, metrics, shutdown) {
            Ok(c) => break c,
            Err(e) if started.elapsed() >= REWIND_GIVES_UP_AFTER => {
                return Err(e.context(format!(
                    "restore after a failed batch still failing after {REWIND_GIVES_UP_AFTER:?}"
                )));
            }
            Err(e) => {
                error!("restore after a failed batch failed, retrying: {e:#}");
                kafka::sleep_unless_shutdown(Duration::from_secs(1), shutdown);
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(());
                }
            }
        }
    };
    let assignment = consumer.assignment().context("no assignment")?;
    for elem in assignment.elements() {
        let offset = checkpoints
            .get(&elem.partition())
            .and_then(|c| c.offsets.get(elem.topic()))
            .map_or(Offset::Beginning, |o| Offset::Offset(*o));
        if let Err(e) = consumer.seek(
            elem.topic(),
            elem.partition(),
            offset,
            Duration::from_secs(10),
        ) {
            warn!("seek {}/{} failed: {e}", elem.topic(), elem.partition());
        }
    }
    Ok(())
}
