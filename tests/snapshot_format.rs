//! Pins the changelog's binary snapshot layout (format 2, which format 3 extends and still
//! reads) to its meaning. Postcard is not
//! self-describing: a reordered, added or retyped field in the state types changes what old
//! bytes decode to, which would misread every changelog written before. The committed fixture
//! holds format-2 records next to the same states in format 1 (JSON, field names spelled out);
//! both must decode to the same state, and re-encoding must give the committed bytes. When this
//! fails after a change to the state types, the change needs a new format version (and a reader
//! for format 2), not a new fixture.
//!
//! Regenerate only for a new format: `CREDIT_SENTINEL_WRITE_FIXTURE=1 cargo test --test
//! snapshot_format`.

use credit_sentinel::generator::{replayed, GeneratorConfig};
use credit_sentinel::state::{self, StateRecord};
use credit_sentinel::Policy;

const FIXTURE: &str = "tests/data/changelog-format-2.txt";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn json_of(record: &StateRecord) -> Vec<u8> {
    match record {
        StateRecord::Account(a) => state::encode_json_v1(a.as_ref()),
        StateRecord::Group(g) => state::encode_json_v1(g.as_ref()),
    }
}

#[test]
fn format_2_bytes_still_mean_what_they_meant() {
    if std::env::var_os("CREDIT_SENTINEL_WRITE_FIXTURE").is_some() {
        let engine = replayed(
            &GeneratorConfig {
                customers: 6,
                days: 90,
                faults: true,
                ..GeneratorConfig::default()
            },
            Policy::default(),
        );
        let mut text = String::new();
        for (key, value) in state::snapshot_all(&engine) {
            let record = state::decode(&key, &value).expect("decodes");
            text.push_str(&format!(
                "{key}\t{}\t{}\n",
                hex(&value),
                String::from_utf8(json_of(&record)).expect("utf-8")
            ));
        }
        // A new format's fixture goes beside the older ones (which keep being read).
        let path = format!("tests/data/changelog-format-{}.txt", state::FORMAT_VERSION);
        std::fs::write(path, text).expect("fixture written");
    }
    let text = std::fs::read_to_string(FIXTURE).expect("fixture");
    let mut accounts = 0;
    for line in text.lines() {
        let mut parts = line.splitn(3, '\t');
        let (key, bin, json) = (
            parts.next().expect("key"),
            unhex(parts.next().expect("hex")),
            parts.next().expect("json"),
        );
        assert_eq!(&bin[..2], &[0, 2], "{key}");
        let from_binary = state::decode(key, &bin).expect("format 2 decodes");
        let from_json = state::decode(key, json.as_bytes()).expect("format 1 decodes");
        assert_eq!(
            from_binary, from_json,
            "{key}: the bytes mean the JSON's state"
        );
        let again = match &from_binary {
            StateRecord::Account(a) => {
                accounts += 1;
                state::encode_account_state(a)
            }
            StateRecord::Group(_) => continue,
        };
        // Format 3 writes the format-2 layout unchanged, then the account extension (here
        // empty but for the event tags: no name, no deliveries, no foreign receivables, tags
        // of version 1, one unknown tag (0) per remembered event id).
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&bin[2..]);
        expected.extend_from_slice(&[0, 0, 0, 1]);
        let ids = match &from_binary {
            StateRecord::Account(a) => a.recent_event_ids.len(),
            StateRecord::Group(_) => 0,
        };
        assert!(ids < 128, "one varint byte for the count");
        expected.push(ids as u8);
        expected.extend(std::iter::repeat_n(0u8, ids));
        assert_eq!(
            hex(&again),
            hex(&expected),
            "{key}: re-encoded in format 3 to the same layout"
        );
    }
    assert!(accounts >= 6, "{accounts} accounts in the fixture");
}
