//! Prometheus metrics: the named metric families the runtime and the HTTP layer update, and the
//! state gauges (exposure, limits, utilization bands, holds) read from the engines' read
//! replicas when `/metrics` is scraped.
//!
//! Cardinality is bounded by construction: no label carries a customer, order or group id.
//! Labels are event types, outcomes, decision statuses, reason codes, alert kinds and
//! severities, dead-letter error codes (all closed sets from the contract), currencies (ISO
//! codes seen in profiles), topic/partition pairs of the input topics, and HTTP routes as
//! matched (templates, not paths).

use crate::engine::read_index::{StateGauges, UTILIZATION_BANDS};
use crate::engine::{Engine, Outcome};
use crate::model::*;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use rust_decimal::prelude::ToPrimitive;

const NS: &str = "credit_sentinel";

/// The git commit the binary was built from (set by build.rs; `unknown` without git).
pub const GIT_COMMIT: &str = env!("CREDIT_SENTINEL_GIT_COMMIT");

/// The engine's metric families.
pub struct Metrics {
    registry: Registry,
    /// Input events by contract type (`invalid` when undecodable) and outcome.
    pub events: IntCounterVec,
    pub decisions: IntCounterVec,
    /// Every failed rule of a held or rejected decision (one decision can count several).
    pub decision_reasons: IntCounterVec,
    /// The delivery check's decisions, by status, and their failed rules.
    pub delivery_decisions: IntCounterVec,
    pub delivery_decision_reasons: IntCounterVec,
    pub alerts: IntCounterVec,
    pub dead_letters: IntCounterVec,
    /// From reading the message off the input topic to its decision being committed.
    pub decision_latency: Histogram,
    /// Wall clock minus the event's `occurred_at`, at apply time.
    pub event_time_lag: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub transactions: IntCounterVec,
    pub batch_size: Histogram,
    pub restore_duration: Histogram,
    pub restored_accounts: IntCounter,
    pub rebalances: IntCounterVec,
    /// Events the repartition stage routed, by credit account kind (customer, group, original
    /// key for what did not decode).
    pub routed: IntCounterVec,
    /// Customers whose route changed (a profile moved them into, out of or between groups).
    pub route_moves: IntCounter,
    /// Producers the engine replaced: one that failed fatally, or one stuck in a
    /// transactional call past its deadline.
    pub producers_replaced: IntCounter,
    /// Errors librdkafka reported to the engine's consumer and producer (a broker gone, a
    /// transport failure, an authentication refusal), by client and error code.
    pub kafka_client_errors: IntCounterVec,
    pub ready: IntGauge,
    /// 1 while an admin has paused consumption (`POST /v1/admin/pause`).
    pub paused: IntGauge,
    /// How long each acknowledged step of a batch's commit waited for the broker, by step
    /// (`outputs`, `snapshots`, `checkpoints`).
    pub flush_duration: HistogramVec,
    /// From the first flush of a batch to its commit being acknowledged (exactly_once: the
    /// transaction commit).
    pub commit_duration: Histogram,
    /// Always 1; the labels say which build runs in which delivery mode.
    pub build_info: IntGaugeVec,
    /// Batches rolled back in a row since the last commit (0 while all is well).
    pub failed_batches_in_a_row: IntGauge,
    pub commands_published: IntCounterVec,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    /// `events` children resolved once: [type][outcome] (no label hashing per event).
    event_children: Vec<[IntCounter; 4]>,
    /// `decisions` children resolved once, in `DecisionStatus::ALL` order.
    decision_children: Vec<IntCounter>,
    // State gauges, refreshed at scrape time by `refresh_state`.
    pub accounts: IntGaugeVec,
    pub accounts_by_band: IntGaugeVec,
    pub over_limit: IntGauge,
    pub held_orders: IntGauge,
    pub held_amount: prometheus::GaugeVec,
    pub exposure: prometheus::GaugeVec,
    pub credit_limit: prometheus::GaugeVec,
    pub open_receivables_overdue: prometheus::GaugeVec,
}

/// Utilization bands of the `credit_sentinel_accounts_by_utilization` gauge.
pub const BANDS: [&str; 5] = UTILIZATION_BANDS;

/// Event type labels: the contract's input types, and `invalid` for what did not decode.
pub const EVENT_TYPES: [&str; 15] = [
    "order.placed",
    "order.cancelled",
    "delivery.requested",
    "shipment.shipped",
    "payment.received",
    "credit_note.issued",
    "profile.customer",
    "profile.group",
    "command.release_hold",
    "command.reject_hold",
    "command.release_delivery",
    "command.reject_delivery",
    "command.block",
    "command.unblock",
    "invalid",
];

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help).namespace(NS), labels).expect("metric definition")
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> prometheus::GaugeVec {
    prometheus::GaugeVec::new(Opts::new(name, help).namespace(NS), labels)
        .expect("metric definition")
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(
        HistogramOpts::new(name, help)
            .namespace(NS)
            .buckets(buckets),
    )
    .expect("metric definition")
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric family. Long on purpose: it is the catalogue, one declaration
    /// per family (name, help, labels) in the order docs/operations.md lists them; split, the
    /// catalogue would be scattered across helpers that each do the same thing.
    pub fn new() -> Metrics {
        let latency_buckets = vec![
            0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let mut m = Metrics {
            event_children: Vec::new(),
            decision_children: Vec::new(),
            registry: Registry::new(),
            events: counter_vec(
                "events_total",
                "Input events by type and outcome (applied, duplicate, pending, dead_lettered).",
                &["type", "outcome"],
            ),
            decisions: counter_vec(
                "decisions_total",
                "Decisions produced, by status.",
                &["status"],
            ),
            decision_reasons: counter_vec(
                "decision_reasons_total",
                "Failed rules reported on decisions, by status and reason code.",
                &["status", "reason"],
            ),
            delivery_decisions: counter_vec(
                "delivery_decisions_total",
                "Delivery decisions produced (the delivery check), by status.",
                &["status"],
            ),
            delivery_decision_reasons: counter_vec(
                "delivery_decision_reasons_total",
                "Failed rules reported on delivery decisions, by status and reason code.",
                &["status", "reason"],
            ),
            alerts: counter_vec(
                "alerts_total",
                "Early-warning alerts produced, by kind and severity.",
                &["kind", "severity"],
            ),
            dead_letters: counter_vec(
                "dead_letters_total",
                "Input messages dead-lettered, by error code.",
                &["error"],
            ),
            decision_latency: histogram(
                "decision_latency_seconds",
                "From an order-path message being read off its input topic to its decision being committed to the output topic.",
                latency_buckets.clone(),
            ),
            event_time_lag: histogram(
                "event_time_lag_seconds",
                "Wall clock minus the event's occurred_at when the engine applied it.",
                vec![0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 86400.0, 604800.0],
            ),
            consumer_lag: IntGaugeVec::new(
                Opts::new(
                    "consumer_lag_messages",
                    "High watermark minus the engine's position (its committed position while batches fail), per input topic partition.",
                )
                .namespace(NS),
                &["topic", "partition"],
            )
            .expect("metric definition"),
            transactions: counter_vec(
                "transactions_total",
                "Batches committed or rolled back (each batch is one Kafka transaction in exactly_once).",
                &["outcome"],
            ),
            batch_size: histogram(
                "batch_messages",
                "Input messages per committed batch.",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0],
            ),
            restore_duration: histogram(
                "restore_duration_seconds",
                "Time to restore assigned partitions from the changelog.",
                vec![0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0],
            ),
            restored_accounts: IntCounter::with_opts(
                Opts::new(
                    "restored_accounts_total",
                    "Accounts read back from the changelog.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            rebalances: counter_vec(
                "rebalances_total",
                "Consumer group rebalances seen, by kind (assign, revoke).",
                &["kind"],
            ),
            routed: counter_vec(
                "routed_total",
                "Events the repartition stage re-keyed, by credit account (customer, group, original).",
                &["account"],
            ),
            route_moves: IntCounter::with_opts(
                Opts::new(
                    "route_moves_total",
                    "Customers the repartition stage routed to a new credit account after a profile changed its group; earlier state stays with the old account.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            producers_replaced: IntCounter::with_opts(
                Opts::new(
                    "producers_replaced_total",
                    "Producers replaced by a new one (new epoch): after a fatal error, or stuck in send_offsets_to_transaction past its deadline.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            kafka_client_errors: counter_vec(
                "kafka_client_errors_total",
                "Errors librdkafka reported to the engine's Kafka clients (broker down, transport failure, authentication), by client (consumer, producer) and librdkafka error code.",
                &["client", "error"],
            ),
            paused: IntGauge::with_opts(
                Opts::new(
                    "paused",
                    "1 while an admin has paused consumption (POST /v1/admin/pause): nothing is decided, lag grows.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            flush_duration: HistogramVec::new(
                HistogramOpts::new(
                    "flush_duration_seconds",
                    "Time a batch waited for the broker to acknowledge a commit step, by step (outputs, snapshots, checkpoints).",
                )
                .namespace(NS)
                .buckets(latency_buckets.clone()),
                &["step"],
            )
            .expect("metric definition"),
            commit_duration: histogram(
                "commit_duration_seconds",
                "From a batch's first flush to its commit being acknowledged (exactly_once: the transaction commit included).",
                latency_buckets.clone(),
            ),
            build_info: IntGaugeVec::new(
                Opts::new(
                    "build_info",
                    "Always 1: the running build's version and git commit, and the delivery mode it runs in.",
                )
                .namespace(NS),
                &["version", "git_commit", "delivery"],
            )
            .expect("metric definition"),
            ready: IntGauge::with_opts(
                Opts::new(
                    "ready",
                    "1 once state is restored and the engine is consuming.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            failed_batches_in_a_row: IntGauge::with_opts(
                Opts::new(
                    "failed_batches_in_a_row",
                    "Batches rolled back in a row since the last commit; above 2, /readyz answers 503 (stuck).",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            commands_published: counter_vec(
                "commands_published_total",
                "Commands published to the commands topic by the HTTP API, by type.",
                &["type"],
            ),
            http_requests: counter_vec(
                "http_requests_total",
                "HTTP requests by route template, method and status code.",
                &["route", "method", "status"],
            ),
            http_duration: HistogramVec::new(
                HistogramOpts::new("http_request_duration_seconds", "HTTP request duration.")
                    .namespace(NS)
                    .buckets(latency_buckets),
                &["route"],
            )
            .expect("metric definition"),
            accounts: IntGaugeVec::new(
                Opts::new("accounts", "Accounts held in memory, by currency.").namespace(NS),
                &["currency"],
            )
            .expect("metric definition"),
            accounts_by_band: IntGaugeVec::new(
                Opts::new(
                    "accounts_by_utilization",
                    "Accounts by utilization band (exposure / effective limit, percent).",
                )
                .namespace(NS),
                &["band"],
            )
            .expect("metric definition"),
            over_limit: IntGauge::with_opts(
                Opts::new(
                    "accounts_over_limit",
                    "Accounts whose exposure exceeds their effective limit.",
                )
                .namespace(NS),
            )
            .expect("metric definition"),
            held_orders: IntGauge::with_opts(
                Opts::new("held_orders", "Orders on hold, waiting for room or a person.")
                    .namespace(NS),
            )
            .expect("metric definition"),
            held_amount: gauge_vec(
                "held_orders_currency_units",
                "Amount of orders on hold, in major units (e.g. euros) of the account currency label.",
                &["currency"],
            ),
            exposure: gauge_vec(
                "exposure_currency_units",
                "Exposure (open orders + receivables - unapplied credit), in major units (e.g. euros) of the account currency label.",
                &["currency"],
            ),
            credit_limit: gauge_vec(
                "credit_limit_currency_units",
                "Credit limits granted (profiles' credit_limit), in major units (e.g. euros) of the account currency label.",
                &["currency"],
            ),
            open_receivables_overdue: gauge_vec(
                "overdue_receivables_currency_units",
                "Open receivables past their due date, in major units (e.g. euros) of the account currency label.",
                &["currency"],
            ),
        };
        let r = &m.registry;
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.events.clone()),
            Box::new(m.decisions.clone()),
            Box::new(m.decision_reasons.clone()),
            Box::new(m.delivery_decisions.clone()),
            Box::new(m.delivery_decision_reasons.clone()),
            Box::new(m.alerts.clone()),
            Box::new(m.dead_letters.clone()),
            Box::new(m.decision_latency.clone()),
            Box::new(m.event_time_lag.clone()),
            Box::new(m.consumer_lag.clone()),
            Box::new(m.transactions.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.restore_duration.clone()),
            Box::new(m.restored_accounts.clone()),
            Box::new(m.rebalances.clone()),
            Box::new(m.routed.clone()),
            Box::new(m.route_moves.clone()),
            Box::new(m.producers_replaced.clone()),
            Box::new(m.kafka_client_errors.clone()),
            Box::new(m.ready.clone()),
            Box::new(m.paused.clone()),
            Box::new(m.flush_duration.clone()),
            Box::new(m.commit_duration.clone()),
            Box::new(m.build_info.clone()),
            Box::new(m.failed_batches_in_a_row.clone()),
            Box::new(m.commands_published.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.accounts.clone()),
            Box::new(m.accounts_by_band.clone()),
            Box::new(m.over_limit.clone()),
            Box::new(m.held_orders.clone()),
            Box::new(m.held_amount.clone()),
            Box::new(m.exposure.clone()),
            Box::new(m.credit_limit.clone()),
            Box::new(m.open_receivables_overdue.clone()),
        ];
        for c in collectors {
            r.register(c).expect("unique metric names");
        }
        // process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, ...
        // (Linux; elsewhere the collector reports nothing).
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("unique metric names");
        // Closed label sets start at zero so rate() and absent() behave from the first scrape.
        m.decision_children = DecisionStatus::ALL
            .iter()
            .map(|s| m.decisions.with_label_values(&[s.as_str()]))
            .collect();
        let outcomes = [
            Outcome::Applied,
            Outcome::Duplicate,
            Outcome::Pending,
            Outcome::Rejected,
        ];
        m.event_children = EVENT_TYPES
            .iter()
            .map(|t| outcomes.map(|o| m.events.with_label_values(&[t, o.as_str()])))
            .collect();
        for s in DecisionStatus::ALL {
            m.delivery_decisions.with_label_values(&[s.as_str()]);
        }
        for k in AlertKind::ALL {
            for sev in [Severity::Info, Severity::Warning, Severity::Critical] {
                m.alerts.with_label_values(&[k.as_str(), sev.as_str()]);
            }
        }
        for e in ErrorCode::ALL {
            m.dead_letters.with_label_values(&[e.as_str()]);
        }
        for o in ["committed", "aborted"] {
            m.transactions.with_label_values(&[o]);
        }
        for step in ["outputs", "snapshots", "checkpoints"] {
            m.flush_duration.with_label_values(&[step]);
        }
        for k in ["assign", "revoke"] {
            m.rebalances.with_label_values(&[k]);
        }
        for k in ["customer", "group", "original"] {
            m.routed.with_label_values(&[k]);
        }
        for b in BANDS {
            m.accounts_by_band.with_label_values(&[b]);
        }
        m.set_build_info("none");
        m
    }

    /// Sets `build_info` for this process: the crate version, the git commit it was built
    /// from (`unknown` outside a git checkout), and the delivery mode (`none` outside `run`).
    pub fn set_build_info(&self, delivery: &str) {
        self.build_info.reset();
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_COMMIT, delivery])
            .set(1);
    }

    /// Counts one input event by contract type (`invalid` for what did not decode) and outcome.
    pub fn count_event(&self, event_type: &str, outcome: Outcome) {
        let t = EVENT_TYPES
            .iter()
            .position(|x| *x == event_type)
            .unwrap_or(EVENT_TYPES.len() - 1);
        let o = match outcome {
            Outcome::Applied => 0,
            Outcome::Duplicate => 1,
            Outcome::Pending => 2,
            Outcome::Rejected => 3,
        };
        self.event_children[t][o].inc();
    }

    /// Counts one input's outputs.
    pub fn count_outputs(&self, outputs: &[Output]) {
        for o in outputs {
            match o {
                Output::Decision(d) => {
                    if let Some(i) = DecisionStatus::ALL.iter().position(|s| *s == d.status) {
                        self.decision_children[i].inc();
                    }
                    for r in &d.reasons {
                        self.decision_reasons
                            .with_label_values(&[d.status.as_str(), r.code.as_str()])
                            .inc();
                    }
                }
                Output::DeliveryDecision(d) => {
                    self.delivery_decisions
                        .with_label_values(&[d.status.as_str()])
                        .inc();
                    for r in &d.reasons {
                        self.delivery_decision_reasons
                            .with_label_values(&[d.status.as_str(), r.code.as_str()])
                            .inc();
                    }
                }
                Output::Alert(a) => {
                    self.alerts
                        .with_label_values(&[a.kind.as_str(), a.severity.as_str()])
                        .inc();
                }
                Output::DeadLetter(r) => {
                    self.dead_letters
                        .with_label_values(&[r.error.as_str()])
                        .inc();
                }
            }
        }
    }

    /// Sets the state gauges from the engines (called when `/metrics` is scraped): read
    /// replicas give their index's sums (a few per currency, whatever the number of accounts),
    /// other engines are walked.
    pub fn refresh_state<'a>(&self, engines: impl Iterator<Item = &'a Engine>) {
        let mut g = StateGauges::default();
        for engine in engines {
            g.merge(&engine.state_gauges());
        }
        for (b, n) in BANDS.iter().zip(g.bands) {
            self.accounts_by_band.with_label_values(&[b]).set(n);
        }
        self.over_limit.set(g.over_limit);
        self.held_orders.set(g.held_orders);
        for gauge in [
            &self.held_amount,
            &self.exposure,
            &self.credit_limit,
            &self.open_receivables_overdue,
        ] {
            gauge.reset();
        }
        self.accounts.reset();
        for (cur, c) in g.per_currency {
            let l = [cur.as_str()];
            self.accounts.with_label_values(&l).set(c.accounts);
            self.exposure
                .with_label_values(&l)
                .set(c.exposure.to_f64().unwrap_or(0.0));
            self.credit_limit
                .with_label_values(&l)
                .set(c.credit_limit.to_f64().unwrap_or(0.0));
            self.held_amount
                .with_label_values(&l)
                .set(c.held_amount.to_f64().unwrap_or(0.0));
            self.open_receivables_overdue
                .with_label_values(&l)
                .set(c.overdue.to_f64().unwrap_or(0.0));
        }
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buf) {
            tracing::error!("metrics encoding failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::read_index::utilization_band;
    use rust_decimal::Decimal;

    fn band(u: Option<Decimal>) -> &'static str {
        BANDS[utilization_band(u)]
    }

    #[test]
    fn bands_cover_the_thresholds() {
        assert_eq!(band(None), "no_limit");
        assert_eq!(band(Some(Decimal::new(69, 2))), "0-70");
        assert_eq!(band(Some(Decimal::new(70, 2))), "70-85");
        assert_eq!(band(Some(Decimal::new(85, 2))), "85-100");
        assert_eq!(band(Some(Decimal::ONE)), "100+");
    }

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.refresh_state(std::iter::empty());
        let text = m.render();
        for name in [
            "credit_sentinel_decisions_total",
            "credit_sentinel_alerts_total",
            "credit_sentinel_dead_letters_total",
            "credit_sentinel_accounts_by_utilization",
            "credit_sentinel_transactions_total",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
