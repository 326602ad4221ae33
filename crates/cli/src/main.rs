//! The `pazar` command. It only parses arguments and wires library crates together.

mod bench;
mod bench_deploy;
mod bench_node;
mod chain;
mod demo;
mod deployment_cmd;
mod home;
mod lease_cmd;
mod provider_cmd;
mod sdl_cmd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "pazar", version, about = "Pazar: an open marketplace for compute")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Options every client command takes.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Home directory (keys, and the address of a local node); default $PAZAR_HOME or ~/.pazar.
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// Node RPC URL; default $PAZAR_NODE, else the local node of --home, else 127.0.0.1:26657.
    #[arg(long, global = true)]
    pub node: Option<String>,
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// The whole market on this machine: devnet, provider, a real SDL deployed, served, paid,
    /// withdrawn, closed, and every token accounted for.
    Demo(demo::DemoOpts),
    /// Start a single-validator development chain with funded keys (created on first run).
    Devnet {
        #[arg(long)]
        home: Option<PathBuf>,
        /// RPC listen address (port 0 picks a free port; see <home>/rpc.addr).
        #[arg(long, default_value = home::DEFAULT_RPC)]
        rpc_listen: String,
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// Delete an existing devnet in --home first.
        #[arg(long)]
        reset: bool,
    },
    /// Run a node from an existing home (genesis.json, config.json, validator key).
    Node {
        #[command(subcommand)]
        which: NodeCmd,
    },
    /// Manage keys in the keyring.
    Keys {
        #[command(subcommand)]
        which: chain::KeysCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Sign and submit transactions.
    Tx {
        #[command(subcommand)]
        which: chain::TxCmd,
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        tx: chain::TxOpts,
    },
    /// Read the chain.
    Query {
        #[command(subcommand)]
        which: chain::QueryCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Sell this machine: the provider daemon and its inventory.
    Provider {
        #[command(subcommand)]
        which: provider_cmd::ProviderCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// A deployment: why no bids, deposit, close.
    Deployment {
        #[command(subcommand)]
        which: deployment_cmd::DeploymentCmd,
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        tx: chain::TxOpts,
    },
    /// A running lease: status, logs, manifest, close.
    Lease {
        #[command(subcommand)]
        which: lease_cmd::LeaseCmd,
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        tx: chain::TxOpts,
    },
    /// Akash SDL v2 deployment files.
    Sdl {
        #[command(subcommand)]
        which: SdlCmd,
    },
    /// Create a deployment from an SDL file (deploy.yaml): its groups go on the ledger, its
    /// manifest is kept for the provider.
    Deploy {
        #[command(flatten)]
        args: sdl_cmd::DeployArgs,
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        tx: chain::TxOpts,
    },
    /// Benchmarks that print one JSON object.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Start the node of --home.
    Start {
        #[arg(long)]
        home: Option<PathBuf>,
        /// Override the configured RPC listen address.
        #[arg(long)]
        rpc_listen: Option<String>,
    },
}

#[derive(Subcommand)]
enum SdlCmd {
    /// Validate a file: exit 0 and a summary, or exit 1 and every error as FILE:LINE:COL: path: message.
    Check {
        file: PathBuf,
        #[arg(long, short, value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Say yes to running on providers nobody audited where the file names Akash auditors
        /// (akash1…), which Pazar cannot check; without it such a file is refused.
        #[arg(long)]
        accept_unaudited: bool,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Signed transactions per second vs raw ed25519 verifications; one block on a small vs a
    /// large state (lazy escrow settlement).
    Ledger {
        /// Open leases in the large state.
        #[arg(long, default_value_t = 1_000_000)]
        leases: u64,
        /// Blocks of 1,000 transactions applied to each state.
        #[arg(long, default_value_t = 8)]
        blocks: usize,
    },
    /// Committed transactions per second through a real node's RPC, commit latency, and the
    /// restart time of a store holding many accounts.
    Node(bench_node::NodeBenchOpts),
    /// Deploy-to-serving time of a real SDL on this machine (devnet, provider daemon, Docker,
    /// local image), and bids per second of the bid engine on a burst of orders.
    Deploy(bench_deploy::DeployBenchOpts),
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devnet {
            home,
            rpc_listen,
            block_time_ms,
            reset,
        } => chain::devnet(home::resolve(home), &rpc_listen, block_time_ms, reset),
        Command::Node {
            which: NodeCmd::Start { home, rpc_listen },
        } => chain::node_start(home::resolve(home), rpc_listen, false),
        Command::Keys { which, opts } => chain::keys(which, &opts),
        Command::Tx { which, opts, tx } => chain::tx(which, &opts, &tx),
        Command::Query { which, opts } => chain::query(which, &opts),
        Command::Sdl {
            which:
                SdlCmd::Check {
                    file,
                    output,
                    accept_unaudited,
                },
        } => sdl_cmd::check(&file, output, accept_unaudited),
        Command::Deploy { args, opts, tx } => sdl_cmd::deploy(&args, &opts, &tx),
        Command::Provider { which, opts } => provider_cmd::run(which, &opts),
        Command::Demo(o) => demo::run(&o),
        Command::Lease { which, opts, tx } => lease_cmd::run(which, &opts, &tx),
        Command::Deployment { which, opts, tx } => deployment_cmd::run(which, &opts, &tx),
        Command::Bench {
            which: Bench::Ledger { leases, blocks },
        } => {
            let report = bench::ledger(&bench::LedgerOpts { leases, blocks })?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            which: Bench::Deploy(opts),
        } => {
            let report = bench_deploy::run(&opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            which: Bench::Node(opts),
        } => {
            let report = bench_node::run(&opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
    }
}
