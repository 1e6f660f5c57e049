//! A floating virtual IP: the address lives on whichever node leads.
//!
//! A complete les node whose [`LeaderChanged`] implementation runs
//! `ip addr replace VIP dev IFACE` when this node becomes leader (then sends one
//! gratuitous ARP with `arping -U` so neighbours switch to this machine's MAC at once)
//! and `ip addr del VIP dev IFACE` when it stops leading.
//!
//! Before taking the address it checks that no other machine still answers for it (an
//! ARP probe, `arping -D`, given 100 ms for an answer; repeated while one comes). A
//! leader that handed over gracefully has released it already, but one that was killed
//! releases it through its crash guard a few milliseconds after dying, and les can elect
//! its successor faster than that. The probe costs 100 ms per takeover.
//!
//! It releases the address:
//!
//! - at start-up ([`LeaderChanged::started`]), in case a previous run left it behind;
//! - on SIGTERM or SIGINT, before the other members hear that this node leaves (the
//!   node tells its handlers first, see `les::hooks`);
//! - if this process dies any other way (SIGKILL, out of memory): a [`CrashGuard`], a
//!   small `sh` waiting on a pipe only this process holds, deletes it.
//!
//! If the address cannot be added, the handler fails, so the node steps down and the
//! next most senior node takes the address (see `--step-down-cooldown`).
//!
//! ```sh
//! cargo build --release --example floating_ip
//! sudo target/release/examples/floating_ip --vip 192.0.2.10/24 --iface eth0 \
//!     --advertise-addr 192.0.2.1:4000 --seeds 192.0.2.1:4000,192.0.2.2:4000,192.0.2.3:4000
//! ```
//!
//! **Fencing.** With `--fence-file PATH` the example also shows how a resource that
//! leadership protects uses the term, les's fencing token: before taking the address,
//! the new leader records its term in `PATH` (a file on storage every node writes to,
//! standing in for a database row or a storage lease), under an exclusive lock, and the
//! write is *refused* if the file already holds a higher term. A leader that was cut
//! off, paused or slow and still believes it leads carries an older term, so whatever
//! it sends after its successor took over is turned away (Kleppmann's fencing token).
//! The file is a log of `TERM NODE` lines, one per accepted leader.
//!
//! Every node flag of `les` is accepted too (`--help`), including the hook commands.
//! Needs root (or CAP_NET_ADMIN and CAP_NET_RAW), `ip` from iproute2, and `arping` from
//! iputils (without it the address still moves, but neighbours learn the new MAC only
//! when their ARP entries expire).

#[path = "support/fence.rs"]
mod fence;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use fence::Fence;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use les::commands::CrashGuard;
use les::config::{LogFormat, RunArgs};
use les::hooks::{HookError, LeaderChange, LeaderChanged};
use tokio::process::Command;

/// How long an ARP probe for the address waits for an answer.
const PROBE_WAIT: Duration = Duration::from_millis(100);

/// Run a les node that holds a virtual IPv4 address while it leads.
#[derive(Debug, Parser)]
#[command(name = "floating_ip")]
struct Args {
    /// The virtual address with its prefix length, e.g. 192.0.2.10/24.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_vip)]
    vip: Vip,
    /// The interface that carries it, e.g. eth0.
    #[arg(long, value_name = "NAME", value_parser = parse_iface)]
    iface: String,
    /// A file that records the term of every leader that took the address; a leader
    /// whose term is older than the last one recorded is refused (fencing).
    #[arg(long, value_name = "PATH")]
    fence_file: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, Copy)]
struct Vip {
    addr: Ipv4Addr,
    prefix: u8,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn parse_vip(s: &str) -> Result<Vip, String> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or("expected ADDR/PREFIX, e.g. 192.0.2.10/24")?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an IPv4 address: {e}"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| *p <= 32)
        .ok_or_else(|| format!("{prefix:?} is not a prefix length (0 to 32)"))?;
    Ok(Vip { addr, prefix })
}

fn parse_iface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not an interface name"))
    }
}

/// Moves the address with leadership.
struct FloatingIp {
    vip: Vip,
    iface: String,
    me: String,
    fence: Option<Fence>,
    /// Warn about a missing `arping` once, not on every gain.
    warned_no_arping: AtomicBool,
}

impl FloatingIp {
    /// Run `ip ARGS`; on failure, its error message.
    async fn ip(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("ip")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`ip {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether the address is on the interface now.
    async fn configured(&self) -> Result<bool, String> {
        let out = self
            .ip(&["-o", "-4", "addr", "show", "dev", &self.iface])
            .await?;
        let needle = format!(" {}/", self.vip.addr);
        Ok(out.contains(&needle))
    }

    /// Wait until no other machine answers ARP for the address. Bounded by the node's
    /// hook timeout, which cancels this call (and kills `arping`).
    async fn wait_until_free(&self) {
        let mut said = false;
        loop {
            let probe = Command::new("arping")
                .args(["-D", "-q", "-c", "1", "-w", "1", "-I", &self.iface])
                .arg(self.vip.addr.to_string())
                .kill_on_drop(true)
                .spawn();
            let mut child = match probe {
                Ok(c) => c,
                Err(e) => {
                    self.no_arping(&e);
                    return; // cannot check; take it
                }
            };
            // In DAD mode arping exits 1 at the first answer; replies on a LAN take well
            // under a millisecond, so 100 ms without one means nobody holds the address.
            match tokio::time::timeout(PROBE_WAIT, child.wait()).await {
                Ok(Ok(status)) if status.code() == Some(1) => {}
                _ => return,
            }
            if !std::mem::replace(&mut said, true) {
                tracing::warn!(vip = %self.vip,
                    "another machine still answers for the virtual IP; waiting for it to let go");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn no_arping(&self, e: &std::io::Error) {
        if !self.warned_no_arping.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e,
                "cannot run arping: the virtual IP is taken without checking that nobody \
                 else holds it, and neighbours learn the move only when their ARP entries expire");
        }
    }

    async fn take(&self, term: u64) -> Result<(), HookError> {
        if let Some(fence) = &self.fence {
            // A stale leader stops here: its term is older than the one on record.
            fence.admit(term, &self.me).map_err(HookError::new)?;
            tracing::info!(term, "fencing: admitted");
        }
        self.wait_until_free().await;
        let vip = self.vip.to_string();
        self.ip(&["addr", "replace", &vip, "dev", &self.iface])
            .await
            .map_err(HookError::new)?;
        tracing::info!(vip = %vip, iface = %self.iface, "took the virtual IP");
        self.announce();
        Ok(())
    }

    async fn release(&self) -> Result<(), HookError> {
        let vip = self.vip.to_string();
        match self.ip(&["addr", "del", &vip, "dev", &self.iface]).await {
            Ok(_) => {
                tracing::info!(vip = %vip, iface = %self.iface, "released the virtual IP");
                Ok(())
            }
            // Deleting an address that is not there fails; that is the state we want.
            Err(e) => match self.configured().await {
                Ok(false) => Ok(()),
                _ => Err(HookError::new(e)),
            },
        }
    }

    /// One gratuitous ARP, so neighbours send to this machine at once. `arping` then
    /// waits a second for answers that never come, so it runs in the background.
    fn announce(&self) {
        let spawned = Command::new("arping")
            .args(["-q", "-U", "-c", "1", "-I", &self.iface])
            .arg(self.vip.addr.to_string())
            .kill_on_drop(true)
            .spawn();
        match spawned {
            Ok(mut child) => {
                tokio::spawn(async move {
                    match child.wait().await {
                        Ok(s) if s.success() => {}
                        Ok(s) => tracing::warn!(status = %s, "arping failed"),
                        Err(e) => tracing::warn!(error = %e, "arping failed"),
                    }
                });
            }
            Err(e) => self.no_arping(&e),
        }
    }
}

impl LeaderChanged for FloatingIp {
    async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
        if change.gained() {
            self.take(change.term).await
        } else if change.lost() {
            self.release().await
        } else {
            Ok(())
        }
    }

    async fn started(&self, _me: &str) -> Result<(), HookError> {
        self.release().await
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let resolved = match args.run.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("floating_ip: error: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match resolved.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let fence = args.fence_file.map(|path| Fence { path });
    match run(args.vip, args.iface, fence, &args.run, resolved) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floating_ip: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    vip: Vip,
    iface: String,
    fence: Option<Fence>,
    args: &les::config::RunArgs,
    resolved: les::config::Resolved,
) -> anyhow::Result<()> {
    let me = resolved.config.advertise_addr.clone();
    // If this process dies without leaving, the address must not stay behind while a
    // successor takes it. This guard is never disarmed: deleting the address whenever
    // this process ends is right (after a graceful leave it is already gone). The
    // variables keep the address out of the shell's parsing.
    let vip_text = vip.to_string();
    let _release_on_exit = CrashGuard::arm(
        r#"ip addr del "$LES_VIP" dev "$LES_IFACE" 2>/dev/null"#,
        &[("LES_VIP", &vip_text), ("LES_IFACE", &iface)],
    )
    .context("cannot start the crash guard")?;
    // The same for an on_follower command, if one is configured too.
    let hooks_guard = les::daemon::crash_guard(&resolved)
        .context("cannot start the crash guard for on_follower")?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let node = les::daemon::node_builder(&resolved)?
            .on_leader_change(FloatingIp {
                vip,
                iface,
                me: me.clone(),
                fence,
                warned_no_arping: AtomicBool::new(false),
            })
            .start()
            .await
            .with_context(|| format!("cannot start the node {me}"))?;
        let reload = || args.resolve().map(|r| r.keys).map_err(|e| e.to_string());
        les::daemon::handle_signals(&node, reload)
            .await
            .context("cannot listen for signals")?;
        tracing::info!("leaving: releasing the virtual IP first");
        node.leave().await;
        anyhow::Ok(())
    })?;
    if let Some(g) = hooks_guard {
        g.disarm(); // on_follower has run already
    }
    Ok(())
}
