//! SASL/OAUTHBEARER for the fake broker: an [`Authenticator`] that parses the client's initial
//! response strictly (RFC 7628 §3.1: GS2 header, `\x01` separators, `auth=Bearer <token>`, the
//! closing `\x01\x01`) and accepts only tokens it was told about ([`OAuthBearer::accept`]) and
//! that have not expired. A wrong or expired token is SASL_AUTHENTICATION_FAILED (58) with a
//! message. The session lifetime it grants is the token's remaining life, capped at
//! [`OAuthBearer::new`]'s `max_session` (Kafka's `connections.max.reauth.ms`), so a client
//! that keeps a connection open must re-authenticate.
//!
//! ```ignore
//! let auth = Arc::new(OAuthBearer::new(Duration::from_secs(2)));
//! auth.accept("token-1", "medic", SystemTime::now() + Duration::from_secs(60));
//! let cluster = FakeCluster::builder().authenticator(auth.clone()).start().await;
//! // ... auth.presented() lists every token a client sent, in order.
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::auth::{AuthError, AuthOk, Authenticator};

/// SASL_AUTHENTICATION_FAILED.
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// Checks OAUTHBEARER tokens against a list of known ones.
#[derive(Debug)]
pub struct OAuthBearer {
    max_session: Duration,
    known: Mutex<HashMap<String, (String, SystemTime)>>,
    presented: Mutex<Vec<String>>,
}

impl OAuthBearer {
    /// An authenticator granting sessions of at most `max_session`.
    pub fn new(max_session: Duration) -> Self {
        OAuthBearer {
            max_session,
            known: Mutex::new(HashMap::new()),
            presented: Mutex::new(Vec::new()),
        }
    }

    /// Accepts `token` for `principal` until `expires_at`.
    pub fn accept(&self, token: &str, principal: &str, expires_at: SystemTime) {
        self.known
            .lock()
            .unwrap()
            .insert(token.to_string(), (principal.to_string(), expires_at));
    }

    /// Every token a client presented (well-formed messages only), in order, accepted or not.
    pub fn presented(&self) -> Vec<String> {
        self.presented.lock().unwrap().clone()
    }
}

fn refused(message: String) -> AuthError {
    AuthError {
        error_code: SASL_AUTHENTICATION_FAILED,
        message,
        server_bytes: Vec::new(),
    }
}

/// The token of an OAUTHBEARER initial client response, or what is wrong with the message.
pub fn parse_initial_response(bytes: &[u8]) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the message is not UTF-8".to_string())?;
    // GS2 header: "n," (no channel binding), an optional "a=<authzid>", then ",".
    let rest = text
        .strip_prefix("n,")
        .ok_or_else(|| format!("GS2 header must start with \"n,\": {text:?}"))?;
    let (authzid, rest) = rest
        .split_once(',')
        .ok_or_else(|| "GS2 header is not closed by ','".to_string())?;
    if !(authzid.is_empty() || authzid.starts_with("a=")) {
        return Err(format!("GS2 header has a bad authzid {authzid:?}"));
    }
    let body = rest
        .strip_prefix('\x01')
        .ok_or_else(|| "GS2 header is not followed by \\x01".to_string())?;
    let pairs = body
        .strip_suffix("\x01\x01")
        .ok_or_else(|| "the message does not end with \\x01\\x01".to_string())?;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("key-value pair {pair:?} has no '='"))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(format!("bad key {key:?}"));
        }
        if key == "auth" {
            if token.is_some() {
                return Err("two auth pairs".to_string());
            }
            let t = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| format!("auth value {value:?} does not start with \"Bearer \""))?;
            if t.is_empty() || t.contains(' ') {
                return Err("the bearer token is empty or has a space".to_string());
            }
            token = Some(t.to_string());
        }
    }
    token.ok_or_else(|| "no auth=Bearer pair".to_string())
}

impl Authenticator for OAuthBearer {
    fn mechanisms(&self) -> Vec<String> {
        vec!["OAUTHBEARER".to_string()]
    }

    fn authenticate(&self, mechanism: &str, auth_bytes: &[u8]) -> Result<AuthOk, AuthError> {
        if mechanism != "OAUTHBEARER" {
            return Err(refused(format!("mechanism {mechanism} is not enabled")));
        }
        let token = parse_initial_response(auth_bytes)
            .map_err(|e| refused(format!("invalid OAUTHBEARER initial response: {e}")))?;
        self.presented.lock().unwrap().push(token.clone());
        let known = self.known.lock().unwrap().get(&token).cloned();
        let Some((principal, expires_at)) = known else {
            return Err(refused(
                "invalid_token: the token is not one this broker accepts".to_string(),
            ));
        };
        let left = expires_at
            .duration_since(SystemTime::now())
            .map_err(|_| refused("invalid_token: the token has expired".to_string()))?;
        let session = left.min(self.max_session);
        Ok(AuthOk {
            principal,
            session_lifetime_ms: i64::try_from(session.as_millis())
                .unwrap_or(i64::MAX)
                .max(1),
            server_bytes: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_rfc_7628_message_strictly() {
        assert_eq!(
            parse_initial_response(b"n,,\x01auth=Bearer abc.def\x01\x01"),
            Ok("abc.def".to_string())
        );
        assert_eq!(
            parse_initial_response(b"n,a=user,\x01host=h\x01auth=Bearer t\x01\x01"),
            Ok("t".to_string())
        );
        for (bytes, why) in [
            (
                &b"y,,\x01auth=Bearer t\x01\x01"[..],
                "GS2 header must start",
            ),
            (b"n,,auth=Bearer t\x01\x01", "not followed by \\x01"),
            (b"n,,\x01auth=Bearer t\x01", "does not end with"),
            (
                b"n,,\x01auth=Basic t\x01\x01",
                "does not start with \"Bearer \"",
            ),
            (b"n,,\x01host=h\x01\x01", "no auth=Bearer pair"),
            (b"n,,\x01auth=Bearer \x01\x01", "empty"),
        ] {
            let e = parse_initial_response(bytes).unwrap_err();
            assert!(e.contains(why), "{bytes:?}: {e}");
        }
    }

    #[test]
    fn accepts_known_live_tokens_only() {
        let auth = OAuthBearer::new(Duration::from_secs(5));
        let later = SystemTime::now() + Duration::from_secs(60);
        auth.accept("good", "medic", later);
        auth.accept("old", "medic", SystemTime::now() - Duration::from_secs(1));
        let ok = auth
            .authenticate("OAUTHBEARER", b"n,,\x01auth=Bearer good\x01\x01")
            .unwrap();
        assert_eq!(ok.principal, "medic");
        assert_eq!(ok.session_lifetime_ms, 5_000);
        let e = auth
            .authenticate("OAUTHBEARER", b"n,,\x01auth=Bearer bad\x01\x01")
            .unwrap_err();
        assert_eq!(
            (e.error_code, e.message.as_str()),
            (
                58,
                "invalid_token: the token is not one this broker accepts"
            )
        );
        let e = auth
            .authenticate("OAUTHBEARER", b"n,,\x01auth=Bearer old\x01\x01")
            .unwrap_err();
        assert_eq!(e.message, "invalid_token: the token has expired");
        assert_eq!(auth.presented(), ["good", "bad", "old"]);
    }
}
