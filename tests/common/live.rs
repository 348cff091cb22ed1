//! Driving engine processes against a broker (the embedded mock cluster or Apache Kafka): the
//! engine as a child process that can be killed, traffic produced so that each partition's
//! input order is fixed, what replaying that input gives, and the assertions that what the
//! engine wrote (decisions, alerts, the latest changelog snapshot of every account) equals it.
#![allow(dead_code)]

use super::broker::*;
use super::generator::{generate, GeneratorConfig};
use super::traffic;
use credit_sentinel::codec::decode_event;
use credit_sentinel::config::Settings;
use credit_sentinel::model::Output;
use credit_sentinel::runtime;
use credit_sentinel::Engine;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The delivery decisions replay gives for each partition's recorded input.
pub fn replay_delivery_decisions(
    settings: &Settings,
    record: &BTreeMap<i32, Vec<Vec<u8>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for lines in record.values() {
        let mut engine = Engine::new(settings.policy.clone());
        let mut produced = Vec::new();
        for l in lines {
            engine.apply(
                &decode_event(l).expect("recorded events are valid"),
                &mut produced,
            );
        }
        out.extend(produced.into_iter().filter_map(|o| match o {
            Output::DeliveryDecision(d) => Some(serde_json::to_string(&d).expect("json")),
            _ => None,
        }));
    }
    out.sort();
    out
}

/// What replay gives for each partition's recorded input: (decisions, alerts, rejections).
pub fn replay_per_partition(
    settings: &Settings,
    record: &BTreeMap<i32, Vec<Vec<u8>>>,
) -> (Vec<String>, Vec<String>, usize) {
    let (mut decisions, mut alerts, mut rejections) = (Vec::new(), Vec::new(), 0);
    for lines in record.values() {
        let mut engine = Engine::new(settings.policy.clone());
        let mut out = Vec::new();
        for l in lines {
            engine.apply(
                &decode_event(l).expect("recorded events are valid"),
                &mut out,
            );
        }
        for o in out {
            match o {
                Output::Decision(d) => decisions.push(serde_json::to_string(&d).expect("json")),
                // Compared on their own topic (`replay_delivery_decisions`).
                Output::DeliveryDecision(_) => {}
                Output::Alert(a) => alerts.push(serde_json::to_string(&a).expect("json")),
                Output::DeadLetter(_) => rejections += 1,
            }
        }
    }
    decisions.sort();
    alerts.sort();
    (decisions, alerts, rejections)
}

pub fn traffic_lines(customers: usize, days: u32, seed: u64) -> Vec<String> {
    generate(&GeneratorConfig {
        customers,
        days,
        seed,
        faults: true,
        ..GeneratorConfig::default()
    })
}

/// A partition's records in offset order, as (key, payload).
pub type PartitionRecords = Vec<(Option<String>, Vec<u8>)>;

/// One stored record: its offset, key and payload.
pub type StoredRecord = (i64, Option<String>, Vec<u8>);

/// Every record of a topic per partition, read committed.
pub fn read_partitions(settings: &Settings, topic: &str) -> BTreeMap<i32, PartitionRecords> {
    read_records(settings, topic, "read_committed")
        .into_iter()
        .map(|(p, records)| (p, records.into_iter().map(|(_, k, v)| (k, v)).collect()))
        .collect()
}

/// Every record of a topic per partition with its offset, at the given isolation level.
pub fn read_records(
    settings: &Settings,
    topic: &str,
    isolation: &str,
) -> BTreeMap<i32, Vec<StoredRecord>> {
    read_records_as(settings, topic, isolation, |m| {
        (
            m.offset(),
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            m.payload().unwrap_or_default().to_vec(),
        )
    })
}

/// Where the repartition stage read a record (`topic/partition/offset` from its source
/// headers), if it was routed.
pub fn routed_from(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    let get = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    Some(format!(
        "{}/{}/{}",
        get(runtime::router::SOURCE_TOPIC)?,
        get(runtime::router::SOURCE_PARTITION)?,
        get(runtime::router::SOURCE_OFFSET)?
    ))
}

/// Every record of a topic per partition, as `take` makes it of each, at the given isolation
/// level.
pub fn read_records_as<T>(
    settings: &Settings,
    topic: &str,
    isolation: &str,
    take: impl Fn(&rdkafka::message::BorrowedMessage<'_>) -> T,
) -> BTreeMap<i32, Vec<T>> {
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation);
    let reader: BaseConsumer = cfg.create().expect("reader");
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (low, high) = watermarks(&cfg, topic, p);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("tpl");
        reader.assign(&tpl).expect("assign");
        let mut msgs = Vec::new();
        let started = Instant::now();
        // Read until the consumer's position reaches the high watermark (not a count of
        // messages: offsets without a readable record, such as transaction markers, count too).
        let at_end = |reader: &BaseConsumer| {
            matches!(
                reader
                    .position()
                    .ok()
                    .and_then(|pos| pos.find_partition(topic, p).map(|e| e.offset())),
                Some(Offset::Offset(o)) if o >= high
            )
        };
        while high > low && !at_end(&reader) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "reading {topic}/{p} timed out ({} records read, offsets {low}..{high})",
                msgs.len()
            );
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
                msgs.push(take(&m));
            }
        }
        out.insert(p, msgs);
    }
    out
}

/// An engine process that is killed if the test fails before it is stopped, and the file its
/// log goes to (a scratch file, removed once the process is gone, unless
/// `CREDIT_SENTINEL_TEST_CHILD_LOG` names one to keep).
pub struct ChildEngine(pub std::process::Child, pub ChildLog);

/// Where a child engine's log goes.
pub struct ChildLog {
    path: std::path::PathBuf,
    keep: bool,
}

impl ChildLog {
    /// The named file, appended across restarts (one per instance, suffixed with its number,
    /// when several run at once); otherwise a scratch file of its own.
    fn open(instance: Option<u32>) -> (ChildLog, std::process::Stdio) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let (path, keep) = match std::env::var_os("CREDIT_SENTINEL_TEST_CHILD_LOG") {
            Some(mut path) => {
                if let Some(n) = instance {
                    path.push(format!(".{n}"));
                }
                (std::path::PathBuf::from(path), true)
            }
            None => (
                std::env::temp_dir().join(format!(
                    "cs-engine-{}-{}.log",
                    std::process::id(),
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                )),
                false,
            ),
        };
        let stdio = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(std::process::Stdio::from)
            .unwrap_or_else(|_| std::process::Stdio::null());
        (ChildLog { path, keep }, stdio)
    }

    /// Whether the log has a line containing `text` so far.
    pub fn contains(&self, text: &str) -> bool {
        self.has_line(|l| l.contains(text))
    }

    /// Whether the log has a line `matches` so far.
    pub fn has_line(&self, matches: impl Fn(&str) -> bool) -> bool {
        std::fs::read_to_string(&self.path).is_ok_and(|log| log.lines().any(matches))
    }

    /// The log's last `lines` lines, for a failure message.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl ChildEngine {
    /// Sends `signal` (`-TERM`, `-STOP`, `-CONT`, ...) to the process.
    pub fn signal(&self, signal: &str) {
        std::process::Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .expect("kill");
    }
}

impl Drop for ChildEngine {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
        if !self.1.keep {
            let _ = std::fs::remove_file(&self.1.path);
        }
    }
}

/// How long an engine is given to finish its batch and exit after SIGTERM before the test
/// kills it and fails (a shutdown that never ends must fail the test, not hang the suite).
pub const STOP_WITHIN: Duration = Duration::from_secs(120);

/// Sends SIGTERM and waits up to `within` for the engine to exit; past it the engine is
/// killed and the test fails with the end of the engine's log.
pub fn sigterm_within(engine: &mut ChildEngine, within: Duration) -> std::process::ExitStatus {
    let pid = engine.0.id().to_string();
    engine.signal("-TERM");
    let started = Instant::now();
    loop {
        if let Some(status) = engine.0.try_wait().expect("wait") {
            return status;
        }
        if started.elapsed() > within {
            let stacks = thread_stacks(&pid);
            let _ = engine.0.kill();
            let _ = engine.0.wait();
            panic!(
                "the engine (pid {pid}) did not exit within {within:?} of SIGTERM; its threads:\n{stacks}\nits log ends:\n{}",
                engine.1.tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn child(settings: &Settings, delivery: &str) -> ChildEngine {
    child_instance(settings, delivery, None)
}

/// An engine process; `instance` names one of several running at once (each its own
/// transactional id, as every instance of a deployment must have).
pub fn child_instance(settings: &Settings, delivery: &str, instance: Option<u32>) -> ChildEngine {
    child_with(settings, delivery, instance, &[])
}

/// [`child_instance`] with more environment settings (`CREDIT_SENTINEL__...`), set last so
/// that they override the defaults above (e.g. the HTTP server enabled on a port).
pub fn child_with(
    settings: &Settings,
    delivery: &str,
    instance: Option<u32>,
    env: &[(&str, &str)],
) -> ChildEngine {
    let k = &settings.kafka;
    let transactional_id = match instance {
        Some(n) => format!("{}-{n}", k.transactional_id),
        None => k.transactional_id.clone(),
    };
    let (log, stderr) = ChildLog::open(instance);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_credit-sentinel"));
    if !k.properties.is_empty() {
        let file =
            std::env::temp_dir().join(format!("cs-child-{}-{delivery}.toml", std::process::id()));
        let mut text = String::from("[kafka.properties]\n");
        for (key, value) in &k.properties {
            text.push_str(&format!("{key:?} = {value:?}\n"));
        }
        std::fs::write(&file, text).expect("child config");
        cmd.arg("run").arg("--config").arg(file);
    } else {
        cmd.arg("run");
    }
    cmd.env("CREDIT_SENTINEL__KAFKA__BROKERS", &k.brokers)
        .env("CREDIT_SENTINEL__KAFKA__DELIVERY", delivery)
        .env("CREDIT_SENTINEL__KAFKA__TICK_MS", "0")
        .env("CREDIT_SENTINEL__KAFKA__BATCH_MAX_MESSAGES", "40")
        .env("CREDIT_SENTINEL__KAFKA__GROUP_ID", &k.group_id)
        .env(
            "CREDIT_SENTINEL__KAFKA__TRANSACTIONAL_ID",
            &transactional_id,
        )
        .env(
            "CREDIT_SENTINEL__KAFKA__REPARTITION",
            k.repartition.to_string(),
        )
        .env("CREDIT_SENTINEL_LOG", "info")
        .env("CREDIT_SENTINEL__HTTP__ENABLED", "false")
        .env(
            "CREDIT_SENTINEL__KAFKA__COMMAND_KEYS_FILE",
            settings
                .raw
                .kafka
                .command_keys_file
                .clone()
                .unwrap_or_default(),
        )
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .map(|process| ChildEngine(process, log))
        .expect("engine process")
}

pub fn distinct_ids(records: &[String], field: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for r in records {
        let v: serde_json::Value = serde_json::from_str(r).expect("json");
        let id = v[field].as_str().expect("id").to_string();
        if let Some(prev) = m.insert(id.clone(), r.clone()) {
            assert_eq!(
                prev, *r,
                "a repeated {field} {id} must carry the same record"
            );
        }
    }
    m
}

/// The next offset of `topic` per partition in the engine's latest checkpoints (what a restart
/// would resume from; 0 where a partition has none).
pub fn checkpointed(settings: &Settings, topic: &str) -> BTreeMap<i32, i64> {
    let mut out: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for (p, msgs) in read_partitions(settings, &settings.kafka.topics.changelog) {
        for (key, value) in msgs {
            if key.is_some_and(|k| k.starts_with("c/")) {
                let c: serde_json::Value = serde_json::from_slice(&value).expect("checkpoint");
                out.insert(p, c["offsets"][topic].as_i64().unwrap_or(0));
            }
        }
    }
    out
}

/// For diagnosis: every changelog record with its partition and offset (accounts as their
/// exposure and last remembered event id, checkpoints in full).
pub fn dump_changelog(settings: &Settings, path: &std::path::Path) {
    use std::fmt::Write as _;
    let topic = &settings.kafka.topics.changelog;
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-dump")
        .set("enable.auto.commit", "false");
    let reader: BaseConsumer = cfg.create().expect("reader");
    let mut text = String::new();
    for p in 0..PARTITIONS {
        let (low, high) = watermarks(&cfg, topic, p);
        let _ = writeln!(text, "# partition {p}: low {low} high {high}");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(low))
            .expect("tpl");
        reader.assign(&tpl).expect("assign");
        let mut quiet = Instant::now();
        while quiet.elapsed() < Duration::from_secs(3) {
            let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) else {
                continue;
            };
            quiet = Instant::now();
            let key = m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            let value = m.payload().unwrap_or_default();
            let summary = match credit_sentinel::state::decode(&key, value) {
                Ok(credit_sentinel::state::StateRecord::Account(a)) => format!(
                    "exposure {:?} last {:?}",
                    a.exposure(),
                    a.recent_event_ids.iter().last()
                ),
                _ => String::from_utf8_lossy(value).into_owned(),
            };
            let _ = writeln!(text, "{p} {} {key} {summary}", m.offset());
        }
    }
    std::fs::write(path, text).expect("dump");
}

/// Input produced on one topic, and what replaying it gives.
pub struct OneTopic {
    /// Each partition's valid events in offset order (what its engine must apply).
    pub record: BTreeMap<i32, Vec<Vec<u8>>>,
    /// The end offset of each input partition.
    pub input_ends: BTreeMap<i32, i64>,
    pub want_d: BTreeMap<String, String>,
    pub want_a: BTreeMap<String, String>,
    /// Delivery decisions by `delivery_decision_id`.
    pub want_dd: BTreeMap<String, String>,
    /// The dead-letters replay gives: (partition, offset) of the input, its event id (empty
    /// when it did not decode) and the error code.
    pub want_dl: Vec<((i32, i64), String, String)>,
    /// The input topic the dead-letters must name.
    pub topic: String,
}

/// Produces lines to the orders topic, keyed as `traffic` keys them: all events on one topic,
/// so each partition's order is fixed and replaying it gives exactly what the engine must end
/// with, however often it crashed, rolled back or lost its partitions.
pub fn produce_on_orders(settings: &Settings, lines: &[String]) {
    let t = &settings.kafka.topics;
    let mut cfg = runtime::producer_config(&settings.kafka);
    cfg.set("linger.ms", "5");
    let producer: rdkafka::producer::BaseProducer = cfg.create().expect("producer");
    for l in lines {
        let (_, key) = traffic::route(t, l);
        let mut rec = rdkafka::producer::BaseRecord::<str, str>::to(&t.orders).payload(l);
        if let Some(k) = key.as_deref() {
            rec = rec.key(k);
        }
        producer.send(rec).map_err(|(e, _)| e).expect("send");
        producer.poll(Duration::ZERO);
    }
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).expect("flush");
}

/// Produces `lines` as `produce_on_orders` does, `per_sec` a second, on a thread of its own:
/// the engine is kept busy (a transaction open most of the time) while the test acts on it.
pub fn produce_paced(
    settings: &Settings,
    lines: &[String],
    per_sec: usize,
) -> std::thread::JoinHandle<()> {
    let (settings, lines) = (settings.clone(), lines.to_vec());
    std::thread::spawn(move || {
        for chunk in lines.chunks(per_sec.div_ceil(10).max(1)) {
            produce_on_orders(&settings, chunk);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Splits traffic into its group profiles and the rest. An instance hands a group profile to
/// every partition engine it owns at that moment, so these tests send the group profiles
/// first and let the engine apply them (`wait_for_groups`) before anything else: then every
/// partition's replay starts with them, whatever the assignment later does. (A group profile
/// arriving while another instance owns some partitions is issue 5's business.)
pub fn groups_first(lines: Vec<String>) -> (Vec<String>, Vec<String>) {
    // Group profiles and FX quotes reach every partition engine of the instance that reads
    // them (the direct path's broadcast): sent first, they precede every partition's input.
    lines.into_iter().partition(|l| {
        decode_event(l.as_bytes()).is_ok_and(|e| {
            matches!(
                e.body,
                credit_sentinel::model::EventBody::GroupProfile(_)
                    | credit_sentinel::model::EventBody::FxRate(_)
            )
        })
    })
}

/// Waits until every changelog partition holds a snapshot of every group in `groups`.
pub fn wait_for_groups(settings: &Settings, groups: &[String]) {
    let keys: Vec<String> = groups
        .iter()
        .filter_map(|l| match decode_event(l.as_bytes()).map(|e| e.body) {
            Ok(credit_sentinel::model::EventBody::GroupProfile(g)) => {
                Some(credit_sentinel::state::group_key(&g.group_id))
            }
            _ => None,
        })
        .collect();
    // The newest quote each engine must have taken (its checkpoint lists the live quotes).
    let newest_quote = groups
        .iter()
        .filter_map(|l| decode_event(l.as_bytes()).ok())
        .filter(|e| matches!(e.body, credit_sentinel::model::EventBody::FxRate(_)))
        .map(|e| e.occurred_at.to_rfc3339())
        .max();
    wait_for(
        "every partition engine to hold the group profiles and the FX quotes",
        Duration::from_secs(120),
        || {
            let parts = read_partitions(settings, &settings.kafka.topics.changelog);
            (0..PARTITIONS).all(|p| {
                parts.get(&p).is_some_and(|msgs| {
                    let quotes_taken = newest_quote.as_ref().is_none_or(|at| {
                        let checkpoint = format!("c/{p}");
                        msgs.iter()
                            .rev()
                            .find(|(key, _)| key.as_deref() == Some(checkpoint.as_str()))
                            .and_then(|(_, v)| serde_json::from_slice::<serde_json::Value>(v).ok())
                            .is_some_and(|c| {
                                c["fx"].as_array().is_some_and(|q| {
                                    q.iter().any(|q| q["at"].as_str() == Some(at.as_str()))
                                })
                            })
                    });
                    quotes_taken
                        && keys
                            .iter()
                            .all(|k| msgs.iter().any(|(key, _)| key.as_deref() == Some(k)))
                })
            })
        },
    );
}

/// What replaying the orders topic gives, each partition's input preceded by the group
/// profiles (as the engine applied them).
pub fn expected(settings: &Settings, groups: &[String]) -> OneTopic {
    expected_on(settings, &settings.kafka.topics.orders, groups)
}

/// What replaying each partition of `topic` (the one topic the engine consumes) gives, each
/// partition's input preceded by `groups`.
pub fn expected_on(settings: &Settings, topic: &str, groups: &[String]) -> OneTopic {
    let mut record: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut input_ends: BTreeMap<i32, i64> = BTreeMap::new();
    let mut want_dl = Vec::new();
    // A routed record the repartition stage routed again (its batch's commit failed) is
    // dead-lettered again, identically (the dead-letter names the original input), and the
    // written side counts identical records once: so does this side.
    let mut routed_dead: std::collections::BTreeSet<(String, String, String)> =
        std::collections::BTreeSet::new();
    let records = read_records_as(settings, topic, "read_committed", |m| {
        (
            m.offset(),
            m.payload().unwrap_or_default().to_vec(),
            routed_from(m),
        )
    });
    for (p, msgs) in records {
        input_ends.insert(p, msgs.len() as i64);
        let mut lines: Vec<Vec<u8>> = groups.iter().map(|g| g.as_bytes().to_vec()).collect();
        // Replayed here message by message too, to know which input each dead-letter names.
        let mut engine = Engine::new(settings.policy.clone());
        let mut out = Vec::new();
        for l in &lines {
            engine.apply(&decode_event(l).expect("group lines are valid"), &mut out);
        }
        for (offset, v, origin) in msgs {
            if groups.iter().any(|g| g.as_bytes() == v) {
                continue;
            }
            let at = (p, offset);
            let mut dead_letter = |event_id: String, error: &str| {
                let again = origin.as_ref().is_some_and(|o| {
                    !routed_dead.insert((o.clone(), event_id.clone(), error.to_string()))
                });
                if !again {
                    want_dl.push((at, event_id, error.to_string()));
                }
            };
            if v.len() > settings.max_message_bytes {
                dead_letter(String::new(), "TOO_LARGE");
            } else {
                match decode_event(&v) {
                    Err(r) => dead_letter(r.event_id.unwrap_or_default(), r.error.as_str()),
                    Ok(event) => {
                        out.clear();
                        engine.apply(&event, &mut out);
                        for o in &out {
                            if let Output::DeadLetter(r) = o {
                                dead_letter(
                                    r.event_id.clone().unwrap_or_default(),
                                    r.error.as_str(),
                                );
                            }
                        }
                        lines.push(v);
                    }
                }
            }
        }
        record.insert(p, lines);
    }
    let (want_decisions, want_alerts, _) = replay_per_partition(settings, &record);
    let want_dd = distinct_ids(
        &replay_delivery_decisions(settings, &record),
        "delivery_decision_id",
    );
    OneTopic {
        want_dd,
        want_dl,
        topic: topic.to_string(),
        record,
        input_ends,
        want_d: distinct_ids(&want_decisions, "decision_id"),
        want_a: distinct_ids(&want_alerts, "alert_id"),
    }
}

/// Up to five records in `got` that `want` lacks (invented), and five the other way (lost).
pub fn differences<'a>(
    got: &'a BTreeMap<String, String>,
    want: &'a BTreeMap<String, String>,
) -> (Vec<&'a String>, Vec<&'a String>) {
    let only = |a: &'a BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        a.iter()
            .filter(|(k, _)| !b.contains_key(*k))
            .map(|(_, v)| v)
            .take(5)
            .collect()
    };
    (only(got, want), only(want, got))
}

/// Every distinct decision and alert equals a per-partition replay (none lost, none invented),
/// and the latest changelog snapshot of every account equals replay's final account.
pub fn assert_equals_replay(settings: &Settings, want: &OneTopic, repeats: Repeats) {
    let t = &settings.kafka.topics;
    let raw_d = read_topic(settings, &t.decisions);
    let raw_a = read_topic(settings, &t.alerts);
    let raw_dd = read_topic(settings, &t.delivery_decisions);
    if repeats == Repeats::Forbidden {
        for (records, field) in [
            (&raw_d, "decision_id"),
            (&raw_a, "alert_id"),
            (&raw_dd, "delivery_decision_id"),
        ] {
            let mut seen: BTreeMap<String, usize> = BTreeMap::new();
            for r in records.iter() {
                let v: serde_json::Value = serde_json::from_str(r).expect("json");
                *seen
                    .entry(v[field].as_str().expect("id").to_string())
                    .or_default() += 1;
            }
            let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
            assert!(
                repeated.is_empty(),
                "exactly once: no {field} may be seen twice by a read_committed reader ({} of {} records repeated), e.g. {repeated:?}",
                seen.values().filter(|n| **n > 1).count(),
                records.len()
            );
        }
    }
    let got_d = distinct_ids(&raw_d, "decision_id");
    let (invented, lost) = differences(&got_d, &want.want_d);
    assert_eq!(
        got_d.len(),
        want.want_d.len(),
        "no decision lost, none invented; invented {invented:#?}, lost {lost:#?}"
    );
    assert_dead_letters_equal_replay(settings, want, repeats);
    let differs: Vec<(&String, &String, &String)> = got_d
        .iter()
        .filter_map(|(id, got)| {
            let want = &want.want_d[id];
            (got != want).then_some((id, got, want))
        })
        .take(2)
        .collect();
    assert!(
        differs.is_empty(),
        "every distinct decision equals replay's; differs (id, run's, replay's): {differs:#?}"
    );
    let got_dd = distinct_ids(&raw_dd, "delivery_decision_id");
    let (invented, lost) = differences(&got_dd, &want.want_dd);
    assert!(
        got_dd == want.want_dd,
        "every distinct delivery decision equals replay's ({} vs {}); invented {invented:#?}, lost {lost:#?}",
        got_dd.len(),
        want.want_dd.len()
    );
    let got_a = distinct_ids(&raw_a, "alert_id");
    let (invented, lost) = differences(&got_a, &want.want_a);
    assert!(
        got_a == want.want_a,
        "every distinct alert equals replay's ({} vs {}); invented {invented:#?}, lost {lost:#?}",
        got_a.len(),
        want.want_a.len()
    );

    // The embedded broker deletes a partition's oldest records beyond 5 MiB (librdkafka's mock
    // cluster); a test whose changelog was cut there would compare against a truncated state.
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-watermarks");
    for p in 0..PARTITIONS {
        let (low, _) = watermarks(&cfg, &t.changelog, p);
        assert_eq!(low, 0, "the embedded broker deleted the start of changelog partition {p} (over its 5 MiB per partition): make the test's traffic smaller");
    }
    let mut latest: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for msgs in read_partitions(settings, &t.changelog).into_values() {
        for (key, value) in msgs {
            if let Some(k) = key.filter(|k| k.starts_with("a/")) {
                latest.insert(k, value);
            }
        }
    }
    let mut replayed = 0;
    let mut replay_keys = std::collections::BTreeSet::new();
    for lines in want.record.values() {
        let mut engine = Engine::new(settings.policy.clone());
        let mut out = Vec::new();
        for l in lines {
            engine.apply(&decode_event(l).expect("valid"), &mut out);
        }
        for acc in engine.accounts() {
            let key = format!("a/{}", acc.customer_id);
            let value = latest
                .get(&key)
                .unwrap_or_else(|| panic!("{key} not in the changelog: {acc:?}"));
            let restored = match credit_sentinel::state::decode(&key, value).expect("decodes") {
                credit_sentinel::state::StateRecord::Account(a) => a,
                other => panic!("{other:?}"),
            };
            assert_eq!(*restored, *acc, "final state of {}", acc.customer_id);
            replayed += 1;
            replay_keys.insert(key);
        }
    }
    let extra: Vec<&String> = latest
        .keys()
        .filter(|k| !replay_keys.contains(*k))
        .take(5)
        .collect();
    assert!(
        extra.is_empty(),
        "the changelog holds accounts replay does not know: {extra:?}"
    );
    assert!(replayed >= 20, "{replayed} accounts compared");
}

/// The dead-letters written are the ones replay gives: on the direct path by the input's
/// topic, partition and offset with their error codes; with the repartition stage (whose
/// dead-letters name the original input, not the re-keyed record replay reads) by event id and
/// error code. None missing, none extra; under [`Repeats::Forbidden`] none written twice,
/// otherwise repeats are identical copies.
fn assert_dead_letters_equal_replay(settings: &Settings, want: &OneTopic, repeats: Repeats) {
    let raw = read_topic(settings, &settings.kafka.topics.dead_letter);
    let distinct: std::collections::BTreeSet<&String> = raw.iter().collect();
    if repeats == Repeats::Forbidden {
        assert_eq!(
            distinct.len(),
            raw.len(),
            "exactly once: no dead-letter may be seen twice by a read_committed reader"
        );
    }
    let by_position = !settings.kafka.repartition;
    let key = |at: (i32, i64), event_id: &str, error: &str| {
        if by_position {
            format!("{}/{}/{} {error}", want.topic, at.0, at.1)
        } else {
            format!("{event_id} {error}")
        }
    };
    let mut got: Vec<String> = distinct
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).expect("dead-letter JSON");
            let at = (
                v["partition"].as_i64().unwrap_or(-1) as i32,
                v["offset"].as_i64().unwrap_or(-1),
            );
            let topic = v["topic"].as_str().unwrap_or_default();
            let error = v["error"].as_str().expect("error");
            if by_position {
                format!("{topic}/{}/{} {error}", at.0, at.1)
            } else {
                key(at, v["event_id"].as_str().unwrap_or_default(), error)
            }
        })
        .collect();
    let mut wanted: Vec<String> = want
        .want_dl
        .iter()
        .map(|(at, event_id, error)| key(*at, event_id, error))
        .collect();
    got.sort();
    wanted.sort();
    let missing: Vec<&String> = wanted.iter().filter(|w| !got.contains(w)).take(5).collect();
    let extra: Vec<&String> = got.iter().filter(|g| !wanted.contains(g)).take(5).collect();
    // Keys seen a different number of times on each side (a repeat the sets above hide).
    let count = |v: &[String]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for k in v {
            *m.entry(k.clone()).or_default() += 1;
        }
        m
    };
    let (got_n, wanted_n) = (count(&got), count(&wanted));
    let uneven: Vec<String> = wanted_n
        .iter()
        .filter(|(k, n)| got_n.get(*k) != Some(n))
        .map(|(k, n)| format!("{k}: {n} expected, {} written", got_n.get(k).unwrap_or(&0)))
        .take(5)
        .collect();
    // The dead-letter records of the first such key's event.
    let first_id = wanted_n
        .keys()
        .find(|k| uneven.iter().any(|u| u.starts_with(k.as_str())))
        .and_then(|k| k.split(' ').next())
        .filter(|id| !id.is_empty())
        .map(|id| format!("\"{id}\""));
    let evidence: Vec<&String> = raw
        .iter()
        .filter(|r| first_id.as_ref().is_some_and(|id| r.contains(id.as_str())))
        .take(4)
        .collect();
    assert!(
        got == wanted,
        "dead-letters equal replay's ({} written, {} expected); replay's, not written: {missing:?}; written, not replay's: {extra:?}; counts that differ: {uneven:?}; their records: {evidence:?}",
        got.len(),
        wanted.len()
    );
    eprintln!("{} dead-letters, each the one replay gives", got.len());
}

/// How repeated outputs are judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repeats {
    /// at_least_once: an output may be written more than once, every copy identical.
    Identical,
    /// exactly_once on a broker with transactions: a read_committed reader sees each decision
    /// and alert once, no repeats at all.
    Forbidden,
}

/// Where in its cycle an engine was when it was killed (seen from outside, on the broker).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A transaction was open with records in it: outputs or snapshots produced, not committed
    /// (the read_uncommitted end of the output or changelog topics was past the committed end).
    OpenTransaction,
    /// Nothing uncommitted on the broker (between batches, polling, or at_least_once).
    NoOpenTransaction,
}

/// Whether a transaction holds records not yet committed on any output or changelog partition:
/// a read_committed client's end offsets (the last stable offset) lag a read_uncommitted one's.
pub fn open_transaction(settings: &Settings) -> bool {
    let t = &settings.kafka.topics;
    open_transaction_on(settings, &[&t.decisions, &t.alerts, &t.changelog])
}

/// Whether a transaction holds records not yet committed on a partition of `topics`.
pub fn open_transaction_on(settings: &Settings, topics: &[&String]) -> bool {
    let ends = |isolation: &str| -> Vec<i64> {
        let mut cfg = runtime::client_config(&settings.kafka);
        cfg.set("group.id", "test-phase")
            .set("isolation.level", isolation);
        let c: BaseConsumer = cfg.create().expect("watermarks");
        topics
            .iter()
            .flat_map(|topic| {
                let c = &c;
                (0..PARTITIONS).map(move |p| {
                    c.fetch_watermarks(topic, p, Duration::from_secs(5))
                        .map(|(_, h)| h)
                        .unwrap_or(0)
                })
            })
            .collect()
    };
    let committed = ends("read_committed");
    let uncommitted = ends("read_uncommitted");
    committed.iter().zip(&uncommitted).any(|(c, u)| c < u)
}

/// Stops the engine (SIGSTOP), notes its phase, and kills it (SIGKILL). With `want`, the engine
/// is resumed and stopped again until it is caught in that phase (up to 200 tries).
pub fn kill_in(engine: &mut ChildEngine, settings: &Settings, want: Option<Phase>) -> Phase {
    let phase = stop_in(engine, settings, want, 200);
    engine.0.kill().expect("SIGKILL");
    engine.0.wait().expect("reaped");
    phase
}

/// Stops the engine (SIGSTOP) and notes its phase; with `want`, resumes and stops it again
/// until it is caught in that phase (up to `tries`). It is left stopped.
pub fn stop_in(
    engine: &ChildEngine,
    settings: &Settings,
    want: Option<Phase>,
    tries: u64,
) -> Phase {
    let mut phase = Phase::NoOpenTransaction;
    for attempt in 0..tries {
        engine.signal("-STOP");
        phase = if open_transaction(settings) {
            Phase::OpenTransaction
        } else {
            Phase::NoOpenTransaction
        };
        if want.is_none_or(|w| w == phase) {
            break;
        }
        engine.signal("-CONT");
        std::thread::sleep(Duration::from_millis(3 + (attempt % 7) * 5));
    }
    phase
}

/// A small deterministic generator for kill schedules (seeded, printed on failure).
pub fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The seed of a test's random schedule: `CREDIT_SENTINEL_TEST_SEED` or the clock.
pub fn schedule_seed() -> u64 {
    std::env::var("CREDIT_SENTINEL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// How many distinct decisions a read_committed reader sees now (the stream's progress;
/// offsets would also count transaction markers, aborted records and repeats).
pub fn decided(settings: &Settings) -> i64 {
    distinct_ids(
        &read_topic(settings, &settings.kafka.topics.decisions),
        "decision_id",
    )
    .len() as i64
}

/// Sends the group profiles and lets an engine apply them, then produces the rest of the
/// traffic; returns what replay gives for the whole input.
pub fn prepare_stream(settings: &Settings, name: &str, lines: Vec<String>) -> OneTopic {
    let (groups, rest) = groups_applied(settings, name, lines);
    produce_on_orders(settings, &rest);
    expected(settings, &groups)
}

/// Sends the group profiles of `lines` and lets an engine apply them; returns them and the
/// rest of the traffic (to be produced on the orders topic).
pub fn groups_applied(
    settings: &Settings,
    name: &str,
    lines: Vec<String>,
) -> (Vec<String>, Vec<String>) {
    let (groups, rest) = groups_first(lines);
    produce_on_orders(settings, &groups);
    let engine = child(settings, name);
    wait_for_groups(settings, &groups);
    sigterm(engine);
    (groups, rest)
}

/// Waits until the engine has written every decision replay gives and checkpointed the end of
/// every input partition (events after the last decision still change the final state); on a
/// timeout, dumps the changelog where `CREDIT_SENTINEL_TEST_DUMP` says.
pub fn wait_until_done(settings: &Settings, want: &OneTopic) {
    let t = &settings.kafka.topics;
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("every decision", Duration::from_secs(300), || {
            distinct_ids(&read_topic(settings, &t.decisions), "decision_id").len()
                >= want.want_d.len()
        });
        wait_for(
            "the engine to consume every input",
            Duration::from_secs(300),
            || checkpointed(settings, &t.orders) == want.input_ends,
        );
    }));
    if let Err(panic) = waited {
        if let Some(path) = std::env::var_os("CREDIT_SENTINEL_TEST_DUMP") {
            dump_changelog(settings, std::path::Path::new(&path));
        }
        std::panic::resume_unwind(panic);
    }
}

/// Kills the engine process with SIGKILL at `kills` points of the stream (a seeded random
/// schedule of progress points; in exactly_once, `open_transaction_kills` of them while a
/// transaction holds produced records), restarting it each time, then stops it with SIGTERM;
/// what it wrote must equal a per-partition replay (see `assert_equals_replay`).
pub fn killed_mid_stream_then_restarted(
    settings: Settings,
    name: &str,
    kills: usize,
    open_transaction_kills: usize,
    repeats: Repeats,
) {
    let (groups, rest) = groups_applied(&settings, name, traffic_lines(40, 60, 23));
    // The input arrives in kills + 1 parts, the next part only once the engine has been killed
    // in the one before: every kill lands mid-stream, however fast the engine is.
    let parts: Vec<&[String]> = rest.chunks(rest.len().div_ceil(kills + 1)).collect();
    let seed = schedule_seed();
    let mut rng = seed;
    let mut phases = Vec::new();
    for (kill, part) in parts.iter().enumerate().take(kills) {
        let before = decided(&settings);
        let mut engine = child(&settings, name);
        let feeding = produce_paced(&settings, part, 150);
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(
                &format!("kill {}: the engine deciding (seed {seed})", kill + 1),
                Duration::from_secs(180),
                || decided(&settings) > before,
            )
        }));
        if let Err(panic) = started {
            eprintln!("kill schedule seed {seed}: phases so far {phases:?}");
            std::panic::resume_unwind(panic);
        }
        // Then a random moment while it works through the part.
        let want_phase = (kill < open_transaction_kills).then_some(Phase::OpenTransaction);
        let pause = next_random(&mut rng) % if want_phase.is_some() { 100 } else { 400 };
        std::thread::sleep(Duration::from_millis(pause));
        let phase = kill_in(&mut engine, &settings, want_phase);
        phases.push((before, decided(&settings), phase));
        feeding.join().expect("producer");
    }
    for part in &parts[kills..] {
        produce_on_orders(&settings, part);
    }
    let want = expected(&settings, &groups);
    let total = want.want_d.len() as i64;
    eprintln!("{name}: killed at (decisions before the part, decisions at the kill, phase) {phases:?} of {total}, seed {seed}");
    assert!(
        phases.iter().all(|(_, at, _)| *at < total),
        "every kill must land mid-stream for this test to mean anything (seed {seed}): {phases:?}"
    );
    assert!(
        phases
            .iter()
            .filter(|(_, _, p)| *p == Phase::OpenTransaction)
            .count()
            >= open_transaction_kills,
        "kills with an open transaction (seed {seed}): {phases:?}"
    );
    let engine = child(&settings, name);
    wait_until_done(&settings, &want);
    sigterm(engine);
    let checked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_equals_replay(&settings, &want, repeats)
    }));
    if let Err(panic) = checked {
        eprintln!("kill schedule seed {seed}: {phases:?}");
        std::panic::resume_unwind(panic);
    }
}

/// Every thread's stack of a process, from gdb where the machine has it (for the failure
/// message of a process that does not stop).
fn thread_stacks(pid: &str) -> String {
    match std::process::Command::new("timeout")
        .args([
            "60",
            "gdb",
            "-p",
            pid,
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(out) => format!(
            "(gdb could not attach: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("(no gdb: {e})"),
    }
}

/// SIGTERM: the open batch is finished, then a clean exit.
pub fn sigterm(mut engine: ChildEngine) {
    let status = sigterm_within(&mut engine, STOP_WITHIN);
    assert!(
        status.success(),
        "SIGTERM ends the engine with exit 0, got {status}; its log ends:\n{}",
        engine.1.tail(60)
    );
}

/// The number of changelog records written so far (every partition's high watermark).
pub fn written(settings: &Settings, topic: &str) -> i64 {
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-watch");
    let c: BaseConsumer = cfg.create().expect("watch");
    (0..PARTITIONS)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map(|(_, h)| h)
                .unwrap_or(0)
        })
        .sum()
}

/// The changelog partitions a process restored (each restore writes a fence record naming the
/// process id first).
pub fn restored_by(settings: &Settings, pid: u32) -> Vec<i32> {
    let prefix = format!("{pid}-");
    let mut out = Vec::new();
    for (p, msgs) in read_partitions(settings, &settings.kafka.topics.changelog) {
        let fenced = msgs.iter().any(|(key, value)| {
            key.as_deref().is_some_and(|k| k.starts_with("m/"))
                && serde_json::from_slice::<serde_json::Value>(value)
                    .ok()
                    .and_then(|v| v["fence"].as_str().map(|f| f.starts_with(&prefix)))
                    .unwrap_or(false)
        });
        if fenced {
            out.push(p);
        }
    }
    out
}

/// Three instances share the partitions while traffic flows; one is killed and a fourth added
/// mid-stream. Afterwards every order has exactly one initial decision, every distinct decision
/// and alert equals a per-partition replay, and so does every account's final state.
///
/// Direct path: all input on the orders topic (each partition's order fixed), the group
/// profiles first (see `groups_first`). Repartitioned: the input on its own topics, routed by
/// every instance's repartition stage while they come and go; the replay is of what the
/// repartition topic holds, which must be every input line (the stage loses nothing).
pub fn three_instances_one_killed_one_added(settings: Settings, name: &str) {
    let t = settings.kafka.topics.clone();
    let lines = traffic_lines(40, 60, 31);
    let (groups, rest) = if settings.kafka.repartition {
        (Vec::new(), lines.clone())
    } else {
        groups_first(lines.clone())
    };
    let produce = |part: &[String]| {
        if settings.kafka.repartition {
            send(&settings, part);
        } else {
            produce_on_orders(&settings, part);
        }
    };
    if !groups.is_empty() {
        produce(&groups);
        let engine = child(&settings, name);
        wait_for_groups(&settings, &groups);
        sigterm(engine);
    }

    let (first, second) = rest.split_at(rest.len() * 3 / 5);
    produce(first);
    let mut instances: Vec<ChildEngine> = (1..=3)
        .map(|n| child_instance(&settings, name, Some(n)))
        .collect();
    wait_for(
        "the three instances to be mid-stream",
        Duration::from_secs(120),
        || written(&settings, &t.decisions) > 150,
    );
    let mut killed = instances.remove(1);
    killed.0.kill().expect("SIGKILL");
    killed.0.wait().expect("reaped");
    let added = child_instance(&settings, name, Some(4));
    let added_pid = added.0.id();
    let decided_at_the_join = written(&settings, &t.decisions);
    produce(second);
    let consumed = if settings.kafka.repartition {
        let distinct: std::collections::BTreeSet<&[u8]> =
            lines.iter().map(|l| l.as_bytes()).collect();
        wait_for(
            "every input line to be routed",
            Duration::from_secs(300),
            || {
                let routed: std::collections::BTreeSet<Vec<u8>> =
                    read_partitions(&settings, &t.repartition)
                        .into_values()
                        .flatten()
                        .map(|(_, v)| v)
                        .collect();
                distinct.iter().all(|l| routed.contains(*l))
            },
        );
        t.repartition.clone()
    } else {
        t.orders.clone()
    };
    let want = expected_on(&settings, &consumed, &groups);
    assert!(
        decided_at_the_join < want.want_d.len() as i64,
        "the kill and the new instance must land mid-stream for this test to mean anything"
    );
    wait_for(
        "every decision after the kill and the join",
        Duration::from_secs(300),
        || {
            distinct_ids(&read_topic(&settings, &t.decisions), "decision_id").len()
                >= want.want_d.len()
        },
    );
    wait_for(
        "the instances to consume every input",
        Duration::from_secs(300),
        || checkpointed(&settings, &consumed) == want.input_ends,
    );
    // The work can be done before the group has given the added instance anything (its join
    // waits for the killed member's session to time out, and the others may have consumed
    // everything by then): wait for its first assignment rather than race it.
    wait_for(
        "the added instance to be given partitions and restore them",
        Duration::from_secs(120),
        || !restored_by(&settings, added_pid).is_empty(),
    );
    wait_for(
        "the instances to consume every input after the added one took partitions",
        Duration::from_secs(300),
        || checkpointed(&settings, &consumed) == want.input_ends,
    );
    let took = restored_by(&settings, added_pid);
    sigterm(added);
    for engine in instances {
        sigterm(engine);
    }
    assert!(
        !took.is_empty(),
        "the added instance was given partitions and restored them"
    );

    // Exactly one initial decision (approved or held) per order, for the orders replay decides.
    let initial = |decisions: &BTreeMap<String, String>| {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for record in decisions.values() {
            let v: serde_json::Value = serde_json::from_str(record).expect("json");
            if matches!(v["status"].as_str(), Some("approved" | "held")) {
                *n.entry(v["order_id"].as_str().expect("order_id").to_string())
                    .or_default() += 1;
            }
        }
        n
    };
    let got = initial(&distinct_ids(
        &read_topic(&settings, &t.decisions),
        "decision_id",
    ));
    let repeated: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        repeated.is_empty(),
        "orders with more than one initial decision: {repeated:?}"
    );
    let want_orders = initial(&want.want_d);
    assert!(want_orders.len() > 100, "{} orders", want_orders.len());
    assert!(
        got.keys().eq(want_orders.keys()),
        "the orders decided are replay's ({} vs {})",
        got.len(),
        want_orders.len()
    );
    assert_equals_replay(&settings, &want, Repeats::Identical);
}
