//! What on-call watches (issue 25), against a running engine on the embedded broker: consumer
//! lag per input partition rises while an admin has paused consumption and falls back to zero
//! once it resumes, with nothing decided meanwhile and nothing skipped afterwards; the pause is
//! admin-only and visible in `/readyz` and `credit_sentinel_paused`; the build, the commit
//! steps' latencies and the process are in `/metrics`.

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
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let at = credit_sentinel::model::Timestamp(now_us)
        .plus_days(-1)
        .to_rfc3339();
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
    runtime.join().expect("runtime thread").expect("runtime");
}
