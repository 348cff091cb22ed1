//! The `[http]` section: listeners, limits, and the API tokens (inline or from `tokens_file`)
//! with their roles; secrets hashed and never printed.

use super::*;

/// One API token as written in `[http.tokens.<name>]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub role: String,
    pub token: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub enabled: bool,
    pub listen: String,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    pub max_streams: usize,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub idle_timeout_ms: u64,
    pub request_read_timeout_ms: u64,
    pub probe_listen: String,
    pub metrics_require_auth: bool,
    pub tokens_file: Option<String>,
    #[serde(default)]
    pub tokens: BTreeMap<String, RawToken>,
}

/// What a bearer token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: customers, groups, holds, top accounts, check.
    Viewer,
    /// Reads, and release or reject held orders.
    Approver,
    /// Everything, including block and unblock.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.trim().to_ascii_lowercase().as_str() {
            "viewer" => Some(Role::Viewer),
            "approver" => Some(Role::Approver),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// A configured API token: who it is (the actor on commands), its role and its secret.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub role: Role,
    pub secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Shortest accepted token secret.
pub const TOKEN_MIN_LEN: usize = 16;

/// Validated HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub enabled: bool,
    pub listen: std::net::SocketAddr,
    pub max_body_bytes: usize,
    pub request_timeout_ms: u64,
    pub max_concurrent_requests: usize,
    /// Live event streams (`/v1/feed/stream`) open at once; more are answered 503.
    pub max_streams: usize,
    /// TCP connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed at once.
    pub max_connections_per_peer: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout_ms: u64,
    /// A request must be answered this long after its first byte arrived, or its connection
    /// is closed (clients that send headers a byte at a time).
    pub request_read_timeout_ms: u64,
    /// A second listener for `/healthz` and `/readyz` only, with connection slots of its own
    /// (`http.probe_listen`; `None`: the probes are served on `listen` only).
    pub probe_listen: Option<std::net::SocketAddr>,
    pub metrics_require_auth: bool,
    pub tokens: Vec<Token>,
}

pub(super) fn token(key: &str, name: &str, role: &str, secret: &str) -> Result<Token, ConfigError> {
    let role = Role::parse(role).ok_or_else(|| {
        invalid(
            &format!("{key}.role"),
            "must be \"viewer\", \"approver\" or \"admin\"",
        )
    })?;
    if secret.chars().count() < TOKEN_MIN_LEN || secret.chars().any(char::is_whitespace) {
        return Err(invalid(
            &format!("{key}.token"),
            format!("must be at least {TOKEN_MIN_LEN} characters without spaces"),
        ));
    }
    if name.is_empty() || name.len() > 64 {
        return Err(invalid(key, "token names are 1..64 characters"));
    }
    Ok(Token {
        name: name.to_string(),
        role,
        secret: secret.to_string(),
    })
}

/// The meaningful lines of a settings side file (`key` names the setting that points at it):
/// trimmed, with their 1-based line numbers, without blank lines and `#` comments.
pub(super) fn side_file_lines(key: &str, path: &str) -> Result<Vec<(usize, String)>, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(n, l)| (n + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect())
}

/// Reads a tokens file: `name role token` per line, `#` comments, blank lines.
pub fn read_tokens_file(path: &str) -> Result<Vec<Token>, ConfigError> {
    let key = "http.tokens_file";
    let mut tokens = Vec::new();
    for (n, line) in side_file_lines(key, path)? {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [name, role, secret] = parts[..] else {
            return Err(invalid(
                key,
                format!("{path} line {n}: expected `name role token`"),
            ));
        };
        tokens.push(token(
            &format!("{key} ({path} line {n})"),
            name,
            role,
            secret,
        )?);
    }
    Ok(tokens)
}

pub(super) fn validate_http(h: &RawHttp) -> Result<HttpSettings, ConfigError> {
    let listen = h.listen.parse().map_err(|_| {
        invalid(
            "http.listen",
            format!("{:?} is not an address:port", h.listen),
        )
    })?;
    if h.max_streams == 0 {
        return Err(invalid("http.max_streams", "must be above 0"));
    }
    if h.max_connections == 0 {
        return Err(invalid("http.max_connections", "must be above 0"));
    }
    if h.idle_timeout_ms == 0 {
        return Err(invalid("http.idle_timeout_ms", "must be above 0"));
    }
    if h.max_connections_per_peer == 0 {
        return Err(invalid("http.max_connections_per_peer", "must be above 0"));
    }
    let probe_listen = match h.probe_listen.trim() {
        "" => None,
        a => {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                invalid(
                    "http.probe_listen",
                    format!("{a:?} is not an address:port (empty: no probe listener)"),
                )
            })?;
            if addr == listen && addr.port() != 0 {
                return Err(invalid("http.probe_listen", "must differ from http.listen"));
            }
            Some(addr)
        }
    };
    if h.request_read_timeout_ms <= h.request_timeout_ms {
        return Err(invalid(
            "http.request_read_timeout_ms",
            "must be above http.request_timeout_ms (a request being handled is answered within that)",
        ));
    }
    if h.max_body_bytes == 0 || h.request_timeout_ms == 0 || h.max_concurrent_requests == 0 {
        return Err(invalid(
            "http.max_body_bytes",
            "body limit, request timeout and concurrency must all be above 0",
        ));
    }
    let mut tokens = Vec::new();
    for (name, t) in &h.tokens {
        tokens.push(token(
            &format!("http.tokens.{name}"),
            name,
            &t.role,
            &t.token,
        )?);
    }
    if let Some(path) = h.tokens_file.as_deref().filter(|p| !p.is_empty()) {
        tokens.extend(read_tokens_file(path)?);
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in &tokens {
        if !seen.insert(t.secret.as_str()) {
            return Err(invalid(
                "http.tokens",
                format!("token of {:?} is also given to another name", t.name),
            ));
        }
    }
    Ok(HttpSettings {
        enabled: h.enabled,
        listen,
        max_body_bytes: h.max_body_bytes,
        request_timeout_ms: h.request_timeout_ms,
        max_concurrent_requests: h.max_concurrent_requests,
        max_streams: h.max_streams,
        max_connections: h.max_connections,
        max_connections_per_peer: h.max_connections_per_peer,
        idle_timeout_ms: h.idle_timeout_ms,
        request_read_timeout_ms: h.request_read_timeout_ms,
        probe_listen,
        metrics_require_auth: h.metrics_require_auth,
        tokens,
    })
}
