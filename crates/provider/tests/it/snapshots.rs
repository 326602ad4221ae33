//! Volume snapshots end to end on the real Docker engine, through the provider's real TLS
//! endpoint and the tenant's client library: data written by lease A's workload into its
//! persistent volume is pulled into a tenant's store (a second pull fetches no chunk), pushed
//! into a new lease B of the same deployment before its manifest, and B's workload reads it
//! from its own volume when it starts. A symlink the workload planted to a host file is listed
//! as a symlink and its target's content is never served.

use std::sync::Arc;

use crate::common;

use common::{docker_with, exec, lease, wait_status};
use pazar_api::provider::EntryKind;
use pazar_client::snapshots::SnapshotStore;
use pazar_client::tenant::ProviderClient;
use pazar_provider::server::{Chain, LeaseFacts, LeaseServer};
use pazar_provider::tls::{Identity, TlsListener};
use pazar_runtime::docker::DockerOptions;
use pazar_runtime::{GroupStatus, LeaseRef};
use pazar_types::market::{BidId, GroupSpec};
use pazar_types::{Address, Hash32, KeyScheme, SigningKey};

/// The ledger as the server sees it: every lease of the deployment is active.
struct AllActive {
    version: Hash32,
    spec: GroupSpec,
}

impl Chain for AllActive {
    fn lease(&self, _: &BidId) -> Result<Option<LeaseFacts>, String> {
        Ok(Some(LeaseFacts {
            active: true,
            grace_until: None,
            version: self.version,
            group: self.spec.clone(),
        }))
    }
}

fn container(l: &LeaseRef) -> String {
    format!("{}-web-0", l.name())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_pulled_from_one_lease_is_restored_into_a_new_one_before_its_service_starts() {
    let state = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(
        docker_with(DockerOptions {
            state_dir: Some(state.path().join("runtime")),
            ..common::options()
        })
        .await,
    );
    let opts = pazar_sdl::Options::new(
        pazar_types::Denom::new("upzr").expect("denom"),
        pazar_types::Denom::new("uusd").expect("denom"),
    );
    let d = pazar_sdl::parse(common::persistent_web_sdl().as_bytes(), &opts).expect("valid sdl");
    let key = SigningKey::from_secret(KeyScheme::Ed25519, &[5; 32]).expect("key");
    let provider = Address::Native([9; 20]);
    let chain = Arc::new(AllActive {
        version: d.manifest_version,
        spec: d.groups[0].clone(),
    });
    let server = Arc::new(LeaseServer::new(
        "c".into(),
        provider,
        "127.0.0.1".into(),
        chain,
        rt.clone(),
        state.path().join("leases"),
    ));
    let id = Identity::load_or_create(&state.path().join("tls"), &["127.0.0.1".to_string()]).expect("identity");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = tcp.local_addr().expect("address").port();
    tokio::spawn(
        server
            .clone()
            .serve(TlsListener::new(tcp, id.server_config().expect("tls"))),
    );
    let client = Arc::new(
        ProviderClient::new(
            &format!("https://127.0.0.1:{port}"),
            id.fingerprint(),
            "c",
            provider,
            key.clone(),
        )
        .expect("client"),
    );
    // Two leases of one deployment (the same owner, group and manifest), as after a failover.
    let owned = |tag: u8| {
        let mut l = lease(tag).id;
        l.owner = key.address();
        l.provider = provider;
        LeaseRef::new(l)
    };
    let (a, b) = (owned(61), owned(62));
    let g = common::group(&common::persistent_web_sdl());
    let outcome = tokio::spawn(prove(rt.clone(), client, a.clone(), b.clone(), d.manifest.clone(), g)).await;
    for l in [&a, &b] {
        server.close_lease(&l.id).await.expect("closes");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    let mounts = std::fs::read_dir(state.path().join("runtime/snapshot-mounts"))
        .into_iter()
        .flatten()
        .flatten()
        .count();
    assert_eq!(mounts, 0, "no private mount is left");
    assert!(
        !state.path().join("leases/restore").join(b.name()).exists(),
        "nothing staged is left"
    );
}

async fn prove(
    rt: Arc<pazar_runtime::docker::DockerRuntime>,
    client: Arc<ProviderClient>,
    a: LeaseRef,
    b: LeaseRef,
    manifest: pazar_api::manifest::Manifest,
    g: pazar_sdl::ValidGroup,
) {
    client.send_manifest(&a.id, &manifest).await.expect("A deploys");
    wait_status(&*rt, &a, &g, GroupStatus::all_running).await;
    let (code, out) = exec(
        &rt,
        &container(&a),
        "mkdir -p /data/db && head -c 2500000 /dev/urandom > /data/db/big && echo kept > /data/db/note && \
         ln -s /etc/shadow /data/shadow && md5sum /data/db/big",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let sum = out.split_whitespace().next().expect("a checksum").to_string();

    let store_dir = tempfile::tempdir().expect("tempdir");
    let (c, la, sd) = (client.clone(), a.id.clone(), store_dir.path().to_path_buf());
    let (first, second) = tokio::task::spawn_blocking(move || {
        let store = SnapshotStore::open(&sd).expect("store");
        let first = store.pull(&c, &la).expect("pulls");
        let second = store.pull(&c, &la).expect("pulls again");
        (first, second)
    })
    .await
    .expect("pull task");
    assert_eq!(first.files, 2, "{first:?}");
    assert_eq!(first.bytes_total, 2_500_005, "{first:?}");
    assert_eq!(
        first.chunks_fetched, 4,
        "three of the big file, one of the note: {first:?}"
    );
    assert_eq!(second.chunks_fetched, 0, "nothing changed, nothing travels: {second:?}");
    let store = SnapshotStore::open(store_dir.path()).expect("store");
    let (snap, _) = store.latest(a.id.gseq).expect("reads").expect("a snapshot");
    let shadow = snap.volumes[0]
        .entries
        .iter()
        .find(|e| e.path == "shadow")
        .expect("the symlink is listed");
    assert_eq!(
        shadow.kind,
        EntryKind::Symlink {
            target: "/etc/shadow".into()
        }
    );

    let (c, lb, sd) = (client.clone(), b.id.clone(), store_dir.path().to_path_buf());
    let pushed = tokio::task::spawn_blocking(move || SnapshotStore::open(&sd).expect("store").push(&c, &lb))
        .await
        .expect("push task")
        .expect("pushes");
    assert_eq!(pushed.chunks_sent, 4, "{pushed:?}");
    client
        .send_manifest(&b.id, &manifest)
        .await
        .expect("B deploys on the restored volume");
    wait_status(&*rt, &b, &g, GroupStatus::all_running).await;
    let (code, out) = exec(
        &rt,
        &container(&b),
        "cat /data/db/note && md5sum /data/db/big && readlink /data/shadow",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kept"), "{out}");
    assert!(out.contains(&sum), "the same bytes: {out}");
    assert!(out.contains("/etc/shadow"), "the symlink as it was: {out}");
    // A restore is only for a new lease: B now runs, so another is refused.
    let again = client.stage_restore(&b.id, &snap).await.expect_err("refused");
    assert_eq!(again.code(), Some(pazar_api::ErrorCode::BadRequest), "{again}");
}
