//! The runtime: a running les node, and the handle its owner holds.
//!
//! [`NodeBuilder::start`] binds the HTTP listener (failing at once if the port is taken),
//! then spawns three kinds of task, all tracked so shutdown can wait for every one:
//!
//! - the **protocol loop**, the only owner of the [`Core`]: it turns timer ticks,
//!   answers from peers and notices from the HTTP server into events, feeds them to the
//!   core, and carries out the actions (spawning one task per peer request);
//! - the **HTTP server** ([`crate::api`]);
//! - the **hook dispatcher** ([`crate::hooks`]), which calls `LeaderChanged` handlers
//!   one change at a time so a slow handler never stalls gossip;
//! - the **health check** task, if a [`HealthCheck`] was given: it runs the check every
//!   interval and tells the loop when the result changes (an unhealthy node is not
//!   eligible). The first check runs in [`NodeBuilder::start`], before any gossip, so a
//!   node that starts unhealthy never leads, not even for a moment.
//!
//! Shutdown is explicit: [`NodeHandle::leave`] makes the loop give up leadership (the
//! handlers hear it first, while peers still see this node as leader), then publish
//! that it is leaving and announce the leave to every member, stop the server and the
//! in-flight requests, and return once every task has ended.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, Api, Inbound};
use crate::client::{ContactError, PeerClient};
use crate::config::{defaults, Config, ConfigError};
use crate::core::{Action, Core, Event, Failure, LeaderChange};
use crate::hooks::{self, Dispatch, DynHealthCheck, Handlers, HealthCheck, LeaderChanged};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::net::{Network, SystemClock, TokioNetwork, WallClock};
use crate::wire::{Diag, PeerState};

/// Why a node could not start, or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the node has stopped")]
    Stopped,
}

/// The leader as this node currently sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader's address, or `None` while there is none.
    pub leader: Option<String>,
    /// This node's term (the leader's term once the node has heard from it).
    pub term: u64,
    /// Whether this node is the leader.
    pub is_self: bool,
}

/// Sees every action the core returns, before the runtime carries it out. Crate-internal:
/// the simulator uses it as ground truth for membership changes.
pub(crate) type ActionObserver = Arc<dyn Fn(&Action) + Send + Sync>;

/// Entry point for starting nodes.
pub struct Node;

impl Node {
    /// Start a node on the real network with default settings for hooks.
    pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
        Node::builder(config).start().await
    }

    /// A builder for anything beyond the defaults: handlers, network, clock, seed.
    pub fn builder(config: Config) -> NodeBuilder<TokioNetwork> {
        NodeBuilder {
            config,
            net: TokioNetwork,
            clock: Arc::new(SystemClock),
            handlers: Vec::new(),
            rng_seed: None,
            step_down_cooldown: defaults::STEP_DOWN_COOLDOWN,
            hook_timeout: defaults::HOOK_TIMEOUT,
            health: None,
            observer: None,
        }
    }
}

/// Configures and starts a node. Obtain with [`Node::builder`].
pub struct NodeBuilder<N: Network> {
    config: Config,
    net: N,
    clock: Arc<dyn WallClock>,
    handlers: Handlers,
    rng_seed: Option<u64>,
    step_down_cooldown: Duration,
    hook_timeout: Duration,
    health: Option<(Arc<dyn DynHealthCheck>, Duration)>,
    observer: Option<ActionObserver>,
}

impl<N: Network> NodeBuilder<N> {
    /// Run over another network (the simulator's).
    pub fn network<M: Network>(self, net: M) -> NodeBuilder<M> {
        NodeBuilder {
            config: self.config,
            net,
            clock: self.clock,
            handlers: self.handlers,
            rng_seed: self.rng_seed,
            step_down_cooldown: self.step_down_cooldown,
            hook_timeout: self.hook_timeout,
            health: self.health,
            observer: self.observer,
        }
    }

    /// Take the start time (seniority) from another wall clock.
    pub fn clock(mut self, clock: impl WallClock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Add a handler called on every leader change (see [`crate::hooks`]).
    pub fn on_leader_change(mut self, handler: impl LeaderChanged) -> Self {
        self.handlers.push(hooks::erase(handler));
        self
    }

    /// Seed for the core's random choices; default: derived from the start time.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.rng_seed = Some(seed);
        self
    }

    /// How long a node whose handler failed to take up leadership stays ineligible, so
    /// that the next most senior node leads. Once it is over the node is eligible again
    /// and, being the most senior, takes leadership back. Default 30 s.
    pub fn step_down_cooldown(mut self, cooldown: Duration) -> Self {
        self.step_down_cooldown = cooldown;
        self
    }

    /// Longest a single handler call, or a health check, may run before it is
    /// cancelled and counts as failed. Also how long a graceful leave waits for the
    /// handlers to release leadership. Default 10 s.
    pub fn hook_timeout(mut self, timeout: Duration) -> Self {
        self.hook_timeout = timeout;
        self
    }

    /// Run `check` before the node starts gossiping and then every `interval`: while it
    /// fails the node is not eligible (a leader steps down). See [`crate::hooks`].
    pub fn health_check(mut self, check: impl HealthCheck, interval: Duration) -> Self {
        self.health = Some((hooks::erase_check(check), interval));
        self
    }

    /// Call `observer` with every action of the core (the simulator's ground truth).
    #[cfg(feature = "sim")]
    pub(crate) fn observe(mut self, observer: ActionObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Validate the configuration, bind the listener and start the node's tasks.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        let cfg = self.config;
        cfg.validate()?;
        let listener = self
            .net
            .bind(cfg.bind)
            .await
            .map_err(|source| NodeError::Bind {
                addr: cfg.bind,
                source,
            })?;
        let local_addr = self
            .net
            .local_addr(&listener)
            .map_err(|source| NodeError::Bind {
                addr: cfg.bind,
                source,
            })?;
        // Know our health before anyone can hear from us: a node that gossiped
        // `eligible` first and failed its check a moment later would make the cluster
        // elect twice.
        let healthy = match &self.health {
            Some((check, _)) => health_result(check, self.hook_timeout).await,
            None => Ok(()),
        };
        let start_time = self.clock.now_epoch();
        let seed = self.rng_seed.unwrap_or(start_time.to_bits());
        let mut core = Core::new(
            cfg.core_config(),
            cfg.advertise_addr.clone(),
            start_time,
            &cfg.seeds,
            seed,
        );
        if let Err(why) = &healthy {
            tracing::warn!(reason = %why, "health check failing at start: not eligible");
            // A core that has heard from nobody yet has nothing to do about it (no
            // leader to drop); its state is published below.
            let _ = core.handle(Duration::ZERO, Event::SetHealth { healthy: false });
        }

        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let server_stop = CancellationToken::new();
        let requests_stop = CancellationToken::new();
        let (state_tx, state_rx) = watch::channel(encode_state(&core.state()));
        let (leader_tx, leader_rx) = watch::channel(LeaderView {
            leader: None,
            term: 0,
            is_self: false,
        });
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        let leaving = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(Metrics::default());
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let client = PeerClient::with_loss_reports(
            self.net.clone(),
            cfg.request_timeout,
            metrics.clone(),
            lost_tx,
        );

        tracker.spawn(hooks::dispatch(
            self.handlers,
            dispatch_rx,
            failed_tx,
            self.hook_timeout,
            cfg.advertise_addr.clone(),
        ));
        // Without a health check the sender is dropped and the loop never hears from it.
        let (health_tx, health_rx) = mpsc::channel(4);
        if let Some((check, interval)) = self.health {
            tracker.spawn(health_loop(
                check,
                interval,
                self.hook_timeout,
                health_tx,
                stop.clone(),
            ));
        }
        let api = Arc::new(Api {
            state_json: state_rx,
            leaving: leaving.clone(),
            inbound: inbound_tx.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
        });
        tracker.spawn(api::serve(
            self.net.clone(),
            listener,
            api,
            server_stop.clone(),
            tracker.clone(),
        ));

        tracing::info!(
            addr = %cfg.advertise_addr,
            listen = %local_addr,
            start_time,
            seeds = ?cfg.seeds,
            interval = ?cfg.interval,
            "les node started"
        );
        let protocol = Protocol {
            me: cfg.advertise_addr.clone(),
            core,
            client,
            clock: self.clock,
            origin: Instant::now(),
            results_tx,
            dispatch_tx,
            state_tx,
            leader_tx,
            leaving,
            tracker: tracker.clone(),
            requests_stop: requests_stop.clone(),
            leaves: Vec::new(),
            warned: HashSet::new(),
            metrics: metrics.clone(),
            healthy: healthy.is_ok(),
            hold_state: false,
            observer: self.observer,
        };
        tracker.spawn(protocol.run(
            Channels {
                health: health_rx,
                inbound: inbound_rx,
                results: results_rx,
                failed: failed_rx,
                lost: lost_rx,
            },
            Timing {
                interval: cfg.interval,
                cooldown: self.step_down_cooldown,
                hook_timeout: self.hook_timeout,
                request_timeout: cfg.request_timeout,
            },
            stop.clone(),
            server_stop,
        ));
        tracker.close();
        Ok(NodeHandle {
            addr: cfg.advertise_addr,
            local_addr,
            leader_rx,
            inbound: inbound_tx,
            stop,
            tracker,
            metrics,
        })
    }
}

/// A running node. Dropping the handle does not stop the node; call [`NodeHandle::leave`].
#[derive(Clone)]
pub struct NodeHandle {
    addr: String,
    local_addr: SocketAddr,
    leader_rx: watch::Receiver<LeaderView>,
    inbound: mpsc::Sender<Inbound>,
    stop: CancellationToken,
    tracker: TaskTracker,
    metrics: Arc<Metrics>,
}

impl NodeHandle {
    /// Request, byte and leadership counters (also served on `GET /metrics`).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// This node's advertised address (its identity).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The address the HTTP API actually listens on (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The current leader, if any.
    pub fn leader(&self) -> Option<String> {
        self.leader_rx.borrow().leader.clone()
    }

    /// Whether this node currently leads.
    pub fn is_leader(&self) -> bool {
        self.leader_rx.borrow().is_self
    }

    /// A receiver that always holds the latest [`LeaderView`]; `changed().await` wakes
    /// on every change of leader or term.
    pub fn subscribe(&self) -> watch::Receiver<LeaderView> {
        self.leader_rx.clone()
    }

    /// The `/diag/` document.
    pub async fn diag(&self) -> Result<Diag, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inbound
            .send(Inbound::Diag(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Leave gracefully: give up leadership (handlers are told first), announce the
    /// leave to every member, stop serving, and return once every task has ended.
    pub async fn leave(&self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }

    /// Wait until the node has stopped (after [`NodeHandle::leave`] from elsewhere).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

fn encode_state(state: &PeerState) -> Bytes {
    // Serializing a plain struct of strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(state).unwrap_or_default())
}

/// A finished peer request, back to the loop.
enum Outcome {
    State { from: String, state: PeerState },
    Failed { addr: String, error: ContactError },
    Probe { target: String, reachable: bool },
}

struct Channels {
    /// Health check results (never yields without a health check).
    health: mpsc::Receiver<Result<(), String>>,
    inbound: mpsc::Receiver<Inbound>,
    results: mpsc::UnboundedReceiver<Outcome>,
    failed: mpsc::UnboundedReceiver<LeaderChange>,
    /// Peers whose pooled connection was closed by the other side.
    lost: mpsc::UnboundedReceiver<String>,
}

/// Run the health check once, a panic or a timeout counting as a failure.
async fn health_result(check: &Arc<dyn DynHealthCheck>, limit: Duration) -> Result<(), String> {
    hooks::guarded(check.clone().check(), limit)
        .await
        .map_err(|e| e.to_string())
}

/// Run the health check every `interval` (the first run was in `start`) and send each
/// result to the loop, until `stop`.
async fn health_loop(
    check: Arc<dyn DynHealthCheck>,
    interval: Duration,
    limit: Duration,
    tx: mpsc::Sender<Result<(), String>>,
    stop: CancellationToken,
) {
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = async {
                tokio::time::sleep(interval).await;
                health_result(&check, limit).await
            } => r,
        };
        if tx.send(result).await.is_err() {
            return;
        }
    }
}

struct Timing {
    interval: Duration,
    cooldown: Duration,
    hook_timeout: Duration,
    request_timeout: Duration,
}

/// The protocol loop: owns the core, executes its actions.
struct Protocol<N: Network> {
    me: String,
    core: Core,
    client: PeerClient<N>,
    clock: Arc<dyn WallClock>,
    origin: Instant,
    results_tx: mpsc::UnboundedSender<Outcome>,
    dispatch_tx: mpsc::UnboundedSender<Dispatch>,
    state_tx: watch::Sender<Bytes>,
    leader_tx: watch::Sender<LeaderView>,
    leaving: Arc<AtomicBool>,
    tracker: TaskTracker,
    requests_stop: CancellationToken,
    /// Leave notices to send once handlers have released leadership.
    leaves: Vec<String>,
    /// Peers already warned about for a bad answer (log once, not every round).
    warned: HashSet<String>,
    metrics: Arc<Metrics>,
    /// Last health check result fed to the core.
    healthy: bool,
    /// While set, changes of the state document are not published (peers keep seeing
    /// the previous one): during a graceful leave, until the handlers have released
    /// leadership.
    hold_state: bool,
    observer: Option<ActionObserver>,
}

impl<N: Network> Protocol<N> {
    async fn run(
        mut self,
        mut ch: Channels,
        timing: Timing,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) {
        let mut ticker = tokio::time::interval(timing.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let event = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(outcome) = ch.results.recv() => self.outcome_event(outcome),
                Some(addr) = ch.lost.recv() => Event::ConnectionLost { addr },
                Some(change) = ch.failed.recv() => {
                    if self.core.leader() != Some(self.me.as_str()) {
                        continue;
                    }
                    tracing::warn!(term = change.term, cooldown = ?timing.cooldown,
                        "could not take up leadership; stepping down");
                    Event::StepDown { cooldown: timing.cooldown }
                }
                Some(result) = ch.health.recv() => {
                    let healthy = result.is_ok();
                    if healthy == self.healthy {
                        continue;
                    }
                    self.healthy = healthy;
                    match result {
                        Ok(()) => tracing::info!("health check passing again: eligible"),
                        Err(why) => tracing::warn!(reason = %why,
                            "health check failing: not eligible (stepping down if leading)"),
                    }
                    Event::SetHealth { healthy }
                }
                Some(msg) = ch.inbound.recv() => match msg {
                    Inbound::Announced(addr) => Event::Announced { addr },
                    Inbound::LeaveReceived(addr) => Event::LeaveReceived { addr },
                    Inbound::Diag(reply) => {
                        let _ = reply.send(self.core.diag(self.origin.elapsed()));
                        continue;
                    }
                },
                _ = ticker.tick() => {
                    tracing::debug!(members = self.core.member_count(), leader = ?self.core.leader(), "round");
                    Event::Tick { wall: self.clock.now_epoch() }
                }
            };
            self.step(event);
        }

        // Graceful leave: release leadership through the handlers first, while peers
        // still see the state we last published (leader, eligible) and elect no one
        // else; then publish that we are leaving and tell the members; then stop serving.
        self.hold_state = true;
        self.step(Event::Leave);
        let (flushed_tx, flushed_rx) = oneshot::channel();
        if self.dispatch_tx.send(Dispatch::Flush(flushed_tx)).is_ok() {
            let _ = tokio::time::timeout(timing.hook_timeout, flushed_rx).await;
        }
        self.hold_state = false;
        self.publish_state();
        let mut sends = JoinSet::new();
        for addr in std::mem::take(&mut self.leaves) {
            let client = self.client.clone();
            let me = self.me.clone();
            sends.spawn(async move {
                if let Err(e) = client.send_leave(&addr, &me).await {
                    tracing::debug!(peer = %addr, error = %e, "leave notice not delivered");
                }
            });
        }
        let _ = tokio::time::timeout(timing.request_timeout, async {
            while sends.join_next().await.is_some() {}
        })
        .await;
        sends.abort_all();
        self.requests_stop.cancel();
        server_stop.cancel();
        tracing::info!(addr = %self.me, "left the cluster");
        // Dropping `self` closes the dispatcher's queue, which ends its task.
    }

    fn outcome_event(&mut self, outcome: Outcome) -> Event {
        match outcome {
            Outcome::State { from, state } => {
                self.warned.remove(&from);
                Event::StateReceived { from, state }
            }
            Outcome::Failed { addr, error } => {
                let failure = error.failure();
                // A leaving node answers 503 on purpose: expected, not worth a warning.
                let leaving = matches!(
                    error,
                    ContactError::Status(hyper::StatusCode::SERVICE_UNAVAILABLE)
                );
                if failure == Failure::BadResponse && !leaving {
                    if self.warned.len() < 1024 && self.warned.insert(addr.clone()) {
                        tracing::warn!(peer = %addr, error = %error, "peer sent an unusable answer");
                    }
                } else {
                    tracing::debug!(peer = %addr, error = %error, "contact failed");
                }
                Event::ContactFailed { addr, failure }
            }
            Outcome::Probe { target, reachable } => Event::ProbeAnswered { target, reachable },
        }
    }

    fn step(&mut self, event: Event) {
        let actions = self.core.handle(self.origin.elapsed(), event);
        for action in actions {
            if let Some(observe) = &self.observer {
                observe(&action);
            }
            match action {
                Action::FetchState { addr } => self.spawn_fetch(addr),
                Action::Probe { target, via } => self.spawn_probe(target, via),
                Action::SendLeave { addr } => self.leaves.push(addr),
                Action::LeaderChanged(change) => {
                    tracing::info!(
                        previous = change.previous.as_deref().unwrap_or("none"),
                        leader = change.current.as_deref().unwrap_or("none"),
                        term = change.term,
                        is_self = change.gained(),
                        "leader changed"
                    );
                    Metrics::add(&self.metrics.leader_changes, 1);
                    let _ = self.dispatch_tx.send(Dispatch::Change(change));
                }
                Action::MemberAdded { addr } => tracing::info!(peer = %addr, "member added"),
                Action::MemberRemoved { addr, reason } => {
                    tracing::info!(peer = %addr, reason = %reason, "member removed")
                }
                Action::StartTimeChanged { .. } => {}
                Action::StateChanged if self.hold_state => {}
                Action::StateChanged => self.publish_state(),
            }
        }
        Metrics::set(&self.metrics.members, self.core.member_count() as u64);
        Metrics::set(&self.metrics.term, self.core.term());
        Metrics::set(
            &self.metrics.is_leader,
            u64::from(self.core.leader() == Some(self.me.as_str())),
        );
        let view = LeaderView {
            leader: self.core.leader().map(str::to_string),
            term: self.core.term(),
            is_self: self.core.leader() == Some(self.me.as_str()),
        };
        self.leader_tx.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    fn publish_state(&self) {
        let state = self.core.state();
        self.leaving.store(state.leaving, Ordering::Relaxed);
        self.state_tx.send_replace(encode_state(&state));
    }

    fn spawn_fetch(&self, addr: String) {
        let client = self.client.clone();
        let tx = self.results_tx.clone();
        let me = self.me.clone();
        let stop = self.requests_stop.clone();
        self.tracker.spawn(async move {
            let outcome = tokio::select! {
                _ = stop.cancelled() => return,
                r = client.fetch_state(&addr, &me) => match r {
                    Ok(state) => Outcome::State { from: addr, state },
                    Err(error) => Outcome::Failed { addr, error },
                },
            };
            let _ = tx.send(outcome);
        });
    }

    fn spawn_probe(&self, target: String, via: String) {
        let client = self.client.clone();
        let tx = self.results_tx.clone();
        let stop = self.requests_stop.clone();
        self.tracker.spawn(async move {
            let reachable = tokio::select! {
                _ = stop.cancelled() => return,
                r = client.probe(&via, &target) => r.unwrap_or(false),
            };
            let _ = tx.send(Outcome::Probe { target, reachable });
        });
    }
}
