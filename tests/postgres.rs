//! End to end with a real PostgreSQL: the `les` binary with `--backend postgres://…`
//! against a throwaway server (see `common::pg`), on loopback.
//!
//! Checked: election by seniority, crash failover once the lease runs out, graceful
//! hand-off, a restarted node joining as junior, a database restart and outage (the
//! leader stops acting, nobody acts while the database is down, leadership comes back
//! afterwards), and the fencing term: strictly increasing, one holder per term, across
//! all of it. Waits are bounded and generous; speed is measured by the benchmark.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::PgServer;
use common::{diag, free_ports, wait_for, Proc};

const WAIT: Duration = Duration::from_secs(20);
/// The tests' lease (1 s), plus 100 ms for the database's last answer to arrive.
const LEASE_BOUND: Duration = Duration::from_millis(1100);

/// A node on `port` using the database at `url`; its log goes to `log`.
fn start(port: u16, url: &str, log: &std::path::Path, extra: &[&str]) -> Proc {
    let addr = format!("127.0.0.1:{port}");
    Proc::spawn_logged(
        &addr,
        Command::new(env!("CARGO_BIN_EXE_les"))
            .args(["--bind-interface", "127.0.0.1"])
            .args(["--bind-port", &port.to_string()])
            .args(["--advertise-addr", &addr])
            .args(["--backend", url])
            .args(["--interval", "200ms", "--lease", "1s"])
            .args(["--request-timeout", "300ms"])
            .args(extra),
        log,
    )
}

/// What one node says about the lease: (leader it names, term, acting itself).
fn lease_of(addr: &str) -> Option<(Option<String>, u64, bool)> {
    let d = diag(addr)?;
    let b = d.backend?;
    Some((d.state.leader, b.term, b.acting_for_ms.is_some()))
}

/// Records every (term, holder) seen, and checks at each look that no two nodes act
/// at once and that no term has two holders.
#[derive(Default)]
struct Fence {
    holders: BTreeMap<u64, String>,
}

impl Fence {
    /// Look at every node once; returns the leader they all name, if they agree.
    fn look(&mut self, addrs: &[String]) -> Option<String> {
        let mut acting = Vec::new();
        let mut named = Vec::new();
        for a in addrs {
            let Some((leader, term, is_acting)) = lease_of(a) else {
                named.push(None);
                continue;
            };
            if is_acting {
                acting.push(a.clone());
                let prev = self.holders.entry(term).or_insert_with(|| a.clone());
                assert_eq!(prev, a, "term {term} held by two nodes");
            }
            named.push(leader);
        }
        assert!(
            acting.len() <= 1,
            "two nodes act as leader at once: {acting:?}"
        );
        let first = named.first().cloned().flatten()?;
        named
            .iter()
            .all(|n| n.as_deref() == Some(first.as_str()))
            .then_some(first)
    }

    /// Poll until every node in `addrs` names the same leader, one of `addrs`
    /// (a node that has gone is named until its lease runs out).
    fn agreed(&mut self, addrs: &[String]) -> String {
        wait_for("agreement on a leader", WAIT, || {
            self.look(addrs).filter(|l| addrs.contains(l))
        })
    }

    /// The terms seen, in order of term, with their holders.
    fn terms(&self) -> Vec<(u64, String)> {
        self.holders.iter().map(|(t, h)| (*t, h.clone())).collect()
    }
}

/// Nodes on `ports`, each started once the previous one has registered, so the first
/// is the most senior; the first also gets `first_extra` flags.
fn start_staggered(
    ports: &[u16],
    url: &str,
    log: &std::path::Path,
    first_extra: &[&str],
) -> Vec<Proc> {
    let mut procs = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        procs.push(start(
            *port,
            url,
            log,
            if i == 0 { first_extra } else { &[] },
        ));
        let a = format!("127.0.0.1:{port}");
        wait_for("node to register", WAIT, || {
            diag(&a).filter(|d| d.backend.as_ref().is_some_and(|b| b.live_members > i))
        });
    }
    procs
}

fn addrs_of(ports: &[u16]) -> Vec<String> {
    ports.iter().map(|p| format!("127.0.0.1:{p}")).collect()
}

#[test]
fn three_nodes_elect_by_seniority_fail_over_rejoin_and_hand_off() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    let log = pg.dir().join("les.log");
    let ports = free_ports(3);
    let addrs = addrs_of(&ports);
    let mut fence = Fence::default();
    // Node 0 also names seeds, which the database backend ignores with one log line.
    let mut procs = start_staggered(&ports, &url, &log, &["--seeds", "127.0.0.1:1"]);
    assert_eq!(fence.agreed(&addrs), addrs[0], "the most senior node leads");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("ignoring the gossip-only settings seeds"),
        "{logged}"
    );
    let sessions = pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'les'");
    assert_eq!(sessions, "3", "one session per node");

    // SIGKILL the leader: once its lease runs out the next most senior takes over.
    let killed_at = Instant::now();
    procs[0].signal(libc::SIGKILL);
    procs[0].wait_exit(WAIT).expect("killed node exits");
    let survivors = addrs[1..].to_vec();
    assert_eq!(fence.agreed(&survivors), addrs[1]);
    let failover = killed_at.elapsed();
    assert!(
        failover >= Duration::from_millis(500),
        "not before the lease: {failover:?}"
    );

    // Restarted, node 0 is junior: it follows and does not take leadership back.
    procs[0] = start(ports[0], &url, &log, &[]);
    wait_for("restarted node to follow", WAIT, || {
        lease_of(&addrs[0]).filter(|(l, _, _)| l.as_deref() == Some(addrs[1].as_str()))
    });
    for _ in 0..10 {
        assert_eq!(fence.look(&addrs).as_deref(), Some(addrs[1].as_str()));
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGTERM the leader: it hands over at once and exits cleanly; node 2 registered
    // before the restarted node 0, so it is next.
    procs[1].signal(libc::SIGTERM);
    assert_eq!(procs[1].wait_exit(WAIT), Some(0), "clean exit");
    let rest = vec![addrs[0].clone(), addrs[2].clone()];
    assert_eq!(fence.agreed(&rest), addrs[2]);
    let left = pg.psql(&format!(
        "SELECT count(*) FROM les_member WHERE addr = '{}'",
        addrs[1]
    ));
    assert_eq!(left, "0", "a leaving node deregisters");

    let terms = fence.terms();
    let holders: Vec<&str> = terms.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(holders, [&addrs[0], &addrs[1], &addrs[2]], "{terms:?}");
    assert!(terms.windows(2).all(|w| w[0].0 < w[1].0), "{terms:?}");
}

#[test]
fn a_database_outage_stops_the_leader_and_a_restart_brings_leadership_back() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let url = pg.url();
    let log = pg.dir().join("les.log");
    let ports = free_ports(2);
    let addrs = addrs_of(&ports);
    let mut fence = Fence::default();
    let mut procs = start_staggered(&ports, &url, &log, &[]);
    assert_eq!(fence.agreed(&addrs), addrs[0]);

    // The database goes away: within the lease nobody acts, and both say why.
    // The database goes away: no node may act once a lease granted before could have
    // run out (1 s, plus the slack of a machine that answers slowly: the time checked
    // is when our question was sent, so a slow answer only makes it earlier).
    pg.down();
    let down_at = Instant::now();
    let until = down_at + Duration::from_secs(4);
    while Instant::now() < until {
        fence.look(&addrs);
        for a in &addrs {
            let asked = Instant::now();
            if lease_of(a).is_some_and(|(_, _, acting)| acting) {
                let after = asked - down_at;
                assert!(
                    after < LEASE_BOUND,
                    "{a} acts {after:?} after the database went down"
                );
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let d = diag(&addrs[0]).expect("diag during the outage");
    let b = d.backend.expect("backend part");
    assert!(!b.connected);
    assert!(b.error.is_some(), "says why");
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let outages = logged.matches("database unavailable").count();
    assert_eq!(outages, 2, "one line per node per outage: {logged}");

    // Back up (same data): a leader again, with a higher term than any before.
    pg.up();
    let leader = fence.agreed(&addrs);
    assert!(addrs.contains(&leader));
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logged.contains("database available again"), "{logged}");
    let terms = fence.terms();
    assert!(terms.len() >= 2, "a new grant after the restart: {terms:?}");
    let in_db: u64 = pg
        .psql("SELECT term FROM les_lease WHERE cluster = ''")
        .parse()
        .expect("a term");
    assert_eq!(Some(in_db), terms.last().map(|(t, _)| *t));
    for p in &procs {
        p.signal(libc::SIGTERM);
    }
    for p in &mut procs {
        assert_eq!(p.wait_exit(WAIT), Some(0));
    }
}

#[test]
fn les_step_down_and_a_relinquish_schedule_move_leadership_to_the_next_most_senior() {
    let Some(pg) = PgServer::start() else {
        return;
    };
    let url = pg.url();
    let log = pg.dir().join("les.log");
    let ports = free_ports(3);
    let addrs = addrs_of(&ports);
    let mut fence = Fence::default();
    let mut procs = start_staggered(&ports, &url, &log, &[]);
    assert_eq!(fence.agreed(&addrs), addrs[0]);

    // A follower refuses and nothing changes.
    let out = Command::new(env!("CARGO_BIN_EXE_les"))
        .args(["step-down", "--node", &addrs[1]])
        .output()
        .expect("run les step-down");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the leader"));
    assert_eq!(fence.look(&addrs).as_deref(), Some(addrs[0].as_str()));

    // The leader steps down: node 1 leads with a higher term, node 0 is junior.
    let out = Command::new(env!("CARGO_BIN_EXE_les"))
        .args(["step-down", "--node", &addrs[0]])
        .output()
        .expect("run les step-down");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("leader after:  {}", addrs[1])),
        "{said}"
    );
    assert_eq!(fence.agreed(&addrs), addrs[1]);
    let junior = pg.psql("SELECT addr FROM les_member ORDER BY registered_at DESC LIMIT 1");
    assert_eq!(
        junior, addrs[0],
        "the node that stepped down is the most junior"
    );

    // A relinquish schedule: with node 1 gone, nodes 2 and 0 restarted with
    // --relinquish-every 1s hand leadership back and forth, each stepping down once it
    // has led for a second, with a higher term every time.
    procs[1].signal(libc::SIGTERM);
    assert_eq!(procs[1].wait_exit(WAIT), Some(0));
    let rest = vec![addrs[0].clone(), addrs[2].clone()];
    assert_eq!(fence.agreed(&rest), addrs[2]);
    procs[2].signal(libc::SIGTERM);
    assert_eq!(procs[2].wait_exit(WAIT), Some(0));
    procs[2] = start(ports[2], &url, &log, &["--relinquish-every", "1s"]);
    procs[0].signal(libc::SIGTERM);
    assert_eq!(procs[0].wait_exit(WAIT), Some(0));
    procs[0] = start(ports[0], &url, &log, &["--relinquish-every", "1s"]);
    let pair = vec![addrs[0].clone(), addrs[2].clone()];
    let first = fence.agreed(&pair);
    wait_for("the schedule to rotate leadership", WAIT, || {
        fence.look(&pair).filter(|l| *l != first)
    });
    let terms = fence.terms();
    assert!(terms.windows(2).all(|w| w[0].0 < w[1].0), "{terms:?}");
}

#[test]
fn tls_to_the_database_is_verified_against_the_root_the_url_names() {
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    let ca = pg.tls();
    let log = pg.dir().join("les.log");
    let base = format!("postgres://les@127.0.0.1:{}/postgres", pg.port);
    let ports = free_ports(2);
    let addrs = addrs_of(&ports);

    // With the server's certificate as the root: connected over TLS, and leads.
    let verified = format!("{base}?sslmode=verify-full&sslrootcert={}", ca.display());
    let _good = start(ports[0], &verified, &log, &[]);
    wait_for("the node to lead over TLS", WAIT, || {
        lease_of(&addrs[0]).filter(|(_, _, acting)| *acting)
    });
    let ssl = pg.psql("SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'les'");
    assert_eq!(ssl, "t", "the les session uses TLS");

    // Against the system's roots the self-signed certificate is refused, and /diag/
    // says why.
    let _bad = start(ports[1], &format!("{base}?sslmode=require"), &log, &[]);
    let b = wait_for("the second node to report the refusal", WAIT, || {
        diag(&addrs[1])?.backend.filter(|b| b.error.is_some())
    });
    assert!(!b.connected);
    let why = b.error.unwrap_or_default();
    assert!(why.to_lowercase().contains("certificate"), "{why}");
}

#[test]
fn a_bad_backend_url_is_refused_at_start_with_the_setting_named() {
    for (url, says) in [
        ("mysql://les@db/x", "postgres://"),
        ("postgres://db/x", "no user"),
        ("postgres://les@db/x?sslmode=sometimes", "sslmode=sometimes"),
        ("postgres://les:hunter2@db/x?bogus=1", "bogus"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_les"))
            .args(["--advertise-addr", "127.0.0.1:1", "--backend", url])
            .output()
            .expect("run les");
        assert!(!out.status.success(), "{url} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("backend") && err.contains(says),
            "{url}: {err}"
        );
        assert!(
            !err.contains("hunter2"),
            "the password is never shown: {err}"
        );
    }
}
