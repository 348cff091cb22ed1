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

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decision(
        &self,
        cid: &str,
        order_id: &str,
        status: DecisionStatus,
        reasons: Vec<Reason>,
        cause: &Cause,
        actor: Option<&str>,
        note: Option<&str>,
    ) -> Decision {
        let order = self.accounts[cid]
            .orders
            .get(order_id)
            .cloned()
            .expect("decided order is live");
        let hold_id = ends_hold(status).then(|| ids::decision_id(cid, order_id, "initial"));
        self.decision_for(cid, &order, status, reasons, cause, actor, note, hold_id)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn decision_for(
        &self,
        cid: &str,
        order: &Order,
        status: DecisionStatus,
        reasons: Vec<Reason>,
        cause: &Cause,
        actor: Option<&str>,
        note: Option<&str>,
        hold_decision_id: Option<String>,
    ) -> Decision {
        let acc = &self.accounts[cid];
        let terms = rules::terms(acc, &self.policy, self.now());
        let s = self.standing(acc, terms.as_ref(), order.currency);
        Decision {
            decision_id: ids::decision_id(cid, &order.order_id, phase(status)),
            order_id: order.order_id.clone(),
            customer_id: cid.to_string(),
            status,
            reasons,
            amount: order.amount,
            currency: order.currency,
            exposure: s.exposure,
            credit_limit: s.limit,
            available: s.limit.map(|l| l - s.exposure.total),
            decided_at: cause.at,
            source_event_id: cause.source.clone(),
            actor: actor.map(str::to_string),
            utilization: s.utilization,
            group_id: acc.group_id().map(str::to_string),
            hold_decision_id,
            note: note.map(str::to_string),
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

    #[allow(clippy::too_many_arguments)]
    pub(super) fn alert(
        &self,
        kind: AlertKind,
        severity: Severity,
        customer_id: Option<&str>,
        group_id: Option<&str>,
        at: Timestamp,
        discriminator: &str,
        details: Vec<(&'static str, Value)>,
    ) -> Alert {
        let scope = if kind == AlertKind::GroupUtilizationThreshold {
            group_id.unwrap_or_default()
        } else {
            customer_id.or(group_id).unwrap_or_default()
        };
        Alert {
            alert_id: ids::alert_id(kind.as_str(), scope, discriminator),
            kind,
            severity,
            customer_id: customer_id.map(str::to_string),
            group_id: group_id.map(str::to_string),
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
