//! Signed requests from a tenant to a provider (manifest, status, logs), carried in the
//! `x-pazar-auth` header. The signature covers the chain, the provider it is meant for, the
//! whole request (method, request target, path and query string exactly as sent, and body), a
//! time and a random nonce, so a request cannot be altered (not even which log lines it asks
//! for), replayed elsewhere (another provider or chain), later (outside a short window), or
//! again (the provider keeps the nonces of the requests it accepted within the window).
//! Ethereum keys sign a readable rendering with `personal_sign`, as MetaMask shows it.

use borsh::{BorshDeserialize, BorshSerialize};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::keys::{SignatureError, SigningKey, TxSignature};
use crate::tx::Hash32;

/// Name of the HTTP header holding the hex of a Borsh-encoded [`RequestAuth`].
pub const AUTH_HEADER: &str = "x-pazar-auth";

/// How far a request's time may be from the provider's clock.
pub const MAX_SKEW_MS: u64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RequestAuth {
    pub signer: Address,
    pub time_ms: u64,
    pub nonce: [u8; 16],
    pub signature: TxSignature,
}

/// What a signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RequestScope<'a> {
    pub chain_id: &'a str,
    pub provider: &'a Address,
    pub method: &'a str,
    /// The request target: path and query string, byte for byte as sent (`/lease/…/logs?tail=5`).
    pub target: &'a str,
    pub body: &'a [u8],
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

impl RequestScope<'_> {
    pub fn digest(&self, time_ms: u64, nonce: &[u8; 16]) -> Hash32 {
        let mut h = Sha256::new();
        // v2: the target includes the query string (v1 signed the path alone).
        field(&mut h, b"pazar/provider-request/v2");
        field(&mut h, self.chain_id.as_bytes());
        field(&mut h, self.provider.to_string().as_bytes());
        field(&mut h, self.method.as_bytes());
        field(&mut h, self.target.as_bytes());
        field(&mut h, &Sha256::digest(self.body));
        field(&mut h, &time_ms.to_le_bytes());
        field(&mut h, nonce);
        h.finalize().into()
    }

    /// What an Ethereum wallet shows before signing; it ends with the digest.
    pub fn readable(&self, time_ms: u64, nonce: &[u8; 16], digest: &Hash32) -> String {
        format!(
            "Pazar request to provider {}\nchain: {}\n{} {}\nbody sha256: {}\ntime: {time_ms}\nnonce: {}\ndigest: {}",
            self.provider,
            self.chain_id,
            self.method,
            self.target,
            hex::encode(Sha256::digest(self.body)),
            hex::encode(nonce),
            hex::encode(digest)
        )
    }

    pub fn sign(&self, key: &SigningKey, time_ms: u64, nonce: [u8; 16]) -> RequestAuth {
        let d = self.digest(time_ms, &nonce);
        RequestAuth {
            signer: key.address(),
            time_ms,
            nonce,
            signature: key.sign_tx(&d, &self.readable(time_ms, &nonce, &d)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {AUTH_HEADER} header: requests must be signed by the deployment owner")]
    Missing,
    #[error("{AUTH_HEADER} header is not valid: {0}")]
    Malformed(String),
    #[error("request time {time_ms} is {skew_ms} ms away from the provider's clock (at most {MAX_SKEW_MS} ms): check the clock, or this is a replay")]
    Stale { time_ms: u64, skew_ms: u64 },
    #[error("signature does not match signer {0} for this request (wrong key, or the request was altered)")]
    BadSignature(Address),
}

impl RequestAuth {
    pub fn to_header(&self) -> String {
        hex::encode(borsh::to_vec(self).expect("encoding into a Vec cannot fail"))
    }

    pub fn from_header(v: &str) -> Result<RequestAuth, AuthError> {
        let bytes = hex::decode(v.trim()).map_err(|e| AuthError::Malformed(e.to_string()))?;
        if bytes.len() > 512 {
            return Err(AuthError::Malformed("too long".into()));
        }
        borsh::from_slice(&bytes).map_err(|e| AuthError::Malformed(e.to_string()))
    }

    /// Checks time and signature (not the nonce: the verifier keeps those).
    pub fn verify(&self, scope: &RequestScope<'_>, now_ms: u64) -> Result<(), AuthError> {
        let skew_ms = now_ms.abs_diff(self.time_ms);
        if skew_ms > MAX_SKEW_MS {
            return Err(AuthError::Stale {
                time_ms: self.time_ms,
                skew_ms,
            });
        }
        let d = scope.digest(self.time_ms, &self.nonce);
        self.signature
            .verify(&self.signer, &d, || scope.readable(self.time_ms, &self.nonce, &d))
            .map_err(|e: SignatureError| match e {
                SignatureError::Invalid | SignatureError::NotSender { .. } => AuthError::BadSignature(self.signer),
                other => AuthError::Malformed(other.to_string()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyScheme;

    fn scope<'a>(provider: &'a Address, body: &'a [u8]) -> RequestScope<'a> {
        RequestScope {
            chain_id: "c",
            provider,
            method: "PUT",
            target: "/lease/x/manifest",
            body,
        }
    }

    #[test]
    fn both_key_kinds_sign_requests_that_verify_only_unchanged() {
        let provider = Address::Native([1; 20]);
        for scheme in [KeyScheme::Ed25519, KeyScheme::Eth] {
            let key = SigningKey::from_secret(scheme, &[5; 32]).expect("key");
            let auth = scope(&provider, b"{}").sign(&key, 1_000_000, [3; 16]);
            let back = RequestAuth::from_header(&auth.to_header()).expect("round trip");
            assert_eq!(back, auth);
            assert!(back.verify(&scope(&provider, b"{}"), 1_000_500).is_ok());
            // Another body, path, provider or signer: refused.
            assert_eq!(
                back.verify(&scope(&provider, b"{ }"), 1_000_500),
                Err(AuthError::BadSignature(key.address()))
            );
            let other = Address::Native([2; 20]);
            assert!(back.verify(&scope(&other, b"{}"), 1_000_500).is_err());
            let mut forged = back.clone();
            forged.signer = Address::Native([9; 20]);
            assert!(forged.verify(&scope(&provider, b"{}"), 1_000_500).is_err());
            // Too old.
            assert!(matches!(
                back.verify(&scope(&provider, b"{}"), 1_000_000 + MAX_SKEW_MS + 1),
                Err(AuthError::Stale { .. })
            ));
        }
        assert!(matches!(RequestAuth::from_header("zz"), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn the_query_string_is_signed_with_the_path() {
        let provider = Address::Native([1; 20]);
        let key = SigningKey::from_secret(KeyScheme::Ed25519, &[5; 32]).expect("key");
        let at = |target| RequestScope {
            chain_id: "c",
            provider: &provider,
            method: "GET",
            target,
            body: b"",
        };
        let auth = at("/lease/x/logs?tail=5&service=web").sign(&key, 1_000_000, [3; 16]);
        assert!(auth.verify(&at("/lease/x/logs?tail=5&service=web"), 1_000_000).is_ok());
        for altered in [
            "/lease/x/logs?tail=10000&service=web",
            "/lease/x/logs?tail=5&service=db",
            "/lease/x/logs?tail=5&service=web&follow=true",
            "/lease/x/logs",
        ] {
            assert_eq!(
                auth.verify(&at(altered), 1_000_000),
                Err(AuthError::BadSignature(key.address())),
                "{altered}"
            );
        }
    }
}
