//! `pazar demo`: the whole market on this machine in one command. A devnet, a provider daemon
//! (Docker backend where Docker answers, the sandbox otherwise), the demo image built locally, a real SDL deployed by a tenant, the service
//! answering over HTTP, the escrow paying every block, the provider withdrawing with the take,
//! then everything closed and the balances that show every token is accounted for.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde::de::{DeserializeOwned, IgnoredAny};

use pazar_client::keyring::{KeyInfo, Keyring};
use pazar_client::Rpc;
use pazar_provider::daemon::SandboxConfig;
use pazar_runtime::demo_image::{build_demo_image, store_demo_rootfs};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::sandbox::SandboxRuntime;
use pazar_runtime::{AnyRuntime, Runtime};
use pazar_types::records::EscrowView;
use pazar_types::{Address, Denom, DeploymentId};

use crate::sdl_cmd::DeployOutput;

use crate::home;

pub(crate) const SDL: &str = include_str!("../../../examples/demo/deploy.yaml");
const IMAGE: &str = "pazar-demo:1";

#[derive(Args)]
pub struct DemoOpts {
    /// Home of the demo chain (reset on every run); default $PAZAR_HOME/demo or ~/.pazar/demo.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// Blocks to watch the escrow pay before closing.
    #[arg(long, default_value_t = 6)]
    pub blocks: u64,
    /// Block time of the demo chain.
    #[arg(long, default_value_t = 500)]
    pub block_time_ms: u64,
    /// Where the workload runs: `docker`, `sandbox` (bubblewrap; needs root), or `auto`
    /// (Docker when its engine answers).
    #[arg(long, default_value = "auto", value_parser = ["auto", "docker", "sandbox"])]
    pub runtime: String,
}

/// A child process killed when dropped.
pub(crate) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn step(n: u32, text: &str) {
    println!("\n[{n}/8] {text}");
}

/// Runs this binary with `args` on `home` and reads its JSON output as `T` (`IgnoredAny` when
/// only success matters).
pub(crate) fn pazar<T: DeserializeOwned>(home: &Path, args: &[&str]) -> Result<T> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args(args)
        .arg("--home")
        .arg(home)
        .args(["-o", "json"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run pazar {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "pazar {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("pazar {} printed no JSON", args.join(" ")))
}

pub(crate) fn spawn(home: &Path, args: &[&str], log: &Path) -> Result<Proc> {
    let exe = std::env::current_exe()?;
    let log = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(exe)
            .args(args)
            .arg("--home")
            .arg(home)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start pazar {}", args.join(" ")))?,
    ))
}

pub(crate) fn wait<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if t0.elapsed() > timeout {
            bail!("{what} did not happen within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn http_get(uri: &str) -> Option<String> {
    http_get_via(uri.trim_start_matches("http://"), "demo")
}

/// `GET /` from `addr` with the `Host` header `host`; the answer if it is a 200.
fn http_get_via(addr: &str, host: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET / HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains(" 200 ").then_some(out)
}

type Balances = BTreeMap<(String, String), u128>;

fn balances(rpc: &Rpc, accounts: &[(String, Address)], denoms: &[Denom]) -> Result<Balances> {
    let mut out = BTreeMap::new();
    for (name, a) in accounts {
        for d in denoms {
            let b = rpc.balance(a, d, false).map_err(|e| anyhow!("{e}"))?;
            out.insert((name.clone(), d.to_string()), b.item.amount);
        }
    }
    Ok(out)
}

fn supply(rpc: &Rpc) -> Result<BTreeMap<String, u128>> {
    let s = rpc.supply().map_err(|e| anyhow!("{e}"))?;
    Ok(s.supply.into_iter().map(|c| (c.denom.to_string(), c.amount)).collect())
}

/// A running market on this machine: the devnet, the provider daemon, Docker.
pub(crate) struct Market {
    /// Held so the devnet stops with the market.
    pub _chain: Proc,
    pub daemon: Option<Proc>,
    pub rpc: Rpc,
    pub rt: tokio::runtime::Runtime,
    /// The backend the daemon uses, seen from here (to check that closing left nothing).
    pub runtime: AnyRuntime,
    pub keys: Vec<KeyInfo>,
    pub alice: Address,
    pub provider: Address,
}

pub(crate) fn key_address(keys: &[KeyInfo], name: &str) -> Result<Address> {
    keys.iter()
        .find(|k| k.name == name)
        .map(|k| k.address)
        .ok_or_else(|| anyhow!("no demo key {name}"))
}

/// Starts a fresh devnet in `h`, builds the demo image and starts a provider daemon; `say`
/// prints the steps.
pub(crate) fn start_market(h: &Path, block_time_ms: u64, runtime: &str, say: bool) -> Result<Market> {
    let step = |n: u32, t: &str| {
        if say {
            step(n, t)
        }
    };
    let info = |t: String| {
        if say {
            println!("{t}")
        }
    };
    step(1, "starting the embedded devnet (one validator, funded demo keys)");
    let _ = std::fs::remove_file(h.join("rpc.addr"));
    let bt = block_time_ms.to_string();
    let chain = spawn(
        h,
        &[
            "devnet",
            "--reset",
            "--rpc-listen",
            "127.0.0.1:0",
            "--block-time-ms",
            &bt,
        ],
        &h.join("devnet.log"),
    )?;
    let url = wait("the devnet's RPC", Duration::from_secs(60), || {
        let u = std::fs::read_to_string(h.join("rpc.addr")).ok()?;
        let u = u.trim().to_string();
        Rpc::new(&u).status().ok().map(|_| u)
    })?;
    let rpc = Rpc::new(&url);
    info(format!(
        "  RPC {url}, chain {}",
        rpc.chain_id().map_err(|e| anyhow!("{e}"))?
    ));
    let p = start_provider(h, &rpc, None, runtime, say)?;
    Ok(Market {
        _chain: chain,
        daemon: Some(p.daemon),
        rpc,
        rt: p.rt,
        runtime: p.runtime,
        keys: p.keys,
        alice: p.alice,
        provider: p.provider,
    })
}

/// The demo's provider side, beside a chain that runs already.
pub(crate) struct ProviderSide {
    pub daemon: Proc,
    pub rt: tokio::runtime::Runtime,
    pub runtime: AnyRuntime,
    pub keys: Vec<KeyInfo>,
    pub alice: Address,
    pub provider: Address,
}

/// Builds the demo image for `runtime` (`docker`, `sandbox` or `auto`) and starts a provider
/// daemon with the `provider` key of the home `h` (which holds the demo's keys), sending to
/// `node` (the node of `h` when `None`), whose RPC `rpc` is; returns once it is registered.
/// `say` prints the steps.
pub(crate) fn start_provider(
    h: &Path,
    rpc: &Rpc,
    node: Option<&str>,
    runtime: &str,
    say: bool,
) -> Result<ProviderSide> {
    let step = |n: u32, t: &str| {
        if say {
            step(n, t)
        }
    };
    let info = |t: String| {
        if say {
            println!("{t}")
        }
    };
    step(
        2,
        &format!("building the workload image {IMAGE} locally (FROM scratch + busybox-static, no registry)"),
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let docker = match runtime {
        "sandbox" => None,
        "docker" => Some(
            rt.block_on(DockerRuntime::connect(DockerOptions::default()))
                .context("--runtime docker needs a Docker engine")?,
        ),
        _ => rt.block_on(DockerRuntime::connect(DockerOptions::default())).ok(),
    };
    let backend = match docker {
        Some(d) => {
            rt.block_on(build_demo_image(d.docker(), IMAGE))?;
            info("  built in the local Docker engine".into());
            AnyRuntime::Docker(d)
        }
        None => {
            let opts = SandboxConfig::default().options(&h.join("provider"));
            let s = rt
                .block_on(async { SandboxRuntime::new(opts) })
                .context("the sandbox runtime (used when Docker does not answer)")?;
            store_demo_rootfs(s.images(), IMAGE)?;
            info("  written as a rootfs in the sandbox's image store".into());
            AnyRuntime::Sandbox(s)
        }
    };

    step(
        3,
        &format!(
            "starting the provider daemon (inventory, bid engine, TLS manifest endpoint, {} runtime)",
            backend.kind()
        ),
    );
    let daemon = spawn_daemon(h, "provider", h, backend.kind(), node)?;
    let keys = Keyring::new(h).list().map_err(|e| anyhow!("the demo's keys: {e}"))?;
    let (alice, provider) = (key_address(&keys, "alice")?, key_address(&keys, "provider")?);
    let uri = wait("the provider's registration", Duration::from_secs(60), || {
        rpc.provider(&provider, false).ok()
    })?
    .item
    .provider
    .host_uri;
    info(format!(
        "  provider {provider} registered at {uri} (log: {})",
        h.join("provider.log").display()
    ));

    Ok(ProviderSide {
        daemon,
        rt,
        runtime: backend,
        keys,
        alice,
        provider,
    })
}

/// Starts `pazar provider run --from KEY` of home `h` with its configuration and log in `dir`
/// (`provider.toml`, `provider.log`, its data in `provider/`): the demo's market on free loopback ports, the demo image
/// allowed, persistent volumes sold (class `beta2`), the `kind` runtime; `node` as for
/// [`start_provider`]. Does not wait for the registration.
pub(crate) fn spawn_daemon(h: &Path, key: &str, dir: &Path, kind: &str, node: Option<&str>) -> Result<Proc> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let ingress = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    std::fs::create_dir_all(dir)?;
    let cfg = dir.join("provider.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nruntime = \"{kind}\"\nwithdraw_every_blocks = 4\ndata_dir = \"{}\"\n\
             [ingress]\nlisten = \"127.0.0.1:{ingress}\"\ndomain = \"ingress.localhost\"\n\
             [images]\nallow_local = [\"pazar-demo:*\"]\n\
             [attributes]\nregion = \"local\"\n\"capabilities/storage/1/class\" = \"beta2\"\n\
             \"capabilities/storage/1/persistent\" = \"true\"\n",
            dir.join("provider").display()
        ),
    )?;
    let cfg_s = cfg.display().to_string();
    let mut args = vec!["provider", "run", "--from", key, "--config", &cfg_s];
    if let Some(url) = node {
        args.extend(["--node", url]);
    }
    spawn(h, &args, &dir.join("provider.log"))
}

pub fn run(o: &DemoOpts) -> Result<()> {
    let base = home::resolve(None);
    let h = o.home.clone().unwrap_or_else(|| base.join("demo"));
    std::fs::create_dir_all(&h)?;
    println!("Pazar demo: a compute market on this machine (home {})", h.display());

    let mut m = start_market(&h, o.block_time_ms, &o.runtime, true)?;
    let (rpc, rt, backend, keys, alice, provider) = (&m.rpc, &m.rt, &m.runtime, &m.keys, m.alice, m.provider);
    let addr_of = |name: &str| key_address(keys, name);
    let params = rpc.params().map_err(|e| anyhow!("{e}"))?.params;
    let denoms = [params.native.denom, params.stable.denom];
    let mut accounts = vec![
        ("tenant (alice)".to_string(), alice),
        ("provider".to_string(), provider),
        (
            "fee pool (take + fees)".to_string(),
            Address::module(pazar_ledger::state::FEE_POOL_MODULE),
        ),
        (
            "escrow module".to_string(),
            Address::module(pazar_ledger::state::ESCROW_MODULE),
        ),
    ];
    for k in ["validator", "faucet", "bob"] {
        if let Ok(a) = addr_of(k) {
            accounts.push((k.to_string(), a));
        }
    }
    let supply0 = supply(rpc)?;
    let before = balances(rpc, &accounts, &denoms)?;

    step(
        4,
        "the tenant deploys examples/demo/deploy.yaml (Akash SDL v2): bids, lease, manifest over TLS",
    );
    let sdl = h.join("deploy.yaml");
    std::fs::write(&sdl, SDL)?;
    let sdl_s = sdl.display().to_string();
    let t0 = Instant::now();
    let d: DeployOutput = pazar(&h, &["deploy", &sdl_s, "--from", "alice", "--bid-window-s", "1"])?;
    let leased = d.leases.first().ok_or_else(|| anyhow!("the deploy made no lease"))?;
    let lid = leased.lease.clone();
    let lease = lid.to_string();
    let uri = leased
        .status
        .uris
        .first()
        .map(|u| u.uri.clone())
        .ok_or_else(|| anyhow!("lease {lease} has no service URI"))?;
    let dseq = d.dseq.to_string();
    println!(
        "  lease {lease}\n  price {} {} per block; serving after {:.1} s",
        leased.price.amount,
        leased.price.denom,
        t0.elapsed().as_secs_f64()
    );

    step(5, &format!("the service answers at {uri}"));
    let page = wait("an HTTP answer", Duration::from_secs(30), || http_get(&uri))?;
    println!("  {}", page.lines().next().unwrap_or(""));
    if let Some(h1) = page.split("<h1>").nth(1).and_then(|s| s.split("</h1>").next()) {
        println!("  <h1>{h1}</h1>");
    }
    // The same service by host name, through the provider's HTTP ingress.
    let by_name = leased
        .status
        .uris
        .iter()
        .find(|u| u.ingress)
        .map(|u| u.uri.clone())
        .ok_or_else(|| anyhow!("lease {lease} has no ingress URI"))?;
    let (host, port) = by_name
        .trim_start_matches("http://")
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("ingress URI without a port: {by_name}"))?;
    let page = wait("an answer through the ingress", Duration::from_secs(10), || {
        http_get_via(&format!("127.0.0.1:{port}"), host)
    })?;
    println!(
        "  and by host name through the ingress at {by_name}: {}",
        page.lines().next().unwrap_or("")
    );
    let logs = Command::new(std::env::current_exe()?)
        .args(["lease", "logs", &lease, "--from", "alice", "--tail", "5", "--home"])
        .arg(&h)
        .output()?;
    for l in String::from_utf8_lossy(&logs.stdout).lines() {
        println!("  log {l}");
    }

    step(6, "the escrow pays the provider every block");
    let start = rpc.status().map_err(|e| anyhow!("{e}"))?.height;
    let deployment = DeploymentId {
        owner: alice,
        dseq: d.dseq,
    };
    for i in 0..o.blocks {
        let target = start + i + 1;
        rpc.wait_header(target, Duration::from_secs(30))
            .map_err(|e| anyhow!("{e}"))?;
        let e = rpc.escrow(&deployment, false).map_err(|e| anyhow!("{e}"))?;
        println!("  height {target}: escrow {}", compact(e.item.view.as_ref()));
    }

    step(7, "the provider withdraws its earnings (the take goes to the fee pool)");
    let pay = wait("a withdrawal", Duration::from_secs(60), || {
        let payment = rpc.lease(&lid, false).ok()?.item.payment?;
        (payment.withdrawn > 0).then_some(payment)
    })?;
    let (gross, take) = (pay.withdrawn, pay.take);
    println!(
        "  withdrawn {gross} uusd gross: {} to the provider, {take} take to the fee pool ({}.{:02} %, take rate {} bps)",
        gross - take,
        take * 100 / gross.max(1),
        take * 10_000 / gross.max(1) % 100,
        pay.take_bps
    );

    step(8, "closing the lease and the deployment; every token accounted for");
    pazar::<IgnoredAny>(&h, &["lease", "close", &lease, "--from", "alice"])?;
    pazar::<IgnoredAny>(&h, &["tx", "deployment", "close", "--dseq", &dseq, "--from", "alice"])?;
    let lease_name = pazar_runtime::LeaseRef::new(lid).name();
    wait("the workload's removal", Duration::from_secs(30), || {
        let left = rt.block_on(backend.leases()).ok()?;
        (!left.iter().any(|(n, _)| *n == lease_name)).then_some(())
    })?;
    println!(
        "  {} of the lease removed",
        match backend.kind() {
            "docker" => "containers, network and volumes",
            _ => "processes, network namespace, cgroups and files",
        }
    );
    drop(m.daemon.take());
    // Let the last withdrawal and refunds settle.
    let h_now = rpc.status().map_err(|e| anyhow!("{e}"))?.height;
    rpc.wait_header(h_now + 2, Duration::from_secs(30))
        .map_err(|e| anyhow!("{e}"))?;
    let after = balances(rpc, &accounts, &denoms)?;
    let supply1 = supply(rpc)?;
    println!(
        "  {:<24} {:>8} {:>22} {:>22} {:>16}",
        "account", "denom", "before", "after", "change"
    );
    let mut sums: BTreeMap<String, i128> = BTreeMap::new();
    for ((name, denom), b) in &before {
        let a = after[&(name.clone(), denom.clone())];
        let delta = a as i128 - *b as i128;
        *sums.entry(denom.clone()).or_default() += delta;
        if delta != 0 {
            println!("  {name:<24} {denom:>8} {b:>22} {a:>22} {delta:>+16}");
        }
    }
    for (denom, s) in &sums {
        println!(
            "  Σ changes in {denom}: {s}; supply {} before, {} after",
            supply0.get(denom).copied().unwrap_or(0),
            supply1.get(denom).copied().unwrap_or(0)
        );
    }
    if sums.values().any(|s| *s != 0) || supply0 != supply1 {
        bail!("tokens are not accounted for: changes {sums:?}, supply {supply0:?} → {supply1:?}");
    }
    println!(
        "\nEvery token is accounted for: the changes sum to zero in each denomination and the supply is unchanged."
    );
    println!(
        "Demo chain, keys and logs stay in {}; `pazar demo` resets it.",
        h.display()
    );
    Ok(())
}

fn compact(v: Option<&EscrowView>) -> String {
    match v {
        None => "closed".into(),
        Some(v) => format!(
            "balance {} {}, owed since last settlement {}, runway {} blocks",
            v.balance,
            v.denom,
            v.accrued,
            v.runway_blocks
                .map_or_else(|| "unbounded".to_string(), |r| r.to_string())
        ),
    }
}
