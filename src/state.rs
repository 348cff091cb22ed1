//! The changelog record format: how account and group state is written to the compacted
//! `credit.changelog` topic and read back on restore. One record per account (key
//! `a/<customer_id>`) and per group (`g/<group_id>`). The runtime also writes checkpoints
//! (`c/<partition>`: offsets, clock and live FX quotes) and restore fences (`m/<partition>`)
//! there, as small JSON documents.
//!
//! Snapshots are written in format version 3: the bytes `0x00 0x03`, the state in postcard (a
//! compact serde binary format: varint integers, length-prefixed strings, decimals as scale and
//! varint magnitude, timestamps as varint microseconds) laid out exactly as format 2, and, for
//! an account, an extension after it (`AccountExtension`: the customer's name, the live
//! deliveries of the delivery check, and the own-currency open amount of receivables in a
//! foreign currency). Format 2 (no extension) and format 1, a JSON document
//! `{"v":1,"state":{...}}` that earlier builds wrote, are still read, so a changelog written
//! before an upgrade restores. A record in a version this build does not know is refused (not
//! misread). Postcard is not self-describing: the fields of the state types, in their order,
//! are the format, so changing them means a new version; `tests/snapshot_format.rs` fails when
//! committed format-2 bytes no longer decode to the state they were written from.
//!
//! The due-moment index is not persisted: `Engine::restore_account` re-derives it from state.

use crate::engine::account::ForeignOpen;
use crate::engine::delivery::Delivery;
use crate::engine::{Account, Engine, Group};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The snapshot format this build writes (binary, see the module doc). Checkpoint and fence
/// records carry it too, as their `v`.
pub const FORMAT_VERSION: u32 = 3;

/// The binary format of earlier builds (format 3 without the account extension), still read.
pub const FORMAT_2: u32 = 2;

/// The JSON snapshot format of earlier builds, still read.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// A decoded changelog record.
#[derive(Clone, Debug, PartialEq)]
pub enum StateRecord {
    Account(Box<Account>),
    Group(Box<Group>),
}

/// Why a changelog record could not be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum StateError {
    #[error("changelog key {0:?} is neither a/<customer> nor g/<group>")]
    UnknownKey(String),
    #[error(
        "changelog record {key:?} has format version {found}, this build reads {JSON_FORMAT_VERSION} and {FORMAT_VERSION}"
    )]
    Version { key: String, found: u32 },
    #[error("changelog record {key:?} is not valid: {detail}")]
    Invalid { key: String, detail: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    state: T,
}

/// The changelog key of an account.
pub fn account_key(customer_id: &str) -> String {
    format!("a/{customer_id}")
}

/// The changelog key of a group.
pub fn group_key(group_id: &str) -> String {
    format!("g/{group_id}")
}

fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[0, FORMAT_VERSION as u8]);
    // Serializing our own plain data into a Vec cannot fail. (`to_io` copies slices;
    // `to_extend` pushes byte by byte.)
    postcard::to_io(state, out).unwrap_or_default()
}

/// What format 3 adds after an account's format-2 layout.
#[derive(Serialize, Deserialize, Default)]
struct AccountExtension {
    /// The profile's `name`.
    name: Option<String>,
    /// Live deliveries, in id order (the held ones' queue is derived from them).
    deliveries: Vec<Delivery>,
    /// Receivables in another currency than the account's: shipment id, currency and open
    /// amount in it.
    foreign_receivables: Vec<(String, ForeignOpen)>,
    /// The content fingerprints of the remembered event ids, aligned with them, and the
    /// version of the fingerprint (tags of another version are dropped: unknown).
    event_tags_version: u32,
    event_tags: Vec<u64>,
}

/// The extension as borrowed from a live account (written without copying).
#[derive(Serialize)]
struct AccountExtensionRef<'a> {
    name: Option<&'a str>,
    deliveries: Vec<&'a Delivery>,
    foreign_receivables: Vec<(&'a str, ForeignOpen)>,
    event_tags_version: u32,
    event_tags: Vec<u64>,
}

/// The version of `Event::fingerprint` the event tags of a snapshot were made with.
const EVENT_TAGS_VERSION: u32 = 1;

/// The changelog value of an account's state (what `encode_account` writes under its key).
pub fn encode_account_state(account: &Account) -> Vec<u8> {
    let out = encode(account);
    let ext = AccountExtensionRef {
        name: account.profile.as_ref().and_then(|p| p.name.as_deref()),
        deliveries: account.deliveries().values().map(|d| &**d).collect(),
        foreign_receivables: account
            .receivables()
            .iter()
            .filter_map(|r| r.foreign.map(|f| (r.shipment_id.as_str(), f)))
            .collect(),
        event_tags_version: EVENT_TAGS_VERSION,
        event_tags: account.recent_event_ids.tags().collect(),
    };
    postcard::to_io(&ext, out).unwrap_or_default()
}

/// Puts a decoded extension back into its account.
fn extend_account(account: &mut Account, ext: AccountExtension) {
    if let Some(p) = account.profile.as_mut() {
        p.name = ext.name;
    }
    account.restore_deliveries(ext.deliveries);
    if ext.event_tags_version == EVENT_TAGS_VERSION {
        account.recent_event_ids.set_tags(ext.event_tags);
    }
    for (shipment_id, f) in ext.foreign_receivables {
        account.restore_foreign(&shipment_id, f);
    }
}

/// The changelog record (key, value) for a customer's account.
pub fn encode_account(engine: &Engine, customer_id: &str) -> Option<(String, Vec<u8>)> {
    engine
        .account(customer_id)
        .map(|a| (account_key(customer_id), encode_account_state(a)))
}

/// The changelog record (key, value) for a group.
pub fn encode_group(engine: &Engine, group_id: &str) -> Option<(String, Vec<u8>)> {
    engine
        .group(group_id)
        .map(|g| (group_key(group_id), encode(g)))
}

/// Reads one state value in any format; `E` is what format 3 adds after the state (`()` for
/// none), absent (default) in formats 1 and 2.
fn decode_state<T: DeserializeOwned, E: DeserializeOwned + Default>(
    key: &str,
    value: &[u8],
) -> Result<(T, E), StateError> {
    let invalid = |detail: String| StateError::Invalid {
        key: key.to_string(),
        detail,
    };
    match value {
        [0, version, rest @ ..] => {
            let version = u32::from(*version);
            if version != FORMAT_VERSION && version != FORMAT_2 {
                return Err(StateError::Version {
                    key: key.to_string(),
                    found: version,
                });
            }
            let (state, mut left) =
                postcard::take_from_bytes::<T>(rest).map_err(|e| invalid(e.to_string()))?;
            let mut ext = E::default();
            if version == FORMAT_VERSION {
                (ext, left) =
                    postcard::take_from_bytes::<E>(left).map_err(|e| invalid(e.to_string()))?;
            }
            if !left.is_empty() {
                return Err(invalid(format!("{} bytes after the state", left.len())));
            }
            Ok((state, ext))
        }
        _ => {
            #[derive(Deserialize)]
            struct Version {
                v: u32,
            }
            let version: Version =
                serde_json::from_slice(value).map_err(|e| invalid(e.to_string()))?;
            if version.v != JSON_FORMAT_VERSION {
                return Err(StateError::Version {
                    key: key.to_string(),
                    found: version.v,
                });
            }
            serde_json::from_slice::<Envelope<T>>(value)
                .map(|e| (e.state, E::default()))
                .map_err(|e| invalid(e.to_string()))
        }
    }
}

/// Reads one changelog record (format 3, or format 2 or 1 from an earlier build).
pub fn decode(key: &str, value: &[u8]) -> Result<StateRecord, StateError> {
    if key.starts_with("a/") {
        decode_state::<Account, AccountExtension>(key, value).map(|(mut a, ext)| {
            extend_account(&mut a, ext);
            StateRecord::Account(Box::new(a))
        })
    } else if key.starts_with("g/") {
        decode_state::<Group, ()>(key, value).map(|(g, ())| StateRecord::Group(Box::new(g)))
    } else {
        Err(StateError::UnknownKey(key.to_string()))
    }
}

/// The format-1 (JSON) changelog value of a state, as builds before format 2 wrote it. Kept
/// to test that such changelogs still restore.
pub fn encode_json_v1<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(&Envelope {
        v: JSON_FORMAT_VERSION,
        state,
    })
    .unwrap_or_default()
}

/// Applies a decoded record to an engine.
pub fn restore(engine: &mut Engine, record: StateRecord) {
    match record {
        StateRecord::Account(a) => engine.restore_account(a),
        StateRecord::Group(g) => engine.restore_group(*g),
    }
}

/// Every record describing an engine's state: groups first, then accounts, in key order.
/// A group that only exists because profiles name it has no state of its own (restoring its
/// members recreates it) and is left out.
pub fn snapshot_all(engine: &Engine) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = engine
        .group_ids()
        .into_iter()
        .filter(|g| {
            engine
                .group(g)
                .is_some_and(|g| g.profile_at.is_some() || !g.recent_event_ids.is_empty())
        })
        .filter_map(|g| encode_group(engine, g))
        .collect();
    let mut ids: Vec<&str> = engine.accounts().map(|a| a.customer_id.as_str()).collect();
    ids.sort_unstable();
    out.extend(ids.into_iter().filter_map(|c| encode_account(engine, c)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_unknown_versions_and_keys() {
        assert!(matches!(
            decode("a/x", br#"{"v":99,"state":{}}"#),
            Err(StateError::Version { found: 99, .. })
        ));
        assert!(matches!(
            decode("z/x", br#"{"v":1,"state":{}}"#),
            Err(StateError::UnknownKey(_))
        ));
        assert!(matches!(
            decode("a/x", b"nope"),
            Err(StateError::Invalid { .. })
        ));
    }

    #[test]
    fn binary_decimals_keep_scale_and_sign() {
        use rust_decimal::Decimal;
        use std::str::FromStr;
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct T(#[serde(with = "crate::model::money::dec")] Decimal);
        for text in [
            "0",
            "-0",
            "100.00",
            "-1234.5678",
            "0.0000000000000000000000000001",
            "79228162514264337593543950335",
            "-79228162514264337593543950335",
        ] {
            let d = Decimal::from_str(text).unwrap();
            let bytes = postcard::to_allocvec(&T(d)).unwrap();
            let back: T = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back.0.to_string(), d.to_string(), "{text}");
            assert_eq!(
                back.0.serialize(),
                d.serialize(),
                "{text}: same representation"
            );
        }
        // Scale 29 and a magnitude of 97 bits are refused, not wrapped.
        assert!(
            postcard::from_bytes::<T>(&postcard::to_allocvec(&(29u8, 1u128)).unwrap()).is_err()
        );
        assert!(
            postcard::from_bytes::<T>(&postcard::to_allocvec(&(0u8, 1u128 << 96)).unwrap())
                .is_err()
        );
    }
}
