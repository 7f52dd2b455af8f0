//! AWS MSK IAM: OAUTHBEARER tokens that are SigV4-presigned `kafka-cluster:Connect` URLs.
//!
//! The token is byte for byte what AWS's own signer libraries send (checked against
//! aws/aws-msk-iam-sasl-signer-go `signer/msk_auth_token_provider.go` and
//! aws/aws-msk-iam-sasl-signer-python `aws_msk_iam_sasl_signer/MSKAuthTokenProvider.py`):
//!
//! 1. a `GET https://kafka.<region>.amazonaws.com/?Action=kafka-cluster%3AConnect`,
//! 2. presigned with SigV4 in the query string for the service `kafka-cluster` and the region,
//!    `X-Amz-Expires=900`, only `host` signed, the payload hash that of the empty body, and
//!    `X-Amz-Security-Token` when the credentials carry a session token (the Go signer's
//!    `v4.PresignHTTP`, botocore's `SigV4QueryAuth`),
//! 3. then a `User-Agent` query parameter appended after signing (not covered by the signature),
//! 4. the whole URL base64url-encoded without padding (Go's `base64.RawURLEncoding`, Python's
//!    `urlsafe_b64encode(..).rstrip("=")`).
//!
//! The signer libraries report the expiry as `X-Amz-Date` + 900 s; here it is that or the
//! credentials' own expiry, whichever comes first, so that the client refreshes before an
//! assumed-role session runs out.
//!
//! Signing is [`aws_sigv4`]; credentials come from [`aws_config`]'s default chain
//! (environment, profile, web identity for IRSA, ECS, instance metadata), built on the first
//! fetch with an HTTPS client on rustls + ring.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::OnceCell;

use crate::token::{BearerToken, TokenFuture, TokenSource};

/// How long a token is valid for (`X-Amz-Expires`), as in every AWS signer library.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// The SigV4 service name of MSK's data plane.
const SIGNING_NAME: &str = "kafka-cluster";

/// The IAM action the token proves the right to.
const ACTION: &str = "kafka-cluster:Connect";

/// The `User-Agent` query parameter (the AWS libraries send `<library>/<version>`).
pub const USER_AGENT: &str = concat!("kafka-medic/", env!("CARGO_PKG_VERSION"));

/// RFC 3986 unreserved characters stay, everything else is percent-encoded: the encoding SigV4
/// uses for the canonical query string, and so the one the URL must carry.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The time source of a [`MskIamTokenSource`] (tests pass a fixed one).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Signs MSK IAM tokens for one region with credentials from a provider (by default the AWS
/// chain, built on the first fetch).
pub struct MskIamTokenSource {
    region: String,
    credentials: OnceCell<SharedCredentialsProvider>,
    clock: Clock,
}

impl fmt::Debug for MskIamTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MskIamTokenSource")
            .field("region", &self.region)
            .field("credentials_chain_built", &self.credentials.initialized())
            .finish()
    }
}

impl MskIamTokenSource {
    /// A source for the cluster's region (`sasl_aws_region`), with credentials from the standard
    /// AWS provider chain. Validates the region only; the chain is built on the first fetch.
    pub fn new(region: &str) -> Result<Self, String> {
        validate_region(region)?;
        Ok(Self {
            region: region.to_string(),
            credentials: OnceCell::new(),
            clock: Arc::new(SystemTime::now),
        })
    }

    /// A source with a fixed credentials provider and clock (tests, or an embedder that has its
    /// own provider).
    pub fn with_credentials_provider(
        region: &str,
        credentials: impl ProvideCredentials + 'static,
        clock: Clock,
    ) -> Result<Self, String> {
        validate_region(region)?;
        Ok(Self {
            region: region.to_string(),
            credentials: OnceCell::new_with(Some(SharedCredentialsProvider::new(credentials))),
            clock,
        })
    }

    /// The region tokens are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    async fn fetch_token(&self) -> Result<BearerToken, String> {
        let provider = self
            .credentials
            .get_or_init(|| default_chain(&self.region))
            .await;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            format!(
                "sasl_mechanism AWS_MSK_IAM: the AWS credential chain (environment, profile, web \
                 identity, ECS, instance metadata) gave no credentials: {}",
                error_chain(&e)
            )
        })?;
        sign_token(&self.region, &credentials, (self.clock)())
    }
}

impl TokenSource for MskIamTokenSource {
    fn fetch(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch_token())
    }

    fn describe(&self) -> String {
        format!("aws_msk_iam {}", self.region)
    }
}

/// The default AWS credential chain for `region`, over an HTTPS client on rustls with ring (STS
/// for web identity, SSO-less profiles, the ECS and instance metadata endpoints).
async fn default_chain(region: &str) -> SharedCredentialsProvider {
    use aws_smithy_http_client::tls;
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let region = aws_config::Region::new(region.to_string());
    let conf = aws_config::provider_config::ProviderConfig::default()
        .with_http_client(http)
        .with_region(Some(region.clone()));
    let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
        .region(region)
        .configure(conf)
        .build()
        .await;
    SharedCredentialsProvider::new(chain)
}

/// Checks `sasl_aws_region`: an AWS region code such as `eu-west-1` or `us-gov-west-1`
/// (lowercase letters in dash-separated parts, ending in a number).
pub fn validate_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let letters = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    let ok = parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(letters)
        && parts
            .last()
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else if region.is_empty() {
        Err(
            "sasl_aws_region: required for sasl_mechanism AWS_MSK_IAM (the cluster's AWS \
             region, for example eu-west-1)"
                .to_string(),
        )
    } else {
        Err(format!(
            "sasl_aws_region: {region:?} is not an AWS region code (expected for example \
             eu-west-1 or us-gov-west-1)"
        ))
    }
}

/// Signs one token at `now` (truncated to the second, as `X-Amz-Date` is).
pub(crate) fn sign_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<BearerToken, String> {
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "sasl_mechanism AWS_MSK_IAM: the clock is before 1970".to_string())?;
    let issued_at = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
    let mut expires_at = issued_at + TOKEN_LIFETIME;
    if let Some(expiry) = credentials.expiry() {
        if expiry <= issued_at {
            return Err(format!(
                "sasl_mechanism AWS_MSK_IAM: the AWS credentials of access key {} expired {} s \
                 ago",
                credentials.access_key_id(),
                issued_at
                    .duration_since(expiry)
                    .unwrap_or_default()
                    .as_secs()
            ));
        }
        expires_at = expires_at.min(expiry);
    }

    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!(
        "https://{host}/?Action={}",
        utf8_percent_encode(ACTION, QUERY_VALUE)
    );
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity: Identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SIGNING_NAME)
        .time(issued_at)
        .settings(settings)
        .build()
        .map_err(|e| format!("sasl_mechanism AWS_MSK_IAM: SigV4 parameters: {e}"))?
        .into();
    let request = SignableRequest::new("GET", url.as_str(), std::iter::empty(), {
        SignableBody::Bytes(&[])
    })
    .map_err(|e| format!("sasl_aws_region {region:?}: cannot sign {url}: {e}"))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| format!("sasl_mechanism AWS_MSK_IAM: SigV4 signing failed: {e}"))?
        .into_parts();

    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    signed.push_str("&User-Agent=");
    signed.extend(utf8_percent_encode(USER_AGENT, QUERY_VALUE));

    Ok(BearerToken {
        value: URL_SAFE_NO_PAD.encode(signed.as_bytes()),
        expires_at,
        issued_at,
    })
}

/// An error and its sources, joined with `: ` (the AWS errors keep what STS or the metadata
/// endpoint said in their sources).
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, KeyInit, Mac};
    use sha2::{Digest, Sha256};

    /// The AWS documentation's example credentials (SigV4 test suite).
    const ACCESS_KEY: &str = "AKIDEXAMPLE";
    const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    /// 2015-08-30T12:36:00Z, the test suite's date.
    const SIGNING_TIME_SECS: u64 = 1_440_938_160;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn fixed_clock(t: SystemTime) -> Clock {
        Arc::new(move || t)
    }

    fn credentials(session_token: Option<&str>, expiry: Option<SystemTime>) -> Credentials {
        Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            session_token.map(str::to_string),
            expiry,
            "test",
        )
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// RFC 3986 percent-encoding of everything but the unreserved characters, written out here
    /// so that the test does not share the encoder with the code under test.
    fn uri_encode(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn uri_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// Decodes a token into its URL and its query parameters, in order and decoded.
    fn decode(token: &str) -> (String, Vec<(String, String)>) {
        assert!(!token.contains('='), "token is unpadded: {token}");
        assert!(
            !token.contains('+') && !token.contains('/'),
            "token is base64url: {token}"
        );
        let url = String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap();
        let query = url.split_once('?').unwrap().1;
        let params = query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (uri_decode(k), uri_decode(v))
            })
            .collect();
        (url, params)
    }

    fn param<'a>(params: &'a [(String, String)], key: &str) -> &'a str {
        let found: Vec<&str> = params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(found.len(), 1, "{key} appears once in {params:?}");
        found[0]
    }

    /// SigV4 computed from the specification alone: canonical request, string to sign, the
    /// HMAC-SHA256 key derivation, over every parameter but the signature and the user agent.
    fn expected_signature(params: &[(String, String)], host: &str, region: &str) -> String {
        let mut signed: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "X-Amz-Signature" && k != "User-Agent")
            .map(|(k, v)| (uri_encode(k), uri_encode(v)))
            .collect();
        signed.sort();
        let canonical_query = signed
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let empty_payload = hex(&Sha256::digest(b""));
        let canonical_request =
            format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{empty_payload}");
        let date_time = param(params, "X-Amz-Date");
        let date = &date_time[..8];
        let scope = format!("{date}/{region}/kafka-cluster/aws4_request");
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
            hex(&Sha256::digest(canonical_request.as_bytes()))
        );
        let k_date = hmac(format!("AWS4{SECRET_KEY}").as_bytes(), date);
        let k_region = hmac(&k_date, region);
        let k_service = hmac(&k_region, "kafka-cluster");
        let k_signing = hmac(&k_service, "aws4_request");
        hex(&hmac(&k_signing, &string_to_sign))
    }

    async fn token_at(
        region: &str,
        creds: Credentials,
        now: SystemTime,
    ) -> Result<BearerToken, String> {
        MskIamTokenSource::with_credentials_provider(region, creds, fixed_clock(now))
            .unwrap()
            .fetch()
            .await
    }

    #[tokio::test]
    async fn token_matches_the_documented_format_and_an_independent_signature() {
        let now = at(SIGNING_TIME_SECS);
        let token = token_at("us-east-1", credentials(None, None), now)
            .await
            .unwrap();
        let (url, params) = decode(&token.value);

        assert!(
            url.starts_with(
                "https://kafka.us-east-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        assert!(
            url.contains("X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2Fkafka-cluster%2Faws4_request"),
            "{url}"
        );
        let keys: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "Action",
                "User-Agent",
                "X-Amz-Algorithm",
                "X-Amz-Credential",
                "X-Amz-Date",
                "X-Amz-Expires",
                "X-Amz-Signature",
                "X-Amz-SignedHeaders",
            ]
        );
        assert_eq!(keys.last(), Some(&"User-Agent"), "appended after signing");
        assert_eq!(param(&params, "Action"), "kafka-cluster:Connect");
        assert_eq!(param(&params, "X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
        assert_eq!(
            param(&params, "X-Amz-Credential"),
            "AKIDEXAMPLE/20150830/us-east-1/kafka-cluster/aws4_request"
        );
        assert_eq!(param(&params, "X-Amz-Date"), "20150830T123600Z");
        assert_eq!(param(&params, "X-Amz-Expires"), "900");
        assert_eq!(param(&params, "X-Amz-SignedHeaders"), "host");
        assert_eq!(param(&params, "User-Agent"), USER_AGENT);
        assert!(USER_AGENT.starts_with("kafka-medic/0."), "{USER_AGENT}");

        let signature = param(&params, "X-Amz-Signature");
        assert_eq!(signature.len(), 64, "{signature}");
        assert_eq!(
            signature,
            expected_signature(&params, "kafka.us-east-1.amazonaws.com", "us-east-1")
        );
        // A third computation, with Python's hmac/hashlib over the same canonical request.
        assert_eq!(
            signature,
            "c413a83bc64a339e31a5e5e9ed99d778ff843206b427540cafa5122c01e3e993"
        );

        assert_eq!(token.issued_at, now);
        assert_eq!(token.expires_at, now + Duration::from_secs(900));
    }

    #[tokio::test]
    async fn session_token_is_signed_and_sent() {
        let now = at(SIGNING_TIME_SECS);
        let session = "FQoGZXIvYXdzE/session+token==";
        let token = token_at("eu-west-1", credentials(Some(session), None), now)
            .await
            .unwrap();
        let (url, params) = decode(&token.value);
        assert!(
            url.starts_with("https://kafka.eu-west-1.amazonaws.com/?"),
            "{url}"
        );
        assert!(
            url.contains("X-Amz-Security-Token=FQoGZXIvYXdzE%2Fsession%2Btoken%3D%3D"),
            "{url}"
        );
        assert_eq!(param(&params, "X-Amz-Security-Token"), session);
        assert_eq!(
            param(&params, "X-Amz-Credential"),
            "AKIDEXAMPLE/20150830/eu-west-1/kafka-cluster/aws4_request"
        );
        assert_eq!(
            param(&params, "X-Amz-Signature"),
            expected_signature(&params, "kafka.eu-west-1.amazonaws.com", "eu-west-1")
        );
        assert_eq!(
            param(&params, "X-Amz-Signature"),
            "8bc4f2df6fa5f435fad27b61935189094799fbcdaea48325910c79d45aae7d4c"
        );
        // The same request without the session token signs differently: it is covered.
        let without = token_at("eu-west-1", credentials(None, None), now)
            .await
            .unwrap();
        let (_, without) = decode(&without.value);
        assert_ne!(
            param(&params, "X-Amz-Signature"),
            param(&without, "X-Amz-Signature")
        );
    }

    #[tokio::test]
    async fn signing_time_is_truncated_to_the_second() {
        let now = at(SIGNING_TIME_SECS) + Duration::from_millis(750);
        let token = token_at("us-east-1", credentials(None, None), now)
            .await
            .unwrap();
        let (_, params) = decode(&token.value);
        assert_eq!(param(&params, "X-Amz-Date"), "20150830T123600Z");
        assert_eq!(token.issued_at, at(SIGNING_TIME_SECS));
        assert_eq!(token.expires_at, at(SIGNING_TIME_SECS + 900));
    }

    #[tokio::test]
    async fn credentials_expiring_first_bound_the_token() {
        let now = at(SIGNING_TIME_SECS);
        let soon = now + Duration::from_secs(300);
        let token = token_at("us-east-1", credentials(Some("s"), Some(soon)), now)
            .await
            .unwrap();
        assert_eq!(token.issued_at, now);
        assert_eq!(token.expires_at, soon);
        // The URL itself still says 900 s, as the signer libraries' do.
        let (_, params) = decode(&token.value);
        assert_eq!(param(&params, "X-Amz-Expires"), "900");

        let later = now + Duration::from_secs(3600);
        let token = token_at("us-east-1", credentials(Some("s"), Some(later)), now)
            .await
            .unwrap();
        assert_eq!(token.expires_at, now + Duration::from_secs(900));
    }

    #[tokio::test]
    async fn expired_credentials_are_an_error_naming_the_key() {
        let now = at(SIGNING_TIME_SECS);
        let err = token_at(
            "us-east-1",
            credentials(Some("s"), Some(now - Duration::from_secs(5))),
            now,
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            "sasl_mechanism AWS_MSK_IAM: the AWS credentials of access key AKIDEXAMPLE expired 5 s ago"
        );
    }

    #[tokio::test]
    async fn provider_errors_name_the_chain_and_what_it_said() {
        #[derive(Debug)]
        struct Failing;
        impl ProvideCredentials for Failing {
            fn provide_credentials<'a>(
                &'a self,
            ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
            where
                Self: 'a,
            {
                aws_credential_types::provider::future::ProvideCredentials::ready(Err(
                    aws_credential_types::provider::error::CredentialsError::provider_error(
                        "STS said: AccessDenied: not authorized to perform \
                         sts:AssumeRoleWithWebIdentity",
                    ),
                ))
            }
        }
        let source = MskIamTokenSource::with_credentials_provider(
            "us-east-1",
            Failing,
            fixed_clock(at(SIGNING_TIME_SECS)),
        )
        .unwrap();
        let err = source.fetch().await.unwrap_err();
        assert!(
            err.starts_with("sasl_mechanism AWS_MSK_IAM: the AWS credential chain"),
            "{err}"
        );
        assert!(
            err.contains(
                "STS said: AccessDenied: not authorized to perform sts:AssumeRoleWithWebIdentity"
            ),
            "{err}"
        );
    }

    #[test]
    fn regions_are_validated_by_setting_name() {
        for good in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
            "cn-north-1",
        ] {
            assert_eq!(validate_region(good), Ok(()), "{good}");
        }
        for bad in [
            "EU-WEST-1",
            "eu-west",
            "euwest1",
            "eu-west-1 ",
            "eu--west-1",
            "kafka.eu-west-1.amazonaws.com",
            "eu-west-1/x",
        ] {
            assert_eq!(
                validate_region(bad),
                Err(format!(
                    "sasl_aws_region: {bad:?} is not an AWS region code (expected for \
                     example eu-west-1 or us-gov-west-1)"
                )),
                "{bad}"
            );
        }
        let err = MskIamTokenSource::new("").unwrap_err();
        assert!(err.starts_with("sasl_aws_region: required"), "{err}");
        let source = MskIamTokenSource::new("eu-west-1").unwrap();
        assert_eq!(source.describe(), "aws_msk_iam eu-west-1");
        assert_eq!(source.region(), "eu-west-1");
    }

    #[test]
    fn debug_shows_no_credentials() {
        let source = MskIamTokenSource::with_credentials_provider(
            "us-east-1",
            credentials(Some("secret-session"), None),
            fixed_clock(at(SIGNING_TIME_SECS)),
        )
        .unwrap();
        let debug = format!("{source:?}");
        assert!(debug.contains("us-east-1"), "{debug}");
        assert!(
            !debug.contains(SECRET_KEY) && !debug.contains("secret-session"),
            "{debug}"
        );
    }
}
