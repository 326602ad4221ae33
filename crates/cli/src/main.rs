//! The `pazar` command. It only parses arguments and wires library crates together.

mod bench;
mod bench_deploy;
mod bench_failover;
mod bench_infer;
mod bench_node;
mod bench_testnet;
mod bench_train;
mod chain;
mod chart;
mod demo;
mod deployment_cmd;
mod failure;
mod home;
mod ids;
mod infer_cmd;
mod infer_serve;
mod lease_cmd;
mod logging;
mod model_cmd;
mod progress;
mod provider_cmd;
mod sdl_cmd;
mod testnet;
mod train_cmd;
mod train_demo;
mod watch_cmd;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use failure::{Exit, Failure};

#[derive(Parser)]
#[command(
    name = "pazar",
    version,
    about = "Pazar: an open marketplace for compute",
    long_about = "Pazar: an open marketplace for compute. Providers sell machines, tenants deploy \
                  Akash SDL files on them, and a small chain records the market and settles \
                  payments every block.\n\n\
                  Ids name market objects the same way in every command: deployment \
                  [OWNER/]DSEQ, group [OWNER/]DSEQ/GSEQ, order [OWNER/]DSEQ/GSEQ/OSEQ, bid and \
                  lease [OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER; OWNER and PROVIDER are addresses or key \
                  names, and an id without OWNER is the signer's (--from).",
    after_help = "Examples:\n  pazar devnet\n  pazar deploy deploy.yaml --from alice\n  \
                  pazar lease status 12/1/1/provider --from alice\n  pazar completions bash > /etc/bash_completion.d/pazar\n\n\
                  See `pazar --help` for exit codes and error output.",
    after_long_help = failure::EXIT_CODES_HELP
)]
struct Cli {
    /// Log format on stderr (stdout carries only a command's answer).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    /// Log more: -v info, -vv debug, -vvv trace (RUST_LOG, when set, decides instead).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
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
    /// Answer as text for people, or as one JSON document (errors too, see --help).
    #[arg(long, short, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Subcommand)]
enum Command {
    /// The whole market on this machine: devnet, provider, a real SDL deployed, served, paid,
    /// withdrawn, closed, and every token accounted for.
    #[command(after_help = "Examples:\n  pazar demo\n  pazar demo --runtime sandbox --blocks 20")]
    Demo(demo::DemoOpts),
    /// Start a single-validator development chain with funded keys (created on first run).
    #[command(
        after_help = "Examples:\n  pazar devnet\n  pazar devnet --home /tmp/dev --rpc-listen 127.0.0.1:0 --block-time-ms 200\n  \
                            pazar devnet --reset --log-format json"
    )]
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
        /// The node's settings (TOML) instead of <home>/node.toml, which a new devnet writes.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Blocks a lease whose escrow ran dry stays in grace (provider unpaid, volumes kept)
        /// before it closes, in a new devnet's genesis (default: an hour of one-second blocks).
        #[arg(long)]
        grace_blocks: Option<u64>,
    },
    /// Run a node from an existing home (genesis.json, node.toml, validator key).
    /// Run many validators on this machine, each a `pazar node start` process with its own
    /// home, over loopback sockets (created on first run).
    #[command(after_help = "Examples:\n  pazar testnet --validators 4 --home /tmp/testnet\n  \
                            pazar testnet --validators 7 --home /tmp/testnet --block-time-ms 200 -o json")]
    Testnet(testnet::TestnetOpts),
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
        /// Whose ids these are when an id leaves out its OWNER (a key name or an address).
        #[arg(long, global = true)]
        from: Option<String>,
    },
    /// Sell this machine: the provider daemon and its inventory.
    Provider {
        #[command(subcommand)]
        which: provider_cmd::ProviderCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Verifiable distributed training: datasets, jobs and rounds on the ledger, a worker
    /// that takes part in a job, and the whole protocol on this machine (`pazar train demo`).
    Train {
        #[command(subcommand)]
        which: train_cmd::TrainCmd,
        #[command(flatten)]
        opts: ClientOpts,
    },
    /// Trained models: where a checkpoint came from.
    Model {
        #[command(subcommand)]
        which: model_cmd::ModelCmd,
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
    #[command(after_help = "Examples:\n  pazar deploy deploy.yaml --from alice\n  \
                            pazar deploy deploy.yaml --from alice --dseq 12 --deposit 5000000uusd\n  \
                            pazar deploy deploy.yaml --from alice --create-only -o json")]
    Deploy {
        #[command(flatten)]
        args: sdl_cmd::DeployArgs,
        #[command(flatten)]
        opts: ClientOpts,
        #[command(flatten)]
        tx: chain::TxOpts,
    },
    /// Generate text from a model bundle on this machine, offline: the bundle is verified
    /// first, then tokens stream to stdout (timings on stderr).
    #[command(
        after_help = "Examples:\n  pazar infer --model model.pzm --trust-header 41c0… \"Once upon a time\"\n  \
                            pazar infer --model model.pzm --genesis genesis.json --int8 --temperature 0.8 --seed 7 \"2+2=\"\n  \
                            pazar infer --model model.pzm -o json --max-tokens 32 \"key=\""
    )]
    Infer(infer_serve::InferArgs),
    /// Benchmarks that print one JSON object.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Print a completion script for a shell.
    #[command(
        after_help = "Examples:\n  pazar completions bash > ~/.local/share/bash-completion/completions/pazar\n  \
                            pazar completions zsh > \"${fpath[1]}/_pazar\"\n  \
                            pazar completions fish > ~/.config/fish/completions/pazar.fish\n  \
                            pazar completions powershell >> $PROFILE"
    )]
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Start the node of --home.
    #[command(
        after_help = "Examples:\n  pazar node start --home ~/.pazar\n  pazar node start --rpc-listen 0.0.0.0:26657 --log-format json"
    )]
    Start {
        #[arg(long)]
        home: Option<PathBuf>,
        /// The node's settings (TOML; its keys are these flags' names) instead of
        /// <home>/node.toml. An unknown key is refused.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override the configured RPC listen address.
        #[arg(long)]
        rpc_listen: Option<String>,
        /// Override the configured block time.
        #[arg(long)]
        block_time_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum SdlCmd {
    /// Validate a file: exit 0 and a summary, or exit 1 and every error as FILE:LINE:COL: path: message.
    #[command(
        after_help = "Examples:\n  pazar sdl check deploy.yaml\n  pazar sdl check deploy.yaml -o json\n  \
                            pazar sdl check akash-deploy.yaml --accept-unaudited"
    )]
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
    #[command(after_help = "Examples:\n  pazar bench ledger\n  pazar bench ledger --leases 10000 --blocks 2")]
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
    #[command(after_help = "Examples:\n  pazar bench node")]
    Node(bench_node::NodeBenchOpts),
    /// Deploy-to-serving time of a real SDL on this machine (devnet, provider daemon, Docker,
    /// local image), and bids per second of the bid engine on a burst of orders.
    #[command(after_help = "Examples:\n  pazar bench deploy")]
    Deploy(bench_deploy::DeployBenchOpts),
    /// Provider death to the service answering on another provider, with the tenant's agent at
    /// its default probe settings and the volume's data restored; snapshot and restore rates.
    #[command(after_help = "Examples:\n  pazar bench failover\n  pazar bench failover --rounds 5 --data-mb 256")]
    Failover(bench_failover::FailoverBenchOpts),
    /// Committed transactions per second on 4 validator processes and on 1, finality of single
    /// transactions, and the catch-up time of a validator killed under load and restarted.
    #[command(after_help = "Examples:\n  pazar bench testnet\n  pazar bench testnet --block-time-ms 500 --txs 5000")]
    Testnet(bench_testnet::TestnetBenchOpts),
    /// Verifiable distributed training on this machine: communication vs data-parallel, loss
    /// vs one process on the same tokens, audit and protocol overheads, every cheater caught.
    #[command(
        after_help = "Examples:\n  pazar bench train\n  pazar bench train --profile full --out /tmp/train-bench"
    )]
    Train(bench_train::TrainBenchOpts),
    /// Local generation on this CPU: tokens/s (f32 and int8), first-token latency, and the
    /// share of the measured matrix-multiply throughput that decoding reaches.
    #[command(after_help = "Examples:\n  pazar bench infer\n  pazar bench infer --profile ci --threads 1")]
    Infer(bench_infer::InferBenchOpts),
}

impl Command {
    /// How the command answers: errors are printed the same way.
    fn output(&self) -> Output {
        match self {
            Command::Keys { opts, .. }
            | Command::Tx { opts, .. }
            | Command::Query { opts, .. }
            | Command::Provider { opts, .. }
            | Command::Train { opts, .. }
            | Command::Model { opts, .. }
            | Command::Deployment { opts, .. }
            | Command::Lease { opts, .. }
            | Command::Deploy { opts, .. } => opts.output,
            Command::Sdl {
                which: SdlCmd::Check { output, .. },
            } => *output,
            Command::Testnet(o) => o.output,
            Command::Infer(o) => o.output(),
            // Benchmarks print JSON whatever happens.
            Command::Bench { .. } => Output::Json,
            Command::Demo(_) | Command::Devnet { .. } | Command::Node { .. } | Command::Completions { .. } => {
                Output::Text
            }
        }
    }

    /// Whether the command runs until stopped and logs what it does (at `info` by default).
    fn is_daemon(&self) -> bool {
        matches!(
            self,
            Command::Devnet { .. }
                | Command::Testnet(_)
                | Command::Node { .. }
                | Command::Demo(_)
                | Command::Provider {
                    which: provider_cmd::ProviderCmd::Run { .. },
                    ..
                }
                | Command::Train {
                    which: train_cmd::TrainCmd::Worker(_),
                    ..
                }
        )
    }
}

/// Whether the raw arguments ask for JSON output, for a usage error (the arguments did not
/// parse, so this is all there is to go by).
fn wants_json(args: &[String]) -> bool {
    args.windows(2)
        .any(|w| matches!(w[0].as_str(), "-o" | "--output") && w[1] == "json")
        || args
            .iter()
            .any(|a| a == "--output=json" || a == "-ojson" || a == "-o=json")
}

/// Prints a failure the way the command answers, and says which exit code it ends with.
fn report(e: &anyhow::Error, output: Output) -> Exit {
    let (exit, code) = failure::classify(e);
    debug_assert!(
        exit == Exit::Refused || failure::CLI_CODES.contains(&(code.as_str(), exit)),
        "{code} with exit {exit:?} is not in the table"
    );
    if e.downcast_ref::<Failure>().is_some_and(|f| f.reported) {
        return exit;
    }
    let message = format!("{e:#}");
    match output {
        Output::Json => {
            let out = failure::ErrorOut {
                error: failure::ErrorBody {
                    code: &code,
                    message: &message,
                },
            };
            println!("{}", serde_json::to_string(&out).unwrap_or_default());
        }
        Output::Text => eprintln!("error: {message}"),
    }
    exit
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.exit_code() == 0 => {
            // --help and --version.
            let _ = e.print();
            std::process::exit(Exit::Ok.code());
        }
        Err(e) => {
            if wants_json(&args) {
                let rendered = e.to_string();
                let _ = e.print();
                let out = failure::ErrorOut {
                    error: failure::ErrorBody {
                        code: "usage",
                        message: rendered.trim().trim_start_matches("error: "),
                    },
                };
                println!("{}", serde_json::to_string(&out).unwrap_or_default());
            } else {
                let _ = e.print();
            }
            std::process::exit(Exit::Local.code());
        }
    };
    logging::init(cli.log_format, cli.command.is_daemon(), cli.verbose);
    let output = cli.command.output();
    progress::set_mode(output);
    if let Err(e) = run(cli) {
        // A dry run ends as an error so that nothing after its simulation runs; its answer is
        // the command's output.
        if let Some(d) = chain::dry_run_of(&e) {
            std::process::exit(chain::report_dry_run(d, output).code());
        }
        std::process::exit(report(&e, output).code());
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Devnet {
            home,
            rpc_listen,
            block_time_ms,
            reset,
            config,
            grace_blocks,
        } => chain::devnet(
            home::resolve(home),
            config,
            &rpc_listen,
            block_time_ms,
            grace_blocks,
            reset,
        ),
        Command::Node {
            which:
                NodeCmd::Start {
                    home,
                    config,
                    rpc_listen,
                    block_time_ms,
                },
        } => chain::node_start(home::resolve(home), config, rpc_listen, block_time_ms, false),
        Command::Testnet(o) => testnet::run(&o),
        Command::Keys { which, opts } => chain::keys(which, &opts),
        Command::Tx { which, opts, tx } => chain::tx(which, &opts, &tx),
        Command::Query { which, opts, from } => chain::query(which, &opts, from.as_deref()),
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
        Command::Train { which, opts } => train_cmd::run(which, &opts),
        Command::Model { which, opts } => model_cmd::run(which, &opts),
        Command::Demo(o) => demo::run(&o),
        Command::Infer(o) => o.run(),
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
            which: Bench::Failover(opts),
        } => {
            let report = bench_failover::run(&opts)?;
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
        Command::Bench {
            which: Bench::Testnet(opts),
        } => {
            let report = bench_testnet::run(&opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            which: Bench::Train(opts),
        } => {
            let report = bench_train::run(&opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Bench {
            which: Bench::Infer(opts),
        } => {
            let report = bench_infer::run(&opts)?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "pazar", &mut std::io::stdout());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command a user can call, with its path (`pazar lease status`).
    fn leaves(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
            let p = format!("{path} {}", sub.get_name());
            if sub.has_subcommands() {
                leaves(sub, p, out);
            } else {
                out.push((p, sub.clone()));
            }
        }
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_command_s_help_has_an_example() {
        let mut all = Vec::new();
        leaves(&Cli::command(), "pazar".into(), &mut all);
        assert!(all.len() > 40, "{} commands", all.len());
        let missing: Vec<&str> = all
            .iter()
            .filter(|(_, c)| {
                let has = |s: Option<&clap::builder::StyledStr>| s.is_some_and(|s| s.to_string().contains("Examples:"));
                !has(c.get_after_help()) && !has(c.get_after_long_help()) && !has(c.get_long_about())
            })
            .map(|(p, _)| p.as_str())
            .collect();
        assert!(missing.is_empty(), "commands without an example: {missing:?}");
    }

    #[test]
    fn the_long_help_carries_the_exit_code_table() {
        let help = Cli::command().render_long_help().to_string();
        for line in [
            "Exit codes:",
            "2  a transaction did not take effect",
            "4  the node or the provider cannot be reached",
        ] {
            assert!(help.contains(line), "{line:?} missing from:\n{help}");
        }
        for (code, _) in failure::CLI_CODES {
            assert!(help.contains(code), "{code} is not documented");
        }
    }

    #[test]
    fn json_is_recognised_in_every_spelling_of_the_output_flag() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(wants_json(&a(&["pazar", "query", "-o", "json"])));
        assert!(wants_json(&a(&["pazar", "--output=json"])));
        assert!(!wants_json(&a(&["pazar", "query", "-o", "text"])));
    }
}
