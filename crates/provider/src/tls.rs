//! The provider's TLS identity and its listener. A provider makes a self-signed certificate
//! once; the SHA-256 of its DER bytes is registered on the ledger (`tls_fingerprint`), and
//! tenants connect with `pazar_client::tenant`, which accepts exactly that certificate.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use pazar_types::Hash32;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read or write the provider's TLS identity in {path}: {reason}")]
    Identity { path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Setup(String),
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

/// `https://host:port` → (`host`, `host:port`), by the rule tenants connect with
/// (`pazar_client::tenant::split_uri`), so the certificate names the host they will ask for.
pub fn split_uri(uri: &str) -> Result<(String, String), TlsError> {
    pazar_client::tenant::split_uri(uri).map_err(|_| TlsError::BadUri(uri.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use pazar_client::tenant::PinnedClient;

    #[test]
    fn provider_uris_split_into_host_and_address() {
        let (h, a) = split_uri("https://p.example:8443").expect("ok");
        assert_eq!((h.as_str(), a.as_str()), ("p.example", "p.example:8443"));
        assert!(matches!(split_uri("http://p:1"), Err(TlsError::BadUri(u)) if u == "http://p:1"));
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

        // The tenant's channel (pazar_client) pinned to this identity.
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
            msg.contains(&hex::encode(id.fingerprint())) && msg.contains("ledger pins"),
            "{msg}"
        );
    }
}
