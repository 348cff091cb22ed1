//! Memory per account and restore at scale: in process, and over Kafka from a changelog.

use super::*;

/// Memory and in-process restore at scale.
#[derive(Clone, Debug)]
pub struct Memory {
    pub accounts: usize,
    /// Growth of resident memory while the accounts were built, per account.
    pub bytes_per_account: f64,
    pub total_bytes: u64,
    pub snapshot_bytes: usize,
    /// Decoding every snapshot and restoring it into an empty engine.
    pub restore_s: f64,
    /// What answering `GET /metrics` costs with these accounts on a read replica (the state
    /// gauges read from its index, then the exposition rendered), best and worst of three.
    pub scrape_s: (f64, f64),
    /// The same answered by walking every account (what a scrape cost before the index, and
    /// what it costs on an engine without one): the baseline, best and worst of three.
    pub scrape_walk_s: (f64, f64),
    /// The same with no accounts, best of three.
    pub scrape_empty_s: f64,
    /// The first page of `GET /v1/holds` over these accounts on a read replica once every
    /// hundredth holds an order (the work the handler does once it holds the read model),
    /// best and worst of three; and how many orders were held.
    pub holds_page_s: (f64, f64),
    pub held: usize,
    /// The same page walking every account (the baseline), best and worst of three.
    pub holds_page_walk_s: (f64, f64),
    /// The same page with no accounts, best of three.
    pub holds_page_empty_s: f64,
    /// Publishing to readers, on the decision loop: a full read replica of every account,
    /// index included (what an assignment costs), and the commit that held those orders
    /// (the accounts it changed copied, their index entries updated), with how many changed.
    pub replica_full_s: f64,
    /// Growth of resident memory while the replica was made, per account.
    pub replica_bytes_per_account: f64,
    /// Of which the index (built again alone, timed).
    pub index_full_s: f64,
    pub publish_s: f64,
    /// Of which the index (those accounts' entries updated again alone, timed).
    pub reindex_s: f64,
    pub published_accounts: usize,
}

/// Best and worst of three timed runs of `f`, in seconds.
fn best_and_worst_of_three(mut f: impl FnMut()) -> (f64, f64) {
    let times: Vec<f64> = (0..3)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    let best = times.iter().copied().fold(f64::INFINITY, f64::min);
    let worst = times.iter().copied().fold(0.0, f64::max);
    (best, worst)
}

/// Times three `/metrics` answers over `engine` (the work the handler does once it holds the
/// read model: `refresh_state` and `render`); best and worst.
fn scrape_times(engine: &credit_sentinel::Engine) -> (f64, f64) {
    let metrics = credit_sentinel::metrics::Metrics::new();
    best_and_worst_of_three(|| {
        metrics.refresh_state(std::iter::once(engine));
        std::hint::black_box(metrics.render());
    })
}

/// Times three first pages of `GET /v1/holds` over `engine`; best and worst.
fn holds_page_times(engine: &credit_sentinel::Engine) -> (f64, f64) {
    best_and_worst_of_three(|| {
        std::hint::black_box(credit_sentinel::http::first_holds_page(&[engine]));
    })
}

/// Places an order over the limit for every hundredth customer (a held order each, after
/// memory was measured); how many were held.
fn hold_some(
    engine: &mut credit_sentinel::Engine,
    out: &mut Vec<credit_sentinel::model::Output>,
    accounts: usize,
) -> Result<usize> {
    let mut held = 0;
    for c in (0..accounts).step_by(100) {
        let l = format!(
            r#"{{"event_id":"h{c}","type":"order.placed","occurred_at":"2026-01-05T00:01:00Z","customer_id":"C{c}","order_id":"BIG-{c}","amount":"5000000.00","currency":"EUR"}}"#
        );
        let e = credit_sentinel::codec::decode_event(l.as_bytes())
            .map_err(|r| anyhow::anyhow!("{l}: {}", r.detail))?;
        out.clear();
        engine.apply(&e, out);
        held += out
            .iter()
            .filter(|o| matches!(o, credit_sentinel::model::Output::Decision(d) if d.status == credit_sentinel::model::DecisionStatus::Held))
            .count();
    }
    Ok(held)
}

/// Applies the events that give customer `C{c}` an account with 5 open items (a profile, 5
/// orders of which 2 shipped: 3 open orders and 2 receivables), as `benches/state.rs` builds
/// them for restore.
fn build_account(
    engine: &mut credit_sentinel::Engine,
    out: &mut Vec<credit_sentinel::model::Output>,
    c: usize,
) -> Result<()> {
    use credit_sentinel::model::Timestamp;
    let start = Timestamp::parse_rfc3339("2026-01-05T00:00:00Z").context("date")?;
    let t = |s: i64| Timestamp(start.0 + s * 1_000_000).to_string();
    let mut lines = vec![format!(
        r#"{{"event_id":"p{c}","type":"profile.customer","occurred_at":"{}","customer_id":"C{c}","credit_limit":"1000000.00","currency":"EUR","grade":"B","payment_terms_days":30}}"#,
        t(0)
    )];
    for k in 0..5 {
        lines.push(format!(
            r#"{{"event_id":"o{c}-{k}","type":"order.placed","occurred_at":"{}","customer_id":"C{c}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#,
            t(10 + k)
        ));
    }
    for k in 0..2 {
        lines.push(format!(
            r#"{{"event_id":"s{c}-{k}","type":"shipment.shipped","occurred_at":"{}","customer_id":"C{c}","shipment_id":"DN-{c}-{k}","order_id":"SO-{c}-{k}","amount":"100.00","currency":"EUR"}}"#,
            t(20 + k)
        ));
    }
    for l in lines {
        let e = credit_sentinel::codec::decode_event(l.as_bytes())
            .map_err(|r| anyhow::anyhow!("{l}: {}", r.detail))?;
        out.clear();
        engine.apply(&e, out);
    }
    Ok(())
}

/// Builds `accounts` accounts with 5 open items each (3 open orders, 2 receivables, as
/// `benches/state.rs` does for restore), measures the growth of resident memory, then encodes
/// every account's snapshot and times decoding and restoring them all into an empty engine.
pub fn memory(accounts: usize) -> Result<Memory> {
    use credit_sentinel::model::Output;
    use credit_sentinel::state::{self, StateRecord};
    use credit_sentinel::{Engine, Policy};
    let before = super::super::soak::resident_bytes().context("no /proc/self/status")?;
    let mut engine = Engine::new(Policy::default());
    let mut out: Vec<Output> = Vec::new();
    for c in 0..accounts {
        build_account(&mut engine, &mut out, c)?;
        if c % 1000 == 999 {
            // What the runtime does after every batch: the set of changed accounts is emptied.
            drop(engine.take_changed());
        }
    }
    drop(engine.take_changed());
    let after = super::super::soak::resident_bytes().context("no /proc/self/status")?;
    let built = engine.accounts().count();
    anyhow::ensure!(built == accounts, "{built} accounts built, not {accounts}");
    let snapshots: Vec<(String, Vec<u8>)> = engine
        .accounts()
        .filter_map(|a| state::encode_account(&engine, &a.customer_id))
        .collect();
    let snapshot_bytes = snapshots.iter().map(|(k, v)| k.len() + v.len()).sum();
    drop(engine);
    let started = Instant::now();
    let mut engine = Engine::new(Policy::default());
    for (k, v) in &snapshots {
        if let Ok(StateRecord::Account(a)) = state::decode(k, v) {
            engine.restore_account(a);
        }
    }
    let restore_s = started.elapsed().as_secs_f64();
    drop(snapshots);
    anyhow::ensure!(
        engine.accounts().count() == accounts,
        "restore lost accounts"
    );
    // The readers, over the restored accounts (after the restore, so that the second copy
    // a replica is does not weigh on the restore's figure).
    let scrape_walk_s = scrape_times(&engine);
    let scrape_empty_s = scrape_times(&Engine::new(Policy::default())).0;
    let resident = super::super::soak::resident_bytes().context("no /proc/self/status")?;
    let started = Instant::now();
    let mut replica = engine.read_replica();
    let replica_full_s = started.elapsed().as_secs_f64();
    let replica_bytes = super::super::soak::resident_bytes()
        .context("no /proc/self/status")?
        .saturating_sub(resident);
    let started = Instant::now();
    replica.index_for_readers();
    let index_full_s = started.elapsed().as_secs_f64();
    let scrape_s = scrape_times(&replica);
    let held = hold_some(&mut engine, &mut out, accounts)?;
    let (changed, groups) = engine.take_changed();
    let changed: std::collections::BTreeSet<String> = changed.into_iter().collect();
    let groups: std::collections::BTreeSet<String> = groups.into_iter().collect();
    let started = Instant::now();
    engine.update_replica(&mut replica, &changed, &groups);
    let publish_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    replica.reindex_accounts(&changed);
    let reindex_s = started.elapsed().as_secs_f64();
    let holds_page_s = holds_page_times(&replica);
    let holds_page_walk_s = holds_page_times(&engine);
    let holds_page_empty_s = holds_page_times(&Engine::new(Policy::default())).0;
    anyhow::ensure!(
        credit_sentinel::http::first_holds_page(&[&replica])
            == credit_sentinel::http::first_holds_page(&[&engine]),
        "the replica's first page differs from the walk's"
    );
    anyhow::ensure!(
        *replica.state_gauges() == credit_sentinel::engine::read_index::StateGauges::walk(&engine),
        "the replica's state gauges differ from the walk's"
    );
    let total = after.saturating_sub(before);
    Ok(Memory {
        accounts,
        bytes_per_account: total as f64 / accounts as f64,
        total_bytes: total,
        snapshot_bytes,
        restore_s,
        scrape_s,
        scrape_walk_s,
        scrape_empty_s,
        holds_page_s,
        held,
        holds_page_walk_s,
        holds_page_empty_s,
        replica_full_s,
        replica_bytes_per_account: replica_bytes as f64 / accounts as f64,
        index_full_s,
        publish_s,
        reindex_s,
        published_accounts: changed.len(),
    })
}

/// Restore over the embedded broker at scale.
#[derive(Clone, Debug)]
pub struct Restore {
    pub accounts: usize,
    pub partitions: i32,
    pub snapshot_bytes: usize,
    /// The snapshots were written in format 1 (JSON), the baseline.
    pub json_v1: bool,
    /// Writing every snapshot to the changelog (setup, not part of the figure).
    pub write_s: f64,
    /// From the start of the restore (fences written) to every account restored.
    pub restore_s: f64,
    /// Growth of resident memory over the restore, per account (the restored state; the
    /// embedded broker's copy of the changelog was already resident).
    pub bytes_per_account: f64,
}

/// Writes `accounts` account snapshots (5 open items each, as [`memory`] builds them) to a
/// changelog of `partitions` partitions on the embedded broker, then restores all of them
/// through the runtime's own restore path (the one an assignment runs) and times it. With
/// `json_v1` the snapshots are written in format 1 (JSON), which the restore still reads.
pub fn restore_over_kafka(accounts: usize, partitions: i32, json_v1: bool) -> Result<Restore> {
    use credit_sentinel::model::Output;
    use credit_sentinel::{Engine, Policy};
    use rdkafka::producer::BaseRecord;
    // The embedded broker keeps at most 5 MiB per partition: these accounts' snapshots are
    // ~2.2 KB in format 1 (JSON; ~440 bytes in format 2), so at least one partition per
    // ~2,000 accounts (the same rule for both formats, so both runs use the same layout).
    anyhow::ensure!(
        accounts as i64 <= partitions as i64 * 2000,
        "{accounts} snapshots need at least {} changelog partitions on the embedded broker (5 MiB each)",
        accounts.div_ceil(2000)
    );
    // 1,000 template accounts; every snapshot is one of them under a new customer id.
    let mut engine = Engine::new(Policy::default());
    let mut out: Vec<Output> = Vec::new();
    for c in 0..1000 {
        build_account(&mut engine, &mut out, c)?;
    }
    let templates: Vec<credit_sentinel::engine::Account> = (0..1000)
        .filter_map(|c| engine.account(&format!("C{c}")).cloned())
        .collect();
    anyhow::ensure!(templates.len() == 1000, "templates");

    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    let site = Site {
        _cluster: None,
        brokers: cluster.bootstrap_servers(),
        topics: config::load(None)?.kafka.topics,
        extra: Vec::new(),
        external: false,
    };
    let mut s = settings(&site, Delivery::AtLeastOnce, "restore")?;
    s.kafka.properties.remove("fetch.wait.max.ms");
    cluster
        .create_topic(&s.kafka.topics.changelog, partitions, 1)
        .context("cannot create the changelog")?;
    let mut cfg = runtime::client_config(&s.kafka);
    cfg.set("linger.ms", "20")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    let producer: runtime::EngineProducer = cfg.create_with_context(Default::default())?;
    let started = Instant::now();
    let mut snapshot_bytes = 0;
    for i in 0..accounts {
        let mut account = templates[i % templates.len()].clone();
        account.customer_id = format!("C{i}");
        let value = if json_v1 {
            credit_sentinel::state::encode_json_v1(&account)
        } else {
            credit_sentinel::state::encode_account_state(&account)
        };
        let key = credit_sentinel::state::account_key(&account.customer_id);
        snapshot_bytes += key.len() + value.len();
        runtime::send_record(
            &producer,
            BaseRecord::with_opaque_to(&s.kafka.topics.changelog, 0)
                .partition((i % partitions as usize) as i32)
                .key(&key)
                .payload(&value),
        )?;
    }
    runtime::flush_producer(&producer, Duration::from_secs(600))?;
    anyhow::ensure!(producer.context().failed() == 0, "snapshots not written");
    let write_s = started.elapsed().as_secs_f64();
    drop(producer);

    let all: std::collections::BTreeSet<i32> = (0..partitions).collect();
    let before = super::super::soak::resident_bytes().context("no /proc/self/status")?;
    let started = Instant::now();
    let engines = runtime::restore_changelog(&s, &all)?;
    let restore_s = started.elapsed().as_secs_f64();
    let after = super::super::soak::resident_bytes().context("no /proc/self/status")?;
    let restored: usize = engines.iter().map(|e| e.accounts().count()).sum();
    anyhow::ensure!(
        restored == accounts,
        "{restored} accounts restored of {accounts} written (the embedded broker keeps 5 MiB per partition)"
    );
    Ok(Restore {
        accounts,
        partitions,
        snapshot_bytes,
        json_v1,
        write_s,
        restore_s,
        bytes_per_account: after.saturating_sub(before) as f64 / accounts as f64,
    })
}
