//! AWS MSK IAM tokens from the standard AWS credential chain, as `MskIamTokenSource::new` builds
//! it: web identity (IRSA) against a wiremock STS, and the environment variables.
//!
//! The chain reads the process environment, so this file is a test binary of its own, every test
//! holds `ENV_LOCK` while it runs, and `EnvGuard` puts back every variable it changed (on panic
//! too). The instance metadata endpoint is disabled and the profile files point at nothing, so
//! no test reaches beyond 127.0.0.1 or reads the developer's `~/.aws`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use medic_kafka::msk_iam::MskIamTokenSource;
use medic_kafka::token::TokenSource;
use percent_encoding::percent_decode_str;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

static ENV_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every variable the default chain looks at; each test starts with all of them unset.
const CHAIN_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_EC2_METADATA_DISABLED",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_STS_REGIONAL_ENDPOINTS",
];

/// Sets variables for one test and restores the previous values when dropped.
struct EnvGuard {
    saved: Vec<(&'static str, Option<OsString>)>,
}

impl EnvGuard {
    /// Clears every chain variable, then sets `vars`; profile files point into `dir` (empty) and
    /// instance metadata is off.
    fn isolated(dir: &std::path::Path, vars: &[(&'static str, String)]) -> Self {
        let saved = CHAIN_VARS
            .iter()
            .map(|k| (*k, std::env::var_os(k)))
            .collect();
        for k in CHAIN_VARS {
            std::env::remove_var(k);
        }
        std::env::set_var("AWS_CONFIG_FILE", dir.join("no-config"));
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-credentials"));
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        for (k, v) in vars {
            assert!(CHAIN_VARS.contains(k), "{k} is restored by EnvGuard");
            std::env::set_var(k, v);
        }
        Self { saved }
    }
}

impl Drop for EnvGuard {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/kafka-medic";
const SESSION_NAME: &str = "medic-agent-test";
const WEB_IDENTITY_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.sig";
const STS_ACCESS_KEY: &str = "ASIAIRSAEXAMPLE";
const STS_SECRET_KEY: &str = "irsaSecretKeyEXAMPLE/abc+def";
const STS_SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEIRSA/session+token==";

/// `YYYY-MM-DDTHH:MM:SSZ` for a time after 1970 (STS's `Expiration`).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn rfc3339_formats_known_times() {
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
        "2015-08-30T12:36:00Z"
    );
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::from_secs(951_825_599)),
        "2000-02-29T11:59:59Z"
    );
}

fn sts_response(expiration: SystemTime) -> String {
    format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:kafka:medic-agent</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::123456789012:assumed-role/kafka-medic/{SESSION_NAME}</Arn>
      <AssumedRoleId>AROAEXAMPLE:{SESSION_NAME}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{STS_SESSION_TOKEN}</SessionToken>
      <SecretAccessKey>{STS_SECRET_KEY}</SecretAccessKey>
      <Expiration>{}</Expiration>
      <AccessKeyId>{STS_ACCESS_KEY}</AccessKeyId>
    </Credentials>
    <Provider>arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/EXAMPLE</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
        rfc3339(expiration)
    )
}

/// A form body (`application/x-www-form-urlencoded`) as key/value pairs.
fn form(body: &[u8]) -> Vec<(String, String)> {
    std::str::from_utf8(body)
        .unwrap()
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decode = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            };
            (decode(k), decode(v))
        })
        .collect()
}

fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The token's URL query parameters, decoded.
fn token_params(token: &str) -> Vec<(String, String)> {
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap();
    let (_, query) = url.split_once('?').unwrap();
    form(query.as_bytes())
}

/// The same token, signed independently of the chain with the credentials given and the
/// time the chain's token was signed at: equal values mean the chain signed with exactly
/// these credentials (secret key included).
async fn signed_with(token_issued_at: SystemTime, region: &str, creds: Credentials) -> String {
    MskIamTokenSource::with_credentials_provider(
        region,
        creds,
        std::sync::Arc::new(move || token_issued_at),
    )
    .unwrap()
    .fetch()
    .await
    .unwrap()
    .value
}

#[tokio::test]
async fn irsa_web_identity_token_is_exchanged_at_sts_and_its_credentials_sign_the_token() {
    let _lock = ENV_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();

    // The assumed-role session ends in 10 minutes: before the token's 15.
    let session_end = UNIX_EPOCH
        + Duration::from_secs(
            (SystemTime::now() + Duration::from_secs(600))
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .and(body_string_contains("Action=AssumeRoleWithWebIdentity"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/xml")
                .set_body_string(sts_response(session_end)),
        )
        .expect(1)
        .mount(&sts)
        .await;

    let _env = EnvGuard::isolated(
        dir.path(),
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_ARN", ROLE_ARN.to_string()),
            ("AWS_ROLE_SESSION_NAME", SESSION_NAME.to_string()),
            ("AWS_ENDPOINT_URL_STS", sts.uri()),
        ],
    );

    let source = MskIamTokenSource::new("eu-west-1").unwrap();
    let before = SystemTime::now() - Duration::from_secs(1);
    let token = source.fetch().await.unwrap();

    // What the chain sent to STS.
    let requests = sts.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(request.method.as_str(), "POST");
    let body = form(&request.body);
    assert_eq!(get(&body, "Action"), Some("AssumeRoleWithWebIdentity"));
    assert_eq!(get(&body, "Version"), Some("2011-06-15"));
    assert_eq!(get(&body, "RoleArn"), Some(ROLE_ARN));
    assert_eq!(get(&body, "RoleSessionName"), Some(SESSION_NAME));
    assert_eq!(get(&body, "WebIdentityToken"), Some(WEB_IDENTITY_TOKEN));
    assert!(
        request.headers.get("authorization").is_none(),
        "AssumeRoleWithWebIdentity is not signed: {:?}",
        request.headers
    );

    // The token is signed with what STS returned.
    let params = token_params(&token.value);
    let credential = get(&params, "X-Amz-Credential").unwrap();
    assert!(
        credential.starts_with(&format!("{STS_ACCESS_KEY}/")),
        "{credential}"
    );
    assert!(
        credential.ends_with("/eu-west-1/kafka-cluster/aws4_request"),
        "{credential}"
    );
    assert_eq!(
        get(&params, "X-Amz-Security-Token"),
        Some(STS_SESSION_TOKEN)
    );
    assert_eq!(get(&params, "Action"), Some("kafka-cluster:Connect"));
    let expected = signed_with(
        token.issued_at,
        "eu-west-1",
        Credentials::new(
            STS_ACCESS_KEY,
            STS_SECRET_KEY,
            Some(STS_SESSION_TOKEN.to_string()),
            Some(session_end),
            "expected",
        ),
    )
    .await;
    assert_eq!(token.value, expected);

    // Signed now; bounded by the session's end, not by the 900 s of the URL.
    assert!(token.issued_at >= before, "{token:?}");
    assert!(token.issued_at <= SystemTime::now(), "{token:?}");
    assert_eq!(token.expires_at, session_end, "{token:?}");
}

#[tokio::test]
async fn sts_refusal_is_an_error_naming_the_chain_and_what_sts_said() {
    let _lock = ENV_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, WEB_IDENTITY_TOKEN).unwrap();
    let sts = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/"))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("content-type", "text/xml")
                .set_body_string(
                    r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <Error>
    <Type>Sender</Type>
    <Code>AccessDenied</Code>
    <Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message>
  </Error>
  <RequestId>8b5c1c0e-0000-0000-0000-000000000000</RequestId>
</ErrorResponse>"#,
                ),
        )
        .mount(&sts)
        .await;
    let _env = EnvGuard::isolated(
        dir.path(),
        &[
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                token_file.display().to_string(),
            ),
            ("AWS_ROLE_ARN", ROLE_ARN.to_string()),
            ("AWS_ENDPOINT_URL_STS", sts.uri()),
        ],
    );

    let err = MskIamTokenSource::new("eu-west-1")
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(
        err.starts_with("sasl_mechanism AWS_MSK_IAM: the AWS credential chain"),
        "{err}"
    );
    assert!(err.contains("AccessDenied"), "{err}");
    assert!(
        err.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity"),
        "{err}"
    );
    assert!(!sts.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn environment_variables_are_the_first_link_of_the_chain() {
    let _lock = ENV_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _env = EnvGuard::isolated(
        dir.path(),
        &[
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_string(),
            ),
            ("AWS_SESSION_TOKEN", "env-session".to_string()),
        ],
    );
    let token = MskIamTokenSource::new("us-east-1")
        .unwrap()
        .fetch()
        .await
        .unwrap();
    let params = token_params(&token.value);
    assert_eq!(get(&params, "X-Amz-Security-Token"), Some("env-session"));
    let expected = signed_with(
        token.issued_at,
        "us-east-1",
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("env-session".to_string()),
            None,
            "expected",
        ),
    )
    .await;
    assert_eq!(token.value, expected);
    assert_eq!(
        token.expires_at.duration_since(token.issued_at).unwrap(),
        Duration::from_secs(900)
    );
}

#[tokio::test]
async fn no_credentials_anywhere_is_an_error_naming_the_chain() {
    let _lock = ENV_LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _env = EnvGuard::isolated(dir.path(), &[]);
    let err = MskIamTokenSource::new("us-east-1")
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert!(
        err.starts_with("sasl_mechanism AWS_MSK_IAM: the AWS credential chain"),
        "{err}"
    );
    // Every link of the chain says why it had nothing.
    for said in [
        "no credentials found in chain",
        "Environment: the credential provider was not enabled",
        "WebIdentityToken: the credential provider was not enabled: $AWS_WEB_IDENTITY_TOKEN_FILE was not set",
        "Ec2InstanceMetadata: the credential provider was not enabled: IMDS disabled",
    ] {
        assert!(err.contains(said), "{said:?} in {err}");
    }
}
