//! `pazar deployment update` with the real binaries (devnet, `pazar provider run`), on each
//! runtime the provider has: a running deployment gets a new image tag and a new environment
//! value; the provider replaces its replicas one by one, the new version serves, the lease
//! status reports that version, and a file written to the persistent volume before the update
//! is still there after it. On Docker an update that would change what was leased is also
//! refused before anything reaches the ledger. On the sandbox runtime (bubblewrap, root) the
//! deployment has two services, so the update replaces more than one replica.

use crate::common;

use common::{free_port, http_get, Daemon};

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use pazar_api::provider::LeaseStatus;
use pazar_client::deploy::LeaseOutcome;
use pazar_runtime::demo_image::{build_demo_image, store_demo_rootfs};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::images::ImageStore;
use pazar_runtime::sandbox::{SandboxOptions, SandboxRuntime};
use pazar_runtime::{LeaseRef, Runtime};
use pazar_types::{BidId, DeploymentId};

const FIRST: &str = "pazar-demo:update-1";
const SECOND: &str = "pazar-demo:update-2";

/// The services of a deployment and the port each serves on (the demo image reads `PORT`).
const WEB: &[(&str, u16)] = &[("web", 8080)];
/// Two services: the sandbox runs a lease in one network namespace, where replicas of one
/// service cannot share a port, so more than one replica means more than one service.
const WEB_AND_API: &[(&str, u16)] = &[("web", 8080), ("api", 8081)];

/// What `pazar deployment update -o json` prints, the part read here.
#[derive(Debug, Deserialize)]
struct Updated {
    version: String,
    leases: Vec<LeaseOutcome>,
}

fn build_docker_images() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default()).await.expect("docker");
        for tag in [FIRST, SECOND] {
            build_demo_image(d.docker(), tag).await.expect("image");
        }
    });
}

/// Where the daemon runs workloads.
enum Backend<'a> {
    /// The local Docker engine (the daemon's `auto` choice where it answers).
    Docker,
    /// The sandbox runtime with its state and image store under this directory; images come
    /// from that store only.
    Sandbox(&'a Path),
}

/// The daemon on a free port, running the local demo images, advertising persistent storage.
fn provider(net: &common::Devnet, dir: &Path, backend: Backend) -> Daemon {
    let (runtime, table) = match backend {
        Backend::Docker => (String::new(), String::new()),
        Backend::Sandbox(at) => (
            "runtime = \"sandbox\"\n".to_string(),
            format!(
                "[sandbox]\ndir = {:?}\ndocker_images = false\n",
                at.to_str().expect("utf8")
            ),
        ),
    };
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "{runtime}listen = \"127.0.0.1:{}\"\n[attributes]\n\"capabilities/storage/1/class\" = \"beta2\"\n\
             \"capabilities/storage/1/persistent\" = \"true\"\n[images]\nallow_local = [\"pazar-demo:*\"]\n{table}",
            free_port()
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.join("provider.log")).expect("log");
    let daemon = Daemon(
        Command::new(common::bin())
            .args(["provider", "run", "--from", "provider", "--config"])
            .arg(&config)
            .arg("--home")
            .arg(net.home.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawns the daemon"),
    );
    let provider = net.address("provider");
    let t0 = Instant::now();
    while net.cli_raw(&["query", "provider", &provider], &[]).status.code() != Some(0) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the provider did not register: {}",
            std::fs::read_to_string(dir.join("provider.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon
}

/// `services` of the demo image with `GREETING`, each serving on its port and with a
/// persistent volume at /data.
fn sdl(dir: &Path, name: &str, image: &str, greeting: &str, cpu: &str, services: &[(&str, u16)]) -> PathBuf {
    let (mut svcs, mut compute, mut pricing, mut deployment) =
        (String::new(), String::new(), String::new(), String::new());
    for (svc, port) in services {
        svcs += &format!(
            r#"  {svc}:
    image: {image}
    env:
      - GREETING={greeting}
      - PORT={port}
    expose:
      - port: {port}
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data:
          mount: /data
"#
        );
        compute += &format!(
            r#"    {svc}:
      resources:
        cpu: {{units: {cpu}}}
        memory: {{size: 128Mi}}
        storage:
          - size: 256Mi
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
"#
        );
        pricing += &format!("        {svc}: {{denom: uusd, amount: 10000}}\n");
        deployment += &format!("  {svc}:\n    local: {{profile: {svc}, count: 1}}\n");
    }
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "version: \"2.0\"\nservices:\n{svcs}profiles:\n  compute:\n{compute}  placement:\n    local:\n      \
             pricing:\n{pricing}deployment:\n{deployment}"
        ),
    )
    .expect("sdl");
    path
}

fn docker_exec(container: &str, script: &str) -> std::process::Output {
    Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", script])
        .output()
        .expect("docker exec")
}

/// Closes the lease when dropped, so a failing assertion leaves no workload behind.
struct CloseOnDrop<'a> {
    net: &'a common::Devnet,
    lease: BidId,
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self
            .net
            .cli_raw(&["lease", "close", &self.lease.to_string(), "--from", "alice"], &[]);
    }
}

/// The URI of `service` in a lease's status.
fn uri_of(status: &LeaseStatus, service: &str) -> String {
    status
        .uris
        .iter()
        .find(|u| u.service == service)
        .unwrap_or_else(|| panic!("no URI for {service}: {status:?}"))
        .uri
        .clone()
}

/// Waits until `uri` serves a page containing `text` (the replica behind it may still be
/// replaced when the update's answer arrives).
fn serves(uri: &str, text: &str) {
    let t0 = Instant::now();
    loop {
        let page = http_get(uri);
        if page.contains(text) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{uri} does not serve {text:?}: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `pazar deployment update DSEQ FILE` of alice, which must succeed for the one lease; checks
/// that the ledger holds the version it printed.
fn update(net: &common::Devnet, lease: &BidId, dseq: u64, file: &Path) -> Updated {
    let updated: Updated = net.cli_as(&[
        "deployment",
        "update",
        &dseq.to_string(),
        file.to_str().expect("utf8"),
        "--from",
        "alice",
    ]);
    assert_eq!(updated.leases.len(), 1, "{updated:?}");
    let id = DeploymentId {
        owner: lease.owner,
        dseq,
    };
    let on_ledger = net.rpc().deployment(&id, false).expect("deployment").item;
    assert_eq!(hex::encode(on_ledger.deployment.version), updated.version);
    updated
}

/// The lease's status once the update answered: ready, and every service at `version` with
/// no update error.
fn runs_version(net: &common::Devnet, lease: &BidId, version: &str) -> LeaseStatus {
    let status = net.lease_status(lease, "alice");
    assert!(status.ready, "{status:?}");
    for s in &status.services {
        assert_eq!(s.version.as_deref(), Some(version), "{status:?}");
        assert_eq!(s.update_error, None, "{status:?}");
    }
    status
}

#[test]
fn an_update_serves_the_new_image_and_env_replica_by_replica_and_keeps_the_volume() {
    build_docker_images();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = provider(&net, dir.path(), Backend::Docker);

    let first = sdl(dir.path(), "v1.yaml", FIRST, "first-version", "0.5", WEB);
    let deployed = net.deploy(&[
        first.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "81",
        "--bid-window-s",
        "1",
    ]);
    let lease = deployed.lease().lease.clone();
    let _close = CloseOnDrop {
        net: &net,
        lease: lease.clone(),
    };
    assert!(http_get(&uri_of(&deployed.lease().status, "web")).contains("first-version"));

    // Data written to the persistent volume before the update.
    let container = format!("{}-web-0", LeaseRef::new(lease.clone()).name());
    let wrote = docker_exec(&container, "echo kept-across-updates > /data/mark");
    assert!(wrote.status.success(), "{wrote:?}");

    // Changing what was leased (here the CPU) is refused before anything is submitted: the
    // deployment's version on the ledger stays the first one.
    let bigger = sdl(dir.path(), "bigger.yaml", SECOND, "second-version", "1", WEB);
    let refused = net.cli_raw(
        &[
            "deployment",
            "update",
            "81",
            bigger.to_str().expect("utf8"),
            "--from",
            "alice",
        ],
        &[],
    );
    assert!(
        !refused.status.success(),
        "an update of the leased resources went through"
    );
    let text = String::from_utf8_lossy(&refused.stdout).to_string() + &String::from_utf8_lossy(&refused.stderr);
    assert!(text.contains("groups differ"), "{text}");
    let id = DeploymentId {
        owner: lease.owner,
        dseq: 81,
    };
    let on_ledger = net.rpc().deployment(&id, false).expect("deployment").item;
    assert_eq!(on_ledger.deployment.version, deployed.manifest().version());

    // The update: a new image tag and a new environment value.
    let second = sdl(dir.path(), "v2.yaml", SECOND, "second-version", "0.5", WEB);
    let updated = update(&net, &lease, 81, &second);
    let status = runs_version(&net, &lease, &updated.version);
    serves(&uri_of(&status, "web"), "second-version");
    let image = Command::new("docker")
        .args(["inspect", "--format", "{{.Config.Image}}", &container])
        .output()
        .expect("docker inspect");
    assert_eq!(String::from_utf8_lossy(&image.stdout).trim(), SECOND);
    let kept = docker_exec(&container, "cat /data/mark");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "kept-across-updates");

    drop(_close);
    drop(daemon);
}

/// The sandbox's options for a daemon configured with `Backend::Sandbox(dir)`.
fn sandbox_options(dir: &Path) -> SandboxOptions {
    let mut opts = SandboxOptions::new(dir);
    opts.docker_images = false;
    opts
}

/// Closes, once the daemon is gone, every lease left in a test's own sandbox directory (its
/// replicas outlive the daemon by design), so a test that fails midway leaves no processes,
/// namespaces, cgroups or mounted volumes behind. A test that passes closed its lease itself;
/// one found here is named on stderr.
struct SweepSandbox(PathBuf);

impl Drop for SweepSandbox {
    fn drop(&mut self) {
        let opts = sandbox_options(&self.0);
        let failed = std::thread::panicking();
        let work = move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let Ok(sandbox) = SandboxRuntime::new(opts) else {
                    return;
                };
                for (_, label) in sandbox.leases().await.unwrap_or_default() {
                    let Ok(id) = label.parse::<BidId>() else {
                        continue;
                    };
                    if !failed {
                        eprintln!("the test left lease {id} in its sandbox: removing it");
                    }
                    if let Err(e) = sandbox.close(&LeaseRef::new(id.clone())).await {
                        eprintln!("cannot remove lease {id} from the sandbox: {e}");
                    }
                }
            });
        };
        // A thread of its own: the drop may happen inside a panic, and within no runtime.
        let _ = std::thread::spawn(work).join();
    }
}

/// The root directory of replica 0 of `service` as its workload sees it: `/proc/PID/root` of a
/// process of the replica's cgroup that lives in another mount namespace than this test
/// (bubblewrap's, where the image's rootfs is `/` and the volumes are mounted).
fn sandbox_root(lease: &BidId, service: &str) -> PathBuf {
    let cg = pazar_runtime::sandbox::replica_cgroup(&LeaseRef::new(lease.clone()), service, 0).expect("a valid name");
    let ours = std::fs::read_link("/proc/self/ns/mnt").expect("this test's mount namespace");
    cg.pids()
        .into_iter()
        .find(|p| std::fs::read_link(format!("/proc/{p}/ns/mnt")).is_ok_and(|ns| ns != ours))
        .map(|p| PathBuf::from(format!("/proc/{p}/root")))
        .unwrap_or_else(|| panic!("no process of {service} runs in a sandbox"))
}

/// Whether `root` is the rootfs of `image` in `store`: the sandbox binds the store's rootfs
/// read-only at `/`, so the replica's files are the store's files (same device and inode).
fn runs_image(root: &Path, store: &ImageStore, image: &str) -> bool {
    let (rootfs, _) = store.get(image).expect("the image is in the store");
    let (a, b) = (
        std::fs::metadata(root.join("serve.sh")).expect("the replica's /serve.sh"),
        std::fs::metadata(rootfs.join("serve.sh")).expect("the image's /serve.sh"),
    );
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[test]
fn an_update_on_the_sandbox_runtime_replaces_every_replica_serves_the_new_image_and_env_and_keeps_the_volumes() {
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox_dir = dir.path().join("sandbox");
    let store = ImageStore::new(sandbox_options(&sandbox_dir).images);
    for tag in [FIRST, SECOND] {
        store_demo_rootfs(&store, tag).expect("the demo image in the sandbox's store");
    }
    let _sweep = SweepSandbox(sandbox_dir.clone());
    let daemon = provider(&net, dir.path(), Backend::Sandbox(&sandbox_dir));

    let first = sdl(dir.path(), "v1.yaml", FIRST, "first-version", "0.25", WEB_AND_API);
    let deployed = net.deploy(&[
        first.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "82",
        "--bid-window-s",
        "1",
    ]);
    let lease = deployed.lease().lease.clone();
    let _close = CloseOnDrop {
        net: &net,
        lease: lease.clone(),
    };
    for (svc, _) in WEB_AND_API {
        assert!(http_get(&uri_of(&deployed.lease().status, svc)).contains("first-version"));
        let root = sandbox_root(&lease, svc);
        assert!(runs_image(&root, &store, FIRST), "{svc} runs {FIRST}");
        // Data written to the persistent volume before the update, where the workload sees it.
        std::fs::write(root.join("data/mark"), format!("kept-across-updates by {svc}")).expect("writes the volume");
    }

    // The update: a new image tag and a new environment value for both services.
    let second = sdl(dir.path(), "v2.yaml", SECOND, "second-version", "0.25", WEB_AND_API);
    let updated = update(&net, &lease, 82, &second);
    let status = runs_version(&net, &lease, &updated.version);
    for (svc, _) in WEB_AND_API {
        let s = status.services.iter().find(|s| s.name == *svc).expect("the service");
        // Replaced, not restarted: the new replica started once and kept running.
        assert_eq!((s.running, s.restarts), (1, 0), "{status:?}");
        serves(&uri_of(&status, svc), "second-version");
        let root = sandbox_root(&lease, svc);
        assert!(runs_image(&root, &store, SECOND), "{svc} runs {SECOND}");
        let kept = std::fs::read_to_string(root.join("data/mark")).expect("the mark is readable");
        assert_eq!(kept, format!("kept-across-updates by {svc}"));
    }

    drop(_close);
    drop(daemon);
}
