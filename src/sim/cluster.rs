//! [`Cluster`]: real les nodes on simulated hosts, and the controls and observers a test
//! uses to drive them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, UNIX_EPOCH};

use crate::config::Config;
use crate::net::WallClock;
use crate::node::{Node, NodeError, NodeHandle};
use crate::sim::net::{Shared, SimClock, TurmoilNetwork};
use crate::sim::snapshot::{NodeStatus, NodeView, Snapshot};
use crate::sim::trace::{
    membership_observer, LeaderChangeRecord, Recorder, TraceEntry, TraceEvent,
};
use crate::wire::Diag;

/// Environment variable that overrides every [`ClusterBuilder::seed`], to replay a run.
pub const SEED_ENV: &str = "LES_SIM_SEED";

/// Epoch seconds every node's clock shows at simulated time zero, before its own offset
/// (2023-11-14 22:13:20 UTC). Start times in snapshots are relative to it.
pub const BASE_EPOCH: f64 = 1_700_000_000.0;

/// The port every simulated node listens on; node `n1` is reached at `n1:4000`.
pub const PORT: u16 = 4000;

/// Longest a graceful stop may take before the simulation calls it a bug. The leave
/// waits for handlers (10 s at most) and for the goodbyes (one request timeout).
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Most ticks spent waiting for nodes to answer a `/diag/` request.
const DIAG_TICKS: usize = 100;

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
    seeds: Option<Vec<String>>,
    configure: Vec<Configure>,
}

impl std::fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSpec")
            .field("name", &self.name)
            .field("clock_offset_ms", &self.clock_offset_ms)
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
            seeds: None,
            configure: Vec::new(),
        }
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
        let _lock = one_at_a_time();
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
                config,
                registered: false,
                status: NodeStatus::NotStarted,
                starts: Rc::default(),
                incarnations: Rc::default(),
            });
        }
        shared.journal().set_names(
            nodes
                .iter()
                .map(|s| (s.addr.clone(), s.name.clone()))
                .collect(),
        );
        Cluster {
            _lock,
            sim,
            shared,
            nodes,
            seed,
            tick: self.tick,
            link_latency: BTreeMap::new(),
        }
    }
}

/// A running incarnation of a node, as its host software published it.
struct Incarnation {
    /// Which [`Cluster::start`] call started it (1 for the first).
    start_no: u32,
    /// How many times the node's software has run, this time included (the trace's
    /// incarnation number).
    number: u32,
    handle: NodeHandle,
    /// Epoch seconds read from the node's clock when it started.
    start_time: f64,
}

struct Slot {
    index: usize,
    name: String,
    addr: String,
    clock: SimClock,
    config: Config,
    /// Known to turmoil (started at least once).
    registered: bool,
    status: NodeStatus,
    /// How many times [`Cluster::start`] started it.
    starts: Rc<Cell<u32>>,
    /// Filled by the host software, one per run.
    incarnations: Rc<RefCell<Vec<Incarnation>>>,
}

/// What one simulated host runs: a real les node, started the way production starts it.
struct HostSoftware {
    name: String,
    index: usize,
    seed: u64,
    config: Config,
    clock: SimClock,
    shared: Arc<Shared>,
    starts: Rc<Cell<u32>>,
    incarnations: Rc<RefCell<Vec<Incarnation>>>,
}

impl HostSoftware {
    async fn run(&self) -> Result<(), NodeError> {
        // A start whose software never ran (crashed within the same tick) is skipped.
        let incarnation = self.incarnations.borrow().len() as u32 + 1;
        let start_no = self.starts.get();
        let start_time = self.clock.now_epoch();
        {
            let mut journal = self.shared.journal();
            let at = crate::sim::net::sim_now();
            journal.push(
                at,
                TraceEvent::Started {
                    node: self.name.clone(),
                    incarnation,
                    start_time_ms: relative_ms(start_time),
                },
            );
        }
        let handle = Node::builder(self.config.clone())
            .network(TurmoilNetwork::for_node(
                &self.name,
                incarnation,
                self.shared.clone(),
            ))
            .clock(self.clock)
            .rng_seed(mix(self.seed, self.index as u64, incarnation as u64))
            .on_leader_change(Recorder {
                shared: self.shared.clone(),
                node: self.name.clone(),
                incarnation,
            })
            .observe(membership_observer(
                self.shared.clone(),
                self.name.clone(),
                incarnation,
            ))
            .start()
            .await?;
        self.incarnations.borrow_mut().push(Incarnation {
            start_no,
            number: incarnation,
            handle: handle.clone(),
            start_time,
        });
        handle.stopped().await;
        Ok(())
    }
}

/// A seed for one node incarnation's own randomness.
fn mix(seed: u64, index: u64, incarnation: u64) -> u64 {
    // splitmix64 over the three inputs: distinct, well-spread seeds.
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ incarnation.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Milliseconds between the base epoch and `epoch_secs`, rounded.
pub(crate) fn relative_ms(epoch_secs: f64) -> i64 {
    ((epoch_secs - BASE_EPOCH) * 1000.0).round() as i64
}

/// A simulated cluster of real les nodes. See the [module docs](crate::sim).
///
/// Controls panic when given a name that is not a node of the cluster, or an impossible
/// transition (starting a running node): those are mistakes in the test.
pub struct Cluster {
    /// Held for the cluster's lifetime: see [`one_at_a_time`].
    _lock: SimGuard,
    sim: turmoil::Sim<'static>,
    shared: Arc<Shared>,
    nodes: Vec<Slot>,
    seed: u64,
    tick: Duration,
    /// Per-link latency (min, max) set by the test, applied as hosts come into existence.
    link_latency: BTreeMap<(String, String), (Duration, Duration)>,
}

impl Cluster {
    /// A builder with defaults: seed 0, 5 ms ticks, 1–10 ms links, no nodes.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            seed: 0,
            tick: Duration::from_millis(5),
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            nodes: Vec::new(),
            configure: Vec::new(),
        }
    }

    /// The seed of this run (after any `LES_SIM_SEED` override).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Simulated time since the start of the run.
    pub fn now(&self) -> Duration {
        self.sim.elapsed()
    }

    /// Simulated time per step.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Names of the nodes, in the order they were added.
    pub fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|s| s.name.clone()).collect()
    }

    /// The address (identity) of node `name`, e.g. `n1:4000`.
    #[track_caller]
    pub fn addr(&self, name: &str) -> String {
        self.slot(name).addr.clone()
    }

    /// The configuration node `name` runs with.
    #[track_caller]
    pub fn config(&self, name: &str) -> &Config {
        &self.slot(name).config
    }

    #[track_caller]
    fn index(&self, name: &str) -> usize {
        match self.nodes.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => panic!(
                "les::sim: no node named {name:?}; the nodes are {:?}",
                self.names()
            ),
        }
    }

    #[track_caller]
    fn slot(&self, name: &str) -> &Slot {
        &self.nodes[self.index(name)]
    }

    fn journal(&self, event: TraceEvent) {
        let at = self.now();
        self.shared.journal().push(at, event);
    }

    // ----- controls -----

    /// Start node `name`: its first start, or a restart after a crash or a stop. It takes
    /// its start time from its own clock, so a restarted node is junior.
    ///
    /// # Panics
    /// If the node is running.
    #[track_caller]
    pub fn start(&mut self, name: &str) {
        let i = self.index(name);
        let slot = &self.nodes[i];
        if matches!(slot.status, NodeStatus::Up | NodeStatus::Leaving) {
            panic!("les::sim: cannot start {name}: it is running");
        }
        slot.starts.set(slot.starts.get() + 1);
        if slot.registered {
            self.sim.bounce(name);
        } else {
            let software = Rc::new(HostSoftware {
                name: slot.name.clone(),
                index: slot.index,
                seed: self.seed,
                config: slot.config.clone(),
                clock: slot.clock,
                shared: self.shared.clone(),
                starts: slot.starts.clone(),
                incarnations: slot.incarnations.clone(),
            });
            self.sim.host(name, move || {
                let software = software.clone();
                async move { Ok(software.run().await?) }
            });
            self.nodes[i].registered = true;
            self.apply_link_latency();
        }
        self.nodes[i].status = NodeStatus::Up;
        self.shared.faults().set_open(name, true);
    }

    /// Start every node that is not running, in the order they were added, at the same
    /// simulated instant.
    pub fn start_all(&mut self) {
        for name in self.names() {
            if !self.is_running(&name) {
                self.start(&name);
            }
        }
    }

    /// Kill node `name` without a goodbye (like `kill -9`): its tasks stop at once and its
    /// port is closed, so peers that contact it are refused.
    ///
    /// # Panics
    /// If the node is not running.
    #[track_caller]
    pub fn crash(&mut self, name: &str) {
        let i = self.index(name);
        if !self.is_running(name) {
            panic!("les::sim: cannot crash {name}: it is not running");
        }
        self.sim.crash(name);
        self.nodes[i].status = NodeStatus::Crashed;
        self.shared.faults().set_open(name, false);
        self.journal(TraceEvent::Crashed {
            node: name.to_string(),
        });
    }

    /// Stop node `name` gracefully (`NodeHandle::leave`, as on SIGTERM) and run the
    /// simulation until it has left: it gives up leadership and tells its members.
    ///
    /// # Panics
    /// If the node is not up, or takes longer than 30 simulated seconds to leave.
    #[track_caller]
    pub fn stop(&mut self, name: &str) {
        let i = self.index(name);
        if self.nodes[i].status != NodeStatus::Up {
            panic!("les::sim: cannot stop {name}: it is not up");
        }
        // Started this very tick: let its software run first.
        for _ in 0..DIAG_TICKS {
            if self.current(i).is_some() {
                break;
            }
            self.step();
        }
        let Some(handle) = self.current(i) else {
            panic!("{}", self.failure(&format!("{name} never came up")));
        };
        // `leave` cancels the node's work on its first poll; the simulation does the rest.
        let mut leave = Box::pin(async move { handle.leave().await });
        let _ = poll_once(leave.as_mut());
        drop(leave);
        self.nodes[i].status = NodeStatus::Leaving;
        self.journal(TraceEvent::Leaving {
            node: name.to_string(),
        });
        let done = self.run_until(STOP_LIMIT, |c| c.status(name) == NodeStatus::Stopped);
        if done.is_none() {
            panic!(
                "{}",
                self.failure(&format!(
                    "{name} did not finish leaving within {STOP_LIMIT:?}"
                ))
            );
        }
    }

    /// Crash node `name` if it is running, then start it again.
    #[track_caller]
    pub fn restart(&mut self, name: &str) {
        if self.is_running(name) {
            self.crash(name);
        }
        self.start(name);
    }

    /// Cut every link between nodes of different groups, both ways: connections and
    /// messages between them are silently dropped (callers time out). Links of nodes in
    /// no group are untouched. Adds to the cuts already in force.
    ///
    /// ```
    /// # let mut sim = les::sim::Cluster::builder().nodes(["n1", "n2", "n3"]).build();
    /// sim.partition(&[&["n1", "n2"], &["n3"]]); // 2 | 1
    /// sim.heal();
    /// sim.partition(&[&["n1"], &["n2"], &["n3"]]); // 1 | 1 | 1
    /// ```
    #[track_caller]
    pub fn partition(&mut self, groups: &[&[&str]]) {
        for name in groups.iter().flat_map(|g| g.iter()) {
            self.index(name);
        }
        {
            let mut faults = self.shared.faults();
            for (gi, a_group) in groups.iter().enumerate() {
                for (gj, b_group) in groups.iter().enumerate() {
                    if gi == gj {
                        continue;
                    }
                    for a in a_group.iter() {
                        for b in b_group.iter() {
                            faults.cut(a, b);
                        }
                    }
                }
            }
        }
        let change = groups
            .iter()
            .map(|g| g.join(" "))
            .collect::<Vec<_>>()
            .join(" | ");
        self.journal(TraceEvent::Network {
            change: format!("partition {change}"),
        });
    }

    /// Cut the link one way: connections that `from` opens to `to` are dropped, while `to`
    /// can still open connections to `from` and get answers (a stateful firewall rule).
    #[track_caller]
    pub fn partition_oneway(&mut self, from: &str, to: &str) {
        self.index(from);
        self.index(to);
        self.shared.faults().cut(from, to);
        self.journal(TraceEvent::Network {
            change: format!("cut {from} -> {to}"),
        });
    }

    /// Repair every cut link. Connections that were blackholed stay dead until their
    /// owners give up on them; new ones go through.
    pub fn heal(&mut self) {
        self.shared.faults().heal();
        self.journal(TraceEvent::Network {
            change: "heal".to_string(),
        });
    }

    /// Lose each message (connection request, request or answer) with probability `rate`
    /// on every link without a rate of its own. A lost message stalls its exchange until
    /// the sender's deadline, as a long outage would.
    pub fn set_loss(&mut self, rate: f64) {
        self.shared.faults().set_loss(rate.clamp(0.0, 1.0));
        self.journal(TraceEvent::Network {
            change: format!("loss {}%", rate * 100.0),
        });
    }

    /// Like [`Cluster::set_loss`], for the link between `a` and `b` only (both ways).
    #[track_caller]
    pub fn set_link_loss(&mut self, a: &str, b: &str, rate: f64) {
        self.index(a);
        self.index(b);
        self.shared
            .faults()
            .set_link_loss(a, b, rate.clamp(0.0, 1.0));
        self.journal(TraceEvent::Network {
            change: format!("loss {}% on {a} - {b}", rate * 100.0),
        });
    }

    /// One-way latency between `a` and `b` (both ways): from `min` to `max`, mostly near
    /// `min`. `max - min` is the jitter.
    #[track_caller]
    pub fn set_link_latency(&mut self, a: &str, b: &str, min: Duration, max: Duration) {
        self.index(a);
        self.index(b);
        let key = if a <= b { (a, b) } else { (b, a) };
        self.link_latency
            .insert((key.0.to_string(), key.1.to_string()), (min, max.max(min)));
        self.apply_link_latency();
        self.journal(TraceEvent::Network {
            change: format!(
                "latency {a} - {b}: {}..{} ms",
                min.as_millis(),
                max.max(min).as_millis()
            ),
        });
    }

    /// turmoil knows a link only once both its hosts exist: apply what it can.
    fn apply_link_latency(&mut self) {
        for ((a, b), (min, max)) in &self.link_latency {
            let known = |n: &str| self.nodes.iter().any(|s| s.name == n && s.registered);
            if known(a) && known(b) {
                self.sim.set_link_latency(a.as_str(), b.as_str(), *min);
                self.sim
                    .set_link_max_message_latency(a.as_str(), b.as_str(), *max);
            }
        }
    }

    // ----- running -----

    /// Advance the simulation by one tick.
    pub fn step(&mut self) {
        if let Err(e) = self.sim.step() {
            panic!("{}", self.failure(&format!("a simulated host failed: {e}")));
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].status == NodeStatus::Leaving {
                let name = self.nodes[i].name.clone();
                if !self.sim.is_host_running(name.as_str()) {
                    self.nodes[i].status = NodeStatus::Stopped;
                    self.shared.faults().set_open(&name, false);
                    self.journal(TraceEvent::Stopped { node: name });
                }
            }
        }
    }

    /// Advance the simulation by `duration` (rounded up to whole ticks).
    pub fn run_for(&mut self, duration: Duration) {
        let ticks = duration.as_nanos().div_ceil(self.tick.as_nanos().max(1));
        for _ in 0..ticks {
            self.step();
        }
    }

    /// Step until `done` holds (checked before every step) or `limit` has passed.
    /// Returns how long it took, or `None` if `limit` passed first.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Cluster) -> bool,
    ) -> Option<Duration> {
        let start = self.now();
        loop {
            if done(self) {
                return Some(self.now() - start);
            }
            if self.now() - start >= limit {
                return None;
            }
            self.step();
        }
    }

    /// Step until every node that is up names the same leader, which is up, or `limit`
    /// has passed. Returns how long it took.
    pub fn run_until_agreed(&mut self, limit: Duration) -> Option<Duration> {
        self.run_until(limit, |c| c.agreed_leader().is_some())
    }

    // ----- observers -----

    /// The node's status.
    #[track_caller]
    pub fn status(&self, name: &str) -> NodeStatus {
        self.slot(name).status
    }

    /// Whether the node's software is running (up or leaving).
    #[track_caller]
    pub fn is_running(&self, name: &str) -> bool {
        matches!(self.status(name), NodeStatus::Up | NodeStatus::Leaving)
    }

    /// Names of the nodes that are up (running, not leaving).
    pub fn up(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|s| s.status == NodeStatus::Up)
            .map(|s| s.name.clone())
            .collect()
    }

    /// The handle of the incarnation the latest start created, once its software runs.
    fn current(&self, i: usize) -> Option<NodeHandle> {
        self.with_current(i, |inc| inc.handle.clone())
    }

    fn with_current<T>(&self, i: usize, f: impl FnOnce(&Incarnation) -> T) -> Option<T> {
        let slot = &self.nodes[i];
        let incarnations = slot.incarnations.borrow();
        let last = incarnations.last()?;
        (last.start_no == slot.starts.get()).then(|| f(last))
    }

    /// The running incarnation's handle, if the node is up and its software has started.
    fn live_handle(&self, i: usize) -> Option<NodeHandle> {
        (self.nodes[i].status == NodeStatus::Up)
            .then(|| self.current(i))
            .flatten()
    }

    /// The trace's incarnation number of the node's latest run (0 before it first runs).
    #[track_caller]
    pub fn incarnation(&self, name: &str) -> u32 {
        let slot = self.slot(name);
        let incarnations = slot.incarnations.borrow();
        incarnations.last().map_or(0, |inc| inc.number)
    }

    /// The leader node `name` follows or is (a node name), if it is up and has one.
    #[track_caller]
    pub fn leader(&self, name: &str) -> Option<String> {
        let addr = self.live_handle(self.index(name))?.leader()?;
        Some(self.shared.journal().name_of(&addr))
    }

    /// Node `name`'s current term, if it is up.
    #[track_caller]
    pub fn term(&self, name: &str) -> Option<u64> {
        let handle = self.live_handle(self.index(name))?;
        let term = handle.subscribe().borrow().term;
        Some(term)
    }

    /// The leader every up node names, if they all name the same one and it is up.
    pub fn agreed_leader(&self) -> Option<String> {
        let up = self.up();
        let first = self.leader(up.first()?)?;
        let all_agree = up.iter().all(|n| self.leader(n).as_deref() == Some(&first));
        (all_agree && up.contains(&first)).then_some(first)
    }

    /// Node `name`'s start time in milliseconds relative to [`BASE_EPOCH`], read from its
    /// own clock when it last started; `None` until its software first runs.
    #[track_caller]
    pub fn start_time_ms(&self, name: &str) -> Option<i64> {
        self.with_current(self.index(name), |inc| relative_ms(inc.start_time))
    }

    /// The node the rules say should lead among those that are up: the most senior
    /// (earliest start time, then lowest address) eligible one.
    pub fn most_senior(&self) -> Option<String> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == NodeStatus::Up && s.config.eligible)
            .filter_map(|(i, s)| {
                let (number, started) = self.with_current(i, |inc| (inc.number, inc.start_time))?;
                let st = self.current_start_time(&s.name, number).unwrap_or(started);
                Some((st, s.addr.clone(), s.name.clone()))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)))
            .map(|(_, _, name)| name)
    }

    /// The start time incarnation `number` of `name` last took for itself (after a
    /// pause, a lost quorum, a step-down), in epoch seconds, if it took one.
    fn current_start_time(&self, name: &str, number: u32) -> Option<f64> {
        let ms = self.shared.journal().retaken_start_ms(name, number)?;
        Some(BASE_EPOCH + ms as f64 / 1000.0)
    }

    /// Requests each node has sent (state fetches, probes, goodbyes), over all its
    /// incarnations.
    pub fn messages_sent(&self) -> BTreeMap<String, u64> {
        self.nodes
            .iter()
            .map(|s| {
                let sent = s
                    .incarnations
                    .borrow()
                    .iter()
                    .map(|inc| inc.handle.metrics().requests_sent)
                    .sum();
                (s.name.clone(), sent)
            })
            .collect()
    }

    /// Everything that happened so far, in time order.
    pub fn trace(&self) -> Vec<TraceEntry> {
        self.shared.journal().entries()
    }

    /// Every leader change so far, in time order.
    pub fn leader_changes(&self) -> Vec<LeaderChangeRecord> {
        self.trace()
            .iter()
            .filter_map(TraceEntry::leader_change)
            .collect()
    }

    /// Node `name`'s `/diag/` document, if it is up. Advances the simulation by at least
    /// one tick: the node's own loop answers.
    #[track_caller]
    pub fn diag(&mut self, name: &str) -> Option<Diag> {
        let i = self.index(name);
        self.diags(&[i]).pop().flatten()
    }

    /// Every node's view: its `/diag/` document in a readable form, or its status if it is
    /// not up. Advances the simulation by at least one tick.
    pub fn views(&mut self) -> Vec<NodeView> {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        let diags = self.diags(&all);
        let journal = self.shared.journal();
        self.nodes
            .iter()
            .zip(diags)
            .map(|(slot, diag)| {
                NodeView::new(&slot.name, slot.status, diag.as_ref(), |a| {
                    journal.name_of(a)
                })
            })
            .collect()
    }

    /// The views and the leader changes, ready for a snapshot (`insta::assert_snapshot!`
    /// prints it as a table). Advances the simulation by at least one tick.
    pub fn snapshot(&mut self) -> Snapshot {
        let nodes = self.views();
        Snapshot {
            seed: self.seed,
            at_ms: self.now().as_millis() as u64,
            nodes,
            leader_changes: self.leader_changes(),
        }
    }

    /// Ask the up nodes among `which` for `/diag/` and step until they have all answered.
    fn diags(&mut self, which: &[usize]) -> Vec<Option<Diag>> {
        type DiagFuture = Pin<Box<dyn Future<Output = Result<Diag, NodeError>>>>;
        let mut pending: Vec<Option<DiagFuture>> = which
            .iter()
            .map(|&i| {
                self.live_handle(i).map(|h| {
                    let fut: DiagFuture = Box::pin(async move { h.diag().await });
                    fut
                })
            })
            .collect();
        let mut out: Vec<Option<Diag>> = vec![None; which.len()];
        for _ in 0..DIAG_TICKS {
            for (slot, result) in pending.iter_mut().zip(out.iter_mut()) {
                if let Some(fut) = slot {
                    if let Poll::Ready(r) = poll_once(fut.as_mut()) {
                        *result = r.ok();
                        *slot = None;
                    }
                }
            }
            if pending.iter().all(Option::is_none) {
                break;
            }
            self.step();
        }
        out
    }

    /// A failure message naming the seed and the simulated time. (When a test panics,
    /// dropping the cluster prints the command that replays the run.)
    pub fn failure(&self, what: &str) -> String {
        format!(
            "les::sim: {what} (seed {}, at {} ms simulated)",
            self.seed,
            self.now().as_millis()
        )
    }
}

/// How to replay a run with `seed`: the command, naming the current test.
pub fn replay_hint(seed: u64) -> String {
    let thread = std::thread::current();
    let test = thread
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<test name>");
    format!("replay: {SEED_ENV}={seed} cargo test --all-features -- {test} --exact")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "les::sim: this run used seed {} and failed at {} ms simulated\n{}",
                self.seed,
                self.now().as_millis(),
                replay_hint(self.seed)
            );
        }
    }
}

/// Poll a future once, from outside any runtime. The simulated hosts wake what they need.
fn poll_once<T>(fut: Pin<&mut (impl Future<Output = T> + ?Sized)>) -> Poll<T> {
    let mut cx = Context::from_waker(Waker::noop());
    fut.poll(&mut cx)
}

thread_local! {
    static HOLDS_SIM: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Held while a [`Cluster`] lives.
struct SimGuard(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl Drop for SimGuard {
    fn drop(&mut self) {
        HOLDS_SIM.with(|h| h.set(false));
    }
}

/// Simulations in one process run one at a time.
///
/// Two simulations running at once on different threads (as `cargo test` runs tests)
/// were seen to perturb each other: the same seed then no longer gave the same run,
/// although each is deterministic on its own. The shared state lies somewhere below
/// les in the runtime stack; until it is found, clusters are serialised, which keeps
/// every seed reproducible whatever else the test binary runs. A thread that builds a
/// second cluster while holding one would wait forever, so it panics instead.
fn one_at_a_time() -> SimGuard {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    assert!(
        !HOLDS_SIM.with(|h| h.get()),
        "les::sim: this thread already has a live Cluster; drop it before building another"
    );
    let guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    HOLDS_SIM.with(|h| h.set(true));
    SimGuard(guard)
}
