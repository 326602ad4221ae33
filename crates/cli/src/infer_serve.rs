//! `pazar infer serve --model FILE`: the model bundle behind an OpenAI-compatible HTTP API on
//! this machine (`pazar_infer::serve`), so tools written for OpenAI or for local model servers
//! use it unchanged. The bundle is verified first, exactly as `pazar infer` and `pazar model
//! verify` do; the listener is loopback only unless `--allow-remote`. Once listening, one line
//! names the URL (with `-o json`, one JSON object), so a script that asked for port 0 reads the
//! port; SIGINT or SIGTERM stops the server after the requests in flight, or after
//! `serve::DEFAULT_SHUTDOWN_GRACE` if some do not end (a client that stopped reading), dropping
//! their connections.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::Serialize;

use pazar_infer::engine::Precision;
use pazar_infer::serve::{self, ServeConfig};

use crate::failure::Failure;
use crate::infer_cmd::InferOpts;
use crate::model_cmd::TrustArgs;
use crate::Output;

/// `pazar infer`: generation from a prompt (`pazar infer --model FILE "prompt"`, see
/// [`crate::infer_cmd`]) or one of [`InferSub`] (`pazar infer serve …`); either, never both.
///
/// Parsed by hand ([`clap::FromArgMatches`]) because clap's derive cannot make the prompt's
/// options optional as a whole when they hold a flattened group (the trust anchors): the
/// generated `Option<InferOpts>` is always `None` then, and a plain `InferOpts` demands
/// `--model` and the prompt even when `serve` is given.
pub enum InferArgs {
    Generate(InferOpts),
    Sub(InferSub),
}

impl clap::FromArgMatches for InferArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        if m.subcommand_name().is_some() {
            Ok(InferArgs::Sub(InferSub::from_arg_matches(m)?))
        } else {
            Ok(InferArgs::Generate(InferOpts::from_arg_matches(m)?))
        }
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for InferArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        InferSub::augment_subcommands(InferOpts::augment_args(cmd))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl InferArgs {
    pub fn output(&self) -> Output {
        match self {
            InferArgs::Generate(g) => g.output,
            InferArgs::Sub(s) => s.output(),
        }
    }

    pub fn run(&self) -> Result<()> {
        match self {
            InferArgs::Generate(g) => crate::infer_cmd::run(g),
            InferArgs::Sub(s) => run(s),
        }
    }
}

/// The subcommands of `pazar infer`.
#[derive(Subcommand)]
pub enum InferSub {
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/models, /v1/completions,
    /// /v1/chat/completions, streaming with SSE) on 127.0.0.1, after verifying the bundle.
    #[command(
        after_help = "Examples:\n  pazar infer serve --model model.pzm --trust-header 41c0…\n  \
                            pazar infer serve --model model.pzm --genesis genesis.json --listen 127.0.0.1:0 -o json\n\n\
                            Then: OpenAI(base_url=\"http://127.0.0.1:8080/v1\", api_key=\"unused\"). The model's id is \
                            pazar- and the first 12 hex digits of its checkpoint (GET /v1/models)."
    )]
    Serve(ServeOpts),
}

impl InferSub {
    pub fn output(&self) -> Output {
        match self {
            InferSub::Serve(o) => o.output,
        }
    }
}

#[derive(Args)]
pub struct ServeOpts {
    /// The model bundle (`pazar model export`).
    #[arg(long)]
    pub model: PathBuf,
    /// Address to listen on; port 0 picks a free port (the line printed at start names it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Listen on an address other than loopback, and answer requests whatever their Host or
    /// Origin. The API has no authentication: anyone who reaches the port runs the model.
    #[arg(long)]
    pub allow_remote: bool,
    /// Threads for the large matrix products (default: the machine's cores, at most 8).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize the weight matrices to int8 at load (faster, slightly different logits).
    #[arg(long)]
    pub int8: bool,
    /// Generations that run at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a generation; more are answered 503 (server_busy).
    #[arg(long, default_value_t = 16)]
    pub queue: usize,
    /// Home directory (its genesis is the default trust anchor); default $PAZAR_HOME or ~/.pazar.
    #[arg(long)]
    pub home: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// The line printed once the server listens (`-o json`).
#[derive(Serialize)]
struct Listening {
    /// The API's base URL, as OpenAI clients take it (`…/v1`).
    url: String,
    listen: SocketAddr,
    model: String,
    #[serde(with = "pazar_types::tx::hex_array")]
    checkpoint: [u8; 32],
    context_length: usize,
    precision: Precision,
    threads: usize,
    finality: String,
}

pub fn run(sub: &InferSub) -> Result<()> {
    match sub {
        InferSub::Serve(o) => serve_model(o),
    }
}

fn serve_model(o: &ServeOpts) -> Result<()> {
    serve::check_listen(o.listen, o.allow_remote).map_err(|e| Failure::input(format!("--listen: {e}")))?;
    let (bundle, verified, engine) =
        crate::infer_cmd::load_verified(&o.model, &o.trust, o.home.clone(), o.int8, o.threads)?;
    let created = bundle.meta.anchor.header.time_ms / 1000;
    // The engine holds its own copy of the weights, in its layout.
    drop(bundle);
    let model = serve::model_id(&verified.checkpoint);
    let (context_length, precision, threads) = (engine.shape().seq_len, engine.precision(), engine.threads());
    let listening = |listen: SocketAddr| Listening {
        url: format!("http://{listen}/v1"),
        listen,
        model: model.clone(),
        checkpoint: verified.checkpoint,
        context_length,
        precision,
        threads,
        finality: verified.finality.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .map_err(|e| Failure::input(format!("cannot listen on {}: {e}", o.listen)))?;
        let addr = listener.local_addr().context("the listener's address")?;
        let out = listening(addr);
        let app = serve::router(
            Arc::new(engine),
            ServeConfig {
                model_id: model.clone(),
                created,
                concurrency: o.parallel,
                queue: o.queue,
                allow_remote: o.allow_remote,
                send_timeout: serve::DEFAULT_SEND_TIMEOUT,
            },
        )
        .map_err(|e| Failure::input(e.to_string()))?;
        let shutdown = shutdown_signal()?;
        if !addr.ip().is_loopback() {
            eprintln!(
                "WARNING: serving on {addr}, which is not loopback, with no authentication: anyone who can \
                 reach this port can run the model"
            );
        }
        {
            let mut stdout = std::io::stdout().lock();
            match o.output {
                Output::Text => writeln!(
                    stdout,
                    "{} serves {} ({} tokens of context, OpenAI-compatible; Ctrl-C stops)",
                    out.url, out.model, out.context_length
                ),
                Output::Json => writeln!(stdout, "{}", serde_json::to_string(&out)?),
            }
            .and_then(|()| stdout.flush())
            .context("writing to stdout")?;
        }
        serve::serve(listener, app, shutdown, serve::DEFAULT_SHUTDOWN_GRACE)
            .await
            .context("serving the API")
    });
    // A generation still running (its connection was dropped at the grace's end) stops at its
    // next token; the process does not wait for it.
    rt.shutdown_background();
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed here, before the caller
/// says it listens: a signal sent as soon as the line is read must stop the server cleanly,
/// not kill it.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
