//! Real `les` processes in network namespaces (the lab of `tests/common/netns.rs`, on
//! 198.18.N.0/24 with no route out), observed through their JSON logs. Shared by the
//! partition, vanished-host and packet-loss measurements: each trial is a fresh [`Lab`],
//! whose nodes are killed (by PID) and whose namespaces are deleted when it is dropped,
//! on success, error or panic alike.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::netns::{self, LeaderLine, Net, NodeLog};

const LES_PORT: u16 = 4000;

/// Nodes `n1`, `n2`, ... in their namespaces, killed (by PID) when dropped, before the
/// lab goes.
pub struct Lab {
    nodes: Vec<Child>,
    logs: PathBuf,
    pub names: Vec<String>,
    pub net: Net,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.logs);
        // `self.net` is dropped next, deleting the namespaces.
    }
}

impl Lab {
    /// A lab `lesbench-<pid>-<kind>` on 198.18.`octet`.0/24 with `n` nodes, started
    /// 100 ms apart (so seniority follows the index), each with `extra` flags.
    pub fn start(
        bin: &Path,
        kind: &str,
        octet: u8,
        n: usize,
        extra: &[String],
    ) -> anyhow::Result<Lab> {
        let tag = format!("lesbench-{}-{kind}", std::process::id());
        let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let net =
            Net::new(&tag, octet, &netns::numbered(&name_refs)).map_err(anyhow::Error::msg)?;
        let mut lab = Lab {
            nodes: Vec::new(),
            logs: netns::log_dir(&tag),
            names,
            net,
        };
        let seeds: Vec<String> = (0..n).map(|i| lab.addr(i)).collect();
        for (i, name) in lab.names.iter().enumerate() {
            let mut cmd = lab.net.command(name, bin);
            cmd.args(["--bind-port", &LES_PORT.to_string()])
                .args(["--advertise-addr", &lab.addr(i)])
                .args(["--seeds", &seeds.join(","), "--name", name])
                .args(["--log-format", "json"])
                .args(extra)
                .env("RUST_LOG", "les=info");
            netns::log_to(&mut cmd, &lab.log(i));
            lab.nodes.push(cmd.spawn().context("starting a node")?);
            // Seniority in index order.
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(lab)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}:{LES_PORT}", self.net.addr(11 + i as u8))
    }

    pub fn index_of(&self, addr: &str) -> Option<usize> {
        (0..self.len()).find(|i| self.addr(*i) == addr)
    }

    fn log(&self, i: usize) -> PathBuf {
        self.logs.join(format!("n{}.log", i + 1))
    }

    /// Every node's log so far, in index order.
    pub fn logs(&self) -> Vec<NodeLog> {
        (0..self.len())
            .map(|i| netns::read_log(&self.log(i)))
            .collect()
    }

    /// Every node's leader changes so far, in index order.
    pub fn read(&self) -> Vec<Vec<LeaderLine>> {
        self.logs().into_iter().map(|l| l.changes).collect()
    }

    /// The leader every node's latest change names, if they agree.
    pub fn agreed(&self) -> Option<usize> {
        let logs = self.read();
        let first = logs[0].last()?.leader.clone()?;
        let same = logs
            .iter()
            .all(|l| l.last().and_then(|c| c.leader.as_ref()) == Some(&first));
        if !same {
            return None;
        }
        self.index_of(&first)
    }

    /// Wait (at most 20 s) until every node names the same leader, and still does
    /// `settle` later; that leader.
    pub fn settled_leader(&self, settle: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(l) = self.agreed() {
                std::thread::sleep(settle);
                if self.agreed() == Some(l) {
                    return Ok(l);
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no agreed leader within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn since(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or_default()
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Each node's acting intervals (see [`netns::acting_intervals`]), open ones closed at
/// `end`.
pub fn acting(logs: &[Vec<LeaderLine>], end: SystemTime) -> Vec<Vec<(SystemTime, SystemTime)>> {
    logs.iter()
        .map(|l| netns::acting_intervals(l, end))
        .collect()
}

/// Total time within `[from, to]` in which the number of nodes acting (each node's
/// intervals in `acting`) satisfies `count`.
pub fn time_where(
    acting: &[Vec<(SystemTime, SystemTime)>],
    from: SystemTime,
    to: SystemTime,
    count: impl Fn(usize) -> bool,
) -> Duration {
    // Edges: +1 where an interval starts, -1 where it ends, clipped to [from, to].
    let mut edges: Vec<(SystemTime, i32)> = Vec::new();
    for (s, e) in acting.iter().flatten() {
        let (s, e) = ((*s).max(from), (*e).min(to));
        if s < e {
            edges.push((s, 1));
            edges.push((e, -1));
        }
    }
    edges.sort();
    let (mut total, mut level, mut at) = (Duration::ZERO, 0i32, from);
    for (t, d) in edges.into_iter().chain([(to, 0)]) {
        if count(level as usize) {
            total += since(at, t);
        }
        level += d;
        at = t;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_where_counts_overlaps_and_gaps() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        // Node a acts 0..6, node b 4..10; the window is 2..12.
        let acting = vec![vec![(t(0), t(6))], vec![(t(4), t(10))]];
        assert_eq!(
            time_where(&acting, t(2), t(12), |k| k >= 2),
            Duration::from_secs(2)
        );
        assert_eq!(
            time_where(&acting, t(2), t(12), |k| k == 0),
            Duration::from_secs(2)
        );
        assert_eq!(
            time_where(&acting, t(2), t(12), |k| k == 1),
            Duration::from_secs(6)
        );
    }
}
