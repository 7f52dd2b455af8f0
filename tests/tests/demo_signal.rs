//! `kill -TERM` on the demo driver stops every server it started, as Ctrl-C does: the process
//! exits on its own, the ports it printed no longer accept connections, and no child it started
//! is left running.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use medic_e2e::process::workspace_bin;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The state letter and parent pid of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut out: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect();
    out.sort_unstable();
    out
}

/// Still running: it exists and is not a zombie (a zombie has exited, it only awaits a reaper).
fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// The port of the first `http://127.0.0.1:<port>` in `line`.
fn port_in(line: &str) -> Option<u16> {
    let rest = &line[line.find("http://127.0.0.1:")? + "http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The demo and what it started; on drop (a failed assertion) nothing is left running.
struct Demo {
    child: Child,
    children: Vec<u32>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    cmd: String,
}

impl Demo {
    fn report(&self) -> String {
        format!(
            "command: {}\nstdout:\n{}\nstderr:\n{}",
            self.cmd,
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap()
        )
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for &pid in &self.children {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn sigterm_stops_every_server_the_demo_started() {
    let bin = env!("CARGO_BIN_EXE_medic-demo");
    let agent = workspace_bin("medic-agent").display().to_string();
    let actuator = workspace_bin("medic-actuator").display().to_string();
    // A long run: the test stops it with SIGTERM as soon as the servers are up.
    let args = [
        "--agent",
        agent.as_str(),
        "--actuator",
        actuator.as_str(),
        "--seconds",
        "600",
    ];
    let cmd = format!("{bin} {}", args.join(" "));
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = mpsc::channel::<String>();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let lines = stdout.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let text = stderr.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut err = err;
        while let Ok(n) = err.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut demo = Demo {
        child,
        children: Vec::new(),
        stdout,
        stderr,
        cmd,
    };

    // The four server lines: agent, Prometheus, Alertmanager, actuator (printed once all are up).
    let mut ports = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    while ports.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let server = [
                    "medic-agent",
                    "Prometheus",
                    "Alertmanager",
                    "medic-actuator",
                ]
                .iter()
                .any(|name| line.trim_start().starts_with(name));
                if server {
                    let port = port_in(&line)
                        .unwrap_or_else(|| panic!("no port in {line:?}\n{}", demo.report()));
                    ports.push(port);
                }
            }
            Err(_) => panic!(
                "the demo did not print its four servers within 180s\n{}",
                demo.report()
            ),
        }
    }
    let pid = demo.child.id();
    demo.children = children_of(pid);
    let running: Vec<u32> = demo
        .children
        .iter()
        .copied()
        .filter(|&p| alive(p))
        .collect();
    assert!(
        running.len() >= 5,
        "tansu, agent, Prometheus, Alertmanager and actuator run as children: {running:?}\n{}",
        demo.report()
    );
    for &port in &ports {
        assert!(accepts(port), "port {port} is not up\n{}", demo.report());
    }

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let sent = Instant::now();
    let bound = Duration::from_secs(30);
    let status = loop {
        if let Some(st) = demo.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            sent.elapsed() < bound,
            "the demo is still running {bound:?} after SIGTERM\n{}",
            demo.report()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = sent.elapsed();
    eprintln!("the demo exited {took:?} after SIGTERM: {status}");
    assert_eq!(
        status.code(),
        Some(0),
        "a clean exit, not death by the signal: {status}\n{}",
        demo.report()
    );
    assert!(
        demo.report()
            .contains("stopped: broker, agent, Prometheus, Alertmanager, actuator"),
        "{}",
        demo.report()
    );
    let open: Vec<u16> = ports.iter().copied().filter(|&p| accepts(p)).collect();
    assert!(
        open.is_empty(),
        "ports still accepting after the demo exited: {open:?} of {ports:?}\n{}",
        demo.report()
    );
    let left: Vec<u32> = running.iter().copied().filter(|&p| alive(p)).collect();
    assert!(
        left.is_empty(),
        "children still running after the demo exited: {left:?} of {running:?}\n{}",
        demo.report()
    );
}
