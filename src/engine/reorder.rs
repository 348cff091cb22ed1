//! Cross-topic reordering: an event that arrives before the order it needs is parked for a bounded time and applied when the order arrives (or dead-lettered when it never does).

use super::*;

impl Engine {
    /// Keeps a shipment or cancellation until its order arrives (bounded in count and time).
    pub(super) fn park(&mut self, cid: &str, event: &Event, out: &mut Vec<Output>) -> Outcome {
        let bounds = self.policy.bounds.clone();
        let now = self.now();
        if bounds.pending_per_account == 0 {
            self.resolve_orphan(cid, event.clone(), out);
            return Outcome::Applied;
        }
        // A redelivery of an event that is already waiting waits once (even when the event-id
        // memory has forgotten it or is disabled): two copies would both apply later.
        if self.accounts[cid]
            .pending
            .iter()
            .any(|p| p.event.event_id == event.event_id)
        {
            return Outcome::Duplicate;
        }
        while self.accounts[cid].pending.len() >= bounds.pending_per_account {
            let oldest = self.account_mut(cid).pending.remove(0);
            self.forget_pending_timer(cid, &oldest);
            self.resolve_orphan(cid, oldest.event, out);
        }
        self.account_mut(cid).pending.push(account::ParkedEvent {
            event: event.clone(),
            received_at: now,
        });
        self.schedule(
            now.plus_us(bounds.pending_ttl_us),
            cid,
            TimerKind::PendingExpiry {
                event_id: event.event_id.clone(),
            },
        );
        Outcome::Pending
    }

    /// An event whose order never came: a shipment is still money owed, so it is booked
    /// without an order; a cancellation has nothing to cancel and is dead-lettered.
    pub(super) fn resolve_orphan(&mut self, cid: &str, event: Event, out: &mut Vec<Output>) {
        match &event.body {
            EventBody::ShipmentShipped(shipment) => {
                let outcome = self.ship(cid, &event, shipment, out);
                if outcome == Outcome::Rejected {
                    if let Some(Output::DeadLetter(r)) = out.last_mut() {
                        r.original = Some(crate::codec::encode_event(&event));
                    }
                }
            }
            EventBody::OrderCancelled { order_id } => {
                let mut r = input_error(
                    &event,
                    ErrorCode::OrderUnknown,
                    format!("order {order_id} never arrived; nothing to cancel"),
                );
                r.original = Some(crate::codec::encode_event(&event));
                out.push(Output::DeadLetter(r));
            }
            _ => {}
        }
    }

    pub(super) fn apply_pending_for(
        &mut self,
        cid: &str,
        order_id: &str,
        cause: &Cause,
        out: &mut Vec<Output>,
    ) {
        let acc = self.account_mut(cid);
        let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut acc.pending).into_iter().partition(|p| {
            matches!(&p.event.body,
                EventBody::ShipmentShipped(ShipmentShipped { order_id: o, .. }) | EventBody::OrderCancelled { order_id: o } if o == order_id)
        });
        acc.pending = keep;
        for p in ready {
            self.forget_pending_timer(cid, &p);
            self.dispatch_account_event(cid, &p.event, cause, out);
        }
    }

    /// Drops the expiry moment of a parked event that was resolved before it expired.
    pub(super) fn forget_pending_timer(&mut self, cid: &str, p: &account::ParkedEvent) {
        self.timers.remove(&Timer {
            at: p.received_at.plus_us(self.policy.bounds.pending_ttl_us),
            customer_id: cid.to_string(),
            kind: TimerKind::PendingExpiry {
                event_id: p.event.event_id.clone(),
            },
        });
    }
}
