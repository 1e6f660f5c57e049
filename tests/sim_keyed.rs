//! Keyed clusters in the simulator: the same rules as `tests/keyed.rs` on real sockets,
//! here under a seeded schedule, with a crash in the middle of a key rotation.

use std::time::Duration;

use les::auth::{Key, Keyring, Settings};
use les::sim::{Cluster, NodeSpec};

fn keyed(keys: &[&Key]) -> Settings {
    Settings {
        keyring: Keyring::new(keys.iter().map(|k| (*k).clone()).collect()),
        accept_unsigned: false,
    }
}

fn key(b: u8) -> Key {
    Key::from_bytes([b; 32])
}

#[test]
fn a_rotation_with_a_crash_in_the_middle_moves_no_leader() {
    let (k1, k2) = (key(1), key(2));
    let names = ["n1", "n2", "n3", "n4"];
    let mut builder = Cluster::builder().seed(7);
    for n in &names[..3] {
        builder = builder.node(NodeSpec::new(*n).auth(keyed(&[&k1])));
    }
    // n4 has another key: it cannot join until the others' rings hold it.
    let mut sim = builder
        .node(NodeSpec::new("n4").auth(keyed(&[&k2])))
        .build();
    for n in names {
        sim.start(n);
        sim.run_for(Duration::from_secs(1));
    }
    sim.run_for(Duration::from_secs(3));
    for n in &names[..3] {
        assert_eq!(sim.leader(n).as_deref(), Some("n1"), "{n}");
        assert_eq!(sim.diag(n).expect("diag").state.members.len(), 3, "{n}");
    }
    assert_eq!(sim.diag("n4").expect("diag").state.members.len(), 1);
    let before = sim.leader_changes().len();

    // Install k2 everywhere, switch to it, remove k1; n3 crashes and restarts between
    // the steps and comes back with the settings of the step it missed.
    for n in &names[..3] {
        sim.reload_auth(n, keyed(&[&k1, &k2]));
    }
    sim.run_for(Duration::from_secs(2));
    for n in &names[..3] {
        sim.reload_auth(n, keyed(&[&k2, &k1]));
    }
    sim.crash("n3");
    sim.run_for(Duration::from_secs(5));
    sim.restart("n3");
    sim.run_for(Duration::from_secs(3));
    for n in &names[..3] {
        sim.reload_auth(n, keyed(&[&k2]));
    }
    sim.run_for(Duration::from_secs(5));

    // n1 and n2 never changed leader; n3 only through its crash and restart, and n4
    // once, when the others' rings took k2 (its key) and it could join, as a follower.
    let changes: Vec<_> = sim.leader_changes().into_iter().skip(before).collect();
    for c in &changes {
        assert!(
            (c.node == "n3" || c.node == "n4") && c.to.as_deref() == Some("n1"),
            "only the restarted node and the newcomer changed leader, to n1: {changes:?}"
        );
    }
    assert_eq!(changes.iter().filter(|c| c.node == "n4").count(), 1);
    for n in names {
        assert_eq!(sim.leader(n).as_deref(), Some("n1"), "{n}");
        assert_eq!(sim.diag(n).expect("diag").state.members.len(), 4, "{n}");
    }
}
