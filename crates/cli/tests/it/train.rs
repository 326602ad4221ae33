//! `pazar train demo` on the real binaries: a devnet process and three `pazar train worker`
//! processes, one of which flips the sign of its update. Read back from what the demo prints
//! under `-o json` (and writes to `run.json`), then from the chain itself with `pazar model
//! show` on a node restarted from the demo's home.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

/// The part of the demo's `run.json` (the CLI's `RunReport`) this test reads.
#[derive(Debug, Deserialize)]
struct Run {
    job: u64,
    initial_checkpoint: String,
    initial_eval_loss: f64,
    final_checkpoint: Option<String>,
    final_eval_loss: Option<f64>,
    rounds: Vec<Round>,
    workers: Vec<Worker>,
    bytes_exchanged: u64,
    ddp_bytes: u64,
    tokens: Tokens,
    chart: String,
    checkpoint_file: Option<String>,
    provenance: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct Round {
    round: u32,
    checkpoint: Option<String>,
    eval_loss: Option<f64>,
    audits: Vec<Audit>,
    slashed: Vec<Slash>,
    rewards: Vec<Reward>,
}

#[derive(Debug, Deserialize)]
struct Audit {
    target: String,
    outcome: String,
}

#[derive(Debug, Deserialize)]
struct Slash {
    worker: String,
    reason: String,
}

#[derive(Debug, Deserialize)]
struct Reward {
    worker: String,
}

#[derive(Debug, Deserialize)]
struct Worker {
    name: String,
    address: String,
    adversary: Option<String>,
    rounds_paid: Vec<u32>,
    slashed: String,
}

#[derive(Debug, Deserialize)]
struct Tokens {
    budget: String,
    paid: String,
    take: String,
    refunded: String,
    escrow: String,
    conserved: bool,
}

fn amount(s: &str) -> u128 {
    s.parse().unwrap_or_else(|_| panic!("not an amount: {s}"))
}

fn pazar(home: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .arg("--home")
        .arg(home)
        .args(["-o", "json"])
        .output()
        .expect("runs pazar")
}

fn logs(home: &Path) -> String {
    let mut out = String::new();
    for name in ["devnet.log", "worker1.log", "worker2.log", "worker3.log"] {
        let text = std::fs::read_to_string(home.join(name)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        out.push_str(&format!("--- {name} (last lines)\n"));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// The walk `pazar model show -o json` printed: (checkpoint, previous) per round, newest first,
/// the contributors of every round, and the initial checkpoint.
fn walk(p: &Value) -> (Vec<(String, String)>, Vec<String>, String) {
    let lineages = p["lineages"].as_array().expect("lineages");
    assert_eq!(lineages.len(), 1, "one job produced the checkpoint: {p}");
    let l = &lineages[0];
    let links = l["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .map(|k| {
            (
                k["checkpoint"].as_str().expect("checkpoint").to_string(),
                k["previous"].as_str().expect("previous").to_string(),
            )
        })
        .collect();
    let contributors = l["rounds"]
        .as_array()
        .expect("rounds")
        .iter()
        .flat_map(|k| k["contributors"].as_array().expect("contributors").clone())
        .map(|a| a.as_str().expect("address").to_string())
        .collect();
    (
        links,
        contributors,
        l["initial_checkpoint"].as_str().expect("initial").to_string(),
    )
}

#[test]
fn a_training_demo_slashes_a_sign_flipper_pays_the_honest_and_traces_the_final_checkpoint() {
    // A devnet and three worker processes that must commit and reveal before each phase's
    // deadline height (150 ms blocks): not beside a testnet.
    let _one = common::one_testnet_at_a_time();
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let out_dir = h.join("run");
    let out_s = out_dir.display().to_string();
    let out = pazar(
        h,
        &[
            "train",
            "demo",
            "--workers",
            "3",
            "--rounds",
            "3",
            "--inner-steps",
            "16",
            "--block-time-ms",
            "150",
            "--adversary",
            "1:sign-flip",
            "--out",
            &out_s,
        ],
    );
    assert!(
        out.status.success(),
        "the demo failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        logs(h)
    );
    let run: Run = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "the demo printed no run report ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let saved: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("run.json")).expect("run.json")).expect("run.json is JSON");
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(saved, printed, "run.json is what -o json printed");

    // Every round settled with a checkpoint, and the model learned.
    assert_eq!(run.rounds.iter().map(|r| r.round).collect::<Vec<_>>(), vec![0, 1, 2]);
    for r in &run.rounds {
        assert!(r.checkpoint.is_some() && r.eval_loss.is_some(), "round {r:?}");
    }
    let last = run.rounds.last().expect("rounds");
    assert_eq!(run.final_checkpoint, last.checkpoint);
    let final_loss = run.final_eval_loss.expect("a final loss");
    assert!(
        final_loss < run.initial_eval_loss,
        "held-out loss {} -> {final_loss}",
        run.initial_eval_loss
    );
    assert!(
        run.bytes_exchanged > 0 && run.ddp_bytes > run.bytes_exchanged,
        "{run:?}"
    );

    // The cheater was caught, slashed and never paid; every honest worker was paid every round
    // and never slashed.
    let cheat = run.workers.iter().find(|w| w.name == "worker1").expect("worker1");
    assert_eq!(cheat.adversary.as_deref(), Some("sign-flip"));
    assert!(amount(&cheat.slashed) > 0, "{cheat:?}");
    assert!(cheat.rounds_paid.is_empty(), "{cheat:?}");
    assert!(
        run.rounds[0]
            .audits
            .iter()
            .any(|a| a.target == "worker1" && a.outcome == "caught"),
        "{:?}",
        run.rounds[0]
    );
    assert!(
        run.rounds[0]
            .slashed
            .iter()
            .any(|s| s.worker == "worker1" && s.reason == "failed_audit"),
        "{:?}",
        run.rounds[0]
    );
    for w in run.workers.iter().filter(|w| w.name != "worker1") {
        assert_eq!(w.adversary, None);
        assert_eq!(amount(&w.slashed), 0, "{w:?}");
        assert_eq!(w.rounds_paid, vec![0, 1, 2], "{w:?}");
    }
    for r in &run.rounds {
        assert!(r.slashed.iter().all(|s| s.worker == "worker1"), "{r:?}");
        assert!(r.rewards.iter().all(|x| x.worker != "worker1"), "{r:?}");
    }

    // Tokens conserved to the base unit.
    let t = &run.tokens;
    assert!(t.conserved, "{t:?}");
    assert_eq!(
        amount(&t.budget),
        amount(&t.paid) + amount(&t.take) + amount(&t.refunded) + amount(&t.escrow),
        "{t:?}"
    );
    assert_eq!(amount(&t.escrow), 0, "a finished job holds nothing: {t:?}");

    // The chart.
    let svg = std::fs::read_to_string(&run.chart).expect("the chart exists");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    assert!(svg.contains("<polyline"), "the chart draws the loss");

    // The provenance the demo printed, and the one the chain gives after a restart: the final
    // checkpoint walks back round by round to the initial one, without the cheater.
    let final_hash = run.final_checkpoint.clone().expect("final");
    let cheat_address = cheat.address.clone();
    let check = |p: &Value| {
        let (links, contributors, initial) = walk(p);
        assert_eq!(links.len(), 3, "{p}");
        assert_eq!(links[0].0, final_hash);
        for pair in links.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "each round starts from the one before: {p}");
        }
        assert_eq!(links[2].1, run.initial_checkpoint);
        assert_eq!(initial, run.initial_checkpoint);
        assert!(!contributors.contains(&cheat_address), "{p}");
    };
    check(run.provenance.as_ref().expect("the demo shows the provenance"));

    let _ = std::fs::remove_file(h.join("rpc.addr"));
    let mut node = Command::new(common::bin())
        .args(["node", "start", "--rpc-listen", "127.0.0.1:0", "--home"])
        .arg(h)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts the node");
    let url = common::wait_ready(h, &mut node, Duration::from_secs(30));
    let node = common::Daemon(node);
    let job = run.job.to_string();
    let shown = pazar(h, &["model", "show", &final_hash, "--job", &job]);
    assert!(
        shown.status.success(),
        "model show failed: {}{}",
        String::from_utf8_lossy(&shown.stdout),
        String::from_utf8_lossy(&shown.stderr)
    );
    let p: Value = serde_json::from_slice(&shown.stdout).expect("model show prints JSON");
    check(&p);
    assert_eq!(
        Some(&p),
        run.provenance.as_ref(),
        "the chain gives what the demo showed"
    );

    // A hash no round produced is refused with a clear message and a non-zero exit.
    let unknown = "ab".repeat(32);
    let failed = pazar(h, &["model", "show", &unknown]);
    assert_eq!(failed.status.code(), Some(3), "{failed:?}");
    let e = common::cli_error(&failed);
    assert_eq!(e.code, "not_found", "{e:?}");
    assert!(
        e.message.contains(&unknown) && e.message.contains("no round of any training job produced it"),
        "{e:?}"
    );
    // So is the initial checkpoint: it is the job's start, not a round's product.
    let initial = pazar(h, &["model", "show", &run.initial_checkpoint]);
    assert_eq!(common::cli_error(&initial).code, "not_found");

    // The model bundle of the final checkpoint: exported while the node runs, then checked
    // with no network at all.
    let ckpt = run
        .checkpoint_file
        .clone()
        .expect("the demo saved the final checkpoint");
    let bundle = h.join("model.pzm");
    let exported = pazar(
        h,
        &[
            "model",
            "export",
            &final_hash,
            "--checkpoint",
            &ckpt,
            "--out",
            &s(&bundle),
        ],
    );
    assert!(
        exported.status.success(),
        "export failed: {}",
        String::from_utf8_lossy(&exported.stderr)
    );
    let exported: Value = serde_json::from_slice(&exported.stdout).expect("export prints JSON");
    let height = exported["height"].as_u64().expect("height");
    let block = pazar(h, &["query", "block", &height.to_string()]);
    let block: Value = serde_json::from_slice(&block.stdout).expect("query block prints JSON");
    let header_hash = block["hash"].as_str().expect("hash").to_string();
    assert_eq!(
        exported["header_hash"].as_str(),
        Some(header_hash.as_str()),
        "{exported}"
    );
    assert_eq!(exported["certified"], Value::Bool(false), "a devnet has one validator");
    let absent = forge_absent_checkpoint(&url, &bundle, &h.join("absent.pzm"));
    let gguf = h.join("model.gguf");
    let exported = pazar(
        h,
        &[
            "model",
            "export",
            &final_hash,
            "--checkpoint",
            &ckpt,
            "--out",
            &s(&gguf),
            "--format",
            "gguf",
        ],
    );
    assert!(exported.status.success(), "GGUF export failed: {exported:?}");
    drop(node);
    bundle_checks(h, &bundle, &header_hash, &p, &absent);
    inference_checks(h, &bundle, &gguf, &header_hash);
}

/// The workspace's root (the Python clients' virtual environments live there).
fn workspace() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of a virtual environment a script of ours installs; the test fails without it
/// unless `skip` is set to 1 (so CI cannot skip it silently).
fn venv_python(var: &str, default: &str, script: &str, skip: &str) -> Option<std::path::PathBuf> {
    let venv = std::env::var_os(var).map_or_else(|| workspace().join(default), std::path::PathBuf::from);
    let python = venv.join("bin/python");
    if python.exists() {
        return Some(python);
    }
    if std::env::var(skip).as_deref() == Ok("1") {
        eprintln!("{skip}=1: skipping what needs {}", venv.display());
        return None;
    }
    panic!(
        "{} is missing: run {script} (or set {skip}=1 to skip this part)",
        venv.display()
    );
}

/// `pazar infer` on the bundle with no network, and llama.cpp on the GGUF export of the same
/// checkpoint: the same greedy continuation.
fn inference_checks(h: &Path, bundle: &Path, gguf: &Path, header_hash: &str) {
    let prompt = "the dog ";
    let out = offline(
        h,
        &[
            "infer",
            "--model",
            &s(bundle),
            "--trust-header",
            header_hash,
            "--max-tokens",
            "16",
            prompt,
        ],
    );
    assert!(
        out.status.success(),
        "pazar infer failed offline: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("infer prints JSON");
    let tokens: Vec<u64> = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("a token id"))
        .collect();
    assert_eq!(tokens.len(), 16, "{v}");
    let text: Vec<u8> = tokens.iter().map(|&t| u8::try_from(t).expect("a byte")).collect();
    assert_eq!(v["text"].as_str(), Some(String::from_utf8_lossy(&text).as_ref()), "{v}");
    assert!(v["stats"]["tokens_per_s"].as_f64().expect("tokens/s") > 0.0, "{v}");
    // A tampered bundle is refused before anything is generated.
    let mut bytes = std::fs::read(bundle).expect("bundle");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    let tampered = h.join("tampered-infer.pzm");
    std::fs::write(&tampered, &bytes).expect("write");
    let refused = offline(
        h,
        &["infer", "--model", &s(&tampered), "--trust-header", header_hash, prompt],
    );
    assert_eq!(common::cli_error(&refused).code, "bundle_refused", "{refused:?}");

    openai_client_checks(h, bundle, header_hash);
    let Some(python) = venv_python(
        "PAZAR_LLAMA_VENV",
        ".venv-llama",
        "scripts/llama_cpp.sh",
        "PAZAR_SKIP_LLAMA_CPP",
    ) else {
        return;
    };
    let llama = Command::new(python)
        .arg(workspace().join("scripts/llama_cpp_driver.py"))
        .args([
            "greedy",
            "--model",
            &s(gguf),
            "--prompt-hex",
            &hex::encode(prompt),
            "--tokens",
            "16",
            "--threads",
            "1",
        ])
        .output()
        .expect("runs the llama.cpp driver");
    assert!(
        llama.status.success(),
        "llama.cpp failed: {}",
        String::from_utf8_lossy(&llama.stderr)
    );
    let l: Value = serde_json::from_slice(&llama.stdout).expect("the driver prints JSON");
    let prompt_tokens: Vec<u64> = prompt.bytes().map(u64::from).collect();
    assert_eq!(
        l["prompt_tokens"],
        serde_json::json!(prompt_tokens),
        "llama.cpp reads the prompt as our bytes: {l}"
    );
    assert_eq!(
        l["tokens"],
        serde_json::json!(tokens),
        "llama.cpp continues the prompt as pazar infer does"
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Runs `pazar ARGS --home H -o json` in a network namespace of its own (no interface but a
/// loopback that is down): whatever it does, it does without a network.
fn offline(home: &Path, args: &[&str]) -> Output {
    Command::new("unshare")
        .arg("--net")
        .arg(common::bin())
        .args(args)
        .arg("--home")
        .arg(home)
        .args(["-o", "json"])
        .output()
        .expect("runs unshare (util-linux; the tests run as root, as CI does)")
}

/// A bundle of weights the ledger never recorded, proven honestly: the node proves that no
/// round produced its checkpoint, against a real header. Returns its path and the header hash.
fn forge_absent_checkpoint(url: &str, bundle: &Path, out: &Path) -> (std::path::PathBuf, String) {
    use pazar_infer::bundle::{Bundle, Entry};
    use pazar_types::state_key::{store_key, table_id};
    use pazar_types::train::{checkpoint_hash, f32s_hash, WEIGHTS_TAG};

    let b = Bundle::read(bundle).expect("reads the exported bundle");
    let mut weights = b.weights().to_vec();
    weights[0] += 1.0;
    let mut meta = b.meta.clone();
    meta.checkpoint = checkpoint_hash(&f32s_hash(WEIGHTS_TAG, &[&weights]), &meta.momentum_hash);
    let mut keys: Vec<Vec<u8>> = meta.entries.iter().map(|e| e.key.clone()).collect();
    keys[0] = store_key(table_id::TRAIN_CHECKPOINTS, &(meta.checkpoint, meta.job));
    let rpc = pazar_client::Rpc::new(url);
    let proofs = rpc.state_proofs(&keys).expect("proofs");
    let header = rpc
        .wait_header(proofs.height + 1, Duration::from_secs(30))
        .expect("header");
    meta.entries = proofs
        .proofs
        .into_iter()
        .map(|p| Entry {
            key: p.key,
            value: p.value,
            proof: p.proof,
        })
        .collect();
    assert_eq!(meta.entries[0].value, None, "the node proves the entry absent");
    let hash = hex::encode(header.hash());
    meta.anchor.header = header;
    Bundle::new(meta, weights).expect("bundle").write(out).expect("writes");
    (out.to_path_buf(), hash)
}

/// Verification offline, and every tampering refused with the part that failed named.
fn bundle_checks(h: &Path, bundle: &Path, header_hash: &str, shown: &Value, absent: &(std::path::PathBuf, String)) {
    use pazar_infer::bundle::Bundle;

    let ok = offline(h, &["model", "verify", &s(bundle), "--trust-header", header_hash]);
    assert!(
        ok.status.success(),
        "verify failed offline: {}{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: Value = serde_json::from_slice(&ok.stdout).expect("verify prints JSON");
    assert_eq!(&v["provenance"], shown, "the bundle proves what the chain showed");
    assert_eq!(v["header_hash"].as_str(), Some(header_hash));
    assert!(v["finality"].as_str().expect("finality").contains("pinned"), "{v}");
    // `model show FILE` prints the same chain, from the bundle alone.
    let shown_offline = offline(h, &["model", "show", &s(bundle), "--trust-header", header_hash]);
    assert!(shown_offline.status.success(), "{shown_offline:?}");
    let p: Value = serde_json::from_slice(&shown_offline.stdout).expect("JSON");
    assert_eq!(&p, shown);

    let refused = |path: &Path, trust: &str, part: &str| {
        let out = offline(h, &["model", "verify", &s(path), "--trust-header", trust]);
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        let e = common::cli_error(&out);
        assert_eq!(e.code, "bundle_refused", "{e:?}");
        assert!(e.message.contains(part), "expected {part:?} in {:?}", e.message);
        e.message
    };
    // A single-validator chain's header needs the user's own pin.
    let unpinned = offline(h, &["model", "verify", &s(bundle)]);
    let e = common::cli_error(&unpinned);
    assert_eq!(
        (e.code.as_str(), unpinned.status.code()),
        ("bundle_refused", Some(3)),
        "{e:?}"
    );
    assert!(
        e.message.contains("single-validator") && e.message.contains("--trust-header"),
        "{e:?}"
    );
    refused(bundle, &"ab".repeat(32), "not the header");

    // One flipped bit in the weights (the last byte of the file is the last weight's).
    let mut bytes = std::fs::read(bundle).expect("bundle");
    let tampered = h.join("tampered.pzm");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&tampered, &bytes).expect("write");
    refused(&tampered, header_hash, "weights:");

    // One flipped byte in a proof, and one in a proven record (a round's).
    let b = Bundle::read(bundle).expect("bundle");
    let mut meta = b.meta.clone();
    let mid = meta.entries[3].proof.len() / 2;
    meta.entries[3].proof[mid] ^= 0x40;
    Bundle::new(meta, b.weights().to_vec())
        .expect("bundle")
        .write(&tampered)
        .expect("write");
    refused(&tampered, header_hash, "proof:");
    let mut meta = b.meta.clone();
    let value = meta.entries[3].value.as_mut().expect("a round record");
    value[8] ^= 0x01;
    Bundle::new(meta, b.weights().to_vec())
        .expect("bundle")
        .write(&tampered)
        .expect("write");
    refused(&tampered, header_hash, "does not verify against the state root");

    // A checkpoint no round produced, proven absent by the ledger.
    let msg = refused(&absent.0, &absent.1, "ledger:");
    assert!(
        msg.contains("is not on the ledger") && msg.contains("no round of job"),
        "{msg}"
    );

    // A truncated file is not a bundle.
    std::fs::write(&tampered, &bytes[..bytes.len() - 4]).expect("write");
    let out = offline(h, &["model", "verify", &s(&tampered), "--trust-header", header_hash]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let e = common::cli_error(&out);
    assert_eq!(e.code, "bad_bundle", "{e:?}");
    assert!(e.message.contains("bytes"), "{e:?}");
}

/// `pazar infer serve` driven by the official `openai` Python package (a completion, a chat
/// completion, a streamed one, a prompt too long for the context), both in a network namespace
/// whose only interface is loopback.
fn openai_client_checks(h: &Path, bundle: &Path, header_hash: &str) {
    let Some(python) = venv_python(
        "PAZAR_OPENAI_VENV",
        ".venv-openai",
        "scripts/openai_venv.sh",
        "PAZAR_SKIP_OPENAI",
    ) else {
        return;
    };
    let script = r#"ip link set lo up || exit 97
"$1" infer serve --model "$2" --trust-header "$3" --home "$4" --listen 127.0.0.1:0 -o json >"$4/serve.out" 2>"$4/serve.err" &
pid=$!
url=
for _ in $(seq 1 300); do
    url=$(head -n 1 "$4/serve.out" 2>/dev/null | sed -n 's/.*"url": *"\([^"]*\)".*/\1/p')
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { kill -TERM $pid; echo "the server printed no URL" >&2; cat "$4/serve.err" >&2; exit 98; }
"$5" "$6" --base-url "$url"
rc=$?
kill -TERM $pid
wait $pid
served=$?
[ $rc -ne 0 ] && exit $rc
[ $served -ne 0 ] && { echo "the server exited $served after SIGTERM" >&2; cat "$4/serve.err" >&2; exit 99; }
exit 0"#;
    let out = Command::new("unshare")
        .args(["--net", "sh", "-c", script, "sh"])
        .arg(common::bin())
        .arg(bundle)
        .arg(header_hash)
        .arg(h)
        .arg(python)
        .arg(workspace().join("scripts/openai_client_check.py"))
        .output()
        .expect("runs unshare");
    assert!(
        out.status.success(),
        "the OpenAI client against pazar infer serve failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("the check prints JSON");
    assert_eq!(r["ok"], Value::Bool(true), "{r}");
    assert!(r["model"].as_str().is_some_and(|m| m.starts_with("pazar-")), "{r}");
    assert!(
        r["chat_stream"]["chunks"].as_u64().is_some_and(|c| c > 1),
        "streamed in chunks: {r}"
    );
    assert_eq!(r["too_long"]["code"], "context_length_exceeded", "{r}");
}
