//! The exported GGUF runs in llama.cpp and computes what the training model computes: a model
//! trained for a short while is written with `pazar_infer::gguf::write`, loaded by llama.cpp
//! (llama-cpp-python, installed by `scripts/llama_cpp.sh` into `.venv-llama/`) through
//! `scripts/llama_cpp_driver.py`, and its tokens, logits and greedy continuation are compared
//! with `pazar_train::model`'s.
//!
//! Without the venv the test fails and names the script to run, unless `PAZAR_SKIP_LLAMA_CPP=1`
//! says explicitly that llama.cpp is not to be tested here. `PAZAR_LLAMA_VENV` points at
//! another venv.

use std::path::{Path, PathBuf};
use std::process::Command;

use std::sync::OnceLock;

use pazar_infer::gguf::{self, TensorType};
use pazar_train::data;
use pazar_train::model::{Config, Model};
use pazar_train::ops::Threads;
use pazar_train::optim::{adamw_step, AdamState, AdamW};
use pazar_types::train::ModelSpec;

const CONFIG: Config = Config {
    vocab: 256,
    dim: 32,
    layers: 2,
    heads: 4,
    ffn: 64,
    seq_len: 64,
};
const STEPS: u32 = 300;
const BATCH: u32 = 8;
/// Tokens generated after the prompt.
const CONTINUATION: usize = 24;
/// The prompt: text of the kind the corpus holds, with spaces (token 32 is the piece `▁`).
const PROMPT: &[u8] = b"the little dog sees a";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's python, or `None` when the test is told to skip llama.cpp.
fn llama_python() -> Option<PathBuf> {
    let root = repo_root();
    let venv = std::env::var_os("PAZAR_LLAMA_VENV").map_or_else(|| root.join(".venv-llama"), |v| root.join(v));
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var("PAZAR_SKIP_LLAMA_CPP").as_deref() == Ok("1") {
        eprintln!("PAZAR_SKIP_LLAMA_CPP=1: not testing the GGUF with llama.cpp");
        return None;
    }
    panic!(
        "llama.cpp's Python binding is not installed at {}: run scripts/llama_cpp.sh \
         (or set PAZAR_SKIP_LLAMA_CPP=1 to skip this test explicitly)",
        venv.display()
    );
}

fn spec() -> ModelSpec {
    ModelSpec {
        vocab: CONFIG.vocab as u32,
        dim: CONFIG.dim as u32,
        layers: CONFIG.layers as u16,
        heads: CONFIG.heads as u16,
        ffn_dim: CONFIG.ffn as u32,
        seq_len: CONFIG.seq_len as u32,
    }
}

/// A model trained with AdamW on the generated corpus long enough that its greedy choices are
/// clear (loss well under a uniform guess's ln 256 ≈ 5.5).
fn trained(model: &Model) -> &'static [f32] {
    static TRAINED: OnceLock<Vec<f32>> = OnceLock::new();
    TRAINED.get_or_init(|| train(model))
}

fn train(model: &Model) -> Vec<f32> {
    let corpus = data::generate_corpus(3, 64 * 1024);
    let chunks: Vec<&[u8]> = data::chunks(&corpus).collect();
    let mut params = model.init_params(7);
    let mut grad = vec![0.0f32; params.len()];
    let mut state = AdamState::new(params.len());
    let opt = AdamW::new(1e-2, 0.0);
    let mut loss = f32::NAN;
    for step in 0..STEPS {
        let b = data::sample_batch(&chunks, &[9; 32], step, BATCH, CONFIG.seq_len as u32).expect("batch");
        let tokens: Vec<u32> = b.tokens.iter().map(|&t| u32::from(t)).collect();
        let targets: Vec<u32> = b.targets.iter().map(|&t| u32::from(t)).collect();
        loss = model
            .loss_and_grad(&params, &tokens, &targets, BATCH as usize, &mut grad)
            .expect("trains");
        adamw_step(&opt, &mut state, &mut params, &mut grad);
    }
    assert!(loss < 2.5, "training loss {loss} after {STEPS} steps");
    params
}

/// The training model's logits at the last of `tokens` (the window padded to `seq_len`; the
/// model is causal, so the padding after it changes nothing).
fn last_logits(model: &Model, params: &[f32], tokens: &[u32]) -> Vec<f32> {
    let (t, v) = (CONFIG.seq_len, CONFIG.vocab);
    let mut window = tokens.to_vec();
    window.resize(t, 0);
    let logits = model.logits(params, &window, 1).expect("forward");
    logits[(tokens.len() - 1) * v..tokens.len() * v].to_vec()
}

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

/// Greedy decoding with the training model; also the smallest gap between the best and the
/// second-best logit along the way (how far from a tie each choice was).
fn greedy(model: &Model, params: &[f32], prompt: &[u32], n: usize) -> (Vec<u32>, f32) {
    let mut tokens = prompt.to_vec();
    let mut min_gap = f32::INFINITY;
    for _ in 0..n {
        let l = last_logits(model, params, &tokens);
        let best = argmax(&l);
        let second = l
            .iter()
            .enumerate()
            .filter(|&(i, _)| i as u32 != best)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        min_gap = min_gap.min(l[best as usize] - second);
        tokens.push(best);
    }
    (tokens[prompt.len()..].to_vec(), min_gap)
}

/// Writes `params` as a GGUF file in `dir`.
fn export(dir: &Path, params: &[f32]) -> PathBuf {
    export_as(dir, params, TensorType::F32)
}

fn export_as(dir: &Path, params: &[f32], ty: TensorType) -> PathBuf {
    let path = dir.join(format!("model-{ty:?}.gguf"));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    gguf::write_as(&spec(), params, "pazar-gguf-test", ty, &mut out).expect("writes");
    std::io::Write::flush(&mut out).expect("flush");
    path
}

/// Runs `scripts/llama_cpp_driver.py greedy` on `model` and parses what it prints.
fn drive(python: &Path, model: &Path, prompt: &[u8], tokens: usize, extra: &[&str]) -> serde_json::Value {
    drive_mode(python, "greedy", model, prompt, tokens, extra)
}

fn drive_mode(
    python: &Path,
    mode: &str,
    model: &Path,
    prompt: &[u8],
    tokens: usize,
    extra: &[&str],
) -> serde_json::Value {
    let run = Command::new(python)
        .arg(repo_root().join("scripts/llama_cpp_driver.py"))
        .arg(mode)
        .arg("--model")
        .arg(model)
        .args(["--prompt-hex", &hex::encode(prompt)])
        .args(["--tokens", &tokens.to_string(), "--threads", "1"])
        .args(extra)
        .output()
        .expect("runs the driver");
    assert!(
        run.status.success(),
        "llama.cpp driver failed ({}): {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).expect("driver prints JSON")
}

fn ids(got: &serde_json::Value, key: &str) -> Vec<u32> {
    got[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} in {got}"))
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

#[test]
fn llama_cpp_loads_the_exported_gguf_and_continues_a_prompt_as_the_training_model_does() {
    let Some(python) = llama_python() else {
        return;
    };
    let model = Model::new(CONFIG, Threads::ONE).expect("model");
    let params = trained(&model);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = export(dir.path(), params);
    let got = drive(&python, &path, PROMPT, CONTINUATION, &[]);
    let ids = |key: &str| ids(&got, key);

    // llama.cpp's tokenizer turns the prompt into exactly our byte tokens, and back.
    let prompt: Vec<u32> = data::tokens(PROMPT).iter().map(|&t| u32::from(t)).collect();
    assert_eq!(got["n_vocab"], 256);
    assert_eq!(got["n_ctx"], CONFIG.seq_len);
    assert_eq!(ids("prompt_tokens"), prompt, "llama.cpp's tokens of the prompt");
    assert_eq!(got["prompt_round_trip_hex"], hex::encode(PROMPT));

    // The same logits after the prompt, up to f32 rounding in another summation order.
    let ours = last_logits(&model, params, &prompt);
    let theirs: Vec<f32> = got["prompt_logits"]
        .as_array()
        .expect("logits")
        .iter()
        .map(|x| x.as_f64().expect("a logit") as f32)
        .collect();
    assert_eq!(theirs.len(), ours.len());
    let scale = ours.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    let worst = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-3 * scale,
        "logits differ by up to {worst} (largest logit {scale})"
    );

    // The same greedy continuation, token for token, and the same text.
    let (continuation, min_gap) = greedy(&model, params, &prompt, CONTINUATION);
    let text: Vec<u8> = continuation.iter().map(|&t| t as u8).collect();
    assert_eq!(
        ids("tokens"),
        continuation,
        "greedy continuation of {:?}: ours {:?} (closest call: a gap of {min_gap})",
        String::from_utf8_lossy(PROMPT),
        String::from_utf8_lossy(&text)
    );
    assert_eq!(got["text_hex"], hex::encode(&text));

    // The timing mode `pazar bench infer` runs: greedy too, the same tokens, and a speed.
    let bench = drive_mode(&python, "bench", &path, PROMPT, CONTINUATION, &["--repeat", "2"]);
    assert_eq!(bench["generated"], CONTINUATION);
    assert_eq!(bench["threads"], 1);
    assert!(bench["tokens_per_s"].as_f64().is_some_and(|t| t > 0.0), "{bench}");
    eprintln!("llama.cpp bench: {bench}");
    eprintln!(
        "llama.cpp (llama-cpp-python {}) continued {:?} with {:?}, as training's model does \
         (logits within {worst}, closest greedy call a gap of {min_gap})",
        got["llama_cpp_python"],
        String::from_utf8_lossy(PROMPT),
        String::from_utf8_lossy(&text)
    );
}

#[test]
fn byte_strings_round_trip_through_llama_cpps_tokenizer_but_for_the_sentencepiece_space_sign() {
    let Some(python) = llama_python() else {
        return;
    };
    let model = Model::new(CONFIG, Threads::ONE).expect("model");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = export(dir.path(), &model.init_params(1));
    // Every byte, in order and reversed (so bytes that start UTF-8 sequences are followed by
    // ones that do not continue them), spaces and newlines among text, and invalid UTF-8.
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let cases: [&[u8]; 4] = [
        &all,
        b"  two  spaces\n\nand a blank line ",
        b"\xff\xfe\x80\xc3 x\x80 y",
        "caf\u{e9} \u{1f600}".as_bytes(),
    ];
    for prompt in cases {
        // A context long enough for the prompt (positions past the trained ones are fine here).
        let got = drive(&python, &path, prompt, 1, &["--n-ctx", "1024"]);
        let want: Vec<u32> = prompt.iter().map(|&b| u32::from(b)).collect();
        assert_eq!(
            ids(&got, "prompt_tokens"),
            want,
            "tokens of {:?}",
            String::from_utf8_lossy(prompt)
        );
        assert_eq!(got["prompt_round_trip_hex"], hex::encode(prompt));
    }
    // The exceptions. SentencePiece writes a space as U+2581 (E2 96 81) before looking pieces
    // up, so token 32 is that sign's piece: the sign itself in the text reads as a space, and
    // a space that an incomplete UTF-8 sequence's lead byte swallows into its character stays
    // the sign's three bytes.
    let exceptions: [(&[u8], &[u32]); 2] = [
        ("a\u{2581}b".as_bytes(), &[97, 32, 98]),
        (b"\xc3 x", &[0xc3, 0xe2, 0x96, 0x81, 120]),
    ];
    for (prompt, want) in exceptions {
        let got = drive(&python, &path, prompt, 1, &["--n-ctx", "1024"]);
        assert_eq!(ids(&got, "prompt_tokens"), want, "tokens of {prompt:?}");
    }
}

/// The smaller exports: llama.cpp's logits stay within the weights' rounding of ours.
#[test]
fn llama_cpp_runs_the_f16_and_q8_0_exports_close_to_the_training_model() {
    let Some(python) = llama_python() else {
        return;
    };
    let model = Model::new(CONFIG, Threads::ONE).expect("model");
    let params = trained(&model);
    let prompt: Vec<u32> = data::tokens(PROMPT).iter().map(|&t| u32::from(t)).collect();
    let ours = last_logits(&model, params, &prompt);
    let (continuation, _) = greedy(&model, params, &prompt, CONTINUATION);
    let dir = tempfile::tempdir().expect("tempdir");
    for ty in [TensorType::F16, TensorType::Q8_0] {
        let path = export_as(dir.path(), params, ty);
        let got = drive(&python, &path, PROMPT, CONTINUATION, &[]);
        let theirs: Vec<f32> = got["prompt_logits"]
            .as_array()
            .expect("logits")
            .iter()
            .map(|x| x.as_f64().expect("a logit") as f32)
            .collect();
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let tokens = ids(&got, "tokens");
        let same = tokens.iter().zip(&continuation).take_while(|(a, b)| a == b).count();
        // Rounding the weights moves the logits by about the weights' relative precision:
        // 2^-11 for F16, 1/254 of a block's largest value for Q8_0 (measured: 4e-4 and 1.6e-2
        // of the largest logit).
        let bound = match ty {
            TensorType::Q8_0 => 5e-2,
            _ => 2e-3,
        } * ours.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        assert!(
            worst <= bound,
            "{ty:?}: logits differ by up to {worst}, more than {bound}"
        );
        // The first choice is far from a tie (a gap of several units), so it must not move.
        assert_eq!(tokens.first(), continuation.first(), "{ty:?}: the first greedy token");
        eprintln!("{ty:?}: logits within {worst}, {same} of {CONTINUATION} greedy tokens as ours");
    }
}
