//! Manifest updates on the real Docker engine and on the sandbox runtime: a running lease taken
//! to a new version one replica at a time (new env, new image tag), its persistent volume's data
//! kept, the version reported per service; an update whose new replica does not serve, or whose
//! image cannot be had, stops with the reason and leaves the earlier replicas serving.

use std::process::Command;
use std::time::{Duration, Instant};

use pazar_runtime::demo_image::{build_demo_image, store_demo_rootfs};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::images::ImagePolicy;
use pazar_runtime::sandbox::{host_volume_dir, replica_cgroup, SandboxOptions, SandboxRuntime};
use pazar_runtime::{GroupStatus, LeaseRef, Runtime};
use pazar_types::market::BidId;
use pazar_types::{Address, Denom, Hash32};

const V1_IMAGE: &str = "pazar-demo:rollout-1";
const V2_IMAGE: &str = "pazar-demo:rollout-2";

fn sdl(image: &str, service_extra: &str) -> String {
    format!(
        r#"
version: "2.0"
services:
  web:
    image: {image}
{service_extra}
    expose:
      - port: 8080
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data: {{mount: /data}}
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 0.25}}
        memory: {{size: 64Mi}}
        storage:
          - size: 128Mi
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local:
      pricing:
        web: {{denom: uusd, amount: 100}}
deployment:
  web:
    local: {{profile: web, count: 2}}
"#
    )
}

fn group(sdl: &str) -> pazar_sdl::ValidGroup {
    let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
    let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
    pazar_sdl::ValidGroup::new(d.manifest.groups.into_iter().next().expect("one group")).expect("a valid group")
}

fn lease() -> LeaseRef {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    LeaseRef::new(BidId {
        owner: Address::Native([41; 20]),
        dseq: nanos,
        gseq: 1,
        oseq: 1,
        provider: Address::Native([9; 20]),
    })
}

/// Closes the lease if the test stops early.
struct Closing<'a>(&'a LeaseRef);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        let names: Vec<String> = docker(&["ps", "-aq", "--filter", &format!("label=pazar.lease={}", self.0.name())])
            .lines()
            .map(str::to_string)
            .collect();
        for n in names {
            let _ = Command::new("docker").args(["rm", "-f", &n]).output();
        }
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn serving(rt: &impl Runtime, l: &LeaseRef, g: &pazar_sdl::ValidGroup) -> GroupStatus {
    let t0 = Instant::now();
    loop {
        let st = rt.status(l, g).await.expect("status");
        if st.all_running() {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not serving: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The page served on a host port.
fn page(host_port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", host_port)).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("asks");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answers");
    out
}

/// The page each replica of the first service serves, through its host port.
fn pages(st: &GroupStatus) -> Vec<String> {
    st.services[0].forwards.iter().map(|f| page(f.host_port)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_replaces_each_replica_keeps_the_volume_and_stops_with_the_reason_when_it_cannot_serve() {
    let mut rt = DockerRuntime::connect(DockerOptions {
        images: pazar_runtime::images::ImagePolicy::allowing(["pazar-demo:*"]).expect("a valid policy"),
        ..DockerOptions::default()
    })
    .await
    .expect("this machine has a Docker engine");
    for tag in [V1_IMAGE, V2_IMAGE] {
        build_demo_image(rt.docker(), tag).await.expect("builds the demo image");
    }
    rt.set_ready_wait(Duration::from_secs(10));
    let l = lease();
    let _closing = Closing(&l);
    let (v1, v2, v3, v4): (Hash32, Hash32, Hash32, Hash32) = ([1; 32], [2; 32], [3; 32], [4; 32]);

    let g1 = group(&sdl(V1_IMAGE, "    env: [GREETING=first-version]"));
    rt.deploy_version(&l, &g1, &v1).await.expect("v1 deploys");
    let st = serving(&rt, &l, &g1).await;
    assert_eq!(st.services[0].version.as_deref(), Some(hex::encode(v1).as_str()));
    assert!(pages(&st).iter().all(|p| p.contains("first-version")), "{st:?}");
    let replica0 = format!("{}-web-0", l.name());
    docker(&["exec", &replica0, "/bin/sh", "-c", "echo written-by-v1 > /data/kept"]);

    // v2: another image tag and another env value.
    let g2 = group(&sdl(V2_IMAGE, "    env: [GREETING=second-version]"));
    rt.deploy_version(&l, &g2, &v2).await.expect("v2 rolls out");
    let st = serving(&rt, &l, &g2).await;
    assert_eq!(
        st.services[0].version.as_deref(),
        Some(hex::encode(v2).as_str()),
        "{st:?}"
    );
    assert!(pages(&st).iter().all(|p| p.contains("second-version")), "{st:?}");
    for r in 0..2 {
        let name = format!("{}-web-{r}", l.name());
        let image = docker(&["inspect", "-f", "{{.Config.Image}}", &name]);
        assert_eq!(image, V2_IMAGE, "replica {r} runs the new tag");
    }
    let kept = docker(&["exec", &replica0, "/bin/busybox", "cat", "/data/kept"]);
    assert_eq!(kept, "written-by-v1", "the persistent volume survived the update");

    // v3's replica exits at once: the update stops at replica 0, which v2 still serves.
    let g3 = group(&sdl(
        V2_IMAGE,
        "    command: [/bin/sh, -c]\n    args: [\"exit 3\"]\n    env: [GREETING=third-version]",
    ));
    let err = rt
        .deploy_version(&l, &g3, &v3)
        .await
        .expect_err("v3 does not serve")
        .to_string();
    assert!(
        err.contains("replica 0 of \"web\" of version 030303030303 did not serve within 10 s"),
        "{err}"
    );
    let st = serving(&rt, &l, &g2).await;
    assert_eq!(
        st.services[0].version.as_deref(),
        Some(hex::encode(v2).as_str()),
        "{st:?}"
    );
    assert!(pages(&st).iter().all(|p| p.contains("second-version")), "{st:?}");
    let names = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("label=pazar.lease={}", l.name()),
    ]);
    assert!(!names.contains("-next"), "no new replica is left behind: {names}");

    // v4's image cannot be had (a registry that does not answer): nothing changes.
    let g4 = group(&sdl(
        "localhost:1/pazar-demo:missing",
        "    env: [GREETING=fourth-version]",
    ));
    let err = rt.deploy_version(&l, &g4, &v4).await.expect_err("no image").to_string();
    assert!(err.contains("localhost:1/pazar-demo:missing"), "{err}");
    let st = serving(&rt, &l, &g2).await;
    assert_eq!(
        st.services[0].version.as_deref(),
        Some(hex::encode(v2).as_str()),
        "{st:?}"
    );

    // Putting v2 back (what the provider does after a failed update) changes nothing that runs.
    let before = docker(&["inspect", "-f", "{{.Id}}", &replica0]);
    rt.deploy_version(&l, &g2, &v2).await.expect("v2 again");
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &replica0]),
        before,
        "an unchanged replica keeps running"
    );

    // A version whose manifest leaves this group as it is keeps every replica; a runtime that
    // starts afresh (the daemon restarted) knows which version they run once the daemon
    // restores the lease with its version, although their labels name the one they were made for.
    let v5: Hash32 = [5; 32];
    rt.deploy_version(&l, &g2, &v5).await.expect("v5 keeps the replicas");
    assert_eq!(docker(&["inspect", "-f", "{{.Id}}", &replica0]), before);
    let st = serving(&rt, &l, &g2).await;
    assert_eq!(st.services[0].version.as_deref(), Some(hex::encode(v5).as_str()));
    let restarted = DockerRuntime::connect(DockerOptions {
        images: pazar_runtime::images::ImagePolicy::allowing(["pazar-demo:*"]).expect("a valid policy"),
        ..DockerOptions::default()
    })
    .await
    .expect("connects again");
    restarted.deploy_version(&l, &g2, &v5).await.expect("restores v5");
    assert_eq!(
        docker(&["inspect", "-f", "{{.Id}}", &replica0]),
        before,
        "restoring replaces nothing"
    );
    let st = serving(&restarted, &l, &g2).await;
    assert_eq!(
        st.services[0].version.as_deref(),
        Some(hex::encode(v5).as_str()),
        "{st:?}"
    );

    rt.close(&l).await.expect("closes");
}

/// Two services of the demo image, `web` on 8080 and `api` on 8081, one replica each with a
/// persistent volume at /data, `web_extra` and `api_extra` added to each (the sandbox runs a
/// lease in one network namespace, so more than one replica means more than one service).
fn two_services(image: &str, web_extra: &str, api_extra: &str) -> String {
    let service = |name: &str, port: u16, extra: &str| {
        format!(
            r#"  {name}:
    image: {image}
{extra}
    expose:
      - port: {port}
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data: {{mount: /data}}
"#
        )
    };
    let profile = |name: &str| {
        format!(
            r#"    {name}:
      resources:
        cpu: {{units: 0.1}}
        memory: {{size: 64Mi}}
        storage:
          - size: 32Mi
          - name: data
            size: 32Mi
            attributes: {{persistent: true, class: beta2}}
"#
        )
    };
    format!(
        "version: \"2.0\"\nservices:\n{}{}profiles:\n  compute:\n{}{}  placement:\n    local:\n      pricing:\n        \
         web: {{denom: uusd, amount: 100}}\n        api: {{denom: uusd, amount: 100}}\ndeployment:\n  web:\n    \
         local: {{profile: web, count: 1}}\n  api:\n    local: {{profile: api, count: 1}}\n",
        service("web", 8080, web_extra),
        service("api", 8081, api_extra),
        profile("web"),
        profile("api"),
    )
}

fn sandbox_options(dir: &std::path::Path) -> SandboxOptions {
    let mut opts = SandboxOptions::new(dir);
    opts.docker_images = false;
    opts.local_images = ImagePolicy::allowing(["pazar-demo:*"]).expect("a valid policy");
    opts
}

/// Closes the lease in the sandbox if the test stops early: its replicas outlive the runtime
/// that started them, and its volumes stay mounted until closed.
struct SandboxClosing<'a>(&'a std::path::Path, &'a LeaseRef);

impl Drop for SandboxClosing<'_> {
    fn drop(&mut self) {
        let (opts, l) = (sandbox_options(self.0), self.1.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(sandbox) = SandboxRuntime::new(opts) {
                    let _ = sandbox.close(&l).await;
                }
            })
        })
        .join();
    }
}

/// The host port of `service`'s one forward.
fn host_port(st: &GroupStatus, service: &str) -> u16 {
    let s = st.services.iter().find(|s| s.name == service).expect("the service");
    s.forwards[0].host_port
}

fn version_of(st: &GroupStatus, service: &str) -> Option<String> {
    st.services
        .iter()
        .find(|s| s.name == service)
        .expect("the service")
        .version
        .clone()
}

/// The sandbox cannot start a new replica beside the old one (one network namespace per lease),
/// so it stops the old one and starts the new one, one replica at a time, in the group's order:
/// each waits until the one before it serves. So when a new replica cannot serve, the update
/// stops there and the replicas after it still run the earlier version, untouched; putting the
/// earlier version back (what the provider does) replaces only the replica that changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_sandbox_an_update_replaces_one_replica_at_a_time_and_stops_at_the_first_that_cannot_serve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rt = SandboxRuntime::new(sandbox_options(dir.path()))
        .expect("this machine runs the sandbox (root, bubblewrap, iproute2)");
    for tag in [V1_IMAGE, V2_IMAGE] {
        store_demo_rootfs(rt.images(), tag).expect("the demo image in the sandbox's store");
    }
    // Long enough for a loaded machine to start a replica that serves; one that exits is
    // reported with its exit (even if started again since) when the window ends.
    rt.set_ready_wait(Duration::from_secs(10));
    let l = lease();
    let _closing = SandboxClosing(dir.path(), &l);
    let (v1, v2, v3): (Hash32, Hash32, Hash32) = ([1; 32], [2; 32], [3; 32]);
    let pids = |svc: &str| replica_cgroup(&l, svc, 0).expect("a valid name").pids();
    // Processes then and now overlap (one forked for a request may have come or gone; a
    // replaced replica would have none of them left).
    let same_processes = |then: &[i32], now: Vec<i32>| then.iter().any(|p| now.contains(p));
    let env = |greeting: &str, port: u16| format!("    env: [GREETING={greeting}, PORT={port}]");

    let g1 = group(&two_services(
        V1_IMAGE,
        &env("first-version", 8080),
        &env("first-version", 8081),
    ));
    rt.deploy_version(&l, &g1, &v1).await.expect("v1 deploys");
    let st = serving(&rt, &l, &g1).await;
    for svc in ["web", "api"] {
        assert_eq!(version_of(&st, svc), Some(hex::encode(v1)), "{st:?}");
        assert!(page(host_port(&st, svc)).contains("first-version"), "{st:?}");
        let volume = host_volume_dir(dir.path(), &l, svc, "data").expect("valid names");
        std::fs::write(volume.join("kept"), format!("written by {svc} v1")).expect("writes the volume");
    }

    // v2: another image tag and another env value for both services.
    let g2 = group(&two_services(
        V2_IMAGE,
        &env("second-version", 8080),
        &env("second-version", 8081),
    ));
    rt.deploy_version(&l, &g2, &v2).await.expect("v2 rolls out");
    let st = serving(&rt, &l, &g2).await;
    for svc in ["web", "api"] {
        let s = st.services.iter().find(|s| s.name == svc).expect("the service");
        assert_eq!(s.version, Some(hex::encode(v2)), "{st:?}");
        assert_eq!(s.restarts, 0, "replaced, not restarted: {st:?}");
        assert!(page(s.forwards[0].host_port).contains("second-version"), "{st:?}");
        let volume = host_volume_dir(dir.path(), &l, svc, "data").expect("valid names");
        let kept = std::fs::read_to_string(volume.join("kept")).expect("the file is still there");
        assert_eq!(
            kept,
            format!("written by {svc} v1"),
            "the persistent volume survived the update"
        );
    }
    let web_pids = pids("web");
    assert!(!web_pids.is_empty(), "web runs in its cgroup");

    // v3 changes both services, and api's new replica exits at once. The group lists its
    // services by name, so api's replica is the first replaced: the update stops there, and
    // web's, after it, still runs v2 as it did.
    let g3 = group(&two_services(
        V2_IMAGE,
        &env("third-version", 8080),
        "    command: [/bin/sh, -c]\n    args: [\"exit 3\"]\n    env: [GREETING=third-version, PORT=8081]",
    ));
    assert_eq!(g3.services[0].name, "api", "api comes first in the group");
    let err = rt
        .deploy_version(&l, &g3, &v3)
        .await
        .expect_err("v3 does not serve")
        .to_string();
    assert!(
        err.contains("replica 0 of \"api\" of version 030303030303 did not serve within 10 s (exited with code 3)"),
        "{err}"
    );
    let st = rt.status(&l, &g3).await.expect("status");
    assert_eq!(version_of(&st, "web"), Some(hex::encode(v2)), "{st:?}");
    assert!(
        same_processes(&web_pids, pids("web")),
        "the replica after the failed one was not touched"
    );
    assert!(page(host_port(&st, "web")).contains("second-version"), "{st:?}");

    // Putting v2 back (what the provider does) brings api back and leaves web running as it is.
    rt.deploy_version(&l, &g2, &v2).await.expect("v2 again");
    let st = serving(&rt, &l, &g2).await;
    for svc in ["web", "api"] {
        assert_eq!(version_of(&st, svc), Some(hex::encode(v2)), "{st:?}");
        assert!(page(host_port(&st, svc)).contains("second-version"), "{st:?}");
    }
    assert!(
        same_processes(&web_pids, pids("web")),
        "an unchanged replica keeps running"
    );
    let volume = host_volume_dir(dir.path(), &l, "api", "data").expect("valid names");
    assert_eq!(
        std::fs::read_to_string(volume.join("kept")).expect("the file is still there"),
        "written by api v1"
    );

    rt.close(&l).await.expect("closes");
    assert!(
        pids("web").is_empty() && pids("api").is_empty(),
        "nothing of the lease runs"
    );
}
