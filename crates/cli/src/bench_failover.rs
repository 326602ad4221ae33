//! `pazar bench failover`: how long a tenant's service is gone when its provider dies, with the
//! tenant's agent (`pazar_client::watch`) at its default probe settings, and how fast volume
//! snapshots travel. On this machine: a devnet, two provider daemons on Docker, a deployment
//! with a persistent volume holding `--data-mb` of random data. Each round kills the serving
//! provider's daemon and containers and times provider death → the service answering HTTP on
//! the other provider with the data restored; the dead provider is then started again for the
//! next round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::IgnoredAny;
use serde_json::{json, Value};

use pazar_client::deploy::Tenant;
use pazar_client::keyring::Keyring;
use pazar_client::snapshots::SnapshotStore;
use pazar_client::watch::{Agent, WatchEvent, WatchOptions};
use pazar_runtime::{AnyRuntime, LeaseRef};
use pazar_types::{DeploymentId, LeaseId};

use crate::bench_node::{percentile, scratch};
use crate::demo::{self, Proc};
use crate::sdl_cmd::DeployOutput;

#[derive(Args)]
pub struct FailoverBenchOpts {
    /// Provider deaths timed.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Random data written into the deployment's volume (MiB), snapshotted and restored.
    #[arg(long, default_value_t = 64)]
    pub data_mb: u64,
    #[arg(long, default_value_t = 500)]
    pub block_time_ms: u64,
}

/// The demo image with a 1 GiB persistent volume at /data.
fn sdl(data_mb: u64) -> String {
    let size = (data_mb * 3).max(256);
    format!(
        "version: \"2.0\"\nservices:\n  web:\n    image: pazar-demo:1\n    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]\n    \
         params:\n      storage:\n        data: {{mount: /data}}\nprofiles:\n  compute:\n    web:\n      resources:\n        \
         cpu: {{units: 0.5}}\n        memory: {{size: 128Mi}}\n        storage:\n          - size: 256Mi\n          \
         - name: data\n            size: {size}Mi\n            attributes: {{persistent: true, class: beta2}}\n  placement:\n    \
         local: {{attributes: {{region: local}}, pricing: {{web: {{denom: uusd, amount: 100000}}}}}}\ndeployment:\n  web: {{local: {{profile: web, count: 1}}}}\n"
    )
}

fn docker(args: &[&str]) -> Result<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .context("cannot run docker")?;
    if !out.status.success() {
        bail!("docker {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn container(lease: &LeaseId) -> String {
    format!("{}-web-0", LeaseRef::new(lease.clone()).name())
}

pub fn run(o: &FailoverBenchOpts) -> Result<Value> {
    let h = scratch("failover");
    let _ = std::fs::remove_dir_all(&h);
    std::fs::create_dir_all(&h)?;
    let out = run_in(&h, o);
    let _ = std::fs::remove_dir_all(&h);
    out
}

fn run_in(h: &std::path::Path, o: &FailoverBenchOpts) -> Result<Value> {
    let mut m = demo::start_market(h, o.block_time_ms, "docker", false)?;
    if !matches!(m.runtime, AnyRuntime::Docker(_)) {
        bail!("the failover bench needs the Docker engine (it kills a provider's containers)");
    }
    // The second provider's key, funded for bid deposits and fees.
    let _: IgnoredAny = demo::pazar(h, &["keys", "add", "provider2", "--keyring-backend", "test"])?;
    let keyring = Keyring::new(h);
    let p2 = keyring.show("provider2").map_err(|e| anyhow!("{e}"))?.address;
    for amount in ["100000000000upzr", "100000000000uusd"] {
        let _: IgnoredAny = demo::pazar(h, &["tx", "send", &p2.to_string(), amount, "--from", "faucet"])?;
    }

    // The deployment, on the first provider (the only one running yet).
    let file = h.join("deploy.yaml");
    std::fs::write(&file, sdl(o.data_mb))?;
    let d: DeployOutput = demo::pazar(
        h,
        &[
            "deploy",
            &file.display().to_string(),
            "--from",
            "alice",
            "--dseq",
            "1",
            "--bid-window-s",
            "0",
            "--deposit",
            "1000000000uusd",
        ],
    )?;
    let mut lease = d.leases.first().context("the deployment made no lease")?.lease.clone();
    docker(&[
        "exec",
        &container(&lease),
        "/bin/sh",
        "-c",
        &format!(
            "dd if=/dev/urandom of=/data/blob bs=1M count={} 2>/dev/null && md5sum /data/blob > /data/blob.md5",
            o.data_mb
        ),
    ])?;
    let want_md5 = docker(&["exec", &container(&lease), "/bin/sh", "-c", "cat /data/blob.md5"])?;
    let mut daemons: Vec<(String, std::path::PathBuf, Option<Proc>)> = vec![
        ("provider".into(), h.to_path_buf(), m.daemon.take()),
        ("provider2".into(), h.join("p2"), None),
    ];
    daemons[1].2 = Some(demo::spawn_daemon(h, "provider2", &daemons[1].1, "docker", None)?);
    demo::wait("the second provider's registration", Duration::from_secs(60), || {
        m.rpc.provider(&p2, false).ok()
    })?;

    let no_pass = |_: &str, _: bool| None;
    let alice = keyring.signer("alice", &no_pass).map_err(|e| anyhow!("{e}"))?;
    let id = DeploymentId {
        owner: alice.address(),
        dseq: 1,
    };
    let manifest = crate::lease_cmd::saved_manifest(h, &id)?;
    let tenant = Tenant::new(m.rpc.clone(), alice).map_err(|e| anyhow!("{e}"))?;
    let store = SnapshotStore::open(&h.join("snapshots")).map_err(|e| anyhow!("{e}"))?;

    // The first snapshot, all of it, then one with nothing changed.
    let client = tenant.provider_client(&lease.provider).map_err(|e| anyhow!("{e}"))?;
    let t0 = Instant::now();
    let first = store.pull(&client, &lease).map_err(|e| anyhow!("{e}"))?;
    let full_s = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let again = store.pull(&client, &lease).map_err(|e| anyhow!("{e}"))?;
    let unchanged_ms = t0.elapsed().as_secs_f64() * 1000.0;

    let mut failovers = Vec::new();
    let mut restores = Vec::new();
    for round in 0..o.rounds {
        let opts = WatchOptions {
            snapshot_every: Some(Duration::from_secs(30)),
            ..WatchOptions::default()
        };
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(Instant, WatchEvent)>();
        let store = SnapshotStore::open(&h.join("snapshots")).map_err(|e| anyhow!("{e}"))?;
        let result = std::thread::scope(|s| -> Result<(f64, f64, LeaseId)> {
            let agent_thread = s.spawn(|| -> Result<()> {
                let mut agent = Agent::new(&tenant, 1, manifest.clone(), opts, Some(store))?;
                agent.run(&stop, &mut |e| {
                    // The agent's account of the round, for whoever reads stderr.
                    eprintln!("{}", serde_json::to_string(e).unwrap_or_default());
                    let _ = tx.send((Instant::now(), e.clone()));
                })?;
                Ok(())
            });
            let out = (|| -> Result<(f64, f64, LeaseId)> {
                // The agent sees the lease serve before the provider dies.
                wait_event(&rx, Duration::from_secs(60), |e| {
                    matches!(e, WatchEvent::Healthy { .. })
                })?;
                let serving = daemons
                    .iter()
                    .position(|(k, _, _)| keyring.show(k).is_ok_and(|i| i.address == lease.provider))
                    .context("the serving provider is not one of the bench's")?;
                drop(daemons[serving].2.take());
                docker(&["rm", "-f", &container(&lease)])?;
                let killed = Instant::now();
                let mut leased_at = None;
                let (restored_at, bytes, to) = loop {
                    let (at, e) = wait_event(&rx, Duration::from_secs(300), |e| {
                        matches!(e, WatchEvent::Leased { .. } | WatchEvent::Failover { .. })
                    })?;
                    match e {
                        WatchEvent::Leased { .. } => leased_at = Some(at),
                        WatchEvent::Failover { to, restored_bytes, .. } => break (at, restored_bytes, to),
                        _ => {}
                    }
                };
                let status = tenant
                    .provider_client(&to.provider)
                    .map_err(|e| anyhow!("{e}"))
                    .and_then(|c| {
                        pazar_client::deploy::wait_serving(&c, &to, Duration::from_secs(60), &mut |_| {})
                            .map_err(|e| anyhow!("{e}"))
                    })?;
                let uri = status
                    .uris
                    .first()
                    .context("the new lease publishes no URI")?
                    .uri
                    .clone();
                demo::wait(
                    "the service answering on the new provider",
                    Duration::from_secs(60),
                    || demo::http_get(&uri),
                )?;
                let down = killed.elapsed().as_secs_f64() * 1000.0;
                let got = docker(&["exec", &container(&to), "/bin/sh", "-c", "md5sum /data/blob"])?;
                if got.split_whitespace().next() != want_md5.split_whitespace().next() {
                    bail!("round {round}: the restored data differs ({got} vs {want_md5})");
                }
                let restore_s = leased_at.map_or(0.0, |l| restored_at.duration_since(l).as_secs_f64());
                let rate = if restore_s > 0.0 {
                    bytes as f64 / (1 << 20) as f64 / restore_s
                } else {
                    0.0
                };
                Ok((down, rate, to))
            })();
            stop.store(true, Ordering::Relaxed);
            agent_thread
                .join()
                .map_err(|_| anyhow!("the agent thread panicked"))??;
            out
        })?;
        let (down, rate, to) = result;
        failovers.push(down);
        restores.push(rate);
        lease = to;
        // The dead provider comes back for the next round.
        for (k, dir, proc) in daemons.iter_mut() {
            if proc.is_none() {
                *proc = Some(demo::spawn_daemon(h, k, dir, "docker", None)?);
            }
        }
    }
    let _: IgnoredAny = demo::pazar(h, &["deployment", "close", "1", "--from", "alice"])?;
    let defaults = WatchOptions::default();
    Ok(json!({
        "bench": "failover",
        "rounds": o.rounds,
        "data_mb": o.data_mb,
        "probe_every_ms": defaults.probe_every.as_millis() as u64,
        "unresponsive_after_ms": defaults.unresponsive_after.as_millis() as u64,
        "failover_ms": failovers.iter().map(|v| v.round() as u64).collect::<Vec<_>>(),
        "failover_p50_ms": percentile(&mut failovers.clone(), 0.5).round() as u64,
        "failover_goal_ms": 30_000,
        "restore_mb_per_s": percentile(&mut restores, 0.5),
        "snapshot_full_mb_per_s": first.bytes_fetched as f64 / (1 << 20) as f64 / full_s.max(1e-9),
        "snapshot_unchanged_ms": unchanged_ms,
        "snapshot_unchanged_bytes_fetched": again.bytes_fetched,
    }))
}

/// The next event for which `pred` holds (others are skipped), with when it came.
fn wait_event(
    rx: &mpsc::Receiver<(Instant, WatchEvent)>,
    timeout: Duration,
    pred: impl Fn(&WatchEvent) -> bool,
) -> Result<(Instant, WatchEvent)> {
    let t0 = Instant::now();
    loop {
        let left = timeout.saturating_sub(t0.elapsed());
        if left.is_zero() {
            bail!("the agent reported nothing expected within {} s", timeout.as_secs());
        }
        match rx.recv_timeout(left) {
            Ok((at, e)) if pred(&e) => return Ok((at, e)),
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the agent stopped"),
        }
    }
}
