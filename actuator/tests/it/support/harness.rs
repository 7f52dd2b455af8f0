//! An in-process actuator with a movable clock, a fake kube API and a fake Prometheus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use jiff::Timestamp;
use medic_actuator::{http::routes, App, Config};
use serde_json::Value;
use wiremock::MockServer;

use super::*;

pub const T0: i64 = 1_800_000_000;

pub struct Harness {
    pub app: App,
    pub kube: FakeKube,
    pub _kube_server: MockServer,
    pub prom: FakeProm,
    pub _prom_server: MockServer,
    pub clock: Arc<AtomicI64>,
}

pub fn config(files: &Files, kube: &MockServer, prom: Option<&MockServer>) -> Config {
    let mut c = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        policies_file: Some(files.path("policies.yaml")),
        instance: Some("actuator-test".into()),
        ..Config::default()
    };
    c.auth.bearer_token_file = Some(files.path("token"));
    c.audit.path = files.audit_path();
    c.kubernetes.api_url = Some(kube.uri());
    c.kubernetes.retry_attempts = 2;
    c.kubernetes.retry_backoff = std::time::Duration::from_millis(5);
    c.prometheus.url = prom.map(|p| p.uri());
    c
}

pub async fn harness_with(
    files: &Files,
    kube: FakeKube,
    tweak: impl FnOnce(&mut Config),
) -> Harness {
    let kube_server = kube.start().await;
    let prom = FakeProm::default();
    let prom_server = prom.start().await;
    let mut c = config(files, &kube_server, Some(&prom_server));
    tweak(&mut c);
    let clock = Arc::new(AtomicI64::new(T0));
    let c2 = clock.clone();
    let app = App::build_with_clock(
        c,
        &BTreeMap::new(),
        Arc::new(move || Timestamp::from_second(c2.load(Ordering::SeqCst)).unwrap()),
    )
    .await
    .unwrap();
    Harness {
        app,
        kube,
        _kube_server: kube_server,
        prom,
        _prom_server: prom_server,
        clock,
    }
}

pub fn fake_kube() -> FakeKube {
    let k = FakeKube::default();
    k.add("shop", "orders-consumer", 2);
    k.add("billing", "billing-consumer", 1);
    k.add("kube-system", "coredns", 2);
    k
}

impl Harness {
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let mut r = warp::test::request().method(method).path(path);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        let resp = r.body(body).reply(&routes(self.app.api.clone())).await;
        let status = resp.status().as_u16();
        let body = serde_json::from_slice(resp.body())
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(resp.body()).into()));
        (status, body)
    }

    pub async fn alerts(&self, body: &[u8]) -> (u16, Value) {
        self.request(
            "POST",
            "/api/v1/alerts",
            Some(&format!("Bearer {TOKEN}")),
            body,
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        let resp = warp::test::request()
            .path("/metrics")
            .reply(&routes(self.app.api.clone()))
            .await;
        String::from_utf8(resp.body().to_vec()).unwrap()
    }

    pub fn advance(&self, secs: i64) {
        self.clock.fetch_add(secs, Ordering::SeqCst);
    }
}

/// The value of a series in a Prometheus text exposition (0 if absent).
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}
