//! `pazar deployment update` with the real binaries (devnet, `pazar provider run`, Docker): a
//! running deployment gets a new image tag and a new environment value; the provider replaces
//! its replicas one by one, the new version serves, the lease status reports that version, and
//! a file written to the persistent volume before the update is still there after it. An update
//! that would change what was leased is refused before anything reaches the ledger.

mod common;

use common::{free_port, http_get, Daemon};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;

use pazar_api::provider::LeaseStatus;
use pazar_client::deploy::LeaseOutcome;
use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::LeaseRef;
use pazar_types::DeploymentId;

const FIRST: &str = "pazar-demo:update-1";
const SECOND: &str = "pazar-demo:update-2";

/// What `pazar deployment update -o json` prints, the part read here.
#[derive(Debug, Deserialize)]
struct Updated {
    version: String,
    leases: Vec<LeaseOutcome>,
}

fn build_images() {
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

/// The daemon on a free port, running the local demo images, advertising persistent storage.
fn provider(net: &common::Devnet, dir: &Path) -> Daemon {
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\n[attributes]\n\"capabilities/storage/1/class\" = \"beta2\"\n\
             \"capabilities/storage/1/persistent\" = \"true\"\n[images]\nallow_local = [\"pazar-demo:*\"]\n",
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

/// One service of the demo image with `GREETING` and a persistent volume at /data.
fn sdl(dir: &Path, name: &str, image: &str, greeting: &str, cpu: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            r#"version: "2.0"
services:
  web:
    image: {image}
    env:
      - GREETING={greeting}
    expose:
      - port: 8080
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data:
          mount: /data
profiles:
  compute:
    web:
      resources:
        cpu: {{units: {cpu}}}
        memory: {{size: 128Mi}}
        storage:
          - size: 256Mi
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local:
      pricing:
        web: {{denom: uusd, amount: 10000}}
deployment:
  web:
    local: {{profile: web, count: 1}}
"#
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
    lease: pazar_types::BidId,
}

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self
            .net
            .cli_raw(&["lease", "close", &self.lease.to_string(), "--from", "alice"], &[]);
    }
}

#[test]
fn an_update_serves_the_new_image_and_env_replica_by_replica_and_keeps_the_volume() {
    build_images();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = provider(&net, dir.path());

    let first = sdl(dir.path(), "v1.yaml", FIRST, "first-version", "0.5");
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
    let uri = deployed.lease().status.uris.first().expect("a URI").uri.clone();
    assert!(http_get(&uri).contains("first-version"));

    // Data written to the persistent volume before the update.
    let container = format!("{}-web-0", LeaseRef::new(lease.clone()).name());
    let wrote = docker_exec(&container, "echo kept-across-updates > /data/mark");
    assert!(wrote.status.success(), "{wrote:?}");

    // Changing what was leased (here the CPU) is refused before anything is submitted: the
    // deployment's version on the ledger stays the first one.
    let bigger = sdl(dir.path(), "bigger.yaml", SECOND, "second-version", "1");
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
    let second = sdl(dir.path(), "v2.yaml", SECOND, "second-version", "0.5");
    let updated: Updated = net.cli_as(&[
        "deployment",
        "update",
        "81",
        second.to_str().expect("utf8"),
        "--from",
        "alice",
    ]);
    assert_eq!(updated.leases.len(), 1, "{updated:?}");
    let on_ledger = net.rpc().deployment(&id, false).expect("deployment").item;
    assert_eq!(hex::encode(on_ledger.deployment.version), updated.version);

    let status: LeaseStatus = net.lease_status(&lease, "alice");
    assert!(status.ready, "{status:?}");
    for s in &status.services {
        assert_eq!(s.version.as_deref(), Some(updated.version.as_str()), "{status:?}");
        assert_eq!(s.update_error, None, "{status:?}");
    }
    let uri = status.uris.first().expect("a URI").uri.clone();
    let t0 = Instant::now();
    loop {
        let page = http_get(&uri);
        if page.contains("second-version") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the new version does not serve: {page}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
