//! The changelog record format: how account and group state is written to the compacted
//! `credit.changelog` topic and read back on restore. One record per account (key
//! `a/<customer_id>`) and per group (`g/<group_id>`), each a versioned JSON document, so a
//! newer engine can refuse (rather than misread) a format it does not know. The runtime also
//! writes checkpoints (`c/<partition>`) and restore fences (`m/<partition>`) there.
//!
//! The due-moment index is not persisted: `Engine::restore_account` re-derives it from state.

use crate::engine::{Account, Engine, Group};
use serde::{Deserialize, Serialize};

/// The snapshot format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

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
        "changelog record {key:?} has format version {found}, this build reads {FORMAT_VERSION}"
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
    // Serializing our own plain data cannot fail.
    serde_json::to_vec(&Envelope {
        v: FORMAT_VERSION,
        state,
    })
    .unwrap_or_default()
}

/// The changelog record (key, value) for a customer's account.
pub fn encode_account(engine: &Engine, customer_id: &str) -> Option<(String, Vec<u8>)> {
    engine
        .account(customer_id)
        .map(|a| (account_key(customer_id), encode(a)))
}

/// The changelog record (key, value) for a group.
pub fn encode_group(engine: &Engine, group_id: &str) -> Option<(String, Vec<u8>)> {
    engine
        .group(group_id)
        .map(|g| (group_key(group_id), encode(g)))
}

/// Reads one changelog record.
pub fn decode(key: &str, value: &[u8]) -> Result<StateRecord, StateError> {
    let invalid = |e: serde_json::Error| StateError::Invalid {
        key: key.to_string(),
        detail: e.to_string(),
    };
    #[derive(Deserialize)]
    struct Version {
        v: u32,
    }
    let version: Version = serde_json::from_slice(value).map_err(invalid)?;
    if version.v != FORMAT_VERSION {
        return Err(StateError::Version {
            key: key.to_string(),
            found: version.v,
        });
    }
    if key.starts_with("a/") {
        let e: Envelope<Account> = serde_json::from_slice(value).map_err(invalid)?;
        Ok(StateRecord::Account(Box::new(e.state)))
    } else if key.starts_with("g/") {
        let e: Envelope<Group> = serde_json::from_slice(value).map_err(invalid)?;
        Ok(StateRecord::Group(Box::new(e.state)))
    } else {
        Err(StateError::UnknownKey(key.to_string()))
    }
}

/// Applies a decoded record to an engine.
pub fn restore(engine: &mut Engine, record: StateRecord) {
    match record {
        StateRecord::Account(a) => engine.restore_account(*a),
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
}
