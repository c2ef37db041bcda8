//! A throwaway certificate authority for people without their own PKI
//! (`drover admin certs`, `drover dev --tls`) and for tests (`rcgen`).
//!
//! A node's certificate serves both ways: as the server certificate of its
//! port and as its peer identity when it dials another node. It names the
//! node (`node-ID.drover`, see [`super::peer_name`]) and the hosts clients
//! use. The client certificate names no node, so it can never pass as a
//! peer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{file_error, peer_name, TlsError};

fn rc(e: rcgen::Error) -> TlsError {
    TlsError::Config(format!("making a certificate: {e}"))
}

/// A CA that can issue certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    key_pem: String,
}

/// A certificate and its key, PEM.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A node: server and client (peer) authentication.
    Node,
    /// A client or worker: client authentication only.
    Client,
}

fn validity(p: &mut CertificateParams, valid_for: Duration, expired: bool) {
    let now = time::OffsetDateTime::now_utc();
    let valid_for = time::Duration::try_from(valid_for).unwrap_or(time::Duration::days(365));
    if expired {
        p.not_before = now - time::Duration::days(2);
        p.not_after = now - time::Duration::days(1);
    } else {
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + valid_for;
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Result<Ca, TlsError> {
        let key = KeyPair::generate().map_err(rc)?;
        let mut p = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        validity(&mut p, Duration::from_secs(10 * 365 * 86_400), false);
        let cert = p.self_signed(&key).map_err(rc)?;
        let (pem, key_pem) = (cert.pem(), key.serialize_pem());
        Ok(Ca { issuer: Issuer::new(p, key), pem, key_pem })
    }

    /// The CA's certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A certificate for `names` (DNS names or IP addresses), the first
    /// also its common name. `expired` makes one that ended yesterday.
    pub fn issue(
        &self,
        names: &[String],
        usage: Usage,
        valid_for: Duration,
        expired: bool,
    ) -> Result<Issued, TlsError> {
        let key = KeyPair::generate().map_err(rc)?;
        let mut p = CertificateParams::new(names.to_vec()).map_err(rc)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "drover".into()));
        p.distinguished_name = dn;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.extended_key_usages = match usage {
            Usage::Node => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        validity(&mut p, valid_for, expired);
        let cert = p.signed_by(&key, &self.issuer).map_err(rc)?;
        Ok(Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A node's certificate: its peer name, then `hosts` (by default
    /// `localhost` and `127.0.0.1`).
    pub fn node(&self, id: u64, hosts: &[String], valid_for: Duration) -> Result<Issued, TlsError> {
        let mut names = vec![peer_name(id)];
        if hosts.is_empty() {
            names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
        } else {
            names.extend(hosts.iter().cloned());
        }
        self.issue(&names, Usage::Node, valid_for, false)
    }
}

/// The files [`write_bundle`] wrote.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub ca: PathBuf,
    /// `(id, cert, key)` per node.
    pub nodes: Vec<(u64, PathBuf, PathBuf)>,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Bundle {
    /// The bundle [`write_bundle`] wrote into `dir` for nodes `1..=nodes`,
    /// if every file is there.
    pub fn existing(dir: &Path, nodes: u64) -> Option<Bundle> {
        let b = Bundle {
            ca: dir.join("ca.pem"),
            nodes: (1..=nodes)
                .map(|id| (id, dir.join(format!("node-{id}.pem")), dir.join(format!("node-{id}-key.pem"))))
                .collect(),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        let mut files = vec![&b.ca, &b.client_cert, &b.client_key];
        files.extend(b.nodes.iter().flat_map(|(_, c, k)| [c, k]));
        files.iter().all(|f| f.exists()).then_some(b)
    }

    /// The serving and peer files of node `id`.
    pub fn server_tls(&self, id: u64) -> Option<super::ServerTls> {
        let (_, cert, key) = self.nodes.iter().find(|(n, _, _)| *n == id)?;
        Some(super::ServerTls {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: Some(self.ca.clone()),
            require_client_cert: false,
            peer_ca: Some(self.ca.clone()),
            peer_cert: Some(cert.clone()),
            peer_key: Some(key.clone()),
        })
    }

    /// The client's files (trusting the CA, presenting the client pair).
    pub fn client_tls(&self) -> super::ClientTls {
        super::ClientTls {
            ca: Some(self.ca.clone()),
            cert: Some(self.client_cert.clone()),
            key: Some(self.client_key.clone()),
        }
    }
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .map_err(|e| file_error(path, e))?;
    f.write_all(text.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| file_error(path, e))
}

/// Make a CA and write `ca.pem`, `ca-key.pem`, `node-I.pem` and
/// `node-I-key.pem` for each node id, and `client.pem`/`client-key.pem`
/// into `out` (created if missing).
pub fn write_bundle(out: &Path, nodes: &[u64], hosts: &[String], valid_for: Duration) -> Result<Bundle, TlsError> {
    write_bundle_from(&Ca::new("drover CA")?, out, nodes, hosts, valid_for)
}

/// [`write_bundle`] with a given CA.
pub fn write_bundle_from(
    ca: &Ca,
    out: &Path,
    nodes: &[u64],
    hosts: &[String],
    valid_for: Duration,
) -> Result<Bundle, TlsError> {
    std::fs::create_dir_all(out).map_err(|e| file_error(out, e))?;
    let ca_path = out.join("ca.pem");
    write(&ca_path, ca.pem(), false)?;
    write(&out.join("ca-key.pem"), &ca.key_pem, true)?;
    let mut written = Vec::new();
    for id in nodes {
        let n = ca.node(*id, hosts, valid_for)?;
        let (cert, key) = (out.join(format!("node-{id}.pem")), out.join(format!("node-{id}-key.pem")));
        write(&cert, &n.cert_pem, false)?;
        write(&key, &n.key_pem, true)?;
        written.push((*id, cert, key));
    }
    let client = ca.issue(&["drover-client".to_string()], Usage::Client, valid_for, false)?;
    let (client_cert, client_key) = (out.join("client.pem"), out.join("client-key.pem"));
    write(&client_cert, &client.cert_pem, false)?;
    write(&client_key, &client.key_pem, true)?;
    Ok(Bundle { ca: ca_path, nodes: written, client_cert, client_key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    fn der(pem: &str) -> Vec<CertificateDer<'static>> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap()
    }

    fn acceptor(dir: &Path) -> (Ca, Bundle, crate::tls::Acceptor) {
        let ca = Ca::new("test").unwrap();
        let b = write_bundle_from(&ca, dir, &[1, 2], &[], Duration::from_secs(3600)).unwrap();
        let a = crate::tls::Acceptor::new(b.server_tls(1).unwrap()).unwrap();
        (ca, b, a)
    }

    #[test]
    fn a_node_certificate_is_a_peer_and_a_client_certificate_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (_, b, a) = acceptor(dir.path());
        let node2 = crate::tls::read_certs(&b.nodes[1].1).unwrap();
        assert_eq!(a.peer_identity(Some(&node2)), Ok(2));
        let client = crate::tls::read_certs(&b.client_cert).unwrap();
        let e = a.peer_identity(Some(&client)).unwrap_err();
        assert!(e.contains("names no node"), "{e}");
        assert!(a.peer_identity(None).unwrap_err().contains("no client certificate"));
    }

    #[test]
    fn another_ca_s_or_an_expired_node_certificate_is_no_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _, a) = acceptor(dir.path());
        let other = Ca::new("other").unwrap().node(2, &[], Duration::from_secs(3600)).unwrap();
        let e = a.peer_identity(Some(&der(&other.cert_pem))).unwrap_err();
        assert!(e.contains("not a valid certificate from the peer CA"), "{e}");
        let expired = ca.issue(&[crate::tls::peer_name(2)], Usage::Node, Duration::from_secs(3600), true).unwrap();
        let e = a.peer_identity(Some(&der(&expired.cert_pem))).unwrap_err();
        assert!(e.contains("not a valid certificate from the peer CA") && e.to_lowercase().contains("expired"), "{e}");
    }

    #[test]
    fn a_bad_new_pair_is_refused_and_the_old_one_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (_, b, a) = acceptor(dir.path());
        std::fs::write(&b.nodes[0].2, "not a key").unwrap();
        let e = a.reload().unwrap_err().to_string();
        assert!(e.contains("node-1-key.pem"), "{e}");
        // Still serving with the old pair.
        let _ = a.acceptor(false);
        assert!(a.dial().is_some());
    }
}
