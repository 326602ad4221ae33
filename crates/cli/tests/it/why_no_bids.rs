//! No silent "no bids": `pazar deployment why-no-bids` names, per provider, what it lacks.

use crate::common;

use pazar_client::deploy::WhyNoBids;
use pazar_types::market::Mismatch;
use pazar_types::Address;

#[test]
fn why_no_bids_gives_each_provider_the_ledger_s_reason_the_missing_attribute_or_gpu() {
    let net = common::devnet(200);
    let fp = "11".repeat(32);
    for (key, region) in [("provider", "eu"), ("bob", "local")] {
        net.tx_ok(&[
            "tx",
            "provider",
            "create",
            "--from",
            key,
            "--host-uri",
            "https://127.0.0.1:1",
            "--tls-fingerprint",
            &fp,
            "--attr",
            &format!("region={region}"),
        ]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let sdl = dir.path().join("gpu.yaml");
    std::fs::write(
        &sdl,
        "version: \"2.0\"\nservices:\n  app:\n    image: x/y:1\n    expose: [{port: 80, to: [{global: true}]}]\nprofiles:\n  compute:\n    g:\n      resources:\n        cpu: {units: 1}\n        memory: {size: 1Gi}\n        storage: {size: 1Gi}\n        gpu:\n          units: 1\n          attributes: {vendor: {nvidia: [{model: h100}]}}\n  placement:\n    dc:\n      attributes: {region: local}\n      pricing: {g: {denom: uusd, amount: 5000}}\ndeployment:\n  app: {dc: {profile: g, count: 1}}\n",
    )
    .expect("sdl");
    let d = net.deploy(&[
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "5",
        "--create-only",
    ]);
    common::assert_committed(&d.tx, "deploy --create-only");
    let alice = net.address("alice");
    let w: WhyNoBids = net.cli_as(&["deployment", "why-no-bids", &format!("{alice}/5")]);
    assert_eq!(w.orders.len(), 1, "{w:?}");
    let why = |who: &str| {
        let a: Address = net.address(who).parse().expect("address");
        w.orders[0]
            .providers
            .iter()
            .find(|r| r.provider == Some(a))
            .unwrap_or_else(|| panic!("no reason for {who}: {w:?}"))
            .why
            .clone()
    };
    // Each reason is the ledger's matching rule's own, word for word.
    let region = Mismatch::Attribute {
        key: "region".into(),
        value: "local".into(),
    };
    assert_eq!(why("provider"), region.to_string());
    let gpu = Mismatch::Gpu {
        unit: 1,
        wanted: "vendor/nvidia/model/h100".into(),
    };
    assert_eq!(why("bob"), gpu.to_string());
}
