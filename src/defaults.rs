//! Default settings, in one place, at the bottom of the module graph.
//!
//! The protocol core ([`crate::core::CoreConfig`]'s `Default`), the configuration
//! ([`crate::config`], which re-exports this module as `config::defaults`), the runtime
//! and the `[default: …]` part of `les --help` all read these constants, so a default
//! is changed here and nowhere else. This module imports nothing from the crate, so any
//! layer may use it. `les.toml.example` documents the same values for operators; a test
//! checks that it agrees.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Interface the HTTP API binds to: every IPv4 interface.
pub const BIND_INTERFACE: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
/// Port the HTTP API listens on (the Python LES default).
pub const BIND_PORT: u16 = 4000;
/// Period of a gossip round. Failover is driven by closed connections, refused
/// connections and "gossip on change", so it takes round trips, not rounds; the
/// interval bounds how fast a silent failure is noticed, and sets the idle cost.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Deadline for one request to a peer, connect included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a member that timed out stays suspect before it is removed.
pub const SUSPICION_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a removed member may not come back with its old start time.
pub const REJOIN_HOLDOFF: Duration = Duration::from_secs(5);
/// Members contacted per round in large clusters (leader and suspects always are).
pub const FANOUT: usize = 8;
/// Whether a node may lead (`false` makes a witness).
pub const ELIGIBLE: bool = true;
/// Quorum mode: nodes that must confirm a leader; `0` is off (the Python behaviour).
pub const QUORUM: usize = 0;
/// Quorum mode: how long a confirmation by a quorum lets the leader act.
pub const LEASE: Duration = Duration::from_secs(3);
/// Leader watch: a follower pings its leader this often (`--watch-interval`).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest a leader-change handler call (all hook commands of one change together)
/// or a health check may run before it is cancelled and counts as failed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node that could not take up leadership stays ineligible.
pub const STEP_DOWN_COOLDOWN: Duration = Duration::from_secs(30);
/// Period of the health check command.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// Most connections the HTTP API keeps open. A peer holds at most two pooled
/// connections to each node, so this is room for a 500-node cluster with margin; a
/// silent connection costs about a kilobyte.
pub const MAX_CONNECTIONS: usize = 1024;
