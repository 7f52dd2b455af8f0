//! How the client authenticates and encrypts: the `security_protocol` setting (parsed here and
//! nowhere else), the TLS and SASL settings it implies, and the password file both binaries read.

use std::path::Path;
use std::sync::Arc;

use crate::sasl::SaslMechanism;

/// Kafka's `security.protocol`: whether connections use TLS, SASL, both or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Neither TLS nor SASL.
    #[default]
    Plaintext,
    /// TLS, no SASL.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Every protocol, in the order the error message lists them.
    pub const ALL: [SecurityProtocol; 4] = [
        SecurityProtocol::Plaintext,
        SecurityProtocol::Ssl,
        SecurityProtocol::SaslPlaintext,
        SecurityProtocol::SaslSsl,
    ];

    /// The setting's value, lower case as in the config files.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Connections are wrapped in TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Connections authenticate with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl std::fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `security_protocol` value that is none of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl")]
pub struct UnknownSecurityProtocol(pub String);

impl std::str::FromStr for SecurityProtocol {
    type Err = UnknownSecurityProtocol;

    /// Case-insensitive (`SASL_SSL` as Kafka's own clients write it is accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SecurityProtocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSecurityProtocol(s.to_string()))
    }
}

/// Reads a SASL password file. Only the line ending(s) at the end are cut (`\n`, `\r\n`), so a
/// password may begin or end with spaces.
pub fn read_password_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// How the client authenticates and encrypts, shared by every connection.
#[derive(Clone, Default)]
pub struct Security {
    /// TLS client configuration; `None` for plaintext.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Overrides the TLS server name (defaults to the broker's host).
    pub tls_server_name: Option<String>,
    /// SASL credentials; `None` for no SASL.
    pub sasl: Option<SaslCredentials>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("tls_server_name", &self.tls_server_name)
            .field(
                "sasl",
                &self.sasl.as_ref().map(|s| (s.mechanism, &s.username)),
            )
            .finish()
    }
}

/// SASL mechanism and credentials.
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_protocol_parses_each_value_in_any_case() {
        for (text, want, tls, sasl) in [
            ("plaintext", SecurityProtocol::Plaintext, false, false),
            ("SSL", SecurityProtocol::Ssl, true, false),
            (
                "sasl_plaintext",
                SecurityProtocol::SaslPlaintext,
                false,
                true,
            ),
            ("SASL_SSL", SecurityProtocol::SaslSsl, true, true),
        ] {
            let p: SecurityProtocol = text.parse().unwrap();
            assert_eq!(p, want, "{text}");
            assert_eq!((p.uses_tls(), p.uses_sasl()), (tls, sasl), "{text}");
            assert_eq!(p.as_str().parse::<SecurityProtocol>(), Ok(p));
            assert_eq!(p.to_string(), text.to_ascii_lowercase());
        }
        assert_eq!(SecurityProtocol::default(), SecurityProtocol::Plaintext);
    }

    #[test]
    fn unknown_security_protocol_names_the_value_and_the_choices() {
        for bad in ["tls", "sasl-ssl", " ssl", ""] {
            let err = bad.parse::<SecurityProtocol>().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{bad:?}: expected plaintext, ssl, sasl_plaintext or sasl_ssl")
            );
        }
    }

    #[test]
    fn password_file_keeps_spaces_and_cuts_line_endings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, " s3cret \r\n").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), " s3cret ");
        std::fs::write(&path, "s3cret").unwrap();
        assert_eq!(read_password_file(&path).unwrap(), "s3cret");
        assert!(read_password_file(&dir.path().join("missing")).is_err());
    }
}
