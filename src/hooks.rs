//! Leader-change notifications: the [`LeaderChanged`] trait and the task that calls it.
//!
//! # Contract
//! - Called once per change of leader as this node sees it, in order, never
//!   concurrently: the next call starts only after the previous one returned.
//! - Called from a task of its own, so a slow implementation delays later
//!   notifications but never the gossip loop; a panicking one is caught and logged.
//! - When the change makes this node leader ([`LeaderChange::gained`]) and the call
//!   returns `Err`, the node steps down and is not eligible for the configured cooldown
//!   (see [`crate::node::NodeBuilder::step_down_cooldown`]), so the next most senior
//!   node takes over instead of the cluster keeping a leader that holds nothing (no
//!   virtual IP, no lock). Errors on other changes are logged only.
//! - On graceful shutdown a leader is first told it lost leadership (`current` is
//!   `None`) and the leave is announced to the other members only after that call
//!   returns (or times out), so a virtual IP is released before a successor takes it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use crate::core::LeaderChange;

/// Failure reported by a [`LeaderChanged`] implementation.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

impl HookError {
    pub fn new(msg: impl Into<String>) -> Self {
        HookError(msg.into())
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
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<(), HookError>> + Send>>;

/// Object-safe form of [`LeaderChanged`], so a node can hold any implementation.
pub(crate) trait DynLeaderChanged: Send + Sync + 'static {
    fn call(self: Arc<Self>, change: LeaderChange) -> BoxFuture;
}

struct Erased<H>(H);

impl<H: LeaderChanged> DynLeaderChanged for Erased<H> {
    fn call(self: Arc<Self>, change: LeaderChange) -> BoxFuture {
        Box::pin(async move { self.0.leader_changed(change).await })
    }
}

pub(crate) fn erase<H: LeaderChanged>(h: H) -> Arc<dyn DynLeaderChanged> {
    Arc::new(Erased(h))
}

/// A handler list: every handler is called, in registration order, per change.
pub(crate) type Handlers = Vec<Arc<dyn DynLeaderChanged>>;

/// Messages to the dispatcher task.
pub(crate) enum Dispatch {
    Change(LeaderChange),
    /// Reply once every change queued before this one has been handled.
    Flush(oneshot::Sender<()>),
}

/// Runs handlers one change at a time. A handler failing on a change that made this
/// node leader is reported on `failed` (the runtime turns it into a step-down).
pub(crate) async fn dispatch(
    handlers: Handlers,
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    failed: mpsc::UnboundedSender<LeaderChange>,
    call_timeout: Duration,
) {
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
            // Each call runs as a task so a panic is caught as a JoinError, not unwound
            // through the dispatcher.
            let call = tokio::spawn(h.clone().call(change.clone()));
            let abort = call.abort_handle();
            match tokio::time::timeout(call_timeout, call).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    ok = false;
                    tracing::error!(error = %e, term = change.term, "leader-change handler failed");
                }
                Ok(Err(join)) => {
                    ok = false;
                    tracing::error!(error = %join, term = change.term, "leader-change handler panicked");
                }
                Err(_) => {
                    abort.abort();
                    ok = false;
                    tracing::error!(timeout = ?call_timeout, term = change.term, "leader-change handler timed out");
                }
            }
        }
        if !ok && change.gained() {
            let _ = failed.send(change);
        }
    }
}
