//! `les step-down [--node HOST:PORT]`: ask a node to give up leadership now, then watch
//! the next most senior node take over, and say how long it took.
//!
//! The request is `POST /step-down`, tagged with the cluster's keyring when one is
//! given (the node refuses it unsigned whenever it is keyed), with the cluster name it
//! is told. Like `les status` it takes the node's address (its admin address when it
//! has one), and like a node it reads `LES_KEY_FILE` and `LES_CLUSTER`, so on a node's
//! own machine the same environment works for both.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use les::auth::Auth;
use les::client::{ClientLinks, ContactError, PeerClient};
use les::config::KeyConfig;
use les::net::{SystemClock, TokioNetwork};
use les::wire::{check_addr, PeerState, StepDownReply};

#[derive(Debug, clap::Args)]
pub struct StepDownArgs {
    /// host:port of the node to ask: the leader (its --admin-addr if it has one).
    #[arg(
        long,
        default_value = "localhost:4000",
        env = "LES_STEP_DOWN_NODE",
        value_name = "HOST:PORT"
    )]
    node: String,
    /// The cluster's keyring file; required when the cluster is keyed.
    #[arg(long, env = "LES_KEY_FILE", value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The cluster's name, if it has one.
    #[arg(long, env = "LES_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,
    /// How long to wait for each answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How long to watch for the new leader to take over.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    wait: Duration,
}

pub fn run(args: StepDownArgs) -> anyhow::Result<()> {
    check_addr(&args.node)
        .with_context(|| format!("{:?} is not a host:port address", args.node))?;
    let keys = KeyConfig {
        key_file: args.key_file.clone(),
        accept_unsigned: false,
    };
    let settings = les::daemon::load_auth(&keys)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = PeerClient::for_node(
        TokioNetwork,
        args.timeout,
        ClientLinks {
            metrics: Arc::default(),
            lost: None,
            auth: Arc::new(Auth::new(
                args.cluster.clone().unwrap_or_default(),
                settings,
            )),
            clock: Arc::new(SystemClock),
        },
    );
    rt.block_on(step_down(&client, &args))
}

async fn step_down(client: &PeerClient<TokioNetwork>, args: &StepDownArgs) -> anyhow::Result<()> {
    let node = &args.node;
    let sent = Instant::now();
    let reply = client.step_down(node).await.map_err(|e| refused(node, e))?;
    let before = reply.leader_before.as_deref().unwrap_or("none");
    if !reply.was_leader {
        bail!("{node} did not step down: {}", reply.message);
    }
    println!("{}", reply.message);
    println!("leader before: {before}");
    let successor = match reply.leader.as_deref() {
        Some(l) if l == reply.node => bail!("leadership did not move: {}", reply.message),
        Some(l) => l.to_string(),
        None => node.clone(),
    };
    let leader = takeover(client, &reply, successor, sent + args.wait).await?;
    println!("leader after:  {} (term {})", leader.0, leader.1);
    println!("took {:.1} ms", sent.elapsed().as_secs_f64() * 1000.0);
    Ok(())
}

/// Poll, every couple of milliseconds until `deadline`, the node named as successor
/// until it names itself leader (every member confirmed it); the leader and its term.
async fn takeover(
    client: &PeerClient<TokioNetwork>,
    reply: &StepDownReply,
    mut ask: String,
    deadline: Instant,
) -> anyhow::Result<(String, u64)> {
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match client
            .get(&ask, "/state")
            .await
            .map(|b| PeerState::from_json(&b))
        {
            Ok(Ok(s)) => {
                let me = s.members.first().cloned().unwrap_or_else(|| ask.clone());
                match s.leader {
                    Some(l) if l == me && l != reply.node => return Ok((l, s.term)),
                    Some(l) if l != reply.node => ask = l,
                    other => last = format!("{me} names {}", other.as_deref().unwrap_or("none")),
                }
            }
            Ok(Err(e)) => last = format!("{ask} sent an invalid state: {e}"),
            Err(e) => last = format!("{ask}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!(
        "{} stepped down, but no successor took over within the wait ({last})",
        reply.node
    )
}

/// The error for a request that did not get a step-down reply.
fn refused(node: &str, e: ContactError) -> anyhow::Error {
    match e {
        ContactError::Refused { status, reason } => anyhow::anyhow!(
            "{node} refused the request (HTTP {status}: {reason}); pass the cluster's --key-file and --cluster"
        ),
        ContactError::Status(s) if s == hyper::StatusCode::NOT_FOUND => anyhow::anyhow!(
            "{node} does not serve /step-down here (HTTP 404): ask its admin address (--admin-addr), or it is an older les"
        ),
        e => anyhow::anyhow!("cannot ask {node} to step down: {e}"),
    }
}
