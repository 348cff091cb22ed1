//! Bearer-token authentication with roles. Presented tokens are hashed and compared with every
//! configured token's hash in constant time (no early exit on a match), so neither the
//! comparison nor the loop leaks which token or how much of it matched. Tokens are never
//! logged; a principal is known by its configured name only.

use crate::config::{Role, Token};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who made a request: the token's name (the actor on the commands it publishes) and role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

/// The configured tokens, kept as hashes.
pub struct Tokens {
    entries: Vec<([u8; 32], Principal)>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Why a request was not authenticated.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    Unknown,
}

impl Tokens {
    pub fn new(tokens: &[Token]) -> Tokens {
        Tokens {
            entries: tokens
                .iter()
                .map(|t| {
                    (
                        digest(t.secret.as_bytes()),
                        Principal {
                            name: t.name.clone(),
                            role: t.role,
                        },
                    )
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resolves an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let value = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let presented = digest(token.trim().as_bytes());
        let mut found: Option<&Principal> = None;
        for (hash, principal) in &self.entries {
            // Every entry is compared; the choice does not short-circuit the loop.
            let eq: bool = hash.ct_eq(&presented).into();
            if eq {
                found = Some(principal);
            }
        }
        found.cloned().ok_or(AuthError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens::new(&[
            Token {
                name: "vera".into(),
                role: Role::Viewer,
                secret: "viewer-token-0123456789".into(),
            },
            Token {
                name: "adam".into(),
                role: Role::Admin,
                secret: "admin-token-0123456789".into(),
            },
        ])
    }

    #[test]
    fn resolves_bearer_tokens() {
        let t = tokens();
        let p = t
            .authenticate(Some(b"Bearer admin-token-0123456789"))
            .expect("known");
        assert_eq!(p.name, "adam");
        assert_eq!(p.role, Role::Admin);
        assert_eq!(
            t.authenticate(Some(b"bearer viewer-token-0123456789"))
                .map(|p| p.role),
            Ok(Role::Viewer)
        );
    }

    #[test]
    fn refuses_what_is_not_a_known_bearer_token() {
        let t = tokens();
        assert_eq!(t.authenticate(None), Err(AuthError::Missing));
        assert_eq!(
            t.authenticate(Some(b"Basic YWRtaW4=")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            t.authenticate(Some(b"Bearer admin-token-012345678")),
            Err(AuthError::Unknown)
        );
        assert_eq!(t.authenticate(Some(b"Bearer")), Err(AuthError::Malformed));
        assert_eq!(
            t.authenticate(Some(&[0xff, 0xfe])),
            Err(AuthError::Malformed)
        );
    }
}
