//! The real binary: start-up refusal, restart inside a cooldown, and kill -9 during a burst.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::*;
use support::*;

#[test]
fn refuses_to_start_without_credentials() {
    let files = Files::new();
    let out = Command::new(env!("CARGO_BIN_EXE_medic-actuator"))
        .args([
            "--policies-file",
            &files.path("policies.yaml").display().to_string(),
        ])
        .env("MEDIC_ACTUATOR_AUDIT_PATH", files.audit_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("auth: no credentials configured"),
        "{stderr}"
    );
    assert!(!files.audit_path().exists(), "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_inside_cooldown_does_not_patch_again() {
    let files = Files::new();
    let kube = FakeKube::default();
    kube.add("shop", "orders-consumer", 2);
    let server = kube.start().await;
    let cfg = write_config(&files, &server.uri(), "");
    let c = client();

    let run = Running::start(&cfg);
    let (s, b) = post(
        &c,
        &run,
        payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", Some(9000))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{b}\n{}", run.dump());
    assert_eq!(b["results"][0]["outcome"], "applied", "{}", run.dump());
    assert_eq!(kube.scale_writes().len(), 1);
    drop(run); // stop the process

    let run = Running::start(&cfg);
    // The same alert again (an Alertmanager retry after the restart) and a new one: neither patches.
    let (s, b) = post(
        &c,
        &run,
        payload(
            "firing",
            vec![lag_alert("firing", "fp1", "prod", "orders", Some(9000))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 200, "{}", run.dump());
    assert_eq!(b["results"][0]["reason"], "duplicate", "{b}");
    let (_, b) = post(
        &c,
        &run,
        payload(
            "firing",
            vec![lag_alert("firing", "fp2", "prod", "orders", Some(9000))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(b["results"][0]["reason"], "cooldown", "{b}");
    assert_eq!(
        kube.scale_writes().len(),
        1,
        "no PATCH after the restart\n{}",
        run.dump()
    );
    assert_eq!(kube.replicas("shop", "orders-consumer"), 4);
    let r = c
        .get(run.url("/api/v1/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let page: Value = r.json().await.unwrap();
    let seqs: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_burst_loses_no_answered_record() {
    let files = Files::new();
    let kube = FakeKube::default();
    kube.add("shop", "orders-consumer", 2);
    kube.add("billing", "billing-consumer", 1);
    let server = kube.start().await;
    let cfg = write_config(&files, &server.uri(), "");
    let c = client();
    let run = Running::start(&cfg);
    let answered: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut senders = Vec::new();
    for sender in 0..3 {
        let c = c.clone();
        let url = run.url("/api/v1/alerts");
        let answered = answered.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..5000 {
                if Instant::now() > deadline {
                    break;
                }
                let fp = format!("s{sender}-{i}");
                let group = if i % 2 == 0 { "orders" } else { "billing" };
                let body = payload(
                    "firing",
                    vec![lag_alert("firing", &fp, "prod", group, Some(9000))],
                );
                let r = c.post(&url).bearer_auth(TOKEN).body(body).send().await;
                match r {
                    Ok(r) if r.status() == 200 => answered.lock().unwrap().push(fp),
                    Ok(r) => panic!("unexpected status {}", r.status()),
                    Err(_) => break, // the process is gone
                }
            }
        }));
    }
    // Let the burst run, then kill -9 in the middle of it.
    while answered.lock().unwrap().len() < 1000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dump = run.dump();
    run.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(
        answered.len() >= 1000,
        "burst too small: {}\n{dump}",
        answered.len()
    );

    // Simulate the worst case too: a torn half line at the end of the current file.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(files.audit_path())
        .unwrap();
    std::io::Write::write_all(
        &mut f,
        br#"{"seq":999999,"ts":"2026-11-22T04:00:00Z","instance":"bin-t"#,
    )
    .unwrap();
    drop(f);

    let run = Running::start(&cfg);
    let r = c
        .get(run.url("/api/v1/audit?limit=1000"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", run.dump());
    let page: Value = r.json().await.unwrap();
    assert_eq!(
        page["invalid_lines"], 0,
        "the torn line was cut at start-up"
    );
    // The API answers at most 1000 records: check the whole log on disk, every file, oldest
    // first, and that the API's page is its newest 1000.
    let mut files_in_order: Vec<std::path::PathBuf> = (1..=100)
        .rev()
        .map(|i| support_rotated(&files, i))
        .filter(|p| p.exists())
        .collect();
    files_in_order.push(files.audit_path());
    let records: Vec<Value> = files_in_order.iter().flat_map(|p| audit_lines(p)).collect();
    let api_seqs: Vec<&Value> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["seq"])
        .collect();
    let newest: Vec<&Value> = records[records.len().saturating_sub(1000)..]
        .iter()
        .map(|r| &r["seq"])
        .collect();
    assert_eq!(api_seqs, newest, "the API returns the newest 1000 records");
    assert_eq!(page["truncated"], records.len() > 1000);
    let seen: std::collections::HashSet<&str> = records
        .iter()
        .filter_map(|r| r["fingerprint"].as_str())
        .collect();
    let missing: Vec<&String> = answered
        .iter()
        .filter(|fp| !seen.contains(fp.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} answered 200 but not in the audit log: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence has gaps or repeats"
    );
    assert!(!seqs.contains(&999_999));
    let rotated = (1..=100)
        .filter(|i| support_rotated(&files, *i).exists())
        .count();
    assert!(rotated >= 1, "the burst crossed at least one rotation");
    let metrics = c
        .get(run.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let torn = metrics
        .lines()
        .find(|l| l.starts_with("medic_actuator_audit_torn_bytes "))
        .unwrap();
    // At least our 59-byte fragment (more if the kill itself tore a line before it).
    let torn: f64 = torn.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(torn >= 59.0, "torn bytes {torn}\n{}", run.dump());
    // The next record continues the sequence.
    let (s, b) = post(
        &c,
        &run,
        payload(
            "firing",
            vec![lag_alert("firing", "after", "prod", "orders", Some(1))],
        ),
    )
    .await
    .unwrap();
    assert_eq!(s, 200);
    assert_eq!(
        b["results"][0]["seq"].as_u64().unwrap(),
        seqs.last().unwrap() + 1
    );
}

fn support_rotated(files: &Files, i: usize) -> std::path::PathBuf {
    let mut s = files.audit_path().into_os_string();
    s.push(format!(".{i}"));
    s.into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_serves_https_and_still_requires_auth() {
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let files = Files::new();
    let kube = FakeKube::default();
    let server = kube.start().await;
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(files.path("tls.crt"), ck.cert.pem()).unwrap();
    std::fs::write(files.path("tls.key"), ck.signing_key.serialize_pem()).unwrap();
    let extra = format!(
        "tls: {{cert_file: {}, key_file: {}}}\n",
        files.path("tls.crt").display(),
        files.path("tls.key").display()
    );
    let run = Running::start(&write_config(&files, &server.uri(), &extra));

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ck.cert.der().to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let get = |path: &'static str, auth: bool| {
        let connector = connector.clone();
        let addr = run.addr.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let mut tls = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            let auth = if auth {
                format!("authorization: Bearer {TOKEN}\r\n")
            } else {
                String::new()
            };
            tls.write_all(
                format!(
                    "GET {path} HTTP/1.1\r\nhost: localhost\r\n{auth}connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            tls.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let health = get("/healthz", false).await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "{health}\n{}",
        run.dump()
    );
    assert!(health.contains(r#""status":"ok""#), "{health}");
    let state = get("/api/v1/state", false).await;
    assert!(state.starts_with("HTTP/1.1 401"), "{state}");
    let state = get("/api/v1/state", true).await;
    assert!(state.starts_with("HTTP/1.1 200"), "{state}");
    assert!(state.contains(r#""instance":"bin-test""#), "{state}");
    // Plain HTTP to a TLS port gets no answer.
    let plain = client()
        .get(run.url("/healthz"))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP must not be served on the TLS listener"
    );
}
