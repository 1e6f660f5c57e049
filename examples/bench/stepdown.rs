//! `--stepdown-trials N`: operator step-down timed on 3 real `les` processes on
//! loopback. Each trial sends `POST /step-down` to the leader and measures until every
//! node follows the next most senior node (the last node's "leader changed" log line),
//! counting the leader changes each node logged; the old leader, now the most junior,
//! then waits its turn, so the trials rotate through the nodes of one cluster.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use les::client::PeerClient;
use les::net::TokioNetwork;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::stats::Summary;
use crate::{ms_between, scratch};

const NODES: usize = 3;

/// The step-down timings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepDownRun {
    pub nodes: usize,
    /// Request sent to the leader → every node follows its successor, ms.
    pub stepdown_ms: Summary,
    /// Leader changes logged per node per step-down (1 is the target).
    pub changes_per_node: Summary,
    /// Trials whose new leader was not the next most senior node (must be 0).
    pub wrong_leader: usize,
}

pub fn run(bin: &Path, extra: &[String], trials: usize) -> anyhow::Result<StepDownRun> {
    let wait = Duration::from_secs(10);
    let c = Cluster::launch(bin, NODES, extra, &scratch("stepdown"))?;
    let (mut leader, _) = c.wait_agreement(None, wait).context("convergence")?;
    // Seniority order, most senior first; a node that steps down goes to the end.
    let mut order: Vec<usize> = (0..NODES).collect();
    order.sort_by(|a, b| {
        let st = |i: &usize| c.start_time(*i).unwrap_or(f64::MAX);
        st(a).total_cmp(&st(b))
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = PeerClient::new(TokioNetwork, Duration::from_secs(2));
    let (mut ms, mut changes, mut wrong) = (Vec::new(), Vec::new(), 0);
    for trial in 0..trials {
        std::thread::sleep(Duration::from_millis(300)); // a few rounds of steady state
        let sent = SystemTime::now();
        let reply = rt
            .block_on(client.step_down(&c.nodes[leader].addr))
            .with_context(|| format!("step-down {trial}"))?;
        anyhow::ensure!(reply.was_leader, "trial {trial}: {}", reply.message);
        let (next, at) = c
            .wait_agreement(Some(leader), wait)
            .with_context(|| format!("agreement after step-down {trial}"))?;
        ms.push(ms_between(sent, at));
        changes.push(c.changes_since(sent) as f64 / NODES as f64);
        order.retain(|i| *i != leader);
        wrong += usize::from(order.first() != Some(&next));
        order.push(leader);
        leader = next;
    }
    c.shutdown();
    Ok(StepDownRun {
        nodes: NODES,
        stepdown_ms: Summary::of(&ms),
        changes_per_node: Summary::of(&changes),
        wrong_leader: wrong,
    })
}

/// The result as a small Markdown table.
pub fn table(r: &StepDownRun) -> String {
    format!(
        "| {} nodes on loopback | min / median / p90 / max |\n|---|---|\n\
         | `les step-down`: request sent → every node follows the successor | {} ms |\n\
         | leader changes per node per step-down | {} |\n\
         | trials with the wrong successor | {} of {} |\n",
        r.nodes,
        r.stepdown_ms.cells(2),
        r.changes_per_node.cells(2),
        r.wrong_leader,
        r.stepdown_ms.n
    )
}
