//! What runs on one simulated host: a real les node, started the way production starts
//! it, with the hooks that write what it does to the trace.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::watch;

use crate::auth::Settings;
use crate::config::Config;
use crate::core::Action;
use crate::hooks::{HookError, LeaderChange, LeaderChanged};
use crate::net::WallClock;
use crate::node::{ActionObserver, Node, NodeError, NodeHandle};
use crate::sim::clock::{relative_ms, sim_now, SimClock};
use crate::sim::net::{Shared, TurmoilNetwork};
use crate::sim::trace::TraceEvent;

/// A running incarnation of a node, as its host software published it.
pub(crate) struct Incarnation {
    /// Which [`crate::sim::Cluster::start`] call started it (1 for the first).
    pub(crate) start_no: u32,
    /// How many times the node's software has run, this time included (the trace's
    /// incarnation number).
    pub(crate) number: u32,
    pub(crate) handle: NodeHandle,
    /// Epoch seconds read from the node's clock when it started.
    pub(crate) start_time: f64,
}

/// What one simulated host runs: a real les node, started the way production starts it.
pub(crate) struct HostSoftware {
    pub(crate) name: String,
    pub(crate) index: usize,
    pub(crate) seed: u64,
    pub(crate) config: Config,
    pub(crate) clock: SimClock,
    /// Rate of the node's monotonic clock (see [`crate::sim::NodeSpec::clock_rate`]).
    pub(crate) clock_rate: f64,
    /// `true` while the node is paused (see [`crate::sim::Cluster::pause`]).
    pub(crate) pause: Rc<watch::Sender<bool>>,
    /// Whether the node runs behind the pause gate at all.
    pub(crate) pausable: bool,
    pub(crate) shared: Arc<Shared>,
    pub(crate) starts: Rc<Cell<u32>>,
    pub(crate) incarnations: Rc<RefCell<Vec<Incarnation>>>,
    /// The keyring settings to start with (see [`crate::sim::NodeSpec::auth`]).
    pub(crate) auth: Rc<RefCell<Settings>>,
}

impl HostSoftware {
    pub(crate) async fn run(&self) -> Result<(), NodeError> {
        // A start whose software never ran (crashed within the same tick) is skipped.
        let incarnation = self.incarnations.borrow().len() as u32 + 1;
        let start_no = self.starts.get();
        let start_time = self.clock.now_epoch();
        {
            let mut journal = self.shared.journal();
            let at = sim_now();
            journal.push(
                at,
                TraceEvent::Started {
                    node: self.name.clone(),
                    incarnation,
                    start_time_ms: relative_ms(start_time),
                },
            );
        }
        let auth = self.auth.borrow().clone();
        let builder = Node::builder(self.config.clone())
            .auth(auth)
            .network(TurmoilNetwork::for_node(
                &self.name,
                incarnation,
                self.shared.clone(),
            ))
            .clock(self.clock)
            .clock_rate(self.clock_rate)
            .rng_seed(mix(self.seed, self.index as u64, incarnation as u64))
            .on_leader_change(Recorder {
                shared: self.shared.clone(),
                node: self.name.clone(),
                incarnation,
            })
            .observe(action_observer(
                self.shared.clone(),
                self.name.clone(),
                incarnation,
            ));
        let builder = if self.pausable {
            builder.pause_gate(self.pause.subscribe())
        } else {
            builder
        };
        let handle = builder.start().await?;
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

/// The `LeaderChanged` handler every simulated node gets: it writes the change to the
/// trace, stamped with simulated time.
struct Recorder {
    shared: Arc<Shared>,
    node: String,
    incarnation: u32,
}

impl LeaderChanged for Recorder {
    async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
        let mut journal = self.shared.journal();
        let event = TraceEvent::LeaderChanged {
            node: self.node.clone(),
            incarnation: self.incarnation,
            from: change.previous.as_deref().map(|a| journal.name_of(a)),
            to: change.current.as_deref().map(|a| journal.name_of(a)),
            term: change.term,
        };
        journal.push(sim_now(), event);
        Ok(())
    }
}

/// Writes the membership actions and leadership decisions of one node incarnation's core
/// to the trace.
fn action_observer(shared: Arc<Shared>, node: String, incarnation: u32) -> ActionObserver {
    Arc::new(move |action: &Action| {
        let mut journal = shared.journal();
        let event = match action {
            Action::MemberAdded { addr } => TraceEvent::MemberAdded {
                node: node.clone(),
                incarnation,
                member: journal.name_of(addr),
            },
            Action::MemberRemoved { addr, reason } => TraceEvent::MemberRemoved {
                node: node.clone(),
                incarnation,
                member: journal.name_of(addr),
                reason: reason.to_string(),
            },
            Action::StartTimeChanged { start_time } => TraceEvent::StartTimeChanged {
                node: node.clone(),
                incarnation,
                start_time_ms: relative_ms(*start_time),
            },
            Action::LeaderChanged(change) if change.gained() != change.lost() => {
                TraceEvent::Leading {
                    node: node.clone(),
                    incarnation,
                    leading: change.gained(),
                    term: change.term,
                }
            }
            _ => return,
        };
        journal.push(sim_now(), event);
    })
}
