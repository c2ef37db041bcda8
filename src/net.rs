//! Long-lived gRPC channels to other nodes, one per address, shared by Raft
//! replication and by request forwarding. A channel reconnects by itself;
//! nothing here opens a connection per RPC.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Largest gRPC message drover sends or accepts (a full `ScheduleBatch`, a
/// Raft append of large entries).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Clone, Default)]
pub struct ChannelPool {
    /// Short critical sections only (lookup or insert), never held across
    /// an `.await`, hence a std mutex.
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl ChannelPool {
    /// The channel to `addr` (`host:port`), created lazily on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ch) = channels.get(addr) {
            return Ok(ch.clone());
        }
        let ch = endpoint(addr)?.connect_lazy();
        channels.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

/// A client endpoint with drover's timeouts and keepalives.
pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(1))
        // A peer that stops answering pings (partitioned, frozen) is dropped
        // within ~2.5 s; requests then fail over instead of hanging.
        .keep_alive_timeout(Duration::from_millis(1500))
        .keep_alive_while_idle(true))
}
