//! The simulated network and clock a node runs on inside the simulation: see
//! [`TurmoilNetwork`] for the fault model.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::net::Network;
use crate::sim::clock::sim_now;
use crate::sim::trace::Journal;

/// The link faults in force, shared by every host of one simulation.
#[derive(Debug)]
pub(crate) struct Faults {
    /// Draws for message loss; seeded, and drawn in the simulation's deterministic order.
    rng: SmallRng,
    /// `(from, to)`: connections that host `from` opens to host `to` are blackholed.
    /// A symmetric partition cuts both directions.
    cuts: BTreeSet<(String, String)>,
    /// Probability that a message is lost, on links without their own rate.
    loss: f64,
    /// Per-link loss rates, keyed by the two host names in order.
    link_loss: BTreeMap<(String, String), f64>,
    /// Hosts whose node is not running: their port is closed.
    closed: BTreeSet<String>,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Faults {
            rng: SmallRng::seed_from_u64(seed),
            cuts: BTreeSet::new(),
            loss: 0.0,
            link_loss: BTreeMap::new(),
            closed: BTreeSet::new(),
        }
    }

    /// Whether host `host`'s port is open (its node is running).
    pub(crate) fn set_open(&mut self, host: &str, open: bool) {
        if open {
            self.closed.remove(host);
        } else {
            self.closed.insert(host.to_string());
        }
    }

    pub(crate) fn cut(&mut self, from: &str, to: &str) {
        self.cuts.insert((from.to_string(), to.to_string()));
    }

    pub(crate) fn heal(&mut self) {
        self.cuts.clear();
    }

    pub(crate) fn set_loss(&mut self, rate: f64) {
        self.loss = rate;
    }

    pub(crate) fn set_link_loss(&mut self, a: &str, b: &str, rate: f64) {
        self.link_loss.insert(pair(a, b), rate);
    }

    fn is_cut(&self, from: &str, to: &str) -> bool {
        !self.cuts.is_empty() && self.cuts.contains(&(from.to_string(), to.to_string()))
    }

    /// Whether the next message between `a` and `b` is lost (one draw when the rate > 0).
    fn lose(&mut self, a: &str, b: &str) -> bool {
        let rate = if self.link_loss.is_empty() {
            self.loss
        } else {
            self.link_loss
                .get(&pair(a, b))
                .copied()
                .unwrap_or(self.loss)
        };
        rate > 0.0 && self.rng.random_bool(rate.min(1.0))
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The order in which a crashed host's connections close.
///
/// turmoil crashes a host by dropping its tokio runtime, which drops the host's tasks,
/// and the streams they own, in the order of tokio's task list. That list is sharded by
/// task id, and task ids are numbered across the whole process, so the order depends on
/// how many tasks anything else in the process spawned before: earlier tests, or another
/// simulation on another thread. Each close sends a FIN or RST, whose latency turmoil
/// draws from the simulation's one random generator, so that order decided which peer
/// heard of the crash first, and the same seed gave different runs. While a host is
/// being crashed, its streams' closes wait here, and go out in the order the streams
/// were opened when the last of them is dropped (still within the crash).
#[derive(Debug, Default)]
pub(crate) struct Closes {
    /// Number of the stream opened last in this simulation.
    last: u64,
    /// Streams open on each host.
    open: BTreeMap<String, usize>,
    /// Host being crashed.
    crashing: Option<String>,
    /// Its dropped streams, by number, not closed yet.
    held: BTreeMap<u64, turmoil::net::TcpStream>,
}

impl Closes {
    /// A stream opened on `host`: its number.
    fn opened(&mut self, host: &str) -> u64 {
        *self.open.entry(host.to_string()).or_default() += 1;
        self.last += 1;
        self.last
    }

    /// Stream `number` of `host` was dropped: the streams to close now, in order.
    fn dropped(
        &mut self,
        host: &str,
        number: u64,
        stream: turmoil::net::TcpStream,
    ) -> Vec<turmoil::net::TcpStream> {
        let open = self.open.entry(host.to_string()).or_default();
        *open = open.saturating_sub(1);
        if self.crashing.as_deref() != Some(host) {
            return vec![stream];
        }
        self.held.insert(number, stream);
        if *open > 0 {
            return Vec::new();
        }
        std::mem::take(&mut self.held).into_values().collect()
    }

    /// `host` is about to be crashed.
    pub(crate) fn begin_crash(&mut self, host: &str) {
        self.crashing = Some(host.to_string());
    }

    /// The crash is over. A crash drops every task of the host, so every stream has been
    /// closed; anything left over is returned, to be dropped.
    pub(crate) fn end_crash(&mut self) -> Vec<turmoil::net::TcpStream> {
        self.crashing = None;
        debug_assert!(self.held.is_empty(), "a crashed host kept a stream open");
        std::mem::take(&mut self.held).into_values().collect()
    }
}

/// State shared by the simulated hosts and the [`crate::sim::Cluster`] driving them.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) faults: Mutex<Faults>,
    pub(crate) journal: Mutex<Journal>,
    pub(crate) closes: Mutex<Closes>,
}

impl Shared {
    pub(crate) fn new(seed: u64) -> Self {
        Shared {
            faults: Mutex::new(Faults::new(seed)),
            journal: Mutex::new(Journal::default()),
            closes: Mutex::new(Closes::default()),
        }
    }

    pub(crate) fn closes(&self) -> MutexGuard<'_, Closes> {
        self.closes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A [`Network`] over turmoil's simulated TCP, with the fault model of [`crate::sim`].
/// One per node incarnation: it knows which host it runs on.
///
/// turmoil carries the bytes: every host has its own TCP stack, and links have latency
/// and jitter. The faults are modelled here, because turmoil's own do the opposite of
/// what les meets in production: it refuses connections across a cut link or when a
/// connection request is lost (which les rightly takes as proof that the peer is down,
/// bypassing its failure detector), and it stops delivering to a crashed host, so
/// connections to it hang as to a machine without power. Here:
///
/// | situation | what the caller sees |
/// |---|---|
/// | peer crashed, stopped or never started (its port is closed) | connection refused |
/// | link cut ([`crate::sim::Cluster::partition`]) | the connection or request hangs: timeout |
/// | message lost ([`crate::sim::Cluster::set_loss`]) | that request or answer never arrives: timeout |
///
/// The streams also record ground truth for the observers: the first time a node reads
/// an answer from a peer it contacted ([`crate::sim::TraceEvent::FirstHeard`]).
///
/// [`crate::sim::Cluster`] creates these for its nodes. To run les nodes in a turmoil
/// simulation of your own, create one per host with [`TurmoilNetwork::new`] and pass it
/// to [`crate::node::NodeBuilder::network`]; it then adds no faults of its own
/// (use turmoil's link controls).
#[derive(Clone)]
pub struct TurmoilNetwork {
    host: Arc<str>,
    incarnation: u32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TurmoilNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurmoilNetwork")
            .field("host", &self.host)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl TurmoilNetwork {
    /// The network of turmoil host `host` (its name in the simulation).
    pub fn new(host: impl Into<String>) -> Self {
        TurmoilNetwork {
            host: host.into().into(),
            incarnation: 1,
            shared: Arc::new(Shared::new(0)),
        }
    }

    pub(crate) fn for_node(host: &str, incarnation: u32, shared: Arc<Shared>) -> Self {
        TurmoilNetwork {
            host: host.into(),
            incarnation,
            shared,
        }
    }

    fn stream(&self, inner: turmoil::net::TcpStream, peer: String, outbound: bool) -> SimStream {
        let (initiator, acceptor) = if outbound {
            (self.host.to_string(), peer)
        } else {
            (peer, self.host.to_string())
        };
        SimStream {
            number: self.shared.closes().opened(&self.host),
            inner: Some(inner),
            net: self.clone(),
            initiator,
            acceptor,
            outbound,
            dead: false,
            sending: false,
            heard: false,
        }
    }
}

impl Network for TurmoilNetwork {
    type Stream = SimStream;
    type Listener = turmoil::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        turmoil::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, peer) = listener.accept().await?;
        let name = turmoil::reverse_lookup(peer.ip()).unwrap_or_else(|| peer.ip().to_string());
        Ok((self.stream(stream, name, false), peer))
    }

    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send {
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .to_string();
        let (blackholed, refused) = {
            let mut faults = self.shared.faults();
            let blackholed = faults.is_cut(&self.host, &host) || faults.lose(&self.host, &host);
            (blackholed, faults.closed.contains(&host))
        };
        async move {
            if blackholed {
                // The connection request is dropped: the caller's deadline ends the wait.
                std::future::pending::<()>().await;
            }
            if refused {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("{addr}: connection refused (the node is not running)"),
                ));
            }
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            Ok(self.stream(stream, host, true))
        }
    }
}

/// A simulated TCP stream that a cut link or a lost message can blackhole.
///
/// Once it has lost data it stays blackholed (the missing bytes would corrupt the HTTP
/// exchange anyway): writes are swallowed, data that arrives is discarded, and only the
/// peer closing the connection gets through, so both ends eventually drop it.
pub struct SimStream {
    /// Taken only on drop.
    inner: Option<turmoil::net::TcpStream>,
    /// Opened as the simulation's `number`th stream: see [`Closes`].
    number: u64,
    net: TurmoilNetwork,
    /// Host that opened the connection, and host that accepted it.
    initiator: String,
    acceptor: String,
    /// This side opened the connection.
    outbound: bool,
    dead: bool,
    /// Inside a burst of writes (a message); a read ends it. Loss is drawn per message.
    sending: bool,
    /// Already recorded that this node heard from the peer.
    heard: bool,
}

impl std::fmt::Debug for SimStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStream")
            .field("initiator", &self.initiator)
            .field("acceptor", &self.acceptor)
            .field("dead", &self.dead)
            .finish_non_exhaustive()
    }
}

impl SimStream {
    fn inner(&mut self) -> Pin<&mut turmoil::net::TcpStream> {
        Pin::new(
            self.inner
                .as_mut()
                .expect("the stream is taken only on drop"),
        )
    }

    /// Whether the link this stream runs over is cut right now.
    fn link_cut(&self) -> bool {
        self.net
            .shared
            .faults()
            .is_cut(&self.initiator, &self.acceptor)
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead || this.link_cut() {
            // Data that arrives now is lost, and the stream with it. A stream that merely
            // sits idle across a cut survives it, as a TCP connection would. Closes pass.
            let mut scratch = [0u8; 1024];
            loop {
                let mut sink = ReadBuf::new(&mut scratch);
                match this.inner().poll_read(cx, &mut sink) {
                    Poll::Ready(Ok(())) if !sink.filled().is_empty() => this.dead = true,
                    other => return other,
                }
            }
        }
        let before = buf.filled().len();
        let polled = this.inner().poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.sending = false;
            if this.outbound && !this.heard {
                this.heard = true;
                let peer = this.acceptor.clone();
                this.net.shared.journal().heard(
                    sim_now(),
                    &this.net.host,
                    this.net.incarnation,
                    &peer,
                );
            }
        }
        polled
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !this.dead {
            let new_message = !std::mem::replace(&mut this.sending, true);
            let mut faults = this.net.shared.faults();
            let peer = if this.outbound {
                &this.acceptor
            } else {
                &this.initiator
            };
            this.dead = faults.is_cut(&this.initiator, &this.acceptor)
                || (new_message && faults.lose(&this.net.host, peer));
        }
        if this.dead {
            return Poll::Ready(Ok(buf.len()));
        }
        this.inner().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead {
            return Poll::Ready(Ok(()));
        }
        this.inner().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dead {
            return Poll::Ready(Ok(()));
        }
        this.inner().poll_shutdown(cx)
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let close_now = self
                .net
                .shared
                .closes()
                .dropped(&self.net.host, self.number, inner);
            // Closing sends a FIN or RST: outside the lock.
            drop(close_now);
        }
    }
}
