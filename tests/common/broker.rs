//! Broker helpers shared by the Kafka and HTTP integration tests: an embedded mock cluster
//! with the contract's topics, sending lines, waiting, and reading a topic read_committed.
#![allow(dead_code)]

use super::traffic;
use credit_sentinel::config::{self, Delivery, Settings};
use credit_sentinel::runtime;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

pub const PARTITIONS: i32 = 3;

pub type Cluster = MockCluster<'static, DefaultProducerContext>;

pub fn cluster(delivery: Delivery) -> (Cluster, Settings) {
    cluster_of(1, delivery)
}

/// A mock cluster of `brokers` brokers and settings pointing at it, the topics created.
pub fn cluster_of(brokers: i32, delivery: Delivery) -> (Cluster, Settings) {
    let c = MockCluster::new(brokers).expect("mock cluster");
    let s = settings_for(&c, delivery);
    (c, s)
}

/// A one-broker mock cluster that counts the requests it serves (librdkafka's request
/// tracking), so a test can show that errors it injected were served: errors injected for an
/// API go to that API's next requests, so N injected errors were all served once N more
/// requests of it arrived. The cluster is reached through a client created with
/// `test.mock.num.brokers` (rdkafka hides the handle of one made by `MockCluster::new`); that
/// client lives as long as the test process.
pub struct Tracked {
    pub cluster: Cluster,
    handle: *mut rdkafka::bindings::rd_kafka_mock_cluster_t,
}

pub fn tracked_cluster(delivery: Delivery) -> (Tracked, Settings) {
    let owner: &'static rdkafka::producer::BaseProducer = Box::leak(Box::new(
        rdkafka::ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .create()
            .expect("mock cluster's client"),
    ));
    let cluster = owner.client().mock_cluster().expect("mock cluster");
    // SAFETY: the client is valid for the rest of the process (leaked above).
    let handle =
        unsafe { rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
    assert!(!handle.is_null(), "the client has a mock cluster");
    // SAFETY: `handle` is the live mock cluster of the leaked client.
    unsafe { rdkafka::bindings::rd_kafka_mock_start_request_tracking(handle) };
    let s = settings_for(&cluster, delivery);
    (Tracked { cluster, handle }, s)
}

impl Tracked {
    /// Forgets the requests counted so far.
    pub fn clear(&self) {
        // SAFETY: `handle` is the live mock cluster of a leaked client.
        unsafe { rdkafka::bindings::rd_kafka_mock_clear_requests(self.handle) };
    }

    /// Requests of `api` served since the last [`Tracked::clear`].
    pub fn served(&self, api: rdkafka::types::RDKafkaApiKey) -> usize {
        let mut n = 0usize;
        // SAFETY: `handle` is live; the array and its `n` requests are owned by us until
        // destroyed below.
        unsafe {
            let requests = rdkafka::bindings::rd_kafka_mock_get_requests(self.handle, &mut n);
            if requests.is_null() {
                return 0;
            }
            let all = std::slice::from_raw_parts(requests, n);
            let count = all
                .iter()
                .filter(|r| rdkafka::bindings::rd_kafka_mock_request_api_key(**r) == api as i16)
                .count();
            rdkafka::bindings::rd_kafka_mock_request_destroy_array(requests, n);
            count
        }
    }
}

/// Settings pointing at the mock cluster `c`, with the contract's topics created on it.
fn settings_for(c: &Cluster, delivery: Delivery) -> Settings {
    let mut s =
        config::load_with_env(None, Vec::<(String, String)>::new()).expect("default settings");
    s.kafka.brokers = c.bootstrap_servers();
    s.kafka.delivery = delivery;
    s.kafka.tick_ms = 0; // event time only, as in replay
    s.kafka.transactional_id = format!("test-{}-{:?}", std::process::id(), delivery);
    s.kafka.group_id = format!("test-group-{}-{:?}", std::process::id(), delivery);
    // The mock cluster waits up to the session timeout less one second for members to rejoin
    // when the group's membership changes (a restart, a member joining or leaving), and a
    // killed member stays in the group for the session timeout: with the default 45 s, every
    // such rebalance stops consumption for 44 s, and two in a row outlast a test's wait.
    for (k, v) in [
        ("session.timeout.ms", "10000"),
        ("heartbeat.interval.ms", "1000"),
    ] {
        s.kafka.properties.insert(k.into(), v.into());
    }
    let t = s.kafka.topics.clone();
    for topic in t.all() {
        c.create_topic(topic, PARTITIONS, 1).expect("topic");
    }
    s
}

/// How long an in-process engine is given to return after its shutdown flag is set.
pub const ENGINE_STOPS_WITHIN: Duration = Duration::from_secs(120);

/// Joins a thread, failing the test if it has not finished within `timeout` (a shutdown that
/// never ends must fail the test, not hang the suite; the thread is left behind).
pub fn join_within<T>(handle: std::thread::JoinHandle<T>, timeout: Duration, what: &str) -> T {
    let started = Instant::now();
    while !handle.is_finished() {
        assert!(
            started.elapsed() < timeout,
            "{what} did not finish within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    match handle.join() {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

pub fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn send(settings: &Settings, lines: &[String]) {
    let n = traffic::send(
        &settings.kafka,
        lines,
        0,
        &AtomicBool::new(false),
        &AtomicU64::new(0),
    )
    .expect("send");
    assert_eq!(n as usize, lines.len());
}

/// A partition's (low, high) watermarks, asked again while the cluster cannot answer (a test
/// may have a broker down), each time with a new client (a client's cached metadata can stay
/// stale after a broker or the controller died): up to two minutes. `cfg` is the reading
/// client's configuration, so the isolation level is the reader's.
pub fn watermarks(cfg: &rdkafka::ClientConfig, topic: &str, partition: i32) -> (i64, i64) {
    let started = Instant::now();
    loop {
        let client: BaseConsumer = cfg.create().expect("watermark client");
        match client.fetch_watermarks(topic, partition, Duration::from_secs(10)) {
            Ok(w) => return w,
            Err(e) if started.elapsed() < Duration::from_secs(120) => {
                eprintln!("watermarks of {topic}/{partition}: {e}; asking again");
                std::thread::sleep(Duration::from_millis(1000));
            }
            Err(e) => panic!("watermarks of {topic}/{partition}: {e}"),
        }
    }
}

/// Every record of a topic, read committed, as (key, value) strings.
pub fn read_topic(settings: &Settings, topic: &str) -> Vec<String> {
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let reader: BaseConsumer = cfg.create().expect("reader");
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (low, high) = watermarks(&cfg, topic, p);
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("tpl");
        ends.insert(p, high);
    }
    reader.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let started = Instant::now();
    loop {
        let pos = reader.position().expect("position");
        let done =
            ends.iter().all(
                |(p, end)| match pos.find_partition(topic, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o >= *end,
                    _ => *end == 0,
                },
            );
        if done {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "reading {topic} timed out"
        );
        // An error is a broker the client cannot reach (a test may have taken one down): the
        // client retries by itself.
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
            out.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    out.sort();
    out
}
