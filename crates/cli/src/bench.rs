//! `pazar bench ledger`: throughput of signed market transactions against raw signature checks,
//! and the cost of the same block on a state with 10 versus 1,000,000 open leases.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::json;

use pazar_ledger::state::GenesisBalance;
use pazar_ledger::{BlockHeader, Genesis, Params, State};
use pazar_types::market::{Endpoint, EndpointKind, Gpu, GroupSpec, PlacementRequirements, ResourceUnit, Resources};
use pazar_types::{
    Address, Coin, Dec, Denom, DeploymentId, KeyScheme, Msg, OrderId, Price, ProviderInfo, SigningKey, TxBody,
};

const CHAIN: &str = "pazar-bench-1";
const TENANTS: usize = 100;
const PROVIDERS: usize = 20;
const DEPLOYMENTS_PER_TENANT: u64 = 10;
const SMALL_LEASES: usize = 10;
const BLOCK_TXS: usize = 1000;

pub struct LedgerOpts {
    pub leases: u64,
    pub blocks: usize,
}

fn denom(s: &str) -> Denom {
    Denom::new(s).expect("bench denominations are valid")
}

fn key(scheme: KeyScheme, kind: u8, i: u32) -> SigningKey {
    let mut secret = [0u8; 32];
    secret[0] = 1;
    secret[1] = kind;
    secret[2..6].copy_from_slice(&i.to_be_bytes());
    SigningKey::from_secret(scheme, &secret).expect("derived secrets are valid scalars")
}

fn spec(price_units: u128) -> GroupSpec {
    GroupSpec {
        name: "web".into(),
        requirements: PlacementRequirements::default(),
        resources: vec![ResourceUnit {
            id: 1,
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                storage: vec![],
                gpu: Gpu::default(),
                endpoints: vec![Endpoint {
                    kind: EndpointKind::SharedHttp,
                    sequence: 0,
                }],
            },
            count: 1,
            price: Price {
                denom: denom("uusd"),
                amount: Dec::from_int(price_units).expect("small"),
            },
        }],
    }
}

fn provider_msg() -> Msg {
    Msg::CreateProvider {
        host_uri: "https://provider.example.com:8443".into(),
        tls_fingerprint: [7; 32],
        attributes: vec![],
        info: ProviderInfo {
            email: String::new(),
            website: String::new(),
        },
    }
}

fn deliver(state: &mut State, sender: Address, msgs: Vec<Msg>) -> Result<()> {
    state
        .deliver_unchecked(sender, &msgs)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("bench setup failed: {e}"))
}

struct Setup {
    state: State,
    tenants: Vec<SigningKey>,
    providers: Vec<SigningKey>,
}

/// Genesis with funded tenants and providers (and `bulk` accounts for the large state), providers
/// registered, 10 open orders per tenant and `SMALL_LEASES` leases.
fn base(bulk_tenants: u32, bulk_providers: u32) -> Result<Setup> {
    let tenants: Vec<SigningKey> = (0..TENANTS as u32).map(|i| key(KeyScheme::Ed25519, 1, i)).collect();
    let providers: Vec<SigningKey> = (0..PROVIDERS as u32).map(|i| key(KeyScheme::Ed25519, 2, i)).collect();
    let rich = |a: Address| GenesisBalance {
        address: a,
        coins: vec![Coin::new(1 << 100, denom("upzr")), Coin::new(1 << 100, denom("uusd"))],
    };
    let mut balances: Vec<GenesisBalance> = tenants.iter().chain(&providers).map(|k| rich(k.address())).collect();
    balances.extend((0..bulk_tenants).map(|i| rich(bulk_tenant(i))));
    balances.extend((0..bulk_providers).map(|i| rich(bulk_provider(i))));
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        params: Params::devnet("upzr", "uusd"),
        balances,
    };
    let mut state = State::from_genesis(&genesis).context("bench genesis")?;
    state.skip_to(1);
    for p in &providers {
        deliver(&mut state, p.address(), vec![provider_msg()])?;
    }
    for t in &tenants {
        for dseq in 0..DEPLOYMENTS_PER_TENANT {
            let msg = Msg::CreateDeployment {
                dseq,
                version: [1; 32],
                groups: vec![spec(10)],
                deposit: Coin::new(1_000_000_000, denom("uusd")),
                auto_accept_after: None,
            };
            deliver(&mut state, t.address(), vec![msg])?;
        }
    }
    for (i, t) in tenants.iter().take(SMALL_LEASES).enumerate() {
        let order = DeploymentId {
            owner: t.address(),
            dseq: 0,
        }
        .group(1)
        .order(1);
        lease(&mut state, &order, providers[i % PROVIDERS].address())?;
    }
    // A node stores genesis before its first block: without this, the first measured block would
    // also pay for extracting the whole setup (genesis balances, deployments, leases) as changes.
    drop(state.take_changes());
    Ok(Setup {
        state,
        tenants,
        providers,
    })
}

fn bulk_tenant(i: u32) -> Address {
    Address::Native(account_bytes(3, i))
}

fn bulk_provider(i: u32) -> Address {
    Address::Native(account_bytes(4, i))
}

fn account_bytes(kind: u8, i: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0] = kind;
    b[1..5].copy_from_slice(&i.to_be_bytes());
    b
}

fn lease(state: &mut State, order: &OrderId, provider: Address) -> Result<()> {
    let bid = Msg::CreateBid {
        order: order.clone(),
        price: Price {
            denom: denom("uusd"),
            amount: Dec::from_int(1).expect("small"),
        },
        deposit: Coin::new(500_000, denom("upzr")),
    };
    deliver(state, provider, vec![bid])?;
    deliver(
        state,
        order.owner,
        vec![Msg::CreateLease {
            bid: order.bid(provider),
        }],
    )
}

/// With [`add_bulk_leases`]: every deployment's owner sets a runway policy (an alert at 600
/// blocks, an allowance that tops up to 3,600), and one deployment in a thousand has its
/// threshold placed so that it is reached during the `blocks` measured blocks after the
/// building height: those blocks do real top-ups, spread over them.
#[derive(Clone, Copy)]
struct BulkPolicies {
    blocks: u64,
}

/// Adds `n` more leases, each on its own deployment, from bulk accounts (and their runway
/// policies with `policies`).
fn add_bulk_leases(
    state: &mut State,
    n: u64,
    bulk_tenants: u32,
    bulk_providers: u32,
    policies: Option<BulkPolicies>,
) -> Result<()> {
    for i in 0..bulk_providers {
        deliver(state, bulk_provider(i), vec![provider_msg()])?;
    }
    for i in 0..n {
        let owner = bulk_tenant((i % u64::from(bulk_tenants)) as u32);
        let dseq = i / u64::from(bulk_tenants);
        let msg = Msg::CreateDeployment {
            dseq,
            version: [2; 32],
            groups: vec![spec(10)],
            deposit: Coin::new(500_000_000, denom("uusd")),
            auto_accept_after: None,
        };
        deliver(state, owner, vec![msg])?;
        let id = DeploymentId { owner, dseq };
        let order = id.group(1).order(1);
        lease(state, &order, bulk_provider((i % u64::from(bulk_providers)) as u32))?;
        if let Some(p) = policies {
            let mut low_blocks = 600;
            if i % 1000 == 0 {
                // Reached at measured height `state.height + 1 + k`.
                let k = (i / 1000) % p.blocks.max(1);
                let dry = state
                    .escrow_view(&id, state.height)
                    .and_then(|v| v.depletes_at)
                    .context("a bulk lease pays, so its escrow runs dry some day")?;
                low_blocks = dry - (state.height + 1 + k);
            }
            let policy = pazar_types::records::EscrowPolicySpec {
                low_blocks,
                top_up: Some(pazar_types::records::TopUpSpec {
                    limit: Coin::new(1_000_000_000_000, denom("uusd")),
                    target_blocks: low_blocks + 3_600,
                    expires_at: None,
                }),
            };
            deliver(state, owner, vec![Msg::SetEscrowPolicy { dseq, policy }])?;
        }
        if i % 10_000 == 0 {
            // No store here: drop the change set now and then so it does not grow unbounded.
            drop(state.take_changes());
        }
    }
    drop(state.take_changes());
    Ok(())
}

/// `count` blocks of `BLOCK_TXS` signed transactions: a quarter each of bids on open orders,
/// escrow deposits, lease withdrawals and sends.
fn make_blocks(setup: &Setup, first_height: u64, count: usize) -> Vec<(BlockHeader, Vec<Vec<u8>>)> {
    let mut seqs = std::collections::BTreeMap::<Address, u64>::new();
    let mut sign = |k: &SigningKey, msg: Msg| {
        let seq = seqs.entry(k.address()).or_insert(0);
        let body = TxBody {
            chain_id: CHAIN.into(),
            sender: k.address(),
            sequence: *seq,
            fee: Coin::new(100, denom("upzr")),
            msgs: vec![msg],
            memo: String::new(),
        };
        *seq += 1;
        body.sign(k).encode()
    };
    let t = &setup.tenants;
    let p = &setup.providers;
    let mut bid_slot = 0usize;
    let mut blocks = Vec::with_capacity(count);
    for b in 0..count {
        let mut txs = Vec::with_capacity(BLOCK_TXS);
        for i in 0..BLOCK_TXS {
            let n = b * BLOCK_TXS + i;
            let tx = match i % 4 {
                0 => {
                    // Orders of deployments 1..10 of every tenant are open; each provider bids once.
                    let slot = bid_slot;
                    bid_slot += 1;
                    let provider = &p[slot % PROVIDERS];
                    let order_n = slot / PROVIDERS;
                    let tenant = &t[order_n % TENANTS];
                    let dseq = 1 + (order_n / TENANTS) as u64 % (DEPLOYMENTS_PER_TENANT - 1);
                    let order = DeploymentId {
                        owner: tenant.address(),
                        dseq,
                    }
                    .group(1)
                    .order(1);
                    let price = Price {
                        denom: denom("uusd"),
                        amount: Dec::from_int(1 + (slot % 9) as u128).expect("small"),
                    };
                    sign(
                        provider,
                        Msg::CreateBid {
                            order,
                            price,
                            deposit: Coin::new(500_000, denom("upzr")),
                        },
                    )
                }
                1 => {
                    let tenant = &t[n % TENANTS];
                    let id = DeploymentId {
                        owner: tenant.address(),
                        dseq: (n / TENANTS) as u64 % DEPLOYMENTS_PER_TENANT,
                    };
                    sign(
                        tenant,
                        Msg::DepositDeployment {
                            id,
                            amount: Coin::new(1_000, denom("uusd")),
                        },
                    )
                }
                2 => {
                    let l = n % SMALL_LEASES;
                    let lease = DeploymentId {
                        owner: t[l].address(),
                        dseq: 0,
                    }
                    .group(1)
                    .order(1)
                    .bid(p[l % PROVIDERS].address());
                    sign(&p[l % PROVIDERS], Msg::WithdrawLease { lease })
                }
                _ => {
                    let from = &t[n % TENANTS];
                    let to = t[(n + 1) % TENANTS].address();
                    sign(
                        from,
                        Msg::Send {
                            to,
                            amount: Coin::new(1, denom("upzr")),
                        },
                    )
                }
            };
            txs.push(tx);
        }
        let header = BlockHeader {
            chain_id: CHAIN.into(),
            height: first_height + b as u64,
            time_ms: 0,
        };
        blocks.push((header, txs));
    }
    blocks
}

/// Applies the blocks; returns (milliseconds per block, failed transactions, automatic
/// top-ups made).
fn apply_all(state: &mut State, blocks: &[(BlockHeader, Vec<Vec<u8>>)]) -> Result<(Vec<f64>, usize, usize)> {
    let mut ms = Vec::with_capacity(blocks.len());
    let (mut failed, mut top_ups) = (0, 0);
    for (h, txs) in blocks {
        let t0 = Instant::now();
        let out = state.apply_block(h, txs)?;
        // A node hands the block's change set to its store; extracting it is part of the cost.
        let changes = state.take_changes();
        std::hint::black_box(changes);
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        failed += out.receipts.iter().filter(|r| !r.is_ok()).count();
        top_ups += out
            .end_block_events
            .iter()
            .filter(|e| matches!(e, pazar_types::Event::EscrowToppedUp { .. }))
            .count();
    }
    Ok((ms, failed, top_ups))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn ed25519_verify_per_s() -> f64 {
    let items: Vec<([u8; 32], [u8; 64], [u8; 32])> = (0..1000u32)
        .map(|i| {
            let k = ed25519_zebra::SigningKey::from(account_bytes_32(i));
            let msg = [i as u8; 32];
            (<[u8; 32]>::from(k.verification_key()), k.sign(&msg).to_bytes(), msg)
        })
        .collect();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < 1.0 {
        for (pk, sig, msg) in &items {
            let ok = pazar_types::keys::verify_ed25519(pk, sig, msg).is_ok();
            assert!(ok, "benchmark signatures are valid");
            n += 1;
        }
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

/// Batched verification of the very signatures the blocks carry, as the ledger checks them
/// (one `verify_signatures` call per block, decoding excluded), per second on this core.
fn ed25519_batch_verify_per_s(blocks: &[(BlockHeader, Vec<Vec<u8>>)]) -> Result<f64> {
    let decoded: Vec<Vec<(pazar_types::Tx, pazar_types::Hash32)>> = blocks
        .iter()
        .map(|(_, txs)| txs.iter().map(|b| pazar_types::Tx::decode_with_digest(b)).collect())
        .collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    let mut n = 0u64;
    while n == 0 || t0.elapsed().as_secs_f64() < 1.0 {
        for block in &decoded {
            let items: Vec<(&pazar_types::Tx, &pazar_types::Hash32)> = block.iter().map(|(t, d)| (t, d)).collect();
            let results = pazar_types::verify_signatures(&items);
            if results.iter().any(|r| r.is_err()) {
                bail!("a benchmark signature did not verify");
            }
            n += items.len() as u64;
        }
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

fn account_bytes_32(i: u32) -> [u8; 32] {
    let mut b = [9u8; 32];
    b[..4].copy_from_slice(&i.to_be_bytes());
    b
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

pub fn ledger(opts: &LedgerOpts) -> Result<serde_json::Value> {
    if opts.blocks == 0 {
        bail!("--blocks must be at least 1");
    }
    let bulk_tenants = 1000u32;
    let bulk_providers = 10u32;
    eprintln!("bench ledger: building the base state");
    let setup = base(bulk_tenants, bulk_providers)?;
    let first = setup.state.height + 1;
    eprintln!(
        "bench ledger: signing {} blocks of {BLOCK_TXS} transactions",
        opts.blocks
    );
    let blocks = make_blocks(&setup, first, opts.blocks);

    let verify_per_s = ed25519_verify_per_s();
    let batch_verify_per_s = ed25519_batch_verify_per_s(&blocks)?;

    let mut small = setup.state.clone();
    let (small_ms, small_failed, _) = apply_all(&mut small, &blocks)?;
    let small_total_s: f64 = small_ms.iter().sum::<f64>() / 1e3;
    let apply_tx_per_s = (blocks.len() * BLOCK_TXS) as f64 / small_total_s;

    eprintln!("bench ledger: adding {} leases", opts.leases);
    let mut big = setup.state.clone();
    let t0 = Instant::now();
    add_bulk_leases(&mut big, opts.leases, bulk_tenants, bulk_providers, None)?;
    let build_s = t0.elapsed().as_secs_f64();
    let open_leases_big = opts.leases as usize + SMALL_LEASES;
    let (big_ms, big_failed, _) = apply_all(&mut big, &blocks)?;
    let rss = rss_mb();
    if small.state_hash() == big.state_hash() {
        bail!("the large state did not differ from the small one");
    }
    drop(big);

    // The same leases, each deployment holding a runway policy with an allowance; some reach
    // their threshold in the measured blocks and are topped up there.
    eprintln!("bench ledger: adding {} leases with allowances", opts.leases);
    let mut allow = setup.state;
    let policies = BulkPolicies {
        blocks: blocks.len() as u64,
    };
    add_bulk_leases(&mut allow, opts.leases, bulk_tenants, bulk_providers, Some(policies))?;
    let (allow_ms, allow_failed, top_ups) = apply_all(&mut allow, &blocks)?;
    let block_ms_allow = median(&allow_ms);
    let block_ms_small = median(&small_ms);
    let block_ms_big = median(&big_ms);
    Ok(json!({
        "bench": "ledger",
        "txs_per_block": BLOCK_TXS,
        "blocks": blocks.len(),
        "apply_tx_per_s": apply_tx_per_s.round(),
        "ed25519_verify_per_s": verify_per_s.round(),
        "apply_ratio": (apply_tx_per_s / verify_per_s * 1000.0).round() / 1000.0,
        "ed25519_batch_verify_per_s": batch_verify_per_s.round(),
        "apply_ratio_batch": (apply_tx_per_s / batch_verify_per_s * 1000.0).round() / 1000.0,
        "block_ms_10_leases": (block_ms_small * 100.0).round() / 100.0,
        "block_ms_1m_leases": (block_ms_big * 100.0).round() / 100.0,
        "open_leases_large_state": open_leases_big,
        "settle_ratio": (block_ms_big / block_ms_small * 1000.0).round() / 1000.0,
        "block_ms_1m_allowances": (block_ms_allow * 100.0).round() / 100.0,
        "allowance_ratio": (block_ms_allow / block_ms_small * 1000.0).round() / 1000.0,
        "top_ups_measured": top_ups,
        "failed_txs_allowances": allow_failed,
        "failed_txs_small": small_failed,
        "failed_txs_large": big_failed,
        "large_state_build_s": (build_s * 10.0).round() / 10.0,
        "rss_mb_large_state": rss.map(|r| r.round()),
    }))
}
