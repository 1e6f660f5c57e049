//! Running the quorum-mode schedules (see `quorum_schedule.rs`): the faults, then a
//! heal with a quorum up and connected, then watching for one acting leader that every
//! up node follows, and for how long it lasts.

use std::sync::OnceLock;
use std::time::Duration;

use les::config::Config;
use les::sim::{ActingSpan, Cluster};

use crate::run::{build, heal_all, play, run_all, run_catching, seeds, Ending, Run, Samples};
use crate::schedule::Schedule;

/// Environment variable: how many quorum-mode schedules to run (default
/// [`DEFAULT_QUORUM_CASES`]). `LES_SIM_SEED` and `LES_SIM_TRACE` work as for the others.
pub const QUORUM_CASES_ENV: &str = "LES_SIM_QUORUM_CASES";
/// Quorum-mode schedules CI runs.
pub const DEFAULT_QUORUM_CASES: usize = 2_000;
/// The bound on clock rates the core assumes (ρ): a promise lasts
/// `lease × (1+ρ)/(1−ρ)` on the follower's clock.
pub const RHO: f64 = 0.05;
/// How long an agreement must last for the run to count it as the outcome, and the
/// quiet period after it in which no node may change leader: more than a lease, so a
/// lease that is not renewed shows.
pub const STABLE: Duration = Duration::from_secs(5);

/// The liveness bound: after the last heal, with a quorum up and connected and no more
/// faults, one node acts as leader and every up node follows it within this time.
///
/// The slowest path to it: a request sent into the fault times out
/// (`request_timeout`), the suspicion it raised runs out (`suspicion_timeout`) and a
/// removal makes a new leader necessary, which must wait for the followers' promises
/// to the old one (`lease × (1+ρ)/(1−ρ)`); then five rounds (`interval`) for the
/// election's round trips, a rejoining junior, and the ticks between.
pub fn liveness_bound(config: &Config) -> Duration {
    config.request_timeout
        + config.suspicion_timeout
        + config.lease.mul_f64((1.0 + RHO) / (1.0 - RHO))
        + config.interval * 5
}

/// Every quorum-mode run, done once per test binary, spread over the machine's cores.
pub fn quorum_runs() -> &'static [Run] {
    static RUNS: OnceLock<Vec<Run>> = OnceLock::new();
    RUNS.get_or_init(|| {
        run_all(&seeds(QUORUM_CASES_ENV, DEFAULT_QUORUM_CASES), |seed| {
            run_catching(Schedule::generate_quorum(seed), execute_quorum)
        })
    })
}

/// The spans of acting leadership in a run (see `les::sim::ActingSpan`).
pub fn acting(run: &Run) -> Vec<ActingSpan> {
    les::sim::acting_spans(&run.trace)
}

/// Run one quorum-mode schedule to the end.
pub fn execute_quorum(schedule: &Schedule) -> Run {
    let mut sim = build(schedule);
    let mut samples = Samples::default();
    let max_latency = play(&mut sim, schedule, &mut samples);

    // The last fault heals: links repaired, no loss, nobody paused (pauses end within
    // their step), and enough nodes up for a quorum with an eligible one among them.
    let healed_at = heal_all(&mut sim, |sim| quorum_up(sim, schedule));
    let limit = healed_at + liveness_bound(sim.config("n1")) + STABLE;
    // The leader every up node names, and since when, without a break.
    let mut agreed: Option<(String, Duration)> = None;
    loop {
        let now_agreed = sim.agreed_leader();
        if now_agreed.as_deref() != agreed.as_ref().map(|(l, _)| l.as_str()) {
            agreed = now_agreed.map(|l| (l, sim.now()));
        }
        let lasted = agreed
            .as_ref()
            .is_some_and(|(_, since)| sim.now() - *since >= STABLE);
        if lasted {
            // Sampling sees views once a tick; a node may have changed leader and back
            // within one (a paused node removed by its peers after the heal, rejoining
            // as junior). Agreement counts from the last change the trace shows.
            let last_change = sim
                .leader_changes()
                .last()
                .map(|c| Duration::from_millis(c.at_ms));
            if let (Some((_, since)), Some(change)) = (agreed.as_mut(), last_change) {
                if change > *since {
                    *since = change;
                    continue;
                }
            }
            break;
        }
        if sim.now() >= limit {
            break;
        }
        sim.step();
        samples.take(&sim);
    }
    let agreed_since = agreed.map(|(_, since)| since);
    let ending = Ending {
        healed_at,
        agreed_since,
        stable_from: agreed_since.filter(|since| sim.now() - *since >= STABLE),
        max_latency,
    };
    Run::finished(schedule, &sim, samples, ending)
}

/// Whether a quorum of nodes is up, an eligible one among them.
fn quorum_up(sim: &Cluster, schedule: &Schedule) -> bool {
    let up = sim.up();
    up.len() >= schedule.quorum && up.iter().any(|n| schedule.witness.as_ref() != Some(n))
}
