//! The decoder's first pass by hand, for the shape nearly every input has: one JSON object
//! whose values are strings without escapes, numbers, `true`, `false`, `null`, or arrays of
//! those, each key once. It splits the object into the known fields' raw texts without
//! serde_json's generic machinery (which costs about as much as everything else decoding does).
//!
//! It never decides alone what serde_json would refuse: whatever is outside that shape (an
//! escape, a nested object, a repeated known key, a syntax error, trailing text) returns `None`
//! and the caller runs serde_json's pass, which accepts or words the error as before. Where it
//! answers, it answers what serde_json's pass gives (a property test holds them equal).

use super::Fields;
use crate::model::money::is_json_number;

/// JSON whitespace: space, tab, line feed, carriage return.
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end (one past the closing quote) of a string starting at `i`, if it has no escape and
/// no control character.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let rest = b.get(i + 1..)?;
    let close = stop_byte(rest)?;
    (rest[close] == b'"').then_some(i + 1 + close + 1)
}

/// The first quote, backslash or control character in `b`. Eight bytes at a time: in a word,
/// a byte that is zero after xor with the quote or the backslash, or below 0x20, sets its high
/// bit in `flags` (the usual bit trick: a borrow can flag a byte falsely only above a byte
/// truly flagged, so the lowest flag is exact). The tail is padded with a stop.
fn stop_byte(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGH;
    let flags = |word: [u8; 8]| {
        let v = u64::from_le_bytes(word);
        below(v ^ (ONES * u64::from(b'"')), 1)
            | below(v ^ (ONES * u64::from(b'\\')), 1)
            | below(v, 0x20)
    };
    let mut at = 0;
    let mut chunks = b.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let f = flags(word);
        if f != 0 {
            return Some(at + f.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    let mut word = [0u8; 8];
    word[..tail.len()].copy_from_slice(tail);
    let k = flags(word).trailing_zeros() as usize / 8;
    (k < tail.len()).then_some(at + k)
}

/// The end of a scalar (string, number, literal) starting at `i`.
fn scalar_end(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    match b.get(i)? {
        b'"' => string_end(b, i),
        b'-' | b'0'..=b'9' => {
            let len = b[i..]
                .iter()
                .position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                .unwrap_or(b.len() - i);
            is_json_number(&text[i..i + len]).then_some(i + len)
        }
        _ => ["true", "false", "null"]
            .into_iter()
            .find(|lit| b[i..].starts_with(lit.as_bytes()))
            .map(|lit| i + lit.len()),
    }
}

/// The end of a value starting at `i`: a scalar, or an array of scalars.
fn value_end(text: &str, i: usize) -> Option<usize> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'[') {
        return scalar_end(text, i);
    }
    let mut j = skip_ws(b, i + 1);
    if b.get(j) == Some(&b']') {
        return Some(j + 1);
    }
    loop {
        j = skip_ws(b, scalar_end(text, j)?);
        match b.get(j)? {
            b',' => j = skip_ws(b, j + 1),
            b']' => return Some(j + 1),
            _ => return None,
        }
    }
}

/// The known fields of `text` when it has the simple shape; `None` for anything else.
pub(super) fn fields(text: &str) -> Option<Fields<'_>> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut f = Fields::default();
    let mut nulls = false;
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let key_end = string_end(b, i)?;
            let key = &text[i + 1..key_end - 1];
            i = skip_ws(b, key_end);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let end = value_end(text, i)?;
            if let Some(slot) = f.slot(key) {
                if slot.is_some() {
                    // serde refuses a repeated field, with its own words.
                    return None;
                }
                let value = &text[i..end];
                nulls |= value == "null";
                *slot = Some(super::Raw {
                    text: value,
                    plain: true,
                });
            }
            i = skip_ws(b, end);
            match b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then(|| if nulls { f.without_nulls() } else { f })
}

#[cfg(test)]
mod tests {
    use super::super::{Fields, RawEvent};
    use super::*;
    use proptest::prelude::*;

    /// What serde_json's pass gives, as `Fields`; `None` when it refuses the text.
    fn by_serde(text: &str) -> Option<Fields<'_>> {
        serde_json::from_str::<RawEvent<'_>>(text)
            .ok()
            .map(Fields::from)
    }

    #[test]
    fn stop_byte_finds_the_first_stop() {
        let reference = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for len in 0..20 {
            for stop in [b'"', b'\\', 0u8, 0x1f, b' ', 0x7f, 0x80, 0xff, b'!'] {
                for at in 0..len {
                    let mut v = vec![b'a'; len];
                    v[at] = stop;
                    cases.push(v);
                }
            }
        }
        // Bytes around the thresholds in every position of a word.
        cases.push((0u8..=255).collect());
        cases.push((0u8..=255).rev().collect());
        for c in &cases {
            assert_eq!(stop_byte(c), reference(c), "{c:?}");
        }
    }

    #[test]
    fn agrees_with_serde_on_shapes_and_refusals() {
        for text in [
            r#"{"event_id":"e1","type":"order.placed","amount":"12.50","currency":"EUR"}"#,
            r#" { "event_id" : "e1" , "amount" : 12.5 , "x" : [1, "a", null] , "y": true } "#,
            r#"{"applies_to":["S-1","S-2"],"amount":-0.5e3}"#,
            r#"{"applies_to":[],"note":null}"#,
            r#"{}"#,
            r#"{"event_id":"e1","event_id":"e2"}"#,
            r#"{"event_id":null,"event_id":"e2"}"#,
            r#"{"unknown":1,"unknown":2}"#,
            r#"{"event_id":"a\"b"}"#,
            r#"{"ev\u0065nt_id":"e1"}"#,
            r#"{"temporary_limit":{"amount":"1","expires_at":"2026-01-01T00:00:00Z"}}"#,
            r#"{"amount":01}"#,
            r#"{"amount":1.}"#,
            r#"{"amount":+1}"#,
            r#"{"amount":1,}"#,
            r#"{"amount":1}x"#,
            r#"{"amount":tru}"#,
            "{\"event_id\":\"a\tb\"}",
            r#"["event_id"]"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            "",
            "{",
        ] {
            if let Some(f) = fields(text) {
                assert_eq!(Some(f), by_serde(text), "{text}");
            }
        }
        assert!(fields(r#"{"event_id":"e1","event_id":"e2"}"#).is_none());
        assert!(fields(r#"{"event_id":"e1","amount":"1"}"#).is_some());
    }

    /// Pieces the generator below joins into objects, well and badly formed.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(r#""event_id""#.to_string()),
            Just(r#""type""#.to_string()),
            Just(r#""amount""#.to_string()),
            Just(r#""applies_to""#.to_string()),
            Just(r#""other""#.to_string()),
            Just(r#""ord\u0065r_id""#.to_string()),
            Just(r#""e-1""#.to_string()),
            Just(r#""12.50""#.to_string()),
            Just("12.5".to_string()),
            Just("-0".to_string()),
            Just("1e5".to_string()),
            Just("01".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just(r#"["S-1", 2]"#.to_string()),
            Just(r#"{"amount":"1"}"#.to_string()),
            Just(":".to_string()),
            Just(",".to_string()),
            Just(" ".to_string()),
            Just("\n".to_string()),
            Just("\"a\\\"b\"".to_string()),
            "[ -~]{0,3}".prop_map(|s| s),
        ]
    }

    proptest! {
        /// Wherever the hand pass answers, serde_json's pass accepts the text and gives the
        /// same fields.
        #[test]
        fn hand_pass_answers_as_serde(pieces in proptest::collection::vec(piece(), 0..14), wellformed in any::<bool>()) {
            let text = if wellformed {
                // key:value pairs, so that most cases are objects serde accepts.
                let pairs: Vec<String> = pieces
                    .chunks(2)
                    .map(|c| format!("{}:{}", c[0], c.get(1).map_or("null", String::as_str)))
                    .collect();
                format!("{{{}}}", pairs.join(","))
            } else {
                format!("{{{}}}", pieces.concat())
            };
            if let Some(f) = fields(&text) {
                prop_assert_eq!(Some(f), by_serde(&text), "{}", text);
            }
        }
    }
}
