//! Quorum mode against a network partition, with real processes in network namespaces:
//! five `floating_ip` nodes (`--quorum 3`) on one bridge, the leader and one follower
//! cut off from the other three for 10 s as a group (they still reach each other), then
//! healed. The cut drops every frame between the two groups on the bridge (nftables in
//! the bridge namespace), so nobody gets a RST or an ICMP error: the other side just
//! goes silent, as when a switch fails.
//!
//! A sampler thread reads which node namespaces hold the VIP every few milliseconds.
//! The test asserts that the VIP is never in two namespaces at once, that the three-node
//! side holds it within 5 s of the cut, that it does not move for 10 s after the heal,
//! that all five nodes then agree on one leader, and, from the JSON logs, that the terms
//! of the nodes that took leadership (`is_self=true`) strictly increase.
//!
//! The lab is `tests/common/netns.rs` (names carry this process's pid, 198.18.3.0/24,
//! no route out, deleted when the test ends, pass or fail). Needs root, `ip`, `arping`,
//! `nft` (nftables), and a build whose `--help` offers `--quorum`; without them it says
//! why it is skipped, on stderr, and with `CI` set it fails instead. It runs the example
//! binary that `cargo test` builds; when running it alone, build that first:
//!
//! ```sh
//! cargo build --example floating_ip && cargo test --test netns_partition -- --nocapture
//! ```

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::netns::{self, say, Net, VipWatch};

const TEST: &str = "a_partition_never_gives_two_vip_holders";
/// Port of the les API in every node namespace.
const LES_PORT: u16 = 4000;
const NAMES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
const QUORUM: usize = 3;
/// How long the two groups are cut apart.
const CUT: Duration = Duration::from_secs(10);
/// The three-node side must hold the VIP this soon after the cut.
const TAKEOVER: Duration = Duration::from_secs(5);
/// After the heal the VIP must stay where it is for this long.
const QUIET: Duration = Duration::from_secs(10);
/// Deadline for each awaited condition.
const PATIENCE: Duration = Duration::from_secs(20);
/// The sampler's pause between sweeps of the five namespaces.
const SWEEP: Duration = Duration::from_millis(5);

struct Lab {
    nodes: Vec<Child>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<()>>,
    logs: PathBuf,
    /// Dropped (namespaces deleted) after everything above.
    net: Net,
}

impl Lab {
    fn new() -> Lab {
        let tag = format!("lespart-{}", std::process::id());
        let logs = netns::log_dir(&tag);
        let hosts = netns::numbered(&NAMES);
        let net = Net::new(&tag, 3, &hosts).unwrap_or_else(|e| panic!("cannot build the lab: {e}"));
        Lab {
            nodes: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
            sampler: None,
            logs,
            net,
        }
    }

    fn vip(&self) -> std::net::Ipv4Addr {
        self.net.addr(200)
    }

    fn les_addr(&self, i: usize) -> String {
        format!("{}:{LES_PORT}", self.net.host_addr(NAMES[i]))
    }

    fn log(&self, i: usize) -> PathBuf {
        self.logs.join(format!("{}.log", NAMES[i]))
    }

    fn start_sampler(&mut self) -> Arc<VipWatch> {
        let namespaces: Vec<String> = NAMES.iter().map(|n| self.net.ns(n)).collect();
        let (watch, thread) = VipWatch::start(&namespaces, self.vip(), SWEEP, self.stop.clone());
        self.sampler = Some(thread);
        watch
    }

    fn start_node(&mut self, example: &Path, i: usize) {
        let seeds: Vec<String> = (0..NAMES.len()).map(|j| self.les_addr(j)).collect();
        let mut cmd = self.net.command(NAMES[i], example);
        cmd.args(["--vip", &format!("{}/24", self.vip()), "--iface", "eth0"])
            .args(["--bind-port", &LES_PORT.to_string()])
            .args(["--advertise-addr", &self.les_addr(i)])
            .args(["--seeds", &seeds.join(","), "--name", NAMES[i]])
            .args(["--quorum", &QUORUM.to_string(), "--log-format", "json"])
            .env("RUST_LOG", "info");
        netns::log_to(&mut cmd, &self.log(i));
        self.nodes.push(cmd.spawn().unwrap());
    }

    /// Node `i`'s leader, asked from its own namespace (which reaches it when cut).
    fn leader_seen_by(&self, i: usize) -> Option<String> {
        let target: SocketAddr = self.les_addr(i).parse().unwrap();
        netns::leader_seen(&self.net.ns(NAMES[i]), target)
    }

    /// The leader all nodes name, if they agree on one.
    fn agreed_leader(&self) -> Option<String> {
        let views: Vec<Option<String>> = (0..NAMES.len()).map(|i| self.leader_seen_by(i)).collect();
        let first = views[0].clone()?;
        views
            .iter()
            .all(|v| v.as_ref() == Some(&first))
            .then_some(first)
    }

    /// Whether a TCP connection from host `from` to node `to`'s les port opens within
    /// `within`.
    fn connects(&self, from: usize, to: usize, within: Duration) -> bool {
        let target: SocketAddr = self.les_addr(to).parse().unwrap();
        netns::in_namespace(&self.net.ns(NAMES[from]), move || {
            TcpStream::connect_timeout(&target, within).is_ok()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sampler.take() {
            let _ = t.join();
        }
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let logs: Vec<PathBuf> = (0..NAMES.len()).map(|i| self.log(i)).collect();
            netns::print_tails(&logs, 40);
        } else {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

#[test]
#[ignore = "needs root, iproute2 and iputils-arping (and nftables): run with -- --include-ignored, as .ci/run does"]
fn a_partition_never_gives_two_vip_holders() {
    if netns::skip_unless_possible(TEST, &[netns::IP, netns::ARPING, netns::NFT]) {
        return;
    }
    let example = netns::example_binary(Path::new(env!("CARGO_BIN_EXE_les")), "floating_ip");
    let no_quorum = (!netns::offers_flag(&example, "--quorum")).then(|| {
        "`floating_ip --help` offers no --quorum: quorum mode is not in this build".into()
    });
    if netns::skip_or_fail(
        TEST,
        no_quorum,
        "It runs once the --quorum and --lease flags are in.",
    ) {
        return;
    }

    let mut lab = Lab::new();
    let watch = lab.start_sampler();
    // Start in seniority order: n1 is the most senior.
    for i in 0..NAMES.len() {
        lab.start_node(&example, i);
        std::thread::sleep(Duration::from_millis(200));
    }

    // One leader, holding the VIP, that everyone follows.
    let leader = common::wait_for("one leader holding the VIP", PATIENCE, || {
        let i = watch.sole_holder()?;
        (lab.agreed_leader()? == lab.les_addr(i)).then_some(i)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(watch.sole_holder(), Some(leader), "the VIP left the leader");

    // Cut the leader and one follower off from the other three.
    let partner = (leader + 1) % NAMES.len();
    let minority = [leader, partner];
    let majority: Vec<usize> = (0..NAMES.len()).filter(|i| !minority.contains(i)).collect();
    let t_cut = Instant::now();
    lab.net
        .cut(&[NAMES[leader], NAMES[partner]])
        .unwrap_or_else(|e| panic!("cannot cut the bridge: {e}"));
    let probe = Duration::from_millis(300);
    assert!(
        lab.connects(leader, partner, probe),
        "the cut separated {} from {}",
        NAMES[leader],
        NAMES[partner]
    );
    assert!(
        !lab.connects(leader, majority[0], probe),
        "{} still reaches {} through the cut",
        NAMES[leader],
        NAMES[majority[0]]
    );
    std::thread::sleep(CUT.saturating_sub(t_cut.elapsed()));
    let t_heal = Instant::now();
    lab.net
        .heal()
        .unwrap_or_else(|e| panic!("cannot heal the bridge: {e}"));

    // The first moment the VIP was on one node of the three-node side, and on no other.
    let taken = watch.placed_within(&majority, t_cut);

    // After the heal: no move for QUIET, then one agreed leader, the VIP's holder.
    std::thread::sleep(QUIET);
    let moves = watch.placements_since(t_heal);
    let deadline = Instant::now() + PATIENCE;
    let agreed = loop {
        match lab.agreed_leader() {
            Some(l) => break Some(l),
            None if Instant::now() > deadline => break None,
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };

    let logs: Vec<netns::NodeLog> = (0..NAMES.len())
        .map(|i| netns::read_log(&lab.log(i)))
        .collect();
    let mut gains: Vec<(std::time::SystemTime, u64, &str)> = logs
        .iter()
        .zip(NAMES)
        .flat_map(|(log, name)| {
            log.changes
                .iter()
                .filter(|c| c.is_self)
                .map(move |c| (c.at, c.term, name))
        })
        .collect();
    gains.sort();
    let changes: usize = logs.iter().map(|l| l.changes.len()).sum();
    let sweeps = watch.sweeps();
    let doubles = watch.doubles();
    say(&format!(
        "netns_partition: {} led and was cut off with {}; the VIP was on {} (the three-node side) \
         {} ms after the cut; {} moves in the {} s after the heal; agreed leader {agreed:?}; \
         gains (node, term): {:?}; {changes} leader changes logged in all; {sweeps} sweeps, \
         longest gap between sweeps {} ms, {} with the VIP in two namespaces",
        NAMES[leader],
        NAMES[partner],
        taken.map_or("none", |(i, _)| NAMES[i]),
        taken.map_or(-1, |(_, at)| (at - t_cut).as_millis() as i64),
        moves.len(),
        QUIET.as_secs(),
        gains.iter().map(|(_, t, n)| (*n, *t)).collect::<Vec<_>>(),
        watch.longest_gap().as_millis(),
        doubles.len()
    ));

    if let (Some(first), Some(last)) = (doubles.first(), doubles.last()) {
        let since_cut = |at: Instant| at.saturating_duration_since(t_cut).as_millis();
        panic!(
            "the VIP was in two namespaces at once in {} sweeps, from {} ms to {} ms after the \
             cut; first: {:?}",
            doubles.len(),
            since_cut(first.at),
            since_cut(last.at),
            first.holders
        );
    }
    assert!(
        watch.longest_gap() <= Duration::from_millis(50),
        "the sampler paused {:?} between two sweeps (at most 50 ms allowed)",
        watch.longest_gap()
    );
    let (new_holder, t_taken) = taken.unwrap_or_else(|| {
        panic!(
            "the three-node side never held the VIP alone; placements since the cut: {:?}",
            watch.placements_since(t_cut)
        )
    });
    let takeover = t_taken - t_cut;
    assert!(
        takeover <= TAKEOVER,
        "the three-node side took the VIP {takeover:?} after the cut (limit {TAKEOVER:?})"
    );
    assert!(moves.is_empty(), "the VIP moved after the heal: {moves:?}");
    assert_eq!(
        agreed,
        Some(lab.les_addr(new_holder)),
        "the agreed leader is not the VIP's holder"
    );
    assert_eq!(
        watch.sole_holder(),
        Some(new_holder),
        "the VIP is not on the new leader alone at the end"
    );
    for pair in gains.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "terms of successive leaders do not strictly increase: {} took term {} at {:?}, then {} took term {} at {:?}",
            pair[0].2, pair[0].1, pair[0].0, pair[1].2, pair[1].1, pair[1].0
        );
    }
    assert!(
        gains.len() >= 2,
        "fewer than two leaders took office: {gains:?}"
    );
    let sweeps_expected = (CUT + QUIET).as_millis() as u64 / 50;
    assert!(
        sweeps > sweeps_expected,
        "the sampler hardly ran: {sweeps} sweeps"
    );
}
