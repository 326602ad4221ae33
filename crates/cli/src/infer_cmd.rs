//! `pazar infer --model FILE "prompt"`: text from a model bundle on this machine, offline. The
//! bundle is verified first (weights → checkpoint → ledger records → a final header), then the
//! engine generates with a KV cache; text streams to stdout token by token, the timings go to
//! stderr (or everything as one JSON object with `-o json`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde::Serialize;

use pazar_infer::bundle::{Bundle, Tokenizer, Verified};
use pazar_infer::engine::{
    self, Engine, EngineOptions, FinishReason, Flow, GenerateOptions, Precision, Sampling, SimdLevel, Stats,
};
use pazar_infer::text::Utf8Stream;
use pazar_types::train::ModelSpec;

use crate::failure::Failure;
use crate::model_cmd::{open_verified, TrustArgs};
use crate::{home, Output};

#[derive(Args)]
pub struct InferOpts {
    /// The model bundle (`pazar model export`).
    #[arg(long)]
    pub model: PathBuf,
    /// The text to continue (its UTF-8 bytes are its tokens).
    pub prompt: String,
    /// Most tokens to generate; generation also ends when the model's context is full.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy; above 0 tokens are sampled from the softmax of logits ÷ temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample from the smallest set of tokens whose probability reaches this (1: all).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sample from the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// The sampler's seed: the same seed, bundle and prompt give the same text.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Threads for the large matrix products (default: the machine's cores, at most 8).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Quantize the weight matrices to int8 at load (faster, slightly different logits).
    #[arg(long)]
    pub int8: bool,
    /// Stop when this text is generated (not printed); may be repeated.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Home directory (its genesis is the default trust anchor); default $PAZAR_HOME or ~/.pazar.
    #[arg(long)]
    pub home: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Serialize)]
struct InferOut<'a> {
    text: String,
    /// The generated token ids (bytes, with the byte tokenizer): what `text` decodes from.
    tokens: &'a [u32],
    finish: FinishReason,
    stats: Stats,
    precision: Precision,
    threads: usize,
    simd: String,
    #[serde(with = "pazar_types::tx::hex_array")]
    checkpoint: [u8; 32],
    spec: &'a ModelSpec,
    finality: String,
}

fn bytes_to_tokens(s: &str) -> Vec<u32> {
    s.bytes().map(u32::from).collect()
}

/// A bundle verified (weights → checkpoint → ledger → final header) before a single weight is
/// used, and its engine: what `pazar infer` and `pazar infer serve` run.
pub fn load_verified(
    model: &std::path::Path,
    trust: &TrustArgs,
    home: Option<std::path::PathBuf>,
    int8: bool,
    threads: Option<usize>,
) -> Result<(Bundle, Verified, Engine)> {
    let (bundle, verified) = open_verified(model, trust, &home::resolve(home))?;
    match bundle.tokenizer() {
        Tokenizer::Bytes => {}
    }
    let engine = Engine::new(
        &bundle.spec(),
        bundle.weights(),
        EngineOptions {
            precision: if int8 { Precision::Int8 } else { Precision::F32 },
            threads: threads.unwrap_or_else(engine::default_threads),
            simd: SimdLevel::Best,
        },
    )
    .map_err(|e| Failure::input(format!("loading {}: {e}", model.display())))?;
    Ok((bundle, verified, engine))
}

pub fn run(o: &InferOpts) -> Result<()> {
    let (bundle, verified, engine) = load_verified(&o.model, &o.trust, o.home.clone(), o.int8, o.threads)?;
    let spec = bundle.spec();
    let gen = GenerateOptions {
        max_tokens: o.max_tokens,
        sampling: Sampling {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            seed: o.seed,
        },
        stop: o.stop.iter().map(|s| bytes_to_tokens(s)).collect(),
    };
    let prompt = bytes_to_tokens(&o.prompt);
    let stream = o.output == Output::Text;
    let mut utf8 = Utf8Stream::default();
    let mut stdout = std::io::stdout().lock();
    let mut write_err = None;
    let g = engine
        .generate(&prompt, &gen, |t| {
            if !stream {
                return Flow::Continue;
            }
            // A byte tokenizer: every token is a byte (the engine checked it is in the vocabulary).
            let text = utf8.push(t as u8);
            match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
                Ok(()) => Flow::Continue,
                Err(e) => {
                    // The reader went away (a closed pipe): nothing more to generate for.
                    write_err = Some(e);
                    Flow::Stop
                }
            }
        })
        .map_err(|e| Failure::input(e.to_string()))?;
    let bytes: Vec<u8> = g.tokens.iter().map(|&t| t as u8).collect();
    match o.output {
        Output::Text => {
            if write_err.is_none() {
                let tail = utf8.finish();
                writeln!(stdout, "{tail}").context("writing the text")?;
            }
            let s = &g.stats;
            eprintln!(
                "{} tokens ({:?}) in {:.1} ms: first token {:.2} ms after {} prompt tokens, {:.1} tokens/s ({}, {} threads)",
                s.generated_tokens,
                g.finish,
                s.total_ms,
                s.first_token_ms,
                s.prompt_tokens,
                s.tokens_per_s,
                if o.int8 { "int8" } else { "f32" },
                engine.threads()
            );
        }
        Output::Json => {
            let out = InferOut {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                tokens: &g.tokens,
                finish: g.finish,
                stats: g.stats,
                precision: engine.precision(),
                threads: engine.threads(),
                simd: engine::simd_name(),
                checkpoint: verified.checkpoint,
                spec: &spec,
                finality: verified.finality.clone(),
            };
            println!("{}", serde_json::to_string(&out)?);
        }
    }
    if let Some(e) = write_err {
        return Err(anyhow!(e).context("writing the text"));
    }
    Ok(())
}
