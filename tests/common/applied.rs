//! What a running engine applied, and in which order, without a hook in the runtime: the
//! runtime's own `record` span (one per input, for its traces) names each input's topic,
//! partition and offset; a tracing layer on the engine's thread keeps those positions, and the
//! payloads are read back from the broker. So a test replays what was produced, in the order
//! the consumer interleaved it, and can show that every produced input was applied.

use super::broker::PARTITIONS;
use super::live::read_records;
use credit_sentinel::codec::decode_event;
use credit_sentinel::config::Settings;
use credit_sentinel::model::EventBody;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

/// An input's position: topic, partition, offset.
pub type Position = (String, i32, i64);

/// The positions of the inputs the engine took up, in its order (a batch rolled back and read
/// again appears twice).
#[derive(Clone, Default)]
pub struct Applied(Arc<Mutex<Vec<Position>>>);

impl Applied {
    /// Runs `f` (the runtime) with this recorder on the current thread; with
    /// `CREDIT_SENTINEL_LOG` set, the engine's log goes to stderr as well.
    pub fn around<T>(&self, f: impl FnOnce() -> T) -> T {
        let log = std::env::var("CREDIT_SENTINEL_LOG").ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::new(filter))
        });
        let subscriber = tracing_subscriber::registry()
            .with(Recorder(self.clone()))
            .with(log);
        tracing::subscriber::with_default(subscriber, f)
    }

    /// The positions taken up so far.
    pub fn positions(&self) -> Vec<Position> {
        self.0.lock().expect("applied").clone()
    }
}

struct Recorder(Applied);

#[derive(Default)]
struct Fields {
    topic: Option<String>,
    partition: Option<i64>,
    offset: Option<i64>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "messaging.destination.name" {
            self.topic = Some(value.to_string());
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            "messaging.destination.partition.id" => self.partition = Some(value),
            "messaging.kafka.offset" => self.offset = Some(value),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record_i64(field, value as i64);
    }

    fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        if attrs.metadata().name() != "record" {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        let (Some(topic), Some(partition), Some(offset)) = (f.topic, f.partition, f.offset) else {
            panic!("a record span names its topic, partition and offset");
        };
        (self.0)
            .0
            .lock()
            .expect("applied")
            .push((topic, partition as i32, offset));
    }
}

/// Each partition engine's inputs as the engine applied them, read from the broker: the
/// positions in order, a rolled-back position kept only where it was last taken up (the engine
/// rewound to its checkpoint and read it again), inputs that do not decode left out (they are
/// dead-lettered, as is one over the size limit), and a group profile or FX rate given to every partition engine (one
/// instance holds every partition in these tests). `positions` may join several runs, one
/// after the other. Asserts that every record of the input
/// topics was taken up: nothing produced was skipped.
pub fn applied_inputs(settings: &Settings, positions: &[Position]) -> BTreeMap<i32, Vec<Vec<u8>>> {
    let mut seen = BTreeSet::new();
    let mut order: Vec<&Position> = positions
        .iter()
        .rev()
        .filter(|p| seen.insert((*p).clone()))
        .collect();
    order.reverse();
    let mut stored: BTreeMap<Position, Vec<u8>> = BTreeMap::new();
    for topic in settings.kafka.topics.inputs() {
        for (p, records) in read_records(settings, topic, "read_committed") {
            for (offset, _, payload) in records {
                stored.insert((topic.to_string(), p, offset), payload);
            }
        }
    }
    let skipped: Vec<&Position> = stored.keys().filter(|p| !seen.contains(*p)).collect();
    assert!(
        skipped.is_empty(),
        "every produced input is taken up by the engine: {} of {} were not, e.g. {:?}",
        skipped.len(),
        stored.len(),
        &skipped[..skipped.len().min(5)]
    );
    let mut by_partition: BTreeMap<i32, Vec<Vec<u8>>> = BTreeMap::new();
    for position in order {
        let payload = stored
            .get(position)
            .unwrap_or_else(|| panic!("the engine took up {position:?}, which was not produced"));
        if payload.len() > settings.max_message_bytes {
            continue;
        }
        let Ok(event) = decode_event(payload) else {
            continue;
        };
        if matches!(
            event.body,
            EventBody::GroupProfile(_) | EventBody::FxRate(_)
        ) {
            for p in 0..PARTITIONS {
                by_partition.entry(p).or_default().push(payload.clone());
            }
        } else {
            by_partition
                .entry(position.1)
                .or_default()
                .push(payload.clone());
        }
    }
    by_partition
}
