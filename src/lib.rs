//! **les** — Leader Election by Seniority.
//!
//! A small cluster of nodes gossips membership over HTTP and agrees on one leader: the
//! node that has been running longest. A restarted node is junior again, so leadership
//! is stable. The wire protocol is compatible with the original Python LES, so a fleet
//! can migrate node by node.
//!
//! # Layout
//! Public API (what embedding and testing a cluster needs; semver applies):
//! - [`node`]: the runtime that drives the protocol with tokio: timers, one task per peer
//!   request, graceful leave. Start a node here and hold its [`node::NodeHandle`].
//! - [`config`]: flags, environment and TOML merged into a validated [`config::Config`].
//! - [`hooks`]: the [`hooks::LeaderChanged`] and [`hooks::HealthCheck`] traits and
//!   their calling contract.
//! - [`commands`]: shell commands as hooks and health checks, for operators (the
//!   keepalived way), and a crash guard that releases what a killed node held.
//! - [`daemon`]: a resolved configuration wired into a node builder with its hook
//!   commands, health check and crash guard (what the `les` binary runs), the shutdown
//!   signal and systemd notifications.
//! - [`backend`]: where the election is decided (gossip, or a database through the
//!   [`backend::LeaseStore`] trait).
//! - [`auth`]: keyrings, for signing requests to a keyed cluster.
//! - [`wire`]: the JSON documents on the wire and in `/diag/`, and validation of what
//!   peers send.
//! - [`defaults`]: every default setting, once, for all layers.
//! - [`net`]: the network and wall-clock seams (real, or simulated in tests).
//! - [`metrics`]: counters, also served on `GET /metrics`.
//! - `sim` (feature `sim`): a deterministic simulation of whole clusters of real nodes
//!   over turmoil, with faults, observers and snapshots, for your tests and ours.
//!
//! Internals, public only so that the binary, the benchmarks and the tests can reach
//! them, hidden from these docs and without a stability promise: `core` (the protocol as
//! a pure state machine — membership, failure detection and the election rules, no I/O
//! and no clock), `api` (the HTTP API a node serves) and `client` (the pooled HTTP
//! client it uses).
//!
//! # Embedding
//! ```no_run
//! use les::config::Config;
//! use les::hooks::{HookError, LeaderChange, LeaderChanged};
//! use les::node::Node;
//!
//! struct Announce;
//! impl LeaderChanged for Announce {
//!     async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
//!         println!("leader is now {:?} (term {})", change.current, change.term);
//!         Ok(())
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::new("10.0.0.1:4000", vec!["10.0.0.1:4000".into(), "10.0.0.2:4000".into()]);
//! let node = Node::builder(config).on_leader_change(Announce).start().await?;
//! let mut view = node.subscribe();
//! view.changed().await?;
//! println!("leader: {:?}", node.leader());
//! node.leave().await; // graceful: hands leadership over at once
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

#[doc(hidden)] // internal: see "Layout" above
pub mod api;
pub mod auth;
pub mod backend;
#[doc(hidden)] // internal: see "Layout" above
pub mod client;
pub mod commands;
pub mod config;
#[doc(hidden)] // internal: see "Layout" above
pub mod core;
pub mod daemon;
pub mod defaults;
pub mod hooks;
pub mod metrics;
pub mod net;
pub mod node;
#[cfg(feature = "sim")]
pub mod sim;
pub mod wire;
