//! cgroup v2 and v1 readers: CPU usage and limit, memory working set, and a member process for
//! the network namespace.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

use super::{
    fill, host, parse_u64_field, read_parsed, read_parsed_opt, read_text, HealthError,
    HealthSample, Stage,
};

/// At most this many cgroup directories are searched for a member process.
const MAX_DIRS_SEARCHED: usize = 10_000;

/// A file holding one unsigned integer (`memory.current`, `cpuacct.usage`, ...).
pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("the file is empty".to_string());
    }
    parse_u64_field(value, "the value")
}

/// The value of `key` in a flat-keyed file of `key value` lines (`cpu.stat`, `memory.stat`).
pub(crate) fn parse_keyed(text: &str, key: &str) -> Result<u64, String> {
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        if parts.next() != Some(key) {
            continue;
        }
        return match (parts.next(), parts.next()) {
            (Some(value), None) => parse_u64_field(value, key),
            _ => Err(format!("expected \"{key} VALUE\", got {line:?}")),
        };
    }
    Err(format!("no {key} line"))
}

/// cgroup v2 `cpu.max` (`QUOTA PERIOD` in µs, QUOTA may be `max`): the limit in cores, or `None`
/// when unlimited.
pub(crate) fn parse_cpu_max(text: &str) -> Result<Option<f64>, String> {
    let mut parts = text.split_whitespace();
    let (Some(quota), Some(period), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected \"QUOTA PERIOD\", got {:?}", text.trim()));
    };
    let period = parse_u64_field(period, "period")?;
    if period == 0 {
        return Err("period is 0".to_string());
    }
    if quota == "max" {
        return Ok(None);
    }
    let quota = parse_u64_field(quota, "quota")?;
    if quota == 0 {
        return Err("quota is 0".to_string());
    }
    Ok(Some(quota as f64 / period as f64))
}

/// cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`: the limit in cores, or `None` when the
/// quota is `-1` (unlimited).
pub(crate) fn parse_cfs(quota_text: &str, period_text: &str) -> Result<Option<f64>, String> {
    let quota = quota_text.trim();
    let quota: i64 = quota
        .parse()
        .map_err(|_| format!("cpu.cfs_quota_us is not an integer: {quota:?}"))?;
    if quota == -1 {
        return Ok(None);
    }
    if quota <= 0 {
        return Err(format!(
            "cpu.cfs_quota_us is {quota}, expected -1 or a positive number"
        ));
    }
    let period = parse_u64_field(period_text.trim(), "cpu.cfs_period_us")?;
    if period == 0 {
        return Err("cpu.cfs_period_us is 0".to_string());
    }
    Ok(Some(quota as f64 / period as f64))
}

/// The first pid of a `cgroup.procs` file, or `None` when it lists no process.
pub(crate) fn parse_procs_first(text: &str) -> Result<Option<u32>, String> {
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        None => Ok(None),
        Some(line) => match line.parse::<u32>() {
            Ok(0) | Err(_) => Err(format!("not a pid: {line:?}")),
            Ok(pid) => Ok(Some(pid)),
        },
    }
}

/// The cgroup v2 directory for a `0::PATH` line of `/proc/<pid>/cgroup`, and the cgroup root it
/// lies under: `cgroup_root/PATH`, or `cgroup_root/unified/PATH` on a hybrid host.
pub(crate) fn resolve_v2_dir(
    cgroup_root: &Path,
    path: &str,
) -> Result<(PathBuf, PathBuf), HealthError> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(HealthError::unavailable(
            Stage::Cpu,
            format!(
                "the broker's cgroup {path:?} lies outside this agent's cgroup namespace; \
                 mount the broker's cgroup directory and use the cgroup source"
            ),
        ));
    }
    for base in [cgroup_root.to_path_buf(), cgroup_root.join("unified")] {
        let dir = base.join(rel);
        if dir.is_dir() {
            return Ok((dir, base));
        }
    }
    Err(HealthError::unavailable(
        Stage::Cpu,
        format!(
            "the broker's cgroup {path:?} is not under {} (nor its unified/ directory)",
            cgroup_root.display()
        ),
    ))
}

/// The tightest cgroup v2 `cpu.max` limit, in cores, of `dir` and its parents up to and
/// including `root` (only `dir` itself when it is not under `root`). `None` when no level is
/// limited; a level without `cpu.max` is unlimited.
pub(crate) fn v2_cpu_limit(dir: &Path, root: &Path) -> Result<Option<f64>, HealthError> {
    let mut tightest: Option<f64> = None;
    let mut current = dir;
    loop {
        let path = current.join("cpu.max");
        if let Some(Some(limit)) = read_parsed_opt(Stage::Cpu, &path, parse_cpu_max)? {
            tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
        }
        if current == root {
            break;
        }
        match current.parent() {
            Some(parent) if parent.starts_with(root) => current = parent,
            _ => break,
        }
    }
    Ok(tightest)
}

/// A cgroup v1 controller, and the names its hierarchy is mounted under.
#[derive(Debug, Clone, Copy)]
enum V1Controller {
    Cpu,
    Cpuacct,
    Memory,
}

impl V1Controller {
    fn hierarchies(self) -> &'static [&'static str] {
        match self {
            V1Controller::Cpu => &["cpu", "cpu,cpuacct", "cpuacct,cpu"],
            V1Controller::Cpuacct => &["cpuacct", "cpu,cpuacct", "cpuacct,cpu"],
            V1Controller::Memory => &["memory"],
        }
    }
}

/// Where a cgroup v1 controller file of `dir` is: in `dir` itself, or else at the same relative
/// path in a sibling hierarchy of `root` (`root/cpuacct/kubepods/x` -> `root/memory/kubepods/x`).
/// When found nowhere, `dir/file`, so the error names the directory that was configured.
fn v1_file(dir: &Path, root: &Path, controller: V1Controller, file: &str) -> PathBuf {
    let own = dir.join(file);
    if own.exists() {
        return own;
    }
    if let Ok(rel) = dir.strip_prefix(root) {
        let mut components = rel.components();
        if components.next().is_some() {
            let rest = components.as_path();
            for hierarchy in controller.hierarchies() {
                let candidate = root.join(hierarchy).join(rest).join(file);
                if candidate.exists() {
                    return candidate;
                }
            }
        }
    }
    own
}

/// cgroup v1 `cpu.cfs_quota_us / cpu.cfs_period_us` of `dir`, in cores.
fn v1_cpu_limit(dir: &Path, root: &Path) -> Result<Option<f64>, HealthError> {
    let quota_path = v1_file(dir, root, V1Controller::Cpu, "cpu.cfs_quota_us");
    let quota = read_text(Stage::Cpu, &quota_path)?;
    let period_path = quota_path.with_file_name("cpu.cfs_period_us");
    let period = read_text(Stage::Cpu, &period_path)?;
    parse_cfs(&quota, &period).map_err(|reason| HealthError::parse(Stage::Cpu, &quota_path, reason))
}

/// `usage - inactive_file`, saturating: the working set as the kubelet computes it.
fn working_set(
    usage_path: &Path,
    stat_path: &Path,
    inactive_key: &str,
) -> Result<u64, HealthError> {
    let usage = read_parsed(Stage::Memory, usage_path, parse_u64)?;
    let inactive = read_parsed(Stage::Memory, stat_path, |t| parse_keyed(t, inactive_key))?;
    Ok(usage.saturating_sub(inactive))
}

/// The first process in `dir`'s `cgroup.procs`, or, if it has none (a v2 cgroup with children
/// holds no process itself), in its sub-cgroups, breadth first.
pub(crate) fn first_pid(dir: &Path) -> Result<u32, HealthError> {
    let mut queue = VecDeque::from([dir.to_path_buf()]);
    let mut searched = 0usize;
    while let Some(current) = queue.pop_front() {
        searched += 1;
        if searched > MAX_DIRS_SEARCHED {
            break;
        }
        let procs = current.join("cgroup.procs");
        let first = if current == dir {
            read_parsed(Stage::Network, &procs, parse_procs_first)?
        } else {
            read_parsed(Stage::Network, &procs, parse_procs_first)
                .ok()
                .flatten()
        };
        if let Some(pid) = first {
            return Ok(pid);
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(&current)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        children.sort();
        queue.extend(children);
    }
    Err(HealthError::unavailable(
        Stage::Network,
        format!("no process in cgroup {} or its sub-cgroups", dir.display()),
    ))
}

/// Fills every non-disk field from the cgroup directory `dir`.
pub(crate) fn collect(dir: &Path, cgroup_root: &Path, proc_root: &Path, sample: &mut HealthSample) {
    if !dir.is_dir() {
        sample.errors.push(HealthError::unavailable(
            Stage::Process,
            format!("cgroup directory {} does not exist", dir.display()),
        ));
        return;
    }
    let v2_usage = read_parsed(Stage::Cpu, &dir.join("cpu.stat"), |t| {
        parse_keyed(t, "usage_usec")
    });
    let is_v2 = v2_usage.is_ok() || dir.join("cgroup.controllers").exists();
    if is_v2 {
        let cpu = v2_usage.map(|usec| usec as f64 / 1e6);
        fill(&mut sample.cpu_seconds_total, &mut sample.errors, cpu);
        let cores = v2_cpu_limit(dir, cgroup_root).and_then(|l| host::capacity(l, proc_root));
        fill(&mut sample.cpu_cores, &mut sample.errors, cores);
        let memory = working_set(
            &dir.join("memory.current"),
            &dir.join("memory.stat"),
            "inactive_file",
        );
        fill(&mut sample.memory_used_bytes, &mut sample.errors, memory);
    } else {
        let usage = v1_file(dir, cgroup_root, V1Controller::Cpuacct, "cpuacct.usage");
        let cpu = read_parsed(Stage::Cpu, &usage, parse_u64).map(|ns| ns as f64 / 1e9);
        fill(&mut sample.cpu_seconds_total, &mut sample.errors, cpu);
        let cores = v1_cpu_limit(dir, cgroup_root).and_then(|l| host::capacity(l, proc_root));
        fill(&mut sample.cpu_cores, &mut sample.errors, cores);
        let usage = v1_file(
            dir,
            cgroup_root,
            V1Controller::Memory,
            "memory.usage_in_bytes",
        );
        let stat = usage.with_file_name("memory.stat");
        let memory = working_set(&usage, &stat, "total_inactive_file");
        fill(&mut sample.memory_used_bytes, &mut sample.errors, memory);
    }
    match first_pid(dir) {
        Ok(pid) => host::fill_network(&proc_root.join(pid.to_string()).join("net/dev"), sample),
        Err(e) => sample.errors.push(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::fake;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_u64_table() {
        let table: &[(&str, Result<u64, &str>)] = &[
            ("123\n", Ok(123)),
            ("  0 ", Ok(0)),
            ("", Err("the file is empty")),
            ("\n", Err("the file is empty")),
            ("-1\n", Err("the value is not an unsigned integer: \"-1\"")),
            (
                "1 2\n",
                Err("the value is not an unsigned integer: \"1 2\""),
            ),
            (
                "99999999999999999999\n",
                Err("the value is not an unsigned integer: \"99999999999999999999\""),
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_u64(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn parse_keyed_table() {
        let stat = "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n";
        let table: &[(&str, &str, Result<u64, &str>)] = &[
            (stat, "usage_usec", Ok(2_500_000)),
            (stat, "system_usec", Ok(500_000)),
            (
                "anon 1\ninactive_file 42\nactive_file 7\n",
                "inactive_file",
                Ok(42),
            ),
            (
                "total_inactive_file 42\n",
                "inactive_file",
                Err("no inactive_file line"),
            ),
            (
                "inactive_file\n",
                "inactive_file",
                Err("expected \"inactive_file VALUE\", got \"inactive_file\""),
            ),
            (
                "inactive_file 1 2\n",
                "inactive_file",
                Err("expected \"inactive_file VALUE\", got \"inactive_file 1 2\""),
            ),
            (
                "usage_usec x\n",
                "usage_usec",
                Err("usage_usec is not an unsigned integer: \"x\""),
            ),
            ("", "usage_usec", Err("no usage_usec line")),
        ];
        for (input, key, want) in table {
            assert_eq!(
                parse_keyed(input, key),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn parse_cpu_max_table() {
        let table: &[(&str, Result<Option<f64>, &str>)] = &[
            ("max 100000\n", Ok(None)),
            ("150000 100000\n", Ok(Some(1.5))),
            ("50000 100000", Ok(Some(0.5))),
            ("400000 100000\n", Ok(Some(4.0))),
            ("max\n", Err("expected \"QUOTA PERIOD\", got \"max\"")),
            ("", Err("expected \"QUOTA PERIOD\", got \"\"")),
            ("1 2 3\n", Err("expected \"QUOTA PERIOD\", got \"1 2 3\"")),
            ("max 0\n", Err("period is 0")),
            ("0 100000\n", Err("quota is 0")),
            (
                "-5 100000\n",
                Err("quota is not an unsigned integer: \"-5\""),
            ),
            (
                "max abc\n",
                Err("period is not an unsigned integer: \"abc\""),
            ),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_cpu_max(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn parse_cfs_table() {
        type Case<'a> = (&'a str, &'a str, Result<Option<f64>, &'a str>);
        let table: &[Case] = &[
            ("-1\n", "100000\n", Ok(None)),
            ("-1\n", "garbage", Ok(None)),
            ("200000\n", "100000\n", Ok(Some(2.0))),
            ("25000\n", "100000\n", Ok(Some(0.25))),
            (
                "0\n",
                "100000\n",
                Err("cpu.cfs_quota_us is 0, expected -1 or a positive number"),
            ),
            (
                "-7\n",
                "100000\n",
                Err("cpu.cfs_quota_us is -7, expected -1 or a positive number"),
            ),
            (
                "max\n",
                "100000\n",
                Err("cpu.cfs_quota_us is not an integer: \"max\""),
            ),
            ("1000\n", "0\n", Err("cpu.cfs_period_us is 0")),
            (
                "1000\n",
                "\n",
                Err("cpu.cfs_period_us is not an unsigned integer: \"\""),
            ),
        ];
        for (quota, period, want) in table {
            assert_eq!(
                parse_cfs(quota, period),
                want.map_err(str::to_string),
                "input {quota:?} {period:?}"
            );
        }
    }

    #[test]
    fn parse_procs_first_table() {
        let table: &[(&str, Result<Option<u32>, &str>)] = &[
            ("4242\n4243\n", Ok(Some(4242))),
            ("\n  17\n", Ok(Some(17))),
            ("", Ok(None)),
            ("0\n", Err("not a pid: \"0\"")),
            ("abc\n", Err("not a pid: \"abc\"")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_procs_first(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    /// A fake host (2 cores) and a v2 pod cgroup `kubepods/pod1` holding container `kafka`
    /// (pid 4242) whose pod-level limit is 1.5 cores and container-level limit `ctr_max`.
    fn v2_tree(root: &Path, ctr_max: &str) -> (PathBuf, PathBuf) {
        let proc_root = root.join("proc");
        let cg = root.join("cgroup");
        fake::host(&proc_root);
        fake::write(
            &proc_root,
            "4242/net/dev",
            &fake::net_dev((1, 1), &[("eth0", 500, 600)]),
        );
        fake::write(&cg, "cgroup.controllers", "cpuset cpu io memory pids\n");
        fake::write(&cg, "kubepods/cpu.max", "max 100000\n");
        fake::write(&cg, "kubepods/pod1/cgroup.controllers", "cpu memory\n");
        fake::write(&cg, "kubepods/pod1/cgroup.procs", "");
        fake::write(&cg, "kubepods/pod1/cpu.max", "150000 100000\n");
        fake::write(
            &cg,
            "kubepods/pod1/cpu.stat",
            "usage_usec 9000000\nuser_usec 8000000\n",
        );
        fake::write(&cg, "kubepods/pod1/memory.current", "3000000\n");
        fake::write(
            &cg,
            "kubepods/pod1/memory.stat",
            "anon 1\ninactive_file 1000000\n",
        );
        let ctr = "kubepods/pod1/kafka";
        fake::write(&cg, &format!("{ctr}/cgroup.controllers"), "cpu memory\n");
        fake::write(&cg, &format!("{ctr}/cgroup.procs"), "4242\n4300\n");
        fake::write(&cg, &format!("{ctr}/cpu.max"), ctr_max);
        fake::write(
            &cg,
            &format!("{ctr}/cpu.stat"),
            "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n",
        );
        fake::write(&cg, &format!("{ctr}/memory.current"), "2000000\n");
        fake::write(
            &cg,
            &format!("{ctr}/memory.stat"),
            "anon 1500000\nfile 500000\ninactive_file 300000\nactive_file 200000\n",
        );
        (proc_root, cg)
    }

    #[test]
    fn v2_container_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg) = v2_tree(tmp.path(), "100000 100000\n");
        let mut sample = HealthSample::default();
        collect(
            &cg.join("kubepods/pod1/kafka"),
            &cg,
            &proc_root,
            &mut sample,
        );
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert_eq!(sample.cpu_seconds_total, Some(2.5));
        assert_eq!(sample.cpu_cores, Some(1.0));
        assert_eq!(sample.memory_used_bytes, Some(1_700_000));
        assert_eq!(sample.network_receive_bytes_total, Some(500));
        assert_eq!(sample.network_transmit_bytes_total, Some(600));
    }

    #[test]
    fn v2_limit_is_the_tightest_ancestor_capped_at_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg) = v2_tree(tmp.path(), "max 100000\n");
        let ctr = cg.join("kubepods/pod1/kafka");
        // The container is unlimited, the pod has 1.5 cores.
        assert_eq!(v2_cpu_limit(&ctr, &cg), Ok(Some(1.5)));
        let mut sample = HealthSample::default();
        collect(&ctr, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_cores, Some(1.5));
        // Unlimited everywhere: the host's 2 cores.
        fake::write(&cg, "kubepods/pod1/cpu.max", "max 100000\n");
        assert_eq!(v2_cpu_limit(&ctr, &cg), Ok(None));
        let mut sample = HealthSample::default();
        collect(&ctr, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_cores, Some(2.0));
        // A limit above the host's size is capped at the host.
        fake::write(&cg, "kubepods/pod1/kafka/cpu.max", "800000 100000\n");
        let mut sample = HealthSample::default();
        collect(&ctr, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_cores, Some(2.0));
        // A directory outside the root is read alone.
        let outside = tmp.path().join("elsewhere");
        fake::write(&outside, "cpu.max", "30000 100000\n");
        assert_eq!(v2_cpu_limit(&outside, &cg), Ok(Some(0.3)));
    }

    #[test]
    fn v2_pod_cgroup_finds_the_network_in_a_child() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg) = v2_tree(tmp.path(), "max 100000\n");
        let mut sample = HealthSample::default();
        collect(&cg.join("kubepods/pod1"), &cg, &proc_root, &mut sample);
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert_eq!(sample.cpu_seconds_total, Some(9.0));
        assert_eq!(sample.cpu_cores, Some(1.5));
        assert_eq!(sample.memory_used_bytes, Some(2_000_000));
        assert_eq!(sample.network_receive_bytes_total, Some(500));
    }

    #[test]
    fn v2_working_set_saturates_at_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg) = v2_tree(tmp.path(), "max 100000\n");
        fake::write(
            &cg,
            "kubepods/pod1/kafka/memory.stat",
            "inactive_file 9999999\n",
        );
        let mut sample = HealthSample::default();
        collect(
            &cg.join("kubepods/pod1/kafka"),
            &cg,
            &proc_root,
            &mut sample,
        );
        assert_eq!(sample.memory_used_bytes, Some(0));
    }

    #[test]
    fn v2_missing_and_broken_files_fail_only_their_field() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg) = v2_tree(tmp.path(), "garbage\n");
        let ctr = cg.join("kubepods/pod1/kafka");
        std::fs::remove_file(ctr.join("memory.stat")).unwrap();
        std::fs::write(ctr.join("cgroup.procs"), "").unwrap();
        let mut sample = HealthSample::default();
        collect(&ctr, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_seconds_total, Some(2.5));
        assert_eq!(sample.cpu_cores, None);
        assert_eq!(sample.memory_used_bytes, None);
        assert_eq!(sample.network_receive_bytes_total, None);
        let messages: Vec<String> = sample.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                format!(
                    "cpu: cannot parse {}: expected \"QUOTA PERIOD\", got \"garbage\"",
                    ctr.join("cpu.max").display()
                ),
                format!(
                    "memory: cannot read {}: No such file or directory (os error 2)",
                    ctr.join("memory.stat").display()
                ),
                format!(
                    "network: no process in cgroup {} or its sub-cgroups",
                    ctr.display()
                ),
            ]
        );
    }

    #[test]
    fn a_missing_cgroup_directory_is_one_process_error() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("kubepods/gone");
        let mut sample = HealthSample::default();
        collect(&dir, tmp.path(), tmp.path(), &mut sample);
        assert_eq!(sample.cpu_seconds_total, None);
        assert_eq!(sample.memory_used_bytes, None);
        assert_eq!(
            sample.errors,
            vec![HealthError::unavailable(
                Stage::Process,
                format!("cgroup directory {} does not exist", dir.display())
            )]
        );
    }

    /// A v1 host: `cpu,cpuacct` and `memory` hierarchies, container `kubepods/podx/kafka`.
    fn v1_tree(root: &Path, quota: &str) -> (PathBuf, PathBuf, PathBuf) {
        let proc_root = root.join("proc");
        let cg = root.join("cgroup");
        fake::host(&proc_root);
        fake::write(
            &proc_root,
            "77/net/dev",
            &fake::net_dev((1, 1), &[("eth0", 70, 80)]),
        );
        let cpu = cg.join("cpu,cpuacct/kubepods/podx/kafka");
        fake::write(&cpu, "cpuacct.usage", "3250000000\n");
        fake::write(&cpu, "cpu.cfs_quota_us", quota);
        fake::write(&cpu, "cpu.cfs_period_us", "100000\n");
        fake::write(
            &cpu,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 5\n",
        );
        fake::write(&cpu, "cgroup.procs", "77\n");
        let mem = cg.join("memory/kubepods/podx/kafka");
        fake::write(&mem, "memory.usage_in_bytes", "5000000\n");
        fake::write(
            &mem,
            "memory.stat",
            "cache 10\ninactive_file 5\ntotal_inactive_file 1000000\n",
        );
        fake::write(&mem, "cgroup.procs", "77\n");
        (proc_root, cg, cpu)
    }

    #[test]
    fn v1_container_cgroup_across_hierarchies() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg, cpu_dir) = v1_tree(tmp.path(), "50000\n");
        let mut sample = HealthSample::default();
        collect(&cpu_dir, &cg, &proc_root, &mut sample);
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert_eq!(sample.cpu_seconds_total, Some(3.25));
        assert_eq!(sample.cpu_cores, Some(0.5));
        assert_eq!(sample.memory_used_bytes, Some(4_000_000));
        assert_eq!(sample.network_receive_bytes_total, Some(70));
        assert_eq!(sample.network_transmit_bytes_total, Some(80));
        // Configured at the memory hierarchy instead: the CPU files are found next door.
        let mut sample = HealthSample::default();
        collect(
            &cg.join("memory/kubepods/podx/kafka"),
            &cg,
            &proc_root,
            &mut sample,
        );
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert_eq!(sample.cpu_seconds_total, Some(3.25));
        assert_eq!(sample.memory_used_bytes, Some(4_000_000));
    }

    #[test]
    fn v1_unlimited_quota_uses_host_cores() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg, cpu_dir) = v1_tree(tmp.path(), "-1\n");
        let mut sample = HealthSample::default();
        collect(&cpu_dir, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_cores, Some(2.0));
    }

    #[test]
    fn v1_missing_files_fail_only_their_field() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_root, cg, cpu_dir) = v1_tree(tmp.path(), "50000\n");
        std::fs::remove_dir_all(cg.join("memory")).unwrap();
        std::fs::remove_file(cpu_dir.join("cpuacct.usage")).unwrap();
        let mut sample = HealthSample::default();
        collect(&cpu_dir, &cg, &proc_root, &mut sample);
        assert_eq!(sample.cpu_seconds_total, None);
        assert_eq!(sample.cpu_cores, Some(0.5));
        assert_eq!(sample.memory_used_bytes, None);
        assert_eq!(sample.network_receive_bytes_total, Some(70));
        let stages: Vec<&str> = sample.errors.iter().map(HealthError::stage).collect();
        assert_eq!(stages, vec!["cpu", "memory"]);
        assert!(
            sample.errors[0].to_string().contains("cpuacct.usage"),
            "{}",
            sample.errors[0]
        );
        assert!(
            sample.errors[1]
                .to_string()
                .contains(&cpu_dir.join("memory.usage_in_bytes").display().to_string()),
            "{}",
            sample.errors[1]
        );
    }

    #[test]
    fn resolve_v2_dir_refuses_paths_outside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("unified/system.slice/kafka.service")).unwrap();
        std::fs::create_dir_all(tmp.path().join("kubepods/a")).unwrap();
        assert_eq!(
            resolve_v2_dir(tmp.path(), "/kubepods/a"),
            Ok((tmp.path().join("kubepods/a"), tmp.path().to_path_buf()))
        );
        assert_eq!(
            resolve_v2_dir(tmp.path(), "/"),
            Ok((tmp.path().to_path_buf(), tmp.path().to_path_buf()))
        );
        assert_eq!(
            resolve_v2_dir(tmp.path(), "/system.slice/kafka.service"),
            Ok((
                tmp.path().join("unified/system.slice/kafka.service"),
                tmp.path().join("unified")
            ))
        );
        let err = resolve_v2_dir(tmp.path(), "/../kubepods/b").unwrap_err();
        assert_eq!(err.stage(), "cpu");
        assert!(
            err.to_string()
                .contains("outside this agent's cgroup namespace"),
            "{err}"
        );
        let err = resolve_v2_dir(tmp.path(), "/kubepods/missing").unwrap_err();
        assert!(
            err.to_string()
                .contains("\"/kubepods/missing\" is not under"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn cgroup_parsers_never_panic(a in "\\PC*", b in "\\PC*") {
            let _ = parse_u64(&a);
            let _ = parse_keyed(&a, "usage_usec");
            let _ = parse_cpu_max(&a);
            let _ = parse_cfs(&a, &b);
            let _ = parse_procs_first(&a);
        }

        #[test]
        fn cpu_max_round_trips(quota in 1u64..10_000_000, period in 1u64..10_000_000) {
            let got = parse_cpu_max(&format!("{quota} {period}\n")).unwrap();
            prop_assert_eq!(got, Some(quota as f64 / period as f64));
        }
    }
}
