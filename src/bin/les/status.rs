//! `les status [ADDR]`: the cluster as one node sees it, from its `/diag/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use les::client::PeerClient;
use les::net::TokioNetwork;
use les::wire::{check_addr, BackendInfo, DetectorInfo, Diag, LeaseInfo};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// host:port of the node to ask.
    #[arg(default_value = "localhost:4000", env = "LES_STATUS_ADDR")]
    addr: String,
    /// Print the raw /diag/ JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// How long to wait for the node's answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Keep watching: ask again every --every and redraw when the leader, the term or
    /// the members change, with the leader changes seen listed on top. Ctrl-C stops.
    #[arg(long, conflicts_with = "json")]
    watch: bool,
    /// With --watch: how often to ask.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    every: Duration,
}

/// Exit code of `les status` when the node answers but names no leader (so the
/// command works as a health probe: 0 only with a leader, 1 when the node cannot be
/// asked).
pub const NO_LEADER: u8 = 3;

/// Ask the node and print what it says; `Ok(false)` when it names no leader.
pub fn run(args: StatusArgs) -> anyhow::Result<bool> {
    check_addr(&args.addr)
        .with_context(|| format!("{:?} is not a host:port address", args.addr))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if args.watch {
        return watch(&rt, &args);
    }
    let diag = fetch(&rt, &args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&diag)?);
    } else {
        print!("{}", render(&args.addr, &diag, epoch_now()));
    }
    Ok(diag.state.leader.is_some())
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The node's `/diag/`, or why not (with a hint).
fn fetch(rt: &tokio::runtime::Runtime, args: &StatusArgs) -> anyhow::Result<Diag> {
    let body = rt
        .block_on(PeerClient::new(TokioNetwork, args.timeout).get(&args.addr, "/diag/"))
        .with_context(|| {
            format!(
                "cannot read /diag/ from {} (is les running there? name its address, or its --admin-addr: les status HOST:PORT)",
                args.addr
            )
        })?;
    serde_json::from_slice(&body)
        .with_context(|| format!("{} sent an invalid /diag/ document", args.addr))
}

/// What `--watch` redraws on: leader, term, and each member with the leader it names.
fn watch_key(d: &Diag) -> String {
    let mut members: Vec<String> = d
        .state
        .members
        .iter()
        .map(|m| {
            let vote = d.member_states.get(m).and_then(|s| s.leader.clone());
            format!("{m}={}", vote.unwrap_or_default())
        })
        .collect();
    members.sort();
    format!(
        "{:?} {} {}",
        d.state.leader,
        d.state.term,
        members.join(",")
    )
}

/// `--watch`: ask every `--every` until interrupted; redraw on a change, listing the
/// leader changes seen (highlighted on a terminal). Never returns normally.
fn watch(rt: &tokio::runtime::Runtime, args: &StatusArgs) -> anyhow::Result<bool> {
    use std::io::IsTerminal as _;
    let tty = std::io::stdout().is_terminal();
    let (mut last_key, mut last_leader) = (String::new(), None::<Option<String>>);
    let mut changes: Vec<String> = Vec::new();
    loop {
        let (key, body) = match fetch(rt, args) {
            Ok(d) => {
                if last_leader.as_ref().is_some_and(|l| *l != d.state.leader) {
                    let time = fmt_epoch(epoch_now());
                    let from = last_leader
                        .clone()
                        .flatten()
                        .unwrap_or_else(|| "none".into());
                    let to = d.state.leader.clone().unwrap_or_else(|| "none".into());
                    changes.push(format!(
                        "{time}  leader changed: {from} -> {to} (term {})",
                        d.state.term
                    ));
                    changes.drain(..changes.len().saturating_sub(5));
                }
                last_leader = Some(d.state.leader.clone());
                (watch_key(&d), render(&args.addr, &d, epoch_now()))
            }
            Err(e) => ("unreachable".to_string(), format!("{e:#}\n")),
        };
        if key != last_key {
            let mut out = String::new();
            if tty {
                out.push_str("\x1b[2J\x1b[H");
            }
            out.push_str(&format!(
                "les status --watch {}: every {}, Ctrl-C to stop; as of {}\n",
                args.addr,
                humantime::format_duration(args.every),
                fmt_epoch(epoch_now())
            ));
            for c in &changes {
                out.push_str(&if tty {
                    format!("\x1b[1;7m{c}\x1b[0m\n")
                } else {
                    format!("{c}\n")
                });
            }
            out.push('\n');
            out.push_str(&body);
            print!("{out}");
            if !tty {
                println!("----");
            }
            last_key = key;
        }
        std::thread::sleep(args.every);
    }
}

/// What "no leader" means on this node, in words.
fn no_leader(diag: &Diag) -> &'static str {
    if diag.backend.is_some() {
        "none (the database has granted the lease to nobody yet)"
    } else if diag.state.members.len() <= 1 {
        "none (waiting to hear from another node: no seed has answered yet)"
    } else {
        "none (election pending: waiting until every member names the same nominee)"
    }
}

/// The table, as text. `now` is epoch seconds (a parameter so tests can pin it).
pub fn render(asked: &str, diag: &Diag, now: f64) -> String {
    let me = diag
        .state
        .members
        .first()
        .cloned()
        .unwrap_or_else(|| asked.to_string());
    let mut out = format!(
        "cluster as seen by {me}: leader {}, term {}, {} member(s)\n",
        diag.state.leader.as_deref().unwrap_or(no_leader(diag)),
        diag.state.term,
        diag.state.members.len()
    );
    if let Some(lease) = &diag.lease {
        out.push_str(&lease_line(lease, diag.state.leader.as_deref()));
        out.push('\n');
    }
    if let Some(b) = &diag.backend {
        out.push_str(&backend_line(b));
        out.push('\n');
    }
    if let Some(line) = diag.detector.as_ref().and_then(detector_line) {
        out.push_str(&line);
        out.push('\n');
    }
    out.push('\n');
    let header = [
        "MEMBER",
        "NAME",
        "STARTED (UTC)",
        "AGE",
        "REPORTS LEADER",
        "TERM",
        "LAST CONTACT",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for addr in &diag.state.members {
        let state = diag.member_states.get(addr);
        let info = diag.member_info.get(addr);
        let started = state
            .map(|s| fmt_epoch(s.start_time))
            .unwrap_or_else(|| "?".into());
        let age = state
            .map(|s| {
                humantime::format_duration(
                    Duration::from_secs((now - s.start_time).max(0.0) as u64),
                )
                .to_string()
            })
            .unwrap_or_else(|| "?".into());
        let leader = state
            .map(|s| s.leader.clone().unwrap_or_else(|| "none".into()))
            .unwrap_or_else(|| "?".into());
        let term = state
            .map(|s| s.term.to_string())
            .unwrap_or_else(|| "?".into());
        let contact = if *addr == me {
            "self".to_string()
        } else {
            match info {
                Some(i) if i.suspect => "SUSPECT".to_string(),
                Some(i) => i
                    .last_contact_ms
                    .map(|ms| format!("{ms}ms ago"))
                    .unwrap_or_else(|| "never".into()),
                None => "?".into(),
            }
        };
        let mark = if diag.state.leader.as_deref() == Some(addr) {
            "*"
        } else {
            " "
        };
        let name = state
            .and_then(|s| s.name.clone())
            .unwrap_or_else(|| "-".into());
        rows.push(vec![
            format!("{addr} {mark}"),
            name,
            started,
            age,
            leader,
            term,
            contact,
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push_str("\n* = leader as seen by this node\n");
    out
}

/// Store backends: the store, whether it answers, and this node's part in the lease.
fn backend_line(b: &BackendInfo) -> String {
    let health = match (&b.error, b.connected) {
        (Some(why), _) => format!("UNAVAILABLE ({why})"),
        (None, true) => "connected".to_string(),
        (None, false) => "connecting".to_string(),
    };
    let role = match (b.acting_for_ms, &b.holder) {
        (Some(ms), _) => format!("this node holds the lease ({ms}ms left without a renewal)"),
        (None, Some(holder)) => format!("lease held by {holder}"),
        (None, None) => "nobody holds the lease".to_string(),
    };
    format!(
        "database {}: {health}; {role}, term {}, {} live member(s)",
        b.target, b.term, b.live_members
    )
}

/// Quorum mode: one line on the quorum, and whether this node acts as leader.
fn lease_line(lease: &LeaseInfo, leader: Option<&str>) -> String {
    let (quorum, reachable) = (lease.quorum, lease.reachable);
    if reachable < quorum {
        return format!("quorum {quorum}, {reachable} reachable: no quorum, following nobody");
    }
    let length = humantime::format_duration(Duration::from_millis(lease.lease_ms));
    let role = if lease.acting {
        let mut role = "acting leader".to_string();
        if !lease.confirmed_by.is_empty() {
            role = format!("{role}, confirmed by {}", lease.confirmed_by.join(", "));
        }
        match lease.expires_in_ms {
            Some(ms) => format!("{role} ({:.1}s left)", ms as f64 / 1000.0),
            None => role,
        }
    } else {
        format!("following {}", leader.unwrap_or("nobody"))
    };
    format!("quorum {quorum} of {reachable} reachable, lease {length}: {role}")
}

/// A line on the failure detector, only when it has something to say: the network
/// loses requests, this node is slow itself, or members are suspect.
fn detector_line(d: &DetectorInfo) -> Option<String> {
    if d.loss < 0.01 && d.health_score == 0 && d.suspects == 0 {
        return None;
    }
    Some(format!(
        "detector: {:.1}% of requests to healthy members fail, health score {}/8{}, {} failures in a row remove a member, {} suspect",
        d.loss * 100.0,
        d.health_score,
        if d.health_score > 0 { " (this node is slow: its timeouts are widened)" } else { "" },
        d.evidence_needed,
        d.suspects
    ))
}

fn fmt_epoch(secs: f64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0));
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_each_member_its_age_vote_term_and_contact() {
        let diag: Diag = serde_json::from_str(
            r#"{
              "state": {"members": ["n2:4000", "n1:4000", "n3:4000"], "leader": "n1:4000",
                        "start_time": 1000.0, "term": 3, "name": "two"},
              "member_states": {
                "n1:4000": {"members": ["n1:4000", "n2:4000", "n3:4000"], "leader": "n1:4000", "start_time": 940.0, "term": 3, "name": "one"},
                "n2:4000": {"members": ["n2:4000", "n1:4000", "n3:4000"], "leader": "n1:4000", "start_time": 1000.0, "term": 3, "name": "two"},
                "n3:4000": {"members": ["n3:4000"], "leader": false, "start_time": 1090.5}
              },
              "member_info": {
                "n1:4000": {"last_contact_ms": 120, "suspect": false},
                "n3:4000": {"last_contact_ms": 2400, "suspect": true}
              }
            }"#,
        )
        .unwrap();
        insta::assert_snapshot!(render("n2:4000", &diag, 1100.0));
    }

    #[test]
    fn in_quorum_mode_a_line_under_the_header_says_who_confirms_the_lease() {
        let mut diag: Diag = serde_json::from_str(
            r#"{
              "state": {"members": ["a:1", "b:1", "c:1"], "leader": "a:1", "start_time": 1.0, "term": 2},
              "member_states": {},
              "lease": {"quorum": 2, "lease_ms": 3000, "acting": true,
                        "confirmed_by": ["b:1", "c:1"], "expires_in_ms": 2140, "reachable": 3}
            }"#,
        )
        .unwrap();
        let text = render("a:1", &diag, 10.0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "quorum 2 of 3 reachable, lease 3s: acting leader, confirmed by b:1, c:1 (2.1s left)"
        );
        assert_eq!(lines[2], "");

        let lease = diag.lease.as_mut().unwrap();
        lease.acting = false;
        assert_eq!(
            lease_line(lease, Some("a:1")),
            "quorum 2 of 3 reachable, lease 3s: following a:1"
        );
        lease.reachable = 1;
        assert_eq!(
            lease_line(lease, None),
            "quorum 2, 1 reachable: no quorum, following nobody"
        );
    }

    #[test]
    fn under_a_database_a_line_says_where_it_is_whether_it_answers_and_who_holds_the_lease() {
        let mut b = BackendInfo {
            kind: "postgres".into(),
            target: "postgres://les@db:5432/les (sslmode=prefer)".into(),
            connected: true,
            error: None,
            holder: Some("a:1".into()),
            term: 7,
            acting_for_ms: Some(2400),
            live_members: 3,
        };
        assert_eq!(
            backend_line(&b),
            "database postgres://les@db:5432/les (sslmode=prefer): connected; this node holds the lease (2400ms left without a renewal), term 7, 3 live member(s)"
        );
        b.acting_for_ms = None;
        b.connected = false;
        b.error = Some("cannot reach the database: connection refused".into());
        assert_eq!(
            backend_line(&b),
            "database postgres://les@db:5432/les (sslmode=prefer): UNAVAILABLE (cannot reach the database: connection refused); lease held by a:1, term 7, 3 live member(s)"
        );
    }

    #[test]
    fn the_detector_speaks_up_only_about_loss_a_slow_node_or_suspects() {
        let mut d = DetectorInfo {
            loss: 0.001,
            health_score: 0,
            evidence_needed: 3,
            ping_timeout_ms: 200,
            suspects: 0,
        };
        assert_eq!(detector_line(&d), None);
        d.loss = 0.2;
        d.evidence_needed = 9;
        d.suspects = 1;
        assert_eq!(
            detector_line(&d).as_deref(),
            Some("detector: 20.0% of requests to healthy members fail, health score 0/8, 9 failures in a row remove a member, 1 suspect")
        );
        d.health_score = 2;
        assert!(detector_line(&d).is_some_and(|l| l.contains("this node is slow")));
    }
}
