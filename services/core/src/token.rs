//! The shared token that guards the internal (peer) API.
//!
//! Locally `bookstore up` generates it into a file; in Kubernetes it comes
//! from a Secret mounted as a file. Every peer call sends it in
//! [`TOKEN_HEADER`]; every peer route checks it with [`require_token`].

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// The header that carries the peer token.
pub const TOKEN_HEADER: &str = "x-bookstore-peer-token";
/// Length in hex characters of a generated token (128 random bits).
const GENERATED_TOKEN_HEX_LEN: usize = 32;

/// The shared secret of one store.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerToken(Arc<str>);

impl fmt::Debug for PeerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerToken(<redacted>)")
    }
}

/// Why a token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the peer token file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer token file {path} is empty")]
    Empty { path: String },
    #[error("cannot write the peer token file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PeerToken {
    pub fn new(token: &str) -> Self {
        Self(token.trim().into())
    }

    /// A fresh random token.
    pub fn generate() -> Self {
        let mut rng = fastrand::Rng::new();
        let token: String = (0..GENERATED_TOKEN_HEX_LEN)
            .map(|_| char::from_digit(rng.u32(0..16), 16).unwrap_or('0'))
            .collect();
        Self(token.into())
    }

    /// Reads the token from `path` (surrounding whitespace is ignored).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let token = Self::new(&text);
        if token.0.is_empty() {
            return Err(TokenError::Empty {
                path: path.display().to_string(),
            });
        }
        Ok(token)
    }

    /// Reads the token at `path`, or generates one there (readable by the
    /// owner only) if the file does not exist yet.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        if path.exists() {
            return Self::load(path);
        }
        let token = Self::generate();
        write_private(path, token.as_str()).map_err(|source| TokenError::Write {
            path: path.display().to_string(),
            source,
        })?;
        Ok(token)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares in time independent of where the first difference is, so the
    /// token cannot be guessed byte by byte from response times.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        expected.len() == offered.len()
            && expected
                .iter()
                .zip(offered)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

/// Axum middleware for peer routes: rejects a request without the token.
pub async fn require_token(
    State(token): State<PeerToken>,
    request: Request,
    next: Next,
) -> Response {
    let offered = request
        .headers()
        .get(TOKEN_HEADER)
        .map(|value| value.as_bytes());
    match offered {
        Some(offered) if token.matches(offered) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("wrong peer token".to_owned()).into_response(),
        None => ApiError::Unauthorized(format!("missing {TOKEN_HEADER} header")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_differ_and_match_only_themselves() {
        let a = PeerToken::generate();
        let b = PeerToken::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), GENERATED_TOKEN_HEX_LEN);
        assert!(a.matches(a.as_str().as_bytes()));
        assert!(!a.matches(b.as_str().as_bytes()));
        assert!(!a.matches(b""));
    }

    #[test]
    fn load_or_create_keeps_the_first_token() {
        let dir = std::env::temp_dir().join(format!("bookstore-token-{}", fastrand::u64(..)));
        let path = dir.join("peer-token");
        let first = PeerToken::load_or_create(&path).expect("created");
        let second = PeerToken::load_or_create(&path).expect("loaded");
        assert_eq!(first, second);
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
