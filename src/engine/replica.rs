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
    use crate::engine::read_index::StateGauges;
    use crate::model::Currency;
    use crate::{Engine, Policy};
    use rust_decimal::Decimal;
    use std::collections::BTreeSet;

    fn apply(e: &mut Engine, line: &str) {
        let event = decode_event(line.as_bytes()).expect("event");
        e.apply(&event, &mut Vec::new());
    }

    /// An engine that applied `lines`, and a replica of it as just assigned.
    fn engine_and_replica(lines: &[&str]) -> (Engine, Engine) {
        let mut engine = Engine::new(Policy::default());
        for l in lines {
            apply(&mut engine, l);
        }
        engine.take_changed();
        let replica = engine.read_replica();
        (engine, replica)
    }

    /// Publishes what `engine` changed since the last call to `replica`, as the runtime does
    /// after a commit.
    fn publish(engine: &mut Engine, replica: &mut Engine) {
        let (accounts, groups) = engine.take_changed();
        let accounts: BTreeSet<String> = accounts.into_iter().collect();
        let groups: BTreeSet<String> = groups.into_iter().collect();
        engine.update_replica(replica, &accounts, &groups);
    }

    fn eur() -> Currency {
        Currency::parse("EUR").expect("EUR")
    }

    #[test]
    fn a_replica_updated_with_the_changes_equals_a_full_copy() {
        let (mut engine, mut replica) = engine_and_replica(&[
            r#"{"event_id":"p1","type":"profile.customer","occurred_at":"2026-03-02T08:00:00Z","customer_id":"A","credit_limit":"1000.00","currency":"EUR"}"#,
        ]);
        apply(
            &mut engine,
            r#"{"event_id":"o1","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"A","order_id":"O-1","amount":"700.00","currency":"EUR"}"#,
        );
        apply(
            &mut engine,
            r#"{"event_id":"o2","type":"order.placed","occurred_at":"2026-03-02T10:00:00Z","customer_id":"B","order_id":"O-2","amount":"10.00","currency":"EUR"}"#,
        );
        assert!(replica.account("B").is_none(), "not published yet");
        publish(&mut engine, &mut replica);
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

    #[test]
    fn reader_index_shares_the_clock_alone_moves_follow_it() {
        let (mut engine, mut replica) = engine_and_replica(&[
            r#"{"event_id":"p1","type":"profile.customer","occurred_at":"2026-03-02T08:00:00Z","customer_id":"A","credit_limit":"1000.00","currency":"EUR","payment_terms_days":30,"temporary_limit":{"amount":"500.00","expires_at":"2026-03-20T00:00:00Z"}}"#,
            r#"{"event_id":"o1","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"A","order_id":"O-1","amount":"1200.00","currency":"EUR"}"#,
            r#"{"event_id":"s1","type":"shipment.shipped","occurred_at":"2026-03-02T10:00:00Z","customer_id":"A","shipment_id":"S-1","order_id":"O-1","amount":"1200.00","currency":"EUR"}"#,
        ]);
        let g = replica.state_gauges().into_owned();
        assert_eq!(g, StateGauges::walk(&replica));
        assert_eq!(g.bands, [0, 1, 0, 0, 0], "1,200 of 1,500: the 70-85 band");
        assert_eq!(g.over_limit, 0);
        assert_eq!(g.per_currency[&eur()].overdue, Decimal::ZERO);

        // Another customer's event moves the clock past A's temporary limit and due moment;
        // only B is published as changed (A's copy is the one published before).
        apply(
            &mut engine,
            r#"{"event_id":"p2","type":"profile.customer","occurred_at":"2026-04-15T08:00:00Z","customer_id":"B","credit_limit":"10.00","currency":"EUR"}"#,
        );
        engine.take_changed();
        let only_b: BTreeSet<String> = ["B".to_string()].into();
        engine.update_replica(&mut replica, &only_b, &BTreeSet::new());
        let g = replica.state_gauges().into_owned();
        assert_eq!(g, StateGauges::walk(&replica));
        assert_eq!(
            g.bands,
            [1, 0, 0, 1, 0],
            "A over its 1,000 once the 500 expired"
        );
        assert_eq!(g.over_limit, 1);
        let eur = &g.per_currency[&eur()];
        assert_eq!(eur.accounts, 2);
        assert_eq!(
            eur.overdue,
            Decimal::new(120_000, 2),
            "A's receivable fell due"
        );
        assert_eq!(eur.credit_limit, Decimal::new(101_000, 2));
    }

    #[test]
    fn reader_index_accounts_holding_follow_their_holds() {
        let (mut engine, mut replica) = engine_and_replica(&[
            r#"{"event_id":"p1","type":"profile.customer","occurred_at":"2026-03-02T08:00:00Z","customer_id":"A","credit_limit":"100.00","currency":"EUR"}"#,
        ]);
        let holding = |r: &Engine| -> Vec<String> {
            r.accounts_holding(false)
                .map(|a| a.customer_id.clone())
                .collect()
        };
        assert!(holding(&replica).is_empty());
        apply(
            &mut engine,
            r#"{"event_id":"o1","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"A","order_id":"O-1","amount":"700.00","currency":"EUR"}"#,
        );
        publish(&mut engine, &mut replica);
        assert_eq!(holding(&replica), ["A"]);
        assert_eq!(replica.state_gauges().held_orders, 1);
        assert_eq!(
            replica.state_gauges().per_currency[&eur()].held_amount,
            Decimal::new(70_000, 2)
        );
        apply(
            &mut engine,
            r#"{"event_id":"c1","type":"order.cancelled","occurred_at":"2026-03-02T10:00:00Z","customer_id":"A","order_id":"O-1"}"#,
        );
        publish(&mut engine, &mut replica);
        assert!(holding(&replica).is_empty());
        assert_eq!(*replica.state_gauges(), StateGauges::walk(&engine));
        assert!(engine.reader.is_none(), "the deciding engine carries none");
    }
}
