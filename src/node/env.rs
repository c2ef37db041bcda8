//! What a node takes from the world around it, gathered in one place so
//! that the deterministic simulation (`tests/sim/`) can supply its own:
//! the wall clock that replicated time is steered by, how channels to
//! other nodes connect, where gRPC connections come from, and how the Raft
//! log syncs. [`Environment::production`] is what `drover server` runs
//! with: the system clock, TCP, and the group-commit thread; each seam is
//! an `Option` or a value read once at start, so production pays nothing
//! per call.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::consensus::clock::WallClock;
use crate::net::Dialer;
use crate::raft::log_store::WalSync;

/// The seams of a node.
pub struct Environment {
    /// The wall clock replicated time is steered by (and peers sample).
    pub wall: WallClock,
    /// How channels to other nodes connect; `None`: TCP.
    pub dialer: Option<Dialer>,
    /// Where gRPC connections come from; `None`: a TCP listener.
    pub incoming: Option<Incoming>,
    /// How the Raft log makes appends durable.
    pub wal_sync: WalSync,
}

impl Environment {
    /// The system clock, TCP, the group-commit thread.
    pub fn production() -> Environment {
        Environment { wall: WallClock::system(), dialer: None, incoming: None, wal_sync: WalSync::GroupCommit }
    }
}

/// A byte stream a connection runs over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One accepted connection (of any [`Io`]).
pub struct Connection(pub Box<dyn Io>);

impl tonic::transport::server::Connected for Connection {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl AsyncRead for Connection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

/// Connections accepted elsewhere than on a TCP listener, and the address
/// they are accepted at.
pub struct Incoming {
    pub local_addr: SocketAddr,
    pub connections: Pin<Box<dyn Stream<Item = io::Result<Connection>> + Send>>,
}
