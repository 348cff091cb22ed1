//! Reads without a state change: what-if checks for the API, totals per currency, and the invariant check over every account.

use super::*;

impl Engine {
    /// The customer's account, or an empty one for a customer never seen (what-if checks).
    pub(super) fn account_or_new(&self, customer_id: &str) -> std::borrow::Cow<'_, Account> {
        match self.accounts.get(customer_id) {
            Some(a) => std::borrow::Cow::Borrowed(a),
            None => std::borrow::Cow::Owned(Account::new(customer_id)),
        }
    }

    /// What would happen to this order now, without changing anything.
    pub fn simulate_order(
        &self,
        customer_id: &str,
        amount: Decimal,
        currency: Currency,
    ) -> (DecisionStatus, Vec<Reason>) {
        let acc = &*self.account_or_new(customer_id);
        let reasons = self.check_new_order(acc, "", amount, currency).reasons;
        let status = if reasons.is_empty() {
            DecisionStatus::Approved
        } else {
            DecisionStatus::Held
        };
        (status, reasons)
    }

    /// Exposure, limits and holds summed per currency, in currency order.
    pub fn totals(&self) -> BTreeMap<Currency, CurrencyTotals> {
        let mut totals: BTreeMap<Currency, CurrencyTotals> = BTreeMap::new();
        for acc in self.accounts.values() {
            let Some(cur) = acc.currency else { continue };
            let t = totals.entry(cur).or_default();
            t.accounts += 1;
            t.exposure.open_orders += acc.open_orders_total();
            t.exposure.receivables += acc.receivables_total();
            t.exposure.unapplied_credit += acc.unapplied_credit();
            t.exposure.total += acc.exposure_total();
            t.credit_limit += acc
                .profile
                .as_ref()
                .map(|p| p.credit_limit)
                .unwrap_or_default();
            t.held_orders += acc.holds().len();
            t.held_amount += acc
                .holds()
                .iter()
                .map(|id| acc.orders()[id].amount_account)
                .sum::<Decimal>();
        }
        totals
    }

    /// Checks every account's exposure identity (foreign items valued at the latest rates)
    /// and the group memberships.
    pub fn verify_invariants(&self) -> Result<(), String> {
        let mut ids: Vec<&String> = self.accounts.keys().collect();
        ids.sort();
        for id in ids {
            let acc = &self.accounts[id];
            acc.check_identity()?;
            if let Some(account) = acc.currency {
                let mut copy = acc.clone();
                let conv = Conv {
                    rates: &self.rates,
                    account,
                };
                if copy.revalue(&conv) {
                    let orders = acc.orders().iter().filter_map(|(oid, o)| {
                        let c = &copy.orders()[oid];
                        (c.open_remaining != o.open_remaining).then(|| {
                            format!(
                                "order {oid} ({} {}, {:?}, prepaid {}): {} valued {}",
                                o.amount,
                                o.currency,
                                o.state,
                                o.prepaid,
                                o.open_remaining,
                                c.open_remaining
                            )
                        })
                    });
                    let receivables = acc
                        .receivables()
                        .iter()
                        .zip(copy.receivables())
                        .filter(|(r, c)| r.open != c.open)
                        .map(|(r, c)| format!("a receivable: {} valued {}", r.open, c.open));
                    let which: Vec<String> = orders.chain(receivables).collect();
                    return Err(format!(
                        "{id}: a foreign item is not valued at the latest rate: {}",
                        which.join("; ")
                    ));
                }
            }
            if let Some(gid) = acc.group_id() {
                if !self.groups.get(gid).is_some_and(|g| g.members.contains(id)) {
                    return Err(format!("{id}: not a member of its group {gid}"));
                }
            }
        }
        for g in self.groups.values() {
            for m in &g.members {
                if self.accounts.get(m).and_then(|a| a.group_id()) != Some(g.group_id.as_str()) {
                    return Err(format!(
                        "group {}: member {m} names another group",
                        g.group_id
                    ));
                }
            }
        }
        Ok(())
    }
}
