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

mod http;
mod kafka;
mod policy;
mod traces;
pub use http::*;
pub use kafka::*;
pub use policy::*;
pub use traces::*;

/// The embedded defaults.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: String,
    pub level: String,
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
    load_layers(file.as_slice(), env)
}

/// The embedded defaults, then each of `files` in turn (a later file's keys win), then `env`
/// (what `backtest` uses to put a candidate policy file over the baseline's, and a swept
/// setting over both).
pub fn load_layers(
    files: &[&Path],
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder().add_source(config::File::from_str(
        DEFAULT_TOML,
        config::FileFormat::Toml,
    ));
    for path in files {
        builder = builder.add_source(
            config::File::from(*path)
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
    let policy = validate_policy(&raw.policy, &raw.limits)?;
    let l = &raw.limits;
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
