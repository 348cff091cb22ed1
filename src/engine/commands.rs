//! Manual commands from credit managers: release and reject with four-eyes, block and unblock, grade overrides.

use super::*;

impl Engine {
    /// A command about a hold or an account (delivery commands go to `on_delivery_command`).
    pub(super) fn on_command(
        &mut self,
        cid: &str,
        event: &Event,
        command: &Command,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Outcome {
        let (actor, note) = (command.actor.as_str(), command.note.as_str());
        let order_id = command.order_id.as_deref();
        let kind = command.kind;
        match kind {
            CommandKind::Block => {
                self.account_mut(cid).manual_block = Some(actor.to_string());
                self.touch(cid);
                Outcome::Applied
            }
            CommandKind::Unblock => {
                self.account_mut(cid).manual_block = None;
                self.touch(cid);
                self.recheck_holds(cid, cause, out);
                Outcome::Applied
            }
            // Dispatched to `on_delivery_command` (never here).
            CommandKind::ReleaseDelivery | CommandKind::RejectDelivery => Outcome::Rejected,
            CommandKind::ReleaseHold | CommandKind::RejectHold => {
                let order_id = order_id.unwrap_or_default();
                let held = self.accounts[cid]
                    .orders()
                    .get(order_id)
                    .filter(|o| o.state == OrderState::Held);
                if held.is_none() {
                    out.push(Output::DeadLetter(input_error(
                        event,
                        ErrorCode::OrderNotHeld,
                        format!("order {order_id} is not held for customer {cid}"),
                    )));
                    return Outcome::Rejected;
                }
                let by = ByPerson { actor, note };
                if kind == CommandKind::RejectHold {
                    self.reject_hold(cid, order_id, by, cause, out);
                } else if let Some(done) = self.release_hold(cid, event, order_id, by, cause, out) {
                    return done;
                }
                self.touch(cid);
                self.recheck_holds(cid, cause, out);
                Outcome::Applied
            }
        }
    }
}

/// Who sent a manual command, and the note they gave.
#[derive(Clone, Copy)]
pub(super) struct ByPerson<'a> {
    pub actor: &'a str,
    pub note: &'a str,
}

impl Engine {
    /// Rejects a held order by hand: the decision, then the order closed.
    fn reject_hold(
        &mut self,
        cid: &str,
        order_id: &str,
        by: ByPerson<'_>,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let ByPerson { actor, note } = by;
        let detail = format!("rejected by {actor}: {note}");
        let reasons = vec![Reason {
            code: ReasonCode::Manual,
            detail,
        }];
        let d = self.decision(
            cid,
            order_id,
            Ruling::person(DecisionStatus::Rejected, reasons, actor, note),
            cause,
        );
        out.push(Output::Decision(d));
        let cap = self.policy.bounds.closed_ids_per_account;
        self.account_mut(cid).close_rejected_order(order_id, cap);
    }

    /// Releases a held order by hand (four-eyes above `four_eyes_amount`: the first approval
    /// only records the approver, a second by the same person is refused). `Some` when the
    /// command ends there, without a release.
    fn release_hold(
        &mut self,
        cid: &str,
        event: &Event,
        order_id: &str,
        by: ByPerson<'_>,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) -> Option<Outcome> {
        let ByPerson { actor, note } = by;
        let order = &self.accounts[cid].orders()[order_id];
        let four_eyes = self
            .policy
            .four_eyes_amount
            .is_some_and(|max| order.amount_account > max);
        let first = order.hold.as_ref().and_then(|h| h.first_approver.clone());
        let detail = match (four_eyes, first) {
            (false, _) => format!("released by {actor}: {note}"),
            (true, None) => {
                if let Some(h) = self.account_mut(cid).order_hold_mut(order_id) {
                    h.first_approver = Some(actor.to_string());
                }
                return Some(Outcome::Applied);
            }
            (true, Some(first)) if first == actor => {
                out.push(Output::DeadLetter(input_error(
                    event,
                    ErrorCode::FourEyesSameActor,
                    format!("order {order_id} needs a second approver other than {actor}"),
                )));
                return Some(Outcome::Rejected);
            }
            (true, Some(first)) => {
                format!("released by {actor} (second approval; first by {first}): {note}")
            }
        };
        let policy = Arc::clone(&self.policy);
        let now = self.now();
        let prepay = rules::terms(&self.accounts[cid], &policy, now).is_some_and(|t| t.prepay);
        let cap = policy.bounds.closed_ids_per_account;
        // Reserve first so the decision shows the exposure after it.
        let hold_id = ids::decision_id(cid, order_id, "initial");
        let order_snapshot = self.accounts[cid].orders().get(order_id).cloned();
        let account = self
            .account_currency(&self.accounts[cid])
            .or(order_snapshot.as_ref().map(|o| o.currency));
        let conv = Conv {
            rates: &self.rates,
            account: account.unwrap_or_else(|| Currency::parse("EUR").expect("ISO")),
        };
        if let Some(acc) = self.accounts.get_mut(cid) {
            acc.open_order(order_id, prepay, cap, &conv);
        }
        let reasons = vec![Reason {
            code: ReasonCode::Manual,
            detail,
        }];
        if let Some(o) = order_snapshot {
            let d = self.decision_for(
                cid,
                &o,
                Ruling::person(DecisionStatus::Released, reasons, actor, note),
                cause,
                Some(hold_id),
            );
            out.push(Output::Decision(d));
        }
        None
    }
}
