//! What a valid file becomes: ledger groups, the manifest, its version hash (stable across
//! formatting, pinned for corpus files), and the translation of Akash-specific values.

use crate::common;

use std::path::PathBuf;

use common::{options, pazar_auditor, with_pazar_auditor};
use pazar_sdl::{parse, SdlVersion};
use pazar_types::market::{Attribute, EndpointKind};

const GPU_APP: &str = r#"
version: "2.0"
endpoints:
  web-ip:
    kind: ip
services:
  api:
    image: example/api:1.2
    env:
      - MODE=prod
    expose:
      - port: 8080
        as: 80
        accept: [api.example.com]
        to:
          - global: true
      - port: 9000
        proto: udp
        to:
          - global: true
            ip: web-ip
    params:
      storage:
        models:
          mount: /models
  db:
    image: postgres:16
    expose:
      - port: 5432
        to:
          - service: api
profiles:
  compute:
    gpu:
      resources:
        cpu: {units: 4}
        memory: {size: 16Gi}
        storage:
          - size: 20Gi
          - name: models
            size: 100Gi
            attributes: {persistent: true, class: beta3}
        gpu:
          units: 2
          attributes:
            vendor:
              nvidia:
                - model: H100
                  ram: 80Gi
                  interface: sxm
                - model: a100
    small:
      resources:
        cpu: {units: 500m}
        memory: {size: 1Gi}
        storage: {size: 5Gi}
  placement:
    dc:
      attributes: {region: eu-west, tier: community}
      signedBy:
        anyOf: [akash1365yvmc4s7awdyj3n2sav7xfx76adc6dnmlx63, PAZAR_AUDITOR]
      pricing:
        gpu: {denom: uact, amount: 1000.5}
        small: {denom: uact, amount: 10}
deployment:
  api:
    dc: {profile: gpu, count: 2}
  db:
    dc: {profile: small, count: 1}
"#;

/// [`GPU_APP`] with its Pazar auditor written in.
fn gpu_app() -> String {
    GPU_APP.replace("PAZAR_AUDITOR", &pazar_auditor().to_string())
}

#[test]
fn a_gpu_file_becomes_one_group_with_units_attributes_endpoints_and_stable_prices() {
    let d = parse(gpu_app().as_bytes(), &options()).expect("valid");
    assert_eq!(d.version, SdlVersion::V2_0);
    assert_eq!(d.groups.len(), 1);
    let g = &d.groups[0];
    assert_eq!(g.name, "dc");
    assert_eq!(
        g.requirements.attributes,
        vec![Attribute::new("region", "eu-west"), Attribute::new("tier", "community")]
    );
    // Beside a Pazar auditor in anyOf, the Akash one is left out with a warning: the
    // requirement only narrows.
    assert_eq!(g.requirements.signed_by.any_of, vec![pazar_auditor()]);
    assert!(
        d.warnings.iter().any(|w| w.message.contains("Akash auditor")),
        "{:?}",
        d.warnings
    );
    assert!(d.notes.iter().any(|n| n.contains("uact")), "{:?}", d.notes);

    assert_eq!(g.resources.len(), 2);
    let api = &g.resources[0];
    assert_eq!((api.id, api.count), (1, 2));
    assert_eq!(api.resources.cpu_millis, 4000);
    assert_eq!(api.resources.memory_bytes, 16 << 30);
    assert_eq!(api.price.denom.as_str(), "uusd");
    assert_eq!(api.price.amount.to_string(), "1000.5");
    assert_eq!(api.resources.gpu.units, 2);
    assert_eq!(
        api.resources.gpu.attributes,
        vec![
            Attribute::new("vendor/nvidia/model/a100", "true"),
            Attribute::new("vendor/nvidia/model/h100/ram/80Gi/interface/sxm", "true"),
        ]
    );
    let vols: Vec<(&str, u64, bool)> = api
        .resources
        .storage
        .iter()
        .map(|v| (v.name.as_str(), v.bytes, v.persistent()))
        .collect();
    assert_eq!(vols, vec![("default", 20 << 30, false), ("models", 100 << 30, true)]);
    let kinds: Vec<EndpointKind> = api.resources.endpoints.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            EndpointKind::SharedHttp,
            EndpointKind::RandomPort,
            EndpointKind::LeasedIp
        ]
    );
    let db = &g.resources[1];
    assert_eq!((db.id, db.count, db.resources.cpu_millis), (2, 1, 500));
    assert!(db.resources.endpoints.is_empty(), "db is not global");
    assert_eq!(g.max_price().expect("one denom").amount.to_string(), "2011");

    let m = &d.manifest.groups[0];
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, vec!["api", "db"]);
    let api_m = &m.services[0];
    assert_eq!(api_m.resource_id, 1);
    assert_eq!(api_m.env, vec!["MODE=prod".to_string()]);
    assert_eq!(api_m.storage[0].mount, "/models");
    assert_eq!(api_m.expose[0].hosts, vec!["api.example.com".to_string()]);
    assert_eq!((api_m.expose[0].port, api_m.expose[0].external_port), (8080, 80));
    assert_eq!(
        (api_m.expose[1].ip.as_str(), api_m.expose[1].endpoint_sequence),
        ("web-ip", 1)
    );
    assert_eq!(m.services[1].expose[0].service, "api");
}

#[test]
fn the_version_hash_ignores_formatting_and_changes_with_content() {
    let app = gpu_app();
    let a = parse(app.as_bytes(), &options()).expect("valid");
    // Same content in another layout: flow style, other key order, comments.
    let reordered = app
        .replace(
            "        cpu: {units: 4}\n        memory: {size: 16Gi}\n",
            "        memory:\n          size: 16Gi # comment\n        cpu:\n          units: 4\n",
        )
        .replace(
            "  db:\n    dc: {profile: small, count: 1}\n",
            "  db:\n    dc:\n      count: 1\n      profile: small\n",
        );
    assert_ne!(reordered, app);
    let b = parse(reordered.as_bytes(), &options()).expect("valid");
    assert_eq!(a.manifest_version, b.manifest_version);
    let c = parse(app.replace("postgres:16", "postgres:17").as_bytes(), &options()).expect("valid");
    assert_ne!(a.manifest_version, c.manifest_version);
    assert_eq!(a.manifest.canonical_bytes().first(), Some(&b'{'));
}

#[test]
fn version_2_1_shares_one_unit_between_services_of_one_profile() {
    let sdl = r#"
version: "2.1"
services:
  a:
    image: x
    expose: [{port: 80, to: [{global: true}]}]
  b:
    image: y
    expose: [{port: 81, to: [{global: true}]}]
profiles:
  compute:
    p: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
  placement:
    dc: {pricing: {p: {denom: uakt, amount: 100}}}
deployment:
  a: {dc: {profile: p, count: 1}}
  b: {dc: {profile: p, count: 1}}
"#;
    let d = parse(sdl.as_bytes(), &options()).expect("valid");
    assert_eq!(d.version, SdlVersion::V2_1);
    assert_eq!(d.groups[0].resources.len(), 1);
    assert_eq!(d.groups[0].resources[0].resources.endpoints.len(), 2);
    assert_eq!(d.groups[0].resources[0].price.denom.as_str(), "upzr");
    let ids: Vec<u32> = d.manifest.groups[0].services.iter().map(|s| s.resource_id).collect();
    assert_eq!(ids, vec![1, 1]);
    let v20 = parse(sdl.replace("\"2.1\"", "\"2.0\"").as_bytes(), &options()).expect("valid");
    assert_eq!(v20.groups[0].resources.len(), 2);
}

#[test]
fn a_file_over_the_size_limit_is_refused_before_parsing() {
    let big = vec![b'#'; 2 << 20];
    let errors = parse(&big, &options()).expect_err("too big");
    assert!(errors[0].message.contains("at most"), "{errors:?}");
}

/// Pinned version hashes of corpus files: a change here changes every deployment's version,
/// so it must be deliberate (`UPDATE_SNAPSHOTS=1` rewrites the file).
#[test]
fn corpus_manifest_versions_are_stable() {
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let snap = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/manifest_versions.txt");
    let files = [
        "Llama-3-8B.yaml",
        "minio.yaml",
        "codex.yaml",
        "DeepSeek-R1-Distill-Qwen-7B.yaml",
        "CodiMD.yaml",
        "micro-services-example.yaml",
    ];
    let mut got = String::new();
    for f in files {
        // Auditors are not part of the manifest: naming a Pazar one leaves the version as it was.
        let text = std::fs::read_to_string(corpus.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let d = parse(with_pazar_auditor(&text).as_bytes(), &options()).unwrap_or_else(|e| panic!("{f}: {e:?}"));
        got.push_str(&format!("{f} {}\n", hex::encode(d.manifest_version)));
    }
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snap, &got).expect("write");
        return;
    }
    let want = std::fs::read_to_string(&snap).expect("tests/manifest_versions.txt");
    assert_eq!(got, want);
}

/// Akash's 2.1 builder: services of one placement with one compute profile share a unit, and
/// the unit's count is the sum of theirs, so the order's price ceiling (what the lease pays)
/// covers every replica the manifest runs, exactly as two 2.0 units would.
#[test]
fn a_shared_unit_counts_and_prices_every_replica_of_its_services() {
    let sdl = r#"
version: "2.1"
services:
  a:
    image: x
    expose: [{port: 80, to: [{global: true}]}]
  b:
    image: y
  c:
    image: z
profiles:
  compute:
    p: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
    q: {resources: {cpu: {units: 2}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
  placement:
    dc: {pricing: {p: {denom: uakt, amount: 100}, q: {denom: uakt, amount: 7}}}
deployment:
  a: {dc: {profile: p, count: 2}}
  b: {dc: {profile: p, count: 3}}
  c: {dc: {profile: q, count: 4}}
"#;
    let d = parse(sdl.as_bytes(), &options()).expect("valid");
    let g = &d.groups[0];
    let counts: Vec<(u32, u32)> = g.resources.iter().map(|u| (u.id, u.count)).collect();
    assert_eq!(counts, vec![(1, 5), (2, 4)]);
    // 100 × (2 + 3) + 7 × 4 per block.
    assert_eq!(g.max_price().expect("one denom").amount.to_string(), "528");
    // The manifest keeps each service's own count; together they fill the unit exactly.
    let m: Vec<(&str, u32, u32)> = d.manifest.groups[0]
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.resource_id, s.count))
        .collect();
    assert_eq!(m, vec![("a", 1, 2), ("b", 1, 3), ("c", 2, 4)]);
    let v20 = parse(sdl.replace("\"2.1\"", "\"2.0\"").as_bytes(), &options()).expect("valid");
    assert_eq!(v20.groups[0].max_price(), g.max_price());
}

/// `params.tee` becomes the placement attribute `tee/type` (Akash's projection), so only a
/// provider that declares confidential computing matches; the note says so.
#[test]
fn a_tee_service_requires_providers_that_declare_its_tee_type() {
    let text = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/ollama-tee.yaml"))
        .expect("corpus file");
    let d = parse(with_pazar_auditor(&text).as_bytes(), &options()).expect("valid");
    assert_eq!(
        d.groups[0].requirements.attributes,
        vec![Attribute::new("tee/type", "cpu-gpu")]
    );
    assert!(d.notes.iter().any(|n| n.contains("tee/type=cpu-gpu")), "{:?}", d.notes);
    // The ledger's matching: a GPU provider audited by the named auditor is refused without the
    // attribute and accepted with it.
    let gpu = Attribute::new("capabilities/gpu/vendor/nvidia/model/h100", "true");
    let tee = Attribute::new("tee/type", "cpu-gpu");
    let audit = [tee.clone()];
    let audited = |a: &pazar_types::Address| (*a == pazar_auditor()).then_some(&audit[..]);
    let without = pazar_types::market::match_group(&d.groups[0], std::slice::from_ref(&gpu), audited);
    assert!(
        matches!(without, Err(pazar_types::market::Mismatch::Attribute { ref key, .. }) if key == "tee/type"),
        "{without:?}"
    );
    assert_eq!(
        pazar_types::market::match_group(&d.groups[0], &[gpu, tee], audited),
        Ok(())
    );
}

/// Akash's `permissions` grant a service read access to its deployment's logs or events; Pazar
/// grants a workload nothing, and says so instead of dropping the field unseen.
#[test]
fn permissions_are_announced_as_granting_nothing() {
    let sdl = r#"
version: "2.0"
services:
  web:
    image: nginx
    expose: [{port: 80, to: [{global: true}]}]
    params:
      permissions:
        read: [logs, events]
profiles:
  compute:
    web: {resources: {cpu: {units: 1}, memory: {size: 1Gi}, storage: {size: 1Gi}}}
  placement:
    dc: {pricing: {web: {denom: uact, amount: 50}}}
deployment:
  web: {dc: {profile: web, count: 1}}
"#;
    let d = parse(sdl.as_bytes(), &options()).expect("valid");
    assert!(
        d.warnings
            .iter()
            .any(|w| w.path == "services.web.params.permissions" && w.message.contains("grant nothing")),
        "{:?}",
        d.warnings
    );
}

/// The file whose manifest pazar-api's manifest tests hold as their fixture (one web service,
/// a persistent volume, an HTTP expose): it must keep yielding exactly that manifest, which
/// is pinned there by its version.
const REFERENCE_SDL: &str = r#"
version: "2.0"
services:
  web:
    image: example/web:1.2
    env: [MODE=prod, EMPTY=, FLAG]
    command: [/bin/sh, -c]
    args: ["exec web"]
    expose:
      - port: 8080
        as: 80
        accept: [shop.example.com]
        to: [{global: true}]
    params:
      storage:
        data: {mount: /data}
profiles:
  compute:
    web:
      resources:
        cpu: {units: 0.5}
        memory: {size: 256Mi}
        storage:
          - size: 1Gi
          - name: data
            size: 1Gi
            attributes: {persistent: true}
  placement:
    dc: {pricing: {web: {denom: uusd, amount: 10}}}
deployment:
  web: {dc: {profile: web, count: 1}}
"#;

#[test]
fn the_reference_file_yields_the_manifest_pazar_api_tests_as_its_fixture() {
    let d = parse(REFERENCE_SDL.as_bytes(), &options()).expect("valid");
    assert_eq!(
        hex::encode(d.manifest_version),
        "5e13635ef2715cc99e1882c03e0e1f778d818396695685e4152c023a585d4833"
    );
    let v = pazar_sdl::ValidManifest::decode(&d.manifest.canonical_bytes()).expect("valid");
    assert_eq!(*v, d.manifest);
}
