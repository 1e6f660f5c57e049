//! The same seed gives the same run, whatever else the process did before.
//!
//! tokio numbers tasks across the whole process and shards each runtime's task list by
//! that number, so the order in which a crashed host's tasks are dropped, and its
//! connections closed, depended on how many tasks had been spawned anywhere before: by
//! earlier tests of the same binary (in an order that depends on the machine's load), or
//! by another simulation. This test moves that number through all four shards and
//! checks that a crash plays out the same every time.
#![cfg(feature = "sim")]

use std::time::Duration;

use les::sim::Cluster;

/// Spawn throwaway tokio tasks until the next task id is `residue` modulo the four
/// shards of a current-thread runtime's task list.
fn next_task_id_at(residue: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        loop {
            let id: u64 = tokio::spawn(async {})
                .id()
                .to_string()
                .parse()
                .expect("a task id is a number");
            if (id + 1) % 4 == residue {
                break;
            }
        }
    });
}

/// Three nodes started a second apart; the leader crashes; the rest agree again.
fn crash_the_leader() -> String {
    let mut sim = Cluster::builder().seed(1).nodes(["n1", "n2", "n3"]).build();
    for name in ["n1", "n2", "n3"] {
        sim.start(name);
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_until_agreed(Duration::from_secs(15))
        .expect("agreement");
    sim.crash("n1");
    sim.run_until_agreed(Duration::from_secs(15))
        .expect("agreement after the crash");
    sim.restart("n1");
    sim.run_for(Duration::from_secs(3));
    format!("{}\n{:?}", sim.snapshot(), sim.trace())
}

#[test]
fn a_crash_plays_out_the_same_whatever_ran_before() {
    let runs: Vec<String> = (0..4)
        .map(|residue| {
            next_task_id_at(residue);
            crash_the_leader()
        })
        .collect();
    for (residue, run) in runs.iter().enumerate().skip(1) {
        assert!(
            *run == runs[0],
            "task ids starting at {residue} mod 4 gave another run than at 0 mod 4:\n{run}\n\nversus\n{}",
            runs[0]
        );
    }
}

/// Simulations on several threads at once (as `cargo test` runs tests) each give the
/// run they give alone: nothing they share perturbs them, so no lock serialises them.
#[test]
fn simulations_running_at_once_give_the_runs_they_give_alone() {
    let alone = crash_the_leader();
    for round in 0..3 {
        let together: Vec<String> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3).map(|_| s.spawn(crash_the_leader)).collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("a simulation thread panicked"))
                .collect()
        });
        for (i, run) in together.iter().enumerate() {
            assert!(
                *run == alone,
                "round {round}, thread {i}: another run than alone:\n{run}\n\nversus\n{alone}"
            );
        }
    }
}
