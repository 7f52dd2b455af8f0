//! Whole-host figures: `/proc/stat`, `/proc/meminfo` and `/proc/net/dev` (also used for a
//! process's `/proc/<pid>/net/dev`).
//!
//! `/proc/stat` and `net/dev` are parsed by `procfs-core`. `/proc/meminfo` stays hand-written:
//! procfs-core's `Meminfo` insists on about ten keys this module never reads, panics on a key
//! whose last character is not ASCII, and multiplies kB by 1024 unchecked; two `kB` lines do
//! not need it.

use std::path::Path;

use procfs_core::net::InterfaceDeviceStatus;
use procfs_core::{ExplicitSystemInfo, FromBufRead, FromBufReadSI, KernelStats};

use super::{fill, parse_u64_field, procfs_reason, read_parsed, HealthError, HealthSample, Stage};

/// Received and transmitted bytes summed over every interface except `lo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetTotals {
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
}

/// What `/proc/stat` gives: the non-idle clock ticks of the aggregate `cpu` line and the number
/// of `cpuN` lines (the online CPUs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuStat {
    pub(crate) busy_ticks: u64,
    pub(crate) cores: u32,
}

/// The system information `KernelStats` asks for. Only its raw tick fields are read here, never
/// its millisecond helpers, so the clock rate it is given does not change any figure.
const STAT_SYSTEM_INFO: ExplicitSystemInfo = ExplicitSystemInfo {
    boot_time_secs: 0,
    ticks_per_second: 100,
    page_size: 4096,
    is_little_endian: cfg!(target_endian = "little"),
};

/// Parses `/proc/stat`. Busy ticks are user + nice + system + irq + softirq + steal: idle and
/// iowait are left out, and guest time is already in user. Kernels older than 2.6.11 print
/// fewer columns; the missing ones count as 0.
pub(crate) fn parse_stat(text: &str) -> Result<CpuStat, String> {
    let stats = KernelStats::from_buf_read(text.as_bytes(), &STAT_SYSTEM_INFO).map_err(|e| {
        procfs_reason(
            "a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines)",
            e,
        )
    })?;
    let t = &stats.total;
    let busy_ticks = [t.user, t.nice, t.system]
        .into_iter()
        .chain([t.irq, t.softirq, t.steal].into_iter().flatten())
        .try_fold(0u64, u64::checked_add)
        .ok_or("the CPU tick sum overflows")?;
    let cores = match u32::try_from(stats.cpu_time.len()) {
        Ok(0) => return Err("no \"cpuN\" lines".to_string()),
        Ok(n) => n,
        Err(_) => {
            return Err(format!(
                "{} \"cpuN\" lines is not plausible",
                stats.cpu_time.len()
            ))
        }
    };
    Ok(CpuStat { busy_ticks, cores })
}

/// Reads one `Key: value kB` line of `/proc/meminfo` as bytes.
fn parse_kb_line(text: &str, key: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.split(':').next() == Some(key))
        .ok_or_else(|| format!("no {key} line"))?;
    let rest = line.get(key.len() + 1..).unwrap_or_default();
    let mut parts = rest.split_whitespace();
    let value = parts.next().ok_or_else(|| format!("{key} has no value"))?;
    let kb = parse_u64_field(value, key)?;
    match (parts.next(), parts.next()) {
        (Some("kB"), None) => {}
        (unit, _) => return Err(format!("{key} has unit {unit:?}, expected \"kB\"")),
    }
    kb.checked_mul(1024)
        .ok_or_else(|| format!("{key} {kb} kB overflows in bytes"))
}

/// `MemTotal - MemAvailable` of `/proc/meminfo`, in bytes.
pub(crate) fn parse_meminfo_used(text: &str) -> Result<u64, String> {
    let total = parse_kb_line(text, "MemTotal")?;
    let available = parse_kb_line(text, "MemAvailable")?;
    Ok(total.saturating_sub(available))
}

/// Sums the receive and transmit bytes of a `/proc/net/dev` file over every interface but `lo`.
pub(crate) fn parse_net_dev(text: &str) -> Result<NetTotals, String> {
    let table = InterfaceDeviceStatus::from_buf_read(text.as_bytes()).map_err(|e| {
        procfs_reason(
            "a net/dev table (two header lines, then \"NAME: 16 counters\" per interface)",
            e,
        )
    })?;
    if table.0.is_empty() {
        return Err("no interface lines".to_string());
    }
    let mut totals = NetTotals {
        rx_bytes: 0,
        tx_bytes: 0,
    };
    for dev in table.0.values().filter(|dev| dev.name != "lo") {
        totals.rx_bytes = totals
            .rx_bytes
            .checked_add(dev.recv_bytes)
            .ok_or("the receive byte sum overflows")?;
        totals.tx_bytes = totals
            .tx_bytes
            .checked_add(dev.sent_bytes)
            .ok_or("the transmit byte sum overflows")?;
    }
    Ok(totals)
}

/// Reads and sums a `net/dev` file into the sample's network fields.
pub(crate) fn fill_network(path: &Path, sample: &mut HealthSample) {
    match read_parsed(Stage::Network, path, parse_net_dev) {
        Ok(net) => {
            sample.network_receive_bytes_total = Some(net.rx_bytes);
            sample.network_transmit_bytes_total = Some(net.tx_bytes);
        }
        Err(e) => sample.errors.push(e),
    }
}

/// The host's online CPUs, from `proc_root/stat`.
pub(crate) fn read_host_cores(proc_root: &Path) -> Result<f64, HealthError> {
    read_parsed(Stage::Cpu, &proc_root.join("stat"), parse_stat).map(|stat| f64::from(stat.cores))
}

/// The cores available under a cgroup `limit` (`None` = unlimited): the limit capped at the
/// host's cores, or the host's cores. If the host's cores cannot be read, a limit still counts.
pub(crate) fn capacity(limit: Option<f64>, proc_root: &Path) -> Result<f64, HealthError> {
    match limit {
        Some(limit) => Ok(read_host_cores(proc_root).map_or(limit, |host| limit.min(host))),
        None => read_host_cores(proc_root),
    }
}

/// Fills every non-disk field from the host's `/proc`.
pub(crate) fn collect(proc_root: &Path, user_hz: f64, sample: &mut HealthSample) {
    // One parse gives both CPU figures, so a broken file fails both with one error, as an
    // unreadable one does.
    match read_parsed(Stage::Cpu, &proc_root.join("stat"), parse_stat) {
        Ok(stat) => {
            sample.cpu_seconds_total = Some(stat.busy_ticks as f64 / user_hz);
            sample.cpu_cores = Some(f64::from(stat.cores));
        }
        Err(e) => sample.errors.push(e),
    }
    let memory = read_parsed(
        Stage::Memory,
        &proc_root.join("meminfo"),
        parse_meminfo_used,
    );
    fill(&mut sample.memory_used_bytes, &mut sample.errors, memory);
    fill_network(&proc_root.join("net/dev"), sample);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{fake, user_hz};
    use super::*;
    use proptest::prelude::*;

    /// A `/proc/stat` with the given `cpu` line, `cpuN` lines and the lines procfs-core needs.
    fn stat_file(cpu: &str, cores: &[&str]) -> String {
        let mut s = format!("{cpu}\n");
        for line in cores {
            s.push_str(line);
            s.push('\n');
        }
        s.push_str("intr 1\nctxt 999\nbtime 1700000000\nprocesses 4242\n");
        s
    }

    #[test]
    fn stat_table() {
        let cpu0 = "cpu0 1 2 3 4";
        let table: Vec<(String, Result<CpuStat, &str>)> = vec![
            // user nice system idle iowait irq softirq steal guest guest_nice
            (
                stat_file("cpu  100 20 30 1000 50 5 6 7 40 0", &[cpu0, "cpu1 1 2 3 4", "cpu17 1 2 3 4"]),
                Ok(CpuStat { busy_ticks: 100 + 20 + 30 + 5 + 6 + 7, cores: 3 }),
            ),
            (stat_file("cpu 1 2 3 4", &[cpu0]), Ok(CpuStat { busy_ticks: 6, cores: 1 })),
            (
                stat_file("cpu 1 2 3 4 5 6", &[cpu0]),
                Ok(CpuStat { busy_ticks: 1 + 2 + 3 + 6, cores: 1 }),
            ),
            (
                stat_file("cpu 1 2 3 4", &[]),
                Err("no \"cpuN\" lines"),
            ),
            (
                stat_file("cpu 18446744073709551615 1 0 0", &[cpu0]),
                Err("the CPU tick sum overflows"),
            ),
            (
                stat_file("intr 1", &[cpu0]),
                Err("not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): a field is missing"),
            ),
            (
                stat_file("cpu 1 2 3", &[cpu0]),
                Err("not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): a field is missing"),
            ),
            (
                stat_file("cpu 1 x 3 4", &[cpu0]),
                Err("not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): \"x\" is not a number (invalid digit found in string)"),
            ),
            (
                "cpu 1 2 3 4\ncpu0 1 2 3 4\n".to_string(),
                Err("not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): a field is missing"),
            ),
            (
                String::new(),
                Err("not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): a field is missing"),
            ),
        ];
        for (input, want) in table {
            let got = parse_stat(&input);
            assert_eq!(got, want.map_err(str::to_string), "input {input:?}");
        }
    }

    #[test]
    fn meminfo_table() {
        let table: &[(&str, Result<u64, &str>)] = &[
            (
                "MemTotal: 1000 kB\nMemFree: 1 kB\nMemAvailable: 400 kB\n",
                Ok(600 * 1024),
            ),
            (
                "MemAvailable:   400 kB\nMemTotal:\t1000 kB\n",
                Ok(600 * 1024),
            ),
            ("MemTotal: 100 kB\nMemAvailable: 400 kB\n", Ok(0)),
            (
                "MemTotal: 1000 kB\nMemFree: 1 kB\n",
                Err("no MemAvailable line"),
            ),
            (
                "MemTotal: 1000 MB\nMemAvailable: 1 kB\n",
                Err("MemTotal has unit Some(\"MB\"), expected \"kB\""),
            ),
            (
                "MemTotal: 1000\nMemAvailable: 1 kB\n",
                Err("MemTotal has unit None, expected \"kB\""),
            ),
            (
                "MemTotal:\nMemAvailable: 1 kB\n",
                Err("MemTotal has no value"),
            ),
            (
                "MemTotal: lots kB\n",
                Err("MemTotal is not an unsigned integer: \"lots\""),
            ),
            (
                "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n",
                Err("MemTotal 18446744073709551615 kB overflows in bytes"),
            ),
            ("", Err("no MemTotal line")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_meminfo_used(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
    }

    const NOT_NET_DEV: &str =
        "not a net/dev table (two header lines, then \"NAME: 16 counters\" per interface)";

    #[test]
    fn net_dev_table() {
        let good = fake::net_dev((5000, 6000), &[("eth0", 1000, 2000), ("wlan0", 30, 40)]);
        let short = "Inter-|\n face |\n  eth0: 1 2 3\n";
        let garbage = "Inter-|\n face |\nhello world\n";
        let bad_number = "Inter-|\n face |\n  eth0: 1 2 3 4 5 6 7 8 x 0 0 0 0 0 0 0\n";
        let table: Vec<(&str, Result<NetTotals, String>)> = vec![
            (
                &good,
                Ok(NetTotals {
                    rx_bytes: 1030,
                    tx_bytes: 2040,
                }),
            ),
            (
                "Inter-|\n face |\n    lo: 1 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n",
                Ok(NetTotals {
                    rx_bytes: 0,
                    tx_bytes: 0,
                }),
            ),
            (short, Err(format!("{NOT_NET_DEV}: a field is missing"))),
            (
                garbage,
                Err(format!("{NOT_NET_DEV}: \"world\" is not a number")),
            ),
            (
                bad_number,
                Err(format!("{NOT_NET_DEV}: \"x\" is not a number")),
            ),
            ("", Err("no interface lines".into())),
            ("Inter-|\n face |\n", Err("no interface lines".into())),
        ];
        for (input, want) in table {
            assert_eq!(parse_net_dev(input), want, "input {input:?}");
        }
    }

    #[test]
    fn fake_host_tree() {
        let root = tempfile::tempdir().unwrap();
        fake::host(root.path());
        let mut sample = HealthSample::default();
        collect(root.path(), user_hz(), &mut sample);
        assert!(sample.errors.is_empty(), "{:?}", sample.errors);
        assert_eq!(
            sample.cpu_seconds_total,
            Some((100 + 20 + 30 + 5 + 6 + 7) as f64 / user_hz())
        );
        assert_eq!(sample.cpu_cores, Some(2.0));
        assert_eq!(sample.memory_used_bytes, Some(4_000_000 * 1024));
        assert_eq!(sample.network_receive_bytes_total, Some(1030));
        assert_eq!(sample.network_transmit_bytes_total, Some(2040));
    }

    #[test]
    fn fake_host_tree_with_missing_and_broken_files() {
        let root = tempfile::tempdir().unwrap();
        fake::host(root.path());
        std::fs::remove_file(root.path().join("meminfo")).unwrap();
        std::fs::write(
            root.path().join("net/dev"),
            "Inter-|\n face |\n eth0: 1 2\n",
        )
        .unwrap();
        let mut sample = HealthSample::default();
        collect(root.path(), 100.0, &mut sample);
        assert_eq!(sample.cpu_seconds_total, Some(1.68));
        assert_eq!(sample.cpu_cores, Some(2.0));
        assert_eq!(sample.memory_used_bytes, None);
        assert_eq!(sample.network_receive_bytes_total, None);
        assert_eq!(sample.network_transmit_bytes_total, None);
        let messages: Vec<String> = sample.errors.iter().map(ToString::to_string).collect();
        let meminfo = root.path().join("meminfo");
        let netdev = root.path().join("net/dev");
        assert_eq!(
            messages,
            vec![
                format!(
                    "memory: cannot read {}: No such file or directory (os error 2)",
                    meminfo.display()
                ),
                format!(
                    "network: cannot parse {}: {NOT_NET_DEV}: a field is missing",
                    netdev.display()
                ),
            ]
        );
    }

    #[test]
    fn a_broken_stat_file_fails_both_cpu_figures_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        fake::host(root.path());
        std::fs::write(root.path().join("stat"), "cpu 1 2\ncpu0 1 2 3 4\n").unwrap();
        let mut sample = HealthSample::default();
        collect(root.path(), 100.0, &mut sample);
        assert_eq!(sample.cpu_seconds_total, None);
        assert_eq!(sample.cpu_cores, None);
        let messages: Vec<String> = sample.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            vec![format!(
                "cpu: cannot parse {}: not a /proc/stat file (\"cpu\", \"cpuN\", ctxt, btime, processes lines): a field is missing",
                root.path().join("stat").display()
            )]
        );
        assert_eq!(sample.memory_used_bytes, Some(4_000_000 * 1024));
        assert_eq!(sample.network_receive_bytes_total, Some(1030));
    }

    #[test]
    fn capacity_caps_a_limit_at_the_host() {
        let root = tempfile::tempdir().unwrap();
        fake::host(root.path()); // 2 cores
        assert_eq!(capacity(Some(0.5), root.path()), Ok(0.5));
        assert_eq!(capacity(Some(8.0), root.path()), Ok(2.0));
        assert_eq!(capacity(None, root.path()), Ok(2.0));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(capacity(Some(1.5), empty.path()), Ok(1.5));
        let err = capacity(None, empty.path()).unwrap_err();
        assert_eq!(err.stage(), "cpu");
        assert!(err.to_string().contains("stat"), "{err}");
    }

    proptest! {
        #[test]
        fn host_parsers_never_panic(text in "\\PC*") {
            let _ = parse_stat(&text);
            let _ = parse_meminfo_used(&text);
            let _ = parse_kb_line(&text, "VmRSS");
            let _ = parse_net_dev(&text);
        }

        #[test]
        fn host_parsers_never_panic_on_near_miss_input(
            lines in proptest::collection::vec(
                "(cpu[0-9]?|ctxt|btime|processes|MemTotal:|MemAvailable:| *eth0:| *lo:|Inter-\\|)( +[-0-9a-z]{0,21}){0,18}",
                0..6,
            )
        ) {
            let text = lines.join("\n");
            let _ = parse_stat(&text);
            let _ = parse_meminfo_used(&text);
            let _ = parse_net_dev(&text);
        }

        #[test]
        fn net_dev_sums_every_interface_but_lo(
            // The kernel lists each interface once.
            ifaces in proptest::collection::btree_map("[a-z]{1,8}[0-9]?", (0u64..1 << 40, 0u64..1 << 40), 0..8),
            lo in (0u64..1 << 40, 0u64..1 << 40),
        ) {
            let refs: Vec<(&str, u64, u64)> = ifaces
                .iter()
                .filter(|(n, _)| n.as_str() != "lo")
                .map(|(n, (r, t))| (n.as_str(), *r, *t))
                .collect();
            let text = fake::net_dev(lo, &refs);
            let got = parse_net_dev(&text).unwrap();
            prop_assert_eq!(got.rx_bytes, refs.iter().map(|i| i.1).sum::<u64>());
            prop_assert_eq!(got.tx_bytes, refs.iter().map(|i| i.2).sum::<u64>());
        }
    }
}
