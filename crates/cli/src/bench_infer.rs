//! `pazar bench infer`: local generation on this machine's CPU. Batch-1 decoding speed (f32 and
//! int8 weights), first-token latency, and the share of the machine's matrix-multiply
//! throughput that decoding reaches, for the largest model the training bench produces and a
//! larger one (random weights: speed does not depend on what the weights learned).

use std::path::{Path, PathBuf};
use std::process::Command;
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
    /// The virtual environment with llama.cpp's Python binding (`scripts/llama_cpp.sh`);
    /// default $PAZAR_LLAMA_VENV, else `.venv-llama`. Without it, no comparison.
    #[arg(long)]
    pub llama_venv: Option<PathBuf>,
    /// The driver that times llama.cpp (default `scripts/llama_cpp_driver.py`).
    #[arg(long, default_value = "scripts/llama_cpp_driver.py")]
    pub llama_driver: PathBuf,
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
    /// Generated tokens after the first ÷ seconds since the first, in the best slice.
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
    /// The yardstick measured between this model's f32 decoding slices (best slice), on
    /// `decode_threads` threads.
    pub matmul_gflops: f64,
    /// Threads decoding this model actually uses (1 when no product is large enough to split).
    pub decode_threads: usize,
    /// f32 tokens/s on one thread (`full` profile).
    pub tokens_per_s_one_thread: Option<f64>,
    /// f32 tokens/s with the detected SIMD ÷ with the target's baseline (`full` profile).
    pub simd_speedup: Option<f64>,
    /// llama.cpp on the same weights (GGUF F32, then Q8_0), prompt, token count and threads.
    pub llama_cpp: Option<LlamaCpp>,
}

/// llama.cpp's decoding speed on the same model, as `scripts/llama_cpp_driver.py bench` times it
/// (best of its runs; the binding's Python call per token included).
#[derive(Serialize)]
pub struct LlamaCpp {
    pub version: String,
    pub threads: usize,
    pub f32_tokens_per_s: f64,
    pub q8_0_tokens_per_s: f64,
    /// Our f32 tokens/s ÷ llama.cpp's F32.
    pub tokens_per_s_ratio: f64,
    /// Our int8 tokens/s ÷ llama.cpp's Q8_0.
    pub int8_vs_q8_0_ratio: f64,
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

/// Greedy generations of `case` in `slices` slices of `slice_s` seconds, each slice preceded by
/// a matrix-multiply measurement of the same length on `threads` threads (when `yardstick`), so
/// that both sides see the same moments of a shared machine. Returns the decoding numbers (the
/// best slice's tokens/s, the median first-token latency) and the yardstick's samples (FLOP/s).
fn decode(
    case: &Case,
    engine: &Engine,
    slices: usize,
    slice_s: f64,
    yardstick: Option<usize>,
) -> Result<(Decode, Vec<f64>)> {
    let prompt: Vec<u32> = prompt_of(case).into_iter().map(u32::from).collect();
    let o = GenerateOptions {
        max_tokens: case.generate,
        ..GenerateOptions::default()
    };
    let mut rates = Vec::new();
    let mut firsts = Vec::new();
    let mut flops = Vec::new();
    for _ in 0..slices {
        if let Some(threads) = yardstick {
            flops.push(engine::matmul_flops(GEMM_N, threads, slice_s, SimdLevel::Best));
        }
        let t0 = Instant::now();
        let (mut tokens, mut seconds) = (0usize, 0.0f64);
        while tokens == 0 || t0.elapsed().as_secs_f64() < slice_s {
            let g = engine.generate(&prompt, &o, |_| Flow::Continue)?;
            firsts.push(g.stats.first_token_ms);
            tokens += g.tokens.len().saturating_sub(1);
            seconds += (g.stats.total_ms - g.stats.first_token_ms) / 1e3;
        }
        rates.push(tokens as f64 / seconds.max(f64::MIN_POSITIVE));
    }
    Ok((
        Decode {
            tokens_per_s: best(&rates),
            first_token_ms: round3(median(&mut firsts)),
            runs: firsts.len(),
        },
        flops,
    ))
}

/// The best slice: on a shared machine, the least disturbed moment (taken for both sides of a
/// ratio alike).
fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

/// What every run decodes after: printable ASCII, so that llama.cpp's tokenizer reads the same
/// byte tokens.
const PROMPT: &[u8] = b"the little dog sees a cat by the river and runs home ";

fn prompt_of(case: &Case) -> Vec<u8> {
    PROMPT.iter().cycle().take(case.prompt).copied().collect()
}

/// Where llama.cpp's binding is, if installed.
fn llama_python(o: &InferBenchOpts) -> std::result::Result<PathBuf, String> {
    let venv = o
        .llama_venv
        .clone()
        .or_else(|| std::env::var_os("PAZAR_LLAMA_VENV").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(".venv-llama"));
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(format!(
            "llama.cpp is not installed at {} (run scripts/llama_cpp.sh in the repository, or pass --llama-venv)",
            venv.display()
        ));
    }
    if !o.llama_driver.exists() {
        return Err(format!(
            "the driver {} is not here (run from the repository, or pass --llama-driver)",
            o.llama_driver.display()
        ));
    }
    Ok(python)
}

/// llama.cpp's tokens/s for `case`'s weights as GGUF of type `ty`, on `threads` threads.
fn llama_cpp_rate(
    python: &Path,
    driver: &Path,
    case: &Case,
    params: &[f32],
    ty: pazar_infer::gguf::TensorType,
    threads: usize,
) -> Result<(f64, String)> {
    let path = std::env::temp_dir().join(format!("pazar-bench-infer-{}-{}.gguf", std::process::id(), case.name));
    let written = (|| -> Result<()> {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&path)?);
        pazar_infer::gguf::write_as(&spec_of(&case.config), params, case.name, ty, &mut w)?;
        std::io::Write::flush(&mut w)?;
        Ok(())
    })();
    let out = written.and_then(|()| {
        Command::new(python)
            .arg(driver)
            .args(["bench", "--model"])
            .arg(&path)
            .args(["--prompt-hex", &hex::encode(prompt_of(case))])
            .args(["--tokens", &case.generate.to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--n-ctx", &case.config.seq_len.to_string()])
            .args(["--repeat", "5"])
            .output()
            .context("running the llama.cpp driver")
    });
    let _ = std::fs::remove_file(&path);
    let out = out?;
    if !out.status.success() {
        anyhow::bail!(
            "the llama.cpp driver failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("the llama.cpp driver's answer")?;
    let rate = v["tokens_per_s"]
        .as_f64()
        .context("the driver reported no tokens_per_s")?;
    Ok((rate, v["llama_cpp_python"].as_str().unwrap_or("?").to_string()))
}

/// Side of the square matrices of the yardstick.
const GEMM_N: usize = 256;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
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

    let (slices, slice_s) = if full { (6, 0.25) } else { (4, 0.1) };
    let llama = llama_python(o);
    let mut models = Vec::new();
    for case in &cases {
        eprintln!("bench infer: {}", case.name);
        let model = Model::new(case.config, Threads::ONE).context("bench model")?;
        let params = model.init_params(1);
        let p = params.len();
        debug_assert_eq!(p, Shape::of(&spec_of(&case.config))?.params());
        let f32_engine = load(case, &params, Precision::F32, threads, SimdLevel::Best)?;
        // The yardstick runs on the cores decoding uses: a model whose products are all too
        // small to split decodes on one thread, whatever --threads says.
        let cores = f32_engine.decode_threads();
        let (f, flops) = decode(case, &f32_engine, slices, slice_s, Some(cores))?;
        drop(f32_engine);
        let int8_engine = load(case, &params, Precision::Int8, threads, SimdLevel::Best)?;
        let (q, _) = decode(case, &int8_engine, slices, slice_s, None)?;
        drop(int8_engine);
        let (one, simd_speedup) = if full {
            let e = load(case, &params, Precision::F32, 1, SimdLevel::Best)?;
            let (one, _) = decode(case, &e, slices / 2, slice_s, None)?;
            let e = load(case, &params, Precision::F32, 1, SimdLevel::Scalar)?;
            let (scalar, _) = decode(case, &e, slices / 2, slice_s, None)?;
            (Some(one.tokens_per_s), Some(one.tokens_per_s / scalar.tokens_per_s))
        } else {
            (None, None)
        };
        let llama_cpp = match &llama {
            Ok(python) => {
                use pazar_infer::gguf::TensorType;
                let (f32_rate, version) =
                    llama_cpp_rate(python, &o.llama_driver, case, &params, TensorType::F32, cores)?;
                let (q8_rate, _) = llama_cpp_rate(python, &o.llama_driver, case, &params, TensorType::Q8_0, cores)?;
                Some(LlamaCpp {
                    version,
                    threads: cores,
                    f32_tokens_per_s: f32_rate.round(),
                    q8_0_tokens_per_s: q8_rate.round(),
                    tokens_per_s_ratio: round3(f.tokens_per_s / f32_rate),
                    int8_vs_q8_0_ratio: round3(q.tokens_per_s / q8_rate),
                })
            }
            Err(_) => None,
        };
        let yardstick = best(&flops);
        let util = |tps: f64| round3(2.0 * p as f64 * tps / yardstick);
        models.push(ModelReport {
            name: case.name.into(),
            spec: spec_of(&case.config),
            params: p,
            prompt_tokens: case.prompt,
            generated_tokens_per_run: case.generate,
            int8_speedup: round3(q.tokens_per_s / f.tokens_per_s),
            flops_utilisation: util(f.tokens_per_s),
            flops_utilisation_int8: util(q.tokens_per_s),
            matmul_gflops: round3(yardstick / 1e9),
            decode_threads: cores,
            tokens_per_s_one_thread: one.map(|t| t.round()),
            simd_speedup: simd_speedup.map(round3),
            llama_cpp,
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
    let matmul = Matmul {
        gflops: head.matmul_gflops,
        n: GEMM_N,
        threads: head.decode_threads,
        how: format!(
            "c = a·b for {GEMM_N}×{GEMM_N} f32 matrices (768 KiB together) with the engine's blocked SIMD kernel \
             (b packed in panels two vectors wide, 6×2-vector register micro-kernel, fused multiply-add), rows \
             of c split over scoped threads, as many as decoding uses; {slice_s} s slices interleaved with the \
             f32 decoding slices, the best slice (as for tokens/s); 2·n³ FLOP per product"
        ),
    };
    Ok(InferBenchReport {
        bench: "infer",
        profile: o.profile.clone(),
        threads,
        simd: engine::simd_name(),
        tokens_per_s: head.f32.tokens_per_s,
        first_token_ms: head.f32.first_token_ms,
        flops_utilisation: head.flops_utilisation,
        int8_speedup: head.int8_speedup,
        tokens_per_s_vs_llama_cpp: head.llama_cpp.as_ref().map(|l| l.tokens_per_s_ratio),
        tokens_per_s_vs_llama_cpp_reason: match &llama {
            Ok(_) => "our f32 tokens/s ÷ llama.cpp's on the same weights exported as GGUF F32, the same prompt, \
                      token count, context and threads (the threads decoding uses), in this run; llama.cpp timed \
                      by scripts/llama_cpp_driver.py through its Python binding (the call per token included), \
                      best of 5 runs"
                .into(),
            Err(why) => why.clone(),
        },
        matmul,
        note: "batch 1, greedy, random weights; tokens/s counts generated tokens after the first. Parameters \
               include the embedding table, which decoding reads one row of, so 2 × parameters overstates the \
               FLOPs of a token of a model this small. Products under the engine's PARALLEL_MIN_WORK run on \
               the calling thread, so a small model decodes on one core and its yardstick runs on one. Timings come from a shared, noisy machine: compare \
               ratios within one run."
            .into(),
        models,
        seconds: round3(t_all.elapsed().as_secs_f64()),
    })
}
