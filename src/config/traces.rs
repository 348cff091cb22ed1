//! The `[tracing]` section: the OTLP endpoint and protocol, the sample ratio and the service
//! name of decision-path traces (off unless an endpoint is set).

use super::*;

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

pub(super) fn validate_tracing(t: &RawTracing) -> Result<TracingSettings, ConfigError> {
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
