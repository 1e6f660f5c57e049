//! [`Cluster`]: real les nodes on simulated hosts, and the controls and observers a test
//! uses to drive them.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::Settings;
use crate::config::Config;
use crate::node::{NodeError, NodeHandle};
use crate::sim::clock::{relative_ms, SimClock, BASE_EPOCH};
use crate::sim::host::{HostSoftware, Incarnation};
use crate::sim::net::Shared;
use crate::sim::snapshot::{NodeStatus, NodeView, Snapshot};
use crate::sim::trace::{LeaderChangeRecord, TraceEntry, TraceEvent};
use crate::wire::Diag;

mod builder;
mod network;
mod operator;

pub use builder::{ClusterBuilder, NodeSpec};

/// Environment variable that overrides every [`ClusterBuilder::seed`], to replay a run.
pub const SEED_ENV: &str = "LES_SIM_SEED";

/// The port every simulated node listens on; node `n1` is reached at `n1:4000`.
pub const PORT: u16 = 4000;

/// Longest a graceful stop may take before the simulation calls it a bug. The leave
/// waits for handlers (10 s at most) and for the goodbyes (one request timeout).
const STOP_LIMIT: Duration = Duration::from_secs(30);

/// Most ticks spent waiting for nodes to answer a `/diag/` request.
const DIAG_TICKS: usize = 100;

struct Slot {
    index: usize,
    name: String,
    addr: String,
    clock: SimClock,
    clock_rate: f64,
    /// Runs behind a pause gate ([`NodeSpec::pausable`]).
    pausable: bool,
    config: Config,
    /// Known to turmoil (started at least once).
    registered: bool,
    status: NodeStatus,
    /// How many times [`Cluster::start`] started it.
    starts: Rc<Cell<u32>>,
    /// Filled by the host software, one per run.
    incarnations: Rc<RefCell<Vec<Incarnation>>>,
    /// The pause gate every incarnation of the node watches: `true` while paused.
    pause: Rc<watch::Sender<bool>>,
    /// The keyring settings every incarnation starts with ([`Cluster::reload_auth`]).
    auth: Rc<RefCell<Settings>>,
}

/// A simulated cluster of real les nodes. See the [module docs](crate::sim).
///
/// Controls panic when given a name that is not a node of the cluster, or an impossible
/// transition (starting a running node): those are mistakes in the test.
pub struct Cluster {
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
        ClusterBuilder::new()
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
        if Self::runs(slot.status) {
            panic!("les::sim: cannot start {name}: it is running");
        }
        slot.starts.set(slot.starts.get() + 1);
        slot.pause.send_replace(false);
        if slot.registered {
            self.sim.bounce(name);
        } else {
            let software = Rc::new(HostSoftware {
                name: slot.name.clone(),
                index: slot.index,
                seed: self.seed,
                config: slot.config.clone(),
                clock: slot.clock,
                clock_rate: slot.clock_rate,
                pausable: slot.pausable,
                pause: slot.pause.clone(),
                shared: self.shared.clone(),
                starts: slot.starts.clone(),
                incarnations: slot.incarnations.clone(),
                auth: slot.auth.clone(),
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
        // Its connections close in a fixed order, not in tokio's: see `Closes`.
        self.shared.closes().begin_crash(name);
        self.sim.crash(name);
        drop(self.shared.closes().end_crash());
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

    /// Freeze node `name`, as `kill -STOP` does: while paused its protocol loop processes
    /// nothing (no rounds, no answers read, no leases or promises checked), its HTTP
    /// server answers nothing (requests to it wait, as on a stopped process whose kernel
    /// still accepts connections, until their callers' deadlines) and no hook call
    /// starts. Its clocks keep running, so on [`Cluster::resume`] it finds that time has
    /// passed, as a real process does after SIGCONT. A paused node is not
    /// [`Cluster::up`]; it can be crashed (and restarted), not stopped.
    ///
    /// # Panics
    /// If the node is not up, or was not built [`NodeSpec::pausable`].
    #[track_caller]
    pub fn pause(&mut self, name: &str) {
        self.set_paused(name, true);
    }

    /// Let a paused node run again (SIGCONT): it carries on from where it was frozen.
    ///
    /// # Panics
    /// If the node is not paused.
    #[track_caller]
    pub fn resume(&mut self, name: &str) {
        self.set_paused(name, false);
    }

    #[track_caller]
    fn set_paused(&mut self, name: &str, paused: bool) {
        let i = self.index(name);
        let (from, to) = if paused {
            (NodeStatus::Up, NodeStatus::Paused)
        } else {
            (NodeStatus::Paused, NodeStatus::Up)
        };
        if !self.nodes[i].pausable {
            panic!("les::sim: cannot pause {name}: build it with NodeSpec::pausable");
        }
        if self.nodes[i].status != from {
            let verb = if paused { "pause" } else { "resume" };
            panic!("les::sim: cannot {verb} {name}: it is not {from}");
        }
        self.nodes[i].pause.send_replace(paused);
        self.nodes[i].status = to;
        let node = name.to_string();
        self.journal(if paused {
            TraceEvent::Paused { node }
        } else {
            TraceEvent::Resumed { node }
        });
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

    /// Whether the node's software is running (up, paused or leaving).
    #[track_caller]
    pub fn is_running(&self, name: &str) -> bool {
        Self::runs(self.status(name))
    }

    fn runs(status: NodeStatus) -> bool {
        matches!(
            status,
            NodeStatus::Up | NodeStatus::Paused | NodeStatus::Leaving
        )
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

    /// Replace node `name`'s keyring settings, as a SIGHUP does: the running node now,
    /// and every later restart.
    #[track_caller]
    pub fn reload_auth(&mut self, name: &str, settings: Settings) {
        let i = self.index(name);
        *self.nodes[i].auth.borrow_mut() = settings.clone();
        if let Some(handle) = self.live_handle(i) {
            handle.reload_auth(settings);
        }
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

    /// Every span of time during which a node acted as leader, in order of start: see
    /// [`crate::sim::ActingSpan`].
    pub fn acting_spans(&self) -> Vec<crate::sim::ActingSpan> {
        crate::sim::acting_spans(&self.trace())
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
