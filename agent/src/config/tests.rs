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
    let s = c.security.sasl.unwrap();
    assert_eq!(
        (s.mechanism, s.username.as_str(), s.password.as_str()),
        (SaslMechanism::ScramSha512, "medic", "hunter2")
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
    let joined = errs.join("\n");
    assert!(
        joined.contains("flag --sasl-mechanism = \"GSSAPI\": unknown SASL mechanism"),
        "{joined}"
    );
    assert!(
        joined.contains("default sasl_username: required"),
        "{joined}"
    );
    assert!(
        joined.contains("default sasl_password_file: required"),
        "{joined}"
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
