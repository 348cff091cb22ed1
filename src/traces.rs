//! Decision-path traces over OTLP (off unless `tracing.otlp_endpoint` is set).
//!
//! The runtime opens a `batch` span per polled batch (with `process` and `commit` children,
//! and under `commit` one `flush` span per acknowledged step and the `commit_transaction`) and
//! a `record` span per input record, carrying the record's topic, partition and offset, the
//! event, the customer and order and the outcome, with a `produced` event per output record.
//! Those spans are `debug` spans of the crate's own targets; the layer built here exports them
//! (and nothing else) through the OpenTelemetry SDK's batch processor, off the decision thread.
//!
//! Context crosses Kafka in W3C trace-context headers (`traceparent`, `tracestate`): a record
//! span whose input carries a `traceparent` continues that trace (linked to its batch), so an
//! order pipeline that traces its producer sees the engine's work under its own trace; and
//! every decision, delivery decision, alert and dead-letter written while tracing is on carries
//! the `traceparent` of the record span that made it, so its consumer can continue from there.
//! The repartition stage passes both headers through unchanged.

use crate::config::{TraceProtocol, TracingSettings};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use rdkafka::message::{BorrowedHeaders, Header, Headers, OwnedHeaders};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C trace-context header a span's context travels in.
pub const TRACEPARENT: &str = "traceparent";
/// Vendor-specific trace state, passed along with `traceparent`.
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: the runtime only then reads and writes trace headers.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Guard {
    provider: SdkTracerProvider,
}

impl Drop for Guard {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("traces: the last spans could not be exported: {e}");
        }
    }
}

/// The OTLP endpoint URL for traces: `endpoint` with `/v1/traces` appended unless it already
/// names that path (the rule of `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The layer that exports the crate's debug spans, and the guard that flushes it; `None` when
/// `tracing.otlp_endpoint` is empty.
pub fn layer<S>(
    settings: &TracingSettings,
    delivery: &str,
) -> anyhow::Result<Option<(impl tracing_subscriber::Layer<S>, Guard)>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let Some(endpoint) = &settings.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces_url(endpoint))
        .with_protocol(match settings.protocol {
            TraceProtocol::Protobuf => Protocol::HttpBinary,
            TraceProtocol::Json => Protocol::HttpJson,
        })
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| anyhow::anyhow!("tracing.otlp_endpoint {endpoint:?}: {e}"))?;
    // Exported every second in batches; a full queue drops spans, never blocks a decision.
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(16_384)
                .with_max_export_batch_size(2_048)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION").to_string(),
        ))
        .with_attribute(KeyValue::new(
            "credit_sentinel.delivery",
            delivery.to_string(),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        // A batch is sampled at this ratio; a record whose input carries a sampled upstream
        // context is traced whatever the ratio.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sample_ratio,
        ))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("credit-sentinel");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_threads(false)
        .with_location(false)
        .with_tracked_inactivity(false)
        .with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("credit_sentinel", tracing::Level::DEBUG),
        );
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some((layer, Guard { provider })))
}

struct ReadHeaders<'a>(&'a BorrowedHeaders);

impl Extractor for ReadHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct WriteHeaders(Vec<(&'static str, String)>);

impl Injector for WriteHeaders {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((key, value));
    }
}

/// Makes `span` continue the trace an input record's headers carry (a valid `traceparent`),
/// linked to the span it would otherwise belong to (its batch). Nothing without one.
pub fn continue_from(span: &tracing::Span, headers: Option<&BorrowedHeaders>) {
    use opentelemetry::trace::TraceContextExt;
    let Some(headers) = headers else {
        return;
    };
    let upstream = TraceContextPropagator::new().extract(&ReadHeaders(headers));
    if !upstream.span().span_context().is_valid() {
        return;
    }
    let batch = tracing::Span::current().context();
    if span.set_parent(upstream).is_ok() {
        span.add_link(batch.span().span_context().clone());
    }
}

/// The trace-context headers of `span`, for a record it produces (`None` when it is not
/// exported).
pub fn headers_of(span: &tracing::Span) -> Option<OwnedHeaders> {
    use opentelemetry::trace::TraceContextExt;
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = WriteHeaders(Vec::with_capacity(2));
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let mut headers = OwnedHeaders::new_with_capacity(carrier.0.len());
    for (key, value) in &carrier.0 {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_str()),
        });
    }
    Some(headers)
}

/// The trace-context headers of an input record, copied (the repartition stage passes them on).
pub fn copy_context(from: Option<&BorrowedHeaders>, mut to: OwnedHeaders) -> OwnedHeaders {
    let Some(from) = from else {
        return to;
    };
    for h in from.iter() {
        if h.key == TRACEPARENT || h.key == TRACESTATE {
            to = to.insert(Header {
                key: h.key,
                value: h.value,
            });
        }
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            traces_url("http://127.0.0.1:4318"),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
    }
}
