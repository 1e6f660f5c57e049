//! Partitions: real `les` processes in network namespaces (the lab of
//! `tests/common/netns.rs`, on 198.18.4.0/24), the leader cut off from the majority
//! (alone in a 3-node cluster, with one follower in a 5-node one) for a fixed time,
//! then healed. Every figure comes from the nodes' JSON logs (`leader changed` lines,
//! with `is_self` and wall-clock timestamps), so nothing polls the nodes meanwhile.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::lab::{self, ms, since, time_where, Lab};
use crate::netns;
use crate::stats::Summary;

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

fn one(
    bin: &Path,
    n: usize,
    cut_off: usize,
    cut: Duration,
    extra: &[String],
) -> anyhow::Result<Trial> {
    let lab = Lab::start(bin, "part", 4, n, extra)?;
    let leader = lab
        .settled_leader(Duration::from_secs(1))
        .context("before the cut")?;

    let side: Vec<usize> = (0..cut_off).map(|k| (leader + k) % n).collect();
    let side_names: Vec<&str> = side.iter().map(|i| lab.names[*i].as_str()).collect();
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

    let acting = lab::acting(&logs, t_end);
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

/// The partition measurements, in Markdown.
pub fn partition_table(runs: &[PartitionRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Min / median / max over the trials. Times in ms. Changes are the `leader changed` \
         lines of all nodes together, from the cut to 10 s after the heal (per node: the \
         median divided by the cluster size).\n"
    );
    let _ = writeln!(s, "| mode | nodes | cut off | cut | trials | two acting leaders | majority side without an acting leader | leader changes (per node) | one agreed leader after the heal | unsettled |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|---|---|---|---:|");
    let cells = |x: &Summary| format!("{:.0} / {:.0} / {:.0}", x.min, x.median, x.max);
    for p in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.0} s | {} | {} | {} | {} ({:.1}) | {} | {} |",
            p.mode,
            p.nodes,
            p.cut_off,
            p.cut_s,
            p.trials,
            cells(&p.two_leaders_ms),
            cells(&p.majority_leaderless_ms),
            cells(&p.changes),
            p.changes.median / p.nodes.max(1) as f64,
            cells(&p.agreed_after_heal_ms),
            p.unsettled
        );
    }
    s
}
