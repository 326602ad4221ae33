//! `pazar sdl check` and `pazar deploy`: Akash SDL v2 files turned into deployments.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use pazar_api::node::{TxResult, TxState};
use pazar_client::deploy::{self, BidRules, DeploymentPlan, LeaseOutcome, Tenant};
use pazar_client::Rpc;
use pazar_sdl::{Deployment, Diagnostic, Manifest, Options, SdlVersion};
use pazar_types::coin::{Dec, Price};
use pazar_types::market::PlacementRequirements;
use pazar_types::{Address, Coin, Denom};

use crate::chain::{self, TxOpts};
use crate::failure::{Exit, Failure};
use crate::progress::View;
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
        .params()
        .map_err(|e| anyhow!("cannot read the chain's parameters: {e}"))?
        .params;
    Ok(Options::new(p.native.denom, p.stable.denom))
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

/// The manifest of an SDL file as the chain behind `rpc` reads it (errors printed as `load`
/// prints them).
pub(crate) fn manifest_of(file: &Path, rpc: &Rpc, output: Output) -> Result<Manifest> {
    Ok(load(file, &node_options(rpc)?, output)?.manifest)
}

/// Parses `file`; on errors prints them (`FILE:LINE:COL: path: message`, and as JSON with
/// `--output json`) and fails with exit code 1.
fn load(file: &Path, opts: &Options, output: Output) -> Result<Deployment> {
    let name = file.display().to_string();
    let bytes = match read_bounded(file, opts.limits.max_bytes) {
        Ok(b) => b,
        Err(e) => return Err(fail(&name, output, &[], Some(e.to_string()))),
    };
    pazar_sdl::parse(&bytes, opts).map_err(|errors| fail(&name, output, &errors, None))
}

/// Prints every error of a file (stderr; and the JSON report on stdout with `-o json`) and
/// returns the failure, already reported, that ends the command with exit code 1.
fn fail(name: &str, output: Output, errors: &[Diagnostic], raw: Option<String>) -> anyhow::Error {
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
    Failure::reported(
        Exit::Local,
        "invalid_input",
        format!("{name}: {} error(s)", lines.len()),
    )
    .into()
}

fn sum_prices(prices: impl IntoIterator<Item = Price>) -> Vec<Price> {
    let mut by: BTreeMap<Denom, Dec> = BTreeMap::new();
    for p in prices {
        let e = by.entry(p.denom).or_insert(Dec::ZERO);
        *e = e.checked_add(p.amount).unwrap_or(*e);
    }
    by.into_iter().map(|(denom, amount)| Price { denom, amount }).collect()
}

/// One volume of a unit in the summary.
#[derive(Serialize)]
struct VolumeSummary {
    name: String,
    bytes: u64,
    persistent: bool,
}

/// One resource unit of a group in the summary.
#[derive(Serialize)]
struct UnitSummary {
    id: u32,
    services: Vec<String>,
    count: u32,
    cpu_millis: u32,
    memory_bytes: u64,
    storage: Vec<VolumeSummary>,
    gpu_units: u32,
    gpu_models: Vec<String>,
    endpoints: usize,
    price_per_block: Price,
}

#[derive(Serialize)]
struct GroupSummary {
    name: String,
    requirements: PlacementRequirements,
    resources: Vec<UnitSummary>,
    price_per_block: Option<Price>,
}

/// What `pazar sdl check` says of a valid file.
#[derive(Serialize)]
struct Summary<'a> {
    file: String,
    valid: bool,
    version: SdlVersion,
    services: Vec<String>,
    groups: Vec<GroupSummary>,
    total_gpu_units: u64,
    price_per_block: Vec<Price>,
    manifest_version: String,
    warnings: &'a [Diagnostic],
    notes: &'a [String],
}

fn summary<'a>(file: &Path, d: &'a Deployment) -> Summary<'a> {
    let services = d
        .manifest
        .groups
        .iter()
        .flat_map(|g| g.services.iter().map(|s| s.name.clone()))
        .collect();
    let groups = d
        .groups
        .iter()
        .map(|g| {
            let mg = d.manifest.group(&g.name);
            let resources = g
                .resources
                .iter()
                .map(|u| {
                    let services = mg
                        .map(|m| {
                            m.services
                                .iter()
                                .filter(|s| s.resource_id == u.id)
                                .map(|s| s.name.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    let r = &u.resources;
                    UnitSummary {
                        id: u.id,
                        services,
                        count: u.count,
                        cpu_millis: r.cpu_millis,
                        memory_bytes: r.memory_bytes,
                        storage: r
                            .storage
                            .iter()
                            .map(|v| VolumeSummary {
                                name: v.name.clone(),
                                bytes: v.bytes,
                                persistent: v.persistent(),
                            })
                            .collect(),
                        gpu_units: r.gpu.units,
                        gpu_models: r.gpu.attributes.iter().map(|a| a.key.clone()).collect(),
                        endpoints: r.endpoints.len(),
                        price_per_block: u.price.clone(),
                    }
                })
                .collect();
            GroupSummary {
                name: g.name.clone(),
                requirements: g.requirements.clone(),
                resources,
                price_per_block: g.max_price(),
            }
        })
        .collect();
    let total_gpu_units = d
        .groups
        .iter()
        .flat_map(|g| g.resources.iter())
        .map(|u| u64::from(u.resources.gpu.units) * u64::from(u.count))
        .sum();
    Summary {
        file: file.display().to_string(),
        valid: true,
        version: d.version,
        services,
        groups,
        total_gpu_units,
        price_per_block: sum_prices(d.groups.iter().filter_map(|g| g.max_price())),
        manifest_version: hex::encode(d.manifest_version),
        warnings: &d.warnings,
        notes: &d.notes,
    }
}

fn summary_text(s: &Summary) -> String {
    let version = serde_json::to_value(s.version)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let mut out = format!(
        "{}: valid SDL {version} — {} service(s), {} group(s), {} GPU(s)\n",
        s.file,
        s.services.len(),
        s.groups.len(),
        s.total_gpu_units,
    );
    for g in &s.groups {
        out.push_str(&format!("  group {}\n", g.name));
        for u in &g.resources {
            out.push_str(&format!(
                "    unit {} ×{} [{}]: {} mCPU, {} MiB memory, {} GPU, {} {} per block each\n",
                u.id,
                u.count,
                u.services.join(", "),
                u.cpu_millis,
                u.memory_bytes >> 20,
                u.gpu_units,
                u.price_per_block.amount,
                u.price_per_block.denom,
            ));
        }
    }
    for p in &s.price_per_block {
        out.push_str(&format!("  total: {} {} per block\n", p.amount, p.denom));
    }
    out.push_str(&format!("  version (manifest sha256): {}", s.manifest_version));
    for n in s.notes {
        out.push_str(&format!("\n  note: {n}"));
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
    let s = summary(file, &d);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&s)?),
        Output::Text => println!("{}", summary_text(&s)),
    }
    Ok(())
}

/// The manifest `pazar deploy` keeps for the winning provider (it never goes through the
/// ledger): `<home>/deployments/<owner>-<dseq>.json`.
#[derive(Serialize, Deserialize)]
pub struct SavedManifest {
    pub owner: Address,
    pub dseq: u64,
    pub file: String,
    pub version: String,
    pub manifest: Manifest,
}

/// What `pazar deploy -o json` prints (and `pazar demo` reads back).
#[derive(Serialize, Deserialize)]
pub struct DeployOutput {
    pub owner: Address,
    pub dseq: u64,
    pub version: String,
    pub deposit: Coin,
    pub groups: Vec<String>,
    pub manifest_file: String,
    pub tx: TxResult,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leases: Vec<LeaseOutcome>,
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
    let key = chain::signer(opts, t)?;
    let owner = key.address();
    let mut tenant = Tenant::new(rpc, key).map_err(chain::client_err)?;
    chain::configure(&mut tenant, t);
    tenant.memo = t.memo.clone();
    let plan = DeploymentPlan {
        dseq,
        groups: d.groups.clone(),
        manifest: d.manifest.clone(),
        version: d.manifest_version,
        deposit: deposit.clone(),
        auto_accept_after: a.auto_accept_after,
    };
    let text = opts.output == Output::Text;
    let mut view = View::new(text);
    let r = deploy::create_deployment(&tenant, &plan, &mut |p| view.on(p))?;
    // Keep the manifest: it goes to the winning provider, never through the ledger.
    let dir = home.join("deployments");
    std::fs::create_dir_all(&dir)?;
    let saved = dir.join(format!("{owner}-{dseq}.json"));
    let record = SavedManifest {
        owner,
        dseq,
        file: a.file.display().to_string(),
        version: hex::encode(d.manifest_version),
        manifest: d.manifest.clone(),
    };
    pazar_client::files::write_atomic(&saved, &serde_json::to_vec_pretty(&record)?, 0o644)
        .with_context(|| format!("cannot save the manifest to {}", saved.display()))?;
    let mut out = DeployOutput {
        owner,
        dseq,
        version: hex::encode(d.manifest_version),
        deposit: deposit.clone(),
        groups: d.groups.iter().map(|g| g.name.clone()).collect(),
        manifest_file: saved.display().to_string(),
        tx: r,
        leases: vec![],
    };
    let height = match deploy::committed("creating the deployment", &out.tx) {
        Ok(h) => h,
        Err(_) => {
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
                Output::Text => println!(
                    "deployment not created: {} (tx {})",
                    chain::tx_failure(&out.tx),
                    hex::encode(out.tx.hash)
                ),
            }
            if out.tx.state != TxState::Pending {
                return Err(chain::tx_failed(&out.tx));
            }
            return Ok(());
        }
    };
    if text {
        println!(
            "deployment {owner}/{dseq} created at height {height}: {} group(s) open for bids ({}); deposit {deposit}",
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
    // Bids are shown as they arrive; the lowest (or --provider's) wins each order.
    let rules = BidRules {
        provider: a.provider,
        bid_timeout: Duration::from_secs(a.bid_timeout_s),
        bid_window: Duration::from_secs(a.bid_window_s),
        ready_timeout: Duration::from_secs(a.ready_timeout_s),
    };
    view.waiting(&format!("waiting for bids on {} group(s)", plan.groups.len()));
    out.leases = deploy::lease_and_start(&tenant, &plan, &rules, &mut |p| view.on(p))?;
    drop(view);
    if text {
        println!("escrow: `pazar query escrow {owner}/{dseq}`; logs: `pazar lease logs LEASE --from KEY`");
    } else {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}

#[derive(Args)]
pub struct UpdateArgs {
    /// The deployment [OWNER/]DSEQ (one's own: only its owner can update it).
    pub deployment: String,
    /// The new SDL file: what runs may change (images, env, commands, counts within the lease),
    /// not the groups that were leased.
    pub file: PathBuf,
    /// As for `pazar deploy`: say yes to providers nobody audited where the file names Akash
    /// auditors.
    #[arg(long)]
    pub accept_unaudited: bool,
    /// Give up when the updated services are not all running after this many seconds.
    #[arg(long, default_value_t = 180)]
    pub ready_timeout_s: u64,
}

/// What `pazar deployment update -o json` prints.
#[derive(Serialize)]
pub struct UpdateOutput {
    pub owner: Address,
    pub dseq: u64,
    pub version: String,
    pub manifest_file: String,
    pub leases: Vec<LeaseOutcome>,
}

/// `pazar deployment update`: Akash's flow. The new version goes on the ledger (only if the
/// file's groups are the leased ones), the manifest is saved beside the first one and sent to
/// the provider of each active lease, which replaces its replicas one by one.
pub fn update(a: &UpdateArgs, id: pazar_types::DeploymentId, opts: &ClientOpts, t: &TxOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
    let mut sdl_opts = node_options(&rpc)?;
    sdl_opts.accept_unaudited = a.accept_unaudited;
    let d = load(&a.file, &sdl_opts, opts.output)?;
    print_warnings(&a.file, &d);
    let key = chain::signer(opts, t)?;
    if key.address() != id.owner {
        return Err(anyhow!(
            "only the owner {} can update {}/{}; sign with its key (--from)",
            id.owner,
            id.owner,
            id.dseq
        ));
    }
    let mut tenant = Tenant::new(rpc, key).map_err(chain::client_err)?;
    chain::configure(&mut tenant, t);
    tenant.memo = t.memo.clone();
    let text = opts.output == Output::Text;
    let mut view = View::new(text);
    let leases = deploy::update(
        &tenant,
        id.dseq,
        &d.groups,
        &d.manifest,
        d.manifest_version,
        Duration::from_secs(a.ready_timeout_s),
        &mut |p| view.on(p),
    )?;
    drop(view);
    // The manifest a provider will ask for after a restart is the new one: keep it where
    // `pazar lease send-manifest` looks.
    let saved = home.join("deployments").join(format!("{}-{}.json", id.owner, id.dseq));
    let record = SavedManifest {
        owner: id.owner,
        dseq: id.dseq,
        file: a.file.display().to_string(),
        version: hex::encode(d.manifest_version),
        manifest: d.manifest.clone(),
    };
    if let Some(dir) = saved.parent() {
        std::fs::create_dir_all(dir)?;
    }
    pazar_client::files::write_atomic(&saved, &serde_json::to_vec_pretty(&record)?, 0o644)
        .with_context(|| format!("cannot save the manifest to {}", saved.display()))?;
    let out = UpdateOutput {
        owner: id.owner,
        dseq: id.dseq,
        version: hex::encode(d.manifest_version),
        manifest_file: saved.display().to_string(),
        leases,
    };
    match opts.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out)?),
        Output::Text => println!(
            "deployment {}/{} updated to version {}: {} lease(s) serve it",
            id.owner,
            id.dseq,
            out.version,
            out.leases.len()
        ),
    }
    Ok(())
}
