//! What actually happened to each order in the history: its events, its amount, and how its
//! receivables ended (paid on time, paid late, still open, a write-off candidate).
//!
//! The outcome is read off the **baseline** engine as it books the history (due dates from its
//! terms, payments applied by its settlement rules), because shipments and payments are in the
//! file whatever a policy decided: the goods left and the money came (or did not) in history.

use crate::engine::{Account, Engine};
use crate::model::*;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::HashMap;

/// One input event that touched an order, for the report's links.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRef {
    /// Line number in the input file (1-based).
    pub line: u64,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub event_id: String,
    pub at: Timestamp,
}

/// An order of the history (first `order.placed` seen for its customer and id).
#[derive(Clone, Debug)]
pub struct OrderInfo {
    pub customer_id: String,
    pub order_id: String,
    pub placed_at: Timestamp,
    pub amount: Decimal,
    pub currency: Currency,
    /// Amount and currency of the account (from the baseline's first decision).
    pub amount_account: Decimal,
    pub account_currency: Currency,
    /// The customer's grade when the baseline first decided the order.
    pub grade: Option<Grade>,
    pub events: Vec<EventRef>,
    pub shipments: Vec<u32>,
}

/// A receivable as the baseline booked it.
#[derive(Clone, Debug)]
pub struct Shipment {
    /// The history's order it shipped, if known.
    pub order: Option<u32>,
    pub amount: Decimal,
    pub due_at: Timestamp,
    /// When it was fully settled, and whether any of it was paid (rather than credited).
    pub settled: Option<(Timestamp, bool)>,
}

/// How an order ended in the history, worst receivable first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Never shipped (cancelled, rejected, or still open at the end).
    NotShipped,
    /// Settled wholly by credit notes (returned, reduced).
    Credited,
    PaidOnTime,
    /// Shipped, open at the end, not yet due.
    OpenNotDue,
    /// Paid in full, this many whole days after the due date.
    PaidLate(u32),
    /// Still open at the end, this many whole days past due.
    Overdue(u32),
    /// Still open at the end, at least `aging.write_off_days` past due.
    WriteOffCandidate(u32),
}

/// Whether an outcome is a credit loss (or near one), good business, or neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Bad,
    Good,
    Neutral,
}

impl Outcome {
    pub fn kind(self) -> &'static str {
        match self {
            Outcome::NotShipped => "not_shipped",
            Outcome::Credited => "credited",
            Outcome::PaidOnTime => "paid_on_time",
            Outcome::OpenNotDue => "open_not_due",
            Outcome::PaidLate(_) => "paid_late",
            Outcome::Overdue(_) => "still_overdue",
            Outcome::WriteOffCandidate(_) => "write_off_candidate",
        }
    }

    /// Days late or past due, where the outcome has them.
    pub fn days(self) -> Option<u32> {
        match self {
            Outcome::PaidLate(d) | Outcome::Overdue(d) | Outcome::WriteOffCandidate(d) => Some(d),
            _ => None,
        }
    }

    /// Bad: paid `late_days` or more late, still overdue, or a write-off candidate. Good: paid
    /// (on time or less late than that). Neutral: nothing shipped, credited, or not yet due.
    pub fn risk(self, late_days: u32) -> Risk {
        match self {
            Outcome::WriteOffCandidate(_) | Outcome::Overdue(_) => Risk::Bad,
            Outcome::PaidLate(d) if d >= late_days => Risk::Bad,
            Outcome::PaidLate(_) | Outcome::PaidOnTime => Risk::Good,
            Outcome::NotShipped | Outcome::Credited | Outcome::OpenNotDue => Risk::Neutral,
        }
    }

    /// The outcome kinds in report order.
    pub const KINDS: [&'static str; 7] = [
        "paid_on_time",
        "paid_late",
        "still_overdue",
        "write_off_candidate",
        "open_not_due",
        "credited",
        "not_shipped",
    ];
}

/// Whole days from `from` to `to` (0 when `to` is not later).
pub fn whole_days(from: Timestamp, to: Timestamp) -> u32 {
    u32::try_from(to.0.saturating_sub(from.0).max(0) / DAY_US).unwrap_or(u32::MAX)
}

type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Orders numbered in the order the history first places them, per customer: every policy's
/// trail builds its own from the same events, so the numbers agree without sharing state.
#[derive(Default)]
pub struct OrderIndex {
    customers: Map<Map<u32>>,
    len: u32,
}

impl OrderIndex {
    /// The number of the order `event` places, when it is the first `order.placed` of it.
    pub fn note(&mut self, event: &Event) -> Option<u32> {
        let (EventBody::OrderPlaced(OrderPlaced { order_id, .. }), Some(cid)) =
            (&event.body, event.customer_id.as_deref())
        else {
            return None;
        };
        let orders = match self.customers.get_mut(cid) {
            Some(o) => o,
            None => self.customers.entry(cid.to_string()).or_default(),
        };
        if orders.contains_key(order_id.as_str()) {
            return None;
        }
        orders.insert(order_id.clone(), self.len);
        self.len += 1;
        Some(self.len - 1)
    }

    pub fn get(&self, customer_id: &str, order_id: &str) -> Option<u32> {
        self.customers.get(customer_id)?.get(order_id).copied()
    }
}

#[derive(Default)]
struct CustomerTrack {
    shipments: Map<u32>,
    /// Shipments booked and not yet seen settled.
    open: Vec<u32>,
}

/// The history's orders and receivables, built while the baseline engine applies the file.
#[derive(Default)]
pub struct History {
    pub orders: Vec<OrderInfo>,
    pub shipments: Vec<Shipment>,
    index: OrderIndex,
    customers: Map<CustomerTrack>,
    /// Latest event time seen (the end of the history).
    pub end: Option<Timestamp>,
    pub first: Option<Timestamp>,
}

impl History {
    /// The order index of `(customer_id, order_id)`, if the history placed it.
    pub fn order_index(&self, customer_id: &str, order_id: &str) -> Option<u32> {
        self.index.get(customer_id, order_id)
    }

    /// Notes an event before the engines apply it: a new order, or an event of a known order.
    pub fn note_event(&mut self, line: u64, event: &Event) {
        let at = event.occurred_at;
        self.first = Some(self.first.map_or(at, |f| f.min(at)));
        self.end = Some(self.end.map_or(at, |e| e.max(at)));
        let Some(cid) = event.customer_id.as_deref() else {
            return;
        };
        if let (
            Some(_),
            EventBody::OrderPlaced(OrderPlaced {
                order_id,
                amount,
                currency,
            }),
        ) = (self.index.note(event), &event.body)
        {
            self.orders.push(OrderInfo {
                customer_id: cid.to_string(),
                order_id: order_id.clone(),
                placed_at: at,
                amount: *amount,
                currency: *currency,
                amount_account: *amount,
                account_currency: *currency,
                grade: None,
                events: Vec::new(),
                shipments: Vec::new(),
            });
        }
        let order_id = match &event.body {
            EventBody::OrderPlaced(OrderPlaced { order_id, .. })
            | EventBody::OrderCancelled { order_id }
            | EventBody::ShipmentShipped(ShipmentShipped { order_id, .. }) => order_id,
            EventBody::DeliveryRequested(d) => &d.order_id,
            EventBody::Command(Command {
                order_id: Some(order_id),
                ..
            }) => order_id,
            _ => return,
        };
        if let Some(idx) = self.order_index(cid, order_id) {
            self.orders[idx as usize]
                .events
                .push(event_ref(line, event));
        }
    }

    /// Reads what the baseline engine did with `event`: the first decision of a new order
    /// (account amount and grade), receivables it booked, and receivables it settled.
    pub fn after_baseline(
        &mut self,
        line: u64,
        event: &Event,
        engine: &Engine,
        outputs: &[Output],
    ) {
        for o in outputs {
            if let Output::Decision(d) = o {
                self.note_first_decision(d, engine);
            }
        }
        // Only these book (a shipment, or one that waited for its order) or settle.
        let event_order = match &event.body {
            EventBody::OrderPlaced(OrderPlaced { order_id, .. })
            | EventBody::ShipmentShipped(ShipmentShipped { order_id, .. }) => {
                Some(order_id.as_str())
            }
            EventBody::Settlement(_) => None,
            _ => return,
        };
        let Some(cid) = event.customer_id.as_deref() else {
            return;
        };
        let Some(acc) = engine.account(cid) else {
            return;
        };
        // Taken out of the map while it is worked on, so the steps below can borrow `self`.
        let (key, mut track) = self
            .customers
            .remove_entry(cid)
            .unwrap_or_else(|| (cid.to_string(), CustomerTrack::default()));
        let mut touched = Vec::new();
        self.note_settled(cid, event_order, acc, &mut track, &mut touched);
        self.reconcile_open(cid, event.occurred_at, acc, &mut track, &mut touched);
        self.customers.insert(key, track);
        // The settling event belongs to the orders it settled.
        if touched.is_empty() {
            return;
        }
        let r = event_ref(line, event);
        for idx in touched {
            if let Some(o) = self.shipments[idx as usize].order {
                let order = &mut self.orders[o as usize];
                if order.events.last().map(|e| e.line) != Some(line) {
                    order.events.push(r.clone());
                }
            }
        }
    }

    /// The baseline's newly settled items (newest last; stop at the first one already known
    /// settled), including one booked and settled at once by unapplied credit.
    fn note_settled(
        &mut self,
        cid: &str,
        event_order: Option<&str>,
        acc: &Account,
        track: &mut CustomerTrack,
        touched: &mut Vec<u32>,
    ) {
        for item in acc.behaviour.settled.iter().rev() {
            let idx = match track.shipments.get(item.shipment_id.as_str()) {
                Some(&idx) if self.shipments[idx as usize].settled.is_some() => break,
                Some(&idx) => idx,
                None => {
                    let order = event_order.and_then(|o| self.index.get(cid, o));
                    let shipment = Shipment {
                        order,
                        amount: item.amount,
                        due_at: item.due_at,
                        settled: None,
                    };
                    self.book(track, &item.shipment_id, shipment)
                }
            };
            self.shipments[idx as usize].settled = Some((item.settled_at, !item.paid.is_zero()));
            touched.push(idx);
        }
        let shipments = &self.shipments;
        track
            .open
            .retain(|&idx| shipments[idx as usize].settled.is_none());
    }

    /// The tracked open items against the baseline's receivables: new ones booked; ones gone
    /// without a settled item (settled beyond the bounded settled history) settled at `at`.
    fn reconcile_open(
        &mut self,
        cid: &str,
        at: Timestamp,
        acc: &Account,
        track: &mut CustomerTrack,
        touched: &mut Vec<u32>,
    ) {
        // An event books or settles, never both, so equal counts mean nothing else changed.
        match acc.receivables().len().cmp(&track.open.len()) {
            std::cmp::Ordering::Equal => {}
            std::cmp::Ordering::Greater => {
                for r in acc.receivables() {
                    if track.shipments.contains_key(r.shipment_id.as_str()) {
                        continue;
                    }
                    let shipment = Shipment {
                        order: self.index.get(cid, &r.order_id),
                        amount: r.amount,
                        due_at: r.due_at,
                        settled: None,
                    };
                    let idx = self.book(track, &r.shipment_id, shipment);
                    track.open.push(idx);
                }
            }
            std::cmp::Ordering::Less => {
                let present: Vec<u32> = acc
                    .receivables()
                    .iter()
                    .filter_map(|r| track.shipments.get(r.shipment_id.as_str()).copied())
                    .collect();
                let shipments = &mut self.shipments;
                track.open.retain(|&idx| {
                    if present.contains(&idx) {
                        return true;
                    }
                    shipments[idx as usize].settled = Some((at, true));
                    touched.push(idx);
                    false
                });
            }
        }
    }

    /// Records a shipment first seen in the baseline's receivables or settled items: its
    /// index, filed under its shipment id and under its order.
    fn book(&mut self, track: &mut CustomerTrack, shipment_id: &str, shipment: Shipment) -> u32 {
        let idx = self.shipments.len() as u32;
        if let Some(o) = shipment.order {
            self.orders[o as usize].shipments.push(idx);
        }
        self.shipments.push(shipment);
        track.shipments.insert(shipment_id.to_string(), idx);
        idx
    }

    fn note_first_decision(&mut self, d: &Decision, engine: &Engine) {
        if d.status != DecisionStatus::Approved && d.status != DecisionStatus::Held {
            return;
        }
        let Some(idx) = self.order_index(&d.customer_id, &d.order_id) else {
            return;
        };
        let o = &mut self.orders[idx as usize];
        if o.grade.is_some() {
            return;
        }
        let terms = engine.terms(&d.customer_id);
        o.grade = terms.as_ref().map(|t| t.grade);
        match d.amount_account_currency {
            Some(a) => {
                o.amount_account = a;
                o.account_currency = terms.map(|t| t.currency).unwrap_or(d.currency);
            }
            None => {
                o.amount_account = d.amount;
                o.account_currency = d.currency;
            }
        }
    }

    /// How `order` ended by the end of the history.
    pub fn outcome(&self, order: &OrderInfo, write_off_days: u32) -> Outcome {
        let end = self.end.unwrap_or_default();
        let mut worst = Outcome::NotShipped;
        for &idx in &order.shipments {
            let s = &self.shipments[idx as usize];
            let o = match s.settled {
                Some((_, false)) => Outcome::Credited,
                Some((at, true)) => match whole_days(s.due_at, at) {
                    0 => Outcome::PaidOnTime,
                    d => Outcome::PaidLate(d),
                },
                None if end <= s.due_at => Outcome::OpenNotDue,
                None => match whole_days(s.due_at, end) {
                    d if d >= write_off_days => Outcome::WriteOffCandidate(d),
                    d => Outcome::Overdue(d),
                },
            };
            worst = worst.max(o);
        }
        worst
    }
}

fn event_ref(line: u64, event: &Event) -> EventRef {
    EventRef {
        line,
        kind: event.type_str(),
        event_id: event.event_id.clone(),
        at: event.occurred_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_rank_and_classify() {
        assert!(Outcome::WriteOffCandidate(180) > Outcome::Overdue(400));
        assert!(Outcome::Overdue(1) > Outcome::PaidLate(90));
        assert!(Outcome::PaidLate(1) > Outcome::PaidOnTime);
        assert_eq!(Outcome::PaidLate(30).risk(30), Risk::Bad);
        assert_eq!(Outcome::PaidLate(29).risk(30), Risk::Good);
        assert_eq!(Outcome::Overdue(1).risk(30), Risk::Bad);
        assert_eq!(Outcome::OpenNotDue.risk(30), Risk::Neutral);
        assert_eq!(Outcome::Credited.risk(30), Risk::Neutral);
    }

    #[test]
    fn whole_days_floor_and_never_negative() {
        let t = Timestamp::parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        assert_eq!(whole_days(t, t.plus_us(DAY_US - 1)), 0);
        assert_eq!(whole_days(t, t.plus_days(2)), 2);
        assert_eq!(whole_days(t.plus_days(2), t), 0);
    }
}
