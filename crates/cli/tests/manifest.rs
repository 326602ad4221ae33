//! The manifest channel end to end: a real devnet, a real deploy.yaml, a lease, and the
//! provider's TLS endpoint (pinned by the fingerprint on the ledger) running the lease on the
//! real Docker engine. Forged, replayed, mismatched and misaddressed requests are refused with a
//! reason; the owner's manifest runs, serves HTTP, reports status and streams logs.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use pazar_client::keyring::Keyring;
use pazar_provider::server::{LeaseServer, RpcChain};
use pazar_provider::tenant::{ProviderClient, TenantError};
use pazar_provider::tls::{Identity, PinnedClient, TlsListener};
use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::{LeaseRef, Runtime};
use pazar_sdl::Manifest;
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

fn refused(r: Result<serde_json::Value, TenantError>) -> (u16, String, String) {
    match r {
        Err(TenantError::Refused { status, code, message }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
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
    let d = net.cli(&[
        "deploy",
        file.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "50",
        "--create-only",
    ]);
    assert_eq!(d["tx"]["receipt"]["code"], 0, "{d}");
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
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d["manifest_file"].as_str().expect("path")).expect("saved"))
            .expect("json");
    let manifest: Manifest = serde_json::from_value(rec["manifest"].clone()).expect("manifest");
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
    assert_eq!((status, code.as_str()), (403, "not_owner"), "{msg}");
    // A manifest that is not the deployed one.
    let mut other = manifest.clone();
    other.groups[0].services[0].image = "pazar-demo:other".into();
    let (status, code, msg) = refused(alice_c.send_manifest(&lease, &other).await);
    assert_eq!((status, code.as_str()), (409, "version_mismatch"), "{msg}");
    assert!(msg.contains("differs from the deployment version"), "{msg}");
    // No such lease.
    let mut missing = lease.clone();
    missing.dseq = 999;
    let (status, code, _) = refused(alice_c.send_manifest(&missing, &manifest).await);
    assert_eq!((status, code.as_str()), (404, "no_lease"));
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
    assert_eq!(again.status, 401);
    let text = String::from_utf8_lossy(&again.bytes().await.expect("body")).into_owned();
    assert!(text.contains("replay"), "{text}");
    let forged = raw
        .send("PUT", &path, &[(AUTH_HEADER, auth)], b"{}".to_vec())
        .await
        .expect("forged");
    assert_eq!(forged.status, 401);

    // The deployed service: status with its URI, which answers over HTTP; logs.
    let t0 = Instant::now();
    let uri = loop {
        let st = alice_c.status(&lease).await.expect("status");
        if st["ready"] == true {
            if let Some(u) = st["uris"][0]["uri"].as_str() {
                break u.to_string();
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not ready: {st}");
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
    let logs = alice_c.logs(&lease, Some("web"), 50, false).await.expect("logs");
    let text = String::from_utf8_lossy(&logs.body.collect().await.expect("log body").to_bytes()).into_owned();
    assert!(text.contains("pazar demo: serving on :8080"), "{text}");

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
    assert_eq!((status, code.as_str()), (410, "lease_closed"));
    rt.close(&LeaseRef::new(lease.clone())).await.expect("close");
    let name = LeaseRef::new(lease).name();
    assert!(rt.leases().await.expect("list").iter().all(|(n, _)| *n != name));
}
