//! The `les` binary's command line: help text, and clear errors with the right exit
//! codes for bad input (2) and runtime failures (1).

mod common;

use std::process::{Command, Output};

use common::free_ports;

fn les(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_les"));
    cmd.args(args).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("LES_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run les")
}

/// `les` with a valid one-node address and seed list, then `extra`.
fn les_node(extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "--advertise-addr",
        "localhost:4000",
        "--seeds",
        "localhost:4000",
    ];
    args.extend_from_slice(extra);
    les(&args, env)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = les(&["--help"], &[]);
    assert!(out.status.success());
    insta::assert_snapshot!(String::from_utf8_lossy(&out.stdout));
}

#[test]
fn missing_required_settings_exit_2_and_name_the_key() {
    let out = les(&["--seeds", "localhost:4000"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("advertise_addr") && err.contains("--advertise-addr"),
        "{err}"
    );
    assert_eq!(
        err.lines().next().map(|l| l.starts_with("les: error:")),
        Some(true),
        "{err}"
    );
}

#[test]
fn with_no_arguments_every_missing_setting_is_named_at_once() {
    let out = les(&[], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("`advertise_addr` is required"), "{err}");
    assert!(err.contains("`seeds` is required"), "{err}");
}

#[test]
fn an_unparseable_address_exits_2_and_names_it() {
    let out = les(
        &["--advertise-addr", "localhost", "--seeds", "localhost:4000"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("advertise_addr") && err.contains("no `:port`"),
        "{err}"
    );

    let out = les(
        &["--advertise-addr", "localhost:4000", "--seeds", "a:1,b"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--seeds"), "{}", stderr(&out));
}

#[test]
fn a_bad_duration_exits_2_and_names_the_flag() {
    let out = les_node(&["--interval", "fast"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--interval"), "{}", stderr(&out));
}

#[test]
fn a_bad_environment_variable_exits_2_and_names_it() {
    let out = les_node(&[], &[("LES_BIND_PORT", "eighty")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("LES_BIND_PORT=\"eighty\""),
        "named as typed: {err}"
    );
    assert!(err.contains("--bind-port"), "{err}");
    // Given as a flag, it is reported as the flag.
    let out = les_node(&["--bind-port", "eighty"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!stderr(&out).contains("LES_BIND_PORT"), "{}", stderr(&out));
}

#[test]
fn an_unknown_config_key_exits_2_and_names_it() {
    let dir = std::env::temp_dir().join(format!("les-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("les.toml");
    std::fs::write(
        &file,
        "advertise_addr = \"localhost:4000\"\nseeds = [\"localhost:4000\"]\nintervall = \"1s\"\n",
    )
    .unwrap();
    let out = les(&["--config", file.to_str().unwrap()], &[]);
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("intervall") && err.contains("les.toml"),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_a_clear_error_not_a_silent_process() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = les(
        &[
            "--bind-interface",
            "127.0.0.1",
            "--bind-port",
            &port.to_string(),
            "--advertise-addr",
            &addr,
            "--seeds",
            &addr,
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot listen on") && err.contains(&addr),
        "{err}"
    );
    assert_eq!(err.matches("in use").count(), 1, "the cause once: {err}");
    assert!(err.contains("choose another --bind-port"), "a hint: {err}");
}

#[test]
fn completions_and_the_man_page_come_from_the_flag_definitions() {
    for (shell, marker) in [
        ("bash", "_les()"),
        ("zsh", "#compdef les"),
        ("fish", "complete -c les"),
    ] {
        let out = les(&["completions", shell], &[]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(
            script.contains("backend") && script.contains("step-down"),
            "{shell}"
        );
    }
    let out = les(&["completions", "tcsh"], &[]);
    assert_eq!(out.status.code(), Some(2), "an unknown shell is bad input");
    let out = les(&["man"], &[]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH les"),
        "{page}"
    );
    assert!(
        page.contains("LES_BACKEND"),
        "every flag, with its variable"
    );
}

#[test]
fn status_of_a_node_that_is_not_running_says_so() {
    let port = free_ports(1)[0];
    let out = les(&["status", &format!("127.0.0.1:{port}")], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot read /diag/") && err.contains("refused"),
        "{err}"
    );
    assert!(err.contains("is les running there?"), "a hint: {err}");
}

#[test]
fn status_of_a_lone_node_waiting_for_its_seeds_says_so_and_exits_3() {
    let ports = free_ports(2);
    let addr = format!("127.0.0.1:{}", ports[0]);
    // Its only other seed never answers: it waits, and names no leader.
    let seeds = format!("{addr},127.0.0.1:{}", ports[1]);
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_les"))
        .args([
            "--bind-interface",
            "127.0.0.1",
            "--bind-port",
            &ports[0].to_string(),
        ])
        .args(["--advertise-addr", &addr, "--seeds", &seeds])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start les");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let out = loop {
        let out = les(&["status", &addr], &[]);
        if out.status.code() != Some(1) || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("waiting to hear from another node"), "{said}");
    // The node says it too, in its log (every 5 s while alone): read until it does.
    // Bounded: a watchdog closes the node's log by killing it after 15 s.
    use std::io::BufRead as _;
    let log = std::io::BufReader::new(node.stderr.take().expect("stderr"));
    let pid = node.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            for _ in 0..150 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            // SAFETY: kill(2) of the child this test started, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        })
    };
    let waiting = log
        .lines()
        .map_while(Result::ok)
        .take(50)
        .any(|l| l.contains("waiting for a seed before electing"));
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watchdog.join();
    let _ = node.kill();
    let _ = node.wait();
    assert!(waiting, "the lone node logs what it waits for");
}

#[test]
fn a_bad_quorum_exits_2_and_names_the_flag() {
    let out = les_node(&["--quorum", "most"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--quorum"), "{}", stderr(&out));
}

#[test]
fn a_lease_too_short_for_quorum_mode_exits_2_and_names_lease() {
    let out = les_node(&["--quorum", "2"], &[("LES_LEASE", "500ms")]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`lease`") && err.contains("request_timeout"),
        "{err}"
    );
}

#[test]
fn a_bad_or_missing_key_file_exits_2_and_names_file_and_line() {
    let dir = std::env::temp_dir().join(format!("les-cli-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("keys");
    std::fs::write(&bad, "# ring\nnot-a-key\n").expect("write");
    let out = les_node(&["--key-file", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("line 2") && err.contains("base64"), "{err}");
    let out = les_node(&["--key-file", dir.join("absent").to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read key file"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keygen_prints_a_key_a_key_file_accepts() {
    let out = les(&["keygen"], &[]);
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout);
    assert!(les::auth::Keyring::parse(&key, "stdout").is_ok(), "{key}");
    let again = les(&["keygen"], &[]);
    assert_ne!(
        key,
        String::from_utf8_lossy(&again.stdout),
        "keys are random"
    );
}

#[test]
fn a_bad_relinquish_schedule_exits_2_and_names_it() {
    let out = les_node(&["--relinquish-cron", "61 * * * *"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`relinquish_cron` \"61 * * * *\""),
        "{}",
        stderr(&out)
    );
    let out = les_node(&[], &[("LES_RELINQUISH_EVERY", "1s")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`relinquish_every` must leave at least 3 rounds"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn status_watch_redraws_on_a_leader_change_and_lists_it() {
    use common::{agreed_leader, wait_for, Proc};
    use std::io::Read as _;
    use std::time::Duration;
    let ports = free_ports(2);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let seeds = addrs.join(",");
    let start = |i: usize| {
        Proc::spawn(
            &addrs[i],
            Command::new(env!("CARGO_BIN_EXE_les"))
                .args([
                    "--bind-interface",
                    "127.0.0.1",
                    "--bind-port",
                    &ports[i].to_string(),
                ])
                .args(["--advertise-addr", &addrs[i], "--seeds", &seeds]),
        )
    };
    let first = start(0);
    wait_for("node 0 to serve", Duration::from_secs(20), || {
        common::diag(&addrs[0])
    });
    let _second = start(1);
    let leader = wait_for("agreement", Duration::from_secs(20), || {
        agreed_leader(&addrs)
    });
    assert_eq!(leader, addrs[0]);

    let out = std::env::temp_dir().join(format!("les-watch-{}.txt", ports[1]));
    let file = std::fs::File::create(&out).expect("output file");
    let watcher = Proc {
        child: Some(
            Command::new(env!("CARGO_BIN_EXE_les"))
                .args(["status", "--watch", "--every", "50ms", &addrs[1]])
                .stdout(file)
                .spawn()
                .expect("start les status --watch"),
        ),
        name: "watch".into(),
    };
    let read = || {
        let mut s = String::new();
        let _ = std::fs::File::open(&out).and_then(|mut f| f.read_to_string(&mut s));
        s
    };
    wait_for("a first drawing", Duration::from_secs(10), || {
        read()
            .contains(&format!("leader {}", addrs[0]))
            .then_some(())
    });
    first.signal(libc::SIGTERM);
    let text = wait_for("the change to be drawn", Duration::from_secs(20), || {
        let s = read();
        s.contains(&format!("leader changed: {} -> ", addrs[0]))
            .then_some(s)
    });
    watcher.signal(libc::SIGKILL);
    let _ = std::fs::remove_file(&out);
    assert!(
        text.contains("----"),
        "drawings are separated when not on a terminal"
    );
    // Redrawn on changes only: a few drawings, not one per 50 ms.
    assert!(text.matches("----").count() < 10, "{text}");
}

/// The shape of a JSON value: object keys (the asked node's address as `<self>`, the
/// other's as `<member>`) and, at the leaves, the JSON type, so a snapshot pins the
/// field names and not the values. `members[0]` is the asked node.
fn json_shape(v: &serde_json::Value, members: &[String]) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match members.iter().position(|m| m == k) {
                        Some(0) => "<self>",
                        Some(_) => "<member>",
                        None => k,
                    };
                    (key.to_string(), json_shape(v, members))
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .first()
                .map(|i| json_shape(i, members))
                .into_iter()
                .collect(),
        ),
        Value::String(_) => "string".into(),
        Value::Number(_) => "number".into(),
        Value::Bool(_) => "bool".into(),
        Value::Null => "null".into(),
    }
}

#[test]
fn status_json_is_one_document_with_stable_field_names() {
    let ports = free_ports(2);
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let seeds = addrs.join(",");
    let _nodes: Vec<common::Proc> = ports
        .iter()
        .map(|&p| common::Proc::spawn("les", &mut common::les_command(p, &seeds)))
        .collect();
    // Until both are members and a leader is named (exit 0).
    let doc: serde_json::Value = common::wait_for(
        "a leader and two members",
        std::time::Duration::from_secs(20),
        || {
            let out = les(&["status", "--json", &addrs[1]], &[]);
            // One document: serde_json refuses anything after it.
            let doc: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            // member_info is about the others; member_states includes the node itself.
            let two = doc["member_info"].as_object().is_some_and(|m| m.len() == 1)
                && doc["member_states"].as_object().is_some_and(|m| {
                    // ... each naming the leader: the steady state, so the shape does
                    // not depend on timing.
                    m.len() == 2 && m.values().all(|s| s["leader"] == doc["state"]["leader"])
                });
            (out.status.code() == Some(0) && two).then_some(doc)
        },
    );
    assert!(
        addrs.contains(
            &doc["state"]["leader"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        ),
        "{doc}"
    );
    let asked_first = [addrs[1].clone(), addrs[0].clone()];
    insta::assert_json_snapshot!(json_shape(&doc, &asked_first));
}
