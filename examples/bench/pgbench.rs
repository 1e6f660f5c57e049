//! The PostgreSQL backend on loopback: three real `les` processes with
//! `--backend postgres://…` against a throwaway server (the tests' `common/pg.rs`),
//! with the default interval and lease.
//!
//! Each trial times, from the signal to the moment both other nodes name the same new
//! leader and that leader says it holds the lease: a graceful hand-off (SIGTERM of the
//! leader), an operator step-down (`POST /step-down` to the leader) and a crash
//! (SIGKILL of the leader, so the lease has to run out). The node stopped is started
//! again, junior, before the next measurement. Times come from polling every node's
//! `/diag/` over loopback (about 1 ms a round).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use les::wire::Diag;

use crate::stats::Summary;

#[path = "../../tests/common/pg.rs"]
mod pg;
// `pg` reaches the shared skip rule as `super::netns`, as it does in the tests.
use crate::netns;

/// Longest any one measurement may take before the trial fails.
const WITHIN: Duration = Duration::from_secs(30);

/// The figures, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PgRun {
    pub trials: usize,
    pub lease_ms: u64,
    /// The extra flags every node ran with (`--node-arg`), empty for the defaults.
    pub node_flags: Vec<String>,
    pub handoff_ms: Summary,
    pub step_down_ms: Summary,
    pub crash_ms: Summary,
    /// Trials in which a step-down was refused (the binary has no `/step-down`).
    pub step_down_refused: usize,
}

struct Node {
    addr: String,
    port: u16,
    child: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Node {
    fn start(bin: &Path, port: u16, url: &str, extra: &[String]) -> anyhow::Result<Node> {
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(bin)
            .args(["--bind-interface", "127.0.0.1"])
            .args(["--bind-port", &port.to_string()])
            .args(["--advertise-addr", &addr, "--backend", url])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start les")?;
        let node = Node {
            addr,
            port,
            child: Some(child),
        };
        wait("the node to register", || {
            diag(&node.addr).and_then(|d| d.backend).map(|_| ())
        })?;
        Ok(node)
    }

    fn signal(&mut self, sig: i32) {
        if let Some(c) = self.child.as_mut() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
            let _ = c.wait();
        }
        self.child = None;
    }
}

/// GET `path` from `addr` over a fresh connection; the body, if the answer is 200.
fn http(addr: &str, method: &str, path: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&out[..split]);
    head.starts_with("HTTP/1.1 200")
        .then(|| out[split + 4..].to_vec())
}

fn diag(addr: &str) -> Option<Diag> {
    serde_json::from_slice(&http(addr, "GET", "/diag/")?).ok()
}

fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "no {what} within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The leader every node in `nodes` names, if they agree and it holds the lease.
fn agreed(nodes: &[&Node]) -> Option<String> {
    let mut leader = None;
    for n in nodes {
        let d = diag(&n.addr)?;
        let l = d.state.leader?;
        if leader.get_or_insert_with(|| l.clone()) != &l {
            return None;
        }
        if l == n.addr && d.backend?.acting_for_ms.is_none() {
            return None;
        }
    }
    leader.filter(|l| nodes.iter().any(|n| &n.addr == l))
}

/// How a trial moves leadership off the leader.
#[derive(Clone, Copy)]
enum Move {
    Handoff,
    StepDown,
    Crash,
}

/// Move leadership once; the milliseconds until the others agree, or `None` if the
/// move was refused (a step-down the binary does not offer).
fn measure(
    nodes: &mut [Node],
    how: Move,
    bin: &Path,
    url: &str,
    extra: &[String],
) -> anyhow::Result<Option<f64>> {
    let all: Vec<&Node> = nodes.iter().collect();
    let leader = wait("agreement", || agreed(&all))?;
    let i = nodes
        .iter()
        .position(|n| n.addr == leader)
        .context("leader")?;
    let t0 = Instant::now();
    match how {
        Move::Handoff => nodes[i].signal(libc::SIGTERM),
        Move::Crash => nodes[i].signal(libc::SIGKILL),
        Move::StepDown => {
            if http(&leader, "POST", "/step-down").is_none() {
                return Ok(None);
            }
        }
    }
    let others: Vec<&Node> = nodes.iter().filter(|n| n.addr != leader).collect();
    let next = wait("a new leader", || agreed(&others).filter(|l| *l != leader))?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(next != leader);
    if !matches!(how, Move::StepDown) {
        let port = nodes[i].port;
        nodes[i] = Node::start(bin, port, url, extra)?;
    }
    Ok(Some(ms))
}

/// The lease the nodes run with: `--lease` among the extra node flags
/// (`--lease=5s` or `--lease 5s`), else the default.
fn lease_in(extra: &[String]) -> std::time::Duration {
    let given = extra
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--lease") {
            Some(v) if v.starts_with('=') => Some(v[1..].to_string()),
            Some("") => extra.get(i + 1).cloned(),
            _ => None,
        });
    given
        .and_then(|v| humantime::parse_duration(&v).ok())
        .unwrap_or(les::defaults::LEASE)
}

/// `trials` rounds of hand-off, step-down and crash on three nodes.
pub fn run(bin: &Path, trials: usize, extra: &[String]) -> anyhow::Result<PgRun> {
    let server = pg::PgServer::start().context("no PostgreSQL server binaries")?;
    let url = server.url();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        nodes.push(Node::start(bin, port, &url, extra)?);
    }
    let lease_ms = lease_in(extra).as_millis() as u64;
    let (mut handoff, mut step, mut crash) = (Vec::new(), Vec::new(), Vec::new());
    let mut refused = 0;
    for t in 0..trials {
        handoff.extend(measure(&mut nodes, Move::Handoff, bin, &url, extra)?);
        match measure(&mut nodes, Move::StepDown, bin, &url, extra)? {
            Some(ms) => step.push(ms),
            None => refused += 1,
        }
        crash.extend(measure(&mut nodes, Move::Crash, bin, &url, extra)?);
        eprint!("{}", if t + 1 == trials { ".\n" } else { "." });
    }
    for n in &mut nodes {
        n.signal(libc::SIGTERM);
    }
    Ok(PgRun {
        trials,
        lease_ms,
        node_flags: extra.to_vec(),
        handoff_ms: Summary::of(&handoff),
        step_down_ms: Summary::of(&step),
        crash_ms: Summary::of(&crash),
        step_down_refused: refused,
    })
}

/// The Markdown table.
pub fn table(r: &PgRun) -> String {
    let row = |what: &str, s: &Summary| {
        if s.n == 0 {
            format!("| {what} | not measured | — |\n")
        } else {
            format!("| {what} | {} | {} |\n", s.cells(0), s.n)
        }
    };
    let mut out = format!(
        "PostgreSQL backend, 3 nodes on loopback, lease {} ms, node flags: {}; from the signal until both other nodes name the new leader and it holds the lease, in ms:\n\n| move | min / median / p90 / max | trials |\n|---|---|---|\n",
        r.lease_ms,
        if r.node_flags.is_empty() {
            "defaults (interval 1 s)".to_string()
        } else {
            format!("`{}`", r.node_flags.join(" "))
        }
    );
    out.push_str(&row(
        "graceful hand-off (SIGTERM to the leader)",
        &r.handoff_ms,
    ));
    out.push_str(&row(
        "step-down (`POST /step-down` to the leader)",
        &r.step_down_ms,
    ));
    out.push_str(&row(
        "crash (SIGKILL of the leader: the lease runs out)",
        &r.crash_ms,
    ));
    out
}
