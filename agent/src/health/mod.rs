//! Broker health: CPU, memory, network and disk figures for the Kafka broker this agent sits
//! next to (sidecar mode). It feeds `kafka_broker_cpu_seconds_total`, `kafka_broker_cpu_cores`,
//! `kafka_broker_memory_used_bytes`, `kafka_broker_network_{receive,transmit}_bytes_total` and
//! `kafka_broker_disk_{used,size}_bytes{path}`.
//!
//! Everything is read from plain files under [`HealthConfig::proc_root`] (normally `/proc`) and
//! [`HealthConfig::cgroup_root`] (normally `/sys/fs/cgroup`), plus one `statvfs(2)` per log
//! directory. The `/proc` files are parsed by `procfs-core` (`/proc/meminfo` aside: see
//! `host.rs`) from text this module reads itself, so that every error names the file. [`HealthCollector::collect`] blocks on file reads, so the caller runs it on
//! `spawn_blocking`. It never panics: every reading that fails adds one [`HealthError`] to
//! [`HealthSample::errors`] (naming the file and the reason) and leaves its field `None`; the
//! other fields are still filled.
//!
//! # Where the figures come from
//!
//! `USER_HZ` below is `sysconf(_SC_CLK_TCK)` (100 on every current Linux; 100 is also the
//! fallback if sysconf fails).
//!
//! ## [`ProcessSource::Host`]: the whole machine
//! - CPU seconds: the non-idle jiffies of the aggregate `cpu` line of `/proc/stat`
//!   (user + nice + system + irq + softirq + steal; not idle or iowait; guest time is already
//!   inside user) divided by `USER_HZ`.
//! - Cores: the number of `cpuN` lines in `/proc/stat` (online CPUs).
//! - Memory: `MemTotal - MemAvailable` from `/proc/meminfo`.
//! - Network: the sum of received / transmitted bytes over every interface of `/proc/net/dev`
//!   except `lo`. On a host with bridges or veth pairs a packet may be counted on several
//!   interfaces; prefer a process or cgroup source there.
//!
//! ## [`ProcessSource::PidFile`] and [`ProcessSource::CmdlinePattern`]: one process
//! - Locating it. A pid file is read on every collection (trimmed; it must hold one positive
//!   integer), so a restarted broker that rewrote the file is followed. A pattern is matched
//!   against every `/proc/<pid>/cmdline` with the NUL separators turned into spaces; the agent's
//!   own pid, kernel threads (empty command line) and zombies are skipped, and when several
//!   processes match, the oldest (smallest `starttime` in `/proc/<pid>/stat`, then the smallest
//!   pid) wins. The match is cached as (pid, starttime) and re-validated on every collection;
//!   if the process has gone, turned into a zombie, or its pid was reused (starttime changed),
//!   `/proc` is scanned again. When no process is found, one `process` error is reported and
//!   CPU, cores, memory and network stay `None`.
//! - CPU seconds: `(utime + stime)` of `/proc/<pid>/stat` divided by `USER_HZ`. The `comm`
//!   field may hold spaces and parentheses, so the line is split at its *last* `)`.
//! - Memory: `VmRSS` of `/proc/<pid>/status` (kB, converted to bytes).
//! - Network: `/proc/<pid>/net/dev` without `lo`, i.e. the interfaces of the process's network
//!   namespace (in Kubernetes: the broker pod's interfaces).
//! - Cores: the cgroup v2 `cpu.max` limit of the process. Its cgroup is the `0::/path` line of
//!   `/proc/<pid>/cgroup`, looked up under `cgroup_root` (or `cgroup_root/unified` on a hybrid
//!   host). Limits are hierarchical, so `cpu.max` is read in that directory and in each parent
//!   up to `cgroup_root`, and the smallest `quota / period` wins. With no limit (every level is
//!   `max` or has no `cpu.max`), or no `0::` line at all (a pure cgroup v1 host, whose limits
//!   are not read in this mode), the host's cores are used. A path with `..` (the broker's
//!   cgroup lies outside the agent's cgroup namespace) or a directory that does not exist is a
//!   `cpu` error rather than a silent fallback: use [`ProcessSource::Cgroup`] with a mounted
//!   directory instead.
//!
//! ## [`ProcessSource::Cgroup`]: a cgroup directory
//! The directory is cgroup v2 if it has `cgroup.controllers` or its `cpu.stat` has
//! `usage_usec`; otherwise it is cgroup v1.
//! - v2: CPU seconds = `usage_usec` of `cpu.stat` / 10^6; cores = `quota / period` of
//!   `cpu.max`, the smallest along the directory and its parents up to `cgroup_root` (host
//!   cores when every level is `max`); memory = `memory.current` minus `inactive_file` of
//!   `memory.stat` (the working set, as the kubelet computes it; saturating at 0).
//! - v1: CPU seconds = `cpuacct.usage` (ns) / 10^9; cores = `cpu.cfs_quota_us /
//!   cpu.cfs_period_us` (`-1` = unlimited: host cores); memory = `memory.usage_in_bytes` minus
//!   `total_inactive_file` of `memory.stat` (saturating). v1 keeps each controller in its own
//!   hierarchy, so a file missing from the directory is also looked for in the same relative
//!   path under the sibling hierarchies of `cgroup_root` (`cpuacct`, `cpu,cpuacct`, `memory`, …).
//! - Network (both): `/proc/<pid>/net/dev` (without `lo`) of the first pid in `cgroup.procs`; if
//!   the directory itself holds no process (a v2 pod-level cgroup), its sub-cgroups are searched.
//!
//! In every mode the cores figure is capped at the host's cores when both are known: a quota
//! above the machine's size cannot be used.
//!
//! ## Disks
//! For each configured log directory, `statvfs(2)`: size = `f_blocks * f_frsize`, used =
//! `(f_blocks - f_bfree) * f_frsize` (blocks reserved for root count as used, as `df` does). The
//! `path` label is the configured path as written. A directory that cannot be read is an error
//! for that directory only.

mod cgroup;
mod disk;
mod host;
mod process;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use regex::Regex;

pub(crate) use disk::DiskSample;

/// The default for [`HealthConfig::proc_root`].
pub(crate) const DEFAULT_PROC_ROOT: &str = "/proc";
/// The default for [`HealthConfig::cgroup_root`].
pub(crate) const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// `USER_HZ` used when `sysconf(_SC_CLK_TCK)` gives no answer.
pub(crate) const DEFAULT_USER_HZ: f64 = 100.0;

/// Where the broker's CPU, memory and network figures come from.
#[derive(Debug, Clone)]
pub(crate) enum ProcessSource {
    /// The whole machine (`/proc/stat`, `/proc/meminfo`, `/proc/net/dev`).
    Host,
    /// The process whose pid is written in this file (re-read on every collection).
    PidFile(PathBuf),
    /// The oldest process whose command line (NULs joined with spaces) matches this regex.
    CmdlinePattern(Regex),
    /// A cgroup directory (v2, or v1 as a fallback), for example the broker container's.
    Cgroup(PathBuf),
}

/// What [`HealthCollector`] reads.
#[derive(Debug, Clone)]
pub(crate) struct HealthConfig {
    /// Where CPU, memory and network come from.
    pub(crate) source: ProcessSource,
    /// The broker's log directories; one [`DiskSample`] each.
    pub(crate) log_dirs: Vec<PathBuf>,
    /// The procfs mount, normally `/proc`.
    pub(crate) proc_root: PathBuf,
    /// The cgroup filesystem mount, normally `/sys/fs/cgroup`.
    pub(crate) cgroup_root: PathBuf,
}

impl HealthConfig {
    /// A config reading the real `/proc` and `/sys/fs/cgroup`.
    pub(crate) fn new(source: ProcessSource, log_dirs: Vec<PathBuf>) -> Self {
        Self {
            source,
            log_dirs,
            proc_root: PathBuf::from(DEFAULT_PROC_ROOT),
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
        }
    }
}

/// One collection's figures. A field is `None` when its reading failed; the matching error is
/// in `errors`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HealthSample {
    /// CPU time used by the broker process, cgroup or host, in seconds (a counter).
    pub(crate) cpu_seconds_total: Option<f64>,
    /// CPU capacity available to the broker, in cores (cgroup quota, else host cores).
    pub(crate) cpu_cores: Option<f64>,
    /// Resident memory (process), working set (cgroup) or used memory (host), in bytes.
    pub(crate) memory_used_bytes: Option<u64>,
    /// Bytes received over every interface except `lo` (a counter).
    pub(crate) network_receive_bytes_total: Option<u64>,
    /// Bytes transmitted over every interface except `lo` (a counter).
    pub(crate) network_transmit_bytes_total: Option<u64>,
    /// One entry per log directory that could be read, in configuration order.
    pub(crate) disks: Vec<DiskSample>,
    /// One entry per reading that failed.
    pub(crate) errors: Vec<HealthError>,
}

/// Which reading an error belongs to; a bounded set, fit for a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stage {
    /// Locating the broker process or cgroup.
    Process,
    /// CPU seconds or CPU cores.
    Cpu,
    /// Memory.
    Memory,
    /// Network counters.
    Network,
    /// A log directory's filesystem.
    Disk,
}

impl Stage {
    /// The label value: `process`, `cpu`, `memory`, `network` or `disk`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Stage::Process => "process",
            Stage::Cpu => "cpu",
            Stage::Memory => "memory",
            Stage::Network => "network",
            Stage::Disk => "disk",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reading that failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub(crate) enum HealthError {
    /// A file (or a directory, for `statvfs`) could not be read.
    #[error("{stage}: cannot read {}: {reason}", path.display())]
    Read {
        /// The reading that failed.
        stage: Stage,
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        reason: String,
    },
    /// A file was read but does not hold what the kernel writes there.
    #[error("{stage}: cannot parse {}: {reason}", path.display())]
    Parse {
        /// The reading that failed.
        stage: Stage,
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// The thing to read does not exist: no matching process, no process in a cgroup, ...
    #[error("{stage}: {reason}")]
    Unavailable {
        /// The reading that failed.
        stage: Stage,
        /// What is missing.
        reason: String,
    },
}

impl HealthError {
    /// The reading that failed, as a bounded label value: `process`, `cpu`, `memory`,
    /// `network` or `disk`.
    pub(crate) fn stage(&self) -> &'static str {
        match self {
            HealthError::Read { stage, .. }
            | HealthError::Parse { stage, .. }
            | HealthError::Unavailable { stage, .. } => stage.as_str(),
        }
    }

    pub(crate) fn read(stage: Stage, path: &Path, err: &io::Error) -> Self {
        HealthError::Read {
            stage,
            path: path.to_path_buf(),
            reason: err.to_string(),
        }
    }

    pub(crate) fn parse(stage: Stage, path: &Path, reason: impl Into<String>) -> Self {
        HealthError::Parse {
            stage,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }

    pub(crate) fn unavailable(stage: Stage, reason: impl Into<String>) -> Self {
        HealthError::Unavailable {
            stage,
            reason: reason.into(),
        }
    }
}

/// Reads a whole text file; a failure becomes a [`HealthError::Read`] for `stage`.
pub(crate) fn read_text(stage: Stage, path: &Path) -> Result<String, HealthError> {
    std::fs::read_to_string(path).map_err(|e| HealthError::read(stage, path, &e))
}

/// Reads a text file and parses it; read and parse failures become errors for `stage`.
pub(crate) fn read_parsed<T>(
    stage: Stage,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, HealthError> {
    let text = read_text(stage, path)?;
    parse(&text).map_err(|reason| HealthError::parse(stage, path, reason))
}

/// Like [`read_parsed`], but a missing file is `Ok(None)`.
pub(crate) fn read_parsed_opt<T>(
    stage: Stage,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, HealthError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(Some)
            .map_err(|reason| HealthError::parse(stage, path, reason)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HealthError::read(stage, path, &e)),
    }
}

/// Parses one unsigned integer field, naming it in the error.
pub(crate) fn parse_u64_field(value: &str, name: &str) -> Result<u64, String> {
    value
        .parse::<u64>()
        .map_err(|_| format!("{name} is not an unsigned integer: {value:?}"))
}

/// Why `procfs-core` rejected a file, said as what the file should have been. Its parse errors
/// come framed as "please report this procfs bug" (nested once per layer) and quote its own
/// source expressions; on a file handed to it, the file is what is off, so only the value and
/// the reason are kept.
pub(crate) fn procfs_reason(expected: &str, err: procfs_core::ProcError) -> String {
    let detail = match err {
        procfs_core::ProcError::InternalError(e) => {
            let last = e.msg.rsplit('\n').next().unwrap_or_default();
            tidy_procfs_detail(last.trim_start_matches("Internal Unwrap Error: "))
        }
        other => other.to_string(),
    };
    format!("not {expected}: {detail}")
}

/// `Failed to parse EXPR ("VALUE") as a TYPE: WHY` and `VALUE: Failed to convert` name the
/// value; `NoneError` is a missing field.
fn tidy_procfs_detail(detail: &str) -> String {
    if let Some(rest) = detail.strip_prefix("Failed to parse ") {
        let open = rest.find(" (\"");
        let close = rest.rfind("\") as a ");
        if let (Some(open), Some(close)) = (open, close) {
            let value = rest.get(open + 2..=close).unwrap_or_default();
            let why = rest.get(close..).and_then(|t| t.split_once(": "));
            if let Some((_, why)) = why {
                return format!("{value} is not a number ({why})");
            }
        }
    }
    if let Some(value) = detail.strip_suffix(": Failed to convert") {
        return format!("{value:?} is not a number");
    }
    detail.replace("NoneError", "a field is missing")
}

/// Stores `result` into `field`, or its error into `errors`.
pub(crate) fn fill<T>(
    field: &mut Option<T>,
    errors: &mut Vec<HealthError>,
    result: Result<T, HealthError>,
) {
    match result {
        Ok(value) => *field = Some(value),
        Err(e) => errors.push(e),
    }
}

/// `sysconf(_SC_CLK_TCK)`, or [`DEFAULT_USER_HZ`] when it gives no positive answer.
pub(crate) fn user_hz() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => DEFAULT_USER_HZ,
    }
}

/// Reads the broker's health figures; see the module docs for where each comes from.
#[derive(Debug)]
pub(crate) struct HealthCollector {
    cfg: HealthConfig,
    user_hz: f64,
    own_pid: u32,
    /// The process found by [`ProcessSource::CmdlinePattern`], re-validated on each collection.
    tracked: Option<process::Tracked>,
    /// The pid the last collection read (any process source), for logging and tests.
    last_pid: Option<u32>,
}

impl HealthCollector {
    /// A collector for `cfg`. Nothing is read until [`HealthCollector::collect`].
    pub(crate) fn new(cfg: HealthConfig) -> Self {
        Self {
            cfg,
            user_hz: user_hz(),
            own_pid: std::process::id(),
            tracked: None,
            last_pid: None,
        }
    }

    /// The broker pid read by the last collection, for the process sources; `None` before the
    /// first collection, when the process was not found, and for the host and cgroup sources.
    #[cfg(test)]
    pub(crate) fn current_pid(&self) -> Option<u32> {
        self.last_pid
    }

    /// Reads every figure once. Blocking (reads files); the caller runs it on
    /// `spawn_blocking`. Never panics: failures are in [`HealthSample::errors`].
    pub(crate) fn collect(&mut self) -> HealthSample {
        let mut sample = HealthSample::default();
        let proc_root = self.cfg.proc_root.as_path();
        let cgroup_root = self.cfg.cgroup_root.as_path();
        let located = match &self.cfg.source {
            ProcessSource::Host => {
                host::collect(proc_root, self.user_hz, &mut sample);
                None
            }
            ProcessSource::Cgroup(dir) => {
                cgroup::collect(dir, cgroup_root, proc_root, &mut sample);
                None
            }
            ProcessSource::PidFile(file) => Some(process::locate_by_pid_file(proc_root, file)),
            ProcessSource::CmdlinePattern(pattern) => Some(process::locate_by_pattern(
                proc_root,
                pattern,
                self.own_pid,
                &mut self.tracked,
            )),
        };
        let pid = match located {
            None => None,
            Some(Ok(found)) => {
                let pid = found.pid;
                process::collect(&found, proc_root, cgroup_root, self.user_hz, &mut sample);
                Some(pid)
            }
            Some(Err(e)) => {
                sample.errors.push(e);
                None
            }
        };
        if pid != self.last_pid {
            if let Some(pid) = pid {
                tracing::info!(pid, "broker process found");
            }
        }
        self.last_pid = pid;
        disk::collect(&self.cfg.log_dirs, &mut sample);
        sample
    }
}

/// Writers for fake `/proc` and cgroup trees, shared by the tests of every submodule.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod fake {
    use std::path::Path;

    /// Writes `content` to `root/rel`, creating the parent directories.
    pub(super) fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, content).unwrap();
    }

    /// A `/proc/<pid>/stat` line with the given fields and plausible values elsewhere.
    pub(super) fn stat_line(
        pid: u32,
        comm: &str,
        state: char,
        utime: u64,
        stime: u64,
        start: u64,
    ) -> String {
        // Fields 4..=13: ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt.
        // Fields 16..=21: cutime cstime priority nice num_threads itrealvalue.
        // Fields 23..=52: vsize rss and the rest.
        let tail: Vec<String> = (23..=52).map(|n| n.to_string()).collect();
        format!(
            "{pid} ({comm}) {state} 1 {pid} {pid} 0 -1 4194560 100 0 0 0 {utime} {stime} 7 8 20 0 42 0 {start} {}\n",
            tail.join(" ")
        )
    }

    /// A `/proc/<pid>/status` file, as a 6.x kernel writes it, with the given `VmRSS` in kB.
    pub(super) fn status(name: &str, rss_kb: u64) -> String {
        format!(
            "Name:\t{name}\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t256\nGroups:\t1000 \nNStgid:\t42\nNSpid:\t42\nNSpgid:\t42\nNSsid:\t42\nVmPeak:\t 9999999 kB\nVmSize:\t 8888888 kB\nVmLck:\t       0 kB\nVmPin:\t       0 kB\nVmHWM:\t {} kB\nVmRSS:\t {rss_kb} kB\nRssAnon:\t       1 kB\nRssFile:\t       1 kB\nRssShmem:\t       0 kB\nVmData:\t  100 kB\nVmStk:\t  132 kB\nVmExe:\t   4 kB\nVmLib:\t 2000 kB\nVmPTE:\t  200 kB\nVmSwap:\t       0 kB\nHugetlbPages:\t       0 kB\nCoreDumping:\t0\nTHP_enabled:\t1\nThreads:\t42\nSigQ:\t0/63419\nSigPnd:\t0000000000000000\nShdPnd:\t0000000000000000\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\nSigCgt:\t2000000181005ccf\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\nSpeculation_Store_Bypass:\tthread vulnerable\nCpus_allowed:\tff\nCpus_allowed_list:\t0-7\nMems_allowed:\t00000001\nMems_allowed_list:\t0\nvoluntary_ctxt_switches:\t150\nnonvoluntary_ctxt_switches:\t545\n",
            rss_kb + 10
        )
    }

    /// A `/proc/net/dev` file: `lo` plus the given (name, rx bytes, tx bytes) interfaces.
    pub(super) fn net_dev(lo: (u64, u64), ifaces: &[(&str, u64, u64)]) -> String {
        let mut s = String::from(
            "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
        );
        s.push_str(&format!(
            "    lo: {}      29    0    0    0     0          0         0 {}      29    0    0    0     0       0          0\n",
            lo.0, lo.1
        ));
        for (name, rx, tx) in ifaces {
            s.push_str(&format!(
                "{name:>6}: {rx} 25802    0    0    0     0          0         0 {tx}   14807    0    0    0     0       0          0\n"
            ));
        }
        s
    }

    /// A fake process: stat, status, cmdline (args NUL-separated), net/dev and a cgroup v2
    /// membership line.
    #[derive(Debug, Clone)]
    pub(super) struct Proc {
        pub(crate) pid: u32,
        pub(crate) args: &'static [&'static str],
        pub(crate) utime: u64,
        pub(crate) stime: u64,
        pub(crate) start: u64,
        pub(crate) rss_kb: u64,
        pub(crate) net: (u64, u64),
        pub(crate) cgroup: &'static str,
    }

    impl Proc {
        /// A Kafka broker started at `start`; `n` is its utime, its VmRSS in kB and both of its
        /// network counters, so tests can tell processes apart. Its cgroup is `/`.
        pub(super) fn kafka(pid: u32, start: u64, n: u64) -> Self {
            Self {
                pid,
                args: &[
                    "java",
                    "-Xmx1g",
                    "kafka.Kafka",
                    "/etc/kafka/server.properties",
                ],
                utime: n,
                stime: 0,
                start,
                rss_kb: n,
                net: (n, n),
                cgroup: "/",
            }
        }

        /// Writes the process's files under `proc_root/<pid>/`.
        pub(super) fn write(&self, proc_root: &Path) {
            let pid = self.pid;
            let comm = self
                .args
                .first()
                .map_or("x", |a| a.rsplit('/').next().unwrap_or(a));
            let stat = stat_line(pid, comm, 'S', self.utime, self.stime, self.start);
            write(proc_root, &format!("{pid}/stat"), &stat);
            write(
                proc_root,
                &format!("{pid}/status"),
                &status(comm, self.rss_kb),
            );
            let mut cmdline = self.args.join("\0");
            cmdline.push('\0');
            write(proc_root, &format!("{pid}/cmdline"), &cmdline);
            let net = net_dev((7, 7), &[("eth0", self.net.0, self.net.1)]);
            write(proc_root, &format!("{pid}/net/dev"), &net);
            write(
                proc_root,
                &format!("{pid}/cgroup"),
                &format!("0::{}\n", self.cgroup),
            );
        }
    }

    /// A host `/proc`: stat with two CPUs, meminfo and net/dev.
    pub(super) fn host(proc_root: &Path) {
        write(
            proc_root,
            "stat",
            "cpu  100 20 30 1000 50 5 6 7 40 0\ncpu0 50 10 15 500 25 2 3 3 20 0\ncpu1 50 10 15 500 25 3 3 4 20 0\nintr 12345 0 0\nctxt 999\nbtime 1700000000\nprocesses 4242\n",
        );
        write(
            proc_root,
            "meminfo",
            "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:   12000000 kB\nBuffers:          100 kB\n",
        );
        write(
            proc_root,
            "net/dev",
            &net_dev((3193, 3193), &[("eth0", 1000, 2000), ("eth1", 30, 40)]),
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use procfs_core::FromRead;
    use std::time::{Duration, Instant};

    #[test]
    fn stage_labels_are_the_bounded_set() {
        let table = [
            (Stage::Process, "process"),
            (Stage::Cpu, "cpu"),
            (Stage::Memory, "memory"),
            (Stage::Network, "network"),
            (Stage::Disk, "disk"),
        ];
        for (stage, label) in table {
            assert_eq!(stage.as_str(), label);
            assert_eq!(HealthError::unavailable(stage, "x").stage(), label);
            assert_eq!(
                HealthError::read(
                    stage,
                    Path::new("/f"),
                    &io::Error::from(io::ErrorKind::NotFound)
                )
                .stage(),
                label
            );
            assert_eq!(
                HealthError::parse(stage, Path::new("/f"), "bad").stage(),
                label
            );
        }
    }

    #[test]
    fn error_messages_name_the_stage_file_and_reason() {
        let e = HealthError::parse(Stage::Memory, Path::new("/proc/7/status"), "no VmRSS line");
        assert_eq!(
            e.to_string(),
            "memory: cannot parse /proc/7/status: no VmRSS line"
        );
        let e = HealthError::read(
            Stage::Cpu,
            Path::new("/proc/stat"),
            &io::Error::from_raw_os_error(2),
        );
        assert_eq!(
            e.to_string(),
            "cpu: cannot read /proc/stat: No such file or directory (os error 2)"
        );
        let e = HealthError::unavailable(Stage::Process, "no process matches /kafka/");
        assert_eq!(e.to_string(), "process: no process matches /kafka/");
    }

    #[test]
    fn procfs_details_name_the_value_not_procfs_internals() {
        let table = [
            ("NoneError", "a field is missing"),
            ("hierarchy: NoneError", "hierarchy: a field is missing"),
            (
                "Failed to parse expect!(s.next()) (\"x\") as a u64: invalid digit found in string",
                "\"x\" is not a number (invalid digit found in string)",
            ),
            (
                "Failed to parse &s.replace(\" kB\", \"\") (\"12 MB\") as a T: invalid digit found in string",
                "\"12 MB\" is not a number (invalid digit found in string)",
            ),
            ("hello: Failed to convert", "\"hello\" is not a number"),
            ("invalid digit found in string", "invalid digit found in string"),
            ("Failed to parse (\"", "Failed to parse (\""),
        ];
        for (detail, want) in table {
            assert_eq!(tidy_procfs_detail(detail), want, "{detail:?}");
        }
        let nested = procfs_core::process::Stat::from_read(&b"1 (a) S"[..]).unwrap_err();
        assert_eq!(
            procfs_reason("a stat line", nested),
            "not a stat line: a field is missing"
        );
    }

    #[test]
    fn user_hz_is_the_kernel_value() {
        // USER_HZ is 100 on every architecture Linux still supports.
        assert_eq!(user_hz(), 100.0);
    }

    #[test]
    fn default_config_points_at_the_real_mounts() {
        let cfg = HealthConfig::new(ProcessSource::Host, vec![PathBuf::from("/data")]);
        assert_eq!(cfg.proc_root, PathBuf::from("/proc"));
        assert_eq!(cfg.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(cfg.log_dirs, vec![PathBuf::from("/data")]);
    }

    /// Burns CPU until this process has been charged at least `ticks` clock ticks.
    fn burn_cpu(ticks: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut x: u64 = 1;
        while Instant::now() < deadline {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            let parsed = process::parse_pid_stat(&stat).unwrap();
            if parsed.utime + parsed.stime >= ticks {
                return;
            }
        }
        panic!("could not burn {ticks} ticks of CPU in 10 s");
    }

    #[test]
    fn real_proc_for_this_process_via_pid_file() {
        burn_cpu(2);
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("broker.pid");
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let cfg = HealthConfig::new(
            ProcessSource::PidFile(pid_file),
            vec![dir.path().to_path_buf()],
        );
        let mut collector = HealthCollector::new(cfg);
        let sample = collector.collect();
        assert_eq!(collector.current_pid(), Some(std::process::id()));
        let cpu = sample.cpu_seconds_total.unwrap();
        assert!(cpu >= 0.02, "cpu seconds {cpu} after burning 2 ticks");
        let rss = sample.memory_used_bytes.unwrap();
        assert!(rss > 1024 * 1024, "rss {rss} bytes is implausibly small");
        assert!(
            rss < 64 * 1024 * 1024 * 1024,
            "rss {rss} bytes is implausibly large"
        );
        // The network namespace's counters exist (may legitimately be 0 in a sandbox).
        assert!(
            sample.network_receive_bytes_total.is_some(),
            "{:?}",
            sample.errors
        );
        assert!(
            sample.network_transmit_bytes_total.is_some(),
            "{:?}",
            sample.errors
        );
        assert_eq!(sample.disks.len(), 1);
        assert_eq!(sample.disks[0].path, dir.path().display().to_string());
        // A second collection sees a monotonic counter.
        burn_cpu(3);
        let again = collector.collect();
        assert!(again.cpu_seconds_total.unwrap() >= cpu);
    }

    #[test]
    fn real_proc_for_the_host() {
        burn_cpu(1);
        let mut collector = HealthCollector::new(HealthConfig::new(ProcessSource::Host, vec![]));
        let sample = collector.collect();
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert!(sample.cpu_seconds_total.unwrap() > 0.0);
        let cores = sample.cpu_cores.unwrap();
        let std_cores = std::thread::available_parallelism().unwrap().get() as f64;
        assert!(
            cores >= std_cores,
            "host cores {cores} < available parallelism {std_cores}"
        );
        let used = sample.memory_used_bytes.unwrap();
        assert!(used > 0);
        assert!(sample.network_receive_bytes_total.is_some());
        assert!(sample.disks.is_empty());
        assert_eq!(collector.current_pid(), None);
    }

    #[test]
    fn a_missing_process_leaves_disks_filled() {
        let proc_dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let cfg = HealthConfig {
            source: ProcessSource::PidFile(proc_dir.path().join("nope.pid")),
            log_dirs: vec![data.path().to_path_buf(), data.path().join("missing")],
            proc_root: proc_dir.path().to_path_buf(),
            cgroup_root: proc_dir.path().to_path_buf(),
        };
        let sample = HealthCollector::new(cfg).collect();
        assert_eq!(sample.cpu_seconds_total, None);
        assert_eq!(sample.cpu_cores, None);
        assert_eq!(sample.memory_used_bytes, None);
        assert_eq!(sample.network_receive_bytes_total, None);
        assert_eq!(sample.disks.len(), 1);
        assert_eq!(sample.disks[0].path, data.path().display().to_string());
        let stages: Vec<&str> = sample.errors.iter().map(HealthError::stage).collect();
        assert_eq!(stages, vec!["process", "disk"]);
        assert!(
            sample.errors[0].to_string().contains("nope.pid"),
            "{}",
            sample.errors[0]
        );
        assert!(
            sample.errors[1].to_string().contains("missing"),
            "{}",
            sample.errors[1]
        );
    }
}
