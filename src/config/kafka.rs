//! The `[kafka]` section: topics, delivery mode, batching, librdkafka properties (inline or
//! from `properties_file`, misspelt ones refused) and the command signing keys file.

use super::*;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    pub orders: String,
    pub shipments: String,
    pub payments: String,
    pub profiles: String,
    pub commands: String,
    pub decisions: String,
    pub delivery_decisions: String,
    pub alerts: String,
    pub dead_letter: String,
    pub changelog: String,
    /// Internal: events re-keyed by credit account (`kafka.repartition`).
    pub repartition: String,
}

impl Topics {
    /// The input topics, in a fixed order.
    pub fn inputs(&self) -> [&str; 5] {
        [
            &self.orders,
            &self.shipments,
            &self.payments,
            &self.profiles,
            &self.commands,
        ]
    }

    /// Every topic the engine reads or writes: the inputs, then changelog, decisions, delivery
    /// decisions, alerts,
    /// dead-letters and the repartition topic (what a broker must have before `run` starts;
    /// the last only with `kafka.repartition`).
    pub fn all(&self) -> [&str; 11] {
        let [o, s, p, pr, c] = self.inputs();
        [
            o,
            s,
            p,
            pr,
            c,
            &self.changelog,
            &self.decisions,
            &self.delivery_decisions,
            &self.alerts,
            &self.dead_letter,
            &self.repartition,
        ]
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub delivery: String,
    pub transactional_id: String,
    pub repartition: bool,
    pub batch_max_messages: usize,
    pub batch_max_ms: u64,
    #[serde(default = "default_changelog_interval_ms")]
    pub changelog_interval_ms: u64,
    pub tick_ms: u64,
    pub linger_ms: u64,
    pub retry_backoff_min_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub properties_file: Option<String>,
    pub command_keys_file: Option<String>,
    pub topics: Topics,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn default_changelog_interval_ms() -> u64 {
    100
}

/// How outputs and offsets are committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    ExactlyOnce,
    AtLeastOnce,
}

impl Delivery {
    /// The setting's value: `exactly_once` or `at_least_once`.
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::ExactlyOnce => "exactly_once",
            Delivery::AtLeastOnce => "at_least_once",
        }
    }
}

/// Validated Kafka settings.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    pub brokers: String,
    pub group_id: String,
    pub client_id: String,
    pub delivery: Delivery,
    pub transactional_id: String,
    /// Route every event through the repartition topic, keyed by credit account (the
    /// customer's group when it has one), so one owner sees all of a group's exposure.
    pub repartition: bool,
    pub batch_max_messages: usize,
    pub batch_max_ms: u64,
    /// at_least_once, in a backlog (batches that come full): snapshots and checkpoints are
    /// written at most this often (0: with every batch). ARCHITECTURE.md, "Changelog cadence".
    pub changelog_interval_ms: u64,
    pub tick_ms: u64,
    pub linger_ms: u64,
    pub retry_backoff_min_ms: u64,
    pub retry_backoff_max_ms: u64,
    pub topics: Topics,
    /// librdkafka properties: `[kafka.properties]` overlaid with `properties_file`.
    pub properties: BTreeMap<String, String>,
    /// The keys that sign commands (`command_keys_file`); `None`: commands are not checked.
    pub command_keys: Option<crate::signing::CommandKeys>,
}

impl KafkaSettings {
    /// The topics the engine consumes: the five inputs on the direct path, the one
    /// repartition topic with `repartition` (partition N of each holds the same accounts as
    /// changelog partition N).
    pub fn consumed_topics(&self) -> Vec<&str> {
        if self.repartition {
            vec![self.topics.repartition.as_str()]
        } else {
            self.topics.inputs().to_vec()
        }
    }
}

/// Hands every librdkafka property to librdkafka's own configuration, which knows every name
/// and value form: a misspelt name (`bootstrap.servrs`) or a bad value is an error naming the
/// key, at startup and in `check-config`, instead of a client that ignores it.
pub(super) fn validate_properties(
    properties: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    for (key, value) in properties {
        let mut one = rdkafka::ClientConfig::new();
        one.set(key, value);
        if let Err(e) = one.create_native_config() {
            let why = match e {
                rdkafka::error::KafkaError::ClientConfig(_, description, _, _) => description,
                other => other.to_string(),
            };
            return Err(invalid(
                &format!("kafka.properties.{key}"),
                format!("librdkafka refuses it: {why}"),
            ));
        }
    }
    Ok(())
}

/// Reads a librdkafka properties file: `key=value` per line, `#` comments, blank lines.
pub fn read_properties_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let key = "kafka.properties_file";
    let mut props = BTreeMap::new();
    for (n, line) in side_file_lines(key, path)? {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| invalid(key, format!("{path} line {n}: expected key=value")))?;
        props.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(props)
}

pub(super) fn validate_kafka(k: &RawKafka) -> Result<KafkaSettings, ConfigError> {
    let delivery = match k.delivery.as_str() {
        "exactly_once" => Delivery::ExactlyOnce,
        "at_least_once" => Delivery::AtLeastOnce,
        _ => {
            return Err(invalid(
                "kafka.delivery",
                "must be \"exactly_once\" or \"at_least_once\"",
            ))
        }
    };
    if k.brokers.trim().is_empty() {
        return Err(invalid("kafka.brokers", "must name at least one broker"));
    }
    if k.batch_max_messages == 0 || k.batch_max_ms == 0 {
        return Err(invalid(
            "kafka.batch_max_messages",
            "batches need at least 1 message and 1 ms",
        ));
    }
    if delivery == Delivery::ExactlyOnce && k.transactional_id.trim().is_empty() {
        return Err(invalid(
            "kafka.transactional_id",
            "is required for exactly_once delivery",
        ));
    }
    let mut properties = k.properties.clone();
    if let Some(path) = k.properties_file.as_deref().filter(|p| !p.is_empty()) {
        properties.extend(read_properties_file(path)?);
    }
    validate_properties(&properties)?;
    let command_keys = match k.command_keys_file.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(path) => {
            let key = "kafka.command_keys_file";
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
            Some(
                crate::signing::CommandKeys::parse(&text)
                    .map_err(|e| invalid(key, format!("{path}: {e}")))?,
            )
        }
    };
    Ok(KafkaSettings {
        brokers: k.brokers.clone(),
        group_id: k.group_id.clone(),
        client_id: k.client_id.clone(),
        delivery,
        transactional_id: k.transactional_id.clone(),
        repartition: k.repartition,
        batch_max_messages: k.batch_max_messages,
        batch_max_ms: k.batch_max_ms,
        changelog_interval_ms: k.changelog_interval_ms,
        tick_ms: k.tick_ms,
        linger_ms: k.linger_ms,
        retry_backoff_min_ms: k.retry_backoff_min_ms.max(1),
        retry_backoff_max_ms: k.retry_backoff_max_ms.max(k.retry_backoff_min_ms.max(1)),
        topics: k.topics.clone(),
        properties,
        command_keys,
    })
}
