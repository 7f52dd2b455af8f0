//! The real binary reports every configuration problem of every source in one run, exit 2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn reports_every_kind_of_problem_in_one_run_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.yaml");
    std::fs::write(
        &config,
        "bootstrap_servers: [127.0.0.1:9092]\ninterval: often\nclustr: typo\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_medic-agent");
    let args = ["--config", &config.display().to_string(), "--bogus-flag"].map(String::from);
    let out = Command::new(bin)
        .args(&args)
        .env("MEDIC_AGENT_HISTORY_SAMPLES", "many")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "command: MEDIC_AGENT_HISTORY_SAMPLES=many {bin} {}\nstatus: {}\nstderr:\n{stderr}",
        args.join(" "),
        out.status
    );
    assert_eq!(out.status.code(), Some(2), "{report}");
    for want in [
        format!("{}: interval: invalid value", config.display()),
        format!("{}: key clustr: unknown field `clustr`", config.display()),
        "env MEDIC_AGENT_HISTORY_SAMPLES=\"many\": invalid value".into(),
        "flag --bogus-flag: unexpected argument '--bogus-flag' found".into(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?}\n{report}");
    }
}
