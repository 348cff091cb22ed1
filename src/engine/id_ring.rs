//! A bounded set of ids that forgets the oldest first: each account's memory of the event,
//! order and shipment ids it has seen, for idempotency under redelivery.

use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};

/// A bounded set of ids that forgets the oldest first. Serialized as the list, oldest first.
///
/// Each id is stored once, in `order`; the index holds only a hash per id (and how many of the
/// remembered ids share it), and a hit is confirmed against `order`, so a collision can cost a
/// scan of at most `cap` ids but never a wrong answer.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct IdRing {
    hashes: HashMap<u64, u32, foldhash::fast::FixedState>,
    order: VecDeque<String>,
    /// A tag per id, aligned with `order` (the content fingerprint of a remembered event; 0
    /// when unknown). Not in the format-2 layout: the account extension carries the tags of
    /// its event ids (see `state`).
    tags: VecDeque<u64>,
}

/// A fast, fixed-seed hash: ids come from input, but a crafted collision costs at most a scan
/// of `cap` ids (see above), so a keyed hash buys nothing here.
fn id_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6372_6564_6974).hash_one(id)
}

/// `prefix` then `id`, in one allocation of the exact size (`format!` costs several times
/// more on this path, which runs for every closed item).
pub fn joined(prefix: &str, id: &str) -> String {
    let mut s = String::with_capacity(prefix.len() + id.len());
    s.push_str(prefix);
    s.push_str(id);
    s
}

impl From<Vec<String>> for IdRing {
    fn from(ids: Vec<String>) -> IdRing {
        let mut hashes: HashMap<u64, u32, foldhash::fast::FixedState> =
            HashMap::with_capacity_and_hasher(ids.len(), Default::default());
        for id in &ids {
            *hashes.entry(id_hash(id)).or_default() += 1;
        }
        IdRing {
            hashes,
            tags: std::iter::repeat_n(0, ids.len()).collect(),
            order: ids.into(),
        }
    }
}

// Written in place (`into = "Vec<String>"` would copy every id for each snapshot).
impl Serialize for IdRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(&self.order)
    }
}

impl IdRing {
    pub fn contains(&self, id: &str) -> bool {
        self.contains_hashed(id, id_hash(id))
    }

    fn contains_hashed(&self, id: &str, hash: u64) -> bool {
        self.hashes.contains_key(&hash) && self.order.iter().any(|x| x == id)
    }

    /// Remembers `id`, forgetting the oldest ids beyond `cap`. Returns false if already known.
    pub fn insert(&mut self, id: String, cap: usize) -> bool {
        self.insert_tagged(id, 0, cap)
    }

    /// `insert`, with a tag kept beside the id (0: none).
    pub fn insert_tagged(&mut self, id: String, tag: u64, cap: usize) -> bool {
        let hash = id_hash(&id);
        if cap == 0 || self.contains_hashed(&id, hash) {
            return false;
        }
        while self.order.len() >= cap {
            self.tags.pop_front();
            if let Some(old) = self.order.pop_front() {
                let h = id_hash(&old);
                if let Some(n) = self.hashes.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        self.hashes.remove(&h);
                    }
                }
            }
        }
        *self.hashes.entry(hash).or_default() += 1;
        self.order.push_back(id);
        self.tags.push_back(tag);
        true
    }

    /// The tag a remembered id was inserted with (0: none or unknown).
    pub fn tag_of(&self, id: &str) -> u64 {
        if !self.contains(id) {
            return 0;
        }
        self.order
            .iter()
            .position(|x| x == id)
            .and_then(|i| self.tags.get(i).copied())
            .unwrap_or(0)
    }

    /// The tags, aligned with `iter()` (what a snapshot keeps).
    pub fn tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.tags.iter().copied()
    }

    /// Puts snapshotted tags back; ignored unless there is one per id.
    pub fn set_tags(&mut self, tags: Vec<u64>) {
        if tags.len() == self.order.len() {
            self.tags = tags.into();
        }
    }

    /// `contains(prefix + id)` without allocating the joined id (up to 136 bytes: any ASCII id of the contract's 128 characters and its prefix).
    pub fn contains_prefixed(&self, prefix: &str, id: &str) -> bool {
        let n = prefix.len() + id.len();
        let mut buf = [0u8; 136];
        if n > buf.len() {
            return self.contains(&joined(prefix, id));
        }
        buf[..prefix.len()].copy_from_slice(prefix.as_bytes());
        buf[prefix.len()..n].copy_from_slice(id.as_bytes());
        // Two valid UTF-8 strings joined are valid UTF-8.
        std::str::from_utf8(&buf[..n]).is_ok_and(|joined| self.contains(joined))
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::IdRing;

    #[test]
    fn the_id_ring_remembers_the_newest_ids_up_to_its_cap() {
        let mut ring = IdRing::default();
        for i in 0..5 {
            assert!(ring.insert(format!("ev-{i}"), 3));
        }
        assert!(!ring.insert("ev-4".into(), 3), "a known id is refused");
        assert_eq!(ring.len(), 3);
        assert!(!ring.contains("ev-1"), "forgotten beyond the cap");
        assert!(ring.contains("ev-2") && ring.contains("ev-4"));
        let restored = IdRing::from(ring.iter().cloned().collect::<Vec<String>>());
        assert_eq!(restored, ring, "the serialized list restores the same ring");
        assert!(
            !IdRing::default().insert("x".into(), 0),
            "cap 0 remembers nothing"
        );
    }

    #[test]
    fn prefixed_lookups_match_joined_ids_of_any_length() {
        let long = "x".repeat(200);
        let mut ring = IdRing::default();
        ring.insert("o:SO-1".into(), 8);
        ring.insert(format!("s:{long}"), 8);
        assert!(ring.contains_prefixed("o:", "SO-1"));
        assert!(!ring.contains_prefixed("s:", "SO-1"));
        assert!(!ring.contains_prefixed("o:", "SO-"));
        assert!(
            ring.contains_prefixed("s:", &long),
            "past the 128-byte buffer"
        );
        assert!(!ring.contains_prefixed("o:", &long));
    }
}
