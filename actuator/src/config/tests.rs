#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policies.yaml"),
            "policies:\n  - {cluster: prod, consumergroup: orders, deployment: {namespace: shop, name: orders}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), "s3cret-token-value\n").unwrap();
        Self { dir }
    }
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// An argument list from string slices and owned strings.
macro_rules! argv {
    ($($a:expr),* $(,)?) => { vec![$(String::from($a)),*] };
}

fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn precedence_flag_env_file_default() {
    let f = Fixture::new();
    let file = f.write(
        "c.yaml",
        &format!(
            "policies_file: {}\nauth: {{bearer_token_file: {}}}\nlisten: 127.0.0.1:1000\nreevaluate_interval: 45s\ndedupe_window: 2m\naudit: {{max_files: 2}}\n",
            f.path("policies.yaml"),
            f.path("token")
        ),
    );
    let args = argv![
        "--config",
        file.display().to_string(),
        "--listen",
        "127.0.0.1:3000"
    ];
    let e = env(&[
        ("MEDIC_ACTUATOR_LISTEN", "127.0.0.1:2000"),
        ("MEDIC_ACTUATOR_REEVALUATE_INTERVAL", "15s"),
        ("MEDIC_ACTUATOR_DRY_RUN", "true"),
        ("PATH", "/usr/bin"),
    ]);
    let c = Config::load(&args, &e).unwrap();
    assert_eq!(c.listen, "127.0.0.1:3000".parse().unwrap(), "flag wins");
    assert_eq!(
        c.reevaluate_interval,
        Duration::from_secs(15),
        "env beats file"
    );
    assert_eq!(
        c.dedupe_window,
        Duration::from_secs(120),
        "file beats default"
    );
    assert_eq!(c.audit.max_files, 2);
    assert_eq!(c.audit.max_bytes, 16 * 1024 * 1024, "default");
    assert!(c.dry_run);
    assert_eq!(c.body_limit_bytes, 1 << 20);
}

#[test]
fn refuses_to_start_without_credentials() {
    let f = Fixture::new();
    let args = argv!["--policies-file", f.path("policies.yaml")];
    let err = Config::load(&args, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("auth: no credentials configured"), "{err}");
    assert!(err.contains("--insecure-no-auth"), "{err}");
    let args = [args, argv!["--insecure-no-auth"]].concat();
    let c = Config::load(&args, &BTreeMap::new()).unwrap();
    assert!(c.insecure_no_auth);
}

#[test]
fn reports_all_errors_naming_key_and_value() {
    let f = Fixture::new();
    let bad_policies = f.write("bad.yaml", "policies:\n  - {cluster: prod, consumergroup: g, deployment: {namespace: n, name: d}, min_replicas: 4, max_replicas: 2}\n");
    let args = argv![
        "--policies-file",
        bad_policies.display().to_string(),
        "--audit-max-files",
        "many",
        "--auth-basic-username",
        "am",
        "--tls-cert-file",
        f.path("cert.pem"),
    ];
    let e = env(&[
        ("MEDIC_ACTUATOR_PROMETHEUS_TIMEOUT", "soon"),
        ("MEDIC_ACTUATOR_LISTN", "x"),
        ("MEDIC_ACTUATOR_BODY_LIMIT_BYTES", "10"),
    ]);
    let err = Config::load(&args, &e).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let want = [
        "MEDIC_ACTUATOR_LISTN: unknown environment variable".to_string(),
        "MEDIC_ACTUATOR_PROMETHEUS_TIMEOUT=\"soon\": expected number at 0".into(),
        "--audit-max-files=\"many\": invalid digit found in string".into(),
        format!(
            "policies_file {}: policies[0].min_replicas: 4 is greater than max_replicas 2",
            bad_policies.display()
        ),
        "body_limit_bytes: 10 is below 1024".into(),
        "auth.basic_password_file: required with auth.basic_username".into(),
        "tls.key_file: required with tls.cert_file".into(),
    ];
    for w in &want {
        assert!(problems.contains(w), "missing {w:?} in {problems:#?}");
    }
    assert_eq!(problems.len(), want.len(), "{problems:#?}");
}

#[test]
fn audit_settings_that_would_drop_records_are_refused() {
    let f = Fixture::new();
    let args = |files: &str, bytes: &str| {
        argv![
            "--policies-file",
            f.path("policies.yaml"),
            "--auth-bearer-token-file",
            f.path("token"),
            "--audit-max-files",
            files,
            "--audit-max-bytes",
            bytes,
        ]
    };
    let err = Config::load(args("0", "4096"), &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec![
            "audit.max_bytes: 4096 is below 65536; a smaller file would rotate every few records and answered records would soon be dropped".to_string(),
            "audit.max_files: 0 must be at least 1; with no rotated file kept, each rotation would delete the records just answered and restart seq at 1".to_string(),
        ]
    );
    // The smallest accepted values are exactly the documented minimums.
    let c = Config::load(args("1", "65536"), &BTreeMap::new()).unwrap();
    assert_eq!(
        (c.audit.max_files, c.audit.max_bytes),
        (AUDIT_MIN_MAX_FILES, AUDIT_MIN_MAX_BYTES)
    );
    let err = Config::load(args("1", "65535"), &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("audit.max_bytes: 65535 is below 65536"),
        "{err}"
    );
}

#[test]
fn basic_username_with_a_colon_is_refused() {
    let f = Fixture::new();
    let args = argv![
        "--policies-file",
        f.path("policies.yaml"),
        "--auth-basic-username",
        "alert:manager",
        "--auth-basic-password-file",
        f.path("token"),
    ];
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec!["auth.basic_username: \"alert:manager\" must not contain ':' (HTTP basic auth splits user and password at the first colon, RFC 7617)".to_string()]
    );
}

#[test]
fn http_limits_have_defaults_keys_and_checks() {
    let f = Fixture::new();
    let file = f.write(
        "c.yaml",
        &format!(
            "policies_file: {}\ninsecure_no_auth: true\nhttp: {{header_read_timeout: 3s, max_connections: 64}}\n",
            f.path("policies.yaml")
        ),
    );
    let args = argv![
        "--config",
        file.display().to_string(),
        "--http-max-connections",
        "32"
    ];
    let e = env(&[("MEDIC_ACTUATOR_HTTP_IDLE_TIMEOUT", "90s")]);
    let c = Config::load(&args, &e).unwrap();
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(3), "file");
    assert_eq!(c.http.idle_timeout, Duration::from_secs(90), "env");
    assert_eq!(c.http.max_connections, 32, "flag");
    let d = HttpConfig::default();
    assert_eq!(
        (d.header_read_timeout, d.idle_timeout, d.max_connections),
        (Duration::from_secs(10), Duration::from_secs(60), 1024)
    );

    let args = argv![
        "--policies-file",
        f.path("policies.yaml"),
        "--insecure-no-auth",
        "--http-max-connections",
        "0",
        "--http-header-read-timeout",
        "10ms",
    ];
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec![
            "http.header_read_timeout: 10ms is below 100ms".to_string(),
            "http.max_connections: 0 must be at least 1".into(),
        ]
    );
}

#[test]
fn unknown_file_keys_are_rejected_with_location() {
    let err = Config::parse(
        "listen: 127.0.0.1:1\naudit:\n  max_byte: 5\n",
        Path::new("c.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("config file c.yaml: audit: unknown field `max_byte`"),
        "{err}"
    );
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn every_key_has_env_flag_and_a_file_key() {
    let cmd = command();
    let help = cmd.clone().render_long_help().to_string();
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let keys = keys();
    // 31, + 12 audit.topic.*, + 1 config_watch_interval, + 7 leader_election.*, + 3 keda.tls.*
    // and keda.alerts_poll_interval
    assert_eq!(keys.len(), 31 + 12 + 1 + 7 + 4, "{keys:?}");
    // Every key of the file is a setting, and the reverse: Config and Layer agree.
    let config_keys: Vec<String> =
        sources::leaves(&serde_json::to_value(Config::default()).unwrap())
            .into_keys()
            .collect();
    for k in &config_keys {
        assert!(keys.contains(k), "Config key {k} has no flag");
    }
    for key in &keys {
        let flag = key.replace(['.', '_'], "-");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == key.as_str())
            .unwrap();
        assert_eq!(arg.get_long(), Some(flag.as_str()), "{key}");
        assert!(
            help.contains(&env_name(key)),
            "help does not name {}",
            env_name(key)
        );
        assert!(
            help.contains(&format!("[key: {key}]")),
            "help does not name key {key}"
        );
        // A bogus value names the variable and why, never "unknown".
        let e = env(&[(&env_name(key), "???")]);
        if let Err(ConfigError::Invalid { problems, .. }) = Config::load(Vec::<String>::new(), &e) {
            let own: Vec<_> = problems
                .iter()
                .filter(|p| p.starts_with(&env_name(key)))
                .collect();
            for p in own {
                assert!(!p.contains("unknown"), "{key}: {p}");
            }
        }
    }
    assert!(help.contains("[default: 0.0.0.0:9095]"), "{help}");
    assert!(help.contains("[default: 10m]"), "{help}");
}

#[test]
fn every_problem_of_every_source_in_one_run() {
    let f = Fixture::new();
    let file = f.write(
        "c.yaml",
        &format!(
            "policies_file: {}\ninsecure_no_auth: true\nkubernetes:\n  retry_attempts: many\n  api_url: http://k\nlistn: 1\n",
            f.path("policies.yaml")
        ),
    );
    let args = argv![
        "--config",
        file.display().to_string(),
        "--bogus-flag",
        "--alert-ttl=soon",
        "--dry-run=maybe",
    ];
    let e = env(&[("MEDIC_ACTUATOR_AUDIT_MAX_FILES", "-1")]);
    let err = Config::load(&args, &e).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let at = format!("config file {}: ", file.display());
    let want = [
        format!("{at}kubernetes.retry_attempts: invalid type: string \"many\", expected u32 at line 4 column 19"),
        format!("{at}listn: unknown field `listn`"),
        "MEDIC_ACTUATOR_AUDIT_MAX_FILES=\"-1\": invalid digit found in string".into(),
        "unexpected argument '--bogus-flag' found".into(),
        "--alert-ttl=\"soon\": expected number at 0".into(),
        "--dry-run=\"maybe\": \"maybe\" is not a boolean (true/false)".into(),
    ];
    for w in &want {
        assert!(
            problems.iter().any(|p| p.starts_with(w.as_str())),
            "missing {w:?} in {problems:#?}"
        );
    }
    assert_eq!(problems.len(), want.len(), "{problems:#?}");
}

#[test]
fn empty_values_unset_and_plain_is_text() {
    let f = Fixture::new();
    let file = f.write(
        "c.yaml",
        &format!(
            "policies_file: {}\ninsecure_no_auth: true\ninstance: from-file\nlog_format: plain\n",
            f.path("policies.yaml")
        ),
    );
    let e = env(&[("MEDIC_ACTUATOR_INSTANCE", "")]);
    let c = Config::load(argv!["--config", file.display().to_string()], &e).unwrap();
    assert_eq!(
        c.instance, None,
        "an empty variable unsets the file's value"
    );
    assert_eq!(c.log_format, LogFormat::Text);
    let c = Config::load(
        argv![
            "--config",
            file.display().to_string(),
            "--log-format",
            "text",
            "--dry-run",
            "--paused=false"
        ],
        &BTreeMap::new(),
    )
    .unwrap();
    assert_eq!(
        (c.log_format, c.dry_run, c.paused),
        (LogFormat::Text, true, false)
    );
    let err = Config::load(
        argv!["--config", file.display().to_string(), "--audit-path="],
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("flag --audit-path: invalid type: null"),
        "{err}"
    );
}

#[test]
fn unreadable_broker_secrets_are_config_problems_all_at_once() {
    let f = Fixture::new();
    let policies = f.write(
        "brokers.yaml",
        &format!(
            "brokers:\n  - {{cluster: a, backend: kafka, kafka: {{bootstrap_servers: ['k:9092'], security_protocol: sasl_plaintext, sasl_mechanism: PLAIN, sasl_username: u, sasl_password_file: {}}}}}\n  - {{cluster: b, backend: cruise-control, expected_brokers: 3, cruise_control: {{url: 'http://cc', bearer_token_file: {}}}}}\n",
            f.path("missing-password"),
            f.path("missing-token"),
        ),
    );
    let args = argv![
        "--policies-file",
        policies.display().to_string(),
        "--insecure-no-auth"
    ];
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let at = format!("policies_file {}: ", policies.display());
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{at}brokers[0].kafka.sasl_password_file: cannot read {}: ",
            f.path("missing-password")
        )),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with(&format!(
            "{at}brokers[1].cruise_control.bearer_token_file: cannot read {}: ",
            f.path("missing-token")
        )),
        "{problems:#?}"
    );
}

#[test]
fn kafka_backend_oauthbearer_and_msk_keys_are_checked_by_key() {
    let f = Fixture::new();
    let secret = f.write("client-secret", "s3cret\n");
    let policies = f.write(
        "brokers.yaml",
        &format!(
            "brokers:\n  - {{cluster: a, backend: kafka, kafka: {{bootstrap_servers: ['k:9093'], security_protocol: sasl_ssl, sasl_mechanism: OAUTHBEARER, sasl_oauthbearer_token_endpoint_url: 'https://keycloak/realms/kafka/protocol/openid-connect/token', sasl_oauthbearer_client_id: medic, sasl_oauthbearer_client_secret_file: {}, sasl_oauthbearer_scope: kafka}}}}\n",
            secret.display()
        ),
    );
    let args = argv![
        "--policies-file",
        policies.display().to_string(),
        "--insecure-no-auth"
    ];
    Config::load(&args, &BTreeMap::new()).unwrap();
    let policies = crate::policy::Policies::load(&policies).unwrap();
    let k = policies.brokers()[0].kafka.clone().unwrap();
    let security = crate::backend::kafka::security(&k).unwrap();
    assert_eq!(
        format!("{:?}", security.sasl),
        "Some(OAUTHBEARER from oidc https://keycloak/realms/kafka/protocol/openid-connect/token)"
    );

    let policies = f.write(
        "brokers.yaml",
        "brokers:\n  - {cluster: a, backend: kafka, kafka: {bootstrap_servers: ['k:9093'], security_protocol: sasl_ssl, sasl_mechanism: OAUTHBEARER, sasl_oauthbearer_token_endpoint_url: 'keycloak/token', sasl_username: u}}\n  - {cluster: b, backend: kafka, kafka: {bootstrap_servers: ['b-1.msk:9098'], security_protocol: sasl_ssl, sasl_mechanism: AWS_MSK_IAM, sasl_oauthbearer_client_id: x}}\n  - {cluster: c, backend: kafka, kafka: {bootstrap_servers: ['k:9092'], sasl_aws_region: eu-west-1}}\n",
    );
    let args = argv![
        "--policies-file",
        policies.display().to_string(),
        "--insecure-no-auth"
    ];
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let at = format!("policies_file {}: ", policies.display());
    let want: Vec<String> = [
        "brokers[0].kafka.sasl_oauthbearer_token_endpoint_url = \"keycloak/token\": not an http(s) URL",
        "brokers[0].kafka.sasl_oauthbearer_client_id: required with sasl_mechanism OAUTHBEARER",
        "brokers[0].kafka.sasl_oauthbearer_client_secret_file: required with sasl_mechanism OAUTHBEARER",
        "brokers[0].kafka.sasl_username: set, but sasl_mechanism OAUTHBEARER does not use it",
        "brokers[1].kafka.sasl_aws_region: required with sasl_mechanism AWS_MSK_IAM",
        "brokers[1].kafka.sasl_oauthbearer_client_id: set, but sasl_mechanism AWS_MSK_IAM does not use it",
        "brokers[2].kafka.sasl_aws_region: set, but security_protocol \"plaintext\" does not use SASL",
    ]
    .iter()
    .map(|p| format!("{at}{p}"))
    .collect();
    assert_eq!(problems[..], want[..], "{problems:#?}");

    // Well-formed keys whose files cannot be read: named before anything starts.
    let policies = f.write(
        "brokers.yaml",
        &format!(
            "brokers:\n  - {{cluster: a, backend: kafka, kafka: {{bootstrap_servers: ['k:9093'], security_protocol: sasl_ssl, sasl_mechanism: OAUTHBEARER, sasl_oauthbearer_token_endpoint_url: 'https://idp/token', sasl_oauthbearer_client_id: medic, sasl_oauthbearer_client_secret_file: {}, sasl_oauthbearer_ca_file: {}}}}}\n",
            f.path("missing-secret"),
            f.path("missing-ca")
        ),
    );
    let args = argv![
        "--policies-file",
        policies.display().to_string(),
        "--insecure-no-auth"
    ];
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    let at = format!("policies_file {}: ", policies.display());
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems[0].starts_with(&format!(
            "{at}brokers[0].kafka.sasl_oauthbearer_client_secret_file: cannot read {}: ",
            f.path("missing-secret")
        )),
        "{problems:#?}"
    );
    assert!(
        problems[1].starts_with(&format!(
            "{at}brokers[0].kafka.sasl_oauthbearer_ca_file: cannot read {}: ",
            f.path("missing-ca")
        )),
        "{problems:#?}"
    );
}

#[test]
fn example_config_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let c = Config::parse(
        &std::fs::read_to_string(dir.join("actuator.yaml")).unwrap(),
        Path::new("actuator.yaml"),
    )
    .unwrap();
    assert_eq!(c.listen.port(), 9095);
    let p = Policies::load(&dir.join("policies.yaml")).unwrap();
    assert!(p.all().len() >= 2);
}

#[test]
fn leader_election_settings_are_checked_each_naming_its_key() {
    let f = Fixture::new();
    let base = argv![
        "--policies-file",
        f.path("policies.yaml"),
        "--insecure-no-auth",
    ];
    let file = f.write(
        "le.yaml",
        "leader_election:\n  enabled: true\n  lease_name: Medic_Lease\n  namespace: ops.team\n  identity: ' '\n  lease_duration: 2500ms\n  renew_deadline: 3s\n  retry_period: 3s\n",
    );
    let args = [base.clone(), argv!["--config", file.display().to_string()]].concat();
    let err = Config::load(&args, &BTreeMap::new()).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec![
            "leader_election.lease_name: \"Medic_Lease\" is not a valid Lease name (lowercase RFC 1123 subdomain)".to_string(),
            "leader_election.namespace: \"ops.team\" is not a valid namespace (lowercase RFC 1123 label)".into(),
            "leader_election.identity: must not be empty (each replica needs a unique identity)".into(),
            "leader_election.lease_duration: 2s 500ms must be a whole number of seconds, at least 1s (it is written as the Lease's leaseDurationSeconds)".into(),
            "leader_election.renew_deadline: 3s must be shorter than leader_election.lease_duration 2s 500ms: the leader must step down before its Lease can expire and another replica takes over".into(),
            "leader_election.retry_period: 3s must be shorter than leader_election.renew_deadline 3s: the leader needs more than one attempt to renew before it steps down".into(),
        ]
    );
    // Flags and variables reach the same keys; short test settings are accepted.
    let args = [
        base.clone(),
        argv![
            "--leader-election-enabled",
            "--leader-election-lease-duration",
            "3s",
            "--leader-election-renew-deadline=2s",
        ],
    ]
    .concat();
    let e = env(&[
        ("MEDIC_ACTUATOR_LEADER_ELECTION_RETRY_PERIOD", "500ms"),
        ("MEDIC_ACTUATOR_LEADER_ELECTION_IDENTITY", "actuator-0"),
    ]);
    let c = Config::load(&args, &e).unwrap();
    let le = &c.leader_election;
    assert!(le.enabled);
    assert_eq!(
        (le.lease_duration, le.renew_deadline, le.retry_period),
        (
            Duration::from_secs(3),
            Duration::from_secs(2),
            Duration::from_millis(500)
        )
    );
    assert_eq!(le.identity.as_deref(), Some("actuator-0"));
    assert_eq!(le.lease_name, "medic-actuator", "default");
    // Off by default; a zero retry period is refused on its own.
    let c = Config::load(&base, &BTreeMap::new()).unwrap();
    assert!(!c.leader_election.enabled);
    let e = env(&[("MEDIC_ACTUATOR_LEADER_ELECTION_RETRY_PERIOD", "0s")]);
    let err = Config::load(&base, &e).unwrap_err();
    let ConfigError::Invalid { problems, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(
        problems,
        &vec!["leader_election.retry_period: 0s must be positive".to_string()]
    );
}
