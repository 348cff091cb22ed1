//! Where decisions and alerts are minted: deterministic ids, explanations, and the per-event finish that runs the warnings.

use super::*;

/// An account's standing as a decision record shows it (see `Engine::standing`).
pub(super) struct Standing {
    pub exposure: ExposureView,
    pub limit: Option<Decimal>,
    pub utilization: Option<String>,
    /// The rate from the item's currency to the account's, for an item in another currency.
    pub fx_rate: Option<String>,
}

/// Whether a decision ends a hold (and names the `held` decision it ends).
pub(super) fn ends_hold(status: DecisionStatus) -> bool {
    matches!(
        status,
        DecisionStatus::Released | DecisionStatus::Rejected | DecisionStatus::Cancelled
    )
}

/// The phase a decision's id is derived from: the initial decision, or the final one.
pub(super) fn phase(status: DecisionStatus) -> &'static str {
    match status {
        DecisionStatus::Approved | DecisionStatus::Held => "initial",
        other => other.as_str(),
    }
}

/// What a decision record says was decided: its status and reasons, and, when a person decided
/// (a release or reject command), who and their note.
pub(super) struct Ruling<'a> {
    pub status: DecisionStatus,
    pub reasons: Vec<Reason>,
    /// `(actor, note)` of a person's command; `None` when the engine decided.
    pub by: Option<(&'a str, &'a str)>,
}

impl<'a> Ruling<'a> {
    /// A decision the engine made (placement, re-check, expiry, cancellation).
    pub fn engine(status: DecisionStatus, reasons: Vec<Reason>) -> Ruling<'a> {
        Ruling {
            status,
            reasons,
            by: None,
        }
    }

    /// A decision a person made by command.
    pub fn person(
        status: DecisionStatus,
        reasons: Vec<Reason>,
        actor: &'a str,
        note: &'a str,
    ) -> Ruling<'a> {
        Ruling {
            status,
            reasons,
            by: Some((actor, note)),
        }
    }

    pub fn actor(&self) -> Option<String> {
        self.by.map(|(actor, _)| actor.to_string())
    }

    pub fn note(&self) -> Option<String> {
        self.by.map(|(_, note)| note.to_string())
    }
}

/// Whom an alert is about: a customer, and for a group threshold the group too.
pub(super) struct Subject<'a> {
    pub customer: &'a str,
    pub group: Option<&'a str>,
}

impl<'a> Subject<'a> {
    pub fn customer(customer: &'a str) -> Subject<'a> {
        Subject {
            customer,
            group: None,
        }
    }
}

impl Engine {
    /// The record of a decision about a live order, with the account as it stands now.
    pub(super) fn decision(
        &self,
        cid: &str,
        order_id: &str,
        ruling: Ruling<'_>,
        cause: &Cause,
    ) -> Decision {
        let order = self.accounts[cid]
            .orders()
            .get(order_id)
            .cloned()
            .expect("decided order is live");
        let hold_id = ends_hold(ruling.status).then(|| ids::decision_id(cid, order_id, "initial"));
        self.decision_for(cid, &order, ruling, cause, hold_id)
    }

    /// The record of a decision about `order` (the caller's copy: an order that closed as it
    /// was decided is no longer live), with the account as it stands now.
    pub(super) fn decision_for(
        &self,
        cid: &str,
        order: &Order,
        ruling: Ruling<'_>,
        cause: &Cause,
        hold_decision_id: Option<String>,
    ) -> Decision {
        let (actor, note) = (ruling.actor(), ruling.note());
        let status = ruling.status;
        let acc = &self.accounts[cid];
        let terms = rules::terms(acc, &self.policy, self.now());
        let s = self.standing(acc, terms.as_ref(), order.currency);
        Decision {
            decision_id: ids::decision_id(cid, &order.order_id, phase(status)),
            order_id: order.order_id.clone(),
            customer_id: cid.to_string(),
            status,
            reasons: ruling.reasons,
            amount: order.amount,
            currency: order.currency,
            exposure: s.exposure,
            credit_limit: s.limit,
            available: s.limit.map(|l| l - s.exposure.total),
            decided_at: cause.at,
            source_event_id: cause.source.clone(),
            actor,
            utilization: s.utilization,
            group_id: acc.group_id().map(str::to_string),
            hold_decision_id,
            note,
            amount_account_currency: s.fx_rate.as_ref().map(|_| order.amount_account),
            fx_rate: s.fx_rate,
        }
    }

    /// What every decision record says of its account as it stands: its exposure, limit and
    /// utilization, and the rate converting an item in `currency` when that is not the
    /// account's (and a rate exists).
    pub(super) fn standing(
        &self,
        acc: &Account,
        terms: Option<&Terms>,
        currency: Currency,
    ) -> Standing {
        let exposure = acc.exposure();
        let limit = terms.map(|t| t.limit_effective);
        let fx_rate = terms
            .map(|t| t.currency)
            .or(acc.currency)
            .filter(|c| *c != currency)
            .and_then(|c| self.rates.multiplier(currency, c))
            .map(|r| r.normalize().to_string());
        Standing {
            exposure,
            limit,
            utilization: limit.map(|l| match warnings::utilization(exposure.total, l) {
                Some(u) => format_ratio(u),
                None => "unbounded".to_string(),
            }),
            fx_rate,
        }
    }

    /// An alert about `subject`; its id is derived from the kind, the scope (the group for a
    /// group threshold, else the customer) and `discriminator`.
    pub(super) fn alert(
        &self,
        kind: AlertKind,
        severity: Severity,
        subject: Subject<'_>,
        at: Timestamp,
        discriminator: &str,
        details: Vec<(&'static str, Value)>,
    ) -> Alert {
        let scope = match subject.group {
            Some(group) if kind == AlertKind::GroupUtilizationThreshold => group,
            _ => subject.customer,
        };
        Alert {
            alert_id: ids::alert_id(kind.as_str(), scope, discriminator),
            kind,
            severity,
            customer_id: Some(subject.customer.to_string()),
            group_id: subject.group.map(str::to_string),
            at,
            details: details.into_iter().collect::<BTreeMap<_, _>>(),
        }
    }

    /// After an event or a timer: utilization thresholds (customer and group) and behaviour
    /// suggestions for every account whose position changed.
    pub(super) fn finish(&mut self, cause: &Cause, out: &mut Vec<Output>) {
        let touched = std::mem::take(&mut self.touched);
        let mut groups_done: Vec<String> = Vec::new();
        for cid in &touched {
            self.utilization_alerts(cid, cause, out);
            self.behaviour_alerts(cid, cause, out);
            if let Some(gid) = self
                .accounts
                .get(cid)
                .and_then(|a| a.group_id())
                .map(str::to_string)
            {
                if !groups_done.contains(&gid) {
                    self.group_utilization_alerts(&gid, cid, cause, out);
                    groups_done.push(gid);
                }
            }
        }
    }
}
