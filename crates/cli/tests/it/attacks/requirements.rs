//! No requirement silently dropped: what a deployment file asks of where or how its workload
//! runs is enforced by the ledger's matching (a provider without it cannot bid) or the deploy
//! is refused with the reason. Auditors unknown to Pazar, confidential computing (`tee`),
//! leased IPs, CPU architecture and reclamation windows are the cases shown here against the
//! real devnet and `pazar` commands.

use std::path::Path;

use serde_json::Value;

use pazar_client::deploy::WhyNoBids;
use pazar_types::market::Mismatch;
use serde::Deserialize;

use super::expiry::tx_failed;
use crate::common::{self, Devnet};

/// What `pazar deploy -o json` prints for a file the SDL reader refuses (as `pazar sdl check`).
#[derive(Debug, Deserialize)]
struct SdlReport {
    valid: bool,
    errors: Vec<SdlError>,
}

#[derive(Debug, Deserialize)]
struct SdlError {
    message: String,
}

/// A one-service file with `params` under the service, `placement` extra lines under the
/// placement and `compute` extra lines under the resources.
fn sdl(dir: &Path, name: &str, params: &str, placement: &str, top: &str) -> std::path::PathBuf {
    let f = dir.join(name);
    std::fs::write(
        &f,
        format!(
            "version: \"2.0\"\n{top}services:\n  web:\n    image: nginx:1.25\n    expose: [{{port: 80, to: [{{global: true}}]}}]\n{params}profiles:\n  compute:\n    web: {{resources: {{cpu: {{units: 0.5}}, memory: {{size: 128Mi}}, storage: {{size: 256Mi}}}}}}\n  placement:\n    dc:\n      pricing: {{web: {{denom: uusd, amount: 10000}}}}\n{placement}deployment:\n  web: {{dc: {{profile: web, count: 1}}}}\n"
        ),
    )
    .expect("sdl");
    f
}

fn register(net: &Devnet, key: &str, attrs: &[&str]) {
    let fp = "11".repeat(32);
    let mut args = vec![
        "tx",
        "provider",
        "create",
        "--from",
        key,
        "--host-uri",
        "https://127.0.0.1:1",
        "--tls-fingerprint",
        &fp,
    ];
    for a in attrs {
        args.extend(["--attr", a]);
    }
    net.tx_ok(&args);
}

fn bid_args(order: &str) -> Vec<&str> {
    vec![
        "tx",
        "bid",
        "create",
        order,
        "--price",
        "5uusd",
        "--deposit",
        "500000upzr",
        "--from",
        "provider",
    ]
}

/// `deploy ... --create-only`, returning the process output.
fn deploy(net: &Devnet, file: &Path, dseq: &str) -> std::process::Output {
    net.cli_raw(
        &[
            "deploy",
            file.to_str().expect("utf8"),
            "--from",
            "alice",
            "--dseq",
            dseq,
            "--create-only",
            // Broadcast even when the node's simulation says it fails: these tests prove the
            // ledger itself refuses what the CLI would otherwise catch first.
            "--no-simulate",
        ],
        &[],
    )
}

/// Requirements Pazar cannot honour are refused by `pazar deploy` with the reason, before any
/// transaction: no deployment (and no deposit) is left behind.
#[test]
fn requirements_pazar_cannot_honour_are_refused_at_deploy_with_the_reason() {
    let net = common::devnet(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            sdl(
                dir.path(),
                "akash.yaml",
                "",
                "      signedBy: {anyOf: [akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63]}\n",
                "",
            ),
            "an Akash auditor has no Pazar identity",
        ),
        (
            sdl(dir.path(), "reclaim.yaml", "", "", "reclamation: {min_window: 24h}\n"),
            "reclamation windows are not supported",
        ),
        (
            sdl(dir.path(), "tee.yaml", "    params: {tee: cpu-gpu}\n", "", ""),
            "tee cpu-gpu needs GPUs",
        ),
    ];
    for (i, (file, why)) in cases.iter().enumerate() {
        let out = deploy(&net, file, &format!("{}", 30 + i));
        assert_eq!(out.status.code(), Some(1), "{}", file.display());
        let report: SdlReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: no SDL report on stdout ({e}): {}",
                file.display(),
                String::from_utf8_lossy(&out.stdout)
            )
        });
        assert!(!report.valid, "{}", file.display());
        assert!(
            report.errors.iter().any(|d| d.message.contains(why)),
            "{}: {report:?}",
            file.display()
        );
    }
    let alice = net.address("alice");
    let v = net.cli(&["query", "deployments", "--owner", &alice]);
    assert_eq!(v["deployments"], Value::Array(vec![]), "{v}");
}

/// A placement whose `signedBy` names an address that has audited no provider can never be
/// met; the ledger refuses the deployment and says so. Once that auditor vouches for a
/// provider, the same file deploys, and only the audited provider can bid.
#[test]
fn a_placement_naming_an_auditor_who_audited_nobody_is_refused_by_the_ledger() {
    let net = common::devnet(200);
    register(&net, "provider", &["region=eu"]);
    register(&net, "validator", &["region=eu"]);
    let auditor = net.address("bob");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sdl(
        dir.path(),
        "audited.yaml",
        "",
        &format!("      attributes: {{region: eu}}\n      signedBy: {{allOf: [{auditor}]}}\n"),
        "",
    );
    let out = deploy(&net, &file, "40");
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let log = v["tx"]["receipt"]["log"].as_str().unwrap_or("");
    assert!(
        log.contains(&format!("names {auditor}, who has audited no provider")),
        "{v}"
    );
    let alice = net.address("alice");
    assert!(
        !net.cli_raw(&["query", "deployment", &format!("{alice}/40")], &[])
            .status
            .success(),
        "the deployment exists"
    );

    let provider = net.address("provider");
    net.tx_ok(&["tx", "audit", "sign", &provider, "--attr", "region=eu", "--from", "bob"]);
    let out = deploy(&net, &file, "41");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // The provider the auditor vouched for may bid; the unaudited one may not.
    let order = format!("{alice}/41/1/1");
    net.tx_ok(&bid_args(&order));
    let mut other = bid_args(&order);
    other[9] = "validator";
    let r = tx_failed(&net, &other);
    assert!(r["log"].as_str().unwrap_or("").contains("has not signed"), "{r}");
}

/// `params.tee` is a placement requirement (`tee/type`), not a comment: a provider that does
/// not declare that confidential computing cannot bid, and `why-no-bids` says what it lacks.
#[test]
fn a_tee_deployment_gets_no_bid_from_a_provider_without_confidential_computing() {
    let net = common::devnet(200);
    register(&net, "provider", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = sdl(dir.path(), "tee.yaml", "    params: {tee: cpu}\n", "", "");
    let out = deploy(&net, &file, "50");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alice = net.address("alice");
    let order = format!("{alice}/50/1/1");
    let o = net.cli(&["query", "order", &order]);
    assert_eq!(
        o["group"]["requirements"]["attributes"],
        serde_json::json!([{"key": "tee/type", "value": "cpu"}]),
        "{o}"
    );
    let r = tx_failed(&net, &bid_args(&order));
    let lacks = Mismatch::Attribute {
        key: "tee/type".into(),
        value: "cpu".into(),
    };
    assert!(r["log"].as_str().unwrap_or("").contains(&lacks.to_string()), "{r}");
    let w: WhyNoBids = net.cli_as(&["deployment", "why-no-bids", &format!("{alice}/50")]);
    let provider: pazar_types::Address = net.address("provider").parse().expect("address");
    let reasons: Vec<&str> = w
        .orders
        .iter()
        .flat_map(|o| &o.providers)
        .filter(|p| p.provider == Some(provider))
        .map(|p| p.why.as_str())
        .collect();
    assert_eq!(reasons, [lacks.to_string()], "{w:?}");
}

/// An `ip` endpoint asks for a dedicated IP address; a provider that does not advertise
/// leasing them (`feat-endpoint-ip=true`) cannot bid, so the tenant is never handed a shared
/// host port instead.
#[test]
fn a_leased_ip_gets_no_bid_from_a_provider_that_leases_no_ips() {
    let net = common::devnet(200);
    register(&net, "provider", &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("ip.yaml");
    std::fs::write(
        &f,
        "version: \"2.0\"\nendpoints:\n  pub-ip: {kind: ip}\nservices:\n  web:\n    image: nginx:1.25\n    expose: [{port: 80, to: [{global: true, ip: pub-ip}]}]\nprofiles:\n  compute:\n    web: {resources: {cpu: {units: 0.5}, memory: {size: 128Mi}, storage: {size: 256Mi}}}\n  placement:\n    dc: {pricing: {web: {denom: uusd, amount: 10000}}}\ndeployment:\n  web: {dc: {profile: web, count: 1}}\n",
    )
    .expect("sdl");
    let out = deploy(&net, &f, "60");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let alice = net.address("alice");
    let order = format!("{alice}/60/1/1");
    let r = tx_failed(&net, &bid_args(&order));
    assert!(
        r["log"].as_str().unwrap_or("").contains("wants a leased IP address"),
        "{r}"
    );
    net.tx_ok(&[
        "tx",
        "provider",
        "update",
        "--from",
        "provider",
        "--host-uri",
        "https://127.0.0.1:1",
        "--tls-fingerprint",
        &"11".repeat(32),
        "--attr",
        "feat-endpoint-ip=true",
    ]);
    net.tx_ok(&bid_args(&order));
}
