//! Output records: dead-letters (with the original input and where it came from), the default
//! topic names, and replay lines.

use super::InputError;
use crate::model::*;
use base64::Engine as _;
use serde::Serialize;
use serde_json::json;

/// Where a dead-lettered input came from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcePosition {
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    /// Line number in a replay file (1-based).
    pub line: Option<u64>,
}

/// A `credit.dead-letter` record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub error: ErrorCode,
    pub detail: String,
    /// The original bytes: text when valid UTF-8, else base64 (see `original_encoding`).
    pub original: String,
    pub original_encoding: &'static str,
    /// Set when `original` holds only the first `ORIGINAL_MAX_BYTES` of a larger input:
    /// the full record is at `topic`/`partition`/`offset` (or `line`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub original_truncated: bool,
    /// The size of the whole original, when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_bytes: Option<usize>,
    /// SHA-256 of the whole original (hex), when truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_sha256: Option<String>,
    pub topic: Option<String>,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub customer_id: Option<String>,
}

/// The most of an input a dead-letter embeds. Escaped as JSON (up to six bytes for one) or as
/// base64 it stays far below Kafka's default message limit (1 MB), so a dead-letter can always
/// be produced, however large the input the topic accepted.
pub const ORIGINAL_MAX_BYTES: usize = 64 * 1024;

impl DeadLetter {
    /// Builds the record for a rejection of the input `original` (the rejection's own
    /// re-encoded event wins when it has one: it concerns an earlier, parked event).
    pub fn new(rejection: InputError, original: &[u8], source: &SourcePosition) -> DeadLetter {
        let whole: &[u8] = match &rejection.original {
            Some(text) => text.as_bytes(),
            None => original,
        };
        let truncated = whole.len() > ORIGINAL_MAX_BYTES;
        let kept = if truncated {
            &whole[..ORIGINAL_MAX_BYTES]
        } else {
            whole
        };
        let (original, original_encoding) = match std::str::from_utf8(kept) {
            Ok(text) => (text.to_string(), "utf8"),
            // Cut inside a character: the valid prefix as text.
            Err(e) if truncated && e.error_len().is_none() => (
                String::from_utf8_lossy(&kept[..e.valid_up_to()]).into_owned(),
                "utf8",
            ),
            Err(_) => (
                base64::engine::general_purpose::STANDARD.encode(kept),
                "base64",
            ),
        };
        let sha256 = truncated.then(|| {
            use sha2::{Digest, Sha256};
            Sha256::digest(whole)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        DeadLetter {
            error: rejection.error,
            detail: rejection.detail,
            original,
            original_encoding,
            original_truncated: truncated,
            original_bytes: truncated.then_some(whole.len()),
            original_sha256: sha256,
            topic: source.topic.clone(),
            partition: source.partition,
            offset: source.offset,
            line: source.line,
            event_id: rejection.event_id,
            event_type: rejection.event_type,
            customer_id: rejection.customer_id,
        }
    }

    /// The record key: the original message's key, else the customer when known.
    pub fn key(&self) -> Option<&str> {
        self.customer_id.as_deref()
    }
}

/// The default topic names (CONTRACT.md); the runtime may rename them.
pub mod topics {
    pub const DECISIONS: &str = "credit.decisions";
    pub const DELIVERY_DECISIONS: &str = "credit.delivery-decisions";
    pub const ALERTS: &str = "credit.alerts";
    pub const DEAD_LETTER: &str = "credit.dead-letter";
}

#[derive(Serialize)]
struct ReplayLine<'a, T: Serialize> {
    topic: &'a str,
    key: Option<&'a str>,
    value: &'a T,
}

/// `serde_json::to_string` into a buffer sized for an output record (decisions and alerts are
/// 0.5 to 1.5 KB: `to_string` starts at 128 bytes and reallocates three or four times).
pub fn to_json<T: Serialize>(value: &T) -> serde_json::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    serde_json::to_writer(&mut buf, value)?;
    // serde_json writes UTF-8 only; the check is a word-at-a-time pass over ASCII.
    String::from_utf8(buf).map_err(serde::ser::Error::custom)
}

/// One replay output line: `{"topic": ..., "key": ..., "value": {...}}` (no newline).
pub fn replay_line<T: Serialize>(topic: &str, key: Option<&str>, value: &T) -> String {
    to_json(&ReplayLine { topic, key, value }).unwrap_or_else(|e| {
        // Serializing our own records cannot fail; if it ever does, say so in the stream.
        json!({"topic": topic, "key": key, "value": {"error": e.to_string()}}).to_string()
    })
}
