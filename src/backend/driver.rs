//! The store loop: a node whose leadership a [`LeaseStore`] decides.
//!
//! It takes the place of the gossip protocol loop in a node and speaks to the rest of
//! the node over the same channels: leader changes go to the hook dispatcher and the
//! [`LeaderView`], `/diag/` requests are answered from the last round, health results
//! and failed take-overs make the node ineligible. It asks the store once per
//! `interval`, at once when another node announces a change, and just after the
//! holder's lease runs out; [`Tenure`] says when this node may act.
//!
//! Trouble with the store is logged once when it starts and once when it ends; in
//! between the loop reconnects with a doubling backoff (up to `interval`), and a leader
//! stops acting at the moment its lease may have run out, whether or not the store
//! can be reached.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Election, Inputs, LeaseStore, Registration, Release, StoreError, StoreView};
use crate::api::{Inbound, PublishedCell};
use crate::core::tenure::{Grant, Tenure};
use crate::core::LeaderChange;
use crate::hooks::Dispatch;
use crate::metrics::Metrics;
use crate::net::Timebase;
use crate::node::LeaderView;
use crate::wire::{BackendInfo, Diag, MemberInfo, PeerState, StepDownReply};

/// The first retry after a failed round; doubled up to the round interval.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What the store loop shares with the rest of the node.
pub(crate) struct StoreLinks {
    pub dispatch_tx: mpsc::UnboundedSender<Dispatch>,
    pub leader_tx: watch::Sender<LeaderView>,
    pub published: PublishedCell,
    pub metrics: Arc<Metrics>,
    pub leaving: Arc<AtomicBool>,
    pub timebase: Timebase,
}

/// The loop's timings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoreTiming {
    pub interval: Duration,
    pub request_timeout: Duration,
    pub hook_timeout: Duration,
    pub cooldown: Duration,
}

/// The store loop. See the module docs.
pub(crate) struct StoreLoop<S: LeaseStore> {
    store: S,
    me: Registration,
    eligible_by_config: bool,
    tenure: Tenure,
    links: StoreLinks,
    timing: StoreTiming,
    healthy: bool,
    cooldown_until: Option<Duration>,
    connected: bool,
    /// The last round's answer, for `/diag/`.
    view: Option<StoreView>,
    /// Since when rounds have failed, and why (logged once per outage).
    outage: Option<(Instant, String)>,
    backoff: Duration,
    next_round: Instant,
}

impl<S: LeaseStore> StoreLoop<S> {
    pub(crate) fn new(
        store: S,
        me: Registration,
        eligible: bool,
        healthy: bool,
        links: StoreLinks,
        timing: StoreTiming,
    ) -> Self {
        StoreLoop {
            tenure: Tenure::new(me.addr.clone()),
            store,
            me,
            eligible_by_config: eligible,
            links,
            timing,
            healthy,
            cooldown_until: None,
            connected: false,
            view: None,
            outage: None,
            backoff: FIRST_BACKOFF,
            next_round: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.links.timebase.now()
    }

    fn eligible(&self) -> bool {
        self.eligible_by_config
            && self.healthy
            && self.cooldown_until.is_none_or(|t| self.now() >= t)
    }

    /// Run until `stop`, then leave: handlers release leadership first, then the store
    /// hears of it (so the next node takes over at once), then the server stops.
    async fn run_loop(
        mut self,
        mut inputs: Inputs,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) {
        tracing::info!(backend = %self.store.describe(), lease = ?self.me.lease,
            "leadership is decided by the database");
        loop {
            let deadline = self
                .tenure
                .next_deadline()
                .map(|t| self.links.timebase.instant(t));
            let now_round = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(change) = inputs.failed.recv() => {
                    if !self.tenure.is_acting(self.now()) || change.current.as_deref() != Some(self.me.addr.as_str()) {
                        continue;
                    }
                    tracing::warn!(term = change.term, cooldown = ?self.timing.cooldown,
                        "could not take up leadership; stepping down");
                    self.cooldown_until = Some(self.now() + self.timing.cooldown);
                    self.give_up().await;
                    true
                }
                Some(result) = inputs.health.recv() => {
                    if result.is_ok() == self.healthy {
                        continue;
                    }
                    self.healthy = result.is_ok();
                    match result {
                        Ok(()) => tracing::info!("health check passing again: eligible"),
                        Err(why) => {
                            tracing::warn!(reason = %why,
                                "health check failing: not eligible (stepping down if leading)");
                            self.give_up().await;
                        }
                    }
                    true
                }
                Some(msg) = inputs.inbound.recv() => match msg {
                    Inbound::Diag(reply) => {
                        let _ = reply.send(self.diag());
                        continue;
                    }
                    Inbound::StepDown(reply) => {
                        let answer = self.step_down().await;
                        let _ = reply.send(answer);
                        continue;
                    }
                    Inbound::Announced(_) | Inbound::LeaveReceived(_) => continue,
                },
                alive = self.store.changed(), if self.connected => {
                    if !alive {
                        self.connected = false;
                    }
                    true
                }
                _ = sleep_until(deadline) => {
                    let change = self.tenure.wake(self.now());
                    let lost = change.as_ref().is_some_and(LeaderChange::lost);
                    if lost {
                        tracing::warn!("lease may have run out without a renewal: no longer acting as leader");
                    }
                    self.report(change);
                    true
                }
                _ = tokio::time::sleep_until(self.next_round) => true,
            };
            if now_round {
                self.round().await;
            }
        }
        self.leave(server_stop).await;
    }

    /// One round with the store (connecting first if need be), bounded in time and
    /// never past this node's acting deadline.
    async fn round(&mut self) {
        if !self.connected {
            let limit = self.timing.request_timeout;
            match bounded(limit, self.store.connect()).await {
                Ok(()) => self.connected = true,
                Err(e) => return self.failed(e),
            }
        }
        let mut limit = self.timing.request_timeout;
        if let Some(until) = self.tenure.acting_until() {
            limit = limit.min(
                until
                    .saturating_sub(self.now())
                    .max(Duration::from_millis(1)),
            );
        }
        let sent = self.now();
        let eligible = self.eligible();
        match bounded(limit, self.store.round(&self.me, eligible)).await {
            Ok(view) => {
                let grant = Grant {
                    holder: view.holder.clone(),
                    mine: view.mine,
                    term: view.term,
                    expires_in: view.expires_in,
                };
                let change = self.tenure.round_done(sent, self.now(), &grant);
                // The view first: what `report` publishes (state, members) is this round's.
                self.view = Some(view);
                self.report(change);
                self.recovered();
                self.next_round = Instant::now() + self.links.timebase.real(self.timing.interval);
            }
            Err(e) => self.failed(e),
        }
    }

    fn failed(&mut self, e: StoreError) {
        if matches!(e, StoreError::Unreachable(_) | StoreError::Timeout(_)) {
            self.connected = false;
        }
        let why = e.to_string();
        if self.outage.is_none() {
            let what = match e {
                StoreError::Query(_) => "database error",
                _ => "database unavailable",
            };
            tracing::error!(error = %why, backend = %self.store.describe(),
                "{what}: retrying with backoff; a leader stops acting when its lease may have run out");
            self.outage = Some((Instant::now(), why));
        } else if let Some((_, last)) = &mut self.outage {
            *last = why;
        }
        self.next_round = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(self.timing.interval.max(FIRST_BACKOFF));
    }

    fn recovered(&mut self) {
        if let Some((since, _)) = self.outage.take() {
            tracing::info!(after = ?since.elapsed(), "database available again");
        }
        self.backoff = FIRST_BACKOFF;
    }

    /// Stop acting now; handlers hear it before the store does (so nobody else takes
    /// over while this node's handlers still hold what leadership gave them), then the
    /// lease is released.
    async fn give_up(&mut self) {
        let change = self.tenure.give_up();
        let gave_up = change.is_some();
        self.report(change);
        if gave_up {
            self.flush_hooks().await;
            // A new incarnation: junior from now on, and nothing sent under the old
            // one (a late release, a late round) can touch a lease granted since.
            let incarnation = rand::random();
            let eligible = self.eligible();
            self.release(Release::Rejoin {
                incarnation,
                eligible,
            })
            .await;
            self.me.incarnation = incarnation;
        }
    }

    /// An operator's step-down (`POST /step-down`, `les step-down`, a relinquish
    /// schedule): stop acting, hand the lease back and register again as junior, so
    /// the next most senior takes over at once. Refused, changing nothing, when this
    /// node does not act as leader or no other live eligible member could take over.
    async fn step_down(&mut self) -> StepDownReply {
        // Fresh news first: who is live now, and whether this node still holds it.
        self.round().await;
        let leader_before = self.tenure.leader().map(str::to_string);
        let me = self.me.addr.clone();
        let acting = self.tenure.is_acting(self.now());
        let successor = self.view.as_ref().and_then(|v| {
            v.members
                .iter()
                .find(|m| m.live && m.eligible && m.addr != me)
                .map(|m| m.addr.clone())
        });
        let message = match (acting, &successor) {
            (false, _) => match &leader_before {
                Some(l) => format!("not the leader: {l} leads; nothing changed"),
                None => "not the leader: no leader yet; nothing changed".to_string(),
            },
            (true, None) => format!("no other eligible member to hand over to: {me} still leads"),
            (true, Some(next)) => {
                tracing::info!(term = self.tenure.term(), "stepping down on request");
                self.give_up().await;
                self.round().await;
                format!("stepped down: {me} is now the most junior member and {next} takes over")
            }
        };
        let start_time = self.state().start_time;
        StepDownReply {
            node: me,
            was_leader: acting,
            leader_before,
            leader: self
                .tenure
                .leader()
                .map(str::to_string)
                .or(successor.filter(|_| acting)),
            term: self.tenure.term(),
            start_time,
            message,
        }
    }

    async fn flush_hooks(&mut self) {
        let (tx, rx) = oneshot::channel();
        if self.links.dispatch_tx.send(Dispatch::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(self.timing.hook_timeout, rx).await;
        }
    }

    async fn release(&mut self, then: Release) {
        if !self.connected {
            return;
        }
        let limit = self.timing.request_timeout;
        if let Err(e) = bounded(limit, self.store.release(&self.me, then)).await {
            tracing::warn!(error = %e, "could not release the lease: it runs out by itself");
            self.connected = false;
        }
    }

    async fn leave(mut self, server_stop: CancellationToken) {
        self.links.leaving.store(true, Ordering::Relaxed);
        let change = self.tenure.give_up();
        self.report(change);
        self.flush_hooks().await;
        self.release(Release::Leave).await;
        server_stop.cancel();
        tracing::info!(addr = %self.me.addr, "left the cluster");
    }

    /// Tell the handlers and subscribers about `change`, and refresh what is published.
    fn report(&mut self, change: Option<LeaderChange>) {
        if let Some(change) = change {
            crate::node::announce_change(change, &self.links.metrics, &self.links.dispatch_tx);
        }
        let acting = self.tenure.is_acting(self.now());
        let m = &self.links.metrics;
        Metrics::set(&m.term, self.tenure.term());
        Metrics::set(&m.is_leader, u64::from(acting));
        let live = self.live_members();
        Metrics::set(&m.members, live.saturating_sub(1) as u64);
        let view = LeaderView {
            leader: self.tenure.leader().map(str::to_string),
            term: self.tenure.term(),
            is_self: acting,
            lease_until: self
                .tenure
                .acting_until()
                .map(|t| self.links.timebase.instant(t)),
        };
        self.links.leader_tx.send_if_modified(|v| {
            let changed =
                v.leader != view.leader || v.term != view.term || v.is_self != view.is_self;
            *v = view;
            changed
        });
        let state = self.state();
        let body = crate::node::encode_state(&state);
        let mut p = self.links.published.lock();
        p.etag = crate::wire::state_etag(&body);
        p.body = body;
        p.leader = state.leader;
        p.members = state.members;
    }

    fn live_members(&self) -> usize {
        self.view
            .as_ref()
            .map_or(0, |v| v.members.iter().filter(|m| m.live).count())
    }

    /// This node's state document, from the last round.
    fn state(&self) -> PeerState {
        let members = self.view.as_ref().map(|v| &v.members[..]).unwrap_or(&[]);
        let mine = members.iter().find(|m| m.addr == self.me.addr);
        let mut list = vec![self.me.addr.clone()];
        list.extend(
            members
                .iter()
                .filter(|m| m.live && m.addr != self.me.addr)
                .map(|m| m.addr.clone()),
        );
        PeerState {
            members: list,
            leader: self.tenure.leader().map(str::to_string),
            start_time: mine.map_or(0.0, |m| m.registered_at),
            term: self.tenure.term(),
            eligible: self.eligible(),
            leaving: self.links.leaving.load(Ordering::Relaxed),
            name: self.me.name.clone(),
            cluster: Some(self.me.cluster.clone()).filter(|c| !c.is_empty()),
            ..blank_state()
        }
    }

    fn diag(&self) -> Diag {
        let state = self.state();
        let view = self.view.as_ref();
        let mut member_states = std::collections::BTreeMap::new();
        let mut member_info = std::collections::BTreeMap::new();
        for m in view.map(|v| &v.members[..]).unwrap_or(&[]) {
            member_info.insert(
                m.addr.clone(),
                MemberInfo {
                    last_contact_ms: Some(m.heartbeat_age.as_millis() as u64),
                    suspect: !m.live,
                    failures: 0,
                },
            );
            member_states.insert(
                m.addr.clone(),
                PeerState {
                    members: Vec::new(),
                    leader: view.and_then(|v| v.holder.clone()),
                    start_time: m.registered_at,
                    term: view.map_or(0, |v| v.term),
                    eligible: m.eligible,
                    name: m.name.clone(),
                    ..blank_state()
                },
            );
        }
        member_states.insert(self.me.addr.clone(), state.clone());
        let now = self.now();
        Diag {
            state,
            member_states,
            member_info,
            lease: None,
            detector: None,
            backend: Some(BackendInfo {
                kind: "postgres".into(),
                target: self.store.describe(),
                connected: self.connected,
                error: self.outage.as_ref().map(|(_, why)| why.clone()),
                holder: self.tenure.leader().map(str::to_string),
                term: self.tenure.term(),
                acting_for_ms: self
                    .tenure
                    .acting_until()
                    .map(|t| t.saturating_sub(now).as_millis() as u64),
                live_members: self.live_members(),
            }),
        }
    }
}

/// A state document with nothing in it but this software's version.
fn blank_state() -> PeerState {
    PeerState {
        members: Vec::new(),
        leader: None,
        start_time: 0.0,
        term: 0,
        eligible: true,
        leaving: false,
        name: None,
        version: Some(concat!("les/", env!("CARGO_PKG_VERSION")).to_string()),
        cluster: None,
        revision: 0,
        removed: Vec::new(),
        members_digest: 0,
    }
}

impl<S: LeaseStore> Election for StoreLoop<S> {
    fn run(
        self,
        inputs: Inputs,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        self.run_loop(inputs, stop, server_stop)
    }
}

/// `f`, or [`StoreError::Timeout`] after `limit`.
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or(Err(StoreError::Timeout(limit)))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
