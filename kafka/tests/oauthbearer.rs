//! SASL/OAUTHBEARER end to end: an OIDC token endpoint played by wiremock (which checks the
//! form body and the Basic header, and answers like Keycloak), and the protocol-level fake
//! broker with an authenticator that parses the OAUTHBEARER message and knows which tokens are
//! good. Nothing sleeps: tests wait on what the fake broker or the endpoint recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kafka_protocol::messages::ApiKey;
use medic_e2e::fake_broker::oauthbearer::OAuthBearer;
use medic_e2e::fake_broker::FakeCluster;
use medic_kafka::{
    ClientConfig, KafkaClient, OidcSettings, OidcTokenSource, Security, SecuritySettings,
    TokenSource,
};
use serde_json::json;
use wiremock::matchers::{body_string, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The client id and secret, chosen so that RFC 6749 §2.3.1's form-encoding matters.
const CLIENT_ID: &str = "medic agent";
const SECRET: &str = "s3:cr%t";
/// base64("medic+agent:s3%3Acr%25t")
const BASIC: &str = "Basic bWVkaWMrYWdlbnQ6czMlM0FjciUyNXQ=";

fn secret_file(dir: &Path, secret: &str) -> std::path::PathBuf {
    let f = dir.join("client-secret");
    std::fs::write(&f, format!("{secret}\n")).unwrap();
    f
}

/// The token endpoint: a good request gets `token` valid for `expires_in` seconds (once, if
/// `once`); anything else gets Keycloak's 401.
async fn token_endpoint(server: &MockServer, token: &str, expires_in: u64, once: bool) {
    let mock = Mock::given(method("POST"))
        .and(path("/realms/kafka/token"))
        .and(header("authorization", BASIC))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "grant_type=client_credentials&scope=kafka+read",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": "kafka read",
        })))
        .with_priority(1);
    let mock = if once { mock.up_to_n_times(1) } else { mock };
    mock.mount(server).await;
}

async fn refuse_others(server: &MockServer) {
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": "invalid_client",
            "error_description": "Invalid client or Invalid client credentials",
        })))
        .with_priority(10)
        .mount(server)
        .await;
}

fn settings(url: &str, secret: &Path, timeout: Duration) -> OidcSettings {
    OidcSettings {
        token_endpoint_url: url.to_string(),
        client_id: CLIENT_ID.into(),
        client_secret_file: secret.to_path_buf(),
        scope: Some("kafka read".into()),
        ca_file: None,
        timeout,
    }
}

/// The client's settings as an operator writes them, built by medic-kafka.
fn security(url: &str, secret: &Path) -> Security {
    SecuritySettings {
        security_protocol: Some("sasl_plaintext".into()),
        sasl_mechanism: Some("OAUTHBEARER".into()),
        sasl_oauthbearer_token_endpoint_url: Some(url.to_string()),
        sasl_oauthbearer_client_id: Some(CLIENT_ID.into()),
        sasl_oauthbearer_client_secret_file: Some(secret.to_path_buf()),
        sasl_oauthbearer_scope: Some("kafka read".into()),
        token_request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
    .build()
    .unwrap()
}

fn client(bootstrap: &str, security: Security) -> KafkaClient {
    KafkaClient::new(ClientConfig {
        bootstrap: vec![bootstrap.to_string()],
        security,
        request_timeout: Duration::from_secs(5),
        offset_fetch_batch: 10,
        client_id: "medic-test".into(),
        observer: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_gets_a_client_credentials_form_with_basic_auth() {
    let idp = MockServer::start().await;
    token_endpoint(&idp, "tok-1", 300, false).await;
    refuse_others(&idp).await;
    let url = format!("{}/realms/kafka/token", idp.uri());
    let dir = tempfile::tempdir().unwrap();

    let before = SystemTime::now();
    let source = OidcTokenSource::new(settings(
        &url,
        &secret_file(dir.path(), SECRET),
        Duration::from_secs(5),
    ))
    .unwrap();
    let token = source.fetch().await.unwrap();
    assert_eq!(token.value, "tok-1");
    assert!(token.issued_at >= before);
    assert_eq!(
        token.expires_at.duration_since(token.issued_at).unwrap(),
        Duration::from_secs(300)
    );

    // A wrong secret: the mock answers 401 with an OAuth error, and the error says so
    // without the secret.
    let wrong = OidcTokenSource::new(settings(
        &url,
        &secret_file(dir.path(), "not-the-secret"),
        Duration::from_secs(5),
    ))
    .unwrap();
    let err = wrong.fetch().await.unwrap_err();
    assert_eq!(
        err,
        format!("sasl_oauthbearer_token_endpoint_url {url}: HTTP 401 Unauthorized: invalid_client: Invalid client or Invalid client credentials")
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    assert_eq!(idp.received_requests().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_endpoint_times_out_and_a_5xx_is_reported() {
    let idp = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"access_token": "late", "expires_in": 60}))
                .set_delay(Duration::from_secs(30)),
        )
        .mount(&idp)
        .await;
    Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream connect error"))
        .mount(&idp)
        .await;
    Mock::given(path("/no-expiry"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "t"})))
        .mount(&idp)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), SECRET);

    let slow = format!("{}/slow", idp.uri());
    let source =
        OidcTokenSource::new(settings(&slow, &secret, Duration::from_millis(300))).unwrap();
    let started = Instant::now();
    let err = source.fetch().await.unwrap_err();
    assert_eq!(
        err,
        format!(
            "sasl_oauthbearer_token_endpoint_url {slow}: no answer within 300ms (request_timeout)"
        )
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    let down = format!("{}/down", idp.uri());
    let err = OidcTokenSource::new(settings(&down, &secret, Duration::from_secs(5)))
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!("sasl_oauthbearer_token_endpoint_url {down}: HTTP 503 Service Unavailable: \"upstream connect error\"")
    );

    let no_expiry = format!("{}/no-expiry", idp.uri());
    let err = OidcTokenSource::new(settings(&no_expiry, &secret, Duration::from_secs(5)))
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!("sasl_oauthbearer_token_endpoint_url {no_expiry}: the answer has no positive expires_in (got none)")
    );
}

/// A token that lives 2 s and broker sessions of at most 1 s: the client re-authenticates on
/// the same connection at 85% of each session, and past 80% of the first token's life it
/// presents the second one. The fake broker closes no connection.
#[tokio::test(flavor = "multi_thread")]
async fn metadata_works_and_sessions_are_renewed_on_the_same_connection() {
    let idp = MockServer::start().await;
    token_endpoint(&idp, "tok-1", 2, true).await;
    token_endpoint(&idp, "tok-2", 300, false).await;
    refuse_others(&idp).await;
    let url = format!("{}/realms/kafka/token", idp.uri());
    let dir = tempfile::tempdir().unwrap();

    let auth = Arc::new(OAuthBearer::new(Duration::from_secs(1)));
    let later = SystemTime::now() + Duration::from_secs(120);
    auth.accept("tok-1", "medic", later);
    auth.accept("tok-2", "medic", later);
    let cluster = FakeCluster::builder()
        .brokers(1)
        .authenticator(auth.clone())
        .start()
        .await;
    cluster.update(|t| t.add_topic("orders", 3));
    let c = client(
        &cluster.bootstrap(),
        security(&url, &secret_file(dir.path(), SECRET)),
    );

    let md = c.metadata(None).await.unwrap();
    assert_eq!(md.topics["orders"].partitions.len(), 3);
    assert_eq!(auth.presented(), ["tok-1"]);

    // Keep using the connection until the broker has seen the second token.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !auth.presented().contains(&"tok-2".to_string()) {
        assert!(
            Instant::now() < deadline,
            "presented {:?}",
            auth.presented()
        );
        c.metadata(None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let presented = auth.presented();
    assert_eq!(presented.first().map(String::as_str), Some("tok-1"));
    assert!(
        presented.len() >= 3,
        "initial + two re-authentications: {presented:?}"
    );
    assert_eq!(cluster.expired_sessions_closed(), 0);
    let auths = cluster.requests_for(ApiKey::SaslAuthenticate);
    assert_eq!(auths.len(), presented.len());
    assert!(
        auths.iter().all(|r| r.connection == auths[0].connection),
        "re-authenticated on one connection: {auths:?}"
    );
    assert!(auths.iter().all(|r| r.version >= 1), "{auths:?}");
    assert_eq!(c.stats().by_api().get("api_versions"), Some(&1));
    // Two tokens, two requests to the endpoint: the cache reused tok-1 until 80% of its life.
    assert_eq!(idp.received_requests().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_and_endpoint_refusals_reach_the_caller() {
    let idp = MockServer::start().await;
    token_endpoint(&idp, "tok-unknown", 300, false).await;
    refuse_others(&idp).await;
    let url = format!("{}/realms/kafka/token", idp.uri());
    let dir = tempfile::tempdir().unwrap();
    let auth = Arc::new(OAuthBearer::new(Duration::from_secs(60)));
    let cluster = FakeCluster::builder()
        .brokers(1)
        .authenticator(auth.clone())
        .start()
        .await;
    let addr = cluster.addr(0);

    // The broker does not know the token: its error and message, with the mechanism.
    let err = client(&addr, security(&url, &secret_file(dir.path(), SECRET)))
        .metadata(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("SASL authentication with {addr} failed: OAUTHBEARER: invalid_token: the token is not one this broker accepts (SaslAuthenticationFailed)")),
        "{err}"
    );
    assert_eq!(auth.presented(), ["tok-unknown"]);

    // The endpoint refuses the client: no token, so the broker never sees a SaslAuthenticate.
    let other = tempfile::tempdir().unwrap();
    let err = client(&addr, security(&url, &secret_file(other.path(), "wrong")))
        .metadata(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("SASL authentication with {addr} failed: OAUTHBEARER: cannot get a token: sasl_oauthbearer_token_endpoint_url {url}: HTTP 401 Unauthorized: invalid_client")),
        "{err}"
    );
    assert_eq!(cluster.requests_for(ApiKey::SaslAuthenticate).len(), 1);
}
