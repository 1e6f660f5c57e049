//! Key rotation and rollout on running clusters, by SIGHUP.

use super::*;

/// K1 -> K1,K2 -> K2,K1 -> K2 on a running 5-node cluster, SIGHUP after each step on
/// each node: no leader change, no request refused, all five stay members; then a
/// node holding only K1 cannot join.
#[test]
fn key_rotation_on_a_running_cluster_changes_no_leader() {
    let _g = serial();
    let t_start = Instant::now();
    let (k1, k2) = (new_key(), new_key());
    let dir = TempDir::new("rotate");
    let ports = free_ports(6);
    let files: Vec<PathBuf> = ports
        .iter()
        .map(|p| dir.path(&format!("{p}.key")))
        .collect();
    for f in &files {
        write_secret(f, &key_file_text(&[&k1]));
    }
    let fs = files.clone();
    let c = Cluster::start(dir, &ports, 5, move |i, port, seeds| {
        let mut a = std_args(port, seeds);
        a.extend(["--key-file".to_string(), fs[i].display().to_string()]);
        a
    });
    let addrs = c.addrs.clone();
    let before = views(&addrs);
    let refused0: Vec<u64> = addrs.iter().map(|a| refused_all(a)).collect();

    // A botched edit first: an unreadable key file on SIGHUP keeps the current keyring.
    write_secret(&files[2], "not a key\n");
    c.procs[2].signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs(1));
    assert_unchanged(&addrs, &before, "a SIGHUP with a broken key file");
    let log = read_log(&c.dir, c.ports[2]);
    assert!(
        log.contains("cannot reload the keyring"),
        "no error logged for a broken key file; the log:\n{log}"
    );
    assert_eq!(agreed_leader(&addrs).as_deref(), Some(addrs[0].as_str()));
    write_secret(&files[2], &key_file_text(&[&k1])); // re-read at the next SIGHUP

    let steps: [(&str, Vec<&Key>); 3] = [
        ("add K2", vec![&k1, &k2]),
        ("make K2 first", vec![&k2, &k1]),
        ("remove K1", vec![&k2]),
    ];
    for (what, keys) in &steps {
        for (i, p) in c.procs.iter().enumerate() {
            write_secret(&files[i], &key_file_text(keys));
            p.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_secs(1)); // five rounds
        assert_unchanged(&addrs, &before, what);
        assert_eq!(
            agreed_leader(&addrs).as_deref(),
            Some(addrs[0].as_str()),
            "all five list all five after {what}"
        );
    }
    let after = views(&addrs);
    let changes: u64 = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.leader_changes - b.leader_changes)
        .sum();
    println!("key rotation: {changes} leader change(s) across 5 nodes");
    for (i, a) in addrs.iter().enumerate() {
        assert_eq!(
            refused_all(a),
            refused0[i],
            "{a} refused requests during the rotation"
        );
        let log = read_log(&c.dir, c.ports[i]);
        let reloads = log
            .lines()
            .filter(|l| l.contains("keyring reloaded"))
            .count();
        assert_eq!(reloads, 3, "{a} reloaded {reloads} times; its log:\n{log}");
    }

    // A node with only the retired key cannot join.
    let stale = format!("127.0.0.1:{}", ports[5]);
    write_secret(&files[5], &key_file_text(&[&k1]));
    let mut a = std_args(ports[5], &c.seeds());
    a.extend(["--key-file".to_string(), files[5].display().to_string()]);
    let _stale = spawn_les(&c.dir, ports[5], &a);
    std::thread::sleep(Duration::from_secs(5));
    assert_not_member(&addrs, &stale);
    assert_eq!(agreed_leader(&addrs).as_deref(), Some(addrs[0].as_str()));
    assert_unchanged(
        &addrs,
        &before,
        "a node with the retired key trying to join",
    );
    println!("key rotation: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 8: rolling a key out to an unkeyed cluster

fn write_config(path: &Path, port: u16, seeds: &[String], keys: Option<(&Path, bool)>) {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("{s:?}")).collect();
    let mut text = format!(
        "bind_interface = \"127.0.0.1\"\nbind_port = {port}\nadvertise_addr = \"127.0.0.1:{port}\"\nseeds = [{}]\ninterval = \"200ms\"\n",
        seeds.join(", ")
    );
    if let Some((key_file, accept_unsigned)) = keys {
        text.push_str(&format!(
            "key_file = {:?}\naccept_unsigned = {accept_unsigned}\n",
            key_file.display().to_string()
        ));
    }
    write_secret(path, &text);
}

/// Unkeyed -> key_file with accept_unsigned -> accept_unsigned off, through each
/// node's config file and SIGHUP: no leader change, no request refused on the way, and
/// an unsigned request refused at the end.
#[test]
fn rolling_a_key_out_through_config_files_changes_no_leader() {
    let _g = serial();
    let t_start = Instant::now();
    let dir = TempDir::new("rollout");
    let ports = free_ports(3);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let configs: Vec<PathBuf> = ports
        .iter()
        .map(|p| dir.path(&format!("{p}.toml")))
        .collect();
    for (i, p) in ports.iter().enumerate() {
        write_config(&configs[i], *p, &addrs, None);
    }
    let cf = configs.clone();
    let c = Cluster::start(dir, &ports, 3, move |i, _, _| {
        vec!["--config".to_string(), cf[i].display().to_string()]
    });
    let before = views(&addrs);
    let mut refused0: Vec<u64> = addrs.iter().map(|a| refused_all(a)).collect();
    let unsigned0 = refused(&addrs[1], "unsigned");
    let key_file = c.dir.path("key");
    write_secret(&key_file, &key_file_text(&[&new_key()]));

    for (step, accept_unsigned) in [(1, true), (2, false)] {
        for (i, p) in c.procs.iter().enumerate() {
            write_config(
                &configs[i],
                ports[i],
                &addrs,
                Some((&key_file, accept_unsigned)),
            );
            p.signal(libc::SIGHUP);
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        assert_unchanged(&addrs, &before, &format!("rollout step {step}"));
        assert_eq!(
            agreed_leader(&addrs).as_deref(),
            Some(addrs[0].as_str()),
            "all three list all three after step {step}"
        );
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(
                refused_all(a),
                refused0[i],
                "{a} refused requests during rollout step {step}"
            );
        }
        let path = format!("/state/{}", addrs[2]);
        let r = http("127.0.0.8", &addrs[1], "GET", &path, &[]);
        let expected = if accept_unsigned { 200 } else { 401 };
        assert_eq!(
            r.status, expected,
            "unsigned request after step {step}: {r:?}"
        );
        refused0[1] += u64::from(!accept_unsigned);
        // accept_unsigned lets unsigned requests through, not wrong tags.
        let tag = sign(&new_key(), "", "GET", &path, now_secs());
        let r = http(
            "127.0.0.8",
            &addrs[1],
            "GET",
            &path,
            &[("x-les-auth", &tag)],
        );
        assert_eq!(r.status, 401, "wrong-key request after step {step}: {r:?}");
        refused0[1] += 1;
    }
    // The literal `GET /state/x`: not an address, so answered 400 before any
    // authentication (it changes nothing either way). Printed, not asserted.
    let r = http("127.0.0.9", &addrs[1], "GET", "/state/x", &[]);
    println!(
        "rollout: unsigned GET /state/x (not an address): HTTP {}",
        r.status
    );
    assert_ne!(r.status, 200, "{r:?}");
    assert_eq!(refused(&addrs[1], "unsigned"), unsigned0 + 1);
    for (i, a) in addrs.iter().enumerate() {
        let log = read_log(&c.dir, ports[i]);
        let reloads = log
            .lines()
            .filter(|l| l.contains("keyring reloaded"))
            .count();
        assert_eq!(reloads, 2, "{a} reloaded {reloads} times; its log:\n{log}");
    }
    println!("rollout: {:.1?}", t_start.elapsed());
}

// ---------------------------------------------------------------------------------
// Case 9: a connection flood
