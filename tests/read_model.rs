//! Readers off the decision loop (issue 20): the HTTP API and `/metrics` read the published
//! read model, never the state the decision loop holds. A reader that holds the model for as
//! long as it likes delays no decision (the publish is put off and catches up), and while a
//! batch's commit is stuck (its outputs' broker is down, the producer flush waits) `/metrics`,
//! `/readyz` and the API answer at once with the last committed state. Before the read model,
//! both waited on the one lock the loop held across the batch and its Kafka I/O.

mod common;

use common::broker::*;
use common::http_get::get_within;
use credit_sentinel::config::{Delivery, Role, Token};
use credit_sentinel::http;
use credit_sentinel::runtime::{self, Options, Stats};
use rdkafka::mocking::MockCoordinator;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const VIEWER: &str = "viewer-secret-0123456789";

fn order(n: usize, at: &str) -> String {
    json!({"event_id": format!("o-{n}"), "type": "order.placed", "occurred_at": at,
        "customer_id": "C-1", "order_id": format!("O-{n}"), "amount": "10.00", "currency": "EUR"})
    .to_string()
}

#[test]
fn a_slow_reader_delays_no_decision_and_a_stuck_commit_blocks_no_reader() {
    // Two brokers: the decisions topic led by broker 2, everything else (inputs, changelog,
    // the group's coordinator) by broker 1, so that taking broker 2 down stalls a batch in its
    // output flush while input is still read.
    let (cluster, mut settings) = cluster_of(2, Delivery::AtLeastOnce);
    let t = settings.kafka.topics.clone();
    for topic in t.all() {
        let leader = if topic == t.decisions.as_str() { 2 } else { 1 };
        for p in 0..PARTITIONS {
            cluster
                .partition_leader(topic, p, Some(leader))
                .expect("leader");
        }
    }
    cluster
        .coordinator(MockCoordinator::Group(settings.kafka.group_id.clone()), 1)
        .expect("coordinator");
    cluster
        .coordinator(
            MockCoordinator::Group(format!("{}-restore", settings.kafka.group_id)),
            1,
        )
        .expect("coordinator");
    settings.http.listen = "127.0.0.1:0".parse().expect("addr");
    settings.http.tokens = vec![Token {
        name: "vera".into(),
        role: Role::Viewer,
        secret: VIEWER.into(),
    }];
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let at = credit_sentinel::model::Timestamp(now_us)
        .plus_days(-1)
        .to_rfc3339();
    send(
        &settings,
        &[
            json!({"event_id": "p-1", "type": "profile.customer", "occurred_at": at,
            "customer_id": "C-1", "credit_limit": "100000.00", "currency": "EUR"})
            .to_string(),
        ],
    );
    let shutdown = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    let options = Options::served();
    let state = options.state.clone().expect("state");
    let app = http::app_state(
        Arc::new(settings.clone()),
        state.clone(),
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
    let orders_of_c1 = || {
        state.read(|engines| {
            engines
                .iter()
                .find_map(|e| e.account("C-1"))
                .map(|a| a.orders().len())
        })
    };
    wait_for("the profile published", Duration::from_secs(60), || {
        orders_of_c1().is_some()
    });

    // 1. A reader that holds the read model: decisions go on, the publish waits for it.
    let holding = Arc::new(AtomicBool::new(true));
    let entered = Arc::new(AtomicBool::new(false));
    let reader = {
        let (state, holding, entered) = (state.clone(), Arc::clone(&holding), Arc::clone(&entered));
        std::thread::spawn(move || {
            state.read(|_| {
                entered.store(true, Ordering::SeqCst);
                while holding.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            })
        })
    };
    wait_for("the reader on the model", Duration::from_secs(10), || {
        entered.load(Ordering::SeqCst)
    });
    let (_, deferred_before) = state.publishes();
    let lines: Vec<String> = (0..20).map(|n| order(n, &at)).collect();
    send(&settings, &lines);
    wait_for(
        "20 decisions while a reader holds the model",
        Duration::from_secs(60),
        || read_topic(&settings, &t.decisions).len() == 20,
    );
    let (_, deferred) = state.publishes();
    assert!(
        deferred > deferred_before,
        "the publish was put off for the reader"
    );
    holding.store(false, Ordering::SeqCst);
    reader.join().expect("reader");
    wait_for(
        "the read model to catch up",
        Duration::from_secs(30),
        || orders_of_c1() == Some(20),
    );

    // 2. A commit stuck in its output flush: readers answer at once, from committed state.
    let batches = stats.batches.load(Ordering::SeqCst);
    let events = stats.events.load(Ordering::SeqCst);
    cluster.broker_down(2).expect("broker down");
    send(&settings, &[order(20, &at)]);
    wait_for("the order applied", Duration::from_secs(30), || {
        stats.events.load(Ordering::SeqCst) > events
    });
    for path in ["/metrics", "/readyz", "/v1/customers/C-1"] {
        let answer = get_within(addr, path, Some(VIEWER), Duration::from_secs(5));
        assert!(
            matches!(answer, Some((200, _))),
            "{path} answers during the stuck commit: {answer:?}"
        );
    }
    assert_eq!(orders_of_c1(), Some(20), "readers see committed state only");
    assert_eq!(
        stats.batches.load(Ordering::SeqCst),
        batches,
        "the commit was still stuck while they answered"
    );
    cluster.broker_up(2).expect("broker up");
    wait_for("the stuck order decided", Duration::from_secs(120), || {
        read_topic(&settings, &t.decisions).len() >= 21
    });
    wait_for("the read model to show it", Duration::from_secs(30), || {
        orders_of_c1() == Some(21)
    });
    shutdown.store(true, Ordering::Relaxed);
    join_within(runtime, ENGINE_STOPS_WITHIN, "the engine's shutdown").expect("clean exit");
    server.thread.join().expect("http thread");
}
