//! Settings: `config/default.toml` (embedded, always the base layer), an optional file, and
//! `CREDIT_SENTINEL__...` environment overrides, deserialized strictly (unknown keys are
//! errors) and validated into a [`Policy`] and the shell's own settings. Every error names the
//! key it is about.

use crate::model::{parse_amount, Currency, Grade, Severity};
use crate::policy::{Bounds, GradeRule, LimitSuggestions, Policy, ReleaseOrder, Threshold};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variable prefix (`CREDIT_SENTINEL__POLICY__HOLD_EXPIRY_DAYS`).
pub const ENV_PREFIX: &str = "CREDIT_SENTINEL";

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The loader's own message (not a `source`: it would be printed twice in a chain).
    #[error("config: {0}")]
    Load(config::ConfigError),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl From<config::ConfigError> for ConfigError {
    fn from(e: config::ConfigError) -> Self {
        ConfigError::Load(e)
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrade {
    pub tolerance_pct: Option<String>,
    pub overdue_days_max: Option<u32>,
    pub payment_terms_days: Option<u32>,
    pub prepay: Option<bool>,
}

impl RawGrade {
    /// Fields set in `over` win (the environment layer arrives lower-cased: `grades.b`).
    fn merged(&self, over: &RawGrade) -> RawGrade {
        RawGrade {
            tolerance_pct: over
                .tolerance_pct
                .clone()
                .or_else(|| self.tolerance_pct.clone()),
            overdue_days_max: over.overdue_days_max.or(self.overdue_days_max),
            payment_terms_days: over.payment_terms_days.or(self.payment_terms_days),
            prepay: over.prepay.or(self.prepay),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnomaly {
    pub factor: String,
    pub window: usize,
    pub min_orders: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInactivity {
    pub window: usize,
    pub min_gaps: usize,
    pub extra_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUtilization {
    pub thresholds: Vec<String>,
    pub severities: Vec<String>,
    pub rearm_margin: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAging {
    pub buckets_days: Vec<u32>,
    pub write_off_days: u32,
    pub review_warning_days: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimitSuggestions {
    pub settled_items: usize,
    pub decrease_avg_days_late_min: String,
    pub decrease_pct: String,
    pub increase_avg_days_late_max: String,
    pub increase_near_limit_utilization: String,
    pub increase_near_limit_orders_min: usize,
    pub increase_recent_orders: usize,
    pub increase_pct: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub default_grade: String,
    pub release_order: String,
    pub hold_expiry_days: u32,
    pub small_order_amount: Option<String>,
    pub overdue_amount_max: Option<String>,
    pub overdue_share_max: Option<String>,
    pub four_eyes_amount: Option<String>,
    pub unknown_customer_limit: Option<String>,
    pub unknown_customer_currency: Option<String>,
    pub apply_behavioural_grade: bool,
    pub behaviour_window_days: u32,
    pub grades: BTreeMap<String, RawGrade>,
    #[serde(default)]
    pub fx_rates: BTreeMap<String, String>,
    pub anomaly: RawAnomaly,
    pub inactivity: RawInactivity,
    pub utilization: RawUtilization,
    pub aging: RawAging,
    pub limit_suggestions: RawLimitSuggestions,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub event_ids_per_account: usize,
    pub closed_ids_per_account: usize,
    pub pending_per_account: usize,
    pub pending_ttl_hours: u32,
    pub settled_history_per_account: usize,
    pub items_per_account: usize,
    pub max_accounts: usize,
    pub max_groups: usize,
    pub future_skew_max_hours: u32,
    pub max_message_bytes: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplay {
    pub progress: String,
}

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

/// One API token as written in `[http.tokens.<name>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub role: String,
    pub token: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub enabled: bool,
    pub listen: String,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    pub max_streams: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub idle_timeout_ms: u64,
    pub request_read_timeout_ms: u64,
    pub probe_listen: String,
    pub metrics_require_auth: bool,
    pub tokens_file: Option<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, RawToken>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTracing {
    pub otlp_endpoint: String,
    pub otlp_protocol: String,
    pub sample_ratio: f64,
    pub service_name: String,
}

/// How spans travel to the OTLP collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceProtocol {
    /// `http/protobuf`, the OTLP default.
    Protobuf,
    /// `http/json`.
    Json,
}

/// Validated `[tracing]`: decision-path spans over OTLP/HTTP (`traces` module).
#[derive(Debug, Clone)]
pub struct TracingSettings {
    /// The collector's base URL (`/v1/traces` is appended); `None`: traces off.
    pub otlp_endpoint: Option<String>,
    pub protocol: TraceProtocol,
    /// Share of batches traced, 0 to 1.
    pub sample_ratio: f64,
    pub service_name: String,
}

/// What a bearer token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: customers, groups, holds, top accounts, check.
    Viewer,
    /// Reads, and release or reject held orders.
    Approver,
    /// Everything, including block and unblock.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// A configured API token: who it is (the actor on commands), its role and its secret.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Shortest accepted token secret.
pub const TOKEN_MIN_LEN: usize = 16;

/// Validated HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    /// Live event streams (`/v1/feed/stream`) open at once; more are answered 503.
    pub max_streams: usize,
    /// TCP connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at once.
    pub max_connections_per_peer: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout_ms: u64,
    /// A request must be answered this long after its first byte arrived, or its connection
    /// is closed (clients that send headers a byte at a time).
    pub request_read_timeout_ms: u64,
    /// A second listener for `/healthz` and `/readyz` only, with connection slots of its own
    /// (`http.probe_listen`; `None`: the probes are served on `listen` only).
    pub probe_listen: Option<std::net::SocketAddr>,
    pub metrics_require_auth: bool,
    pub tokens: Vec<Token>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// The settings tree as written in TOML.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    pub policy: RawPolicy,
    pub limits: RawLimits,
    pub replay: RawReplay,
    pub kafka: RawKafka,
    pub http: RawHttp,
    pub log: RawLog,
    pub tracing: RawTracing,
}

/// When the replay progress bar shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Auto,
    Always,
    Never,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    pub max_message_bytes: usize,
    /// `run` dead-letters an event whose occurred_at is more than this ahead of the wall clock
    /// (`limits.future_skew_max_hours`; 0: no check).
    pub future_skew_max_us: i64,
    pub progress: Progress,
    pub kafka: KafkaSettings,
    pub http: HttpSettings,
    pub log_format: LogFormat,
    /// Default log filter (`CREDIT_SENTINEL_LOG` overrides it).
    pub log_level: String,
    pub tracing: TracingSettings,
    /// The merged tree, for `check-config`.
    pub raw: RawSettings,
}

/// Loads the embedded defaults, then `file` (if any), then the environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_with_env(file, std::env::vars())
}

/// As [`load`], with the environment given explicitly (for tests).
pub fn load_with_env(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    let env_map: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .list_separator(",")
            .with_list_parse_key("policy.utilization.thresholds")
            .with_list_parse_key("policy.utilization.severities")
            .with_list_parse_key("policy.aging.buckets_days")
            .try_parsing(true)
            .source(Some(env_map)),
    );
    let raw: RawSettings = builder.build()?.try_deserialize()?;
    validate(raw)
}

fn decimal(key: &str, text: &str) -> Result<Decimal, ConfigError> {
    parse_amount(text).map_err(|e| invalid(key, format!("{text:?} {e}")))
}

fn decimal_min(key: &str, text: &str, min: Decimal) -> Result<Decimal, ConfigError> {
    let v = decimal(key, text)?;
    if v < min {
        return Err(invalid(key, format!("must be at least {min}")));
    }
    Ok(v)
}

fn opt_decimal(key: &str, text: &Option<String>) -> Result<Option<Decimal>, ConfigError> {
    text.as_deref()
        .filter(|t| !t.is_empty())
        .map(|t| decimal_min(key, t, Decimal::ZERO))
        .transpose()
}

fn currency(key: &str, text: &str) -> Result<Currency, ConfigError> {
    Currency::parse_iso(text)
        .ok_or_else(|| invalid(key, format!("{text:?} is not an ISO 4217 code")))
}

/// Turns the raw tree into validated settings.
pub fn validate(raw: RawSettings) -> Result<Settings, ConfigError> {
    let p = &raw.policy;
    // Merge grade tables case-insensitively: `A` from files, `a` from the environment.
    let mut merged: BTreeMap<String, RawGrade> = BTreeMap::new();
    let mut names: Vec<&String> = p.grades.keys().collect();
    names.sort_by_key(|n| (n.to_uppercase(), n.chars().any(|c| c.is_lowercase())));
    for name in names {
        let upper = name.to_uppercase();
        let g = &p.grades[name];
        let entry = match merged.get(&upper) {
            Some(prev) => prev.merged(g),
            None => g.clone(),
        };
        merged.insert(upper, entry);
    }
    let mut grades = BTreeMap::new();
    for (name, g) in &merged {
        let key = format!("policy.grades.{name}");
        let grade = Grade::parse(name).ok_or_else(|| invalid(&key, "grades are A, B, C and D"))?;
        let need = |field: &str| invalid(&format!("{key}.{field}"), "is required");
        let tolerance = g
            .tolerance_pct
            .as_deref()
            .ok_or_else(|| need("tolerance_pct"))?;
        grades.insert(
            grade,
            GradeRule {
                tolerance_pct: decimal_min(
                    &format!("{key}.tolerance_pct"),
                    tolerance,
                    Decimal::ZERO,
                )?,
                overdue_days_max: g.overdue_days_max.ok_or_else(|| need("overdue_days_max"))?,
                payment_terms_days: g
                    .payment_terms_days
                    .ok_or_else(|| need("payment_terms_days"))?,
                prepay: g.prepay.ok_or_else(|| need("prepay"))?,
            },
        );
    }
    for g in Grade::ALL {
        if !grades.contains_key(&g) {
            return Err(invalid(
                &format!("policy.grades.{g}"),
                "every grade A-D needs a rule",
            ));
        }
    }
    let default_grade = Grade::parse(&p.default_grade)
        .ok_or_else(|| invalid("policy.default_grade", "must be A, B, C or D"))?;
    let release_order = match p.release_order.as_str() {
        "strict_fifo" => ReleaseOrder::StrictFifo,
        "first_fit" => ReleaseOrder::FirstFit,
        _ => {
            return Err(invalid(
                "policy.release_order",
                "must be \"strict_fifo\" or \"first_fit\"",
            ))
        }
    };
    let unknown_customer_limit = match (&p.unknown_customer_limit, &p.unknown_customer_currency) {
        (None, None) => None,
        (Some(l), Some(c)) => Some((
            decimal_min("policy.unknown_customer_limit", l, Decimal::ZERO)?,
            currency("policy.unknown_customer_currency", c)?,
        )),
        _ => {
            return Err(invalid(
                "policy.unknown_customer_limit",
                "set together with policy.unknown_customer_currency",
            ))
        }
    };
    let mut fx_rates = BTreeMap::new();
    for (pair, rate) in &p.fx_rates {
        let key = format!("policy.fx_rates.{pair}");
        let (from, to) = pair
            .split_once('/')
            .ok_or_else(|| invalid(&key, "pairs are written \"FROM/TO\""))?;
        let rate = decimal(&key, rate)?;
        if rate <= Decimal::ZERO {
            return Err(invalid(&key, "a rate must be positive"));
        }
        fx_rates.insert((currency(&key, from)?, currency(&key, to)?), rate);
    }
    let u = &p.utilization;
    if u.thresholds.len() != u.severities.len()
        || u.thresholds.is_empty()
        || u.thresholds.len() > 32
    {
        return Err(invalid(
            "policy.utilization.severities",
            "needs one severity per threshold (1 to 32 thresholds)",
        ));
    }
    let mut utilization_thresholds = Vec::new();
    for (t, s) in u.thresholds.iter().zip(&u.severities) {
        let ratio = decimal_min("policy.utilization.thresholds", t, Decimal::ZERO)?;
        if utilization_thresholds
            .last()
            .is_some_and(|prev: &Threshold| prev.ratio >= ratio)
        {
            return Err(invalid(
                "policy.utilization.thresholds",
                "must be in ascending order",
            ));
        }
        let severity = Severity::parse(s).ok_or_else(|| {
            invalid(
                "policy.utilization.severities",
                format!("{s:?} is not info, warning or critical"),
            )
        })?;
        utilization_thresholds.push(Threshold { ratio, severity });
    }
    if p.aging.buckets_days.windows(2).any(|w| w[0] >= w[1])
        || p.aging
            .buckets_days
            .last()
            .is_some_and(|last| *last >= p.aging.write_off_days)
        || p.aging.buckets_days.len() > 16
    {
        return Err(invalid(
            "policy.aging.buckets_days",
            "must ascend, be at most 16, and stay below write_off_days",
        ));
    }
    let s = &p.limit_suggestions;
    let ls = LimitSuggestions {
        settled_items: s.settled_items,
        decrease_avg_days_late_min: decimal(
            "policy.limit_suggestions.decrease_avg_days_late_min",
            &s.decrease_avg_days_late_min,
        )?,
        decrease_pct: decimal_min(
            "policy.limit_suggestions.decrease_pct",
            &s.decrease_pct,
            Decimal::ZERO,
        )?,
        increase_avg_days_late_max: decimal(
            "policy.limit_suggestions.increase_avg_days_late_max",
            &s.increase_avg_days_late_max,
        )?,
        increase_near_limit_utilization: decimal_min(
            "policy.limit_suggestions.increase_near_limit_utilization",
            &s.increase_near_limit_utilization,
            Decimal::ZERO,
        )?,
        increase_near_limit_orders_min: s.increase_near_limit_orders_min,
        increase_recent_orders: s.increase_recent_orders,
        increase_pct: decimal_min(
            "policy.limit_suggestions.increase_pct",
            &s.increase_pct,
            Decimal::ZERO,
        )?,
    };
    let l = &raw.limits;
    if l.max_message_bytes < 1024 {
        return Err(invalid("limits.max_message_bytes", "must be at least 1024"));
    }
    let policy = Policy {
        grades,
        default_grade,
        unknown_customer_limit,
        small_order_amount: opt_decimal("policy.small_order_amount", &p.small_order_amount)?,
        overdue_amount_max: opt_decimal("policy.overdue_amount_max", &p.overdue_amount_max)?,
        overdue_share_max: opt_decimal("policy.overdue_share_max", &p.overdue_share_max)?,
        four_eyes_amount: opt_decimal("policy.four_eyes_amount", &p.four_eyes_amount)?,
        release_order,
        hold_expiry_days: p.hold_expiry_days,
        fx_rates,
        anomaly_factor: decimal_min("policy.anomaly.factor", &p.anomaly.factor, Decimal::ONE)?,
        anomaly_window: p.anomaly.window.max(1),
        anomaly_min_orders: p.anomaly.min_orders,
        inactivity_window: p.inactivity.window.max(1),
        inactivity_min_gaps: p.inactivity.min_gaps,
        inactivity_extra_days: p.inactivity.extra_days,
        utilization_thresholds,
        utilization_rearm_margin: decimal_min(
            "policy.utilization.rearm_margin",
            &u.rearm_margin,
            Decimal::ZERO,
        )?,
        aging_buckets_days: p.aging.buckets_days.clone(),
        write_off_days: p.aging.write_off_days,
        review_warning_days: p.aging.review_warning_days,
        behaviour_window_days: p.behaviour_window_days,
        apply_behavioural_grade: p.apply_behavioural_grade,
        limit_suggestions: ls,
        bounds: Bounds {
            event_ids_per_account: l.event_ids_per_account,
            closed_ids_per_account: l.closed_ids_per_account.max(1),
            pending_per_account: l.pending_per_account,
            pending_ttl_us: i64::from(l.pending_ttl_hours) * 3_600_000_000,
            settled_history_per_account: l.settled_history_per_account,
            items_per_account: l.items_per_account.max(1),
            max_accounts: l.max_accounts.max(1),
            max_groups: l.max_groups,
        },
    };
    let progress = match raw.replay.progress.as_str() {
        "auto" => Progress::Auto,
        "always" => Progress::Always,
        "never" => Progress::Never,
        _ => {
            return Err(invalid(
                "replay.progress",
                "must be \"auto\", \"always\" or \"never\"",
            ))
        }
    };
    let kafka = validate_kafka(&raw.kafka)?;
    let http = validate_http(&raw.http)?;
    let log_format = match raw.log.format.as_str() {
        "human" => LogFormat::Human,
        "json" => LogFormat::Json,
        _ => return Err(invalid("log.format", "must be \"human\" or \"json\"")),
    };
    if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
        return Err(invalid(
            "log.level",
            "is not a log filter (e.g. \"info\" or \"credit_sentinel=debug,warn\")",
        ));
    }
    let tracing = validate_tracing(&raw.tracing)?;
    Ok(Settings {
        policy,
        max_message_bytes: l.max_message_bytes,
        future_skew_max_us: i64::from(l.future_skew_max_hours) * 3_600_000_000,
        progress,
        kafka,
        http,
        log_format,
        log_level: raw.log.level.clone(),
        tracing,
        raw,
    })
}

fn validate_tracing(t: &RawTracing) -> Result<TracingSettings, ConfigError> {
    let endpoint = t.otlp_endpoint.trim();
    if !endpoint.is_empty() && !endpoint.starts_with("http://") {
        return Err(invalid(
            "tracing.otlp_endpoint",
            format!(
                "{endpoint:?} must be an http:// URL (e.g. \"http://127.0.0.1:4318\"; the exporter has no TLS: send to a local collector), or empty for no traces"
            ),
        ));
    }
    let protocol = match t.otlp_protocol.as_str() {
        "http/protobuf" => TraceProtocol::Protobuf,
        "http/json" => TraceProtocol::Json,
        _ => {
            return Err(invalid(
                "tracing.otlp_protocol",
                "must be \"http/protobuf\" or \"http/json\"",
            ))
        }
    };
    if !(0.0..=1.0).contains(&t.sample_ratio) {
        return Err(invalid(
            "tracing.sample_ratio",
            format!("{} must be between 0 and 1", t.sample_ratio),
        ));
    }
    if t.service_name.trim().is_empty() {
        return Err(invalid("tracing.service_name", "must not be empty"));
    }
    Ok(TracingSettings {
        otlp_endpoint: (!endpoint.is_empty()).then(|| endpoint.to_string()),
        protocol,
        sample_ratio: t.sample_ratio,
        service_name: t.service_name.clone(),
    })
}

fn token(key: &str, name: &str, role: &str, secret: &str) -> Result<Token, ConfigError> {
    let role = Role::parse(role).ok_or_else(|| {
        invalid(
            &format!("{key}.role"),
            "must be \"viewer\", \"approver\" or \"admin\"",
        )
    })?;
    if secret.chars().count() < TOKEN_MIN_LEN || secret.chars().any(char::is_whitespace) {
        return Err(invalid(
            &format!("{key}.token"),
            format!("must be at least {TOKEN_MIN_LEN} characters without spaces"),
        ));
    }
    if name.is_empty() || name.len() > 64 {
        return Err(invalid(key, "token names are 1..64 characters"));
    }
    Ok(Token {
        name: name.to_string(),
        role,
        secret: secret.to_string(),
    })
}

/// The meaningful lines of a settings side file (`key` names the setting that points at it):
/// trimmed, with their 1-based line numbers, without blank lines and `#` comments.
fn side_file_lines(key: &str, path: &str) -> Result<Vec<(usize, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

/// Reads a tokens file: `name role token` per line, `#` comments, blank lines.
pub fn read_tokens_file(path: &str) -> Result<Vec<Token>, ConfigError> {
    let key = "http.tokens_file";
    let mut tokens = Vec::new();
    for (n, line) in side_file_lines(key, path)? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, role, secret] = parts[..] else {
            return Err(invalid(
                key,
                format!("{path} line {n}: expected `name role token`"),
            ));
        };
        tokens.push(token(
            &format!("{key} ({path} line {n})"),
            name,
            role,
            secret,
        )?);
    }
    Ok(tokens)
}

fn validate_http(h: &RawHttp) -> Result<HttpSettings, ConfigError> {
    let listen = h.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("{:?} is not an address:port", h.listen),
        )
    })?;
    if h.max_streams == 0 {
        return Err(invalid("http.max_streams", "must be above 0"));
    }
    if h.max_connections == 0 {
        return Err(invalid("http.max_connections", "must be above 0"));
    }
    if h.idle_timeout_ms == 0 {
        return Err(invalid("http.idle_timeout_ms", "must be above 0"));
    }
    if h.max_connections_per_peer == 0 {
        return Err(invalid("http.max_connections_per_peer", "must be above 0"));
    }
    let probe_listen = match h.probe_listen.trim() {
        "" => None,
        a => {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                invalid(
                    "http.probe_listen",
                    format!("{a:?} is not an address:port (empty: no probe listener)"),
                )
            })?;
            if addr == listen && addr.port() != 0 {
                return Err(invalid("http.probe_listen", "must differ from http.listen"));
            }
            Some(addr)
        }
    };
    if h.request_read_timeout_ms <= h.request_timeout_ms {
        return Err(invalid(
            "http.request_read_timeout_ms",
            "must be above http.request_timeout_ms (a request being handled is answered within that)",
        ));
    }
    if h.max_body_bytes == 0 || h.request_timeout_ms == 0 || h.max_concurrent_requests == 0 {
        return Err(invalid(
            "http.max_body_bytes",
            "body limit, request timeout and concurrency must all be above 0",
        ));
    }
    let mut tokens = Vec::new();
    for (name, t) in &h.tokens {
        tokens.push(token(
            &format!("http.tokens.{name}"),
            name,
            &t.role,
            &t.token,
        )?);
    }
    if let Some(path) = h.tokens_file.as_deref().filter(|p| !p.is_empty()) {
        tokens.extend(read_tokens_file(path)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &tokens {
        if !seen.insert(t.secret.as_str()) {
            return Err(invalid(
                "http.tokens",
                format!("token of {:?} is also given to another name", t.name),
            ));
        }
    }
    Ok(HttpSettings {
        enabled: h.enabled,
        listen,
        max_body_bytes: h.max_body_bytes,
        request_timeout_ms: h.request_timeout_ms,
        max_concurrent_requests: h.max_concurrent_requests,
        max_streams: h.max_streams,
        max_connections: h.max_connections,
        max_connections_per_peer: h.max_connections_per_peer,
        idle_timeout_ms: h.idle_timeout_ms,
        request_read_timeout_ms: h.request_read_timeout_ms,
        probe_listen,
        metrics_require_auth: h.metrics_require_auth,
        tokens,
    })
}

/// Hands every librdkafka property to librdkafka's own configuration, which knows every name
/// and value form: a misspelt name (`bootstrap.servrs`) or a bad value is an error naming the
/// key, at startup and in `check-config`, instead of a client that ignores it.
fn validate_properties(properties: &BTreeMap<String, String>) -> Result<(), ConfigError> {
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

fn validate_kafka(k: &RawKafka) -> Result<KafkaSettings, ConfigError> {
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
        tick_ms: k.tick_ms,
        linger_ms: k.linger_ms,
        retry_backoff_min_ms: k.retry_backoff_min_ms.max(1),
        retry_backoff_max_ms: k.retry_backoff_max_ms.max(k.retry_backoff_min_ms.max(1)),
        topics: k.topics.clone(),
        properties,
        command_keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_misspelt_librdkafka_property_is_an_error_naming_the_key() {
        let with = |line: &str| {
            let path = std::env::temp_dir().join(format!(
                "cs-props-{}-{}.toml",
                std::process::id(),
                line.len()
            ));
            std::fs::write(&path, format!("[kafka.properties]\n{line}\n")).expect("write");
            let result = load_with_env(Some(&path), Vec::<(String, String)>::new());
            let _ = std::fs::remove_file(&path);
            result
        };
        let text = with(r#""bootstrap.servrs" = "x:9092""#)
            .expect_err("unknown property")
            .to_string();
        assert!(
            text.contains("kafka.properties.bootstrap.servrs")
                && text.contains("No such configuration property"),
            "{text}"
        );
        let text = with(r#""acks" = "sometimes""#)
            .expect_err("bad value")
            .to_string();
        assert!(text.contains("kafka.properties.acks"), "{text}");
        with(r#""acks" = "all""#).expect("a known property with a good value");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_policy_default() {
        let s = load_with_env(None, env(&[])).unwrap();
        assert_eq!(s.policy, Policy::default());
        assert_eq!(s.max_message_bytes, 1 << 20);
    }

    #[test]
    fn env_overrides() {
        let s = load_with_env(
            None,
            env(&[
                ("CREDIT_SENTINEL__POLICY__HOLD_EXPIRY_DAYS", "45"),
                ("CREDIT_SENTINEL__POLICY__GRADES__B__TOLERANCE_PCT", "7.5"),
                ("CREDIT_SENTINEL__POLICY__FOUR_EYES_AMOUNT", "50000"),
                (
                    "CREDIT_SENTINEL__POLICY__UTILIZATION__THRESHOLDS",
                    "0.8,0.9",
                ),
                (
                    "CREDIT_SENTINEL__POLICY__UTILIZATION__SEVERITIES",
                    "warning,critical",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(s.policy.hold_expiry_days, 45);
        assert_eq!(s.policy.grade(Grade::B).tolerance_pct, Decimal::new(75, 1));
        assert_eq!(s.policy.four_eyes_amount, Some(Decimal::from(50000)));
        assert_eq!(s.policy.utilization_thresholds.len(), 2);
    }

    #[test]
    fn file_layers_and_errors_name_the_key() {
        let dir = std::env::temp_dir().join(format!("cs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::File::create(&good)
            .unwrap()
            .write_all(b"[policy]\nrelease_order = \"first_fit\"\n[policy.fx_rates]\n\"USD/EUR\" = \"0.92\"\n")
            .unwrap();
        let s = load_with_env(Some(&good), env(&[])).unwrap();
        assert_eq!(s.policy.release_order, ReleaseOrder::FirstFit);
        assert_eq!(s.policy.fx_rates.len(), 1);

        let typo = dir.join("typo.toml");
        std::fs::write(&typo, "[policy]\nhold_expiry_dayz = 3\n").unwrap();
        let err = load_with_env(Some(&typo), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("hold_expiry_dayz"), "{err}");

        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[policy.grades.A]\ntolerance_pct = \"ten\"\n").unwrap();
        let err = load_with_env(Some(&bad), env(&[])).unwrap_err().to_string();
        assert!(err.contains("policy.grades.A.tolerance_pct"), "{err}");

        let err = load_with_env(
            None,
            env(&[("CREDIT_SENTINEL__POLICY__RELEASE_ORDER", "lifo")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("policy.release_order"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
