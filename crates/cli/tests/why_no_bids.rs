//! No silent "no bids": `pazar deployment why-no-bids` names, per provider, what it lacks.

mod common;

#[test]
fn why_no_bids_names_the_missing_attribute_and_gpu_per_provider() {
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
    let d = net.cli(&[
        "deploy",
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "5",
        "--create-only",
    ]);
    assert_eq!(d["tx"]["receipt"]["code"], 0, "{d}");
    let alice = net.address("alice");
    let v = net.cli(&["deployment", "why-no-bids", &format!("{alice}/5")]);
    let rows = v["orders"][0]["providers"].as_array().expect("rows").clone();
    let why = |who: &str| {
        let a = net.address(who);
        rows.iter()
            .find(|r| r["provider"] == a.as_str())
            .and_then(|r| r["why"].as_str())
            .unwrap_or("")
            .to_string()
    };
    assert!(why("provider").contains("requires attribute region=local"), "{v}");
    let gpu = why("bob");
    assert!(
        gpu.contains("needs GPU vendor/nvidia/model/h100") && gpu.contains("no GPU"),
        "{v}"
    );
}
