//! Real `les` processes under packet loss: 5 nodes in network namespaces (see `lab.rs`,
//! on 198.18.6.0/24). Once the cluster has agreed and settled, nftables in every node's
//! namespace drops the given share of the packets the node sends and of those it
//! receives on its link (chosen at random per packet, `numgen random`), for a fixed
//! time. The nodes' JSON logs tell how many members were removed (and why), how many
//! leader changes followed, and how long two or more nodes acted as leader at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use serde::Serialize;

use crate::lab::{self, ms, time_where, Lab};
use crate::netns;
use crate::stats::Summary;

/// How long the cluster must keep its leader before the loss starts.
const SETTLE: Duration = Duration::from_secs(3);
/// Nodes in every run.
pub const NODES: usize = 5;

/// One loss rate, summarised over its trials. Counts are over all nodes together, from
/// the moment the loss starts to its end.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LossRealRun {
    /// Share of packets each node drops, on sending and on receiving alike.
    pub rate: f64,
    pub nodes: usize,
    pub seconds: f64,
    pub trials: usize,
    /// `member removed` lines.
    pub removals: Summary,
    /// `leader changed` lines.
    pub leader_changes: Summary,
    /// Time in which two or more nodes acted as leader at once.
    pub two_leaders_ms: Summary,
    /// Time in which no node acted as leader.
    pub no_leader_ms: Summary,
    /// Removals by their logged reason, over all trials.
    pub removal_reasons: BTreeMap<String, usize>,
}

/// What one trial measured.
struct Trial {
    removals: usize,
    changes: usize,
    two_leaders_ms: f64,
    no_leader_ms: f64,
    reasons: BTreeMap<String, usize>,
}

/// Run `trials` trials of `seconds` of loss at `rate` (0 to 1), each node with `extra`
/// flags.
pub fn run(
    bin: &Path,
    rate: f64,
    seconds: u64,
    trials: usize,
    extra: &[String],
) -> anyhow::Result<LossRealRun> {
    anyhow::ensure!(
        (0.0..1.0).contains(&rate),
        "loss rate {rate} is not in [0, 1)"
    );
    let mut all = Vec::new();
    for trial in 0..trials {
        let t = one(bin, rate, Duration::from_secs(seconds), extra)
            .with_context(|| format!("loss {rate}, trial {}", trial + 1))?;
        eprint!(".");
        all.push(t);
    }
    eprintln!();
    let pick =
        |f: fn(&Trial) -> f64| -> Summary { Summary::of(&all.iter().map(f).collect::<Vec<_>>()) };
    let mut reasons = BTreeMap::new();
    for (r, k) in all.iter().flat_map(|t| &t.reasons) {
        *reasons.entry(r.clone()).or_insert(0) += k;
    }
    Ok(LossRealRun {
        rate,
        nodes: NODES,
        seconds: seconds as f64,
        trials,
        removals: pick(|t| t.removals as f64),
        leader_changes: pick(|t| t.changes as f64),
        two_leaders_ms: pick(|t| t.two_leaders_ms),
        no_leader_ms: pick(|t| t.no_leader_ms),
        removal_reasons: reasons,
    })
}

/// The nftables rules that make a host drop `rate` of what it sends and receives on
/// its link (loopback is left alone).
fn loss_rules(rate: f64) -> String {
    let per_10k = (rate * 10_000.0).round() as u32;
    format!(
        "table inet lesloss {{\n  \
         chain input {{ type filter hook input priority 0; policy accept; \
         iifname \"eth0\" numgen random mod 10000 < {per_10k} drop; }}\n  \
         chain output {{ type filter hook output priority 0; policy accept; \
         oifname \"eth0\" numgen random mod 10000 < {per_10k} drop; }}\n}}\n"
    )
}

fn one(bin: &Path, rate: f64, length: Duration, extra: &[String]) -> anyhow::Result<Trial> {
    let lab = Lab::start(bin, "loss", 6, NODES, extra)?;
    lab.settled_leader(SETTLE).context("before the loss")?;
    let rules = loss_rules(rate);
    let t_loss = SystemTime::now();
    for name in &lab.names {
        let ns = lab.net.ns(name);
        netns::run(
            "ip",
            &["netns", "exec", &ns, "nft", "-f", "-"],
            Some(&rules),
        )
        .map_err(anyhow::Error::msg)?;
    }
    std::thread::sleep(length);
    let t_end = SystemTime::now();
    let logs = lab.logs();
    drop(lab);

    let within = |at: SystemTime| at >= t_loss && at <= t_end;
    let mut reasons = BTreeMap::new();
    let removals = logs
        .iter()
        .flat_map(|l| &l.removals)
        .filter(|r| within(r.at));
    for r in removals {
        *reasons.entry(r.reason.clone()).or_insert(0) += 1;
    }
    let changes: Vec<Vec<netns::LeaderLine>> = logs.into_iter().map(|l| l.changes).collect();
    let acting = lab::acting(&changes, t_end);
    Ok(Trial {
        removals: reasons.values().sum(),
        changes: changes.iter().flatten().filter(|c| within(c.at)).count(),
        two_leaders_ms: ms(time_where(&acting, t_loss, t_end, |k| k >= 2)),
        no_leader_ms: ms(time_where(&acting, t_loss, t_end, |k| k == 0)),
        reasons,
    })
}

/// The table for BENCHMARKS.md and the terminal.
pub fn table(runs: &[LossRealRun]) -> String {
    let mut s = String::from(
        "Min / median / p90 / max over the trials; counts are over all nodes together, \
         from the start of the loss to its end. Loss is per node and per direction: a \
         packet from one node to another passes the sender's output and the receiver's \
         input, so it is lost with probability 1 - (1 - p)^2 (36 % at p = 20 %), and TCP \
         retransmits it, so the nodes see late answers (a lost SYN costs a 1 s \
         retransmission, as long as the default request timeout) more than lost ones.\n\n\
         | loss per node, each way | nodes | seconds | trials | member removals | leader changes | two acting leaders, ms | no acting leader, ms | removals by reason |\n\
         |---:|---:|---:|---:|---|---|---|---|---|\n",
    );
    for r in runs {
        let reasons: Vec<String> = r
            .removal_reasons
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s += &format!(
            "| {} % | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            (r.rate * 1000.0).round() / 10.0,
            r.nodes,
            r.seconds,
            r.trials,
            r.removals.cells(0),
            r.leader_changes.cells(0),
            r.two_leaders_ms.cells(0),
            r.no_leader_ms.cells(0),
            if reasons.is_empty() {
                "-".to_string()
            } else {
                reasons.join(", ")
            }
        );
    }
    s
}
