//! An OIDC client-credentials [`TokenSource`] (RFC 6749 §4.4): what Strimzi with Keycloak,
//! Confluent Cloud OAuth and Azure Event Hubs expect behind SASL/OAUTHBEARER.
//!
//! Each fetch POSTs `grant_type=client_credentials` (and `scope` when set) as a form body to
//! the token endpoint, authenticating the client with HTTP Basic (RFC 6749 §2.3.1: client id
//! and secret form-urlencoded, then base64), and reads `access_token` and `expires_in` from the
//! JSON answer. The secret file is read again on every fetch, so a rotated Kubernetes Secret
//! is picked up without a restart. Errors name the setting and what the endpoint said (status,
//! `error`, `error_description`), never the secret.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::security::{read_password_file, SettingProblem};
use crate::token::{BearerToken, TokenFuture, TokenSource};

/// The setting that names the endpoint, used in every error about it.
const URL_KEY: &str = "sasl_oauthbearer_token_endpoint_url";
/// The setting that names the secret file.
const SECRET_KEY: &str = "sasl_oauthbearer_client_secret_file";
/// The largest token answer read (a JWT is a few KiB).
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The settings of an [`OidcTokenSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct OidcSettings {
    /// `sasl_oauthbearer_token_endpoint_url`: an http(s) URL.
    pub token_endpoint_url: String,
    /// `sasl_oauthbearer_client_id`.
    pub client_id: String,
    /// `sasl_oauthbearer_client_secret_file`: read on every fetch.
    pub client_secret_file: PathBuf,
    /// `sasl_oauthbearer_scope`: sent as `scope` when set.
    pub scope: Option<String>,
    /// `sasl_oauthbearer_ca_file`: CA bundle (PEM) for an https endpoint; default the Mozilla
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// The most one token request may take, connecting included.
    pub timeout: Duration,
}

/// Fetches tokens from an OIDC token endpoint with the client-credentials grant.
pub struct OidcTokenSource {
    settings: OidcSettings,
    url: reqwest::Url,
    http: reqwest::Client,
}

impl std::fmt::Debug for OidcTokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcTokenSource")
            .field("url", &self.settings.token_endpoint_url)
            .field("client_id", &self.settings.client_id)
            .finish()
    }
}

/// The JSON answer of a token endpoint (RFC 6749 §5.1), or its error (§5.2).
#[derive(serde::Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    token_type: Option<String>,
    expires_in: Option<serde_json::Value>,
    error: Option<String>,
    error_description: Option<String>,
}

impl OidcTokenSource {
    /// Checks the settings and builds the HTTP client (the CA file and the secret file are read
    /// here once, so that a missing mount is a configuration error).
    pub fn new(settings: OidcSettings) -> Result<Self, SettingProblem> {
        let bad_url = |message: String| SettingProblem {
            key: URL_KEY,
            value: Some(settings.token_endpoint_url.clone()),
            message,
        };
        let url = reqwest::Url::parse(&settings.token_endpoint_url)
            .map_err(|e| bad_url(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad_url("not an http(s) URL".to_string()));
        }
        read_secret(&settings.client_secret_file).map_err(|message| SettingProblem {
            key: SECRET_KEY,
            value: Some(settings.client_secret_file.display().to_string()),
            message,
        })?;
        let tls =
            crate::tls::client_config(settings.ca_file.as_deref(), None, None).map_err(|e| {
                SettingProblem {
                    key: "sasl_oauthbearer_ca_file",
                    value: None,
                    message: e.to_string(),
                }
            })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| bad_url(format!("cannot build the HTTP client: {e}")))?;
        Ok(OidcTokenSource {
            settings,
            url,
            http,
        })
    }

    async fn fetch_token(&self) -> Result<BearerToken, String> {
        let url = &self.settings.token_endpoint_url;
        let secret = read_secret(&self.settings.client_secret_file).map_err(|e| {
            format!(
                "{SECRET_KEY} {}: {e}",
                self.settings.client_secret_file.display()
            )
        })?;
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("grant_type", "client_credentials");
            if let Some(scope) = &self.settings.scope {
                form.append_pair("scope", scope);
            }
            form.finish()
        };
        let basic = format!(
            "Basic {}",
            B64.encode(format!(
                "{}:{}",
                form_encode(&self.settings.client_id),
                form_encode(&secret)
            ))
        );
        let issued_at = SystemTime::now();
        let timeout = self.settings.timeout;
        let response = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::AUTHORIZATION, basic)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| describe_send_error(url, timeout, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            if e.is_timeout() {
                format!("{URL_KEY} {url}: no complete answer within {timeout:?} (request_timeout)")
            } else {
                format!("{URL_KEY} {url}: reading the answer: {e}")
            }
        })?;
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_BODY_BYTES)]);
        let answer: Option<TokenAnswer> = serde_json::from_str(&text).ok();
        if !status.is_success() {
            let said = match &answer {
                Some(TokenAnswer {
                    error: Some(error),
                    error_description,
                    ..
                }) => match error_description {
                    Some(d) => format!("{error}: {d}"),
                    None => error.clone(),
                },
                _ => snippet(&text),
            };
            return Err(format!("{URL_KEY} {url}: HTTP {status}: {said}"));
        }
        let answer = answer.ok_or_else(|| {
            format!(
                "{URL_KEY} {url}: HTTP {status}, but the answer is not a JSON token: {}",
                snippet(&text)
            )
        })?;
        if let Some(error) = answer.error {
            return Err(format!(
                "{URL_KEY} {url}: {error}: {}",
                answer.error_description.unwrap_or_default()
            ));
        }
        let value = answer
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("{URL_KEY} {url}: the answer has no access_token"))?;
        if let Some(kind) = &answer.token_type {
            if !kind.eq_ignore_ascii_case("bearer") {
                return Err(format!(
                    "{URL_KEY} {url}: token_type {kind:?}, expected Bearer"
                ));
            }
        }
        let expires_in = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            // Some servers send the number as a string.
            Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        }
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| {
            format!(
                "{URL_KEY} {url}: the answer has no positive expires_in (got {})",
                answer
                    .expires_in
                    .as_ref()
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none".to_string())
            )
        })?;
        Ok(BearerToken {
            value,
            issued_at,
            expires_at: issued_at + Duration::from_secs_f64(expires_in),
        })
    }
}

impl TokenSource for OidcTokenSource {
    fn fetch(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch_token())
    }

    fn describe(&self) -> String {
        format!("oidc {}", self.settings.token_endpoint_url)
    }
}

/// The secret, or why it cannot be used (without the path: callers add it).
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    let secret = read_password_file(path).map_err(|e| format!("cannot read: {e}"))?;
    if secret.is_empty() {
        return Err("the file is empty".to_string());
    }
    Ok(secret)
}

/// `application/x-www-form-urlencoded` encoding, as RFC 6749 §2.3.1 asks of the Basic
/// credentials.
fn form_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn describe_send_error(url: &str, timeout: Duration, e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return format!("{URL_KEY} {url}: no answer within {timeout:?} (request_timeout)");
    }
    // reqwest's own message is terse ("error sending request"); the cause says why.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    format!("{URL_KEY} {url}: {message}")
}

/// The start of a non-JSON answer, on one line, for an error message.
fn snippet(text: &str) -> String {
    let one_line: String = text
        .chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if one_line.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        format!("{:?}", one_line.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_encoded() {
        assert_eq!(form_encode("my client"), "my+client");
        assert_eq!(form_encode("a:b/c%"), "a%3Ab%2Fc%25");
        assert_eq!(form_encode("plain-id_1.x"), "plain-id_1.x");
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let settings = |url: &str, secret: PathBuf| OidcSettings {
            token_endpoint_url: url.to_string(),
            client_id: "medic".into(),
            client_secret_file: secret,
            scope: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        };
        let e = OidcTokenSource::new(settings("ftp://idp/token", secret.clone())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sasl_oauthbearer_token_endpoint_url = \"ftp://idp/token\": not an http(s) URL"
        );
        let e = OidcTokenSource::new(settings("not a url", secret.clone())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sasl_oauthbearer_token_endpoint_url = \"not a url\": relative URL without a base"
        );
        let missing = dir.path().join("missing");
        let e = OidcTokenSource::new(settings("https://idp/token", missing.clone())).unwrap_err();
        assert_eq!(e.key, "sasl_oauthbearer_client_secret_file");
        assert_eq!(e.value, Some(missing.display().to_string()));
        assert!(e.message.starts_with("cannot read: "), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = OidcTokenSource::new(settings("https://idp/token", empty)).unwrap_err();
        assert_eq!(e.message, "the file is empty");
        let source = OidcTokenSource::new(settings("https://idp/token", secret)).unwrap();
        assert_eq!(source.describe(), "oidc https://idp/token");
        assert!(!format!("{source:?}").contains("s3cret"));
    }
}
