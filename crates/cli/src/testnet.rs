//! `pazar testnet`: many validators on this machine, each a separate `pazar node start`
//! process with its own home, talking over real loopback sockets. One genesis names them all
//! (power 1 each, consensus keys from their validator keys) and funds the devnet's keys, which
//! live in the first validator's keyring (`v0`).
//!
//! A transaction sent to any validator is gossiped to the others, so the next leader includes
//! it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use pazar_ledger::GenesisBalance;
use pazar_node::genesis::{ConsensusKey, GenesisFile, Validator};
use pazar_types::KeyScheme;

use crate::home::{self, ConsensusKind};
use crate::Output;

/// Most validators a testnet runs: each is a process with its own store on this machine.
pub const MAX_VALIDATORS: usize = 32;

/// How long a validator may take to serve RPC after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a validator may take to stop after it is asked to.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(clap::Args)]
pub struct TestnetOpts {
    /// Number of validators (at least 1; 4 tolerate one fault).
    #[arg(long, default_value_t = 4)]
    pub validators: usize,
    /// Directory of the validators' homes (`v0`, `v1`, …); an existing testnet there resumes.
    #[arg(long)]
    pub home: PathBuf,
    /// Least time between blocks.
    #[arg(long, default_value_t = 500)]
    pub block_time_ms: u64,
    /// First of the loopback ports to use (validator i: RPC on BASE+2i, p2p on BASE+2i+1);
    /// free ports are picked when absent.
    #[arg(long)]
    pub base_port: Option<u16>,
    /// Create the homes (or check the ones there) and exit without starting any validator: to
    /// edit their `node.toml` first, or to copy each home to a host of its own.
    #[arg(long)]
    pub create_only: bool,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// What `pazar testnet` prints once every validator serves RPC.
#[derive(Debug, Serialize)]
pub struct TestnetOut {
    pub chain_id: String,
    pub home: PathBuf,
    pub validators: Vec<ValidatorOut>,
}

#[derive(Debug, Serialize)]
pub struct ValidatorOut {
    pub name: String,
    pub home: PathBuf,
    pub rpc: String,
    pub p2p: String,
    pub consensus_key: String,
    /// The validator's process; `None` under `--create-only`.
    pub pid: Option<u32>,
}

pub fn run(opts: &TestnetOpts) -> Result<()> {
    if opts.create_only {
        let homes = prepare(opts, Vec::new())?;
        let genesis = GenesisFile::read(&home::genesis_path(&homes[0]))?;
        let mut out = TestnetOut {
            chain_id: genesis.chain_id.clone(),
            home: opts.home.clone(),
            validators: Vec::new(),
        };
        for (i, h) in homes.iter().enumerate() {
            let config = home::read_config(h, None)?;
            out.validators.push(validator_out(
                i,
                h,
                &genesis,
                format!("http://{}", config.rpc_listen),
                None,
            )?);
        }
        return print(&out, opts.output);
    }
    let (out, mut children) = start(opts, Vec::new())?;
    print(&out, opts.output)?;
    wait_for_signal(&mut children)?;
    children.stop();
    Ok(())
}

/// Creates the testnet in `opts.home` (or resumes the one there), starts every validator and
/// waits until each serves RPC. `extra_balances` are funded in a new testnet's genesis beside
/// the devnet's keys (benchmarks fund their senders this way); a resumed testnet keeps its own.
pub(crate) fn start(opts: &TestnetOpts, extra_balances: Vec<GenesisBalance>) -> Result<(TestnetOut, Children)> {
    let homes = prepare(opts, extra_balances)?;
    let genesis = GenesisFile::read(&home::genesis_path(&homes[0]))?;
    let mut children = Children(Vec::new());
    for h in &homes {
        let child = spawn(h)?;
        children.0.push((h.clone(), child));
    }
    let mut out = TestnetOut {
        chain_id: genesis.chain_id.clone(),
        home: opts.home.clone(),
        validators: Vec::new(),
    };
    for (i, (h, child)) in children.0.iter_mut().enumerate() {
        let rpc = wait_ready(h, child)?;
        out.validators
            .push(validator_out(i, h, &genesis, rpc, Some(child.id()))?);
    }
    Ok((out, children))
}

/// What is printed of validator `i` in home `h`.
fn validator_out(i: usize, h: &Path, genesis: &GenesisFile, rpc: String, pid: Option<u32>) -> Result<ValidatorOut> {
    let config = home::read_config(h, None)?;
    Ok(ValidatorOut {
        name: format!("v{i}"),
        home: h.to_path_buf(),
        rpc,
        p2p: config.p2p_listen.unwrap_or_default(),
        consensus_key: genesis
            .validators
            .get(i)
            .and_then(|v| v.consensus_key)
            .map(|k| k.to_string())
            .unwrap_or_default(),
        pid,
    })
}

/// Checks the options and the testnet already in `opts.home`, or creates one there; the
/// validators' homes.
fn prepare(opts: &TestnetOpts, extra_balances: Vec<GenesisBalance>) -> Result<Vec<PathBuf>> {
    if opts.validators == 0 || opts.validators > MAX_VALIDATORS {
        bail!("--validators must be between 1 and {MAX_VALIDATORS}");
    }
    if opts.block_time_ms == 0 {
        bail!("--block-time-ms must be at least 1");
    }
    let homes: Vec<PathBuf> = (0..opts.validators).map(|i| opts.home.join(format!("v{i}"))).collect();
    if home::genesis_path(&homes[0]).exists() {
        let found = existing_validators(&opts.home);
        if found != opts.validators {
            bail!(
                "{} holds a testnet of {found} validators, not {}",
                opts.home.display(),
                opts.validators
            );
        }
    } else {
        create(opts, &homes, extra_balances)?;
    }
    Ok(homes)
}

/// Starts `pazar node start` on the validator home `h`, its output appended to `node.log`.
fn spawn(h: &Path) -> Result<Child> {
    let exe = std::env::current_exe().context("cannot find the pazar executable")?;
    // A stale address from an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(home::rpc_addr_path(h));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(h.join("node.log"))
        .with_context(|| format!("cannot open {}", h.join("node.log").display()))?;
    Command::new(&exe)
        .args(["node", "start", "--home"])
        .arg(h)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start the validator in {}", h.display()))
}

/// How many validator homes (`v0`, `v1`, … with a genesis) `dir` holds.
fn existing_validators(dir: &Path) -> usize {
    (0..=MAX_VALIDATORS)
        .take_while(|i| home::genesis_path(&dir.join(format!("v{i}"))).exists())
        .count()
}

/// Creates the homes: keys, one genesis for all, and each validator's `node.toml` naming the
/// others as peers.
fn create(opts: &TestnetOpts, homes: &[PathBuf], extra_balances: Vec<GenesisBalance>) -> Result<()> {
    let ports = ports(opts.base_port, homes.len())?;
    let mut balances = Vec::new();
    let mut validators = Vec::new();
    for (i, h) in homes.iter().enumerate() {
        // The first validator's keyring also holds the devnet's users and faucet.
        let keys = if i == 0 {
            home::add_keys(h, home::DEVNET_KEYS)?
        } else {
            home::add_keys(h, &[("validator", KeyScheme::Ed25519)])?
        };
        balances.extend(home::devnet_balances(&keys)?);
        let (_, key) = keys
            .iter()
            .find(|(name, _)| name == "validator")
            .context("validator key was created")?;
        let (_, public) = key.ed25519_parts().context("validator keys are ed25519")?;
        validators.push(Validator {
            name: format!("v{i}"),
            address: key.address(),
            power: 1,
            consensus_key: Some(ConsensusKey(public)),
        });
    }
    balances.extend(extra_balances);
    let genesis = home::devnet_genesis(balances, validators.clone());
    let p2p = |i: usize| format!("127.0.0.1:{}", ports[i].1);
    for (i, h) in homes.iter().enumerate() {
        let peers = validators
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(j, v)| {
                let key = v.consensus_key.expect("set above");
                format!("{key}@{}", p2p(j))
            })
            .collect();
        let config = home::Config {
            rpc_listen: format!("127.0.0.1:{}", ports[i].0),
            block_time_ms: opts.block_time_ms,
            faucet_key: (i == 0).then(|| "faucet".to_string()),
            consensus: ConsensusKind::Simplex,
            p2p_listen: Some(p2p(i)),
            peers,
            ..home::Config::default()
        };
        home::write_home(h, &genesis, &config)?;
    }
    Ok(())
}

/// An RPC and a p2p port per validator: from `base`, or free ones picked by the system (held
/// together while picking, so they are distinct).
fn ports(base: Option<u16>, n: usize) -> Result<Vec<(u16, u16)>> {
    if let Some(b) = base {
        let last = usize::from(b) + 2 * n;
        if last > usize::from(u16::MAX) {
            bail!("--base-port {b} leaves no room for {n} validators");
        }
        let b = usize::from(b);
        return Ok((0..n)
            .map(|i| {
                let rpc = u16::try_from(b + 2 * i).expect("checked above");
                (rpc, rpc + 1)
            })
            .collect());
    }
    let held = (0..2 * n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free loopback ports")?;
    let ports = held
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()?;
    Ok(ports.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Waits until the validator in `home` answers on the address it wrote; its URL.
fn wait_ready(home: &Path, child: &mut Child) -> Result<String> {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the validator in {} exited ({status}); its log: {}",
                home.display(),
                home.join("node.log").display()
            );
        }
        if let Ok(url) = std::fs::read_to_string(home::rpc_addr_path(home)) {
            let url = url.trim().to_string();
            if pazar_client::Rpc::new(&url).status().is_ok() {
                return Ok(url);
            }
        }
        if t0.elapsed() > READY_TIMEOUT {
            bail!(
                "the validator in {} does not serve RPC after {} s; its log: {}",
                home.display(),
                READY_TIMEOUT.as_secs(),
                home.join("node.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn print(out: &TestnetOut, output: Output) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(stdout, "{}", serde_json::to_string(out)?)?,
        Output::Text => {
            writeln!(
                stdout,
                "Pazar testnet {} with {} validators ({})",
                out.chain_id,
                out.validators.len(),
                out.home.display()
            )?;
            for v in &out.validators {
                let pid = v.pid.map_or_else(|| "not started".to_string(), |p| format!("pid {p}"));
                writeln!(stdout, "  {:<4} RPC {:<28} p2p {:<22} {pid}", v.name, v.rpc, v.p2p)?;
            }
            writeln!(
                stdout,
                "  keys (alice, bob, provider, faucet) are in {}; logs are node.log in each home",
                out.validators[0].home.display()
            )?;
            if out.validators.iter().any(|v| v.pid.is_some()) {
                writeln!(stdout, "Press Ctrl-C to stop every validator.")?;
            } else {
                writeln!(
                    stdout,
                    "Start them all with `pazar testnet --home {}`, or each with `pazar node start --home vI`.",
                    out.home.display()
                )?;
            }
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Stays in the foreground until Ctrl-C or SIGTERM, saying when a validator exits.
fn wait_for_signal(children: &mut Children) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot watch SIGTERM")?;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut exited = vec![false; children.0.len()];
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(()),
                _ = term.recv() => return Ok(()),
                _ = tick.tick() => {}
            }
            for (i, (h, child)) in children.0.iter_mut().enumerate() {
                if let Ok(Some(status)) = child.try_wait() {
                    if !exited[i] {
                        exited[i] = true;
                        tracing::warn!(home = %h.display(), %status, "a validator exited; the others go on");
                    }
                }
            }
        }
    })
}

/// The validator processes; any still running when this is dropped are killed.
pub(crate) struct Children(Vec<(PathBuf, Child)>);

impl Children {
    /// Kills validator `i` without warning (SIGKILL), as a crash would, and reaps it.
    pub(crate) fn kill(&mut self, i: usize) -> Result<()> {
        let (h, child) = self.0.get_mut(i).context("no such validator")?;
        child
            .kill()
            .with_context(|| format!("cannot kill the validator in {}", h.display()))?;
        child.wait()?;
        Ok(())
    }

    /// Starts validator `i` again from its home; its RPC URL once it serves.
    pub(crate) fn restart(&mut self, i: usize) -> Result<String> {
        let (h, child) = self.0.get_mut(i).context("no such validator")?;
        if child.try_wait()?.is_none() {
            bail!("the validator in {} still runs", h.display());
        }
        *child = spawn(h)?;
        wait_ready(h, child)
    }

    /// Asks every validator to stop (SIGTERM), and kills those that do not in time.
    pub(crate) fn stop(&mut self) {
        for (_, child) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        let t0 = Instant::now();
        for (h, child) in &mut self.0 {
            while let Ok(None) = child.try_wait() {
                if t0.elapsed() > STOP_TIMEOUT {
                    tracing::warn!(home = %h.display(), "a validator did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
