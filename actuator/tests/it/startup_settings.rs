//! The real binary refuses settings that would lose audit records or never authenticate, and
//! warns when its policy file makes it do nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::process::*;
use support::*;

/// Runs the binary with `args` to completion (it must refuse to start, not serve).
fn run(files: &Files, args: &[&str]) -> (Output, String) {
    let bin = env!("CARGO_BIN_EXE_medic-actuator");
    let policies = files.path("policies.yaml").display().to_string();
    let token = files.path("token").display().to_string();
    let audit = files.audit_path().display().to_string();
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--policies-file",
        &policies,
        "--audit-path",
        &audit,
    ];
    if !args.contains(&"--auth-basic-username") {
        all.extend(["--auth-bearer-token-file", &token]);
    }
    all.extend_from_slice(args);
    let cmd = format!("{bin} {}", all.join(" "));
    let mut child = Command::new(bin)
        .args(&all)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    // A start-up refusal is immediate; a binary that accepted the settings would serve forever.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd} did not exit within 60s: it accepted the settings\nstderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "command: {cmd}\nstatus: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, report)
}

#[test]
fn exits_2_on_audit_settings_that_would_drop_answered_records() {
    let files = Files::new();
    let (out, report) = run(
        &files,
        &["--audit-max-files", "0", "--audit-max-bytes", "4096"],
    );
    assert_eq!(out.status.code(), Some(2), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "audit.max_files: 0 must be at least 1; with no rotated file kept, each rotation would delete the records just answered and restart seq at 1",
        "audit.max_bytes: 4096 is below 65536",
    ] {
        assert!(stderr.contains(want), "missing {want:?}\n{report}");
    }
    assert!(
        !files.audit_path().exists(),
        "nothing was created\n{report}"
    );
}

#[test]
fn exits_2_on_a_basic_auth_username_with_a_colon() {
    let files = Files::new();
    let token = files.path("token").display().to_string();
    let (out, report) = run(
        &files,
        &[
            "--auth-basic-username",
            "alert:manager",
            "--auth-basic-password-file",
            &token,
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{report}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "auth.basic_username: \"alert:manager\" must not contain ':' (HTTP basic auth splits user and password at the first colon, RFC 7617)"
        ),
        "{report}"
    );
}

#[test]
fn an_empty_policy_file_starts_with_a_warning() {
    let files = Files::new();
    std::fs::write(files.path("policies.yaml"), "policies: []\n").unwrap();
    // Nothing listens on port 9: the actuator must not need the API to start.
    let cfg = write_config(&files, "http://127.0.0.1:9", "");
    let run = Running::start(&cfg);
    let log = run.log.lock().unwrap().clone();
    let warning = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["level"] == "WARN" && v["fields"]["policies"] == 0)
        .unwrap_or_else(|| panic!("no start-up warning\n{}", run.dump()));
    assert_eq!(
        warning["fields"]["message"],
        "the policy file has no policies and no brokers: medic-actuator will change nothing, every lag alert is audited as skipped (no_policy)",
        "{}",
        run.dump()
    );
    assert_eq!(
        warning["fields"]["path"],
        files.path("policies.yaml").display().to_string()
    );
}

#[test]
fn reports_every_kind_of_problem_in_one_run_with_exit_2() {
    let files = Files::new();
    let config = files.path("bad.yaml");
    std::fs::write(
        &config,
        format!(
            "policies_file: {}\naudit:\n  path: {}\n  max_files: lots\nlistn: 127.0.0.1:0\n",
            files.path("policies.yaml").display(),
            files.audit_path().display()
        ),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_medic-actuator");
    let args = ["--config", &config.display().to_string(), "--bogus-flag"].map(String::from);
    let out = Command::new(bin)
        .args(&args)
        .env("MEDIC_ACTUATOR_KUBERNETES_RETRY_BACKOFF", "soon")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!(
        "command: MEDIC_ACTUATOR_KUBERNETES_RETRY_BACKOFF=soon {bin} {}\nstatus: {}\nstderr:\n{stderr}",
        args.join(" "),
        out.status
    );
    assert_eq!(out.status.code(), Some(2), "{report}");
    for want in [
        format!(
            "config file {}: audit.max_files: invalid type: string \"lots\", expected usize at line 4 column 14",
            config.display()
        ),
        format!(
            "config file {}: listn: unknown field `listn`",
            config.display()
        ),
        "MEDIC_ACTUATOR_KUBERNETES_RETRY_BACKOFF=\"soon\": expected number at 0".into(),
        "unexpected argument '--bogus-flag' found".into(),
    ] {
        assert!(stderr.contains(&want), "missing {want:?}\n{report}");
    }
    assert!(
        !files.audit_path().exists(),
        "nothing was created\n{report}"
    );
}
