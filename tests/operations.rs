//! What on-call watches (issue 25), against a running engine on the embedded broker: consumer
//! lag per input partition rises while an admin has paused consumption and falls back to zero
//! once it resumes, with nothing decided meanwhile and nothing skipped afterwards; the pause is
//! admin-only and visible in `/readyz` and `credit_sentinel_paused`; the build, the commit
//! steps' latencies and the process are in `/metrics`. And traces: an engine process exporting
//! to a stand-in OTLP collector follows a record from its input offset through its batch's
//! commit steps to the `traceparent` header of the decision it produced.

mod common;

use common::broker::*;
use common::http_get::{get_within, post_within};
use credit_sentinel::config::{Delivery, Role, Token};
use credit_sentinel::http;
use credit_sentinel::runtime::{self, Options, Stats};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-secret-0123456789";
const VIEWER: &str = "viewer-secret-0123456789";

fn order(n: usize, at: &str) -> String {
    json!({"event_id": format!("o-{n}"), "type": "order.placed", "occurred_at": at,
        "customer_id": format!("C-{}", n % 7), "order_id": format!("O-{n}"),
        "amount": "10.00", "currency": "EUR"})
    .to_string()
}

/// A day before now, as an event's `occurred_at`.
fn yesterday() -> String {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    credit_sentinel::model::Timestamp(now_us)
        .plus_days(-1)
        .to_rfc3339()
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    get_within(addr, path, Some(VIEWER), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("GET {path} answered"))
}

/// The sum of a metric's samples whose label set contains `labels` (e.g. `topic="x"`).
fn sum_of(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn ready(addr: SocketAddr) -> Value {
    serde_json::from_str(&get(addr, "/readyz").1).expect("readyz json")
}

#[test]
fn lag_rises_while_consumption_is_paused_and_falls_when_it_resumes() {
    let (_cluster, mut settings) = cluster(Delivery::ExactlyOnce);
    settings.http.listen = "127.0.0.1:0".parse().expect("addr");
    settings.http.tokens = vec![
        Token {
            name: "ada".into(),
            role: Role::Admin,
            secret: ADMIN.into(),
        },
        Token {
            name: "vera".into(),
            role: Role::Viewer,
            secret: VIEWER.into(),
        },
    ];
    let t = settings.kafka.topics.clone();
    let at = yesterday();
    let shutdown = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let options = Options::served();
    let app = http::app_state(
        Arc::new(settings.clone()),
        options.state.clone().expect("state"),
        options.metrics.clone().expect("metrics"),
        Arc::clone(&stats),
        options.feed.clone(),
    )
    .expect("app");
    let server = http::spawn(app, Arc::clone(&shutdown)).expect("server");
    let addr = server.addr;
    let runtime = {
        let (s, sh, st) = (settings.clone(), Arc::clone(&shutdown), Arc::clone(&stats));
        std::thread::spawn(move || runtime::run(s, sh, st, options))
    };
    wait_for("the engine ready", Duration::from_secs(60), || {
        get_within(addr, "/readyz", None, Duration::from_secs(5)).is_some_and(|(s, _)| s == 200)
    });
    let first: Vec<String> = (0..10).map(|n| order(n, &at)).collect();
    send(&settings, &first);
    wait_for("10 decisions", Duration::from_secs(60), || {
        read_topic(&settings, &t.decisions).len() == 10
    });
    let lag = |m: &str| sum_of(m, "credit_sentinel_consumer_lag_messages", &t.orders);
    wait_for("no lag", Duration::from_secs(30), || {
        lag(&get(addr, "/metrics").1) == 0.0
    });

    // Only an admin pauses, with a note.
    let note = json!({"note": "broker maintenance"}).to_string();
    let within = Duration::from_secs(10);
    let (status, body) =
        post_within(addr, "/v1/admin/pause", Some(VIEWER), &note, within).expect("answer");
    assert_eq!(status, 403, "a viewer cannot pause: {body}");
    let (status, body) =
        post_within(addr, "/v1/admin/pause", Some(ADMIN), "{}", within).expect("answer");
    assert_eq!(status, 400, "a pause needs a note: {body}");
    let (status, body) =
        post_within(addr, "/v1/admin/pause", Some(ADMIN), &note, within).expect("answer");
    assert_eq!(status, 202, "{body}");
    wait_for("/readyz to say paused", Duration::from_secs(10), || {
        ready(addr)["paused"] == json!(true)
    });
    let (status, _) = get(addr, "/readyz");
    assert_eq!(status, 200, "a paused instance still serves reads");

    let more: Vec<String> = (10..40).map(|n| order(n, &at)).collect();
    send(&settings, &more);
    wait_for(
        "the lag to show the 30 orders sent while paused",
        Duration::from_secs(30),
        || lag(&get(addr, "/metrics").1) == 30.0,
    );
    let m = get(addr, "/metrics").1;
    assert_eq!(sum_of(&m, "credit_sentinel_paused", ""), 1.0);
    // Several seconds paused: nothing was decided meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        read_topic(&settings, &t.decisions).len(),
        10,
        "nothing is decided while paused"
    );
    assert_eq!(
        lag(&get(addr, "/metrics").1),
        30.0,
        "the lag stays while paused"
    );

    let (status, body) =
        post_within(addr, "/v1/admin/resume", Some(ADMIN), &note, within).expect("answer");
    assert_eq!(status, 202, "{body}");
    wait_for(
        "every order decided after the resume",
        Duration::from_secs(60),
        || read_topic(&settings, &t.decisions).len() == 40,
    );
    wait_for("the lag back to 0", Duration::from_secs(30), || {
        lag(&get(addr, "/metrics").1) == 0.0
    });
    assert_eq!(ready(addr)["paused"], json!(false));
    let decided: std::collections::BTreeSet<String> = read_topic(&settings, &t.decisions)
        .iter()
        .map(|d| {
            let v: Value = serde_json::from_str(d).expect("decision");
            v["order_id"].as_str().expect("order_id").to_string()
        })
        .collect();
    assert_eq!(decided.len(), 40, "each order decided once, none skipped");

    // What else on-call reads off /metrics.
    let m = get(addr, "/metrics").1;
    assert_eq!(sum_of(&m, "credit_sentinel_paused", ""), 0.0);
    assert_eq!(
        sum_of(
            &m,
            "credit_sentinel_build_info",
            "delivery=\"exactly_once\""
        ),
        1.0,
        "build info:\n{m}"
    );
    assert!(m.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));
    for step in ["outputs", "checkpoints"] {
        assert!(
            sum_of(
                &m,
                "credit_sentinel_flush_duration_seconds_count",
                &format!("step=\"{step}\"")
            ) > 0.0,
            "{step} flushes timed"
        );
    }
    assert!(sum_of(&m, "credit_sentinel_commit_duration_seconds_count", "") > 0.0);
    assert!(sum_of(&m, "process_resident_memory_bytes", "") > 0.0);
    assert!(sum_of(&m, "process_cpu_seconds_total", "") > 0.0);

    shutdown.store(true, std::sync::atomic::Ordering::SeqCst);
    join_within(runtime, ENGINE_STOPS_WITHIN, "the engine's shutdown").expect("runtime");
}

/// One exported span, flattened from OTLP (ids as hex).
#[derive(Debug, Clone)]
struct SpanSeen {
    trace: String,
    id: String,
    parent: String,
    name: String,
    attributes: std::collections::BTreeMap<String, String>,
    links: Vec<(String, String)>,
    events: Vec<String>,
    service: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn any_value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(V::StringValue(s)) => s.clone(),
        Some(V::IntValue(i)) => i.to_string(),
        Some(V::BoolValue(b)) => b.to_string(),
        Some(V::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// A stand-in OTLP/HTTP collector on 127.0.0.1: it answers every request 200 and keeps the
/// spans of every `POST /v1/traces` (protobuf), and the paths it was asked for.
struct Collector {
    url: String,
    spans: Arc<std::sync::Mutex<Vec<SpanSeen>>>,
    paths: Arc<std::sync::Mutex<Vec<String>>>,
}

fn collector() -> Collector {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("collector port");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let spans = Arc::new(std::sync::Mutex::new(Vec::new()));
    let paths = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, p) = (Arc::clone(&spans), Arc::clone(&paths));
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (s, p) = (Arc::clone(&s), Arc::clone(&p));
            std::thread::spawn(move || {
                let Ok(mut out) = conn.try_clone() else {
                    return;
                };
                let mut reader = BufReader::new(conn);
                loop {
                    let mut request = String::new();
                    if reader.read_line(&mut request).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            if k.eq_ignore_ascii_case("content-length") {
                                length = v.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let path = request.split(' ').nth(1).unwrap_or("").to_string();
                    p.lock().expect("paths").push(path);
                    if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
                        let mut seen = s.lock().expect("spans");
                        for rs in &req.resource_spans {
                            let service = rs
                                .resource
                                .iter()
                                .flat_map(|r| &r.attributes)
                                .find(|a| a.key == "service.name")
                                .map(|a| any_value(&a.value))
                                .unwrap_or_default();
                            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                                seen.push(SpanSeen {
                                    trace: hex(&span.trace_id),
                                    id: hex(&span.span_id),
                                    parent: hex(&span.parent_span_id),
                                    name: span.name.clone(),
                                    attributes: span
                                        .attributes
                                        .iter()
                                        .map(|a| (a.key.clone(), any_value(&a.value)))
                                        .collect(),
                                    links: span
                                        .links
                                        .iter()
                                        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                        .collect(),
                                    events: span.events.iter().map(|e| e.name.clone()).collect(),
                                    service: service.clone(),
                                });
                            }
                        }
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if out.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Collector { url, spans, paths }
}

/// The exported `record` span of the order `order_id`.
fn record_span<'a>(spans: &'a [SpanSeen], order_id: &str, what: &str) -> &'a SpanSeen {
    spans
        .iter()
        .find(|s| {
            s.name == "record" && s.attributes.get("order_id").map(String::as_str) == Some(order_id)
        })
        .unwrap_or_else(|| panic!("{what}: {spans:#?}"))
}

/// Produces `line` to the orders topic keyed by its customer, with `headers`; returns its
/// partition and offset.
fn produce_with_headers(
    settings: &credit_sentinel::config::Settings,
    line: &str,
    customer: &str,
    headers: &[(&str, &str)],
) -> (i32, i64) {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = runtime::producer_config(&settings.kafka)
        .create()
        .expect("producer");
    let mut h = OwnedHeaders::new();
    for (key, value) in headers {
        h = h.insert(Header {
            key,
            value: Some(*value),
        });
    }
    let record = FutureRecord::to(&settings.kafka.topics.orders)
        .key(customer)
        .payload(line)
        .headers(h);
    let delivery = producer.send(record, Duration::from_secs(10));
    let delivered = futures_executor_block_on(delivery).expect("delivered");
    (delivered.partition, delivered.offset)
}

/// Drives a future to completion on this thread (the test has no async runtime).
fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Every decision on the decisions topic (read committed) by order id, with its headers.
fn decisions_with_headers(
    settings: &credit_sentinel::config::Settings,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    let topic = &settings.kafka.topics.decisions;
    let mut cfg = runtime::client_config(&settings.kafka);
    cfg.set("group.id", "test-trace-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    let mut out = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        let (low, high) = watermarks(&cfg, topic, p);
        if high <= low {
            continue;
        }
        let reader: BaseConsumer = cfg.create().expect("reader");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Offset(low))
            .expect("tpl");
        reader.assign(&tpl).expect("assign");
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            let at_end = matches!(
                reader.position().ok().and_then(|pos| pos
                    .find_partition(topic, p)
                    .map(|e| e.offset())),
                Some(rdkafka::Offset::Offset(o)) if o >= high
            );
            if at_end {
                break;
            }
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(200)) {
                let d: Value =
                    serde_json::from_slice(m.payload().unwrap_or_default()).expect("decision");
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(d["order_id"].as_str().unwrap_or("").to_string(), headers);
            }
        }
    }
    out
}

/// An engine process with these environment settings.
fn traced_engine(
    settings: &credit_sentinel::config::Settings,
    vars: &[(&str, String)],
) -> common::live::ChildEngine {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::live::child_with(settings, "exactly_once", None, &vars)
}

/// Stops an engine with SIGTERM (it finishes its batch and exports its last spans).
fn terminate(mut engine: common::live::ChildEngine) {
    common::live::sigterm_within(&mut engine, Duration::from_secs(30));
}

#[test]
fn decision_traces_follow_a_record_from_its_offset_to_the_decision_it_produced() {
    let (_cluster, settings) = cluster(Delivery::ExactlyOnce);
    let collector = collector();
    let at = yesterday();
    let order = |id: &str, customer: &str| {
        json!({"event_id": format!("e-{id}"), "type": "order.placed", "occurred_at": at,
            "customer_id": customer, "order_id": id, "amount": "10.00", "currency": "EUR"})
        .to_string()
    };
    let decided = |id: &str| {
        let id = id.to_string();
        let s = settings.clone();
        move || decisions_with_headers(&s).contains_key(&id)
    };
    let traces = |ratio: &'static str| {
        vec![
            (
                "CREDIT_SENTINEL__TRACING__OTLP_ENDPOINT",
                collector.url.clone(),
            ),
            ("CREDIT_SENTINEL__TRACING__SAMPLE_RATIO", ratio.to_string()),
        ]
    };

    // Off by default: no spans exported, no trace headers written.
    let engine = common::live::child(&settings, "exactly_once");
    produce_with_headers(&settings, &order("O-OFF", "C-1"), "C-1", &[]);
    wait_for("O-OFF decided", Duration::from_secs(60), decided("O-OFF"));
    terminate(engine);
    assert!(
        !decisions_with_headers(&settings)["O-OFF"].contains_key("traceparent"),
        "no trace headers unless traces are on"
    );
    assert!(collector.paths.lock().expect("paths").is_empty());

    // Sampling nothing of its own, the engine still traces a record whose producer sampled
    // it: the record's span continues the producer's trace, linked to its batch, and the
    // decision carries the record span's context. An unsampled record's decision says so.
    let upstream_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let upstream_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{upstream_trace}-{upstream_span}-01");
    let vars = traces("0");
    let engine = traced_engine(&settings, &vars);
    let (partition, offset) = produce_with_headers(
        &settings,
        &order("O-UP", "C-2"),
        "C-2",
        &[("traceparent", &traceparent)],
    );
    produce_with_headers(&settings, &order("O-UNSAMPLED", "C-2"), "C-2", &[]);
    wait_for("O-UP decided", Duration::from_secs(60), decided("O-UP"));
    wait_for(
        "O-UNSAMPLED decided",
        Duration::from_secs(60),
        decided("O-UNSAMPLED"),
    );
    terminate(engine);
    let spans = collector.spans.lock().expect("spans").clone();
    let record = record_span(
        &spans,
        "O-UP",
        "the upstream-sampled record's span is exported",
    );
    assert_eq!(
        record.trace, upstream_trace,
        "it continues the producer's trace"
    );
    assert_eq!(record.parent, upstream_span);
    assert_eq!(record.service, "credit-sentinel");
    assert_eq!(
        record.attributes["messaging.destination.name"],
        settings.kafka.topics.orders
    );
    assert_eq!(
        record.attributes["messaging.destination.partition.id"],
        partition.to_string()
    );
    assert_eq!(
        record.attributes["messaging.kafka.offset"],
        offset.to_string()
    );
    assert_eq!(record.attributes["customer_id"], "C-2");
    assert_eq!(record.attributes["outcome"], "applied");
    assert_eq!(record.links.len(), 1, "linked to its batch: {record:?}");
    assert_ne!(record.links[0].0, upstream_trace);
    assert!(record.events.iter().any(|e| e == "produced"), "{record:?}");
    assert!(
        !spans
            .iter()
            .any(|s| s.attributes.get("order_id").map(String::as_str) == Some("O-UNSAMPLED")),
        "at ratio 0 nothing else is exported"
    );
    let seen = decisions_with_headers(&settings);
    assert_eq!(
        seen["O-UP"]["traceparent"],
        format!("00-{upstream_trace}-{}-01", record.id),
        "the decision carries the context of the span that made it"
    );
    assert!(
        seen["O-UNSAMPLED"]["traceparent"].ends_with("-00"),
        "an unsampled record's decision says it was not sampled: {:?}",
        seen["O-UNSAMPLED"]
    );

    // Every batch sampled: the record's span is a child of its batch, whose commit steps
    // are spans of the same trace.
    let vars = traces("1");
    let engine = traced_engine(&settings, &vars);
    let (_, offset) = produce_with_headers(&settings, &order("O-ALL", "C-3"), "C-3", &[]);
    wait_for("O-ALL decided", Duration::from_secs(60), decided("O-ALL"));
    terminate(engine);
    let spans = collector.spans.lock().expect("spans").clone();
    let record = record_span(&spans, "O-ALL", "the record's span is exported");
    assert_eq!(
        record.attributes["messaging.kafka.offset"],
        offset.to_string()
    );
    let in_trace = |name: &str| -> Vec<&SpanSeen> {
        spans
            .iter()
            .filter(|s| s.trace == record.trace && s.name == name)
            .collect()
    };
    let batch = in_trace("batch");
    assert_eq!(
        batch.len(),
        1,
        "one batch span in the record's trace: {spans:#?}"
    );
    let batch = batch[0];
    assert_eq!(batch.attributes["delivery"], "exactly_once");
    let process = in_trace("process");
    assert_eq!(process.len(), 1);
    assert_eq!(process[0].parent, batch.id);
    assert_eq!(
        record.parent, process[0].id,
        "the record is processed in its batch"
    );
    let commit = in_trace("commit");
    assert_eq!(commit.len(), 1);
    assert_eq!(commit[0].parent, batch.id);
    let steps: Vec<&str> = in_trace("flush")
        .iter()
        .filter(|s| s.parent == commit[0].id)
        .map(|s| s.attributes["step"].as_str())
        .collect();
    assert!(
        steps.contains(&"outputs") && steps.contains(&"checkpoints"),
        "the commit's steps are spans: {steps:?}"
    );
    assert_eq!(in_trace("commit_transaction").len(), 1);
    assert_eq!(
        decisions_with_headers(&settings)["O-ALL"]["traceparent"],
        format!("00-{}-{}-01", record.trace, record.id)
    );
    assert!(
        collector
            .paths
            .lock()
            .expect("paths")
            .iter()
            .all(|p| p == "/v1/traces"),
        "spans go to /v1/traces"
    );
}
