//! The runtime: a running les node, and the handle its owner holds.
//!
//! [`NodeBuilder::start`] binds the HTTP listener (failing at once if the port is taken),
//! then spawns four kinds of task, all tracked so shutdown can wait for every one:
//!
//! - the **protocol loop** (`protocol`), the only owner of the [`Core`]: it turns
//!   timer ticks, answers from peers and notices from the HTTP server into events,
//!   feeds them to the core, and carries out the actions (spawning one task per peer
//!   request);
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

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::listen::{self, Slots};
use crate::api::{Api, Inbound, Listener, PublishedCell, RefusalLog};
use crate::auth::{Auth, Settings};
use crate::backend::driver::StoreLinks;
use crate::backend::{Backend, Election, Inputs};
use crate::client::{ClientLinks, PeerClient};
use crate::config::{defaults, Config, ConfigError};
use crate::core::{Action, Core, Event, LeaderChange};
use crate::hooks::{self, Dispatch, DynHealthCheck, Handlers, HealthCheck, LeaderChanged};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::net::{Network, PauseGate, SystemClock, Timebase, TokioNetwork, WallClock};
use crate::wire::Diag;

mod protocol;
mod relinquish;
mod startup;
mod store;

pub(crate) use protocol::{announce_change, encode_state};
use protocol::{Channels, Links, Protocol, Timing};

/// Why a node could not start, or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration did not validate.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The HTTP API could not listen on its address (a port in use, say).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address it tried to bind.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The node has already stopped, so it cannot answer.
    #[error("the node has stopped")]
    Stopped,
}

/// The leader as this node currently sees it; the default is "no leader yet".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderView {
    /// The leader's address, or `None` while there is none.
    pub leader: Option<String>,
    /// This node's term (the leader's term once the node has heard from it).
    pub term: u64,
    /// Whether this node is the leader.
    pub is_self: bool,
    /// Quorum mode, while this node acts as leader: when its lease runs out unless a
    /// quorum renews it. `None` outside quorum mode, and while not acting.
    pub lease_until: Option<Instant>,
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
            clock_rate: 1.0,
            gate: PauseGate::default(),
            auth: Settings::default(),
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
    /// Rate of the node's monotonic clock (the simulator's fast or slow machines).
    clock_rate: f64,
    gate: PauseGate,
    auth: Settings,
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
            clock_rate: self.clock_rate,
            gate: self.gate,
            auth: self.auth,
        }
    }

    /// Authenticate every request and answer between nodes with `settings`' keyring
    /// (see [`crate::auth`]); replace them later with [`NodeHandle::reload_auth`].
    pub fn auth(mut self, settings: Settings) -> Self {
        self.auth = settings;
        self
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

    /// Run the node's monotonic clock at `rate` times real time (a machine whose clock
    /// runs fast or slow): its timers and the times the core sees are scaled.
    #[cfg(feature = "sim")]
    #[allow(dead_code, reason = "for les::sim, which does not model this yet")]
    pub(crate) fn clock_rate(mut self, rate: f64) -> Self {
        self.clock_rate = rate;
        self
    }

    /// Pause the node while `gate` holds `true`, as SIGSTOP would: the protocol loop
    /// handles no event, the server answers no request (they wait; connections are
    /// still accepted, as by a stopped process's kernel) and the hook dispatcher
    /// starts no call. When it turns `false` everything resumes and the loop sees the
    /// time that passed.
    #[cfg(feature = "sim")]
    #[allow(dead_code, reason = "for les::sim, which does not model this yet")]
    pub(crate) fn pause_gate(mut self, gate: watch::Receiver<bool>) -> Self {
        self.gate = PauseGate::new(gate);
        self
    }

    /// Validate the configuration, bind the listener and start the node's tasks.
    pub async fn start(self) -> Result<NodeHandle, NodeError> {
        self.config.validate()?;
        let (listener, local_addr) = self.bind(self.config.bind).await?;
        let admin = match self.config.admin_bind {
            Some(addr) => Some(self.bind(addr).await?),
            None => None,
        };
        // Know our health before anyone can hear from us: a node that gossiped
        // `eligible` first and failed its check a moment later would make the cluster
        // elect twice.
        let healthy = match &self.health {
            Some((check, _)) => health_result(check, self.hook_timeout).await,
            None => Ok(()),
        };
        let start_time = self.clock.now_epoch();
        let core = self.new_core(start_time, &healthy);
        let cfg = &self.config;
        tracing::info!(
            addr = %cfg.advertise_addr,
            listen = %local_addr,
            start_time,
            seeds = ?cfg.seeds,
            interval = ?cfg.interval,
            "les node started"
        );
        if let Backend::Postgres(url) = &cfg.backend {
            store::log_setting(cfg, url);
        } else {
            startup::log_quorum_setting(cfg);
        }
        startup::log_auth_setting(cfg, &self.auth);
        Ok(self.spawn(core, healthy.is_ok(), (listener, local_addr), admin))
    }

    /// Bind an HTTP listener; also returns the address it got (resolves port 0).
    async fn bind(&self, addr: SocketAddr) -> Result<(N::Listener, SocketAddr), NodeError> {
        let error = |source| NodeError::Bind { addr, source };
        let listener = self.net.bind(addr).await.map_err(error)?;
        let local_addr = self.net.local_addr(&listener).map_err(error)?;
        Ok((listener, local_addr))
    }

    /// The core, told about a failing first health check.
    fn new_core(&self, start_time: f64, healthy: &Result<(), String>) -> Core {
        let cfg = &self.config;
        let seed = self.rng_seed.unwrap_or(start_time.to_bits());
        let mut core = Core::new(
            cfg.core_config(),
            cfg.advertise_addr.clone(),
            start_time,
            &cfg.seeds,
            seed,
        );
        if let Err(why) = healthy {
            tracing::warn!(reason = %why, "health check failing at start: not eligible");
            // A core that has heard from nobody yet has nothing to do about it (no
            // leader to drop); its state is published when the server starts.
            let _ = core.handle(Duration::ZERO, Event::SetHealth { healthy: false });
        }
        core
    }

    /// The loop's timings.
    fn timing(&self) -> Timing {
        Timing {
            interval: self.config.interval,
            cooldown: self.step_down_cooldown,
            hook_timeout: self.hook_timeout,
            request_timeout: self.config.request_timeout,
        }
    }

    /// Spawn the hook dispatcher (taking the handlers) and, if there is a check, the
    /// health loop (taking it). Returns the dispatcher's queue, its reports of failed
    /// take-overs and the health results; without a check that receiver never yields.
    fn spawn_hooks(
        &mut self,
        tracker: &TaskTracker,
        stop: &CancellationToken,
    ) -> (
        mpsc::UnboundedSender<Dispatch>,
        mpsc::UnboundedReceiver<LeaderChange>,
        mpsc::Receiver<Result<(), String>>,
    ) {
        let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel();
        let (failed_tx, failed_rx) = mpsc::unbounded_channel();
        tracker.spawn(hooks::dispatch(
            std::mem::take(&mut self.handlers),
            dispatch_rx,
            failed_tx,
            self.hook_timeout,
            self.config.advertise_addr.clone(),
        ));
        #[cfg(feature = "sim")]
        let dispatch_tx = self.gate.forward(dispatch_tx, tracker);
        let (health_tx, health_rx) = mpsc::channel(4);
        if let Some((check, interval)) = self.health.take() {
            let limit = self.hook_timeout;
            tracker.spawn(health_loop(check, interval, limit, health_tx, stop.clone()));
        }
        (dispatch_tx, failed_rx, health_rx)
    }

    /// Spawn the node's tasks around `core` (the hook dispatcher, the health check,
    /// the HTTP server, the protocol loop), all on one tracker so a leave can wait for
    /// every one.
    fn spawn(
        mut self,
        core: Core,
        healthy: bool,
        (listener, local_addr): (N::Listener, SocketAddr),
        admin: Option<(N::Listener, SocketAddr)>,
    ) -> NodeHandle {
        let timing = self.timing();
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let server_stop = CancellationToken::new();
        let (dispatch_tx, failed_rx, health_rx) = self.spawn_hooks(&tracker, &stop);
        let cfg = self.config;
        let metrics = Arc::new(Metrics::default());
        let (lost_tx, lost_rx) = mpsc::unbounded_channel();
        let auth = Arc::new(Auth::new(
            cfg.cluster.clone().unwrap_or_default(),
            std::mem::take(&mut self.auth),
        ));
        let client = PeerClient::for_node(
            self.net.clone(),
            cfg.request_timeout,
            ClientLinks {
                metrics: metrics.clone(),
                lost: Some(lost_tx),
                auth: auth.clone(),
                clock: self.clock.clone(),
            },
        );
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let (results_tx, results_rx) = mpsc::unbounded_channel();
        let inputs = Inputs {
            health: health_rx,
            inbound: inbound_rx,
            failed: failed_rx,
        };

        let timebase = Timebase::new(self.clock_rate);
        let state = core.state();
        let published = PublishedCell::new(encode_state(&state), state.leader);
        let (leader_tx, leader_rx) = watch::channel(LeaderView::default());
        let leaving = Arc::new(AtomicBool::new(false));
        let api = Arc::new(Api {
            published: published.clone(),
            timebase,
            gate: self.gate.clone(),
            leaving: leaving.clone(),
            inbound: inbound_tx.clone(),
            client: client.clone(),
            metrics: metrics.clone(),
            auth: auth.clone(),
            clock: self.clock.clone(),
            admin_elsewhere: admin.is_some(),
            refusals: RefusalLog::default(),
        });
        // The admin listener has its own (small) cap, so a flood of the gossip port
        // does not lock out monitoring, nor the other way round.
        let mut listeners = vec![(listener, Listener::Gossip, cfg.max_connections)];
        let admin_addr = admin.map(|(l, addr)| {
            listeners.push((l, Listener::Admin, ADMIN_MAX_CONNECTIONS));
            addr
        });
        for (l, kind, cap) in listeners {
            tracker.spawn(listen::serve(
                self.net.clone(),
                l,
                kind,
                api.clone(),
                Slots::new(cap),
                server_stop.clone(),
                tracker.clone(),
            ));
        }

        // The relinquish schedule asks whichever loop runs, as POST /step-down does.
        let schedule = relinquish::Links {
            inbound: inbound_tx.clone(),
            leader: leader_rx.clone(),
            clock: self.clock.clone(),
            stop: stop.clone(),
        };
        relinquish::spawn(&tracker, &cfg, schedule);
        if let Backend::Postgres(url) = &cfg.backend {
            let links = StoreLinks {
                dispatch_tx,
                leader_tx,
                published,
                metrics: metrics.clone(),
                leaving,
                timebase,
            };
            let election = store::store_loop(&cfg, url, healthy, links, &timing);
            tracker.spawn(election.run(inputs, stop.clone(), server_stop));
        } else {
            let links = Links {
                me: cfg.advertise_addr.clone(),
                client,
                clock: self.clock,
                timebase,
                gate: self.gate,
                results_tx,
                dispatch_tx,
                published,
                leader_tx,
                leaving,
                tracker: tracker.clone(),
                requests_stop: CancellationToken::new(),
                metrics: metrics.clone(),
                observer: self.observer,
            };
            let channels = Channels {
                results: results_rx,
                lost: lost_rx,
            };
            let election = Protocol::new(core, healthy, links, channels, timing);
            tracker.spawn(election.run(inputs, stop.clone(), server_stop));
        }
        tracker.close();
        NodeHandle {
            addr: cfg.advertise_addr,
            local_addr,
            admin_addr,
            auth,
            leader_rx,
            inbound: inbound_tx,
            stop,
            tracker,
            metrics,
        }
    }
}

/// A running node. Dropping the handle does not stop the node; call [`NodeHandle::leave`].
#[derive(Clone)]
pub struct NodeHandle {
    addr: String,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    auth: Arc<Auth>,
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

    /// The address the admin listener is bound to, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Replace the keyring and the rollout switch (a SIGHUP reload). Requests already
    /// in flight finish under the old settings; the next ones use the new. Nothing else
    /// changes: no leader change, no membership change.
    pub fn reload_auth(&self, settings: Settings) {
        startup::log_auth_setting_change(&settings);
        self.auth.install(settings);
    }

    /// The current leader, if any.
    pub fn leader(&self) -> Option<String> {
        self.leader_rx.borrow().leader.clone()
    }

    /// Whether this node currently leads and may act as leader. In quorum mode that
    /// also needs its lease to be running, checked against the clock here, so a loop
    /// that is stuck or paused can never extend leadership past the lease a quorum
    /// granted.
    pub fn is_leader(&self) -> bool {
        let view = self.leader_rx.borrow();
        view.is_self && view.lease_until.is_none_or(|t| Instant::now() < t)
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

/// Connections the admin listener keeps open (monitoring needs few).
const ADMIN_MAX_CONNECTIONS: usize = 64;

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
            biased;
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
