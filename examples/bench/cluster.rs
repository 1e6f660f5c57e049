//! A cluster of real `les` processes on loopback, observed through their JSON logs.
//!
//! Timings come from the nodes' own log timestamps (microsecond wall clock, written the
//! moment a node changes its leader), so measuring does not disturb what is measured:
//! nothing polls the nodes while a failover is under way.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// One `les` process.
pub struct NodeProc {
    pub addr: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// Send a signal to this process (only this one, by its PID).
    pub fn signal(&mut self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Wait (bounded) for the process to exit after a signal.
    pub fn reap(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                self.child = None;
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What a node logged that the benchmark cares about.
#[derive(Debug, Clone)]
pub enum LogEvent {
    Started {
        start_time: f64,
    },
    LeaderChanged {
        at: SystemTime,
        leader: Option<String>,
    },
}

pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub dir: PathBuf,
}

/// `n` distinct free loopback ports.
fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let ls: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    ls.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

impl Cluster {
    /// Start `n` nodes as fast as possible, all seeded with every address.
    pub fn launch(bin: &Path, n: usize, extra: &[String], dir: &Path) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let ports = free_ports(n)?;
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let seeds = addrs.join(",");
        let mut nodes = Vec::with_capacity(n);
        for (i, addr) in addrs.iter().enumerate() {
            let log = dir.join(format!("node{i}.log"));
            let child = Command::new(bin)
                .args([
                    "--bind-interface",
                    "127.0.0.1",
                    "--bind-port",
                    &ports[i].to_string(),
                ])
                .args([
                    "--advertise-addr",
                    addr,
                    "--seeds",
                    &seeds,
                    "--log-format",
                    "json",
                ])
                .args(extra)
                .env("RUST_LOG", "les=info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(File::create(&log)?)
                .spawn()?;
            nodes.push(NodeProc {
                addr: addr.clone(),
                log,
                child: Some(child),
            });
        }
        Ok(Cluster {
            nodes,
            dir: dir.to_owned(),
        })
    }

    /// Parse node `i`'s log so far.
    pub fn events(&self, i: usize) -> Vec<LogEvent> {
        let Ok(f) = File::open(&self.nodes[i].log) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for line in BufReader::new(f).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some(at) = v["timestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
            else {
                continue;
            };
            let fields = &v["fields"];
            match fields["message"].as_str() {
                Some("les node started") => {
                    if let Some(st) = fields["start_time"].as_f64() {
                        out.push(LogEvent::Started { start_time: st });
                    }
                }
                Some("leader changed") => {
                    let leader = fields["leader"]
                        .as_str()
                        .filter(|l| *l != "none")
                        .map(str::to_string);
                    out.push(LogEvent::LeaderChanged { at, leader });
                }
                _ => {}
            }
        }
        out
    }

    /// Node `i`'s start time (seniority), once it has logged it.
    pub fn start_time(&self, i: usize) -> Option<f64> {
        self.events(i).iter().find_map(|e| match e {
            LogEvent::Started { start_time, .. } => Some(*start_time),
            _ => None,
        })
    }

    /// If every live node's latest leader is the same live node, that leader and the
    /// moment the last of them switched to it.
    pub fn agreement(&self) -> Option<(usize, SystemTime)> {
        let mut leader: Option<String> = None;
        let mut when = SystemTime::UNIX_EPOCH;
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.alive() {
                continue;
            }
            let (at, l) = self.events(i).iter().rev().find_map(|e| match e {
                LogEvent::LeaderChanged { at, leader } => Some((*at, leader.clone())),
                _ => None,
            })?;
            let l = l?;
            if leader.get_or_insert_with(|| l.clone()) != &l {
                return None;
            }
            when = when.max(at);
        }
        let leader = leader?;
        let idx = self
            .nodes
            .iter()
            .position(|n| n.addr == leader && n.alive())?;
        Some((idx, when))
    }

    /// Wait (bounded) for agreement on a leader other than `not`; returns it and when.
    pub fn wait_agreement(
        &self,
        not: Option<usize>,
        within: Duration,
    ) -> anyhow::Result<(usize, SystemTime)> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((l, _)) = self.agreement() {
                if Some(l) != not {
                    // Logs are written as changes happen; give stragglers a moment, then
                    // re-check that the agreement still holds.
                    std::thread::sleep(Duration::from_millis(50));
                    if let Some(again) = self.agreement() {
                        if again.0 == l {
                            return Ok(again);
                        }
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no agreement within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Total leader changes logged by live nodes after `since`.
    pub fn changes_since(&self, since: SystemTime) -> usize {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive())
            .map(|i| {
                self.events(i)
                    .iter()
                    .filter(|e| matches!(e, LogEvent::LeaderChanged { at, .. } if *at > since))
                    .count()
            })
            .sum()
    }

    /// Stop every node gracefully (SIGTERM, bounded wait), then clean up logs.
    pub fn shutdown(mut self) {
        for n in &mut self.nodes {
            n.signal(libc::SIGTERM);
        }
        for n in &mut self.nodes {
            n.reap(Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Resident set size in KiB, from /proc.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU seconds a process's live threads have run, from /proc/<pid>/task/*/schedstat
/// (nanoseconds, where /proc/<pid>/stat counts 10 ms ticks: too coarse for a node that
/// uses a few milliseconds a minute). Threads that have exited are not counted; a
/// node's runtime threads live as long as it does.
pub fn cpu_seconds_fine(pid: i32) -> Option<f64> {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = task.ok()?.path().join("schedstat");
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // the thread just exited
        };
        ns += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(ns as f64 / 1e9)
}

/// A process's peak resident set size (VmHWM) in KiB, from /proc.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A process's soft limit on open files, from /proc/<pid>/limits.
pub fn open_files_limit(pid: i32) -> Option<String> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3).map(str::to_string)
}

/// One counter or gauge from a Prometheus text body.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        rest.starts_with(' ').then(|| rest.trim().parse().ok())?
    })
}
