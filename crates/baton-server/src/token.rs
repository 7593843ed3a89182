//! [`ApiToken`]: the bearer token every API request must present.
//!
//! The token never shows in `Debug` output, logs or errors; only
//! [`ApiToken::expose`] reveals it, for the program that prints it once.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;

/// The shortest token [`ApiToken::new`] accepts.
pub const MIN_TOKEN_LEN: usize = 16;

/// A bearer token: visible ASCII, at least [`MIN_TOKEN_LEN`] characters.
/// Cheap to clone; compared in constant time.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Too short to be hard to guess.
    #[error("the token has {0} characters; at least {MIN_TOKEN_LEN} are needed")]
    TooShort(usize),
    /// Holds whitespace, control or non-ASCII characters, which cannot
    /// travel in an `Authorization` header.
    #[error("the token may only hold visible ASCII characters")]
    NotVisibleAscii,
    /// The operating system's random source failed.
    #[error("could not draw a random token from the operating system: {0}")]
    Random(String),
}

impl ApiToken {
    /// A token chosen by the operator.
    pub fn new(token: impl Into<String>) -> Result<Self, TokenError> {
        let token = token.into();
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotVisibleAscii);
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort(token.len()));
        }
        Ok(Self(token.into()))
    }

    /// A fresh token: 32 bytes from the operating system's random source,
    /// as 64 hex digits.
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex.into()))
    }

    /// The token itself, to hand to the user once (e.g. in the URL printed
    /// at start). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token (constant time in the token's
    /// content).
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_long_distinct_and_hidden() {
        let a = ApiToken::generate().unwrap();
        let b = ApiToken::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert_ne!(a.expose(), b.expose());
        assert!(!format!("{a:?}").contains(a.expose()));
        assert!(a.matches(a.expose().as_bytes()));
        assert!(!a.matches(b.expose().as_bytes()));
        assert!(!a.matches(b""));
    }

    #[test]
    fn chosen_tokens_are_checked() {
        assert_eq!(ApiToken::new("short").unwrap_err(), TokenError::TooShort(5));
        assert_eq!(
            ApiToken::new("with a space in it").unwrap_err(),
            TokenError::NotVisibleAscii
        );
        assert!(ApiToken::new("0123456789abcdef").is_ok());
    }
}
