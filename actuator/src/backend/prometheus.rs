//! Prometheus adapter: fresh group lag, partition count and active broker alerts.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use prometheus_http_query::Client;

use super::{FiringAlert, MetricsApi, PromError};
use crate::alert::{BROKER_HOLD_ALERTS, SERIES_ONLY_LABELS};

/// The recording rule holding each group's total lag.
pub const LAG_RULE: &str = "cluster_consumergroup:kafka_consumergroup_lag:sum";

/// Escape a label value for a PromQL string literal.
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// PromQL for a group's total lag.
pub fn lag_query(cluster: &str, group: &str) -> String {
    format!(
        "{LAG_RULE}{{cluster=\"{}\",consumergroup=\"{}\"}}",
        escape_label(cluster),
        escape_label(group)
    )
}

/// The recording rule holding the age of each group's oldest unconsumed message, in seconds.
pub const LAG_SECONDS_RULE: &str = "cluster_consumergroup:kafka_consumergroup_lag_seconds:max";

/// PromQL for a group's lag in seconds.
pub fn lag_seconds_query(cluster: &str, group: &str) -> String {
    format!(
        "{LAG_SECONDS_RULE}{{cluster=\"{}\",consumergroup=\"{}\"}}",
        escape_label(cluster),
        escape_label(group)
    )
}

/// PromQL for every firing persistent-lag alert (KEDA's level-triggered `IsActive`).
pub fn firing_lag_alerts_query() -> String {
    format!(
        "ALERTS{{alertstate=\"firing\",alertname=\"{}\"}}",
        crate::alert::LAG_ALERT
    )
}

/// PromQL for the number of partitions a group has offsets for.
pub fn partitions_query(cluster: &str, group: &str) -> String {
    format!(
        "count(kafka_consumergroup_lag{{cluster=\"{}\",consumergroup=\"{}\"}})",
        escape_label(cluster),
        escape_label(group)
    )
}

/// PromQL for firing broker alerts that hold scale-downs on a cluster.
pub fn broker_alerts_query(cluster: &str) -> String {
    format!(
        "ALERTS{{alertstate=\"firing\",alertname=~\"{}\",cluster=\"{}\"}}",
        BROKER_HOLD_ALERTS.join("|"),
        escape_label(cluster)
    )
}

/// The alert names of the broker alerts (rules/kafka-medic.rules.yml), as a PromQL regex.
pub const BROKER_ALERTS_REGEX: &str = "KafkaBroker.*";

/// PromQL for every firing broker alert.
pub fn firing_broker_alerts_query() -> String {
    format!("ALERTS{{alertstate=\"firing\",alertname=~\"{BROKER_ALERTS_REGEX}\"}}")
}

/// PromQL for the time each broker alert became active (its value, in Unix seconds).
pub fn broker_alerts_for_state_query() -> String {
    format!("ALERTS_FOR_STATE{{alertname=~\"{BROKER_ALERTS_REGEX}\"}}")
}

/// A series' labels without those `ALERTS` and `ALERTS_FOR_STATE` differ in.
fn alert_key(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(k, _)| !SERIES_ONLY_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The real adapter, over prometheus-http-query.
#[derive(Clone)]
pub struct PromClient {
    client: Client,
}

impl PromClient {
    /// A client for `url` with a per-request timeout.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        // reqwest is built without a TLS provider of its own (no aws-lc); use ring, process-wide,
        // unless the binary already chose one.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| format!("prometheus.url {url:?}: {e}"))?;
        let client = Client::from(http, url).map_err(|e| format!("prometheus.url {url:?}: {e}"))?;
        Ok(Self { client })
    }

    /// Every series of an instant query: its labels and value.
    async fn series(
        &self,
        query: String,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, PromError> {
        let fail = |message: String| PromError::Query {
            query: query.clone(),
            message,
        };
        let result = self
            .client
            .query(&query)
            .get()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let vector = result
            .data()
            .as_vector()
            .ok_or_else(|| fail("expected an instant vector".into()))?;
        Ok(vector
            .iter()
            .map(|s| {
                let labels = s
                    .metric()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                (labels, s.sample().value())
            })
            .collect())
    }

    async fn instant(&self, query: String) -> Result<Vec<(Option<String>, f64)>, PromError> {
        let fail = |message: String| PromError::Query {
            query: query.clone(),
            message,
        };
        let result = self
            .client
            .query(&query)
            .get()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let vector = result
            .data()
            .as_vector()
            .ok_or_else(|| fail("expected an instant vector".into()))?;
        Ok(vector
            .iter()
            .map(|s| (s.metric().get("alertname").cloned(), s.sample().value()))
            .collect())
    }
}

fn to_u64(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then(|| v.ceil().min(u64::MAX as f64) as u64)
}

impl MetricsApi for PromClient {
    fn group_lag<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u64>, PromError>> {
        Box::pin(async move {
            let samples = self.instant(lag_query(cluster, group)).await?;
            // Several series (e.g. two agent replicas before the rule dedupes) -> take the largest.
            Ok(samples.iter().filter_map(|(_, v)| to_u64(*v)).max())
        })
    }

    fn group_partitions<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<u32>, PromError>> {
        Box::pin(async move {
            let samples = self.instant(partitions_query(cluster, group)).await?;
            Ok(samples
                .first()
                .and_then(|(_, v)| to_u64(*v))
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)))
        })
    }

    fn broker_trouble<'a>(
        &'a self,
        cluster: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, PromError>> {
        Box::pin(async move {
            let samples = self.instant(broker_alerts_query(cluster)).await?;
            Ok(samples.into_iter().find_map(|(name, _)| name))
        })
    }

    fn group_lag_seconds<'a>(
        &'a self,
        cluster: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, Result<Option<f64>, PromError>> {
        Box::pin(async move {
            let samples = self.instant(lag_seconds_query(cluster, group)).await?;
            // Several series (two agent replicas before the rule dedupes): the largest.
            Ok(samples
                .iter()
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite() && *v >= 0.0)
                .reduce(f64::max))
        })
    }

    fn firing_lag_alerts(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, PromError>> {
        Box::pin(async move {
            let series = self.series(firing_lag_alerts_query()).await?;
            let mut groups: Vec<(String, String)> = series
                .into_iter()
                .filter(|(labels, _)| {
                    labels
                        .get("alertname")
                        .is_none_or(|n| n == crate::alert::LAG_ALERT)
                })
                .filter_map(|(mut labels, _)| {
                    Some((labels.remove("cluster")?, labels.remove("consumergroup")?))
                })
                .collect();
            groups.sort();
            groups.dedup();
            Ok(groups)
        })
    }

    fn firing_broker_alerts(&self) -> BoxFuture<'_, Result<Vec<FiringAlert>, PromError>> {
        Box::pin(async move {
            let (firing, since) = futures::future::join(
                self.series(firing_broker_alerts_query()),
                self.series(broker_alerts_for_state_query()),
            )
            .await;
            let since: BTreeMap<_, _> = since?
                .into_iter()
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .filter_map(|(labels, v)| {
                    let at = jiff::Timestamp::from_second(v as i64).ok()?;
                    Some((alert_key(&labels), at))
                })
                .collect();
            Ok(firing?
                .into_iter()
                .map(|(labels, _)| FiringAlert {
                    active_at: since.get(&alert_key(&labels)).copied(),
                    labels,
                })
                .collect())
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn vector(samples: &[(&str, &str)]) -> serde_json::Value {
        let result: Vec<_> = samples
            .iter()
            .map(|(name, v)| {
                serde_json::json!({"metric": {"alertname": name, "cluster": "prod"}, "value": [1800000000.0, v]})
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}})
    }

    #[test]
    fn queries_escape_labels() {
        assert_eq!(
            lag_query("prod", "a\"b\\c"),
            r#"cluster_consumergroup:kafka_consumergroup_lag:sum{cluster="prod",consumergroup="a\"b\\c"}"#
        );
        assert_eq!(
            broker_alerts_query("prod"),
            r#"ALERTS{alertstate="firing",alertname=~"KafkaBrokerDown|KafkaBrokerOverloaded",cluster="prod"}"#
        );
    }

    #[tokio::test]
    async fn lag_partitions_and_broker_alerts() {
        let server = MockServer::start().await;
        for (query, body) in [
            (lag_query("prod", "orders"), vector(&[("", "12345.2")])),
            (partitions_query("prod", "orders"), vector(&[("", "12")])),
            (
                broker_alerts_query("prod"),
                vector(&[("KafkaBrokerDown", "1")]),
            ),
        ] {
            Mock::given(method("GET"))
                .and(path("/api/v1/query"))
                .and(query_param("query", query))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .expect(1)
                .mount(&server)
                .await;
        }
        let p = PromClient::new(&server.uri(), Duration::from_secs(2)).unwrap();
        assert_eq!(p.group_lag("prod", "orders").await.unwrap(), Some(12346));
        assert_eq!(
            p.group_partitions("prod", "orders").await.unwrap(),
            Some(12)
        );
        assert_eq!(
            p.broker_trouble("prod").await.unwrap(),
            Some("KafkaBrokerDown".into())
        );
    }

    /// ALERTS and ALERTS_FOR_STATE are joined on the alert's labels; a firing alert without a
    /// for-state series has no start; a failing query fails the whole read.
    #[tokio::test]
    async fn firing_broker_alerts_join_their_active_time() {
        let series = |name: &str, broker: &str, state: bool, v: &str| {
            let mut m = serde_json::json!({"__name__": name, "alertname": "KafkaBrokerDown", "cluster": "prod", "broker": broker});
            if state {
                m["alertstate"] = "firing".into();
            }
            serde_json::json!({"metric": m, "value": [1800000000.0, v]})
        };
        let answer = |result: Vec<serde_json::Value>| serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": result}});
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param("query", firing_broker_alerts_query()))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(vec![
                series("ALERTS", "1", true, "1"),
                series("ALERTS", "2", true, "1"),
            ])))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param("query", broker_alerts_for_state_query()))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(vec![
                series("ALERTS_FOR_STATE", "1", false, "1799996400"),
                series("ALERTS_FOR_STATE", "9", false, "1799990000"),
            ])))
            .expect(1)
            .mount(&server)
            .await;
        let p = PromClient::new(&server.uri(), Duration::from_secs(2)).unwrap();
        let got = p.firing_broker_alerts().await.unwrap();
        let brokers: Vec<(String, Option<String>)> = got
            .iter()
            .map(|f| {
                (
                    f.labels["broker"].clone(),
                    f.active_at.map(|t| t.to_string()),
                )
            })
            .collect();
        assert_eq!(
            brokers,
            vec![
                ("1".to_string(), Some("2027-01-15T07:00:00Z".to_string())),
                ("2".to_string(), None),
            ]
        );
        assert_eq!(got[0].labels["alertstate"], "firing");

        let half = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .and(query_param("query", firing_broker_alerts_query()))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer(vec![])))
            .mount(&half)
            .await;
        let p = PromClient::new(&half.uri(), Duration::from_secs(2)).unwrap();
        let err = p.firing_broker_alerts().await.unwrap_err();
        let PromError::Query { query, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(query, &broker_alerts_for_state_query());
        assert_eq!(
            firing_broker_alerts_query(),
            r#"ALERTS{alertstate="firing",alertname=~"KafkaBroker.*"}"#
        );
    }

    #[tokio::test]
    async fn empty_result_is_none_and_errors_carry_the_query() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/api/v1/query"))
            .respond_with(ResponseTemplate::new(200).set_body_json(vector(&[])))
            .mount(&server)
            .await;
        let p = PromClient::new(&server.uri(), Duration::from_secs(2)).unwrap();
        assert_eq!(p.group_lag("prod", "orders").await.unwrap(), None);
        assert_eq!(p.broker_trouble("prod").await.unwrap(), None);

        let dead = PromClient::new("http://127.0.0.1:1", Duration::from_millis(500)).unwrap();
        let err = dead.group_lag("prod", "orders").await.unwrap_err();
        let PromError::Query { query, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(query, &lag_query("prod", "orders"));
    }
}
