//! Storage is bounded on the real Docker engine, proved from inside a running workload: a
//! persistent volume is a filesystem of the leased size (a write past it fails with ENOSPC,
//! the leased bytes fit), and a replica whose writable layer outgrows its ephemeral storage is
//! capped by the storage driver or, where the driver cannot, evicted: started afresh from its
//! image with its logs, restart count and volume kept, the eviction counted and explained in
//! the lease's status, on the host ports it had. The volume is mounted `nosuid,nodev`. Closing the lease deletes the volume's filesystem and the kept logs.

use crate::common;

use common::{docker_with, exec, lease, log_text, wait_status};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::{GroupStatus, LeaseRef, Runtime};

fn group() -> pazar_sdl::ValidGroup {
    common::group(&common::persistent_web_sdl())
}

fn mib(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no {key} in\n{out}"))
        / (1 << 20)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_cannot_keep_more_storage_than_it_leased() {
    let state = tempfile::tempdir().expect("tempdir");
    let rt = docker_with(DockerOptions {
        state_dir: Some(state.path().to_path_buf()),
        ..common::options()
    })
    .await;
    let (l, g) = (lease(41), group());
    rt.deploy(&l, &g).await.expect("deploys");
    let outcome = tokio::spawn(prove(l.clone(), g.clone(), state.path().to_path_buf())).await;
    rt.close(&l).await.expect("closes");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    let left: Vec<_> = ["volumes", "evicted"]
        .iter()
        .flat_map(|d| std::fs::read_dir(state.path().join(d)).into_iter().flatten().flatten())
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "closing leaves no volume file nor kept log: {left:?}");
}

async fn prove(l: LeaseRef, g: pazar_sdl::ValidGroup, state: std::path::PathBuf) {
    let rt = DockerRuntime::connect(DockerOptions {
        state_dir: Some(state),
        ..common::options()
    })
    .await
    .expect("Docker engine");
    assert!(rt.bounds_volumes(), "{:?}", rt.storage_notes());
    let before = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
    let c = format!("{}-web-0", l.name());

    // The volume is mounted nosuid and nodev: a setuid binary or a device node the tenant
    // writes into it grants nothing (the kernel's own view, from inside the container).
    let (_, mounts) = exec(&rt, &c, "grep ' /data ' /proc/mounts").await;
    let opts: Vec<&str> = mounts.split_whitespace().nth(3).unwrap_or("").split(',').collect();
    assert!(
        mounts.contains(" ext4 ") && opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{mounts}"
    );

    // The persistent volume holds the 32 MiB leased, and a write past it fails.
    let (_, out) = exec(
        &rt,
        &c,
        "dd if=/dev/zero of=/data/fill bs=1M count=64 2>&1; echo \"data $(wc -c < /data/fill)\"; \
         echo 'before the eviction' > /proc/1/fd/1",
    )
    .await;
    assert!(out.contains("No space left on device"), "{out}");
    let data = mib(&out, "data");
    assert!((32..64).contains(&data), "wrote {data} MiB on a 32Mi volume\n{out}");

    // 48 MiB in the writable layer, over the 32 MiB of ephemeral storage.
    let (code, out) = exec(&rt, &c, "dd if=/dev/zero of=/fill bs=1M count=48 2>&1").await;
    if !rt.evicts() {
        assert_ne!(code, 0, "the storage driver caps the writable layer: {out}");
        return;
    }
    let evicted = rt.evict_over_storage(&[(l.clone(), g.clone())]).await.expect("check");
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(evicted[0].used > evicted[0].limit, "{evicted:?}");
    assert_eq!(evicted[0].limit, 32 << 20);
    let st = wait_status(&rt, &l, &g, GroupStatus::all_running).await;
    let svc = &st.services[0];
    assert_eq!(svc.evictions, 1, "{svc:?}");
    let why = svc.last_eviction.as_deref().unwrap_or("");
    assert!(
        why.contains("over the 33554432 bytes of ephemeral storage leased"),
        "{why}"
    );
    assert_eq!(svc.forwards, before.services[0].forwards, "same host ports, same URIs");
    assert_eq!(svc.restarts, 0, "an eviction is not a crash: {svc:?}");

    // Afresh from the image: the layer's file is gone, the volume's data and the logs stay.
    let (_, out) = exec(&rt, &c, "ls /fill 2>&1; echo \"data $(wc -c < /data/fill)\"").await;
    assert!(out.contains("No such file"), "{out}");
    assert_eq!(mib(&out, "data"), data, "{out}");
    let logs = log_text(&rt, &l).await;
    assert!(logs.contains("before the eviction"), "{logs}");
    assert_eq!(logs.matches("serving on :8080").count(), 2, "{logs}");

    // Under its limit now: the next check leaves it alone.
    let evicted = rt.evict_over_storage(&[(l.clone(), g.clone())]).await.expect("check");
    assert!(evicted.is_empty(), "{evicted:?}");
}
