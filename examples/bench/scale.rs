//! Scale: thousands of protocol cores in one deterministic discrete-event loop.
//!
//! Real processes stop at a few dozen nodes on a 2-core machine, so cluster sizes up to
//! 1,000 are measured on the protocol core itself (the same `les::core::Core` every
//! node runs), connected by a simulated network with 1–2 ms latency per hop. Rounds are
//! `interval`s of simulated time; messages are requests sent (state fetches and probes).
//! A crashed process is modelled as refused connections (its kernel is up), without the
//! closed-connection shortcut real nodes also get, so these are upper bounds; a vanished
//! host is modelled as requests that time out.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use les::core::{Action, Core, CoreConfig, Event, Failure};
use les::wire::PeerState;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

const INTERVAL_MS: u64 = 1000;
const REQUEST_TIMEOUT_MS: u64 = 1000;

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
    pub converge_rounds: f64,
    pub converge_messages: u64,
    pub full_membership_rounds: f64,
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
        state: PeerState,
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

struct Net {
    cores: Vec<Core>,
    alive: Vec<bool>,
    index: HashMap<String, usize>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Ev>,
    seq: u64,
    now: u64,
    rng: SmallRng,
    messages: u64,
    crash: CrashKind,
    /// Per node: the leader it follows (index).
    leader: Vec<Option<usize>>,
    /// Probability that a request or its answer is lost (the request then times out).
    loss: f64,
    /// Leader changes seen, all nodes together.
    changes: u64,
}

impl Net {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq, ev);
        self.queue.push(Reverse((at, self.seq)));
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
                Action::LeaderChanged(c) => {
                    self.changes += 1;
                    self.leader[i] = c.current.as_ref().map(|l| self.index[l]);
                }
                _ => {}
            }
        }
    }

    fn step(&mut self) -> bool {
        let Some(Reverse((at, seq))) = self.queue.pop() else {
            return false;
        };
        self.now = at;
        let Some(ev) = self.events.remove(&seq) else {
            return true;
        };
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
                let state = self.cores[to].state();
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
        while self.now <= end {
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
        events: HashMap::new(),
        seq: 0,
        now: 0,
        rng: SmallRng::seed_from_u64(seed),
        messages: 0,
        crash,
        loss,
        changes: 0,
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
}

pub fn lossy(n: usize, loss: f64, seconds: u64, seed: u64) -> LossRun {
    let (mut net, _) = cluster(n, CrashKind::Refused, loss, seed);
    net.run_until(600 * INTERVAL_MS, |net| net.all_follow(0));
    let (c0, m0) = (net.changes, net.messages);
    net.run_until(seconds * 1000, |_| false);
    LossRun {
        nodes: n,
        loss,
        simulated_seconds: seconds,
        messages: net.messages - m0,
        spurious_changes: net.changes - c0,
    }
}

/// One run: `n` nodes start within one interval, seeded with the first three; then the
/// leader crashes; then a follower crashes.
pub fn run(n: usize, crash: CrashKind, seed: u64) -> ScaleResult {
    let wall = Instant::now();
    let (mut net, addrs) = cluster(n, crash, 0.0, seed);
    let limit = 600 * INTERVAL_MS;
    let rounds = |ms: Option<u64>| {
        ms.map(|t| t as f64 / INTERVAL_MS as f64)
            .unwrap_or(f64::NAN)
    };

    let conv = net.run_until(limit, |net| net.all_follow(0));
    let converge_messages = net.messages;
    let full = net.run_until(limit, |net| {
        net.cores.iter().all(|c| c.member_count() == n - 1)
    });

    // Let it settle, then crash the leader.
    net.run_until(5 * INTERVAL_MS, |_| false);
    let (t0, m0) = (net.now, net.messages);
    net.alive[0] = false;
    let fo = net
        .run_until(limit, |net| net.all_follow(1))
        .map(|t| t - t0);
    let failover_messages = net.messages - m0;

    // Settle, then crash a follower: done when no survivor lists it.
    net.run_until(5 * INTERVAL_MS, |_| false);
    let victim = n / 2;
    let victim_addr = addrs[victim].clone();
    let (t1, m1) = (net.now, net.messages);
    net.alive[victim] = false;
    let mut last_report = t1;
    let det = net
        .run_until(limit, |net| {
            if std::env::var_os("SCALE_DEBUG").is_some() && net.now >= last_report + 500 {
                last_report = net.now;
                let still = (0..n)
                    .filter(|&i| net.alive[i] && net.cores[i].is_member(&victim_addr))
                    .count();
                eprintln!("t+{}ms: {still} still list the victim", net.now - t1);
            }
            (0..n).all(|i| !net.alive[i] || !net.cores[i].is_member(&victim_addr))
        })
        .map(|t| t - t1);

    ScaleResult {
        nodes: n,
        crash: match crash {
            CrashKind::Refused => "process (refused)",
            CrashKind::Silent => "host (timeouts)",
        },
        converge_rounds: rounds(conv),
        converge_messages,
        full_membership_rounds: rounds(full),
        failover_rounds: rounds(fo),
        failover_messages,
        follower_detect_rounds: rounds(det),
        follower_detect_messages: net.messages - m1,
        wall_seconds: wall.elapsed().as_secs_f64(),
    }
}
