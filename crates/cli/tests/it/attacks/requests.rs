//! Attacks of class `requests` (see mod.rs): forged, altered, replayed and misaddressed signed
//! requests to a real provider daemon's tenant endpoint. The whole request is signed, the query
//! string included, so a log request cannot be altered on the way; a request that has not proved
//! everything (signature, owner, an active lease of this provider) leaves nothing behind, so a
//! stranger can neither burn a tenant's nonces nor fill the provider's nonce store, and sending
//! the same refused bytes again gets the same refusal, never "replay"; an accepted request
//! cannot be replayed.

use pazar_api::provider::LeaseStatus;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_client::tenant::PinnedClient;
use pazar_provider::server::now_ms;
use pazar_types::auth::{RequestScope, AUTH_HEADER};
use pazar_types::{Address, SigningKey};

use super::manifest::{build_image, deploy, raw_channel, signer, start_daemon, web_sdl};
use crate::common;

/// A raw answer: its status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Answer {
    /// The refusal's code and message, read as the provider's error envelope.
    fn refusal(&self) -> (u16, ErrorCode, String) {
        let e: ErrorEnvelope = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{}, not an error envelope ({e}): {}", self.status, self.text()));
        (self.status, e.error.code, e.error.message)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Endpoint {
    rt: tokio::runtime::Runtime,
    raw: PinnedClient,
    chain_id: String,
}

impl Endpoint {
    fn auth(
        &self,
        key: &SigningKey,
        provider: &Address,
        method: &str,
        target: &str,
        time_ms: u64,
        nonce: u8,
    ) -> String {
        RequestScope {
            chain_id: &self.chain_id,
            provider,
            method,
            target,
            body: b"",
        }
        .sign(key, time_ms, [nonce; 16])
        .to_header()
    }

    /// Sends GET `target` with `auth`.
    fn get(&self, target: &str, auth: &str) -> Answer {
        self.rt.block_on(async {
            let r = self
                .raw
                .send("GET", target, &[(AUTH_HEADER, auth.to_string())], vec![])
                .await
                .expect("an answer");
            let status = r.status;
            let body = r.bytes().await.expect("body").to_vec();
            Answer { status, body }
        })
    }
}

#[test]
fn a_request_proves_everything_before_its_nonce_is_kept_and_cannot_be_altered_or_replayed() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_daemon(&net, dir.path(), "docker", "", "");
    let provider: Address = net.address("provider").parse().expect("address");
    let lease = deploy(&net, &web_sdl(dir.path(), "web.yaml", 1), "alice", 30);
    let ep = Endpoint {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        raw: raw_channel(&net, &provider),
        chain_id: net.rpc().chain_id().expect("chain id"),
    };
    let (alice, bob) = (signer(&net, "alice"), signer(&net, "bob"));
    let owner = lease.owner;
    let status_path = format!("/lease/{owner}/30/1/1/status");
    let logs_path = format!("/lease/{owner}/30/1/1/logs");

    // The query is signed with the path: five lines asked for, ten thousand sent.
    let signed = format!("{logs_path}?tail=5&follow=false");
    let auth = ep.auth(&alice, &provider, "GET", &signed, now_ms(), 1);
    let (status, code, msg) = ep.get(&format!("{logs_path}?tail=10000&follow=false"), &auth).refusal();
    assert_eq!((status, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(msg.contains("signature does not match"), "{msg}");
    // The same signature on the query it covers is served: the refusal was the alteration.
    let a = ep.get(&signed, &auth);
    assert_eq!(a.status, 200, "{}", a.text());

    // A stranger signs for Alice's lease: refused, and nothing of it is kept, so the same
    // bytes get the same answer (not "replay") and Alice's use of the same nonce is served.
    let auth = ep.auth(&bob, &provider, "GET", &status_path, now_ms(), 9);
    for _ in 0..2 {
        let (status, code, msg) = ep.get(&status_path, &auth).refusal();
        assert_eq!((status, code), (403, ErrorCode::NotOwner), "{msg}");
        assert!(!msg.contains("replay"), "{msg}");
    }
    // Alice asks about a lease that does not exist: refused, not kept either.
    let missing = format!("/lease/{owner}/999/1/1/status");
    let auth = ep.auth(&alice, &provider, "GET", &missing, now_ms(), 9);
    for _ in 0..2 {
        let (status, code, msg) = ep.get(&missing, &auth).refusal();
        assert_eq!((status, code), (404, ErrorCode::NoLease), "{msg}");
    }
    // Signed for another provider, or outside the freshness window: refused.
    let other: Address = net.address("bob").parse().expect("address");
    let auth = ep.auth(&alice, &other, "GET", &status_path, now_ms(), 9);
    let (status, code, msg) = ep.get(&status_path, &auth).refusal();
    assert_eq!(
        (status, code),
        (401, ErrorCode::Unauthenticated),
        "another provider's request: {msg}"
    );
    let auth = ep.auth(&alice, &provider, "GET", &status_path, now_ms() - 180_000, 9);
    let (status, code, msg) = ep.get(&status_path, &auth).refusal();
    assert_eq!((status, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(msg.contains("away from the provider's clock"), "{msg}");

    // Alice's request with the nonce the stranger used is served once, then is a replay.
    let auth = ep.auth(&alice, &provider, "GET", &status_path, now_ms(), 9);
    let a = ep.get(&status_path, &auth);
    assert_eq!(a.status, 200, "{}", a.text());
    let st: LeaseStatus = serde_json::from_slice(&a.body).expect("a lease status");
    assert!(st.ready, "{st:?}");
    let (status, code, msg) = ep.get(&status_path, &auth).refusal();
    assert_eq!((status, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(msg.contains("replay"), "{msg}");
    daemon.close_and_wait_removed(&net, &lease, "alice");
}
