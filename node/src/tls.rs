//! TLS for the node's two faces, gRPC and the HTTP gateway, and for every
//! gRPC call a node or the console makes.
//!
//! A node started with `--tls-cert`, `--tls-key` and `--tls-ca` serves gRPC
//! and its gateway over TLS only, with that certificate, and reaches its
//! peers at `https://`, accepting only a certificate the CA signed for the
//! address it dialled (an IP address entry for `10.0.1.5:5057`, a DNS name
//! for `node-3.internal:5057`). A client (the console, the tests) trusts the
//! CA given by `--tls-ca` or, by default, [`CA_ENV`].
//!
//! TLS proves the servers and encrypts the traffic; who may call is still
//! decided by the cluster token ([`crate::auth`]), not by client
//! certificates. The course's MessagePack-RPC face has no TLS: a TLS node
//! refuses it ([`crate::server::msgpack`]).
//!
//! The crypto provider is rustls's aws-lc-rs, named explicitly where this
//! module builds a config: the AWS SDK already links it into both binaries,
//! so TLS adds no second crypto library and needs no process-wide choice.
//!
//! Every file is read and checked once, at start: a certificate file with
//! no certificate, a key that does not parse or does not match the
//! certificate, a CA file with no usable CA is an error naming the file.
//! The private key is never printed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// The variable naming the CA file a client trusts when `--tls-ca` is not
/// given (the console, and library users such as the tests).
pub const CA_ENV: &str = "CHORD_TLS_CA";

/// How long a client may take over its TLS handshake before its connection
/// is dropped. A handshake is a round trip or two; this only bounds clients
/// that connect and then say nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway speaks inside TLS: it serves HTTP/1.1 only.
const HTTP_ALPN: &[u8] = b"http/1.1";

/// The three files a TLS node is started with, as given on its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key of `cert` (PEM).
    pub key: PathBuf,
    /// The CA (PEM) that signed every node's certificate.
    pub ca: PathBuf,
}

impl TlsFiles {
    /// Reads and checks all three files.
    pub fn load(&self) -> Result<NodeTls> {
        Ok(NodeTls {
            identity: Identity::from_files(&self.cert, &self.key)?,
            ca: self.trusted_ca()?,
        })
    }

    /// The CA alone, for a client of the nodes these files start.
    pub fn trusted_ca(&self) -> Result<TrustedCa> {
        TrustedCa::from_file(&self.ca)
    }

    /// The `chord-node` flags that start a node with these files.
    pub fn node_args(&self) -> Vec<OsString> {
        [
            ("--tls-cert", &self.cert),
            ("--tls-key", &self.key),
            ("--tls-ca", &self.ca),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [OsString::from(flag), path.clone().into_os_string()])
        .collect()
    }
}

/// A TLS node's settings: what it proves itself with, and whom it trusts.
#[derive(Clone, Debug)]
pub struct NodeTls {
    /// Served on gRPC and on the gateway.
    pub identity: Identity,
    /// Signs every peer's certificate.
    pub ca: TrustedCa,
}

/// A certificate chain with its private key.
#[derive(Clone)]
pub struct Identity {
    /// As tonic takes them.
    cert_pem: Arc<[u8]>,
    key_pem: Arc<[u8]>,
    /// The gateway's server config, built at load so a key that does not
    /// match its certificate is an error at start.
    http: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity(<certificate and redacted key>)")
    }
}

impl Identity {
    /// The chain in `cert` with the key in `key`, checked against each other.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Identity> {
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "private key")?;
        let chain = certificates(&cert_pem, cert)?;
        let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            Error::invalid(format!("{}: no usable private key: {e}", key.display()))
        })?;
        let mut http = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::invalid(format!("TLS: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| {
                Error::invalid(format!("{} and {}: {e}", cert.display(), key.display()))
            })?;
        http.alpn_protocols = vec![HTTP_ALPN.to_vec()];
        Ok(Identity {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            http: Arc::new(http),
        })
    }

    /// The gRPC server's TLS settings.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                &*self.cert_pem,
                &*self.key_pem,
            ))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// What puts a gateway connection behind TLS.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.http.clone())
    }
}

/// The CA a client trusts to have signed the certificate of every node.
#[derive(Clone)]
pub struct TrustedCa {
    pem: Arc<[u8]>,
}

impl std::fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TrustedCa")
    }
}

impl TrustedCa {
    /// The CA certificates in `path` (PEM); at least one must be usable as
    /// a trust anchor.
    pub fn from_file(path: &Path) -> Result<TrustedCa> {
        let pem = read(path, "CA certificate")?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in certificates(&pem, path)? {
            roots
                .add(cert)
                .map_err(|e| Error::invalid(format!("{}: not a usable CA: {e}", path.display())))?;
        }
        Ok(TrustedCa { pem: pem.into() })
    }

    /// The settings of a gRPC channel that trusts this CA and nothing else.
    pub fn grpc(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&*self.pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}

/// The CA this process trusts for the calls it makes when nobody passes one
/// explicitly: set once by a binary's flags, else read from [`CA_ENV`] on
/// first use. `None`: calls go in plaintext.
pub fn process_ca() -> Option<TrustedCa> {
    PROCESS_CA
        .get_or_init(|| {
            let path = std::env::var_os(CA_ENV)?;
            TrustedCa::from_file(Path::new(&path))
                .inspect_err(
                    |e| tracing::error!(error = %e, "${CA_ENV} not usable; calls go in plaintext"),
                )
                .ok()
        })
        .clone()
}

/// Sets the CA [`process_ca`] returns. Only the first setting (or read)
/// counts; returns whether this one did.
pub fn set_process_ca(ca: Option<TrustedCa>) -> bool {
    PROCESS_CA.set(ca).is_ok()
}

static PROCESS_CA: OnceLock<Option<TrustedCa>> = OnceLock::new();

/// The provider of every config this module builds.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading the {what} {}", path.display()), e))
}

/// The certificates in a PEM file; none is an error.
fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_bad_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = TrustedCa::from_file(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let err = TrustedCa::from_file(&empty).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = Identity::from_files(&empty, &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.pem"), "{err}");
    }

    #[test]
    fn the_files_become_the_node_flags() {
        let files = TlsFiles {
            cert: PathBuf::from("/c/node.pem"),
            key: PathBuf::from("/c/node-key.pem"),
            ca: PathBuf::from("/c/ca.pem"),
        };
        let args: Vec<String> = files
            .node_args()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "--tls-cert",
                "/c/node.pem",
                "--tls-key",
                "/c/node-key.pem",
                "--tls-ca",
                "/c/ca.pem"
            ]
        );
    }
}
