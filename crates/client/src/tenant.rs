//! The tenant's side of the provider channel: signed requests over pinned TLS to send a
//! manifest, read a lease's status and stream its logs, answered with the contract types of
//! `pazar_api::provider`. A tenant program (the CLI, a console, a training job) needs nothing of
//! the provider crate to talk to a provider.
//!
//! A provider's certificate is self-signed; the ledger records the SHA-256 of its DER bytes
//! (`tls_fingerprint`). The channel accepts exactly that certificate (and checks the handshake
//! signature with its key), so no certificate authority is trusted and a man in the middle
//! cannot present another key. Errors name the mismatch instead of "EOF".

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use rand_core::{OsRng, RngCore};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as provider, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use pazar_api::manifest::Manifest;
use pazar_api::provider::{
    snapshot_limits, ChunkAnswer, ChunkFrames, ChunkHash, ChunkRequest, ChunkStaged, LeaseStatus, LogItem, LogsQuery,
    ManifestAccepted, RestoreStaged, VolumeSnapshot,
};
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_types::auth::{RequestScope, AUTH_HEADER};
use pazar_types::market::BidId;
use pazar_types::{Address, Hash32, SigningKey};

use crate::{ClientError, Rpc};

/// Longest a provider may take to accept the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a provider may take to finish the TLS handshake, and to send a response's head.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
pub const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a provider may take to answer a manifest: it answers once the workloads were
/// (re)started, and an update replaces replicas one at a time, each awaited until it serves
/// (a minute each by default) after its image was pulled.
pub const MANIFEST_ANSWER_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Largest whole response body read into memory (status, manifests' answers); longer ones
/// (a provider is another party) are refused, not buffered. Log streams are read frame by frame.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// Longest the reading of one whole body may take.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest log record taken from a provider's stream before it is refused.
pub const MAX_LOG_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
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

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("the provider refused ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("the provider answered something unreadable: {0}")]
    Decode(String),
    /// What the ledger records of the provider does not let a tenant reach it.
    #[error("provider {provider}: {reason}")]
    Ledger { provider: Address, reason: String },
    #[error(transparent)]
    Node(#[from] ClientError),
}

impl TenantError {
    /// The provider's error code, if it answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TenantError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn crypto() -> Arc<CryptoProvider> {
    Arc::new(provider::default_provider())
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

/// `https://host:port` → (`host`, `host:port`).
pub fn split_uri(uri: &str) -> Result<(String, String), ChannelError> {
    let rest = uri
        .strip_prefix("https://")
        .ok_or_else(|| ChannelError::BadUri(uri.to_string()))?
        .trim_end_matches('/');
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ChannelError::BadUri(uri.to_string()))?;
    if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(ChannelError::BadUri(uri.to_string()));
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

/// A response: status and the body as a stream of chunks.
pub struct Response {
    pub status: u16,
    pub body: Incoming,
}

impl Response {
    /// The whole body, at most [`MAX_RESPONSE_BYTES`] read within [`BODY_TIMEOUT`].
    pub async fn bytes(self) -> Result<Bytes, ChannelError> {
        let limited = http_body_util::Limited::new(self.body, MAX_RESPONSE_BYTES);
        match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
            Ok(Ok(b)) => Ok(b.to_bytes()),
            Ok(Err(e)) => Err(ChannelError::Http {
                addr: String::new(),
                reason: if e.is::<http_body_util::LengthLimitError>() {
                    format!("the provider's answer is larger than {MAX_RESPONSE_BYTES} bytes")
                } else {
                    e.to_string()
                },
            }),
            Err(_) => Err(ChannelError::Http {
                addr: String::new(),
                reason: format!("the provider's answer took longer than {} s", BODY_TIMEOUT.as_secs()),
            }),
        }
    }
}

impl PinnedClient {
    pub fn new(host_uri: &str, pin: Hash32) -> Result<PinnedClient, ChannelError> {
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
    ) -> Result<Response, ChannelError> {
        self.send_within(method, path, headers, body, RESPONSE_HEAD_TIMEOUT)
            .await
    }

    /// [`PinnedClient::send`] waiting at most `head_timeout` for the response's head.
    pub async fn send_within(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
        head_timeout: Duration,
    ) -> Result<Response, ChannelError> {
        let verifier = Arc::new(Pinned {
            pin: self.pin,
            crypto: crypto(),
            seen: std::sync::Mutex::new(None),
        });
        let cfg = rustls::ClientConfig::builder_with_provider(crypto())
            .with_safe_default_protocol_versions()
            .map_err(|e| ChannelError::Setup(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| ChannelError::Connect {
                addr: self.addr.clone(),
                reason: format!("timed out after {} s", CONNECT_TIMEOUT.as_secs()),
            })?
            .map_err(|e| ChannelError::Connect {
                addr: self.addr.clone(),
                reason: e.to_string(),
            })?;
        let name = ServerName::try_from(self.host.clone()).map_err(|_| ChannelError::BadUri(self.host.clone()))?;
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsConnector::from(Arc::new(cfg)).connect(name, tcp));
        let tls = match handshake.await {
            Err(_) => {
                return Err(ChannelError::Handshake {
                    addr: self.addr.clone(),
                    reason: format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                })
            }
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                let seen = verifier.seen.lock().ok().and_then(|s| *s);
                return Err(match seen {
                    Some(got) => ChannelError::Fingerprint {
                        addr: self.addr.clone(),
                        got: hex::encode(got),
                        want: hex::encode(self.pin),
                    },
                    None => ChannelError::Handshake {
                        addr: self.addr.clone(),
                        reason: e.to_string(),
                    },
                });
            }
        };
        let http = |e: hyper::Error| ChannelError::Http {
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
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| ChannelError::Http {
            addr: self.addr.clone(),
            reason: e.to_string(),
        })?;
        let resp = tokio::time::timeout(head_timeout, sender.send_request(req))
            .await
            .map_err(|_| ChannelError::Http {
                addr: self.addr.clone(),
                reason: format!("no answer within {} s", head_timeout.as_secs()),
            })?
            .map_err(http)?;
        Ok(Response {
            status: resp.status().as_u16(),
            body: resp.into_body(),
        })
    }
}

/// A signing tenant talking to one provider.
pub struct ProviderClient {
    http: PinnedClient,
    chain_id: String,
    provider: Address,
    key: SigningKey,
}

fn lease_path(id: &BidId, what: &str) -> String {
    format!("/lease/{}/{}/{}/{}/{what}", id.owner, id.dseq, id.gseq, id.oseq)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The start of a provider's bytes, for an error message.
fn shortened(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
}

impl ProviderClient {
    /// `host_uri` and `fingerprint` as the ledger records them for `provider`.
    pub fn new(
        host_uri: &str,
        fingerprint: Hash32,
        chain_id: &str,
        provider: Address,
        key: SigningKey,
    ) -> Result<ProviderClient, TenantError> {
        Ok(ProviderClient {
            http: PinnedClient::new(host_uri, fingerprint)?,
            chain_id: chain_id.to_string(),
            provider,
            key,
        })
    }

    /// A client of `provider` at the URI and pinned to the fingerprint the ledger records for
    /// it, signing with `key` (blocking: it asks the node).
    pub fn from_ledger(rpc: &Rpc, provider: &Address, key: SigningKey) -> Result<ProviderClient, TenantError> {
        let p = rpc.provider(provider, false)?.item.provider;
        if p.host_uri.is_empty() {
            return Err(TenantError::Ledger {
                provider: *provider,
                reason: "no host URI on the ledger".into(),
            });
        }
        let chain_id = rpc.chain_id()?;
        ProviderClient::new(&p.host_uri, p.tls_fingerprint, &chain_id, *provider, key)
    }

    pub fn provider(&self) -> &Address {
        &self.provider
    }

    /// The `x-pazar-auth` value for this request (fresh time and nonce); `target` is the path
    /// and query exactly as sent.
    fn auth(&self, method: &str, target: &str, body: &[u8]) -> String {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        RequestScope {
            chain_id: &self.chain_id,
            provider: &self.provider,
            method,
            target,
            body,
        }
        .sign(&self.key, now_ms(), nonce)
        .to_header()
    }

    async fn signed(&self, method: &str, target: &str, body: Vec<u8>) -> Result<Response, TenantError> {
        self.signed_within(method, target, body, RESPONSE_HEAD_TIMEOUT).await
    }

    async fn signed_within(
        &self,
        method: &str,
        target: &str,
        body: Vec<u8>,
        head_timeout: Duration,
    ) -> Result<Response, TenantError> {
        let headers = [
            (AUTH_HEADER, self.auth(method, target, &body)),
            ("content-type", "application/json".to_string()),
        ];
        Ok(self
            .http
            .send_within(method, target, &headers, body, head_timeout)
            .await?)
    }

    /// The provider's refusal, from its error envelope.
    fn refusal(status: u16, bytes: &[u8]) -> TenantError {
        match serde_json::from_slice::<ErrorEnvelope>(bytes) {
            Ok(e) => TenantError::Refused {
                status,
                code: e.error.code,
                message: e.error.message,
            },
            Err(_) => TenantError::Refused {
                status,
                code: ErrorCode::Unknown,
                message: shortened(bytes),
            },
        }
    }

    async fn answer<T: DeserializeOwned>(resp: Response) -> Result<T, TenantError> {
        let status = resp.status;
        let bytes = resp.bytes().await?;
        if !(200..300).contains(&status) {
            return Err(Self::refusal(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| TenantError::Decode(format!("{e}: {}", shortened(&bytes))))
    }

    /// Sends the deployment's manifest for `lease`; the provider checks it against the lease
    /// and starts the workloads (the lease's status tells when they serve).
    pub async fn send_manifest(&self, lease: &BidId, manifest: &Manifest) -> Result<ManifestAccepted, TenantError> {
        let body = serde_json::to_vec(manifest).map_err(|e| TenantError::Decode(e.to_string()))?;
        Self::answer(
            self.signed_within("PUT", &lease_path(lease, "manifest"), body, MANIFEST_ANSWER_TIMEOUT)
                .await?,
        )
        .await
    }

    /// The lease's services: replicas running, restarts, pulls, URIs.
    pub async fn status(&self, lease: &BidId) -> Result<LeaseStatus, TenantError> {
        Self::answer(self.signed("GET", &lease_path(lease, "status"), vec![]).await?).await
    }

    /// Lists the lease's persistent volumes (the provider remembers where each chunk was read,
    /// for [`ProviderClient::snapshot_chunks`]).
    pub async fn snapshot(&self, lease: &BidId) -> Result<VolumeSnapshot, TenantError> {
        Self::answer(self.signed("GET", &lease_path(lease, "snapshot"), vec![]).await?).await
    }

    /// Chunks of the lease's last listing, at most [`snapshot_limits::MAX_CHUNKS_PER_FETCH`];
    /// one answer per chunk, in order. Bytes are returned as the provider sent them: the caller
    /// checks them against their names.
    pub async fn snapshot_chunks(&self, lease: &BidId, chunks: &[ChunkHash]) -> Result<Vec<ChunkAnswer>, TenantError> {
        if chunks.is_empty() || chunks.len() > snapshot_limits::MAX_CHUNKS_PER_FETCH {
            return Err(TenantError::Decode(format!(
                "ask for 1 to {} chunks at a time",
                snapshot_limits::MAX_CHUNKS_PER_FETCH
            )));
        }
        let body = serde_json::to_vec(&ChunkRequest {
            chunks: chunks.to_vec(),
        })
        .map_err(|e| TenantError::Decode(e.to_string()))?;
        let resp = self.signed("POST", &lease_path(lease, "snapshot/chunks"), body).await?;
        let status = resp.status;
        let bytes = resp.bytes().await?;
        if status != 200 {
            return Err(Self::refusal(status, &bytes));
        }
        ChunkFrames::decode(&bytes, chunks.len()).map_err(|e| TenantError::Decode(e.to_string()))
    }

    /// Stages one chunk of a snapshot for restore into the new `lease`.
    pub async fn stage_chunk(
        &self,
        lease: &BidId,
        chunk: &ChunkHash,
        bytes: Vec<u8>,
    ) -> Result<ChunkStaged, TenantError> {
        let path = lease_path(lease, &format!("restore/chunks/{}", chunk.hex()));
        Self::answer(self.signed("PUT", &path, bytes).await?).await
    }

    /// Stages the snapshot's listing (every chunk staged first); the lease's first manifest
    /// restores it into its volumes before any replica starts.
    pub async fn stage_restore(&self, lease: &BidId, snapshot: &VolumeSnapshot) -> Result<RestoreStaged, TenantError> {
        let body = serde_json::to_vec(snapshot).map_err(|e| TenantError::Decode(e.to_string()))?;
        Self::answer(self.signed("PUT", &lease_path(lease, "restore"), body).await?).await
    }

    /// The lease's log stream, or the refusal.
    pub async fn logs(&self, lease: &BidId, query: &LogsQuery) -> Result<LogStream, TenantError> {
        let mut q = format!(
            "{}?tail={}&follow={}",
            lease_path(lease, "logs"),
            query.tail.unwrap_or(100),
            query.follow.unwrap_or(false)
        );
        if let Some(s) = &query.service {
            // Service names are DNS labels; anything else would need escaping, and the provider
            // refuses it anyway.
            if !pazar_api::names::is_service_name(s) {
                return Err(TenantError::Decode(format!("{s:?} is not a service name")));
            }
            q.push_str(&format!("&service={s}"));
        }
        // The signature covers the query too: nobody on the way can change what is read.
        let auth = self.auth("GET", &q, b"");
        let resp = self.http.send("GET", &q, &[(AUTH_HEADER, auth)], vec![]).await?;
        if resp.status != 200 {
            let status = resp.status;
            let bytes = resp.bytes().await?;
            return Err(Self::refusal(status, &bytes));
        }
        Ok(LogStream {
            body: resp.body,
            pending: Vec::new(),
            done: false,
        })
    }
}

/// A lease's log records as they arrive (newline-delimited JSON), each at most
/// [`MAX_LOG_LINE`] bytes.
pub struct LogStream {
    body: Incoming,
    pending: Vec<u8>,
    done: bool,
}

impl LogStream {
    /// The next record, `None` at the end of the stream. A record that is not JSON, or is
    /// longer than [`MAX_LOG_LINE`], ends the stream with an error.
    pub async fn next(&mut self) -> Option<Result<LogItem, TenantError>> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice::<LogItem>(&line).map_err(|e| {
                    self.done = true;
                    TenantError::Decode(format!("a log record that is not one: {e}"))
                }));
            }
            if self.done {
                return None;
            }
            if self.pending.len() > MAX_LOG_LINE {
                self.done = true;
                return Some(Err(TenantError::Decode(format!(
                    "a log record over {MAX_LOG_LINE} bytes"
                ))));
            }
            match self.body.frame().await {
                None => {
                    self.done = true;
                    if self.pending.iter().all(u8::is_ascii_whitespace) {
                        return None;
                    }
                    // A last record without its newline.
                    self.pending.push(b'\n');
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(TenantError::Channel(ChannelError::Http {
                        addr: String::new(),
                        reason: format!("the log stream broke: {e}"),
                    })));
                }
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        self.pending.extend_from_slice(data);
                    }
                }
            }
        }
    }
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
}
