//! Fuzz target for the input codec: arbitrary bytes must never panic the decoder, and what
//! it accepts must survive a round trip (encode, decode again: the same event). What it refuses
//! becomes a dead-letter record that serializes.
#![no_main]

use credit_sentinel::codec::{decode_event, encode_event, DeadLetter, SourcePosition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode_event(data) {
        Ok(event) => {
            let text = encode_event(&event);
            let again = decode_event(text.as_bytes())
                .unwrap_or_else(|r| panic!("re-encoded event refused: {r:?}\n{text}"));
            assert_eq!(again, event, "round trip changed the event:\n{text}");
        }
        Err(rejection) => {
            let dl = DeadLetter::new(rejection, data, &SourcePosition::default());
            let json = serde_json::to_string(&dl).expect("dead letter serializes");
            assert!(!json.is_empty());
        }
    }
});
