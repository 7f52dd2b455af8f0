use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load_ok(args: &[&str], e: &[(&str, &str)]) -> Config {
    let mut full = vec!["medic-agent"];
    full.extend_from_slice(args);
    match load(full, &env(e)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn load_err(args: &[&str], e: &[(&str, &str)]) -> Vec<String> {
    let mut full = vec!["medic-agent"];
    full.extend_from_slice(args);
    match load(full, &env(e)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(LoadError::Invalid(ConfigErrors(v))) => v,
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn defaults_with_only_bootstrap() {
    let c = load_ok(&["--bootstrap-servers", "k1:9092,k2:9092"], &[]);
    assert_eq!(c.bootstrap_servers, vec!["k1:9092", "k2:9092"]);
    assert_eq!(c.listen, "0.0.0.0:9308".parse::<SocketAddr>().unwrap());
    assert_eq!(c.cluster, "kafka");
    assert_eq!(c.interval, Duration::from_secs(10));
    assert_eq!(c.stale_after, Duration::from_secs(30));
    assert!(matches!(c.mode, Mode::Cluster));
    assert!(c.health.is_none());
    assert!(c.security.tls.is_none() && c.security.sasl.is_none());
}

#[test]
fn precedence_is_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        "bootstrap_servers: [file:9092]\ncluster: from-file\ninterval: 20s\nlisten: 127.0.0.1:1111\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let c = load_ok(
        &["--config", f, "--cluster", "from-flag"],
        &[
            ("MEDIC_AGENT_CLUSTER", "from-env"),
            ("MEDIC_AGENT_INTERVAL", "5s"),
        ],
    );
    assert_eq!(c.cluster, "from-flag");
    assert_eq!(c.interval, Duration::from_secs(5), "env beats file");
    assert_eq!(c.listen.port(), 1111, "file beats default");
    assert_eq!(c.bootstrap_servers, vec!["file:9092"]);
    assert_eq!(c.request_timeout, Duration::from_secs(10), "default");
    // The file can also be named by the environment.
    let c = load_ok(&[], &[("MEDIC_AGENT_CONFIG", f)]);
    assert_eq!(c.cluster, "from-file");
}

#[test]
fn every_error_is_reported_at_once_with_its_origin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "bootstrap_servers: nohostport\ngroup_allow: ['(unclosed']\nhistory_samples: 1\n",
    )
    .unwrap();
    let errs = load_err(
        &["--config", file.to_str().unwrap(), "--listen", "nowhere"],
        &[("MEDIC_AGENT_INTERVAL", "10ms")],
    );
    let joined = errs.join("\n");
    assert_eq!(errs.len(), 5, "{joined}");
    assert!(
        joined.contains("bad.yaml: key bootstrap_servers = \"nohostport\": expected host:port"),
        "{joined}"
    );
    assert!(
        joined.contains("bad.yaml: key group_allow = \"(unclosed\": invalid regex"),
        "{joined}"
    );
    assert!(
        joined.contains("bad.yaml: key history_samples = 1: must be between 3 and 10000"),
        "{joined}"
    );
    assert!(joined.contains("flag --listen = \"nowhere\""), "{joined}");
    assert!(
        joined.contains("env MEDIC_AGENT_INTERVAL = 10ms: must be at least 100ms"),
        "{joined}"
    );
}

#[test]
fn unknown_file_keys_and_env_vars_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.yaml");
    std::fs::write(&file, "bootstrap_server: [k:9092]\n").unwrap();
    let errs = load_err(
        &["--config", file.to_str().unwrap()],
        &[
            ("MEDIC_AGENT_BOOTSTRAP", "k:1"),
            ("MEDIC_AGENT_BROKER_ID", "x"),
        ],
    );
    let joined = errs.join("\n");
    assert!(
        joined.contains("unknown field `bootstrap_server`"),
        "{joined}"
    );
    assert!(
        joined.contains("env MEDIC_AGENT_BOOTSTRAP: unknown setting"),
        "{joined}"
    );
    assert!(
        joined.contains("env MEDIC_AGENT_BROKER_ID=\"x\""),
        "{joined}"
    );
    // Unrelated variables are ignored.
    let c = load_ok(
        &["--bootstrap-servers", "k:1"],
        &[("PATH", "/bin"), ("MEDIC_ACTUATOR_X", "1")],
    );
    assert_eq!(c.bootstrap_servers, vec!["k:1"]);
}

#[test]
fn missing_file_is_named() {
    let errs = load_err(&["--config", "/nonexistent/agent.yaml"], &[]);
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("/nonexistent/agent.yaml: cannot read"),
        "{errs:?}"
    );
}

#[test]
fn sidecar_mode_builds_health_sources() {
    let c = load_ok(
        &[
            "--bootstrap-servers",
            "localhost:9092",
            "--broker-id",
            "3",
            "--process-source",
            "cmdline",
            "--process-cmdline-pattern",
            "kafka\\.Kafka",
            "--log-dirs",
            "/var/lib/kafka/a,/var/lib/kafka/b",
        ],
        &[],
    );
    assert!(matches!(c.mode, Mode::Sidecar { broker_id: 3 }));
    let h = c.health.unwrap();
    assert!(
        matches!(h.source, ProcessSource::CmdlinePattern(ref r) if r.as_str() == "kafka\\.Kafka")
    );
    assert_eq!(
        h.log_dirs,
        vec![
            PathBuf::from("/var/lib/kafka/a"),
            PathBuf::from("/var/lib/kafka/b")
        ]
    );

    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--broker-id",
            "1",
            "--process-source",
            "pid_file",
        ],
        &[],
    );
    assert_eq!(
        errs,
        vec!["default process_pid_file: required with process_source=pid_file"]
    );
    let errs = load_err(&["--bootstrap-servers", "k:1", "--log-dirs", "/data"], &[]);
    assert_eq!(
        errs,
        vec!["flag --log-dirs: broker health needs sidecar mode (set broker_id)"]
    );
}

#[test]
fn sasl_settings_are_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let c = load_ok(
        &[
            "--bootstrap-servers",
            "k:1",
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--sasl-username",
            "medic",
            "--sasl-password-file",
            pw.to_str().unwrap(),
        ],
        &[],
    );
    let Some(medic_kafka::Sasl::Password(s)) = c.security.sasl else {
        panic!("{:?}", c.security)
    };
    assert_eq!(
        (s.mechanism, s.username.as_str(), s.password.as_str()),
        (medic_kafka::SaslMechanism::ScramSha512, "medic", "hunter2")
    );

    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "GSSAPI",
        ],
        &[],
    );
    assert_eq!(
        errs,
        ["flag --sasl-mechanism = \"GSSAPI\": unknown SASL mechanism; expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER or AWS_MSK_IAM"]
    );
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "PLAIN",
        ],
        &[],
    );
    assert_eq!(
        errs,
        [
            "default sasl_username: required with sasl_mechanism PLAIN",
            "default sasl_password_file: required with sasl_mechanism PLAIN",
        ]
    );

    let errs = load_err(&["--bootstrap-servers", "k:1", "--sasl-username", "u"], &[]);
    assert!(errs[0].contains("does not use SASL"), "{errs:?}");
    let errs = load_err(&["--bootstrap-servers", "k:1", "--tls-ca-file", "/x"], &[]);
    assert!(
        errs[0].contains(
            "flag --tls-ca-file: set, but security_protocol \"plaintext\" does not use TLS"
        ),
        "{errs:?}"
    );
}

#[test]
fn group_filter_allow_and_deny() {
    let c = load_ok(
        &[
            "--bootstrap-servers",
            "k:1",
            "--group-allow",
            "^billing-.*,^audit$",
            "--group-deny=-test$",
        ],
        &[],
    );
    let accepted: Vec<_> = ["billing-a", "billing-test", "audit", "auditor", "other"]
        .into_iter()
        .filter(|g| c.groups.accepts(g))
        .collect();
    assert_eq!(accepted, vec!["billing-a", "audit"]);
    assert!(NameFilter::default().accepts("anything"));
}

#[test]
fn help_documents_every_setting() {
    let help = Cli::command().render_long_help().to_string();
    for arg in Cli::command().get_arguments() {
        if let Some(long) = arg.get_long() {
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing from help"
            );
            assert!(
                arg.get_help().is_some() || long == "help" || long == "version",
                "--{long} has no help text"
            );
        }
    }
    assert!(help.contains("MEDIC_AGENT_"));
}

#[test]
fn http_limits_have_defaults_keys_and_checks() {
    let c = load_ok(&["--bootstrap-servers", "k:9092"], &[]);
    assert_eq!(
        (
            c.http.header_read_timeout,
            c.http.idle_timeout,
            c.http.max_connections
        ),
        (Duration::from_secs(10), Duration::from_secs(60), 1024)
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        "bootstrap_servers: k:9092\nhttp_header_read_timeout: 3s\nhttp_max_connections: 64\n",
    )
    .unwrap();
    let c = load_ok(
        &[
            "--config",
            file.to_str().unwrap(),
            "--http-max-connections",
            "32",
        ],
        &[("MEDIC_AGENT_HTTP_IDLE_TIMEOUT", "90s")],
    );
    assert_eq!(c.http.header_read_timeout, Duration::from_secs(3), "file");
    assert_eq!(c.http.idle_timeout, Duration::from_secs(90), "env");
    assert_eq!(c.http.max_connections, 32, "flag");

    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:9092",
            "--http-header-read-timeout",
            "10ms",
            "--http-max-connections",
            "0",
        ],
        &[],
    );
    assert_eq!(
        errs,
        vec![
            "flag --http-header-read-timeout = 10ms: must be at least 100ms".to_string(),
            "flag --http-max-connections: must be at least 1".into(),
        ]
    );
}

#[test]
fn granularity_and_series_budget_have_defaults_keys_and_checks() {
    let c = load_ok(&["--bootstrap-servers", "k:9092"], &[]);
    assert_eq!(c.granularity, crate::render::Granularity::Partition);
    assert_eq!(c.max_series, None);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, "granularity: topic\nmax_series: 5000\n").unwrap();
    let f = file.to_str().unwrap();
    let c = load_ok(&["--bootstrap-servers", "k:9092", "--config", f], &[]);
    assert_eq!(
        (c.granularity, c.max_series),
        (crate::render::Granularity::Topic, Some(5000)),
        "file"
    );
    let c = load_ok(
        &[
            "--bootstrap-servers",
            "k:9092",
            "--config",
            f,
            "--max-series",
            "70",
        ],
        &[("MEDIC_AGENT_GRANULARITY", "partition")],
    );
    assert_eq!(
        (c.granularity, c.max_series),
        (crate::render::Granularity::Partition, Some(70)),
        "env and flag beat the file"
    );

    std::fs::write(&file, "granularity: Topic\nmax_series: 0\n").unwrap();
    let errs = load_err(&["--bootstrap-servers", "k:9092", "--config", f], &[]);
    assert_eq!(
        errs,
        vec![
            format!("{f}: key granularity = \"Topic\": expected partition or topic"),
            format!("{f}: key max_series = 0: must be at least 1 (leave it unset for no limit)"),
        ]
    );
    let errs = load_err(
        &["--bootstrap-servers", "k:9092"],
        &[("MEDIC_AGENT_MAX_SERIES", "-3")],
    );
    assert_eq!(
        errs,
        vec![
            "env MEDIC_AGENT_MAX_SERIES=\"-3\": invalid value for one of the arguments".to_string()
        ]
    );
}

#[test]
fn oauthbearer_keys_from_flags_env_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(
        &file,
        "bootstrap_servers: [k:9093]\nsecurity_protocol: sasl_ssl\nsasl_mechanism: OAUTHBEARER\nsasl_oauthbearer_scope: kafka\n",
    )
    .unwrap();
    let c = load_ok(
        &[
            "--config",
            file.to_str().unwrap(),
            "--sasl-oauthbearer-token-endpoint-url",
            "https://keycloak/realms/kafka/protocol/openid-connect/token",
            "--sasl-oauthbearer-client-secret-file",
            secret.to_str().unwrap(),
        ],
        &[("MEDIC_AGENT_SASL_OAUTHBEARER_CLIENT_ID", "medic-agent")],
    );
    let Some(medic_kafka::Sasl::Token { mechanism, tokens }) = &c.security.sasl else {
        panic!("{:?}", c.security)
    };
    assert_eq!(*mechanism, medic_kafka::SaslMechanism::OAuthBearer);
    assert_eq!(
        tokens.describe(),
        "oidc https://keycloak/realms/kafka/protocol/openid-connect/token"
    );
    assert!(c.security.tls.is_some());
}

#[test]
fn oauthbearer_problems_name_each_key_where_it_was_set() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-secret");
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "OAUTHBEARER",
            "--sasl-oauthbearer-token-endpoint-url",
            "keycloak/token",
            "--sasl-username",
            "medic",
        ],
        &[("MEDIC_AGENT_SASL_AWS_REGION", "eu-west-1")],
    );
    assert_eq!(
        errs,
        [
            "flag --sasl-oauthbearer-token-endpoint-url = \"keycloak/token\": not an http(s) URL",
            "default sasl_oauthbearer_client_id: required with sasl_mechanism OAUTHBEARER",
            "default sasl_oauthbearer_client_secret_file: required with sasl_mechanism OAUTHBEARER",
            "flag --sasl-username: set, but sasl_mechanism OAUTHBEARER does not use it",
            "env MEDIC_AGENT_SASL_AWS_REGION: set, but sasl_mechanism OAUTHBEARER does not use it",
        ]
    );
    // Well-formed keys, but the secret file cannot be read.
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "OAUTHBEARER",
            "--sasl-oauthbearer-token-endpoint-url",
            "http://keycloak/token",
            "--sasl-oauthbearer-client-id",
            "medic",
            "--sasl-oauthbearer-client-secret-file",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(&format!(
            "flag --sasl-oauthbearer-client-secret-file = {:?}: cannot read: ",
            missing.display().to_string()
        )),
        "{errs:?}"
    );
    // OAUTHBEARER keys without SASL.
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:1",
            "--sasl-oauthbearer-client-id",
            "medic",
        ],
        &[],
    );
    assert_eq!(
        errs,
        ["flag --sasl-oauthbearer-client-id: set, but security_protocol \"plaintext\" does not use SASL"]
    );
}

#[test]
fn aws_msk_iam_needs_a_region_and_nothing_else() {
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "b-1.msk:9098",
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "AWS_MSK_IAM",
            "--sasl-oauthbearer-client-id",
            "x",
        ],
        &[],
    );
    assert_eq!(
        errs,
        [
            "default sasl_aws_region: required with sasl_mechanism AWS_MSK_IAM",
            "flag --sasl-oauthbearer-client-id: set, but sasl_mechanism AWS_MSK_IAM does not use it",
        ]
    );
    let c = load_ok(
        &[
            "--bootstrap-servers",
            "b-1.msk:9098",
            "--security-protocol",
            "sasl_ssl",
            "--sasl-mechanism",
            "AWS_MSK_IAM",
            "--sasl-aws-region",
            "eu-west-1",
        ],
        &[],
    );
    let sasl = c.security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism(), medic_kafka::SaslMechanism::AwsMskIam);
}

#[test]
fn shard_settings_from_flags_env_file_and_the_pod_name() {
    let c = load_ok(&["--bootstrap-servers", "k:9092"], &[]);
    assert_eq!((c.shard.index(), c.shard.count()), (0, 1), "unsharded");
    let c = load_ok(
        &["--bootstrap-servers", "k:9092", "--shard-count", "4"],
        &[("MEDIC_AGENT_SHARD_INDEX", "3")],
    );
    assert_eq!((c.shard.index(), c.shard.count()), (3, 4), "flag and env");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.yaml");
    std::fs::write(&file, "bootstrap_servers: k:9092\nshard_count: 3\n").unwrap();
    let c = load_ok(
        &["--config", file.to_str().unwrap()],
        &[("POD_NAME", "kafka-medic-agent-2"), ("HOSTNAME", "x-0")],
    );
    assert_eq!(
        (c.shard.index(), c.shard.count()),
        (2, 3),
        "file, index from POD_NAME"
    );

    let errs = load_err(
        &["--config", file.to_str().unwrap()],
        &[("HOSTNAME", "kafka-medic-agent-3")],
    );
    assert_eq!(
        errs,
        vec![format!(
            "env HOSTNAME = \"kafka-medic-agent-3\": ordinal 3 is not less than {}: key shard_count (3); the StatefulSet has more replicas than shards",
            file.display()
        )]
    );
    let errs = load_err(
        &[
            "--bootstrap-servers",
            "k:9092",
            "--shard-index",
            "5",
            "--shard-count",
            "2",
        ],
        &[],
    );
    assert_eq!(
        errs,
        vec![
            "flag --shard-index = 5: must be less than shard_count (2); shards are numbered 0 to 1"
        ]
    );
    let errs = load_err(
        &["--bootstrap-servers", "k:9092", "--broker-id", "1"],
        &[("MEDIC_AGENT_SHARD_COUNT", "2")],
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "env MEDIC_AGENT_SHARD_COUNT: sharding is for cluster mode only; with broker_id (sidecar mode)"
        ),
        "{errs:?}"
    );
}
