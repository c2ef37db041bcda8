//! A TCP proxy that a test can cut: while cut, it forwards nothing (bytes
//! are held, connections stay open), like a network partition. It can also
//! lose replies: let requests through to the node but hold, or reset, what
//! comes back, so that a write is applied while its caller sees a timeout or
//! a broken connection.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with the bytes it carries.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    /// Forward both ways.
    Pass = 0,
    /// Hold everything, both ways (a partition).
    Cut = 1,
    /// Forward requests; hold replies forever (a timeout for the caller).
    HoldReplies = 2,
    /// Forward requests; at the first reply bytes, close the connection
    /// without passing them on (a reset for the caller, after the node
    /// has answered, hence applied the request).
    ResetOnReply = 3,
}

pub struct Proxy {
    pub addr: String,
    mode: Arc<AtomicU8>,
}

impl Proxy {
    pub async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(Mode::Pass as u8));
        let m = mode.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(&target).await else { continue };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                let closed = Arc::new(tokio::sync::Notify::new());
                tokio::spawn(pump(ri, wo, m.clone(), Direction::Request, closed.clone()));
                tokio::spawn(pump(ro, wi, m.clone(), Direction::Reply, closed));
            }
        });
        Proxy { addr, mode }
    }

    /// Stop forwarding in both directions.
    pub fn cut(&self) {
        self.set(Mode::Cut);
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(m: &AtomicU8) -> Mode {
        match m.load(Ordering::SeqCst) {
            1 => Mode::Cut,
            2 => Mode::HoldReplies,
            3 => Mode::ResetOnReply,
            _ => Mode::Pass,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Request,
    Reply,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: Arc<AtomicU8>,
    direction: Direction,
    closed: Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // The other direction reset the connection: drop both halves.
            _ = closed.notified() => return,
        };
        loop {
            let held = match (Proxy::mode(&mode), direction) {
                (Mode::Pass, _) => false,
                (Mode::Cut, _) => true,
                (Mode::HoldReplies, d) => d == Direction::Reply,
                (Mode::ResetOnReply, Direction::Request) => false,
                (Mode::ResetOnReply, Direction::Reply) => {
                    // Drop this half and tell the other to drop its own: the
                    // caller's connection closes without the reply.
                    closed.notify_waiters();
                    closed.notify_one();
                    return;
                }
            };
            if !held {
                break;
            }
            // While held, keep the bytes: the peer sees silence, not a reset.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
