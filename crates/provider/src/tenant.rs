//! The tenant's side of the provider channel: signed requests over pinned TLS to send a
//! manifest, read a lease's status and stream its logs.

use rand_core::{OsRng, RngCore};
use serde_json::Value;

use pazar_sdl::manifest::Manifest;
use pazar_types::auth::{RequestScope, AUTH_HEADER};
use pazar_types::market::BidId;
use pazar_types::{Address, Hash32, SigningKey};

use crate::tls::{PinnedClient, Response, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(transparent)]
    Channel(#[from] TlsError),
    #[error("the provider refused ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the provider answered something unreadable: {0}")]
    Decode(String),
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
        .sign(&self.key, crate::server::now_ms(), nonce)
        .to_header()
    }

    async fn signed(&self, method: &str, path: &str, body: Vec<u8>) -> Result<Response, TenantError> {
        let headers = [
            (AUTH_HEADER, self.auth(method, path, &body)),
            ("content-type", "application/json".to_string()),
        ];
        Ok(self.http.send(method, path, &headers, body).await?)
    }

    async fn json(resp: Response) -> Result<Value, TenantError> {
        let status = resp.status;
        let bytes = resp.bytes().await?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            // The provider's bytes, shortened: an error message is not a place for megabytes.
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            TenantError::Decode(format!("{e}: {text}"))
        })?;
        if !(200..300).contains(&status) {
            return Err(TenantError::Refused {
                status,
                code: v["error"]["code"].as_str().unwrap_or("").to_string(),
                message: v["error"]["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(v)
    }

    pub async fn send_manifest(&self, lease: &BidId, manifest: &Manifest) -> Result<Value, TenantError> {
        let body = serde_json::to_vec(manifest).map_err(|e| TenantError::Decode(e.to_string()))?;
        Self::json(self.signed("PUT", &lease_path(lease, "manifest"), body).await?).await
    }

    pub async fn status(&self, lease: &BidId) -> Result<Value, TenantError> {
        Self::json(self.signed("GET", &lease_path(lease, "status"), vec![]).await?).await
    }

    /// The log stream (NDJSON lines of `LogLine`), or the refusal.
    pub async fn logs(
        &self,
        lease: &BidId,
        service: Option<&str>,
        tail: usize,
        follow: bool,
    ) -> Result<Response, TenantError> {
        let mut q = format!("{}?tail={tail}&follow={follow}", lease_path(lease, "logs"));
        if let Some(s) = service {
            // Service names are DNS labels; anything else would need escaping, and the provider
            // refuses it anyway.
            if !pazar_sdl::names::is_service_name(s) {
                return Err(TenantError::Decode(format!("{s:?} is not a service name")));
            }
            q.push_str(&format!("&service={s}"));
        }
        // The signature covers the query too: nobody on the way can change what is read.
        let auth = self.auth("GET", &q, b"");
        let resp = self.http.send("GET", &q, &[(AUTH_HEADER, auth)], vec![]).await?;
        if resp.status != 200 {
            return Err(match Self::json(resp).await {
                Err(e) => e,
                Ok(v) => TenantError::Decode(v.to_string()),
            });
        }
        Ok(resp)
    }
}
