//! How the client authenticates and encrypts: the `security_protocol` setting (parsed here and
//! nowhere else), the TLS and SASL settings it implies, and the password file both binaries read.

use std::path::Path;
use std::sync::Arc;

use crate::sasl::SaslMechanism;
use crate::token::TokenCache;
use std::path::PathBuf;
use std::time::Duration;

use crate::oidc::{OidcSettings, OidcTokenSource};

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
    /// How connections authenticate; `None` for no SASL.
    pub sasl: Option<Sasl>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("tls_server_name", &self.tls_server_name)
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// SASL mechanism and password credentials (PLAIN, SCRAM).
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

/// How connections authenticate with SASL.
#[derive(Clone)]
pub enum Sasl {
    /// PLAIN or SCRAM, with a user name and a password.
    Password(SaslCredentials),
    /// OAUTHBEARER or AWS_MSK_IAM, with tokens from one cache shared by every connection of
    /// the client (cloning a [`Security`] shares the cache).
    Token {
        mechanism: SaslMechanism,
        tokens: TokenCache,
    },
}

impl Sasl {
    /// The configured mechanism.
    pub fn mechanism(&self) -> SaslMechanism {
        match self {
            Sasl::Password(c) => c.mechanism,
            Sasl::Token { mechanism, .. } => *mechanism,
        }
    }
}

impl From<SaslCredentials> for Sasl {
    fn from(c: SaslCredentials) -> Self {
        Sasl::Password(c)
    }
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password or a token.
        match self {
            Sasl::Password(c) => write!(f, "{} as {:?}", c.mechanism.as_str(), c.username),
            Sasl::Token { mechanism, tokens } => {
                write!(f, "{} from {}", mechanism.as_str(), tokens.describe())
            }
        }
    }
}

/// One problem with a security setting: the key (as in the config files), the value when it
/// is the problem, and what is wrong. Each binary puts its own origin in front
/// ([`SettingProblem::render`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The setting, e.g. `sasl_oauthbearer_client_id`.
    pub key: &'static str,
    /// The offending value, when it is the problem.
    pub value: Option<String>,
    /// What is wrong, e.g. `required with sasl_mechanism OAUTHBEARER`.
    pub message: String,
}

impl SettingProblem {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        SettingProblem {
            key,
            value: None,
            message: message.into(),
        }
    }

    fn with_value(key: &'static str, value: impl Into<String>, message: impl Into<String>) -> Self {
        SettingProblem {
            key,
            value: Some(value.into()),
            message: message.into(),
        }
    }

    /// `<at> = "<value>": <message>`, or `<at>: <message>` without a value; `at` names the
    /// setting where the binary found it (`flag --sasl-mechanism`, `brokers[0].kafka.sasl_mechanism`).
    pub fn render(&self, at: &str) -> String {
        match &self.value {
            Some(v) => format!("{at} = {v:?}: {}", self.message),
            None => format!("{at}: {}", self.message),
        }
    }
}

impl std::fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render(self.key))
    }
}

/// The security settings as written (the same keys for medic-agent and for the actuator's
/// `kafka` backend), checked and turned into a [`Security`] in one place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecuritySettings {
    /// plaintext (default), ssl, sasl_plaintext or sasl_ssl.
    pub security_protocol: Option<String>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_server_name: Option<String>,
    /// PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    pub sasl_password_file: Option<PathBuf>,
    /// The password itself (the agent accepts it from a flag or the environment).
    pub sasl_password: Option<String>,
    pub sasl_oauthbearer_token_endpoint_url: Option<String>,
    pub sasl_oauthbearer_client_id: Option<String>,
    pub sasl_oauthbearer_client_secret_file: Option<PathBuf>,
    pub sasl_oauthbearer_scope: Option<String>,
    pub sasl_oauthbearer_ca_file: Option<PathBuf>,
    /// The AWS region of an MSK cluster (AWS_MSK_IAM).
    pub sasl_aws_region: Option<String>,
    /// The most one token request may take (the binary's request timeout).
    pub token_request_timeout: Duration,
}

/// The keys that only password mechanisms use.
const PASSWORD_KEYS: [&str; 3] = ["sasl_username", "sasl_password_file", "sasl_password"];
/// The keys that only OAUTHBEARER uses.
const OAUTHBEARER_KEYS: [&str; 5] = [
    "sasl_oauthbearer_token_endpoint_url",
    "sasl_oauthbearer_client_id",
    "sasl_oauthbearer_client_secret_file",
    "sasl_oauthbearer_scope",
    "sasl_oauthbearer_ca_file",
];
/// The keys that only AWS_MSK_IAM uses.
const MSK_KEYS: [&str; 1] = ["sasl_aws_region"];

impl SecuritySettings {
    /// Every SASL key and whether it is set, sasl_mechanism first.
    fn sasl_keys(&self) -> [(&'static str, bool); 10] {
        [
            ("sasl_mechanism", self.sasl_mechanism.is_some()),
            ("sasl_username", self.sasl_username.is_some()),
            ("sasl_password_file", self.sasl_password_file.is_some()),
            ("sasl_password", self.sasl_password.is_some()),
            (
                "sasl_oauthbearer_token_endpoint_url",
                self.sasl_oauthbearer_token_endpoint_url.is_some(),
            ),
            (
                "sasl_oauthbearer_client_id",
                self.sasl_oauthbearer_client_id.is_some(),
            ),
            (
                "sasl_oauthbearer_client_secret_file",
                self.sasl_oauthbearer_client_secret_file.is_some(),
            ),
            (
                "sasl_oauthbearer_scope",
                self.sasl_oauthbearer_scope.is_some(),
            ),
            (
                "sasl_oauthbearer_ca_file",
                self.sasl_oauthbearer_ca_file.is_some(),
            ),
            ("sasl_aws_region", self.sasl_aws_region.is_some()),
        ]
    }

    /// The protocol, or the problem with it (plaintext is assumed for the other checks).
    fn protocol(&self) -> Result<SecurityProtocol, SettingProblem> {
        match self.security_protocol.as_deref() {
            None => Ok(SecurityProtocol::default()),
            Some(p) => p.parse().map_err(|_| {
                SettingProblem::with_value(
                    "security_protocol",
                    p,
                    "expected plaintext, ssl, sasl_plaintext or sasl_ssl",
                )
            }),
        }
    }

    /// Every problem that can be seen without reading a file, in key order.
    pub fn check(&self) -> Vec<SettingProblem> {
        let mut out = Vec::new();
        let protocol = self.protocol().unwrap_or_else(|p| {
            out.push(p);
            SecurityProtocol::Plaintext
        });
        let name = protocol.as_str();
        if protocol.uses_tls() {
            if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
                out.push(SettingProblem::new(
                    if self.tls_cert_file.is_some() {
                        "tls_key_file"
                    } else {
                        "tls_cert_file"
                    },
                    "tls_cert_file and tls_key_file must be given together",
                ));
            }
        } else {
            for (key, set) in [
                ("tls_ca_file", self.tls_ca_file.is_some()),
                ("tls_cert_file", self.tls_cert_file.is_some()),
                ("tls_key_file", self.tls_key_file.is_some()),
            ] {
                if set {
                    out.push(SettingProblem::new(
                        key,
                        format!("set, but security_protocol {name:?} does not use TLS"),
                    ));
                }
            }
        }
        if !protocol.uses_sasl() {
            for (key, set) in self.sasl_keys() {
                if set {
                    out.push(SettingProblem::new(
                        key,
                        format!("set, but security_protocol {name:?} does not use SASL"),
                    ));
                }
            }
            return out;
        }
        let mechanism = match self.sasl_mechanism.as_deref() {
            None => {
                out.push(SettingProblem::new(
                    "sasl_mechanism",
                    format!(
                        "required with security_protocol {name:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)"
                    ),
                ));
                return out;
            }
            Some(m) => match m.parse::<SaslMechanism>() {
                Ok(m) => m,
                Err(_) => {
                    out.push(SettingProblem::with_value(
                        "sasl_mechanism",
                        m,
                        "unknown SASL mechanism; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM",
                    ));
                    return out;
                }
            },
        };
        let with = format!("required with sasl_mechanism {}", mechanism.as_str());
        let foreign: Vec<&str> = match mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                    out.push(SettingProblem::new("sasl_username", with.clone()));
                }
                match (&self.sasl_password_file, &self.sasl_password) {
                    (Some(_), Some(_)) => out.push(SettingProblem::new(
                        "sasl_password_file",
                        "give either sasl_password_file or sasl_password, not both",
                    )),
                    (None, None) => {
                        out.push(SettingProblem::new("sasl_password_file", with.clone()))
                    }
                    _ => {}
                }
                OAUTHBEARER_KEYS.iter().chain(&MSK_KEYS).copied().collect()
            }
            SaslMechanism::OAuthBearer => {
                match self.sasl_oauthbearer_token_endpoint_url.as_deref() {
                    None | Some("") => out.push(SettingProblem::new(
                        "sasl_oauthbearer_token_endpoint_url",
                        with.clone(),
                    )),
                    Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                        out.push(SettingProblem::with_value(
                            "sasl_oauthbearer_token_endpoint_url",
                            url,
                            "not an http(s) URL",
                        ))
                    }
                    Some(_) => {}
                }
                if self
                    .sasl_oauthbearer_client_id
                    .as_deref()
                    .is_none_or(str::is_empty)
                {
                    out.push(SettingProblem::new(
                        "sasl_oauthbearer_client_id",
                        with.clone(),
                    ));
                }
                if self.sasl_oauthbearer_client_secret_file.is_none() {
                    out.push(SettingProblem::new(
                        "sasl_oauthbearer_client_secret_file",
                        with.clone(),
                    ));
                }
                PASSWORD_KEYS.iter().chain(&MSK_KEYS).copied().collect()
            }
            SaslMechanism::AwsMskIam => {
                match self.sasl_aws_region.as_deref() {
                    None | Some("") => {
                        out.push(SettingProblem::new("sasl_aws_region", with.clone()))
                    }
                    Some(r) if crate::msk_iam::validate_region(r).is_err() => {
                        out.push(SettingProblem::with_value(
                            "sasl_aws_region",
                            r,
                            "not an AWS region code (such as eu-west-1 or us-gov-west-1)",
                        ))
                    }
                    Some(_) => {}
                }
                PASSWORD_KEYS
                    .iter()
                    .chain(&OAUTHBEARER_KEYS)
                    .copied()
                    .collect()
            }
        };
        for (key, set) in self.sasl_keys() {
            if set && foreign.contains(&key) {
                out.push(SettingProblem::new(
                    key,
                    format!(
                        "set, but sasl_mechanism {} does not use it",
                        mechanism.as_str()
                    ),
                ));
            }
        }
        out
    }

    /// Checks every setting, reads the files (password, secret, certificates) and builds the
    /// [`Security`]; or every problem found.
    pub fn build(&self) -> Result<Security, Vec<SettingProblem>> {
        let problems = self.check();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut problems = Vec::new();
        let protocol = self.protocol().map_err(|p| vec![p])?;
        let mut security = Security::default();
        if protocol.uses_tls() {
            match crate::tls::client_config(
                self.tls_ca_file.as_deref(),
                self.tls_cert_file.as_deref(),
                self.tls_key_file.as_deref(),
            ) {
                Ok(c) => security.tls = Some(c),
                Err(e) => problems.push(SettingProblem::new("tls_ca_file", e.to_string())),
            }
            security.tls_server_name = self.tls_server_name.clone();
        }
        if protocol.uses_sasl() {
            match self.sasl(&mut problems) {
                Some(sasl) => security.sasl = Some(sasl),
                None if problems.is_empty() => problems.push(SettingProblem::new(
                    "sasl_mechanism",
                    "no SASL settings could be built",
                )),
                None => {}
            }
        }
        if problems.is_empty() {
            Ok(security)
        } else {
            Err(problems)
        }
    }

    fn sasl(&self, problems: &mut Vec<SettingProblem>) -> Option<Sasl> {
        let mechanism: SaslMechanism = self.sasl_mechanism.as_deref()?.parse().ok()?;
        match mechanism {
            SaslMechanism::Plain | SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512 => {
                let password = match (&self.sasl_password_file, &self.sasl_password) {
                    (Some(f), _) => match read_password_file(f) {
                        Ok(p) => p,
                        Err(e) => {
                            problems.push(SettingProblem::with_value(
                                "sasl_password_file",
                                f.display().to_string(),
                                format!("cannot read: {e}"),
                            ));
                            return None;
                        }
                    },
                    (None, Some(p)) => p.clone(),
                    (None, None) => return None,
                };
                Some(Sasl::Password(SaslCredentials {
                    mechanism,
                    username: self.sasl_username.clone().unwrap_or_default(),
                    password,
                }))
            }
            SaslMechanism::OAuthBearer => {
                let source = OidcTokenSource::new(OidcSettings {
                    token_endpoint_url: self.sasl_oauthbearer_token_endpoint_url.clone()?,
                    client_id: self.sasl_oauthbearer_client_id.clone()?,
                    client_secret_file: self.sasl_oauthbearer_client_secret_file.clone()?,
                    scope: self.sasl_oauthbearer_scope.clone(),
                    ca_file: self.sasl_oauthbearer_ca_file.clone(),
                    timeout: self.token_request_timeout,
                })
                .map_err(|p| problems.push(p))
                .ok()?;
                Some(Sasl::Token {
                    mechanism,
                    tokens: TokenCache::new(Arc::new(source)),
                })
            }
            SaslMechanism::AwsMskIam => {
                let region = self.sasl_aws_region.clone()?;
                match msk_iam_source(&region) {
                    Ok(source) => Some(Sasl::Token {
                        mechanism,
                        tokens: TokenCache::new(source),
                    }),
                    Err(e) => {
                        problems.push(SettingProblem::with_value("sasl_aws_region", region, e));
                        None
                    }
                }
            }
        }
    }
}

/// The AWS MSK IAM signer for `region` (credentials from the AWS provider chain, resolved on
/// the first fetch).
fn msk_iam_source(region: &str) -> Result<Arc<dyn crate::token::TokenSource>, String> {
    Ok(Arc::new(crate::msk_iam::MskIamTokenSource::new(region)?))
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

    fn rendered(s: &SecuritySettings) -> Vec<String> {
        s.check().iter().map(ToString::to_string).collect()
    }

    fn oauth() -> SecuritySettings {
        SecuritySettings {
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("OAUTHBEARER".into()),
            sasl_oauthbearer_token_endpoint_url: Some("https://idp/realms/kafka/token".into()),
            sasl_oauthbearer_client_id: Some("medic".into()),
            sasl_oauthbearer_client_secret_file: Some("/secret".into()),
            token_request_timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }

    #[test]
    fn oauthbearer_settings_are_checked_by_key() {
        assert_eq!(rendered(&oauth()), Vec::<String>::new());
        let mut s = oauth();
        s.sasl_oauthbearer_token_endpoint_url = Some("idp/token".into());
        s.sasl_oauthbearer_client_id = None;
        s.sasl_oauthbearer_client_secret_file = None;
        s.sasl_username = Some("u".into());
        s.sasl_aws_region = Some("eu-west-1".into());
        assert_eq!(
            rendered(&s),
            [
                "sasl_oauthbearer_token_endpoint_url = \"idp/token\": not an http(s) URL",
                "sasl_oauthbearer_client_id: required with sasl_mechanism OAUTHBEARER",
                "sasl_oauthbearer_client_secret_file: required with sasl_mechanism OAUTHBEARER",
                "sasl_username: set, but sasl_mechanism OAUTHBEARER does not use it",
                "sasl_aws_region: set, but sasl_mechanism OAUTHBEARER does not use it",
            ]
        );
    }

    #[test]
    fn each_mechanism_refuses_the_others_keys() {
        let s = SecuritySettings {
            security_protocol: Some("SASL_PLAINTEXT".into()),
            sasl_mechanism: Some("scram-sha-512".into()),
            sasl_username: Some("u".into()),
            sasl_password: Some("p".into()),
            sasl_oauthbearer_scope: Some("kafka".into()),
            ..Default::default()
        };
        assert_eq!(
            rendered(&s),
            ["sasl_oauthbearer_scope: set, but sasl_mechanism SCRAM-SHA-512 does not use it"]
        );
        let s = SecuritySettings {
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("AWS_MSK_IAM".into()),
            sasl_password_file: Some("/pw".into()),
            sasl_oauthbearer_client_id: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(
            rendered(&s),
            [
                "sasl_aws_region: required with sasl_mechanism AWS_MSK_IAM",
                "sasl_password_file: set, but sasl_mechanism AWS_MSK_IAM does not use it",
                "sasl_oauthbearer_client_id: set, but sasl_mechanism AWS_MSK_IAM does not use it",
            ]
        );
        for bad in ["EU West 1", "eu-west"] {
            let s = SecuritySettings {
                security_protocol: Some("sasl_ssl".into()),
                sasl_mechanism: Some("AWS_MSK_IAM".into()),
                sasl_aws_region: Some(bad.into()),
                ..Default::default()
            };
            assert_eq!(
                rendered(&s),
                [format!(
                    "sasl_aws_region = {bad:?}: not an AWS region code (such as eu-west-1 or us-gov-west-1)"
                )]
            );
        }
    }

    #[test]
    fn sasl_keys_without_sasl_and_bad_values_are_named() {
        let s = SecuritySettings {
            sasl_mechanism: Some("OAUTHBEARER".into()),
            sasl_oauthbearer_client_id: Some("medic".into()),
            tls_ca_file: Some("/ca".into()),
            ..Default::default()
        };
        assert_eq!(
            rendered(&s),
            [
                "tls_ca_file: set, but security_protocol \"plaintext\" does not use TLS",
                "sasl_mechanism: set, but security_protocol \"plaintext\" does not use SASL",
                "sasl_oauthbearer_client_id: set, but security_protocol \"plaintext\" does not use SASL",
            ]
        );
        let s = SecuritySettings {
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("GSSAPI".into()),
            ..Default::default()
        };
        assert_eq!(
            s.check()[0].render("flag --sasl-mechanism"),
            "flag --sasl-mechanism = \"GSSAPI\": unknown SASL mechanism; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM"
        );
        let s = SecuritySettings {
            security_protocol: Some("sasl_ssl".into()),
            ..Default::default()
        };
        assert_eq!(
            rendered(&s),
            ["sasl_mechanism: required with security_protocol \"sasl_ssl\" (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM)"]
        );
    }

    #[test]
    fn build_reads_the_secret_and_shares_one_token_cache() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        let mut s = oauth();
        s.security_protocol = Some("sasl_plaintext".into());
        s.sasl_oauthbearer_client_secret_file = Some(secret.clone());
        let problems = s.build().unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "sasl_oauthbearer_client_secret_file");
        assert!(
            problems[0].message.starts_with("cannot read: "),
            "{problems:?}"
        );
        std::fs::write(&secret, "s3cret\n").unwrap();
        let security = s.build().unwrap();
        let Some(Sasl::Token { mechanism, tokens }) = &security.sasl else {
            panic!("{security:?}")
        };
        assert_eq!(*mechanism, SaslMechanism::OAuthBearer);
        assert_eq!(tokens.describe(), "oidc https://idp/realms/kafka/token");
        let debug = format!("{security:?}");
        assert!(
            debug.contains("OAUTHBEARER from oidc https://idp/realms/kafka/token")
                && !debug.contains("s3cret"),
            "{debug}"
        );
    }
}
