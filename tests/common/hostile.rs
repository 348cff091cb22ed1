//! Hostile inputs, each with the dead-letter code it must get: shared by the replay test
//! (`tests/adversarial.rs`) and the same inputs through the broker and `run`
//! (`tests/kafka.rs`).
#![allow(dead_code)]

/// The engine's input limit (`limits.max_message_bytes`, default).
pub const MAX: usize = 1024 * 1024;

pub fn order_line(event_id: &str, customer: &str, order_id: &str, amount: &str) -> String {
    format!(
        r#"{{"event_id":"{event_id}","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"{customer}","order_id":"{order_id}","amount":"{amount}","currency":"EUR"}}"#
    )
}

pub const PROFILE: &str = r#"{"event_id":"p-1","type":"profile.customer","occurred_at":"2026-03-01T00:00:00Z","customer_id":"ACME","credit_limit":"10000.00","currency":"EUR"}"#;

/// (what, bytes, dead-letter error code), for customer `ACME`.
pub fn cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let deep_open = "[".repeat(200_000);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let long_id = "C".repeat(129);
    vec![
        (
            "2 MiB message",
            format!(r#"{{"pad":"{}"}}"#, "a".repeat(2 * MAX)).into_bytes(),
            "TOO_LARGE",
        ),
        (
            "deeply nested, unterminated",
            deep_open.into_bytes(),
            "MALFORMED_JSON",
        ),
        (
            "deeply nested amount",
            format!(
                r#"{{"event_id":"d","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME","order_id":"O-D","amount":{deep},"currency":"EUR"}}"#
            )
            .into_bytes(),
            "INVALID_FIELD",
        ),
        (
            "invalid UTF-8",
            b"{\"event_id\":\"\xff\xfe\",\"type\":\"order.placed\"}".to_vec(),
            "MALFORMED_JSON",
        ),
        ("NUL bytes", b"\0\0\0\0".to_vec(), "MALFORMED_JSON"),
        ("JSON null", b"null".to_vec(), "MALFORMED_JSON"),
        ("a bare string", br#""order.placed""#.to_vec(), "MALFORMED_JSON"),
        (
            "amount 1e400 as a number",
            br#"{"event_id":"h1","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME","order_id":"O-H1","amount":1e400,"currency":"EUR"}"#.to_vec(),
            "INVALID_FIELD",
        ),
        (
            "amount beyond 96-bit decimal",
            br#"{"event_id":"h2","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME","order_id":"O-H2","amount":"792281625142643375935439503360","currency":"EUR"}"#.to_vec(),
            "INVALID_FIELD",
        ),
        (
            "amount with 30 decimals",
            br#"{"event_id":"h3","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME","order_id":"O-H3","amount":"1.000000000000000000000000000001","currency":"EUR"}"#.to_vec(),
            "INVALID_FIELD",
        ),
        (
            "year 10000",
            br#"{"event_id":"h4","type":"order.placed","occurred_at":"10000-01-01T00:00:00Z","customer_id":"ACME","order_id":"O-H4","amount":"1","currency":"EUR"}"#.to_vec(),
            "INVALID_FIELD",
        ),
        (
            "duplicate keys",
            br#"{"event_id":"k","type":"order.placed","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME","customer_id":"EVIL","order_id":"O-K","amount":"1","currency":"EUR"}"#.to_vec(),
            "INVALID_FIELD",
        ),
        (
            "an id of 129 characters",
            order_line("i", &long_id, "O-I", "1").into_bytes(),
            "INVALID_FIELD",
        ),
        (
            "an unknown type",
            br#"{"event_id":"u","type":"order.exploded","occurred_at":"2026-03-02T09:00:00Z","customer_id":"ACME"}"#.to_vec(),
            "UNKNOWN_TYPE",
        ),
        (
            "a clock 10 years ahead",
            order_line("f", "ACME", "O-F", "1")
                .replace("2026-03-02", "2036-03-02")
                .into_bytes(),
            "INVALID_FIELD",
        ),
    ]
}
