//! The `les` binary under a fake systemd: a Unix datagram socket of the test's own as
//! `NOTIFY_SOCKET`, and `WATCHDOG_USEC` set. A node alone by design knows its leader at
//! once, so it must send `READY=1` with a `STATUS=` line, ping the watchdog about twice
//! per interval while its loop answers, stop pinging while the process is stopped, and
//! say `STOPPING=1` before a graceful leave.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_ports, les_command, Proc};

/// Every datagram received within `within`.
fn collect(sock: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("timeout");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = std::env::temp_dir().join(format!("les-systemd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&path);
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let mut node = Proc::spawn(
        "les",
        les_command(port, &addr)
            .env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "200000"),
    );

    let first = collect(&sock, Duration::from_millis(1500));
    let ready = first
        .iter()
        .find(|m| m.contains("READY=1"))
        .expect("READY=1 sent");
    assert!(ready.contains("STATUS=leader, term"), "{ready}");
    let pings = first.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        (4..=20).contains(&pings),
        "about one ping per 100 ms: {pings} in 1.5 s"
    );

    // A stopped process pings nobody; the pings resume with it.
    node.signal(libc::SIGSTOP);
    let _ = collect(&sock, Duration::from_millis(50)); // in flight before the stop
    let stopped = collect(&sock, Duration::from_millis(600));
    node.signal(libc::SIGCONT);
    assert!(
        !stopped.iter().any(|m| m.contains("WATCHDOG=1")),
        "{stopped:?}"
    );
    let resumed = collect(&sock, Duration::from_millis(600));
    assert!(
        resumed.iter().any(|m| m.contains("WATCHDOG=1")),
        "{resumed:?}"
    );

    node.signal(libc::SIGTERM);
    let last = collect(&sock, Duration::from_millis(1000));
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
    assert_eq!(node.wait_exit(Duration::from_secs(10)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_unit_waits_for_readiness_uses_the_watchdog_and_the_config_it_documents() {
    let unit = include_str!("../dist/les.service");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/les --config /etc/les/les.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW",
    ] {
        assert!(
            unit.lines().any(|l| l.starts_with(line)),
            "dist/les.service lacks {line}"
        );
    }
    // The flag it runs les with exists.
    let out = Command::new(env!("CARGO_BIN_EXE_les"))
        .arg("--help")
        .output()
        .expect("les --help");
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}
