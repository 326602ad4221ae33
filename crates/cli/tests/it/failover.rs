//! Failover with the real binaries: two provider daemons on real Docker, a tenant's
//! `pazar deployment watch` snapshotting the lease's volume; the serving provider's daemon and
//! containers are killed, and the service comes back on the other provider with the snapshot's
//! data, with no tenant command.

use crate::common;
use crate::provider::{
    build_image, exec, lease_volumes, start_daemon_as, volume_sdl, wait_registered_as, wait_removed, ALLOW_DEMO,
    EXPENSIVE,
};

use common::{free_port, http_get};

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use pazar_runtime::LeaseRef;
use pazar_types::market::{BidId, LeaseCloseReason, LeaseState};

/// A provider daemon signing as `key`, with persistent storage, in `dir`.
fn provider(net: &common::Devnet, key: &str, dir: &Path) -> (common::Daemon, std::path::PathBuf, String) {
    std::fs::create_dir_all(dir).expect("dir");
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n{EXPENSIVE}\n{ALLOW_DEMO}",
            free_port(),
            dir.join("data").display()
        ),
    )
    .expect("config");
    let log = dir.join("provider.log");
    let daemon = start_daemon_as(key, net.home.path(), &config, &log);
    let address = wait_registered_as(net, key, &log);
    (daemon, log, address)
}

/// The agent's events, one JSON object per line, as they come.
struct Agent {
    _child: common::Daemon,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
    /// The providers' logs, shown when an event does not come.
    logs: Vec<std::path::PathBuf>,
}

impl Agent {
    /// Waits (`secs` at most) for an event named `name` for which `pred` holds; returns it.
    fn wait(&mut self, name: &str, secs: u64, pred: impl Fn(&Value) -> bool) -> Value {
        let t0 = Instant::now();
        loop {
            let left = Duration::from_secs(secs).saturating_sub(t0.elapsed());
            if left.is_zero() {
                let logs: Vec<String> = self
                    .logs
                    .iter()
                    .map(|l| std::fs::read_to_string(l).unwrap_or_default())
                    .collect();
                let ps = Command::new("docker")
                    .args(["ps", "-a"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
                panic!(
                    "no {name} event within {secs} s; events: {:#?}\nproviders' logs:\n{}\ndocker ps -a:\n{ps:?}",
                    self.seen,
                    logs.join("\n---\n")
                );
            }
            if let Ok(v) = self.events.recv_timeout(left.min(Duration::from_millis(500))) {
                self.seen.push(v.clone());
                if v["event"] == name && pred(&v) {
                    return v;
                }
            }
        }
    }
}

fn lease_of(v: &Value, field: &str) -> BidId {
    serde_json::from_value(v[field].clone()).unwrap_or_else(|e| panic!("{field} of {v}: {e}"))
}

#[test]
fn when_the_serving_provider_dies_the_agent_moves_the_service_and_its_data_to_another_provider() {
    let _one = common::one_testnet_at_a_time();
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    // A second provider key, funded for its bid deposits and fees.
    let out = net.cli_raw(&["keys", "add", "provider2", "--keyring-backend", "test"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p2 = net.address("provider2");
    net.tx_ok(&["tx", "send", &p2, "100000000000upzr", "--from", "faucet"]);
    net.tx_ok(&["tx", "send", &p2, "100000000000uusd", "--from", "faucet"]);

    // Only the first provider runs when the tenant deploys: it gets the lease.
    let (mut first, log1, p1) = provider(&net, "provider", &dir.path().join("p1"));
    let sdl = volume_sdl(dir.path());
    let v = net.deploy(&[
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "91",
        "--bid-window-s",
        "0",
        "--deposit",
        "200000000uusd",
    ]);
    let lease1 = v.lease().lease.clone();
    assert_eq!(lease1.provider.to_string(), p1);
    let container1 = format!("{}-web-0", LeaseRef::new(lease1.clone()).name());
    let (ok, _) = exec(
        &container1,
        "mkdir -p /data/sub && echo precious-tenant-data > /data/sub/mark && dd if=/dev/urandom of=/data/blob bs=64k count=16 2>/dev/null && md5sum /data/blob > /data/blob.md5",
    );
    assert!(ok, "the workload writes into its volume");
    let (_, md5) = exec(&container1, "cat /data/blob.md5");
    let (_second, log2, _) = provider(&net, "provider2", &dir.path().join("p2"));

    // The tenant's agent: snapshots every second, gives a provider 5 s.
    let notified = dir.path().join("notified.log");
    let mut child = Command::new(common::bin())
        .args([
            "deployment",
            "watch",
            "91",
            "--from",
            "alice",
            "--probe-every-s",
            "1",
            "--unresponsive-s",
            "5",
            "--snapshot-every-s",
            "1",
            "--notify-cmd",
            &format!(
                "{{ printf '%s ' \"$PAZAR_EVENT\"; cat; echo; }} >> {}",
                notified.display()
            ),
            "-o",
            "json",
        ])
        .arg("--home")
        .arg(net.home.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawns the agent");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    });
    let mut agent = Agent {
        _child: common::Daemon(child),
        events: rx,
        seen: Vec::new(),
        logs: vec![log1.clone(), log2.clone()],
    };
    agent.wait("healthy", 30, |_| true);
    let snap = agent.wait("snapshot", 30, |v| v["files"].as_u64().unwrap_or(0) >= 3);
    assert!(snap["bytes_total"].as_u64().unwrap_or(0) >= 1 << 20, "{snap}");
    // The next snapshot of unchanged data fetches nothing.
    let again = agent.wait("snapshot", 30, |_| true);
    assert_eq!(again["bytes_fetched"], 0, "only changed chunks travel: {again}");

    // The first provider dies: daemon and containers.
    let _ = first.0.kill();
    let _ = first.0.wait();
    let rm = Command::new("docker")
        .args(["rm", "-f", &container1])
        .output()
        .expect("docker rm");
    assert!(rm.status.success(), "{}", String::from_utf8_lossy(&rm.stderr));
    let killed = Instant::now();

    agent.wait("unresponsive", 60, |v| lease_of(v, "lease") == lease1);
    let failover = agent.wait("failover", 180, |_| true);
    let recovered = killed.elapsed();
    let lease2 = lease_of(&failover, "to");
    assert_eq!(lease2.provider.to_string(), p2, "{failover}");
    assert_eq!(lease_of(&failover, "from"), lease1);
    assert!(
        failover["restored_bytes"].as_u64().unwrap_or(0) >= 1 << 20,
        "{failover}"
    );
    eprintln!(
        "recovered {:.1} s after the provider died (agent: {} ms down)",
        recovered.as_secs_f64(),
        failover["down_ms"]
    );

    // The ledger: the first lease closed for the tenant's reason, the second serves.
    let l1 = net.rpc().lease(&lease1, false).expect("lease").item.lease;
    assert_eq!(l1.state, LeaseState::Closed);
    assert_eq!(l1.reason, Some(LeaseCloseReason::ProviderUnresponsive));
    let st = net.lease_status(&lease2, "alice");
    assert!(
        st.ready,
        "{st:?}\n{}",
        std::fs::read_to_string(&log2).unwrap_or_default()
    );
    assert!(http_get(&st.uris[0].uri).contains("Hello"), "the service answers again");
    let container2 = format!("{}-web-0", LeaseRef::new(lease2.clone()).name());
    let (ok, out) = exec(&container2, "cat /data/sub/mark && md5sum /data/blob");
    assert!(
        ok && out.contains("precious-tenant-data"),
        "the data came along: {out:?}"
    );
    let sum = |s: &str| s.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(
        sum(out.lines().last().unwrap_or_default()),
        sum(&md5),
        "the blob is byte for byte the one snapshotted"
    );

    // The tenant's hook heard of it.
    let heard = std::fs::read_to_string(&notified).unwrap_or_default();
    for name in ["unresponsive", "restored", "failover"] {
        assert!(heard.contains(&format!("{name} {{")), "no {name} notification: {heard}");
    }

    drop(agent);
    net.tx_ok(&["deployment", "close", "91", "--from", "alice"]);
    wait_removed(&lease2, "after the deployment closed");
    // The dead provider's volume is left on the host (its daemon never came back): clean up.
    for v in lease_volumes(&lease1) {
        let _ = Command::new("docker").args(["volume", "rm", "-f", &v]).output();
    }
}
