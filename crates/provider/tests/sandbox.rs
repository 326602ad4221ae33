//! The sandbox runtime on this machine's kernel (bubblewrap, cgroups, network namespaces; it
//! needs root, as the daemon that runs it): the demo rootfs is deployed from a real SDL, serves
//! HTTP through its forwarded port, logs, is restarted when it dies, is adopted by a new
//! runtime after a daemon restart, and closing leaves no process, namespace, cgroup or file.
//! From inside a workload: no capabilities, no host files, no way out of its namespace, and
//! bounded processes, memory and storage.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use futures_util::StreamExt;

use common::{http_get, lease, log_text, wait_status};
use pazar_api::provider::ServiceState;
use pazar_runtime::cgroup::Cgroup;
use pazar_runtime::demo_image::store_demo_rootfs;
use pazar_runtime::sandbox::{remove_lease_processes, LeaseKey, SandboxOptions, SandboxRuntime};
use pazar_runtime::{netns, GroupStatus, LeaseRef, Runtime, RuntimeError};

const IMAGE: &str = "pazar-demo:sandbox";

fn runtime(dir: &Path) -> SandboxRuntime {
    let mut opts = SandboxOptions::new(dir);
    opts.docker_images = false;
    // The store's images are local: tenants may run only those the operator allows.
    opts.local_images =
        pazar_runtime::images::ImagePolicy::allowing(["pazar-demo:*", "nowhere/nothing:*"]).expect("a valid policy");
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
            remove_lease_processes(l);
            let _ = netns::delete(key(l).as_str());
        }
    }
}

fn replica_cgroup(l: &LeaseRef, svc: &str) -> Cgroup {
    pazar_runtime::sandbox::replica_cgroup(l, svc, 0).expect("a valid service name")
}

fn key(l: &LeaseRef) -> LeaseKey {
    LeaseKey::of(l)
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
    let st = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
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
    let st = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
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
    assert!(!netns::exists(key(&l).as_str()), "network namespace removed");
    assert!(replica_cgroup(&l, "web").pids().is_empty(), "no process left");
    assert!(
        !dir.path().join("leases").join(key(&l).as_str()).exists(),
        "no files left"
    );
    let volume_files = std::fs::read_dir(dir.path().join("volume-files"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(key(&l).as_str()))
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
    assert!(!netns::exists(key(&l).as_str()), "nothing made for a refused lease");
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
    let ost = wait_status(&rt, &other, &og, GroupStatus::all_running).await;
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
    assert!(
        [ServiceState::Restarting, ServiceState::Exited].contains(&svc.state),
        "{svc:?}"
    );
    assert_eq!(svc.last_error.as_deref(), Some("exited with code 3"), "{svc:?}");
    let text = log_text(&rt, &l).await;
    assert!(text.matches("boom").count() >= 2, "every run's output is kept: {text}");
    rt.close(&l).await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_missing_from_the_store_is_exported_from_the_local_docker_engine() {
    let docker = common::docker().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = pazar_runtime::images::ImageStore::new(dir.path());
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

/// Every path under `dir`, to show that a refused deploy made nothing.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

/// Hand-written manifests, as a tenant would send them if the provider's boundary let them
/// through: names that would leave the lease's directory, reach another volume's file, inject a
/// line into `/etc/hosts` or a cgroup path, mount points over the sandbox's own filesystems or
/// out of the image, and an environment bubblewrap cannot carry. Each is refused with its
/// reason before the runtime makes anything on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_mount_points_that_would_leave_the_lease_are_refused_before_the_host_is_touched() {
    use pazar_sdl::manifest::Service;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(36);
    let _cleanup = Cleanup(vec![l.clone()]);
    let base = common::group(&sdl("web", WEB, "64Mi", "64Mi"));
    let rename_volume = |to: &'static str| {
        move |s: &mut Service| {
            s.storage[0].name = to.into();
            for v in s.resources.storage.iter_mut().filter(|v| v.name == "data") {
                v.name = to.into();
            }
        }
    };
    type Edit = Box<dyn Fn(&mut Service)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "a service name that climbs out of the lease directory",
            Box::new(|s| s.name = "../../../outside".into()),
            "service name \"../../../outside\" cannot name anything on the host",
        ),
        (
            "a service name that adds a line to /etc/hosts",
            Box::new(|s| s.name = "web\n10.0.0.1 bank".into()),
            "cannot name anything on the host",
        ),
        (
            "a service name with a cgroup path in it",
            Box::new(|s| s.name = "web/cgroup.procs".into()),
            "cannot name anything on the host",
        ),
        (
            "an upper-case service name",
            Box::new(|s| s.name = "Web".into()),
            "cannot name anything on the host",
        ),
        (
            "a volume name that climbs to another lease's volume file",
            Box::new(rename_volume("../../../volume-files/victim")),
            "volume name \"../../../volume-files/victim\" cannot name anything on the host",
        ),
        (
            "a volume name with a slash",
            Box::new(rename_volume("a/b")),
            "cannot name anything on the host",
        ),
        (
            "a mount point that climbs out of the image",
            Box::new(|s| s.storage[0].mount = "/data/../../../etc".into()),
            "mount point \"/data/../../../etc\" is refused",
        ),
        (
            "a mount point over /proc",
            Box::new(|s| s.storage[0].mount = "/proc/sys".into()),
            "the sandbox mounts its own filesystem there",
        ),
        (
            "a mount point over /etc/hosts",
            Box::new(|s| s.storage[0].mount = "/etc/hosts".into()),
            "the sandbox mounts its own filesystem there",
        ),
        (
            "a relative mount point",
            Box::new(|s| s.storage[0].mount = "data".into()),
            "must be an absolute path",
        ),
        (
            "the root as mount point",
            Box::new(|s| s.storage[0].mount = "/".into()),
            "must be normalised",
        ),
        (
            "an environment variable without a name",
            Box::new(|s| s.env.push("=x".into())),
            "environment variable \"\"",
        ),
        (
            "an environment value with a NUL byte (it would end bubblewrap's argument early)",
            Box::new(|s| s.env.push("A=b\0--bind\0/\0/host".into())),
            "environment variable \"A\"",
        ),
        (
            "a command argument with a NUL byte",
            Box::new(|s| s.args.push("x\0y".into())),
            "NUL byte",
        ),
    ];
    let before = tree(dir.path());
    for (what, edit, expect) in cases {
        let mut g = base.clone().into_inner();
        edit(&mut g.services[0]);
        // Past the manifest parser on purpose: what the sandbox refuses on its own.
        let g = pazar_sdl::ValidGroup::unchecked(g);
        let err = rt.deploy(&l, &g).await.expect_err(what).to_string();
        assert!(err.contains(expect), "{what}: {err}");
        assert_eq!(tree(dir.path()), before, "{what}: nothing is made on the host");
        assert!(!netns::exists(key(&l).as_str()), "{what}: no network namespace");
        assert!(replica_cgroup(&l, "web").pids().is_empty(), "{what}: no process");
        assert!(
            !Path::new("/sys/fs/cgroup/pids/pazar").join(key(&l).as_str()).exists()
                && !Path::new("/sys/fs/cgroup/pazar").join(key(&l).as_str()).exists(),
            "{what}: no cgroup"
        );
    }
    // The same group with its names intact deploys: the refusals were about the names.
    rt.deploy(&l, &base).await.expect("the untouched group deploys");
    rt.close(&l).await.expect("close");
}

/// Everything of a lease is named after the whole SHA-256 of its id, and the lease's record
/// keeps the id: a directory that holds another lease's record (as a collision of shortened
/// names would have made) is refused, and the replica it claims is neither adopted nor killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_keyed_by_its_whole_id_and_never_adopts_a_record_of_another_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let (l, other) = (lease(37), lease(38));
    let _cleanup = Cleanup(vec![l.clone(), other.clone()]);
    let k = key(&l);
    assert_eq!(k.as_str().len(), "pz-".len() + 64, "the whole digest: {k}");
    assert_eq!(LeaseKey::parse(k.as_str()), Some(k.clone()));
    assert_ne!(k, key(&other));
    assert_eq!(LeaseKey::parse("pz-0123456789ab"), None, "a shortened digest is no key");

    // Another lease's running replica, recorded in the directory of this one.
    let mut victim = std::process::Command::new("sleep").arg("600").spawn().expect("sleep");
    let pid = victim.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let starttime: u64 = stat[stat.rfind(')').expect("comm") + 2..]
        .split(' ')
        .nth(19)
        .and_then(|t| t.parse().ok())
        .expect("starttime");
    let g = common::group(&sdl("web", WEB, "64Mi", "64Mi"));
    let record = serde_json::json!({
        "name": k.as_str(),
        "label": other.label(),
        "group": g,
        "forwards": [],
        "replicas": [{"service": "web", "replica": 0, "pid": pid, "starttime": starttime,
                      "restarts": 0, "last_error": null}],
    });
    let ldir = dir.path().join("leases").join(k.as_str());
    std::fs::create_dir_all(&ldir).expect("lease dir");
    std::fs::write(ldir.join("lease.json"), record.to_string()).expect("record");

    let err = rt.deploy(&l, &g).await.expect_err("another lease's record").to_string();
    assert!(
        err.contains(&format!("holds the record of lease {}", other.label())) && err.contains("refusing to adopt"),
        "{err}"
    );
    assert!(
        victim.try_wait().expect("wait").is_none(),
        "the other lease's replica still runs"
    );
    assert!(!netns::exists(k.as_str()), "nothing made for the refused lease");
    assert!(
        rt.logs(&l, None, 10, false).await.is_err(),
        "the other lease's record does not serve this lease's logs"
    );
    let _ = victim.kill();
    let _ = victim.wait();
}

/// A listener on the host that must never see a connection from a workload.
struct HostListener(std::net::TcpListener);

impl HostListener {
    fn bind(addr: &str) -> Option<HostListener> {
        let l = std::net::TcpListener::bind(addr).ok()?;
        l.set_nonblocking(true).expect("nonblocking");
        Some(HostListener(l))
    }

    fn port(&self) -> u16 {
        self.0.local_addr().expect("addr").port()
    }

    fn accepted_any(&self) -> bool {
        self.0.accept().is_ok()
    }
}

/// An IPv6 address of this host that is not loopback (the default route's source), if any.
fn local_ip6() -> Option<String> {
    let s = std::net::UdpSocket::bind("[::]:0").ok()?;
    s.connect("[2001:db8::1]:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback()).then(|| ip.to_string())
}

/// The IPv4 default gateway of this host (the provider's LAN), from `/proc/net/route`.
fn gateway4() -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/route").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"00000000")).then(|| {
            let g = u32::from_str_radix(f.get(2)?, 16).ok()?;
            Some(std::net::Ipv4Addr::from(g.to_le_bytes()).to_string())
        })?
    })
}

/// From inside a running workload, IPv4 and IPv6: the host's own addresses (with listeners on
/// them), the cloud metadata service on both families, the provider's LAN gateway and another
/// lease's forwarded port have no route at all; loopback is the lease's own, where another
/// lease's service is not. And the daemon's port forwarder carries a connection only into the
/// lease's own namespace: a lease that "exposes" the port of a service of the host gets nothing
/// of the host's through its forwarded port or through `dial`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_workload_reaches_nothing_outside_its_namespace_and_its_forwarder_leads_only_inside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let host4 = HostListener::bind("0.0.0.0:0").expect("IPv4 listener");
    let host6 = HostListener::bind("[::]:0");
    // The daemon's own service on the host's loopback, which the forwarder must never reach.
    let daemon = HostListener::bind("127.0.0.1:0").expect("loopback listener");
    let (p4, dport) = (host4.port(), daemon.port());
    let p6 = host6.as_ref().map_or(9, HostListener::port);
    let other = lease(39);
    let l = lease(40);
    let _cleanup = Cleanup(vec![l.clone(), other.clone()]);
    let og = common::group(&sdl("web", WEB, "64Mi", "64Mi"));
    rt.deploy(&other, &og).await.expect("other lease");
    let ost = wait_status(&rt, &other, &og, GroupStatus::all_running).await;
    let other_port = ost.services[0].forwards[0].host_port;

    let mut targets: Vec<(String, String, u16)> = vec![
        ("host-v4".into(), local_ip(), p4),
        ("other-lease-forward".into(), local_ip(), other_port),
        ("metadata-v4".into(), "169.254.169.254".into(), 80),
        ("metadata-v6".into(), "fd00:ec2::254".into(), 80),
        ("docker-bridge".into(), "172.17.0.1".into(), p4),
    ];
    if let Some(g) = gateway4() {
        targets.push(("lan-gateway".into(), g, 80));
    }
    if let Some(ip6) = local_ip6() {
        targets.push(("host-v6".into(), ip6, p6));
    }
    let mut probe = String::new();
    for (name, ip, port) in &targets {
        probe += &format!("echo \"{name} $(nc -w 2 {ip} {port} </dev/null 2>&1 && echo CONNECTED)\"\n");
    }
    // Loopback is the namespace's own: the host's listeners and the other lease's service are
    // not there.
    probe += &format!("echo \"loopback-v4 $(nc -w 2 127.0.0.1 {p4} </dev/null 2>&1 && echo CONNECTED)\"\n");
    probe += &format!("echo \"loopback-v6 $(nc -w 2 ::1 {p6} </dev/null 2>&1 && echo CONNECTED)\"\n");
    probe += "echo \"other-lease-service $(nc -w 2 127.0.0.1 8080 </dev/null 2>&1 && echo CONNECTED)\"\n";
    probe += "echo \"interfaces $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ' ')\"\n";
    probe += "echo \"routes4 $(tail -n +2 /proc/net/route | wc -l)\"\necho probe-done\nsleep 3600\n";
    let probe = probe.replace('\n', "\n        ");
    // The workload "exposes" the daemon's port: the forwarder then dials that port, which
    // must be the namespace's (where nothing listens), never the host's.
    let extra = format!(
        "    command: [/bin/sh, -c]\n    args:\n      - |\n        {probe}\n    expose:\n      - port: {dport}\n        as: 80\n        to: [{{global: true}}]\n    params:\n      storage:\n        data: {{mount: /data}}"
    );
    let g = common::group(
        &sdl("probe", &extra, "64Mi", "64Mi").replace("    env: [GREETING=hello-from-the-sandbox]\n", ""),
    );
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
    let line = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{out}"))
            .to_string()
    };
    for (name, ip, port) in &targets {
        let said = line(name);
        assert!(
            said.contains("Network is unreachable") && !said.contains("CONNECTED"),
            "{name} ({ip}:{port}) must have no route from the lease: {said}\n{out}"
        );
    }
    for name in ["loopback-v4", "loopback-v6", "other-lease-service"] {
        let said = line(name);
        assert!(!said.contains("CONNECTED"), "{name}: {said}\n{out}");
    }
    assert_eq!(line("interfaces").trim(), "lo", "{out}");
    assert_eq!(line("routes4").trim(), "0", "{out}");

    // The forwarded port and the ingress's dial lead into the lease's namespace only.
    let st = rt.status(&l, &g).await.expect("status");
    let fwd = st.services[0].forwards[0].host_port;
    if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", fwd)) {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(buf.is_empty(), "nothing answers behind the forward: {buf:?}");
    }
    assert!(
        rt.dial(&l, "probe", 0, dport).await.is_err(),
        "dial reaches nothing of the host's"
    );
    assert!(!host4.accepted_any(), "the host's IPv4 listener saw a connection");
    assert!(
        !host6.as_ref().is_some_and(HostListener::accepted_any),
        "the host's IPv6 listener saw a connection"
    );
    assert!(!daemon.accepted_any(), "the forwarder reached the host's loopback");
    rt.close(&l).await.expect("close");
    rt.close(&other).await.expect("close");
}

/// Which PID namespace a process is in (`/proc/PID/ns/pid`), if it can be read.
fn pid_ns(pid: &str) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// A secret in the tenant's environment reaches the workload and no host-side process: it is on
/// no process's command line (which every host user can read) and in the environment of no
/// process of the host's PID namespace (the launch chain and bubblewrap itself run with the
/// runtime's fixed environment; only the sandboxed workload, in its own PID namespace, has it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_secret_is_on_no_host_command_line_and_in_no_host_process_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(41);
    let _cleanup = Cleanup(vec![l.clone()]);
    let secret = format!("s3cr3t-{}", std::process::id());
    let g = common::group(&sdl("web", WEB, "64Mi", "64Mi").replace(
        "env: [GREETING=hello-from-the-sandbox]",
        &format!("env: [GREETING=hello-from-the-sandbox, API_TOKEN={secret}]"),
    ));
    rt.deploy(&l, &g).await.expect("deploys");
    wait_status(&rt, &l, &g, GroupStatus::all_running).await;
    let host_ns = pid_ns("self").expect("own pid namespace");
    let (mut in_workload, mut on_host) = (0, Vec::new());
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let has = |file: &str| {
            std::fs::read(format!("/proc/{pid}/{file}"))
                .is_ok_and(|b| b.windows(secret.len()).any(|w| w == secret.as_bytes()))
        };
        if has("cmdline") {
            on_host.push(format!("{pid} has it on its command line"));
        }
        if has("environ") {
            if pid_ns(&pid).as_ref() == Some(&host_ns) {
                on_host.push(format!("{pid} (host PID namespace) has it in its environment"));
            } else {
                in_workload += 1;
            }
        }
    }
    assert!(on_host.is_empty(), "{on_host:?}");
    assert!(in_workload >= 1, "the workload has the tenant's variable");
    rt.close(&l).await.expect("close");
}

/// The process's resident memory (the daemon's, here: the runtime runs in the test).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => n += dir_bytes(&e.path()),
            Ok(_) => n += e.metadata().map_or(0, |m| m.len()),
            Err(_) => {}
        }
    }
    n
}

/// A workload floods its output with 300 MB and no newline while a follower reads it: the
/// follower gets the flood as lines of at most 16 KiB as it is written (not one line of
/// 300 MB once a newline comes), the daemon's memory stays flat, and the lease's logs on the
/// host stay near their bound (16 MiB live, rotated past that keeping its last 4 MiB) during
/// the flood and within it after. Before, the follower held the whole flood in memory (1.4 GiB
/// of RSS for 1.5 GB) and the log grew to the whole flood, then was copied whole. The bound
/// during the flood is the bound plus what the workload writes between two supervisor rounds;
/// its quarter of a CPU writes ~130 MB/s here, ~40 MB a round, so half the flood is far off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_without_newlines_keeps_the_daemon_s_memory_and_the_host_s_disk_bounded() {
    use pazar_runtime::sandbox::MAX_LOG_LINE;
    const FLOOD: u64 = 300_000_000;
    const SETTLED_BOUND: u64 = (16 + 4) << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(41);
    let _cleanup = Cleanup(vec![l.clone()]);
    // The end marker is written five times, a second apart: a rotation may drop what is
    // written while it runs (see `rotate_log`), and the last rotation can fall on the first
    // marker; the later ones land in a small live log that is not rotated again.
    let extra = format!(
        "    command: [/bin/sh, -c]\n    args: ['sleep 1; head -c {FLOOD} /dev/zero; for i in 1 2 3 4 5; do echo flood-done; sleep 1; done; sleep 3600']"
    );
    let g = common::group(&sdl("flood", &extra, "64Mi", "64Mi"));
    rt.deploy(&l, &g).await.expect("deploys");
    let logs = dir.path().join("leases").join(key(&l).as_str()).join("logs");

    let rss_before = rss_bytes();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (logs, watching) = (logs.clone(), watching.clone());
        std::thread::spawn(move || {
            let (mut disk, mut rss) = (0, 0);
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                disk = disk.max(dir_bytes(&logs));
                rss = rss.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(20));
            }
            (disk, rss)
        })
    };
    let mut follow = rt.logs(&l, Some("flood"), 0, true).await.expect("follow");
    let (mut pieces, mut bytes, mut longest) = (0u64, 0u64, 0usize);
    let t0 = Instant::now();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), follow.next())
            .await
            .expect("the follower keeps yielding during the flood")
            .expect("stream open")
            .expect("line");
        pieces += 1;
        bytes += line.line.len() as u64;
        longest = longest.max(line.line.len());
        if line.line.ends_with("flood-done") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "the flood never ended");
    }
    drop(follow);
    // A few supervisor rounds (300 ms each) after the flood: the live log was rotated.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (peak_disk, peak_rss) = sampler.join().expect("sampler");
    let settled = dir_bytes(&logs);
    eprintln!(
        "flood of {} MB: {pieces} pieces ({} MiB) followed, longest {longest} B; daemon RSS {} -> peak {} MiB; \
         lease logs peaked at {} MiB, settled at {} MiB",
        FLOOD / 1_000_000,
        bytes >> 20,
        rss_before >> 20,
        peak_rss >> 20,
        peak_disk >> 20,
        settled >> 20
    );
    assert!(longest <= MAX_LOG_LINE, "a piece of {longest} bytes");
    assert!(pieces > 1, "the flood came in pieces, not as one line");
    assert!(
        peak_rss.saturating_sub(rss_before) < 128 << 20,
        "the daemon's memory grew by {} MiB while following",
        (peak_rss - rss_before) >> 20
    );
    assert!(
        settled <= SETTLED_BOUND,
        "the lease's logs take {settled} bytes after the flood"
    );
    // The peak during the flood is printed, not asserted: it depends on how often the supervisor
    // is scheduled (no timing assertions); the settled size and the rotated file's bound below
    // are what a broken rotation cannot meet.
    let old = std::fs::metadata(logs.join("flood.0.log.1"))
        .expect("a rotated log")
        .len();
    assert!(old <= 4 << 20, "the rotated log keeps at most 4 MiB: {old}");

    // The tail of a log of long lines is read from its end, in pieces, and no more than asked.
    let tail: Vec<_> = rt
        .logs(&l, Some("flood"), 3, false)
        .await
        .expect("tail")
        .collect()
        .await;
    assert_eq!(tail.len(), 3);
    let tail: Vec<String> = tail.into_iter().map(|l| l.expect("line").line).collect();
    assert!(tail.iter().all(|l| l.len() <= MAX_LOG_LINE), "tail pieces are bounded");
    assert!(tail[2].ends_with("flood-done"), "the last piece is the end of the log");
    rt.close(&l).await.expect("closes");
}

/// An SDL of the demo web service and any number of idle services.
fn web_and(idle: &[&str], greeting: &str) -> String {
    let mut services = format!("services:\n  web:\n    image: {IMAGE}\n    env: [GREETING={greeting}]\n{WEB}\n");
    let mut compute = String::from("profiles:\n  compute:\n    p:\n      resources: {cpu: {units: 0.1}, memory: {size: 32Mi}, storage: [{size: 32Mi}, {name: data, size: 32Mi, attributes: {persistent: true, class: beta2}}]}\n");
    let mut deployment = String::from("deployment:\n  web: {local: {profile: p, count: 1}}\n");
    for s in idle {
        services += &format!("  {s}:\n    image: {IMAGE}\n    command: [/bin/sh, -c, 'echo {s}-up; sleep 3600']\n");
        deployment += &format!("  {s}: {{local: {{profile: q, count: 1}}}}\n");
    }
    compute += "    q:\n      resources: {cpu: {units: 0.1}, memory: {size: 32Mi}, storage: {size: 32Mi}}\n";
    format!(
        "version: \"2.0\"\n{services}{compute}  placement:\n    local:\n      pricing:\n        p: {{denom: uusd, amount: 1}}\n        q: {{denom: uusd, amount: 1}}\n{deployment}"
    )
}

/// A tenant's new manifest for a running lease is what runs after deploy: a service gone from
/// it is stopped (no process, no cgroup, no log), a new one started, an unchanged one left
/// running (same process), and a changed one started again with its new spec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploying_a_new_manifest_to_a_running_lease_converges_to_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(42);
    let _cleanup = Cleanup(vec![l.clone()]);
    let logs = dir.path().join("leases").join(key(&l).as_str()).join("logs");
    let pids = |svc: &str| replica_cgroup(&l, svc).pids();

    let first = common::group(&web_and(&["side"], "one"));
    rt.deploy(&l, &first).await.expect("deploys");
    let st = wait_status(&rt, &l, &first, GroupStatus::all_running).await;
    let port = st.services.iter().find(|s| s.name == "web").expect("web").forwards[0].host_port;
    let web_pids = pids("web");
    assert!(!web_pids.is_empty(), "web runs in its cgroup");
    assert!(logs.join("side.0.log").exists());

    // "side" leaves, "extra" comes, "web" is unchanged.
    let second = common::group(&web_and(&["extra"], "one"));
    rt.deploy(&l, &second).await.expect("converges");
    wait_status(&rt, &l, &second, GroupStatus::all_running).await;
    assert!(pids("side").is_empty(), "the removed service no longer runs");
    assert!(!logs.join("side.0.log").exists(), "its log went with it");
    let t0 = Instant::now();
    while pids("extra").is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the new service never joined its cgroup"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its processes then and now overlap (a process that was only passing through, such as one
    // forked for a request, may have gone; a restarted service would have none left).
    let now = pids("web");
    assert!(
        web_pids.iter().any(|p| now.contains(p)),
        "the unchanged service was not touched: {web_pids:?} then, {now:?} now"
    );
    let t0 = Instant::now();
    let text = loop {
        let text = log_text(&rt, &l).await;
        if text.contains("extra-up") || t0.elapsed() > Duration::from_secs(30) {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("extra-up") && !text.contains("side-up"), "{text}");

    // "web" changes: it is started again with its new environment, on the same host port.
    let third = common::group(&web_and(&["extra"], "two"));
    rt.deploy(&l, &third).await.expect("converges");
    let st = wait_status(&rt, &l, &third, GroupStatus::all_running).await;
    let restarted = pids("web");
    assert!(
        !web_pids.iter().any(|p| restarted.contains(p)),
        "the changed service was started again: {web_pids:?} then, {restarted:?} now"
    );
    let web = st.services.iter().find(|s| s.name == "web").expect("web");
    assert_eq!(web.forwards[0].host_port, port, "its forward is kept");
    assert!(http_get(port).expect("serves").contains("two"), "it runs the new spec");
    rt.close(&l).await.expect("closes");
    assert!(pids("extra").is_empty() && pids("web").is_empty());
}

/// What the SDL accepts the sandbox runs: a volume named with `_`, a mount path written with a
/// trailing `/`, and a `ram` volume on `/dev/shm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_names_and_mount_paths_the_sdl_accepts_are_run_by_the_sandbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(43);
    let _cleanup = Cleanup(vec![l.clone()]);
    let text = format!(
        r#"
version: "2.0"
services:
  app:
    image: {IMAGE}
    command: [/bin/sh, -c]
    args: ['echo a > /data/f && echo b > /dev/shm/f && echo "wrote $(cat /data/f /dev/shm/f | tr -d "\n")"; sleep 3600']
    params:
      storage:
        db_data: {{mount: /data/}}
        shm: {{mount: /dev/shm}}
profiles:
  compute:
    app:
      resources:
        cpu: {{units: 0.1}}
        memory: {{size: 32Mi}}
        storage:
          - size: 32Mi
          - name: db_data
            size: 32Mi
            attributes: {{persistent: true, class: beta2}}
          - name: shm
            size: 8Mi
            attributes: {{class: ram}}
  placement:
    local:
      pricing:
        app: {{denom: uusd, amount: 1}}
deployment:
  app:
    local: {{profile: app, count: 1}}
"#
    );
    let g = common::group(&text);
    rt.deploy(&l, &g).await.expect("the sandbox runs what the SDL accepts");
    let t0 = Instant::now();
    loop {
        let out = log_text(&rt, &l).await;
        if out.contains("wrote ab") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the volumes were not writable: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let volumes = dir.path().join("leases").join(key(&l).as_str()).join("volumes");
    assert!(
        volumes.join("app.db_data").join("f").is_file(),
        "db_data is a volume on the host"
    );
    rt.close(&l).await.expect("closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sandboxed_lease_runs_nothing_keeps_its_volume_and_a_deploy_starts_it_on_the_same_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path());
    let l = lease(46);
    let _cleanup = Cleanup(vec![l.clone()]);
    // Each start of the replica appends a line to its volume, then serves.
    let extra = "    command: [/bin/sh, -c]\n    args: ['echo started >> /data/starts; exec /bin/sh /serve.sh']\n    \
                 expose:\n      - port: 8080\n        as: 80\n        to: [{global: true}]\n    params:\n      storage:\n        \
                 data: {mount: /data}";
    let g = common::group(&sdl("web", extra, "64Mi", "64Mi"));
    rt.deploy(&l, &g).await.expect("deploys");
    let st = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
    let port = st.services[0].forwards[0].host_port;
    let starts = pazar_runtime::sandbox::host_volume_dir(dir.path(), &l, "web", "data")
        .expect("a valid name")
        .join("starts");
    assert_eq!(
        std::fs::read_to_string(&starts).expect("written by the workload"),
        "started\n"
    );

    rt.stop(&l).await.expect("stops");
    assert!(
        replica_cgroup(&l, "web").pids().is_empty(),
        "no process of the replica is left"
    );
    assert!(http_get(port).is_err(), "its host port is closed");
    let st = rt.status(&l, &g).await.expect("status of a stopped lease");
    assert_eq!(st.services[0].running, 0, "{st:?}");
    // The supervisor does not start it again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(replica_cgroup(&l, "web").pids().is_empty(), "still stopped");
    assert_eq!(
        std::fs::read_to_string(&starts).expect("the volume is kept"),
        "started\n"
    );
    let listed: Vec<String> = rt.leases().await.expect("list").into_iter().map(|(n, _)| n).collect();
    assert!(listed.contains(&l.name()), "the lease is still here: {listed:?}");
    rt.stop(&l).await.expect("stopping again is no error");
    rt.stop(&lease(47)).await.expect("nothing to stop is no error");

    rt.deploy(&l, &g).await.expect("starts again");
    let st = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
    let port = st.services[0].forwards[0].host_port;
    assert!(http_get(port).expect("serves again").contains("hello"));
    assert_eq!(
        std::fs::read_to_string(&starts).expect("the same volume"),
        "started\nstarted\n",
        "started again on the same data"
    );

    rt.close(&l).await.expect("closes");
    assert!(!starts.exists(), "closing removes the volume");
    assert!(!netns::exists(key(&l).as_str()), "and the namespace");
}
