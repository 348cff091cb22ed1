//! What the runtime counts for the demo's live view and how it is embedded (`Options`).

use super::*;

/// Counters the runtime keeps for the demo's live view and, later, metrics.
#[derive(Default)]
pub struct Stats {
    pub events: AtomicU64,
    pub decisions: [AtomicU64; 5],
    pub delivery_decisions: AtomicU64,
    pub alerts: AtomicU64,
    pub dead_letters: AtomicU64,
    pub batches: AtomicU64,
    /// Nanoseconds the batch loop spent on committed batches outside its polls: applying,
    /// committing (with its acknowledgement waits) and publishing.
    pub busy_ns: AtomicU64,
    pub aborted: AtomicU64,
    pub restored_accounts: AtomicU64,
    /// Batches rolled back in a row since the last commit: a batch that keeps failing (an
    /// output that cannot be written) is retried from its checkpoint, and this shows it.
    pub failed_in_a_row: AtomicU64,
    /// True while a failed producer is being replaced (a new one waiting for its transactions,
    /// e.g. while the coordinator still aborts the old one's): no batch can commit meanwhile.
    pub replacing_producer: AtomicBool,
    /// True once the first assignment is restored and consumption has started.
    pub ready: AtomicBool,
    /// Set by an admin (`POST /v1/admin/pause`, cleared by `/resume`): this instance stops
    /// consuming, deciding and ticking its clock, keeps its partitions and its group membership,
    /// and goes on reporting lag.
    pub pause_requested: AtomicBool,
    /// True once the loop has paused its partitions (what `/readyz` and the metric report).
    pub paused: AtomicBool,
    /// The most recent alerts, newest last (bounded).
    pub recent_alerts: Mutex<std::collections::VecDeque<String>>,
}

impl Stats {
    pub(super) fn count(&self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Decision(d) => {
                    let i = DecisionStatus::ALL
                        .iter()
                        .position(|s| *s == d.status)
                        .unwrap_or(0);
                    self.decisions[i].fetch_add(1, Ordering::Relaxed);
                }
                Output::DeliveryDecision(_) => {
                    self.delivery_decisions.fetch_add(1, Ordering::Relaxed);
                }
                Output::Alert(a) => {
                    self.alerts.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut recent) = self.recent_alerts.lock() {
                        recent.push_back(format!(
                            "{} {} {} {}",
                            a.at,
                            a.severity.as_str(),
                            a.kind.as_str(),
                            a.key()
                        ));
                        while recent.len() > 8 {
                            recent.pop_front();
                        }
                    }
                }
                Output::DeadLetter(_) => {
                    self.dead_letters.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Options for embedding the runtime (the demo, the HTTP layer and tests).
#[derive(Clone, Default)]
pub struct Options {
    /// Where readers (the HTTP API, metrics) see the engines; a private one when `None`.
    pub state: Option<StateHandle>,
    /// The metric families to update; a private set when `None`.
    pub metrics: Option<Arc<Metrics>>,
    /// Where committed decisions, alerts and utilization points go for the console.
    pub feed: Option<Arc<crate::feed::Feed>>,
}

impl Options {
    /// Options for a runtime that serves readers: a shared state handle and metric set, to be
    /// given to the HTTP layer as well.
    pub fn served() -> Options {
        Options {
            state: Some(StateHandle::default()),
            metrics: Some(Arc::new(Metrics::new())),
            feed: Some(Arc::new(crate::feed::Feed::default())),
        }
    }
}
