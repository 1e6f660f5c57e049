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

use std::time::Duration;

use sd_notify::NotifyState;
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
    Some(tokio::spawn(run(node.clone(), watchdog_interval())))
}

/// Tell systemd the node is stopping (before a graceful leave). Does nothing outside
/// systemd.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
}

async fn run(node: NodeHandle, watchdog: Option<Duration>) {
    let mut view = node.subscribe();
    let mut ready = false;
    // Ping twice per interval, as systemd recommends; each ping waits for the loop.
    let period = watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600));
    let mut pets = tokio::time::interval(period.max(Duration::from_millis(10)));
    pets.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    report(&node, &view.borrow_and_update(), &mut ready);
    loop {
        tokio::select! {
            changed = view.changed() => {
                if changed.is_err() {
                    return;
                }
                let v = view.borrow_and_update().clone();
                report(&node, &v, &mut ready);
            }
            _ = pets.tick(), if watchdog.is_some() => {
                // Only a loop that answers keeps the process alive.
                if let Ok(Ok(_)) = tokio::time::timeout(period, node.diag()).await {
                    let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                }
            }
            _ = node.stopped() => return,
        }
    }
}

/// Send the status line, and `READY=1` the first time a leader is known.
fn report(node: &NodeHandle, view: &LeaderView, ready: &mut bool) {
    let line = status_line(view, node.addr());
    let status = NotifyState::Status(&line);
    let result = if !*ready && view.leader.is_some() {
        *ready = true;
        sd_notify::notify(false, &[NotifyState::Ready, status])
    } else {
        sd_notify::notify(false, &[status])
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot notify systemd");
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
}
