//! Wiring for daemons: a [`Resolved`] configuration turned into a node builder with the
//! shell-command hooks, health check, keyring and crash guard it names, and the signals
//! a daemon answers (SIGTERM/SIGINT leave, SIGHUP reloads the keyring).
//!
//! This lives apart from [`crate::config`] so that the configuration stays a plain
//! description (it imports neither the runtime nor the command runner); the `les`
//! binary and `examples/floating_ip.rs` call these functions once they have resolved
//! their settings. Library users who build a [`crate::config::Config`] themselves call
//! [`crate::node::NodeBuilder`] methods directly instead.

use std::time::Duration;

pub mod systemd;

use crate::auth::{Keyring, KeyringError, Settings};
use crate::commands::{CommandHealthCheck, CommandHooks, CrashGuard};
use crate::config::{HookConfig, KeyConfig, Resolved};
use crate::net::TokioNetwork;
use crate::node::{Node, NodeBuilder, NodeHandle};

/// The configured hook commands as a handler (empty if none is set).
pub fn command_hooks(hooks: &HookConfig) -> CommandHooks {
    let mut commands = CommandHooks::new(hooks.hook_timeout);
    if let Some(c) = &hooks.on_leader {
        commands = commands.on_leader(c);
    }
    if let Some(c) = &hooks.on_follower {
        commands = commands.on_follower(c);
    }
    if let Some(c) = &hooks.on_change {
        commands = commands.on_change(c);
    }
    commands
}

/// The keyring `keys` names, read now (unkeyed without a key file). Warns if the file
/// can be read by other users.
pub fn load_auth(keys: &KeyConfig) -> Result<Settings, KeyringError> {
    let Some(path) = &keys.key_file else {
        return Ok(Settings::default());
    };
    let keyring = Keyring::load(path)?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(),
                "key file is readable by other users: chmod 600 it");
        }
    }
    Ok(Settings {
        keyring: Some(keyring),
        accept_unsigned: keys.accept_unsigned,
    })
}

/// Descriptors a node needs beyond its connection cap: listeners, outgoing peer
/// connections, hook commands' pipes, the log.
const SPARE_DESCRIPTORS: u64 = 256;

/// Raise this process's open-files soft limit to its hard limit (services often start
/// at 1024, fewer than the default connection cap), and warn if even that leaves too
/// few for `max_connections`: past the limit `accept` fails and new connections wait in
/// the kernel's queue instead of being admitted or shed.
pub fn raise_open_files_limit(max_connections: usize) {
    let need = max_connections as u64 + SPARE_DESCRIPTORS;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur < need {
        tracing::warn!(limit = lim.rlim_cur, max_connections, need,
            "the open-files limit is below max_connections plus a margin: raise it (systemd: LimitNOFILE=) or lower max_connections");
    }
}

/// A node builder with everything `resolved` configures: timings, the keyring (read
/// now), the hook commands (if any) and the health check (if any). Add handlers of
/// your own before `start`. Also raises the process's open-files limit
/// ([`raise_open_files_limit`]): it is meant for daemons.
pub fn node_builder(resolved: &Resolved) -> Result<NodeBuilder<TokioNetwork>, KeyringError> {
    raise_open_files_limit(resolved.config.max_connections);
    let h = &resolved.hooks;
    // The commands of one change share `hook_timeout` and kill themselves at its end;
    // the node's own limit on the call is a backstop that must not cut them short.
    let mut builder = Node::builder(resolved.config.clone())
        .step_down_cooldown(h.step_down_cooldown)
        .hook_timeout(h.hook_timeout + Duration::from_secs(1));
    let commands = command_hooks(h);
    if !commands.is_empty() {
        builder = builder.on_leader_change(commands);
    }
    if let Some(check) = &h.health_check {
        builder = builder.health_check(
            CommandHealthCheck::new(check, &resolved.config.advertise_addr, h.hook_timeout),
            h.health_interval,
        );
    }
    Ok(builder.auth(load_auth(&resolved.keys)?))
}

/// A future that resolves, with the signal's name, on the first SIGINT (Ctrl-C) or
/// SIGTERM (what `systemctl stop`, `kill` and container runtimes send): await it, then
/// call [`NodeHandle::leave`] so the handlers release leadership and the members hear
/// of the leave. The handlers are installed when this function returns, so a signal
/// that arrives before the first poll is not lost.
///
/// ```no_run
/// # async fn run(node: les::node::NodeHandle) -> std::io::Result<()> {
/// let stop = les::daemon::shutdown_signal()?;
/// let signal = stop.await;
/// tracing::info!(signal, "leaving");
/// node.leave().await;
/// # Ok(())
/// # }
/// ```
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// Answer signals until one asks the node to stop, and return its name: SIGTERM and
/// SIGINT stop; SIGHUP calls `reload` for the new key settings and installs them, or
/// logs why not and keeps the old ones.
pub async fn handle_signals(
    node: &NodeHandle,
    reload: impl Fn() -> Result<KeyConfig, String>,
) -> std::io::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok("SIGTERM"),
            _ = int.recv() => return Ok("SIGINT"),
            _ = hup.recv() => {
                match reload().and_then(|keys| load_auth(&keys).map_err(|e| e.to_string())) {
                    Ok(settings) => node.reload_auth(settings),
                    Err(why) => tracing::error!(error = %why,
                        "SIGHUP: cannot reload the keyring; keeping the current one"),
                }
            }
        }
    }
}

/// The crash guard for the `on_follower` command, if one is set: it runs the command if
/// this process dies without a graceful leave (see [`CommandHooks::crash_guard`]).
/// Disarm it after [`crate::node::NodeHandle::leave`].
pub fn crash_guard(resolved: &Resolved) -> std::io::Result<Option<CrashGuard>> {
    command_hooks(&resolved.hooks)
        .crash_guard(&resolved.config.advertise_addr)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_commands_make_an_empty_handler() {
        assert!(command_hooks(&HookConfig::default()).is_empty());
        let hooks = HookConfig {
            on_change: Some("true".into()),
            ..HookConfig::default()
        };
        assert!(!command_hooks(&hooks).is_empty());
    }
}
