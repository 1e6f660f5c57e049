//! A throwaway PostgreSQL server for the backend tests: `initdb` into a fresh temporary
//! directory, `postgres` on a free loopback port (and a private socket directory),
//! stopped by its PID and the directory removed when dropped.
//!
//! `initdb` refuses to run as root: as root the server runs as the `postgres` user the
//! Debian package creates (or `nobody`), set on the child process itself, so the PID we
//! hold is the server's. Without any PostgreSQL server binaries, [`PgServer::start`]
//! returns `None` and the tests say so and skip — except under CI (`CI` set), where
//! `.ci/run` installs the `postgresql` package and a missing server is a failure.
#![allow(dead_code)] // each user needs a different part

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port the OS says is free now. (This file is also compiled into the
/// benchmark, `examples/bench`, so it needs nothing from the rest of `common`.)
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The directory holding `initdb` and `postgres`: Debian's newest
/// `/usr/lib/postgresql/N/bin`, or wherever `PATH` has them.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .find(|p| p.join("postgres").exists() && p.join("initdb").exists())
    })
}

/// The uid and gid to run the server as: ourselves, or a system user when root.
fn run_as() -> (u32, u32) {
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid != 0 {
        return (uid, gid);
    }
    for name in ["postgres", "nobody"] {
        let Ok(out) = Command::new("id").args(["-u", name]).output() else {
            continue;
        };
        let Ok(g) = Command::new("id").args(["-g", name]).output() else {
            continue;
        };
        let parse = |o: &[u8]| String::from_utf8_lossy(o).trim().parse::<u32>().ok();
        if let (Some(u), Some(g)) = (parse(&out.stdout), parse(&g.stdout)) {
            return (u, g);
        }
    }
    (65534, 65534)
}

/// A running throwaway server.
pub struct PgServer {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
    uid: u32,
    gid: u32,
    child: Option<Child>,
    /// Serve TLS with a self-signed certificate for 127.0.0.1 (see [`PgServer::tls`]).
    tls: bool,
}

impl PgServer {
    /// Make a new cluster and start it, or `None` if no server binaries are installed
    /// (outside CI). Panics on any other failure, with the server's log.
    pub fn start() -> Option<PgServer> {
        let Some(bin) = bin_dir() else {
            super::netns::skip_or_fail(
                "PostgreSQL test",
                Some("no PostgreSQL server binaries".to_string()),
                "Install the Debian package postgresql.",
            );
            return None;
        };
        let (uid, gid) = run_as();
        let dir =
            std::env::temp_dir().join(format!("les-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(dir.join("sock")).expect("make the server's directory");
        for d in [dir.clone(), dir.join("sock")] {
            std::os::unix::fs::chown(&d, Some(uid), Some(gid)).expect("chown");
        }
        let out = Command::new(bin.join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-U", "les", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .uid(uid)
            .gid(gid)
            .current_dir(&dir)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            bin,
            dir,
            port: free_port(),
            uid,
            gid,
            child: None,
            tls: false,
        };
        server.up();
        Some(server)
    }

    /// Restart serving TLS only, with a new certificate for 127.0.0.1 signed by a new
    /// throwaway CA (both made with the `openssl` command); returns the CA
    /// certificate's path, the root a client must trust.
    pub fn tls(&mut self) -> PathBuf {
        let d = &self.dir;
        let (crt, key) = (d.join("server.crt"), d.join("server.key"));
        let ext = d.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write the extensions");
        let p = |name: &str| d.join(name).display().to_string();
        let steps: [Vec<String>; 3] = [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ]
            .map(String::from)
            .into_iter()
            .chain(["-subj".into(), "/CN=les-test-ca".into()])
            .chain(["-keyout".into(), p("ca.key"), "-out".into(), p("ca.crt")])
            .collect(),
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ]
            .map(String::from)
            .into_iter()
            .chain([
                "-keyout".into(),
                p("server.key"),
                "-out".into(),
                p("server.csr"),
            ])
            .collect(),
            ["x509", "-req", "-days", "1", "-CAcreateserial"]
                .map(String::from)
                .into_iter()
                .chain(["-in".into(), p("server.csr"), "-CA".into(), p("ca.crt")])
                .chain(["-CAkey".into(), p("ca.key"), "-out".into(), p("server.crt")])
                .chain(["-extfile".into(), p("server.ext")])
                .collect(),
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for f in [&crt, &key] {
            std::os::unix::fs::chown(f, Some(self.uid), Some(self.gid)).expect("chown");
        }
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod the key");
        // Plain connections refused: only TLS gets in.
        let hba = self.dir.join("data/pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("write pg_hba.conf");
        self.down();
        self.tls = true;
        self.up();
        self.dir.join("ca.crt")
    }

    /// A URL for database `postgres` as user `les` over loopback TCP.
    pub fn url(&self) -> String {
        format!(
            "postgres://les@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Start the server on its port and wait until it accepts connections.
    pub fn up(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("open the server log");
        let child = Command::new(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.join("sock").display()
            ))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=50"])
            .args(if self.tls {
                vec![
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", self.dir.join("server.crt").display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", self.dir.join("server.key").display()),
                ]
            } else {
                Vec::new()
            })
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!("postgres exited ({status}): {}", self.log_text());
                }
            }
            assert!(
                Instant::now() < deadline,
                "postgres not up in 30 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // The port opens a moment before the server accepts sessions.
        while !self.accepts_sessions() {
            assert!(
                Instant::now() < deadline,
                "postgres not ready: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn accepts_sessions(&self) -> bool {
        Command::new(self.bin.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "les"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(true)
    }

    /// Stop the server (fast shutdown: SIGINT, by its PID) and wait for it to exit.
    pub fn down(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the PID of the child we started and have not reaped.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Run one SQL statement with `psql`, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "les", "-d", "postgres", "-XAtq", "-c", sql])
            .env("PGSSLMODE", if self.tls { "require" } else { "prefer" })
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Where the server keeps its files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
