//! What an operator does to a running cluster besides starting and stopping nodes:
//! `les step-down`.

use std::task::Poll;

use super::{poll_once, Cluster, DIAG_TICKS};
use crate::wire::StepDownReply;

impl Cluster {
    /// Ask `name` to give up leadership now, as `les step-down` (`POST /step-down`)
    /// does, and step the simulation until it has answered: its reply, or `None` if
    /// it is not up. A node that is not the leader changes nothing
    /// (`was_leader: false`).
    pub fn step_down(&mut self, name: &str) -> Option<StepDownReply> {
        let handle = self.live_handle(self.index(name))?;
        let mut reply = Box::pin(async move { handle.step_down().await });
        for _ in 0..DIAG_TICKS {
            if let Poll::Ready(r) = poll_once(reply.as_mut()) {
                return r.ok();
            }
            self.step();
        }
        None
    }
}
