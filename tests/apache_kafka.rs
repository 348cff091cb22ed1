//! The engine on Apache Kafka itself (KRaft, started by the test from the broker's Maven jars;
//! see `common::apache_kafka`): real transactions, `read_committed`, transactional offset
//! commits, consumer-group fencing and log compaction, none of which the embedded mock cluster
//! honours. On one node: SIGKILL at random points (some with a transaction open) with no
//! decision or alert seen twice by a read_committed reader in exactly_once and none lost in
//! at_least_once, a second instance joining and leaving, a paused instance that loses its
//! partitions and must not write after the new owner took over, and a restore from a changelog
//! that compaction has cleaned; hostile input (a poison pill, a record keyed by another customer, forged
//! commands) and an output the broker refuses. On three nodes (replication factor 3, `min.insync.replicas` 2,
//! `acks=all`): the partition leaders' broker, the consumer group's coordinator and the active
//! controller killed mid-stream, the engine deciding while the node is down. Every test ends with what the engine wrote equal to a per-partition
//! replay of its input, and the latest changelog snapshot of every account equal to replay's.
//!
//! The tests run one at a time (each starts its own cluster): two JVM brokers and several
//! engine processes at once would share two cores.

mod common;

use common::apache_kafka::ApacheKafka;
use common::broker::*;
use common::live::*;
use credit_sentinel::config::{self, Delivery, Settings};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Engine settings for `cluster`, and the contract's topics created on it (three partitions
/// each; the changelog compacted, with `changelog` topic settings added).
fn settings_on(
    cluster: &ApacheKafka,
    delivery: Delivery,
    name: &str,
    changelog: &[(&str, &str)],
) -> Settings {
    let mut s =
        config::load_with_env(None, Vec::<(String, String)>::new()).expect("default settings");
    s.kafka.brokers = cluster.bootstrap();
    s.kafka.delivery = delivery;
    s.kafka.tick_ms = 0; // event time only, as in replay
    s.kafka.transactional_id = format!("apache-{name}-{}", std::process::id());
    s.kafka.group_id = format!("apache-{name}-{}", std::process::id());
    for (k, v) in [
        // A killed member is noticed after 6 s, not the default 45 s.
        ("session.timeout.ms", "6000"),
        ("heartbeat.interval.ms", "1000"),
        ("acks", "all"),
    ] {
        s.kafka.properties.insert(k.into(), v.into());
    }
    let t = s.kafka.topics.clone();
    let replicated: &[(&str, &str)] = if cluster.nodes.len() >= 3 {
        &[("min.insync.replicas", "2")]
    } else {
        &[]
    };
    let plain: Vec<&str> = t
        .all()
        .into_iter()
        .filter(|n| *n != t.changelog.as_str())
        .collect();
    cluster.create_topics(&plain, PARTITIONS, replicated);
    let mut compacted = vec![("cleanup.policy", "compact")];
    compacted.extend_from_slice(replicated);
    compacted.extend_from_slice(changelog);
    cluster.create_topics(&[t.changelog.as_str()], PARTITIONS, &compacted);
    s
}

#[test]
fn exactly_once_sigkill_at_random_points_no_decision_or_alert_seen_twice() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "eos-kill", &[]);
    killed_mid_stream_then_restarted(settings, "exactly_once", 4, 1, Repeats::Forbidden);
}

#[test]
fn at_least_once_sigkill_at_random_points_loses_nothing_and_repeats_only_identically() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::AtLeastOnce, "alo-kill", &[]);
    killed_mid_stream_then_restarted(settings, "at_least_once", 4, 0, Repeats::Identical);
}

/// Waits until at least `n` more decisions are committed than `from`.
fn wait_for_progress(settings: &Settings, what: &str, from: i64, n: i64) -> i64 {
    wait_for(what, Duration::from_secs(180), || {
        decided(settings) >= from + n
    });
    decided(settings)
}

#[test]
fn exactly_once_a_second_instance_joins_and_leaves_mid_stream() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "eos-rebalance", &[]);
    let (groups, rest) = groups_applied(&settings, "exactly_once", traffic_lines(40, 60, 29));
    // In three parts: the first with one instance, the second once another has joined and
    // restored its partitions, the third after it left: it joins and leaves mid-stream.
    let parts: Vec<&[String]> = rest.chunks(rest.len().div_ceil(3)).collect();
    produce_on_orders(&settings, parts[0]);
    let one = child_instance(&settings, "exactly_once", Some(1));
    let at = wait_for_progress(&settings, "the first part", 0, 20);
    let two = child_instance(&settings, "exactly_once", Some(2));
    let two_pid = two.0.id();
    wait_for(
        "the second instance to restore",
        Duration::from_secs(120),
        || !restored_by(&settings, two_pid).is_empty(),
    );
    produce_on_orders(&settings, parts[1]);
    let first_part = 60;
    let with_two = wait_for_progress(&settings, "progress with two instances", at, first_part / 6);
    let took = restored_by(&settings, two_pid);
    sigterm(two);
    let left_at = decided(&settings);
    produce_on_orders(&settings, parts[2]);
    let want = expected(&settings, &groups);
    eprintln!(
        "the second instance joined after {at} decisions, took partitions {took:?}, left after {left_at} (progress with two: {with_two}; {} in all)",
        want.want_d.len()
    );
    assert!(
        !took.is_empty(),
        "the second instance was given partitions and restored them"
    );
    wait_until_done(&settings, &want);
    sigterm(one);
    assert_equals_replay(&settings, &want, Repeats::Forbidden);
}

#[test]
fn a_paused_instance_that_lost_its_partitions_writes_nothing_after_the_new_owner_took_over() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let mut settings = settings_on(&cluster, Delivery::ExactlyOnce, "eos-zombie", &[]);
    // The coordinator aborts a silent instance's transaction after 10 s (not the engine's
    // default 60 s), so the new owner's restore, which reads the changelog read_committed, is
    // not held at the zombie's open transaction for a minute.
    for (k, v) in [
        ("transaction.timeout.ms", "10000"),
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        ("message.timeout.ms", "9000"),
    ] {
        settings.kafka.properties.insert(k.into(), v.into());
    }
    let (groups, rest) = groups_applied(&settings, "exactly_once", traffic_lines(40, 60, 37));
    // The first half arrives paced while the instance is paused (it is busy, a transaction
    // open); the second half once the new owner took over.
    let (first, second) = rest.split_at(rest.len() / 2);
    let total = 300;

    let mut zombie = child_instance(&settings, "exactly_once", Some(1));
    let feeding = produce_paced(&settings, first, 150);
    let at = wait_for_progress(&settings, "a third of the stream", 0, total / 3);
    // Paused with produced records in an open transaction: when it wakes, it holds a batch it
    // believes it may commit.
    let caught = stop_in(&zombie, &settings, Some(Phase::OpenTransaction), 300);
    assert_eq!(
        caught,
        Phase::OpenTransaction,
        "the instance was paused with a transaction open"
    );
    feeding.join().expect("producer");
    produce_on_orders(&settings, second);
    let want = expected(&settings, &groups);
    let paused_at = decided(&settings);
    let owner = child_instance(&settings, "exactly_once", Some(2));
    let owner_pid = owner.0.id();
    // The new owner is given every partition once the paused member's session times out,
    // restores them (after the paused transaction is aborted) and decides on.
    let took_over = wait_for_progress(
        &settings,
        "the new owner deciding",
        paused_at,
        (total / 10).max(5),
    );
    let took = restored_by(&settings, owner_pid);
    assert_eq!(
        took,
        (0..PARTITIONS).collect::<Vec<_>>(),
        "the new owner restored every partition"
    );
    // The zombie wakes up in the middle of its batch.
    zombie.signal("-CONT");
    let woke = Instant::now();
    let mut zombie_exit = None;
    while woke.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(status)) = zombie.0.try_wait() {
            zombie_exit = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "paused after {at} decisions ({paused_at} committed), the new owner had {took_over} when the zombie woke; zombie exit: {zombie_exit:?}"
    );
    wait_until_done(&settings, &want);
    sigterm(owner);
    if zombie_exit.is_none() {
        // Still alive: it rejoined the group as an ordinary member (its batch aborted).
        sigterm(zombie);
    }
    // Had the zombie committed its batch, its decisions would be seen twice (the new owner
    // decided the same input from the checkpoint).
    assert_equals_replay(&settings, &want, Repeats::Forbidden);
}

/// SIGTERM does not wait for a restore. A new owner's restore reads the changelog
/// read_committed up to a fence it wrote, so it is held at a dead instance's open transaction
/// until the coordinator aborts it (the engine's transaction timeout, 60 s): SIGTERM while it
/// is held stops the restore at once, the partitions are not taken, and the engine exits 0.
/// Had the restore been waited for, the engine would have taken the partitions and never
/// logged that it did not.
#[test]
fn sigterm_during_a_restore_held_at_an_open_transaction_stops_it() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "eos-term-restore", &[]);
    let (_groups, rest) = groups_applied(&settings, "exactly_once", traffic_lines(40, 60, 41));
    let mut dead = child_instance(&settings, "exactly_once", Some(1));
    let feeding = produce_paced(&settings, &rest, 150);
    wait_for_progress(&settings, "the first decisions", 0, 20);
    // Stopped with snapshots or checkpoints in its open transaction: the changelog itself is
    // held (a transaction with only outputs in it would not hold a restore).
    let changelog = &settings.kafka.topics.changelog;
    let held = (0..100).any(|_| {
        let caught = stop_in(&dead, &settings, Some(Phase::OpenTransaction), 300);
        let held = caught == Phase::OpenTransaction && open_transaction_on(&settings, &[changelog]);
        if !held {
            dead.signal("-CONT");
        }
        held
    });
    assert!(
        held,
        "the instance was stopped with the changelog in an open transaction"
    );
    dead.0.kill().expect("SIGKILL");
    dead.0.wait().expect("reaped");
    feeding.join().expect("producer");

    // Another instance (its own transactional id, so nothing fences the dead one's
    // transaction) is given the partitions once the dead member's session times out.
    let mut owner = child_instance(&settings, "exactly_once", Some(2));
    // "partitions={0, 1, 2}", not an empty first assignment's "partitions={}".
    let some_partitions = |l: &str, what: &str| {
        l.split_once(what)
            .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
    };
    wait_for(
        "the new owner to start restoring",
        Duration::from_secs(120),
        || {
            owner.1.has_line(|l| {
                l.contains("partitions assigned; restoring") && some_partitions(l, "partitions={")
            })
        },
    );
    let status = sigterm_within(&mut owner, STOP_WITHIN);
    assert!(status.success(), "exit 0 after SIGTERM, got {status}");
    assert!(
        owner.1.contains("shutting down: not taking partitions"),
        "the restore was stopped, not waited for; the engine's log ends:\n{}",
        owner.1.tail(30)
    );
    assert!(
        !owner
            .1
            .has_line(|l| some_partitions(l, "partitions owned after the assignment now={")),
        "no partition was taken; the engine's log ends:\n{}",
        owner.1.tail(30)
    );
}

/// The log cleaner's progress per changelog partition (`cleaner-offset-checkpoint`): the
/// offset up to which compaction has cleaned it.
fn cleaned_up_to(cluster: &ApacheKafka, topic: &str) -> Vec<i64> {
    let text = std::fs::read_to_string(cluster.nodes[0].data().join("cleaner-offset-checkpoint"))
        .unwrap_or_default();
    (0..PARTITIONS)
        .map(|p| {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    (f.next() == Some(topic) && f.next() == Some(&p.to_string()))
                        .then(|| f.next()?.parse::<i64>().ok())
                        .flatten()
                })
                .next_back()
                .unwrap_or(0)
        })
        .collect()
}

#[test]
fn a_restore_from_a_changelog_cleaned_by_compaction_equals_replay() {
    let _alone = alone();
    let mut cluster = ApacheKafka::single();
    // Segments roll every 300 ms, so the log cleaner has closed segments to compact while the
    // test runs.
    let settings = settings_on(
        &cluster,
        Delivery::ExactlyOnce,
        "eos-compaction",
        &[
            ("segment.ms", "300"),
            ("min.cleanable.dirty.ratio", "0.01"),
            ("min.compaction.lag.ms", "0"),
            ("delete.retention.ms", "1000"),
        ],
    );
    let t = settings.kafka.topics.clone();
    let (groups, rest) = groups_first(traffic_lines(40, 60, 41));
    produce_on_orders(&settings, &groups);
    let engine = child(&settings, "exactly_once");
    wait_for_groups(&settings, &groups);
    let (first, second) = rest.split_at(rest.len() / 2);
    produce_on_orders(&settings, first);
    let first_ends: std::collections::BTreeMap<i32, i64> = read_partitions(&settings, &t.orders)
        .into_iter()
        .map(|(p, m)| (p, m.len() as i64))
        .collect();
    wait_for("the first half consumed", Duration::from_secs(300), || {
        checkpointed(&settings, &t.orders) == first_ends
    });
    sigterm(engine);
    // A record after the idle time rolls the last segment; then the cleaner has every segment
    // but the active one to compact.
    std::thread::sleep(Duration::from_millis(500));
    wait_for(
        "compaction of every changelog partition",
        Duration::from_secs(120),
        || cleaned_up_to(&cluster, &t.changelog).iter().all(|o| *o > 0),
    );
    let cleaned = cleaned_up_to(&cluster, &t.changelog);
    // In the cleaned range each key is left once: the older snapshots of an account are gone.
    let mut removed = 0i64;
    for (p, records) in read_records(&settings, &t.changelog, "read_uncommitted") {
        let upto = cleaned[p as usize];
        let mut keys = std::collections::BTreeMap::<String, usize>::new();
        let mut present = 0i64;
        for (_, key, _) in records.iter().filter(|(o, _, _)| *o < upto) {
            present += 1;
            *keys.entry(key.clone().unwrap_or_default()).or_default() += 1;
        }
        let repeated: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).take(3).collect();
        assert!(
            repeated.is_empty(),
            "compacted partition {p} keeps one record per key below {upto}: {repeated:?}"
        );
        removed += upto - present;
    }
    eprintln!("compaction cleaned the changelog up to {cleaned:?}; {removed} offsets below them hold no record any more (old snapshots, transaction markers)");
    // The broker is stopped cleanly (SIGTERM: a controlled shutdown) and started again on its
    // log directory: the restore below reads the compacted log as the restarted broker serves it.
    let started = Instant::now();
    cluster.terminate(1);
    cluster.restart(1);
    eprintln!(
        "broker stopped with SIGTERM and serving again after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        removed > 0,
        "compaction removed records below the cleaner's checkpoint ({removed})"
    );

    produce_on_orders(&settings, second);
    let want = expected(&settings, &groups);
    let engine = child(&settings, "exactly_once");
    wait_until_done(&settings, &want);
    sigterm(engine);
    assert_equals_replay(&settings, &want, Repeats::Forbidden);
}

/// The broker coordinating the engine's consumer group: the leader of the `__consumer_offsets`
/// partition the group id hashes to (Kafka's `Utils.abs(groupId.hashCode()) % 50`).
fn group_coordinator(cluster: &ApacheKafka, settings: &Settings) -> Option<u32> {
    let hash = settings
        .kafka
        .group_id
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    let partition = (hash & 0x7fff_ffff) % 50;
    cluster.leader_of("__consumer_offsets", partition)
}

/// The broker that leads most partitions of the engine's topics.
fn busiest_leader(cluster: &ApacheKafka, settings: &Settings) -> u32 {
    let mut led = std::collections::BTreeMap::<u32, usize>::new();
    for topic in settings.kafka.topics.all() {
        for p in 0..PARTITIONS {
            if let Some(l) = cluster.leader_of(topic, p) {
                *led.entry(l).or_default() += 1;
            }
        }
    }
    led.into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(id, _)| id)
        .expect("leaders")
}

/// Three nodes; `fail` takes one node down mid-stream (returns which). Input is produced in
/// three parts: the first before the failure, the second while the node is down (all of it
/// must be decided then, within 120 s: the engine keeps consuming, deciding and committing on
/// two brokers), the last once the node is back. Then nothing is lost or repeated and the
/// state equals replay.
///
/// (Earlier builds asked for "a sixth more decisions in 90 s" while the node was down without
/// producing any input then: when the engine had already decided nearly all of the first part
/// before the kill, that was more than the input held, and the test reported a stall that was
/// its own arithmetic: `node 1 down after 329 decisions; 362 decided` of the 362 there were.)
fn three_nodes_one_fails_mid_stream(
    name: &str,
    fail: impl FnOnce(&mut ApacheKafka, &Settings) -> u32,
) {
    let mut cluster = ApacheKafka::three();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, name, &[]);
    let (groups, rest) = groups_applied(&settings, "exactly_once", traffic_lines(40, 60, 43));
    let (first, tail) = rest.split_at(rest.len() * 2 / 5);
    let (during, last) = tail.split_at(tail.len() / 2);
    produce_on_orders(&settings, first);
    let first_part = expected(&settings, &groups).want_d.len() as i64;
    let engine = child(&settings, "exactly_once");
    let at = wait_for_progress(&settings, "a third of the first part", 0, first_part / 3);
    let down = fail(&mut cluster, &settings);
    let started = Instant::now();
    produce_on_orders(&settings, during);
    let while_down = expected(&settings, &groups).want_d.len() as i64;
    assert!(while_down > first_part, "the second part holds orders");
    // The stall of issue 17 (about one run in four before its fix, when the killed node
    // coordinated the consumer group: librdkafka's send_offsets_to_transaction waited for
    // ever) costs the engine at most its 35 s deadline and a producer now.
    while decided(&settings) < while_down && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(250));
    }
    let progressed = decided(&settings);
    eprintln!(
        "node {down} down after {at} decisions (of {first_part} in the first part); of the second part, produced while it was down: {progressed} of {while_down} decided after {:.1} s{}; memory {:?} MiB",
        started.elapsed().as_secs_f64(),
        if progressed < while_down {
            " (STALLED: not all of it in 120 s while the node was down)"
        } else {
            ""
        },
        cluster.memory_mib()
    );
    assert_eq!(
        progressed, while_down,
        "the engine kept deciding while node {down} was down"
    );
    cluster.restart(down);
    produce_on_orders(&settings, last);
    let want = expected(&settings, &groups);
    wait_until_done(&settings, &want);
    sigterm(engine);
    assert_equals_replay(&settings, &want, Repeats::Forbidden);
}

#[test]
fn three_nodes_the_partition_leaders_broker_killed_mid_stream() {
    let _alone = alone();
    three_nodes_one_fails_mid_stream("eos-leader-killed", |cluster, settings| {
        let leader = busiest_leader(cluster, settings);
        let decisions_leader = cluster.leader_of(&settings.kafka.topics.decisions, 0);
        cluster.kill(leader);
        // The partitions it led move to the other two replicas.
        wait_for("new leaders", Duration::from_secs(60), || {
            settings.kafka.topics.all().iter().all(|topic| {
                (0..PARTITIONS).all(|p| cluster.leader_of(topic, p).is_some_and(|l| l != leader))
            })
        });
        eprintln!("killed node {leader} (it led decisions/0: {decisions_leader:?})");
        leader
    });
}

// The stall of issue 17 was seen when the killed node was the group's coordinator: this kills
// exactly that node.
#[test]
fn three_nodes_the_group_coordinators_broker_killed_mid_stream() {
    let _alone = alone();
    three_nodes_one_fails_mid_stream("eos-coordinator-killed", |cluster, settings| {
        let coordinator = group_coordinator(cluster, settings).expect("a group coordinator");
        cluster.kill(coordinator);
        eprintln!("killed node {coordinator}, the consumer group's coordinator");
        coordinator
    });
}

#[test]
fn three_nodes_the_active_controller_killed_mid_stream() {
    let _alone = alone();
    three_nodes_one_fails_mid_stream("eos-controller-killed", |cluster, _| {
        let (controller, epoch) = cluster.controller().expect("an active controller");
        cluster.kill(controller);
        wait_for("a new active controller", Duration::from_secs(60), || {
            cluster
                .controller()
                .is_some_and(|(c, e)| c != controller && e > epoch)
        });
        eprintln!(
            "killed the active controller {controller} (epoch {epoch}); now {:?}",
            cluster.controller()
        );
        controller
    });
}

#[test]
fn a_record_keyed_by_something_else_than_its_customer_is_dead_lettered_key_mismatch() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "key-mismatch", &[]);
    let t = settings.kafka.topics.clone();
    let at = "2026-03-02T08:00:00Z";
    let profile =
        serde_json::json!({"event_id": "p-1", "type": "profile.customer", "occurred_at": at,
        "customer_id": "ACME", "credit_limit": "1000.00", "currency": "EUR"})
        .to_string();
    let order = |id: &str| {
        serde_json::json!({"event_id": format!("e-{id}"), "type": "order.placed", "occurred_at": at,
            "customer_id": "ACME", "order_id": id, "amount": "10.00", "currency": "EUR"})
        .to_string()
    };
    let (wrong, unkeyed, right) = (order("O-WRONG"), order("O-UNKEYED"), order("O-RIGHT"));
    let mut cfg = credit_sentinel::runtime::producer_config(&settings.kafka);
    cfg.set("linger.ms", "0");
    let producer: rdkafka::producer::BaseProducer = cfg.create().expect("producer");
    use rdkafka::producer::{BaseRecord, Producer};
    for (topic, key, line) in [
        (&t.profiles, Some("ACME"), &profile),
        (&t.orders, Some("SOMEONE-ELSE"), &wrong),
        (&t.orders, None, &unkeyed),
        (&t.orders, Some("ACME"), &right),
    ] {
        let mut r = BaseRecord::<str, str>::to(topic).payload(line);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r).map_err(|(e, _)| e).expect("send");
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
    let engine = child(&settings, "exactly_once");
    wait_for(
        "the decision and two dead-letters",
        Duration::from_secs(120),
        || {
            read_topic(&settings, &t.decisions).len() == 1
                && read_topic(&settings, &t.dead_letter).len() == 2
        },
    );
    sigterm(engine);
    let decisions = read_topic(&settings, &t.decisions);
    assert!(decisions[0].contains("\"O-RIGHT\""), "{decisions:?}");
    let dead: Vec<serde_json::Value> = read_topic(&settings, &t.dead_letter)
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    for d in &dead {
        assert_eq!(d["error"], "KEY_MISMATCH", "{d}");
        assert_eq!(d["customer_id"], "ACME", "{d}");
    }
    let details: Vec<&str> = dead.iter().filter_map(|d| d["detail"].as_str()).collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("\"SOMEONE-ELSE\" is not the event's customer_id \"ACME\""))
            && details.iter().any(|d| d.contains("has no key")),
        "{details:?}"
    );
    // ACME's account exists in one changelog partition only.
    let holders: Vec<i32> = read_partitions(&settings, &t.changelog)
        .into_iter()
        .filter(|(_, records)| records.iter().any(|(k, _)| k.as_deref() == Some("a/ACME")))
        .map(|(p, _)| p)
        .collect();
    assert_eq!(holders.len(), 1, "{holders:?}");
}

/// A poison pill: invalid JSON as large as the input topic accepts. Its dead-letter used to
/// embed it whole (JSON-escaped, over the producer's 1 MB message limit): the produce failed,
/// the batch rolled back and was retried for ever, and every partition of the instance stopped.
/// Now the dead-letter carries the first 64 KiB with the length and a hash, and the events
/// around the pill are decided.
#[test]
fn an_input_as_large_as_the_topic_accepts_is_dead_lettered_and_processing_goes_on() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "poison-pill", &[]);
    let t = settings.kafka.topics.clone();
    let at = "2026-03-02T08:00:00Z";
    let event = |id: &str, body: serde_json::Value| {
        let mut v = serde_json::json!({"event_id": id, "occurred_at": at, "customer_id": "ACME"});
        for (k, x) in body.as_object().expect("object") {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let profile = event(
        "p-1",
        serde_json::json!({"type": "profile.customer", "credit_limit": "1000.00", "currency": "EUR"}),
    );
    let order = |id: &str| {
        event(
            &format!("e-{id}"),
            serde_json::json!({"type": "order.placed", "order_id": id, "amount": "10.00", "currency": "EUR"}),
        )
    };
    // Quotes and backslashes: each doubles when the dead-letter escapes it as JSON.
    let pill = |n: usize| format!("{{\"event_id\":\"{}", "\"\\".repeat(n / 2));
    let (issue_size, topic_max) = (pill(1_000_371), pill(1_048_000));
    let mut cfg = credit_sentinel::runtime::producer_config(&settings.kafka);
    cfg.set("linger.ms", "0")
        .set("message.max.bytes", "2000000");
    let producer: rdkafka::producer::BaseProducer = cfg.create().expect("producer");
    use rdkafka::producer::{BaseRecord, Producer};
    let before = order("O-BEFORE");
    let after = order("O-AFTER");
    for (topic, line) in [
        (&t.profiles, &profile),
        (&t.orders, &before),
        (&t.orders, &issue_size),
        (&t.orders, &topic_max),
        (&t.orders, &after),
    ] {
        producer
            .send(BaseRecord::<str, str>::to(topic).key("ACME").payload(line))
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("the topic accepts them");
    let engine = child(&settings, "exactly_once");
    wait_for("both orders decided", Duration::from_secs(120), || {
        read_topic(&settings, &t.decisions).len() == 2
    });
    sigterm(engine);
    let dead: Vec<serde_json::Value> = read_topic(&settings, &t.dead_letter)
        .iter()
        .map(|d| serde_json::from_str(d).expect("json"))
        .collect();
    assert_eq!(dead.len(), 2, "one dead-letter per pill");
    for d in &dead {
        assert_eq!(d["error"], "MALFORMED_JSON", "{}", d["detail"]);
        assert_eq!(d["original_truncated"], true);
        let bytes = d["original_bytes"].as_u64().expect("original_bytes");
        assert!(bytes >= 1_000_000, "{bytes}");
        assert_eq!(d["original"].as_str().map(str::len), Some(65_536));
        assert_eq!(d["original_sha256"].as_str().map(str::len), Some(64));
        assert_eq!(d["topic"], t.orders.as_str());
        assert!(d["offset"].as_i64().is_some());
    }
}

/// Forged commands (issue 19): with `kafka.command_keys_file` set, a release command that
/// anyone could produce to `credit.commands` (unsigned, or signed with a made-up key, or a
/// signed one with its actor changed) is dead-lettered `INVALID_FIELD` (signature) and the hold
/// stays; the same command signed with a key of the file (as the HTTP API signs it) releases it.
#[test]
fn commands_not_signed_with_a_key_of_the_file_are_dead_lettered() {
    use credit_sentinel::signing::CommandKeys;
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let keys_file = std::env::temp_dir().join(format!("cs-command-keys-{}", std::process::id()));
    std::fs::write(&keys_file, "api-2026:a-long-shared-secret-for-tests\n").expect("keys");
    let mut settings = settings_on(&cluster, Delivery::ExactlyOnce, "signed-commands", &[]);
    settings.raw.kafka.command_keys_file = Some(keys_file.display().to_string());
    let t = settings.kafka.topics.clone();
    let at = "2026-03-02T08:00:00Z";
    let profile =
        serde_json::json!({"event_id": "p-1", "type": "profile.customer", "occurred_at": at,
        "customer_id": "ACME", "credit_limit": "100.00", "currency": "EUR"})
        .to_string();
    let order = serde_json::json!({"event_id": "o-1", "type": "order.placed", "occurred_at": at,
        "customer_id": "ACME", "order_id": "O-1", "amount": "500.00", "currency": "EUR"})
    .to_string();
    let release = |id: &str, actor: &str| {
        serde_json::json!({"event_id": id, "type": "command.release_hold", "occurred_at": at,
            "customer_id": "ACME", "order_id": "O-1", "actor": actor, "note": "paid by wire"})
    };
    let signed_by = |keys: &CommandKeys, mut v: serde_json::Value| {
        let event =
            credit_sentinel::codec::decode_event(v.to_string().as_bytes()).expect("command");
        v["signature"] = serde_json::json!(keys.sign(&event).expect("signature"));
        v
    };
    let ours = CommandKeys::parse("api-2026:a-long-shared-secret-for-tests").expect("keys");
    let made_up = CommandKeys::parse("api-2026:guessed-by-an-attacker-0000").expect("keys");
    let unsigned = release("c-1", "mallory").to_string();
    let wrong_key = signed_by(&made_up, release("c-2", "mallory")).to_string();
    let mut altered = signed_by(&ours, release("c-3", "alice"));
    altered["actor"] = serde_json::json!("mallory");
    let altered = altered.to_string();
    send(&settings, &[profile, order]);
    let engine = child(&settings, "exactly_once");
    wait_for("the hold", Duration::from_secs(120), || {
        read_topic(&settings, &t.decisions).len() == 1
    });
    send(&settings, &[unsigned, wrong_key, altered]);
    wait_for("three dead-letters", Duration::from_secs(60), || {
        read_topic(&settings, &t.dead_letter).len() == 3
    });
    assert_eq!(read_topic(&settings, &t.decisions).len(), 1, "still held");
    for d in read_topic(&settings, &t.dead_letter) {
        let v: serde_json::Value = serde_json::from_str(&d).expect("json");
        assert_eq!(v["error"], "INVALID_FIELD", "{v}");
        assert!(
            v["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("signature: ")),
            "{v}"
        );
    }
    send(
        &settings,
        &[signed_by(&ours, release("c-4", "alice")).to_string()],
    );
    wait_for("the release", Duration::from_secs(60), || {
        read_topic(&settings, &t.decisions)
            .iter()
            .any(|d| d.contains("\"released\"") && d.contains("\"c-4\""))
    });
    sigterm(engine);
    let _ = std::fs::remove_file(&keys_file);
}

/// GET on the engine's HTTP listener `addr`: (status, body), or `None` while nothing answers.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    common::http_get::get_within(addr.parse().ok()?, path, None, Duration::from_secs(10))
}

/// The sum of a metric's samples whose labels contain `label` (e.g. `topic="credit.orders"`).
fn metric_sum(exposition: &str, name: &str, label: &str) -> i64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// Issue 19: an output the broker refuses (here every decision is larger than the decisions
/// topic's `max.message.bytes`; the transaction markers still fit) stalls the instance: a decision the order pipeline waits for is
/// never skipped. The stall must be visible: `/readyz` answers 503 `"stuck": true`, the
/// failed-batches gauge counts, and the lag of the orders partition grows (measured from the
/// committed checkpoint, not from a fetch position that runs ahead on every retry). Once the
/// topic accepts the records again the instance carries on by itself, and every order is
/// decided exactly once.
#[test]
fn an_output_the_broker_refuses_stalls_visibly_and_carries_on_once_it_is_writable() {
    let _alone = alone();
    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "stuck", &[]);
    let t = settings.kafka.topics.clone();
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").to_string()
    };
    let event = |id: String, body: serde_json::Value| {
        let mut v = serde_json::json!({"event_id": id, "occurred_at": "2026-03-02T08:00:00Z",
            "customer_id": "ACME"});
        for (k, x) in body.as_object().expect("object") {
            v[k] = x.clone();
        }
        v.to_string()
    };
    let order = |n: usize| {
        event(
            format!("e-{n}"),
            serde_json::json!({"type": "order.placed", "order_id": format!("O-{n}"),
                "amount": "10.00", "currency": "EUR"}),
        )
    };
    let producer: rdkafka::producer::BaseProducer =
        credit_sentinel::runtime::producer_config(&settings.kafka)
            .set("linger.ms", "0")
            .create()
            .expect("producer");
    use rdkafka::producer::{BaseRecord, Producer};
    let send = |topic: &str, line: &str| {
        producer
            .send(BaseRecord::<str, str>::to(topic).key("ACME").payload(line))
            .map_err(|(e, _)| e)
            .expect("send");
        producer.flush(Duration::from_secs(30)).expect("flush");
    };
    send(
        &t.profiles,
        &event(
            "p-1".into(),
            serde_json::json!({"type": "profile.customer", "credit_limit": "100000.00",
                "currency": "EUR"}),
        ),
    );
    for n in 0..5 {
        send(&t.orders, &order(n));
    }
    let engine = child_with(
        &settings,
        "exactly_once",
        None,
        &[
            ("CREDIT_SENTINEL__HTTP__ENABLED", "true"),
            ("CREDIT_SENTINEL__HTTP__LISTEN", &addr),
        ],
    );
    wait_for("the first orders decided", Duration::from_secs(120), || {
        read_topic(&settings, &t.decisions).len() == 5
    });
    cluster.alter_topic(&t.decisions, &[("max.message.bytes", "256")]);
    for n in 5..15 {
        send(&t.orders, &order(n));
    }
    wait_for(
        "/readyz to report the stall",
        Duration::from_secs(120),
        || matches!(http_get(&addr, "/readyz"), Some((503, body)) if body.contains("\"stuck\":true")),
    );
    let (status, exposition) = http_get(&addr, "/metrics").expect("/metrics answers");
    assert_eq!(status, 200);
    let failed = metric_sum(&exposition, "credit_sentinel_failed_batches_in_a_row", "");
    assert!(failed >= 3, "failed batches in a row: {failed}");
    wait_for(
        "the lag to show the stalled orders",
        Duration::from_secs(30),
        || {
            http_get(&addr, "/metrics").is_some_and(|(_, m)| {
                let lag = metric_sum(
                    &m,
                    "credit_sentinel_consumer_lag_messages",
                    "topic=\"credit.orders\"",
                );
                lag >= 10
            })
        },
    );
    assert_eq!(
        read_topic(&settings, &t.decisions).len(),
        5,
        "nothing committed while the decisions cannot be written"
    );
    cluster.alter_topic(&t.decisions, &[("max.message.bytes", "1048588")]);
    wait_for("every order decided", Duration::from_secs(120), || {
        read_topic(&settings, &t.decisions).len() >= 15
    });
    wait_for("/readyz to recover", Duration::from_secs(60), || {
        matches!(http_get(&addr, "/readyz"), Some((200, _)))
    });
    wait_for("the lag to drain", Duration::from_secs(30), || {
        http_get(&addr, "/metrics").is_some_and(|(_, m)| {
            metric_sum(
                &m,
                "credit_sentinel_consumer_lag_messages",
                "topic=\"credit.orders\"",
            ) == 0
        })
    });
    sigterm(engine);
    let decisions = read_topic(&settings, &t.decisions);
    assert_eq!(decisions.len(), 15, "no decision written twice");
    assert_eq!(
        distinct_ids(&decisions, "order_id").len(),
        15,
        "every order decided"
    );
}

/// Starts `cmd` with its output captured.
fn start_client(cmd: &mut std::process::Command) -> std::process::Child {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Runs `cmd` to its end with a deadline: (exit code, stdout, stderr).
fn run_client(cmd: &mut std::process::Command, within: Duration) -> (i32, String, String) {
    finish_client(start_client(cmd), within)
}

/// Waits for a started client with a deadline (killed after it): (exit code, stdout, stderr).
fn finish_client(mut child: std::process::Child, within: Duration) -> (i32, String, String) {
    use std::io::Read;
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("a client example did not finish within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (mut out, mut err) = (String::new(), String::new());
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let code = child.wait().expect("exit").code().unwrap_or(-1);
    (code, out, err)
}

/// The client examples an order pipeline and a risk team start from (examples/, issue 25), run
/// as their README says against Apache Kafka with the engine running: the Python program
/// (confluent-kafka) places an order within the limit and gets `approved`, the Java program
/// (the Apache Kafka client, built with Maven) places one beyond it and gets `held` with
/// CREDIT_LIMIT_EXCEEDED, each waiting by `order_id` on a read_committed reader; the alert
/// consumer (a consumer group, read_committed) sees the utilization alert the first order
/// raised.
#[test]
#[cfg_attr(
    no_confluent_kafka,
    ignore = "Python's confluent-kafka not installed: python3 -m pip install confluent-kafka (.ci/run does)"
)]
fn the_python_and_java_client_examples_place_orders_and_follow_alerts() {
    let _alone = alone();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let java = root.join("examples/java");
    let (code, out, err) = run_client(
        std::process::Command::new("mvn")
            .args(["-B", "-q", "package", "-f"])
            .arg(java.join("pom.xml")),
        Duration::from_secs(600),
    );
    assert_eq!(code, 0, "the Java example builds with Maven:\n{out}{err}");

    let cluster = ApacheKafka::single();
    let settings = settings_on(&cluster, Delivery::ExactlyOnce, "clients", &[]);
    let t = settings.kafka.topics.clone();
    let yesterday = credit_sentinel::model::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros() as i64,
    )
    .plus_days(-1)
    .to_rfc3339();
    let profile = serde_json::json!({"event_id": "p-ACME", "type": "profile.customer",
        "occurred_at": yesterday, "customer_id": "ACME", "credit_limit": "1000.00",
        "currency": "EUR"})
    .to_string();
    let mut cfg = credit_sentinel::runtime::producer_config(&settings.kafka);
    cfg.set("linger.ms", "0");
    let producer: rdkafka::producer::BaseProducer = cfg.create().expect("producer");
    use rdkafka::producer::{BaseRecord, Producer};
    producer
        .send(BaseRecord::to(&t.profiles).key("ACME").payload(&profile))
        .map_err(|(e, _)| e)
        .expect("send");
    producer.flush(Duration::from_secs(30)).expect("flush");
    let engine = child(&settings, "exactly_once");
    wait_for("the profile applied", Duration::from_secs(120), || {
        read_topic(&settings, &t.changelog)
            .iter()
            .any(|r| r.contains("ACME"))
    });
    let bootstrap = cluster.bootstrap();
    // The arguments both place_order programs take, the same way.
    let order_args = |order_id: &str, amount: &str| -> Vec<String> {
        [
            ("--bootstrap", bootstrap.as_str()),
            ("--customer", "ACME"),
            ("--order-id", order_id),
            ("--amount", amount),
            ("--currency", "EUR"),
            ("--timeout", "60"),
            ("--orders-topic", t.orders.as_str()),
            ("--decisions-topic", t.decisions.as_str()),
        ]
        .iter()
        .flat_map(|(k, v)| [k.to_string(), v.to_string()])
        .collect()
    };
    // The exit code and the decision printed, as the program's doc says.
    let decided =
        |(code, out, err): (i32, String, String), want_code: i32, order_id: &str, status: &str| {
            assert_eq!(code, want_code, "{status} (exit {want_code}):\n{out}{err}");
            let d: serde_json::Value =
                serde_json::from_str(out.trim()).expect("the decision as JSON");
            assert_eq!(
                (d["order_id"].as_str(), d["status"].as_str()),
                (Some(order_id), Some(status)),
                "{d}"
            );
            d
        };
    let alerts = start_client(
        std::process::Command::new("python3")
            .arg(root.join("examples/python/alerts_consumer.py"))
            .args(["--bootstrap", &bootstrap, "--group", "risk-team-test"])
            .args([
                "--topic",
                &t.alerts,
                "--from-beginning",
                "--max",
                "1",
                "--timeout",
                "90",
            ]),
    );

    let python = run_client(
        std::process::Command::new("python3")
            .arg(root.join("examples/python/place_order.py"))
            .args(order_args("SO-PY-1", "800.00")),
        Duration::from_secs(90),
    );
    decided(python, 0, "SO-PY-1", "approved");

    let classpath = format!(
        "{}:{}/*",
        java.join("target/classes").display(),
        java.join("target/dependency").display()
    );
    let java = run_client(
        std::process::Command::new("java")
            .args([
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
                "-cp",
                &classpath,
            ])
            .arg("example.PlaceOrder")
            .args(order_args("SO-JAVA-1", "5000.00")),
        Duration::from_secs(120),
    );
    let d = decided(java, 1, "SO-JAVA-1", "held");
    assert!(
        d["reasons"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["code"] == "CREDIT_LIMIT_EXCEEDED")),
        "{d}"
    );

    let (code, out, err) = finish_client(alerts, Duration::from_secs(120));
    assert_eq!(code, 0, "the alert consumer saw an alert:\n{out}{err}");
    assert!(
        out.contains("UTILIZATION_THRESHOLD") && out.contains("ACME"),
        "{out}{err}"
    );
    sigterm(engine);
}
