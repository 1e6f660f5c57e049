//! systemd integration for daemons: readiness, status lines and the watchdog.
//!
//! Under a unit with `Type=notify` (see `dist/les.service`) systemd waits for
//! `READY=1` before it counts the service as started; les sends it once the node knows a
//! leader — it has joined a cluster, or it is alone by design (its seeds name only
//! itself) — so `systemctl start` and units ordered `After=les.service` mean "part of a
//! cluster". Every change of leader is also a `STATUS=` line (`systemctl status les`).
//!
//! With `WatchdogSec=` systemd kills a service that stops pinging it. The ping here is
//! sent only after the node's election loop has answered a `/diag/` request, so it is
//! the loop itself that keeps the process alive: a loop that is stuck stops the pings,
//! systemd kills the process (`SIGABRT`), and the crash guard runs `on_follower`, so a
//! hung les never keeps a virtual IP.
//!
//! Without `NOTIFY_SOCKET` in the environment (not under systemd) none of this runs.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::node::{LeaderView, NodeHandle};

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`), if it did and the request
/// is for this process (`WATCHDOG_PID`, when set, names it), as sd_watchdog_enabled(3).
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether systemd listens for notifications (`NOTIFY_SOCKET` is set).
pub fn under_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The `STATUS=` line for `view`.
pub fn status_line(view: &LeaderView, me: &str) -> String {
    match (&view.leader, view.is_self) {
        (Some(_), true) => format!("leader, term {}", view.term),
        (Some(l), false) => format!("follower of {l}, term {}", view.term),
        (None, _) => format!("no leader yet ({me} waits for another node or the database)"),
    }
}

/// Start telling systemd about `node`: readiness, status and watchdog pings. `None`
/// (nothing started) when not under systemd. The task ends when the node stops.
pub fn spawn(node: &NodeHandle) -> Option<JoinHandle<()>> {
    if !under_systemd() {
        return None;
    }
    let watched = node.clone();
    let probe = move || {
        let node = watched.clone();
        async move { node.diag().await.is_ok() }
    };
    let task = Watch {
        me: node.addr().to_string(),
        view: node.subscribe(),
        watchdog: watchdog_interval(),
        notify: |states: &[NotifyState]| sd_notify::notify(false, states),
        ready: false,
    };
    let stopped = node.clone();
    Some(tokio::spawn(async move {
        tokio::select! {
            () = task.run(probe) => {}
            () = stopped.stopped() => {}
        }
    }))
}

/// Tell systemd the node is stopping (before a graceful leave). Does nothing outside
/// systemd.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

/// The notifying task, apart from where its notes go and how the loop is asked whether
/// it answers (so a test can stall the loop and read the notes).
struct Watch<N> {
    me: String,
    view: watch::Receiver<LeaderView>,
    watchdog: Option<Duration>,
    notify: N,
    /// Whether `READY=1` has been sent.
    ready: bool,
}

impl<N: FnMut(&[NotifyState]) -> std::io::Result<()>> Watch<N> {
    /// Report every view change, and ping the watchdog twice per interval (as systemd
    /// recommends) but only when `answers()` says the election loop answered within half
    /// an interval. Returns when the node's view is gone.
    async fn run<P, F>(mut self, answers: P)
    where
        P: Fn() -> F,
        F: Future<Output = bool>,
    {
        let period = self
            .watchdog
            .map(|w| w / 2)
            .unwrap_or(Duration::from_secs(3600));
        let mut pets = tokio::time::interval(period.max(Duration::from_millis(10)));
        pets.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let first = self.view.borrow_and_update().clone();
        self.report(&first);
        loop {
            tokio::select! {
                changed = self.view.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let v = self.view.borrow_and_update().clone();
                    self.report(&v);
                }
                _ = pets.tick(), if self.watchdog.is_some() => {
                    // Only a loop that answers keeps the process alive.
                    if let Ok(true) = tokio::time::timeout(period, answers()).await {
                        let _ = (self.notify)(&[NotifyState::Watchdog]);
                    }
                }
            }
        }
    }

    /// Send the status line, and `READY=1` the first time a leader is known.
    fn report(&mut self, view: &LeaderView) {
        let line = status_line(view, &self.me);
        let status = NotifyState::Status(&line);
        let result = if !self.ready && view.leader.is_some() {
            self.ready = true;
            (self.notify)(&[NotifyState::Ready, status])
        } else {
            (self.notify)(&[status])
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_the_role_and_the_term() {
        let mut v = LeaderView {
            leader: Some("a:1".into()),
            term: 4,
            is_self: true,
            lease_until: None,
        };
        assert_eq!(status_line(&v, "a:1"), "leader, term 4");
        v.is_self = false;
        assert_eq!(status_line(&v, "b:1"), "follower of a:1, term 4");
        v.leader = None;
        assert!(status_line(&v, "b:1").starts_with("no leader yet"));
    }

    /// Run a [`Watch`] with a 200 ms watchdog for `secs` of paused time, the loop
    /// answering while `answering` says so; the notes it sent, in order.
    async fn notes(
        answering: impl Fn() -> bool + Clone + 'static,
        secs: u64,
        leader: Option<&str>,
    ) -> Vec<String> {
        let (tx, view) = watch::channel(LeaderView {
            leader: leader.map(str::to_string),
            term: 1,
            is_self: true,
            lease_until: None,
        });
        let sent = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let log = sent.clone();
        let task = Watch {
            me: "a:1".into(),
            view,
            watchdog: Some(Duration::from_millis(200)),
            notify: move |states: &[NotifyState]| {
                let line: Vec<String> = states.iter().map(|s| s.to_string()).collect();
                log.borrow_mut().push(line.join("\n"));
                Ok(())
            },
            ready: false,
        };
        let probe = move || {
            let answering = answering.clone();
            async move {
                if !answering() {
                    std::future::pending::<()>().await; // a stuck loop never answers
                }
                true
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(secs), task.run(probe)).await;
        drop(tx);
        let got = sent.borrow().clone();
        got
    }

    fn pings(notes: &[String]) -> usize {
        notes.iter().filter(|n| *n == "WATCHDOG=1").count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_that_answers_pets_the_watchdog_twice_per_interval() {
        let notes = notes(|| true, 2, Some("a:1")).await;
        assert!(
            notes[0].starts_with("READY=1\nSTATUS=leader, term 1"),
            "{notes:?}"
        );
        // 2 s at a ping per 100 ms.
        assert!((19..=21).contains(&pings(&notes)), "{notes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_loop_stops_the_pings_so_systemd_kills_the_process() {
        let stuck_after = std::rc::Rc::new(std::cell::Cell::new(0u32));
        let calls = stuck_after.clone();
        // Answers its first 5 probes, then is stuck for good.
        let answering = move || {
            calls.set(calls.get() + 1);
            calls.get() <= 5
        };
        let notes = notes(answering, 3, Some("a:1")).await;
        assert_eq!(pings(&notes), 5, "{notes:?}");
        // Each stuck probe is abandoned after half an interval and retried, so the
        // task itself never hangs: it was asked again several times.
        assert!(stuck_after.get() > 8, "{}", stuck_after.get());
    }

    #[tokio::test(start_paused = true)]
    async fn ready_waits_for_a_leader() {
        let notes = notes(|| true, 1, None).await;
        assert!(notes[0].starts_with("STATUS=no leader yet"), "{notes:?}");
        assert!(!notes.iter().any(|n| n.contains("READY=1")), "{notes:?}");
    }
}
