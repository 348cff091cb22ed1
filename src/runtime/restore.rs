//! Restore: a partition's accounts rebuilt from its changelog partition, read up to a fence
//! record this restore wrote (not to a reported end offset), decoded on one thread per core,
//! with the checkpoint that says where consumption resumes.

use super::*;

/// The key of a restore fence in changelog partition `p` (compaction keeps the latest).
pub(super) fn fence_key(partition: i32) -> String {
    format!("m/{partition}")
}

/// A value no earlier fence carries: process id, wall time and a counter.
pub(super) fn fence_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes a fence record to each changelog partition of `partitions` and waits for the
/// broker to acknowledge it. Reading a partition up to its own fence reads everything written
/// to it before the restore began, whatever the broker reports as the partition's end (tansu
/// 0.6 reports high watermarks that lag what it serves; a read_committed reader is held at the
/// last stable offset until a dead owner's open transaction is aborted, which is right).
pub(super) fn write_fences(
    k: &KafkaSettings,
    partitions: &BTreeSet<i32>,
    token: &str,
) -> Result<()> {
    let mut cfg = client_config(k);
    cfg.set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .set("message.timeout.ms", "30000");
    let producer: rdkafka::producer::BaseProducer<kafka::Deliveries> = cfg
        .create_with_context(kafka::Deliveries::default())
        .context("cannot create the restore fence producer")?;
    let value =
        serde_json::to_vec(&serde_json::json!({ "v": state::FORMAT_VERSION, "fence": token }))?;
    for p in partitions {
        let key = fence_key(*p);
        producer
            .send(
                BaseRecord::with_opaque_to(&k.topics.changelog, 0)
                    .partition(*p)
                    .key(key.as_bytes())
                    .payload(&value),
            )
            .map_err(|(e, _)| e)
            .context("cannot write a restore fence")?;
    }
    producer
        .flush(Duration::from_secs(30))
        .context("restore fence not acknowledged")?;
    // A fence that failed for good is never read back: waiting for it would stall the restore.
    if producer.context().failed() > 0 {
        anyhow::bail!(
            "restore fence not written: {}",
            producer.context().last_error()
        );
    }
    Ok(())
}

/// A consumer that reads the changelog from the start for a restore (outside the group).
fn changelog_reader(k: &KafkaSettings) -> Result<BaseConsumer<kafka::Quiet>> {
    let mut cfg = client_config(k);
    cfg.set("group.id", format!("{}-restore", k.group_id))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    // A restore is a bulk read: large fetches and a deep prefetch queue instead of librdkafka's
    // defaults (1 MiB per partition, 64 MiB queued), which starve the decoding threads below
    // (docs/performance.md has the figures). Set in `kafka.properties` to override.
    for (key, value) in [
        ("fetch.wait.max.ms", "10"),
        ("max.partition.fetch.bytes", "10485760"),
        ("fetch.max.bytes", "104857600"),
        ("queued.max.messages.kbytes", "524288"),
    ] {
        if !k.properties.contains_key(key) {
            cfg.set(key, value);
        }
    }
    cfg.create_with_context(kafka::Quiet)
        .context("cannot create the changelog reader")
}

/// What a restore read besides the snapshots: the checkpoints, where each was, and how many
/// records it read.
#[derive(Default)]
struct ChangelogRead {
    checkpoints: BTreeMap<i32, Checkpoint>,
    checkpoint_at: BTreeMap<i32, i64>,
    records: u64,
    workers: usize,
}

/// Reads the assigned changelog partitions up to this restore's fence in each: checkpoints
/// into `read`, every snapshot to `take` with the worker that restores its partition. Fails
/// at once when `shutdown` is set (SIGTERM does not wait for a restore).
fn read_to_fences(
    reader: &BaseConsumer<kafka::Quiet>,
    topic: &str,
    partitions: &BTreeSet<i32>,
    token: &str,
    read: &mut ChangelogRead,
    shutdown: &AtomicBool,
    mut take: impl FnMut(usize, (i32, String, Vec<u8>)),
) -> Result<()> {
    let workers = read.workers;

    if partitions.is_empty() {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    reader.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut fenced: BTreeSet<i32> = BTreeSet::new();
    let mut polls = 0u32;
    while fenced.len() < partitions.len() {
        if shutdown.load(Ordering::Relaxed) {
            anyhow::bail!("shut down during the restore");
        }
        polls = polls.wrapping_add(1);
        let polled = reader.poll(Duration::from_millis(500));
        if (polled.is_none() || polls % 256 == 0) && Instant::now() > deadline {
            let waiting: Vec<&i32> = partitions.difference(&fenced).collect();
            anyhow::bail!(
                    "changelog restore did not reach its fence in {topic} partitions {waiting:?} in 600 s"
                );
        }
        let Some(msg) = polled else {
            continue;
        };
        let msg = msg.context("changelog read failed")?;
        let p = msg.partition();
        if fenced.contains(&p) {
            continue;
        }
        read.records += 1;
        let (Some(key), Some(value)) = (msg.key(), msg.payload()) else {
            continue;
        };
        let key = String::from_utf8_lossy(key);
        if key.starts_with("m/") {
            let ours = serde_json::from_slice::<serde_json::Value>(value)
                .is_ok_and(|v| v["fence"] == token);
            if ours {
                fenced.insert(p);
            }
            continue;
        }
        if key.starts_with("c/") {
            match serde_json::from_slice::<Checkpoint>(value) {
                Ok(c) => {
                    read.checkpoint_at.insert(p, msg.offset());
                    read.checkpoints.insert(p, c);
                }
                Err(e) => warn!("ignoring unreadable checkpoint {key}: {e}"),
            }
            continue;
        }
        let w = p.rem_euclid(workers as i32) as usize;
        take(w, (p, key.into_owned(), value.to_vec()));
    }
    Ok(())
}

/// Reads the changelog partitions of `partitions` from the start up to a fence written for this
/// restore and restores each into a fresh engine for that partition; returns the checkpoints
/// found.
pub(super) fn restore_partitions(
    settings: &Settings,
    shared: &mut LoopState,
    partitions: &BTreeSet<i32>,
    stats: &Stats,
    metrics: &Metrics,
    shutdown: &AtomicBool,
) -> Result<BTreeMap<i32, Checkpoint>> {
    let k = &settings.kafka;
    let topic = &k.topics.changelog;
    let token = fence_token();
    write_fences(k, partitions, &token)?;
    let reader = changelog_reader(k)?;
    let mut log = ChangelogRead::default();
    for p in partitions {
        shared.parts.remove(p);
    }
    // Snapshots are decoded and restored by worker threads, each owning the engines of some
    // partitions (decoding and building the state is most of a restore's work); this thread
    // reads the changelog and handles fences and checkpoints.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    log.workers = workers;
    let mut by_worker: Vec<BTreeMap<i32, Engine>> = (0..workers).map(|_| BTreeMap::new()).collect();
    for p in partitions {
        by_worker[p.rem_euclid(workers as i32) as usize]
            .insert(*p, Engine::new(shared.policy.clone()));
    }
    type Chunk = Vec<(i32, String, Vec<u8>)>;
    let read: Result<Vec<RestoreWorker>> = std::thread::scope(|scope| {
        let mut senders = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for engines in by_worker {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Chunk>(16);
            senders.push(tx);
            handles.push(scope.spawn(move || restore_worker(engines, rx)));
        }
        let mut chunks: Vec<Chunk> = vec![Vec::new(); workers];
        const CHUNK: usize = 256;
        let outcome = read_to_fences(
            &reader,
            topic,
            partitions,
            &token,
            &mut log,
            shutdown,
            |w, chunk| {
                chunks[w].push(chunk);
                if chunks[w].len() >= CHUNK {
                    // A worker that stopped (a record it could not decode) says why on join.
                    let _ = senders[w].send(std::mem::take(&mut chunks[w]));
                }
            },
        );
        for (tx, chunk) in senders.into_iter().zip(chunks) {
            if !chunk.is_empty() {
                let _ = tx.send(chunk);
            }
        }
        let done: Result<Vec<RestoreWorker>> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a restore worker panicked"))?
            })
            .collect();
        outcome.and(done)
    });
    Ok(install(shared, read?, log, stats, metrics))
}

/// Puts what a restore read in place: each partition's restored engine, its groups, and its
/// checkpoint's clock, FX quotes and positions; returns the checkpoints.
fn install(
    shared: &mut LoopState,
    read: Vec<RestoreWorker>,
    log: ChangelogRead,
    stats: &Stats,
    metrics: &Metrics,
) -> BTreeMap<i32, Checkpoint> {
    let mut restored = 0u64;
    let mut groups = Vec::new();
    for w in read {
        restored += w.restored;
        groups.extend(w.groups);
        for (p, engine) in w.engines {
            shared.part(p).engine = engine;
        }
    }
    for (p, g) in groups {
        shared.part(p).engine.restore_group(*g);
    }
    let ChangelogRead {
        checkpoints,
        checkpoint_at,
        records,
        ..
    } = log;
    for (p, c) in &checkpoints {
        info!(
            partition = p,
            changelog_offset = checkpoint_at.get(p).copied().unwrap_or(-1),
            offsets = ?c.offsets,
            "resuming from checkpoint"
        );
        let part = shared.part(*p);
        if let Some(clock) = c.clock {
            part.engine.restore_clock(clock);
        }
        part.engine.restore_rates(&c.fx);
        part.positions = c.offsets.clone();
    }
    stats
        .restored_accounts
        .fetch_add(restored, Ordering::Relaxed);
    metrics.restored_accounts.inc_by(restored);
    info!(
        records,
        accounts = restored,
        checkpoints = checkpoints.len(),
        "changelog read"
    );
    checkpoints
}

/// Restores changelog `partitions` into fresh engines exactly as an assignment does (fence,
/// read to the fence, decode, restore), one engine per partition; for `credit-sentinel bench`.
pub fn restore_changelog(settings: &Settings, partitions: &BTreeSet<i32>) -> Result<Vec<Engine>> {
    let mut shared = LoopState {
        policy: settings.policy.clone(),
        parts: BTreeMap::new(),
        pending: Default::default(),
        unpublished: Unpublished::default(),
        unlogged: BTreeSet::new(),
        published: Default::default(),
    };
    restore_partitions(
        settings,
        &mut shared,
        partitions,
        &Stats::default(),
        &Metrics::default(),
        &AtomicBool::new(false),
    )?;
    Ok(shared.parts.into_values().map(|p| p.engine).collect())
}

/// What one restore worker ends with: its partitions' engines with their accounts restored,
/// the group snapshots it read (restored last, after every account), and its account count.
pub(super) struct RestoreWorker {
    engines: BTreeMap<i32, Engine>,
    groups: Vec<(i32, Box<crate::engine::Group>)>,
    restored: u64,
}

/// Decodes and restores the snapshots sent to it into the engines of its partitions.
pub(super) fn restore_worker(
    mut engines: BTreeMap<i32, Engine>,
    rx: std::sync::mpsc::Receiver<Vec<(i32, String, Vec<u8>)>>,
) -> Result<RestoreWorker> {
    let mut groups = Vec::new();
    let mut restored = 0u64;
    for chunk in rx {
        for (p, key, value) in chunk {
            match state::decode(&key, &value) {
                Ok(StateRecord::Account(a)) => {
                    if let Some(engine) = engines.get_mut(&p) {
                        engine.restore_account(a);
                        restored += 1;
                    }
                }
                Ok(StateRecord::Group(g)) => groups.push((p, g)),
                Err(e) => anyhow::bail!("{e}"),
            }
        }
    }
    Ok(RestoreWorker {
        engines,
        groups,
        restored,
    })
}
