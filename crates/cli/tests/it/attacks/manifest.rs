//! Attacks of class `manifest` (see mod.rs): a tenant writes a manifest by hand, puts its hash on
//! the ledger with `UpdateDeployment` (so it matches the deployment version, as the provider
//! checks first) and sends it to a real `pazar provider run` on the sandbox runtime, where names
//! become host paths. More replicas than the lease has, a service, volume or mount that would
//! walk out of the lease's directory with `..`, a POSIX-invalid environment name, and a field
//! the manifest does not have are each refused with the reason; nothing is made on the host, the
//! tenant's running lease keeps its one replica, and another tenant's lease is untouched.
//!
//! The module also holds the harness the provider-side attack modules share (`requests`,
//! `races`, `paging`, `exhaustion_provider`): a real daemon on a devnet, the demo image, and a
//! tenant's signing client.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pazar_api::provider::LeaseStatus;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_client::keyring::Keyring;
use pazar_client::tenant::{PinnedClient, ProviderClient, TenantError};
use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::LeaseRef;
use pazar_sdl::Manifest;
use pazar_types::market::BidId;
use pazar_types::{Address, Hash32, SigningKey};

use crate::common;

pub(crate) const IMAGE: &str = "pazar-demo:test";

/// A running `pazar provider run`, killed when dropped.
pub(crate) struct Daemon {
    child: Option<Child>,
    config: PathBuf,
    home: PathBuf,
    pub log: PathBuf,
    pub port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        self.child = Some(
            Command::new(common::bin())
                .args(["provider", "run", "--from", "provider", "--config"])
                .arg(&self.config)
                .arg("--home")
                .arg(&self.home)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawns the daemon"),
        );
    }

    /// Waits until the daemon serves tenants (it says so once its restore is done), counting
    /// only what it logged after `from` bytes of its log.
    pub fn wait_serving(&self, from: usize) {
        let t0 = Instant::now();
        loop {
            let text = self.log_text();
            if text.get(from..).is_some_and(|t| t.contains("following the chain")) {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the daemon did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The tenant `from` closes `lease`, and the daemon removes its workload: waited for, so a
    /// test that ends (and kills the daemon) right after leaves nothing of it behind.
    pub fn close_and_wait_removed(&self, net: &common::Devnet, lease: &BidId, from: &str) {
        net.close_lease(lease, from);
        let said = format!("lease {lease} closed");
        let t0 = Instant::now();
        while !self.log_text().contains(&said) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the daemon did not remove {lease}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = self.log_text();
        assert!(!log.contains(&format!("{said} but removing")), "{log}");
    }

    /// Kills the daemon (as a crash would) and starts it again on the same configuration.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let from = self.log_text().len();
        self.spawn();
        self.wait_serving(from);
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Builds the demo image in the local Docker engine (both runtimes take it from there).
pub(crate) fn build_image() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default()).await.expect("docker");
        build_demo_image(d.docker(), IMAGE).await.expect("image");
    });
}

/// Starts `pazar provider run` in `dir` on `runtime` with `top` (top-level TOML settings) and
/// `tables` (TOML tables) added, the demo image allowed, and waits until it serves tenants.
pub(crate) fn start_daemon(net: &common::Devnet, dir: &Path, runtime: &str, top: &str, tables: &str) -> Daemon {
    let port = free_port();
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nruntime = \"{runtime}\"\n{top}\n[images]\nallow_local = [\"pazar-demo:*\"]\n{tables}\n"
        ),
    )
    .expect("config");
    let mut d = Daemon {
        child: None,
        config,
        home: net.home.path().to_path_buf(),
        log: dir.join("provider.log"),
        port,
    };
    d.spawn();
    d.wait_serving(0);
    d
}

/// A one-service SDL of the demo image: `count` replicas of a tenth of a core.
pub(crate) fn web_sdl(dir: &Path, name: &str, count: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: {IMAGE}\n    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: 0.1}}, memory: {{size: 64Mi}}, storage: {{size: 64Mi}}}}}}\n  placement:\n    local: {{pricing: {{web: {{denom: uusd, amount: 1000}}}}}}\ndeployment:\n  web: {{local: {{profile: web, count: {count}}}}}\n"
        ),
    )
    .expect("sdl");
    path
}

/// `pazar deploy` of `sdl` by `from` at `dseq`, taking the first bid; returns the lease id.
pub(crate) fn deploy(net: &common::Devnet, sdl: &Path, from: &str, dseq: u64) -> BidId {
    let d = net.deploy(&[
        sdl.to_str().expect("utf8"),
        "--from",
        from,
        "--dseq",
        &dseq.to_string(),
        "--bid-window-s",
        "0",
    ]);
    assert!(d.lease().status.ready, "{d:?}");
    d.lease().lease.clone()
}

/// The manifest `pazar deploy` saved for `owner`'s deployment `dseq`.
pub(crate) fn saved_manifest(net: &common::Devnet, owner: &Address, dseq: u64) -> Manifest {
    common::saved_manifest(&net.home.path().join("deployments").join(format!("{owner}-{dseq}.json")))
}

pub(crate) fn signer(net: &common::Devnet, name: &str) -> SigningKey {
    Keyring::new(net.home.path())
        .signer(name, &|_, _| None)
        .expect("devnet key")
}

/// What the ledger records of the provider: its URI and TLS fingerprint.
pub(crate) fn provider_pin(net: &common::Devnet, provider: &Address) -> (String, Hash32) {
    let p = net.rpc().provider(provider, false).expect("provider").item.provider;
    (p.host_uri, p.tls_fingerprint)
}

/// A raw pinned channel to the provider, for requests a tenant's client would never send
/// (unsigned, malformed, replayed).
pub(crate) fn raw_channel(net: &common::Devnet, provider: &Address) -> PinnedClient {
    let (uri, fp) = provider_pin(net, provider);
    PinnedClient::new(&uri, fp).expect("client")
}

/// A raw answer read as the provider's error envelope: (status, code, message).
pub(crate) async fn raw_refusal(r: pazar_client::tenant::Response) -> (u16, ErrorCode, String) {
    let status = r.status;
    let body = r.bytes().await.expect("body");
    let e: ErrorEnvelope =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{status}, not an error envelope ({e}): {body:?}"));
    (status, e.error.code, e.error.message)
}

/// A tenant's client of the provider, signing as key `name`.
pub(crate) fn tenant(net: &common::Devnet, name: &str, provider: &Address) -> ProviderClient {
    let (uri, fp) = provider_pin(net, provider);
    let chain_id = net.rpc().chain_id().expect("chain id");
    ProviderClient::new(&uri, fp, &chain_id, *provider, signer(net, name)).expect("client")
}

/// The refusal a request got: (HTTP status, code, message).
pub(crate) fn refused<T: std::fmt::Debug>(r: Result<T, TenantError>) -> (u16, ErrorCode, String) {
    match r {
        Err(TenantError::Refused { status, code, message }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Puts `m`'s version on the ledger as deployment `dseq`'s (what a tenant does before sending a
/// changed manifest).
pub(crate) fn put_version_on_ledger(net: &common::Devnet, from: &str, dseq: u64, m: &Manifest) {
    net.tx_ok(&[
        "tx",
        "deployment",
        "update",
        "--dseq",
        &dseq.to_string(),
        "--version",
        &hex::encode(m.version()),
        "--from",
        from,
    ]);
}

/// Whether anything of `lease` exists on the local Docker engine.
pub(crate) fn docker_runs(lease: &BidId) -> bool {
    let name = LeaseRef::new(lease.clone()).name();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default()).await.expect("docker");
        pazar_runtime::Runtime::leases(&d)
            .await
            .expect("leases")
            .iter()
            .any(|(n, _)| *n == name)
    })
}

/// Every path under `root` (names only), sorted: what exists on the host.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            // The image store is filled on demand and a replica's log grows: neither is made by
            // a manifest's names.
            if p.components().any(|c| c.as_os_str() == "images") {
                continue;
            }
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            if e.file_type().is_ok_and(|t| t.is_dir() && !t.is_symlink()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn status_of(rt: &tokio::runtime::Runtime, c: &ProviderClient, lease: &BidId) -> LeaseStatus {
    rt.block_on(c.status(lease)).expect("status")
}

#[test]
fn a_hand_written_manifest_whose_hash_is_on_the_ledger_is_refused_when_it_breaks_a_rule_or_its_lease() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    // The sandbox user must reach the sandbox's directory.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let sandbox = dir.path().join("sandbox");
    let daemon = start_daemon(
        &net,
        dir.path(),
        "sandbox",
        "",
        &format!("[sandbox]\ndir = \"{}\"\n", sandbox.display()),
    );
    let provider: Address = net.address("provider").parse().expect("address");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // Two tenants with a lease each, one replica apiece.
    let bob_lease = deploy(&net, &web_sdl(dir.path(), "bob.yaml", 1), "bob", 10);
    let alice_lease = deploy(&net, &web_sdl(dir.path(), "alice.yaml", 1), "alice", 20);
    let (alice, bob) = (tenant(&net, "alice", &provider), tenant(&net, "bob", &provider));
    let bob_before = status_of(&rt, &bob, &bob_lease);
    assert!(bob_before.ready, "{bob_before:?}");
    let owner: Address = alice_lease.owner;
    let base = saved_manifest(&net, &owner, 20);
    let host_before = tree(&sandbox);
    let canary = PathBuf::from(format!("/tmp/pazar-escape-{}", std::process::id()));

    type Edit = Box<dyn Fn(&mut Manifest)>;
    let cases: Vec<(&str, Edit, ErrorCode, &str)> = vec![
        (
            "three replicas on a lease of one",
            Box::new(|m| m.groups[0].services[0].count = 3),
            ErrorCode::NotLeased,
            "ask for 3 replicas; the lease has 1",
        ),
        (
            "a service name that walks out of the lease's directory",
            Box::new(move |m| m.groups[0].services[0].name = "../../../../tmp/pazar-escape".into()),
            ErrorCode::BadManifest,
            "is not a service name",
        ),
        (
            "a volume name with ..",
            Box::new(|m| {
                let s = &mut m.groups[0].services[0];
                s.resources.storage.push(pazar_types::market::StorageVolume {
                    name: "..".into(),
                    bytes: 64 << 20,
                    attributes: vec![pazar_types::market::Attribute::new("persistent", "true")],
                });
                s.storage.push(pazar_sdl::manifest::StorageMount {
                    name: "..".into(),
                    mount: "/data".into(),
                    read_only: false,
                });
            }),
            ErrorCode::BadManifest,
            "is not a volume name",
        ),
        (
            "a mount path that climbs out with ..",
            Box::new(|m| {
                let s = &mut m.groups[0].services[0];
                s.resources.storage.push(pazar_types::market::StorageVolume {
                    name: "data".into(),
                    bytes: 64 << 20,
                    attributes: vec![pazar_types::market::Attribute::new("persistent", "true")],
                });
                s.storage.push(pazar_sdl::manifest::StorageMount {
                    name: "data".into(),
                    mount: "/data/../../../etc".into(),
                    read_only: false,
                });
            }),
            ErrorCode::BadManifest,
            "must not contain . or .. components",
        ),
        (
            "a volume mounted over the runtime's /etc/hosts",
            Box::new(|m| {
                let s = &mut m.groups[0].services[0];
                s.resources.storage.push(pazar_types::market::StorageVolume {
                    name: "data".into(),
                    bytes: 64 << 20,
                    attributes: vec![pazar_types::market::Attribute::new("persistent", "true")],
                });
                s.storage.push(pazar_sdl::manifest::StorageMount {
                    name: "data".into(),
                    mount: "/etc/hosts".into(),
                    read_only: false,
                });
            }),
            ErrorCode::BadManifest,
            "written by the runtime",
        ),
        (
            "an environment name that is not a POSIX name",
            Box::new(|m| m.groups[0].services[0].env.push("BASH_FUNC_x%%=() { id; }".into())),
            ErrorCode::BadManifest,
            "is not an environment variable name",
        ),
        (
            "an image reference that is a path",
            Box::new(|m| m.groups[0].services[0].image = "../../../bin".into()),
            ErrorCode::BadManifest,
            "has an invalid",
        ),
    ];
    for (what, edit, code, reason) in &cases {
        let mut m = base.clone();
        edit(&mut m);
        put_version_on_ledger(&net, "alice", 20, &m);
        let (status, got, message) = refused(rt.block_on(alice.send_manifest(&alice_lease, &m)));
        assert_eq!((status, got), (400, *code), "{what}: {message}");
        assert!(message.contains(reason), "{what}: {message}");
        assert_eq!(tree(&sandbox), host_before, "{what}: nothing is made on the host");
        assert!(!canary.exists() && !Path::new("/tmp/pazar-escape").exists(), "{what}");
    }

    // A field the manifest does not have is refused as it is read, before anything else.
    let mut v = serde_json::to_value(&base).expect("json");
    v["groups"][0]["services"][0]["privileged"] = true.into();
    let body = serde_json::to_vec(&v).expect("json");
    let chain_id = net.rpc().chain_id().expect("chain id");
    let path = format!("/lease/{owner}/20/1/1/manifest");
    let auth = pazar_types::auth::RequestScope {
        chain_id: &chain_id,
        provider: &provider,
        method: "PUT",
        target: &path,
        body: &body,
    }
    .sign(&signer(&net, "alice"), pazar_provider::server::now_ms(), [7; 16])
    .to_header();
    let raw = raw_channel(&net, &provider);
    let (status, code, message) = rt.block_on(async {
        let resp = raw
            .send("PUT", &path, &[(pazar_types::auth::AUTH_HEADER, auth)], body)
            .await
            .expect("answer");
        raw_refusal(resp).await
    });
    assert_eq!((status, code), (400, ErrorCode::BadManifest), "{message}");
    assert!(message.contains("unknown field `privileged`"), "{message}");

    // Alice's lease still runs its one replica of the manifest it was deployed with; Bob's is
    // as it was.
    let st = status_of(&rt, &alice, &alice_lease);
    assert!(st.ready, "{st:?}");
    assert_eq!(st.services.len(), 1, "{st:?}");
    assert_eq!(
        (st.services[0].name.as_str(), st.services[0].replicas),
        ("web", 1),
        "{st:?}"
    );
    let bob_after = status_of(&rt, &bob, &bob_lease);
    assert_eq!(bob_after.services, bob_before.services, "Bob's lease is untouched");
    assert!(bob_after.ready);
    assert!(
        !daemon.log_text().contains("panicked"),
        "the daemon kept running: {}",
        daemon.log_text()
    );
    for l in [&alice_lease, &bob_lease] {
        let who = if l.owner == owner { "alice" } else { "bob" };
        daemon.close_and_wait_removed(&net, l, who);
    }
}
