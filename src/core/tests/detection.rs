//! The leader watch and Lifeguard-style detection: how fast a vanished leader goes,
//! and what keeps a lossy network or a slow node from removing live members.

use super::*;

const WATCH: Duration = Duration::from_millis(250);

/// `me` (start time 30) following A (10) with B (20) as the other member, watch on.
fn watcher(me: &str) -> Core {
    let cfg = CoreConfig {
        watch_interval: WATCH,
        ..CoreConfig::default()
    };
    let mut core = Core::new(cfg, me, 30.0, &seeds(&[A, B, me]), 7);
    let (a, b) = (
        state(&[A, B, me], Some(A), 10.0, 1),
        state(&[B, A, me], Some(A), 20.0, 1),
    );
    tick(&mut core, ms(0));
    recv(&mut core, ms(1), A, a.clone());
    let out = recv(&mut core, ms(2), B, b.clone());
    assert_eq!(core.leader(), Some(A));
    // Adopting A sent the first ping; A answers it, and every fetch.
    assert_eq!(pings(&out).len(), 1, "{out:?}");
    pinged(&mut core, ms(3), A, Ok(()));
    settle(&mut core, ms(3), &[(A, a), (B, b)]);
    core
}

/// B (start time 20, watch off) following A (10), with C (30) as the other member.
fn middle_follower() -> Core {
    let mut b = node(B, 20.0, &[A, B, C]);
    tick(&mut b, ms(0));
    recv(&mut b, ms(1), A, state(&[A, B, C], Some(A), 10.0, 1));
    recv(&mut b, ms(2), C, state(&[C, A, B], Some(A), 30.0, 1));
    b
}

fn pings(actions: &[Action]) -> Vec<(&str, Duration)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ping { addr, timeout } => Some((addr.as_str(), *timeout)),
            _ => None,
        })
        .collect()
}

fn probes_of<'a>(actions: &'a [Action], target: &str) -> Vec<&'a str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Probe { target: t, via, .. } if t == target => Some(via.as_str()),
            _ => None,
        })
        .collect()
}

fn pinged(core: &mut Core, now: Duration, addr: &str, result: Result<(), Failure>) -> Vec<Action> {
    core.handle(
        now,
        Event::PingAnswered {
            addr: addr.into(),
            result,
        },
    )
}

fn wake(core: &mut Core, now: Duration) -> Vec<Action> {
    core.handle(now, Event::Wake)
}

/// Drive the watcher up to `until`: wake it at every deadline, answer each ping as
/// `answer(sent)` says (`Ok` after `rtt`, a failure after the ping's timeout) and each
/// probe of A as `probe` says, at once (`None`: never). Returns every action with the
/// time it was emitted.
fn drive(
    core: &mut Core,
    until: Duration,
    rtt: Duration,
    probe: Option<bool>,
    mut answer: impl FnMut(Duration) -> Result<(), Failure>,
) -> Vec<(Duration, Action)> {
    let mut all: Vec<(Duration, Action)> = Vec::new();
    // The ping in flight: to whom, when its answer comes, and what it is.
    let mut ping: Option<(String, Duration, Result<(), Failure>)> = None;
    for _ in 0..10_000 {
        let wake_at = core.next_deadline().filter(|t| *t <= until);
        let answer_first = ping
            .as_ref()
            .is_some_and(|(_, when, _)| *when <= until && wake_at.is_none_or(|w| *when < w));
        let (now, mut out) = if answer_first {
            let (addr, when, result) = ping.take().expect("a ping in flight");
            (when, pinged(core, when, &addr, result))
        } else if let Some(w) = wake_at {
            (w, wake(core, w))
        } else {
            break;
        };
        if let Some(reachable) = probe {
            if !probes_of(&out, A).is_empty() {
                let event = Event::ProbeAnswered {
                    target: A.into(),
                    reachable,
                };
                let more = core.handle(now, event);
                out.extend(more);
            }
        }
        if let Some((addr, timeout)) = pings(&out).first().map(|(a, t)| (a.to_string(), *t)) {
            let result = answer(now);
            let when = now + if result.is_ok() { rtt } else { timeout };
            ping = Some((addr, when, result));
        }
        all.extend(out.into_iter().map(|a| (now, a)));
    }
    all
}

/// [`drive`] without probe answers, returning the actions only.
fn run_watch(
    core: &mut Core,
    until: Duration,
    rtt: Duration,
    answer: impl FnMut(Duration) -> Result<(), Failure>,
) -> Vec<Action> {
    drive(core, until, rtt, None, answer)
        .into_iter()
        .map(|(_, a)| a)
        .collect()
}

#[test]
fn a_follower_pings_its_leader_every_watch_interval_and_the_leader_pings_nobody() {
    let mut c = watcher(C);
    let out = run_watch(&mut c, ms(2000), ms(1), |_| Ok(()));
    let n = pings(&out).len();
    assert!((7..=9).contains(&n), "{n} pings in 2 s");
    assert!(pings(&out)
        .iter()
        .all(|(a, t)| *a == A && *t == PING_TIMEOUT_FLOOR));
    assert!(removed(&out).is_empty());

    let mut a = node(A, 10.0, &[A, B]);
    tick(&mut a, ms(0));
    assert!(
        a.next_deadline().is_none(),
        "watch off by default in the core"
    );
}

#[test]
fn a_vanished_leader_is_removed_within_a_second_on_a_helpers_confirmation() {
    let mut c = watcher(C);
    run_watch(&mut c, ms(1000), ms(1), |_| Ok(()));
    let gone = ms(1000);
    let out = drive(&mut c, ms(3000), ms(1), Some(false), |_| {
        Err(Failure::Timeout)
    });
    let asked: Vec<&str> = out
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Probe { target, via, .. } if target == A => Some(via.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked.first(),
        Some(&B),
        "the second miss asks the other member"
    );
    let removed_at = out
        .iter()
        .find(|(_, a)| matches!(a, Action::MemberRemoved { addr, .. } if addr == A))
        .map(|(t, _)| *t)
        .expect("A removed");
    let took = removed_at - gone;
    assert!(took < ms(1200), "removed {took:?} after its last answer");
    assert_eq!(
        c.leader(),
        Some(B),
        "C follows the next most senior at once"
    );
}

#[test]
fn without_a_confirmation_the_watch_waits_out_the_suspicion_timeout() {
    let mut c = watcher(C);
    run_watch(&mut c, ms(1000), ms(1), |_| Ok(()));
    // Every ping times out, and B is never heard from on A's account.
    let out = drive(&mut c, ms(4500), ms(1), None, |_| Err(Failure::Timeout));
    let at = |pred: &dyn Fn(&Action) -> bool| out.iter().find(|(_, a)| pred(a)).map(|(t, _)| *t);
    let suspected = at(&|a| matches!(a, Action::Probe { .. })).expect("A suspected");
    let removed_at = at(&|a| matches!(a, Action::MemberRemoved { .. })).expect("A removed");
    let timeout = CoreConfig::default().suspicion_timeout;
    assert!(
        removed_at >= suspected + timeout,
        "misses alone wait out the suspicion timeout: suspected at {suspected:?}, removed at {removed_at:?}"
    );
    assert!(removed_at <= suspected + timeout + WATCH + PING_TIMEOUT_FLOOR);
}

#[test]
fn one_answered_ping_clears_the_misses() {
    let mut c = watcher(C);
    let mut n = 0;
    // Every other ping is lost, for ten seconds: never two in a row.
    let out = run_watch(&mut c, ms(10_000), ms(1), |_| {
        n += 1;
        if n % 2 == 0 {
            Err(Failure::Timeout)
        } else {
            Ok(())
        }
    });
    assert!(removed(&out).is_empty());
    assert!(probes_of(&out, A).is_empty(), "one miss is not a suspicion");
    assert_eq!(c.leader(), Some(A));
}

#[test]
fn a_refused_ping_is_checked_with_a_fetch_at_once() {
    let mut c = watcher(C);
    let at = c.next_deadline().expect("a ping is due");
    let out = wake(&mut c, at);
    assert_eq!(pings(&out).len(), 1);
    let out = pinged(&mut c, at + ms(1), A, Err(Failure::Refused));
    assert_eq!(fetches(&out), vec![A]);
}

#[test]
fn with_loss_removal_needs_more_evidence() {
    let mut b = middle_follower();
    // A long spell in which a fifth of the contacts with C fail (each time out once,
    // then succeed).
    let mut t = 10;
    for i in 0..2000u64 {
        t += 5;
        if i % 5 == 0 {
            fail(&mut b, ms(t), C, Failure::Timeout);
        }
        recv(&mut b, ms(t + 1), C, state(&[C, A, B], Some(A), 30.0, 1));
    }
    let need = b.diag(ms(t)).detector.expect("detector").evidence_needed;
    assert!(need >= 8, "{need}");
    // A now times out: three failures, one confirmed by C, remove nobody any more.
    let t0 = t + 10;
    fail(&mut b, ms(t0), A, Failure::Timeout);
    let out = b.handle(
        ms(t0 + 1),
        Event::ProbeAnswered {
            target: A.into(),
            reachable: false,
        },
    );
    assert!(removed(&out).is_empty());
    let out = fail(&mut b, ms(t0 + 500), A, Failure::Timeout);
    assert!(removed(&out).is_empty(), "3 < {need}");
    // Enough failures in a row do.
    let mut gone = false;
    for k in 0..need {
        let out = fail(&mut b, ms(t0 + 600 + u64::from(k)), A, Failure::Timeout);
        gone |= !removed(&out).is_empty();
    }
    assert!(gone);
}

/// A (start time 10) leading B (20) and C (30), watch on.
fn watched_leader() -> Core {
    let cfg = CoreConfig {
        watch_interval: WATCH,
        ..CoreConfig::default()
    };
    let mut a = Core::new(cfg, A, 10.0, &seeds(&[A, B, C]), 7);
    tick(&mut a, ms(0));
    let (b, c) = (
        state(&[B, A, C], Some(A), 20.0, 1),
        state(&[C, A, B], Some(A), 30.0, 1),
    );
    recv(&mut a, ms(1), B, b.clone());
    recv(&mut a, ms(2), C, c.clone());
    settle(&mut a, ms(3), &[(B, b), (C, c)]);
    assert_eq!(a.leader(), Some(A));
    a
}

#[test]
fn a_late_wake_up_widens_this_nodes_own_timeouts() {
    let mut a = watched_leader();
    let calm = a.diag(ms(3)).detector.expect("detector");
    // Three wake-ups, each 150 ms later than asked for (more than half the interval).
    let mut t = ms(3);
    for _ in 0..3 {
        t = a
            .next_deadline()
            .expect("a leader wakes every watch interval")
            + ms(150);
        wake(&mut a, t);
    }
    let slow = a.diag(t).detector.expect("detector");
    assert_eq!(slow.health_score, calm.health_score + 3);
    assert!(slow.ping_timeout_ms > calm.ping_timeout_ms);
    assert!(slow.evidence_needed > calm.evidence_needed);
    // Punctual ones bring it back down.
    for _ in 0..3 {
        t = a.next_deadline().expect("a deadline");
        wake(&mut a, t);
    }
    assert_eq!(
        a.diag(t).detector.expect("detector").health_score,
        calm.health_score
    );
}

#[test]
fn with_the_watch_a_leaders_gap_longer_than_the_fastest_removal_is_a_pause() {
    let mut a = watched_leader();
    let before = a.start_time();
    // A wake-up 150 ms late is within the threshold: not a pause.
    let late = a.next_deadline().expect("a deadline") + ms(150);
    wake(&mut a, late);
    assert_eq!(a.start_time(), before);
    // Frozen for 600 ms: its watchers may have removed it meanwhile.
    let out = wake(&mut a, late + ms(600));
    assert!(a.start_time() > before, "{out:?}");
    // A follower keeps the classic threshold: it is not watched.
    let mut c = watcher(C);
    let before = c.start_time();
    tick(&mut c, ms(1000));
    tick(&mut c, ms(2000));
    assert_eq!(c.start_time(), before, "ticks a round apart are no pause");
}

#[test]
fn a_suspect_that_calls_is_fetched_at_once() {
    let mut b = middle_follower();
    fail(&mut b, ms(500), C, Failure::Timeout);
    let out = b.handle(ms(600), Event::Announced { addr: C.into() });
    assert_eq!(fetches(&out), vec![C], "the refutation is checked");
    recv(&mut b, ms(601), C, state(&[C, A, B], Some(A), 30.0, 1));
    assert!(!b.diag(ms(601)).member_info[C].suspect);
}

#[test]
fn in_a_large_cluster_only_the_most_senior_followers_watch() {
    let n = ALL_WATCH_UP_TO + 8;
    let addrs: Vec<String> = (0..n).map(|i| format!("n{i}:1")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let cfg = CoreConfig {
        watch_interval: WATCH,
        ..CoreConfig::default()
    };
    let mut watchers = 0;
    for (i, me) in refs.iter().enumerate().skip(1) {
        let mut core = Core::new(cfg.clone(), *me, i as f64, &seeds(&refs[..3]), 1);
        let out = tick(&mut core, ms(0));
        answer_numbered(&mut core, ms(1), &refs, &out);
        assert_eq!(core.leader(), Some("n0:1"));
        watchers += usize::from(core.watching().is_some());
    }
    assert_eq!(watchers, WATCHERS, "n1 ..= n8, the followers next in line");
}

#[test]
fn a_peer_that_removed_a_suspect_confirms_the_suspicion() {
    let mut b = middle_follower();
    // Three timeouts of C; A never answers the probes.
    for t in [100, 200, 300] {
        assert!(removed(&fail(&mut b, ms(t), C, Failure::Timeout)).is_empty());
    }
    let out = tick(&mut b, ms(1000));
    assert!(
        removed(&out).is_empty(),
        "no confirmation, within the suspicion timeout"
    );
    // A says it removed C: that is a confirmation, though not a failure of ours.
    let mut a = state(&[A, B], Some(A), 10.0, 1);
    a.revision = 2;
    a.removed = vec![C.to_string()];
    recv(&mut b, ms(1100), A, a);
    assert!(b.is_member(C), "hearsay alone removes nobody");
    let out = tick(&mut b, ms(2000));
    assert_eq!(removed(&out), vec![(C, RemoveReason::Timeout)]);
}
