//! Counts that match what is paid: in SDL 2.1, services of one placement that share a compute
//! profile share one resource unit, and the unit's count (the replicas the lease pays for) is
//! the sum of theirs, as Akash computes it. A lease that pays for fewer replicas than its
//! manifest runs is refused by the provider before anything starts.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use pazar_sdl::{parse, Options};
use pazar_types::Denom;

use super::expiry::{start_daemon, wait_for};
use crate::common;

/// Two services on one profile (2 and 3 replicas) and a third on another (1 replica).
const SHARED: &str = r#"version: "2.1"
services:
  a:
    image: nginx:1.25
    expose: [{port: 80, to: [{global: true}]}]
  b:
    image: nginx:1.25
  c:
    image: nginx:1.25
profiles:
  compute:
    small: {resources: {cpu: {units: 0.1}, memory: {size: 64Mi}, storage: {size: 64Mi}}}
    big: {resources: {cpu: {units: 0.2}, memory: {size: 64Mi}, storage: {size: 64Mi}}}
  placement:
    dc:
      pricing:
        small: {denom: uusd, amount: 100}
        big: {denom: uusd, amount: 40}
deployment:
  a: {dc: {profile: small, count: 2}}
  b: {dc: {profile: small, count: 3}}
  c: {dc: {profile: big, count: 1}}
"#;

fn write_sdl(dir: &Path) -> std::path::PathBuf {
    let f = dir.join("shared.yaml");
    std::fs::write(&f, SHARED).expect("sdl");
    f
}

/// `pazar sdl check` and `pazar deploy` order the shared unit for all five replicas, and the
/// order's price ceiling on the ledger covers them: 100 × (2 + 3) + 40 × 1 per block.
#[test]
fn a_shared_unit_is_ordered_and_priced_for_every_replica_its_services_run() {
    let net = common::devnet(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let sdl = write_sdl(dir.path());
    let file = sdl.to_str().expect("utf8");
    let out = std::process::Command::new(common::bin())
        .args(["sdl", "check", file, "--output", "json"])
        .output()
        .expect("runs pazar");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let check: Value = serde_json::from_slice(&out.stdout).expect("json");
    let units = &check["groups"][0]["resources"];
    assert_eq!(units[0]["count"], 5, "{check}");
    assert_eq!(units[0]["services"], json!(["a", "b"]), "{check}");
    assert_eq!(units[1]["count"], 1, "{check}");
    assert_eq!(check["price_per_block"][0]["amount"], "540", "{check}");

    let v = net.cli(&["deploy", file, "--from", "alice", "--dseq", "11", "--create-only"]);
    assert_eq!(v["tx"]["receipt"]["code"], 0, "{v}");
    let alice = net.address("alice");
    let o = net.cli(&["query", "order", &format!("{alice}/11/1/1")]);
    let counts: Vec<u64> = o["group"]["resources"]
        .as_array()
        .expect("units")
        .iter()
        .map(|u| u["count"].as_u64().expect("count"))
        .collect();
    assert_eq!(counts, vec![5, 1], "{o}");
}

/// The attack the old count made possible, done on purpose: a deployment whose shared unit pays
/// for 3 replicas (the first service's count was taken) while its manifest runs 5. A real
/// provider daemon bids, the tenant leases, and the provider refuses the manifest, saying how
/// many replicas were asked for and how many the lease pays for.
#[test]
fn a_lease_paying_for_fewer_replicas_than_its_manifest_runs_is_refused_by_the_provider() {
    let net = common::devnet(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, log) = start_daemon(&net, dir.path(), "");
    let opts = Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
    let d = parse(SHARED.as_bytes(), &opts).expect("valid");
    let mut groups = d.groups.clone();
    assert_eq!(groups[0].resources[0].count, 5);
    groups[0].resources[0].count = 3;
    let groups_file = dir.path().join("groups.json");
    std::fs::write(&groups_file, serde_json::to_vec(&groups).expect("json")).expect("groups");
    let version = hex::encode(d.manifest_version);
    net.tx_ok(&[
        "tx",
        "deployment",
        "create",
        "--groups",
        groups_file.to_str().expect("utf8"),
        "--deposit",
        "5000000uusd",
        "--dseq",
        "12",
        "--version",
        &version,
        "--from",
        "alice",
    ]);
    // The manifest of the file, saved where `pazar lease send-manifest` takes it from.
    let alice = net.address("alice");
    let saved = net.home.path().join("deployments");
    std::fs::create_dir_all(&saved).expect("dir");
    std::fs::write(
        saved.join(format!("{alice}-12.json")),
        serde_json::to_vec(&json!({
            "owner": alice,
            "dseq": 12,
            "file": "shared.yaml",
            "version": version,
            "manifest": d.manifest,
        }))
        .expect("json"),
    )
    .expect("record");

    let provider = net.address("provider");
    let bid = format!("{alice}/12/1/1/{provider}");
    wait_for("the daemon's bid", Duration::from_secs(30), || {
        net.cli_raw(&["query", "bid", &bid], &[]).status.success()
    });
    net.tx_ok(&["tx", "lease", "create", &bid, "--from", "alice"]);
    let out = net.cli_raw(&["lease", "send-manifest", &bid, "--from", "alice"], &[]);
    assert!(!out.status.success(), "the provider ran 5 replicas on a lease for 3");
    let e = common::cli_error(&out);
    assert_eq!(e.code, pazar_api::ErrorCode::NotLeased.as_str(), "{e:?}");
    assert!(
        e.message.contains("ask for 5 replicas; the lease has 3"),
        "{e:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Nothing runs for the lease.
    let st = net.cli_raw(&["lease", "status", &bid, "--from", "alice"], &[]);
    let st: Value = serde_json::from_slice(&st.stdout).unwrap_or(Value::Null);
    assert_ne!(st["ready"], true, "{st}");
    // And the tenant pays for what it leased: the lease's rate is the bid's, within the
    // ceiling of 3 replicas.
    let l = net.cli(&["query", "lease", &bid]);
    let rate: f64 = l["lease"]["price"]["amount"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("rate");
    assert!(rate <= 340.0, "{l}");
}
