//! Deterministic simulation of whole les clusters (feature `sim`).
//!
//! A [`Cluster`] runs real les nodes — the same [`crate::node`] runtime, HTTP server and
//! client that production runs, started with [`crate::node::Node::builder`] — each on its
//! own [turmoil](https://docs.rs/turmoil) host, over a simulated network, in simulated
//! time. Nothing is re-implemented: the simulation swaps in two seams, the network
//! ([`TurmoilNetwork`]) and the wall clock ([`SimClock`]), and drives time.
//!
//! The point is snapshot testing: start a cluster, inject faults, let it converge, and
//! compare what every node sees, and the story of leader changes, with a reviewed
//! [`Snapshot`]. The same seed gives the same run, to the millisecond, so a snapshot is
//! stable and a failure can be replayed.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use les::sim::Cluster;
//!
//! let mut sim = Cluster::builder().seed(7).nodes(["n1", "n2", "n3"]).build();
//! sim.start("n1");
//! sim.run_for(Duration::from_secs(1)); // n1 is the most senior: it started first
//! sim.start("n2");
//! sim.start("n3");
//! sim.run_until_agreed(Duration::from_secs(10)).expect("the nodes agree on a leader");
//! assert_eq!(sim.agreed_leader().as_deref(), Some("n1"));
//!
//! sim.crash("n1"); // kill -9: no goodbye
//! sim.run_for(Duration::from_secs(5));
//! assert_eq!(sim.agreed_leader().as_deref(), Some("n2")); // n2 started before n3
//!
//! // A table of every node's view and of every leader change, for insta:
//! // insta::assert_snapshot!(sim.snapshot());
//! let snapshot = sim.snapshot();
//! assert_eq!(snapshot.nodes[1].leader.as_deref(), Some("n2"));
//! println!("{snapshot}");
//! ```
//!
//! # What is simulated
//! - **Nodes.** Node `n1` listens on port 4000 of host `n1` and its identity is
//!   `n1:4000`. Every node gets the production configuration ([`crate::config::Config::new`])
//!   with every node of the cluster as a seed; change either with
//!   [`ClusterBuilder::configure`] or [`NodeSpec`].
//! - **Time.** Every host has its own tokio runtime with a paused clock that the
//!   simulation advances one tick at a time (5 ms by default). Timers fire at their exact
//!   simulated time; messages are delivered at tick boundaries.
//! - **Clocks.** A node's wall clock shows [`BASE_EPOCH`] plus its own offset
//!   ([`NodeSpec::clock_behind`]) plus the simulated time, so start times, which decide
//!   seniority, are exact. Snapshots show them relative to [`BASE_EPOCH`]. A node's
//!   monotonic clock, which times its rounds, deadlines and leases, may run fast or slow
//!   ([`NodeSpec::clock_rate`], e.g. `1.04`); the trace keeps real (simulated) time.
//! - **Lifecycle.** [`Cluster::start`], [`Cluster::crash`] (`kill -9`: tasks stop, port
//!   closed), [`Cluster::stop`] (graceful leave, as on SIGTERM), [`Cluster::restart`],
//!   [`Cluster::pause`] and [`Cluster::resume`] (SIGSTOP and SIGCONT: the node does
//!   nothing while its clocks run on; requests to it wait), for nodes built
//!   [`NodeSpec::pausable`].
//! - **Network.** Latency and jitter per link ([`ClusterBuilder::latency`],
//!   [`Cluster::set_link_latency`]), symmetric and one-way partitions
//!   ([`Cluster::partition`], [`Cluster::partition_oneway`], [`Cluster::heal`]) and
//!   message loss ([`Cluster::set_loss`], [`Cluster::set_link_loss`]). What a node sees:
//!
//! | situation | what the node's request sees | how les reacts |
//! |---|---|---|
//! | peer crashed, stopped or not started | connection refused, at once | removes it at once |
//! | link cut by a partition | no answer: the request times out | suspects it, probes it through others, removes it after `suspicion_timeout` |
//! | message lost | the same, for that one exchange | the same; a probe or the next round usually clears it |
//!
//!   turmoil alone would do the opposite — refuse across a cut link, hang on a crashed
//!   host — see [`TurmoilNetwork`]. A machine that vanishes, power and all, is a crash
//!   plus a partition. A one-way cut `a -> b` is a stateful firewall rule: `a` cannot
//!   open connections to `b`, but `b` can open connections to `a` and gets its answers.
//!   Loss is drawn per message (a connection request, a request or an answer); a lost
//!   message stalls its exchange until the sender's deadline, which is how a TCP
//!   connection behaves during an outage longer than its deadline.
//!
//! # Observers
//! - [`Cluster::views`] and [`Cluster::diag`]: each node's `/diag/` document (read
//!   through [`crate::node::NodeHandle::diag`]); [`Cluster::snapshot`] adds the leader
//!   changes. These advance the simulation by a tick, since the node's own loop answers.
//! - [`Cluster::leader`], [`Cluster::term`], [`Cluster::agreed_leader`],
//!   [`Cluster::most_senior`]: instant reads.
//! - [`Cluster::leader_changes`]: every change with its simulated time, node, previous
//!   and new leader and term, recorded by a `LeaderChanged` handler on every node.
//! - [`Cluster::trace`]: everything in order — starts, crashes, pauses, leader changes, members
//!   added and removed, network changes, and ground truth from the network: the first
//!   answer each node read from each peer ([`TraceEvent::FirstHeard`]).
//! - [`Cluster::acting_spans`]: who acted as leader when, from each node's own
//!   observations (see [`ActingSpan`]); [`first_overlap`] finds two leaders acting at
//!   the same instant.
//! - [`Cluster::messages_sent`]: requests each node sent (its metrics).
//!
//! # Determinism and replay
//! Every random choice derives from the seed ([`ClusterBuilder::seed`]): link latencies,
//! lost messages, and each node's own randomness. The hosts run one at a time, in a
//! fixed order, on the test's thread. When a test that holds a [`Cluster`] panics, the
//! cluster prints its seed and the command that replays the run; the environment
//! variable `LES_SIM_SEED` overrides the seed of every cluster built while it is set.
//!
//! # Costs
//! Simulated time is cheap but not free. In a debug build, a simulated second costs about
//! 4 ms of CPU for 3 nodes, 20 ms for 9 and 0.25 s for 50, once the dependencies that do
//! the work (tokio, hyper, turmoil) are optimized, as this crate's own `Cargo.toml` does
//! for its tests (`[profile.dev.package."*"] opt-level = 1` does it for yours); without
//! that, three to four times more. Prefer stopping at an event over long fixed runs:
//! [`Cluster::run_until`] and [`Cluster::run_until_agreed`] return as soon as their
//! condition holds.

mod acting;
mod clock;
mod cluster;
mod host;
mod net;
mod snapshot;
mod trace;

pub use acting::{acting_spans, first_overlap, ActingSpan};
pub use clock::{SimClock, BASE_EPOCH};
pub use cluster::{replay_hint, Cluster, ClusterBuilder, NodeSpec, PORT, SEED_ENV};
pub use net::{SimStream, TurmoilNetwork};
pub use snapshot::{NodeStatus, NodeView, Snapshot};
pub use trace::{LeaderChangeRecord, TraceEntry, TraceEvent};
