//! The `pazar` command. It only parses arguments and wires library crates together.

mod bench;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "pazar", version, about = "Pazar: an open marketplace for compute")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks that print one JSON object.
    Bench {
        #[command(subcommand)]
        which: Bench,
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
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            which: Bench::Ledger { leases, blocks },
        } => {
            let report = bench::ledger(&bench::LedgerOpts { leases, blocks })?;
            println!("{}", serde_json::to_string(&report)?);
        }
    }
    Ok(())
}
