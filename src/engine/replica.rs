//! Read replicas of an engine, for readers that must not share the decision loop's lock (the
//! HTTP API, `/metrics`, the console): a copy of the accounts, groups, clock and FX rates,
//! brought up to date after each commit with only what that commit changed. A replica never
//! decides; it carries no timers (no reader needs them) and no change sets, and it carries the
//! index readers use instead of walking every account (`read_index`).

use super::read_index::ReaderIndex;
use super::Engine;
use std::collections::BTreeSet;

impl Engine {
    /// A full read replica of this engine (a partition just restored or assigned).
    pub fn read_replica(&self) -> Engine {
        let mut replica = self.clone();
        replica.timers.clear();
        replica.touched.clear();
        replica.changed_accounts.clear();
        replica.changed_groups.clear();
        replica.rates_changed = false;
        replica.index_for_readers();
        replica
    }

    /// Builds this replica's reader index from every account (done by `read_replica`; public
    /// so that the bench can time it alone).
    pub fn index_for_readers(&mut self) {
        self.reader = Some(Box::new(ReaderIndex::build(self)));
    }

    /// Brings the reader index up to date for `accounts` (changed, added or gone) and for the
    /// accounts whose share the clock moved (done by `update_replica` after it copied them;
    /// public so that the bench can time it alone). Nothing without an index.
    pub fn reindex_accounts(&mut self, accounts: &BTreeSet<String>) {
        if let Some(mut ix) = self.reader.take() {
            for cid in accounts {
                ix.account(self, cid);
            }
            ix.clock_moved(self);
            self.reader = Some(ix);
        }
    }

    /// Brings `replica` up to date with this engine for the listed accounts and groups (copied,
    /// or removed where this engine no longer has them), and the clock and rates. Costs what
    /// the changes are, never a walk over every account.
    pub fn update_replica(
        &self,
        replica: &mut Engine,
        accounts: &BTreeSet<String>,
        groups: &BTreeSet<String>,
    ) {
        // A customer that joined or left a group changes its old and new group's members,
        // which its snapshot does not mark: both groups are copied with it.
        let mut groups: BTreeSet<String> = groups.clone();
        for cid in accounts {
            let old = replica.accounts.get(cid).and_then(|a| a.group_id());
            let new = self.accounts.get(cid).and_then(|a| a.group_id());
            groups.extend([old, new].into_iter().flatten().map(str::to_string));
        }
        for cid in accounts {
            match self.accounts.get(cid) {
                Some(a) => match replica.accounts.get_mut(cid) {
                    Some(r) => r.clone_from(a),
                    None => {
                        replica.accounts.insert(cid.clone(), a.clone());
                    }
                },
                None => {
                    replica.accounts.remove(cid);
                }
            }
        }
        for gid in groups {
            match self.groups.get(&gid) {
                Some(g) => {
                    replica.groups.insert(gid, g.clone());
                }
                None => {
                    replica.groups.remove(&gid);
                }
            }
        }
        replica.clock = self.clock;
        if replica.rates != self.rates {
            replica.rates.clone_from(&self.rates);
        }
        replica.reindex_accounts(accounts);
    }
}

#[cfg(test)]
mod tests {
    use crate::codec::decode_event;
    use crate::{Engine, Policy};
    use std::collections::BTreeSet;

    fn apply(e: &mut Engine, line: &str) {
        let event = decode_event(line.as_bytes()).expect("event");
        e.apply(&event, &mut Vec::new());
    }

    #[test]
    fn a_replica_updated_with_the_changes_equals_a_full_copy() {
        let mut engine = Engine::new(Policy::default());
        apply(
            &mut engine,
            r#"{"event_id":"p1","type":"profile.customer","occurred_at":"2026-03-02T08:00:00Z","customer_id":"A","credit_limit":"1000.00","currency":"EUR"}"#,
        );
        engine.take_changed();
        let mut replica = engine.read_replica();
        apply(
            &mut engine,
            r#"{"event_id":"o1","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"A","order_id":"O-1","amount":"700.00","currency":"EUR"}"#,
        );
        apply(
            &mut engine,
            r#"{"event_id":"o2","type":"order.placed","occurred_at":"2026-03-02T10:00:00Z","customer_id":"B","order_id":"O-2","amount":"10.00","currency":"EUR"}"#,
        );
        let (accounts, groups) = engine.take_changed();
        let accounts: BTreeSet<String> = accounts.into_iter().collect();
        let groups: BTreeSet<String> = groups.into_iter().collect();
        assert!(replica.account("B").is_none(), "not published yet");
        engine.update_replica(&mut replica, &accounts, &groups);
        for id in ["A", "B"] {
            assert_eq!(replica.account(id), engine.account(id), "{id}");
        }
        assert_eq!(replica.clock(), engine.clock());
        assert_eq!(replica.timers_len(), 0, "a replica carries no timers");
        engine.drop_account("B");
        let gone: BTreeSet<String> = ["B".to_string()].into();
        engine.update_replica(&mut replica, &gone, &BTreeSet::new());
        assert!(
            replica.account("B").is_none(),
            "a dropped account leaves the replica"
        );
    }
}
