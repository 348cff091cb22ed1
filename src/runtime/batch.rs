//! How one polled batch is applied: each message checked (size, signature, key), decoded and
//! fed to its partition's engine, commands' outcomes recorded, outputs handed to the sink.

use super::*;
use crate::engine::input_error;

/// One polled batch: the messages, when each was read, and (filled in while processing) the
/// read times of the messages that produced a decision.
pub(super) struct Batch<'a, 'm> {
    pub(super) messages: &'a [BorrowedMessage<'m>],
    pub(super) polled: &'a [Instant],
    pub(super) decided: &'a mut Vec<Instant>,
    /// Whether the clock ticks after the batch (due moments fire).
    pub(super) tick: bool,
}

/// Applies a batch (and a clock tick) to the engine and produces its outputs into the sink,
/// through `outputs` (a buffer reused from record to record). Returns the input partitions the
/// batch touched.
pub(super) fn process_batch(
    sh: &mut LoopState,
    batch: Batch<'_, '_>,
    cx: &Applying<'_>,
    out: &RecordSink<'_>,
    outputs: &mut Vec<Output>,
) -> Result<BTreeSet<i32>> {
    let (settings, metrics) = (cx.settings, cx.metrics);
    if settings.kafka.delivery == Delivery::ExactlyOnce {
        out.producer
            .begin_transaction()
            .context("cannot begin a transaction")?;
    }
    let mut touched = BTreeSet::new();
    for (i, m) in batch.messages.iter().enumerate() {
        let p = m.partition();
        touched.insert(p);
        // The record's span covers applying it and producing what it made (its outputs carry
        // the span's trace context while traces are exported).
        let span = record_span(m);
        if cx.traced {
            crate::traces::continue_from(&span, m.headers());
        }
        let _entered = span.enter();
        sh.part(p)
            .positions
            .insert(m.topic().to_string(), m.offset() + 1);
        let payload = m.payload().unwrap_or_default();
        outputs.clear();
        let command = match screen(settings, m, payload) {
            Ok(event) => cx.apply(sh, p, &event, &span, outputs, &mut touched),
            Err(r) => {
                metrics.count_event("invalid", crate::Outcome::Rejected);
                outputs.push(Output::DeadLetter(r));
                None
            }
        };
        if outputs.iter().any(|o| matches!(o, Output::Decision(_))) {
            if let Some(t) = batch.polled.get(i) {
                batch.decided.push(*t);
            }
        }
        cx.emit(sh, m, command, &span, outputs, out)?;
    }
    if batch.tick {
        cx.tick(sh, out, outputs, &mut touched)?;
    }
    Ok(touched)
}

/// What every record of a batch is applied with.
pub(super) struct Applying<'x> {
    settings: &'x Settings,
    stats: &'x Stats,
    metrics: &'x Metrics,
    options: &'x Options,
    /// The wall clock when the batch started.
    wall: Timestamp,
    guard: Option<crate::engine::FutureGuard>,
    /// Whether traces are exported (outputs then carry their record's trace context).
    traced: bool,
}

/// The span of one input record, named after its topic, partition and offset; the event's
/// fields are recorded once it is decoded.
fn record_span(m: &BorrowedMessage<'_>) -> tracing::Span {
    tracing::debug_span!(
        "record",
        messaging.system = "kafka",
        messaging.operation.type = "process",
        messaging.destination.name = m.topic(),
        messaging.destination.partition.id = m.partition(),
        messaging.kafka.offset = m.offset(),
        event_type = tracing::field::Empty,
        event_id = tracing::field::Empty,
        customer_id = tracing::field::Empty,
        order_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
        outputs = tracing::field::Empty,
    )
}

/// The event a message carries, or why it is dead-lettered before the engine sees it: too
/// large, undecodable, unsigned where signatures are required, or keyed by another customer.
// The error path is the cold one; boxing the error would not speed the hot path.
#[allow(clippy::result_large_err)]
fn screen(
    settings: &Settings,
    m: &BorrowedMessage<'_>,
    payload: &[u8],
) -> std::result::Result<Event, InputError> {
    let k = &settings.kafka;
    if payload.len() > settings.max_message_bytes {
        return Err(InputError {
            error: ErrorCode::TooLarge,
            detail: format!(
                "message of {} bytes exceeds limits.max_message_bytes = {}",
                payload.len(),
                settings.max_message_bytes
            ),
            event_id: None,
            event_type: None,
            customer_id: None,
            original: None,
        });
    }
    let event = codec::decode_event(payload)?;
    if let Some(detail) = unsigned(k, &event, payload) {
        return Err(input_error(
            &event,
            ErrorCode::InvalidField,
            format!("signature: {detail}"),
        ));
    }
    if !k.repartition {
        if let Some(detail) = key_mismatch(m.key(), &event) {
            return Err(input_error(&event, ErrorCode::KeyMismatch, detail));
        }
    }
    Ok(event)
}

impl<'x> Applying<'x> {
    /// For a batch starting now.
    pub(super) fn new(
        settings: &'x Settings,
        stats: &'x Stats,
        metrics: &'x Metrics,
        options: &'x Options,
    ) -> Applying<'x> {
        let wall = wall_clock();
        Applying {
            settings,
            stats,
            metrics,
            options,
            wall,
            // A producer with a broken clock must not move a partition's time far past the
            // present.
            guard: (settings.future_skew_max_us > 0).then_some(crate::engine::FutureGuard {
                reference: wall,
                max_skew_us: settings.future_skew_max_us,
                reference_name: "the wall clock",
                setting: "limits.future_skew_max_hours",
            }),
            traced: crate::traces::enabled(),
        }
    }

    /// Applies a decoded event to its partition's engine (a group profile or FX rate on the
    /// direct path to every partition engine of this instance); the command it was, if any.
    fn apply(
        &self,
        sh: &mut LoopState,
        p: i32,
        event: &Event,
        span: &tracing::Span,
        outputs: &mut Vec<Output>,
        touched: &mut BTreeSet<i32>,
    ) -> Option<AppliedCommand> {
        let k = &self.settings.kafka;
        // Direct path: a group profile or an FX rate reaches every partition engine of this
        // instance. Repartitioned, a group profile is routed to its group's one partition and a
        // rate to every partition (by the router).
        let is_group = !k.repartition
            && matches!(
                event.body,
                EventBody::GroupProfile(_) | EventBody::FxRate(_)
            );
        let event_type = event.type_str();
        let order_id = match &event.body {
            EventBody::OrderPlaced(OrderPlaced { order_id, .. })
            | EventBody::OrderCancelled { order_id }
            | EventBody::ShipmentShipped(ShipmentShipped { order_id, .. }) => {
                Some(order_id.as_str())
            }
            EventBody::DeliveryRequested(d) => Some(d.order_id.as_str()),
            EventBody::Command(Command { order_id, .. }) => order_id.as_deref(),
            _ => None,
        };
        span.record("event_type", event_type);
        span.record("event_id", event.event_id.as_str());
        span.record("customer_id", event.customer_id.as_deref().unwrap_or(""));
        span.record("order_id", order_id.unwrap_or(""));
        let outcome = sh.part(p).engine.apply_guarded(event, outputs, self.guard);
        span.record("outcome", outcome.as_str());
        self.metrics.count_event(event_type, outcome);
        let command = AppliedCommand::of(event, outcome);
        let lag_us = self.wall.0 - event.occurred_at.0;
        self.metrics
            .event_time_lag
            .observe(lag_us.max(0) as f64 / 1e6);
        debug!(
            outcome = outcome.as_str(),
            outputs = outputs.len(),
            "applied"
        );
        if is_group {
            // Every partition engine of this instance learns the group's limit or the rate.
            let mut more = Vec::new();
            for (q, part) in sh.parts.iter_mut().filter(|(q, _)| **q != p) {
                part.engine.apply_guarded(event, &mut more, self.guard);
                touched.insert(*q);
            }
            outputs.extend(
                more.into_iter()
                    .filter(|o| !matches!(o, Output::DeadLetter(_))),
            );
        }
        command
    }

    /// Counts one record's outputs and hands them to the sink (a dead-letter with its input's
    /// position, every output with the record's trace context while traces are exported).
    fn emit(
        &self,
        sh: &mut LoopState,
        m: &BorrowedMessage<'_>,
        command: Option<AppliedCommand>,
        span: &tracing::Span,
        outputs: &mut Vec<Output>,
        out: &RecordSink<'_>,
    ) -> Result<()> {
        let settings = self.settings;
        let payload = m.payload().unwrap_or_default();
        self.stats.events.fetch_add(1, Ordering::Relaxed);
        self.stats.count(outputs);
        self.metrics.count_outputs(outputs);
        let original = &payload[..payload.len().min(settings.max_message_bytes)];
        // Only a dead-letter names its input (built here, off the common path).
        let (source, input_key) = if outputs.iter().any(|o| matches!(o, Output::DeadLetter(_))) {
            input_of(m, settings.kafka.repartition)
        } else {
            (SourcePosition::default(), None)
        };
        let feed = self.options.feed.is_some();
        if feed {
            if let Some(c) = command_outcome(command, outputs) {
                sh.pending.command(c);
            }
        }
        span.record("outputs", outputs.len());
        let trace = if self.traced {
            crate::traces::headers_of(span)
        } else {
            None
        };
        for o in outputs.drain(..) {
            let pending = feed.then_some(&mut sh.pending);
            out.emit(o, original, input_key, &source, pending, trace.as_ref())?;
        }
        Ok(())
    }

    /// Moves every partition engine's clock to the wall clock and produces what fell due.
    fn tick(
        &self,
        sh: &mut LoopState,
        out: &RecordSink<'_>,
        outputs: &mut Vec<Output>,
        touched: &mut BTreeSet<i32>,
    ) -> Result<()> {
        let now = wall_clock();
        let feed = self.options.feed.is_some();
        for (p, part) in sh.parts.iter_mut() {
            outputs.clear();
            part.engine.advance_clock(now, outputs);
            self.stats.count(outputs);
            self.metrics.count_outputs(outputs);
            for o in outputs.drain(..) {
                let pending = feed.then_some(&mut sh.pending);
                out.emit(o, &[], None, &SourcePosition::default(), pending, None)?;
            }
            // The clock moved: every partition gets a fresh checkpoint.
            touched.insert(*p);
        }
        Ok(())
    }
}

/// A command the core applied (or refused), as the batch loop saw it.
struct AppliedCommand {
    command_id: String,
    kind: &'static str,
    customer_id: Option<String>,
    release: bool,
    outcome: crate::Outcome,
    /// Who, with what note, when, about which order or delivery (`None`: refused unread).
    asked: Option<Asked>,
}

impl AppliedCommand {
    /// The command `event` is, as the core applied it with `outcome`; `None` for any other
    /// event.
    fn of(event: &Event, outcome: crate::Outcome) -> Option<AppliedCommand> {
        let EventBody::Command(Command {
            kind,
            order_id,
            delivery_id,
            actor,
            note,
        }) = &event.body
        else {
            return None;
        };
        Some(AppliedCommand {
            command_id: event.event_id.clone(),
            kind: event.type_str(),
            customer_id: event.customer_id.clone(),
            release: matches!(
                kind,
                CommandKind::ReleaseHold | CommandKind::ReleaseDelivery
            ),
            outcome,
            asked: Some(Asked {
                actor: actor.clone(),
                note: note.clone(),
                at: event.occurred_at,
                order_id: order_id.clone(),
                delivery_id: delivery_id.clone(),
            }),
        })
    }
}

/// What a command the core read says about itself.
struct Asked {
    actor: String,
    note: String,
    at: Timestamp,
    order_id: Option<String>,
    delivery_id: Option<String>,
}

/// What `GET /v1/commands/{id}` says about a command, from what applying it produced: `None`
/// for an input that is not a command. A command refused before the core (a bad signature, a
/// wrong key) is known by its dead-letter.
fn command_outcome(
    applied: Option<AppliedCommand>,
    outputs: &[Output],
) -> Option<crate::feed::CommandOutcome> {
    use crate::feed::{CommandDecision, CommandOutcome};
    let refusal = outputs.iter().find_map(|o| match o {
        Output::DeadLetter(r) => Some(r),
        _ => None,
    });
    let applied = match applied {
        Some(a) => a,
        None => {
            let r = refusal?;
            let kind = r
                .event_type
                .as_deref()
                .filter(|t| t.starts_with("command."))?;
            AppliedCommand {
                command_id: r.event_id.clone()?,
                kind: crate::model::types::ALL
                    .iter()
                    .copied()
                    .find(|t| *t == kind)?,
                customer_id: r.customer_id.clone(),
                release: false,
                outcome: crate::Outcome::Rejected,
                asked: None,
            }
        }
    };
    let decisions: Vec<CommandDecision> = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Decision(d) => Some(CommandDecision {
                kind: "decision",
                id: d.decision_id.clone(),
                order_id: d.order_id.clone(),
                delivery_id: None,
                status: d.status.as_str(),
            }),
            Output::DeliveryDecision(d) => Some(CommandDecision {
                kind: "delivery_decision",
                id: d.delivery_decision_id.clone(),
                order_id: d.order_id.clone(),
                delivery_id: Some(d.delivery_id.clone()),
                status: d.status.as_str(),
            }),
            _ => None,
        })
        .collect();
    let status = match applied.outcome {
        crate::Outcome::Rejected => "refused",
        crate::Outcome::Duplicate => "duplicate",
        _ if applied.release && decisions.is_empty() => "awaiting_second_approver",
        _ => "applied",
    };
    let refused = applied.outcome == crate::Outcome::Rejected;
    let asked = applied.asked;
    Some(CommandOutcome {
        command_id: applied.command_id,
        kind: applied.kind.to_string(),
        customer_id: applied.customer_id,
        status,
        error: refusal.filter(|_| refused).map(|r| r.error.as_str()),
        detail: refusal.filter(|_| refused).map(|r| r.detail.clone()),
        decisions,
        actor: asked.as_ref().map(|a| a.actor.clone()),
        note: asked.as_ref().map(|a| a.note.clone()),
        at: asked.as_ref().map(|a| a.at),
        order_id: asked.as_ref().and_then(|a| a.order_id.clone()),
        delivery_id: asked.and_then(|a| a.delivery_id),
    })
}

/// Why a command is not accepted as written by the HTTP API (`None` when it is, or when
/// `kafka.command_keys_file` is not set): see `signing`.
fn unsigned(k: &KafkaSettings, event: &Event, payload: &[u8]) -> Option<String> {
    if !matches!(event.body, EventBody::Command(_)) {
        return None;
    }
    let keys = k.command_keys.as_ref()?;
    keys.verify(event, crate::signing::signature_of(payload).as_deref())
        .err()
}

/// Why a record's Kafka key does not fit its event (`None` when it does): the key must be the
/// event's customer_id, or the group_id of a group profile, so that every event of an account
/// lands in the partition that owns it (CONTRACT.md, `KEY_MISMATCH`).
fn key_mismatch(key: Option<&[u8]>, event: &Event) -> Option<String> {
    let field = match &event.body {
        EventBody::GroupProfile(_) => "group_id",
        EventBody::FxRate(_) => "pair fx/BASE/QUOTE",
        _ => "customer_id",
    };
    let want = event.key();
    match key {
        Some(k) if k == want.as_bytes() => None,
        Some(k) => Some(format!(
            "record key {:?} is not the event's {field} {want:?}: produce it keyed by {field}, or its account is split across partitions",
            String::from_utf8_lossy(k)
        )),
        None => Some(format!(
            "record has no key; it must be keyed by the event's {field} {want:?}, or its account is split across partitions"
        )),
    }
}

/// The input record a message stands for, as a dead-letter names it: its position and key.
/// A routed record (`kafka.repartition`) carries its input's in headers; the routed key may be
/// a group's.
fn input_of<'m>(
    m: &'m BorrowedMessage<'_>,
    repartition: bool,
) -> (SourcePosition, Option<&'m [u8]>) {
    match repartition.then(|| router::source_of(m)).flatten() {
        Some(s) => (
            SourcePosition {
                topic: Some(s.topic),
                partition: Some(s.partition),
                offset: Some(s.offset),
                line: None,
            },
            s.key,
        ),
        None => (
            SourcePosition {
                topic: Some(m.topic().to_string()),
                partition: Some(m.partition()),
                offset: Some(m.offset()),
                line: None,
            },
            m.key(),
        ),
    }
}

fn wall_clock() -> Timestamp {
    Timestamp::now()
}
