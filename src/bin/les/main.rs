//! `les`: run a node, inspect a cluster, or watch a demo. A thin shell over the library:
//! this file parses the command line and maps errors to exit codes (2 for bad input,
//! 1 for runtime failures); everything else lives in `les::*`.

mod demo;
mod status;
mod stepdown;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use les::config::{LogFormat, Resolved, RunArgs};
use les::net::TokioNetwork;
use les::node::NodeBuilder;

/// Leader Election by Seniority: a gossip membership service whose nodes agree on one
/// leader, the node that has been running longest.
///
/// Without a subcommand, `les` runs a node. Every flag can also be set through a LES_*
/// environment variable or a TOML file given with --config; precedence is
/// flag > environment > file > default.
#[derive(Debug, Parser)]
#[command(name = "les", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the cluster as seen from one node (its /diag/), as a table.
    Status(status::StatusArgs),
    /// Start a three-node cluster on loopback in this process, hand leadership over
    /// gracefully once, print what happened, and exit.
    Demo(demo::DemoArgs),
    /// Print a new random key (base64, 32 bytes) for a key file (--key-file).
    Keygen,
    /// Ask the leader to give up leadership now: it rejoins as the most junior member
    /// and the next most senior node takes over. Prints who led before and after.
    StepDown(stepdown::StepDownArgs),
    /// Print a shell completion script: `les completions bash > /etc/bash_completion.d/les`
    /// (zsh: into a directory on $fpath as `_les`; fish: ~/.config/fish/completions/les.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `les man | man -l -`.
    Man,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return explain_parse_error(e),
    };
    match cli.command {
        Some(Command::Status(args)) => match status::run(args) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(status::NO_LEADER),
            Err(e) => report(Err(e)),
        },
        Some(Command::Demo(args)) => report(demo::run(args)),
        Some(Command::Keygen) => report(keygen()),
        Some(Command::StepDown(args)) => report(stepdown::run(args)),
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "les", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Some(Command::Man) => report(man()),
        None => run_node(cli.run),
    }
}

/// clap's error, except that a bad value that came from a `LES_*` variable (and not
/// from the command line) is reported under the variable's name, which is what the
/// user typed, not the flag's.
fn explain_parse_error(e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let from_env = || {
        if !matches!(
            e.kind(),
            ErrorKind::ValueValidation | ErrorKind::InvalidValue
        ) {
            return None;
        }
        let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
            return None;
        };
        let long = arg.split_whitespace().next()?.trim_start_matches("--");
        let cmd = <Cli as clap::CommandFactory>::command();
        let env = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(long))?
            .get_env()?
            .to_str()?
            .to_string();
        let typed = std::env::args()
            .any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
        let value = std::env::var(&env).ok().filter(|_| !typed)?;
        let why = e.to_string();
        let why = why
            .lines()
            .next()
            .unwrap_or("")
            .rsplit(": ")
            .next()
            .unwrap_or("")
            .to_string();
        Some(format!(
            "{env}={value:?} is not a valid value for --{long}: {why}"
        ))
    };
    match from_env() {
        Some(msg) => {
            eprintln!("les: error: {msg}");
            ExitCode::from(2)
        }
        None => e.exit(),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("les: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The manual page, from the same definitions as `--help`.
fn man() -> anyhow::Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
        // `les man | head`: the reader has all it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.context("cannot write the manual page"),
    }
}

fn keygen() -> anyhow::Result<()> {
    let key = les::auth::Key::generate().context("the system's random generator failed")?;
    println!("{}", key.to_base64());
    Ok(())
}

fn run_node(args: RunArgs) -> ExitCode {
    let resolved = match args.resolve() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("les: error: {e}");
            eprintln!("Run `les --help` for the flags, or see les.toml.example.");
            return ExitCode::from(2);
        }
    };
    init_logging(resolved.log_format, "info");
    // The builder reads the key file: one that cannot be used is bad input too, said
    // before anything starts.
    let builder = match les::daemon::node_builder(&resolved) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("les: error: {e}");
            return ExitCode::from(2);
        }
    };
    report(serve(&args, resolved, builder))
}

/// Run one node until SIGINT or SIGTERM, then leave gracefully. SIGHUP re-reads the
/// key settings from `args` (and the config file it names).
fn serve(
    args: &RunArgs,
    resolved: Resolved,
    builder: NodeBuilder<TokioNetwork>,
) -> anyhow::Result<()> {
    // If les dies without leaving, release what on_leader took (see les::commands).
    let guard = les::daemon::crash_guard(&resolved)
        .context("cannot start the crash guard for on_follower")?;
    // One thread is plenty for a node and keeps its idle cost low.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        // The node's error names the address and its cause once; a context or the
        // error's source chain on top would repeat them.
        let node = builder.start().await.map_err(|e| match e {
            les::node::NodeError::Bind { .. } => anyhow::anyhow!(
                "{e} (another les or another program holds it: stop that, or choose another --bind-port / --admin-addr)"
            ),
            e => anyhow::anyhow!("{e}"),
        })?;
        let _systemd = les::daemon::systemd::spawn(&node);
        let reload = || args.resolve().map(|r| r.keys).map_err(|e| e.to_string());
        let signal = les::daemon::handle_signals(&node, reload)
            .await
            .context("cannot listen for signals")?;
        tracing::info!(signal, "shutting down: leaving the cluster");
        les::daemon::systemd::stopping();
        node.leave().await;
        anyhow::Ok(())
    })?;
    // Left gracefully: on_follower has run already.
    if let Some(g) = guard {
        g.disarm();
    }
    Ok(())
}

/// Logs go to stderr; RUST_LOG overrides `default_level`.
pub(crate) fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn python_flags_parse_unchanged() {
        let cli = Cli::try_parse_from([
            "les",
            "--bind-interface",
            "127.0.0.1",
            "--bind-port",
            "4001",
            "--advertise-addr",
            "localhost:4001",
            "--seeds",
            "localhost:4000,localhost:4001",
            "--loop-rate",
            "1",
        ])
        .unwrap();
        let r = cli.run.resolve().unwrap();
        assert_eq!(r.config.seeds, vec!["localhost:4000", "localhost:4001"]);
        assert_eq!(r.config.interval, std::time::Duration::from_secs(1));
        assert_eq!(r.config.bind, "127.0.0.1:4001".parse().unwrap());
    }
}
