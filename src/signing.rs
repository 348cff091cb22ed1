//! Proof that a command on `credit.commands` was written by the HTTP API: an HMAC-SHA256 over
//! the command's fields with a key both sides read from `kafka.command_keys_file`. The API signs
//! with the file's first key; `run` accepts a signature by any key in the file (list the new key
//! first and keep the old one while commands signed with it may still be unread: rotation).
//! With the file set, an unsigned or badly signed command is dead-lettered `INVALID_FIELD`
//! (field `signature`), so that nobody who can merely produce to the topic releases holds or
//! satisfies four-eyes with invented names. Without it commands are trusted as before, and `run`
//! says so at startup.
//!
//! The signature is the optional field `signature`: `hmac-sha256:<key id>:<hex>`, over the
//! decoded command (event id, type, time, customer, order, actor, note; one per line), so the
//! JSON's spelling (key order, spaces) does not matter.

use crate::model::{Command, Event, EventBody};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The keys: (id, secret), the signing key first.
#[derive(Clone)]
pub struct CommandKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for CommandKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Ids only: secrets never reach a log.
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("CommandKeys").field("ids", &ids).finish()
    }
}

const SCHEME: &str = "hmac-sha256";

impl CommandKeys {
    /// Reads `key_id:secret` lines (`#` comments and blank lines skipped); secrets of at least
    /// 16 bytes. The error says which line is wrong, never a secret.
    pub fn parse(text: &str) -> Result<CommandKeys, String> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((id, secret)) = line.split_once(':') else {
                return Err(format!("line {}: expected key_id:secret", n + 1));
            };
            let (id, secret) = (id.trim(), secret.trim());
            if id.is_empty() || id.contains(':') || !id.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "line {}: a key id is printable ASCII without ':'",
                    n + 1
                ));
            }
            if secret.len() < 16 {
                return Err(format!(
                    "line {}: a secret needs at least 16 characters",
                    n + 1
                ));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("line {}: key id {id:?} given twice", n + 1));
            }
            keys.push((id.to_string(), secret.as_bytes().to_vec()));
        }
        if keys.is_empty() {
            return Err("no key in the file".into());
        }
        Ok(CommandKeys { keys })
    }

    fn mac(secret: &[u8], message: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(message);
        mac
    }

    /// The signature of a command with the signing key (`None` for other events).
    pub fn sign(&self, event: &Event) -> Option<String> {
        let message = canonical(event)?;
        let (id, secret) = &self.keys[0];
        let tag = Self::mac(secret, message.as_bytes())
            .finalize()
            .into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        Some(format!("{SCHEME}:{id}:{hex}"))
    }

    /// Checks a command's signature; the error says what is wrong with it.
    pub fn verify(&self, event: &Event, signature: Option<&str>) -> Result<(), String> {
        let Some(message) = canonical(event) else {
            return Ok(());
        };
        let Some(signature) = signature else {
            return Err("a command must be signed (kafka.command_keys_file is set): publish it through the HTTP API".into());
        };
        let mut parts = signature.splitn(3, ':');
        let (scheme, id, hex) = (parts.next(), parts.next(), parts.next());
        if scheme != Some(SCHEME) {
            return Err(format!("signature scheme must be {SCHEME}"));
        }
        let Some(id) = id else {
            return Err("signature names no key".into());
        };
        let Some((_, secret)) = self.keys.iter().find(|(k, _)| k == id) else {
            return Err(format!(
                "signature key {id:?} is not in kafka.command_keys_file"
            ));
        };
        let tag = hex.and_then(decode_hex).ok_or("signature is not hex")?;
        Self::mac(secret, message.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| format!("signature by key {id:?} does not match the command"))
    }
}

/// The signed text of a command: its fields one per line; `None` for other events.
fn canonical(event: &Event) -> Option<String> {
    let EventBody::Command(Command {
        order_id,
        delivery_id,
        actor,
        note,
        ..
    }) = &event.body
    else {
        return None;
    };
    Some(format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}",
        event.event_id,
        event.type_str(),
        event.occurred_at.to_rfc3339(),
        event.customer_id.as_deref().unwrap_or(""),
        // The command's target: its order, or for a delivery command its delivery (the type,
        // signed above, says which).
        order_id.as_deref().or(delivery_id.as_deref()).unwrap_or(""),
        actor,
        note
    ))
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The `signature` field of a raw command record, if it has one.
pub fn signature_of(payload: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Signed {
        signature: Option<String>,
    }
    serde_json::from_slice::<Signed>(payload)
        .ok()
        .and_then(|s| s.signature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(actor: &str) -> Event {
        let line = format!(
            r#"{{"event_id":"cmd-1","type":"command.release_hold","occurred_at":"2026-03-02T10:00:00Z","customer_id":"C-1","order_id":"O-1","actor":"{actor}","note":"paid"}}"#
        );
        crate::codec::decode_event(line.as_bytes()).expect("command")
    }

    #[test]
    fn signed_commands_verify_forged_and_altered_ones_do_not() {
        let keys =
            CommandKeys::parse("# keys\nk2:second-secret-0123456789\nk1:first-secret-0123456789\n")
                .expect("keys");
        let signed = keys.sign(&command("alice")).expect("a command");
        assert!(signed.starts_with("hmac-sha256:k2:"), "{signed}");
        assert_eq!(keys.verify(&command("alice"), Some(&signed)), Ok(()));
        // Another actor under the same signature: refused.
        assert!(keys.verify(&command("mallory"), Some(&signed)).is_err());
        assert!(keys
            .verify(&command("alice"), None)
            .unwrap_err()
            .contains("must be signed"));
        // Rotation: a command signed with the older key still verifies while it is listed.
        let old = CommandKeys::parse("k1:first-secret-0123456789").expect("keys");
        let by_old = old.sign(&command("alice")).expect("signed");
        assert_eq!(keys.verify(&command("alice"), Some(&by_old)), Ok(()));
        let dropped = CommandKeys::parse("k2:second-secret-0123456789").expect("keys");
        assert!(dropped
            .verify(&command("alice"), Some(&by_old))
            .unwrap_err()
            .contains("not in kafka.command_keys_file"));
        // A key the attacker made up.
        let forged = CommandKeys::parse("k2:guessed-secret-0123456789").expect("keys");
        let fake = forged.sign(&command("alice")).expect("signed");
        assert!(keys.verify(&command("alice"), Some(&fake)).is_err());
        // Not a command: nothing to sign or check.
        let order = crate::codec::decode_event(
            br#"{"event_id":"e","type":"order.placed","occurred_at":"2026-03-02T10:00:00Z","customer_id":"C-1","order_id":"O-1","amount":"1","currency":"EUR"}"#,
        )
        .expect("order");
        assert_eq!(keys.sign(&order), None);
        assert_eq!(keys.verify(&order, None), Ok(()));
    }

    #[test]
    fn key_files_are_checked_without_printing_secrets() {
        for (text, want) in [
            ("", "no key"),
            ("k1", "expected key_id:secret"),
            ("k1:short", "at least 16"),
            ("k1:0123456789abcdef\nk1:0123456789abcdeg", "given twice"),
        ] {
            let e = CommandKeys::parse(text).unwrap_err();
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains("0123456789"), "no secret in {e}");
        }
        let keys = CommandKeys::parse("k1:0123456789abcdef").expect("keys");
        assert!(!format!("{keys:?}").contains("0123456789"));
    }
}
