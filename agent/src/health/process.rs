//! Locating the broker process (pid file or command-line pattern) and reading
//! `/proc/<pid>/{stat,status,net/dev,cgroup}`, parsed by `procfs-core`.

use std::path::Path;

use procfs_core::process::{Stat, Status};
use procfs_core::{FromBufRead, FromRead, ProcessCGroups};
use regex::Regex;

use super::{
    cgroup, fill, host, procfs_reason, read_parsed, read_parsed_opt, HealthError, HealthSample,
    Stage,
};

/// The fields of `/proc/<pid>/stat` this module uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PidStat {
    /// Field 1.
    pub(crate) pid: u32,
    /// Field 2, without the parentheses; may hold spaces and parentheses itself.
    pub(crate) comm: String,
    /// Field 3: R, S, D, Z, T, ...
    pub(crate) state: char,
    /// Field 14: user-mode clock ticks.
    pub(crate) utime: u64,
    /// Field 15: kernel-mode clock ticks.
    pub(crate) stime: u64,
    /// Field 22: clock ticks after boot at which the process started.
    pub(crate) starttime: u64,
}

impl PidStat {
    /// A zombie or dead process: it uses nothing any more and will not come back.
    fn is_defunct(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses `/proc/<pid>/stat`. The command name is the text between the first `(` and the *last*
/// `)`, since it may contain spaces and parentheses itself.
pub(crate) fn parse_pid_stat(text: &str) -> Result<PidStat, String> {
    // procfs-core cuts the line at byte offsets around the parentheses (one before the first
    // `(`, two after the last `)`) and panics when they are not there; the kernel always writes
    // `PID (COMM) STATE ...`, so anything else is rejected here first.
    let line = text.trim();
    let open = line.find('(').ok_or("no \"(\" before the command name")?;
    let close = line.rfind(')').ok_or("no \")\" after the command name")?;
    if close < open {
        return Err("\")\" comes before \"(\"".to_string());
    }
    if open == 0 || line.as_bytes()[open - 1] != b' ' {
        return Err("no \"PID \" before the command name".to_string());
    }
    if line.as_bytes().get(close + 1) != Some(&b' ') {
        return Err("no fields after the command name".to_string());
    }
    let stat = Stat::from_read(line.as_bytes())
        .map_err(|e| procfs_reason("a /proc/<pid>/stat line (PID (COMM) and 50 fields)", e))?;
    let pid = u32::try_from(stat.pid).map_err(|_| format!("pid {} is negative", stat.pid))?;
    Ok(PidStat {
        pid,
        comm: stat.comm,
        state: stat.state,
        utime: stat.utime,
        stime: stat.stime,
        starttime: stat.starttime,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, in bytes.
pub(crate) fn parse_status_rss(text: &str) -> Result<u64, String> {
    let status = Status::from_buf_read(text.as_bytes())
        .map_err(|e| procfs_reason("a /proc/<pid>/status file", e))?;
    let kb = status.vmrss.ok_or("no VmRSS line")?;
    kb.checked_mul(1024)
        .ok_or_else(|| format!("VmRSS {kb} kB overflows in bytes"))
}

/// A pid file: one positive integer, surrounding whitespace ignored.
pub(crate) fn parse_pid_file(text: &str) -> Result<u32, String> {
    let value = text.trim();
    if value.is_empty() {
        return Err("the file is empty".to_string());
    }
    match value.parse::<u32>() {
        Ok(0) | Err(_) => Err(format!("not a pid: {value:?}")),
        Ok(pid) => Ok(pid),
    }
}

/// The cgroup v2 path (`0::PATH` line) of a `/proc/<pid>/cgroup` file; `None` on a pure v1 host.
pub(crate) fn parse_cgroup_v2_path(text: &str) -> Result<Option<String>, String> {
    let groups = ProcessCGroups::from_buf_read(text.as_bytes())
        .map_err(|e| procfs_reason("a /proc/<pid>/cgroup file (ID:CONTROLLERS:PATH lines)", e))?;
    let Some(unified) = groups
        .into_iter()
        .find(|g| g.hierarchy == 0 && g.controllers.is_empty())
    else {
        return Ok(None);
    };
    if !unified.pathname.starts_with('/') {
        return Err(format!(
            "cgroup path is not absolute: {:?}",
            unified.pathname
        ));
    }
    Ok(Some(unified.pathname))
}

/// A `/proc/<pid>/cmdline` as one string: the NUL-separated arguments joined with spaces.
pub(crate) fn cmdline_string(bytes: &[u8]) -> String {
    let args = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    String::from_utf8_lossy(args).replace('\0', " ")
}

/// The process a pattern matched, remembered between collections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracked {
    pid: u32,
    starttime: u64,
}

/// A live broker process, with the stat read while locating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    pub(crate) pid: u32,
    pub(crate) stat: PidStat,
}

/// `/proc/<pid>/stat`, or `None` when the process does not exist.
fn read_pid_stat(proc_root: &Path, pid: u32) -> Result<Option<PidStat>, HealthError> {
    let path = proc_root.join(pid.to_string()).join("stat");
    let stat = read_parsed_opt(Stage::Process, &path, parse_pid_stat)?;
    match stat {
        Some(stat) if stat.pid != pid => Err(HealthError::parse(
            Stage::Process,
            &path,
            format!("it describes pid {}", stat.pid),
        )),
        other => Ok(other),
    }
}

/// The process whose pid is in `file` (read now, so a restarted broker is followed).
pub(crate) fn locate_by_pid_file(proc_root: &Path, file: &Path) -> Result<Located, HealthError> {
    let pid = read_parsed(Stage::Process, file, parse_pid_file)?;
    match read_pid_stat(proc_root, pid)? {
        None => Err(HealthError::unavailable(
            Stage::Process,
            format!(
                "pid {pid} from {} is not running (no {})",
                file.display(),
                proc_root.join(pid.to_string()).display()
            ),
        )),
        Some(stat) if stat.is_defunct() => Err(HealthError::unavailable(
            Stage::Process,
            format!(
                "pid {pid} from {} has exited (state {})",
                file.display(),
                stat.state
            ),
        )),
        Some(stat) => Ok(Located { pid, stat }),
    }
}

/// The process `pattern` matches: the cached one if it still lives with the same start time,
/// else the oldest match of a fresh scan of `proc_root` (which then becomes the cached one).
pub(crate) fn locate_by_pattern(
    proc_root: &Path,
    pattern: &Regex,
    own_pid: u32,
    tracked: &mut Option<Tracked>,
) -> Result<Located, HealthError> {
    if let Some(t) = *tracked {
        match read_pid_stat(proc_root, t.pid) {
            Ok(Some(stat)) if stat.starttime == t.starttime && !stat.is_defunct() => {
                return Ok(Located { pid: t.pid, stat });
            }
            Ok(_) => tracing::info!(pid = t.pid, "broker process has exited; searching again"),
            Err(e) => {
                tracing::info!(pid = t.pid, error = %e, "broker process unreadable; searching again")
            }
        }
        *tracked = None;
    }
    let found = scan(proc_root, pattern, own_pid)?;
    *tracked = Some(Tracked {
        pid: found.pid,
        starttime: found.stat.starttime,
    });
    Ok(found)
}

/// The oldest live process (smallest starttime, then smallest pid) other than `own_pid` whose
/// command line matches `pattern`. Processes that vanish or cannot be read mid-scan are skipped.
fn scan(proc_root: &Path, pattern: &Regex, own_pid: u32) -> Result<Located, HealthError> {
    let entries = std::fs::read_dir(proc_root)
        .map_err(|e| HealthError::read(Stage::Process, proc_root, &e))?;
    let mut best: Option<Located> = None;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == own_pid || pid == 0 {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if bytes.is_empty() || !pattern.is_match(&cmdline_string(&bytes)) {
            continue;
        }
        let stat = match read_pid_stat(proc_root, pid) {
            Ok(Some(stat)) if !stat.is_defunct() => stat,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(pid, error = %e, "skipping a matching process");
                continue;
            }
        };
        let older = best
            .as_ref()
            .is_none_or(|b| (stat.starttime, pid) < (b.stat.starttime, b.pid));
        if older {
            best = Some(Located { pid, stat });
        }
    }
    best.ok_or_else(|| {
        HealthError::unavailable(
            Stage::Process,
            format!(
                "no process under {} has a command line matching /{}/",
                proc_root.display(),
                pattern.as_str()
            ),
        )
    })
}

/// The cores available to `pid`: its cgroup v2 limit (the tightest along its cgroup's
/// ancestors) capped at the host's cores, or the host's cores when unlimited or on a v1 host.
fn process_cores(proc_root: &Path, cgroup_root: &Path, pid: u32) -> Result<f64, HealthError> {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    let limit = match read_parsed(Stage::Cpu, &path, parse_cgroup_v2_path)? {
        None => None,
        Some(cgroup_path) => {
            let (dir, root) = cgroup::resolve_v2_dir(cgroup_root, &cgroup_path)?;
            cgroup::v2_cpu_limit(&dir, &root)?
        }
    };
    host::capacity(limit, proc_root)
}

/// Fills every non-disk field for the located process.
pub(crate) fn collect(
    found: &Located,
    proc_root: &Path,
    cgroup_root: &Path,
    user_hz: f64,
    sample: &mut HealthSample,
) {
    let dir = proc_root.join(found.pid.to_string());
    let cpu = found
        .stat
        .utime
        .checked_add(found.stat.stime)
        .map(|ticks| ticks as f64 / user_hz)
        .ok_or_else(|| {
            HealthError::parse(Stage::Cpu, &dir.join("stat"), "utime + stime overflows")
        });
    fill(&mut sample.cpu_seconds_total, &mut sample.errors, cpu);
    let cores = process_cores(proc_root, cgroup_root, found.pid);
    fill(&mut sample.cpu_cores, &mut sample.errors, cores);
    let memory = read_parsed(Stage::Memory, &dir.join("status"), parse_status_rss);
    fill(&mut sample.memory_used_bytes, &mut sample.errors, memory);
    host::fill_network(&dir.join("net/dev"), sample);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{fake, user_hz, HealthCollector, HealthConfig, ProcessSource};
    use super::*;
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn stat(pid: u32, comm: &str, state: char, utime: u64, stime: u64, starttime: u64) -> PidStat {
        PidStat {
            pid,
            comm: comm.to_string(),
            state,
            utime,
            stime,
            starttime,
        }
    }

    const NOT_STAT_MISSING: &str =
        "not a /proc/<pid>/stat line (PID (COMM) and 50 fields): a field is missing";

    #[test]
    fn parse_pid_stat_table() {
        let table: Vec<(String, Result<PidStat, &str>)> = vec![
            (
                fake::stat_line(42, "java", 'S', 250, 50, 9000),
                Ok(stat(42, "java", 'S', 250, 50, 9000)),
            ),
            (
                fake::stat_line(7, "a) (b c) R 1 2", 'R', 1, 2, 3),
                Ok(stat(7, "a) (b c) R 1 2", 'R', 1, 2, 3)),
            ),
            (
                fake::stat_line(8, ")", 'Z', 0, 0, 5),
                Ok(stat(8, ")", 'Z', 0, 0, 5)),
            ),
            (
                fake::stat_line(9, "", 'S', 0, 0, 5),
                Ok(stat(9, "", 'S', 0, 0, 5)),
            ),
            (
                "42 java S 1 2 3".to_string(),
                Err("no \"(\" before the command name"),
            ),
            (
                "42 (java S 1 2 3".to_string(),
                Err("no \")\" after the command name"),
            ),
            ("42 )java( S 1".to_string(), Err("\")\" comes before \"(\"")),
            ("(java) S 1".to_string(), Err("no \"PID \" before the command name")),
            ("42(java) S 1".to_string(), Err("no \"PID \" before the command name")),
            ("42 (java)".to_string(), Err("no fields after the command name")),
            ("42 (java)é 1".to_string(), Err("no fields after the command name")),
            (
                "x (java) S 1".to_string(),
                Err("not a /proc/<pid>/stat line (PID (COMM) and 50 fields): invalid digit found in string"),
            ),
            (
                "42 (java) S 1 2 3 4 5 6 7 8 9 10 11 12".to_string(),
                Err(NOT_STAT_MISSING),
            ),
            (
                // procfs-core reads the state's first letter only.
                fake::stat_line(42, "java", 'S', 1, 2, 3).replacen(" S ", " SS ", 1),
                Ok(stat(42, "java", 'S', 1, 2, 3)),
            ),
            (
                "42 (java) S 1 42 42 0 -1 4194560 100 0 0 0 -5 50 7 8 20 0 42 0 9000 1".to_string(),
                Err("not a /proc/<pid>/stat line (PID (COMM) and 50 fields): \"-5\" is not a number"),
            ),
            (
                "42 (java) S 1 42 42 0 -1 4194560 100 0 0 0 5 50 7 8 20 0 42 0 soon 1".to_string(),
                Err("not a /proc/<pid>/stat line (PID (COMM) and 50 fields): \"soon\" is not a number"),
            ),
            (String::new(), Err("no \"(\" before the command name")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_pid_stat(&input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn parse_pid_file_table() {
        let table: &[(&str, Result<u32, &str>)] = &[
            ("1234\n", Ok(1234)),
            ("  77  ", Ok(77)),
            ("", Err("the file is empty")),
            (" \n", Err("the file is empty")),
            ("0\n", Err("not a pid: \"0\"")),
            ("-3\n", Err("not a pid: \"-3\"")),
            ("12 13\n", Err("not a pid: \"12 13\"")),
            ("kafka\n", Err("not a pid: \"kafka\"")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_pid_file(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    const NOT_CGROUP: &str = "not a /proc/<pid>/cgroup file (ID:CONTROLLERS:PATH lines)";

    #[test]
    fn parse_cgroup_v2_path_table() {
        let table: Vec<(&str, Result<Option<&str>, String>)> = vec![
            ("0::/kubepods/pod1/abc\n", Ok(Some("/kubepods/pod1/abc"))),
            ("0::/\n", Ok(Some("/"))),
            ("0::/../other\n", Ok(Some("/../other"))),
            ("0::/weird:name\n", Ok(Some("/weird:name"))),
            // Hybrid: v1 lines first, then the unified one.
            (
                "12:memory:/x\n4:cpu,cpuacct:/x\n1:name=systemd:/x\n0::/x\n",
                Ok(Some("/x")),
            ),
            // Pure v1: no unified line.
            ("12:memory:/x\n4:cpu,cpuacct:/x\n", Ok(None)),
            ("", Ok(None)),
            (
                "garbage\n",
                Err(format!(
                    "{NOT_CGROUP}: \"garbage\" is not a number (invalid digit found in string)"
                )),
            ),
            (
                "0::/x\nx:y\n",
                Err(format!(
                    "{NOT_CGROUP}: \"x\" is not a number (invalid digit found in string)"
                )),
            ),
            (
                "1:cpu:/x\n2:y\n",
                Err(format!("{NOT_CGROUP}: path: a field is missing")),
            ),
            (
                "a:cpu:/x\n",
                Err(format!(
                    "{NOT_CGROUP}: \"a\" is not a number (invalid digit found in string)"
                )),
            ),
            (
                "0::relative\n",
                Err("cgroup path is not absolute: \"relative\"".to_string()),
            ),
        ];
        for (input, want) in table {
            let want = want.map(|o| o.map(str::to_string));
            assert_eq!(parse_cgroup_v2_path(input), want, "input {input:?}");
        }
    }

    #[test]
    fn cmdline_string_table() {
        let table: &[(&[u8], &str)] = &[
            (
                b"java\0-Xmx1g\0kafka.Kafka\0/etc/kafka/server.properties\0",
                "java -Xmx1g kafka.Kafka /etc/kafka/server.properties",
            ),
            (b"java\0-cp\0a b\0", "java -cp a b"),
            (
                b"rewritten title with spaces",
                "rewritten title with spaces",
            ),
            (b"", ""),
            (b"\0", ""),
            (b"a\0\0b\0", "a  b"),
            (b"caf\xff\0", "caf\u{fffd}"),
        ];
        for (input, want) in table {
            assert_eq!(cmdline_string(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn vmrss_table() {
        let status = fake::status("java", 2048);
        let kthread = status.replace("VmRSS:\t 2048 kB\n", "");
        let megabytes = status.replace("VmRSS:\t 2048 kB", "VmRSS:\t 12 MB");
        let words = status.replace("VmRSS:\t 2048 kB", "VmRSS:\t many kB");
        let huge = status.replace("VmRSS:\t 2048 kB", "VmRSS:\t 18446744073709551615 kB");
        let table: Vec<(&str, Result<u64, &str>)> = vec![
            (&status, Ok(2048 * 1024)),
            (&kthread, Err("no VmRSS line")),
            (&megabytes, Err("not a /proc/<pid>/status file: \"12 MB\" is not a number (invalid digit found in string)")),
            (&words, Err("not a /proc/<pid>/status file: \"many\" is not a number (invalid digit found in string)")),
            (&huge, Err("VmRSS 18446744073709551615 kB overflows in bytes")),
            ("Name:\tkthreadd\nState:\tS\n", Err("not a /proc/<pid>/status file: a field is missing")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_status_rss(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    /// Fake pids in the pattern tests start above Linux's PID_MAX_LIMIT (2^22), so they can never
    /// collide with this test process's own pid, which the scan skips.
    const P: u32 = 4_200_000;

    /// A fake /proc (2 host cores) and cgroup root; the broker's cgroup is limited to 0.5 cores.
    struct Tree {
        _tmp: tempfile::TempDir,
        proc_root: PathBuf,
        cgroup_root: PathBuf,
        pid_file: PathBuf,
    }

    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let cgroup_root = tmp.path().join("cgroup");
        fake::host(&proc_root);
        fake::write(&cgroup_root, "kafka.slice/cpu.max", "50000 100000\n");
        let pid_file = tmp.path().join("kafka.pid");
        Tree {
            proc_root,
            cgroup_root,
            pid_file,
            _tmp: tmp,
        }
    }

    /// pid 300: utime 250, stime 50, VmRSS 4096 kB, in the 0.5-core `/kafka.slice` cgroup.
    fn broker_300() -> fake::Proc {
        fake::Proc {
            utime: 250,
            stime: 50,
            net: (1000, 2000),
            cgroup: "/kafka.slice",
            ..fake::Proc::kafka(300, 9000, 4096)
        }
    }

    fn collector(t: &Tree, source: ProcessSource) -> HealthCollector {
        HealthCollector::new(HealthConfig {
            source,
            log_dirs: vec![],
            proc_root: t.proc_root.clone(),
            cgroup_root: t.cgroup_root.clone(),
        })
    }

    fn pattern() -> ProcessSource {
        ProcessSource::CmdlinePattern(Regex::new(r"java .*kafka\.Kafka").unwrap())
    }

    #[test]
    fn pid_file_reads_every_figure() {
        let t = tree();
        broker_300().write(&t.proc_root);
        std::fs::write(&t.pid_file, "300\n").unwrap();
        let mut c = collector(&t, ProcessSource::PidFile(t.pid_file.clone()));
        let s = c.collect();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(c.current_pid(), Some(300));
        assert_eq!(s.cpu_seconds_total, Some(300.0 / user_hz()));
        assert_eq!(s.cpu_cores, Some(0.5));
        assert_eq!(s.memory_used_bytes, Some(4096 * 1024));
        assert_eq!(s.network_receive_bytes_total, Some(1000));
        assert_eq!(s.network_transmit_bytes_total, Some(2000));
    }

    #[test]
    fn pid_file_follows_a_restart() {
        let t = tree();
        fake::Proc::kafka(300, 9000, 4096).write(&t.proc_root);
        fake::Proc::kafka(301, 9500, 8192).write(&t.proc_root);
        std::fs::write(&t.pid_file, "300").unwrap();
        let mut c = collector(&t, ProcessSource::PidFile(t.pid_file.clone()));
        assert_eq!(c.collect().memory_used_bytes, Some(4096 * 1024));
        std::fs::write(&t.pid_file, "301\n").unwrap();
        let s = c.collect();
        assert_eq!(c.current_pid(), Some(301));
        assert_eq!(s.memory_used_bytes, Some(8192 * 1024));
        assert_eq!(s.cpu_seconds_total, Some(8192.0 / user_hz()));
        // cgroup "/" has no cpu.max: the host's 2 cores.
        assert_eq!(s.cpu_cores, Some(2.0));
    }

    #[test]
    fn pid_file_errors() {
        let t = tree();
        fake::Proc::kafka(300, 9000, 4096).write(&t.proc_root);
        fake::write(
            &t.proc_root,
            "301/stat",
            &fake::stat_line(301, "java", 'Z', 1, 1, 1),
        );
        let mut c = collector(&t, ProcessSource::PidFile(t.pid_file.clone()));
        let file = t.pid_file.display();
        let cases: Vec<(Option<&str>, String)> = vec![
            (
                None,
                format!("process: cannot read {file}: No such file or directory (os error 2)"),
            ),
            (
                Some(""),
                format!("process: cannot parse {file}: the file is empty"),
            ),
            (
                Some("kafka"),
                format!("process: cannot parse {file}: not a pid: \"kafka\""),
            ),
            (
                Some("999"),
                format!(
                    "process: pid 999 from {file} is not running (no {})",
                    t.proc_root.join("999").display()
                ),
            ),
            (
                Some("301"),
                format!("process: pid 301 from {file} has exited (state Z)"),
            ),
        ];
        for (content, want) in cases {
            match content {
                Some(text) => std::fs::write(&t.pid_file, text).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&t.pid_file);
                }
            }
            let s = c.collect();
            let messages: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
            assert_eq!(messages, vec![want], "pid file {content:?}");
            assert_eq!(s.cpu_seconds_total, None);
            assert_eq!(s.cpu_cores, None);
            assert_eq!(s.memory_used_bytes, None);
            assert_eq!(s.network_receive_bytes_total, None);
            assert_eq!(c.current_pid(), None);
        }
    }

    #[test]
    fn pattern_picks_the_oldest_match_and_skips_own_pid_and_others() {
        let t = tree();
        let me = std::process::id();
        // The agent itself matches and is the oldest: skipped.
        fake::Proc::kafka(me, 10, 1).write(&t.proc_root);
        // Two brokers match; 500 started first even though its pid is larger.
        fake::Proc::kafka(P + 400, 2000, 400).write(&t.proc_root);
        fake::Proc {
            cgroup: "/kafka.slice",
            ..fake::Proc::kafka(P + 500, 1000, 500)
        }
        .write(&t.proc_root);
        // Not matching, a zombie, a kernel thread and a non-pid entry.
        fake::Proc {
            args: &["/usr/bin/zookeeper"],
            ..fake::Proc::kafka(P + 100, 1, 1)
        }
        .write(&t.proc_root);
        fake::write(
            &t.proc_root,
            &format!("{}/stat", P + 101),
            &fake::stat_line(P + 101, "java", 'Z', 1, 1, 2),
        );
        fake::write(
            &t.proc_root,
            &format!("{}/cmdline", P + 101),
            "java kafka.Kafka",
        );
        fake::write(
            &t.proc_root,
            &format!("{}/stat", P + 102),
            &fake::stat_line(P + 102, "kthreadd", 'S', 1, 1, 3),
        );
        fake::write(&t.proc_root, &format!("{}/cmdline", P + 102), "");
        fake::write(&t.proc_root, "self/cmdline", "java\0kafka.Kafka\0");
        let mut c = collector(&t, pattern());
        let s = c.collect();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(c.current_pid(), Some(P + 500));
        assert_eq!(s.cpu_seconds_total, Some(500.0 / user_hz()));
        assert_eq!(s.memory_used_bytes, Some(500 * 1024));
        assert_eq!(s.cpu_cores, Some(0.5));
    }

    #[test]
    fn pattern_with_equal_start_times_prefers_the_smaller_pid() {
        let t = tree();
        fake::Proc::kafka(P + 700, 1000, 7).write(&t.proc_root);
        fake::Proc::kafka(P + 600, 1000, 6).write(&t.proc_root);
        let mut c = collector(&t, pattern());
        c.collect();
        assert_eq!(c.current_pid(), Some(P + 600));
    }

    #[test]
    fn pattern_keeps_the_cached_process_without_rescanning() {
        let t = tree();
        fake::Proc::kafka(P + 500, 1000, 500).write(&t.proc_root);
        let mut c = collector(&t, pattern());
        c.collect();
        assert_eq!(c.current_pid(), Some(P + 500));
        // An (artificially) older match appears; the cached, still valid, pid is kept.
        fake::Proc::kafka(P + 200, 10, 200).write(&t.proc_root);
        fake::write(
            &t.proc_root,
            &format!("{}/stat", P + 500),
            &fake::stat_line(P + 500, "java", 'R', 80, 20, 1000),
        );
        let s = c.collect();
        assert_eq!(c.current_pid(), Some(P + 500));
        assert_eq!(s.cpu_seconds_total, Some(100.0 / user_hz()));
    }

    #[test]
    fn pattern_rescans_when_the_process_goes_away_or_its_pid_is_reused() {
        let t = tree();
        fake::Proc::kafka(P + 500, 1000, 500).write(&t.proc_root);
        let mut c = collector(&t, pattern());
        c.collect();
        assert_eq!(c.current_pid(), Some(P + 500));

        // Gone, and a new broker started as 510.
        std::fs::remove_dir_all(t.proc_root.join((P + 500).to_string())).unwrap();
        fake::Proc::kafka(P + 510, 3000, 510).write(&t.proc_root);
        let s = c.collect();
        assert!(s.errors.is_empty(), "{:?}", s.errors);
        assert_eq!(c.current_pid(), Some(P + 510));
        assert_eq!(s.memory_used_bytes, Some(510 * 1024));

        // pid 510 reused by another matching process (new starttime), while an older broker
        // 520 runs: the rescan finds 520.
        fake::Proc::kafka(P + 520, 3500, 520).write(&t.proc_root);
        fake::Proc::kafka(P + 510, 4000, 511).write(&t.proc_root);
        c.collect();
        assert_eq!(c.current_pid(), Some(P + 520));

        // 520 becomes a zombie: rescan finds 510 (start 4000).
        fake::write(
            &t.proc_root,
            &format!("{}/stat", P + 520),
            &fake::stat_line(P + 520, "java", 'Z', 2, 0, 3500),
        );
        let s = c.collect();
        assert_eq!(c.current_pid(), Some(P + 510));
        assert_eq!(s.memory_used_bytes, Some(511 * 1024));

        // Nothing matches any more.
        std::fs::remove_dir_all(t.proc_root.join((P + 510).to_string())).unwrap();
        let s = c.collect();
        assert_eq!(c.current_pid(), None);
        assert_eq!(s.cpu_seconds_total, None);
        let messages: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![format!(
                "process: no process under {} has a command line matching /java .*kafka\\.Kafka/",
                t.proc_root.display()
            )]
        );

        // And it comes back.
        fake::Proc::kafka(P + 530, 5000, 530).write(&t.proc_root);
        c.collect();
        assert_eq!(c.current_pid(), Some(P + 530));
    }

    #[test]
    fn missing_process_files_fail_only_their_field() {
        let t = tree();
        broker_300().write(&t.proc_root);
        std::fs::write(&t.pid_file, "300\n").unwrap();
        std::fs::remove_file(t.proc_root.join("300/status")).unwrap();
        std::fs::remove_file(t.proc_root.join("300/net/dev")).unwrap();
        std::fs::write(t.proc_root.join("300/cgroup"), "what\n").unwrap();
        let mut c = collector(&t, ProcessSource::PidFile(t.pid_file.clone()));
        let s = c.collect();
        assert_eq!(s.cpu_seconds_total, Some(300.0 / user_hz()));
        assert_eq!(s.cpu_cores, None);
        assert_eq!(s.memory_used_bytes, None);
        assert_eq!(s.network_receive_bytes_total, None);
        let dir = t.proc_root.join("300");
        let messages: Vec<String> = s.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![
                format!(
                    "cpu: cannot parse {}: {NOT_CGROUP}: \"what\" is not a number (invalid digit found in string)",
                    dir.join("cgroup").display()
                ),
                format!(
                    "memory: cannot read {}: No such file or directory (os error 2)",
                    dir.join("status").display()
                ),
                format!(
                    "network: cannot read {}: No such file or directory (os error 2)",
                    dir.join("net/dev").display()
                ),
            ]
        );
    }

    #[test]
    fn process_cores_cases() {
        let t = tree();
        fake::write(&t.cgroup_root, "kubepods/pod/cpu.max", "120000 100000\n");
        fake::write(&t.cgroup_root, "kubepods/pod/kafka/cpu.max", "max 100000\n");
        fake::write(
            &t.cgroup_root,
            "unified/system.slice/kafka.service/cpu.max",
            "25000 100000\n",
        );
        let cases: &[(&str, Result<f64, &str>)] = &[
            ("0::/kafka.slice\n", Ok(0.5)),
            // Container unlimited, pod 1.2 cores.
            ("0::/kubepods/pod/kafka\n", Ok(1.2)),
            // Hybrid host: the unified hierarchy.
            ("1:cpu:/x\n0::/system.slice/kafka.service\n", Ok(0.25)),
            // Root cgroup (no cpu.max) and pure v1: the host's 2 cores.
            ("0::/\n", Ok(2.0)),
            ("4:cpu,cpuacct:/x\n", Ok(2.0)),
            (
                "0::/../elsewhere\n",
                Err("outside this agent's cgroup namespace"),
            ),
            ("0::/kubepods/missing\n", Err("is not under")),
        ];
        for (cgroup_file, want) in cases {
            fake::write(&t.proc_root, "300/cgroup", cgroup_file);
            let got = process_cores(&t.proc_root, &t.cgroup_root, 300);
            match (want, got) {
                (Ok(w), Ok(g)) => assert!((w - g).abs() < 1e-9, "{cgroup_file:?}: {g} != {w}"),
                (Err(w), Err(g)) => {
                    assert_eq!(g.stage(), "cpu");
                    assert!(g.to_string().contains(w), "{cgroup_file:?}: {g}");
                }
                (w, g) => panic!("{cgroup_file:?}: want {w:?}, got {g:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn process_parsers_never_panic(text in "\\PC*", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_pid_stat(&text);
            let _ = parse_pid_file(&text);
            let _ = parse_cgroup_v2_path(&text);
            let _ = parse_status_rss(&text);
            let _ = cmdline_string(&bytes);
            let _ = parse_pid_stat(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn pid_stat_never_panics_on_near_miss_lines(
            line in "[0-9]{0,3}[ (]{0,2}[a-zé() ]{0,6}[) ]{0,2}[-0-9a-zé ]{0,80}",
        ) {
            let _ = parse_pid_stat(&line);
        }

        #[test]
        fn pid_stat_survives_any_command_name(
            comm in "[^\n\u{0}]{0,16}",
            utime in any::<u64>(),
            stime in any::<u64>(),
            start in any::<u64>(),
            state in "[RSDZTtXxIP]",
        ) {
            let state = state.chars().next().unwrap();
            let line = fake::stat_line(42, &comm, state, utime, stime, start);
            let got = parse_pid_stat(&line).unwrap();
            prop_assert_eq!(got, stat(42, &comm, state, utime, stime, start));
        }
    }
}
