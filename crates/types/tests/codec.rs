//! The transaction encoding: round trips, canonical form under mutation, and a frozen fixture.

use pazar_types::market::{
    Endpoint, EndpointKind, Gpu, GroupSpec, LeaseCloseReason, PlacementRequirements, ResourceUnit, Resources, SignedBy,
    StorageVolume,
};
use pazar_types::{
    Address, Attribute, Coin, Dec, Denom, DeploymentId, KeyScheme, Msg, Price, ProviderInfo, SigningKey, Tx, TxBody,
};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn addr() -> impl Strategy<Value = Address> {
    (any::<bool>(), any::<[u8; 20]>()).prop_map(|(eth, b)| if eth { Address::Eth(b) } else { Address::Native(b) })
}

fn denom() -> impl Strategy<Value = Denom> {
    prop_oneof![Just("upzr"), Just("uusd"), Just("uakt")].prop_map(|d| Denom::new(d).expect("valid"))
}

fn coin() -> impl Strategy<Value = Coin> {
    (1..u128::MAX, denom()).prop_map(|(a, d)| Coin::new(a, d))
}

fn attr() -> impl Strategy<Value = Attribute> {
    ("[a-z][a-z0-9/]{1,20}", "[a-z0-9]{0,10}").prop_map(|(k, v)| Attribute::new(k, v))
}

fn attrs() -> impl Strategy<Value = Vec<Attribute>> {
    proptest::collection::btree_map("[a-z][a-z0-9/]{1,20}", "[a-z0-9]{0,10}", 0..4)
        .prop_map(|m| m.into_iter().map(|(k, v)| Attribute::new(k, v)).collect())
}

fn group() -> impl Strategy<Value = GroupSpec> {
    ("[a-z]{1,10}", attrs(), 10..100_000u32, 1..50u32, 1..1_000_000u64).prop_map(
        |(name, attributes, cpu, count, price)| GroupSpec {
            name,
            requirements: PlacementRequirements {
                attributes,
                signed_by: SignedBy::default(),
            },
            resources: vec![ResourceUnit {
                id: 1,
                resources: Resources {
                    cpu_millis: cpu,
                    memory_bytes: 1 << 30,
                    storage: vec![StorageVolume {
                        name: "data".into(),
                        bytes: 10 << 30,
                        attributes: vec![Attribute::new("persistent", "true")],
                    }],
                    gpu: Gpu {
                        units: 1,
                        attributes: vec![Attribute::new("vendor/nvidia/model/h100", "true")],
                    },
                    endpoints: vec![Endpoint {
                        kind: EndpointKind::RandomPort,
                        sequence: 1,
                    }],
                },
                count,
                price: Price {
                    denom: Denom::new("uusd").expect("valid"),
                    amount: Dec(u128::from(price) * 1_000_000_000_000),
                },
            }],
        },
    )
}

fn msg() -> impl Strategy<Value = Msg> {
    fn id() -> impl Strategy<Value = DeploymentId> {
        (addr(), any::<u64>()).prop_map(|(owner, dseq)| DeploymentId { owner, dseq })
    }
    prop_oneof![
        (addr(), coin()).prop_map(|(to, amount)| Msg::Send { to, amount }),
        (attrs(), any::<[u8; 32]>()).prop_map(|(attributes, tls_fingerprint)| {
            Msg::CreateProvider {
                host_uri: "https://p.example.com:8443".into(),
                tls_fingerprint,
                attributes,
                info: ProviderInfo {
                    email: "a@b.c".into(),
                    website: String::new(),
                },
            }
        }),
        (addr(), proptest::collection::vec(attr(), 1..2))
            .prop_map(|(provider, attributes)| { Msg::SignProviderAttributes { provider, attributes } }),
        (
            any::<u64>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(group(), 1..3),
            coin(),
            proptest::option::of(0..100u32)
        )
            .prop_filter("unique group names", |(_, _, g, _, _)| g
                .iter()
                .map(|x| &x.name)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == g.len())
            .prop_map(|(dseq, version, groups, deposit, auto_accept_after)| {
                Msg::CreateDeployment {
                    dseq,
                    version,
                    groups,
                    deposit,
                    auto_accept_after,
                }
            }),
        (id(), coin()).prop_map(|(id, amount)| Msg::DepositDeployment { id, amount }),
        (id(), any::<u32>(), addr(), 1..u64::MAX, coin()).prop_map(|(d, gseq, provider, price, deposit)| {
            let order = d.group(gseq).order(1);
            let _ = provider;
            Msg::CreateBid {
                order,
                price: Price {
                    denom: Denom::new("uusd").expect("valid"),
                    amount: Dec(u128::from(price)),
                },
                deposit,
            }
        }),
        (id(), addr()).prop_map(|(d, p)| Msg::CloseLease {
            lease: d.group(1).order(1).bid(p),
            reason: LeaseCloseReason::Unstable
        }),
        Just(Msg::DeleteProvider),
        train_msg(),
    ]
}

/// The training messages (appended variants), valid by construction.
fn train_msg() -> impl Strategy<Value = Msg> {
    use pazar_types::train::{
        Compression, Contributor, DatasetSpec, JobSpec, ModelSpec, PhaseBlocks, TrainParams, Verdict,
    };
    let spec =
        (any::<[u8; 32]>(), 1..100u32, 1..8u16, any::<u64>()).prop_map(|(root, rounds, workers, seed)| JobSpec {
            name: "job".into(),
            model: ModelSpec {
                vocab: 256,
                dim: 64,
                layers: 2,
                heads: 4,
                ffn_dim: 128,
                seq_len: 32,
            },
            dataset: root,
            init_checkpoint: [3; 32],
            params: TrainParams {
                inner_steps: 8,
                segment_steps: 4,
                batch: 2,
                inner_lr_micro: 300,
                weight_decay_micro: 0,
                outer_lr_milli: 700,
                outer_momentum_milli: 900,
                compression: Compression::TopKInt8 { per_mille: 5 },
                seed,
            },
            min_workers: workers,
            max_workers: workers + 1,
            rounds,
            phases: PhaseBlocks {
                train: 10,
                commit: 2,
                reveal: 2,
                audit: 5,
                dispute: 3,
                aggregate: 3,
            },
            budget: Coin::new(1_000, Denom::new("upzr").expect("valid")),
            bond: Coin::new(10, Denom::new("upzr").expect("valid")),
            audit_per_mille: 150,
            referees: 3,
        });
    prop_oneof![
        (any::<[u8; 32]>(), addr()).prop_map(|(root, address)| Msg::RegisterDataset {
            spec: DatasetSpec {
                name: "d".into(),
                root,
                chunks: 2,
                bytes: 2_000,
                contributors: vec![Contributor { address, chunks: 2 }],
            }
        }),
        spec.prop_map(|spec| Msg::OpenJob { spec }),
        any::<u64>().prop_map(|job| Msg::JoinJob {
            job,
            blob_uri: "http://127.0.0.1:7000/blobs".into()
        }),
        (any::<u64>(), any::<u32>(), any::<[u8; 32]>()).prop_map(|(job, round, commitment)| Msg::CommitUpdate {
            job,
            round,
            commitment
        }),
        (any::<u64>(), any::<u32>(), any::<[[u8; 32]; 5]>()).prop_map(|(job, round, h)| Msg::RevealUpdate {
            job,
            round,
            update: h[0],
            trace: h[1],
            ef_in: h[2],
            ef_out: h[3],
            seal: h[4],
        }),
        (
            any::<u64>(),
            addr(),
            0..3u32,
            proptest::collection::vec(any::<[u8; 32]>(), 1..5),
            proptest::collection::vec(any::<[u8; 32]>(), 2..6)
        )
            .prop_map(|(job, target, segment, steps, trace)| Msg::PostAudit {
                job,
                round: 1,
                target,
                verdict: Verdict::Fail { segment, steps, trace },
            }),
        (any::<u64>(), addr(), any::<bool>(), any::<[u8; 32]>()).prop_map(|(job, target, available, digest)| {
            Msg::PostAudit {
                job,
                round: 1,
                target,
                verdict: if available {
                    Verdict::Pass { digest }
                } else {
                    Verdict::Unavailable
                },
            }
        }),
        (any::<u64>(), proptest::collection::vec(any::<[u8; 32]>(), 1..5)).prop_map(|(job, steps)| Msg::DisputeAudit {
            job,
            round: 0,
            steps
        }),
        (any::<u64>(), addr(), any::<[u8; 32]>()).prop_map(|(job, target, hash)| Msg::PostReferee {
            job,
            round: 2,
            target,
            hash
        }),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(job, checkpoint)| Msg::PostCheckpoint {
            job,
            round: 3,
            checkpoint,
            left_out: Vec::new(),
        }),
        any::<u64>().prop_map(|job| Msg::LeaveJob { job }),
        any::<u64>().prop_map(|job| Msg::CancelJob { job }),
    ]
}

fn tx() -> impl Strategy<Value = Tx> {
    (
        any::<bool>(),
        any::<u8>(),
        any::<u64>(),
        proptest::collection::vec(msg(), 1..4),
        "[ -~]{0,20}",
    )
        .prop_map(|(eth, k, sequence, msgs, memo)| {
            let mut secret = [k; 32];
            secret[0] = 1;
            let key =
                SigningKey::from_secret(if eth { KeyScheme::Eth } else { KeyScheme::Ed25519 }, &secret).expect("valid");
            TxBody {
                chain_id: "pazar-1".into(),
                sender: key.address(),
                sequence,
                fee: Coin::new(100, Denom::new("upzr").expect("valid")),
                msgs,
                memo,
            }
            .sign(&key)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encoding_round_trips_and_signatures_verify(tx in tx()) {
        let bytes = tx.encode();
        let back = Tx::decode(&bytes).expect("valid transactions decode");
        prop_assert_eq!(&back, &tx);
        prop_assert!(back.verify_signature().is_ok());
    }

    #[test]
    fn mutated_bytes_either_fail_or_stay_canonical(tx in tx(), edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4)) {
        let mut bytes = tx.encode();
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len().max(1));
            match kind {
                0 if !bytes.is_empty() => {
                    let n = bytes.len();
                    bytes[i % n] = byte;
                }
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if !bytes.is_empty() => { bytes.remove(i % bytes.len()); }
                _ => {}
            }
        }
        if let Ok(decoded) = Tx::decode(&bytes) {
            prop_assert_eq!(decoded.encode(), bytes);
        }
    }
}

#[test]
fn decoder_rejects_trailing_bytes_unknown_tags_and_overlong_lengths() {
    let key = SigningKey::from_secret(KeyScheme::Ed25519, &[5; 32]).expect("valid");
    let body = TxBody {
        chain_id: "c1".into(),
        sender: key.address(),
        sequence: 0,
        fee: Coin::new(1, Denom::new("upzr").expect("valid")),
        msgs: vec![Msg::DeleteProvider],
        memo: String::new(),
    };
    let bytes = body.sign(&key).encode();
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(Tx::decode(&trailing).is_err());
    // chain_id length prefix claims more bytes than exist.
    let mut overlong = bytes.clone();
    overlong[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(Tx::decode(&overlong).is_err());
    // The message tag sits after chain id (4+2), sender (1+20), sequence (8), fee (4+4+16), msg count (4).
    let tag_at = 4 + 2 + 1 + 20 + 8 + 4 + 4 + 16 + 4;
    assert_eq!(bytes[tag_at], 3, "DeleteProvider is variant 3");
    let mut unknown = bytes.clone();
    unknown[tag_at] = 200;
    assert!(Tx::decode(&unknown).is_err());
    assert!(Tx::decode(&[]).is_err());
    assert!(Tx::decode(&vec![0u8; 70_000]).is_err());
}

/// The encoding is frozen: changing it is a visible, reviewed decision (update this fixture).
#[test]
fn encoding_fixture_is_frozen() {
    let key = SigningKey::from_secret(KeyScheme::Ed25519, &[42; 32]).expect("valid");
    let body = TxBody {
        chain_id: "pazar-devnet-1".into(),
        sender: key.address(),
        sequence: 7,
        fee: Coin::new(200, Denom::new("upzr").expect("valid")),
        msgs: vec![Msg::Send {
            to: Address::Eth([0xab; 20]),
            amount: Coin::new(1_000_000, Denom::new("uusd").expect("valid")),
        }],
        memo: "fixture".into(),
    };
    let bytes = body.sign(&key).encode();
    let digest = hex::encode(Sha256::digest(&bytes));
    assert_eq!(bytes.len(), 229);
    assert_eq!(
        digest,
        "32bfa85abf3e9358a7c9de03f77d470b56796c18aa250b79213cd6ae0c1aafae"
    );
}
