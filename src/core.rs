//! The protocol core: membership and seniority election as a pure state machine.
//!
//! [`Core`] owns the member table and the election rules and nothing else. The runtime
//! feeds it [`Event`]s — a timer tick, a peer's state, a failed contact, a leave notice —
//! each stamped with the current monotonic time, and carries out the [`Action`]s it
//! returns: contact this peer, probe that one, announce a leave, report a new leader.
//! The core never reads a clock, opens a socket or spawns a task; its randomness comes
//! from a seeded RNG. That is what makes every rule below unit-testable and every
//! simulated run reproducible.
//!
//! ```text
//!            Event (now)                         Action
//!  timer ──► Tick ───────┐               ┌─────► FetchState { addr }  ──► GET /state/{me} at addr
//!  client ─► StateReceived / ContactFailed ──►  Core  ──► Probe { target, via } ─► GET /probe/{target} at via
//!  server ─► Announced / LeaveReceived ──┘       ├─────► SendLeave { addr }  ──► POST /leave/{me} at addr
//!  owner ──► Leave / SetHealth / StepDown        └─────► LeaderChanged, MemberAdded/Removed, StateChanged
//! ```
//!
//! # The rules (LES)
//! 1. Identity is the advertise address; seniority is the wall-clock start time, lower
//!    is more senior, ties broken by address.
//! 2. Each round the node fetches the state of every seed that is not a member and of
//!    members (all of them, or a rotating `fanout` of them plus the leader and suspects),
//!    telling each its own address so the callee can fetch back and add it.
//! 3. An address learned from someone's list, or from a caller, is added only once it has
//!    answered a state fetch itself.
//! 4. A refused connection or a broken answer removes a member at once. A timeout only
//!    makes it *suspect*: other members are asked to probe it, any success clears the
//!    suspicion, and only a suspicion older than `suspicion_timeout` removes it.
//! 5. No election before the node has received state from another node, except that a
//!    node whose seeds name only itself leads at once; a node that had peers and lost them
//!    all leads alone.
//! 6. The nominee is the most senior eligible node among itself and the members whose
//!    state it holds. A node nominating itself becomes leader once every member reports it
//!    as leader (it keeps leadership after that); a node nominating another adopts it at once.
//! 7. A restarted node has a new start time, so it never takes leadership back. A node
//!    whose own ticks stopped for longer than `pause_threshold` (SIGSTOP, a frozen VM) has
//!    certainly been removed by its peers; it takes a new start time and rejoins as junior.
//!    Removed members are *tombstoned* with their start time for `rejoin_holdoff`, so a
//!    stale answer or a stale member list cannot bring them back with their old seniority.
//! 8. Every change of leader carries a term. A node's term is the highest it has seen;
//!    adopting or becoming a leader takes at least one more than the term of its previous
//!    change. Followers vote with their term, so a new leader's term is at least every
//!    voter's, and the leader's term is a fencing token.
//!
//! To converge in round trips rather than rounds, a node whose vote changes fetches from
//! every member at once ("gossip on change"), and a node waiting for confirmation fetches
//! from any member that contacts it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use indexmap::IndexMap;
use rand::rngs::SmallRng;
use rand::seq::IteratorRandom;
use rand::{Rng, SeedableRng};

use crate::wire::{Diag, MemberInfo, PeerState};

/// Protocol settings the core needs. Durations are monotonic time spans.
///
/// Build from [`crate::config::Config`]; `CoreConfig::default()` gives the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// Members contacted per round once there are more than this many; the leader, the
    /// nominee and suspects are contacted every round regardless. `0` means all members.
    pub fanout: usize,
    /// Members asked to probe a suspect indirectly (SWIM's *k*).
    pub indirect_probes: usize,
    /// How long a member may stay suspect, with no successful contact, before removal.
    pub suspicion_timeout: Duration,
    /// How long a removed member's (address, start time) is refused re-entry.
    pub rejoin_holdoff: Duration,
    /// A gap between two ticks longer than this means the node was paused: peers have
    /// removed it, so it rejoins as junior. Must be shorter than the time peers need to
    /// remove a silent node (request timeout + suspicion timeout).
    pub pause_threshold: Duration,
    /// Whether this node may ever lead (`false` makes a witness that only votes).
    pub eligible: bool,
    /// Optional node name, gossiped for humans.
    pub name: Option<String>,
    /// Quorum mode: with `quorum > 1` a node acts as leader only while at least this
    /// many nodes (itself included) have confirmed it within `lease`, and a node that
    /// cannot reach that many follows nobody. `0` or `1`: off (the Python behaviour).
    pub quorum: usize,
    /// Quorum mode: how long one confirmation lets a leader keep acting, on its own
    /// monotonic clock, counted from when it sent the request that was confirmed.
    pub lease: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        use crate::defaults;
        CoreConfig {
            fanout: defaults::FANOUT,
            indirect_probes: 3,
            suspicion_timeout: defaults::SUSPICION_TIMEOUT,
            rejoin_holdoff: defaults::REJOIN_HOLDOFF,
            pause_threshold: Duration::from_secs(2),
            eligible: defaults::ELIGIBLE,
            name: None,
            quorum: defaults::QUORUM,
            lease: defaults::LEASE,
        }
    }
}

/// How a contact with a peer failed, as classified by the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made (refused, unreachable, unresolvable): the peer
    /// is definitely not serving. A strong signal.
    Refused,
    /// No complete answer in time, or the connection dropped mid-request. A weak signal:
    /// a busy machine produces these too.
    Timeout,
    /// The peer answered, but not with a valid state (bad status, malformed or oversized
    /// JSON). It is up but not a usable member.
    BadResponse,
}

/// Something that happened, fed to [`Core::handle`].
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The round timer fired. `wall` is the wall clock (epoch seconds), used only to take
    /// a new start time after a pause.
    Tick { wall: f64 },
    /// A `FetchState` succeeded; `state` is already validated.
    StateReceived { from: String, state: PeerState },
    /// A `FetchState` failed.
    ContactFailed { addr: String, failure: Failure },
    /// Answer to a `Probe`: whether `target` answered the helper's ping.
    ProbeAnswered { target: String, reachable: bool },
    /// A peer called `GET /state/{addr}` on us, naming itself.
    Announced { addr: String },
    /// An idle keep-alive connection to `addr` was closed by the other side. When a
    /// process dies its kernel closes its sockets, so this is often the first sign of a
    /// crash; the core checks the member at once instead of at its next round.
    ConnectionLost { addr: String },
    /// A peer announced it is leaving (`POST /leave/{addr}`).
    LeaveReceived { addr: String },
    /// We are shutting down gracefully: give up leadership and tell the members.
    Leave,
    /// Result of the health check: an unhealthy node is not eligible.
    SetHealth { healthy: bool },
    /// Leadership could not be taken up (the leader hook failed): not eligible for
    /// `cooldown`, so the next most senior node takes over.
    StepDown { cooldown: Duration },
    /// The time returned by [`Core::next_deadline`] has come (a lease or a promise may
    /// have run out). Carries no other information.
    Wake,
    /// This node's published state, naming `to` as leader, was served to `to` itself
    /// (`GET /state/{to}`) at monotonic time `at`: `to` may count it as a confirmation,
    /// so this node must not confirm anyone else until that promise has run out. The
    /// runtime feeds the latest such time before every other event.
    VoteServed { to: String, at: Duration },
}

/// Why a member was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveReason {
    /// Connection refused or unreachable.
    Unreachable,
    /// It answered with something that is not a valid state.
    BadResponse,
    /// Suspected after a timeout and not confirmed alive within `suspicion_timeout`.
    Timeout,
    /// It announced it is leaving, or reported itself as leaving.
    Left,
    /// It came back with the start time it had when removed, within `rejoin_holdoff`.
    Stale,
}

impl std::fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemoveReason::Unreachable => "unreachable",
            RemoveReason::BadResponse => "bad response",
            RemoveReason::Timeout => "timed out",
            RemoveReason::Left => "left",
            RemoveReason::Stale => "stale after removal",
        })
    }
}

/// A change of leader as seen by one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderChange {
    /// This node's address.
    pub me: String,
    /// The leader before the change, if any.
    pub previous: Option<String>,
    /// The leader after the change, or `None` while there is none (election pending,
    /// no eligible node, or this node is leaving).
    pub current: Option<String>,
    /// This node's term after the change.
    pub term: u64,
}

impl LeaderChange {
    /// This node became leader with this change.
    pub fn gained(&self) -> bool {
        self.current.as_deref() == Some(self.me.as_str())
    }
    /// This node stopped being leader with this change.
    pub fn lost(&self) -> bool {
        self.previous.as_deref() == Some(self.me.as_str())
    }
}

/// Something the runtime must do (or report) for the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `GET /state/{me}` at `addr`; answer with `StateReceived` or `ContactFailed`.
    /// At most one fetch per address is outstanding at a time.
    FetchState { addr: String },
    /// Ask `via` to ping `target` (`GET /probe/{target}`); answer with `ProbeAnswered`.
    Probe { target: String, via: String },
    /// `POST /leave/{me}` at `addr`, best effort; no answer expected.
    SendLeave { addr: String },
    /// The leader changed. Reported in order, once per change.
    LeaderChanged(LeaderChange),
    /// A member was added (for logs and observers).
    MemberAdded { addr: String },
    /// A member was removed (for logs and observers).
    MemberRemoved { addr: String, reason: RemoveReason },
    /// This node's own state document changed: republish `/state`.
    StateChanged,
}

#[derive(Debug, Clone)]
struct Member {
    /// Last state received from the member itself.
    state: Option<PeerState>,
    /// Time of the last successful fetch.
    last_contact: Option<Duration>,
    /// Set by a timeout, cleared by any success.
    suspect_since: Option<Duration>,
    /// When it became a member.
    added_at: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Tombstone {
    /// Start time the member had when removed (`None`: any start time).
    start_time: Option<f64>,
    until: Duration,
}

/// The membership and election state machine of one node. See the module docs.
#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    me: String,
    start_time: f64,
    /// Seeds other than this node.
    seeds: Vec<String>,
    /// The seed list named only this node: a one-node cluster that leads at once.
    alone_by_design: bool,
    members: IndexMap<String, Member>,
    leader: Option<String>,
    term: u64,
    /// Term carried by the last leader change on this node.
    last_change_term: u64,
    had_peers: bool,
    /// Seeds whose first contact has not completed yet (answered or failed).
    seeds_unanswered: HashSet<String>,
    /// This node has voted (adopted or taken a leader) at least once.
    voted: bool,
    healthy: bool,
    cooldown_until: Option<Duration>,
    leaving: bool,
    /// Addresses with a `FetchState` outstanding (members, seeds and candidates).
    in_flight: HashSet<String>,
    /// Fetches asked for while one was outstanding: the answer in flight may predate
    /// what prompted the request (a vote, a closed connection), so fetch again once it
    /// lands.
    refetch: HashSet<String>,
    tombstones: HashMap<String, Tombstone>,
    last_tick: Option<Duration>,
    /// Rotating position for `fanout`, and members left to visit in this cycle.
    cursor: usize,
    cycle_left: usize,
    rng: SmallRng,
}

/// Upper bound on fetches to not-yet-members outstanding at once, so a long member list
/// from a peer cannot make us open thousands of connections in one go.
const MAX_JOIN_FETCHES: usize = 64;

impl Core {
    /// A node at address `me` that started at `start_time` (epoch seconds) with `seeds`.
    /// `rng_seed` drives every random choice (probe helpers), for reproducible runs.
    pub fn new(
        cfg: CoreConfig,
        me: impl Into<String>,
        start_time: f64,
        seeds: &[String],
        rng_seed: u64,
    ) -> Self {
        let me = me.into();
        let others: Vec<String> = seeds.iter().filter(|s| **s != me).cloned().collect();
        let alone_by_design = others.is_empty();
        Core {
            cfg,
            me,
            start_time,
            alone_by_design,
            members: IndexMap::new(),
            leader: None,
            term: 0,
            last_change_term: 0,
            had_peers: false,
            seeds_unanswered: others.iter().cloned().collect(),
            voted: false,
            healthy: true,
            cooldown_until: None,
            leaving: false,
            in_flight: HashSet::new(),
            refetch: HashSet::new(),
            tombstones: HashMap::new(),
            last_tick: None,
            cursor: 0,
            cycle_left: 0,
            rng: SmallRng::seed_from_u64(rng_seed),
            seeds: others,
        }
    }

    /// This node's address.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The leader this node follows or is, if any.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// This node's current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// This node's seniority (epoch seconds).
    pub fn start_time(&self) -> f64 {
        self.start_time
    }

    /// Addresses of the current members, in the order they were added (without this node).
    pub fn members(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    /// Number of members, this node excluded.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The earliest monotonic time at which the core needs an event even if nothing
    /// else happens (a lease or a promise runs out); the runtime feeds [`Event::Wake`]
    /// then. `None`: nothing pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        None
    }

    /// While this node acts as leader in quorum mode: the monotonic time its lease runs
    /// out (it stops acting then unless renewed). `None` otherwise, and always `None`
    /// outside quorum mode (a leader there acts until it learns otherwise).
    pub fn lease_expiry(&self) -> Option<Duration> {
        None
    }

    /// Whether `addr` is a member.
    pub fn is_member(&self, addr: &str) -> bool {
        self.members.contains_key(addr)
    }

    /// Whether this node may currently be elected: configured eligible, healthy, not in
    /// a step-down cooldown (expired cooldowns are cleared by the next event), not leaving.
    pub fn eligible(&self) -> bool {
        self.cfg.eligible && self.healthy && !self.leaving && self.cooldown_until.is_none()
    }

    /// This node's state document, as served on `/state`.
    pub fn state(&self) -> PeerState {
        let mut members = Vec::with_capacity(self.members.len() + 1);
        members.push(self.me.clone());
        members.extend(self.members.keys().cloned());
        PeerState {
            members,
            leader: self.leader.clone(),
            start_time: self.start_time,
            term: self.term,
            eligible: self.eligible(),
            leaving: self.leaving,
            name: self.cfg.name.clone(),
            version: Some(concat!("les/", env!("CARGO_PKG_VERSION")).to_string()),
        }
    }

    /// The `/diag/` document at time `now`.
    pub fn diag(&self, now: Duration) -> Diag {
        let state = self.state();
        let mut member_states = BTreeMap::new();
        let mut member_info = BTreeMap::new();
        member_states.insert(self.me.clone(), state.clone());
        for (addr, m) in &self.members {
            if let Some(s) = &m.state {
                member_states.insert(addr.clone(), s.clone());
            }
            member_info.insert(
                addr.clone(),
                MemberInfo {
                    last_contact_ms: m
                        .last_contact
                        .map(|t| now.saturating_sub(t).as_millis() as u64),
                    suspect: m.suspect_since.is_some(),
                },
            );
        }
        Diag {
            state,
            member_states,
            member_info,
            lease: None,
        }
    }

    /// Feed one event at monotonic time `now`; returns what the runtime must do, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        if self.cooldown_until.is_some_and(|until| now >= until) {
            self.cooldown_until = None;
        }
        let before = self.fingerprint();
        let leader_before = self.leader.clone();
        match event {
            Event::Tick { wall } => self.on_tick(now, wall, &mut out),
            Event::StateReceived { from, state } => {
                self.on_state(now, from.clone(), state, &mut out);
                self.fetch_done(&from, &mut out);
            }
            Event::ContactFailed { addr, failure } => {
                self.on_failure(now, addr.clone(), failure, &mut out);
                // Only members are worth asking again; a seed that is down waits a round.
                if !self.members.contains_key(&addr) {
                    self.refetch.remove(&addr);
                }
                self.fetch_done(&addr, &mut out);
            }
            Event::ProbeAnswered { target, reachable } => {
                if reachable {
                    if let Some(m) = self.members.get_mut(&target) {
                        m.suspect_since = None;
                    }
                }
            }
            Event::Announced { addr } => self.on_announced(addr, &mut out),
            Event::ConnectionLost { addr } => {
                if !self.leaving && self.members.contains_key(&addr) {
                    self.fetch(addr, &mut out);
                }
            }
            Event::LeaveReceived { addr } => {
                self.remove(now, &addr, None, RemoveReason::Left, &mut out);
            }
            Event::Leave => self.on_leave(&mut out),
            Event::SetHealth { healthy } => self.healthy = healthy,
            Event::StepDown { cooldown } => self.cooldown_until = Some(now + cooldown),
            Event::Wake | Event::VoteServed { .. } => {}
        }
        if !self.leaving {
            self.elect(&mut out);
        }
        if self.leader != leader_before && !self.leaving {
            // Gossip on change. Others learn a vote by fetching the voter, so contacting
            // the new leader is enough for a follower: the leader, if still waiting for
            // votes, fetches back whoever contacts it. A node that now waits for votes
            // itself collects them from every member at once.
            let targets: Vec<String> = match &self.leader {
                Some(l) if *l != self.me => vec![l.clone()],
                Some(_) => Vec::new(),
                None if self.awaiting_votes() => self.members.keys().cloned().collect(),
                None => Vec::new(),
            };
            for addr in targets {
                self.fetch(addr, &mut out);
            }
        }
        let membership_changed = out
            .iter()
            .any(|a| matches!(a, Action::MemberAdded { .. } | Action::MemberRemoved { .. }));
        if membership_changed || self.fingerprint() != before {
            out.push(Action::StateChanged);
        }
        out
    }

    fn on_tick(&mut self, now: Duration, wall: f64, out: &mut Vec<Action>) {
        if self.leaving {
            return;
        }
        if let Some(last) = self.last_tick {
            if now.saturating_sub(last) > self.cfg.pause_threshold && wall > self.start_time {
                // Our peers have given up on us while we were frozen; coming back with our
                // old seniority would take leadership back from whoever replaced us.
                tracing::warn!(
                    paused_ms = now.saturating_sub(last).as_millis() as u64,
                    "this node was paused; rejoining as the most junior member"
                );
                self.start_time = wall;
            }
        }
        self.last_tick = Some(now);
        self.tombstones.retain(|_, t| t.until > now);

        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.suspect_since
                    .is_some_and(|s| now.saturating_sub(s) >= self.cfg.suspicion_timeout)
            })
            .map(|(a, _)| a.clone())
            .collect();
        for addr in expired {
            self.remove(now, &addr, None, RemoveReason::Timeout, out);
        }

        for seed in self.seeds.clone() {
            if !self.members.contains_key(&seed) {
                self.fetch(seed, out);
            }
        }
        for addr in self.round_targets() {
            self.fetch(addr, out);
        }
    }

    /// Members to contact this round: all of them, or `fanout` of them in rotation plus
    /// those that matter for the election (leader, nominee, suspects), or all while this
    /// node waits for confirmation of its own leadership.
    fn round_targets(&mut self) -> Vec<String> {
        let n = self.members.len();
        let pending_self = self.awaiting_votes();
        if self.cfg.fanout == 0 || n <= self.cfg.fanout || pending_self {
            return self.members.keys().cloned().collect();
        }
        if self.cycle_left == 0 {
            // Each cycle visits every member once, starting at a random offset. Member
            // lists are in nearly the same order on every node: a shared starting point
            // would make every node contact the same few members in the same round and
            // leave the rest unchecked for a whole cycle.
            self.cursor = self.rng.random_range(0..n);
            self.cycle_left = n;
        }
        let mut picked: Vec<String> = Vec::with_capacity(self.cfg.fanout + 2);
        for i in 0..self.cfg.fanout {
            if let Some((addr, _)) = self.members.get_index((self.cursor + i) % n) {
                picked.push(addr.clone());
            }
        }
        self.cursor = (self.cursor + self.cfg.fanout) % n;
        self.cycle_left = self.cycle_left.saturating_sub(self.cfg.fanout);
        let nominee = self.nominee();
        for (addr, m) in &self.members {
            let important = m.suspect_since.is_some()
                || Some(addr) == self.leader.as_ref()
                || Some(addr) == nominee.as_ref()
                || m.state.is_none();
            if important && !picked.contains(addr) {
                picked.push(addr.clone());
            }
        }
        picked
    }

    fn on_state(&mut self, now: Duration, from: String, state: PeerState, out: &mut Vec<Action>) {
        self.seeds_unanswered.remove(&from);
        if from == self.me || self.leaving {
            return;
        }
        let stale = self
            .tombstones
            .get(&from)
            .is_some_and(|t| t.start_time.is_none_or(|st| st == state.start_time));
        if state.leaving || stale {
            if self.members.contains_key(&from) {
                let reason = if state.leaving {
                    RemoveReason::Left
                } else {
                    RemoveReason::Stale
                };
                self.remove(now, &from, Some(state.start_time), reason, out);
            }
            return;
        }
        self.tombstones.remove(&from);
        self.had_peers = true;
        self.term = self.term.max(state.term);
        // Hints: a peer whose list lacks a member we have known long enough for it to
        // have learned may have seen that member fail. Check it directly now rather than
        // when our rotation reaches it: failures spread epidemically, while removal still
        // only ever follows our own failed contact, never hearsay.
        let hints: Vec<String> = {
            let theirs: HashSet<&str> = state.members.iter().map(String::as_str).collect();
            self.members
                .iter()
                .filter(|(a, m)| {
                    **a != from
                        && !theirs.contains(a.as_str())
                        && now.saturating_sub(m.added_at) >= self.cfg.suspicion_timeout
                })
                .map(|(a, _)| a.clone())
                .collect()
        };
        let learned: Vec<String> = state
            .members
            .iter()
            .filter(|a| **a != self.me && !self.members.contains_key(*a) && **a != from)
            .cloned()
            .collect();
        if !self.members.contains_key(&from) {
            self.members.insert(
                from.clone(),
                Member {
                    state: None,
                    last_contact: None,
                    suspect_since: None,
                    added_at: now,
                },
            );
            out.push(Action::MemberAdded { addr: from.clone() });
        }
        if let Some(m) = self.members.get_mut(&from) {
            m.state = Some(state);
            m.last_contact = Some(now);
            m.suspect_since = None;
        }
        for addr in learned {
            if self.in_flight.len() >= MAX_JOIN_FETCHES + self.members.len() {
                break;
            }
            self.fetch(addr, out);
        }
        for addr in hints {
            if !self.in_flight.contains(&addr) {
                self.fetch(addr, out);
            }
        }
    }

    fn on_failure(&mut self, now: Duration, addr: String, failure: Failure, out: &mut Vec<Action>) {
        self.seeds_unanswered.remove(&addr);
        let Some(member) = self.members.get_mut(&addr) else {
            return; // a seed that is down, or a candidate that never answered
        };
        match failure {
            Failure::Refused => {
                self.remove(now, &addr, None, RemoveReason::Unreachable, out);
            }
            Failure::BadResponse => {
                self.remove(now, &addr, None, RemoveReason::BadResponse, out);
            }
            Failure::Timeout => match member.suspect_since {
                None => {
                    member.suspect_since = Some(now);
                    let k = self.cfg.indirect_probes;
                    let helpers: Vec<String> = self
                        .members
                        .iter()
                        .filter(|(a, m)| {
                            **a != addr && m.suspect_since.is_none() && m.state.is_some()
                        })
                        .map(|(a, _)| a.clone())
                        .choose_multiple(&mut self.rng, k);
                    for via in helpers {
                        out.push(Action::Probe {
                            target: addr.clone(),
                            via,
                        });
                    }
                }
                Some(since) if now.saturating_sub(since) >= self.cfg.suspicion_timeout => {
                    self.remove(now, &addr, None, RemoveReason::Timeout, out);
                }
                Some(_) => {}
            },
        }
    }

    fn on_announced(&mut self, addr: String, out: &mut Vec<Action>) {
        if self.leaving || addr == self.me {
            return;
        }
        match self.members.get(&addr) {
            // Unknown caller: fetch its state, which adds it if it answers (rule 3).
            None => self.fetch(addr, out),
            Some(m) => {
                let waiting_for_votes = self.awaiting_votes();
                let stale_vote = m
                    .state
                    .as_ref()
                    .is_none_or(|s| s.leader.as_deref() != Some(&self.me));
                if waiting_for_votes && stale_vote {
                    self.fetch(addr, out);
                }
            }
        }
    }

    fn on_leave(&mut self, out: &mut Vec<Action>) {
        if self.leaving {
            return;
        }
        if self.leader.is_some() {
            self.set_leader(None, out);
        }
        self.leaving = true;
        for addr in self.members.keys() {
            out.push(Action::SendLeave { addr: addr.clone() });
        }
    }

    /// Everything in [`Core::state`] except the member list (whose changes are seen
    /// through `MemberAdded`/`MemberRemoved`), cheap to compare on every event.
    fn fingerprint(&self) -> (Option<String>, u64, bool, bool, u64) {
        (
            self.leader.clone(),
            self.term,
            self.eligible(),
            self.leaving,
            self.start_time.to_bits(),
        )
    }

    fn fetch(&mut self, addr: String, out: &mut Vec<Action>) {
        if addr == self.me {
            return;
        }
        if self.in_flight.contains(&addr) {
            self.refetch.insert(addr);
        } else {
            self.in_flight.insert(addr.clone());
            out.push(Action::FetchState { addr });
        }
    }

    /// A fetch to `addr` completed: issue the one asked for meanwhile, if any.
    fn fetch_done(&mut self, addr: &str, out: &mut Vec<Action>) {
        self.in_flight.remove(addr);
        if self.refetch.remove(addr) && !self.leaving {
            self.fetch(addr.to_string(), out);
        }
    }

    /// Remove `addr` if it is a member, tombstoned with `seen` (a start time just
    /// received from it) or else the start time of its last stored state.
    fn remove(
        &mut self,
        now: Duration,
        addr: &str,
        seen: Option<f64>,
        reason: RemoveReason,
        out: &mut Vec<Action>,
    ) {
        if let Some(member) = self.members.shift_remove(addr) {
            let start_time = seen.or_else(|| member.state.map(|s| s.start_time));
            self.tombstones.insert(
                addr.to_string(),
                Tombstone {
                    start_time,
                    until: now + self.cfg.rejoin_holdoff,
                },
            );
            out.push(Action::MemberRemoved {
                addr: addr.to_string(),
                reason,
            });
        }
    }

    /// This node nominates itself and has no leader yet: it is collecting votes.
    fn awaiting_votes(&self) -> bool {
        self.leader.is_none() && self.nominee().as_deref() == Some(self.me.as_str())
    }

    /// The most senior eligible node among this one and the members whose state we hold.
    fn nominee(&self) -> Option<String> {
        let mine = self
            .eligible()
            .then_some((self.start_time, self.me.as_str()));
        let theirs = self.members.iter().filter_map(|(addr, m)| {
            let s = m.state.as_ref()?;
            (s.eligible && !s.leaving).then_some((s.start_time, addr.as_str()))
        });
        mine.into_iter()
            .chain(theirs)
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, addr)| addr.to_string())
    }

    fn elect(&mut self, out: &mut Vec<Action>) {
        if !self.had_peers && !self.alone_by_design {
            return; // rule 5: never elect before hearing from another node
        }
        if !self.voted {
            // Before the first vote, wait until every seed has answered or failed once and
            // every address learned so far has been tried: they may change the nominee, and
            // a joining node should not vote twice. Each wait ends within a request timeout.
            let learning = self
                .in_flight
                .iter()
                .any(|a| !self.members.contains_key(a) && !self.seeds.contains(a));
            if learning || !self.seeds_unanswered.is_empty() {
                return;
            }
        }
        let new_leader = match self.nominee() {
            None => None,
            Some(n) if n == self.me => {
                let confirmed = self.members.values().all(|m| {
                    m.state
                        .as_ref()
                        .is_some_and(|s| s.leader.as_deref() == Some(self.me.as_str()))
                });
                if self.leader.as_deref() == Some(self.me.as_str()) || confirmed {
                    Some(n)
                } else {
                    None
                }
            }
            Some(other) => Some(other),
        };
        self.set_leader(new_leader, out);
    }

    fn set_leader(&mut self, new_leader: Option<String>, out: &mut Vec<Action>) {
        if new_leader == self.leader {
            return;
        }
        if new_leader.is_some() {
            self.term = self.term.max(self.last_change_term + 1);
            self.voted = true;
        }
        self.last_change_term = self.term;
        let previous = std::mem::replace(&mut self.leader, new_leader);
        out.push(Action::LeaderChanged(LeaderChange {
            me: self.me.clone(),
            previous,
            current: self.leader.clone(),
            term: self.term,
        }));
    }
}

#[cfg(test)]
mod tests;
