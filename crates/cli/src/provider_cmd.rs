//! `pazar provider run` and `pazar provider inventory`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

use pazar_client::keyring::Keyring;
use pazar_client::Rpc;
use pazar_provider::daemon::{self, Config, Daemon};

use crate::chain::{key_err, passphrase_prompt};
use crate::{home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum ProviderCmd {
    /// Run the provider daemon: register, bid, serve manifests over TLS, run leases. It logs
    /// what it does on stderr (--log-format json for a log collector; RUST_LOG to filter).
    #[command(
        after_help = "Examples:\n  pazar provider run --config provider.toml --from provider\n  \
                            RUST_LOG=pazar_provider=debug pazar provider run --config provider.toml --log-format json"
    )]
    Run {
        /// provider.toml (listen address, attributes, prices, capacity overrides).
        #[arg(long)]
        config: Option<PathBuf>,
        /// The provider's key in the keyring.
        #[arg(long, default_value = "provider")]
        from: String,
    },
    /// What this machine can sell: CPU, memory, disk, GPUs (NVML).
    #[command(
        after_help = "Examples:\n  pazar provider inventory\n  pazar provider inventory --config provider.toml -o json"
    )]
    Inventory {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn config(path: &Option<PathBuf>) -> Result<Config> {
    match path {
        Some(p) => Ok(Config::read(p)?),
        None => Ok(toml::from_str("").context("default provider configuration")?),
    }
}

pub fn run(cmd: ProviderCmd, opts: &ClientOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    match cmd {
        ProviderCmd::Inventory { config: c } => {
            let inv = daemon::inventory(&config(&c)?, &home);
            match opts.output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&inv)?),
                Output::Text => {
                    println!(
                        "cpu: {} millicores\nmemory: {} MiB\nstorage: {} GiB free",
                        inv.cpu_millis,
                        inv.memory_bytes >> 20,
                        inv.storage_bytes >> 30
                    );
                    for g in &inv.gpus {
                        println!(
                            "gpu: {} {} ({}), {} GiB, {}",
                            g.vendor,
                            g.model,
                            g.name,
                            g.memory_bytes >> 30,
                            g.interface
                        );
                    }
                    for s in &inv.sources {
                        println!("  {s}");
                    }
                }
            }
            Ok(())
        }
        ProviderCmd::Run { config: c, from } => {
            let cfg = config(&c)?;
            let key = Keyring::new(&home).signer(&from, &passphrase_prompt).map_err(key_err)?;
            let rpc = Rpc::new(&home::node_url(opts.node.clone(), &home));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async move {
                let d = Daemon::start(cfg, &home, rpc, key).await?;
                let r = tokio::select! {
                    r = d.run() => r.map_err(anyhow::Error::from),
                    _ = tokio::signal::ctrl_c() => Ok(()),
                };
                match &r {
                    Ok(()) => tracing::info!("provider daemon stopped"),
                    Err(e) => tracing::error!("provider daemon failed: {e:#}"),
                }
                r
            })
        }
    }
}
