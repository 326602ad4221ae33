//! `pazar sdl check` and `pazar deploy`: Akash SDL v2 files turned into deployments.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Value};

use pazar_client::Rpc;
use pazar_sdl::{Deployment, Diagnostic, Options};
use pazar_types::coin::{Dec, Price};
use pazar_types::market::BidId;
use pazar_types::{Address, Coin, Denom, Msg};

use crate::chain::{self, TxOpts};
use crate::lease_cmd;
use crate::{home, ClientOpts, Output};

#[derive(Args)]
pub struct DeployArgs {
    /// The SDL file (Akash SDL v2 deploy.yaml).
    pub file: PathBuf,
    /// Initial escrow deposit; default the chain's minimum (0.5 token) in the file's price
    /// denomination.
    #[arg(long)]
    pub deposit: Option<Coin>,
    /// Deployment sequence number; default the current time in milliseconds.
    #[arg(long)]
    pub dseq: Option<u64>,
    /// Accept the lowest bid automatically this many blocks after each order opens.
    #[arg(long)]
    pub auto_accept_after: Option<u32>,
    /// Only create the deployment: do not wait for bids, lease or send the manifest.
    #[arg(long)]
    pub create_only: bool,
    /// Say yes to running on providers nobody audited where the file names Akash auditors
    /// (akash1…), which Pazar cannot check; without it such a file is refused.
    #[arg(long)]
    pub accept_unaudited: bool,
    /// Take this provider's bid instead of the lowest.
    #[arg(long)]
    pub provider: Option<Address>,
    /// Give up when an order has no bid after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub bid_timeout_s: u64,
    /// After every order has a bid, wait this long for cheaper ones.
    #[arg(long, default_value_t = 2)]
    pub bid_window_s: u64,
    /// Give up when services are not all running after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub ready_timeout_s: u64,
}

/// The devnet's denominations (for checking a file without a node).
fn default_options() -> Result<Options> {
    let d = |s: &str| s.parse::<Denom>().map_err(|e| anyhow!("denomination {s:?}: {e}"));
    Ok(Options::new(d(home::NATIVE)?, d(home::STABLE)?))
}

/// The denominations of the chain the node runs.
fn node_options(rpc: &Rpc) -> Result<Options> {
    let p = rpc
        .get("/params")
        .map_err(|e| anyhow!("cannot read the chain's parameters: {e}"))?;
    let d = |k: &str| -> Result<Denom> {
        p["params"][k]["denom"]
            .as_str()
            .ok_or_else(|| anyhow!("the node's /params has no {k} denomination"))?
            .parse::<Denom>()
            .map_err(|e| anyhow!("node params: {e}"))
    };
    Ok(Options::new(d("native")?, d("stable")?))
}

/// Reads at most the SDL size limit (plus one byte, to tell the file is larger) so a huge file
/// costs neither the time nor the memory to read it whole.
fn read_bounded(file: &Path, limit: usize) -> Result<Vec<u8>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", file.display()))?;
    if bytes.len() > limit {
        let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(bytes.len() as u64);
        return Err(anyhow!(
            "{}:1:1: file is {size} bytes; an SDL file may have at most {limit} bytes",
            file.display()
        ));
    }
    Ok(bytes)
}

/// Parses `file`; on errors prints them (`FILE:LINE:COL: path: message`, and as JSON with
/// `--output json`) and exits 1.
fn load(file: &Path, opts: &Options, output: Output) -> Result<Deployment> {
    let name = file.display().to_string();
    let bytes = match read_bounded(file, opts.limits.max_bytes) {
        Ok(b) => b,
        Err(e) => fail(&name, output, &[], Some(e.to_string())),
    };
    match pazar_sdl::parse(&bytes, opts) {
        Ok(d) => Ok(d),
        Err(errors) => fail(&name, output, &errors, None),
    }
}

fn fail(name: &str, output: Output, errors: &[Diagnostic], raw: Option<String>) -> ! {
    let lines: Vec<String> = errors.iter().map(|e| e.render(name)).chain(raw.clone()).collect();
    for l in &lines {
        eprintln!("{l}");
    }
    if output == Output::Json {
        let mut errs: Vec<Value> = errors.iter().map(|e| json!(e)).collect();
        if let Some(r) = raw {
            errs.push(json!({"line": 1, "col": 1, "path": "", "message": r}));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"file": name, "valid": false, "errors": errs})).unwrap_or_default()
        );
    }
    eprintln!("{name}: {} error(s)", lines.len());
    std::process::exit(1);
}

fn sum_prices(prices: impl IntoIterator<Item = Price>) -> Vec<Value> {
    let mut by: BTreeMap<String, Dec> = BTreeMap::new();
    for p in prices {
        let e = by.entry(p.denom.to_string()).or_insert(Dec::ZERO);
        *e = e.checked_add(p.amount).unwrap_or(*e);
    }
    by.into_iter()
        .map(|(d, a)| json!({"denom": d, "amount": a.to_string()}))
        .collect()
}

/// The JSON summary of a valid file.
fn summary(file: &Path, d: &Deployment) -> Value {
    let services: Vec<&str> = d
        .manifest
        .groups
        .iter()
        .flat_map(|g| g.services.iter().map(|s| s.name.as_str()))
        .collect();
    let groups: Vec<Value> = d
        .groups
        .iter()
        .map(|g| {
            let mg = d.manifest.group(&g.name);
            let units: Vec<Value> = g
                .resources
                .iter()
                .map(|u| {
                    let svcs: Vec<&str> = mg
                        .map(|m| {
                            m.services
                                .iter()
                                .filter(|s| s.resource_id == u.id)
                                .map(|s| s.name.as_str())
                                .collect()
                        })
                        .unwrap_or_default();
                    let r = &u.resources;
                    json!({
                        "id": u.id,
                        "services": svcs,
                        "count": u.count,
                        "cpu_millis": r.cpu_millis,
                        "memory_bytes": r.memory_bytes,
                        "storage": r.storage.iter().map(|v| json!({"name": v.name, "bytes": v.bytes, "persistent": v.persistent()})).collect::<Vec<_>>(),
                        "gpu_units": r.gpu.units,
                        "gpu_models": r.gpu.attributes.iter().map(|a| a.key.clone()).collect::<Vec<_>>(),
                        "endpoints": r.endpoints.len(),
                        "price_per_block": u.price,
                    })
                })
                .collect();
            json!({
                "name": g.name,
                "requirements": g.requirements,
                "resources": units,
                "price_per_block": g.max_price(),
            })
        })
        .collect();
    let total_gpu: u64 = d
        .groups
        .iter()
        .flat_map(|g| g.resources.iter())
        .map(|u| u64::from(u.resources.gpu.units) * u64::from(u.count))
        .sum();
    json!({
        "file": file.display().to_string(),
        "valid": true,
        "version": d.version,
        "services": services,
        "groups": groups,
        "total_gpu_units": total_gpu,
        "price_per_block": sum_prices(d.groups.iter().filter_map(|g| g.max_price())),
        "manifest_version": hex::encode(d.manifest_version),
        "warnings": d.warnings,
        "notes": d.notes,
    })
}

fn summary_text(v: &Value) -> String {
    let mut out = format!(
        "{}: valid SDL {} — {} service(s), {} group(s), {} GPU(s)\n",
        v["file"].as_str().unwrap_or(""),
        v["version"].as_str().unwrap_or(""),
        v["services"].as_array().map_or(0, Vec::len),
        v["groups"].as_array().map_or(0, Vec::len),
        v["total_gpu_units"],
    );
    for g in v["groups"].as_array().into_iter().flatten() {
        out.push_str(&format!("  group {}\n", g["name"].as_str().unwrap_or("")));
        for u in g["resources"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    unit {} ×{} [{}]: {} mCPU, {} MiB memory, {} GPU, {} {} per block each\n",
                u["id"],
                u["count"],
                u["services"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default(),
                u["cpu_millis"],
                u["memory_bytes"].as_u64().unwrap_or(0) >> 20,
                u["gpu_units"],
                u["price_per_block"]["amount"].as_str().unwrap_or(""),
                u["price_per_block"]["denom"].as_str().unwrap_or(""),
            ));
        }
    }
    for p in v["price_per_block"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  total: {} {} per block\n",
            p["amount"].as_str().unwrap_or(""),
            p["denom"].as_str().unwrap_or("")
        ));
    }
    out.push_str(&format!(
        "  version (manifest sha256): {}",
        v["manifest_version"].as_str().unwrap_or("")
    ));
    for n in v["notes"].as_array().into_iter().flatten() {
        out.push_str(&format!("\n  note: {}", n.as_str().unwrap_or("")));
    }
    out
}

fn print_warnings(file: &Path, d: &Deployment) {
    for w in &d.warnings {
        let r = w.render(&file.display().to_string());
        // FILE:LINE:COL: warning: path: message
        let (loc, rest) = r.split_at(r.find(": ").unwrap_or(0));
        eprintln!("{loc}: warning{rest}");
    }
}

pub fn check(file: &Path, output: Output, accept_unaudited: bool) -> Result<()> {
    let mut opts = default_options()?;
    opts.accept_unaudited = accept_unaudited;
    let d = load(file, &opts, output)?;
    print_warnings(file, &d);
    let v = summary(file, &d);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&v)?),
        Output::Text => println!("{}", summary_text(&v)),
    }
    Ok(())
}

pub fn deploy(a: &DeployArgs, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let mut sdl_opts = node_options(&rpc)?;
    sdl_opts.accept_unaudited = a.accept_unaudited;
    let d = load(&a.file, &sdl_opts, opts.output)?;
    print_warnings(&a.file, &d);
    let denom = d
        .groups
        .first()
        .and_then(|g| g.max_price())
        .map(|p| p.denom)
        .ok_or_else(|| anyhow!("the file prices nothing"))?;
    let deposit = a.deposit.clone().unwrap_or_else(|| Coin::new(500_000, denom));
    let dseq = a
        .dseq
        .unwrap_or_else(|| pazar_node::consensus::Clock::now_ms(&pazar_node::consensus::SystemClock));
    let msg = Msg::CreateDeployment {
        dseq,
        version: d.manifest_version,
        groups: d.groups.clone(),
        deposit: deposit.clone(),
        auto_accept_after: a.auto_accept_after,
    };
    let key = chain::signer(opts, t)?;
    let owner = key.address();
    let v = chain::submit_as(opts, t, &key, vec![msg])?;
    let committed_ok = v["status"] == "committed" && v["receipt"]["code"].as_u64().unwrap_or(0) == 0;
    // Keep the manifest: it goes to the winning provider, never through the ledger.
    let dir = home.join("deployments");
    std::fs::create_dir_all(&dir)?;
    let saved = dir.join(format!("{owner}-{dseq}.json"));
    let record = json!({
        "owner": owner,
        "dseq": dseq,
        "file": a.file.display().to_string(),
        "version": hex::encode(d.manifest_version),
        "manifest": d.manifest,
    });
    pazar_client::files::write_atomic(&saved, &serde_json::to_vec_pretty(&record)?, 0o644)
        .with_context(|| format!("cannot save the manifest to {}", saved.display()))?;
    let mut out = json!({
        "owner": owner,
        "dseq": dseq,
        "version": hex::encode(d.manifest_version),
        "deposit": deposit,
        "groups": d.groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
        "manifest_file": saved.display().to_string(),
        "tx": v,
    });
    if !committed_ok {
        match opts.output {
            Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
            Output::Text => println!(
                "deployment not created: {} (tx {})",
                v["receipt"]["log"]
                    .as_str()
                    .unwrap_or(v["status"].as_str().unwrap_or("")),
                v["hash"].as_str().unwrap_or("")
            ),
        }
        if v["status"] != "pending" {
            std::process::exit(2);
        }
        return Ok(());
    }
    let text = opts.output == Output::Text;
    if text {
        println!(
            "deployment {owner}/{dseq} created at height {}: {} group(s) open for bids ({}); deposit {deposit}",
            v["height"],
            d.groups.len(),
            d.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", "),
        );
    }
    if a.create_only {
        if text {
            println!(
                "manifest saved to {}; next: `pazar query bids --owner {owner}`",
                saved.display()
            );
        } else {
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        return Ok(());
    }

    // Bids: shown as they arrive; the lowest (or --provider's) wins each order.
    let chosen = wait_for_bids(&rpc, owner, dseq, d.groups.len(), a, text)?;
    let msgs = chosen
        .iter()
        .map(|(id, _)| Msg::CreateLease { bid: id.clone() })
        .collect();
    let lv = chain::submit_as(opts, t, &key, msgs)?;
    if lv["receipt"]["code"].as_u64().unwrap_or(0) != 0 {
        bail!("lease creation failed: {}", lv["receipt"]["log"].as_str().unwrap_or(""));
    }
    let mut leases = Vec::new();
    for (id, price) in &chosen {
        if text {
            println!("lease {id} at {price} per block; sending the manifest");
        }
        let c = lease_cmd::provider_client(&rpc, &id.provider, key.clone())?;
        let st = lease_cmd::send_and_wait(&c, id, &d.manifest, Duration::from_secs(a.ready_timeout_s), !text)?;
        if text {
            println!("\n{}", lease_cmd::status_text(&st));
        }
        leases.push(json!({"lease": id.to_string(), "price": price, "status": st}));
    }
    out["leases"] = json!(leases);
    if text {
        println!("escrow: `pazar query escrow {owner}/{dseq}`; logs: `pazar lease logs LEASE --from KEY`");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

/// Waits until every group's order has a bid (then `bid_window_s` more for cheaper ones) and
/// returns the chosen bid of each order.
fn wait_for_bids(
    rpc: &Rpc,
    owner: Address,
    dseq: u64,
    groups: usize,
    a: &DeployArgs,
    text: bool,
) -> Result<Vec<(BidId, Value)>> {
    let t0 = Instant::now();
    let mut seen = std::collections::BTreeSet::new();
    let mut all_since: Option<Instant> = None;
    loop {
        // Every page: the lowest bid may be on any of them.
        let bids = rpc
            .list_all(&format!("/bids?owner={owner}&dseq={dseq}&state=open"), "bids")
            .map_err(chain::client_err)?;
        let mut best: BTreeMap<u32, (BidId, Value, Dec)> = BTreeMap::new();
        for b in &bids {
            let Ok(id) = serde_json::from_value::<BidId>(b["id"].clone()) else {
                continue;
            };
            let price = b["bid"]["price"].clone();
            let amount: Dec = price["amount"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(Dec(u128::MAX));
            if seen.insert(id.clone()) && text {
                println!(
                    "  bid from {} for group {}: {} {} per block",
                    id.provider,
                    id.gseq,
                    price["amount"].as_str().unwrap_or(""),
                    price["denom"].as_str().unwrap_or("")
                );
            }
            if a.provider.is_some_and(|p| p != id.provider) {
                continue;
            }
            let better = best.get(&id.gseq).is_none_or(|(_, _, a0)| amount < *a0);
            if better {
                best.insert(id.gseq, (id, price, amount));
            }
        }
        if best.len() == groups {
            let since = *all_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_secs(a.bid_window_s) {
                return Ok(best.into_values().map(|(id, p, _)| (id, p)).collect());
            }
        }
        if t0.elapsed() > Duration::from_secs(a.bid_timeout_s) {
            bail!(
                "no bid for {} of {groups} group(s) after {} s; `pazar deployment why-no-bids {owner}/{dseq}` explains, per provider, what does not match (the deployment stays open: bids may still come)",
                groups - best.len(),
                a.bid_timeout_s
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}
