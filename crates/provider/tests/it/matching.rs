//! One matching rule, three callers that must agree: the ledger (a real `State` applying a
//! signed `CreateBid`), the provider's bid engine (with capacity and prices that never refuse,
//! so only the rule can) and "why no bids". On random groups and providers, and on every group
//! of the SDL corpus against a fixed set of providers, all three give the same answer, down to
//! the reason.

use std::collections::BTreeMap;
use std::path::PathBuf;

use proptest::prelude::*;
use proptest::strategy::ValueTree;

use pazar_client::why_no_bids::{self, ProviderFacts, Verdict};
use pazar_ledger::state::GenesisBalance;
use pazar_ledger::{BlockHeader, Genesis, Params, Receipt, State};
use pazar_provider::bidding::{self, Free, PriceList, ProviderView, Refusal};
use pazar_provider::inventory::{self, GpuInfo};
use pazar_types::market::{
    Endpoint, EndpointKind, Gpu, GroupSpec, Mismatch, OrderId, PlacementRequirements, ResourceUnit, Resources,
    SignedBy, StorageVolume,
};
use pazar_types::{Address, Attribute, Coin, Dec, Denom, KeyScheme, Msg, Price, ProviderInfo, SigningKey, TxBody};

const CHAIN: &str = "pazar-matching-1";

fn a(k: &str, v: &str) -> Attribute {
    Attribute::new(k, v)
}

fn denom(name: &str) -> Denom {
    Denom::new(name).expect("valid denomination")
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_secret(KeyScheme::Ed25519, &[n; 32]).expect("valid secret")
}

/// A provider as the test knows it: its key, its attributes, the GPUs behind its GPU
/// attributes, and what each auditor signed for it.
#[derive(Debug, Clone)]
struct Provider {
    key: u8,
    attributes: Vec<Attribute>,
    gpus: Vec<GpuInfo>,
    audits: BTreeMap<u8, Vec<Attribute>>,
}

impl Provider {
    fn address(&self) -> Address {
        key(self.key).address()
    }
    fn audits(&self) -> BTreeMap<Address, Vec<Attribute>> {
        self.audits
            .iter()
            .map(|(k, v)| (key(*k).address(), v.clone()))
            .collect()
    }
}

/// The answer all three callers must give: match, or this mismatch.
type Answer = Result<(), Mismatch>;

/// The bid engine's decision with more free capacity than any group asks for and prices that
/// never exceed a ceiling: only the matching rule can refuse.
fn engine(group: &GroupSpec, p: &Provider) -> Answer {
    let need: usize = group
        .resources
        .iter()
        .map(|u| u.count as usize * u.resources.gpu.units as usize)
        .sum();
    let free = Free {
        cpu_millis: u64::MAX / 4,
        memory_bytes: u64::MAX / 4,
        storage_bytes: u64::MAX / 4,
        gpus: p
            .gpus
            .iter()
            .flat_map(|g| std::iter::repeat_n(g.clone(), need))
            .collect(),
    };
    let zero = Dec::ZERO;
    let prices = PriceList {
        cpu_milli: zero,
        memory_gib: zero,
        storage_gib: zero,
        persistent_gib: zero,
        gpu: BTreeMap::from([("*".to_string(), zero)]),
        endpoint: zero,
        leased_ip: zero,
        margin_percent: 0,
        denoms: Vec::new(),
    };
    let view = ProviderView {
        address: Some(p.address()),
        attributes: p.attributes.clone(),
        audits: p.audits(),
    };
    match bidding::evaluate(group, &view, &free, &prices) {
        Ok(_) => Ok(()),
        Err(Refusal::Requirements(m)) => Err(m),
        Err(other) => panic!("with ample capacity only the rule may refuse, yet: {other}"),
    }
}

fn tenant_view(group: &GroupSpec, p: &Provider) -> Answer {
    let facts = ProviderFacts {
        address: p.address(),
        attributes: p.attributes.clone(),
        audits: p.audits(),
    };
    match why_no_bids::why_no_bids(group, std::slice::from_ref(&facts)).remove(0) {
        (addr, Verdict::Matches { .. }) => {
            assert_eq!(addr, p.address());
            Ok(())
        }
        (_, Verdict::Mismatch(m)) => Err(m),
    }
}

/// A chain on which every key is funded, driven block by block.
struct Ledger {
    state: State,
    seqs: BTreeMap<Address, u64>,
}

impl Ledger {
    fn new(keys: &[u8]) -> Ledger {
        let coins = vec![
            Coin::new(1_000_000_000_000, denom("upzr")),
            Coin::new(1_000_000_000_000, denom("uusd")),
        ];
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            params: Params::devnet("upzr", "uusd"),
            balances: keys
                .iter()
                .map(|k| GenesisBalance {
                    address: key(*k).address(),
                    coins: coins.clone(),
                })
                .collect(),
        };
        Ledger {
            state: State::from_genesis(&genesis).expect("valid genesis"),
            seqs: BTreeMap::new(),
        }
    }

    fn sign(&mut self, k: u8, msgs: Vec<Msg>) -> Vec<u8> {
        let key = key(k);
        let seq = self.seqs.entry(key.address()).or_insert(0);
        let body = TxBody {
            chain_id: CHAIN.into(),
            sender: key.address(),
            sequence: *seq,
            fee: Coin::new(100 * msgs.len() as u128, denom("upzr")),
            msgs,
            memo: String::new(),
        };
        *seq += 1;
        body.sign(&key).encode()
    }

    fn block(&mut self, txs: Vec<Vec<u8>>) -> Vec<Receipt> {
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: self.state.height + 1,
            time_ms: 0,
        };
        self.state.apply_block(&header, &txs).expect("block accepted").receipts
    }
}

fn create_provider(attributes: Vec<Attribute>) -> Msg {
    Msg::CreateProvider {
        host_uri: "https://provider.example.com:8443".into(),
        tls_fingerprint: [7; 32],
        attributes,
        info: ProviderInfo {
            email: String::new(),
            website: String::new(),
        },
    }
}

fn create_bid(order: OrderId, group: &GroupSpec) -> Msg {
    Msg::CreateBid {
        order,
        price: group.max_price().expect("a valid group has a ceiling"),
        deposit: Coin::new(500_000, denom("upzr")),
    }
}

/// The ledger's answer from a bid's receipt: accepted, or refused by the rule with `expected`'s
/// reason (anything else fails the test).
fn ledger_answer(r: &Receipt, expected: &Answer) -> Answer {
    if r.is_ok() {
        return Ok(());
    }
    assert_eq!(
        (r.codespace.as_str(), r.code),
        ("market", 17),
        "the bid failed for another reason than matching: {}",
        r.log
    );
    let Err(m) = expected else {
        panic!("the ledger refused a bid the others accept: {}", r.log)
    };
    assert_eq!(r.log, format!("provider does not satisfy the order: {m}"));
    Err(m.clone())
}

fn assert_ok(receipts: &[Receipt]) {
    for r in receipts {
        assert!(
            r.is_ok(),
            "setup transaction failed: {}/{} {}",
            r.codespace,
            r.code,
            r.log
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Random groups and providers.

const TENANT: u8 = 1;
const PROVIDER: u8 = 2;
/// Registered so that every auditor has audited someone, which `CreateDeployment` requires of a
/// `signedBy` that can ever be met.
const WITNESS: u8 = 3;
const AUDITORS: [u8; 3] = [10, 11, 12];

fn gpu(vendor: &str, model: &str, mib: u64, interface: &str) -> GpuInfo {
    GpuInfo {
        vendor: vendor.into(),
        model: model.into(),
        name: model.into(),
        memory_bytes: mib << 20,
        interface: interface.into(),
        uuid: format!("GPU-{model}-{interface}"),
    }
}

fn gpu_kinds() -> Vec<GpuInfo> {
    vec![
        gpu("nvidia", "h100", 81_559, "sxm"),
        gpu("nvidia", "a100", 40_960, "pcie"),
        gpu("nvidia", "rtx4090", 24_564, "pcie"),
        gpu("amd", "mi300x", 196_608, ""),
    ]
}

/// Keys with and without globs, some matching the provider keys below only across a `/`.
const PLACEMENT_KEYS: &[&str] = &[
    "region",
    "region*",
    "regio*",
    "tier",
    "ti*",
    "capabilities/cpu/arch",
    "capabilities/cpu/*",
    "capabilities/*",
    "host",
];
const PROVIDER_KEYS: &[&str] = &[
    "region",
    "region-eu",
    "region/eu",
    "tier",
    "tier-x",
    "capabilities/cpu/arch",
    "capabilities/cpu/arch/v2",
    "capabilities/cpu",
    "host",
];
const VALUES: &[&str] = &["eu", "us", "1", "amd64"];

/// Storage groups a provider may advertise, each under its own id.
fn storage_groups() -> Vec<Vec<Attribute>> {
    let g = |id: &str, kv: &[(&str, &str)]| -> Vec<Attribute> {
        kv.iter()
            .map(|(k, v)| a(&format!("capabilities/storage/{id}/{k}"), v))
            .collect()
    };
    vec![
        g("1", &[("class", "beta2")]),
        g("2", &[("class", "beta3"), ("persistent", "true")]),
        g("3", &[("class", "ram"), ("persistent", "false")]),
        g("4", &[("class", "default")]),
        g("5", &[("class", "beta1"), ("persistent", "false")]),
    ]
}

/// Volumes a unit may ask for besides its ephemeral root (as the SDL writes them).
fn volume_kinds() -> Vec<Vec<Attribute>> {
    vec![
        vec![a("class", "beta2"), a("persistent", "true")],
        vec![a("class", "beta3"), a("persistent", "true")],
        vec![a("class", "beta1"), a("persistent", "true")],
        vec![a("class", "default"), a("persistent", "true")],
        vec![a("class", "ram")],
    ]
}

/// GPU attributes of a unit, as the SDL writes them.
const GPU_WANTS: &[&str] = &[
    "vendor/nvidia/model/h100",
    "vendor/nvidia/model/h100/ram/80Gi",
    "vendor/nvidia/model/h100/ram/80Gi/interface/sxm",
    "vendor/nvidia/model/h100/interface/pcie",
    "vendor/nvidia/model/a100",
    "vendor/nvidia/model/a100/ram/40Gi",
    "vendor/nvidia/model/a100/ram/80Gi",
    "vendor/nvidia/model/*",
    "vendor/amd/model/*",
    "vendor/nvidia/model/rtx4090/ram/24Gi/interface/pcie",
];

/// Up to `max` attributes with distinct keys from `keys`, values from [`VALUES`].
fn attributes(keys: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<Attribute>> {
    proptest::sample::subsequence(keys, 0..=max).prop_flat_map(|ks| {
        let n = ks.len();
        (Just(ks), proptest::collection::vec(proptest::sample::select(VALUES), n))
            .prop_map(|(ks, vs)| ks.iter().zip(vs).map(|(k, v)| a(k, v)).collect())
    })
}

fn auditors(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::sample::subsequence(AUDITORS.to_vec(), 0..=max)
}

fn unit(id: u32) -> impl Strategy<Value = ResourceUnit> {
    (
        1u32..=2,
        proptest::option::of(proptest::sample::select(volume_kinds())),
        proptest::option::of((1u32..=2, proptest::sample::subsequence(GPU_WANTS, 1..=2))),
        any::<bool>(),
    )
        .prop_map(move |(count, volume, gpu, leased_ip)| {
            let mut storage = vec![StorageVolume {
                name: "default".into(),
                bytes: 1 << 30,
                attributes: vec![],
            }];
            if let Some(attributes) = volume {
                storage.push(StorageVolume {
                    name: "data".into(),
                    bytes: 1 << 30,
                    attributes,
                });
            }
            let mut endpoints = vec![Endpoint {
                kind: EndpointKind::SharedHttp,
                sequence: 0,
            }];
            if leased_ip {
                endpoints.push(Endpoint {
                    kind: EndpointKind::LeasedIp,
                    sequence: 1,
                });
            }
            ResourceUnit {
                id,
                resources: Resources {
                    cpu_millis: 100,
                    memory_bytes: 128 << 20,
                    storage,
                    gpu: match gpu {
                        Some((units, wants)) => Gpu {
                            units,
                            attributes: wants.iter().map(|k| a(k, "true")).collect(),
                        },
                        None => Gpu::default(),
                    },
                    endpoints,
                },
                count,
                price: Price {
                    denom: denom("uusd"),
                    amount: Dec::from_int(1_000).expect("small"),
                },
            }
        })
}

fn group() -> impl Strategy<Value = GroupSpec> {
    (attributes(PLACEMENT_KEYS, 3), auditors(2), auditors(3), 1u32..=3)
        .prop_flat_map(|(attrs, all_of, any_of, n)| {
            let units: Vec<_> = (1..=n).map(unit).collect();
            (Just(attrs), Just(all_of), Just(any_of), units)
        })
        .prop_map(|(attributes, all_of, any_of, resources)| GroupSpec {
            name: "dc".into(),
            requirements: PlacementRequirements {
                attributes,
                signed_by: SignedBy {
                    all_of: all_of.iter().map(|k| key(*k).address()).collect(),
                    any_of: any_of.iter().map(|k| key(*k).address()).collect(),
                },
            },
            resources,
        })
}

/// What an auditor signs: attributes under provider keys, or under placement keys with their
/// globs dropped (one value per key, as the ledger requires).
fn signed() -> impl Strategy<Value = Vec<Attribute>> {
    prop_oneof![
        attributes(PROVIDER_KEYS, 4),
        attributes(PLACEMENT_KEYS, 3).prop_map(|attrs| {
            let mut out: Vec<Attribute> = Vec::new();
            for x in attrs {
                let k = x.key.trim_end_matches('*');
                if !out.iter().any(|o| o.key == k) {
                    out.push(a(k, &x.value));
                }
            }
            out
        }),
    ]
}

fn provider() -> impl Strategy<Value = Provider> {
    (
        attributes(PROVIDER_KEYS, 5),
        proptest::sample::subsequence(storage_groups(), 0..=3),
        proptest::sample::subsequence(gpu_kinds(), 0..=3),
        any::<bool>(),
        proptest::collection::vec(proptest::option::of(signed()), AUDITORS.len()),
    )
        .prop_map(|(own, storage, gpus, leases_ip, signed)| {
            let mut attributes = own;
            attributes.extend(storage.into_iter().flatten());
            attributes.extend(inventory::gpu_attributes(&gpus));
            if leases_ip {
                attributes.push(a(pazar_types::market::LEASED_IP_ATTRIBUTE, "true"));
            }
            let audits = AUDITORS
                .iter()
                .zip(signed)
                .filter_map(|(k, s)| s.filter(|s| !s.is_empty()).map(|s| (*k, s)))
                .collect();
            Provider {
                key: PROVIDER,
                attributes,
                gpus,
                audits,
            }
        })
}

/// The ledger's answer for `group` and `p` on a fresh chain, given what the others answered.
fn ledger(group: &GroupSpec, p: &Provider, expected: &Answer) -> Answer {
    let mut keys = vec![TENANT, PROVIDER, WITNESS];
    keys.extend(AUDITORS);
    let mut chain = Ledger::new(&keys);
    let mut txs = vec![
        chain.sign(PROVIDER, vec![create_provider(p.attributes.clone())]),
        chain.sign(WITNESS, vec![create_provider(vec![a("witness", "true")])]),
    ];
    for auditor in AUDITORS {
        let mut msgs = vec![Msg::SignProviderAttributes {
            provider: key(WITNESS).address(),
            attributes: vec![a("witness", "true")],
        }];
        if let Some(s) = p.audits.get(&auditor) {
            msgs.push(Msg::SignProviderAttributes {
                provider: p.address(),
                attributes: s.clone(),
            });
        }
        txs.push(chain.sign(auditor, msgs));
    }
    txs.push(chain.sign(
        TENANT,
        vec![Msg::CreateDeployment {
            dseq: 1,
            version: [1; 32],
            groups: vec![group.clone()],
            deposit: Coin::new(500_000, denom("uusd")),
            auto_accept_after: None,
        }],
    ));
    let order = key(TENANT).address();
    let order = OrderId {
        owner: order,
        dseq: 1,
        gseq: 1,
        oseq: 1,
    };
    txs.push(chain.sign(PROVIDER, vec![create_bid(order, group)]));
    let receipts = chain.block(txs);
    let (bid, setup) = receipts.split_last().expect("receipts");
    assert_ok(setup);
    ledger_answer(bid, expected)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_ledger_the_bid_engine_and_why_no_bids_agree_on_random_groups_and_providers(
        group in group(),
        p in provider(),
    ) {
        let tenant = tenant_view(&group, &p);
        prop_assert_eq!(&engine(&group, &p), &tenant);
        prop_assert_eq!(ledger(&group, &p, &tenant), tenant);
    }
}

/// The random cases reach every kind of answer, so agreement is not agreement on "match" alone.
#[test]
fn random_cases_reach_every_kind_of_answer() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (group(), provider());
    let mut seen = BTreeMap::new();
    for _ in 0..2_000 {
        let (g, p) = strategy.new_tree(&mut runner).expect("a case").current();
        let kind = match tenant_view(&g, &p) {
            Ok(()) => "match",
            Err(Mismatch::Attribute { .. }) => "attribute",
            Err(Mismatch::AllOfAuditor { .. }) => "all_of",
            Err(Mismatch::AnyOfAuditor { .. }) => "any_of",
            Err(Mismatch::Gpu { .. }) => "gpu",
            Err(Mismatch::Storage { .. }) => "storage",
            Err(Mismatch::LeasedIp { .. }) => "leased_ip",
        };
        *seen.entry(kind).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// The SDL corpus against a fixed set of providers.

const CORPUS_AUDITOR: u8 = 20;
const CORPUS_PROVIDERS: [u8; 6] = [30, 31, 32, 33, 34, 35];

fn corpus_providers() -> Vec<Provider> {
    let community = [
        a("host", "akash"),
        a("tier", "community"),
        a("organization", "akash.network"),
    ];
    let gpus = vec![
        gpu("nvidia", "h100", 81_559, "sxm"),
        gpu("nvidia", "a100", 81_920, "pcie"),
        gpu("nvidia", "rtx4090", 24_564, "pcie"),
    ];
    let storage = [
        a("capabilities/storage/1/class", "beta3"),
        a("capabilities/storage/1/persistent", "true"),
        a("capabilities/storage/2/class", "ram"),
        a("capabilities/storage/2/persistent", "false"),
    ];
    let mut full: Vec<Attribute> = community.to_vec();
    full.extend(storage.iter().cloned());
    full.extend(inventory::gpu_attributes(&gpus));
    full.push(a(pazar_types::market::LEASED_IP_ATTRIBUTE, "true"));
    let p = |key, attributes: Vec<Attribute>, gpus: Vec<GpuInfo>, signed: Option<Vec<Attribute>>| Provider {
        key,
        attributes,
        gpus,
        audits: signed
            .map(|s| BTreeMap::from([(CORPUS_AUDITOR, s)]))
            .unwrap_or_default(),
    };
    vec![
        // Nothing advertised, nobody's audit.
        p(30, vec![], vec![], None),
        // An Akash community provider with GPUs, persistent and RAM storage and leased IPs,
        // audited for what it claims.
        p(31, full.clone(), gpus.clone(), Some(community.to_vec())),
        // The same, with an audit that does not cover `host`.
        p(32, full, gpus.clone(), Some(vec![a("tier", "community")])),
        // Storage classes without `persistent`, no GPU, no audit.
        p(
            33,
            vec![
                a("host", "akash"),
                a("capabilities/storage/1/class", "beta3"),
                a("capabilities/storage/2/class", "ram"),
            ],
            vec![],
            None,
        ),
        // GPUs advertised by model only, as a daemon that did not publish ram and interface.
        p(
            34,
            vec![
                a("host", "akash"),
                a("capabilities/gpu/vendor/nvidia/model/h100", "true"),
                a("capabilities/gpu/vendor/nvidia/model/a100", "true"),
                a("capabilities/storage/1/class", "beta2"),
                a("capabilities/storage/1/persistent", "true"),
            ],
            gpus[..2].to_vec(),
            Some(vec![a("host", "akash")]),
        ),
        // A beta3 group that is explicitly not persistent.
        p(
            35,
            vec![
                a("host", "akash"),
                a("capabilities/storage/1/class", "beta3"),
                a("capabilities/storage/1/persistent", "false"),
            ],
            vec![],
            Some(vec![a("host", "akash")]),
        ),
    ]
}

/// `text` with every Akash auditor (`akash1…`) replaced by the corpus auditor, the edit a tenant
/// makes to keep an audit requirement on Pazar.
fn with_corpus_auditor(text: &str) -> String {
    let auditor = key(CORPUS_AUDITOR).address().to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("akash1") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + "akash1".len()..];
        let n = tail
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        out.push_str(&auditor);
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

fn corpus_groups() -> Vec<(String, Vec<GroupSpec>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdl/tests/corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} unreadable: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let opts = pazar_sdl::Options::new(denom("upzr"), denom("uusd"));
    let mut out = Vec::new();
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        let text = with_corpus_auditor(&std::fs::read_to_string(&f).expect("read"));
        match pazar_sdl::parse(text.as_bytes(), &opts) {
            Ok(d) => out.push((name, d.groups)),
            Err(errors) => panic!("{name} does not parse: {}", errors[0].render(&name)),
        }
    }
    out
}

#[test]
fn the_ledger_the_bid_engine_and_why_no_bids_agree_on_every_corpus_group() {
    let files = corpus_groups();
    assert!(files.len() >= 200, "only {} corpus files", files.len());
    let providers = corpus_providers();
    let mut keys = vec![TENANT, CORPUS_AUDITOR];
    keys.extend(CORPUS_PROVIDERS);
    let mut chain = Ledger::new(&keys);
    let mut setup = Vec::new();
    for p in &providers {
        setup.push(chain.sign(p.key, vec![create_provider(p.attributes.clone())]));
    }
    for p in &providers {
        if let Some(s) = p.audits.get(&CORPUS_AUDITOR) {
            setup.push(chain.sign(
                CORPUS_AUDITOR,
                vec![Msg::SignProviderAttributes {
                    provider: p.address(),
                    attributes: s.clone(),
                }],
            ));
        }
    }
    assert_ok(&chain.block(setup));

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for (dseq, (name, groups)) in (1u64..).zip(&files) {
        let mut txs = vec![chain.sign(
            TENANT,
            vec![Msg::CreateDeployment {
                dseq,
                version: [1; 32],
                groups: groups.clone(),
                deposit: Coin::new(500_000, groups[0].resources[0].price.denom.clone()),
                auto_accept_after: None,
            }],
        )];
        let mut expected = Vec::new();
        for (gseq, g) in (1u32..).zip(groups) {
            for p in &providers {
                let tenant = tenant_view(g, p);
                assert_eq!(engine(g, p), tenant, "{name}, group {}, provider {}", g.name, p.key);
                let order = OrderId {
                    owner: key(TENANT).address(),
                    dseq,
                    gseq,
                    oseq: 1,
                };
                txs.push(chain.sign(p.key, vec![create_bid(order, g)]));
                expected.push((g.name.clone(), p.key, tenant));
            }
        }
        let receipts = chain.block(txs);
        let (deployment, bids) = receipts.split_first().expect("receipts");
        assert_ok(std::slice::from_ref(deployment));
        for (r, (group, provider, tenant)) in bids.iter().zip(expected) {
            let kind = match &tenant {
                Ok(()) => "match".to_string(),
                Err(m) => format!("{m:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            };
            assert_eq!(
                ledger_answer(r, &tenant),
                tenant,
                "{name}, group {group}, provider {provider}"
            );
            *tally.entry(kind).or_insert(0) += 1;
        }
    }
    // The fixed providers meet the corpus in every way that matters, so agreement is tested on
    // refusals of each kind as well as on matches.
    for kind in ["match", "Attribute", "AnyOfAuditor", "Gpu", "Storage"] {
        assert!(tally.get(kind).is_some_and(|n| *n > 0), "no {kind} answer: {tally:?}");
    }
}
