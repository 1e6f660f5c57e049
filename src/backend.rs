//! Election backends: what decides who leads.
//!
//! By default les elects by gossip ([`crate::core`], driven by the node's protocol
//! loop). A *store backend* hands the decision to a system the operator already trusts
//! to serialize it — PostgreSQL today ([`postgres`]) — for teams whose nodes may not
//! gossip with each other, or who want the database's transactions and clock to be the
//! only authority. Everything above the decision is shared: the `LeaderChanged`
//! handlers and hook commands, the HTTP API (`/diag/`, `/metrics`, `/step-down`),
//! `les status`, graceful leave.
//!
//! Two small traits draw the line. Inside the crate, `Election` is what the node runtime
//! ([`crate::node`]) runs: one loop that takes the shared inputs (health results,
//! requests from the HTTP API such as `/diag/` and `/step-down`, failed take-overs) and
//! reports through the same links (the hook dispatcher, the [`crate::node::LeaderView`],
//! the published state, the metrics). The gossip protocol loop is one `Election`; the
//! store loop (`driver`) is the other, for every store. A store implements the public
//! [`LeaseStore`]: register and heartbeat this node, renew or take the lease by the
//! seniority rule, release it, and say when another node changed something; the driver
//! adds the timing rules ([`crate::core::tenure`]): when the node may act, when it must
//! stop, when it asks again. A third backend (etcd, a Kubernetes Lease) is one file
//! implementing [`LeaseStore`], plus its [`Backend`] variant.
//!
//! The rules every store implements:
//! - a node registers with the store's clock as its start time (seniority) and a random
//!   *incarnation*; a new incarnation (a restart, a step-down) registers as junior;
//! - a node is live while its heartbeat is younger than the lease;
//! - the lease is granted only when nobody holds a running one, and only to the most
//!   senior live eligible node; every grant increments the term, which never decreases;
//! - the holder renews while it is eligible and gives the lease up when it is not;
//! - all of it in the store's transactions, so two nodes never hold the lease at once.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::Inbound;
use crate::core::LeaderChange;

pub(crate) mod driver;
pub mod postgres;

/// What reaches an election loop from the rest of the node, whatever the backend.
pub(crate) struct Inputs {
    /// Health check results (never yields without a health check).
    pub health: mpsc::Receiver<Result<(), String>>,
    /// Requests from the HTTP API (`/diag/`, `/step-down`, peers' notices) and the
    /// relinquish schedule.
    pub inbound: mpsc::Receiver<Inbound>,
    /// Changes whose leader hook failed to take leadership up.
    pub failed: mpsc::UnboundedReceiver<LeaderChange>,
}

/// The node's election loop: decides or learns who leads, and reports it through the
/// links it was built with. Runs until `stop`, then leaves gracefully (handlers
/// release leadership before anyone else may take it) and cancels `server_stop`.
pub(crate) trait Election: Send + 'static {
    /// Run the loop; see the trait docs.
    fn run(
        self,
        inputs: Inputs,
        stop: CancellationToken,
        server_stop: CancellationToken,
    ) -> impl Future<Output = ()> + Send;
}

/// Which backend decides leadership (`--backend`).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Backend {
    /// Gossip between the nodes (the default; the Python LES protocol).
    #[default]
    Gossip,
    /// A PostgreSQL database.
    Postgres(Box<postgres::PostgresUrl>),
}

impl FromStr for Backend {
    type Err = String;

    /// `gossip`, or a `postgres://` URL (checked here; see [`postgres::PostgresUrl`]).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "gossip" | "" => Ok(Backend::Gossip),
            url => url.parse().map(|u| Backend::Postgres(Box::new(u))),
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Gossip => f.write_str("gossip"),
            Backend::Postgres(url) => url.fmt(f),
        }
    }
}

/// One node as the store knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreMember {
    /// The node's advertised address (its identity).
    pub addr: String,
    /// Its start time by the store's clock, epoch seconds (lower is more senior).
    pub registered_at: f64,
    /// Whether it may lead.
    pub eligible: bool,
    /// Whether its heartbeat is younger than the lease.
    pub live: bool,
    /// Age of its last heartbeat by the store's clock.
    pub heartbeat_age: Duration,
    /// Its `--name`, if any.
    pub name: Option<String>,
}

/// What the store says after a round.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreView {
    /// The node holding a running lease, if any.
    pub holder: Option<String>,
    /// Whether that is this node in its current incarnation.
    pub mine: bool,
    /// The lease's term (the fencing token): incremented on every grant.
    pub term: u64,
    /// Time left on the lease by the store's clock at the start of the round's
    /// transaction; zero when nobody holds it.
    pub expires_in: Duration,
    /// Every node registered in this cluster, most senior first.
    pub members: Vec<StoreMember>,
}

/// This node as it registers with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The cluster's name (`--cluster`, empty without one): stores keep clusters apart.
    pub cluster: String,
    /// The node's advertised address.
    pub addr: String,
    /// Random per life; a new one (restart, step-down) makes the node junior.
    pub incarnation: i64,
    /// The node's `--name`.
    pub name: Option<String>,
    /// The lease length.
    pub lease: Duration,
}

/// What a node does after giving the lease up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// It leaves: its registration is removed.
    Leave,
    /// It stays, registered again under a new incarnation, so as junior: a step-down,
    /// or a node that is not eligible now (then `eligible` is `false`).
    Rejoin {
        /// The new incarnation.
        incarnation: i64,
        /// Whether it may lead (once it is the most senior again).
        eligible: bool,
    },
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached, or the connection broke.
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    /// The store answered with an error.
    #[error("database error: {0}")]
    Query(String),
    /// The store did not answer in time.
    #[error("the database did not answer within {0:?}")]
    Timeout(Duration),
}

/// A store that decides the lease (see the module docs for the rules it implements).
///
/// The driver calls these one at a time, never concurrently; any call may be cancelled
/// (dropped) at a deadline, after which the driver calls [`LeaseStore::connect`] again
/// before anything else, so an implementation never has to recover mid-transaction.
pub trait LeaseStore: Send + 'static {
    /// Connect (or reconnect), create the schema if missing and subscribe to changes.
    fn connect(&mut self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Heartbeat `me` (eligible or not), renew or take the lease if the rules say so,
    /// and report what the store says now.
    fn round(
        &mut self,
        me: &Registration,
        eligible: bool,
    ) -> impl Future<Output = Result<StoreView, StoreError>> + Send;

    /// End the lease if `me` (this incarnation) holds it, then `then`; tells the other
    /// nodes, so the next most senior takes over at once. Only `me`'s own incarnation
    /// is touched: a release that arrives late can never end a lease granted since.
    fn release(
        &mut self,
        me: &Registration,
        then: Release,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Resolves when another node may have changed the lease or the members (a
    /// notification), or at once with `false` when the connection has broken. Never
    /// resolves if the store cannot tell.
    fn changed(&mut self) -> impl Future<Output = bool> + Send;

    /// Which store this is, for logs and `/diag/` (never a password).
    fn describe(&self) -> String;
}
