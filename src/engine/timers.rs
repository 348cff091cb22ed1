//! Due moments: the clock advancing through the index, each kind of timer fired, and the moments an account's state implies (re-derived on restore).

use super::*;

impl Engine {
    /// Fires every index entry due at or before `until`, in moment order, with the clock set
    /// to each entry's moment so that it is judged as of then.
    pub(super) fn fire_due_until(&mut self, until: Timestamp, out: &mut Vec<Output>) {
        while self.timers.first().is_some_and(|t| t.at <= until) {
            let Some(timer) = self.timers.pop_first() else {
                break;
            };
            if self.clock.is_none_or(|c| c < timer.at) {
                self.clock = Some(timer.at);
            }
            // Entries for "has passed" moments sit 1 us after the moment; report the moment.
            let moment = match &timer.kind {
                TimerKind::HoldExpiry { .. }
                | TimerKind::DeliveryHoldExpiry { .. }
                | TimerKind::Receivable { stage: 0, .. } => timer.at.plus_us(-1),
                _ => timer.at,
            };
            let cause = Cause {
                source: format!("clock:{moment}"),
                at: moment,
                fx: false,
            };
            self.fire(&timer, &cause, out);
            self.finish(&cause, out);
        }
    }

    pub(super) fn fire(&mut self, timer: &Timer, cause: &Cause, out: &mut Vec<Output>) {
        let cid = timer.customer_id.as_str();
        if !self.accounts.contains_key(cid) {
            return;
        }
        self.changed_accounts.insert(cid.to_string());
        match &timer.kind {
            TimerKind::Receivable { .. } => {
                self.fire_receivable(timer, cause, out);
            }
            TimerKind::ReviewWarning | TimerKind::ReviewExpired => {
                self.fire_review(timer, cause, out);
            }
            TimerKind::TempLimitExpiry => {
                self.fire_temp_limit_expiry(timer, cause, out);
            }
            TimerKind::Inactivity => {
                self.fire_inactivity(timer, cause, out);
            }
            TimerKind::HoldExpiry { .. } => {
                self.fire_hold_expiry(timer, cause, out);
            }
            TimerKind::PendingExpiry { .. } => {
                self.fire_pending_expiry(timer, cause, out);
            }
            TimerKind::DeliveryHoldExpiry { .. } => {
                self.fire_delivery_hold_expiry(timer, cause, out);
            }
        }
    }

    /// An item reaching its next aging stage: overdue, an aging bucket, a write-off candidate.
    fn fire_receivable(&mut self, timer: &Timer, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let cid = timer.customer_id.as_str();
        let TimerKind::Receivable { shipment_id, stage } = &timer.kind else {
            return;
        };
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some(r) = acc
            .receivables()
            .iter()
            .find(|r| &r.shipment_id == shipment_id)
        else {
            return;
        };
        if r.next_stage != *stage {
            return;
        }
        let (kind, severity, days) = match AgingStage::of(&policy, *stage) {
            AgingStage::Overdue => (AlertKind::ItemOverdue, Severity::Warning, 0),
            AgingStage::Bucket { days, last } => {
                let sev = if last {
                    Severity::Critical
                } else {
                    Severity::Warning
                };
                (AlertKind::AgingBucket, sev, days)
            }
            AgingStage::WriteOff | AgingStage::Past => (
                AlertKind::WriteOffCandidate,
                Severity::Critical,
                policy.write_off_days,
            ),
        };
        let mut details = vec![
            ("shipment_id", json!(r.shipment_id)),
            ("order_id", json!(r.order_id)),
            ("amount_open", money(r.open)),
            ("due_at", json!(r.due_at.to_rfc3339())),
            ("currency", json!(acc.currency.map(|c| c.to_string()))),
        ];
        if kind != AlertKind::ItemOverdue {
            details.push(("days_past_due", json!(days)));
        }
        if kind == AlertKind::AgingBucket {
            details.push(("bucket", json!(format!("{days}+"))));
        }
        let due_at = r.due_at;
        let alert = self.alert(
            kind,
            severity,
            Subject::customer(cid),
            cause.at,
            &format!("{shipment_id}|{stage}"),
            details,
        );
        out.push(Output::Alert(alert));
        let next = stage + 1;
        let next_at = receivable_timer_at(&policy, due_at, next);
        if let Some(a) = self.accounts.get_mut(cid) {
            a.set_next_stage(shipment_id, next);
        }
        if let Some(at) = next_at {
            self.schedule(
                at,
                cid,
                TimerKind::Receivable {
                    shipment_id: shipment_id.clone(),
                    stage: next,
                },
            );
        }
        self.touch(cid);
    }

    /// A limit review coming up, or passed.
    fn fire_review(&mut self, timer: &Timer, _cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let cid = timer.customer_id.as_str();
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some(review) = acc.profile.as_ref().and_then(|p| p.review_date) else {
            return;
        };
        let warning = timer.kind == TimerKind::ReviewWarning;
        let expected = if warning {
            review.plus_days(-i64::from(policy.review_warning_days))
        } else {
            review
        };
        let marks = &acc.marks;
        let already = if warning {
            marks.review_warned_for
        } else {
            marks.review_expired_for
        };
        if expected != timer.at || already == Some(review) || (warning && self.now() >= review) {
            return;
        }
        let (kind, severity) = if warning {
            (AlertKind::LimitReviewDue, Severity::Info)
        } else {
            (AlertKind::LimitExpired, Severity::Warning)
        };
        let limit = acc
            .profile
            .as_ref()
            .map(|p| p.credit_limit)
            .unwrap_or_default();
        let alert = self.alert(
            kind,
            severity,
            Subject::customer(cid),
            timer.at,
            &review.0.to_string(),
            vec![
                ("review_date", json!(review.to_date())),
                ("credit_limit", money(limit)),
                (
                    "days_ahead",
                    json!(if warning {
                        policy.review_warning_days
                    } else {
                        0
                    }),
                ),
            ],
        );
        out.push(Output::Alert(alert));
        let acc = self.account_mut(cid);
        if warning {
            acc.marks.review_warned_for = Some(review);
        } else {
            acc.marks.review_expired_for = Some(review);
        }
    }

    /// A temporary limit ending.
    fn fire_temp_limit_expiry(&mut self, timer: &Timer, _cause: &Cause, out: &mut Vec<Output>) {
        let cid = timer.customer_id.as_str();
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some(p) = acc.profile.as_ref() else {
            return;
        };
        let Some(temp) = p.temporary_limit.as_ref() else {
            return;
        };
        if temp.expires_at != timer.at || acc.marks.temp_expired_for == Some(temp.expires_at) {
            return;
        }
        let alert = self.alert(
            AlertKind::TempLimitExpired,
            Severity::Info,
            Subject::customer(cid),
            timer.at,
            &temp.expires_at.0.to_string(),
            vec![
                ("temporary_amount", money(temp.amount)),
                ("expires_at", json!(temp.expires_at.to_rfc3339())),
                ("credit_limit", money(p.credit_limit)),
                ("exposure", money(acc.exposure_total())),
            ],
        );
        out.push(Output::Alert(alert));
        self.account_mut(cid).marks.temp_expired_for = Some(timer.at);
        self.touch(cid);
    }

    /// A customer silent for longer than its usual ordering interval.
    fn fire_inactivity(&mut self, timer: &Timer, _cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let cid = timer.customer_id.as_str();
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some((due, usual_days)) = warnings::inactivity_due(acc, &policy) else {
            return;
        };
        let last = acc
            .behaviour
            .order_times
            .back()
            .copied()
            .unwrap_or_default();
        if due != timer.at || acc.behaviour.inactivity_alerted_for == Some(last) {
            return;
        }
        let alert = self.alert(
            AlertKind::Inactivity,
            Severity::Info,
            Subject::customer(cid),
            timer.at,
            &last.0.to_string(),
            vec![
                ("last_order_at", json!(last.to_rfc3339())),
                (
                    "usual_interval_days",
                    json!(usual_days.normalize().to_string()),
                ),
                (
                    "silent_days",
                    json!(timer.at.days_since(last).normalize().to_string()),
                ),
            ],
        );
        out.push(Output::Alert(alert));
        self.account_mut(cid).behaviour.inactivity_alerted_for = Some(last);
    }

    /// A held order past `hold_expiry_days`: rejected `HOLD_EXPIRED`.
    fn fire_hold_expiry(&mut self, timer: &Timer, cause: &Cause, out: &mut Vec<Output>) {
        let policy = Arc::clone(&self.policy);
        let cid = timer.customer_id.as_str();
        let TimerKind::HoldExpiry { order_id } = &timer.kind else {
            return;
        };
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let Some(order) = acc
            .orders()
            .get(order_id)
            .filter(|o| o.state == OrderState::Held)
        else {
            return;
        };
        if order
            .placed_at
            .plus_us(days_us(policy.hold_expiry_days) + 1)
            != timer.at
        {
            return;
        }
        let source = order.placed_event_id.clone();
        let expired_cause = Cause {
            source,
            at: cause.at,
            fx: false,
        };
        let reasons = vec![Reason {
            code: ReasonCode::HoldExpired,
            detail: format!("held longer than {} days", policy.hold_expiry_days),
        }];
        let d = self.decision(
            cid,
            order_id,
            Ruling::engine(DecisionStatus::Rejected, reasons),
            &expired_cause,
        );
        out.push(Output::Decision(d));
        self.account_mut(cid)
            .close_rejected_order(order_id, policy.bounds.closed_ids_per_account);
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
    }

    /// A parked event whose order never came.
    fn fire_pending_expiry(&mut self, timer: &Timer, _cause: &Cause, out: &mut Vec<Output>) {
        let cid = timer.customer_id.as_str();
        let TimerKind::PendingExpiry { event_id } = &timer.kind else {
            return;
        };
        let acc = self.account_mut(cid);
        let Some(pos) = acc
            .pending
            .iter()
            .position(|p| &p.event.event_id == event_id)
        else {
            return;
        };
        let pending = acc.pending.remove(pos);
        self.resolve_orphan(cid, pending.event, out);
    }

    /// A held delivery past its expiry.
    fn fire_delivery_hold_expiry(&mut self, timer: &Timer, cause: &Cause, out: &mut Vec<Output>) {
        let cid = timer.customer_id.as_str();
        let TimerKind::DeliveryHoldExpiry { delivery_id } = &timer.kind else {
            return;
        };
        self.expire_delivery(cid, delivery_id, timer.at, cause, out);
    }

    /// Every due moment an account's state implies.
    pub(super) fn schedule_account_timers(&mut self, cid: &str) {
        let policy = Arc::clone(&self.policy);
        let Some(acc) = self.accounts.get(cid) else {
            return;
        };
        let mut timers: Vec<(Timestamp, TimerKind)> = Vec::new();
        for r in acc.receivables() {
            if let Some(at) = receivable_timer_at(&policy, r.due_at, r.next_stage) {
                timers.push((
                    at,
                    TimerKind::Receivable {
                        shipment_id: r.shipment_id.clone(),
                        stage: r.next_stage,
                    },
                ));
            }
        }
        if let Some(p) = &acc.profile {
            if let Some(review) = p.review_date {
                timers.push((
                    review.plus_days(-i64::from(policy.review_warning_days)),
                    TimerKind::ReviewWarning,
                ));
                timers.push((review, TimerKind::ReviewExpired));
            }
            if let Some(t) = &p.temporary_limit {
                timers.push((t.expires_at, TimerKind::TempLimitExpiry));
            }
        }
        if let Some(due) = warnings::inactivity_due_at(acc, &policy) {
            timers.push((due, TimerKind::Inactivity));
        }
        if policy.hold_expiry_days > 0 {
            for id in acc.holds() {
                let at = acc.orders()[id]
                    .placed_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1);
                timers.push((
                    at,
                    TimerKind::HoldExpiry {
                        order_id: id.clone(),
                    },
                ));
            }
        }
        if policy.hold_expiry_days > 0 {
            for id in acc.held_deliveries() {
                let at = acc.deliveries()[id]
                    .requested_at
                    .plus_us(days_us(policy.hold_expiry_days) + 1);
                timers.push((
                    at,
                    TimerKind::DeliveryHoldExpiry {
                        delivery_id: id.clone(),
                    },
                ));
            }
        }
        for p in &acc.pending {
            timers.push((
                p.received_at.plus_us(policy.bounds.pending_ttl_us),
                TimerKind::PendingExpiry {
                    event_id: p.event.event_id.clone(),
                },
            ));
        }
        for (at, kind) in timers {
            self.schedule(at, cid, kind);
        }
    }
}

/// What an aging stage number means under a policy. The number is what receivables and their
/// due moments store (0: overdue; 1..=n: the n aging buckets; n+1: write-off candidate), so
/// that a snapshot does not depend on the bucket list; this is how it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AgingStage {
    Overdue,
    /// An aging bucket `days` past due; `last` for the policy's last bucket.
    Bucket {
        days: u32,
        last: bool,
    },
    WriteOff,
    /// Past the write-off stage: nothing further is due.
    Past,
}

impl AgingStage {
    pub(super) fn of(policy: &Policy, stage: u8) -> AgingStage {
        let buckets = &policy.aging_buckets_days;
        match usize::from(stage) {
            0 => AgingStage::Overdue,
            n if n <= buckets.len() => AgingStage::Bucket {
                days: buckets[n - 1],
                last: n == buckets.len(),
            },
            n if n == buckets.len() + 1 => AgingStage::WriteOff,
            _ => AgingStage::Past,
        }
    }
}

/// When a receivable due at `due_at` reaches aging stage `stage` (see [`AgingStage`]); `None`
/// past the last stage.
pub(super) fn receivable_timer_at(
    policy: &Policy,
    due_at: Timestamp,
    stage: u8,
) -> Option<Timestamp> {
    match AgingStage::of(policy, stage) {
        AgingStage::Overdue => Some(due_at.plus_us(1)),
        AgingStage::Bucket { days, .. } => Some(due_at.plus_days(i64::from(days))),
        AgingStage::WriteOff => Some(due_at.plus_days(i64::from(policy.write_off_days))),
        AgingStage::Past => None,
    }
}
