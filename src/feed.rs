//! What the credit desk console shows live: the decisions and alerts the engine has
//! *committed*, fanned out to subscribers (the console's server-sent event stream) and kept in
//! bounded histories: the latest outputs overall, and per customer its latest outputs and its
//! utilization after each change (the console's chart).
//!
//! The runtime publishes a batch's items only after the batch commits, so a console never
//! shows a decision that a rolled-back batch made. Everything here is bounded: at most
//! [`RECENT`] outputs overall, [`PER_CUSTOMER`] outputs and [`POINTS`] utilization points per
//! customer, for at most [`CUSTOMERS`] customers (the least recently active is forgotten
//! first). Nothing here is state the engine decides on: losing it loses only console history.

use crate::model::Timestamp;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Outputs kept for a console that connects (newest last).
pub const RECENT: usize = 200;
/// Outputs kept per customer.
pub const PER_CUSTOMER: usize = 20;
/// Utilization points kept per customer.
pub const POINTS: usize = 100;
/// Customers with a history; the least recently active beyond this is forgotten.
pub const CUSTOMERS: usize = 5_000;
/// Items a slow live subscriber may fall behind by before it is told it missed some.
const CHANNEL: usize = 1024;
/// Command outcomes remembered for `GET /v1/commands/{id}` (the oldest forgotten first).
pub const COMMANDS: usize = 10_000;

/// One committed output as the console sees it: `kind` is `decision` or `alert`, `record` is
/// exactly the JSON text written to the output topic (the runtime hands over the bytes it
/// produced, so nothing is serialized twice; a parsed tree would also cost several times the
/// memory). It is served as JSON, not as a string.
#[derive(Debug, Serialize)]
pub struct FeedItem {
    pub seq: u64,
    pub kind: &'static str,
    #[serde(skip)]
    pub customer_id: Option<String>,
    #[serde(serialize_with = "as_json")]
    pub record: Box<str>,
}

/// Writes JSON text as the JSON it is (validated when a reader asks, not when it is recorded).
fn as_json<S: serde::Serializer>(text: &str, ser: S) -> Result<S::Ok, S::Error> {
    let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(ser)
}

/// A customer's utilization (exposure / effective limit, as the decisions print it) at a
/// moment of engine time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub at: Timestamp,
    pub utilization: String,
}

/// What became of a command (`credit.commands`) that an engine of this process applied or
/// refused, once the batch that did it committed.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandOutcome {
    pub command_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub customer_id: Option<String>,
    /// `applied`; `awaiting_second_approver` (a first four-eyes approval, recorded);
    /// `refused` (dead-lettered: `error` and `detail` say why); `duplicate` (an event id the
    /// engine had already seen: nothing changed).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The decisions it produced (releases, rejections, and holds it released on the way).
    pub decisions: Vec<CommandDecision>,
    /// Who asked, with what note, when (the command's `occurred_at`) and about which order or
    /// delivery: `None` for a command refused before the core read it (a bad signature).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
}

/// A decision a command produced, by id.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CommandDecision {
    /// `decision` (`credit.decisions`) or `delivery_decision` (`credit.delivery-decisions`).
    pub kind: &'static str,
    pub id: String,
    pub order_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub status: &'static str,
}

/// What a batch adds, collected while it runs and published when it commits.
#[derive(Debug, Default)]
pub struct BatchFeed {
    outputs: Vec<(&'static str, Option<String>, Box<str>)>,
    points: Vec<(String, Point)>,
    commands: Vec<CommandOutcome>,
}

impl BatchFeed {
    /// Keeps a decision or alert, as the JSON text produced to its topic.
    pub fn record(&mut self, kind: &'static str, customer_id: Option<String>, json: String) {
        self.outputs
            .push((kind, customer_id, json.into_boxed_str()));
    }

    pub fn point(&mut self, customer_id: &str, point: Point) {
        self.points.push((customer_id.to_string(), point));
    }

    pub fn command(&mut self, outcome: CommandOutcome) {
        self.commands.push(outcome);
    }

    pub fn clear(&mut self) {
        self.outputs.clear();
        self.points.clear();
        self.commands.clear();
    }
}

#[derive(Default)]
struct History {
    items: VecDeque<Arc<FeedItem>>,
    points: VecDeque<Point>,
    last_active: u64,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    /// Counts history touches: what "recently active" is measured in.
    touches: u64,
    recent: VecDeque<Arc<FeedItem>>,
    customers: HashMap<String, History>,
    /// Command outcomes by command id, and the ids in the order they were learnt.
    commands: HashMap<String, Arc<CommandOutcome>>,
    command_order: VecDeque<String>,
}

/// The shared feed: one per process, handed to the runtime (writer) and the HTTP server.
pub struct Feed {
    inner: Mutex<Inner>,
    live: tokio::sync::broadcast::Sender<Arc<FeedItem>>,
}

impl Default for Feed {
    fn default() -> Self {
        let (live, _) = tokio::sync::broadcast::channel(CHANNEL);
        Feed {
            inner: Mutex::new(Inner::default()),
            live,
        }
    }
}

impl Feed {
    /// Publishes what a committed batch produced, and empties `pending`.
    pub fn publish(&self, pending: &mut BatchFeed) {
        if pending.outputs.is_empty() && pending.points.is_empty() && pending.commands.is_empty() {
            return;
        }
        let mut inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for (kind, customer_id, record) in pending.outputs.drain(..) {
            inner.seq += 1;
            let item = Arc::new(FeedItem {
                seq: inner.seq,
                kind,
                customer_id,
                record,
            });
            if inner.recent.len() >= RECENT {
                inner.recent.pop_front();
            }
            inner.recent.push_back(Arc::clone(&item));
            if let Some(c) = item.customer_id.clone() {
                let h = history(&mut inner, c);
                if h.items.len() >= PER_CUSTOMER {
                    h.items.pop_front();
                }
                h.items.push_back(Arc::clone(&item));
            }
            // No subscriber is not an error.
            let _ = self.live.send(item);
        }
        for (customer_id, point) in pending.points.drain(..) {
            let h = history(&mut inner, customer_id);
            if h.points.back() == Some(&point) {
                continue;
            }
            if h.points.len() >= POINTS {
                h.points.pop_front();
            }
            h.points.push_back(point);
        }
        if inner.customers.len() > CUSTOMERS {
            forget_least_active(&mut inner);
        }
        for outcome in pending.commands.drain(..) {
            let id = outcome.command_id.clone();
            // A redelivered command (a rewind, a rebalance) keeps its first outcome.
            if inner.commands.contains_key(&id) {
                continue;
            }
            if inner.command_order.len() >= COMMANDS {
                if let Some(old) = inner.command_order.pop_front() {
                    inner.commands.remove(&old);
                }
            }
            inner.command_order.push_back(id.clone());
            inner.commands.insert(id, Arc::new(outcome));
        }
    }

    /// What became of command `id`, if an engine of this process applied or refused it.
    pub fn command(&self, id: &str) -> Option<Arc<CommandOutcome>> {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        inner.commands.get(id).cloned()
    }

    /// The command outcomes this process remembers (at most [`COMMANDS`]), newest first, that
    /// `keep` accepts, up to `n`: the audit of manual decisions.
    pub fn commands(
        &self,
        n: usize,
        keep: impl Fn(&CommandOutcome) -> bool,
    ) -> Vec<Arc<CommandOutcome>> {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        inner
            .command_order
            .iter()
            .rev()
            .filter_map(|id| inner.commands.get(id))
            .filter(|c| keep(c))
            .take(n)
            .cloned()
            .collect()
    }

    /// The latest `n` outputs, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Arc<FeedItem>> {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let skip = inner.recent.len().saturating_sub(n);
        inner.recent.iter().skip(skip).cloned().collect()
    }

    /// A customer's latest outputs (oldest first) and utilization points.
    pub fn customer(&self, customer_id: &str) -> (Vec<Arc<FeedItem>>, Vec<Point>) {
        let inner = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        inner.customers.get(customer_id).map_or_else(
            || (Vec::new(), Vec::new()),
            |h| {
                (
                    h.items.iter().cloned().collect(),
                    h.points.iter().cloned().collect(),
                )
            },
        )
    }

    /// A live subscription to every output published from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<FeedItem>> {
        self.live.subscribe()
    }
}

fn history(inner: &mut Inner, customer_id: String) -> &mut History {
    inner.touches += 1;
    let touches = inner.touches;
    let h = inner.customers.entry(customer_id).or_default();
    h.last_active = touches;
    h
}

/// Drops the least recently active tenth of the customers (amortised: not on every publish).
fn forget_least_active(inner: &mut Inner) {
    let mut ages: Vec<u64> = inner.customers.values().map(|h| h.last_active).collect();
    ages.sort_unstable();
    let cut = ages[ages.len() / 10];
    inner.customers.retain(|_, h| h.last_active > cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, u: &str) -> Point {
        Point {
            at: Timestamp(at),
            utilization: u.into(),
        }
    }

    #[test]
    fn histories_are_bounded_and_repeats_of_a_point_are_dropped() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        let mut p = BatchFeed::default();
        for i in 0..(POINTS as i64 + 10) {
            p.point("C-1", point(i, "0.5000"));
            p.point("C-1", point(i, "0.5000"));
        }
        feed.publish(&mut p);
        assert_eq!(feed.customer("C-1").1.len(), POINTS);
        assert!(rx.try_recv().is_err(), "points are not live items");
        assert!(feed.customer("C-2").0.is_empty());
    }

    #[test]
    fn many_customers_are_forgotten_least_active_first() {
        let feed = Feed::default();
        let mut p = BatchFeed::default();
        for i in 0..(CUSTOMERS + 1) {
            p.point(&format!("C-{i}"), point(1, "0.1000"));
            feed.publish(&mut p);
        }
        let inner = feed.inner.lock().expect("lock");
        assert!(inner.customers.len() <= CUSTOMERS);
        assert!(inner.customers.contains_key(&format!("C-{CUSTOMERS}")));
    }
}
