//! `pazar bench deploy`: how fast a deploy.yaml becomes a serving service on this machine
//! (devnet, provider daemon, Docker or the sandbox, local image), and how many orders per second the bid engine
//! turns into signed bids.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};

use pazar_provider::bidding::{self, Free, PriceList, ProviderView};
use pazar_provider::inventory::Inventory;
use pazar_types::market::{
    Endpoint, EndpointKind, Gpu, GroupSpec, OrderId, PlacementRequirements, ResourceUnit, Resources, StorageVolume,
};
use pazar_types::{Address, Coin, Dec, Denom, KeyScheme, Msg, Price, SigningKey, TxBody};

use crate::bench_node::percentile;
use crate::demo;
use crate::sdl_cmd::DeployOutput;

/// The tag of a serialized bid engine refusal (`{"reason": "gpu", ...}`).
#[derive(Deserialize)]
struct RefusalName {
    reason: String,
}

#[derive(Args)]
pub struct DeployBenchOpts {
    /// Deployments timed one after another.
    #[arg(long, default_value_t = 10)]
    pub deployments: usize,
    #[arg(long, default_value_t = 1000)]
    pub block_time_ms: u64,
    /// Orders in the bid engine burst.
    #[arg(long, default_value_t = 10_000)]
    pub orders: usize,
    /// Where the workloads run: `auto`, `docker` or `sandbox`.
    #[arg(long, default_value = "auto", value_parser = ["auto", "docker", "sandbox"])]
    pub runtime: String,
}

/// Deploys `n` times and measures submit-to-first-HTTP-200 of each.
fn deploy_to_serving(o: &DeployBenchOpts) -> Result<Value> {
    let h = std::env::temp_dir().join(format!("pazar-bench-deploy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&h);
    std::fs::create_dir_all(&h)?;
    let m = demo::start_market(&h, o.block_time_ms, &o.runtime, false)?;
    let sdl = h.join("deploy.yaml");
    std::fs::write(&sdl, demo::SDL)?;
    let sdl_s = sdl.display().to_string();
    let mut times = Vec::new();
    for i in 0..o.deployments {
        let dseq = (1000 + i).to_string();
        let t0 = Instant::now();
        let d: DeployOutput = demo::pazar(
            &h,
            &[
                "deploy",
                &sdl_s,
                "--from",
                "alice",
                "--dseq",
                &dseq,
                "--bid-window-s",
                "0",
            ],
        )?;
        let leased = d
            .leases
            .first()
            .ok_or_else(|| anyhow!("deployment {dseq} made no lease"))?;
        let uri = leased
            .status
            .uris
            .first()
            .map(|u| u.uri.clone())
            .ok_or_else(|| anyhow!("deployment {dseq} has no URI"))?;
        demo::wait("an HTTP answer", Duration::from_secs(30), || demo::http_get(&uri))?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        let lease = leased.lease.to_string();
        demo::pazar::<IgnoredAny>(&h, &["lease", "close", &lease, "--from", "alice"])?;
        demo::pazar::<IgnoredAny>(&h, &["tx", "deployment", "close", "--dseq", &dseq, "--from", "alice"])?;
    }
    let runtime = m.runtime.kind();
    drop(m);
    let _ = std::fs::remove_dir_all(&h);
    let mut sorted = times.clone();
    Ok(json!({
        "runtime": runtime,
        "deployments": times.len(),
        "block_time_ms": o.block_time_ms,
        "deploy_to_serving_p50_ms": (percentile(&mut sorted, 0.5) * 100.0).round() / 100.0,
        "deploy_to_serving_p90_ms": (percentile(&mut sorted, 0.9) * 100.0).round() / 100.0,
        "deploy_to_serving_max_ms": (sorted.last().copied().unwrap_or(0.0) * 100.0).round() / 100.0,
    }))
}

fn order_group(i: usize) -> GroupSpec {
    let r = Resources {
        cpu_millis: 100 + (i % 8) as u32 * 100,
        memory_bytes: (128 << 20) * (1 + (i % 4) as u64),
        storage: vec![StorageVolume {
            name: "default".into(),
            bytes: 1 << 30,
            attributes: vec![],
        }],
        gpu: Gpu::default(),
        endpoints: vec![Endpoint {
            kind: EndpointKind::SharedHttp,
            sequence: 0,
        }],
    };
    GroupSpec {
        name: "dc".into(),
        requirements: PlacementRequirements::default(),
        resources: vec![ResourceUnit {
            id: 1,
            resources: r,
            count: 1,
            price: Price {
                denom: Denom::new("uusd").expect("denom"),
                // Every tenth order is priced below what the provider asks.
                amount: Dec::from_int(if i % 10 == 0 { 1 } else { 10_000 }).expect("small"),
            },
        }],
    }
}

/// The bid engine on a burst of orders: match, reserve, price, and sign a bid for each.
fn bid_burst(n: usize) -> Result<Value> {
    let orders: Vec<(OrderId, GroupSpec)> = (0..n)
        .map(|i| {
            (
                OrderId {
                    owner: Address::Native([(i % 251) as u8; 20]),
                    dseq: i as u64,
                    gseq: 1,
                    oseq: 1,
                },
                order_group(i),
            )
        })
        .collect();
    // A large machine, so capacity does not run out mid-burst.
    let inv = Inventory {
        cpu_millis: 100_000_000,
        memory_bytes: 1 << 50,
        storage_bytes: 1 << 55,
        gpus: vec![],
        sources: vec![],
    };
    let key = SigningKey::from_secret(KeyScheme::Ed25519, &[3; 32]).map_err(|e| anyhow!("{e}"))?;
    let prices = PriceList::default();
    let view = ProviderView::default();
    let mut free = Free::of(&inv);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let t0 = Instant::now();
    let mut bids = 0usize;
    for (seq, (id, g)) in orders.iter().enumerate() {
        match bidding::evaluate(g, &view, &free, &prices) {
            Ok((price, demand)) => {
                free.take(&demand);
                let tx = TxBody {
                    chain_id: "bench".into(),
                    sender: key.address(),
                    sequence: seq as u64,
                    fee: Coin::new(100, Denom::new("upzr").expect("denom")),
                    msgs: vec![Msg::CreateBid {
                        order: id.clone(),
                        price: price.clone(),
                        deposit: Coin::new(500_000, price.denom),
                    }],
                    memo: String::new(),
                }
                .sign(&key)
                .encode();
                if tx.is_empty() {
                    bail!("empty transaction");
                }
                bids += 1;
            }
            Err(why) => {
                // The refusal's name, as its JSON tag says it.
                let k = serde_json::to_value(&why)
                    .and_then(serde_json::from_value::<RefusalName>)
                    .map(|r| r.reason)
                    .unwrap_or_default();
                *reasons.entry(k).or_default() += 1;
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64().max(1e-9);
    Ok(json!({
        "orders": n,
        "bids": bids,
        "skipped": reasons,
        "bid_engine_s": (secs * 1000.0).round() / 1000.0,
        "bids_per_s": (bids as f64 / secs).round(),
        "orders_per_s": (n as f64 / secs).round(),
    }))
}

pub fn run(o: &DeployBenchOpts) -> Result<Value> {
    if o.deployments == 0 || o.orders == 0 {
        bail!("--deployments and --orders must be positive");
    }
    let mut out = json!({"bench": "deploy"});
    let burst = bid_burst(o.orders)?;
    let serving = deploy_to_serving(o)?;
    for part in [serving, burst] {
        if let Value::Object(m) = part {
            for (k, v) in m {
                out[k] = v;
            }
        }
    }
    Ok(out)
}
