//! A vanished leader host: real `les` processes in network namespaces (see `lab.rs`,
//! on 198.18.5.0/24). Once the cluster has agreed and settled, every frame to and from
//! the leader's host is dropped silently on the bridge (no RST, no ICMP: the host is
//! simply gone), and the survivors' JSON logs tell how long until every one of them
//! follows the same new leader, and how many more changes they make.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::lab::{ms, since, Lab};
use crate::netns::LeaderLine;
use crate::stats::Summary;

/// How long the cluster must keep its leader before the cut.
const SETTLE: Duration = Duration::from_secs(3);
/// How long the survivors may take to agree before a trial counts as unsettled.
const AGREE_WITHIN: Duration = Duration::from_secs(30);
/// How long the survivors are watched after they agreed, for extra changes.
const WATCH_AFTER: Duration = Duration::from_secs(5);

/// One cluster size, summarised over its trials.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VanishRun {
    pub nodes: usize,
    pub trials: usize,
    /// From the cut to the moment the last survivor switched to the leader they all
    /// ended up following.
    pub new_leader_ms: Summary,
    /// Survivors' `leader changed` lines from the cut to `WATCH_AFTER` after agreement,
    /// beyond the one per survivor that the failover needs.
    pub extra_changes: Summary,
    /// Of the survivors' changes, those to no leader (a node that dropped the old
    /// leader before it had a new one).
    pub to_no_leader: Summary,
    /// Trials whose new leader was not the most senior survivor (should be 0).
    pub wrong_leader: usize,
    /// Trials whose survivors did not agree within `AGREE_WITHIN` (left out above).
    pub unsettled: usize,
}

/// What one trial measured: the failover time (None: no agreement), extra changes, and
/// whether the new leader was the expected one.
struct Trial {
    new_leader_ms: Option<f64>,
    extra_changes: usize,
    to_no_leader: usize,
    wrong_leader: bool,
}

/// Run `trials` vanished-leader trials of `nodes` nodes, each node with `extra` flags.
pub fn run(bin: &Path, nodes: usize, trials: usize, extra: &[String]) -> anyhow::Result<VanishRun> {
    let mut all = Vec::new();
    for trial in 0..trials {
        let t = one(bin, nodes, extra)
            .map_err(|e| e.context(format!("vanish, {nodes} nodes, trial {}", trial + 1)))?;
        eprint!(".");
        all.push(t);
    }
    eprintln!();
    let times: Vec<f64> = all.iter().filter_map(|t| t.new_leader_ms).collect();
    let extra: Vec<f64> = all.iter().map(|t| t.extra_changes as f64).collect();
    let to_none: Vec<f64> = all.iter().map(|t| t.to_no_leader as f64).collect();
    Ok(VanishRun {
        nodes,
        trials,
        new_leader_ms: Summary::of(&times),
        extra_changes: Summary::of(&extra),
        to_no_leader: Summary::of(&to_none),
        wrong_leader: all.iter().filter(|t| t.wrong_leader).count(),
        unsettled: all.iter().filter(|t| t.new_leader_ms.is_none()).count(),
    })
}

fn one(bin: &Path, n: usize, extra: &[String]) -> anyhow::Result<Trial> {
    let lab = Lab::start(bin, "vanish", 5, n, extra)?;
    let leader = lab.settled_leader(SETTLE)?;
    let logs = lab.logs();
    // The next leader: the most senior survivor by logged start time (ties by address).
    let expected = (0..n)
        .filter(|i| *i != leader)
        .filter_map(|i| Some((logs[i].start_time?, lab.addr(i))))
        .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
        .map(|(_, addr)| addr);
    let survivors: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
    let old = lab.addr(leader);

    let t_cut = SystemTime::now();
    lab.net
        .cut(&[lab.names[leader].as_str()])
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + AGREE_WITHIN;
    let agreed = loop {
        let changes = survivor_changes(&lab, &survivors, t_cut);
        if let Some(a) = agreement(&changes, &old) {
            break Some(a);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if agreed.is_some() {
        std::thread::sleep(WATCH_AFTER);
    }
    let changes = survivor_changes(&lab, &survivors, t_cut);
    drop(lab);
    // Recomputed on the full window: a survivor that moved again after the first
    // agreement moves the figure to its final switch.
    let last = agreement(&changes, &old).filter(|_| agreed.is_some());
    let count: usize = changes.iter().map(Vec::len).sum();
    Ok(Trial {
        new_leader_ms: last.as_ref().map(|(_, at)| ms(since(t_cut, *at))),
        extra_changes: count.saturating_sub(survivors.len()),
        to_no_leader: changes
            .iter()
            .flatten()
            .filter(|c| c.leader.is_none())
            .count(),
        wrong_leader: last.is_some_and(|(l, _)| Some(l) != expected),
    })
}

/// Each survivor's leader changes at or after `t`.
fn survivor_changes(lab: &Lab, survivors: &[usize], t: SystemTime) -> Vec<Vec<LeaderLine>> {
    let logs = lab.read();
    survivors
        .iter()
        .map(|i| logs[*i].iter().filter(|c| c.at >= t).cloned().collect())
        .collect()
}

/// If every node of `changes` (changes since the cut) has changed at least once and its
/// latest change names the same leader, other than `old`: that leader, and when the last
/// node switched to it (the start of its final run of changes naming it).
fn agreement(changes: &[Vec<LeaderLine>], old: &str) -> Option<(String, SystemTime)> {
    let leader = changes.first()?.last()?.leader.clone()?;
    if leader == old {
        return None;
    }
    let mut latest = SystemTime::UNIX_EPOCH;
    for node in changes {
        let run_start = node
            .iter()
            .rev()
            .take_while(|c| c.leader.as_deref() == Some(leader.as_str()))
            .last()?;
        if node.last()?.leader.as_deref() != Some(leader.as_str()) {
            return None;
        }
        latest = latest.max(run_start.at);
    }
    Some((leader, latest))
}

/// The table for BENCHMARKS.md and the terminal.
pub fn table(runs: &[VanishRun]) -> String {
    let mut s = String::from(
        "Min / median / p90 / max over the trials. New leader: from the cut to the moment \
         the last survivor logged its switch to the leader all survivors then follow. \
         Extra changes: survivors' `leader changed` lines beyond the one per survivor \
         that the failover needs, up to 5 s after the agreement; to no leader: those of \
         all survivors' changes that name no leader (a node that dropped the old leader \
         before it had the new one).\n\n\
         | nodes | trials | new leader everywhere, ms | extra changes | changes to no leader | wrong leader | unsettled |\n\
         |---:|---:|---|---|---|---:|---:|\n",
    );
    for r in runs {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.nodes,
            r.trials,
            r.new_leader_ms.cells(0),
            r.extra_changes.cells(0),
            r.to_no_leader.cells(0),
            r.wrong_leader,
            r.unsettled
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: u64, leader: &str) -> LeaderLine {
        LeaderLine {
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(s),
            leader: (!leader.is_empty()).then(|| leader.to_string()),
            term: 0,
            is_self: false,
        }
    }

    #[test]
    fn agreement_takes_each_nodes_final_switch() {
        let b_then_c = vec![line(4, "b"), line(6, "c")];
        let none_then_c = vec![line(3, ""), line(5, "c")];
        let (l, at) = agreement(&[b_then_c.clone(), none_then_c.clone()], "a").unwrap();
        assert_eq!((l.as_str(), at), ("c", line(6, "").at));
        // One node still on the old leader, or not changed yet: no agreement.
        assert_eq!(agreement(&[none_then_c.clone(), vec![]], "a"), None);
        assert_eq!(agreement(&[vec![line(2, "a")]], "a"), None);
    }
}
