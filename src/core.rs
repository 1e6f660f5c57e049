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
//!    answered a state fetch itself. Learned addresses are fetched at most
//!    [`LEARN_PER_ROUND`] a round (the leader a peer names at once), so a large cold
//!    start does not cost N² fetches in one round (see `join`).
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
//! Peers are not trusted to be sane. A non-member that announces itself is fetched back
//! only within bounds ([`MAX_ANNOUNCE_FETCHES`] outstanding, a token bucket of
//! [`ANNOUNCE_BURST`] refilled at [`ANNOUNCE_REFILL_PER_SEC`]); the excess is dropped and
//! counted ([`Core::announces_dropped`]). A state whose term is more than
//! [`MAX_TERM_LEAD_SECS`] ahead of this node's wall clock is handled as a
//! [`Failure::BadResponse`] from its sender and counted ([`Core::terms_rejected`]), so
//! no peer can freeze or jump the terms; term arithmetic on peer values saturates.
//!
//! To converge in round trips rather than rounds, a node whose vote changes fetches from
//! every member at once ("gossip on change"), and a node waiting for confirmation fetches
//! from any member that contacts it.

mod detector;
mod election;
mod health;
mod join;
mod lease;
mod membership;
pub mod tenure;
mod types;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use indexmap::IndexMap;
use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::wire::{Diag, MemberInfo, PeerState};
use health::Health;
pub use health::{FALSE_REMOVAL_ODDS, MIN_EVIDENCE, PING_TIMEOUT_FLOOR};
pub use join::{LEARN_PER_ROUND, MAX_REMOVED_LISTED};
use lease::QuorumState;
pub use lease::{CLOCK_RATE_BOUND, MAX_ALIASES, MAX_TERM_LEAD_SECS};
use membership::{AnnounceLimit, Member, Tombstone};
pub use membership::{ANNOUNCE_BURST, ANNOUNCE_REFILL_PER_SEC, MAX_ANNOUNCE_FETCHES};
pub use types::{Action, CoreConfig, Event, Failure, LeaderChange, RemoveReason};
use watch::Watch;
pub use watch::{ALL_WATCH_UP_TO, WATCHERS};

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
    /// Time of the event being handled (so helpers need not pass it around).
    now: Duration,
    /// The last tick's (monotonic, wall) times: a wall-clock estimate between ticks.
    wall_ref: Option<(Duration, f64)>,
    /// When each outstanding `FetchState` was emitted: a confirmation dates from it.
    fetch_sent: HashMap<String, Duration>,
    /// Quorum mode: lease, promise and claim bookkeeping (see `lease`).
    quorum: QuorumState,
    /// Default mode: this node has lost contact with most of the cluster and already
    /// took a new start time for it.
    isolated: bool,
    /// When this node last resumed from a pause: members not heard from since do not
    /// count toward its quorum.
    resumed_at: Option<Duration>,
    /// Bounds on fetching back callers that are not members (see `membership`).
    announce: AnnounceLimit,
    /// States rejected for a term implausibly far ahead of the wall clock.
    terms_rejected: u64,
    /// Other addresses found to reach this node itself (see `is_self_alias`): never
    /// fetched again. At most [`MAX_ALIASES`].
    aliases: HashSet<String>,
    /// Failure rate, local health and round-trip estimates (see `health`).
    health: Health,
    /// The leader watch (see `watch`).
    watch: Watch,
    /// Changes of this node's state so far in this life, published as `revision`
    /// (starts at 1: 0 means "unknown" on the wire).
    revision: u64,
    /// Members under suspicion (`suspect_since` set), kept up to date so that the
    /// checks that only concern suspects need not scan every member.
    suspects: usize,
    /// Learned addresses this node may still fetch this round (see `join`).
    learn_budget: usize,
    /// Bumped whenever the seniority inputs of the member table change (see `election`).
    seniority_epoch: u64,
    nominee_cache: election::NomineeCache,
    /// [`crate::wire::members_digest`] of this node and its members, kept up to date.
    digest: u64,
}

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
        let digest = crate::wire::addr_hash(&me);
        let alone_by_design = others.is_empty();
        let mut quorum = QuorumState::default();
        if cfg.quorum >= 2 {
            // A node that has just started may have promised a leader in its previous
            // life: it names nobody until any such promise has run out.
            quorum.promise_until = lease::promise_for(cfg.lease);
        }
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
            now: Duration::ZERO,
            wall_ref: None,
            fetch_sent: HashMap::new(),
            quorum,
            isolated: false,
            resumed_at: None,
            announce: AnnounceLimit::default(),
            terms_rejected: 0,
            aliases: HashSet::new(),
            health: Health::default(),
            watch: Watch::default(),
            revision: 1,
            suspects: 0,
            learn_budget: LEARN_PER_ROUND,
            seniority_epoch: 0,
            nominee_cache: Default::default(),
            digest,
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

    /// [`crate::wire::members_digest`] of this node and its members, as published.
    pub fn members_digest(&self) -> u64 {
        self.digest
    }

    /// Number of members, this node excluded.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// The earliest monotonic time at which the core needs an event even if nothing
    /// else happens (a lease or a promise runs out); the runtime feeds [`Event::Wake`]
    /// then. `None`: nothing pending.
    pub fn next_deadline(&self) -> Option<Duration> {
        match (self.quorum_deadline(), self.watch_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// While this node acts as leader in quorum mode: the monotonic time its lease runs
    /// out (it stops acting then unless renewed). `None` otherwise, and always `None`
    /// outside quorum mode (a leader there acts until it learns otherwise).
    pub fn lease_expiry(&self) -> Option<Duration> {
        if self.quorum_mode() && self.acting() {
            self.lease_end()
        } else {
            None
        }
    }

    /// Announcements by non-members dropped so far because fetching them back would have
    /// exceeded [`MAX_ANNOUNCE_FETCHES`] or the [`ANNOUNCE_BURST`] /
    /// [`ANNOUNCE_REFILL_PER_SEC`] rate (for `/metrics`).
    pub fn announces_dropped(&self) -> u64 {
        self.announce.dropped
    }

    /// States rejected so far because their term was more than [`MAX_TERM_LEAD_SECS`]
    /// ahead of this node's wall clock (for `/metrics`); each was handled as a
    /// [`Failure::BadResponse`] from its sender.
    pub fn terms_rejected(&self) -> u64 {
        self.terms_rejected
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
            ..self.state_without_members()
        }
    }

    /// [`Core::state`] with an empty member list, at O(1) in the number of members: for
    /// a simulator that knows the receiver will not read the list
    /// ([`Core::reads_listed`]) and mirrors the list itself.
    pub fn state_without_members(&self) -> PeerState {
        PeerState {
            members: Vec::new(),
            leader: self.leader.clone(),
            start_time: self.start_time,
            term: self.term,
            eligible: self.eligible(),
            leaving: self.leaving,
            name: self.cfg.name.clone(),
            version: Some(concat!("les/", env!("CARGO_PKG_VERSION")).to_string()),
            cluster: self.cfg.cluster.clone(),
            revision: self.revision,
            removed: self.removed_listed(),
            members_digest: self.digest,
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
                    failures: m.failures,
                },
            );
        }
        Diag {
            state,
            member_states,
            member_info,
            lease: self.lease_info(now),
            detector: Some(self.detector()),
            backend: None,
        }
    }

    /// Feed one event at monotonic time `now`; returns what the runtime must do, in order.
    pub fn handle(&mut self, now: Duration, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        self.now = now;
        self.quorum.released_now = false;
        self.quorum.wake_now = false;
        // Before the cooldown may end: its end changes `eligible`, which peers must hear.
        let before = self.fingerprint();
        if self.cooldown_until.is_some_and(|until| now >= until) {
            self.cooldown_until = None;
        }
        let leader_before = self.leader.clone();
        let awaiting_before = self.awaiting_votes();
        self.note_wake(matches!(event, Event::Wake));
        self.check_lease(&mut out);
        self.check_resumed(&mut out);
        match event {
            Event::Tick { wall } => self.on_tick(now, wall, &mut out),
            Event::StateReceived { from, state } => {
                if self.plausible_term(&from, state.term) && !self.is_self_alias(&from, &state) {
                    self.on_state(now, from.clone(), state, &mut out);
                    self.fetch_done(&from, &mut out);
                } else {
                    self.contact_failed(now, from, Failure::BadResponse, &mut out);
                }
            }
            Event::ContactFailed { addr, failure } => {
                self.contact_failed(now, addr, failure, &mut out);
            }
            Event::ProbeAnswered { target, reachable } => {
                self.on_probe_answered(&target, reachable, &mut out)
            }
            Event::PingAnswered { addr, result } => self.on_ping_answered(&addr, result, &mut out),
            Event::Announced { addr } => self.on_announced(addr, &mut out),
            Event::ConnectionLost { addr } => {
                if !self.leaving && self.members.contains_key(&addr) {
                    self.fetch(addr, &mut out);
                }
            }
            Event::LeaveReceived { addr } => {
                // Anyone can send a notice: check with `addr` itself, which answers
                // "leaving" (and is then removed) only if it really is.
                if !self.leaving && self.members.contains_key(&addr) {
                    self.fetch(addr, &mut out);
                }
            }
            Event::Leave => self.on_leave(&mut out),
            Event::SetHealth { healthy } => {
                if self.healthy && !healthy && !self.leaving {
                    self.forfeit_seniority("became unhealthy", &mut out);
                }
                self.healthy = healthy;
            }
            Event::StepDown { cooldown } => {
                self.cooldown_until = Some(now + cooldown);
                self.forfeit_seniority("stepped down", &mut out);
            }
            Event::Relinquish { wall } => self.on_relinquish(wall, &mut out),
            Event::Wake => {}
            Event::VoteServed { to, at } => self.on_vote_served(to, at),
        }
        if !self.quorum_mode() && !self.leaving {
            self.check_majority(&mut out);
        }
        if !self.leaving {
            self.elect(&mut out);
        }
        let awaiting = self.awaiting_votes();
        if (self.leader != leader_before || (awaiting && !awaiting_before)) && !self.leaving {
            // Gossip on change. Others learn a vote by fetching the voter, so contacting
            // the new leader is enough for a follower: the leader, if still waiting for
            // votes, fetches back whoever contacts it. A node that now waits for votes
            // itself (with no leader, or after a hand-over) collects them from every
            // member at once.
            let targets: Vec<String> = match &self.leader {
                _ if awaiting => self.members.keys().cloned().collect(),
                Some(l) if *l != self.me => vec![l.clone()],
                _ => Vec::new(),
            };
            for addr in targets {
                self.fetch(addr, &mut out);
            }
        }
        self.run_watch(&mut out);
        let membership_changed = out
            .iter()
            .any(|a| matches!(a, Action::MemberAdded { .. } | Action::MemberRemoved { .. }));
        if membership_changed || self.fingerprint() != before {
            self.revision = self.revision.wrapping_add(1).max(1);
            out.push(Action::StateChanged);
        }
        // The running count of suspects is what the table says (checked in debug builds:
        // every core test, simulation and fuzz case).
        debug_assert_eq!(
            self.suspects,
            self.members
                .values()
                .filter(|m| m.suspect_since.is_some())
                .count()
        );
        out
    }

    /// Everything in [`Core::state`] except the member list (whose changes are seen
    /// through `MemberAdded`/`MemberRemoved`), cheap to compare on every event.
    /// The tombstone count stands for `removed`: tombstones appear with a removal and
    /// go when they expire.
    fn fingerprint(&self) -> (Option<String>, u64, bool, bool, u64, usize) {
        (
            self.leader.clone(),
            self.term,
            self.eligible(),
            self.leaving,
            self.start_time.to_bits(),
            self.tombstones.len(),
        )
    }
}

#[cfg(test)]
mod tests;
