//! The read model: what readers (the HTTP API, `/metrics`, `/readyz`, the console) see of this
//! instance's partitions, published after each commit so that readers never take the decision
//! loop's state and neither waits for the other.

use super::*;

/// A read handle on this instance's partitions, shared with the HTTP layer.
///
/// Readers never take the decision loop's lock: they read the published model, read replicas
/// of the partition engines brought up to date after each commit (see [`publish`]). A read
/// sees committed state only, never a half-applied batch, and a slow commit (a producer flush,
/// a transaction commit, a rewind) does not make it wait; a slow reader in turn only delays the
/// next publish, never a decision.
#[derive(Clone)]
pub struct StateHandle {
    pub(super) shared: Arc<Mutex<LoopState>>,
    pub(super) published: Arc<Published>,
}

impl Default for StateHandle {
    fn default() -> Self {
        let published = Arc::new(Published::default());
        StateHandle {
            shared: Arc::new(Mutex::new(LoopState {
                policy: crate::policy::Policy::default(),
                parts: BTreeMap::new(),
                pending: crate::feed::BatchFeed::default(),
                unpublished: Unpublished::default(),
                unlogged: BTreeSet::new(),
                published: Arc::clone(&published),
            })),
            published,
        }
    }
}

impl StateHandle {
    /// Runs `f` over the published partition engines (ascending partition order).
    pub fn read<R>(&self, f: impl FnOnce(&[&Engine]) -> R) -> R {
        let guard = match self.published.model.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let engines: Vec<&Engine> = guard.parts.values().collect();
        f(&engines)
    }

    /// The partitions assigned to this instance, as last published.
    pub fn partitions(&self) -> Vec<i32> {
        self.read_model(|m| m.parts.keys().copied().collect())
    }

    /// How many commits were published to readers so far, and how many publishes were put
    /// off because a reader held the model (they go out with the next one).
    pub fn publishes(&self) -> (u64, u64) {
        (
            self.published.publishes.load(Ordering::Relaxed),
            self.published.deferred.load(Ordering::Relaxed),
        )
    }

    fn read_model<R>(&self, f: impl FnOnce(&ReadModel) -> R) -> R {
        match self.published.model.read() {
            Ok(g) => f(&g),
            Err(p) => f(&p.into_inner()),
        }
    }
}

/// What readers see: a read replica of every partition engine, as of the last publish.
#[derive(Default)]
pub(super) struct ReadModel {
    pub(super) parts: BTreeMap<i32, Engine>,
}

/// The read model and how often it was published to.
#[derive(Default)]
pub(super) struct Published {
    pub(super) model: RwLock<ReadModel>,
    pub(super) publishes: AtomicU64,
    pub(super) deferred: AtomicU64,
}

/// The accounts and groups a batch changed, per partition.
pub(super) type Changes = BTreeMap<i32, (BTreeSet<String>, BTreeSet<String>)>;

/// What committed since the last publish: the accounts and groups changed per partition, and
/// the partitions to copy whole (restored on assignment).
#[derive(Default)]
pub(super) struct Unpublished {
    pub(super) changed: Changes,
    pub(super) full: BTreeSet<i32>,
    /// The last publish was put off by a reader: the batch loop tries again within a second.
    pub(super) deferred: bool,
}

impl Unpublished {
    /// Adds what a commit (or a pending changelog write) changed.
    pub(super) fn add(&mut self, changes: Changes) {
        for (p, (accounts, groups)) in changes {
            let c = self.changed.entry(p).or_default();
            c.0.extend(accounts);
            c.1.extend(groups);
        }
    }
}

/// Publishes what committed since the last publish to the readers' model. Never waits: while
/// a reader holds the model it is put off (kept for the next call), so a slow reader (one
/// walking every account) never delays a decision. Costs what changed (copied, and its reader
/// index entries updated: see `engine::read_index`), plus a full copy of a partition just
/// assigned.
pub(super) fn publish(sh: &mut LoopState) {
    let published = Arc::clone(&sh.published);
    let mut m = match published.model.try_write() {
        Ok(m) => m,
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            sh.unpublished.deferred = true;
            published.deferred.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let un = std::mem::take(&mut sh.unpublished);
    m.parts.retain(|p, _| sh.parts.contains_key(p));
    let none = (BTreeSet::new(), BTreeSet::new());
    for (p, part) in &sh.parts {
        match m.parts.get_mut(p) {
            Some(replica) if !un.full.contains(p) => {
                let (accounts, groups) = un.changed.get(p).unwrap_or(&none);
                part.engine.update_replica(replica, accounts, groups);
            }
            _ => {
                m.parts.insert(*p, part.engine.read_replica());
            }
        }
    }
    published.publishes.fetch_add(1, Ordering::Relaxed);
}
