//! The network and the wall clock, as seams the runtime is generic over.
//!
//! Production uses [`TokioNetwork`] and [`SystemClock`]. The deterministic simulation
//! (`les::sim`, feature `sim`) plugs in turmoil's simulated TCP and a per-node skewed
//! clock, and everything above this module — the HTTP server and client, the protocol
//! loop, the hooks — runs unchanged. Monotonic time is always `tokio::time`, which both
//! the real runtime and turmoil drive.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

/// A stream-oriented network: bind a listener, accept, connect by `host:port`.
pub trait Network: Clone + Send + Sync + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// A bound listener.
    type Listener: Send + Sync + 'static;

    /// Bind a listener; fails if the address is in use.
    fn bind(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;
    /// The address a listener is bound to (useful with port 0).
    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr>;
    /// Accept the next connection.
    fn accept(
        &self,
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<Self::Stream>> + Send;
    /// Connect to `host:port`, resolving the host name as this network does.
    fn connect(&self, addr: String) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// The real network, through tokio.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioNetwork;

impl Network for TokioNetwork {
    type Stream = tokio::net::TcpStream;
    type Listener = tokio::net::TcpListener;

    async fn bind(&self, addr: SocketAddr) -> io::Result<Self::Listener> {
        tokio::net::TcpListener::bind(addr).await
    }

    fn local_addr(&self, listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(&self, listener: &Self::Listener) -> io::Result<Self::Stream> {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    async fn connect(&self, addr: String) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// The wall clock that gives a node its start time (its seniority).
pub trait WallClock: Send + Sync + 'static {
    /// Seconds since the Unix epoch, with sub-second precision.
    fn now_epoch(&self) -> f64;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_epoch(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}
