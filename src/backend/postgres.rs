//! The PostgreSQL backend: the lease decided in the database's transactions.
//!
//! Two tables per database, shared by every cluster in it (`cluster` keys the rows;
//! created if missing, under an advisory lock so that nodes starting together do not
//! race on `CREATE TABLE`):
//!
//! ```sql
//! CREATE TABLE les_member (cluster text, addr text, incarnation bigint,
//!     registered_at timestamptz,  -- seniority, by the database's clock
//!     heartbeat timestamptz, eligible boolean, name text,
//!     PRIMARY KEY (cluster, addr));
//! CREATE TABLE les_lease (cluster text PRIMARY KEY, holder text, incarnation bigint,
//!     term bigint NOT NULL DEFAULT 0,   -- the fencing token
//!     expires timestamptz NOT NULL DEFAULT '-infinity');
//! ```
//!
//! Every round is one transaction that first locks the cluster's lease row
//! (`SELECT … FOR UPDATE`), so rounds of one cluster are serialized: heartbeat this node
//! (a new incarnation, or a heartbeat older than the lease, registers it again as
//! junior), then renew the lease if this node holds it, or take it — term + 1 — if
//! nobody holds a running one and this node is the most senior live eligible member.
//! Grants and releases `NOTIFY les` with the cluster's name, so the other nodes run a
//! round at once instead of at their next interval: a graceful hand-off takes a few
//! round trips. Times are the database's `now()` (the transaction's start), never a
//! node's wall clock.
//!
//! TLS: `sslmode=disable` is plain; `prefer` (the default) uses TLS when the server
//! offers it; `require`, `verify-ca` and `verify-full` insist on it. Whenever TLS is
//! used the server's certificate and host name are verified (rustls), against the
//! system's roots or the PEM file `sslrootcert=` names.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Transaction};

use super::{LeaseStore, Registration, Release, StoreError, StoreMember, StoreView};

/// The NOTIFY channel.
const CHANNEL: &str = "les";
/// Key of the advisory lock held while creating the schema ("les" in ASCII).
const SCHEMA_LOCK: i64 = 0x6c_6573;
/// Rows of nodes not heard from for this long are deleted.
const FORGET_AFTER_SECS: f64 = 600.0;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS les_member (
    cluster       text        NOT NULL,
    addr          text        NOT NULL,
    incarnation   bigint      NOT NULL,
    registered_at timestamptz NOT NULL,
    heartbeat     timestamptz NOT NULL,
    eligible      boolean     NOT NULL,
    name          text,
    PRIMARY KEY (cluster, addr)
);
CREATE TABLE IF NOT EXISTS les_lease (
    cluster     text        PRIMARY KEY,
    holder      text,
    incarnation bigint,
    term        bigint      NOT NULL DEFAULT 0,
    expires     timestamptz NOT NULL DEFAULT '-infinity'
);";

/// A validated `postgres://` URL (`--backend`).
#[derive(Clone)]
pub struct PostgresUrl {
    config: tokio_postgres::Config,
    tls: Tls,
    shown: String,
}

/// How to talk TLS to the server.
#[derive(Clone)]
enum Tls {
    Off,
    /// Verified against these roots (`sslmode` other than `disable`).
    Verified(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl PartialEq for PostgresUrl {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl FromStr for PostgresUrl {
    type Err = String;

    /// Parse and check a `postgres://` or `postgresql://` URL: the error says what is
    /// wrong with it, never with the password.
    fn from_str(url: &str) -> Result<Self, String> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err("expected a postgres://user@host/db URL (or \"gossip\")".into());
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut root_file = None;
        let mut mode = "prefer".to_string();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8()
                .map_err(|_| format!("{k}: not valid UTF-8"))?
                .into_owned();
            match k {
                "sslrootcert" => root_file = Some(v),
                "sslmode" => mode = v,
                _ => kept.push(pair.to_string()),
            }
        }
        let driver_mode = match mode.as_str() {
            "disable" | "prefer" => mode.as_str(),
            "require" | "verify-ca" | "verify-full" => "require",
            other => {
                return Err(format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                ))
            }
        };
        kept.push(format!("sslmode={driver_mode}"));
        let rebuilt = format!("{base}?{}", kept.join("&"));
        let mut config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| error_text(&e))?;
        if config.get_hosts().is_empty() {
            return Err("no host: name one, e.g. postgres://les@db.example/les".into());
        }
        if config.get_user().is_none() {
            return Err("no user: name one, e.g. postgres://les@db.example/les".into());
        }
        if config.get_application_name().is_none() {
            config.application_name("les");
        }
        let tls = match driver_mode {
            "disable" => Tls::Off,
            _ => Tls::Verified(Arc::new(tls_config(root_file.as_deref())?)),
        };
        let shown = show(&config, &mode);
        Ok(PostgresUrl { config, tls, shown })
    }
}

/// The URL without its password: `postgres://user@host:port/db (sslmode=…)`.
fn show(config: &tokio_postgres::Config, mode: &str) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("{h}:{p}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{} (sslmode={mode})",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or(""),
    )
}

/// rustls verifying against `root_file` (PEM), or the system's roots without one.
fn tls_config(root_file: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| format!("sslrootcert={path}: {e}"))?;
            let mut added = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("sslrootcert={path}: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert={path}: {e}"))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("sslrootcert={path}: no PEM certificate in it"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot use is skipped, as every client does.
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The PostgreSQL [`LeaseStore`].
pub struct PostgresStore {
    url: PostgresUrl,
    timeout: Duration,
    client: Option<Client>,
    /// Notifications from the connection task; closed when the connection ends.
    notes: Option<mpsc::UnboundedReceiver<String>>,
    cluster: String,
}

impl PostgresStore {
    /// A store for `cluster` at `url`; `timeout` bounds connecting.
    pub fn new(url: PostgresUrl, cluster: impl Into<String>, timeout: Duration) -> Self {
        PostgresStore {
            url,
            timeout,
            client: None,
            notes: None,
            cluster: cluster.into(),
        }
    }

    async fn open(&self) -> Result<(Client, mpsc::UnboundedReceiver<String>), StoreError> {
        let mut config = self.url.config.clone();
        config.connect_timeout(self.timeout);
        let (tx, rx) = mpsc::unbounded_channel();
        let client = match &self.url.tls {
            Tls::Off => {
                let (client, conn) = config.connect(NoTls).await.map_err(unreachable)?;
                tokio::spawn(drive(conn, tx));
                client
            }
            Tls::Verified(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = config.connect(make).await.map_err(unreachable)?;
                tokio::spawn(drive(conn, tx));
                client
            }
        };
        Ok((client, rx))
    }
}

impl PostgresStore {
    /// Start a transaction holding `cluster`'s lease row locked.
    async fn begin(&mut self, cluster: &str) -> Result<(Transaction<'_>, LeaseRow), StoreError> {
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| StoreError::Unreachable("not connected".into()))?;
        let tx = client.transaction().await.map_err(query_error)?;
        let row = lock_lease(&tx, cluster).await?;
        Ok((tx, row))
    }
}

/// Run a connection, forwarding its notifications, until it ends.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, tx: mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    while let Some(message) = futures_util::StreamExt::next(&mut messages).await {
        match message {
            Ok(AsyncMessage::Notification(n)) => {
                if tx.send(n.payload().to_string()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "database connection ended");
                return;
            }
        }
    }
}

fn unreachable(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unreachable(error_text(&e))
}

fn query_error(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return unreachable(e);
    }
    StoreError::Query(error_text(&e))
}

/// The error and its cause once (tokio-postgres' Display omits the database's message).
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

/// The lease row, locked for this transaction.
struct LeaseRow {
    holder: Option<String>,
    incarnation: Option<i64>,
    term: i64,
    running: bool,
    expires_in: f64,
}

async fn lock_lease(tx: &Transaction<'_>, cluster: &str) -> Result<LeaseRow, StoreError> {
    tx.execute(
        "INSERT INTO les_lease (cluster) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&cluster],
    )
    .await
    .map_err(query_error)?;
    let row = tx
        .query_one(
            "SELECT holder, incarnation, term, expires > now(),
                    CASE WHEN expires > now()
                         THEN extract(epoch FROM expires - now())::float8 ELSE 0 END
             FROM les_lease WHERE cluster = $1 FOR UPDATE",
            &[&cluster],
        )
        .await
        .map_err(query_error)?;
    Ok(LeaseRow {
        holder: row.get(0),
        incarnation: row.get(1),
        term: row.get(2),
        running: row.get(3),
        expires_in: row.get(4),
    })
}

async fn heartbeat(
    tx: &Transaction<'_>,
    me: &Registration,
    eligible: bool,
) -> Result<(), StoreError> {
    let lease = me.lease.as_secs_f64();
    tx.execute(
        "INSERT INTO les_member AS m
             (cluster, addr, incarnation, registered_at, heartbeat, eligible, name)
         VALUES ($1, $2, $3, clock_timestamp(), now(), $4, $5)
         ON CONFLICT (cluster, addr) DO UPDATE SET
             registered_at = CASE
                 WHEN m.incarnation <> EXCLUDED.incarnation
                   OR m.heartbeat < now() - make_interval(secs => $6)
                 THEN EXCLUDED.registered_at ELSE m.registered_at END,
             incarnation = EXCLUDED.incarnation,
             heartbeat = now(),
             eligible = EXCLUDED.eligible,
             name = EXCLUDED.name",
        &[
            &me.cluster,
            &me.addr,
            &me.incarnation,
            &eligible,
            &me.name,
            &lease,
        ],
    )
    .await
    .map_err(query_error)?;
    Ok(())
}

async fn members(tx: &Transaction<'_>, me: &Registration) -> Result<Vec<StoreMember>, StoreError> {
    let lease = me.lease.as_secs_f64();
    tx.execute(
        "DELETE FROM les_member WHERE cluster = $1
           AND heartbeat < now() - make_interval(secs => $2)",
        &[&me.cluster, &FORGET_AFTER_SECS],
    )
    .await
    .map_err(query_error)?;
    let rows = tx
        .query(
            "SELECT addr, extract(epoch FROM registered_at)::float8, eligible,
                    heartbeat > now() - make_interval(secs => $2), name,
                    GREATEST(extract(epoch FROM now() - heartbeat)::float8, 0)
             FROM les_member WHERE cluster = $1 ORDER BY registered_at, addr",
            &[&me.cluster, &lease],
        )
        .await
        .map_err(query_error)?;
    Ok(rows
        .iter()
        .map(|r| StoreMember {
            addr: r.get(0),
            registered_at: r.get(1),
            eligible: r.get(2),
            live: r.get(3),
            name: r.get(4),
            heartbeat_age: Duration::from_secs_f64(r.get::<_, f64>(5).clamp(0.0, 1e9)),
        })
        .collect())
}

async fn notify(tx: &Transaction<'_>, cluster: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &cluster])
        .await
        .map_err(query_error)?;
    Ok(())
}

impl LeaseStore for PostgresStore {
    async fn connect(&mut self) -> Result<(), StoreError> {
        self.client = None;
        self.notes = None;
        let (mut client, notes) = self.open().await?;
        let tx = client.transaction().await.map_err(query_error)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(query_error)?;
        tx.batch_execute(SCHEMA).await.map_err(query_error)?;
        tx.commit().await.map_err(query_error)?;
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(query_error)?;
        self.client = Some(client);
        self.notes = Some(notes);
        Ok(())
    }

    async fn round(&mut self, me: &Registration, eligible: bool) -> Result<StoreView, StoreError> {
        let lease = me.lease.as_secs_f64();
        let (tx, row) = self.begin(&me.cluster).await?;
        heartbeat(&tx, me, eligible).await?;
        let held = row.running
            && row.holder.as_deref() == Some(me.addr.as_str())
            && row.incarnation == Some(me.incarnation);
        let mut view = StoreView {
            holder: row.holder.clone().filter(|_| row.running),
            mine: held,
            term: row.term.max(0) as u64,
            expires_in: Duration::from_secs_f64(row.expires_in.max(0.0)),
            members: Vec::new(),
        };
        if held && eligible {
            tx.execute(
                "UPDATE les_lease SET expires = now() + make_interval(secs => $2)
                 WHERE cluster = $1",
                &[&me.cluster, &lease],
            )
            .await
            .map_err(query_error)?;
            view.expires_in = me.lease;
        } else if held {
            give_up(&tx, &me.cluster).await?;
            view = StoreView {
                holder: None,
                mine: false,
                expires_in: Duration::ZERO,
                ..view
            };
        } else if !row.running && eligible && nominee(&tx, me).await? {
            let term: i64 = tx
                .query_one(
                    "UPDATE les_lease SET holder = $2, incarnation = $3, term = term + 1,
                         expires = now() + make_interval(secs => $4)
                     WHERE cluster = $1 RETURNING term",
                    &[&me.cluster, &me.addr, &me.incarnation, &lease],
                )
                .await
                .map_err(query_error)?
                .get(0);
            notify(&tx, &me.cluster).await?;
            view = StoreView {
                holder: Some(me.addr.clone()),
                mine: true,
                term: term.max(0) as u64,
                expires_in: me.lease,
                members: Vec::new(),
            };
        }
        view.members = members(&tx, me).await?;
        tx.commit().await.map_err(query_error)?;
        Ok(view)
    }

    async fn release(&mut self, me: &Registration, then: Release) -> Result<(), StoreError> {
        let (tx, row) = self.begin(&me.cluster).await?;
        if row.holder.as_deref() == Some(me.addr.as_str())
            && row.incarnation == Some(me.incarnation)
        {
            give_up(&tx, &me.cluster).await?;
        }
        let done = match then {
            Release::Leave => {
                tx.execute(
                    "DELETE FROM les_member
                     WHERE cluster = $1 AND addr = $2 AND incarnation = $3",
                    &[&me.cluster, &me.addr, &me.incarnation],
                )
                .await
            }
            Release::Rejoin {
                incarnation,
                eligible,
            } => {
                tx.execute(
                    "UPDATE les_member SET incarnation = $4, registered_at = clock_timestamp(),
                         heartbeat = now(), eligible = $5
                     WHERE cluster = $1 AND addr = $2 AND incarnation = $3",
                    &[
                        &me.cluster,
                        &me.addr,
                        &me.incarnation,
                        &incarnation,
                        &eligible,
                    ],
                )
                .await
            }
        };
        done.map_err(query_error)?;
        notify(&tx, &me.cluster).await?;
        tx.commit().await.map_err(query_error)
    }

    async fn changed(&mut self) -> bool {
        let Some(notes) = self.notes.as_mut() else {
            return std::future::pending().await;
        };
        loop {
            match notes.recv().await {
                Some(cluster) if cluster == self.cluster => return true,
                Some(_) => continue,
                None => {
                    self.notes = None;
                    return false;
                }
            }
        }
    }

    fn describe(&self) -> String {
        self.url.to_string()
    }
}

/// Whether `me` is the most senior live eligible member (its own heartbeat included).
async fn nominee(tx: &Transaction<'_>, me: &Registration) -> Result<bool, StoreError> {
    let lease = me.lease.as_secs_f64();
    let row = tx
        .query_opt(
            "SELECT addr, incarnation FROM les_member
             WHERE cluster = $1 AND eligible
               AND heartbeat > now() - make_interval(secs => $2)
             ORDER BY registered_at, addr LIMIT 1",
            &[&me.cluster, &lease],
        )
        .await
        .map_err(query_error)?;
    Ok(row
        .is_some_and(|r| r.get::<_, String>(0) == me.addr && r.get::<_, i64>(1) == me.incarnation))
}

/// End the lease now and tell the others (the caller holds the row lock).
async fn give_up(tx: &Transaction<'_>, cluster: &str) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE les_lease SET holder = NULL, incarnation = NULL, expires = now()
         WHERE cluster = $1",
        &[&cluster],
    )
    .await
    .map_err(query_error)?;
    notify(tx, cluster).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_and_shown_without_the_password() {
        let url: PostgresUrl = "postgres://les:secret@db.example:5433/elect"
            .parse()
            .unwrap();
        assert_eq!(
            url.to_string(),
            "postgres://les@db.example:5433/elect (sslmode=prefer)"
        );
        assert!(!format!("{url:?}").contains("secret"));
        let err = "mysql://x@y/z".parse::<PostgresUrl>().unwrap_err();
        assert!(err.contains("postgres://"), "{err}");
        let err = "postgres://les@db/x?sslmode=maybe"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(err.contains("sslmode=maybe"), "{err}");
        let err = "postgres://les@db/x?frobnicate=1"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(err.contains("frobnicate"), "{err}");
        let err = "postgres://db/x".parse::<PostgresUrl>().unwrap_err();
        assert!(err.contains("no user"), "{err}");
        let err = "postgres://les@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
            .parse::<PostgresUrl>()
            .unwrap_err();
        assert!(err.contains("sslrootcert=/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn tls_modes_map_to_verified_tls_or_none() {
        let off: PostgresUrl = "postgres://les@db/x?sslmode=disable".parse().unwrap();
        assert!(matches!(off.tls, Tls::Off));
        let on: PostgresUrl = "postgres://les@db/x?sslmode=verify-full".parse().unwrap();
        assert!(matches!(on.tls, Tls::Verified(_)));
        assert_eq!(
            on.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }
}
