//! Kafka client setup: librdkafka configuration from settings (security and any other
//! property passed through), the producer (transactional for exactly_once, idempotent
//! always), and startup checks that wait, with backoff, for an unreachable broker instead of
//! crash-looping.

use crate::config::{Delivery, KafkaSettings};
use anyhow::{Context as _, Result};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{debug, error, info, warn};

/// A producer context that counts failed deliveries and keeps the last error. A producer's
/// `flush` returns once every message is delivered *or has failed*; without this count an
/// output that failed for good (after librdkafka's own retries, within `message.timeout.ms`)
/// would be lost silently while the checkpoint after it claims it was produced.
///
/// Each record carries the sequence number of the batch that produced it (its delivery
/// opaque), and failures are also counted for the batch `begin` named last: a late report for
/// an earlier batch (a record purged by an abort, say) never fails the batch after it.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
    batch: AtomicUsize,
    batch_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Where librdkafka's error reports are counted (`kafka_client_errors_total`), once set.
    errors: OnceLock<prometheus::IntCounterVec>,
}

impl Deliveries {
    /// Counts this producer's librdkafka error reports in `errors` (client `producer`).
    pub fn count_errors_in(&self, errors: prometheus::IntCounterVec) {
        let _ = self.errors.set(errors);
    }

    /// Failed deliveries so far, of any batch (a counter: compare two readings).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Starts counting the failures of records tagged `batch` (and only those).
    pub fn begin(&self, batch: usize) {
        self.batch.store(batch, Ordering::SeqCst);
        self.batch_failed.store(0, Ordering::SeqCst);
    }

    /// Failed deliveries of records tagged with the batch `begin` named last.
    pub fn failed_in_batch(&self) -> u64 {
        self.batch_failed.load(Ordering::SeqCst)
    }

    /// The last delivery error, for the log and the batch's error.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
            .unwrap_or_default()
    }
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(errors) = self.errors.get() {
            count_error(errors, "producer", &error);
        }
        librdkafka_error(&error, reason);
    }
}

/// A client context that only tames librdkafka's logging (see [`librdkafka_log`]): for the
/// engine's helper clients (restore reader, repartition stage).
#[derive(Default)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        librdkafka_log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        librdkafka_error(&error, reason);
    }
}

impl ConsumerContext for Quiet {}

/// How often one kind of librdkafka line may reach the log.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// When each kind of librdkafka line was last logged, and how many were held back since.
static LOGGED: LazyLock<Mutex<HashMap<String, (Instant, u64)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether a line of `kind` may be logged now: `Some(n)` with the number held back since the
/// last one, at most once per kind per minute (every client of the process shares the count).
fn once_a_minute(kind: &str) -> Option<u64> {
    let mut seen = LOGGED.lock().ok()?;
    let now = Instant::now();
    if seen.len() > 512 {
        seen.clear(); // librdkafka's kinds are few; a flood of new ones only resets the count
    }
    match seen.get_mut(kind) {
        Some((at, held)) if now.duration_since(*at) < LOG_EVERY => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let n = *held;
            *at = now;
            *held = 0;
            Some(n)
        }
        None => {
            seen.insert(kind.to_string(), (now, 0));
            Some(0)
        }
    }
}

fn held_back(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more like it in the last minute not logged)")
    }
}

/// librdkafka's own log lines, each kind (its facility, e.g. FAIL) at most once a minute: an
/// unreachable broker makes every client report every failed connection attempt.
pub fn librdkafka_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    if matches!(level, RDKafkaLogLevel::Debug) {
        debug!(target: "librdkafka", "{fac} {message}");
        return;
    }
    let Some(n) = once_a_minute(&format!("log/{fac}")) else {
        return;
    };
    let more = held_back(n);
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => error!(target: "librdkafka", "{fac} {message}{more}"),
        RDKafkaLogLevel::Warning => warn!(target: "librdkafka", "{fac} {message}{more}"),
        _ => info!(target: "librdkafka", "{fac} {message}{more}"),
    }
}

/// Counts one librdkafka error report of `client` in `errors`, by its error code (a bounded
/// set: librdkafka's codes).
pub fn count_error(errors: &prometheus::IntCounterVec, client: &str, error: &KafkaError) {
    let code = error
        .rdkafka_error_code()
        .map_or_else(|| "other".to_string(), |c| format!("{c:?}"));
    errors.with_label_values(&[client, &code]).inc();
}

/// librdkafka's global errors. A broker that cannot be reached is already reported by its
/// log line (FAIL) and by the engine's own retry line: those errors go to debug; others at
/// most once per kind per minute.
pub fn librdkafka_error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if matches!(
        code,
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
    ) {
        debug!(target: "librdkafka", "{error}: {reason}");
        return;
    }
    if let Some(n) = once_a_minute(&format!("error/{code:?}")) {
        error!(target: "librdkafka", "{error}: {reason}{}", held_back(n));
    }
}

impl ProducerContext for Deliveries {
    /// The sequence number of the batch that produced the record (0 outside the engine).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, batch: usize) {
        if let Err((e, m)) = result {
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(format!("{} partition {}: {e}", m.topic(), m.partition()));
            }
            self.failed.fetch_add(1, Ordering::SeqCst);
            if batch == self.batch.load(Ordering::SeqCst) {
                self.batch_failed.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

/// The engine's producer type: its own thread serves the delivery reports.
pub type EngineProducer = ThreadedProducer<Deliveries>;

/// Hands a record to the producer, waiting while its queue is full (the producer's thread
/// serves delivery reports and frees room); any other error is returned.
pub fn send_record<K, P>(
    producer: &EngineProducer,
    mut record: BaseRecord<'_, K, P, usize>,
) -> KafkaResult<()>
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Polls up to `max` messages for at most `window`, handing each to `take`. Stops early when
/// the consumer has nothing more or reports an error, which it returns.
pub fn poll_batch<'c, C: ConsumerContext>(
    consumer: &'c BaseConsumer<C>,
    max: usize,
    window: Duration,
    mut take: impl FnMut(rdkafka::message::BorrowedMessage<'c>),
) -> Option<KafkaError> {
    let started = std::time::Instant::now();
    for _ in 0..max {
        let left = window.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            Some(Ok(m)) => take(m),
            Some(Err(e)) => return Some(e),
            None => break,
        }
    }
    None
}

/// Waits until every record sent so far is delivered or has failed (see [`Deliveries`]).
///
/// Not rdkafka's `Producer::flush`: that one calls librdkafka's flush without waiting and then
/// polls the event queue in steps of 100 ms that always run to their end, so every flush took
/// at least 100 ms whatever the batch's size. librdkafka's own blocking flush waits on the
/// count of undelivered records, which the producer's thread brings to zero as it serves the
/// delivery reports, and treats `linger.ms` as elapsed while it waits.
pub fn flush_producer(producer: &EngineProducer, timeout: Duration) -> Result<()> {
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: the client pointer is valid while `producer` is borrowed; rd_kafka_flush is
    // thread-safe and only reads the handle.
    let err = unsafe { rdkafka::bindings::rd_kafka_flush(producer.client().native_ptr(), ms) };
    match err {
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
        e => anyhow::bail!(
            "{} record(s) still undelivered after {} ms: {}",
            producer.in_flight_count(),
            ms,
            rdkafka::error::RDKafkaErrorCode::from(e)
        ),
    }
}

/// Properties whose values are secrets: never logged.
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.ends_with(".key") || k.contains("token")
}

/// The base librdkafka configuration: brokers, client id, then every passed-through property.
pub fn client_config(k: &KafkaSettings) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &k.brokers)
        .set("client.id", &k.client_id);
    for (key, value) in &k.properties {
        cfg.set(key, value);
    }
    cfg
}

/// librdkafka's name of the Java client's partitioner (murmur2 of the key, random for records
/// without one): Kafka's default partitioner.
pub const JAVA_COMPATIBLE_PARTITIONER: &str = "murmur2_random";

/// The base configuration of a producer: [`client_config`] with Kafka's default (Java client)
/// partitioner unless `kafka.properties.partitioner` names another. A customer's records must
/// reach the same partition number on every input topic whoever writes them (the order
/// pipeline, the warehouse, this engine's HTTP API writing commands); librdkafka's own default
/// (`consistent_random`, CRC32) puts a key elsewhere than Java producers do.
pub fn producer_config(k: &KafkaSettings) -> ClientConfig {
    let mut cfg = client_config(k);
    if !k.properties.contains_key("partitioner") {
        cfg.set("partitioner", JAVA_COMPATIBLE_PARTITIONER);
    }
    cfg
}

pub fn consumer_config(k: &KafkaSettings) -> ClientConfig {
    let mut cfg = client_config(k);
    cfg.set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Several co-partitioned input topics need the range assignor (partition N of every
        // topic to one member). The one repartition topic can use incremental rebalancing:
        // only the partitions that move are revoked and restored (KIP-429).
        .set(
            "partition.assignment.strategy",
            if k.repartition {
                "cooperative-sticky"
            } else {
                "range"
            },
        );
    if k.delivery == Delivery::ExactlyOnce {
        cfg.set("isolation.level", "read_committed");
    }
    for (key, value) in &k.properties {
        cfg.set(key, value);
    }
    cfg
}

/// Whether a consumer configuration names a cooperative assignor (KIP-429), whose rebalances
/// are applied incrementally. librdkafka refuses to mix eager and cooperative assignors, so
/// one named is enough.
pub fn is_cooperative(cfg: &ClientConfig) -> bool {
    cfg.get("partition.assignment.strategy")
        .is_some_and(|s| s.contains("cooperative"))
}

/// Applies a rebalance the way the group's protocol wants, known from the configuration
/// (`is_cooperative`) rather than asked of librdkafka: `rd_kafka_rebalance_protocol` called in
/// a rebalance callback can wait forever while the consumer closes
/// (confluentinc/librdkafka#4041), and rdkafka's default callback calls it.
pub fn apply_rebalance<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    cooperative: bool,
    assign: bool,
    tpl: &rdkafka::TopicPartitionList,
) -> KafkaResult<()> {
    match (cooperative, assign) {
        (true, true) => consumer.incremental_assign(tpl),
        (true, false) => consumer.incremental_unassign(tpl),
        (false, true) => consumer.assign(tpl),
        (false, false) => consumer.unassign(),
    }
}

/// How long a consumer is given to leave its group at shutdown.
pub const CLOSE_WITHIN: Duration = Duration::from_secs(10);

/// Leaves the consumer group within `within`, instead of rdkafka's drop alone, which polls
/// until librdkafka reports the consumer closed and can do so forever: librdkafka 2.12's close
/// can stall when it meets a rebalance, most of all a cooperative one
/// (confluentinc/librdkafka#4527, #4884), and the process then never exits after SIGTERM.
/// First unsubscribe and serve the revocation until nothing is assigned (the workaround those
/// issues give), then drop the consumer within what is left ([`drop_within`]); a consumer not
/// closed by the deadline is left to the process's exit, and the group hands its partitions on
/// after `session.timeout.ms`. Nothing is lost either way: every batch committed its
/// checkpoints.
pub fn close_consumer<C: ConsumerContext + 'static>(
    consumer: BaseConsumer<C>,
    name: &str,
    within: Duration,
) {
    let started = Instant::now();
    consumer.unsubscribe();
    while started.elapsed() < within {
        match consumer.assignment() {
            Ok(a) if a.count() > 0 => {}
            _ => break,
        }
        // Serves the revocation; a message still queued is not processed (the next owner
        // reads it again from the checkpoint).
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let left = within
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(1));
    drop_within(consumer, name, left);
}

/// Drops a Kafka client on a thread of its own and waits for it at most `within`: librdkafka's
/// destroy waits for its own threads, and a consumer's close for its group (see
/// [`close_consumer`]). A client not gone by then is left to the process's exit.
pub fn drop_within<T: Send + 'static>(client: T, name: &str, within: Duration) {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let closing = std::thread::Builder::new()
        .name(format!("close-{name}"))
        .spawn(move || {
            drop(client);
            let _ = tx.send(());
        });
    if let Err(e) = closing {
        warn!(
            client = name,
            "cannot start a thread to close the client: {e}"
        );
        return;
    }
    match rx.recv_timeout(within) {
        Ok(()) => debug!(client = name, "closed"),
        Err(_) => warn!(
            client = name,
            "the client did not close within {within:?}; it is left to the process's exit (a consumer's group hands its partitions on after session.timeout.ms)"
        ),
    }
}

pub(super) fn backoff(k: &KafkaSettings, attempt: u32) -> Duration {
    let ms = k
        .retry_backoff_min_ms
        .saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms.min(k.retry_backoff_max_ms))
}

pub(super) fn sleep_unless_shutdown(d: Duration, shutdown: &AtomicBool) {
    let step = Duration::from_millis(50);
    let mut left = d;
    while !left.is_zero() && !shutdown.load(Ordering::Relaxed) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

/// Creates the producer; for exactly_once, waits for the broker (see [`wait_for_broker`]) and
/// initialises transactions. `None` if shut down while waiting.
pub fn create_producer(k: &KafkaSettings, shutdown: &AtomicBool) -> Result<Option<EngineProducer>> {
    let mut cfg = producer_config(k);
    cfg.set("enable.idempotence", "true")
        .set("linger.ms", k.linger_ms.to_string())
        .set("message.timeout.ms", "60000");
    if k.delivery == Delivery::ExactlyOnce {
        cfg.set("transactional.id", &k.transactional_id)
            .set("transaction.timeout.ms", "60000");
    }
    for (key, value) in &k.properties {
        cfg.set(key, value);
    }
    let mut attempt = 0;
    loop {
        let producer: EngineProducer = cfg
            .create_with_context(Deliveries::default())
            .context("cannot create the producer")?;
        if k.delivery == Delivery::AtLeastOnce {
            return Ok(Some(producer));
        }
        if !wait_for_broker(producer.client(), k, shutdown) {
            return Ok(None);
        }
        match init_transactions(&producer, k, shutdown) {
            Ok(true) => return Ok(Some(producer)),
            Ok(false) => return Ok(None),
            // Not retriable on this producer (a coordinator moving during a broker failure,
            // say): a new producer after a backoff, as long as it takes.
            Err(e) => {
                let wait = backoff(k, attempt);
                warn!(
                    brokers = %k.brokers,
                    transactional_id = %k.transactional_id,
                    "cannot initialise transactions ({e}); a new producer in {} ms",
                    wait.as_millis()
                );
                sleep_unless_shutdown(wait, shutdown);
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                attempt += 1;
            }
        }
    }
}

/// Initialises transactions in 1 s steps, so that a shutdown is honoured within about a second
/// (a call that timed out resumes where the last one left off); `Ok(false)` if shut down.
fn init_transactions(
    producer: &EngineProducer,
    k: &KafkaSettings,
    shutdown: &AtomicBool,
) -> KafkaResult<bool> {
    let started = Instant::now();
    let mut noted = Instant::now();
    loop {
        match producer.init_transactions(Duration::from_secs(1)) {
            Ok(()) => {
                info!(transactional_id = %k.transactional_id, "transactions ready");
                return Ok(true);
            }
            Err(_) if shutdown.load(Ordering::Relaxed) => return Ok(false),
            Err(KafkaError::Transaction(e))
                if e.is_retriable() || e.code() == RDKafkaErrorCode::OperationTimedOut =>
            {
                if noted.elapsed() >= Duration::from_secs(10) {
                    noted = Instant::now();
                    warn!(
                        brokers = %k.brokers,
                        transactional_id = %k.transactional_id,
                        "still initialising transactions after {} s ({e}); the broker answers, its transaction coordinator does not yet",
                        started.elapsed().as_secs()
                    );
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits until a broker answers a metadata request, with one line per attempt that names the
/// brokers and the backoff; `false` if shut down while waiting (checked every 50 ms, and each
/// request waits at most a second).
pub fn wait_for_broker<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    k: &KafkaSettings,
    shutdown: &AtomicBool,
) -> bool {
    let mut attempt = 0;
    loop {
        match client.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(_) => {
                if attempt > 0 {
                    info!(brokers = %k.brokers, "broker reachable");
                }
                return true;
            }
            Err(e) => {
                let wait = backoff(k, attempt);
                warn!(
                    brokers = %k.brokers,
                    "broker unreachable ({e}); retrying in {} ms",
                    wait.as_millis()
                );
                sleep_unless_shutdown(wait, shutdown);
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            return false;
        }
        attempt += 1;
    }
}

/// Waits until every topic exists, then checks that the inputs and the changelog have the same
/// partition count (co-partitioning is what keeps a customer's state with its events).
pub fn wait_for_topics<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    k: &KafkaSettings,
    shutdown: &AtomicBool,
) -> Result<()> {
    let t = &k.topics;
    let mut needed: Vec<&str> = t.inputs().to_vec();
    if k.repartition {
        needed.push(t.repartition.as_str());
    }
    let consumed = k.consumed_topics();
    needed.extend([
        t.changelog.as_str(),
        t.decisions.as_str(),
        t.alerts.as_str(),
        t.dead_letter.as_str(),
    ]);
    let mut attempt = 0;
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(1)) {
            Ok(md) => {
                let counts: Vec<(&str, Option<usize>)> = needed
                    .iter()
                    .map(|n| {
                        (
                            *n,
                            md.topics()
                                .iter()
                                .find(|mt| mt.name() == *n && mt.error().is_none())
                                .map(|mt| mt.partitions().len()),
                        )
                    })
                    .filter(|(_, c)| c != &Some(0))
                    .collect();
                let missing: Vec<&str> = counts
                    .iter()
                    .filter(|(_, c)| c.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                if missing.is_empty() {
                    let keyed: Vec<(&str, usize)> = counts
                        .iter()
                        .filter(|(n, _)| consumed.contains(n) || *n == t.changelog)
                        .map(|(n, c)| (*n, c.unwrap_or(0)))
                        .collect();
                    let first = keyed.first().map(|(_, c)| *c).unwrap_or(0);
                    if keyed.iter().any(|(_, c)| *c != first) {
                        anyhow::bail!(
                            "the topics the engine consumes and the changelog must have the same partition count, found {keyed:?}"
                        );
                    }
                    return Ok(());
                }
                let wait = backoff(k, attempt);
                warn!(
                    ?missing,
                    "waiting for topics to exist; retrying in {} ms",
                    wait.as_millis()
                );
                sleep_unless_shutdown(wait, shutdown);
            }
            Err(e) => {
                let wait = backoff(k, attempt);
                warn!(brokers = %k.brokers, "broker unreachable ({e}); retrying in {} ms", wait.as_millis());
                sleep_unless_shutdown(wait, shutdown);
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            anyhow::bail!("shut down while waiting for the broker");
        }
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose destroy never returns (librdkafka's close meeting a stuck rebalance) is
    /// left behind at the deadline: shutdown goes on.
    #[test]
    fn a_client_that_never_closes_is_left_behind_at_the_deadline() {
        struct NeverCloses(std::sync::mpsc::Sender<()>);
        impl Drop for NeverCloses {
            fn drop(&mut self) {
                let _ = self.0.send(());
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let started = Instant::now();
        drop_within(NeverCloses(tx), "stuck", Duration::from_millis(100));
        assert!(
            rx.recv_timeout(Duration::from_secs(60)).is_ok(),
            "the close was started"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "drop_within returned while the close was still running"
        );
    }

    #[test]
    fn the_assignor_named_decides_how_rebalances_are_applied() {
        let mut cfg = ClientConfig::new();
        assert!(!is_cooperative(&cfg));
        cfg.set("partition.assignment.strategy", "range");
        assert!(!is_cooperative(&cfg));
        cfg.set("partition.assignment.strategy", "cooperative-sticky");
        assert!(is_cooperative(&cfg));
    }
}
