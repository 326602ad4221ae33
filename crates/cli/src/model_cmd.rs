//! `pazar model`: where a checkpoint came from, and the model bundle that takes it off the
//! network.
//!
//! - `show HASH` walks the provenance records on a node (`/train/checkpoints/{hash}`, then each
//!   job's settled rounds) back to the job's initial checkpoint; `show FILE` prints a bundle's,
//!   verified offline.
//! - `fetch HASH --job J` downloads a checkpoint from the job's workers, checked against its
//!   name.
//! - `export HASH` writes a bundle ([`pazar_infer::bundle`]): the weights, the shape, the
//!   tokenizer, and the records of the checkpoint's lineage with Merkle proofs against one
//!   header, and what makes that header final (the engine's certificate and the hand-off
//!   records from genesis; nothing on a single-validator chain, whose validator signs nothing).
//! - `verify FILE` checks a bundle with no network against a trust anchor the user holds: the
//!   chain's genesis file (a certified chain), or a header hash they took from their own node.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};

use pazar_api::node::RoundStatus;
use pazar_client::{ClientError, Rpc};
use pazar_consensus::sync::{certificate_epoch, decode_finalization, namespace, verify_finalization, HandoffChain};
use pazar_infer::bundle::{
    keys_to_prove, Anchor, Bundle, Entry, Finality, FinalityCheck, Meta, Tokenizer, Verified, VerifyError,
};
use pazar_infer::provenance::{self, Source, WalkError};
use pazar_node::genesis::GenesisOnDisk;
use pazar_train::state::Checkpoint;
use pazar_types::train::{f32s_hash, DatasetRecord, RoundRecord, TrainJob, MOMENTUM_TAG};
use pazar_types::Hash32;

pub use pazar_infer::provenance::{json_name, text, text_with, Provenance};

use crate::failure::{Exit, Failure};
use crate::{chain, home, ClientOpts, Output};

#[derive(Subcommand)]
pub enum ModelCmd {
    /// The provenance of a checkpoint: round by round back to its job's initial checkpoint,
    /// with the dataset, the workers whose updates each round included, the audits and the
    /// tokens trained. Given a bundle file instead of a hash: the bundle's, verified offline.
    #[command(
        after_help = "Examples:\n  pazar model show 9ab2…(64 hex)\n  pazar model show 9ab2… --job 0 -o json\n  pazar model show model.pzm --trust-header 41c0…"
    )]
    Show {
        /// The checkpoint's hash (64 hex), or a bundle file.
        target: String,
        /// Only the job with this id (any job may vote a checkpoint; without it, every job
        /// that produced this one is walked).
        #[arg(long)]
        job: Option<u64>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Download a checkpoint from the workers of its job (checked against its name).
    #[command(after_help = "Examples:\n  pazar model fetch 9ab2… --job 0 --out final.ckpt")]
    Fetch {
        /// The checkpoint's hash (64 hex).
        hash: String,
        #[arg(long)]
        job: u64,
        /// Where to write the checkpoint.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model bundle (or a GGUF file) of a checkpoint the ledger records, with the
    /// proof of its provenance against a finalized header.
    #[command(
        after_help = "Examples:\n  pazar model export 9ab2… --checkpoint run/final.ckpt --out model.pzm\n  pazar model export 9ab2… --job 0 --out model.pzm"
    )]
    Export {
        /// The checkpoint's hash (64 hex).
        hash: String,
        /// The job whose round produced it (needed only when several did).
        #[arg(long)]
        job: Option<u64>,
        /// The checkpoint's bytes (as `pazar model fetch` or `pazar train demo` write them);
        /// without it, fetched from the job's workers.
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Where to write.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value_t = ExportFormat::Bundle)]
        format: ExportFormat,
        /// GGUF only: the weights' type (norms stay f32; q8_0 writes f16 for a matrix whose
        /// rows are not a multiple of 32).
        #[arg(long, value_enum, default_value_t = GgufType::F32)]
        dtype: GgufType,
    },
    /// Check a model bundle offline: its weights against the checkpoint's name, every record
    /// against the header's state root, the provenance back to the job's start, and the header
    /// against your trust anchor. Opens no socket.
    #[command(
        after_help = "Examples:\n  pazar model verify model.pzm --genesis ~/.pazar/genesis.json\n  pazar model verify model.pzm --trust-header 41c0… -o json"
    )]
    Verify {
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GgufType {
    F32,
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The Pazar bundle: weights, shape, tokenizer and provenance proof (`pazar model verify`,
    /// `pazar infer`).
    Bundle,
    /// GGUF in llama.cpp's `llama` layout (F32 weights, a byte-level vocabulary), which
    /// llama.cpp, Ollama and LM Studio load. Carries no provenance: verify the bundle.
    Gguf,
}

/// What a bundle's header is checked against.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// The chain's genesis file: the validators a certified header must be signed by (default:
    /// the genesis of --home, if it is of the bundle's chain).
    #[arg(long)]
    pub genesis: Option<PathBuf>,
    /// The hash of the bundle's header as a node you trust reports it (`pazar query block
    /// HEIGHT` on your own node): the only anchor of a single-validator chain, whose validator
    /// signs nothing.
    #[arg(long, value_name = "HASH")]
    pub trust_header: Option<String>,
}

pub fn run(which: ModelCmd, opts: &ClientOpts) -> Result<()> {
    let h = home::resolve(opts.home.clone());
    let rpc = || Rpc::new(&home::node_url(opts.node.clone(), &h));
    match which {
        ModelCmd::Show { target, job, trust } => {
            if let Ok(hash) = crate::train_cmd::parse_hash(&target) {
                let p = provenance(&rpc(), &hash, job)?;
                return emit(opts.output, &p, || text(&p));
            }
            let path = PathBuf::from(&target);
            if !path.exists() {
                bail!("{target:?} is neither a checkpoint hash (64 hex) nor a bundle file");
            }
            let (_, v) = open_verified(&path, &trust, &h)?;
            emit(opts.output, &v.provenance, || text(&v.provenance))
        }
        ModelCmd::Fetch { hash, job, out } => {
            let hash = crate::train_cmd::parse_hash(&hash)?;
            let rpc = rpc();
            let spec = job_of(&rpc, job)?.spec;
            let c = fetch_checkpoint(&rpc, job, &spec.model, &hash)?;
            write_file(&out, &c.encode())?;
            let r = serde_json::json!({ "checkpoint": hex::encode(hash), "job": job, "out": out, "params": c.params.len() });
            emit(opts.output, &r, || {
                format!(
                    "checkpoint {} of job {job} ({} parameters) written to {}",
                    hex::encode(hash),
                    c.params.len(),
                    out.display()
                )
            })
        }
        ModelCmd::Export {
            hash,
            job,
            checkpoint,
            out,
            format,
            dtype,
        } => {
            let hash = crate::train_cmd::parse_hash(&hash)?;
            let bundle = export(&rpc(), &hash, job, checkpoint.as_deref())?;
            match format {
                ExportFormat::Bundle => bundle
                    .write(&out)
                    .with_context(|| format!("cannot write {}", out.display()))?,
                ExportFormat::Gguf => write_gguf(&bundle, &out, dtype)?,
            }
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            let m = &bundle.meta;
            let r = serde_json::json!({
                "checkpoint": hex::encode(hash),
                "job": m.job,
                "out": out,
                "bytes": size,
                "params": m.spec.params(),
                "height": m.anchor.header.height,
                "header_hash": hex::encode(m.anchor.header.hash()),
                "certified": matches!(m.anchor.finality, Finality::Certified { .. }),
            });
            emit(opts.output, &r, || {
                format!(
                    "bundle of checkpoint {} (job {}, {} parameters, {size} bytes) written to {}\n  proven against block {} (header {}){}",
                    hex::encode(hash),
                    m.job,
                    m.spec.params(),
                    out.display(),
                    m.anchor.header.height,
                    hex::encode(m.anchor.header.hash()),
                    match m.anchor.finality {
                        Finality::Certified { .. } => {
                            ", with the node's certificate of it (checked when the bundle is verified, against your genesis)"
                        }
                        Finality::Unsigned => "; a single-validator chain signs nothing: verify with --trust-header",
                    }
                )
            })
        }
        ModelCmd::Verify { file, trust } => {
            let (_, v) = open_verified(&file, &trust, &h)?;
            emit(opts.output, &v, || verified_text(&v))
        }
    }
}

/// The bundle's weights as GGUF, written beside `out` and renamed into place.
fn write_gguf(bundle: &Bundle, out: &Path, dtype: GgufType) -> Result<()> {
    use pazar_infer::gguf::TensorType;
    let m = &bundle.meta;
    let name = format!("pazar job {} checkpoint {}", m.job, hex::encode(&m.checkpoint[..8]));
    let tmp = out.with_extension("gguf.partial");
    let f = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let ty = match dtype {
        GgufType::F32 => TensorType::F32,
        GgufType::F16 => TensorType::F16,
        GgufType::Q8_0 => TensorType::Q8_0,
    };
    pazar_infer::gguf::write_as(&m.spec, bundle.weights(), &name, ty, &mut w)?;
    w.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))
}

fn emit<T: serde::Serialize>(out: Output, v: &T, text: impl FnOnce() -> String) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Output::Text => println!("{}", text()),
    }
    Ok(())
}

fn verified_text(v: &Verified) -> String {
    let s = &v.spec;
    format!(
        "verified: checkpoint {}\n  model: {} parameters (vocab {}, dim {}, {} layers, {} heads, ffn {}, context {}), byte tokenizer\n  \
         ledger: job {}, chain {} (genesis {}), block {} (header {}, state root {})\n  finality: {}\n{}",
        hex::encode(v.checkpoint),
        v.params,
        s.vocab,
        s.dim,
        s.layers,
        s.heads,
        s.ffn_dim,
        s.seq_len,
        v.job,
        v.chain_id,
        hex::encode(v.genesis_hash),
        v.height,
        hex::encode(v.header_hash),
        hex::encode(v.state_root),
        v.finality,
        text(&v.provenance)
    )
}

/// Reads and verifies a bundle offline: what `pazar model verify`, `pazar infer` and `pazar
/// infer serve` run before using one. A refusal exits 3 with code `bundle_refused` (the
/// message names the part that failed); an unreadable file exits 1.
pub fn open_verified(path: &Path, trust: &TrustArgs, home: &Path) -> Result<(Bundle, Verified)> {
    let bundle =
        Bundle::read(path).map_err(|e| Failure::new(Exit::Local, "bad_bundle", format!("{}: {e}", path.display())))?;
    let check = CliFinality::new(trust, home)?;
    let v = bundle.verify(&check).map_err(|e| refused(path, e))?;
    Ok((bundle, v))
}

fn refused(path: &Path, e: VerifyError) -> anyhow::Error {
    Failure::new(
        Exit::Refused,
        "bundle_refused",
        format!("{} is refused: {e}", path.display()),
    )
    .into()
}

/// The CLI's [`FinalityCheck`]: a pinned header hash, or a certificate of the validators of a
/// genesis file the user holds, walked through the bundle's hand-off records.
struct CliFinality {
    header: Option<Hash32>,
    /// The genesis named with --genesis, or the home's (if there is one).
    genesis: Option<GenesisOnDisk>,
    /// Whether the genesis was named (a named one that does not match is an error; the home's
    /// default is only a guess).
    named: bool,
}

impl CliFinality {
    fn new(trust: &TrustArgs, home: &Path) -> Result<CliFinality> {
        let header = trust
            .trust_header
            .as_deref()
            .map(crate::train_cmd::parse_hash)
            .transpose()
            .context("--trust-header")?;
        let (genesis, named) = match &trust.genesis {
            Some(p) => (
                Some(GenesisOnDisk::open(p).with_context(|| format!("cannot read the genesis file {}", p.display()))?),
                true,
            ),
            None => {
                let p = home::genesis_path(home);
                (GenesisOnDisk::open(&p).ok(), false)
            }
        };
        Ok(CliFinality { header, genesis, named })
    }
}

impl FinalityCheck for CliFinality {
    fn check(&self, anchor: &Anchor) -> Result<String, String> {
        let header_hash = anchor.header.hash();
        let at = format!(
            "block {} of chain {} (header {})",
            anchor.header.height,
            anchor.chain_id,
            hex::encode(header_hash)
        );
        if let Some(pin) = self.header {
            return if pin == header_hash {
                // The header names its chain id, not its genesis: check the genesis hash against
                // a genesis file of that chain when there is one, and say so when there is none.
                match &self.genesis {
                    Some(g) if g.header.chain_id == anchor.chain_id && g.hash != anchor.genesis_hash => Err(format!(
                        "the bundle says chain {} has genesis {}; the genesis file of that chain here hashes to {}",
                        anchor.chain_id,
                        hex::encode(anchor.genesis_hash),
                        hex::encode(g.hash)
                    )),
                    Some(g) if g.header.chain_id == anchor.chain_id => Ok(format!(
                        "{at}: the header hash you pinned; genesis checked against your genesis file"
                    )),
                    _ => Ok(format!(
                        "{at}: the header hash you pinned (the genesis hash is the bundle's word: no genesis file of \
                         that chain here)"
                    )),
                }
            } else {
                Err(format!(
                    "the bundle is proven against {at}, not the header {} you pinned",
                    hex::encode(pin)
                ))
            };
        }
        let (finalization, handoffs) = match &anchor.finality {
            Finality::Unsigned => {
                return Err(format!(
                    "the bundle is proven against {at}, a single-validator chain whose validator signs nothing: \
                     only your own record of that header can anchor it; check it on your node (`pazar query block {}`) \
                     and pass --trust-header with its hash",
                    anchor.header.height
                ))
            }
            Finality::Certified { finalization, handoffs } => (finalization, handoffs),
        };
        let genesis = match &self.genesis {
            Some(g) if g.hash == anchor.genesis_hash && g.header.chain_id == anchor.chain_id => g,
            Some(g) if self.named => {
                return Err(format!(
                    "the bundle is of chain {} with genesis {}; the genesis file given is of chain {} with genesis {}",
                    anchor.chain_id,
                    hex::encode(anchor.genesis_hash),
                    g.header.chain_id,
                    hex::encode(g.hash)
                ))
            }
            _ => {
                return Err(format!(
                    "no trust anchor for chain {} (genesis {}): pass --genesis with that chain's genesis file, \
                     or --trust-header with the hash of {at} as a node you trust reports it",
                    anchor.chain_id,
                    hex::encode(anchor.genesis_hash)
                ))
            }
        };
        let keys: Option<Vec<_>> = genesis.header.validators.iter().map(|v| v.consensus_key).collect();
        let keys = keys.ok_or_else(|| "the genesis file names a validator without a consensus key".to_string())?;
        let epoch_length = genesis
            .full()
            .map_err(|e| format!("cannot read the genesis file: {e}"))?
            .epoch_length;
        let ns = namespace(&anchor.chain_id, &anchor.genesis_hash);
        let mut chain = HandoffChain::new(&ns, &anchor.chain_id, epoch_length, &keys).map_err(|e| e.to_string())?;
        for h in handoffs {
            chain.accept(h.clone()).map_err(|e| e.to_string())?;
        }
        let epoch = chain.epoch_of(anchor.header.height);
        let set = chain.set(epoch).ok_or_else(|| {
            format!(
                "the header is of epoch {epoch}; the bundle's hand-off records reach epoch {} only",
                chain.known()
            )
        })?;
        let fin = decode_finalization(finalization, set.len()).map_err(|e| format!("the certificate: {e}"))?;
        if certificate_epoch(&fin) != epoch {
            return Err(format!(
                "the certificate was made in epoch {}, the header is of epoch {epoch}",
                certificate_epoch(&fin)
            ));
        }
        verify_finalization(&ns, set, &fin, &anchor.header).map_err(|e| format!("the certificate: {e}"))?;
        Ok(format!(
            "{at}: finalized by a quorum of the {} validators of epoch {epoch}{}",
            set.len(),
            if epoch <= 1 {
                ", whom the genesis file names".to_string()
            } else {
                format!(", learned through {} hand-off records from genesis", handoffs.len())
            }
        ))
    }
}

fn not_found(e: ClientError, what: String) -> anyhow::Error {
    if e.is_not_found() {
        chain::client_err(e).context(what)
    } else {
        chain::client_err(e)
    }
}

/// The node as a [`Source`] of ledger records. Keeps the first client error, so the command
/// exits as that error says (unreachable, refused…), and the rounds it read.
struct RpcSource<'a> {
    rpc: &'a Rpc,
    failure: Option<ClientError>,
}

impl RpcSource<'_> {
    fn fail(&mut self, e: ClientError, what: String) -> WalkError {
        let w = if e.is_not_found() {
            WalkError::Missing(format!("the node knows no {what}"))
        } else {
            WalkError::Source(format!("{what}: {e}"))
        };
        if self.failure.is_none() {
            self.failure = Some(e);
        }
        w
    }
}

impl Source for RpcSource<'_> {
    fn job(&mut self, id: u64) -> Result<TrainJob, WalkError> {
        match self.rpc.train_job(id, false) {
            Ok(j) => Ok(j.item.job),
            Err(e) => Err(self.fail(e, format!("job {id}"))),
        }
    }

    fn dataset(&mut self, root: &Hash32) -> Result<DatasetRecord, WalkError> {
        match self.rpc.train_dataset(root, false) {
            Ok(d) => Ok(d.item.dataset),
            Err(e) => Err(self.fail(e, format!("dataset {}", hex::encode(root)))),
        }
    }

    fn round(&mut self, job: u64, round: u32) -> Result<RoundRecord, WalkError> {
        match self.rpc.train_round(job, round) {
            Ok(r) => match r.status {
                RoundStatus::Settled { record: Some(rec) } => Ok(rec),
                _ => Err(WalkError::Broken {
                    job,
                    why: format!("round {round} produced no checkpoint"),
                }),
            },
            Err(e) => Err(self.fail(e, format!("round {round} of job {job}"))),
        }
    }
}

fn walk_failure(src: &mut RpcSource<'_>, e: WalkError) -> anyhow::Error {
    if let Some(c) = src.failure.take() {
        return chain::client_err(c).context(e.to_string());
    }
    let code = match e {
        WalkError::Missing(_) => "not_found",
        _ => "bad_answer",
    };
    Failure::new(Exit::Refused, code, e.to_string()).into()
}

/// The rounds that produced `checkpoint`, as the node at `rpc` records them (only job `job`'s,
/// if given).
fn producing_rounds(rpc: &Rpc, checkpoint: &Hash32, job: Option<u64>) -> Result<Vec<RoundRecord>> {
    let hex = hex::encode(checkpoint);
    let p = rpc.train_checkpoint(checkpoint).map_err(|e| {
        not_found(
            e,
            format!("checkpoint {hex} is unknown to the ledger: no round of any training job produced it"),
        )
    })?;
    let records: Vec<RoundRecord> = p
        .rounds
        .into_iter()
        .filter(|r| job.is_none_or(|j| r.job == j))
        .collect();
    if records.is_empty() {
        return Err(Failure::new(
            Exit::Refused,
            "not_found",
            format!(
                "checkpoint {hex} was not produced by job {}",
                job.map_or_else(|| "-".into(), |j| j.to_string())
            ),
        )
        .into());
    }
    Ok(records)
}

/// The provenance of `checkpoint` as the node at `rpc` records it (only job `job`'s, if given).
pub fn provenance(rpc: &Rpc, checkpoint: &Hash32, job: Option<u64>) -> Result<Provenance> {
    let mut src = RpcSource { rpc, failure: None };
    let mut lineages = Vec::new();
    for r in producing_rounds(rpc, checkpoint, job)? {
        let l = provenance::lineage(&mut src, r).map_err(|e| walk_failure(&mut src, e))?;
        lineages.push(l);
    }
    Ok(Provenance {
        checkpoint: *checkpoint,
        lineages,
    })
}

fn job_of(rpc: &Rpc, job: u64) -> Result<TrainJob> {
    Ok(rpc
        .train_job(job, false)
        .map_err(|e| not_found(e, format!("job {job}")))?
        .item
        .job)
}

/// The checkpoint `hash` of a model of shape `model`, from the first worker of `job` that
/// serves it with the right bytes.
fn fetch_checkpoint(rpc: &Rpc, job: u64, model: &pazar_types::train::ModelSpec, hash: &Hash32) -> Result<Checkpoint> {
    model
        .validate("model")
        .map_err(|e| anyhow::anyhow!("the node's job {job} has an invalid model: {e}"))?;
    let n = usize::try_from(model.params()).context("the model does not fit this machine")?;
    let members = rpc.train_members(job).map_err(|e| not_found(e, format!("job {job}")))?;
    let mut last = String::from("the job has no members");
    for m in &members.members {
        let uri = &m.member.blob_uri;
        match pazar_train::blobs::fetch(uri, hash, 16 + 8 * n, pazar_train::blobs::FETCH_TIMEOUT) {
            Ok(bytes) => match Checkpoint::decode(&bytes, n) {
                Ok(c) if c.hash() == *hash => return Ok(c),
                Ok(_) => last = format!("{uri} served another checkpoint"),
                Err(e) => last = format!("{uri}: {e}"),
            },
            Err(e) => last = format!("{uri}: {e}"),
        }
    }
    Err(Failure::new(
        Exit::Unreachable,
        "unavailable",
        format!("no worker of job {job} served checkpoint {}: {last}", hex::encode(hash)),
    )
    .into())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// How long to wait for the header that commits to the proofs' height.
const HEADER_WAIT: Duration = Duration::from_secs(30);
/// Tries at a fresh height when the node holds no certificate of its own for the block (one
/// finalized through a descendant's certificate).
const CERTIFICATE_TRIES: usize = 5;

/// The bundle of `checkpoint`: its weights (from `file`, else from the job's workers), and the
/// records of its lineage proven at one height, with what makes that height's header final.
fn export(rpc: &Rpc, checkpoint: &Hash32, job: Option<u64>, file: Option<&Path>) -> Result<Bundle> {
    let rounds = producing_rounds(rpc, checkpoint, job)?;
    if rounds.len() > 1 {
        bail!(
            "jobs {} each produced checkpoint {}: name one with --job",
            rounds.iter().map(|r| r.job.to_string()).collect::<Vec<_>>().join(", "),
            hex::encode(checkpoint)
        );
    }
    let first = rounds.into_iter().next().context("no round")?;
    let job = first.job;
    let mut src = RpcSource { rpc, failure: None };
    let lineage = provenance::lineage(&mut src, first).map_err(|e| walk_failure(&mut src, e))?;
    let spec = job_of(rpc, job)?.spec;
    spec.model
        .validate("model")
        .map_err(|e| anyhow::anyhow!("the node's job {job} has an invalid model: {e}"))?;
    let n = usize::try_from(spec.model.params()).context("the model does not fit this machine")?;
    let ckpt = match file {
        Some(p) => {
            let len = std::fs::metadata(p)
                .with_context(|| format!("cannot read {}", p.display()))?
                .len();
            if len != 16 + 8 * n as u64 {
                bail!(
                    "{} has {len} bytes; a checkpoint of job {job}'s model ({n} parameters) has {}",
                    p.display(),
                    16 + 8 * n as u64
                );
            }
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let c = Checkpoint::decode(&bytes, n).with_context(|| format!("{} is not a checkpoint", p.display()))?;
            if c.hash() != *checkpoint {
                bail!(
                    "{} holds checkpoint {}, not {}",
                    p.display(),
                    hex::encode(c.hash()),
                    hex::encode(checkpoint)
                );
            }
            c
        }
        None => fetch_checkpoint(rpc, job, &spec.model, checkpoint)?,
    };
    let round_ids: Vec<u32> = lineage.rounds.iter().map(|l| l.round).collect();
    let keys = keys_to_prove(checkpoint, job, &round_ids, &spec.dataset);
    let status = rpc.status().map_err(chain::client_err)?;
    let certified = rpc.validators().map_err(chain::client_err)?.epoch_length.is_some();
    let mut last = String::new();
    for _ in 0..CERTIFICATE_TRIES {
        let proofs = rpc.state_proofs(&keys).map_err(chain::client_err)?;
        if proofs.proofs.len() != keys.len() {
            bail!(
                "the node answered {} proofs for {} keys",
                proofs.proofs.len(),
                keys.len()
            );
        }
        let header = rpc
            .wait_header(proofs.height + 1, HEADER_WAIT)
            .map_err(chain::client_err)?;
        let finality = if certified {
            match rpc.finalization(header.height) {
                Ok(fin) => {
                    let handoffs = handoffs_to(rpc, &header)?;
                    Finality::Certified {
                        finalization: fin,
                        handoffs,
                    }
                }
                Err(e) if e.is_not_found() => {
                    last = e.to_string();
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(e) => return Err(chain::client_err(e)),
            }
        } else {
            Finality::Unsigned
        };
        let entries = keys
            .iter()
            .zip(proofs.proofs)
            .map(|(k, p)| {
                if &p.key != k {
                    bail!("the node answered a proof of another key");
                }
                Ok(Entry {
                    key: p.key,
                    value: p.value,
                    proof: p.proof,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = Meta {
            spec: spec.model,
            tokenizer: Tokenizer::Bytes,
            checkpoint: *checkpoint,
            momentum_hash: f32s_hash(MOMENTUM_TAG, &[&ckpt.momentum]),
            job,
            anchor: Anchor {
                chain_id: status.chain_id.clone(),
                genesis_hash: status.genesis_hash,
                header,
                finality,
            },
            entries,
        };
        return Ok(Bundle::new(meta, ckpt.params)?);
    }
    bail!("the node holds no certificate of its own for the blocks tried ({last}); retry in a moment")
}

/// The hand-off records from epoch 1 to the epoch of `header`.
fn handoffs_to(rpc: &Rpc, header: &pazar_types::Header) -> Result<Vec<pazar_api::sync::Handoff>> {
    let v = rpc.validators().map_err(chain::client_err)?;
    let Some(len) = v.epoch_length.filter(|l| *l > 0) else {
        return Ok(Vec::new());
    };
    let epoch = header.height / len;
    let mut out: Vec<pazar_api::sync::Handoff> = Vec::new();
    // Genesis names the sets of epochs 0 and 1; the record of epoch E proves the set of E + 1.
    let mut next = 1;
    while next < epoch {
        let page = rpc.handoffs(next).map_err(chain::client_err)?.handoffs;
        if page.is_empty() {
            bail!("the node has no hand-off record of epoch {next}");
        }
        let before = next;
        for h in page {
            if h.epoch == next && next < epoch {
                out.push(h);
                next += 1;
            }
        }
        if next == before {
            bail!("the node answered no hand-off record of epoch {next}");
        }
    }
    Ok(out)
}
