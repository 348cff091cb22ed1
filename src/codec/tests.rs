//! The decoder's and encoder's unit tests: what is refused with which code, and round trips.

use super::*;

fn code(bytes: &[u8]) -> ErrorCode {
    decode_event(bytes).expect_err("must be rejected").error
}

#[test]
fn ids_with_control_characters_and_non_iso_currencies_are_refused() {
    // The HTTP API refused both; Kafka accepted them.
    let order = |customer: &str, currency: &str| {
        format!(
            r#"{{"event_id":"e","type":"order.placed","occurred_at":"2026-05-04T09:00:00Z","customer_id":"{customer}","order_id":"SO-1","amount":"1.00","currency":"{currency}"}}"#
        )
    };
    assert!(decode_event(order("ACME", "EUR").as_bytes()).is_ok());
    let r = decode_event(order("AC\\u0007ME", "EUR").as_bytes()).unwrap_err();
    assert_eq!(r.error, ErrorCode::InvalidField);
    assert!(
        r.detail.contains("without control characters"),
        "{}",
        r.detail
    );
    let r = decode_event(order("ACME", "ZZZ").as_bytes()).unwrap_err();
    assert_eq!(r.error, ErrorCode::InvalidField);
    assert!(r.detail.contains("ISO 4217"), "{}", r.detail);
    assert!(decode_event(order("ACME", "CHF").as_bytes()).is_ok());
}

#[test]
fn a_dead_letter_embeds_at_most_64_kib_of_its_original() {
    let big = format!("{{\"x\":\"{}\"", "\"\\".repeat(500_000));
    let r = decode_event(big.as_bytes()).expect_err("malformed");
    let source = SourcePosition {
        topic: Some("credit.orders".into()),
        partition: Some(1),
        offset: Some(42),
        line: None,
    };
    let dl = DeadLetter::new(r, big.as_bytes(), &source);
    assert!(dl.original_truncated);
    assert_eq!(dl.original_bytes, Some(big.len()));
    assert_eq!(dl.original.len(), ORIGINAL_MAX_BYTES);
    assert_eq!(dl.original_sha256.as_deref().map(str::len), Some(64));
    let json = serde_json::to_vec(&dl).unwrap();
    assert!(
        json.len() < 6 * ORIGINAL_MAX_BYTES + 4096,
        "{} bytes",
        json.len()
    );
    // A small original is embedded whole, with no truncation fields.
    let small = br#"{"event_id":"e"}"#;
    let dl = DeadLetter::new(decode_event(small).unwrap_err(), small, &source);
    let v: serde_json::Value = serde_json::to_value(&dl).unwrap();
    assert_eq!(v["original"], std::str::from_utf8(small).unwrap());
    assert!(v.get("original_truncated").is_none() && v.get("original_sha256").is_none());
}

#[test]
fn every_command_type_decodes_to_its_own_kind_and_round_trips() {
    for (t, order) in [
        (types::COMMAND_RELEASE_HOLD, true),
        (types::COMMAND_REJECT_HOLD, true),
        (types::COMMAND_BLOCK, false),
        (types::COMMAND_UNBLOCK, false),
    ] {
        let order_id = if order { r#","order_id":"SO-1""# } else { "" };
        let line = format!(
            r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n"{order_id}}}"#
        );
        let ev = decode_event(line.as_bytes()).unwrap();
        assert_eq!(ev.type_str(), t, "{line}");
        let again = decode_event(encode_event(&ev).as_bytes()).unwrap();
        assert_eq!(ev, again);
    }
    for t in [
        types::COMMAND_RELEASE_DELIVERY,
        types::COMMAND_REJECT_DELIVERY,
    ] {
        let line = format!(
            r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n","delivery_id":"DN-1"}}"#
        );
        let ev = decode_event(line.as_bytes()).unwrap();
        assert_eq!(ev.type_str(), t, "{line}");
        assert_eq!(decode_event(encode_event(&ev).as_bytes()).unwrap(), ev);
        let no_delivery = line.replace(r#","delivery_id":"DN-1""#, "");
        assert_eq!(code(no_delivery.as_bytes()), ErrorCode::MissingField, "{t}");
    }
    // Types the contract does not name are refused.
    for t in ["command.anything", "delivery.shipped"] {
        let line = format!(
            r#"{{"event_id":"c","type":"{t}","occurred_at":"2026-05-04T09:00:00Z","customer_id":"C","actor":"a","note":"n","order_id":"SO-1"}}"#
        );
        assert_eq!(code(line.as_bytes()), ErrorCode::UnknownType, "{t}");
    }
}

#[test]
fn decodes_an_order_and_round_trips() {
    let line = br#"{"event_id":"e1","type":"order.placed","occurred_at":"2026-05-04T09:00:00+02:00","customer_id":"ACME","order_id":"SO-1","amount":"30000.00","currency":"EUR","extra":{"ignored":[1,2]}}"#;
    let ev = decode_event(line).unwrap();
    assert_eq!(ev.occurred_at.to_rfc3339(), "2026-05-04T07:00:00Z");
    let again = decode_event(encode_event(&ev).as_bytes()).unwrap();
    assert_eq!(ev, again);
}

#[test]
fn numbers_are_exact() {
    let line = br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":0.1,"currency":"EUR"}"#;
    match decode_event(line).unwrap().body {
        EventBody::OrderPlaced(OrderPlaced { amount, .. }) => {
            assert_eq!(amount, Decimal::new(1, 1))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn error_codes() {
    assert_eq!(
        code(b"{\"event_id\": \"g2\", \"type\": \"order.placed\", "),
        ErrorCode::MalformedJson
    );
    assert_eq!(code(b"[1,2]"), ErrorCode::MalformedJson);
    assert_eq!(code(&[0xff, 0xfe]), ErrorCode::MalformedJson);
    assert_eq!(code(br#"{"event_id":"e","type":"order.shipped","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C"}"#), ErrorCode::UnknownType);
    assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","currency":"EUR"}"#), ErrorCode::MissingField);
    assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":"1.23456","currency":"EUR"}"#), ErrorCode::InvalidField);
    assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":true,"currency":"EUR"}"#), ErrorCode::InvalidField);
    assert_eq!(
        code(br#"{"event_id":"e","event_id":"f","type":"order.placed"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(
        code(br#"{"event_id":"","type":"order.placed"}"#),
        ErrorCode::InvalidField
    );
    assert_eq!(code(br#"{"event_id":"e","type":"order.placed","occurred_at":"yesterday","customer_id":"C"}"#), ErrorCode::InvalidField);
    // Deep nesting never recurses: serde_json skips values iteratively, so a deeply
    // nested unknown field is harmless and the event is judged on its real fields.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(
        code(format!("{{\"x\":{deep}}}").as_bytes()),
        ErrorCode::MissingField
    );
    let nested_amount = format!(
        r#"{{"event_id":"e","type":"order.placed","occurred_at":"2026-01-01T00:00:00Z","customer_id":"C","order_id":"O","amount":{deep},"currency":"EUR"}}"#
    );
    assert_eq!(code(nested_amount.as_bytes()), ErrorCode::InvalidField);
}

#[test]
fn rejection_keeps_what_is_known() {
    let r = decode_event(br#"{"event_id":"g3","type":"order.placed","occurred_at":"2026-01-01T09:00:00Z","customer_id":"CORK","order_id":"SO-9","amount":"12.345678","currency":"EUR"}"#).unwrap_err();
    assert_eq!(r.event_id.as_deref(), Some("g3"));
    assert_eq!(r.customer_id.as_deref(), Some("CORK"));
    assert!(r.detail.contains("amount"), "{}", r.detail);
}

#[test]
fn dead_letter_of_binary_is_base64() {
    let r = decode_event(&[0xff]).unwrap_err();
    let dl = DeadLetter::new(r, &[0xff], &SourcePosition::default());
    assert_eq!(dl.original_encoding, "base64");
    assert_eq!(dl.original, "/w==");
}
