//! Whole-host figures: `/proc/stat`, `/proc/meminfo` and `/proc/net/dev` (also used for a
//! process's `/proc/<pid>/net/dev`).

use std::path::Path;

use super::{fill, parse_u64_field, read_parsed, read_text, HealthError, HealthSample, Stage};

/// Received and transmitted bytes summed over every interface except `lo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NetTotals {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The non-idle clock ticks of the aggregate `cpu` line of `/proc/stat`: user + nice + system +
/// irq + softirq + steal. Idle and iowait are left out, and guest time is already in user.
/// Kernels older than 2.6.11 print fewer columns; the missing ones count as 0.
pub(crate) fn parse_stat_busy_ticks(text: &str) -> Result<u64, String> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some("cpu"))
        .ok_or("no aggregate \"cpu\" line")?;
    let fields: Vec<&str> = line.split_whitespace().skip(1).collect();
    if fields.len() < 4 {
        return Err(format!(
            "the \"cpu\" line has {} columns, expected at least 4 (user nice system idle)",
            fields.len()
        ));
    }
    const NAMES: [&str; 8] = [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ];
    let mut values = [0u64; 8];
    for (slot, (value, name)) in values.iter_mut().zip(fields.iter().zip(NAMES)) {
        *slot = parse_u64_field(value, name)?;
    }
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = values;
    [user, nice, system, irq, softirq, steal]
        .into_iter()
        .try_fold(0u64, u64::checked_add)
        .ok_or_else(|| "the CPU tick sum overflows".to_string())
}

/// The number of `cpuN` lines of `/proc/stat` (the online CPUs).
pub(crate) fn parse_stat_cores(text: &str) -> Result<u32, String> {
    let count = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            name.strip_prefix("cpu")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    match u32::try_from(count) {
        Ok(0) => Err("no \"cpuN\" lines".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{count} \"cpuN\" lines is not plausible")),
    }
}

/// Reads one `Key: value kB` line of `/proc/meminfo` (or `/proc/<pid>/status`) as bytes.
pub(crate) fn parse_kb_line(text: &str, key: &str) -> Result<u64, String> {
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
    let mut totals = NetTotals {
        rx_bytes: 0,
        tx_bytes: 0,
    };
    let mut interfaces = 0usize;
    for (n, line) in text.lines().enumerate() {
        let Some((name, counters)) = line.split_once(':') else {
            // The two header lines have no colon; anything else without one is garbage.
            if (n < 2 && line.contains('|')) || line.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "line {}: expected \"interface: counters\": {line:?}",
                n + 1
            ));
        };
        let name = name.trim();
        let fields: Vec<&str> = counters.split_whitespace().collect();
        if fields.len() < 16 {
            return Err(format!(
                "line {}: interface {name:?} has {} counters, expected 16",
                n + 1,
                fields.len()
            ));
        }
        let rx = parse_u64_field(fields[0], "receive bytes")?;
        let tx = parse_u64_field(fields[8], "transmit bytes")?;
        interfaces += 1;
        if name == "lo" {
            continue;
        }
        totals.rx_bytes = totals
            .rx_bytes
            .checked_add(rx)
            .ok_or("the receive byte sum overflows")?;
        totals.tx_bytes = totals
            .tx_bytes
            .checked_add(tx)
            .ok_or("the transmit byte sum overflows")?;
    }
    if interfaces == 0 {
        return Err("no interface lines".to_string());
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
    read_parsed(Stage::Cpu, &proc_root.join("stat"), parse_stat_cores).map(f64::from)
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
    let stat_path = proc_root.join("stat");
    match read_text(Stage::Cpu, &stat_path) {
        Ok(text) => {
            let cpu = parse_stat_busy_ticks(&text)
                .map(|ticks| ticks as f64 / user_hz)
                .map_err(|reason| HealthError::parse(Stage::Cpu, &stat_path, reason));
            fill(&mut sample.cpu_seconds_total, &mut sample.errors, cpu);
            let cores = parse_stat_cores(&text)
                .map(f64::from)
                .map_err(|reason| HealthError::parse(Stage::Cpu, &stat_path, reason));
            fill(&mut sample.cpu_cores, &mut sample.errors, cores);
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

    #[test]
    fn busy_ticks_table() {
        let table: &[(&str, Result<u64, &str>)] = &[
            // user nice system idle iowait irq softirq steal guest guest_nice
            (
                "cpu  100 20 30 1000 50 5 6 7 40 0\ncpu0 1 2 3 4\n",
                Ok(100 + 20 + 30 + 5 + 6 + 7),
            ),
            ("intr 1\ncpu 1 2 3 4\n", Ok(6)),
            ("cpu 1 2 3 4 5 6\n", Ok(1 + 2 + 3 + 6)),
            ("cpu0 1 2 3 4\n", Err("no aggregate \"cpu\" line")),
            ("", Err("no aggregate \"cpu\" line")),
            (
                "cpu 1 2 3\n",
                Err("the \"cpu\" line has 3 columns, expected at least 4 (user nice system idle)"),
            ),
            (
                "cpu 1 x 3 4\n",
                Err("nice is not an unsigned integer: \"x\""),
            ),
            (
                "cpu 1 2 3 4 5 -6\n",
                Err("irq is not an unsigned integer: \"-6\""),
            ),
            (
                "cpu 18446744073709551615 1 0 0\n",
                Err("the CPU tick sum overflows"),
            ),
        ];
        for (input, want) in table {
            let got = parse_stat_busy_ticks(input);
            assert_eq!(got, want.map_err(str::to_string), "input {input:?}");
        }
    }

    #[test]
    fn cores_table() {
        let table: &[(&str, Result<u32, &str>)] = &[
            (
                "cpu 1 2 3 4\ncpu0 1 2 3 4\ncpu1 1 2 3 4\ncpu17 1 2 3 4\n",
                Ok(3),
            ),
            ("cpu 1 2 3 4\ncpu0 1\n", Ok(1)),
            ("cpu 1 2 3 4\ncpux 1\ncpu 2\n", Err("no \"cpuN\" lines")),
            ("", Err("no \"cpuN\" lines")),
        ];
        for (input, want) in table {
            assert_eq!(
                parse_stat_cores(input),
                want.map_err(str::to_string),
                "input {input:?}"
            );
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

    #[test]
    fn net_dev_table() {
        let good = fake::net_dev((5000, 6000), &[("eth0", 1000, 2000), ("wlan0", 30, 40)]);
        let no_space = "Inter-|\n face |\n  eth0:12 0 0 0 0 0 0 0 34 0 0 0 0 0 0 0\n";
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
                no_space,
                Ok(NetTotals {
                    rx_bytes: 12,
                    tx_bytes: 34,
                }),
            ),
            (
                "Inter-|\n face |\n    lo: 1 0 0 0 0 0 0 0 2 0 0 0 0 0 0 0\n",
                Ok(NetTotals {
                    rx_bytes: 0,
                    tx_bytes: 0,
                }),
            ),
            (
                short,
                Err("line 3: interface \"eth0\" has 3 counters, expected 16".into()),
            ),
            (
                garbage,
                Err("line 3: expected \"interface: counters\": \"hello world\"".into()),
            ),
            (
                bad_number,
                Err("transmit bytes is not an unsigned integer: \"x\"".into()),
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
                format!("memory: cannot read {}: No such file or directory (os error 2)", meminfo.display()),
                format!(
                    "network: cannot parse {}: line 3: interface \"eth0\" has 2 counters, expected 16",
                    netdev.display()
                ),
            ]
        );
    }

    #[test]
    fn a_broken_cpu_line_still_counts_cores() {
        let root = tempfile::tempdir().unwrap();
        fake::host(root.path());
        std::fs::write(root.path().join("stat"), "cpu 1 2\ncpu0 1 2 3 4\n").unwrap();
        let mut sample = HealthSample::default();
        collect(root.path(), 100.0, &mut sample);
        assert_eq!(sample.cpu_seconds_total, None);
        assert_eq!(sample.cpu_cores, Some(1.0));
        assert_eq!(sample.errors.len(), 1);
        assert_eq!(sample.errors[0].stage(), "cpu");
        assert_eq!(sample.memory_used_bytes, Some(4_000_000 * 1024));
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
            let _ = parse_stat_busy_ticks(&text);
            let _ = parse_stat_cores(&text);
            let _ = parse_meminfo_used(&text);
            let _ = parse_kb_line(&text, "VmRSS");
            let _ = parse_net_dev(&text);
        }

        #[test]
        fn host_parsers_never_panic_on_near_miss_input(
            lines in proptest::collection::vec(
                "(cpu[0-9]?|MemTotal:|MemAvailable:| *eth0:| *lo:|Inter-\\|)( +[-0-9a-z]{0,21}){0,18}",
                0..6,
            )
        ) {
            let text = lines.join("\n");
            let _ = parse_stat_busy_ticks(&text);
            let _ = parse_stat_cores(&text);
            let _ = parse_meminfo_used(&text);
            let _ = parse_net_dev(&text);
        }

        #[test]
        fn net_dev_sums_every_interface_but_lo(
            ifaces in proptest::collection::vec(("[a-z]{1,8}[0-9]?", 0u64..1 << 40, 0u64..1 << 40), 0..8),
            lo in (0u64..1 << 40, 0u64..1 << 40),
        ) {
            let ifaces: Vec<(String, u64, u64)> =
                ifaces.into_iter().filter(|(n, _, _)| n != "lo").collect();
            let refs: Vec<(&str, u64, u64)> = ifaces.iter().map(|(n, r, t)| (n.as_str(), *r, *t)).collect();
            let text = fake::net_dev(lo, &refs);
            let got = parse_net_dev(&text).unwrap();
            prop_assert_eq!(got.rx_bytes, ifaces.iter().map(|i| i.1).sum::<u64>());
            prop_assert_eq!(got.tx_bytes, ifaces.iter().map(|i| i.2).sum::<u64>());
        }
    }
}
