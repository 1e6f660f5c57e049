//! Quorum-mode safety of the protocol core, over many random schedules.
//!
//! A small discrete-event model drives real [`les::core::Core`]s, without the HTTP
//! runtime, so that tens of thousands of schedules run in seconds (the turmoil
//! simulation in `tests/sim_invariants` checks the whole runtime, far more slowly).
//! The model plays the runtime's part faithfully where safety depends on it:
//!
//! - each node's monotonic clock runs at its own rate, within the documented bound
//!   [`CLOCK_RATE_BOUND`]; the core only ever sees its own clock;
//! - a fetch is served when it arrives: the callee's state at that instant, and, when
//!   that state names the caller as leader, `VoteServed` for the callee before anything
//!   else (the runtime's served-vote stamp); the answer arrives later, or the request
//!   times out after the caller's `request_timeout` on the caller's clock;
//! - links can be cut (both ways or one way) and lose messages; nodes crash (their port
//!   then refuses), restart as new processes with a new start time, and pause (their
//!   events wait until they resume, as with SIGSTOP, while real time runs on).
//!
//! Ground truth is real (model) time. A node *acts* as leader while its core says it
//! leads **and** its own clock has not reached the lease expiry the core reported —
//! exactly what `NodeHandle::is_leader` answers. Checked for every schedule:
//! 1. no two nodes act as leader at the same instant;
//! 2. the terms of successive acting periods strictly increase;
//! 3. after the last fault, with every node up and connected, one node acts as leader
//!    within [`LIVENESS`], and then without a break until the end.
//!
//! `LES_MODEL_CASES` sets the number of schedules (default [`DEFAULT_CASES`], about a
//! minute in a debug build; `cargo test --release --test quorum_model` runs about 40
//! schedules a second), `LES_MODEL_SEED` replays one and `LES_MODEL_TRACE=1` prints
//! its faults.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Duration;

use les::core::{Action, Core, CoreConfig, Event, Failure, CLOCK_RATE_BOUND};
use les::wire::PeerState;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const DEFAULT_CASES: u64 = 600;
const INTERVAL: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const LEASE: Duration = Duration::from_secs(3);
/// One run: faults during the first `FAULTY`, then quiet until `END`.
const FAULTY: Duration = Duration::from_secs(40);
const END: Duration = Duration::from_secs(70);
/// After the last fault: time for detection, promises and the rejoin hold-off to
/// pass, and for one election.
const LIVENESS: Duration = Duration::from_secs(20);

type Micros = u64;

/// Far more events than a 70 s run of five nodes needs: more means a busy loop.
const MAX_STEPS: u64 = 2_000_000;

fn us(d: Duration) -> Micros {
    d.as_micros() as Micros
}

#[derive(Debug, Clone)]
enum Ev {
    Tick(usize, u32),
    Wake(usize, u32, u64),
    /// Fetch `id` from `from` arrives at `to`; its answer gets through if `answer`.
    Request {
        id: u64,
        from: usize,
        to: usize,
        answer: bool,
    },
    /// The answer to fetch `id` reaches `to` (the caller).
    Answer {
        id: u64,
        to: usize,
        from: usize,
        state: Box<PeerState>,
    },
    /// Fetch `id` failed (its outcome, unless the answer came first).
    Failed {
        id: u64,
        to: usize,
        from: usize,
        failure: Failure,
    },
    Leave {
        to: usize,
        from: usize,
    },
    Fault(Fault),
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Cut(usize, usize),
    CutOneWay(usize, usize),
    HealAll,
    Crash(usize),
    Restart(usize),
    Pause(usize, Micros),
    Loss(f64),
}

struct Node {
    core: Core,
    addr: String,
    /// Bumped at every restart: events of an older incarnation are dropped.
    inc: u32,
    up: bool,
    paused_until: Micros,
    /// Real time this incarnation started, and its clock rate.
    born: Micros,
    rate: f64,
    /// Generation of the pending deadline wake-up.
    wake_gen: u64,
    /// Events that arrived while paused, in order.
    held: Vec<Ev>,
    /// The acting period open now: (real start, term, real end of its lease).
    acting: Option<(Micros, u64, Micros)>,
}

impl Node {
    fn local(&self, t: Micros) -> Duration {
        Duration::from_micros((t.saturating_sub(self.born) as f64 * self.rate) as u64)
    }
    /// Real time at which this node's clock shows `local`.
    fn real(&self, local: Duration) -> Micros {
        let mut at = self.born + (us(local) as f64 / self.rate).ceil() as Micros;
        // Never a moment whose local reading is still short of `local` (rounding).
        while self.local(at) < local {
            at += 1;
        }
        at
    }
}

struct Model {
    rng: SmallRng,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Micros, u64, usize)>>,
    events: HashMap<usize, Ev>,
    seq: u64,
    now: Micros,
    blocked: Vec<Vec<bool>>,
    loss: f64,
    /// Closed acting periods: (node, start, end, term).
    periods: Vec<(usize, Micros, Micros, u64)>,
    quorum: usize,
    /// Fetches with no outcome yet: the first of answer and failure wins, as in the
    /// runtime, where a request that timed out drops its late answer.
    pending: std::collections::HashSet<u64>,
}

fn config(quorum: usize) -> CoreConfig {
    CoreConfig {
        quorum,
        lease: LEASE,
        suspicion_timeout: Duration::from_secs(2),
        rejoin_holdoff: Duration::from_secs(5),
        pause_threshold: INTERVAL + Duration::from_secs(2),
        ..CoreConfig::default()
    }
}

impl Model {
    fn new(seed: u64, n: usize) -> Model {
        let mut rng = SmallRng::seed_from_u64(seed);
        let quorum = n / 2 + 1;
        let addrs: Vec<String> = (0..n).map(|i| format!("n{i}:1")).collect();
        let nodes = (0..n)
            .map(|i| {
                let rate = 1.0 + rng.random_range(-0.04..0.04);
                let born = rng.random_range(0..us(Duration::from_secs(2)));
                Node {
                    core: Core::new(
                        config(quorum),
                        &addrs[i],
                        1000.0 + born as f64 / 1e6,
                        &addrs,
                        seed ^ i as u64,
                    ),
                    addr: addrs[i].clone(),
                    inc: 0,
                    // Started by a `Restart` at `born`; refused before that.
                    up: false,
                    paused_until: 0,
                    born,
                    rate,
                    wake_gen: 0,
                    held: Vec::new(),
                    acting: None,
                }
            })
            .collect();
        let mut m = Model {
            rng,
            nodes,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            now: 0,
            blocked: vec![vec![false; n]; n],
            loss: 0.0,
            periods: Vec::new(),
            quorum,
            pending: std::collections::HashSet::new(),
        };
        for i in 0..n {
            let at = m.nodes[i].born;
            m.push(at, Ev::Fault(Fault::Restart(i)));
        }
        m
    }

    fn push(&mut self, at: Micros, ev: Ev) {
        self.seq += 1;
        let key = self.seq as usize;
        self.events.insert(key, ev);
        self.queue.push(Reverse((at, self.seq, key)));
    }

    fn delay(&mut self) -> Micros {
        self.rng.random_range(200..5_000)
    }

    fn link_ok(&mut self, a: usize, b: usize) -> bool {
        let lost = self.loss > 0.0 && self.rng.random_bool(self.loss);
        !self.blocked[a][b] && !lost
    }

    fn schedule_faults(&mut self) {
        let n = self.nodes.len();
        let count = self.rng.random_range(1..8);
        for _ in 0..count {
            let at = self
                .rng
                .random_range(us(Duration::from_secs(5))..us(FAULTY));
            let a = self.rng.random_range(0..n);
            let b = (a + self.rng.random_range(1..n)) % n;
            let fault = match self.rng.random_range(0..8) {
                0 | 1 => Fault::Cut(a, b),
                2 => Fault::CutOneWay(a, b),
                3 => Fault::Crash(a),
                4 => Fault::Pause(a, self.rng.random_range(500_000..8_000_000)),
                5 => Fault::Loss(self.rng.random_range(0.05..0.3)),
                _ => Fault::HealAll,
            };
            self.push(at, Ev::Fault(fault));
            if let Fault::Crash(a) = fault {
                let back = at + self.rng.random_range(100_000..6_000_000);
                self.push(back, Ev::Fault(Fault::Restart(a)));
            }
            if let Fault::Cut(a, _) | Fault::CutOneWay(a, _) = fault {
                // Cut `a` from a random subset too, sometimes: a real partition.
                if self.rng.random_bool(0.5) {
                    let c = self.rng.random_range(0..n);
                    if c != a {
                        self.push(at, Ev::Fault(Fault::Cut(a, c)));
                    }
                }
            }
        }
        self.push(us(FAULTY), Ev::Fault(Fault::HealAll));
        self.push(us(FAULTY), Ev::Fault(Fault::Loss(0.0)));
        for i in 0..n {
            self.push(us(FAULTY), Ev::Fault(Fault::Restart(i)));
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let mut steps = 0u64;
        while let Some(Reverse((at, _, key))) = self.queue.pop() {
            if at > us(END) {
                break;
            }
            steps += 1;
            if steps > MAX_STEPS {
                return Err(format!(
                    "more than {MAX_STEPS} events by {at} us: a busy loop"
                ));
            }
            self.now = at;
            let Some(ev) = self.events.remove(&key) else {
                continue;
            };
            self.dispatch(ev);
        }
        let end = us(END);
        for i in 0..self.nodes.len() {
            self.close_acting(i, end);
        }
        Ok(())
    }

    fn target(ev: &Ev) -> Option<usize> {
        match ev {
            Ev::Tick(i, _) | Ev::Wake(i, _, _) => Some(*i),
            Ev::Request { to, .. } | Ev::Answer { to, .. } | Ev::Failed { to, .. } => Some(*to),
            Ev::Leave { to, .. } => Some(*to),
            Ev::Fault(_) => None,
        }
    }

    fn dispatch(&mut self, ev: Ev) {
        if let Some(i) = Self::target(&ev) {
            let node = &mut self.nodes[i];
            if !node.up {
                if let Ev::Request { id, from, .. } = ev {
                    // A crashed node's port refuses at once.
                    let d = self.delay();
                    self.push(
                        self.now + d,
                        Ev::Failed {
                            id,
                            to: from,
                            from: i,
                            failure: Failure::Refused,
                        },
                    );
                }
                return;
            }
            if node.paused_until > self.now {
                node.held.push(ev);
                return;
            }
        }
        match ev {
            Ev::Fault(f) => self.fault(f),
            Ev::Tick(i, inc) => {
                if inc != self.nodes[i].inc {
                    return;
                }
                let wall = 1000.0 + self.now as f64 / 1e6;
                self.feed(i, Event::Tick { wall });
                let next = self.now + (us(INTERVAL) as f64 / self.nodes[i].rate) as Micros;
                self.push(next, Ev::Tick(i, inc));
            }
            Ev::Wake(i, inc, generation) => {
                if inc == self.nodes[i].inc && generation == self.nodes[i].wake_gen {
                    self.feed(i, Event::Wake);
                }
            }
            Ev::Request {
                id,
                from,
                to,
                answer,
            } => self.serve(id, from, to, answer),
            Ev::Answer {
                id,
                to,
                from,
                state,
            } => {
                if self.pending.remove(&id) {
                    let from = self.nodes[from].addr.clone();
                    self.feed(
                        to,
                        Event::StateReceived {
                            from,
                            state: *state,
                        },
                    );
                }
            }
            Ev::Failed {
                id,
                to,
                from,
                failure,
            } => {
                if self.pending.remove(&id) {
                    let addr = self.nodes[from].addr.clone();
                    self.feed(to, Event::ContactFailed { addr, failure });
                }
            }
            Ev::Leave { to, from } => {
                let addr = self.nodes[from].addr.clone();
                self.feed(to, Event::LeaveReceived { addr });
            }
        }
    }

    /// `to` serves `from`'s fetch: its state now, and the served-vote stamp first.
    fn serve(&mut self, id: u64, from: usize, to: usize, answer: bool) {
        let state = self.nodes[to].core.state();
        let from_addr = self.nodes[from].addr.clone();
        if state.leader.as_deref() == Some(from_addr.as_str()) {
            let at = self.nodes[to].local(self.now);
            self.feed(
                to,
                Event::VoteServed {
                    to: from_addr.clone(),
                    at,
                },
            );
        }
        self.feed(to, Event::Announced { addr: from_addr });
        if answer {
            let d = self.delay();
            self.push(
                self.now + d,
                Ev::Answer {
                    id,
                    to: from,
                    from: to,
                    state: Box::new(state),
                },
            );
        }
    }

    fn fault(&mut self, f: Fault) {
        if std::env::var_os("LES_MODEL_TRACE").is_some() {
            eprintln!("FAULT {} {f:?}", self.now);
        }
        let n = self.nodes.len();
        match f {
            Fault::Cut(a, b) => {
                self.blocked[a][b] = true;
                self.blocked[b][a] = true;
            }
            Fault::CutOneWay(a, b) => self.blocked[a][b] = true,
            Fault::HealAll => self.blocked = vec![vec![false; n]; n],
            Fault::Loss(p) => self.loss = p,
            Fault::Crash(a) => {
                if self.nodes[a].up {
                    self.close_acting(a, self.now);
                    self.nodes[a].up = false;
                    self.nodes[a].held.clear();
                }
            }
            Fault::Restart(a) => {
                if !self.nodes[a].up {
                    let addrs: Vec<String> = self.nodes.iter().map(|n| n.addr.clone()).collect();
                    let node = &mut self.nodes[a];
                    node.inc += 1;
                    node.up = true;
                    node.born = self.now;
                    node.paused_until = 0;
                    let start = 1000.0 + self.now as f64 / 1e6;
                    node.core = Core::new(
                        config(self.quorum),
                        &node.addr,
                        start,
                        &addrs,
                        self.now ^ a as u64,
                    );
                    let inc = node.inc;
                    self.push(self.now, Ev::Tick(a, inc));
                }
            }
            Fault::Pause(a, len) => {
                if self.nodes[a].up && self.nodes[a].paused_until <= self.now {
                    self.nodes[a].paused_until = self.now + len;
                    self.resume_at(a, self.now + len);
                }
            }
        }
    }

    fn resume_at(&mut self, a: usize, at: Micros) {
        // Held events are replayed in order when the pause ends (a wake-up event).
        let inc = self.nodes[a].inc;
        self.nodes[a].wake_gen += 1;
        let generation = self.nodes[a].wake_gen;
        self.push(at, Ev::Wake(a, inc, generation));
    }

    /// Feed one event to node `i`'s core and carry out what it asks.
    fn feed(&mut self, i: usize, event: Event) {
        let held = std::mem::take(&mut self.nodes[i].held);
        for ev in held {
            self.dispatch(ev);
        }
        let local = self.nodes[i].local(self.now);
        let actions = self.nodes[i].core.handle(local, event);
        for action in actions {
            match action {
                Action::FetchState { addr } => self.fetch(i, &addr),
                Action::SendLeave { addr } => {
                    if let Some(j) = self.index(&addr) {
                        let d = self.delay();
                        self.push(self.now + d, Ev::Leave { to: j, from: i });
                    }
                }
                _ => {}
            }
        }
        self.track_acting(i);
        self.nodes[i].wake_gen += 1;
        if let Some(deadline) = self.nodes[i].core.next_deadline() {
            let at = self.nodes[i].real(deadline).max(self.now);
            let (inc, generation) = (self.nodes[i].inc, self.nodes[i].wake_gen);
            self.push(at, Ev::Wake(i, inc, generation));
        }
    }

    fn index(&self, addr: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn fetch(&mut self, from: usize, addr: &str) {
        let Some(to) = self.index(addr) else { return };
        self.seq += 1;
        let id = self.seq;
        self.pending.insert(id);
        let (request, answer) = (self.link_ok(from, to), self.link_ok(to, from));
        if request {
            let d = self.delay();
            self.push(
                self.now + d,
                Ev::Request {
                    id,
                    from,
                    to,
                    answer,
                },
            );
        }
        // The caller's deadline, on its own clock; an answer that came first wins.
        let timeout = (us(REQUEST_TIMEOUT) as f64 / self.nodes[from].rate) as Micros;
        self.push(
            self.now + timeout,
            Ev::Failed {
                id,
                to: from,
                from: to,
                failure: Failure::Timeout,
            },
        );
    }

    fn track_acting(&mut self, i: usize) {
        let node = &self.nodes[i];
        let leads = node.core.leader() == Some(node.addr.as_str());
        let lease_end = node.core.lease_expiry().map(|e| node.real(e));
        let term = node.core.term();
        match (node.acting, leads, lease_end) {
            (Some((start, t, _)), true, Some(end)) if t == term => {
                self.nodes[i].acting = Some((start, t, end));
            }
            (prev, true, Some(end)) => {
                if prev.is_some() {
                    self.close_acting(i, self.now);
                }
                self.nodes[i].acting = Some((self.now, term, end));
            }
            (Some(_), _, _) => self.close_acting(i, self.now),
            (None, _, _) => {}
        }
    }

    fn close_acting(&mut self, i: usize, at: Micros) {
        if let Some((start, term, end)) = self.nodes[i].acting.take() {
            self.periods.push((i, start, at.min(end), term));
        }
    }
}

fn check(seed: u64) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let n = rng.random_range(3..=5);
    let mut m = Model::new(seed, n);
    m.schedule_faults();
    m.run()?;
    let mut periods: Vec<_> = m.periods.iter().filter(|p| p.2 > p.1).cloned().collect();
    periods.sort_by_key(|p| p.1);
    for (k, a) in periods.iter().enumerate() {
        for b in &periods[k + 1..] {
            if b.1 >= a.2 {
                break;
            }
            if a.0 != b.0 {
                return Err(format!("two acting leaders: {a:?} and {b:?}"));
            }
        }
    }
    for w in periods.windows(2) {
        if w[0].0 != w[1].0 && w[1].3 <= w[0].3 {
            return Err(format!("term did not increase: {:?} then {:?}", w[0], w[1]));
        }
    }
    let from = us(FAULTY + LIVENESS);
    let covered = periods.iter().any(|p| p.1 <= from && p.2 >= us(END));
    if !covered {
        let tail: Vec<_> = periods.iter().filter(|p| p.2 > us(FAULTY)).collect();
        return Err(format!(
            "no steady leader from {from} us to the end: {tail:?}"
        ));
    }
    Ok(())
}

#[test]
fn quorum_mode_never_has_two_acting_leaders_and_terms_strictly_increase() {
    let seeds: Vec<u64> = match std::env::var("LES_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("LES_MODEL_SEED is a number")],
        Err(_) => {
            let cases = std::env::var("LES_MODEL_CASES")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(DEFAULT_CASES);
            (0..cases).collect()
        }
    };
    let mut failures = Vec::new();
    for &seed in &seeds {
        if let Err(why) = check(seed) {
            failures.push(format!("seed {seed}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} schedules failed (replay one with LES_MODEL_SEED=<seed>):\n{}",
        failures.len(),
        seeds.len(),
        failures.join("\n")
    );
    // The clock rates the model draws (±4 %) are within the documented bound.
    const { assert!(0.04 < CLOCK_RATE_BOUND) };
}
