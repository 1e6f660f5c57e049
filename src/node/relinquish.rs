//! Scheduled rotation of leadership: `relinquish_every` and `relinquish_cron`.
//!
//! Some operators want leadership to move on purpose — to exercise the hand-over path
//! every day rather than discover it broken during an outage, or to spread a leader's
//! load — as an advisory-lock design does when its holder releases the lock. This task
//! watches the node's [`LeaderView`]: once the node has led for `relinquish_every`, or
//! when the cron expression names the current time while it leads, it asks the
//! protocol loop to step down with the same [`Inbound::StepDown`] that `POST
//! /step-down` sends. So the schedule works for any backend loop that answers that
//! message, and never touches the protocol state itself.
//!
//! Cron times are read from the node's wall clock, in UTC; the wait in between is a
//! monotonic sleep, re-aimed whenever the leader changes.

use std::sync::Arc;
use std::time::Duration;

use croner::Cron;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{LeaderView, NodeError, NodeHandle};
use crate::api::Inbound;
use crate::config::schedule::{next_after, parse_cron};
use crate::config::Config;
use crate::net::WallClock;
use crate::wire::StepDownReply;

impl NodeHandle {
    /// Give up leadership now if this node leads, as `POST /step-down` does: it takes a
    /// new start time (it is the most junior member from now on) and the next most
    /// senior node takes over. A node that is not the leader changes nothing and says
    /// so (`was_leader: false`).
    pub async fn step_down(&self) -> Result<StepDownReply, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.inbound
            .send(Inbound::StepDown(tx))
            .await
            .map_err(|_| NodeError::Stopped)?;
        rx.await.map_err(|_| NodeError::Stopped)
    }
}

/// When to step down, as configured.
struct Schedule {
    every: Option<Duration>,
    cron: Option<Cron>,
}

/// What the task needs from the node.
pub(super) struct Links {
    pub inbound: mpsc::Sender<Inbound>,
    pub leader: watch::Receiver<LeaderView>,
    pub clock: Arc<dyn WallClock>,
    pub stop: CancellationToken,
}

/// Spawn the schedule task on `tracker` if `cfg` sets a schedule.
pub(super) fn spawn(tracker: &TaskTracker, cfg: &Config, links: Links) {
    let cron = match cfg.relinquish_cron.as_deref().map(parse_cron) {
        Some(Ok(c)) => Some(c),
        Some(Err(why)) => {
            // Validated with the configuration; a library user may skip that.
            tracing::error!(error = %why, "relinquish_cron does not parse: ignored");
            None
        }
        None => None,
    };
    let schedule = Schedule {
        every: cfg.relinquish_every,
        cron,
    };
    if schedule.every.is_some() || schedule.cron.is_some() {
        tracker.spawn(run(schedule, links));
    }
}

/// Why a step-down is due.
#[derive(Debug, Clone, Copy)]
enum Due {
    /// The node has led for `relinquish_every`.
    Every,
    /// The cron expression names this time (epoch seconds).
    Cron(f64),
}

impl Due {
    fn setting(self) -> &'static str {
        match self {
            Due::Every => "relinquish_every",
            Due::Cron(_) => "relinquish_cron",
        }
    }
}

async fn run(schedule: Schedule, mut links: Links) {
    // Since when this node leads (monotonic), and the last cron time acted on.
    let mut led_since: Option<Instant> = None;
    let mut cron_done = f64::NEG_INFINITY;
    loop {
        let leading = links.leader.borrow_and_update().is_self;
        led_since = match (leading, led_since) {
            (true, None) => Some(Instant::now()),
            (true, since) => since,
            (false, _) => None,
        };
        let due = led_since.and_then(|since| {
            let every = schedule.every.map(|d| (since + d, Due::Every));
            let cron = schedule.cron.as_ref().and_then(|c| {
                cron_due(c, &*links.clock, cron_done).map(|(at, t)| (at, Due::Cron(t)))
            });
            earliest(every, cron)
        });
        tokio::select! {
            biased;
            _ = links.stop.cancelled() => return,
            changed = links.leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = sleep_until(due.map(|(at, _)| at)) => {
                let Some((_, why)) = due else { continue };
                if let Due::Cron(t) = why {
                    cron_done = t;
                }
                if !step_down(&links.inbound, why.setting()).await {
                    return;
                }
                // Still leading (no one to hand over to): start counting afresh.
                led_since = None;
            }
        }
    }
}

/// The next time `cron` names after both the wall clock and `done` (the last one acted
/// on), as a monotonic instant, with that time in epoch seconds.
fn cron_due(cron: &Cron, clock: &dyn WallClock, done: f64) -> Option<(Instant, f64)> {
    let now = clock.now_epoch();
    let at = next_after(cron, now.max(done))?;
    let wait = Duration::from_secs_f64((at - now).max(0.0));
    Some((Instant::now() + wait, at))
}

fn earliest<T>(a: Option<(Instant, T)>, b: Option<(Instant, T)>) -> Option<(Instant, T)> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Ask the loop to step down; `false` once the node has stopped.
async fn step_down(inbound: &mpsc::Sender<Inbound>, why: &str) -> bool {
    let (tx, rx) = oneshot::channel();
    if inbound.send(Inbound::StepDown(tx)).await.is_err() {
        return false;
    }
    match rx.await {
        Ok(reply) => {
            tracing::info!(schedule = why, term = reply.term, "{}", reply.message);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wall clock that follows tokio's (paused) time from `at_zero`, at `rate`.
    struct TokioWall {
        at_zero: f64,
        origin: Instant,
        rate: f64,
    }

    impl WallClock for TokioWall {
        fn now_epoch(&self) -> f64 {
            self.at_zero + self.origin.elapsed().as_secs_f64() * self.rate
        }
    }

    /// A loop stand-in: answers each step-down by making the node a follower, and
    /// records when (seconds since the start) it was asked.
    fn start(
        schedule: Schedule,
        at_zero: f64,
        rate: f64,
    ) -> (watch::Sender<LeaderView>, mpsc::Receiver<Inbound>) {
        let (view_tx, view_rx) = watch::channel(LeaderView::default());
        let (inbound_tx, inbound_rx) = mpsc::channel(4);
        let links = Links {
            inbound: inbound_tx,
            leader: view_rx,
            clock: Arc::new(TokioWall {
                at_zero,
                origin: Instant::now(),
                rate,
            }),
            stop: CancellationToken::new(),
        };
        tokio::spawn(run(schedule, links));
        (view_tx, inbound_rx)
    }

    fn lead(view: &watch::Sender<LeaderView>, leading: bool) {
        view.send_modify(|v| v.is_self = leading);
    }

    /// Wait for the next step-down request and answer it.
    async fn asked(rx: &mut mpsc::Receiver<Inbound>, origin: Instant) -> u64 {
        match rx.recv().await {
            Some(Inbound::StepDown(reply)) => {
                let _ = reply.send(StepDownReply {
                    node: "a:1".into(),
                    was_leader: true,
                    leader_before: None,
                    leader: None,
                    term: 2,
                    start_time: 0.0,
                    message: "stepped down".into(),
                });
                origin.elapsed().as_secs()
            }
            _ => panic!("expected a step-down request"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_has_led_for_the_period_steps_down_and_only_while_it_leads() {
        let origin = Instant::now();
        let every = Schedule {
            every: Some(Duration::from_secs(10)),
            cron: None,
        };
        let (view, mut rx) = start(every, 0.0, 1.0);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(
            rx.try_recv().is_err(),
            "a follower is never asked to step down"
        );
        lead(&view, true);
        assert_eq!(
            asked(&mut rx, origin).await,
            40,
            "ten seconds after it began leading"
        );
        lead(&view, false);
        tokio::time::sleep(Duration::from_secs(5)).await;
        lead(&view, true);
        assert_eq!(
            asked(&mut rx, origin).await,
            55,
            "counted from the new lead"
        );
        lead(&view, false);
        tokio::time::sleep(Duration::from_secs(5)).await; // 60 s
        lead(&view, true);
        tokio::time::sleep(Duration::from_secs(5)).await;
        lead(&view, false); // another node took over on its own at 65 s
        tokio::time::sleep(Duration::from_secs(5)).await;
        lead(&view, true); // and this one leads again at 70 s
        let again = asked(&mut rx, origin).await;
        assert_eq!(again, 80, "a lost lead resets the count");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_steps_down_at_each_time_the_cron_expression_names() {
        let origin = Instant::now();
        let cron = Schedule {
            every: None,
            cron: Some(parse_cron("*/20 * * * * *").expect("parses")),
        };
        // Epoch 1000 s: the next multiples of 20 s are at +0 (excluded: strictly after), +20, +40.
        let (view, mut rx) = start(cron, 1000.0, 1.0);
        lead(&view, true);
        assert_eq!(asked(&mut rx, origin).await, 20);
        // Still leading (nobody took over): the next time, not the same one again.
        assert_eq!(asked(&mut rx, origin).await, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_running_slow_does_not_fire_the_same_cron_time_twice() {
        let origin = Instant::now();
        let cron = Schedule {
            every: None,
            cron: Some(parse_cron("*/20 * * * * *").expect("parses")),
        };
        // 1 % slow: when the monotonic wait for 1020 ends, the wall clock says 1019.8.
        let (view, mut rx) = start(cron, 1000.0, 0.99);
        lead(&view, true);
        assert_eq!(asked(&mut rx, origin).await, 20);
        assert_eq!(
            asked(&mut rx, origin).await,
            40,
            "1040 next, not 1020 again"
        );
    }
}
