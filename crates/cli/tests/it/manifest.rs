//! The manifest channel end to end: a real devnet, a real deploy.yaml, a lease, and the
//! provider's TLS endpoint (pinned by the fingerprint on the ledger) running the lease on the
//! real Docker engine. Forged, replayed, mismatched and misaddressed requests are refused with a
//! reason; the owner's manifest runs, serves HTTP, reports status and streams logs.

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pazar_api::provider::{LogItem, LogsQuery};
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_client::keyring::Keyring;
use pazar_client::tenant::{PinnedClient, ProviderClient, TenantError};
use pazar_provider::server::{LeaseServer, RpcChain};
use pazar_provider::tls::{Identity, TlsListener};
use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::{LeaseRef, Runtime};
use pazar_types::auth::{RequestScope, AUTH_HEADER};
use pazar_types::market::BidId;
use pazar_types::{Address, SigningKey};

const IMAGE: &str = "pazar-demo:test";

fn sdl() -> String {
    format!(
        r#"
version: "2.0"
services:
  web:
    image: {IMAGE}
    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]
profiles:
  compute:
    web: {{resources: {{cpu: {{units: 0.25}}, memory: {{size: 128Mi}}, storage: {{size: 128Mi}}}}}}
  placement:
    local: {{pricing: {{web: {{denom: uusd, amount: 1000}}}}}}
deployment:
  web: {{local: {{profile: web, count: 1}}}}
"#
    )
}

fn key(home: &Path, name: &str) -> SigningKey {
    Keyring::new(home).signer(name, &|_, _| None).expect("devnet key")
}

fn refused<T: std::fmt::Debug>(r: Result<T, TenantError>) -> (u16, ErrorCode, String) {
    match r {
        Err(TenantError::Refused { status, code, message }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A raw answer's refusal, read as the provider's error envelope: (status, code, message).
async fn raw_refusal(r: pazar_client::tenant::Response) -> (u16, ErrorCode, String) {
    let status = r.status;
    let body = r.bytes().await.expect("body");
    let e: ErrorEnvelope =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not an error envelope ({e}): {body:?}"));
    (status, e.error.code, e.error.message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_s_manifest_runs_and_every_bad_request_is_refused_with_a_reason() {
    let net = common::devnet(200);
    let home = net.home.path().to_path_buf();
    let rt = Arc::new(
        DockerRuntime::connect(DockerOptions {
            // The demo image is built here; no registry is reachable from the tests.
            images: pazar_runtime::images::ImagePolicy::allowing(["pazar-demo:*"]).expect("a valid policy"),
            ..DockerOptions::default()
        })
        .await
        .expect("Docker engine"),
    );
    build_demo_image(rt.docker(), IMAGE).await.expect("image");

    // The provider: a TLS identity, its endpoint, and its registration with the fingerprint.
    let pdir = tempfile::tempdir().expect("tempdir");
    let id = Identity::load_or_create(&pdir.path().join("tls"), &["127.0.0.1".into()]).expect("identity");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let host_uri = format!("https://127.0.0.1:{port}");
    let provider = net.address("provider");
    net.tx_ok(&[
        "tx",
        "provider",
        "create",
        "--from",
        "provider",
        "--host-uri",
        &host_uri,
        "--tls-fingerprint",
        &hex::encode(id.fingerprint()),
    ]);
    let chain_id = net.rpc().chain_id().expect("chain id");
    let provider_addr: Address = provider.parse().expect("address");
    let server = Arc::new(LeaseServer::new(
        chain_id.clone(),
        provider_addr,
        "127.0.0.1".into(),
        Arc::new(RpcChain { rpc: net.rpc() }),
        rt.clone(),
        pdir.path().join("leases"),
    ));
    let listener = TlsListener::new(tcp, id.server_config().expect("tls config"));
    let app = server.clone().router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The tenant deploys a real SDL; the provider bids; the tenant accepts.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deploy.yaml");
    std::fs::write(&file, sdl()).expect("write sdl");
    let d = net.deploy(&[
        file.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "50",
        "--create-only",
    ]);
    common::assert_committed(&d.tx, "deploy --create-only");
    let alice = net.address("alice");
    net.tx_ok(&[
        "tx",
        "bid",
        "create",
        &format!("{alice}/50/1/1"),
        "--from",
        "provider",
        "--price",
        "900uusd",
        "--deposit",
        "500000uusd",
    ]);
    net.tx_ok(&[
        "tx",
        "lease",
        "create",
        &format!("{alice}/50/1/1/{provider}"),
        "--from",
        "alice",
    ]);
    let manifest = d.manifest();
    let lease = BidId {
        owner: alice.parse().expect("alice"),
        dseq: 50,
        gseq: 1,
        oseq: 1,
        provider: provider_addr,
    };
    let as_key = |name: &str| {
        ProviderClient::new(&host_uri, id.fingerprint(), &chain_id, provider_addr, key(&home, name)).expect("client")
    };
    let alice_c = as_key("alice");

    // Not the owner.
    let (status, code, msg) = refused(as_key("bob").send_manifest(&lease, &manifest).await);
    assert_eq!((status, code), (403, ErrorCode::NotOwner), "{msg}");
    // A manifest that is not the deployed one.
    let mut other = manifest.clone();
    other.groups[0].services[0].image = "pazar-demo:other".into();
    let (status, code, msg) = refused(alice_c.send_manifest(&lease, &other).await);
    assert_eq!((status, code), (409, ErrorCode::VersionMismatch), "{msg}");
    assert!(msg.contains("differs from the deployment version"), "{msg}");
    // No such lease.
    let mut missing = lease.clone();
    missing.dseq = 999;
    let (status, code, _) = refused(alice_c.send_manifest(&missing, &manifest).await);
    assert_eq!((status, code), (404, ErrorCode::NoLease));
    // The wrong certificate pin is refused before anything is sent, naming both fingerprints.
    let wrong = ProviderClient::new(&host_uri, [1; 32], &chain_id, provider_addr, key(&home, "alice")).expect("client");
    let e = wrong.status(&lease).await.expect_err("pin mismatch").to_string();
    assert!(
        e.contains("ledger pins") && e.contains(&hex::encode(id.fingerprint())),
        "{e}"
    );

    // A signed request replayed byte for byte is refused the second time; a forged signature
    // (another body under the same header) is refused too.
    let body = serde_json::to_vec(&manifest).expect("json");
    let path = format!("/lease/{alice}/50/1/1/manifest");
    let auth = RequestScope {
        chain_id: &chain_id,
        provider: &provider_addr,
        method: "PUT",
        target: &path,
        body: &body,
    }
    .sign(&key(&home, "alice"), pazar_provider::server::now_ms(), [42; 16])
    .to_header();
    let raw = PinnedClient::new(&host_uri, id.fingerprint()).expect("raw");
    let first = raw
        .send("PUT", &path, &[(AUTH_HEADER, auth.clone())], body.clone())
        .await
        .expect("first");
    let first_status = first.status;
    let first_body = first.bytes().await.expect("body");
    assert_eq!(first_status, 200, "{first_body:?}");
    let again = raw
        .send("PUT", &path, &[(AUTH_HEADER, auth.clone())], body.clone())
        .await
        .expect("again");
    let (status, code, msg) = raw_refusal(again).await;
    assert_eq!((status, code), (401, ErrorCode::Unauthenticated), "{msg}");
    assert!(msg.contains("replay"), "{msg}");
    let forged = raw
        .send("PUT", &path, &[(AUTH_HEADER, auth)], b"{}".to_vec())
        .await
        .expect("forged");
    let (status, code, msg) = raw_refusal(forged).await;
    assert_eq!((status, code), (401, ErrorCode::Unauthenticated), "{msg}");

    // The deployed service: status with its URI, which answers over HTTP; logs.
    let t0 = Instant::now();
    let uri = loop {
        let st = alice_c.status(&lease).await.expect("status");
        if st.ready {
            if let Some(u) = st.uris.first() {
                break u.uri.clone();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not ready: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let hostport = uri.trim_start_matches("http://").to_string();
    let page = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&hostport).expect("connect");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("join");
    assert!(page.contains("Hello from a Pazar lease"), "{page}");
    let query = LogsQuery {
        service: Some("web".into()),
        tail: Some(50),
        follow: Some(false),
    };
    let mut logs = alice_c.logs(&lease, &query).await.expect("logs");
    let mut lines = Vec::new();
    while let Some(item) = logs.next().await {
        match item.expect("a log record") {
            LogItem::Line(l) => {
                assert_eq!(l.service, "web");
                lines.push(l.line);
            }
            LogItem::Error { error } => panic!("the log stream ended with an error: {error}"),
        }
    }
    assert!(
        lines.iter().any(|l| l.contains("pazar demo: serving on :8080")),
        "{lines:?}"
    );

    // The tenant closes the lease: the endpoint says so, and the workload is removed.
    net.tx_ok(&[
        "tx",
        "lease",
        "close",
        &format!("{alice}/50/1/1/{provider}"),
        "--from",
        "alice",
    ]);
    let (status, code, _) = refused(alice_c.status(&lease).await);
    assert_eq!((status, code), (410, ErrorCode::LeaseClosed));
    rt.close(&LeaseRef::new(lease.clone())).await.expect("close");
    let name = LeaseRef::new(lease).name();
    assert!(rt.leases().await.expect("list").iter().all(|(n, _)| *n != name));
}
