//! Child processes for tests: start, wait until ready, capture logs, stop on drop.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Finds a tool: `$MEDIC_TOOLS/<name>`, `~/.cache/kafka-medic/bin/<name>`, then `$PATH`.
pub fn tool(name: &str) -> PathBuf {
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("MEDIC_TOOLS") {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(h) = std::env::var("HOME") {
        dirs.push(Path::new(&h).join(".cache/kafka-medic/bin"));
    }
    if let Ok(p) = std::env::var("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    for d in dirs {
        let c = d.join(name);
        if c.is_file() {
            return c;
        }
    }
    panic!("{name} not found: run scripts/install-deps.sh first");
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A child process whose stdout and stderr go to a log file, killed on drop.
pub struct Server {
    pub name: String,
    cmd: Vec<String>,
    child: Option<Child>,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `program args…`, logging to a temporary file.
    pub fn start(name: &str, program: &Path, args: &[String]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let log_path = dir.path().join(format!("{name}.log"));
        let mut s = Server {
            name: name.to_string(),
            cmd: std::iter::once(program.display().to_string())
                .chain(args.iter().cloned())
                .collect(),
            child: None,
            log_path,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            // The harness's own variables: the binaries refuse MEDIC_AGENT_* / MEDIC_ACTUATOR_*
            // variables they do not know.
            .env_remove("MEDIC_AGENT_BIN")
            .env_remove("MEDIC_ACTUATOR_BIN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.cmd.join(" ")));
        self.child = Some(child);
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns the exit status code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut c = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Starts the same command again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// True while the process runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The command line and the log, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "--- {} ({}) ---\n{}\n--- end of {} ---",
            self.name,
            self.cmd.join(" "),
            self.log(),
            self.name
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
    }
}

/// A tansu Kafka-protocol broker (one node, id 111, in-memory storage) on a free port.
pub struct Tansu {
    pub port: u16,
    pub server: Server,
}

impl Tansu {
    /// Starts tansu and waits until it accepts connections.
    pub fn start() -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let bin = std::env::var("TANSU_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| tool("tansu"));
        let server = Server::start(
            "tansu",
            &bin,
            &[
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                "--storage-engine".into(),
                "memory://tansu/".into(),
            ],
        );
        let t = Tansu { port, server };
        assert!(
            wait_for_port(port, Duration::from_secs(10)),
            "tansu did not start\n{}",
            t.server.describe()
        );
        t
    }

    /// `127.0.0.1:<port>`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's node id.
    pub const NODE_ID: i32 = 111;

    /// Kills the broker (SIGKILL). Its in-memory data is gone.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the broker again on the same port, empty.
    pub fn restart(&mut self) {
        self.server.restart();
        assert!(
            wait_for_port(self.port, Duration::from_secs(10)),
            "tansu did not restart\n{}",
            self.server.describe()
        );
    }
}

/// The repository root (the workspace), where `rules/` and `scripts/` live.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The target profile directory this executable runs from (`target/debug` or
/// `target/release`): the executable's directory, or its parent for `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .expect("executable has a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("deps has a parent").to_path_buf()
    } else {
        dir
    }
}

/// A workspace binary (`medic-agent`, `medic-actuator`), from `$MEDIC_<NAME>_BIN` if set, else
/// next to the running executable in the same target directory and profile.
///
/// `cargo test --workspace` builds every workspace binary before it runs any test (each
/// package's integration tests need that package's binaries), so in the README's test command
/// they are always there and fresh. When only this crate is tested (`cargo test -p medic-e2e`),
/// a missing binary is built once with `cargo build -p medic-agent -p medic-actuator` in the
/// same target directory and profile.
pub fn workspace_bin(name: &str) -> PathBuf {
    let var = format!(
        "MEDIC_{}_BIN",
        name.trim_start_matches("medic-").to_ascii_uppercase()
    );
    if let Ok(p) = std::env::var(&var) {
        return PathBuf::from(p);
    }
    let profile = profile_dir();
    let path = profile.join(name);
    if !path.is_file() {
        build_workspace_bins(&profile);
    }
    assert!(
        path.is_file(),
        "{} not found after building; set {var} to the binary",
        path.display()
    );
    path
}

fn build_workspace_bins(profile: &Path) {
    static BUILD: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let target = profile.parent().expect("profile dir has a parent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root())
        .args(["build", "-p", "medic-agent", "-p", "medic-actuator"])
        .env("CARGO_TARGET_DIR", target);
    if profile.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    eprintln!("building the workspace binaries: {cmd:?}");
    let status = cmd.status().expect("run cargo build");
    assert!(status.success(), "{cmd:?} failed: {status}");
    *done = true;
}
