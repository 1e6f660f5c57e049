//! Wiring for daemons: a [`Resolved`] configuration turned into a node builder with the
//! shell-command hooks, health check and crash guard it names.
//!
//! This lives apart from [`crate::config`] so that the configuration stays a plain
//! description (it imports neither the runtime nor the command runner); the `les`
//! binary and `examples/floating_ip.rs` call these functions once they have resolved
//! their settings. Library users who build a [`crate::config::Config`] themselves call
//! [`crate::node::NodeBuilder`] methods directly instead.

use std::time::Duration;

use crate::commands::{CommandHealthCheck, CommandHooks, CrashGuard};
use crate::config::{HookConfig, Resolved};
use crate::net::TokioNetwork;
use crate::node::{Node, NodeBuilder};

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

/// A node builder with everything `resolved` configures: timings, the hook commands (if
/// any) and the health check (if any). Add handlers of your own before `start`.
pub fn node_builder(resolved: &Resolved) -> NodeBuilder<TokioNetwork> {
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
    builder
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
