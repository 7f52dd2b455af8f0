//! Alertmanager webhook payloads (version 4) and the alerts the actuator understands.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The alert that scales consumers.
pub const LAG_ALERT: &str = "KafkaConsumerLagPersistent";
/// Broker alerts that hold scale-downs on their cluster.
pub const BROKER_HOLD_ALERTS: [&str; 2] = ["KafkaBrokerDown", "KafkaBrokerOverloaded"];
/// Why a payload was refused (a 400; nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, or fields missing or of the wrong type.
    #[error("malformed webhook payload: {0}")]
    Malformed(String),
    /// A version other than "4".
    #[error("unsupported webhook payload version {0:?}, expected \"4\"")]
    Version(String),
    /// `version` is not a string (e.g. the number 4).
    #[error("webhook payload `version` must be the string \"4\", got {0}")]
    VersionType(String),
    /// An alert lacks what the actuator needs.
    #[error("alerts[{index}] ({alertname}): {problem}")]
    Alert {
        /// Position in `alerts`.
        index: usize,
        /// Its alertname label.
        alertname: String,
        /// What is wrong.
        problem: String,
    },
}

/// Firing or resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// The alert is active.
    Firing,
    /// The alert stopped.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert in the webhook payload, as Alertmanager sends it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAlert {
    /// firing or resolved.
    pub status: AlertStatus,
    /// Alert labels.
    pub labels: BTreeMap<String, String>,
    /// Alert annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339 start time.
    pub starts_at: String,
    /// RFC 3339 end time (`0001-01-01T00:00:00Z` while firing).
    #[serde(default)]
    pub ends_at: String,
    /// Link to the rule's expression.
    #[serde(rename = "generatorURL", default)]
    pub generator_url: String,
    /// Alertmanager's fingerprint of the label set.
    pub fingerprint: String,
}

/// The webhook body, version 4.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    /// Must be "4".
    pub version: String,
    /// The group's status.
    pub status: AlertStatus,
    /// The receiver name.
    #[serde(default)]
    pub receiver: String,
    /// The alerts.
    pub alerts: Vec<WireAlert>,
    /// Labels the group was formed by.
    #[serde(default)]
    pub group_labels: BTreeMap<String, String>,
    /// Labels common to all alerts.
    #[serde(default)]
    pub common_labels: BTreeMap<String, String>,
    /// Annotations common to all alerts.
    #[serde(default)]
    pub common_annotations: BTreeMap<String, String>,
    /// Alertmanager's URL.
    #[serde(rename = "externalURL", default)]
    pub external_url: String,
    /// The group key.
    #[serde(default)]
    pub group_key: String,
    /// Alerts left out because of max_alerts.
    #[serde(default)]
    pub truncated_alerts: u64,
}

/// A consumer-lag alert, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagAlert {
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// firing or resolved.
    pub status: AlertStatus,
    /// Start time as sent (part of the dedupe key).
    pub starts_at: String,
    /// `cluster` label.
    pub cluster: String,
    /// `consumergroup` label.
    pub consumergroup: String,
    /// `lag_offsets` annotation, if present.
    pub lag_annotation: Option<u64>,
}

impl LagAlert {
    /// The dedupe key of this delivery: the same alert in the same state from the same start.
    pub fn delivery_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.fingerprint,
            self.status.as_str(),
            self.starts_at
        )
    }
}

/// The broker alerts the actuator understands: all three are remediated on clusters with a
/// `brokers:` policy; down and overloaded also hold consumer scale-downs on their cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BrokerAlertKind {
    /// `KafkaBrokerOverloaded`.
    Overloaded,
    /// `KafkaBrokerDiskPressure`.
    DiskPressure,
    /// `KafkaBrokerDown`.
    Down,
}

impl BrokerAlertKind {
    /// The kind of an alert name (None: not a broker alert).
    pub fn from_alertname(name: &str) -> Option<Self> {
        match name {
            "KafkaBrokerOverloaded" => Some(BrokerAlertKind::Overloaded),
            "KafkaBrokerDiskPressure" => Some(BrokerAlertKind::DiskPressure),
            "KafkaBrokerDown" => Some(BrokerAlertKind::Down),
            _ => None,
        }
    }

    /// The alert name, as the rules define it.
    pub fn alertname(self) -> &'static str {
        match self {
            BrokerAlertKind::Overloaded => "KafkaBrokerOverloaded",
            BrokerAlertKind::DiskPressure => "KafkaBrokerDiskPressure",
            BrokerAlertKind::Down => "KafkaBrokerDown",
        }
    }

    /// Whether it holds scale-downs on its cluster.
    pub fn holds_scale_down(self) -> bool {
        BROKER_HOLD_ALERTS.contains(&self.alertname())
    }
}

/// A broker alert, fully parsed: holds scale-downs (down, overloaded) and is remediated where a
/// broker policy exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAlert {
    /// Which alert.
    pub kind: BrokerAlertKind,
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// firing or resolved.
    pub status: AlertStatus,
    /// `cluster` label.
    pub cluster: String,
    /// `broker` label: the Kafka broker id.
    pub broker: i32,
    /// `path` label (disk pressure), if any.
    pub path: Option<String>,
    /// startsAt: the grace period counts from it, it names the episode, and it is part of the
    /// dedupe key.
    pub starts_at: Timestamp,
}

impl BrokerAlert {
    /// The dedupe key of this delivery.
    pub fn delivery_key(&self) -> String {
        format!(
            "{}:{}:{}",
            self.fingerprint,
            self.status.as_str(),
            self.starts_at
        )
    }
}

/// Alertmanager's fingerprint of an alert's label set (prometheus/common `LabelSet.Fingerprint`):
/// 64-bit FNV-1a over the labels sorted by name, each name and each value followed by the byte
/// 0xff, written as 16 hex digits. Equal to the webhook's `fingerprint` when Prometheus adds no
/// external labels to the alerts it sends.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[0xff]);
        add(value.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

/// Labels of a Prometheus `ALERTS`/`ALERTS_FOR_STATE` series that are not the alert's own.
pub const SERIES_ONLY_LABELS: [&str; 2] = ["__name__", "alertstate"];

/// The firing broker alert a Prometheus `ALERTS` series stands for, as the webhook path would
/// build it from Alertmanager's notification: the same kind, cluster, broker and path, the
/// fingerprint of the alert's labels (the series' without `__name__` and `alertstate`), status
/// firing, and `starts_at` as given (`ALERTS_FOR_STATE`, or when first seen). `Err` says why a
/// series cannot be one: not a broker alert, no `cluster`, or a `broker` label that is not a
/// Kafka broker id.
pub fn broker_alert_from_series(
    series: &BTreeMap<String, String>,
    starts_at: Timestamp,
) -> Result<BrokerAlert, String> {
    let labels: BTreeMap<String, String> = series
        .iter()
        .filter(|(k, _)| !SERIES_ONLY_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let alertname = labels.get("alertname").map(String::as_str).unwrap_or("");
    let kind = BrokerAlertKind::from_alertname(alertname)
        .ok_or_else(|| format!("{alertname:?} is not a broker alert the actuator acts on"))?;
    let cluster = labels
        .get("cluster")
        .filter(|c| !c.is_empty())
        .cloned()
        .ok_or_else(|| format!("{alertname} has no `cluster` label"))?;
    let broker = labels
        .get("broker")
        .and_then(|b| b.parse::<i32>().ok())
        .ok_or_else(|| {
            format!(
                "{alertname} on cluster {cluster}: the broker label {:?} is not a Kafka broker id",
                labels.get("broker")
            )
        })?;
    Ok(BrokerAlert {
        kind,
        fingerprint: fingerprint(&labels),
        status: AlertStatus::Firing,
        path: labels.get("path").cloned(),
        cluster,
        broker,
        starts_at,
    })
}

/// A broker alert whose `broker` label is missing or not a Kafka broker id: it still holds
/// scale-downs, and on a cluster with a broker policy it is audited as `bad_broker_label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnlabelledBrokerAlert {
    /// Which alert.
    pub kind: BrokerAlertKind,
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
    /// firing or resolved.
    pub status: AlertStatus,
    /// `cluster` label.
    pub cluster: String,
    /// The `broker` label as sent (None: missing).
    pub label: Option<String>,
    /// `path` label, if any.
    pub path: Option<String>,
    /// startsAt.
    pub starts_at: Timestamp,
}

/// An alert sorted by what the actuator does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Alert {
    /// Consumer lag: may scale.
    Lag(LagAlert),
    /// Broker trouble: holds scale-downs, remediated where a broker policy exists.
    Broker(BrokerAlert),
    /// A broker alert without a usable `broker` label: holds scale-downs, never remediated.
    UnlabelledBroker(UnlabelledBrokerAlert),
    /// Anything else: ignored (counted).
    Other {
        /// Its alertname label.
        alertname: String,
    },
}

/// Parse a lag figure: a non-negative integer, or a float Prometheus printed (rounded up).
fn parse_lag(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    let f: f64 = s.parse().ok()?;
    if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 {
        Some(f.ceil() as u64)
    } else {
        None
    }
}

/// A JSON value's type and value, for messages: `the number 4`, `null`.
fn json_kind(v: &serde_json::Value) -> String {
    let kind = match v {
        serde_json::Value::Null => return "null".into(),
        serde_json::Value::Bool(_) => "the boolean",
        serde_json::Value::Number(_) => "the number",
        serde_json::Value::String(_) => "the string",
        serde_json::Value::Array(_) => return "an array".into(),
        serde_json::Value::Object(_) => return "an object".into(),
    };
    format!("{kind} {v}")
}

/// Parse and validate a webhook body. Every alert is checked before anything is acted on.
pub fn parse_payload(body: &[u8]) -> Result<(WebhookPayload, Vec<Alert>), PayloadError> {
    // Check the version first, so a v3 payload gets the version message rather than a field error.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    match value.get("version") {
        Some(serde_json::Value::String(v)) if v == "4" => {}
        Some(serde_json::Value::String(v)) => return Err(PayloadError::Version(v.clone())),
        Some(other) => return Err(PayloadError::VersionType(json_kind(other))),
        None => return Err(PayloadError::Malformed("missing field `version`".into())),
    }
    let payload: WebhookPayload =
        serde_json::from_value(value).map_err(|e| PayloadError::Malformed(e.to_string()))?;
    let mut alerts = Vec::with_capacity(payload.alerts.len());
    for (index, a) in payload.alerts.iter().enumerate() {
        let alertname = a.labels.get("alertname").cloned().unwrap_or_default();
        let problem = |problem: String| PayloadError::Alert {
            index,
            alertname: alertname.clone(),
            problem,
        };
        if alertname.is_empty() {
            return Err(problem("missing label `alertname`".into()));
        }
        if a.fingerprint.is_empty() {
            return Err(problem("empty `fingerprint`".into()));
        }
        let Ok(starts_at) = a.starts_at.parse::<Timestamp>() else {
            return Err(problem(format!(
                "`startsAt` {:?} is not an RFC 3339 time",
                a.starts_at
            )));
        };
        let label = |name: &str| -> Result<String, PayloadError> {
            match a.labels.get(name) {
                Some(v) if !v.is_empty() => Ok(v.clone()),
                _ => Err(problem(format!("missing label `{name}`"))),
            }
        };
        let alert = if alertname == LAG_ALERT {
            let lag_annotation = match a.annotations.get("lag_offsets") {
                None => None,
                Some(s) => Some(parse_lag(s).ok_or_else(|| {
                    problem(format!(
                        "annotation `lag_offsets` {s:?} is not a non-negative number"
                    ))
                })?),
            };
            Alert::Lag(LagAlert {
                fingerprint: a.fingerprint.clone(),
                status: a.status,
                starts_at: a.starts_at.clone(),
                cluster: label("cluster")?,
                consumergroup: label("consumergroup")?,
                lag_annotation,
            })
        } else if let Some(kind) = BrokerAlertKind::from_alertname(&alertname) {
            let cluster = label("cluster")?;
            let path = a.labels.get("path").cloned();
            let broker_label = a.labels.get("broker");
            match broker_label.and_then(|b| b.parse::<i32>().ok()) {
                Some(broker) => Alert::Broker(BrokerAlert {
                    kind,
                    fingerprint: a.fingerprint.clone(),
                    status: a.status,
                    cluster,
                    broker,
                    path,
                    starts_at,
                }),
                None => Alert::UnlabelledBroker(UnlabelledBrokerAlert {
                    kind,
                    fingerprint: a.fingerprint.clone(),
                    status: a.status,
                    cluster,
                    label: broker_label.cloned(),
                    path,
                    starts_at,
                }),
            }
        } else {
            Alert::Other { alertname }
        };
        alerts.push(alert);
    }
    Ok((payload, alerts))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A payload the real Alertmanager sent, recorded by `tests/it/alertmanager.rs`
    /// (`recorded_payloads_are_what_alertmanager_sends`; `RECORD=1` records them again).
    fn recorded(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/alertmanager")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn real_alertmanager_lag_payloads_parse() {
        let (p, alerts) = parse_payload(&recorded("lag-firing.json")).unwrap();
        assert_eq!(p.version, "4");
        assert_eq!(p.status, AlertStatus::Firing);
        assert_eq!(p.receiver, "medic");
        assert_eq!(
            p.group_key,
            "{}:{alertname=\"KafkaConsumerLagPersistent\", cluster=\"prod\", consumergroup=\"orders\"}"
        );
        assert_eq!(p.alerts[0].ends_at, "0001-01-01T00:00:00Z");
        assert_eq!(p.truncated_alerts, 0);
        let firing = LagAlert {
            fingerprint: "5cb8e61bfa6cc05f".into(),
            status: AlertStatus::Firing,
            starts_at: "2026-11-22T03:32:35.536Z".into(),
            cluster: "prod".into(),
            consumergroup: "orders".into(),
            lag_annotation: Some(9000),
        };
        assert_eq!(alerts, vec![Alert::Lag(firing.clone())]);
        let (p, alerts) = parse_payload(&recorded("lag-resolved.json")).unwrap();
        assert_eq!(p.status, AlertStatus::Resolved);
        assert_eq!(p.alerts[0].ends_at, "2026-11-22T03:34:35.536Z");
        let Alert::Lag(resolved) = &alerts[0] else {
            panic!("{alerts:?}")
        };
        assert_eq!(resolved.status, AlertStatus::Resolved);
        assert_eq!(
            (&resolved.fingerprint, &resolved.starts_at),
            (&firing.fingerprint, &firing.starts_at),
            "the same alert"
        );
        assert_ne!(resolved.delivery_key(), firing.delivery_key());
    }

    #[test]
    fn real_alertmanager_grouped_broker_payloads_parse() {
        let broker = |kind, broker, path: Option<&str>, status, fp: &str| {
            Alert::Broker(BrokerAlert {
                kind,
                fingerprint: fp.into(),
                status,
                cluster: "east".into(),
                broker,
                path: path.map(Into::into),
                starts_at: "2026-11-22T03:32:35.536Z".parse().unwrap(),
            })
        };
        let want = |down| {
            vec![
                Alert::Other {
                    alertname: "KafkaMedicMassFailure".into(),
                },
                broker(BrokerAlertKind::Down, 1, None, down, "13b47883c47f3984"),
                broker(
                    BrokerAlertKind::Overloaded,
                    2,
                    None,
                    AlertStatus::Firing,
                    "0452009549abf86f",
                ),
                broker(
                    BrokerAlertKind::DiskPressure,
                    3,
                    Some("/var/lib/kafka/data"),
                    AlertStatus::Firing,
                    "b63fd071eeb252e8",
                ),
            ]
        };
        let (p, alerts) = parse_payload(&recorded("brokers-grouped-firing.json")).unwrap();
        assert_eq!(p.status, AlertStatus::Firing);
        assert_eq!(
            p.group_labels.get("cluster").map(String::as_str),
            Some("east")
        );
        assert_eq!(alerts, want(AlertStatus::Firing));
        // One alert of the group resolved: the group is still firing, that alert is resolved.
        let (p, alerts) = parse_payload(&recorded("brokers-grouped-one-resolved.json")).unwrap();
        assert_eq!(p.status, AlertStatus::Firing);
        assert_eq!(alerts, want(AlertStatus::Resolved));
    }

    fn lag_payload(labels: &str, annotations: &str) -> Vec<u8> {
        format!(
            r#"{{"version":"4","status":"firing","receiver":"a","groupKey":"k","alerts":[{{"status":"firing","labels":{{"alertname":"KafkaConsumerLagPersistent",{labels}}},"annotations":{{{annotations}}},"startsAt":"2026-11-22T03:32:35.536Z","endsAt":"0001-01-01T00:00:00Z","fingerprint":"abc"}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn lag_alert_is_typed() {
        let (_, alerts) = parse_payload(&lag_payload(
            r#""cluster":"prod","consumergroup":"orders","severity":"warning""#,
            r#""lag_offsets":"12345""#,
        ))
        .unwrap();
        let Alert::Lag(l) = &alerts[0] else {
            panic!("{alerts:?}")
        };
        assert_eq!(l.cluster, "prod");
        assert_eq!(l.consumergroup, "orders");
        assert_eq!(l.lag_annotation, Some(12345));
        assert_eq!(l.delivery_key(), "abc:firing:2026-11-22T03:32:35.536Z");
        let (_, alerts) = parse_payload(&lag_payload(
            r#""cluster":"prod","consumergroup":"orders""#,
            r#""lag_offsets":"1.2e3""#,
        ))
        .unwrap();
        let Alert::Lag(l) = &alerts[0] else { panic!() };
        assert_eq!(l.lag_annotation, Some(1200));
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "malformed webhook payload: key must be a string at line 1 column 2"),
            (br#"{"version":"3","status":"firing","alerts":[]}"#.to_vec(), "unsupported webhook payload version \"3\", expected \"4\""),
            (br#"{"status":"firing","alerts":[]}"#.to_vec(), "malformed webhook payload: missing field `version`"),
            (br#"{"version":4,"status":"firing","alerts":[]}"#.to_vec(), "webhook payload `version` must be the string \"4\", got the number 4"),
            (br#"{"version":null,"status":"firing","alerts":[]}"#.to_vec(), "webhook payload `version` must be the string \"4\", got null"),
            (br#"{"version":["4"],"status":"firing","alerts":[]}"#.to_vec(), "webhook payload `version` must be the string \"4\", got an array"),
            (br#"{"version":"4","status":"firing"}"#.to_vec(), "malformed webhook payload: missing field `alerts`"),
            (br#"{"version":"4","status":"burning","alerts":[]}"#.to_vec(), "malformed webhook payload: unknown variant `burning`, expected `firing` or `resolved`"),
            (lag_payload(r#""cluster":"prod""#, ""), "alerts[0] (KafkaConsumerLagPersistent): missing label `consumergroup`"),
            (lag_payload(r#""cluster":"prod","consumergroup":"o""#, r#""lag_offsets":"-5""#),
                "alerts[0] (KafkaConsumerLagPersistent): annotation `lag_offsets` \"-5\" is not a non-negative number"),
        ];
        for (body, want) in cases {
            let err = parse_payload(&body).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn broker_alerts_are_typed() {
        let body = br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"KafkaBrokerDiskPressure","cluster":"prod","broker":"2","path":"/var/lib/kafka"},"startsAt":"2026-11-22T03:32:35Z","fingerprint":"f"}]}"#;
        let (_, alerts) = parse_payload(body).unwrap();
        let Alert::Broker(b) = &alerts[0] else {
            panic!("{alerts:?}")
        };
        assert_eq!(b.kind, BrokerAlertKind::DiskPressure);
        assert_eq!(b.broker, 2);
        assert_eq!(b.path.as_deref(), Some("/var/lib/kafka"));
        assert_eq!(
            b.starts_at,
            Timestamp::from_second(1_795_318_355).unwrap(),
            "startsAt is parsed once, at the edge"
        );
        assert_eq!(b.delivery_key(), "f:firing:2026-11-22T03:32:35Z");
        assert!(
            !b.kind.holds_scale_down(),
            "disk pressure does not hold scale-downs"
        );
        assert!(BrokerAlertKind::Down.holds_scale_down());
        assert!(BrokerAlertKind::Overloaded.holds_scale_down());
        for kind in [
            BrokerAlertKind::Down,
            BrokerAlertKind::Overloaded,
            BrokerAlertKind::DiskPressure,
        ] {
            assert_eq!(
                BrokerAlertKind::from_alertname(kind.alertname()),
                Some(kind)
            );
        }
        assert_eq!(
            BrokerAlertKind::from_alertname("KafkaMedicMassFailure"),
            None
        );
    }

    #[test]
    fn broker_alert_with_a_bad_broker_label_is_kept_apart() {
        let body = |broker: &str| {
            format!(
                r#"{{"version":"4","status":"firing","alerts":[{{"status":"resolved","labels":{{"alertname":"KafkaBrokerDown","cluster":"prod"{broker}}},"startsAt":"2026-11-22T03:32:35Z","fingerprint":"f"}}]}}"#
            )
        };
        let want = |label: Option<&str>| {
            vec![Alert::UnlabelledBroker(UnlabelledBrokerAlert {
                kind: BrokerAlertKind::Down,
                fingerprint: "f".into(),
                status: AlertStatus::Resolved,
                cluster: "prod".into(),
                label: label.map(Into::into),
                path: None,
                starts_at: "2026-11-22T03:32:35Z".parse().unwrap(),
            })]
        };
        let (_, alerts) = parse_payload(body(r#","broker":"kafka-1""#).as_bytes()).unwrap();
        assert_eq!(alerts, want(Some("kafka-1")));
        let (_, alerts) = parse_payload(body("").as_bytes()).unwrap();
        assert_eq!(alerts, want(None));
    }

    #[test]
    fn broker_alert_needs_cluster() {
        let body = br#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"KafkaBrokerDown","broker":"1"},"startsAt":"2026-11-22T03:32:35Z","fingerprint":"f"}]}"#;
        assert_eq!(
            parse_payload(body).unwrap_err().to_string(),
            "alerts[0] (KafkaBrokerDown): missing label `cluster`"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod series_tests {
    use super::*;

    fn recorded(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/alertmanager")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The fingerprints the real Alertmanager computed for the recorded notifications.
    #[test]
    fn fingerprints_are_alertmanagers() {
        let mut checked = 0;
        for file in ["brokers-grouped-firing.json", "lag-firing.json"] {
            let (payload, _) = parse_payload(&recorded(file)).unwrap();
            for a in &payload.alerts {
                assert_eq!(fingerprint(&a.labels), a.fingerprint, "{:?}", a.labels);
                checked += 1;
            }
        }
        assert!(checked >= 5, "{checked}");
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
    }

    fn series(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// An `ALERTS` series becomes the BrokerAlert the webhook path builds from Alertmanager's
    /// notification of the same alert (the recorded one: same fingerprint).
    #[test]
    fn an_alerts_series_is_the_webhooks_broker_alert() {
        let (_, alerts) = parse_payload(&recorded("brokers-grouped-firing.json")).unwrap();
        let from_webhook = alerts
            .iter()
            .find_map(|a| match a {
                Alert::Broker(b) if b.kind == BrokerAlertKind::DiskPressure => Some(b.clone()),
                _ => None,
            })
            .unwrap();
        let s = series(&[
            ("__name__", "ALERTS"),
            ("alertstate", "firing"),
            ("alertname", "KafkaBrokerDiskPressure"),
            ("broker", "3"),
            ("cluster", "east"),
            ("path", "/var/lib/kafka/data"),
            ("severity", "warning"),
        ]);
        let got = broker_alert_from_series(&s, from_webhook.starts_at).unwrap();
        assert_eq!(got, from_webhook);
    }

    #[test]
    fn series_that_are_not_broker_alerts_are_refused_with_the_reason() {
        let at = Timestamp::from_second(1_800_000_000).unwrap();
        let cases = [
            (
                series(&[("alertname", "KafkaMedicMassFailure"), ("cluster", "east")]),
                "\"KafkaMedicMassFailure\" is not a broker alert the actuator acts on",
            ),
            (
                series(&[("alertname", "KafkaBrokerDown"), ("broker", "1")]),
                "KafkaBrokerDown has no `cluster` label",
            ),
            (
                series(&[
                    ("alertname", "KafkaBrokerDown"),
                    ("cluster", "east"),
                    ("broker", "kafka-0"),
                ]),
                "KafkaBrokerDown on cluster east: the broker label Some(\"kafka-0\") is not a Kafka broker id",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(broker_alert_from_series(&s, at).unwrap_err(), want);
        }
    }
}
