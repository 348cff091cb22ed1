//! A bounded set of ids that forgets the oldest first: each account's memory of the event,
//! order and shipment ids it has seen, for idempotency under redelivery.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A bounded set of ids that forgets the oldest first. Serialized as the list, oldest first.
///
/// Each id is stored once, in `order`, as a boxed `str` of its exact size; beside it, aligned,
/// a 32-bit hash of it. A lookup scans the hashes (at most `cap` of them: a few hundred bytes,
/// compared a vector at a time) and compares an id only where its hash matches, so a collision
/// can cost a comparison but never a wrong answer. No hash table: for rings of tens to a few
/// hundred ids the table cost more memory than the ids (about 280 bytes for ten ids) and had
/// to be rebuilt for every restored account and copied for every published one.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "Vec<String>")]
pub struct IdRing {
    hashes: VecDeque<u32>,
    order: VecDeque<Box<str>>,
    /// A tag per id, aligned with `order` (the content fingerprint of a remembered event; 0
    /// when unknown). Not in the format-2 layout: the account extension carries the tags of
    /// its event ids (see `state`).
    tags: VecDeque<u64>,
}

/// A fast, fixed-seed hash, cut to 32 bits: ids come from input, but a crafted collision costs
/// at most a comparison per colliding id (see above), so a keyed hash buys nothing here.
fn id_hash(id: &str) -> u32 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6372_6564_6974).hash_one(id) as u32
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
        IdRing {
            hashes: ids.iter().map(|id| id_hash(id)).collect(),
            tags: std::iter::repeat_n(0, ids.len()).collect(),
            order: ids.into_iter().map(String::into_boxed_str).collect(),
        }
    }
}

// Written in place (`into = "Vec<String>"` would copy every id for each snapshot).
impl Serialize for IdRing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.order.iter().map(|id| &**id))
    }
}

/// Lanes compared at once when scanning hashes (without an early exit inside a run, so the
/// compiler compares them as one vector).
const LANES: usize = 8;

impl IdRing {
    pub fn contains(&self, id: &str) -> bool {
        self.position(id, id_hash(id)).is_some()
    }

    /// Where `id` (whose hash is `hash`) is in `order`, if remembered.
    fn position(&self, id: &str, hash: u32) -> Option<usize> {
        let (front, back) = self.hashes.as_slices();
        let mut base = 0;
        for part in [front, back] {
            for (r, run) in part.chunks(LANES).enumerate() {
                if run.iter().fold(false, |hit, h| hit | (*h == hash)) {
                    for (i, h) in run.iter().enumerate() {
                        let at = base + r * LANES + i;
                        if *h == hash && self.order.get(at).is_some_and(|x| &**x == id) {
                            return Some(at);
                        }
                    }
                }
            }
            base += part.len();
        }
        None
    }

    /// Remembers `id`, forgetting the oldest ids beyond `cap`. Returns false if already known.
    pub fn insert(&mut self, id: String, cap: usize) -> bool {
        self.insert_tagged(id, 0, cap)
    }

    /// `insert`, with a tag kept beside the id (0: none).
    pub fn insert_tagged(&mut self, id: String, tag: u64, cap: usize) -> bool {
        let hash = id_hash(&id);
        if cap == 0 || self.position(&id, hash).is_some() {
            return false;
        }
        while self.order.len() >= cap {
            self.tags.pop_front();
            self.hashes.pop_front();
            self.order.pop_front();
        }
        self.hashes.push_back(hash);
        self.order.push_back(id.into_boxed_str());
        self.tags.push_back(tag);
        true
    }

    /// The tag a remembered id was inserted with (0: none or unknown).
    pub fn tag_of(&self, id: &str) -> u64 {
        self.position(id, id_hash(id))
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

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(|id| &**id)
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
        let restored = IdRing::from(ring.iter().map(str::to_string).collect::<Vec<String>>());
        assert_eq!(restored, ring, "the serialized list restores the same ring");
        assert!(
            !IdRing::default().insert("x".into(), 0),
            "cap 0 remembers nothing"
        );
    }

    /// Against a plain list: inserts with repeats, lookups and tags across the deque's wrap
    /// (its two slices) and runs of hashes longer and shorter than a vector.
    #[test]
    fn the_ring_answers_as_a_list_of_the_newest_ids_does() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for cap in [1usize, 3, 8, 9, 64, 256] {
            let mut ring = IdRing::default();
            let mut model: std::collections::VecDeque<(String, u64)> = Default::default();
            for step in 0..2_000u64 {
                let id = format!("id-{}", next(cap as u64 * 3));
                let fresh = !model.iter().any(|(m, _)| *m == id);
                assert_eq!(
                    ring.insert_tagged(id.clone(), step, cap),
                    fresh,
                    "insert {id}"
                );
                if fresh {
                    if model.len() >= cap {
                        model.pop_front();
                    }
                    model.push_back((id, step));
                }
                let probe = format!("id-{}", next(cap as u64 * 3));
                let want = model.iter().find(|(m, _)| *m == probe).map(|(_, t)| *t);
                assert_eq!(ring.contains(&probe), want.is_some(), "contains {probe}");
                assert_eq!(ring.tag_of(&probe), want.unwrap_or(0), "tag of {probe}");
            }
            assert!(ring.iter().eq(model.iter().map(|(m, _)| m.as_str())));
            assert!(ring.tags().eq(model.iter().map(|(_, t)| *t)));
        }
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
