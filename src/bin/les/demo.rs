//! `les demo`: three nodes on loopback in one process, one graceful handoff, timed.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use les::config::{Config, LogFormat};
use les::node::{Node, NodeHandle};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gossip round period for the demo nodes.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    crate::init_logging(LogFormat::Text, "warn");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    // Ask the OS for three free loopback ports.
    let mut ports = Vec::new();
    for _ in 0..3 {
        let l =
            std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
        ports.push(l.local_addr()?.port());
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    println!("Starting three les nodes on loopback: {}", addrs.join(", "));
    println!("Each node's seniority is its start time; they start 100 ms apart, so the first is the most senior.\n");

    let t0 = Instant::now();
    let mut nodes: Vec<NodeHandle> = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let mut cfg = Config::new(addr.clone(), addrs.clone());
        cfg.bind = format!("127.0.0.1:{}", ports[i]).parse()?;
        cfg.name = Some(format!("node{}", i + 1));
        cfg.interval = args.interval;
        nodes.push(
            Node::start(cfg)
                .await
                .with_context(|| format!("cannot start a node on {addr}"))?,
        );
        if i < 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let last_started = t0.elapsed();
    let leader = agreed_leader(&nodes, Duration::from_secs(10)).await?;
    println!(
        "All three agree: the leader is {leader} (agreed {} ms after the last node started).",
        (t0.elapsed() - last_started).as_millis()
    );
    let diag = nodes[0].diag().await?;
    println!(
        "\n/diag/ of {} says:\n{}\n",
        nodes[0].addr(),
        serde_json::to_string_pretty(&diag.state)?
    );

    let idx = nodes
        .iter()
        .position(|n| n.addr() == leader)
        .context("leader is not one of ours")?;
    let old = nodes.remove(idx);
    println!("Stopping the leader {leader} gracefully (as SIGTERM would)...");
    let t1 = Instant::now();
    old.leave().await;
    let next = agreed_leader(&nodes, Duration::from_secs(10)).await?;
    println!(
        "The survivors agree on the next most senior node, {next}: handoff took {} ms.",
        t1.elapsed().as_millis()
    );
    for n in &nodes {
        n.leave().await;
    }
    println!(
        "\nDone. Run a real cluster with `les --advertise-addr ... --seeds ...` (see README)."
    );
    Ok(())
}

/// Wait until every node reports the same leader, which is one of them.
async fn agreed_leader(nodes: &[NodeHandle], within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    loop {
        let views: Vec<Option<String>> = nodes.iter().map(|n| n.leader()).collect();
        if let Some(Some(l)) = views.first() {
            if views.iter().all(|v| v.as_ref() == Some(l)) && nodes.iter().any(|n| n.addr() == l) {
                return Ok(l.clone());
            }
        }
        if Instant::now() > deadline {
            bail!("no agreement on a leader within {within:?}: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
