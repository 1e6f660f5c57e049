//! Scale: thousands of protocol cores in one deterministic discrete-event loop.
//!
//! Real processes stop at a few dozen nodes on a 2-core machine, so cluster sizes up to
//! 1,000 are measured on the protocol core itself (the same `les::core::Core` every
//! node runs), connected by a simulated network with 1–2 ms latency per hop. Rounds are
//! `interval`s of simulated time; messages are requests sent (state fetches and probes).
//! A crashed process is modelled as refused connections (its kernel is up), without the
//! closed-connection shortcut real nodes also get, so these are upper bounds; a vanished
//! host is modelled as requests that time out.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use les::core::{Action, Core, CoreConfig, Event, Failure};
use les::wire::PeerState;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
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
    pub crash: &'static str,
    #[serde(flatten)]
    pub join: JoinResult,
    /// Leader crash: until every survivor follows the new leader.
    pub failover_rounds: f64,
    pub failover_messages: u64,
    /// Follower crash: until no survivor lists it.
    pub follower_detect_rounds: f64,
    pub follower_detect_messages: u64,
    pub wall_seconds: f64,
}

enum Ev {
    Tick(usize),
    Request {
        from: usize,
        to: usize,
    },
    Response {
        to: usize,
        from: usize,
        state: Rc<PeerState>,
    },
    Failed {
        to: usize,
        addr: String,
        failure: Failure,
    },
    Probe {
        to: usize,
        target: String,
        reachable: bool,
    },
    Leave {
        to: usize,
        from: String,
    },
}

/// A queued event, ordered by time and then by the order it was queued in (the event
/// itself takes no part in the order, so it lives in the heap: no side table to hash).
struct Queued {
    at: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A node's current state document, shared by every answer until its next
/// `StateChanged` (building it is O(members); most answers between two changes carry
/// the same one), with its encoded size once some answer needed it.
struct Cached {
    state: Rc<PeerState>,
    bytes: Option<usize>,
}

struct Net {
    cores: Vec<Core>,
    alive: Vec<bool>,
    index: HashMap<String, usize>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// Per node: its state, built at the first request after a change.
    cache: Vec<Option<Cached>>,
    /// Per node: how many times its state changed (its etag, in effect).
    version: Vec<u64>,
    /// Per requester: the version of each peer's state it last received in full or
    /// confirmed unchanged (`If-None-Match` in the runtime).
    seen: Vec<HashMap<u32, u64>>,
    /// Bytes sent, requests and answers, headers included (see `bytes`).
    bytes: u64,
    now: u64,
    rng: SmallRng,
    messages: u64,
    /// How a node that is not alive fails its callers.
    crash: CrashKind,
    /// Per node: the leader it follows (index).
    leader: Vec<Option<usize>>,
    /// Probability that a request or its answer is lost (the request then times out).
    loss: f64,
    /// Leader changes seen, all nodes together.
    changes: u64,
    /// Members removed, all nodes together.
    removals: u64,
}

impl Net {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Queued { at, seq, ev }));
    }

    /// What `to` answers `from`'s fetch: its state, shared, counted in `bytes` as a
    /// full body, or as a bodiless `304 Not Modified` when `from` already holds this
    /// exact state (the runtime's conditional fetch with `wire::state_etag`).
    fn answer(&mut self, from: usize, to: usize) -> Rc<PeerState> {
        let cached = self.cache[to].get_or_insert_with(|| Cached {
            state: Rc::new(self.cores[to].state()),
            bytes: None,
        });
        let version = self.version[to];
        let held = self.seen[from].insert(to as u32, version);
        let body = if held == Some(version) {
            0
        } else {
            let state = &cached.state;
            *cached
                .bytes
                .get_or_insert_with(|| serde_json::to_vec(&**state).map_or(0, |b| b.len()))
                as u64
        };
        self.bytes += HEADER_BYTES + body;
        Rc::clone(&cached.state)
    }

    /// The state `to` hands its core for an answer from `from` (a `304` hands the copy
    /// `to` holds, which is this one). When the core says it will not read the member
    /// list (`Core::reads_members`: it already knows every node listed, or it has no
    /// budget left this round to fetch any), a copy without the list does the same at
    /// O(1) instead of O(N): that is what makes 1,000 nodes cheap to simulate.
    fn delivered(&self, to: usize, from: usize, state: Rc<PeerState>) -> PeerState {
        if self.cores[to].reads_members(self.cores[from].me(), &state) {
            return Rc::unwrap_or_clone(state);
        }
        let s = &*state;
        PeerState {
            members: Vec::new(),
            leader: s.leader.clone(),
            name: s.name.clone(),
            version: s.version.clone(),
            cluster: s.cluster.clone(),
            removed: s.removed.clone(),
            ..*s
        }
    }

    fn hop(&mut self) -> u64 {
        1 + self.rng.random_range(0..=1)
    }

    fn apply(&mut self, i: usize, event: Event) {
        let now = Duration::from_millis(self.now);
        let actions = self.cores[i].handle(now, event);
        for a in actions {
            match a {
                Action::FetchState { addr } => {
                    self.messages += 1;
                    self.bytes += HEADER_BYTES;
                    let j = self.index[&addr];
                    let hop = self.hop();
                    if self.loss > 0.0 && self.rng.random_bool(self.loss) {
                        let failure = Failure::Timeout;
                        self.push(
                            self.now + REQUEST_TIMEOUT_MS,
                            Ev::Failed {
                                to: i,
                                addr,
                                failure,
                            },
                        );
                    } else if self.alive[j] {
                        self.push(self.now + hop, Ev::Request { from: i, to: j });
                    } else {
                        let (delay, failure) = match self.crash {
                            CrashKind::Refused => (hop, Failure::Refused),
                            CrashKind::Silent => (REQUEST_TIMEOUT_MS, Failure::Timeout),
                        };
                        self.push(
                            self.now + delay,
                            Ev::Failed {
                                to: i,
                                addr,
                                failure,
                            },
                        );
                    }
                }
                Action::Probe { target, via, .. } => {
                    self.messages += 1;
                    self.bytes += PROBE_BYTES;
                    let lost = self.loss > 0.0 && self.rng.random_bool(self.loss);
                    let reachable =
                        !lost && self.alive[self.index[&target]] && self.alive[self.index[&via]];
                    let hop = self.hop();
                    self.push(
                        self.now + 2 * hop,
                        Ev::Probe {
                            to: i,
                            target,
                            reachable,
                        },
                    );
                }
                Action::SendLeave { addr } => {
                    let j = self.index[&addr];
                    let from = self.cores[i].me().to_string();
                    let hop = self.hop();
                    self.push(self.now + hop, Ev::Leave { to: j, from });
                }
                Action::MemberRemoved { .. } => self.removals += 1,
                Action::LeaderChanged(c) => {
                    self.changes += 1;
                    self.leader[i] = c.current.as_ref().map(|l| self.index[l]);
                }
                Action::StateChanged | Action::StartTimeChanged { .. } => {
                    self.cache[i] = None;
                    self.version[i] += 1;
                }
                _ => {}
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse(Queued { at, ev, .. })) = self.queue.pop() else {
            return false;
        };
        self.now = at;
        match ev {
            Ev::Tick(i) => {
                if self.alive[i] {
                    let wall = 1000.0 + self.now as f64 / 1000.0;
                    self.apply(i, Event::Tick { wall });
                    self.push(self.now + INTERVAL_MS, Ev::Tick(i));
                }
            }
            Ev::Request { from, to } => {
                if !self.alive[to] {
                    let addr = self.cores[to].me().to_string();
                    let hop = self.hop();
                    self.push(
                        self.now + hop,
                        Ev::Failed {
                            to: from,
                            addr,
                            failure: Failure::Refused,
                        },
                    );
                    return true;
                }
                let caller = self.cores[from].me().to_string();
                self.apply(to, Event::Announced { addr: caller });
                let state = self.answer(from, to);
                let hop = self.hop();
                self.push(
                    self.now + hop,
                    Ev::Response {
                        to: from,
                        from: to,
                        state,
                    },
                );
            }
            Ev::Response { to, from, state } => {
                if self.alive[to] {
                    let state = self.delivered(to, from, state);
                    let from = self.cores[from].me().to_string();
                    self.apply(to, Event::StateReceived { from, state });
                }
            }
            Ev::Failed { to, addr, failure } => {
                if self.alive[to] {
                    self.apply(to, Event::ContactFailed { addr, failure });
                }
            }
            Ev::Probe {
                to,
                target,
                reachable,
            } => {
                if self.alive[to] {
                    self.apply(to, Event::ProbeAnswered { target, reachable });
                }
            }
            Ev::Leave { to, from } => {
                if self.alive[to] {
                    self.apply(to, Event::LeaveReceived { addr: from });
                }
            }
        }
        true
    }

    /// Run until `done` holds (checked every 10 simulated ms) or `limit_ms` passes.
    fn run_until(&mut self, limit_ms: u64, mut done: impl FnMut(&Net) -> bool) -> Option<u64> {
        let end = self.now + limit_ms;
        let mut next_check = self.now;
        let debug = std::env::var_os("SCALE_DEBUG").is_some();
        while self.now <= end {
            if debug
                && self.now / INTERVAL_MS != (self.now + 10) / INTERVAL_MS
                && self.now >= next_check
            {
                self.progress();
            }
            if self.now >= next_check {
                if done(self) {
                    return Some(self.now);
                }
                next_check = self.now + 10;
            }
            if !self.step() {
                return None;
            }
        }
        None
    }

    fn progress(&self) {
        let known: usize = self.cores.iter().map(Core::member_count).sum();
        eprintln!(
            "t={}ms queue={} messages={} bytes={} mean members={:.1} changes={}",
            self.now,
            self.queue.len(),
            self.messages,
            self.bytes,
            known as f64 / self.cores.len() as f64,
            self.version.iter().sum::<u64>()
        );
    }

    fn all_follow(&self, leader: usize) -> bool {
        (0..self.cores.len()).all(|i| !self.alive[i] || self.leader[i] == Some(leader))
    }
}

/// `n` cores seeded with the first three, ticking at random phases within one interval;
/// node 0 is the most senior.
fn cluster(n: usize, crash: CrashKind, loss: f64, seed: u64) -> (Net, Vec<String>) {
    let addrs: Vec<String> = (0..n).map(|i| format!("n{i}:4000")).collect();
    let seeds: Vec<String> = addrs.iter().take(3).cloned().collect();
    let cfg = CoreConfig::default();
    let cores: Vec<Core> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Core::new(
                cfg.clone(),
                a.clone(),
                1000.0 - n as f64 + i as f64 * 0.5,
                &seeds,
                seed ^ i as u64,
            )
        })
        .collect();
    let mut net = Net {
        index: addrs
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, a)| (a, i))
            .collect(),
        alive: vec![true; n],
        leader: vec![None; n],
        cores,
        queue: BinaryHeap::new(),
        cache: (0..n).map(|_| None).collect(),
        version: vec![0; n],
        seen: vec![HashMap::new(); n],
        bytes: 0,
        seq: 0,
        now: 0,
        rng: SmallRng::seed_from_u64(seed),
        messages: 0,
        crash,
        loss,
        changes: 0,
        removals: 0,
    };
    for i in 0..n {
        let phase = net.rng.random_range(0..INTERVAL_MS);
        net.push(phase, Ev::Tick(i));
    }
    (net, addrs)
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
    let (mut net, _) = cluster(n, CrashKind::Refused, loss, seed);
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

fn join(net: &mut Net, n: usize) -> JoinResult {
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
pub fn run(n: usize, seed: u64) -> Vec<ScaleResult> {
    let wall = Instant::now();
    let (mut net, addrs) = cluster(n, CrashKind::Refused, 0.0, seed);
    let joined = join(&mut net, n);
    let mut out = Vec::new();
    for (k, crash) in [CrashKind::Refused, CrashKind::Silent]
        .into_iter()
        .enumerate()
    {
        net.crash = crash;
        let leader = k;
        let victim = n / 2 + k;
        let (fo, fo_msgs) = crash_leader(&mut net, leader);
        let (det, det_msgs) = crash_follower(&mut net, victim, &addrs[victim]);
        net.run_until(5 * INTERVAL_MS, |_| false);
        out.push(ScaleResult {
            nodes: n,
            crash: match crash {
                CrashKind::Refused => "process (refused)",
                CrashKind::Silent => "host (timeouts)",
            },
            join: joined.clone(),
            failover_rounds: fo,
            failover_messages: fo_msgs,
            follower_detect_rounds: det,
            follower_detect_messages: det_msgs,
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
fn crash_leader(net: &mut Net, leader: usize) -> (f64, u64) {
    net.run_until(5 * INTERVAL_MS, |_| false);
    let (t0, m0) = (net.now, net.messages);
    net.alive[leader] = false;
    let fo = net
        .run_until(600 * INTERVAL_MS, |net| net.all_follow(leader + 1))
        .map(|t| t - t0);
    (rounds(fo), net.messages - m0)
}

/// Crash follower `victim`: rounds and messages until no survivor lists it.
fn crash_follower(net: &mut Net, victim: usize, victim_addr: &str) -> (f64, u64) {
    net.run_until(5 * INTERVAL_MS, |_| false);
    let n = net.cores.len();
    let (t1, m1) = (net.now, net.messages);
    net.alive[victim] = false;
    let mut last_report = t1;
    let det = net
        .run_until(600 * INTERVAL_MS, |net| {
            if std::env::var_os("SCALE_DEBUG").is_some() && net.now >= last_report + 500 {
                last_report = net.now;
                let still = (0..n)
                    .filter(|&i| net.alive[i] && net.cores[i].is_member(victim_addr))
                    .count();
                eprintln!("t+{}ms: {still} still list the victim", net.now - t1);
            }
            (0..n).all(|i| !net.alive[i] || !net.cores[i].is_member(victim_addr))
        })
        .map(|t| t - t1);
    (rounds(det), net.messages - m1)
}
