//! A deterministic generator of realistic credit traffic, for the sample file in `examples/`,
//! demos and load tests: customers of every grade with their own order cadence and typical
//! order size, partial shipments, on-time, late and very late payers, a defaulting customer,
//! prepaying grade-D customers, customer groups with a shared limit, temporary limits and
//! review dates, credit notes, cancellations, occasional outsized orders that a credit manager
//! then releases, a block/unblock, customer names, a daily EUR/USD quote (`fx.rate`) with a
//! few orders in USD shipped and paid in USD, the delivery check (`delivery.requested` before
//! each shipment, for every fourth customer, the shipment naming its delivery), plus the
//! faults of real streams: duplicates, a shipment ahead of its order, and a few malformed lines.
//!
//! Same parameters and seed, same bytes (SplitMix64; no dependency on a crate's RNG stability).

use credit_sentinel::codec::encode_event;
use credit_sentinel::model::*;
use rust_decimal::Decimal;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GeneratorConfig {
    pub customers: usize,
    pub days: u32,
    pub seed: u64,
    /// First day of traffic, RFC 3339 date.
    pub start: Timestamp,
    /// Include duplicates, reordering and malformed lines.
    pub faults: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            customers: 250,
            days: 120,
            seed: 42,
            start: Timestamp::parse_date_or_timestamp("2026-01-05").unwrap_or_default(),
            faults: true,
        }
    }
}

/// SplitMix64: tiny, fast, and stable forever.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `pct` percent.
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    /// A value from `lo` to `hi` inclusive (`lo` when `hi < lo`).
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi.max(lo) - lo + 1) as u64) as i64
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Payer {
    OnTime,
    Late,
    VeryLate,
    Defaulter,
}

struct Customer {
    id: String,
    grade: Grade,
    limit: i64,
    terms_days: i64,
    payer: Payer,
    interval_hours: i64,
    typical: i64,
    group: Option<String>,
}

const HOUR_US: i64 = 3_600_000_000;

fn eur() -> Currency {
    Currency::parse("EUR").unwrap_or_else(|| unreachable!("EUR is a valid code"))
}

/// A line of output with its sort key (event time, then generation order).
struct Line {
    at: Timestamp,
    seq: u64,
    text: String,
}

struct Out {
    lines: Vec<Line>,
    seq: u64,
    next_event: u64,
}

impl Out {
    fn push(&mut self, at: Timestamp, customer_id: Option<&str>, body: EventBody) -> String {
        self.next_event += 1;
        let event_id = format!("ev-{:07}", self.next_event);
        let event = Event {
            event_id: event_id.clone(),
            occurred_at: at,
            customer_id: customer_id.map(str::to_string),
            body,
        };
        self.raw(at, encode_event(&event));
        event_id
    }
    fn raw(&mut self, at: Timestamp, text: String) {
        self.seq += 1;
        self.lines.push(Line {
            at,
            seq: self.seq,
            text,
        });
    }
}

fn amount(v: i64) -> Decimal {
    Decimal::from(v)
}

/// The second currency of the generated traffic (some customers are billed in it).
pub fn usd() -> Currency {
    Currency::parse("USD").unwrap_or_else(|| unreachable!("USD is a valid code"))
}

/// A company name for customer `i` (deterministic, distinct for the first 4,000).
fn company_name(i: usize) -> String {
    const FIRST: [&str; 20] = [
        "Alder",
        "Birch",
        "Cedar",
        "Delta",
        "Ember",
        "Falcon",
        "Granite",
        "Harbor",
        "Iris",
        "Juniper",
        "Kestrel",
        "Linden",
        "Meridian",
        "Nordic",
        "Orchard",
        "Pioneer",
        "Quarry",
        "Riverside",
        "Summit",
        "Tidewater",
    ];
    const SECOND: [&str; 10] = [
        "Tools",
        "Logistics",
        "Foods",
        "Textiles",
        "Machinery",
        "Pharma",
        "Paper",
        "Electric",
        "Plastics",
        "Interiors",
    ];
    const FORM: [&str; 4] = ["GmbH", "Ltd", "S.A.", "B.V."];
    let (a, b, c) = (i % 20, (i / 20) % 10, (i / 200) % 4);
    let n = i / 800;
    let suffix = if n > 0 {
        format!(" {}", n + 1)
    } else {
        String::new()
    };
    format!("{} {}{suffix} {}", FIRST[a], SECOND[b], FORM[c])
}

/// Generates the event lines (JSON, no newline), sorted by event time.
///
/// Over 300 lines, knowingly: one simulated customer life (profile, orders, deliveries,
/// shipments, payments, faults) drawn from one random stream, whose order of draws fixes every
/// generated file the tests and benchmarks compare against. Splitting it without changing a
/// single draw is a change of its own (issue 20 notes it as left).
pub fn generate(cfg: &GeneratorConfig) -> Vec<String> {
    let mut rng = Rng(cfg.seed);
    let mut out = Out {
        lines: Vec::new(),
        seq: 0,
        next_event: 0,
    };
    let start = cfg.start;
    let end = start.plus_days(i64::from(cfg.days));
    // The FX and delivery traffic draws from its own stream.
    let mut side = Rng(cfg.seed ^ 0xDE11_7E57);
    // A EUR/USD quote every morning, a small random walk around 1.08.
    let mut eurusd: i64 = 10_800;
    let mut day = 0;
    while day <= i64::from(cfg.days) {
        out.push(
            start.plus_days(day).plus_us(7 * HOUR_US),
            None,
            EventBody::FxRate(FxQuote {
                base: eur(),
                quote: usd(),
                rate: Decimal::new(eurusd, 4),
                key: "fx/EUR/USD".into(),
            }),
        );
        eurusd = (eurusd + side.range(-60, 60)).clamp(9_500, 12_500);
        day += 1;
    }
    let mut customers = Vec::with_capacity(cfg.customers);
    for i in 0..cfg.customers {
        let grade = match rng.below(100) {
            0..=24 => Grade::A,
            25..=69 => Grade::B,
            70..=89 => Grade::C,
            _ => Grade::D,
        };
        let payer = if i == 7 {
            Payer::Defaulter
        } else {
            match (grade, rng.below(100)) {
                (Grade::A, 0..=84) | (Grade::B, 0..=59) | (Grade::C, 0..=39) => Payer::OnTime,
                (_, 0..=79) => Payer::Late,
                _ => Payer::VeryLate,
            }
        };
        let limit = rng.range(10, 250) * 1000;
        customers.push(Customer {
            id: format!("C-{:04}", i + 1),
            grade,
            limit,
            terms_days: [30, 30, 45, 60][rng.below(4) as usize],
            payer,
            interval_hours: rng.range(48, 24 * 12),
            typical: (limit / rng.range(15, 40)).max(200),
            group: None,
        });
    }
    // Groups: every 20th customer and the next two share a group limit below the sum.
    let mut g = 0;
    let mut i = 0;
    while i + 2 < customers.len() {
        g += 1;
        let gid = format!("G-{g:03}");
        let sum: i64 = customers[i..i + 3].iter().map(|c| c.limit).sum();
        for c in &mut customers[i..i + 3] {
            c.group = Some(gid.clone());
        }
        out.push(
            start,
            None,
            EventBody::GroupProfile(GroupProfile {
                group_id: gid,
                credit_limit: amount(sum * 6 / 10 / 1000 * 1000),
                currency: eur(),
                tolerance_pct: None,
            }),
        );
        i += 20;
    }
    let mut release_queue: Vec<(Timestamp, String, String)> = Vec::new();
    for (ci, c) in customers.iter().enumerate() {
        let profile_at = start.plus_us(ci as i64 * 1_000_000);
        let mut profile = CustomerProfile {
            credit_limit: amount(c.limit),
            currency: eur(),
            grade: Some(c.grade),
            payment_terms_days: Some(c.terms_days as u32),
            max_order_amount: (ci % 9 == 0).then(|| amount(c.typical * 6)),
            tolerance_pct: None,
            status: AccountStatus::Active,
            group_id: c.group.clone(),
            temporary_limit: None,
            review_date: (ci % 11 == 0)
                .then(|| start.plus_days(rng.range(20, i64::from(cfg.days) + 30))),
            name: Some(company_name(ci)),
        };
        if ci % 13 == 0 {
            profile.temporary_limit = Some(TemporaryLimit {
                amount: amount(c.limit / 4),
                // Within the generated period, however short (day 10 or later when it allows).
                expires_at: start.plus_days({
                    let last = i64::from(cfg.days).max(1);
                    rng.range(last.min(10), last)
                }),
            });
        }
        out.push(
            profile_at,
            Some(&c.id),
            EventBody::CustomerProfile(Box::new(profile.clone())),
        );
        // A mid-period limit raise for some customers (a profile upsert).
        if ci % 17 == 5 {
            let mut raised = profile.clone();
            raised.credit_limit = amount(c.limit + c.limit / 5);
            out.push(
                start.plus_days(rng.range(20, i64::from(cfg.days) - 1)),
                Some(&c.id),
                EventBody::CustomerProfile(Box::new(raised)),
            );
        }
        let mut t = profile_at.plus_us(rng.range(1, c.interval_hours) * HOUR_US);
        let mut n = 0u32;
        while t < end {
            n += 1;
            let order_id = format!("SO-{}-{n:03}", &c.id[2..]);
            let outsized = n > 6 && rng.chance(3);
            let mut value = c.typical * rng.range(50, 150) / 100;
            if outsized {
                value *= 8;
            }
            let value = amount(value) + Decimal::new(rng.range(0, 99), 2);
            if c.grade == Grade::D {
                // Pay before ship: the money arrives a day ahead.
                out.push(
                    t.plus_us(-24 * HOUR_US),
                    Some(&c.id),
                    EventBody::Settlement(Settlement {
                        kind: SettlementKind::Payment,
                        settlement_id: format!("PRE-{}", &order_id[3..]),
                        amount: value,
                        currency: eur(),
                        applies_to: Vec::new(),
                    }),
                );
            }
            // An export order now and then, in USD (shipped and paid in USD).
            let currency = if rng.chance(1) { usd() } else { eur() };
            out.push(
                t,
                Some(&c.id),
                EventBody::OrderPlaced(OrderPlaced {
                    order_id: order_id.clone(),
                    amount: value,
                    currency,
                }),
            );
            if outsized {
                release_queue.push((t.plus_us(26 * HOUR_US), c.id.clone(), order_id.clone()));
            }
            if rng.chance(3) {
                out.push(
                    t.plus_us(rng.range(2, 20) * HOUR_US),
                    Some(&c.id),
                    EventBody::OrderCancelled {
                        order_id: order_id.clone(),
                    },
                );
            } else {
                let parts = if rng.chance(20) { 2 } else { 1 };
                let mut left = value;
                for p in 1..=parts {
                    let part = if p == parts {
                        left
                    } else {
                        (value / Decimal::TWO).round_dp(2)
                    };
                    left -= part;
                    let shipped_at = t.plus_us(rng.range(6, 24 * 3 * p) * HOUR_US);
                    let shipment_id = format!("DN-{}-{p}", &order_id[3..]);
                    // Every fourth customer's warehouse asks the delivery check first.
                    let delivery_id = (ci % 4 == 1).then(|| format!("DL-{}-{p}", &order_id[3..]));
                    if let Some(d) = &delivery_id {
                        out.push(
                            shipped_at.plus_us(-side.range(1, 4) * HOUR_US),
                            Some(&c.id),
                            EventBody::DeliveryRequested(DeliveryRequest {
                                delivery_id: d.clone(),
                                order_id: order_id.clone(),
                                amount: part,
                                currency,
                            }),
                        );
                    }
                    out.push(
                        shipped_at,
                        Some(&c.id),
                        EventBody::ShipmentShipped(ShipmentShipped {
                            shipment_id: shipment_id.clone(),
                            order_id: order_id.clone(),
                            amount: part,
                            currency,
                            due_at: None,
                            delivery_id,
                        }),
                    );
                    let due = shipped_at.plus_days(c.terms_days);
                    let late_days = match c.payer {
                        Payer::OnTime => rng.range(-10, 0),
                        Payer::Late => rng.range(1, 12),
                        Payer::VeryLate => rng.range(14, 45),
                        Payer::Defaulter => i64::MAX / (2 * credit_sentinel::model::DAY_US),
                    };
                    let stop_paying =
                        c.payer == Payer::Defaulter && shipped_at > start.plus_days(20);
                    if c.grade != Grade::D && !stop_paying && late_days < 3650 {
                        let paid_at = due.plus_days(late_days).plus_us(rng.range(0, 23) * HOUR_US);
                        if paid_at < end {
                            let credit = rng.chance(2);
                            let cn = if credit {
                                (part / Decimal::TEN).round_dp(2)
                            } else {
                                Decimal::ZERO
                            };
                            if credit {
                                out.push(
                                    paid_at.plus_us(-HOUR_US),
                                    Some(&c.id),
                                    EventBody::Settlement(Settlement {
                                        kind: SettlementKind::CreditNote,
                                        settlement_id: format!("CN-{}", &shipment_id[3..]),
                                        amount: cn,
                                        currency,
                                        applies_to: vec![shipment_id.clone()],
                                    }),
                                );
                            }
                            let applies_to = if rng.chance(70) {
                                vec![shipment_id.clone()]
                            } else {
                                Vec::new()
                            };
                            out.push(
                                paid_at,
                                Some(&c.id),
                                EventBody::Settlement(Settlement {
                                    kind: SettlementKind::Payment,
                                    settlement_id: format!("PAY-{}", &shipment_id[3..]),
                                    amount: part - cn,
                                    currency,
                                    applies_to,
                                }),
                            );
                        }
                    }
                }
            }
            t = t.plus_us(c.interval_hours * rng.range(60, 140) / 100 * HOUR_US);
            // Customer 3 goes quiet halfway through: an INACTIVITY alert.
            if ci == 2 && t > start.plus_days(i64::from(cfg.days) / 2) {
                break;
            }
        }
    }
    for (at, cid, order_id) in release_queue {
        out.push(
            at,
            Some(&cid),
            EventBody::Command(Command {
                kind: CommandKind::ReleaseHold,
                order_id: Some(order_id),
                delivery_id: None,
                actor: "credit.manager@example.com".into(),
                note: "confirmed with the customer's purchasing".into(),
            }),
        );
    }
    if let Some(c) = customers.get(4) {
        let at = start.plus_days(i64::from(cfg.days) / 3);
        let body = |kind| {
            EventBody::Command(Command {
                kind,
                order_id: None,
                delivery_id: None,
                actor: "risk.lead@example.com".into(),
                note: "disputed invoices under review".into(),
            })
        };
        out.push(at, Some(&c.id), body(CommandKind::Block));
        out.push(at.plus_days(9), Some(&c.id), body(CommandKind::Unblock));
    }
    out.lines.sort_by_key(|l| (l.at, l.seq));
    let mut lines: Vec<String> = out.lines.into_iter().map(|l| l.text).collect();
    if cfg.faults && lines.len() > 100 {
        let mut rng = Rng(cfg.seed ^ 0xD00D);
        // Duplicates: an at-least-once producer redelivers a few events shortly after.
        let mut i = 50;
        while i + 5 < lines.len() {
            let dup = lines[i].clone();
            lines.insert(i + rng.range(1, 4) as usize, dup);
            i += rng.range(150, 400) as usize;
        }
        // Cross-topic reordering: a few shipments ahead of their order.
        let mut moved = 0;
        let mut j = 1;
        while j < lines.len() && moved < 5 {
            if lines[j].contains("\"shipment.shipped\"") && rng.chance(2) {
                if let Some(k) = (j.saturating_sub(40)..j).find(|k| {
                    lines[*k].contains("\"order.placed\"") && same_order(&lines[*k], &lines[j])
                }) {
                    let ship = lines.remove(j);
                    lines.insert(k, ship);
                    moved += 1;
                }
            }
            j += 1;
        }
        // Malformed input from a broken producer.
        let third = lines.len() / 3;
        lines.insert(
            third,
            "{\"event_id\": \"bad-1\", \"type\": \"order.placed\", ".into(),
        );
        lines.insert(
            third * 2,
            "{\"event_id\": \"bad-2\", \"type\": \"order.placed\", \"occurred_at\": \"2026-02-01T10:00:00Z\", \"customer_id\": \"C-0001\", \"order_id\": \"SO-X\", \"amount\": \"12.345678\", \"currency\": \"EUR\"}".into(),
        );
        lines.insert(
            third * 2 + 1,
            "{\"event_id\": \"bad-3\", \"type\": \"order.shipped\", \"occurred_at\": \"2026-02-01T10:00:00Z\", \"customer_id\": \"C-0001\"}".into(),
        );
    }
    lines
}

/// An engine that has applied the traffic `cfg` describes, through `replay` as a backtest
/// would: accounts with a realistic history, for benches and tests of state.
// Used by the tests and benches that compile this file, not by the binary itself.
#[allow(dead_code)]
pub fn replayed(cfg: &GeneratorConfig, policy: credit_sentinel::Policy) -> credit_sentinel::Engine {
    let input = generate(cfg).join("\n");
    let mut engine = credit_sentinel::Engine::new(policy);
    // Reading from memory and writing to a sink cannot fail.
    let _ = credit_sentinel::replay::replay(
        &mut engine,
        input.as_bytes(),
        std::io::sink(),
        1 << 20,
        |_| {},
    );
    engine
}

fn same_order(order_line: &str, shipment_line: &str) -> bool {
    let id = |l: &str| {
        l.split("\"order_id\":\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .map(str::to_string)
    };
    id(order_line).is_some() && id(order_line) == id(shipment_line)
}
