//! Owner-supplied callbacks: the [`LeaderChanged`] trait (with the task that calls it)
//! and the [`HealthCheck`] trait.
//!
//! # The `LeaderChanged` contract
//! - [`LeaderChanged::started`] is called once when the node starts, before any change:
//!   the node is not leader then, so this is where to release anything a previous run
//!   may have left behind (a virtual IP still configured after a crash or a reboot).
//! - [`LeaderChanged::leader_changed`] is called once per change of leader as this node
//!   sees it, in order, never concurrently: the next call starts only after the previous
//!   one returned. Each [`LeaderChange`] says the previous leader, the new one (or none),
//!   whether this node gains ([`LeaderChange::gained`]) or loses ([`LeaderChange::lost`])
//!   leadership, and the term.
//! - Calls run in a task of their own, so a slow implementation delays later
//!   notifications but never the gossip loop; a panicking one is caught and logged. A
//!   call that takes longer than the node's hook timeout
//!   ([`crate::node::NodeBuilder::hook_timeout`]) is cancelled and counts as failed.
//! - When the change makes this node leader ([`LeaderChange::gained`]) and the call
//!   fails (returns `Err`, panics or times out), the node steps down and is not eligible
//!   for the configured cooldown (see [`crate::node::NodeBuilder::step_down_cooldown`]),
//!   so the next most senior node takes over instead of the cluster keeping a leader
//!   that holds nothing (no virtual IP, no lock). The step-down is itself a change, so
//!   the implementation is then told it lost leadership. Failures on other changes are
//!   logged only.
//! - On graceful shutdown ([`crate::node::NodeHandle::leave`]) a leader is first told
//!   it lost leadership (`current` is `None`). Until that call returns (or times out)
//!   the node keeps answering its peers as the leader; only then does it publish that it
//!   is leaving and send its leave notices, so a virtual IP is released before a
//!   successor takes it.
//!
//! # Health checks
//! A [`HealthCheck`] given to [`crate::node::NodeBuilder::health_check`] is run once
//! before the node starts gossiping and then on an interval. While it fails the node is
//! not eligible: it does not lead, and a leader steps down. Like a leader-change call,
//! a check that panics or outlives the hook timeout counts as a failure.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use crate::core::LeaderChange;

/// Failure reported by a [`LeaderChanged`] implementation or a [`HealthCheck`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

impl HookError {
    /// A failure described by `msg` (logged as it is).
    pub fn new(msg: impl Into<String>) -> Self {
        HookError(msg.into())
    }
}

/// So that `?` works on I/O inside a handler:
///
/// ```
/// use les::hooks::{HookError, LeaderChange, LeaderChanged};
///
/// struct Marker;
/// impl LeaderChanged for Marker {
///     async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
///         let path = std::env::temp_dir().join("les-doc-leader");
///         if change.gained() {
///             std::fs::write(&path, change.term.to_string())?;
///         }
///         if change.term == u64::MAX {
///             return Err("no more terms".into());
///         }
///         Ok(())
///     }
/// }
/// ```
impl From<std::io::Error> for HookError {
    fn from(e: std::io::Error) -> Self {
        HookError(e.to_string())
    }
}

impl From<String> for HookError {
    fn from(msg: String) -> Self {
        HookError(msg)
    }
}

impl From<&str> for HookError {
    fn from(msg: &str) -> Self {
        HookError(msg.to_string())
    }
}

impl From<anyhow::Error> for HookError {
    /// The whole chain of causes, `outer: inner: …`.
    fn from(e: anyhow::Error) -> Self {
        HookError(format!("{e:#}"))
    }
}

/// Receives every change of leader seen by this node. See the module docs for the
/// contract. Implement it with `async fn`:
///
/// ```
/// use les::hooks::{HookError, LeaderChange, LeaderChanged};
///
/// struct Log;
/// impl LeaderChanged for Log {
///     async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
///         if change.gained() {
///             println!("leading at term {}", change.term);
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait LeaderChanged: Send + Sync + 'static {
    /// Called once per change, in order, never concurrently.
    fn leader_changed(
        &self,
        change: LeaderChange,
    ) -> impl Future<Output = Result<(), HookError>> + Send;

    /// Called once when the node `me` starts, before any [`LeaderChanged::leader_changed`]
    /// call. The node is not leader: release whatever leadership holds (it may be left
    /// over from a run that crashed). An error is logged. The default does nothing.
    fn started(&self, me: &str) -> impl Future<Output = Result<(), HookError>> + Send {
        let _ = me;
        async { Ok(()) }
    }
}

/// Tells whether this node is fit to lead. See the module docs.
///
/// ```
/// use les::hooks::{HealthCheck, HookError};
///
/// struct DiskNotFull;
/// impl HealthCheck for DiskNotFull {
///     async fn check(&self) -> Result<(), HookError> {
///         Ok(()) // look at the disk here
///     }
/// }
/// ```
pub trait HealthCheck: Send + Sync + 'static {
    /// `Ok` while healthy; `Err` (with a reason, logged when the health changes) while not.
    fn check(&self) -> impl Future<Output = Result<(), HookError>> + Send;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send>>;

/// Object-safe form of [`LeaderChanged`], so a node can hold any implementation.
pub(crate) trait DynLeaderChanged: Send + Sync + 'static {
    fn call(self: Arc<Self>, change: LeaderChange) -> BoxFuture;
    fn started(self: Arc<Self>, me: String) -> BoxFuture;
}

struct Erased<H>(H);

impl<H: LeaderChanged> DynLeaderChanged for Erased<H> {
    fn call(self: Arc<Self>, change: LeaderChange) -> BoxFuture {
        Box::pin(async move { self.0.leader_changed(change).await })
    }
    fn started(self: Arc<Self>, me: String) -> BoxFuture {
        Box::pin(async move { self.0.started(&me).await })
    }
}

pub(crate) fn erase<H: LeaderChanged>(h: H) -> Arc<dyn DynLeaderChanged> {
    Arc::new(Erased(h))
}

/// Object-safe form of [`HealthCheck`].
pub(crate) trait DynHealthCheck: Send + Sync + 'static {
    fn check(self: Arc<Self>) -> BoxFuture;
}

impl<C: HealthCheck> DynHealthCheck for Erased<C> {
    fn check(self: Arc<Self>) -> BoxFuture {
        Box::pin(async move { self.0.check().await })
    }
}

pub(crate) fn erase_check<C: HealthCheck>(c: C) -> Arc<dyn DynHealthCheck> {
    Arc::new(Erased(c))
}

/// A handler list: every handler is called, in registration order, per change.
pub(crate) type Handlers = Vec<Arc<dyn DynLeaderChanged>>;

/// Messages to the dispatcher task.
pub(crate) enum Dispatch {
    Change(LeaderChange),
    /// Reply once every change queued before this one has been handled.
    Flush(oneshot::Sender<()>),
}

/// Why a guarded call did not succeed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("{0}")]
    Failed(HookError),
    #[error("panicked: {0}")]
    Panicked(String),
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Run `call` as a task of its own, so a panic is caught as a `JoinError` rather than
/// unwound through the caller, and cancel it after `limit`.
pub(crate) async fn guarded(call: BoxFuture, limit: Duration) -> Result<(), CallError> {
    let task = tokio::spawn(call);
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(CallError::Failed(e)),
        Ok(Err(join)) => Err(CallError::Panicked(join.to_string())),
        Err(_) => {
            abort.abort();
            Err(CallError::TimedOut(limit))
        }
    }
}

/// Runs handlers: `started` first, then one change at a time. A handler failing on a
/// change that made this node leader is reported on `failed` (the runtime turns it into
/// a step-down).
pub(crate) async fn dispatch(
    handlers: Handlers,
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    failed: mpsc::UnboundedSender<LeaderChange>,
    call_timeout: Duration,
    me: String,
) {
    for h in &handlers {
        if let Err(e) = guarded(h.clone().started(me.clone()), call_timeout).await {
            tracing::error!(error = %e, "start-up handler failed");
        }
    }
    while let Some(msg) = rx.recv().await {
        let change = match msg {
            Dispatch::Change(c) => c,
            Dispatch::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut ok = true;
        for h in &handlers {
            if let Err(e) = guarded(h.clone().call(change.clone()), call_timeout).await {
                ok = false;
                tracing::error!(error = %e, term = change.term, "leader-change handler failed");
            }
        }
        if !ok && change.gained() {
            let _ = failed.send(change);
        }
    }
}
