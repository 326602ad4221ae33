//! The provider's TLS identity and the pinned channel to it. A provider makes a self-signed
//! certificate once; the SHA-256 of its DER bytes is registered on the ledger
//! (`tls_fingerprint`). A tenant connects with a verifier that accepts exactly that certificate
//! (and checks the handshake signature with its key), so no certificate authority is trusted and
//! a man in the middle cannot present another key. Errors name the mismatch instead of "EOF".

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use pazar_types::Hash32;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write the provider's TLS identity in {path}: {reason}")]
    Identity { path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("the provider at {addr} presented a certificate with fingerprint {got}, but the ledger pins {want}: refusing (wrong host, or someone in the middle)")]
    Fingerprint { addr: String, got: String, want: String },
    #[error("TLS handshake with {addr} failed: {reason}")]
    Handshake { addr: String, reason: String },
    #[error("HTTP exchange with {addr} failed: {reason}")]
    Http { addr: String, reason: String },
    #[error("{0:?} is not a provider URI (expected https://HOST:PORT)")]
    BadUri(String),
}

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// A provider's certificate and key.
pub struct Identity {
    pub cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    /// SHA-256 of the certificate's DER bytes: what the ledger pins.
    pub fn fingerprint(&self) -> Hash32 {
        Sha256::digest(self.cert.as_ref()).into()
    }

    /// Loads `cert.der` and `key.der` from `dir`, or makes them (valid for `names`: host names
    /// or IP addresses the provider is reached at) and writes them, the key readable only by
    /// its owner.
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Identity, TlsError> {
        let err = |reason: String| TlsError::Identity {
            path: dir.display().to_string(),
            reason,
        };
        let (cp, kp) = (dir.join("cert.der"), dir.join("key.der"));
        if cp.exists() && kp.exists() {
            let cert = std::fs::read(&cp).map_err(|e| err(e.to_string()))?;
            let key = std::fs::read(&kp).map_err(|e| err(e.to_string()))?;
            return Ok(Identity {
                cert: CertificateDer::from(cert),
                key: PrivatePkcs8KeyDer::from(key),
            });
        }
        let mut names = names.to_vec();
        if !names.iter().any(|n| n == "localhost") {
            names.push("localhost".into());
        }
        let ck =
            rcgen::generate_simple_self_signed(names).map_err(|e| err(format!("cannot make a certificate: {e}")))?;
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        let key = ck.signing_key.serialize_der();
        write_private(&kp, &key).map_err(|e| err(e.to_string()))?;
        std::fs::write(&cp, ck.cert.der()).map_err(|e| err(e.to_string()))?;
        Ok(Identity {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(key),
        })
    }

    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cfg = rustls::ServerConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(|e| TlsError::Setup(e.to_string()))?;
        Ok(Arc::new(cfg))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Accepts exactly the certificate whose SHA-256 is `pin`, whatever its names and dates.
#[derive(Debug)]
struct Pinned {
    pin: Hash32,
    crypto: Arc<CryptoProvider>,
    /// Set when a certificate was refused, so the caller can say which fingerprint it saw.
    seen: std::sync::Mutex<Option<Hash32>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: Hash32 = Sha256::digest(end_entity.as_ref()).into();
        if got == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            if let Ok(mut s) = self.seen.lock() {
                *s = Some(got);
            }
            Err(rustls::Error::General(
                "certificate fingerprint does not match the ledger".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.crypto.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.crypto.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.crypto.signature_verification_algorithms.supported_schemes()
    }
}

/// An axum listener that speaks TLS. Connections are accepted and handshaken concurrently in a
/// background task (each handshake limited to 10 s), so a slow or silent client cannot hold up
/// others; failed handshakes are dropped.
pub struct TlsListener {
    local: std::net::SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, std::net::SocketAddr)>,
}

/// Handshakes in flight at most; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> TlsListener {
        let local = tcp
            .local_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
                    drop(permit);
                    if let Ok(Ok(tls)) = hs {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        TlsListener { local, ready }
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.local)
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept task ended (the runtime is shutting down): wait forever, as a closed
            // listener would.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// `https://host:port` → (`host`, `host:port`).
pub fn split_uri(uri: &str) -> Result<(String, String), TlsError> {
    let rest = uri
        .strip_prefix("https://")
        .ok_or_else(|| TlsError::BadUri(uri.to_string()))?
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| TlsError::BadUri(uri.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(TlsError::BadUri(uri.to_string()));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    Ok((host, rest.to_string()))
}

/// An HTTP/1.1 connection to a provider over pinned TLS.
pub struct PinnedClient {
    host: String,
    addr: String,
    pin: Hash32,
}

/// Longest a provider may take to finish the TLS handshake, and to send a response's head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
pub const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest whole response body read into memory (status, manifests' answers); longer ones
/// (a provider is another party) are refused, not buffered. Log streams are read frame by frame.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Longest the reading of one whole body may take.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A response: status and the body as a stream of chunks.
pub struct Response {
    pub status: u16,
    pub body: Incoming,
}

impl Response {
    /// The whole body, at most [`MAX_RESPONSE_BYTES`] read within [`BODY_TIMEOUT`].
    pub async fn bytes(self) -> Result<Bytes, TlsError> {
        let limited = http_body_util::Limited::new(self.body, MAX_RESPONSE_BYTES);
        match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) => Err(TlsError::Http {
                addr: String::new(),
                reason: if e.is::<http_body_util::LengthLimitError>() {
                    format!("the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes")
                } else {
                    e.to_string()
                },
            }),
            Err(_) => Err(TlsError::Http {
                addr: String::new(),
                reason: format!("the provider's answer took longer than {} s", BODY_TIMEOUT.as_secs()),
            }),
        }
    }
}

impl PinnedClient {
    pub fn new(host_uri: &str, pin: Hash32) -> Result<PinnedClient, TlsError> {
        let (host, addr) = split_uri(host_uri)?;
        Ok(PinnedClient { host, addr, pin })
    }

    /// Sends one request on a fresh connection.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, TlsError> {
        let verifier = Arc::new(Pinned {
            pin: self.pin,
            crypto: crypto(),
            seen: std::sync::Mutex::new(None),
        });
        let cfg = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&self.addr))
            .await
            .map_err(|_| TlsError::Connect {
                addr: self.addr.clone(),
                reason: "timed out after 10 s".into(),
            })?
            .map_err(|e| TlsError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|_| TlsError::BadUri(self.host.clone()))?;
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsConnector::from(Arc::new(cfg)).connect(name, tcp));
        let tls = match handshake.await {
            Err(_) => {
                return Err(TlsError::Handshake {
                    addr: self.addr.clone(),
                    reason: format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                })
            }
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let seen = verifier.seen.lock().ok().and_then(|s| *s);
                return Err(match seen {
                    Some(got) => TlsError::Fingerprint {
                        addr: self.addr.clone(),
                        got: hex_of(&got),
                        want: hex_of(&self.pin),
                    },
                    None => TlsError::Handshake {
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    },
                });
            }
        };
        let http = |e: hyper::Error| TlsError::Http {
            addr: self.addr.clone(),
            reason: e.to_string(),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(http)?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.host);
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| TlsError::Http {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        let resp = tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| TlsError::Http {
                addr: self.addr.clone(),
                reason: format!("no answer within {} s", RESPONSE_HEAD_TIMEOUT.as_secs()),
            })?
            .map_err(http)?;
        Ok(Response {
            status: resp.status().as_u16(),
            body: resp.into_body(),
        })
    }
}

fn hex_of(h: &Hash32) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_uris_split_into_host_and_address() {
        let (h, a) = split_uri("https://p.example:8443").expect("ok");
        assert_eq!((h.as_str(), a.as_str()), ("p.example", "p.example:8443"));
        let (h, _) = split_uri("https://127.0.0.1:1/").expect("ok");
        assert_eq!(h, "127.0.0.1");
        for bad in ["http://p:1", "https://p", "https://p:x", "https://p:1/path"] {
            assert!(split_uri(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_pinned_certificate_is_accepted_and_any_other_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = Identity::load_or_create(dir.path(), &["127.0.0.1".into()]).expect("identity");
        // Reloading gives the same identity.
        let again = Identity::load_or_create(dir.path(), &[]).expect("reload");
        assert_eq!(again.fingerprint(), id.fingerprint());

        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listener = TlsListener::new(tcp, id.server_config().expect("config"));
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route("/hi", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let uri = format!("https://127.0.0.1:{port}");
        let ok = PinnedClient::new(&uri, id.fingerprint()).expect("client");
        let r = ok.send("GET", "/hi", &[], vec![]).await.expect("pinned");
        assert_eq!(r.status, 200);
        assert_eq!(r.bytes().await.expect("body").as_ref(), b"hello");

        // A client that connects and never speaks does not hold up the next one.
        let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let r = tokio::time::timeout(Duration::from_secs(5), ok.send("GET", "/hi", &[], vec![]))
            .await
            .expect("not blocked by a silent client")
            .expect("pinned");
        assert_eq!(r.status, 200);

        let wrong = PinnedClient::new(&uri, [7; 32]).expect("client");
        let err = wrong.send("GET", "/hi", &[], vec![]).await.err().expect("refused");
        let msg = err.to_string();
        assert!(
            msg.contains(&hex_of(&id.fingerprint())) && msg.contains("ledger pins"),
            "{msg}"
        );
    }
}
