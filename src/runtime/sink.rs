//! Where a batch's records go: the engine's producer, one topic per record kind, with the
//! batch's sequence number and the trace context of the span that made each record.

use super::*;

/// The engine's producer and where each record kind goes.
pub(super) struct RecordSink<'a> {
    pub(super) producer: &'a Arc<kafka::EngineProducer>,
    pub(super) k: &'a KafkaSettings,
    pub(super) metrics: &'a Metrics,
    /// This batch's sequence number: every record it produces carries it, so that its
    /// delivery failures are told apart from late reports of earlier batches.
    pub(super) seq: usize,
}

impl RecordSink<'_> {
    pub(super) fn send(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<()> {
        self.send_traced(topic, partition, key, value, None)
    }

    /// [`RecordSink::send`], with the trace-context headers of the span that made the record.
    pub(super) fn send_traced(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: &[u8],
        trace: Option<&rdkafka::message::OwnedHeaders>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, self.seq).payload(value);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(h) = trace {
            record = record.headers(h.clone());
            tracing::debug!(
                messaging.destination.name = topic,
                messaging.kafka.message.key = %String::from_utf8_lossy(key.unwrap_or_default()),
                "produced"
            );
        }
        kafka::send_record(self.producer, record)
            .with_context(|| format!("cannot produce to {topic}"))
    }

    /// Produces one output; decisions and alerts also go to `feed` (the console), as the same
    /// JSON text.
    pub(super) fn emit(
        &self,
        output: Output,
        original: &[u8],
        original_key: Option<&[u8]>,
        source: &SourcePosition,
        feed: Option<&mut crate::feed::BatchFeed>,
        trace: Option<&rdkafka::message::OwnedHeaders>,
    ) -> Result<()> {
        let t = &self.k.topics;
        match output {
            Output::Decision(d) => {
                let value = crate::codec::to_json(&d)?;
                let shown = feed.map(|f| (f, "decision", Some(d.customer_id.clone())));
                self.send_shown(&t.decisions, &d.customer_id, value, trace, shown)
            }
            Output::DeliveryDecision(d) => {
                let value = crate::codec::to_json(&d)?;
                let shown = feed.map(|f| (f, "delivery_decision", Some(d.customer_id.clone())));
                self.send_shown(&t.delivery_decisions, &d.customer_id, value, trace, shown)
            }
            Output::Alert(a) => {
                let value = crate::codec::to_json(&a)?;
                let shown = feed.map(|f| (f, "alert", a.customer_id.clone()));
                self.send_shown(&t.alerts, a.key(), value, trace, shown)
            }
            Output::DeadLetter(r) => {
                let dl = DeadLetter::new(r, original, source);
                let value = serde_json::to_vec(&dl)?;
                let key = original_key.or(dl.key().map(str::as_bytes));
                self.send_traced(&t.dead_letter, None, key, &value, trace)
            }
        }
    }

    /// Sends a decision or alert keyed by `key`, and shows it on the console's feed when one is
    /// open (`shown`: the feed, the item's kind and its customer).
    fn send_shown(
        &self,
        topic: &str,
        key: &str,
        value: String,
        trace: Option<&rdkafka::message::OwnedHeaders>,
        shown: Option<(&mut crate::feed::BatchFeed, &'static str, Option<String>)>,
    ) -> Result<()> {
        self.send_traced(topic, None, Some(key.as_bytes()), value.as_bytes(), trace)?;
        if let Some((feed, kind, customer_id)) = shown {
            feed.record(kind, customer_id, value);
        }
        Ok(())
    }
}
