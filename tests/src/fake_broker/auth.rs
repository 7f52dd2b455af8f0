//! How the fake broker authenticates a connection: the SASL mechanisms it offers, and a check
//! of each SaslAuthenticate token. A broker without an [`Authenticator`] needs no SASL.

/// A successful SaslAuthenticate.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthOk {
    /// The principal the token named (recorded for tests).
    pub principal: String,
    /// Kafka's `session_lifetime_ms` (KIP-368): 0 for none. Past it, the broker closes the
    /// connection on the next request that is not a re-authentication, as Kafka does.
    pub session_lifetime_ms: i64,
    /// Bytes sent back in `auth_bytes`.
    pub server_bytes: Vec<u8>,
}

/// A refused SaslAuthenticate, answered with Kafka's error code and message.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthError {
    /// 58 = SASL_AUTHENTICATION_FAILED.
    pub error_code: i16,
    pub message: String,
    /// OAUTHBEARER's server error (RFC 7628 §3.2.2) sent in `auth_bytes`, if any.
    pub server_bytes: Vec<u8>,
}

/// Checks SASL tokens for the fake broker.
pub trait Authenticator: Send + Sync {
    /// Mechanisms offered in the SaslHandshake answer (e.g. `["OAUTHBEARER"]`).
    fn mechanisms(&self) -> Vec<String>;
    /// Checks one SaslAuthenticate token sent after a handshake for `mechanism`.
    fn authenticate(&self, mechanism: &str, auth_bytes: &[u8]) -> Result<AuthOk, AuthError>;
}
