//! The protocol loop: the only owner of the [`Core`].
//!
//! It turns timer ticks, answers from peers and notices from the HTTP server into
//! events, feeds them to the core one at a time, and carries out the actions: one task
//! per peer request, the state document republished for the server, leader changes
//! queued for the hook dispatcher. It lives apart from [`super`] (which wires the tasks
//! together) because it is the part that changes with the protocol.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Bytes;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{ActionObserver, LeaderView};
use crate::api::Inbound;
use crate::api::PublishedCell;
use crate::backend::{Election, Inputs};
use crate::client::{ContactError, PeerClient};
use crate::core::{Action, Core, Event, Failure, LeaderChange};
use crate::hooks::Dispatch;
use crate::metrics::Metrics;
use crate::net::{Network, PauseGate, Timebase, WallClock};
use crate::wire::{PeerState, StepDownReply};

/// How long a leaving node keeps answering "leaving" after its notices were delivered,
/// for the members that check a notice with the leaver (see `leave`).
const LEAVE_LINGER: Duration = Duration::from_millis(250);

/// How often a node that has heard from nobody says that it waits.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(5);

/// Sleep until `wake`, or forever without one.
async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

pub(crate) fn encode_state(state: &PeerState) -> Bytes {
    // Serializing a plain struct of strings and numbers cannot fail.
    Bytes::from(serde_json::to_vec(state).unwrap_or_default())
}

/// Log a change of leader, count it and queue it for the handlers (both backends).
pub(crate) fn announce_change(
    change: LeaderChange,
    metrics: &Metrics,
    dispatch: &mpsc::UnboundedSender<Dispatch>,
) {
    tracing::info!(
        previous = change.previous.as_deref().unwrap_or("none"),
        leader = change.current.as_deref().unwrap_or("none"),
        term = change.term,
        is_self = change.gained(),
        "leader changed"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    metrics.leader_changed(now);
    let _ = dispatch.send(Dispatch::Change(change));
}

/// A finished peer request, back to the loop.
pub(super) enum Outcome {
    State {
        from: String,
        state: PeerState,
    },
    Failed {
        addr: String,
        error: ContactError,
    },
    Probe {
        target: String,
        reachable: bool,
    },
    Ping {
        addr: String,
        result: Result<(), Failure>,
    },
}

/// The receiving ends only the gossip loop has (the shared ones are
/// [`crate::backend::Inputs`]).
pub(super) struct Channels {
    /// Outcomes of this loop's own peer requests.
    pub results: mpsc::UnboundedReceiver<Outcome>,
    /// Peers whose pooled connection was closed by the other side.
    pub lost: mpsc::UnboundedReceiver<String>,
}

/// The loop's timings, from the configuration and the builder.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub interval: Duration,
    pub cooldown: Duration,
    pub hook_timeout: Duration,
    pub request_timeout: Duration,
}

/// What the loop shares with the rest of the node, made by
/// [`super::NodeBuilder::start`].
pub(super) struct Links<N: Network> {
    /// This node's advertise address.
    pub me: String,
    pub client: PeerClient<N>,
    pub clock: Arc<dyn WallClock>,
    /// The node's monotonic time: the core's `now`.
    pub timebase: Timebase,
    /// Holds the loop while the simulator pauses the node.
    pub gate: PauseGate,
    /// Where peer requests report back (the other end is [`Channels::results`]).
    pub results_tx: mpsc::UnboundedSender<Outcome>,
    pub dispatch_tx: mpsc::UnboundedSender<Dispatch>,
    /// The `/state` body the server answers with, and the server's stamps of votes
    /// served to the leader.
    pub published: PublishedCell,
    pub leader_tx: watch::Sender<LeaderView>,
    /// Mirrors the state's `leaving` for the server.
    pub leaving: Arc<AtomicBool>,
    pub tracker: TaskTracker,
    /// Cancels the in-flight peer requests at the end of a leave.
    pub requests_stop: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub observer: Option<ActionObserver>,
}

/// The protocol loop: owns the core, executes its actions.
pub(super) struct Protocol<N: Network> {
    /// Taken by `run`.
    channels: Option<Channels>,
    timing: Timing,
    me: String,
    core: Core,
    client: PeerClient<N>,
    clock: Arc<dyn WallClock>,
    timebase: Timebase,
    gate: PauseGate,
    results_tx: mpsc::UnboundedSender<Outcome>,
    dispatch_tx: mpsc::UnboundedSender<Dispatch>,
    published: PublishedCell,
    /// The latest `leader_served_at` fed to the core as [`Event::VoteServed`].
    served_fed: Option<Duration>,
    /// Votes served to previous leaders that the core had not seen when the leader
    /// changed: fed before the next event, oldest first.
    served_unfed: Vec<(String, Duration)>,
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
    /// A loop around `core`, whose last health result was `healthy`, reading its own
    /// peer requests' outcomes from `channels`.
    pub(super) fn new(
        core: Core,
        healthy: bool,
        links: Links<N>,
        channels: Channels,
        timing: Timing,
    ) -> Self {
        Protocol {
            channels: Some(channels),
            timing,
            me: links.me,
            core,
            client: links.client,
            clock: links.clock,
            timebase: links.timebase,
            gate: links.gate,
            results_tx: links.results_tx,
            dispatch_tx: links.dispatch_tx,
            published: links.published,
            served_fed: None,
            served_unfed: Vec::new(),
            leader_tx: links.leader_tx,
            leaving: links.leaving,
            tracker: links.tracker,
            requests_stop: links.requests_stop,
            leaves: Vec::new(),
            warned: HashSet::new(),
            metrics: links.metrics,
            healthy,
            hold_state: false,
            observer: links.observer,
        }
    }
}

impl<N: Network> Election for Protocol<N> {
    fn run(
        self,
        inputs: Inputs,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.run_loop(inputs, stop, server_stop)
    }
}

impl<N: Network> Protocol<N> {
    async fn run_loop(
        mut self,
        mut inputs: Inputs,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) {
        // `new` always sets it and `run` consumes the loop: taken exactly once.
        let (mut ch, timing) = (self.channels.take().expect("run once"), self.timing);
        let mut waiting_said = Instant::now();
        let period = self.timebase.real(timing.interval);
        let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            self.gate.passed().await;
            // Recomputed after every step: any event may move the core's deadline.
            let wake = self.core.next_deadline().map(|t| self.timebase.instant(t));
            let event = tokio::select! {
               biased;
                _ = stop.cancelled() => break,
                Some(outcome) = ch.results.recv() => self.outcome_event(outcome),
                Some(addr) = ch.lost.recv() => Event::ConnectionLost { addr },
                Some(change) = inputs.failed.recv() => {
                    if self.core.leader() != Some(self.me.as_str()) {
                        continue;
                    }
                    tracing::warn!(term = change.term, cooldown = ?timing.cooldown,
                        "could not take up leadership; stepping down");
                    Event::StepDown { cooldown: timing.cooldown }
                }
                Some(result) = inputs.health.recv() => {
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
                Some(msg) = inputs.inbound.recv() => match msg {
                    Inbound::Announced(addr) => Event::Announced { addr },
                    Inbound::LeaveReceived(addr) => Event::LeaveReceived { addr },
                    Inbound::Diag(reply) => {
                        self.gate.passed().await;
                        let _ = reply.send(self.core.diag(self.timebase.now()));
                        continue;
                    }
                    Inbound::StepDown(reply) => {
                        self.gate.passed().await;
                        let _ = reply.send(self.relinquish());
                        continue;
                    }
                },
                _ = sleep_until(wake) => Event::Wake,
                _ = ticker.tick() => {
                    tracing::debug!(members = self.core.member_count(), leader = ?self.core.leader(), "round");
                    self.say_if_waiting(&mut waiting_said);
                    Event::Tick { wall: self.clock.now_epoch() }
                }
            };
            // The event came in while running; a pause since then holds it.
            self.gate.passed().await;
            self.step(event);
        }

        self.leave(&timing, server_stop).await;
    }

    /// Graceful leave: release leadership through the handlers first, while peers
    /// still see the state we last published (leader, eligible) and elect no one else;
    /// then publish that we are leaving and tell the members; then stop serving.
    /// Consumes the loop: dropping it closes the dispatcher's queue, which ends its task.
    async fn leave(mut self, timing: &Timing, server_stop: CancellationToken) {
        self.hold_state = true;
        self.step(Event::Leave);
        let (flushed_tx, flushed_rx) = oneshot::channel();
        if self.dispatch_tx.send(Dispatch::Flush(flushed_tx)).is_ok() {
            let _ = tokio::time::timeout(timing.hook_timeout, flushed_rx).await;
        }
        self.hold_state = false;
        self.publish_state();
        let mut sends = JoinSet::new();
        let notified = !self.leaves.is_empty();
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
        if notified {
            // Members check a leave notice with the leaver itself before they act on it
            // (an outsider could send one): keep answering "leaving" for a moment so
            // that check meets a 503 rather than a closed port, which in quorum mode
            // would make the successor wait out its promise.
            tokio::time::sleep(LEAVE_LINGER.min(timing.request_timeout)).await;
        }
        self.requests_stop.cancel();
        server_stop.cancel();
        tracing::info!(addr = %self.me, "left the cluster");
    }

    /// `POST /step-down` or a relinquish schedule: a leader gives leadership up
    /// ([`Event::Relinquish`]); any other node changes nothing. Says what happened.
    fn relinquish(&mut self) -> StepDownReply {
        let leader_before = self.core.leader().map(str::to_string);
        let was_leader = leader_before.as_deref() == Some(self.me.as_str());
        if was_leader {
            tracing::info!(term = self.core.term(), "stepping down on request");
            self.step(Event::Relinquish {
                wall: self.clock.now_epoch(),
            });
        }
        let leader = self.core.leader().map(str::to_string);
        let me = &self.me;
        let message = match (was_leader, leader.as_deref()) {
            (false, Some(l)) => format!("not the leader: {l} leads; nothing changed"),
            (false, None) => "not the leader: no leader yet; nothing changed".to_string(),
            (true, Some(l)) if l == me => {
                format!("no other eligible member to hand over to: {me} still leads")
            }
            (true, Some(l)) => {
                format!("stepped down: {me} is now the most junior member and {l} takes over")
            }
            (true, None) => format!(
                "stepped down: {me} is now the most junior member; no other node can lead yet"
            ),
        };
        StepDownReply {
            node: me.clone(),
            was_leader,
            leader_before,
            leader,
            term: self.core.term(),
            start_time: self.core.start_time(),
            message,
        }
    }

    /// A node that has heard from nobody names no leader (rule 5): say so now and then,
    /// so that a lone first node is not silent about what it waits for.
    fn say_if_waiting(&self, said: &mut Instant) {
        if self.core.leader().is_some() || self.core.member_count() > 0 {
            *said = Instant::now();
            return;
        }
        if said.elapsed() >= WAITING_LOG_EVERY {
            tracing::info!(
                "no other node has answered yet: waiting for a seed before electing (start another node, or check --seeds)"
            );
            *said = Instant::now();
        }
    }

    fn outcome_event(&mut self, outcome: Outcome) -> Event {
        match outcome {
            Outcome::State { from, state } => {
                self.warned.remove(&from);
                Event::StateReceived { from, state }
            }
            Outcome::Failed { addr, error } => {
                let failure = error.failure();
                // A leaving node's 503 is `Failure::Leaving`: expected, not worth a warning.
                if failure == Failure::BadResponse {
                    if self.warned.len() < 1024 && self.warned.insert(addr.clone()) {
                        tracing::warn!(peer = %addr, error = %error, "peer sent an unusable answer");
                    }
                } else {
                    tracing::debug!(peer = %addr, error = %error, "contact failed");
                }
                Event::ContactFailed { addr, failure }
            }
            Outcome::Probe { target, reachable } => Event::ProbeAnswered { target, reachable },
            Outcome::Ping { addr, result } => Event::PingAnswered { addr, result },
        }
    }

    /// Feed `event` to the core and carry out its actions; first, any vote served to
    /// the leader since the last event (see [`crate::api`]), so the core never acts
    /// without knowing what this node has promised.
    fn step(&mut self, event: Event) {
        for (to, at) in self.served_votes() {
            self.apply(Event::VoteServed { to, at });
        }
        self.apply(event);
        let alive = (self.timebase.now(), self.core.pause_threshold());
        self.published.lock().alive = Some(alive);
    }

    /// The votes served to a leader that the core has not been told about, oldest
    /// first: those previous leaders read before the state changed, then the current
    /// leader's latest.
    fn served_votes(&mut self) -> Vec<(String, Duration)> {
        let mut votes = std::mem::take(&mut self.served_unfed);
        let p = self.published.lock();
        if let (Some(leader), Some(at)) = (&p.leader, p.leader_served_at) {
            if self.served_fed.is_none_or(|fed| at > fed) {
                votes.push((leader.clone(), at));
            }
        }
        drop(p);
        if let Some((_, at)) = votes.last() {
            self.served_fed = Some(*at);
        }
        votes
    }

    fn apply(&mut self, event: Event) {
        let actions = self.core.handle(self.timebase.now(), event);
        for action in actions {
            if let Some(observe) = &self.observer {
                observe(&action);
            }
            match action {
                Action::FetchState { addr } => self.spawn_fetch(addr),
                Action::Probe {
                    target,
                    via,
                    timeout,
                } => self.spawn_probe(target, via, timeout),
                Action::Ping { addr, timeout } => self.spawn_ping(addr, timeout),
                Action::SendLeave { addr } => self.leaves.push(addr),
                Action::Notify { addr } => self.spawn_notify(addr),
                Action::LeaderChanged(change) => {
                    announce_change(change, &self.metrics, &self.dispatch_tx)
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
            &self.metrics.announces_dropped,
            self.core.announces_dropped(),
        );
        Metrics::set(&self.metrics.terms_rejected, self.core.terms_rejected());
        let detector = self.core.detector();
        Metrics::set(&self.metrics.health_score, u64::from(detector.health_score));
        Metrics::set(
            &self.metrics.evidence_needed,
            u64::from(detector.evidence_needed),
        );
        Metrics::set(&self.metrics.suspects, detector.suspects as u64);
        Metrics::set(
            &self.metrics.is_leader,
            u64::from(self.core.leader() == Some(self.me.as_str())),
        );
        self.publish_view();
    }

    /// Update the [`LeaderView`]. Subscribers wake on a change of leader or term, or
    /// when this node starts or stops acting under a lease, not on every renewal.
    fn publish_view(&self) {
        let view = LeaderView {
            leader: self.core.leader().map(str::to_string),
            term: self.core.term(),
            is_self: self.core.leader() == Some(self.me.as_str()),
            lease_until: self.core.lease_expiry().map(|t| self.timebase.instant(t)),
        };
        self.leader_tx.send_if_modified(|v| {
            let changed = v.leader != view.leader
                || v.term != view.term
                || v.is_self != view.is_self
                || v.lease_until.is_some() != view.lease_until.is_some();
            *v = view;
            changed
        });
    }

    /// Publish the state document for the server, with the leader it names. Under
    /// the cell's lock, so a vote served to the old leader is either stamped before
    /// (and kept for the core here) or answered with the new document.
    fn publish_state(&mut self) {
        let state = self.core.state();
        self.leaving.store(state.leaving, Ordering::Relaxed);
        let body = encode_state(&state);
        let mut p = self.published.lock();
        if p.leader != state.leader {
            if let (Some(old), Some(at)) = (p.leader.take(), p.leader_served_at.take()) {
                if self.served_fed.is_none_or(|fed| at > fed) {
                    self.served_unfed.push((old, at));
                }
            }
        }
        p.etag = crate::wire::state_etag(&body);
        p.body = body;
        p.leader = state.leader;
        p.members = state.members;
    }

    /// Run one request to peers on the tracker, unless the loop stops first, and hand
    /// its outcome (if it has one) back to the loop.
    fn spawn_request<F, Fut>(&self, request: F)
    where
        F: FnOnce(PeerClient<N>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Option<Outcome>> + Send + 'static,
    {
        let client = self.client.clone();
        let tx = self.results_tx.clone();
        let stop = self.requests_stop.clone();
        self.tracker.spawn(async move {
            let outcome = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                outcome = request(client) => outcome,
            };
            if let Some(outcome) = outcome {
                let _ = tx.send(outcome);
            }
        });
    }

    fn spawn_fetch(&self, addr: String) {
        let me = self.me.clone();
        self.spawn_request(move |client| async move {
            Some(match client.fetch_state(&addr, &me).await {
                Ok(state) => Outcome::State { from: addr, state },
                Err(error) => Outcome::Failed { addr, error },
            })
        });
    }

    /// Ask `via` about `target`. A helper that cannot be asked says nothing about the
    /// target: no answer goes to the core then.
    fn spawn_probe(&self, target: String, via: String, timeout: Duration) {
        let within = self.timebase.real(timeout);
        self.spawn_request(move |client| async move {
            match client.probe(&via, &target, Some(within)).await {
                Ok(reachable) => Some(Outcome::Probe { target, reachable }),
                Err(e) => {
                    tracing::debug!(helper = %via, error = %e, "probe not answered");
                    None
                }
            }
        });
    }

    /// [`Action::Notify`]: a leave notice now, which makes `addr` check our state.
    fn spawn_notify(&self, addr: String) {
        let me = self.me.clone();
        self.spawn_request(move |client| async move {
            if let Err(e) = client.send_leave(&addr, &me).await {
                tracing::debug!(peer = %addr, error = %e, "notice not delivered");
            }
            None
        });
    }

    /// The leader watch's ping of `addr`, given `timeout`.
    fn spawn_ping(&self, addr: String, timeout: Duration) {
        let within = self.timebase.real(timeout);
        self.spawn_request(move |client| async move {
            let result = client.ping_within(&addr, within).await;
            Some(Outcome::Ping {
                addr,
                result: result.map_err(|e| e.failure()),
            })
        });
    }
}
