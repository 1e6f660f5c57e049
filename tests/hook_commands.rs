//! The `les` binary's hook commands and health check, end to end on loopback: what runs,
//! when, with which variables, from flags, environment and the config file alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// A scratch directory and the `les` process running in it; the process is killed
/// (by its pid) when this is dropped, if it is still running.
struct Run {
    dir: PathBuf,
    child: Option<Child>,
}

impl Run {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("les-hookcmd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Run { dir, child: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Start a one-node cluster (it leads at once when healthy) with these extra flags.
    fn start(&mut self, extra: &[&str], env: &[(&str, String)]) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let stderr = std::fs::File::create(self.path("les.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_les"));
        for (k, _) in std::env::vars() {
            if k.starts_with("LES_") {
                cmd.env_remove(k);
            }
        }
        cmd.args([
            "--bind-interface",
            "127.0.0.1",
            "--bind-port",
            &port.to_string(),
        ])
        .args(["--advertise-addr", &addr, "--seeds", &addr])
        .args(["--interval", "100ms"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        self.child = Some(cmd.spawn().unwrap());
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().unwrap().id() as libc::pid_t;
        // SAFETY: plain kill(2) of the child this test started and has not reaped.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "les did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Wait until `name` has `n` lines.
    fn wait_lines(&self, name: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let lines = self.lines(name);
            if lines.len() >= n {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{name} has {lines:?}, expected {n} lines; les log:\n{}",
                std::fs::read_to_string(self.path("les.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A command appending its name and the LES_* variables to `log`.
fn record(name: &str, log: &Path) -> String {
    format!(
        "echo \"{name} $LES_EVENT $LES_ROLE leader=$LES_LEADER prev=$LES_PREVIOUS_LEADER term=$LES_TERM\" >> {}",
        log.display()
    )
}

#[test]
fn hooks_run_at_start_on_each_change_and_on_graceful_leave_in_order() {
    let mut run = Run::new("order");
    let log = run.path("hooks");
    let healthy = run.path("healthy");
    let config = run.path("les.toml");
    // The health check comes from the file, on_change from the environment, the rest
    // from flags.
    std::fs::write(
        &config,
        format!(
            "health_check = \"test -e {}\"\nhealth_interval = \"100ms\"\n",
            healthy.display()
        ),
    )
    .unwrap();
    let on_leader = record("leader", &log);
    let on_follower = record("follower", &log);
    run.start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--on-leader",
            &on_leader,
            "--on-follower",
            &on_follower,
        ],
        &[("LES_ON_CHANGE", record("change", &log))],
    );
    // Start-up: released as a follower. The node is unhealthy, so it does not lead.
    let lines = run.wait_lines("hooks", 2);
    assert_eq!(
        lines,
        [
            "follower start follower leader= prev= term=0",
            "change start follower leader= prev= term=0"
        ]
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(run.lines("hooks").len(), 2, "an unhealthy node led");

    std::fs::write(&healthy, "").unwrap();
    let lines = run.wait_lines("hooks", 4);
    let addr = lines[2]
        .split_whitespace()
        .find_map(|w| w.strip_prefix("leader="))
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{lines:?}");
    assert_eq!(
        lines[2..],
        [
            format!("leader change leader leader={addr} prev= term=1"),
            format!("change change leader leader={addr} prev= term=1"),
        ]
    );

    run.signal(libc::SIGTERM);
    let status = run.wait_exit();
    assert_eq!(status.code(), Some(0));
    // A guard that fired would write a line moments after les exited.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        run.lines("hooks")[4..],
        [
            format!("follower change follower leader= prev={addr} term=1"),
            format!("change change follower leader= prev={addr} term=1"),
        ],
        "released on leave, and the crash guard stayed quiet"
    );
}

#[test]
fn a_killed_les_has_on_follower_run_by_its_crash_guard() {
    let mut run = Run::new("crash");
    let log = run.path("hooks");
    let on_leader = record("leader", &log);
    let on_follower = record("follower", &log);
    run.start(
        &["--on-leader", &on_leader, "--on-follower", &on_follower],
        &[],
    );
    let lines = run.wait_lines("hooks", 2);
    assert!(lines[1].starts_with("leader change leader"), "{lines:?}");
    run.signal(libc::SIGKILL);
    run.wait_exit();
    let lines = run.wait_lines("hooks", 3);
    assert_eq!(lines[2], "follower crash follower leader= prev= term=");
}

#[test]
fn a_failing_on_leader_makes_the_node_step_down_for_the_cooldown() {
    let mut run = Run::new("stepdown");
    let log = run.path("hooks");
    let on_leader = format!("{}; exit 1", record("leader", &log));
    let on_follower = record("follower", &log);
    run.start(
        &[
            "--on-leader",
            &on_leader,
            "--on-follower",
            &on_follower,
            "--step-down-cooldown",
            "300ms",
        ],
        &[],
    );
    // start-up release, gain (fails), step-down release, and again after the cooldown.
    let lines = run.wait_lines("hooks", 5);
    let kinds: Vec<&str> = lines[..5]
        .iter()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .map(|k| match k.as_str() {
            "follower start" => "release at start",
            "leader change" => "take",
            "follower change" => "release",
            _ => "?",
        })
        .collect();
    assert_eq!(
        kinds,
        ["release at start", "take", "release", "take", "release"]
    );
}

#[test]
fn bad_hook_settings_exit_2_and_name_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_les"))
        .args(["--advertise-addr", "127.0.0.1:1", "--seeds", "127.0.0.1:1"])
        .args(["--hook-timeout", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hook_timeout"), "{err}");
}
