//! Invariants of les over random fault schedules.
//!
//! Each schedule (see `schedule.rs`) runs 3 to 9 real nodes through up to six faults —
//! crashes, graceful stops, restarts, symmetric and one-way partitions, message loss,
//! latency, clock skew — then heals everything and watches the cluster converge and stay
//! put. Every invariant is checked on every run, over the whole trace and over each
//! node's term and leader sampled at every tick; each lives in its own file, named for
//! what it guarantees.
//!
//! - `LES_SIM_CASES=5000 cargo test --all-features --test sim_invariants` runs more
//!   schedules than the 500 CI runs.
//! - A failure lists the schedules that broke the invariant, each with the command that
//!   replays it alone: `LES_SIM_SEED=<seed> cargo test --all-features --test sim_invariants`.
//!   Add `LES_SIM_TRACE=1` to have the failure print the whole trace of the run.

mod quorum_run;
mod quorum_schedule;
mod run;
mod schedule;

mod converges_to_the_most_senior;
mod leader_is_stable_without_faults;
mod leaders_are_nodes_heard_from;
mod members_are_up_when_added;
mod terms_never_decrease;

mod quorum_acting_terms_increase;
mod quorum_leader_after_healing;
mod quorum_no_two_leaders_at_once;

use quorum_run::quorum_runs;
use run::{runs, Run};

/// The simulation itself must get through every schedule: a panic inside it (a node that
/// failed to start or to leave) is a bug, and its run cannot be checked.
#[test]
fn every_schedule_runs_to_the_end() {
    all_ran(runs());
}

#[test]
fn every_quorum_schedule_runs_to_the_end() {
    all_ran(quorum_runs());
}

fn all_ran(runs: &[Run]) {
    // For whoever budgets the suite's time (`--nocapture`): simulated time per run.
    let simulated: Vec<u128> = runs
        .iter()
        .filter_map(|r| r.trace.last().map(|e| e.at.as_millis()))
        .collect();
    let total: u128 = simulated.iter().sum();
    println!(
        "{} runs, {:.0} s simulated in all, {:.1} s on average, {:.1} s at most",
        runs.len(),
        total as f64 / 1000.0,
        total as f64 / 1000.0 / simulated.len().max(1) as f64,
        simulated.iter().max().copied().unwrap_or(0) as f64 / 1000.0
    );
    let broken: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            r.broke
                .as_ref()
                .map(|why| format!("{why}\n  {}", r.describe()))
        })
        .collect();
    assert!(
        broken.is_empty(),
        "{} runs broke:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// Same seed, same run: the schedule, and every event of the run, to the tick.
#[test]
fn the_same_seed_replays_the_same_run() {
    replays(runs(), schedule::Schedule::generate, run::execute);
}

#[test]
fn the_same_seed_replays_the_same_quorum_run() {
    replays(
        quorum_runs(),
        schedule::Schedule::generate_quorum,
        quorum_run::execute_quorum,
    );
}

/// Replay the run with the longest trace twice and compare.
fn replays(
    runs: &[Run],
    generate: fn(u64) -> schedule::Schedule,
    execute: fn(&schedule::Schedule) -> Run,
) {
    // Runs with a pause are left out: a paused node's held hook calls were seen to
    // land a tick apart from one replay to the next (the pause gate's forwarding task;
    // an open simulator issue). Every other source of nondeterminism is checked here
    // and in tests/sim_determinism.rs.
    let paused = |r: &&Run| {
        r.schedule
            .steps
            .iter()
            .any(|(f, _)| matches!(f, schedule::Fault::Pause(..)))
    };
    let seed = runs
        .iter()
        .filter(|r| r.broke.is_none() && !paused(r))
        .max_by_key(|r| r.trace.len())
        .map_or(1, |r| r.schedule.seed);
    let schedule = generate(seed);
    assert_eq!(schedule, generate(seed));
    let (a, b) = (execute(&schedule), execute(&schedule));
    assert_eq!(a.trace, b.trace, "seed {seed}");
    assert_eq!(a.terms, b.terms, "seed {seed}");
    assert_eq!(a.leaders, b.leaders, "seed {seed}");
}
