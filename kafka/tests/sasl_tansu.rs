//! SASL against a real broker: tansu started with `--authentication` speaks SCRAM-SHA-256 and
//! has no way here to create a user (its AlterUserScramCredentials needs an authenticated
//! client). What can be checked for real is the exchange itself: SaslHandshake, then the
//! client-first message in SaslAuthenticate, parsed by the broker, which answers with a
//! well-formed SCRAM error that the agent reports in words.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use medic_e2e::{free_port, tool, wait_for_port, Server};
use medic_kafka::{ClientConfig, KafkaClient, SaslCredentials, SaslMechanism, Security};

fn client(bootstrap: &str, sasl: Option<SaslCredentials>) -> KafkaClient {
    KafkaClient::new(ClientConfig {
        bootstrap: vec![bootstrap.to_string()],
        security: Security {
            sasl: sasl.map(Into::into),
            ..Default::default()
        },
        request_timeout: Duration::from_secs(3),
        offset_fetch_batch: 10,
        client_id: "medic-test".into(),
        observer: None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn scram_exchange_reaches_the_broker_and_errors_are_clear() {
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let _tansu = Server::start(
        "tansu",
        &tool("tansu"),
        &[
            "broker".into(),
            "--listener-url".into(),
            url.clone(),
            "--advertised-listener-url".into(),
            url,
            "--authentication".into(),
        ],
    );
    assert!(wait_for_port(port, Duration::from_secs(5)));
    let b = format!("127.0.0.1:{port}");

    // Without SASL the broker drops the connection.
    let err = client(&b, None)
        .metadata(None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("i/o error talking to"), "{err}");

    // With SCRAM-SHA-256 the broker parses our client-first message and rejects the user by
    // name, in a proper server-final error that reaches the operator verbatim.
    let creds = SaslCredentials {
        mechanism: SaslMechanism::ScramSha256,
        username: "medic".into(),
        password: "s3cret".into(),
    };
    let c = client(&b, Some(creds));
    let err = c.metadata(None).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("SASL authentication with 127.0.0.1:{port} failed: SCRAM-SHA-256: server rejected the credentials: unknown-user")),
        "{err}"
    );
    // ApiVersions, SaslHandshake and one SaslAuthenticate were sent.
    let by_api = c.stats().by_api();
    assert_eq!(by_api.get("api_versions"), Some(&1), "{by_api:?}");
    assert_eq!(by_api.get("sasl_handshake"), Some(&1), "{by_api:?}");
}
