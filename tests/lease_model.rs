//! The store backend's safety claim — never two nodes acting at once — checked over
//! many seeded schedules of a model: the real [`Tenure`] rules on every node, and a
//! store that decides exactly as the PostgreSQL transaction does (`backend/postgres.rs`).
//!
//! Each schedule draws clock rates for the store and every node within the documented
//! bound ρ (5 %), message delays up to longer than the request timeout (so answers come
//! back after the node gave up on them, and commits happen that the node never hears
//! of), lost answers, crashes, long pauses and step-downs. Every interval in real time
//! during which a node may act (from an answer that granted or renewed its lease until
//! its `acting_until`) is recorded, and no two nodes' intervals may overlap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use les::core::tenure::{Grant, Tenure};
use les::core::CLOCK_RATE_BOUND;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const LEASE: f64 = 3.0;
const INTERVAL: f64 = 1.0;
const REQUEST_TIMEOUT: f64 = 1.0;
const RUN: f64 = 120.0;
const SCHEDULES: u64 = 2000;

/// The store's rows, in store seconds.
#[derive(Default)]
struct Store {
    rate: f64,
    holder: Option<(usize, u64)>,
    term: u64,
    expires: f64,
    /// Per node: (incarnation, registered_at, heartbeat, eligible).
    members: Vec<Option<(u64, f64, f64, bool)>>,
}

impl Store {
    /// One round by `node` (incarnation `inc`) arriving at real time `t`: the same
    /// decisions as the SQL transaction.
    fn round(&mut self, node: usize, inc: u64, eligible: bool, t: f64) -> Grant {
        let now = t * self.rate;
        let running = self.expires > now;
        let m = &mut self.members[node];
        let registered = match m {
            Some((i, reg, hb, _)) if *i == inc && *hb >= now - LEASE => *reg,
            _ => now,
        };
        *m = Some((inc, registered, now, eligible));
        let held = running && self.holder == Some((node, inc));
        if held && eligible {
            self.expires = now + LEASE;
        } else if held {
            self.holder = None;
            self.expires = now;
        } else if !running && eligible && self.nominee(now) == Some((node, inc)) {
            self.term += 1;
            self.holder = Some((node, inc));
            self.expires = now + LEASE;
        }
        let running = self.expires > now;
        Grant {
            holder: self
                .holder
                .filter(|_| running)
                .map(|(n, _)| format!("n{n}")),
            mine: running && self.holder == Some((node, inc)),
            term: self.term,
            expires_in: Duration::from_secs_f64(if running { self.expires - now } else { 0.0 }),
        }
    }

    fn nominee(&self, now: f64) -> Option<(usize, u64)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(n, m)| m.map(|m| (n, m)))
            .filter(|(_, (_, _, hb, eligible))| *eligible && *hb > now - LEASE)
            .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(a.0.cmp(&b.0)))
            .map(|(n, (inc, ..))| (n, inc))
    }

    /// A release by `node` in incarnation `old` arriving at `t`: the lease ends if
    /// that incarnation holds it, and the node is registered again as `new` (junior),
    /// as the SQL does.
    fn release(&mut self, node: usize, old: u64, new: u64, t: f64) {
        let now = t * self.rate;
        if self.holder == Some((node, old)) {
            self.holder = None;
            self.expires = now;
        }
        if self.members[node].is_some_and(|m| m.0 == old) {
            self.members[node] = Some((new, now, now, true));
        }
    }
}

struct NodeModel {
    rate: f64,
    offset: f64,
    tenure: Tenure,
    inc: u64,
    alive: bool,
    /// Real time until which the node is paused (it handles nothing before).
    paused_until: f64,
    /// The round in flight: sent at this real time. The driver runs one at a time.
    in_flight: Option<f64>,
    /// Real-time intervals during which it may act.
    acting: Vec<(f64, f64)>,
}

impl NodeModel {
    fn local(&self, t: f64) -> Duration {
        Duration::from_secs_f64(self.offset + t * self.rate)
    }
    fn real(&self, local: Duration) -> f64 {
        (local.as_secs_f64() - self.offset) / self.rate
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    /// A node's round timer.
    Round(usize),
    /// A node's wake-up at the end of the holder's lease as it last heard (the driver
    /// asks again then): a round unless one is in flight.
    Wake(usize),
    /// A round reaches the store: (node, incarnation, sent at real time).
    Arrive(usize, u64, f64),
    /// The store's answer reaches the node: (node, sent at real time, store time of
    /// the transaction, index into `answers`).
    Answer(usize, f64, usize),
    /// A release reaches the store: (node, old incarnation, new incarnation).
    Release(usize, u64, u64),
}

/// Events ordered by real time (non-negative, so its bits order as the number does).
struct Queue(BinaryHeap<Reverse<(u64, usize)>>, Vec<Ev>);

impl Queue {
    fn push(&mut self, t: f64, ev: Ev) {
        self.1.push(ev);
        self.0
            .push(Reverse((t.max(0.0).to_bits(), self.1.len() - 1)));
    }
    fn pop(&mut self) -> Option<(f64, Ev)> {
        let Reverse((t, i)) = self.0.pop()?;
        Some((f64::from_bits(t), self.1[i]))
    }
}

fn schedule(seed: u64) -> Vec<NodeModel> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let rho = CLOCK_RATE_BOUND;
    let n = rng.random_range(2..=5);
    let max_delay = rng.random_range(0.001..1.5);
    let loss = rng.random_range(0.0..0.3);
    let mut store = Store {
        rate: rng.random_range(1.0 - rho..=1.0 + rho),
        members: vec![None; n],
        expires: f64::NEG_INFINITY,
        ..Store::default()
    };
    let mut nodes: Vec<NodeModel> = (0..n)
        .map(|i| NodeModel {
            rate: rng.random_range(1.0 - rho..=1.0 + rho),
            offset: rng.random_range(0.0..100.0),
            tenure: Tenure::new(format!("n{i}")),
            inc: rng.random(),
            alive: true,
            paused_until: 0.0,
            in_flight: None,
            acting: Vec::new(),
        })
        .collect();
    let mut q = Queue(BinaryHeap::new(), Vec::new());
    let mut answers: Vec<Grant> = Vec::new();
    for i in 0..n {
        q.push(rng.random_range(0.0..INTERVAL), Ev::Round(i));
    }
    while let Some((t, ev)) = q.pop() {
        if t > RUN {
            break;
        }
        match ev {
            Ev::Round(i) => {
                let node = &mut nodes[i];
                if !node.alive {
                    continue;
                }
                if t < node.paused_until {
                    q.push(node.paused_until, Ev::Round(i));
                    continue;
                }
                q.push(t + INTERVAL / node.rate, Ev::Round(i));
                // One round at a time: wait for the answer, or give up on it after the
                // request timeout.
                if let Some(sent) = node.in_flight {
                    if (node.local(t) - node.local(sent)).as_secs_f64() < REQUEST_TIMEOUT {
                        continue;
                    }
                    node.in_flight = None;
                }
                // Now and then: a crash, a long pause (the process is stopped; its
                // clock runs on), or a step-down (stop acting, then tell the store).
                match rng.random_range(0..200) {
                    0 => {
                        node.alive = false;
                        continue;
                    }
                    1 | 2 => node.paused_until = t + rng.random_range(0.5..8.0),
                    3 if node.tenure.is_acting(node.local(t)) => {
                        // Stop acting first, then tell the store under a new
                        // incarnation; the release may arrive late, or never.
                        node.tenure.give_up();
                        for span in &mut node.acting {
                            span.1 = span.1.min(t);
                        }
                        let old = std::mem::replace(&mut node.inc, rng.random());
                        if !rng.random_bool(loss) {
                            let d = rng.random_range(0.0..max_delay);
                            q.push(t + d, Ev::Release(i, old, node.inc));
                        }
                        continue;
                    }
                    _ => {}
                }
                let d = rng.random_range(0.0..max_delay);
                node.in_flight = Some(t);
                q.push(t + d, Ev::Arrive(i, node.inc, t));
            }
            Ev::Wake(i) => {
                let node = &mut nodes[i];
                if node.alive && t >= node.paused_until && node.in_flight.is_none() {
                    let d = rng.random_range(0.0..max_delay);
                    node.in_flight = Some(t);
                    q.push(t + d, Ev::Arrive(i, node.inc, t));
                }
            }
            Ev::Arrive(i, inc, sent) => {
                let grant = store.round(i, inc, true, t);
                if rng.random_bool(loss) {
                    continue;
                }
                answers.push(grant);
                let d = rng.random_range(0.0..max_delay);
                q.push(t + d, Ev::Answer(i, sent, answers.len() - 1));
            }
            Ev::Release(i, old, new) => store.release(i, old, new, t),
            Ev::Answer(i, sent, a) => {
                let node = &mut nodes[i];
                let (now, sent_local) = (node.local(t), node.local(sent));
                // The driver gives up on a round after the request timeout, or at the
                // end of its current lease if that comes first; a paused or dead node
                // handles nothing.
                let mut limit = Duration::from_secs_f64(REQUEST_TIMEOUT);
                if let Some(until) = node.tenure.acting_until() {
                    limit = limit.min(until.saturating_sub(sent_local));
                }
                if !node.alive
                    || t < node.paused_until
                    || node.in_flight != Some(sent)
                    || now - sent_local > limit
                {
                    continue;
                }
                node.in_flight = None;
                node.tenure.round_done(sent_local, now, &answers[a]);
                if let Some(until) = node.tenure.acting_until() {
                    let end = node.real(until);
                    if end > t {
                        node.acting.push((t, end));
                    }
                } else if let Some(deadline) = node.tenure.next_deadline() {
                    q.push(node.real(deadline), Ev::Wake(i));
                }
            }
        }
    }
    nodes
}

/// Merged acting intervals of one node.
fn merged(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[test]
fn no_two_nodes_ever_act_at_once_over_seeded_schedules() {
    let mut granted = 0;
    for seed in 0..SCHEDULES {
        let nodes = schedule(seed);
        let spans: Vec<Vec<(f64, f64)>> = nodes.into_iter().map(|n| merged(n.acting)).collect();
        for (a, sa) in spans.iter().enumerate() {
            for (b, sb) in spans.iter().enumerate().skip(a + 1) {
                for x in sa {
                    for y in sb {
                        let overlap = x.0.max(y.0) < x.1.min(y.1);
                        assert!(
                            !overlap,
                            "seed {seed}: n{a} acts {x:?} and n{b} acts {y:?} (real seconds)"
                        );
                    }
                }
            }
        }
        granted += spans.iter().filter(|s| !s.is_empty()).count();
    }
    // The model must exercise leadership, not just sit idle: most schedules elect and
    // most see more than one holder over their crashes, pauses and step-downs.
    assert!(
        granted as u64 > SCHEDULES * 3 / 2,
        "{granted} holders in {SCHEDULES} schedules"
    );
}
