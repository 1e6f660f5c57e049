//! Without a key: leave notices checked, probes only of members, other clusters apart.

use super::*;

/// Unkeyed, a forged leave for the live leader is served (200) but checked with the
/// leader itself, so nothing changes; a probe of a non-member is refused (403) without
/// a connection; nodes of another cluster name, or of none, never merge.
#[test]
fn unkeyed_cluster_checks_leaves_refuses_probes_and_other_clusters() {
    let _g = serial();
    let t_start = Instant::now();
    let ports = free_ports(5);
    let c = Cluster::start(TempDir::new("prod"), &ports, 3, |_, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--cluster".to_string(), "prod".to_string()]);
        a
    });
    let addrs = c.addrs.clone();
    let (leader, follower) = (addrs[0].clone(), addrs[1].clone());
    let before = views(&addrs);
    let cluster0: Vec<u64> = addrs.iter().map(|a| refused(a, "cluster")).collect();
    let prod = [("x-les-cluster", "prod")];

    // 6. Two outsiders seeded with the cluster: one named `other`, one unnamed. They
    // run through the 5 s of case 2.
    let other = format!("127.0.0.1:{}", ports[3]);
    let mut a = std_args(ports[3], &c.seeds());
    a.extend(["--cluster".to_string(), "other".to_string()]);
    let _other = spawn_les(&c.dir, ports[3], &a);
    let unnamed = format!("127.0.0.1:{}", ports[4]);
    let _unnamed = spawn_les(&c.dir, ports[4], &std_args(ports[4], &c.seeds()));

    // 3 (unkeyed). A probe of a non-member: 403, no connection; without the cluster
    // name, 403 as another cluster.
    let src = "127.0.0.6";
    let target = FakeServer::start(None);
    let path = format!("/probe/{}", target.addr);
    let r = http(src, &follower, "GET", &path, &prod);
    assert_eq!(r.status, 403, "probe of a non-member: {r:?}");
    assert!(r.body.contains("only members"), "{r:?}");
    let r = http(src, &follower, "GET", &path, &[]);
    assert_eq!(r.status, 403, "probe without the cluster name: {r:?}");
    assert!(r.body.contains("cluster"), "{r:?}");

    // 2 (unkeyed). A forged leave for the live leader, sent to both followers.
    let src = "127.0.0.7";
    let path = format!("/leave/{leader}");
    for node in [&follower, &addrs[2]] {
        let r = http(src, node, "POST", &path, &prod);
        assert_eq!(r.status, 200, "unkeyed leave to {node}: {r:?}");
        let c0 = refused(node, "cluster");
        let r = http(src, node, "POST", &path, &[]);
        assert_eq!(r.status, 403, "leave without the cluster name: {r:?}");
        // At least: the outsiders of case 6 are being refused meanwhile too.
        assert!(
            refused(node, "cluster") > c0,
            "cluster refusal counted on {node}"
        );
    }
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(5) {
        assert_unchanged(&addrs, &before, "a forged leave on an unkeyed cluster");
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(target.connections(), 0, "the probe target was contacted");
    assert_refusal_logged(&read_log(&c.dir, c.ports[1]), "127.0.0.6", "the follower");

    // 6. The outsiders never merged, and were refused as another cluster.
    for outsider in [&other, &unnamed] {
        assert_not_member(&addrs, outsider);
        assert_eq!(members_of(outsider), vec![outsider.clone()], "{outsider}");
    }
    for (i, a) in addrs.iter().enumerate() {
        assert!(
            refused(a, "cluster") >= cluster0[i] + 2,
            "{a} did not count the outsiders' requests as another cluster"
        );
    }
    for port in [ports[3], ports[4]] {
        let log = read_log(&c.dir, port);
        let n = log
            .lines()
            .filter(|l| l.contains("refused our request"))
            .count();
        println!("outsider 127.0.0.1:{port}: {n} line(s) saying it was refused");
        assert!(n >= 1, "outsider {port} never logged a refusal:\n{log}");
    }
    assert_unchanged(&addrs, &before, "outsiders of other clusters for 5 s");
    println!("unkeyed attacks: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 7: key rotation
