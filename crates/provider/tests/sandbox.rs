//! The sandbox runtime on this machine's kernel (bubblewrap, cgroups, network namespaces; it
//! needs root, as the daemon that runs it): the demo rootfs is deployed from a real SDL, serves
//! HTTP through its forwarded port, logs, is restarted when it dies, is adopted by a new
//! runtime after a daemon restart, and closing leaves no process, namespace, cgroup or file.
//! From inside a workload: no capabilities, no host files, no way out of its namespace, and
//! bounded processes, memory and storage.

use std::path::Path;
use std::time::{Duration, Instant};

mod common;

use futures_util::StreamExt;

use common::{http_get, lease, log_text, wait_status};
use pazar_provider::image::store_demo_rootfs;
use pazar_provider::runtime::cgroup::Cgroup;
use pazar_provider::runtime::sandbox::{remove_lease_processes, SandboxOptions, SandboxRuntime};
use pazar_provider::runtime::{netns, LeaseRef, LeaseStatus, Runtime, RuntimeError};

const IMAGE: &str = "pazar-demo:sandbox";

fn runtime(dir: &Path) -> SandboxRuntime {
    let mut opts = SandboxOptions::new(dir);
    opts.docker_images = false;
    // The store's images are local: tenants may run only those the operator allows.
    opts.local_images = pazar_provider::runtime::images::ImagePolicy::allowing(["pazar-demo:*", "nowhere/nothing:*"])
        .expect("a valid policy");
    let rt = SandboxRuntime::new(opts).expect("this machine runs the sandbox (root, bubblewrap, iproute2)");
    store_demo_rootfs(rt.images(), IMAGE).expect("demo rootfs");
    rt
}

fn sdl(service: &str, extra: &str, memory: &str, storage: &str) -> String {
    format!(
        r#"
version: "2.0"
services:
  {service}:
    image: {IMAGE}
    env: [GREETING=hello-from-the-sandbox]
{extra}
profiles:
  compute:
    {service}:
      resources:
        cpu: {{units: 0.25}}
        memory: {{size: {memory}}}
        storage:
          - size: {storage}
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local:
      pricing:
        {service}: {{denom: uusd, amount: 100}}
deployment:
  {service}:
    local: {{profile: {service}, count: 1}}
"#
    )
}

const WEB: &str = r#"    expose:
      - port: 8080
        as: 80
        to: [{global: true}]
    params:
      storage:
        data: {mount: /data}"#;

/// Kills what a lease left if the test fails before closing it.
struct Cleanup(Vec<LeaseRef>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for l in &self.0 {
            remove_lease_processes(&l.name());
            let _ = netns::delete(&l.name());
        }
    }
}

fn replica_cgroup(l: &LeaseRef, svc: &str) -> Cgroup {
    Cgroup::at(&format!("pazar/{}/{svc}-0", l.name()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_lease_serves_logs_restarts_is_adopted_and_closes_without_leftovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(31);
    let _cleanup = Cleanup(vec![l.clone()]);
    let g = common::group(&sdl("web", WEB, "64Mi", "64Mi"));
    rt.deploy(&l, &g).await.expect("deploys");
    rt.deploy(&l, &g).await.expect("deploying again keeps what runs");
    let st = wait_status(&rt, &l, &g, LeaseStatus::all_running).await;
    let port = st.services[0].forwards[0].host_port;
    let page = http_get(port).expect("the service answers on its forwarded port");
    assert!(page.contains("hello-from-the-sandbox"), "{page}");

    let text = log_text(&rt, &l).await;
    assert!(text.contains("serving on :8080 as web"), "{text}");

    // Kill the workload: it is started again, its restart counted, its log kept.
    let pids = replica_cgroup(&l, "web").pids();
    assert!(!pids.is_empty(), "the replica runs in its cgroup");
    replica_cgroup(&l, "web").kill_and_remove();
    let st = wait_status(&rt, &l, &g, |s| s.all_running() && s.services[0].restarts == 1).await;
    assert_eq!(st.services[0].forwards[0].host_port, port);
    assert!(http_get(port).expect("serves again").contains("hello"));
    let text = log_text(&rt, &l).await;
    assert_eq!(text.matches("serving on :8080").count(), 2, "{text}");

    // A new runtime on the same directory (the daemon restarted) adopts the running replica.
    drop(rt);
    let rt = runtime(dir.path());
    rt.deploy(&l, &g).await.expect("adopts");
    let st = wait_status(&rt, &l, &g, LeaseStatus::all_running).await;
    assert_eq!(st.services[0].restarts, 1, "adopted, not restarted: {st:?}");
    assert_eq!(
        st.services[0].forwards[0].host_port, port,
        "same port after the restart"
    );
    assert!(http_get(port).expect("serves after the restart").contains("hello"));

    // Follow mode streams lines as they are written.
    let mut follow = rt.logs(&l, Some("web"), 0, true).await.expect("follow");
    http_get(port).expect("a request to log");
    let line = tokio::time::timeout(Duration::from_secs(10), follow.next())
        .await
        .expect("a followed line")
        .expect("stream open")
        .expect("line");
    assert_eq!(line.service, "web");

    assert!(rt.leases().await.expect("list").iter().any(|(n, _)| *n == l.name()));
    rt.close(&l).await.expect("closes");
    assert!(!rt.leases().await.expect("list").iter().any(|(n, _)| *n == l.name()));
    assert!(!netns::exists(&l.name()), "network namespace removed");
    assert!(replica_cgroup(&l, "web").pids().is_empty(), "no process left");
    assert!(!dir.path().join("leases").join(l.name()).exists(), "no files left");
    let volume_files = std::fs::read_dir(dir.path().join("volume-files"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&l.name()))
        .count();
    assert_eq!(volume_files, 0, "the volume's filesystem is deleted");
    assert!(http_get(port).is_err(), "the port is closed");
    rt.close(&l).await.expect("closing twice is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_and_shapes_one_namespace_cannot_run_are_refused_with_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(32);
    let _cleanup = Cleanup(vec![l.clone()]);
    let g = common::group(&sdl("web", WEB, "64Mi", "64Mi").replace(IMAGE, "nowhere/nothing:1"));
    match rt.deploy(&l, &g).await {
        Err(RuntimeError::Image { image, reason }) => {
            assert_eq!(image, "nowhere/nothing:1");
            assert!(reason.contains("nowhere+nothing:1/rootfs"), "{reason}");
        }
        other => panic!("expected an image error, got {other:?}"),
    }
    let two = sdl("web", WEB, "64Mi", "64Mi").replace("count: 1", "count: 2");
    let err = rt
        .deploy(&l, &common::group(&two))
        .await
        .expect_err("two replicas on one port");
    assert!(err.to_string().contains("one network namespace"), "{err}");
    assert!(!netns::exists(&l.name()), "nothing made for a refused lease");
}

/// The probe a workload runs on itself; each line is one fact the test checks.
const PROBE: &str = r#"
echo "caps $(grep CapEff /proc/self/status)"
echo "nnp $(grep NoNewPrivs /proc/self/status)"
[ -e /var/run/docker.sock ] || [ -e /run/docker.sock ] || echo "no-docker-socket"
[ -e /etc/passwd ] || [ -e /root ] || [ -e /usr ] || echo "no-host-files"
nc -w 2 127.0.0.1 $DAEMON_PORT </dev/null && echo "reached-daemon" || echo "daemon-unreachable"
nc -w 2 $HOST_IP $DAEMON_PORT </dev/null && echo "reached-host" || echo "host-unreachable"
nc -w 2 127.0.0.1 $OTHER_PORT </dev/null && echo "reached-other-lease" || echo "other-lease-unreachable"
dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>/dev/null; echo "tmp-filled $(($(wc -c < /tmp/fill) / 1048576))"
rm -f /tmp/fill
dd if=/dev/zero of=/data/fill bs=1M count=100 2>/dev/null; echo "data-filled $(($(wc -c < /data/fill) / 1048576))"
dd if=/dev/zero of=/dev/null bs=200M count=1 2>/dev/null; echo "big-alloc-exit $?"
( i=0; while [ $i -lt 600 ]; do sleep 60 & i=$((i+1)); echo $i > /tmp/forks; done ) 2>/dev/null
kill -9 -1 2>/dev/null
read forks < /tmp/forks; echo "forks $forks"
echo probe-done
sleep 3600
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_workload_has_no_privileges_no_host_files_no_way_out_and_bounded_resources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    // Something of the host's (the daemon's port) and another lease to try to reach.
    let daemon = std::net::TcpListener::bind("0.0.0.0:0").expect("listener");
    let daemon_port = daemon.local_addr().expect("addr").port();
    let host_ip = local_ip();
    let other = lease(33);
    let l = lease(34);
    let _cleanup = Cleanup(vec![l.clone(), other.clone()]);
    let og = common::group(&sdl("web", WEB, "64Mi", "64Mi"));
    rt.deploy(&other, &og).await.expect("other lease");
    let ost = wait_status(&rt, &other, &og, LeaseStatus::all_running).await;
    let other_port = ost.services[0].forwards[0].host_port;

    let probe = PROBE.replace('\n', "\n        ");
    let extra = format!(
        "    env: [DAEMON_PORT={daemon_port}, OTHER_PORT={other_port}, HOST_IP={host_ip}]\n    command: [/bin/sh, -c]\n    args:\n      - |\n        {probe}\n    params:\n      storage:\n        data: {{mount: /data}}"
    );
    let text = sdl("probe", &extra, "128Mi", "32Mi").replace("    env: [GREETING=hello-from-the-sandbox]\n", "");
    let g = common::group(&text);
    rt.deploy(&l, &g).await.expect("deploys the probe");
    let t0 = Instant::now();
    let out = loop {
        let out = log_text(&rt, &l).await;
        if out.contains("probe-done") {
            break out;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the probe did not finish: {out}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(out.contains("caps CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("nnp NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("no-docker-socket"), "{out}");
    assert!(out.contains("no-host-files"), "{out}");
    assert!(out.contains("daemon-unreachable"), "{out}");
    assert!(out.contains("host-unreachable"), "{out}");
    assert!(out.contains("other-lease-unreachable"), "{out}");
    let filled: u64 = field(&out, "tmp-filled");
    assert!(
        filled <= 32,
        "/tmp is bounded by the ephemeral storage (32Mi): wrote {filled} MiB\n{out}"
    );
    let data: u64 = field(&out, "data-filled");
    assert!(
        (64..100).contains(&data),
        "the persistent volume holds what was leased (64Mi) and no more: wrote {data} MiB\n{out}"
    );
    let alloc: u64 = field(&out, "big-alloc-exit");
    assert_ne!(alloc, 0, "200 MiB in a 128Mi replica is refused or killed\n{out}");
    let forks: u64 = field(&out, "forks");
    assert!(forks < 512, "processes are bounded (512): {forks} started\n{out}");
    rt.close(&l).await.expect("close");
    rt.close(&other).await.expect("close");
    drop(daemon);
}

fn field(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{out}"))
}

/// An address of this host that is not loopback (the default route's source).
fn local_ip() -> String {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").expect("udp");
    match s.connect("192.0.2.1:9") {
        Ok(()) => s
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "10.0.0.1".into()),
        Err(_) => "10.0.0.1".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_crashes_in_a_loop_is_restarted_with_backoff_and_says_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(35);
    let _cleanup = Cleanup(vec![l.clone()]);
    let extra = "    command: [/bin/sh, -c]\n    args: ['echo boom; exit 3']";
    let g = common::group(&sdl("crash", extra, "64Mi", "64Mi"));
    rt.deploy(&l, &g).await.expect("deploys");
    // Caught between two runs (a run lasts a moment; the backoff grows to seconds).
    let st = wait_status(&rt, &l, &g, |s| {
        s.services[0].restarts >= 2 && s.services[0].running == 0
    })
    .await;
    let svc = &st.services[0];
    assert!(["restarting", "exited"].contains(&svc.state.as_str()), "{svc:?}");
    assert_eq!(svc.last_error.as_deref(), Some("exited with code 3"), "{svc:?}");
    let text = log_text(&rt, &l).await;
    assert!(text.matches("boom").count() >= 2, "every run's output is kept: {text}");
    rt.close(&l).await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_missing_from_the_store_is_exported_from_the_local_docker_engine() {
    let docker = common::docker().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = pazar_provider::runtime::images::ImageStore::new(dir.path());
    assert!(store.get(common::IMAGE).is_none());
    store
        .import_from_docker(docker.docker(), common::IMAGE)
        .await
        .expect("exported from Docker");
    let (rootfs, config) = store.get(common::IMAGE).expect("in the store now");
    assert!(rootfs.join("bin/busybox").is_file(), "the image's files");
    assert_eq!(config.entrypoint, ["/bin/sh", "/serve.sh"], "the image's entrypoint");
    let left = docker
        .docker()
        .inspect_container(&format!("pz-export-{}", std::process::id()), None)
        .await;
    assert!(left.is_err(), "the export container is removed");
}
