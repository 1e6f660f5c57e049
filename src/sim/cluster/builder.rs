//! [`ClusterBuilder`] and [`NodeSpec`]: what a cluster is made of, before it runs.
//! Clusters share nothing, so several may run at once (`tests/sim_determinism.rs`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::{Cluster, Slot, PORT, SEED_ENV};
use tokio::sync::watch;

use crate::auth::Settings;
use crate::config::Config;
use crate::sim::clock::{SimClock, BASE_EPOCH};
use crate::sim::net::Shared;
use crate::sim::snapshot::NodeStatus;

type Configure = Box<dyn Fn(&mut Config)>;

/// One node of a simulated cluster, before it is built.
///
/// ```
/// use std::time::Duration;
/// use les::sim::NodeSpec;
///
/// // n4's clock is an hour behind; it knows only n1 and n2 at first; it never leads.
/// let n4 = NodeSpec::new("n4")
///     .clock_behind(Duration::from_secs(3600))
///     .seeds(["n1", "n2"])
///     .configure(|c| c.eligible = false);
/// # let _ = n4;
/// ```
pub struct NodeSpec {
    name: String,
    clock_offset_ms: i64,
    clock_rate: f64,
    pausable: bool,
    seeds: Option<Vec<String>>,
    configure: Vec<Configure>,
    auth: Settings,
}

impl std::fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSpec")
            .field("name", &self.name)
            .field("clock_offset_ms", &self.clock_offset_ms)
            .field("clock_rate", &self.clock_rate)
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl NodeSpec {
    /// A node named `name`: a host name made of letters, digits, `-`, `.` and `_`. Its
    /// address (and identity) is `name:4000`.
    pub fn new(name: impl Into<String>) -> Self {
        NodeSpec {
            name: name.into(),
            clock_offset_ms: 0,
            clock_rate: 1.0,
            pausable: false,
            seeds: None,
            configure: Vec::new(),
            auth: Settings::default(),
        }
    }

    /// Authenticate this node's requests and answers with `settings`' keyring (see
    /// [`crate::auth`]); change it later with [`Cluster::reload_auth`].
    pub fn auth(mut self, settings: Settings) -> Self {
        self.auth = settings;
        self
    }

    /// This node's clock runs `offset` ahead of the base clock (its start times are later).
    pub fn clock_ahead(mut self, offset: Duration) -> Self {
        self.clock_offset_ms = offset.as_millis() as i64;
        self
    }

    /// This node's clock runs `offset` behind the base clock (its start times are earlier,
    /// so it looks more senior than it is).
    pub fn clock_behind(mut self, offset: Duration) -> Self {
        self.clock_offset_ms = -(offset.as_millis() as i64);
        self
    }

    /// This node's monotonic clock runs at `rate` times real (simulated) time, e.g. `0.96`
    /// to `1.04` for a machine whose oscillator is 4 % slow or fast. Everything the node
    /// times runs on it: its rounds, request deadlines, suspicion and hold-off periods,
    /// and in quorum mode its lease and its promises. Its wall clock, which only sets its
    /// start time (seniority), does not drift: offset it with [`NodeSpec::clock_ahead`]
    /// or [`NodeSpec::clock_behind`]. Simulated time, and so every time in the trace and
    /// the snapshot, stays real time. Default `1.0`.
    ///
    /// # Panics
    /// If `rate` is not a finite number above zero.
    #[track_caller]
    pub fn clock_rate(mut self, rate: f64) -> Self {
        assert!(
            rate.is_finite() && rate > 0.0,
            "les::sim: clock rate {rate} of {} is not a positive number",
            self.name
        );
        self.clock_rate = rate;
        self
    }

    /// Let [`crate::sim::Cluster::pause`] freeze this node: it runs behind the runtime's
    /// pause gate. Off by default, because the gate, as the runtime has it now, makes
    /// some hook calls land a tick later from one run of a seed to the next: runs with
    /// pausable nodes may not replay to the tick.
    pub fn pausable(mut self) -> Self {
        self.pausable = true;
        self
    }

    /// Seed this node with these nodes (simulation names) instead of every node.
    pub fn seeds<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.seeds = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Adjust this node's [`Config`] (after the cluster-wide adjustments).
    pub fn configure(mut self, f: impl Fn(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }
}

/// Builds a [`Cluster`]. Obtain with [`Cluster::builder`].
pub struct ClusterBuilder {
    seed: u64,
    tick: Duration,
    latency: (Duration, Duration),
    nodes: Vec<NodeSpec>,
    configure: Vec<Configure>,
}

impl ClusterBuilder {
    pub(super) fn new() -> Self {
        ClusterBuilder {
            seed: 0,
            tick: Duration::from_millis(5),
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            nodes: Vec::new(),
            configure: Vec::new(),
        }
    }

    /// The seed every random choice derives from: latencies, lost messages, the nodes'
    /// own randomness. Default 0. The environment variable `LES_SIM_SEED`, when set,
    /// overrides it, so that a failed run can be replayed from the seed it printed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Add a node.
    pub fn node(mut self, spec: NodeSpec) -> Self {
        self.nodes.push(spec);
        self
    }

    /// Add nodes with default settings, by name.
    pub fn nodes<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.nodes
            .extend(names.into_iter().map(|n| NodeSpec::new(n.into())));
        self
    }

    /// Adjust every node's [`Config`], e.g. its interval or timeouts. The default is the
    /// production configuration ([`Config::new`]) with every node as a seed.
    pub fn configure(mut self, f: impl Fn(&mut Config) + 'static) -> Self {
        self.configure.push(Box::new(f));
        self
    }

    /// One-way latency of every link, drawn between `min` and `max` (mostly near `min`:
    /// turmoil's exponential distribution). Default 1 to 10 ms.
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = (min, max.max(min));
        self
    }

    /// Simulated time per step. Timers fire at their exact time, but messages are
    /// delivered at step boundaries. Default 5 ms; smaller is slower to simulate.
    pub fn tick(mut self, tick: Duration) -> Self {
        self.tick = tick.max(Duration::from_millis(1));
        self
    }

    /// Build the cluster. No node is running yet: start them with [`Cluster::start`].
    ///
    /// # Panics
    /// If two nodes share a name or a name is not a valid host name.
    #[track_caller]
    pub fn build(self) -> Cluster {
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(self.seed);
        let sim = turmoil::Builder::new()
            .rng_seed(seed)
            .epoch(UNIX_EPOCH + Duration::from_secs_f64(BASE_EPOCH))
            .tick_duration(self.tick)
            .simulation_duration(Duration::from_secs(u32::MAX as u64))
            .min_message_latency(self.latency.0)
            .max_message_latency(self.latency.1)
            .tcp_capacity(4096)
            .build();
        let addr_of = |name: &str| format!("{name}:{PORT}");
        let all: Vec<String> = self.nodes.iter().map(|n| addr_of(&n.name)).collect();
        let shared = Arc::new(Shared::new(seed));
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (index, spec) in self.nodes.into_iter().enumerate() {
            let addr = addr_of(&spec.name);
            if let Err(why) = crate::wire::check_addr(&addr) {
                panic!(
                    "les::sim: node name {:?} is not a host name: {why}",
                    spec.name
                );
            }
            if nodes.iter().any(|s: &Slot| s.name == spec.name) {
                panic!("les::sim: two nodes are named {:?}", spec.name);
            }
            let seeds = match &spec.seeds {
                Some(names) => names.iter().map(|n| addr_of(n)).collect(),
                None => all.clone(),
            };
            let mut config = Config::new(addr.clone(), seeds);
            for f in self.configure.iter().chain(&spec.configure) {
                f(&mut config);
            }
            // Register the name now so every node resolves it, even before it starts.
            sim.lookup(spec.name.as_str());
            shared.faults().set_open(&spec.name, false);
            nodes.push(Slot {
                index,
                name: spec.name,
                addr,
                clock: SimClock {
                    at_zero: BASE_EPOCH + spec.clock_offset_ms as f64 / 1000.0,
                },
                clock_rate: spec.clock_rate,
                pausable: spec.pausable,
                config,
                registered: false,
                status: NodeStatus::NotStarted,
                starts: Rc::default(),
                incarnations: Rc::default(),
                pause: Rc::new(watch::channel(false).0),
                auth: Rc::new(RefCell::new(spec.auth)),
            });
        }
        shared.journal().set_names(
            nodes
                .iter()
                .map(|s| (s.addr.clone(), s.name.clone()))
                .collect(),
        );
        Cluster {
            sim,
            shared,
            nodes,
            seed,
            tick: self.tick,
            link_latency: BTreeMap::new(),
        }
    }
}
