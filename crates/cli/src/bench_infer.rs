//! `pazar bench infer`: local generation on this machine's CPU. Batch-1 decoding speed (f32 and
//! int8 weights), first-token latency, and the share of the machine's matrix-multiply
//! throughput that decoding reaches, for the largest model the training bench produces and a
//! larger one (random weights: speed does not depend on what the weights learned).

use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use pazar_infer::engine::{self, Engine, EngineOptions, Flow, GenerateOptions, Precision, Shape, SimdLevel};
use pazar_train::model::{Config, Model};
use pazar_train::ops::Threads;
use pazar_types::train::ModelSpec;

#[derive(Args)]
pub struct InferBenchOpts {
    /// `ci`: the training bench's full model only, short runs (a few seconds). `full`: also a
    /// 25 M-parameter model (dim 512, 8 layers), single-thread and scalar comparisons (about a
    /// minute on 2 cores).
    #[arg(long, default_value = "full", value_parser = ["ci", "full"])]
    pub profile: String,
    /// Threads for generation and for the matrix-multiply yardstick (default: the engine's,
    /// the machine's cores up to 8).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// The matrix-multiply throughput the utilisation divides by.
#[derive(Serialize)]
pub struct Matmul {
    pub gflops: f64,
    pub n: usize,
    pub threads: usize,
    pub how: String,
}

#[derive(Serialize)]
pub struct Decode {
    /// Generated tokens after the first ÷ seconds since the first, over every run.
    pub tokens_per_s: f64,
    /// Median over runs: from the call (prompt included) to the first generated token.
    pub first_token_ms: f64,
    pub runs: usize,
}

#[derive(Serialize)]
pub struct ModelReport {
    pub name: String,
    pub spec: ModelSpec,
    pub params: usize,
    pub prompt_tokens: usize,
    pub generated_tokens_per_run: usize,
    pub f32: Decode,
    pub int8: Decode,
    /// int8 tokens/s ÷ f32 tokens/s.
    pub int8_speedup: f64,
    /// 2 × parameters × f32 tokens/s ÷ matmul FLOP/s.
    pub flops_utilisation: f64,
    /// The same with int8 tokens/s (still divided by the f32 matmul yardstick).
    pub flops_utilisation_int8: f64,
    /// f32 tokens/s on one thread (`full` profile).
    pub tokens_per_s_one_thread: Option<f64>,
    /// f32 tokens/s with the detected SIMD ÷ with the target's baseline (`full` profile).
    pub simd_speedup: Option<f64>,
}

#[derive(Serialize)]
pub struct InferBenchReport {
    pub bench: &'static str,
    pub profile: String,
    pub threads: usize,
    pub simd: String,
    /// The headline numbers are the training bench's full model's (`models[0]`).
    pub tokens_per_s: f64,
    pub first_token_ms: f64,
    pub flops_utilisation: f64,
    pub int8_speedup: f64,
    pub tokens_per_s_vs_llama_cpp: Option<f64>,
    pub tokens_per_s_vs_llama_cpp_reason: String,
    pub matmul: Matmul,
    pub models: Vec<ModelReport>,
    pub note: String,
    pub seconds: f64,
}

struct Case {
    name: &'static str,
    config: Config,
    prompt: usize,
    generate: usize,
}

fn spec_of(c: &Config) -> ModelSpec {
    ModelSpec {
        vocab: c.vocab as u32,
        dim: c.dim as u32,
        layers: c.layers as u16,
        heads: c.heads as u16,
        ffn_dim: c.ffn as u32,
        seq_len: c.seq_len as u32,
    }
}

/// Greedy generations of `case` until at least `seconds` have passed (and at least two runs).
fn decode(case: &Case, engine: &Engine, seconds: f64) -> Result<Decode> {
    let prompt: Vec<u32> = (0..case.prompt).map(|i| (i * 37 % case.config.vocab) as u32).collect();
    let o = GenerateOptions {
        max_tokens: case.generate,
        ..GenerateOptions::default()
    };
    let t0 = Instant::now();
    let (mut after_first, mut after_first_s) = (0usize, 0.0f64);
    let mut firsts = Vec::new();
    while firsts.len() < 2 || t0.elapsed().as_secs_f64() < seconds {
        let g = engine.generate(&prompt, &o, |_| Flow::Continue)?;
        firsts.push(g.stats.first_token_ms);
        after_first += g.tokens.len().saturating_sub(1);
        after_first_s += (g.stats.total_ms - g.stats.first_token_ms) / 1e3;
    }
    firsts.sort_by(f64::total_cmp);
    Ok(Decode {
        tokens_per_s: after_first as f64 / after_first_s.max(f64::MIN_POSITIVE),
        first_token_ms: round3(firsts[firsts.len() / 2]),
        runs: firsts.len(),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn load(case: &Case, params: &[f32], precision: Precision, threads: usize, simd: SimdLevel) -> Result<Engine> {
    Engine::new(
        &spec_of(&case.config),
        params,
        EngineOptions {
            precision,
            threads,
            simd,
        },
    )
    .with_context(|| format!("loading {}", case.name))
}

pub fn run(o: &InferBenchOpts) -> Result<InferBenchReport> {
    let t_all = Instant::now();
    let full = o.profile == "full";
    let threads = o.threads.unwrap_or_else(engine::default_threads);
    let secs = if full { 1.5 } else { 0.5 };
    let mut cases = vec![Case {
        name: "train-bench-full",
        config: Config {
            vocab: 256,
            dim: 48,
            layers: 3,
            heads: 4,
            ffn: 128,
            seq_len: 64,
        },
        prompt: 8,
        generate: 56,
    }];
    if full {
        cases.push(Case {
            name: "dim512-8layers",
            config: Config {
                vocab: 256,
                dim: 512,
                layers: 8,
                heads: 8,
                ffn: 1376,
                seq_len: 256,
            },
            prompt: 16,
            generate: 48,
        });
    }

    eprintln!("bench infer: matrix-multiply yardstick on {threads} threads");
    let n = 256;
    let flops = engine::matmul_flops(n, threads, secs, SimdLevel::Best);
    let matmul = Matmul {
        gflops: round3(flops / 1e9),
        n,
        threads,
        how: format!(
            "c = a·b for {n}×{n} f32 matrices (768 KiB together) with the engine's blocked SIMD kernel \
             (B packed in panels two vectors wide, 4×2-vector register micro-kernel, fused multiply-add), \
             rows of c split over {threads} scoped threads, repeated for {secs} s; 2·n³ FLOP per product"
        ),
    };

    let mut models = Vec::new();
    for case in &cases {
        eprintln!("bench infer: {}", case.name);
        let model = Model::new(case.config, Threads::ONE).context("bench model")?;
        let params = model.init_params(1);
        let p = params.len();
        debug_assert_eq!(p, Shape::of(&spec_of(&case.config))?.params());
        let f = decode(
            case,
            &load(case, &params, Precision::F32, threads, SimdLevel::Best)?,
            secs,
        )?;
        let q = decode(
            case,
            &load(case, &params, Precision::Int8, threads, SimdLevel::Best)?,
            secs,
        )?;
        let (one, simd_speedup) = if full {
            let one = decode(case, &load(case, &params, Precision::F32, 1, SimdLevel::Best)?, secs)?;
            let scalar = decode(case, &load(case, &params, Precision::F32, 1, SimdLevel::Scalar)?, secs)?;
            (Some(one.tokens_per_s), Some(one.tokens_per_s / scalar.tokens_per_s))
        } else {
            (None, None)
        };
        let util = |tps: f64| round3(2.0 * p as f64 * tps / flops);
        models.push(ModelReport {
            name: case.name.into(),
            spec: spec_of(&case.config),
            params: p,
            prompt_tokens: case.prompt,
            generated_tokens_per_run: case.generate,
            int8_speedup: round3(q.tokens_per_s / f.tokens_per_s),
            flops_utilisation: util(f.tokens_per_s),
            flops_utilisation_int8: util(q.tokens_per_s),
            tokens_per_s_one_thread: one.map(|t| t.round()),
            simd_speedup: simd_speedup.map(round3),
            f32: Decode {
                tokens_per_s: f.tokens_per_s.round(),
                ..f
            },
            int8: Decode {
                tokens_per_s: q.tokens_per_s.round(),
                ..q
            },
        });
    }
    let head = &models[0];
    Ok(InferBenchReport {
        bench: "infer",
        profile: o.profile.clone(),
        threads,
        simd: engine::simd_name(),
        tokens_per_s: head.f32.tokens_per_s,
        first_token_ms: head.f32.first_token_ms,
        flops_utilisation: head.flops_utilisation,
        int8_speedup: head.int8_speedup,
        tokens_per_s_vs_llama_cpp: None,
        tokens_per_s_vs_llama_cpp_reason: "not measured here: the llama.cpp side (GGUF export and a llama.cpp \
                                           build) is joined to this bench separately"
            .into(),
        matmul,
        note: "batch 1, greedy, random weights; tokens/s counts generated tokens after the first. Parameters \
               include the embedding table, which decoding reads one row of, so 2 × parameters overstates the \
               FLOPs of a token of a model this small. Timings come from a shared, noisy machine: compare \
               ratios within one run."
            .into(),
        models,
        seconds: round3(t_all.elapsed().as_secs_f64()),
    })
}
