//! End to end: the real `les` binary, three processes on 127.0.0.1 with ports from the OS.
//!
//! Start three nodes staggered, wait for agreement through `/diag/`, SIGKILL the leader
//! and check the survivors agree on the next most senior; restart the killed node and
//! check it joins as a follower without taking leadership back; SIGTERM the leader and
//! check the hand-off and the clean exit. Waits are bounded and generous: speed is
//! measured by the benchmark, not asserted here.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{agreed_leader, diag, free_ports, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(20);

fn start(port: u16, seeds: &str) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    Proc::spawn(
        &addr,
        Command::new(env!("CARGO_BIN_EXE_les"))
            .args([
                "--bind-interface",
                "127.0.0.1",
                "--bind-port",
                &port.to_string(),
            ])
            .args(["--advertise-addr", &addr, "--seeds", seeds])
            .args(["--interval", "200ms"]),
    )
}

#[test]
fn three_processes_elect_fail_over_rejoin_and_hand_off() {
    let ports = free_ports(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let seeds = addrs.join(",");

    // Start staggered so seniority is unambiguous: 0 is the most senior.
    let mut procs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        procs.push(start(*port, &seeds));
        let a = addrs[i].clone();
        wait_for("node to serve /diag/", WAIT, || diag(&a));
    }
    let leader = wait_for("agreement on a leader", WAIT, || agreed_leader(&addrs));
    assert_eq!(leader, addrs[0], "the most senior node leads");
    let term1 = diag(&addrs[0]).expect("diag").state.term;
    assert!(term1 >= 1);

    // SIGKILL the leader: the survivors agree on the next most senior.
    procs[0].signal(libc::SIGKILL);
    procs[0].wait_exit(WAIT).expect("killed node exits");
    let survivors = addrs[1..].to_vec();
    let next = wait_for("survivors to agree after SIGKILL", WAIT, || {
        agreed_leader(&survivors)
    });
    assert_eq!(next, addrs[1]);
    let term2 = diag(&addrs[1]).expect("diag").state.term;
    assert!(
        term2 > term1,
        "a new leader has a higher term ({term2} vs {term1})"
    );

    // Restart the killed node: it is junior now, joins as a follower, leadership stays.
    procs[0] = start(ports[0], &seeds);
    let l = wait_for("restarted node to join", WAIT, || agreed_leader(&addrs));
    assert_eq!(l, addrs[1], "no preemption by the restarted node");
    let d = diag(&addrs[0]).expect("diag");
    let restarted = d.member_states[&addrs[0]].start_time;
    let leader_start = d.member_states[&addrs[1]].start_time;
    assert!(
        restarted > leader_start,
        "a restarted node has a new, junior start time"
    );

    // SIGTERM the leader: it leaves gracefully, exits 0, and the others take over.
    procs[1].signal(libc::SIGTERM);
    let code = procs[1].wait_exit(WAIT).expect("SIGTERM ends the process");
    assert_eq!(code, 0, "graceful leave exits 0");
    let rest = vec![addrs[0].clone(), addrs[2].clone()];
    let after = wait_for("hand-off after SIGTERM", WAIT, || agreed_leader(&rest));
    assert_eq!(
        after, addrs[2],
        "node 2 started before the restarted node 0"
    );

    for p in &mut procs {
        p.signal(libc::SIGTERM);
    }
    for p in &mut procs {
        if p.child.is_some() {
            assert_eq!(p.wait_exit(WAIT), Some(0), "{} exits 0 on SIGTERM", p.name);
        }
    }
}
