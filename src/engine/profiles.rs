//! Customer and group profiles: limits, grades, terms, group membership, and the re-check a changed profile triggers.

use super::*;

impl Engine {
    pub(super) fn on_customer_profile(
        &mut self,
        cid: &str,
        event: &Event,
        profile: &CustomerProfile,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let acc = &self.accounts[cid];
        if acc.profile_at.is_some_and(|t| event.occurred_at < t) {
            return Outcome::Duplicate;
        }
        if let Some(r) = profile
            .group_id
            .as_deref()
            .and_then(|g| self.group_capacity(event, g))
        {
            out.push(Output::DeadLetter(r));
            return Outcome::Rejected;
        }
        let acc = &self.accounts[cid];
        if let Some(c) = acc
            .currency
            .filter(|c| *c != profile.currency && acc.holds_money())
        {
            out.push(Output::DeadLetter(input_error(
                event,
                ErrorCode::CurrencyMismatch,
                format!(
                    "account holds {c} items; its currency cannot change to {}",
                    profile.currency
                ),
            )));
            return Outcome::Rejected;
        }
        let old_group = acc.group_id().map(str::to_string);
        let acc = self.accounts.get_mut(cid).expect("account exists");
        acc.profile = Some(profile.clone());
        acc.profile_at = Some(event.occurred_at);
        acc.currency = Some(profile.currency);
        if old_group != profile.group_id {
            if let Some(g) = old_group.as_deref().and_then(|g| self.groups.get_mut(g)) {
                g.members.remove(cid);
            }
            if let Some(gid) = &profile.group_id {
                let g = self.groups.entry(gid.clone()).or_insert_with(|| Group {
                    group_id: gid.clone(),
                    ..Group::default()
                });
                g.members.insert(cid.to_string());
            }
        }
        let warn_days = i64::from(self.policy.review_warning_days);
        if let Some(review) = profile.review_date {
            self.schedule(review.plus_days(-warn_days), cid, TimerKind::ReviewWarning);
            self.schedule(review, cid, TimerKind::ReviewExpired);
        }
        if let Some(t) = &profile.temporary_limit {
            self.schedule(t.expires_at, cid, TimerKind::TempLimitExpiry);
        }
        self.touch(cid);
        self.recheck_holds(cid, cause, out);
        // Leaving a group frees the group's room: its remaining members' queue is re-checked.
        if old_group != profile.group_id {
            let remaining = old_group
                .as_deref()
                .and_then(|g| self.groups.get(g))
                .and_then(|g| g.members.iter().next().cloned());
            if let Some(member) = remaining {
                self.recheck_holds(&member, cause, out);
            }
        }
        Outcome::Applied
    }

    pub(super) fn on_group_profile(
        &mut self,
        event: &Event,
        profile: &GroupProfile,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        if let Some(r) = self.group_capacity(event, &profile.group_id) {
            out.push(Output::DeadLetter(r));
            return Outcome::Rejected;
        }
        let g = self
            .groups
            .entry(profile.group_id.clone())
            .or_insert_with(|| Group {
                group_id: profile.group_id.clone(),
                ..Group::default()
            });
        if g.profile_at.is_some_and(|t| event.occurred_at < t)
            || g.recent_event_ids.contains(&event.event_id)
        {
            return Outcome::Duplicate;
        }
        g.recent_event_ids.insert(
            event.event_id.clone(),
            self.policy.bounds.event_ids_per_account,
        );
        self.changed_groups.insert(profile.group_id.clone());
        let g = self
            .groups
            .get_mut(&profile.group_id)
            .expect("entered above");
        g.profile = Some(profile.clone());
        g.profile_at = Some(event.occurred_at);
        let members: Vec<String> = g.members.iter().cloned().collect();
        // Re-check every member's queue; `recheck_holds` covers the whole group at once.
        if let Some(first) = members.first() {
            self.recheck_holds(first, cause, out);
        }
        for m in &members {
            self.touch(m);
        }
        Outcome::Applied
    }
}
