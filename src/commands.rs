//! Shell commands as hooks, for operators who run the `les` binary rather than embed
//! the library: keepalived's `notify_master` / `notify_backup` / `notify` and
//! `track_script`, over LES.
//!
//! - [`CommandHooks`] is a [`LeaderChanged`] implementation that runs `on_leader` when
//!   this node gains leadership, `on_follower` when it loses it, and `on_change` on every
//!   change, each through `sh -c` with the variables below. A failing `on_leader` makes
//!   the node step down (see [`crate::hooks`]).
//! - [`CommandHealthCheck`] is a [`HealthCheck`] that runs a command: exit status 0 is
//!   healthy.
//! - [`CrashGuard`] runs a command if this process dies without a graceful leave, so a
//!   virtual IP does not outlive a `les` that was killed.
//!
//! # Environment of a hook command
//! | variable | value |
//! |---|---|
//! | `LES_ROLE` | `leader` or `follower`: this node's role after the change |
//! | `LES_LEADER` | the leader after the change (`host:port`), empty if none |
//! | `LES_PREVIOUS_LEADER` | the leader before the change, empty if none |
//! | `LES_SELF` | this node's advertise address |
//! | `LES_TERM` | this node's term after the change (`0` at start-up, empty after a crash) |
//! | `LES_EVENT` | `start`, `change` or `crash` |
//!
//! # Running
//! Each command runs as `sh -c COMMAND` in a process group of its own, with standard
//! input from `/dev/null`; each line it writes to standard output or error becomes a
//! log line (at `info` for hooks, `debug` for health checks), cut at 4 KiB. The commands
//! of one call share one deadline (the hook timeout): at the deadline the whole process
//! group is killed and the command counts as failed. Background processes a command
//! leaves behind are not waited for, nor killed once the command has exited.

use std::io::{self, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::hooks::{HealthCheck, HookError, LeaderChange, LeaderChanged};

/// Longest piece of command output logged as one line.
const MAX_LINE: u64 = 4096;
/// How long output is still read after a command exited (a background process it left
/// may hold the pipe open).
const DRAIN: Duration = Duration::from_millis(200);

/// How a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// `sh` could not be started.
    #[error("cannot start `sh`: {0}")]
    Spawn(io::Error),
    /// The command exited unsuccessfully (non-zero status, or killed by a signal).
    #[error("failed ({0})")]
    Exit(ExitStatus),
    /// The command ran past its timeout; its whole process group was killed.
    #[error("timed out after {0:?}; killed")]
    TimedOut(Duration),
    /// Waiting for the command failed.
    #[error("cannot wait for it: {0}")]
    Wait(io::Error),
}

/// Kills the command's process group when dropped before the command finished: on a
/// timeout, or when the call running it is cancelled.
struct Running {
    child: tokio::process::Child,
    /// The group id (the shell's pid) while the shell has not been reaped, so the id
    /// cannot have been reused.
    group: Option<u32>,
}

impl Running {
    fn kill_group(&mut self) {
        if let Some(pgid) = self.group.take().filter(|&p| p > 1) {
            if let Ok(pgid) = libc::pid_t::try_from(pgid) {
                // SAFETY: kill(2) takes plain integers. A negative pid names the process
                // group the shell leads (created by `process_group(0)`); the shell has not
                // been reaped, so the group id still belongs to it.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // `kill_on_drop` then kills and reaps the shell itself.
        self.kill_group();
    }
}

/// Run `command` through `sh -c` with `env` added, logging its output, within `timeout`.
/// `label` names it in the log (`on_leader`, `health_check`, ...); `quiet` logs its
/// output at `debug` rather than `info`.
pub async fn run_command(
    label: &str,
    command: &str,
    env: &[(&str, &str)],
    timeout: Duration,
    quiet: bool,
) -> Result<(), CommandError> {
    if timeout.is_zero() {
        return Err(CommandError::TimedOut(timeout));
    }
    let started = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .spawn()
        .map_err(CommandError::Spawn)?;
    let mut readers = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        readers.spawn(log_lines(out, label.to_string(), "stdout", quiet));
    }
    if let Some(err) = child.stderr.take() {
        readers.spawn(log_lines(err, label.to_string(), "stderr", quiet));
    }
    let group = child.id();
    let mut running = Running { child, group };
    let status = match tokio::time::timeout(timeout, running.child.wait()).await {
        Ok(Ok(status)) => {
            running.group = None; // reaped: never signal that id again
            status
        }
        Ok(Err(e)) => return Err(CommandError::Wait(e)),
        Err(_) => {
            running.kill_group();
            let _ = running.child.wait().await;
            drain(&mut readers).await;
            return Err(CommandError::TimedOut(timeout));
        }
    };
    drain(&mut readers).await;
    let ms = started.elapsed().as_millis() as u64;
    if status.success() {
        if quiet {
            tracing::debug!(hook = label, ms, "command succeeded");
        } else {
            tracing::info!(hook = label, ms, "hook command succeeded");
        }
        Ok(())
    } else {
        Err(CommandError::Exit(status))
    }
}

async fn drain(readers: &mut JoinSet<()>) {
    let _ = tokio::time::timeout(DRAIN, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
}

async fn log_lines<R: AsyncRead + Unpin>(r: R, label: String, stream: &'static str, quiet: bool) {
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut r).take(MAX_LINE).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if quiet {
                    tracing::debug!(hook = %label, stream, "{text}");
                } else {
                    tracing::info!(hook = %label, stream, "{text}");
                }
            }
        }
    }
}

/// The `LES_*` variables for one call.
struct HookEnv {
    event: &'static str,
    role: &'static str,
    leader: String,
    previous: String,
    me: String,
    term: String,
}

impl HookEnv {
    fn start(me: &str) -> Self {
        HookEnv {
            event: "start",
            role: "follower",
            leader: String::new(),
            previous: String::new(),
            me: me.to_string(),
            term: "0".into(),
        }
    }

    fn change(change: &LeaderChange) -> Self {
        HookEnv {
            event: "change",
            role: if change.gained() {
                "leader"
            } else {
                "follower"
            },
            leader: change.current.clone().unwrap_or_default(),
            previous: change.previous.clone().unwrap_or_default(),
            me: change.me.clone(),
            term: change.term.to_string(),
        }
    }

    fn crash(me: &str) -> Self {
        HookEnv {
            event: "crash",
            term: String::new(),
            ..HookEnv::start(me)
        }
    }

    fn vars(&self) -> [(&'static str, &str); 6] {
        [
            ("LES_EVENT", self.event),
            ("LES_ROLE", self.role),
            ("LES_LEADER", &self.leader),
            ("LES_PREVIOUS_LEADER", &self.previous),
            ("LES_SELF", &self.me),
            ("LES_TERM", &self.term),
        ]
    }
}

/// Runs operator commands on leader changes. See the module docs.
///
/// | when | runs |
/// |---|---|
/// | node start-up ([`LeaderChanged::started`]) | `on_follower`, then `on_change` (`LES_EVENT=start`, `LES_ROLE=follower`, `LES_LEADER` empty, `LES_TERM=0`) |
/// | this node gains leadership | `on_leader`, then `on_change` |
/// | this node loses leadership (including on graceful leave) | `on_follower`, then `on_change` |
/// | any other change of leader | `on_change` |
///
/// Only a failing `on_leader` is reported to the node (which then steps down); other
/// failures are logged.
///
/// ```
/// use std::time::Duration;
/// use les::commands::CommandHooks;
///
/// let hooks = CommandHooks::new(Duration::from_secs(10))
///     .on_leader("ip addr replace 192.0.2.10/24 dev eth0")
///     .on_follower("ip addr del 192.0.2.10/24 dev eth0 2>/dev/null; true");
/// ```
#[derive(Debug, Clone)]
pub struct CommandHooks {
    on_leader: Option<String>,
    on_follower: Option<String>,
    on_change: Option<String>,
    timeout: Duration,
}

impl CommandHooks {
    /// No commands yet; the commands of one call may run for `timeout` in all.
    pub fn new(timeout: Duration) -> Self {
        CommandHooks {
            on_leader: None,
            on_follower: None,
            on_change: None,
            timeout,
        }
    }

    /// Command run when this node becomes leader; a non-zero exit makes it step down.
    pub fn on_leader(mut self, command: impl Into<String>) -> Self {
        self.on_leader = Some(command.into());
        self
    }

    /// Command run when this node stops leading, and once at start-up.
    pub fn on_follower(mut self, command: impl Into<String>) -> Self {
        self.on_follower = Some(command.into());
        self
    }

    /// Command run on every change of leader, and once at start-up.
    pub fn on_change(mut self, command: impl Into<String>) -> Self {
        self.on_change = Some(command.into());
        self
    }

    /// Whether any command is set.
    pub fn is_empty(&self) -> bool {
        self.on_leader.is_none() && self.on_follower.is_none() && self.on_change.is_none()
    }

    /// A [`CrashGuard`] that runs `on_follower` (with `LES_EVENT=crash`) if this process
    /// dies without [`CrashGuard::disarm`]; `None` when `on_follower` is not set.
    pub fn crash_guard(&self, me: &str) -> Option<io::Result<CrashGuard>> {
        let command = self.on_follower.as_deref()?;
        Some(CrashGuard::arm(command, &HookEnv::crash(me).vars()))
    }

    /// Run `command` (if set) within the deadline; log a failure and return it.
    async fn run(
        &self,
        label: &str,
        command: &Option<String>,
        env: &HookEnv,
        deadline: Instant,
    ) -> Result<(), CommandError> {
        let Some(command) = command else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let result = run_command(label, command, &env.vars(), left, false).await;
        if let Err(e) = &result {
            tracing::error!(hook = label, error = %e, term = %env.term, "hook command failed");
        }
        result
    }
}

impl LeaderChanged for CommandHooks {
    async fn leader_changed(&self, change: LeaderChange) -> Result<(), HookError> {
        let deadline = Instant::now() + self.timeout;
        let env = HookEnv::change(&change);
        let mut result = Ok(());
        if change.gained() {
            if let Err(e) = self.run("on_leader", &self.on_leader, &env, deadline).await {
                result = Err(HookError::new(format!("on_leader {e}")));
            }
        }
        if change.lost() {
            let _ = self
                .run("on_follower", &self.on_follower, &env, deadline)
                .await;
        }
        let _ = self.run("on_change", &self.on_change, &env, deadline).await;
        result
    }

    async fn started(&self, me: &str) -> Result<(), HookError> {
        let deadline = Instant::now() + self.timeout;
        let env = HookEnv::start(me);
        let _ = self
            .run("on_follower", &self.on_follower, &env, deadline)
            .await;
        let _ = self.run("on_change", &self.on_change, &env, deadline).await;
        Ok(())
    }
}

/// A [`HealthCheck`] that runs a command through `sh -c`: exit status 0 is healthy;
/// anything else, or outliving the timeout, is not. Its output is logged at `debug`.
#[derive(Debug, Clone)]
pub struct CommandHealthCheck {
    command: String,
    me: String,
    timeout: Duration,
}

impl CommandHealthCheck {
    /// Check with `command` on node `me` (given as `LES_SELF`), killed after `timeout`.
    pub fn new(command: impl Into<String>, me: impl Into<String>, timeout: Duration) -> Self {
        CommandHealthCheck {
            command: command.into(),
            me: me.into(),
            timeout,
        }
    }
}

impl HealthCheck for CommandHealthCheck {
    async fn check(&self) -> Result<(), HookError> {
        run_command(
            "health_check",
            &self.command,
            &[("LES_SELF", &self.me)],
            self.timeout,
            true,
        )
        .await
        .map_err(|e| HookError::new(format!("health_check {e}")))
    }
}

/// A dead man's switch: a small `sh` process, started now, that runs a command when
/// this process exits without calling [`CrashGuard::disarm`] — killed with SIGKILL,
/// out of memory, a panic, a `return` past the graceful leave.
///
/// The shell waits on a pipe whose other end only this process holds; the kernel
/// closes it however this process ends. Disarming writes a line first, which the shell
/// takes as "all is well" and exits. Dropping the guard without disarming runs the
/// command, as a crash would. The shell runs in its own process group, so a Ctrl-C
/// meant for `les` does not kill it; its output goes where this process's goes. Nothing
/// bounds how long the command runs after a crash, since nobody is left to watch it.
#[derive(Debug)]
pub struct CrashGuard {
    child: std::process::Child,
}

impl CrashGuard {
    /// Start the guard for `command`, which will run with `env` added.
    pub fn arm(command: &str, env: &[(&str, &str)]) -> io::Result<Self> {
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(r#"read -r ok || exec sh -c "$LES_CRASH_COMMAND""#)
            .env("LES_CRASH_COMMAND", command)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()?;
        Ok(CrashGuard { child })
    }

    /// The process exits gracefully: stop the guard without running its command.
    pub fn disarm(mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"ok\n");
        }
        // The shell exits as soon as it has read the line; do not wait forever if not.
        for _ in 0..100 {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                _ => return,
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// A scratch directory, removed when the test is done with it.
    struct Scratch(PathBuf);

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn scratch(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("les-cmd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn change(me: &str, previous: Option<&str>, current: Option<&str>, term: u64) -> LeaderChange {
        LeaderChange {
            me: me.into(),
            previous: previous.map(Into::into),
            current: current.map(Into::into),
            term,
        }
    }

    /// A command that appends `name` and the LES_* variables to `log`.
    fn record(name: &str, log: &Path) -> String {
        format!(
            "echo \"{name} $LES_EVENT role=$LES_ROLE leader=$LES_LEADER prev=$LES_PREVIOUS_LEADER self=$LES_SELF term=$LES_TERM\" >> {}",
            log.display()
        )
    }

    fn recording_hooks(log: &Path) -> CommandHooks {
        CommandHooks::new(Duration::from_secs(10))
            .on_leader(record("leader", log))
            .on_follower(record("follower", log))
            .on_change(record("change", log))
    }

    #[tokio::test]
    async fn a_gain_runs_on_leader_then_on_change_with_the_variables() {
        let dir = scratch("gain");
        let log = dir.join("log");
        let hooks = recording_hooks(&log);
        hooks
            .leader_changed(change("a:1", Some("b:1"), Some("a:1"), 4))
            .await
            .unwrap();
        assert_eq!(
            read(&log),
            "leader change role=leader leader=a:1 prev=b:1 self=a:1 term=4\n\
             change change role=leader leader=a:1 prev=b:1 self=a:1 term=4\n"
        );
    }

    #[tokio::test]
    async fn a_loss_runs_on_follower_and_another_change_only_on_change() {
        let dir = scratch("loss");
        let log = dir.join("log");
        let hooks = recording_hooks(&log);
        hooks
            .leader_changed(change("a:1", Some("a:1"), None, 4))
            .await
            .unwrap();
        hooks
            .leader_changed(change("a:1", None, Some("c:1"), 5))
            .await
            .unwrap();
        assert_eq!(
            read(&log),
            "follower change role=follower leader= prev=a:1 self=a:1 term=4\n\
             change change role=follower leader= prev=a:1 self=a:1 term=4\n\
             change change role=follower leader=c:1 prev= self=a:1 term=5\n"
        );
    }

    #[tokio::test]
    async fn start_up_runs_on_follower_and_on_change_with_no_leader() {
        let dir = scratch("start");
        let log = dir.join("log");
        recording_hooks(&log).started("a:1").await.unwrap();
        assert_eq!(
            read(&log),
            "follower start role=follower leader= prev= self=a:1 term=0\n\
             change start role=follower leader= prev= self=a:1 term=0\n"
        );
    }

    #[tokio::test]
    async fn only_a_failing_on_leader_is_reported() {
        let fails = CommandHooks::new(Duration::from_secs(10))
            .on_leader("exit 3")
            .on_follower("exit 1")
            .on_change("exit 1");
        let err = fails
            .leader_changed(change("a:1", None, Some("a:1"), 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("on_leader"), "{err}");
        assert!(err.to_string().contains('3'), "{err}");
        fails
            .leader_changed(change("a:1", Some("a:1"), Some("b:1"), 2))
            .await
            .unwrap();
        fails.started("a:1").await.unwrap();
    }

    #[tokio::test]
    async fn a_command_that_outlives_its_timeout_is_killed_with_its_children() {
        let dir = scratch("timeout");
        let marker = dir.join("survived");
        // The shell forks `sleep`; killing only the shell would leave it running.
        let cmd = format!("(sleep 2; touch {}) & wait", marker.display());
        let t = std::time::Instant::now();
        let err = run_command("test", &cmd, &[], Duration::from_millis(200), false)
            .await
            .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut(_)), "{err}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(
            !marker.exists(),
            "a child of the timed-out command survived"
        );
    }

    #[tokio::test]
    async fn a_background_process_holding_the_output_does_not_hold_the_hook() {
        let t = std::time::Instant::now();
        run_command(
            "test",
            "sleep 3 & echo started",
            &[],
            Duration::from_secs(10),
            false,
        )
        .await
        .unwrap();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[tokio::test]
    async fn the_shared_deadline_stops_the_commands_of_one_call() {
        let dir = scratch("deadline");
        let log = dir.join("log");
        let hooks = CommandHooks::new(Duration::from_millis(300))
            .on_leader("sleep 5")
            .on_change(record("change", &log));
        let t = std::time::Instant::now();
        let err = hooks
            .leader_changed(change("a:1", None, Some("a:1"), 1))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("timed out"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(read(&log), "", "on_change had no time left");
    }

    #[tokio::test]
    async fn a_health_check_is_healthy_on_exit_status_zero_only() {
        let ok = CommandHealthCheck::new("test \"$LES_SELF\" = a:1", "a:1", Duration::from_secs(5));
        ok.check().await.unwrap();
        let bad = CommandHealthCheck::new("exit 1", "a:1", Duration::from_secs(5));
        assert!(bad.check().await.is_err());
        let slow = CommandHealthCheck::new("sleep 5", "a:1", Duration::from_millis(100));
        assert!(slow.check().await.is_err());
    }

    fn wait_for_file(path: &Path) -> bool {
        for _ in 0..300 {
            if path.exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_crash_guard_runs_its_command_when_dropped_and_not_when_disarmed() {
        let dir = scratch("guard");
        let fired = dir.join("fired");
        let cmd = format!("echo \"$LES_EVENT $LES_SELF\" > {}", fired.display());
        let guard = CrashGuard::arm(&cmd, &HookEnv::crash("a:1").vars()).unwrap();
        guard.disarm();
        std::thread::sleep(Duration::from_millis(200));
        assert!(!fired.exists(), "a disarmed guard ran its command");

        let guard = CrashGuard::arm(&cmd, &HookEnv::crash("a:1").vars()).unwrap();
        drop(guard); // as if this process had died: the pipe closes
        assert!(wait_for_file(&fired), "the guard did not fire");
        // The file may exist before the shell finished writing it.
        for _ in 0..100 {
            if read(&fired) == "crash a:1\n" {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("unexpected guard output {:?}", read(&fired));
    }
}
