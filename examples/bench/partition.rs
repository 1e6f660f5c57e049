//! Partitions: real `les` processes in network namespaces (the lab of
//! `tests/common/netns.rs`, on 198.18.4.0/24), the leader cut off from the majority
//! (alone in a 3-node cluster, with one follower in a 5-node one) for a fixed time,
//! then healed. Every figure comes from the nodes' JSON logs (`leader changed` lines,
//! with `is_self` and wall-clock timestamps), so nothing polls the nodes meanwhile.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::netns::{self, LeaderLine, Net};
use crate::stats::Summary;

const LES_PORT: u16 = 4000;

/// One partition scenario, summarised over its trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionRun {
    /// `default`, or `quorum N` with the flags used.
    pub mode: String,
    pub nodes: usize,
    /// Nodes cut off with the leader, the leader included.
    pub cut_off: usize,
    pub cut_s: f64,
    pub trials: usize,
    /// Time, from the cut to 10 s after the heal, in which two or more nodes acted as
    /// leader at once.
    pub two_leaders_ms: Summary,
    /// Time, from the cut to the heal, in which no node of the majority side acted.
    pub majority_leaderless_ms: Summary,
    /// `leader changed` lines over all nodes, from the cut to 10 s after the heal.
    pub changes: Summary,
    /// From the heal to the last change that led to one agreed leader.
    pub agreed_after_heal_ms: Summary,
    /// Trials that had no agreed leader 10 s after the heal (left out of the figure
    /// above).
    pub unsettled: usize,
}

/// What one trial measured.
#[derive(Debug, Clone, Copy)]
struct Trial {
    two_leaders_ms: f64,
    majority_leaderless_ms: f64,
    changes: f64,
    agreed_after_heal_ms: Option<f64>,
}

/// Why partitions cannot be measured here, if they cannot.
pub fn missing_prerequisite() -> Option<String> {
    netns::missing_prerequisite(&[netns::IP, netns::NFT])
}

/// Whether `bin` has quorum mode (its `--help` offers `--quorum`).
pub fn has_quorum_mode(bin: &Path) -> bool {
    netns::offers_flag(bin, "--quorum")
}

/// Run `trials` partitions of `nodes` nodes with `cut_off` of them (the leader first)
/// cut away for `cut`, each node started with `extra` flags.
pub fn run(
    bin: &Path,
    mode: &str,
    nodes: usize,
    cut_off: usize,
    cut: Duration,
    trials: usize,
    extra: &[String],
) -> anyhow::Result<PartitionRun> {
    let mut all = Vec::new();
    for trial in 0..trials {
        let t = one(bin, nodes, cut_off, cut, extra)
            .with_context(|| format!("{mode}, {nodes} nodes, trial {}", trial + 1))?;
        eprint!(".");
        all.push(t);
    }
    eprintln!();
    let pick = |f: fn(&Trial) -> Option<f64>| -> Vec<f64> { all.iter().filter_map(f).collect() };
    Ok(PartitionRun {
        mode: mode.to_string(),
        nodes,
        cut_off,
        cut_s: cut.as_secs_f64(),
        trials,
        two_leaders_ms: Summary::of(&pick(|t| Some(t.two_leaders_ms))),
        majority_leaderless_ms: Summary::of(&pick(|t| Some(t.majority_leaderless_ms))),
        changes: Summary::of(&pick(|t| Some(t.changes))),
        agreed_after_heal_ms: Summary::of(&pick(|t| t.agreed_after_heal_ms)),
        unsettled: all
            .iter()
            .filter(|t| t.agreed_after_heal_ms.is_none())
            .count(),
    })
}

/// Nodes in their namespaces, killed (by PID) when dropped, before the lab goes.
struct Lab {
    nodes: Vec<Child>,
    logs: PathBuf,
    net: Net,
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
    fn addr(&self, i: usize) -> String {
        format!("{}:{LES_PORT}", self.net.addr(11 + i as u8))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.logs.join(format!("n{}.log", i + 1))
    }

    fn read(&self) -> Vec<Vec<LeaderLine>> {
        (0..self.nodes.len())
            .map(|i| netns::read_log(&self.log(i)).changes)
            .collect()
    }

    /// The leader every node's latest change names, if they agree.
    fn agreed(&self) -> Option<usize> {
        let logs = self.read();
        let first = logs[0].last()?.leader.clone()?;
        let same = logs
            .iter()
            .all(|l| l.last().and_then(|c| c.leader.as_ref()) == Some(&first));
        if !same {
            return None;
        }
        (0..self.nodes.len()).find(|i| self.addr(*i) == first)
    }
}

fn one(
    bin: &Path,
    n: usize,
    cut_off: usize,
    cut: Duration,
    extra: &[String],
) -> anyhow::Result<Trial> {
    let tag = format!("lesbench-{}-part", std::process::id());
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let hosts = netns::numbered(&name_refs);
    let net = Net::new(&tag, 4, &hosts).map_err(anyhow::Error::msg)?;
    let logs = netns::log_dir(&tag);
    let mut lab = Lab {
        nodes: Vec::new(),
        logs,
        net,
    };
    let seeds: Vec<String> = (0..n).map(|i| lab.addr(i)).collect();
    for (i, name) in names.iter().enumerate() {
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
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        if let Some(l) = lab.agreed() {
            std::thread::sleep(Duration::from_secs(1));
            if lab.agreed() == Some(l) {
                break l;
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no agreed leader before the cut");
        std::thread::sleep(Duration::from_millis(50));
    };

    let side: Vec<usize> = (0..cut_off).map(|k| (leader + k) % n).collect();
    let side_names: Vec<&str> = side.iter().map(|i| names[*i].as_str()).collect();
    let t_cut = SystemTime::now();
    lab.net.cut(&side_names).map_err(anyhow::Error::msg)?;
    std::thread::sleep(cut);
    let t_heal = SystemTime::now();
    lab.net.heal().map_err(anyhow::Error::msg)?;
    std::thread::sleep(Duration::from_secs(10));
    let t_end = SystemTime::now();
    let logs = lab.read();
    let agreed = lab.agreed();
    drop(lab);

    let acting: Vec<Vec<(SystemTime, SystemTime)>> = logs
        .iter()
        .map(|l| netns::acting_intervals(l, t_end))
        .collect();
    let majority: Vec<Vec<(SystemTime, SystemTime)>> = (0..n)
        .filter(|i| !side.contains(i))
        .map(|i| acting[i].clone())
        .collect();
    let changes = logs
        .iter()
        .flatten()
        .filter(|c| c.at >= t_cut && c.at <= t_end)
        .count();
    let last_change = logs
        .iter()
        .flatten()
        .filter(|c| c.at >= t_heal)
        .map(|c| c.at)
        .max()
        .unwrap_or(t_heal);
    Ok(Trial {
        two_leaders_ms: ms(time_where(&acting, t_cut, t_end, |k| k >= 2)),
        majority_leaderless_ms: ms(time_where(&majority, t_cut, t_heal, |k| k == 0)),
        changes: changes as f64,
        agreed_after_heal_ms: agreed.map(|_| ms(since(t_heal, last_change))),
    })
}

fn since(from: SystemTime, to: SystemTime) -> Duration {
    to.duration_since(from).unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Total time within `[from, to]` in which the number of nodes acting (each node's
/// intervals in `acting`) satisfies `count`.
fn time_where(
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
