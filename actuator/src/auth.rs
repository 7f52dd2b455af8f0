//! Authentication: bearer token or HTTP basic, compared in constant time.
//!
//! Secrets are hashed with SHA-256 at load, and the hash of what the client sent is compared
//! with `subtle`, so neither the content nor the length of a secret leaks through timing.

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

use crate::config::{check_basic_username, read_secret, AuthConfig};

/// Errors loading credentials.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A secret file could not be read or is empty.
    #[error("{key}: {message}")]
    Secret {
        /// The config key.
        key: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The basic-auth user name cannot be sent in an `Authorization: Basic` header.
    #[error("auth.basic_username: {username:?} {why}")]
    Username {
        /// The configured name.
        username: String,
        /// Why it is refused.
        why: &'static str,
    },
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Accepted credentials.
#[derive(Clone)]
pub struct Auth {
    bearer: Option<[u8; 32]>,
    basic: Option<[u8; 32]>,
    open: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("bearer", &self.bearer.is_some())
            .field("basic", &self.basic.is_some())
            .field("open", &self.open)
            .finish()
    }
}

fn load(key: &'static str, path: &Path) -> Result<String, AuthError> {
    match read_secret(path) {
        Ok(s) if s.is_empty() => Err(AuthError::Secret {
            key,
            message: format!("{} is empty", path.display()),
        }),
        Ok(s) => Ok(s),
        Err(e) => Err(AuthError::Secret {
            key,
            message: format!("cannot read {}: {e}", path.display()),
        }),
    }
}

impl Auth {
    /// Load from config. `insecure_no_auth` with no credentials accepts every request.
    pub fn from_config(cfg: &AuthConfig, insecure_no_auth: bool) -> Result<Self, AuthError> {
        let bearer = match &cfg.bearer_token_file {
            Some(p) => Some(load("auth.bearer_token_file", p)?),
            None => None,
        };
        let basic = match (&cfg.basic_username, &cfg.basic_password_file) {
            (Some(u), Some(p)) => {
                check_basic_username(u).map_err(|why| AuthError::Username {
                    username: u.clone(),
                    why,
                })?;
                Some((u.clone(), load("auth.basic_password_file", p)?))
            }
            _ => None,
        };
        let open = insecure_no_auth && bearer.is_none() && basic.is_none();
        Ok(Self::new(
            bearer.as_deref(),
            basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
            open,
        ))
    }

    /// Build from secrets directly.
    pub fn new(bearer: Option<&str>, basic: Option<(&str, &str)>, open: bool) -> Self {
        Self {
            bearer: bearer.map(|t| digest(t.as_bytes())),
            basic: basic.map(|(u, p)| digest(format!("{u}:{p}").as_bytes())),
            open,
        }
    }

    /// Whether requests are accepted without credentials.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Check an `Authorization` header value.
    pub fn check(&self, header: Option<&str>) -> bool {
        if self.open {
            return true;
        }
        let Some(h) = header else { return false };
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(want) = &self.bearer {
                return bool::from(digest(rest.as_bytes()).ct_eq(want));
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            if let Some(want) = &self.basic {
                let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                    return false;
                };
                return bool::from(digest(&decoded).ct_eq(want));
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn bearer_and_basic() {
        let a = Auth::new(Some("tok-123"), Some(("am", "pw")), false);
        assert!(a.check(Some("Bearer tok-123")));
        assert!(a.check(Some("bearer tok-123")));
        assert!(!a.check(Some("Bearer tok-1234")));
        assert!(!a.check(Some("Bearer ")));
        assert!(!a.check(Some("tok-123")));
        assert!(!a.check(None));
        assert!(a.check(Some(&format!("Basic {}", b64("am:pw")))));
        assert!(!a.check(Some(&format!("Basic {}", b64("am:pX")))));
        assert!(!a.check(Some("Basic !!notbase64")));
        let only_bearer = Auth::new(Some("tok"), None, false);
        assert!(!only_bearer.check(Some(&format!("Basic {}", b64("x:tok")))));
    }

    #[test]
    fn open_only_when_insecure_and_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("t");
        std::fs::write(&tok, "abc\n").unwrap();
        let cfg = AuthConfig {
            bearer_token_file: Some(tok),
            ..Default::default()
        };
        let a = Auth::from_config(&cfg, true).unwrap();
        assert!(!a.is_open(), "credentials given: still checked");
        assert!(a.check(Some("Bearer abc")), "trailing newline trimmed");
        let a = Auth::from_config(&AuthConfig::default(), true).unwrap();
        assert!(a.is_open());
        assert!(a.check(None));
        let missing = AuthConfig {
            bearer_token_file: Some(dir.path().join("nope")),
            ..Default::default()
        };
        let err = Auth::from_config(&missing, false).unwrap_err().to_string();
        assert!(
            err.starts_with("auth.bearer_token_file: cannot read"),
            "{err}"
        );
    }

    #[test]
    fn basic_username_with_a_colon_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").unwrap();
        let cfg = |user: &str| AuthConfig {
            basic_username: Some(user.into()),
            basic_password_file: Some(pw.clone()),
            ..Default::default()
        };
        let err = Auth::from_config(&cfg("alert:manager"), false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "auth.basic_username: \"alert:manager\" must not contain ':' (HTTP basic auth splits user and password at the first colon, RFC 7617)"
        );
        let err = Auth::from_config(&cfg(""), false).unwrap_err().to_string();
        assert_eq!(err, "auth.basic_username: \"\" must not be empty");
        let err = Auth::from_config(&cfg("am\n"), false)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "auth.basic_username: \"am\\n\" must not contain control characters"
        );
        let a = Auth::from_config(&cfg("alertmanager"), false).unwrap();
        assert!(a.check(Some(&format!("Basic {}", b64("alertmanager:secret")))));
    }
}
