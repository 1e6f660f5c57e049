//! What goes in and out of the core: its settings, the events it is fed and the actions
//! it returns. Plain data, shared by every part of the core and by the runtime.

use std::time::Duration;

use crate::wire::PeerState;

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
    /// Cluster name, published in the state document (`--cluster`).
    pub cluster: Option<String>,
    /// Quorum mode: with `quorum > 1` a node acts as leader only while at least this
    /// many nodes (itself included) have confirmed it within `lease`, and a node that
    /// cannot reach that many follows nobody. `0` or `1`: off (the Python behaviour).
    pub quorum: usize,
    /// Quorum mode: how long one confirmation lets a leader keep acting, on its own
    /// monotonic clock, counted from when it sent the request that was confirmed.
    pub lease: Duration,
    /// The leader watch: a follower among the watchers pings its leader this often,
    /// with an adaptive timeout, so a vanished leader host is replaced in well under a
    /// second (see `watch`). A leader then also asks for an [`Event::Wake`] this often,
    /// and a gap of more than `watch_interval + PING_TIMEOUT_FLOOR` between two of its
    /// events counts as a pause (its watchers can remove it that fast). `ZERO`: no watch (the
    /// default here, and the behaviour of Python nodes); the daemon's default is 250 ms.
    pub watch_interval: Duration,
    /// The runtime's request timeout: the longest a ping may be given.
    pub request_timeout: Duration,
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
            cluster: None,
            quorum: defaults::QUORUM,
            lease: defaults::LEASE,
            watch_interval: Duration::ZERO,
            request_timeout: defaults::REQUEST_TIMEOUT,
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
    /// The peer itself answered that it is leaving (HTTP 503 from its `/state/{addr}`):
    /// it has released leadership, so a promise to it may end now.
    Leaving,
}

/// Something that happened, fed to [`Core::handle`](super::Core::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The round timer fired. `wall` is the wall clock (epoch seconds), used only to take
    /// a new start time after a pause.
    Tick {
        /// Wall clock now, in epoch seconds.
        wall: f64,
    },
    /// A `FetchState` succeeded; `state` is already validated.
    StateReceived {
        /// Address (`host:port`) of the peer that answered.
        from: String,
        /// Its state document, already validated.
        state: PeerState,
    },
    /// A `FetchState` failed.
    ContactFailed {
        /// Address (`host:port`) of the peer that could not be used.
        addr: String,
        /// How the fetch failed.
        failure: Failure,
    },
    /// Answer to a `Probe`: whether `target` answered the helper's ping. Sent only when
    /// the helper itself answered: a helper that could not be asked says nothing about
    /// the target.
    ProbeAnswered {
        /// The member the helper was asked to ping.
        target: String,
        /// Whether the target answered the helper's ping in time.
        reachable: bool,
    },
    /// Answer to a `Ping`: `Ok` if `addr` answered within the timeout, else how it
    /// failed.
    PingAnswered {
        /// The peer asked (its advertise address, `host:port`).
        addr: String,
        /// `Ok(())` if it answered `/ping` in time, else why not.
        result: Result<(), Failure>,
    },
    /// A peer called `GET /state/{addr}` on us, naming itself.
    Announced {
        /// The caller's advertise address (`host:port`), as it named itself.
        addr: String,
    },
    /// An idle keep-alive connection to `addr` was closed by the other side. When a
    /// process dies its kernel closes its sockets, so this is often the first sign of a
    /// crash; the core checks the member at once instead of at its next round.
    ConnectionLost {
        /// Address (`host:port`) of the peer whose connection closed.
        addr: String,
    },
    /// A peer announced it is leaving (`POST /leave/{addr}`).
    LeaveReceived {
        /// Address (`host:port`) of the peer that is leaving.
        addr: String,
    },
    /// We are shutting down gracefully: give up leadership and tell the members.
    Leave,
    /// Result of the health check: an unhealthy node is not eligible.
    SetHealth {
        /// `true` if the latest health check passed (exited 0).
        healthy: bool,
    },
    /// Leadership could not be taken up (the leader hook failed): not eligible for
    /// `cooldown`, so the next most senior node takes over.
    StepDown {
        /// How long this node stays ineligible (`step_down_cooldown`).
        cooldown: Duration,
    },
    /// The operator asked this node to give up leadership on purpose (`les step-down`,
    /// `POST /step-down`, a relinquish schedule). A leader forfeits its seniority (its
    /// start time becomes `wall`, epoch seconds, or just after its old one), names the
    /// next most senior node and asks every member to check its state now
    /// ([`Action::Notify`]), so they all elect that node within a round trip. It stays
    /// eligible: it is merely junior. A node that is not the leader, or that has no
    /// eligible member to hand over to, ignores it.
    Relinquish {
        /// Wall clock now, in epoch seconds: the leader's new start time, or just after its
        /// old one if that is later.
        wall: f64,
    },
    /// The time returned by [`Core::next_deadline`](super::Core::next_deadline) has come (a lease or a promise may
    /// have run out). Carries no other information.
    Wake,
    /// This node's published state, naming `to` as leader, was served to `to` itself
    /// (`GET /state/{to}`) at monotonic time `at`: `to` may count it as a confirmation,
    /// so this node must not confirm anyone else until that promise has run out. The
    /// runtime feeds the latest such time before every other event.
    VoteServed {
        /// The address (`host:port`) the state was served to, which it names as leader.
        to: String,
        /// Monotonic time of serving, on the same clock as the core's other times.
        at: Duration,
    },
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
    FetchState {
        /// The peer to fetch from (`host:port`).
        addr: String,
    },
    /// Ask `via` to ping `target` (`GET /probe/{target}`), giving the helper's ping
    /// `timeout` at most; answer with `ProbeAnswered` if the helper answers.
    Probe {
        /// The member to check (`host:port`).
        target: String,
        /// The member asked to do the ping (`host:port`).
        via: String,
        /// Longest the helper's own ping may take.
        timeout: Duration,
    },
    /// `GET /ping` at `addr` with this `timeout` (the leader watch); answer with
    /// `PingAnswered`. At most one is outstanding at a time.
    Ping {
        /// The leader to ping (`host:port`).
        addr: String,
        /// Longest the ping may take, adapted to measured round trips.
        timeout: Duration,
    },
    /// `POST /leave/{me}` at `addr`, best effort; no answer expected.
    SendLeave {
        /// The member to tell (`host:port`).
        addr: String,
    },
    /// `POST /leave/{me}` at `addr` now, best effort, while this node stays a member:
    /// a les node checks a leave notice with its sender before anything else, so the
    /// notice of a node that is not leaving just makes `addr` fetch its new state at
    /// once (after a step-down: its new start time). A Python node drops the sender
    /// instead, and adds it back (as junior) at its next contact.
    Notify {
        /// The member to notify (`host:port`).
        addr: String,
    },
    /// The leader changed. Reported in order, once per change.
    LeaderChanged(LeaderChange),
    /// A member was added (for logs and observers).
    MemberAdded {
        /// The member added (`host:port`).
        addr: String,
    },
    /// A member was removed (for logs and observers).
    MemberRemoved {
        /// The member removed (`host:port`).
        addr: String,
        /// Why it was removed.
        reason: RemoveReason,
    },
    /// This node took a new start time (epoch seconds): it is the most junior member
    /// now, after a pause, a lost quorum, a step-down or a partition (for logs and
    /// observers; the new state follows with `StateChanged`).
    StartTimeChanged {
        /// The new start time, in epoch seconds.
        start_time: f64,
    },
    /// This node's own state document changed: republish `/state`.
    StateChanged,
}
