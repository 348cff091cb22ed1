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

/// The binary's traffic generator, compiled from its source.
#[allow(dead_code)]
#[path = "../src/tools/generator.rs"]
mod generator;

use credit_sentinel::state::{self, decode, encode_json_v1, snapshot_all, StateError, StateRecord};
use credit_sentinel::Engine;
use credit_sentinel::Policy;
use generator::{replayed, GeneratorConfig};

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

// Round trips over a generated history (moved here from the state module's unit tests when
// the generator left the library).

fn sample_engine() -> Engine {
    replayed(
        &GeneratorConfig {
            customers: 40,
            days: 60,
            faults: true,
            ..GeneratorConfig::default()
        },
        Policy::default(),
    )
}

#[test]
fn both_formats_round_trip_every_account_and_group() {
    let engine = sample_engine();
    let records = snapshot_all(&engine);
    assert!(records.len() > 40, "{} records", records.len());
    let (mut binary, mut json) = (0, 0);
    for (key, value) in &records {
        assert_eq!(&value[..2], &[0, 3], "{key} is written in format 3");
        let decoded = decode(key, value).expect("format 3 decodes");
        let v1 = match &decoded {
            StateRecord::Account(a) => {
                assert_eq!(Some(a.as_ref()), engine.account(&key[2..]));
                encode_json_v1(a.as_ref())
            }
            StateRecord::Group(g) => {
                // Members are derived from the accounts on restore, not written.
                let mut expected = engine.group(&key[2..]).expect("group").clone();
                expected.members.clear();
                assert_eq!(g.as_ref(), &expected);
                encode_json_v1(g.as_ref())
            }
        };
        assert_eq!(v1[0], b'{');
        // Format 1 predates what format 3's extension carries: decoded, it is the same state
        // without the extension (no deliveries, foreign sides, customer name or event tags).
        let from_v1 = decode(key, &v1).expect("format 1 decodes");
        match (&from_v1, &decoded) {
            (StateRecord::Account(a1), StateRecord::Account(a3)) => {
                assert!(a1.deliveries().is_empty() && a1.held_deliveries().is_empty());
                assert!(a1.receivables().iter().all(|r| r.foreign.is_none()));
                assert!(a1.profile.as_ref().is_none_or(|p| p.name.is_none()));
                assert!(a1.recent_event_ids.tags().all(|t| t == 0));
                assert_eq!(a1.recent_event_ids.len(), a3.recent_event_ids.len());
                // Every field format 1 carries is equal.
                assert_eq!(encode_json_v1(a1.as_ref()), v1, "{key}");
            }
            (StateRecord::Group(g1), StateRecord::Group(g3)) => assert_eq!(g1, g3),
            _ => panic!("{key}: format 1 decodes to another kind of record"),
        }
        binary += value.len();
        json += v1.len();
    }
    // Not a speed claim, a format one: the binary snapshot is much smaller than the JSON.
    assert!(
        binary * 2 < json,
        "binary {binary} bytes, JSON {json} bytes"
    );
}

#[test]
fn refuses_damaged_binary_records() {
    let engine = sample_engine();
    let (key, value) = snapshot_all(&engine).pop().expect("a record");
    let mut other_version = value.clone();
    other_version[1] = 9;
    assert!(matches!(
        decode(&key, &other_version),
        Err(StateError::Version { found: 9, .. })
    ));
    for cut in [2, value.len() / 2, value.len() - 1] {
        assert!(
            matches!(decode(&key, &value[..cut]), Err(StateError::Invalid { .. })),
            "cut at {cut}"
        );
    }
    let mut longer = value.clone();
    longer.push(0);
    assert!(matches!(
        decode(&key, &longer),
        Err(StateError::Invalid { .. })
    ));
}
