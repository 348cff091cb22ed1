//! Held orders and their re-check: the account's (or group's) queue re-checked in release order when room appears, and the group view the rules see.

use super::*;

impl Engine {
    /// Re-checks held orders after something freed room or cleared a reason. With a group
    /// profile the whole group's queue is re-checked, oldest first across members. Holds that
    /// need a person are skipped and block nothing. Under strict FIFO an order that still fails
    /// blocks the later orders of its customer (and of the whole group when the group limit is
    /// what it fails).
    pub(super) fn recheck_holds(&mut self, cid: &str, cause: &Cause, out: &mut Vec<Output>) {
        let members: Vec<String> = match self.accounts.get(cid).and_then(|a| a.group_id()) {
            Some(gid) if self.groups.get(gid).is_some_and(|g| g.profile.is_some()) => {
                self.groups[gid].members.iter().cloned().collect()
            }
            _ => vec![cid.to_string()],
        };
        self.recheck_orders(&members, cause, out);
        self.recheck_deliveries(&members, cause, out);
    }

    /// The order pass of a re-check (see `recheck_holds`).
    pub(super) fn recheck_orders(
        &mut self,
        members: &[String],
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let policy = Arc::clone(&self.policy);
        // The queue as (placed_at, member, position in the member's holds): each member's holds
        // are already in release order, so this sorts exactly as (placed_at, customer id,
        // order id) would, without copying an id. A released order leaves its member's holds,
        // which shifts that member's later positions down by one (`released`).
        let mut queue: Vec<(Timestamp, usize, usize)> = Vec::new();
        for (mi, m) in members.iter().enumerate() {
            if let Some(acc) = self.accounts.get(m) {
                for (pos, id) in acc.holds().iter().enumerate() {
                    let o = &acc.orders()[id];
                    if !o.hold.as_ref().is_some_and(|h| h.needs_person()) {
                        queue.push((o.placed_at, mi, pos));
                    }
                }
            }
        }
        if queue.is_empty() {
            return;
        }
        queue.sort_unstable();
        let strict = policy.release_order == ReleaseOrder::StrictFifo;
        let mut blocked = vec![false; members.len()];
        let mut blocked_count = 0;
        let mut released = vec![0usize; members.len()];
        let mut group_blocked = false;
        let now = self.now();
        for (_, mi, pos) in queue {
            if strict && (group_blocked || blocked_count == members.len()) {
                // Everything behind a failing order waits: nothing further can be released.
                break;
            }
            if strict && blocked[mi] {
                continue;
            }
            let c = members[mi].clone();
            let order_id = self.accounts[&c].holds()[pos - released[mi]].clone();
            let Some((reasons, terms, amount_account)) = self.recheck_order(&c, &order_id, now)
            else {
                continue; // Needs a person: no FX rate to the account's currency.
            };
            if reasons.iter().any(|r| r.code.needs_person()) {
                // A re-check runs every rule: an order that now fails one a person must decide
                // (a new order cap, an anomaly) stays held, and blocks nothing.
                continue;
            }
            if reasons.is_empty() {
                self.release_rechecked(&c, &order_id, terms.as_ref(), amount_account, cause, out);
                released[mi] += 1;
            } else if strict {
                if reasons
                    .iter()
                    .any(|r| r.code == ReasonCode::GroupLimitExceeded)
                {
                    group_blocked = true;
                }
                if !blocked[mi] {
                    blocked[mi] = true;
                    blocked_count += 1;
                }
            }
        }
    }

    /// The rules over a held order as the account stands now, with the terms and the order's
    /// amount in the account's currency at today's rate; `None` without a rate for it.
    fn recheck_order(
        &self,
        cid: &str,
        order_id: &str,
        now: Timestamp,
    ) -> Option<(Vec<Reason>, Option<rules::Terms>, Decimal)> {
        let acc = &self.accounts[cid];
        let terms = rules::terms(acc, &self.policy, now);
        let order = &acc.orders()[order_id];
        let amount_account = match &terms {
            Some(t) => self.rates.convert(order.amount, order.currency, t.currency),
            None => Some(order.amount_account),
        }?;
        let candidate = (order_id, order.amount, order.currency, Some(amount_account));
        let reasons = self.run_rules(acc, terms.as_ref(), now, candidate);
        Some((reasons, terms, amount_account))
    }

    /// Releases a held order that now passes every rule: its exposure reserved at
    /// `amount_account`, and the release decision.
    fn release_rechecked(
        &mut self,
        cid: &str,
        order_id: &str,
        terms: Option<&rules::Terms>,
        amount_account: Decimal,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let cap = self.policy.bounds.closed_ids_per_account;
        let prepay = terms.is_some_and(|t| t.prepay);
        let acc = self.accounts.get_mut(cid).expect("member exists");
        let Some(o) = acc.revalue_held_order(order_id, amount_account) else {
            return;
        };
        let snapshot = o.clone();
        let conv = Conv {
            rates: &self.rates,
            account: terms.map_or(snapshot.currency, |t| t.currency),
        };
        acc.open_order(order_id, prepay, cap, &conv);
        let hold_id = ids::decision_id(cid, order_id, "initial");
        let d = self.decision_for(
            cid,
            &snapshot,
            Ruling::engine(DecisionStatus::Released, Vec::new()),
            cause,
            Some(hold_id),
        );
        out.push(Output::Decision(d));
        self.touch(cid);
    }

    /// The group position of an account's group, when the group has a profile.
    pub(super) fn group_view(&self, acc: &Account) -> Option<GroupView> {
        let gid = acc.group_id()?;
        let g = self.groups.get(gid)?;
        let gp = g.profile.as_ref()?;
        let mut total = Ok(Decimal::ZERO);
        for m in &g.members {
            let Some(a) = self.accounts.get(m) else {
                continue;
            };
            let exposure = a.exposure_total();
            if exposure.is_zero() {
                continue;
            }
            let cur = a.currency.unwrap_or(gp.currency);
            total = match (total, self.rates.convert(exposure, cur, gp.currency)) {
                (Ok(t), Some(e)) => Ok(t + e),
                (Ok(_), None) => Err(format!(
                    "member {m} is in {cur}, group {gid} in {}, no FX rate",
                    gp.currency
                )),
                (err, _) => err,
            };
        }
        let tolerance = gp.tolerance_pct.unwrap_or_default();
        Some(GroupView {
            group_id: gid.to_string(),
            limit_with_tolerance: rules::with_tolerance(gp.credit_limit, tolerance),
            credit_limit: gp.credit_limit,
            currency: gp.currency,
            exposure: total,
        })
    }
}
