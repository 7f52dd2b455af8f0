//! A CPU-burning process standing in for an overloaded broker, and the medic-agent flags that
//! point the agent's broker-health source at it.
//!
//! `KafkaBrokerOverloaded` needs the broker's CPU use above 0.8 of its capacity. Burning 80% of
//! every core of a shared test machine is not an option, so the burner gets a small capacity of
//! its own:
//!
//! - **cgroup v1** (a `cpu` hierarchy at `/sys/fs/cgroup/cpu`, writable, as on this project's
//!   Debian machines run as root): a new cgroup with a CFS quota of [`QUOTA_CORES`] in the `cpu`,
//!   `cpuacct` and `memory` hierarchies; one `sh` busy loop inside it uses the whole quota. The
//!   agent reads that cgroup (`--process-source cgroup`): CPU from `cpuacct.usage`, capacity from
//!   the quota, exactly as it reads a broker container's cgroup.
//! - **otherwise** (no root, pure cgroup v2 without delegation): one niced busy loop per core,
//!   and the agent reads the whole host (`--process-source host`): every idle cycle is burnt, so
//!   the host is near 100% busy whatever else runs. Set `MEDIC_E2E_NO_CGROUP=1` to force this.
//!
//! Either way the figures are real: the kernel's accounting of a real busy process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The burner's CPU capacity in cgroup mode, in cores.
pub const QUOTA_CORES: f64 = 0.2;

/// How the burner is set up.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// In a v1 cgroup with a CPU quota (the directories created, `cpu` first).
    CgroupV1(Vec<PathBuf>),
    /// Niced busy loops on every core; the agent reads the host.
    Host,
}

/// The running burner; stopped (and its cgroups removed) on drop.
pub struct Burner {
    pub mode: Mode,
    children: Vec<Child>,
}

fn busy_loop(nice: bool) -> Child {
    let mut c = if nice {
        let mut c = Command::new("nice");
        c.args(["-n", "19", "sh", "-c", "while :; do :; done"]);
        c
    } else {
        let mut c = Command::new("sh");
        c.args(["-c", "while :; do :; done"]);
        c
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a busy loop")
}

/// Creates the v1 cgroups and returns their directories, or why not.
fn make_v1_cgroups(name: &str) -> Result<Vec<PathBuf>, String> {
    let root = Path::new("/sys/fs/cgroup");
    let cpu = root.join("cpu");
    if !cpu.join("cpu.cfs_quota_us").is_file() {
        return Err("no cgroup v1 cpu hierarchy at /sys/fs/cgroup/cpu".into());
    }
    let mut made = Vec::new();
    for h in ["cpu", "cpuacct", "memory"] {
        let base = root.join(h);
        if !base.is_dir() {
            continue;
        }
        let dir = base.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            remove_cgroups(&made);
            return Err(format!("mkdir {}: {e}", dir.display()));
        }
        made.push(dir);
    }
    let quota = (QUOTA_CORES * 100_000.0) as u64;
    let w = |f: &str, v: &str| std::fs::write(made[0].join(f), v);
    if let Err(e) =
        w("cpu.cfs_period_us", "100000").and_then(|_| w("cpu.cfs_quota_us", &quota.to_string()))
    {
        remove_cgroups(&made);
        return Err(format!("set the quota in {}: {e}", made[0].display()));
    }
    Ok(made)
}

fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        // The kernel removes a cgroup only once it is empty; the burner has been reaped.
        for _ in 0..50 {
            if std::fs::remove_dir(d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Burner {
    /// Starts the burner in a cgroup of its own if possible, else on every core.
    pub fn start() -> Burner {
        let name = format!(
            "medic-e2e-{}-{}",
            std::process::id(),
            crate::process::free_port()
        );
        let cgroups = if std::env::var_os("MEDIC_E2E_NO_CGROUP").is_some() {
            Err("MEDIC_E2E_NO_CGROUP is set".to_string())
        } else {
            make_v1_cgroups(&name)
        };
        match cgroups {
            Ok(dirs) => {
                let child = busy_loop(false);
                for d in &dirs {
                    if let Err(e) = std::fs::write(d.join("cgroup.procs"), child.id().to_string()) {
                        let mut b = Burner {
                            mode: Mode::CgroupV1(dirs.clone()),
                            children: vec![child],
                        };
                        b.stop();
                        panic!("move the burner into {}: {e}", d.display());
                    }
                }
                Burner {
                    mode: Mode::CgroupV1(dirs),
                    children: vec![child],
                }
            }
            Err(why) => {
                eprintln!("burner: no cgroup of its own ({why}); burning every core at nice 19");
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                Burner {
                    mode: Mode::Host,
                    children: (0..n).map(|_| busy_loop(true)).collect(),
                }
            }
        }
    }

    /// The medic-agent flags for this burner as the broker's process.
    pub fn agent_args(&self) -> Vec<String> {
        match &self.mode {
            Mode::CgroupV1(dirs) => vec![
                "--process-source".into(),
                "cgroup".into(),
                "--process-cgroup-dir".into(),
                dirs[0].display().to_string(),
            ],
            Mode::Host => vec!["--process-source".into(), "host".into()],
        }
    }

    /// The burner's pid(s).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Kills the busy loops and removes the cgroups.
    pub fn stop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        if let Mode::CgroupV1(dirs) = &self.mode {
            remove_cgroups(dirs);
        }
    }
}

impl Drop for Burner {
    fn drop(&mut self) {
        self.stop();
    }
}
