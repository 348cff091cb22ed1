//! Fuzz target for the core: arbitrary sequences of structurally valid events (small id pools
//! so that references collide, extreme amounts, dates at the edges, unknown references,
//! duplicates, commands, delivery checks, live FX rates) under a policy with tight bounds.
//! Checked after every event: the exposure identity and every other invariant. Checked at the
//! end: delivering every event twice emits the same decisions and alerts as once; the same
//! input gives byte-identical output; and an engine restored from a snapshot taken mid-stream
//! (what a restarted instance does) produces exactly what the uninterrupted engine produced
//! after that point.
#![no_main]

use arbitrary::{Result, Unstructured};
use credit_sentinel::codec::decode_event;
use credit_sentinel::model::{Event, Output};
use credit_sentinel::policy::ReleaseOrder;
use credit_sentinel::state::{self, StateRecord};
use credit_sentinel::{Engine, Policy};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const AMOUNTS: &[&str] = &[
    "0",
    "0.01",
    "1",
    "5.5",
    "99.99",
    "100",
    "250",
    "999.99",
    "1000",
    "4999.50",
    "10000",
    "123456.78",
    "1000000",
    "99999999999",
    "7922816251426433759354395033.5",
    "79228162514264337593543950335",
    "-1",
    "0.001",
];
const TIMES: &[&str] = &[
    "0001-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2025-12-31T23:59:59Z",
    "2026-02-28T23:59:59+14:00",
    "2026-03-01T00:00:00-12:00",
    "9999-12-31T23:59:59Z",
];
const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "USD", "XYZ"];

fn base_policy() -> &'static Policy {
    static P: OnceLock<Policy> = OnceLock::new();
    P.get_or_init(|| {
        credit_sentinel::config::load_with_env(None, Vec::<(String, String)>::new())
            .expect("default settings")
            .policy
    })
}

fn pick<'a>(u: &mut Unstructured<'_>, xs: &[&'a str]) -> Result<&'a str> {
    Ok(xs[u.choose_index(xs.len())?])
}

fn id(u: &mut Unstructured<'_>, prefix: &str, n: u8) -> Result<String> {
    Ok(format!("{prefix}-{}", u.int_in_range(0..=n)?))
}

fn amount(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(if u.ratio(3, 4)? {
        format!(
            "{}.{:02}",
            u.int_in_range(0u32..=20_000)?,
            u.int_in_range(0u8..=99)?
        )
    } else {
        pick(u, AMOUNTS)?.to_string()
    })
}

/// A time: mostly walking forward from a base in hours, sometimes an edge of the calendar.
fn time(u: &mut Unstructured<'_>, hours: &mut u32) -> Result<String> {
    if u.ratio(1, 20)? {
        return Ok(pick(u, TIMES)?.to_string());
    }
    *hours += u.int_in_range(0u32..=240)?;
    let back = u.ratio(1, 10)?;
    let h = if back {
        hours.saturating_sub(500)
    } else {
        *hours
    };
    Ok(
        format!("2026-01-{:02}T{:02}:00:00Z", 1 + (h / 24) % 28, h % 24)
            .replace("2026-01", &format!("2026-{:02}", 1 + (h / (24 * 28)) % 12)),
    )
}

fn line(u: &mut Unstructured<'_>, n: usize, hours: &mut u32) -> Result<String> {
    let event_id = if u.ratio(1, 10)? && n > 0 {
        format!("e{}", u.int_in_range(0..=n - 1)?)
    } else {
        format!("e{n}")
    };
    let at = time(u, hours)?;
    let customer = id(u, "C", 3)?;
    let head =
        format!(r#""event_id":"{event_id}","occurred_at":"{at}","customer_id":"{customer}""#);
    let cur = pick(u, CURRENCIES)?;
    let body = match u.int_in_range(0u8..=14)? {
        0..=3 => format!(
            r#""type":"order.placed","order_id":"{}","amount":"{}","currency":"{cur}""#,
            id(u, "O", 7)?,
            amount(u)?
        ),
        4 => format!(
            r#""type":"order.cancelled","order_id":"{}""#,
            id(u, "O", 7)?
        ),
        5 | 6 => {
            let due = if u.arbitrary()? {
                format!(r#","due_at":"{}""#, time(u, &mut hours.clone())?)
            } else {
                String::new()
            };
            let delivery = if u.arbitrary()? {
                format!(r#","delivery_id":"{}""#, id(u, "D", 5)?)
            } else {
                String::new()
            };
            format!(
                r#""type":"shipment.shipped","shipment_id":"{}","order_id":"{}","amount":"{}","currency":"{cur}"{due}{delivery}"#,
                id(u, "S", 7)?,
                id(u, "O", 7)?,
                amount(u)?
            )
        }
        7 | 8 => {
            let kind = if u.ratio(1, 4)? {
                r#""type":"credit_note.issued","credit_note_id""#
            } else {
                r#""type":"payment.received","payment_id""#
            };
            let mut applies = Vec::new();
            for _ in 0..u.int_in_range(0u8..=2)? {
                applies.push(format!("\"{}\"", id(u, "S", 7)?));
            }
            format!(
                r#"{kind}:"{}","amount":"{}","currency":"{cur}","applies_to":[{}]"#,
                id(u, "P", 7)?,
                amount(u)?,
                applies.join(",")
            )
        }
        9 => {
            let grade = pick(u, &["A", "B", "C", "D"])?;
            let status = pick(u, &["active", "active", "blocked", "prepay_only", "closed"])?;
            let mut extra = String::new();
            if u.arbitrary()? {
                extra.push_str(&format!(r#","group_id":"{}""#, id(u, "G", 1)?));
            }
            if u.arbitrary()? {
                extra.push_str(&format!(r#","max_order_amount":"{}""#, amount(u)?));
            }
            if u.arbitrary()? {
                extra.push_str(&format!(
                    r#","temporary_limit":{{"amount":"{}","expires_at":"{}"}}"#,
                    amount(u)?,
                    time(u, &mut hours.clone())?
                ));
            }
            if u.arbitrary()? {
                extra.push_str(&format!(
                    r#","review_date":"{}""#,
                    time(u, &mut hours.clone())?
                ));
            }
            format!(
                r#""type":"profile.customer","credit_limit":"{}","currency":"{cur}","grade":"{grade}","status":"{status}"{extra}"#,
                amount(u)?
            )
        }
        12 => format!(
            r#""type":"delivery.requested","delivery_id":"{}","order_id":"{}","amount":"{}","currency":"{cur}""#,
            id(u, "D", 5)?,
            id(u, "O", 7)?,
            amount(u)?
        ),
        13 => {
            let (base, quote) = if u.arbitrary()? {
                ("EUR", "USD")
            } else {
                ("USD", "EUR")
            };
            let rate = pick(u, &["0.5", "0.9", "1", "1.1", "1.08765", "2", "0.0001", "0"])?;
            return Ok(format!(
                r#"{{"event_id":"{event_id}","occurred_at":"{at}","type":"fx.rate","base":"{base}","quote":"{quote}","rate":"{rate}"}}"#
            ));
        }
        14 => {
            let actor = pick(u, &["alice", "bob"])?;
            format!(
                r#""type":"command.{}","delivery_id":"{}","actor":"{actor}","note":"fuzz""#,
                if u.arbitrary()? {
                    "release_delivery"
                } else {
                    "reject_delivery"
                },
                id(u, "D", 5)?
            )
        }
        10 => {
            return Ok(format!(
                r#"{{"event_id":"{event_id}","occurred_at":"{at}","type":"profile.group","group_id":"{}","credit_limit":"{}","currency":"{cur}"}}"#,
                id(u, "G", 1)?,
                amount(u)?
            ))
        }
        _ => {
            let actor = pick(u, &["alice", "bob"])?;
            match u.int_in_range(0u8..=3)? {
                0 | 1 => format!(
                    r#""type":"command.{}","order_id":"{}","actor":"{actor}","note":"fuzz""#,
                    if u.arbitrary()? {
                        "release_hold"
                    } else {
                        "reject_hold"
                    },
                    id(u, "O", 7)?
                ),
                _ => format!(
                    r#""type":"command.{}","actor":"{actor}","note":"fuzz""#,
                    if u.arbitrary()? { "block" } else { "unblock" }
                ),
            }
        }
    };
    Ok(format!("{{{head},{body}}}"))
}

fn policy(u: &mut Unstructured<'_>) -> Result<Policy> {
    let mut p = base_policy().clone();
    if u.arbitrary()? {
        p.release_order = ReleaseOrder::FirstFit;
    }
    if u.arbitrary()? {
        p.four_eyes_amount = Some("500".parse().expect("decimal"));
    }
    if u.arbitrary()? {
        p.unknown_customer_limit = Some((
            "1000".parse().expect("decimal"),
            credit_sentinel::model::Currency::parse("EUR").expect("currency"),
        ));
    }
    // Tight bounds, so that forgetting and early resolution are exercised.
    p.bounds.event_ids_per_account = u.int_in_range(0..=8)?;
    p.bounds.closed_ids_per_account = u.int_in_range(1..=8)?;
    p.bounds.pending_per_account = u.int_in_range(0..=3)?;
    Ok(p)
}

fn render(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .map(|o| match o {
            Output::Decision(d) => serde_json::to_string(d).expect("json"),
            Output::DeliveryDecision(d) => serde_json::to_string(d).expect("json"),
            Output::Alert(a) => serde_json::to_string(a).expect("json"),
            Output::DeadLetter(r) => format!("{r:?}"),
        })
        .collect()
}

fn accepted(outputs: &[Output]) -> Vec<String> {
    outputs
        .iter()
        .filter(|o| !matches!(o, Output::DeadLetter(_)))
        .map(|o| render(std::slice::from_ref(o)).remove(0))
        .collect()
}

fn snapshot(engine: &Engine) -> Engine {
    let mut restored = Engine::new(engine.policy().clone());
    for g in engine.group_ids() {
        let (key, value) = state::encode_group(engine, g).expect("group");
        match state::decode(&key, &value).expect("group decodes") {
            StateRecord::Group(g) => restored.restore_group(*g),
            other => panic!("{other:?}"),
        }
    }
    let ids: Vec<String> = engine.accounts().map(|a| a.customer_id.clone()).collect();
    for cid in ids {
        let (key, value) = state::encode_account(engine, &cid).expect("account");
        match state::decode(&key, &value).expect("account decodes") {
            StateRecord::Account(a) => restored.restore_account(a),
            other => panic!("{other:?}"),
        }
    }
    if let Some(c) = engine.clock() {
        restored.restore_clock(c);
    }
    // The live rates travel in the checkpoint, as the runtime writes them.
    restored.restore_rates(&engine.rates().live());
    restored
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let policy = policy(&mut u)?;
    let mut hours = 0;
    let mut events: Vec<Event> = Vec::new();
    while events.len() < 48 && !u.is_empty() {
        let text = line(&mut u, events.len(), &mut hours)?;
        if let Ok(e) = decode_event(text.as_bytes()) {
            events.push(e);
        }
    }
    let split = u.int_in_range(0..=events.len()).unwrap_or(0);
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("bounds {:?}", policy.bounds);
        for e in &events {
            eprintln!("{}", credit_sentinel::codec::encode_event(e));
        }
    }

    let mut once = Engine::new(policy.clone());
    let mut out = Vec::new();
    let mut restored = None;
    let mut after_split = 0;
    for (i, e) in events.iter().enumerate() {
        if i == split {
            restored = Some(snapshot(&once));
            after_split = out.len();
        }
        once.apply(e, &mut out);
        if let Err(why) = once.verify_invariants() {
            panic!("invariant broken after event {i}: {why}");
        }
    }
    let restored_out = restored.map(|mut r| {
        let mut o = Vec::new();
        for e in &events[split..] {
            r.apply(e, &mut o);
        }
        o
    });

    let mut again = Engine::new(policy.clone());
    let mut out_again = Vec::new();
    for e in &events {
        again.apply(e, &mut out_again);
    }
    assert_eq!(render(&out), render(&out_again), "same input, same output");

    // Immediate redelivery is caught by the event-id memory. With that memory disabled
    // (`event_ids_per_account = 0`) only order, shipment and payment ids protect, and a closed
    // id beyond `closed_ids_per_account` is documented to count as new: not checked then.
    if policy.bounds.event_ids_per_account > 0 {
        let mut twice = Engine::new(policy);
        let mut out_twice = Vec::new();
        for e in &events {
            twice.apply(e, &mut out_twice);
            twice.apply(e, &mut out_twice);
        }
        assert_eq!(
            accepted(&out),
            accepted(&out_twice),
            "a redelivered event changes nothing"
        );
    }

    if let Some(o) = restored_out {
        assert_eq!(
            render(&out[after_split..]),
            render(&o),
            "an engine restored at event {split} continues exactly as the uninterrupted one"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
