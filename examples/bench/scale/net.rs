//! The simulated network: one discrete-event loop over every node's core, with 1–2 ms
//! per hop, and what it costs in messages and bytes.
//!
//! Each node's member list is mirrored here as node numbers, in the core's order (from
//! its `MemberAdded` and `MemberRemoved` actions), so an answer is built without the
//! list ([`Core::state_without_members`]), its size is arithmetic on the mirror, and the
//! list of addresses is built only for a receiver that reads it ([`Core::reads_listed`]).
//! That is what makes thousands of nodes cheap to simulate: most answers carry a list
//! nobody reads.

use std::cell::OnceCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use les::core::{Action, Core, CoreConfig, Event, Failure};
use les::wire::PeerState;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{CrashKind, HEADER_BYTES, INTERVAL_MS, PROBE_BYTES, REQUEST_TIMEOUT_MS};

enum Ev {
    Tick(usize),
    Request {
        from: usize,
        to: usize,
    },
    Response {
        to: usize,
        from: usize,
        answer: Rc<Answer>,
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

/// A node's member list as it stood when an answer was built: the first `len` entries
/// of the sender's mirror, unless a member was removed since, in which case the list
/// was frozen into `frozen` just before (see [`Net::forget`]).
struct Snapshot {
    len: usize,
    frozen: Rc<OnceCell<Vec<u32>>>,
}

/// One answer: the sender's state without its member list, and that list.
struct Answer {
    state: PeerState,
    listed: Snapshot,
}

/// A node's current answer, shared by every answer until its next `StateChanged`,
/// with its encoded size once some answer needed it.
struct Cached {
    answer: Rc<Answer>,
    bytes: Option<usize>,
}

/// The bytes a list entry adds to a state's JSON: the quoted address and a comma.
fn entry_bytes(addr: &str) -> usize {
    addr.len() + 3
}

pub(super) struct Net {
    pub(super) cores: Vec<Core>,
    pub(super) alive: Vec<bool>,
    addrs: Vec<String>,
    index: HashMap<String, usize>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
    /// Per node: its answer, built at the first request after a change.
    cache: Vec<Option<Cached>>,
    /// Per node: its members as node numbers, in the core's order.
    lists: Vec<Vec<u32>>,
    /// Per node: what its members add to its state's JSON (`entry_bytes` each).
    list_bytes: Vec<usize>,
    /// Per node: where answers in flight find their list if a member is removed
    /// before they land (see `Snapshot`).
    frozen: Vec<Rc<OnceCell<Vec<u32>>>>,
    /// Per node: how many times its state changed (its etag, in effect).
    pub(super) version: Vec<u64>,
    /// Per requester: the version of each peer's state it last received in full or
    /// confirmed unchanged (`If-None-Match` in the runtime).
    seen: Vec<HashMap<u32, u64>>,
    /// Bytes sent, requests and answers, headers included (see `bytes`).
    pub(super) bytes: u64,
    pub(super) now: u64,
    rng: SmallRng,
    pub(super) messages: u64,
    /// How a node that is not alive fails its callers.
    pub(super) crash: CrashKind,
    /// Per node: the leader it follows (index).
    leader: Vec<Option<usize>>,
    /// Probability that a request or its answer is lost (the request then times out).
    loss: f64,
    /// Leader changes seen, all nodes together.
    pub(super) changes: u64,
    /// Members removed, all nodes together.
    pub(super) removals: u64,
}

impl Net {
    /// `n` cores seeded with the first three, ticking at random phases within one
    /// interval; node 0 is the most senior.
    pub(super) fn cluster(n: usize, crash: CrashKind, loss: f64, seed: u64) -> Net {
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
            addrs,
            alive: vec![true; n],
            leader: vec![None; n],
            cores,
            queue: BinaryHeap::new(),
            cache: (0..n).map(|_| None).collect(),
            lists: vec![Vec::new(); n],
            list_bytes: vec![0; n],
            frozen: (0..n).map(|_| Rc::default()).collect(),
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
        net
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Queued { at, seq, ev }));
    }

    /// What `to` answers `from`'s fetch: its state, shared, counted in `bytes` as a
    /// full body, or as a bodiless `304 Not Modified` when `from` already holds this
    /// exact state (the runtime's conditional fetch with `wire::state_etag`). The size
    /// is that of the state without its list plus the mirrored list's: the same as
    /// encoding the full state (addresses need no escaping).
    fn answer(&mut self, from: usize, to: usize) -> Rc<Answer> {
        let (lists, frozen) = (&self.lists, &self.frozen);
        let cached = self.cache[to].get_or_insert_with(|| Cached {
            answer: Rc::new(Answer {
                state: self.cores[to].state_without_members(),
                listed: Snapshot {
                    len: lists[to].len(),
                    frozen: Rc::clone(&frozen[to]),
                },
            }),
            bytes: None,
        });
        let version = self.version[to];
        let held = self.seen[from].insert(to as u32, version);
        let body = if held == Some(version) {
            0
        } else {
            let state = &cached.answer.state;
            let list = entry_bytes(&self.addrs[to]) - 1 + self.list_bytes[to];
            *cached.bytes.get_or_insert_with(|| {
                // `"members":[]` in the encoding, filled in by `list`.
                serde_json::to_vec(state).map_or(0, |b| b.len()) + list
            }) as u64
        };
        self.bytes += HEADER_BYTES + body;
        Rc::clone(&cached.answer)
    }

    /// The state `to` hands its core for `answer` from `from` (a `304` hands the copy
    /// `to` holds, which is this one): with its member list only when the core will
    /// read it (`Core::reads_listed`: not when it already knows every node listed, or
    /// has no budget left this round to fetch any), which is the same at O(1).
    fn delivered(&self, to: usize, from: usize, answer: &Answer) -> PeerState {
        let listed = &answer.listed;
        let mut state = answer.state.clone();
        if self.cores[to].reads_listed(&self.addrs[from], listed.len + 1, &state) {
            let list = listed.frozen.get().unwrap_or(&self.lists[from]);
            state.members = std::iter::once(from as u32)
                .chain(list[..listed.len].iter().copied())
                .map(|j| self.addrs[j as usize].clone())
                .collect();
        }
        state
    }

    /// Node `i` removed member `j` from its list: answers in flight that carry the list
    /// as it was get a copy of it first.
    fn forget(&mut self, i: usize, j: usize) {
        self.cache[i] = None; // a `StateChanged` follows
        if Rc::strong_count(&self.frozen[i]) > 1 {
            let _ = self.frozen[i].set(self.lists[i].clone());
            self.frozen[i] = Rc::default();
        }
        if let Some(k) = self.lists[i].iter().position(|&m| m as usize == j) {
            self.lists[i].remove(k);
            self.list_bytes[i] -= entry_bytes(&self.addrs[j]);
        }
    }

    fn hop(&mut self) -> u64 {
        1 + self.rng.random_range(0..=1)
    }

    /// Queue `to`'s failed contact with `addr`, `delay` from now.
    fn fail(&mut self, delay: u64, to: usize, addr: String, failure: Failure) {
        self.push(self.now + delay, Ev::Failed { to, addr, failure });
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
                        self.fail(REQUEST_TIMEOUT_MS, i, addr, Failure::Timeout);
                    } else if self.alive[j] {
                        self.push(self.now + hop, Ev::Request { from: i, to: j });
                    } else {
                        let (delay, failure) = match self.crash {
                            CrashKind::Refused => (hop, Failure::Refused),
                            CrashKind::Silent => (REQUEST_TIMEOUT_MS, Failure::Timeout),
                        };
                        self.fail(delay, i, addr, failure);
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
                    let from = self.addrs[i].clone();
                    let hop = self.hop();
                    self.push(self.now + hop, Ev::Leave { to: j, from });
                }
                Action::MemberAdded { addr } => {
                    let j = self.index[&addr];
                    self.lists[i].push(j as u32);
                    self.list_bytes[i] += entry_bytes(&addr);
                }
                Action::MemberRemoved { addr, .. } => {
                    self.removals += 1;
                    let j = self.index[&addr];
                    self.forget(i, j);
                }
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
                    let addr = self.addrs[to].clone();
                    let hop = self.hop();
                    self.fail(hop, from, addr, Failure::Refused);
                    return true;
                }
                let caller = self.addrs[from].clone();
                self.apply(to, Event::Announced { addr: caller });
                let answer = self.answer(from, to);
                let hop = self.hop();
                self.push(
                    self.now + hop,
                    Ev::Response {
                        to: from,
                        from: to,
                        answer,
                    },
                );
            }
            Ev::Response { to, from, answer } => {
                if self.alive[to] {
                    let state = self.delivered(to, from, &answer);
                    drop(answer);
                    let from = self.addrs[from].clone();
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
    pub(super) fn run_until(
        &mut self,
        limit_ms: u64,
        mut done: impl FnMut(&Net) -> bool,
    ) -> Option<u64> {
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

    pub(super) fn all_follow(&self, leader: usize) -> bool {
        (0..self.cores.len()).all(|i| !self.alive[i] || self.leader[i] == Some(leader))
    }
}
