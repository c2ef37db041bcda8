//! TLS for every connection a node accepts or makes (rustls, ring).
//!
//! - **Serving** ([`ServerTls`], [`Acceptor`]): one port carries the public
//!   API and the node-to-node services. The node presents `--tls-cert` and
//!   asks every caller for a client certificate, verified against
//!   `--client-ca` and `--peer-ca` (required only with
//!   `--require-client-cert`; a peer always presents one). The files are
//!   read again on SIGHUP and when they change; a pair that does not load
//!   is logged and the one in use kept.
//! - **Peers** ([`peer_identity`]): a caller is a peer only if its
//!   certificate chains to `--peer-ca` *and* names a node
//!   (`node-ID.drover`). A client certificate from the same CA names no
//!   node, so it cannot pose as a peer (etcd #8262).
//! - **Dialing** ([`ClientTls`]): the CA to trust and the certificate to
//!   present, for clients, workers, and a node dialing its peers (its
//!   `--peer-cert`, trusting `--peer-ca`).
//!
//! [`certs`] makes a throwaway CA and certificates (`drover admin certs`,
//! `drover dev --tls`, tests).

pub mod certs;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What went wrong loading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_path_buf(), message: message.to_string() }
}

/// The certificates in a PEM file (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, format!("not a PEM private key: {e}")))
}

/// A root store of every certificate in the PEM files.
pub fn read_roots(paths: &[&Path]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for path in paths {
        for cert in read_certs(path)? {
            roots.add(cert).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
        }
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A node's serving and peer TLS files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerTls {
    /// The certificate (chain) and key this node presents.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CAs of clients' certificates (optional mTLS for clients).
    pub client_ca: Option<PathBuf>,
    /// Refuse a connection without a valid client certificate.
    pub require_client_cert: bool,
    /// The CA of the nodes' peer certificates; with `peer_cert`/`peer_key`,
    /// the identity this node presents when it dials another.
    pub peer_ca: Option<PathBuf>,
    pub peer_cert: Option<PathBuf>,
    pub peer_key: Option<PathBuf>,
}

impl ServerTls {
    /// Every file, to watch for changes.
    fn files(&self) -> Vec<PathBuf> {
        let mut f = vec![self.cert.clone(), self.key.clone()];
        f.extend(self.client_ca.iter().chain(&self.peer_ca).chain(&self.peer_cert).chain(&self.peer_key).cloned());
        f
    }

    /// Build the rustls configuration from the files as they are now.
    fn load(&self) -> Result<Loaded, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        let ca_paths: Vec<&Path> = self.client_ca.iter().chain(&self.peer_ca).map(PathBuf::as_path).collect();
        let verifier = if ca_paths.is_empty() {
            if self.require_client_cert {
                return Err(TlsError::Config("--require-client-cert needs --client-ca (or --peer-ca)".into()));
            }
            WebPkiClientVerifier::no_client_auth()
        } else {
            let roots = Arc::new(read_roots(&ca_paths)?);
            let b = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let b = if self.require_client_cert { b } else { b.allow_unauthenticated() };
            b.build().map_err(|e| TlsError::Config(format!("client verifier: {e}")))?
        };
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| file_error(&self.key, format!("does not match {}: {e}", self.cert.display())))?;
        let mut http = config.clone();
        http.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.alpn_protocols = vec![b"h2".to_vec()];
        let peers = match &self.peer_ca {
            Some(ca) => Some(
                WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(&[ca])?), provider())
                    .build()
                    .map_err(|e| TlsError::Config(format!("peer verifier: {e}")))?,
            ),
            None => None,
        };
        let dial = match (&self.peer_cert, &self.peer_key) {
            (Some(cert), Some(key)) => {
                Some(ClientTls { ca: self.peer_ca.clone(), cert: Some(cert.clone()), key: Some(key.clone()) })
            }
            (None, None) => None,
            _ => return Err(TlsError::Config("--peer-cert and --peer-key go together".into())),
        };
        let dial = dial.map(|d| d.load()).transpose()?;
        Ok(Loaded { server: Arc::new(config), http: Arc::new(http), peers, dial })
    }
}

/// One loaded generation of a node's TLS material.
#[derive(Clone)]
struct Loaded {
    /// gRPC (HTTP/2).
    server: Arc<ServerConfig>,
    /// The console and `/metrics` (HTTP/1.1).
    http: Arc<ServerConfig>,
    /// Verifies that a caller's certificate chains to the peer CA.
    peers: Option<Arc<dyn ClientCertVerifier>>,
    /// What this node presents (and trusts) when dialing a peer.
    dial: Option<tonic::transport::ClientTlsConfig>,
}

/// Accepts TLS connections with the current configuration, which
/// [`Acceptor::watch`] replaces when the files change.
#[derive(Clone)]
pub struct Acceptor {
    files: ServerTls,
    current: Arc<RwLock<Loaded>>,
}

impl Acceptor {
    /// Load the files; an error here stops the node from starting.
    pub fn new(files: ServerTls) -> Result<Acceptor, TlsError> {
        let loaded = files.load()?;
        Ok(Acceptor { files, current: Arc::new(RwLock::new(loaded)) })
    }

    fn loaded(&self) -> Loaded {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The TLS acceptor for the next gRPC connection (or HTTP/1.1 one).
    pub fn acceptor(&self, http1: bool) -> tokio_rustls::TlsAcceptor {
        let l = self.loaded();
        tokio_rustls::TlsAcceptor::from(if http1 { l.http } else { l.server })
    }

    /// How this node dials its peers, if it has a peer identity.
    pub fn dial(&self) -> Option<tonic::transport::ClientTlsConfig> {
        self.loaded().dial
    }

    /// Read the files again; on an error keep what is in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = self.files.load()?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// Whether `certs` (a caller's chain, end entity first) is a peer's:
    /// it chains to the peer CA and names a node. The node's id.
    pub fn peer_identity(&self, certs: Option<&[CertificateDer<'static>]>) -> Result<u64, String> {
        let Some(verifier) = self.loaded().peers else {
            return Err("this node has no --peer-ca: peer calls are refused over TLS".into());
        };
        peer_identity(verifier.as_ref(), certs)
    }

    /// Reload on SIGHUP and when a file's modification time changes
    /// (checked every `poll`), until `stop`.
    pub async fn watch(self, poll: Duration, stop: CancellationToken) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let stamp = |files: &[PathBuf]| -> Vec<Option<SystemTime>> {
            files.iter().map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
        };
        let files = self.files.files();
        let mut last = stamp(&files);
        let mut tick = tokio::time::interval(poll);
        loop {
            let why = tokio::select! {
                _ = stop.cancelled() => return,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => "SIGHUP",
                _ = tick.tick() => {
                    let now = stamp(&files);
                    if now == last { continue; }
                    last = now;
                    "a file changed"
                }
            };
            match self.reload() {
                Ok(()) => tracing::info!(why, "TLS certificates reloaded"),
                Err(e) => tracing::error!(why, error = %e, "TLS certificates not reloaded; keeping the ones in use"),
            }
        }
    }
}

/// The suffix of the DNS name that marks a node's certificate.
pub const PEER_NAME_SUFFIX: &str = ".drover";

/// The DNS name a node's peer certificate carries.
pub fn peer_name(id: u64) -> String {
    format!("node-{id}{PEER_NAME_SUFFIX}")
}

fn peer_identity(verifier: &dyn ClientCertVerifier, certs: Option<&[CertificateDer<'static>]>) -> Result<u64, String> {
    let Some((end, intermediates)) = certs.and_then(|c| c.split_first()) else {
        return Err("no client certificate".into());
    };
    // The names first: they are cheap to read, and a certificate that
    // names no node (every client's, on every call) needs no chain check.
    let (_, cert) = x509_parser::parse_x509_certificate(end).map_err(|e| format!("unreadable certificate: {e}"))?;
    let sans = cert.subject_alternative_name().map_err(|e| format!("unreadable names: {e}"))?;
    let ids: Vec<u64> = sans
        .iter()
        .flat_map(|s| s.value.general_names.iter())
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(n) => {
                n.strip_prefix("node-")?.strip_suffix(PEER_NAME_SUFFIX)?.parse().ok()
            }
            _ => None,
        })
        .collect();
    let id = match ids.as_slice() {
        [id] => *id,
        [] => return Err(format!("the certificate names no node (a DNS name like {})", peer_name(1))),
        _ => return Err("the certificate names more than one node".into()),
    };
    verifier
        .verify_client_cert(end, intermediates, UnixTime::now())
        .map_err(|e| format!("not a valid certificate from the peer CA: {e}"))?;
    Ok(id)
}

/// The subject common name of a client's certificate (the first of the
/// chain rustls verified against the client CA), if it has one.
pub fn client_subject(certs: Option<&[CertificateDer<'static>]>) -> Option<String> {
    let end = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(end).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// What a client, a worker or a dialing node trusts and presents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificates to trust (PEM); none: nothing is trusted.
    pub ca: Option<PathBuf>,
    /// A client certificate and key, for mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// The tonic configuration, read from the files now.
    pub fn load(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        let mut c = tonic::transport::ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            c = c.ca_certificate(tonic::transport::Certificate::from_pem(read_pem(ca, PemKind::Certs)?));
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (read_pem(cert, PemKind::Certs)?, read_pem(key, PemKind::Key)?);
                c = c.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => return Err(TlsError::Config("a client certificate needs its key, and a key its certificate".into())),
        }
        Ok(c)
    }
}

enum PemKind {
    Certs,
    Key,
}

/// A PEM file's bytes, once checked to hold what it should (tonic parses
/// them only when it connects, with a vaguer error).
fn read_pem(path: &Path, kind: PemKind) -> Result<Vec<u8>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
    match kind {
        PemKind::Certs => {
            let n = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| file_error(path, format!("not a PEM certificate file: {e}")))?
                .len();
            if n == 0 {
                return Err(file_error(path, "holds no certificate"));
            }
        }
        PemKind::Key => {
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(path, format!("not a PEM private key: {e}")))?;
        }
    }
    Ok(pem)
}

/// A connection that finished its TLS handshake.
pub type TlsConnection = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// The connections of `tcp`, each after its TLS handshake, for tonic's
/// `serve_with_incoming`. Every handshake runs in its own task with
/// `timeout`, so a slow or garbage client holds up no one; a failed one is
/// logged at debug and dropped. Ends at `stop`. `http1`: for the HTTP
/// endpoint rather than gRPC.
pub fn incoming<S>(
    mut tcp: S,
    acceptor: Acceptor,
    http1: bool,
    timeout: Duration,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConnection, std::io::Error>>
where
    S: futures::Stream<Item = Result<tokio::net::TcpStream, std::io::Error>> + Send + Unpin + 'static,
{
    use futures::StreamExt;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let handshakes = tasks.clone();
    tasks.spawn(async move {
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = tcp.next() => next,
            };
            let conn = match next {
                None => return,
                Some(Ok(conn)) => conn,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "accepting a connection");
                    continue;
                }
            };
            let (tx, tls) = (tx.clone(), acceptor.acceptor(http1));
            handshakes.spawn(async move {
                let peer = conn.peer_addr().ok();
                match tokio::time::timeout(timeout, tls.accept(conn)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(?peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(?peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
