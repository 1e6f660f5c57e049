//! Helpers shared by the integration tests: free loopback ports, child processes that
//! are always reaped, bounded waits, and reading a node's `/diag/`.
#![allow(dead_code)] // each test binary uses a different subset

pub mod netns;
pub mod pg;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use les::client::PeerClient;
use les::net::TokioNetwork;
use les::wire::Diag;

/// `n` distinct loopback ports the OS says are free right now.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A child process killed (SIGKILL, by its PID) and reaped when dropped, so a failing
/// test leaves nothing running.
pub struct Proc {
    pub child: Option<Child>,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> Proc {
        Proc::spawn_with_stderr(name, cmd, Stdio::null())
    }

    /// Like [`Proc::spawn`], with the process's stderr (its log) appended to `log`.
    pub fn spawn_logged(name: &str, cmd: &mut Command, log: &std::path::Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        Proc::spawn_with_stderr(name, cmd, Stdio::from(file))
    }

    fn spawn_with_stderr(name: &str, cmd: &mut Command, stderr: Stdio) -> Proc {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Send `signal` to this process only.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped yet.
            unsafe {
                libc::kill(c.id() as i32, signal);
            }
        }
    }

    /// Wait up to `within` for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Some(status.code().unwrap_or(-1));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `les` binary serving on 127.0.0.1:`port` as `127.0.0.1:port` with `seeds` (its
/// own address for a one-node cluster); add flags or environment before spawning.
pub fn les_command(port: u16, seeds: &str) -> Command {
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_les"));
    cmd.args([
        "--bind-interface",
        "127.0.0.1",
        "--bind-port",
        &port.to_string(),
    ])
    .args(["--advertise-addr", &addr, "--seeds", seeds]);
    cmd
}

/// Poll `check` every 10 ms until it returns `Some`, or panic after `within`.
pub fn wait_for<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Read `/diag/` from `addr`, or `None` if it does not answer.
pub fn diag(addr: &str) -> Option<Diag> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let body = rt
        .block_on(PeerClient::new(TokioNetwork, Duration::from_secs(2)).get(addr, "/diag/"))
        .ok()?;
    serde_json::from_slice(&body).ok()
}

/// The leader all of `addrs` agree on (and whose member lists match `addrs` exactly),
/// if they do.
pub fn agreed_leader(addrs: &[String]) -> Option<String> {
    let mut leader = None;
    for a in addrs {
        let d = diag(a)?;
        let mut members = d.state.members.clone();
        members.sort();
        let mut expected = addrs.to_vec();
        expected.sort();
        if members != expected {
            return None;
        }
        let l = d.state.leader?;
        if leader.get_or_insert_with(|| l.clone()) != &l {
            return None;
        }
    }
    leader
}

/// Send one raw HTTP/1.1 request to `addr` (`request_line` such as `GET /ping`, extra
/// header lines in `headers`, each ending in `\r\n`) and return the whole answer as
/// text; the connection is closed after it.
pub async fn raw_http(addr: &str, request_line: &str, headers: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req =
        format!("{request_line} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answer in time")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw answer (0 if there is none).
pub fn status_of(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}
