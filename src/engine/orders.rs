//! Orders placed and cancelled: the credit check at placement, the decision it makes, and what a cancellation frees.

use super::*;

/// The credit check of a new order against its account as it stands.
pub(super) struct OrderCheck {
    /// The terms in force (`None`: no profile and no default limit).
    pub terms: Option<Terms>,
    /// The account's currency, from its terms or its first money.
    pub account_currency: Option<Currency>,
    /// The order's amount in the account's currency (`None`: no rate between the two).
    pub amount_account: Option<Decimal>,
    /// Every rule the order fails, in the contract's order (empty: approved).
    pub reasons: Vec<Reason>,
}

impl Engine {
    /// Checks a new order (placement, and the what-if of `simulate_order`, build it the same
    /// way): terms, the amount in the account's currency, the group's position, the rules.
    pub(super) fn check_new_order(
        &self,
        acc: &Account,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
    ) -> OrderCheck {
        let now = self.now();
        let terms = rules::terms(acc, &self.policy, now);
        let account_currency = terms.as_ref().map(|t| t.currency).or(acc.currency);
        let amount_account = match account_currency {
            Some(c) => self.rates.convert(amount, currency, c),
            None => Some(amount),
        };
        let order = (order_id, amount, currency, amount_account);
        let reasons = self.run_rules(acc, terms.as_ref(), now, order);
        OrderCheck {
            terms,
            account_currency,
            amount_account,
            reasons,
        }
    }

    /// The rules over an order `(id, amount, currency, amount in the account's currency)`
    /// against its account as it stands at `now`, with its group's position: the one call
    /// placement, re-check and what-if share.
    pub(super) fn run_rules(
        &self,
        acc: &Account,
        terms: Option<&Terms>,
        now: Timestamp,
        (order_id, amount, currency, amount_account): (&str, Decimal, Currency, Option<Decimal>),
    ) -> Vec<Reason> {
        let group = self.group_view(acc);
        let candidate = Candidate {
            amount,
            currency,
            amount_account,
            order_id,
            rates: &self.rates,
        };
        rules::check_order(acc, terms, group.as_ref(), &self.policy, now, &candidate)
    }

    pub(super) fn on_order_placed(
        &mut self,
        cid: &str,
        event: &Event,
        placed: &OrderPlaced,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let (order_id, amount, currency) =
            (placed.order_id.as_str(), placed.amount, placed.currency);
        let policy = Arc::clone(&self.policy);
        if let Some(refused) = self.placement_refused(cid, event, order_id, amount, currency, out) {
            return refused;
        }
        let acc = &self.accounts[cid];
        let OrderCheck {
            terms,
            account_currency,
            amount_account,
            reasons,
        } = self.check_new_order(acc, order_id, amount, currency);
        let amount_acc = amount_account.unwrap_or(amount);
        let near_limit = terms.as_ref().is_some_and(|t| {
            warnings::utilization(acc.exposure_total() + amount_acc, t.limit_effective)
                .is_none_or(|u| u >= policy.limit_suggestions.increase_near_limit_utilization)
        });
        let anomaly = reasons.iter().any(|r| r.code == ReasonCode::AmountAnomaly);
        // Only the anomaly alert shows it (the rule above selected it already).
        let typical = if anomaly {
            rules::typical_order(acc, &policy)
        } else {
            None
        };

        let cap = policy.bounds.closed_ids_per_account;
        let conv = Conv {
            rates: &self.rates,
            account: account_currency.unwrap_or(currency),
        };
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let order = Order {
            order_id: order_id.to_string(),
            amount,
            currency,
            amount_account: amount_acc,
            placed_at: event.occurred_at,
            placed_event_id: event.event_id.clone(),
            state: OrderState::Held,
            shipped: Decimal::ZERO,
            open_remaining: Decimal::ZERO,
            prepaid: Decimal::ZERO,
            hold: None,
        };
        let prepay = terms.as_ref().is_some_and(|t| t.prepay);
        let status = book_placed_order(acc, &order, &reasons, prepay, cap, &conv);
        // Behaviour the warnings learn from.
        let inactivity_before = warnings::inactivity_due_at(acc, &policy);
        learn_from_order(
            acc,
            &policy,
            amount_acc,
            event.occurred_at,
            anomaly,
            near_limit,
        );
        let inactivity = warnings::inactivity_due_at(acc, &policy);

        let decision = self.decision_for(cid, &order, Ruling::engine(status, reasons), cause, None);
        out.push(Output::Decision(decision));
        if anomaly {
            let alert = self.amount_anomaly_alert(cid, order_id, amount_acc, typical, cause);
            out.push(Output::Alert(alert));
        }
        let held = status == DecisionStatus::Held;
        let inactivity = (inactivity_before, inactivity);
        self.schedule_after_placement(cid, order_id, held, event.occurred_at, inactivity);
        self.touch(cid);
        if status == DecisionStatus::Approved
            && self.accounts[cid]
                .deliveries()
                .values()
                .any(|d| d.order_id == order_id)
        {
            self.recheck_deliveries(&[cid.to_string()], cause, out);
        }
        self.apply_pending_for(cid, order_id, cause, out);
        Outcome::Applied
    }

    /// The moments a placed order sets: its hold's expiry when held, and the account's
    /// inactivity moment (`(before, after)` the order), which this order moves.
    fn schedule_after_placement(
        &mut self,
        cid: &str,
        order_id: &str,
        held: bool,
        placed_at: Timestamp,
        (inactivity_before, inactivity): (Option<Timestamp>, Option<Timestamp>),
    ) {
        let policy = Arc::clone(&self.policy);
        if held && policy.hold_expiry_days > 0 {
            let at = placed_at.plus_us(days_us(policy.hold_expiry_days) + 1);
            self.schedule(
                at,
                cid,
                TimerKind::HoldExpiry {
                    order_id: order_id.to_string(),
                },
            );
        }
        if let Some(due) = inactivity {
            // One inactivity moment per account: the one this order replaces is dropped from
            // the index (it would fire as a no-op), so the index stays bounded by live items.
            if let Some(old) = inactivity_before.filter(|old| *old != due) {
                self.timers.remove(&Timer {
                    at: old,
                    customer_id: cid.to_string(),
                    kind: TimerKind::Inactivity,
                });
            }
            self.schedule(due, cid, TimerKind::Inactivity);
        }
    }

    /// A repeat of a known order (silent when identical, `DUPLICATE_CONFLICT` when it differs)
    /// or one over the account's live-order bound: not decided.
    fn placement_refused(
        &self,
        cid: &str,
        event: &Event,
        order_id: &str,
        amount: Decimal,
        currency: Currency,
        out: &mut Vec<Output>,
    ) -> Option<Outcome> {
        let acc = &self.accounts[cid];
        if acc.knows_order(order_id) {
            if let Some(first) = acc
                .orders()
                .get(order_id)
                .filter(|o| o.amount != amount || o.currency != currency)
            {
                let detail = format!(
                    "order {order_id} was placed before for {} {}; this one says {} {}; the first is kept",
                    format_money(first.amount),
                    first.currency,
                    format_money(amount),
                    currency
                );
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::DuplicateConflict,
                    detail,
                )));
                return Some(Outcome::Rejected);
            }
            return Some(Outcome::Duplicate);
        }
        if acc.orders().len() >= self.policy.bounds.items_per_account {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CapacityExceeded,
                format!(
                    "account {cid} has {} live orders (limits.items_per_account); order {order_id} is not decided",
                    acc.orders().len()
                ),
            )));
            return Some(Outcome::Rejected);
        }
        None
    }

    /// `AMOUNT_ANOMALY`: an order far above the customer's typical one.
    fn amount_anomaly_alert(
        &mut self,
        cid: &str,
        order_id: &str,
        amount_acc: Decimal,
        typical: Option<Decimal>,
        cause: &Cause,
    ) -> Alert {
        let policy = Arc::clone(&self.policy);
        let typical = typical.unwrap_or_default();
        self.alert(
            AlertKind::AmountAnomaly,
            Severity::Warning,
            Subject::customer(cid),
            cause.at,
            order_id,
            vec![
                ("order_id", json!(order_id)),
                ("amount", money(amount_acc)),
                ("typical_order", money(typical)),
                (
                    "factor",
                    json!(policy.anomaly_factor.normalize().to_string()),
                ),
            ],
        )
    }

    pub(super) fn on_order_cancelled(
        &mut self,
        cid: &str,
        event: &Event,
        order_id: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let cap = self.policy.bounds.closed_ids_per_account;
        let acc = self.accounts.get_mut(cid).expect("account exists");
        let Some(order) = acc.orders().get(order_id) else {
            if acc.knows_order(order_id) {
                return Outcome::Duplicate;
            }
            return self.park(cid, event, out);
        };
        let was_held = order.state == OrderState::Held;
        if was_held {
            let decision = self.decision(
                cid,
                order_id,
                Ruling::engine(DecisionStatus::Cancelled, Vec::new()),
                cause,
            );
            out.push(Output::Decision(decision));
        }
        if let Some(acc) = self.accounts.get_mut(cid) {
            acc.close_order_as(order_id, delivery::CANCELLED_ORDER, cap);
        }
        self.cancel_order_deliveries(cid, order_id, cause, out);
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        Outcome::Applied
    }
}

/// What the warnings learn from an order: its amount (for the anomaly median, unless it is the
/// anomaly), its time (for the usual ordering interval) and whether it came near the limit.
fn learn_from_order(
    acc: &mut Account,
    policy: &Policy,
    amount: Decimal,
    at: Timestamp,
    anomaly: bool,
    near_limit: bool,
) {
    let b = &mut acc.behaviour;
    if !anomaly {
        b.order_amounts.push_back(amount);
        while b.order_amounts.len() > policy.anomaly_window {
            b.order_amounts.pop_front();
        }
    }
    let pos = b
        .order_times
        .iter()
        .position(|t| *t > at)
        .unwrap_or(b.order_times.len());
    b.order_times.insert(pos, at);
    while b.order_times.len() > policy.inactivity_window + 1 {
        b.order_times.pop_front();
    }
    b.near_limit.push_back(near_limit);
    while b.near_limit.len() > policy.limit_suggestions.increase_recent_orders {
        b.near_limit.pop_front();
    }
}

/// Books a placed order on its account: approved (its exposure reserved) when nothing held it,
/// otherwise held with its reasons and queued. A zero-amount order closes as soon as it opens,
/// so the decision is made from the caller's copy.
fn book_placed_order(
    acc: &mut Account,
    order: &Order,
    reasons: &[Reason],
    prepay: bool,
    cap: usize,
    conv: &Conv<'_>,
) -> DecisionStatus {
    let hold = (!reasons.is_empty()).then(|| account::Hold {
        reasons: reasons.to_vec(),
        held_at: order.placed_at,
        first_approver: None,
    });
    let status = if hold.is_some() {
        DecisionStatus::Held
    } else {
        DecisionStatus::Approved
    };
    acc.book_order(order.clone(), hold, prepay, cap, conv);
    status
}
