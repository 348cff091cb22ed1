//! The repartition stage (`kafka.repartition = true`): re-keys every input event by credit
//! account, so that one engine partition sees all of a group's exposure.
//!
//! Inputs are keyed by customer_id, so two members of a group usually land in different input
//! partitions, owned by different engines that cannot see each other's exposure. The router
//! (one per instance, its own consumer group `<group_id>-router`) reads the input topics and
//! writes each event unchanged to the `repartition` topic, keyed by:
//! - the group, for a `profile.group` and for any event of a customer whose profile names a
//!   group;
//! - the customer, otherwise;
//! - the record's original key, for what does not decode (the engine dead-letters it, with the
//!   original topic, partition and offset carried in headers).
//!
//! Which group a customer belongs to comes from a table of every customer profile that each
//! instance keeps complete by reading the whole profiles topic (like a Kafka Streams global
//! table): read to its end before the router starts, then kept current before every batch. The
//! router also applies the profiles it routes itself, so a profile followed by an order in the
//! same partition routes the order by the new profile.
//!
//! Delivery: a batch's records are acknowledged before its input offsets are committed, so a
//! crash repeats events, never loses them; the engine drops a repeated event (same event_id,
//! same credit account, same partition). The engine stage consumes the one repartition topic,
//! so the cooperative-sticky assignor can move single partitions without splitting an
//! account's inputs (with several input topics it could give `orders[3]` and `payments[3]` to
//! different instances; the direct path therefore uses the range assignor).
//!
//! Limitation: a profile that moves a customer into, out of or between groups routes its later
//! events to the new credit account, while what it owed before stays with the old one (counted
//! by `credit_sentinel_route_moves_total` and logged). Set a customer's group before its first
//! order, or move it once its items are settled.

use super::kafka;
use crate::codec;
use crate::config::{Delivery, KafkaSettings, Settings};
use crate::metrics::Metrics;
use crate::model::{Event, EventBody};
use anyhow::{Context as _, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Header naming the input topic a routed record was read from.
pub const SOURCE_TOPIC: &str = "credit-sentinel-source-topic";
/// Header with the input partition (decimal).
pub const SOURCE_PARTITION: &str = "credit-sentinel-source-partition";
/// Header with the input offset (decimal).
pub const SOURCE_OFFSET: &str = "credit-sentinel-source-offset";

/// Header with the input record's key (absent when it had none).
pub const SOURCE_KEY: &str = "credit-sentinel-source-key";

/// Where a routed record came from, read back from its headers by the engine.
pub struct Source<'m> {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The input record's key: a dead-letter keeps it (the routed key may be a group's).
    pub key: Option<&'m [u8]>,
}

/// The input record a routed record was read from, if its headers say.
pub fn source_of<'m>(m: &'m BorrowedMessage<'_>) -> Option<Source<'m>> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    let (mut topic, mut partition, mut offset, mut key) = (None, None, None, None);
    for h in headers.iter() {
        let text = h.value.and_then(|v| std::str::from_utf8(v).ok());
        match h.key {
            SOURCE_TOPIC => topic = text.map(str::to_string),
            SOURCE_PARTITION => partition = text.and_then(|t| t.parse().ok()),
            SOURCE_OFFSET => offset = text.and_then(|t| t.parse().ok()),
            SOURCE_KEY => key = h.value,
            _ => {}
        }
    }
    Some(Source {
        topic: topic?,
        partition: partition?,
        offset: offset?,
        key,
    })
}

/// Every customer's group as its latest profile names it, with that profile's offset in the
/// profiles topic (a customer's profiles share one partition, keyed by customer_id), so a
/// profile read twice, or an older one read after a newer one, changes nothing.
#[derive(Default)]
pub struct Table {
    groups: HashMap<String, (Option<String>, i64)>,
}

impl Table {
    /// Applies one event read from the profiles topic at `offset` (anything but a customer
    /// profile changes nothing); returns true when it moved a customer already routed to a
    /// different credit account.
    pub fn apply(&mut self, event: &Event, offset: i64) -> bool {
        let (Some(customer), EventBody::CustomerProfile(p)) = (&event.customer_id, &event.body)
        else {
            return false;
        };
        match self.groups.get_mut(customer) {
            Some((group, at)) if *at < offset => {
                let moved = *group != p.group_id;
                *group = p.group_id.clone();
                *at = offset;
                moved
            }
            Some(_) => false,
            None => {
                self.groups
                    .insert(customer.clone(), (p.group_id.clone(), offset));
                false
            }
        }
    }

    /// [`Table::apply`] for a raw profiles record (one that does not decode changes nothing).
    pub fn apply_record(&mut self, payload: &[u8], offset: i64) -> bool {
        codec::decode_event(payload).is_ok_and(|e| self.apply(&e, offset))
    }

    /// The customer's group, if its profile names one.
    pub fn group_of(&self, customer: &str) -> Option<&str> {
        self.groups.get(customer).and_then(|(g, _)| g.as_deref())
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// The credit account an input record belongs to: `(key, kind)`, kind as in the `routed`
/// metric. A customer profile is routed by the group it names (the account it joins).
/// `event` is `None` for a record that does not decode.
pub fn route(
    table: &Table,
    event: Option<&Event>,
    original: Option<&[u8]>,
) -> (Vec<u8>, &'static str) {
    let Some(event) = event else {
        return (original.unwrap_or_default().to_vec(), "original");
    };
    let group = match &event.body {
        EventBody::GroupProfile(g) => Some(g.group_id.as_str()),
        EventBody::CustomerProfile(p) => p.group_id.as_deref(),
        _ => event.customer_id.as_deref().and_then(|c| table.group_of(c)),
    };
    match (group, event.customer_id.as_deref()) {
        (Some(g), _) => (g.as_bytes().to_vec(), "group"),
        (None, Some(c)) => (c.as_bytes().to_vec(), "customer"),
        (None, None) => (original.unwrap_or_default().to_vec(), "original"),
    }
}

/// Starts the router on its own thread. It runs until `shutdown`, restarting with backoff
/// after a failure (broker trouble), so an instance never silently stops routing.
pub fn spawn(
    settings: Arc<Settings>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name("router".into())
        .spawn(move || {
            let mut attempt = 0u32;
            while !shutdown.load(Ordering::Relaxed) {
                match run(&settings.kafka, &shutdown, &metrics) {
                    Ok(()) => break,
                    Err(e) => {
                        let wait = kafka::backoff(&settings.kafka, attempt);
                        attempt += 1;
                        error!("repartition stage failed, restarting in {wait:?}: {e:#}");
                        kafka::sleep_unless_shutdown(wait, &shutdown);
                    }
                }
            }
        })
        .expect("router thread")
}

/// How long the engine waits for the repartition stage to stop at shutdown: its open batch
/// (a flush of up to 60 s) and leaving its group ([`kafka::CLOSE_WITHIN`]).
const STOPS_WITHIN: Duration = Duration::from_secs(75);

/// Waits for the repartition stage to stop after shutdown was asked for, at most
/// [`STOPS_WITHIN`]; a stage still running then is left to the process's exit (what it
/// routed but did not commit is routed again by the next owner, and the engine drops the
/// repeats).
pub fn join(router: JoinHandle<()>) {
    let started = Instant::now();
    while !router.is_finished() {
        if started.elapsed() >= STOPS_WITHIN {
            warn!("the repartition stage did not stop within {STOPS_WITHIN:?}; leaving it to the process's exit");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if router.join().is_err() {
        error!("the repartition stage panicked");
    }
}

/// A consumer context for the router: librdkafka's log and errors as elsewhere, and
/// rebalances applied incrementally without asking librdkafka for the protocol (see
/// [`kafka::apply_rebalance`]; the router's group is always cooperative-sticky).
struct Routing;

impl rdkafka::client::ClientContext for Routing {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka::librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka::librdkafka_error(&error, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Routing {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::types::RDKafkaRespErr as E;
        // As rdkafka's default callback: anything but an assignment unassigns (an error
        // included, as librdkafka's examples do).
        let assign = match err {
            E::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => true,
            E::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => false,
            other => {
                error!("router rebalance error: {other:?}");
                false
            }
        };
        if let Err(e) = kafka::apply_rebalance(consumer, true, assign, tpl) {
            error!("router rebalance (assign: {assign}) failed: {e}");
        }
    }
}

/// Reads the whole profiles topic into `table` up to the end it has now; returns the reader,
/// assigned to every partition, to keep the table current.
fn bootstrap(
    k: &KafkaSettings,
    table: &mut Table,
    shutdown: &AtomicBool,
) -> Result<BaseConsumer<kafka::Quiet>> {
    let topic = &k.topics.profiles;
    let mut cfg = kafka::client_config(k);
    cfg.set("group.id", format!("{}-table", k.group_id))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .set("isolation.level", "read_committed");
    let reader: BaseConsumer<kafka::Quiet> = cfg
        .create_with_context(kafka::Quiet)
        .context("cannot create the profile table reader")?;
    let md = reader
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("profiles topic metadata")?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
        let (_, high) = reader
            .fetch_watermarks(topic, *p, Duration::from_secs(10))
            .context("profiles watermarks")?;
        ends.insert(*p, high);
    }
    reader.assign(&tpl)?;
    let started = Instant::now();
    let mut read = 0u64;
    loop {
        let pos = reader.position()?;
        let done = ends.iter().all(|(p, end)| {
            *end <= 0
                || matches!(pos.find_partition(topic, *p).map(|e| e.offset()),
                    Some(Offset::Offset(o)) if o >= *end)
        });
        if done || shutdown.load(Ordering::Relaxed) {
            break;
        }
        if let Some(m) = reader.poll(Duration::from_millis(200)) {
            let m = m.context("profile table read failed")?;
            table.apply_record(m.payload().unwrap_or_default(), m.offset());
            read += 1;
        }
    }
    info!(
        records = read,
        customers = table.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "profile table loaded"
    );
    Ok(reader)
}

/// The repartition stage's loop: routes input batches and commits their offsets once every
/// routed record is acknowledged (a failed batch is read and routed again).
fn run(k: &KafkaSettings, shutdown: &AtomicBool, metrics: &Metrics) -> Result<()> {
    let mut table = Table::default();
    let reader = bootstrap(k, &mut table, shutdown)?;
    let mut cfg = kafka::consumer_config(k);
    cfg.set("group.id", format!("{}-router", k.group_id))
        .set("partition.assignment.strategy", "cooperative-sticky");
    let consumer: BaseConsumer<Routing> = cfg
        .create_with_context(Routing)
        .context("cannot create the router's consumer")?;
    consumer
        .subscribe(&k.topics.inputs())
        .context("cannot subscribe the router to the input topics")?;
    // The engine's idempotent producer without transactions (see the module doc).
    let plain = KafkaSettings {
        delivery: Delivery::AtLeastOnce,
        ..k.clone()
    };
    let Some(producer) = kafka::create_producer(&plain, shutdown)? else {
        return Ok(());
    };
    // An FX rate goes to every partition of the repartition topic: every engine, on every
    // instance, must see every rate, in its own stream's order.
    let fanout: i32 = producer
        .client()
        .fetch_metadata(Some(&k.topics.repartition), Duration::from_secs(10))
        .context("cannot read the repartition topic's partitions")?
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    info!(topic = %k.topics.repartition, partitions = fanout, "repartition stage routing");
    let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(k.batch_max_messages);
    let mut seq = 0usize;
    while !shutdown.load(Ordering::Relaxed) {
        // Keep the table current: everything the reader has fetched is applied first.
        while let Some(m) = reader.poll(Duration::ZERO) {
            let m = m.context("profile table read failed")?;
            if table.apply_record(m.payload().unwrap_or_default(), m.offset()) {
                metrics.route_moves.inc();
            }
        }
        batch.clear();
        let window = Duration::from_millis(k.batch_max_ms);
        if let Some(e) =
            kafka::poll_batch(&consumer, k.batch_max_messages, window, |m| batch.push(m))
        {
            warn!("router consumer: {e}");
        }
        if batch.is_empty() {
            continue;
        }
        seq += 1;
        producer.context().begin(seq);
        // The next offset to commit per input partition, and where the batch began in each.
        let mut next: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
        for m in &batch {
            forward(k, &mut table, &producer, m, seq, fanout, metrics)?;
            next.entry((m.topic().to_string(), m.partition()))
                .and_modify(|(_, n)| *n = m.offset() + 1)
                .or_insert((m.offset(), m.offset() + 1));
        }
        kafka::flush_producer(&producer, Duration::from_secs(60))?;
        if producer.context().failed_in_batch() > 0 {
            // Not committed: read the batch again.
            error!(
                "routed records failed ({}); routing the batch again",
                producer.context().last_error()
            );
            for ((topic, p), (first, _)) in &next {
                consumer
                    .seek(topic, *p, Offset::Offset(*first), Duration::from_secs(10))
                    .context("cannot seek back after a failed batch")?;
            }
            continue;
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, p), (_, n)) in &next {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*n))?;
        }
        // A commit refused during a rebalance only means the new owner routes these again,
        // and the engine drops the repeats.
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            warn!("router offset commit failed (its records are routed again): {e}");
        }
    }
    kafka::close_consumer(consumer, "router", kafka::CLOSE_WITHIN);
    Ok(())
}

/// Routes one input record to the repartition topic, keyed by its credit account (an FX rate to
/// every partition), with its source position and trace context in headers; a profile read
/// on the way updates the table first.
fn forward(
    k: &KafkaSettings,
    table: &mut Table,
    producer: &kafka::EngineProducer,
    m: &BorrowedMessage<'_>,
    seq: usize,
    fanout: i32,
    metrics: &Metrics,
) -> Result<()> {
    let payload = m.payload().unwrap_or_default();
    let event = codec::decode_event(payload).ok();
    if m.topic() == k.topics.profiles && event.as_ref().is_some_and(|e| table.apply(e, m.offset()))
    {
        metrics.route_moves.inc();
        warn!(
            key = %String::from_utf8_lossy(m.key().unwrap_or_default()),
            "a profile moved a routed customer to another credit account; its earlier items stay with the old one"
        );
    }
    let (key, kind) = route(table, event.as_ref(), m.key());
    metrics.routed.with_label_values(&[kind]).inc();
    let (partition, offset) = (m.partition().to_string(), m.offset().to_string());
    let mut headers = OwnedHeaders::new()
        .insert(Header {
            key: SOURCE_TOPIC,
            value: Some(m.topic()),
        })
        .insert(Header {
            key: SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: SOURCE_OFFSET,
            value: Some(&offset),
        });
    if let Some(original) = m.key() {
        headers = headers.insert(Header {
            key: SOURCE_KEY,
            value: Some(original),
        });
    }
    // The producer's trace context travels on with the record.
    let headers = crate::traces::copy_context(m.headers(), headers);
    let broadcast = event
        .as_ref()
        .is_some_and(|e| matches!(e.body, EventBody::FxRate(_)));
    let targets: Vec<Option<i32>> = if broadcast {
        (0..fanout).map(Some).collect()
    } else {
        vec![None]
    };
    for target in targets {
        let mut record = BaseRecord::with_opaque_to(&k.topics.repartition, seq)
            .payload(payload)
            .headers(headers.clone());
        if !key.is_empty() {
            record = record.key(&key);
        }
        if let Some(p) = target {
            record = record.partition(p);
        }
        kafka::send_record(producer, record).context("cannot route a record")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(customer: &str, group: Option<&str>) -> Vec<u8> {
        serde_json::json!({
            "event_id": format!("p-{customer}-{group:?}"),
            "type": "profile.customer",
            "occurred_at": "2026-03-01T00:00:00Z",
            "customer_id": customer,
            "credit_limit": "1000.00",
            "currency": "EUR",
            "group_id": group,
        })
        .to_string()
        .into_bytes()
    }

    fn order(customer: &str) -> Vec<u8> {
        serde_json::json!({
            "event_id": format!("o-{customer}"),
            "type": "order.placed",
            "occurred_at": "2026-03-01T00:00:00Z",
            "customer_id": customer,
            "order_id": "O-1",
            "amount": "10.00",
            "currency": "EUR",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn events_are_keyed_by_group_when_the_profile_names_one() {
        let decoded = |bytes: Vec<u8>| codec::decode_event(&bytes).expect("valid");
        let mut t = Table::default();
        let order_c1 = decoded(order("C-1"));
        assert_eq!(route(&t, Some(&order_c1), Some(b"C-1")).0, b"C-1");
        assert!(!t.apply_record(&profile("C-1", Some("G-1")), 5));
        assert_eq!(
            route(&t, Some(&order_c1), Some(b"C-1")),
            (b"G-1".to_vec(), "group")
        );
        let joining = decoded(profile("C-2", Some("G-1")));
        assert_eq!(route(&t, Some(&joining), Some(b"C-2")).0, b"G-1");
        // An older profile read late changes nothing; a newer one moves the customer.
        assert!(!t.apply_record(&profile("C-1", None), 4));
        assert_eq!(t.group_of("C-1"), Some("G-1"));
        assert!(t.apply_record(&profile("C-1", None), 6));
        assert_eq!(route(&t, Some(&order_c1), Some(b"C-1")).0, b"C-1");
        // What does not decode keeps its original key.
        assert_eq!(route(&t, None, Some(b"K")), (b"K".to_vec(), "original"));
    }
}
