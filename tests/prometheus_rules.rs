//! The shipped alert rules name only metrics les serves: every `les_*` name in
//! `dist/prometheus/les.rules.yml` and in the Grafana dashboard must appear as a sample
//! on a real node's `/metrics`. With `promtool` installed (Debian's `prometheus`
//! package; `.ci/run` installs it) the rules file is also checked by it, and its unit
//! tests (`dist/prometheus/les.rules.test.yml`) run: each alert fires on the series it
//! is for.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{free_ports, les_command, wait_for, Proc};

/// Every `les_…` identifier in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("les_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = text[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |e| start + e);
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_served() {
    let rules = include_str!("../dist/prometheus/les.rules.yml");
    let dashboard = include_str!("../dist/grafana/les.json");
    let rule_tests = include_str!("../dist/prometheus/les.rules.test.yml");
    serde_json::from_str::<serde_json::Value>(dashboard).expect("the dashboard is JSON");
    let used: BTreeSet<String> = metric_names(rules)
        .into_iter()
        .chain(metric_names(dashboard))
        .chain(metric_names(rule_tests))
        // Names in prose (`les status`) are not metrics.
        .filter(|n| n != "les_status")
        .collect();
    assert!(used.len() >= 5, "{used:?}");

    let port = free_ports(1)[0];
    let addr = format!("127.0.0.1:{port}");
    let _node = Proc::spawn("les", &mut les_command(port, &addr));
    let body = wait_for("/metrics", Duration::from_secs(20), || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let client = les::client::PeerClient::new(les::net::TokioNetwork, Duration::from_secs(2));
        rt.block_on(client.get(&addr, "/metrics")).ok()
    });
    let text = String::from_utf8_lossy(&body);
    let served: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split([' ', '{']).next())
        .collect();
    for name in &used {
        assert!(
            served.contains(name.as_str()),
            "{name} is used but not served; served: {served:?}"
        );
    }

    promtool(&["check", "rules", "dist/prometheus/les.rules.yml"]);
    // The alerts fire on the series they are for, and not before their `for:`.
    promtool(&["test", "rules", "dist/prometheus/les.rules.test.yml"]);
}

/// Run promtool with `args`, asserting success. Without promtool this skips loudly,
/// except under CI (`CI` set, where `.ci/run` installs it), where it fails (the shared
/// `skip_or_fail` of the namespace tests).
fn promtool(args: &[&str]) {
    let out = match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) => {
            let why = format!("`promtool {}` cannot run ({e})", args.join(" "));
            common::netns::skip_or_fail(
                "promtool",
                Some(why),
                "Install Debian's prometheus package for promtool.",
            );
            return;
        }
    };
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
