//! Wire types: the JSON documents nodes exchange, compatible with the Python LES.
//!
//! The original protocol (see `docs/PROTOCOL.md`) has three fields in a node's state:
//! `members`, `leader` (`false` or an address) and `start_time` (float epoch seconds).
//! les keeps those exactly and only *adds* fields, all optional on read, so a Python
//! node is a valid peer and a les node is a valid peer for a Python node. Unknown fields
//! are ignored on read, so later versions can add more.
//!
//! Everything that comes from a peer passes through [`PeerState::validate`] before the
//! protocol core sees it: a peer can send anything, and the core assumes sane values.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest member list accepted from a peer. Far above any sane cluster, small enough
/// that a hostile or broken peer cannot make us hold unbounded memory.
pub const MAX_MEMBERS: usize = 10_000;

/// Longest address accepted (`host:port`); DNS names are at most 253 bytes.
pub const MAX_ADDR_LEN: usize = 270;

/// A node's state as served by `GET /state` and `GET /state/{addr}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    /// Every member this node knows, itself first, then in the order they were added.
    pub members: Vec<String>,
    /// The leader this node follows (or is), or `None` before it has elected anyone.
    /// Encoded as JSON `false` when `None`, as the Python does.
    #[serde(serialize_with = "ser_leader", deserialize_with = "de_leader")]
    pub leader: Option<String>,
    /// Seniority: wall-clock start time of the node, epoch seconds. Lower is more senior.
    pub start_time: f64,
    /// Leadership term: increases with every change of leader this node takes part in.
    /// A leader's term is a fencing token. Absent (0) from Python nodes.
    #[serde(default)]
    pub term: u64,
    /// Whether this node may be elected. Absent means yes (Python nodes always are).
    #[serde(default = "yes")]
    pub eligible: bool,
    /// Set while the node is shutting down gracefully: do not (re-)add it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub leaving: bool,
    /// Optional human-friendly node name (`--name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Software and version, e.g. `les/0.1.0`. Absent from Python nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The node's cluster name (`--cluster`); absent when it has none, as from Python
    /// nodes. Nodes only merge with nodes of their own cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How many times this node's state has changed in its current life (same
    /// `start_time`): a peer holding a copy with the same revision and start time may
    /// skip comparing the member lists. A hint, never trusted for membership or the
    /// election. Absent (0, "unknown") from Python nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// Members this node removed recently (its tombstones, a bounded few): a peer that
    /// still holds one checks it itself. Hearsay that only prompts a check, never a
    /// removal. Absent (empty) from Python nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// [`members_digest`] of `members`: a peer whose own list has the same digest
    /// knows the same nodes and need not read the list. A hint, like `revision`.
    /// Absent (0) from Python nodes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub members_digest: u64,
}

/// An order-independent digest of a set of addresses: the wrapping sum of each one's
/// FNV-1a hash. Kept up to date in O(1) per change, compared in O(1); never 0 for a
/// non-empty set in practice (0 means "absent").
pub fn members_digest<'a>(addrs: impl IntoIterator<Item = &'a str>) -> u64 {
    addrs.into_iter().map(addr_hash).fold(0, u64::wrapping_add)
}

/// FNV-1a, 64 bits, of one address: stable across versions and platforms, as the
/// digest is compared between nodes.
pub fn addr_hash(addr: &str) -> u64 {
    addr.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn ser_leader<S: Serializer>(leader: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match leader {
        Some(addr) => s.serialize_str(addr),
        None => s.serialize_bool(false),
    }
}

fn de_leader<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Leader {
        Addr(String),
        Flag(bool),
        Null(()),
    }
    match Leader::deserialize(d)? {
        Leader::Addr(a) => Ok(Some(a)),
        Leader::Flag(false) | Leader::Null(()) => Ok(None),
        Leader::Flag(true) => Err(serde::de::Error::custom(
            "`leader` must be false or an address, not true",
        )),
    }
}

/// Why a peer's state was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidState {
    /// `start_time` is NaN or infinite; holds the value received.
    #[error("`start_time` must be a finite number of seconds, got {0}")]
    StartTime(f64),
    /// `members` lists more than [`MAX_MEMBERS`] entries; holds how many.
    #[error("`members` has {0} entries, more than the {MAX_MEMBERS} accepted")]
    TooManyMembers(usize),
    /// `cluster` is not a valid cluster name (letters, digits, `-`, `_`, `.`); holds it.
    #[error("`cluster` {0:?} is not a valid cluster name")]
    Cluster(String),
    /// An address in the state is not a usable `host:port`.
    #[error("`{field}` holds an invalid address {addr:?}: {why}")]
    Address {
        /// The field that holds it (`members`, `removed` or `leader`).
        field: &'static str,
        /// The address as received.
        addr: String,
        /// What is wrong with it.
        why: AddrError,
    },
}

impl PeerState {
    /// Check what a peer sent before the core uses it.
    pub fn validate(&self) -> Result<(), InvalidState> {
        if !self.start_time.is_finite() || self.start_time < 0.0 {
            return Err(InvalidState::StartTime(self.start_time));
        }
        if self.members.len() > MAX_MEMBERS || self.removed.len() > MAX_MEMBERS {
            return Err(InvalidState::TooManyMembers(
                self.members.len().max(self.removed.len()),
            ));
        }
        let bad = |field, addr: &String, why| InvalidState::Address {
            field,
            addr: addr.clone(),
            why,
        };
        for m in &self.members {
            check_addr(m).map_err(|why| bad("members", m, why))?;
        }
        for m in &self.removed {
            check_addr(m).map_err(|why| bad("removed", m, why))?;
        }
        if let Some(l) = &self.leader {
            check_addr(l).map_err(|why| bad("leader", l, why))?;
        }
        if let Some(c) = &self.cluster {
            if crate::auth::check_cluster_name(c).is_err() {
                return Err(InvalidState::Cluster(c.chars().take(80).collect()));
            }
        }
        Ok(())
    }

    /// Parse and validate a state document received from a peer.
    pub fn from_json(body: &[u8]) -> Result<Self, StateParseError> {
        let state: PeerState = serde_json::from_slice(body)?;
        state.validate()?;
        Ok(state)
    }
}

/// The entity tag of a state document: a digest of its exact bytes, quoted as HTTP
/// wants. Both sides compute it from the body itself (neither trusts a header for it):
/// a node answers `GET /state/{addr}` carrying `If-None-Match` with this digest of its
/// current body `304 Not Modified`, so peers that agree exchange no body at all.
pub fn state_etag(body: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// A peer's answer could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateParseError {
    /// The body is not JSON of the state's shape.
    #[error("malformed state JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is a state document, but its values are not acceptable.
    #[error("invalid state: {0}")]
    Invalid(#[from] InvalidState),
}

/// Why a string is not a usable `host:port` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The string is empty.
    #[error("it is empty")]
    Empty,
    /// The string is longer than [`MAX_ADDR_LEN`] bytes.
    #[error("it is longer than {MAX_ADDR_LEN} bytes")]
    TooLong,
    /// There is no `:port` after the host.
    #[error("it has no `:port`")]
    NoPort,
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    BadPort,
    /// The host is empty or has characters not allowed in a host name.
    #[error("the host is empty or contains characters not allowed in a host name")]
    BadHost,
}

/// Check that `addr` is a `host:port` the node can dial and put in a URL path.
///
/// Hosts may be names (`node-1.example`), IPv4 literals or bracketed IPv6 literals
/// (`[::1]:4000`). This is deliberately strict: addresses travel in URL paths and
/// logs, so anything outside that alphabet is refused rather than escaped.
pub fn check_addr(addr: &str) -> Result<(), AddrError> {
    if addr.is_empty() {
        return Err(AddrError::Empty);
    }
    if addr.len() > MAX_ADDR_LEN {
        return Err(AddrError::TooLong);
    }
    let (host, port) = addr.rsplit_once(':').ok_or(AddrError::NoPort)?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(AddrError::BadPort),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !inner.is_empty()
            && inner
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    if host_ok {
        Ok(())
    } else {
        Err(AddrError::BadHost)
    }
}

/// Per-member detail that les adds to `/diag/` (the Python has no such key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Milliseconds since the last successful exchange with this member.
    pub last_contact_ms: Option<u64>,
    /// True while a timeout has made this member suspect and it is being probed.
    #[serde(default)]
    pub suspect: bool,
    /// Consecutive failed observations of it (timeouts, helpers' failed probes) since
    /// its last success (les extension).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub failures: u32,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The `/diag/` document: this node's state and the last state received from each member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diag {
    /// This node's own state.
    pub state: PeerState,
    /// The last state received from each member, keyed by address; includes this node.
    pub member_states: BTreeMap<String, PeerState>,
    /// les extension: contact freshness per member (absent from Python nodes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_info: BTreeMap<String, MemberInfo>,
    /// les extension, quorum mode only: the leader lease as this node sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseInfo>,
    /// les extension: what the failure detector has measured (absent from Python nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<DetectorInfo>,
    /// les extension, store backends only (`--backend postgres://…`): the store and
    /// the lease it decided. Absent under gossip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<BackendInfo>,
}

/// The store backend's part of `/diag/` (les extension; see [`crate::backend`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Which store: `postgres`.
    pub kind: String,
    /// Where it is, without a password.
    pub target: String,
    /// Whether the last contact with the store succeeded.
    pub connected: bool,
    /// While rounds fail: the latest reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The lease holder as last reported, while its lease runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// The lease's term (fencing token) as last reported.
    pub term: u64,
    /// While this node holds the lease: how much longer it may act without a renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_for_ms: Option<u64>,
    /// Members whose heartbeat is younger than the lease, this node included.
    pub live_members: usize,
}

/// The answer to `POST /step-down` (les extension), from any backend: `200` when
/// this node was the leader and gave leadership up, `409` when it was not (and
/// changed nothing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepDownReply {
    /// This node's address.
    pub node: String,
    /// Whether this node was the leader when asked (so it stepped down).
    pub was_leader: bool,
    /// The leader this node followed or was before the request.
    pub leader_before: Option<String>,
    /// The leader this node names right after it (gossip backend: the next most
    /// senior node, which takes over once every member names it, a round trip later).
    pub leader: Option<String>,
    /// This node's term after the request (higher than before after a step-down).
    pub term: u64,
    /// This node's start time (seniority) after the request, epoch seconds; a
    /// step-down makes it the newest.
    pub start_time: f64,
    /// For humans: what happened.
    pub message: String,
}

/// The failure detector's view of the network and of this node (`/diag/`, les
/// extension; see `core::health`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorInfo {
    /// Estimated share of contacts with unsuspected members that fail (0 to 1).
    pub loss: f64,
    /// Local health score, 0 (healthy) to 8: timeouts are multiplied by `1 + score`.
    pub health_score: u32,
    /// Consecutive failed observations that remove a member now.
    pub evidence_needed: u32,
    /// Timeout of the leader watch's next ping, in milliseconds.
    pub ping_timeout_ms: u64,
    /// Members suspect now.
    #[serde(default)]
    pub suspects: usize,
}

/// The quorum and lease part of `/diag/` (les extension, quorum mode only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Nodes (this one included) that must confirm a leader.
    pub quorum: usize,
    /// Lease length in milliseconds.
    pub lease_ms: u64,
    /// Whether this node acts as leader now.
    pub acting: bool,
    /// Members whose confirmation of this node is still within the lease (leader only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirmed_by: Vec<String>,
    /// Time left on this node's lease, while it acts as leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
    /// Members this node can reach now (not suspect), itself included.
    pub reachable: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_state_parses_and_defaults_the_new_fields() {
        let body =
            br#"{"members": ["a:1", "b:2"], "leader": false, "start_time": 1627515912.646504}"#;
        let s = PeerState::from_json(body).unwrap();
        assert_eq!(s.leader, None);
        assert_eq!(s.term, 0);
        assert!(s.eligible);
        assert!(!s.leaving);
        let with_leader = br#"{"members": [], "leader": "b:2", "start_time": 1.5, "extra": [1]}"#;
        assert_eq!(
            PeerState::from_json(with_leader).unwrap().leader.as_deref(),
            Some("b:2")
        );
    }

    #[test]
    fn leader_none_serializes_as_false_like_the_python() {
        let s = PeerState {
            members: vec!["a:1".into()],
            leader: None,
            start_time: 2.5,
            term: 0,
            eligible: true,
            leaving: false,
            name: None,
            version: None,
            cluster: None,
            revision: 0,
            removed: vec![],
            members_digest: 0,
        };
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["leader"], serde_json::Value::Bool(false));
        assert_eq!(json["start_time"], 2.5);
        assert!(json.get("leaving").is_none());
    }

    #[test]
    fn garbage_from_a_peer_is_an_error_not_a_panic() {
        for body in [
            &b"not json"[..],
            br#"{"members": "a:1", "leader": false, "start_time": 1}"#,
            br#"{"members": [], "leader": true, "start_time": 1}"#,
            br#"{"members": [], "leader": false, "start_time": -1}"#,
            br#"{"members": ["no-port"], "leader": false, "start_time": 1}"#,
            br#"{"members": ["a:1/../x"], "leader": false, "start_time": 1}"#,
            br#"{"members": [], "leader": "a:99999", "start_time": 1}"#,
        ] {
            assert!(
                PeerState::from_json(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn addresses_are_host_colon_port() {
        for ok in [
            "localhost:4000",
            "10.0.0.1:1",
            "[::1]:4000",
            "node_1.example.org:65535",
        ] {
            assert_eq!(check_addr(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_addr(""), Err(AddrError::Empty));
        assert_eq!(check_addr("host"), Err(AddrError::NoPort));
        assert_eq!(check_addr("host:0"), Err(AddrError::BadPort));
        assert_eq!(check_addr(":80"), Err(AddrError::BadHost));
        assert_eq!(check_addr("a b:80"), Err(AddrError::BadHost));
    }
}

#[cfg(test)]
mod roundtrip_tests {
    use super::*;

    /// Seniority is compared across nodes: every node must read exactly the start time
    /// a peer wrote, or two nodes a few ULPs apart each think they are the more senior
    /// and wait for each other forever (seen in the benchmark with nodes started in the
    /// same microsecond).
    #[test]
    fn start_times_survive_the_wire_bit_for_bit() {
        let mut t = 1_795_444_649.362_886_7_f64;
        for _ in 0..100_000 {
            let s = PeerState {
                members: vec![],
                leader: None,
                start_time: t,
                term: 0,
                eligible: true,
                leaving: false,
                name: None,
                version: None,
                cluster: None,
                revision: 0,
                removed: vec![],
                members_digest: 0,
            };
            let back = PeerState::from_json(&serde_json::to_vec(&s).unwrap()).unwrap();
            assert_eq!(
                back.start_time.to_bits(),
                t.to_bits(),
                "{t} came back as {}",
                back.start_time
            );
            t = f64::from_bits(t.to_bits() + 1);
        }
    }
}

/// Request header of `GET /probe/{addr}`: the longest, in milliseconds, the helper
/// should wait for the target's answer to its ping (les extension; Python nodes
/// ignore it and use their own timeout). A les helper waits at least
/// [`crate::core::PING_TIMEOUT_FLOOR`] and at most its own request timeout, whatever
/// the header says. Not covered by the request's tag: altering it in flight can only
/// shorten or lengthen a wait within those bounds.
pub const PROBE_TIMEOUT_HEADER: &str = "x-les-probe-timeout-ms";
