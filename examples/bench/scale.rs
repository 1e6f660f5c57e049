//! Scale: thousands of protocol cores in one deterministic discrete-event loop.
//!
//! Real processes stop at a few dozen nodes on a 2-core machine, so cluster sizes up to
//! 1,000 are measured on the protocol core itself (the same `les::core::Core` every
//! node runs), connected by a simulated network with 1–2 ms latency per hop. Rounds are
//! `interval`s of simulated time; messages are requests sent (state fetches and probes).
//! A crashed process is modelled as refused connections (its kernel is up), without the
//! closed-connection shortcut real nodes also get, so these are upper bounds; a vanished
//! host is modelled as requests that time out.

mod net;

use std::time::Instant;

use les::core::{Core, CoreConfig};
use net::Net;
use serde::Serialize;

const INTERVAL_MS: u64 = 1000;
const REQUEST_TIMEOUT_MS: u64 = 1000;

/// Bytes of an HTTP request or answer besides its body: request line or status line and
/// headers (host, etag, content length), as the runtime sends them, roughly.
pub const HEADER_BYTES: u64 = 120;
/// A probe: the request to the helper, the helper's ping and both answers.
const PROBE_BYTES: u64 = 4 * HEADER_BYTES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashKind {
    /// The process died: connections are refused.
    Refused,
    /// The host vanished: requests time out.
    Silent,
}

/// What one run measured. Rounds are simulated time / interval.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleResult {
    pub nodes: usize,
    /// A lean run (`--sim-lean-from`): no steady state, shorter settling.
    pub lean: bool,
    pub crash: &'static str,
    #[serde(flatten)]
    pub join: JoinResult,
    /// Leader crash: until every survivor follows the new leader.
    pub failover_rounds: f64,
    pub failover_messages: u64,
    /// Follower crash: until no survivor lists it.
    pub follower_detect_rounds: f64,
    pub follower_detect_messages: u64,
    /// Survivors that still listed the crashed follower when the wait for its
    /// detection ended (0: every one detected it; a lean run waits at most
    /// `LEAN_DETECT_ROUNDS`).
    pub follower_still_listed: usize,
    pub wall_seconds: f64,
}

/// A long steady run with message loss: leader changes after the first agreement.
#[derive(Debug, Clone, Serialize)]
pub struct LossRun {
    pub nodes: usize,
    pub loss: f64,
    pub simulated_seconds: u64,
    pub messages: u64,
    pub spurious_changes: u64,
    /// Live members removed after the first agreement (every node is alive throughout).
    pub removals: u64,
}

pub fn lossy(n: usize, loss: f64, seconds: u64, seed: u64) -> LossRun {
    let mut net = Net::cluster(n, CrashKind::Refused, loss, seed);
    net.run_until(600 * INTERVAL_MS, |net| net.all_follow(0));
    let (c0, m0, r0) = (net.changes, net.messages, net.removals);
    net.run_until(seconds * 1000, |_| false);
    LossRun {
        nodes: n,
        loss,
        simulated_seconds: seconds,
        messages: net.messages - m0,
        spurious_changes: net.changes - c0,
        removals: net.removals - r0,
    }
}

/// Cluster sizes up to this wait for full membership before the failures: beyond it,
/// the N² fetches that full membership needs (rule 3) take longer to simulate than the
/// rest together, so the failures strike while members are still being learned.
pub const FULL_WAIT_MAX: usize = 1000;

/// Rounds over which steady-state traffic is measured.
const STEADY_ROUNDS: u64 = 10;

/// Rounds a run lets pass before each crash and after each detection.
const SETTLE_ROUNDS: u64 = 5;

/// The same in a lean run (`--sim-lean-from`): member tables grow by about 70 entries a
/// node a round until full, at about 0.5 kB an entry, so 10,000 nodes fill 18 GB in
/// about 50 rounds. A lean run skips the steady state and settles 2 rounds instead of
/// 5, and waits at most [`LEAN_DETECT_ROUNDS`] for a detection, so that both crash
/// kinds are measured within about 40 rounds of the start.
const LEAN_SETTLE_ROUNDS: u64 = 2;

/// Rounds a lean run waits for every survivor to drop a crashed follower. Mid-join, a
/// node that listed it and got no hint from a peer that removed it (tombstones, and so
/// hints, last `rejoin_holdoff`) finds out only when its rotation reaches it, about
/// members / fanout rounds later: at 10,000 nodes that is longer than memory lasts.
const LEAN_DETECT_ROUNDS: u64 = 10;

fn rounds(ms: Option<u64>) -> f64 {
    ms.map(|t| t as f64 / INTERVAL_MS as f64)
        .unwrap_or(f64::NAN)
}

/// The join and the steady state that follows: shared by both crash kinds' rows.
#[derive(Debug, Clone, Serialize)]
pub struct JoinResult {
    /// Until every node follows the most senior.
    pub converge_rounds: f64,
    pub converge_messages: u64,
    pub converge_bytes: u64,
    /// Until every node lists every other (NaN: not waited for, N > FULL_WAIT_MAX).
    pub full_membership_rounds: f64,
    pub full_membership_messages: u64,
    /// Mean share of the other nodes each node lists, when the steady state is measured.
    pub steady_membership: f64,
    pub steady_messages_per_node_round: f64,
    pub steady_bytes_per_node_round: f64,
    /// State changes per node per round then (each makes the next answers full ones).
    pub steady_changes_per_node_round: f64,
}

fn join(net: &mut Net, n: usize, lean: bool) -> JoinResult {
    let limit = 600 * INTERVAL_MS;
    let phase = Instant::now();
    let conv = net.run_until(limit, |net| net.all_follow(0));
    eprintln!("  converged: {:.1} s", phase.elapsed().as_secs_f64());
    let (converge_messages, converge_bytes) = (net.messages, net.bytes);
    let full = if n <= FULL_WAIT_MAX {
        net.run_until(limit, |net| {
            net.cores.iter().all(|c| c.member_count() == n - 1)
        })
    } else {
        None
    };
    let full_membership_messages = net.messages;
    eprintln!("  full membership: {:.1} s", phase.elapsed().as_secs_f64());
    if lean {
        let known: usize = net.cores.iter().map(Core::member_count).sum();
        return JoinResult {
            converge_rounds: rounds(conv),
            converge_messages,
            converge_bytes,
            full_membership_rounds: f64::NAN,
            full_membership_messages,
            steady_membership: known as f64 / (n * (n - 1).max(1)) as f64,
            steady_messages_per_node_round: f64::NAN,
            steady_bytes_per_node_round: f64::NAN,
            steady_changes_per_node_round: f64::NAN,
        };
    }
    // Steady state: after two rotation cycles (the first one after the join may have
    // started on a shorter member list), each node holds every member's state. Without
    // full membership there is no steady state to wait for: 5 rounds, and the figures
    // are those of a join in progress (`steady_membership` < 1 says so).
    let cycle = if full.is_some() {
        2 * (n / CoreConfig::default().fanout.max(1)) as u64 + 5
    } else {
        5
    };
    net.run_until(cycle * INTERVAL_MS, |_| false);
    let (m0, b0) = (net.messages, net.bytes);
    let v0: u64 = net.version.iter().sum();
    net.run_until(STEADY_ROUNDS * INTERVAL_MS, |_| false);
    let changes = net.version.iter().sum::<u64>() - v0;
    eprintln!("  steady: {:.1} s", phase.elapsed().as_secs_f64());
    let per = (n as u64 * STEADY_ROUNDS) as f64;
    let known: usize = net.cores.iter().map(Core::member_count).sum();
    JoinResult {
        converge_rounds: rounds(conv),
        converge_messages,
        converge_bytes,
        full_membership_rounds: rounds(full),
        full_membership_messages,
        steady_membership: known as f64 / (n * (n - 1).max(1)) as f64,
        steady_messages_per_node_round: (net.messages - m0) as f64 / per,
        steady_bytes_per_node_round: (net.bytes - b0) as f64 / per,
        steady_changes_per_node_round: changes as f64 / per,
    }
}

/// One run: `n` nodes start within one interval, seeded with the first three, and
/// join; then for each crash kind in turn the leader crashes, then a follower. One
/// join serves both kinds (it is most of the work, and the kind plays no part in it).
/// A `lean` run measures no steady state and settles less (see [`LEAN_SETTLE_ROUNDS`]).
pub fn run(n: usize, seed: u64, lean: bool) -> Vec<ScaleResult> {
    let wall = Instant::now();
    let settle = if lean {
        LEAN_SETTLE_ROUNDS
    } else {
        SETTLE_ROUNDS
    };
    let mut net = Net::cluster(n, CrashKind::Refused, 0.0, seed);
    let joined = join(&mut net, n, lean);
    let mut out = Vec::new();
    for (k, crash) in [CrashKind::Refused, CrashKind::Silent]
        .into_iter()
        .enumerate()
    {
        net.crash = crash;
        let leader = k;
        let victim = n / 2 + k;
        let (fo, fo_msgs) = crash_leader(&mut net, leader, settle);
        let victim_addr = net.cores[victim].me().to_string();
        let detect = if lean { LEAN_DETECT_ROUNDS } else { 600 };
        let (det, det_msgs) = crash_follower(&mut net, victim, &victim_addr, settle, detect);
        let still_listed = listing(&net, &victim_addr);
        net.run_until(settle * INTERVAL_MS, |_| false);
        let known: usize = net.cores.iter().map(Core::member_count).sum();
        eprintln!(
            "  {crash:?} crashes: {:.1} s, {:.0} members a node",
            wall.elapsed().as_secs_f64(),
            known as f64 / n as f64
        );
        out.push(ScaleResult {
            nodes: n,
            lean,
            crash: match crash {
                CrashKind::Refused => "process (refused)",
                CrashKind::Silent => "host (timeouts)",
            },
            join: joined.clone(),
            failover_rounds: fo,
            failover_messages: fo_msgs,
            follower_detect_rounds: det,
            follower_detect_messages: det_msgs,
            follower_still_listed: still_listed,
            wall_seconds: 0.0,
        });
    }
    let secs = wall.elapsed().as_secs_f64();
    for r in &mut out {
        r.wall_seconds = secs;
    }
    out
}

/// Crash `leader` (the one every node follows): rounds and messages until every
/// survivor follows the next most senior.
fn crash_leader(net: &mut Net, leader: usize, settle: u64) -> (f64, u64) {
    net.run_until(settle * INTERVAL_MS, |_| false);
    let (t0, m0) = (net.now, net.messages);
    net.alive[leader] = false;
    let fo = net
        .run_until(600 * INTERVAL_MS, |net| net.all_follow(leader + 1))
        .map(|t| t - t0);
    (rounds(fo), net.messages - m0)
}

/// Survivors that list `addr`.
fn listing(net: &Net, addr: &str) -> usize {
    (0..net.cores.len())
        .filter(|&i| net.alive[i] && net.cores[i].is_member(addr))
        .count()
}

/// Crash follower `victim`: rounds and messages until no survivor lists it, waiting at
/// most `limit` rounds.
fn crash_follower(
    net: &mut Net,
    victim: usize,
    victim_addr: &str,
    settle: u64,
    limit: u64,
) -> (f64, u64) {
    net.run_until(settle * INTERVAL_MS, |_| false);
    let n = net.cores.len();
    let (t1, m1) = (net.now, net.messages);
    net.alive[victim] = false;
    let mut last_report = t1;
    let det = net
        .run_until(limit * INTERVAL_MS, |net| {
            if std::env::var_os("SCALE_DEBUG").is_some() && net.now >= last_report + 500 {
                last_report = net.now;
                let still = listing(net, victim_addr);
                eprintln!("t+{}ms: {still} still list the victim", net.now - t1);
            }
            (0..n).all(|i| !net.alive[i] || !net.cores[i].is_member(victim_addr))
        })
        .map(|t| t - t1);
    (rounds(det), net.messages - m1)
}
