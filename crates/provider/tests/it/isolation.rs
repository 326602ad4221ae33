//! A provider runs strangers' code: proofs, from inside a running workload on the real Docker
//! engine, that it is unprivileged (no new privileges, no capabilities beyond the default
//! set), that its process and memory limits are enforced, that it sees neither the Docker
//! socket nor host paths, and that it reaches neither another lease's containers nor the
//! provider host's own ports.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common;

use common::{docker, exec, lease, IMAGE};
use pazar_runtime::docker::DockerRuntime;
use pazar_runtime::{LeaseRef, Runtime};

fn group() -> pazar_sdl::ValidGroup {
    let sdl = format!(
        r#"
version: "2.0"
services:
  web:
    image: {IMAGE}
    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]
profiles:
  compute:
    web: {{resources: {{cpu: {{units: 0.25}}, memory: {{size: 256Mi}}, storage: {{size: 64Mi}}}}}}
  placement:
    local: {{pricing: {{web: {{denom: uusd, amount: 100}}}}}}
deployment:
  web: {{local: {{profile: web, count: 1}}}}
"#
    );
    common::group(&sdl)
}

/// (container IP, gateway) of the lease's only replica on its network.
async fn addresses(rt: &DockerRuntime, l: &LeaseRef) -> (String, String) {
    let info = rt
        .docker()
        .inspect_container(&format!("{}-web-0", l.name()), None)
        .await
        .expect("inspect");
    let nets = info.network_settings.and_then(|n| n.networks).expect("networks");
    let n = nets.get(&l.name()).expect("lease network");
    (n.ip_address.clone().expect("ip"), n.gateway.clone().expect("gateway"))
}

async fn wait_running(rt: &DockerRuntime, l: &LeaseRef, g: &pazar_sdl::ValidGroup) {
    let t0 = Instant::now();
    while !rt.status(l, g).await.expect("status").all_running() {
        assert!(t0.elapsed() < Duration::from_secs(30), "lease did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_are_unprivileged_limited_and_cut_off_from_other_leases_and_the_host() {
    let rt = docker().await;
    let g = group();
    let (a, b) = (lease(3), lease(4));
    rt.deploy(&a, &g).await.expect("lease a");
    rt.deploy(&b, &g).await.expect("lease b");
    let outcome = tokio::spawn(prove(a.clone(), b.clone(), g.clone())).await;
    // Whatever happened, leave nothing behind.
    rt.close(&a).await.expect("close a");
    rt.close(&b).await.expect("close b");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn prove(a: LeaseRef, b: LeaseRef, g: pazar_sdl::ValidGroup) {
    let rt = DockerRuntime::connect(common::options()).await.expect("Docker engine");
    wait_running(&rt, &a, &g).await;
    wait_running(&rt, &b, &g).await;
    let ca = format!("{}-web-0", a.name());

    // A stand-in for the daemon's own port, listening on every host address.
    let listener = TcpListener::bind("0.0.0.0:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if s.is_ok() {
                h.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    // Sanity: the host itself reaches it.
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("host reaches its own port");
    std::thread::sleep(Duration::from_millis(100));
    let before = hits.load(Ordering::SeqCst);
    assert_eq!(before, 1);

    // 1. No new privileges, no capability outside the default set (no NET_RAW, no SYS_ADMIN).
    let (_, status) = exec(&rt, &ca, "grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status").await;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let cap = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
            .expect("capability line")
    };
    const CAP_NET_RAW: u64 = 1 << 13;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    const CAP_SYS_PTRACE: u64 = 1 << 19;
    for set in ["CapEff", "CapBnd"] {
        let v = cap(set);
        assert_eq!(v & (CAP_NET_RAW | CAP_SYS_ADMIN | CAP_SYS_PTRACE), 0, "{set} = {v:x}");
    }

    // 2. Process limit: forking far past it fails.
    let (_, forks) = exec(
        &rt,
        &ca,
        // Only shell builtins after the loop: with the limit reached, nothing else can start.
        "(i=0; while [ $i -lt 1500 ]; do sleep 15 & i=$((i+1)); done) 2>/tmp/forks; \
         n=0; while read -r l; do case \"$l\" in *\"can't fork\"*) n=$((n+1));; esac; done </tmp/forks; echo $n",
    )
    .await;
    assert!(
        forks.trim().parse::<u32>().unwrap_or(0) >= 1,
        "no fork was refused: {forks}"
    );

    // 3. Memory limit: a 400 MB buffer in a 256 MiB replica is killed.
    let (code, _) = exec(&rt, &ca, "/bin/busybox dd if=/dev/zero of=/dev/null bs=400M count=1").await;
    assert_eq!(code, 137, "the allocation was not killed");

    // 4. No Docker socket, no host paths.
    let (code, out) = exec(
        &rt,
        &ca,
        "ls /var/run/docker.sock /run/docker.sock /var/lib/docker /etc/hostname /root 2>&1; ls /",
    )
    .await;
    assert!(!out.contains("docker.sock\n") || out.contains("No such file"), "{out}");
    assert!(out.matches("No such file").count() >= 3, "{code} {out}");

    // 5. Another lease's container is unreachable; the host reaches it (it is serving).
    let (b_ip, _) = addresses(&rt, &b).await;
    let (code, out) = exec(&rt, &ca, &format!("wget -T 3 -q -O- http://{b_ip}:8080/")).await;
    assert_ne!(code, 0, "lease a reached lease b: {out}");
    let page = std::process::Command::new("wget")
        .args(["-T", "3", "-q", "-O-", &format!("http://{b_ip}:8080/")])
        .output();
    if let Ok(p) = page {
        assert!(
            String::from_utf8_lossy(&p.stdout).contains("Hello"),
            "lease b is not serving"
        );
    }

    // 6. The provider host's own port is unreachable through the lease's gateway.
    let (_, gw) = addresses(&rt, &a).await;
    let (code, out) = exec(&rt, &ca, &format!("nc -w 3 {gw} {port} </dev/null; echo rc=$?")).await;
    let _ = code;
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        hits.load(Ordering::SeqCst),
        before,
        "the workload reached the host port: {out}"
    );
}
