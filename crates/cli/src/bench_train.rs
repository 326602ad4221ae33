//! `pazar bench train`: the training protocol measured on this machine. Workers train a
//! generated corpus through the real ledger in one process (`pazar_train::sim`): every
//! commitment, audit, aggregate, slash and payment goes through the ledger's rules; only the
//! network is left out (bytes between workers are counted where they would cross it). Next to
//! it, a plain single-process run on the same tokens from the same start gives the baseline for
//! the loss, and the bytes a synchronous data-parallel run would send give the baseline for
//! communication. Then each kind of cheater runs among honest workers.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use serde::Serialize;

use pazar_train::data::{self, CHUNK_BYTES};
use pazar_train::model::Model;
use pazar_train::ops::Threads;
use pazar_train::round::{self, Work};
use pazar_train::sim;
use pazar_train::state::WorkerState;
use pazar_train::worker::{self, Adversary};
use pazar_types::train::{Compression, JobSpec, ModelSpec, PhaseBlocks, TrainParams};
use pazar_types::{Coin, Event};

use crate::chart;

#[derive(Args)]
pub struct TrainBenchOpts {
    /// `ci`: a small model, a few minutes on 2 cores, every adversary. `full`: a warm-started
    /// 0.1 M-parameter model over 100 outer rounds (about 13 minutes on 2 cores).
    #[arg(long, default_value = "ci", value_parser = ["ci", "full"])]
    pub profile: String,
    /// Directory for the loss chart (SVG) and the per-round losses (JSON); a new temporary
    /// directory by default.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

struct Profile {
    model: ModelSpec,
    batch: u32,
    inner_steps: u32,
    segment_steps: u32,
    rounds: u32,
    workers: usize,
    warm_steps: u32,
    corpus_bytes: usize,
    lr_micro: u32,
    audit_per_mille: u16,
    /// Evaluate the checkpoint every this many rounds.
    eval_every: u32,
    eval_batches: u32,
}

fn profile(name: &str) -> Profile {
    match name {
        "full" => Profile {
            model: ModelSpec {
                vocab: 256,
                dim: 48,
                layers: 3,
                heads: 4,
                ffn_dim: 128,
                seq_len: 64,
            },
            batch: 8,
            inner_steps: 128,
            segment_steps: 32,
            rounds: 100,
            workers: 2,
            warm_steps: 1000,
            corpus_bytes: 400 * CHUNK_BYTES,
            lr_micro: 2_000,
            audit_per_mille: 80,
            eval_every: 10,
            eval_batches: 16,
        },
        _ => Profile {
            model: ModelSpec {
                vocab: 256,
                dim: 32,
                layers: 2,
                heads: 2,
                ffn_dim: 64,
                seq_len: 32,
            },
            batch: 8,
            inner_steps: 104,
            segment_steps: 26,
            rounds: 16,
            workers: 2,
            warm_steps: 300,
            corpus_bytes: 100 * CHUNK_BYTES,
            lr_micro: 2_000,
            audit_per_mille: 80,
            eval_every: 1,
            eval_batches: 8,
        },
    }
}

fn job_spec(p: &Profile) -> JobSpec {
    JobSpec {
        name: "bench".into(),
        model: p.model,
        dataset: [0; 32],
        init_checkpoint: [0; 32],
        params: TrainParams {
            inner_steps: p.inner_steps,
            segment_steps: p.segment_steps,
            batch: p.batch,
            inner_lr_micro: p.lr_micro,
            weight_decay_micro: 0,
            outer_lr_milli: 700,
            outer_momentum_milli: 900,
            compression: Compression::Int8,
            seed: 1,
        },
        min_workers: p.workers as u16,
        max_workers: p.workers as u16,
        rounds: p.rounds,
        // A tick is one block and a worker trains within one tick: these are deadlines only.
        phases: PhaseBlocks {
            train: 4,
            commit: 2,
            reveal: 2,
            audit: 4,
            dispute: 2,
            aggregate: 3,
        },
        budget: Coin::new(1_000_000_000, sim::native()),
        bond: Coin::new(1_000_000, sim::native()),
        audit_per_mille: p.audit_per_mille,
        referees: 1,
    }
}

/// The baseline's step, synchronous data parallelism on this machine: the batch of `step` cut
/// into `parts` equal slices whose gradients as many threads compute at once, averaged, then
/// one AdamW step. The same mean gradient as one trainer on the whole batch (up to the order
/// of the additions), at the speed of `parts` cores: the kernels' own threads gain little on a
/// model this small.
fn data_parallel_step(
    model: &Model,
    cfg: &round::TrainConfig,
    st: &mut WorkerState,
    work: &Work,
    step: u32,
    parts: usize,
) -> Result<()> {
    let b = data::sample_batch(&work.chunks, &work.seed, step, cfg.batch, cfg.model.seq_len as u32)?;
    let parts = parts.max(1);
    let seqs = cfg.batch as usize;
    if seqs % parts != 0 {
        return Err(anyhow!("a batch of {seqs} does not split into {parts} equal parts"));
    }
    let per = seqs / parts;
    let slice = per * cfg.model.seq_len;
    let tokens: Vec<u32> = b.tokens.iter().map(|&t| u32::from(t)).collect();
    let targets: Vec<u32> = b.targets.iter().map(|&t| u32::from(t)).collect();
    let n = st.params.len();
    let params = &st.params;
    let grads: Vec<Vec<f32>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..parts)
            .map(|i| {
                let (x, y) = (
                    &tokens[i * slice..(i + 1) * slice],
                    &targets[i * slice..(i + 1) * slice],
                );
                sc.spawn(move || -> Result<Vec<f32>> {
                    let mut g = vec![0.0f32; n];
                    model.loss_and_grad(params, x, y, per, &mut g)?;
                    Ok(g)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a trainer panicked"))?)
            .collect::<Result<Vec<Vec<f32>>>>()
    })?;
    let inv = 1.0 / parts as f32;
    let mut grad = vec![0.0f32; n];
    for g in &grads {
        for (a, x) in grad.iter_mut().zip(g) {
            *a += x;
        }
    }
    for a in &mut grad {
        *a *= inv;
    }
    pazar_train::optim::adamw_step(&cfg.adam, &mut st.adam, &mut st.params, &mut grad);
    Ok(())
}

#[derive(Serialize)]
pub struct TrainBenchReport {
    pub profile: String,
    pub params: usize,
    pub workers: usize,
    pub inner_steps: u32,
    pub outer_rounds: u32,
    pub compression: String,
    /// Bytes a synchronous data-parallel run of the same steps would send (ring all-reduce of
    /// f32 gradients every step) ÷ bytes the workers fetched from each other.
    pub bytes_ratio_vs_ddp: f64,
    pub bytes_sent: u64,
    pub ddp_bytes: u64,
    /// Final held-out loss vs a single-process run on the same tokens from the same start.
    pub loss_gap_pct: f64,
    pub eval_loss: f64,
    pub baseline_eval_loss: f64,
    pub warm_start_eval_loss: f64,
    /// Audit replays' compute ÷ training compute, at the audit rate this run drew
    /// (`audited_fraction`).
    pub verify_overhead_pct: f64,
    /// What one audit costs, as a share of the round it replays (audit seconds per audit ÷
    /// training seconds per worker-round).
    pub audit_cost_per_round: f64,
    /// `verify_overhead_pct` at the rate the job asks (`audit_per_mille`): what a long run
    /// converges to. A short run draws few audits, so its own rate can be far from the asked one.
    pub verify_overhead_at_asked_rate_pct: f64,
    /// A worker's time in the protocol, less the audits it ran for others (counted in
    /// `verify_overhead_pct`), ÷ the same steps trained plainly, − 1.
    pub protocol_overhead_pct: f64,
    /// The same with the audits it ran counted in.
    pub protocol_overhead_with_audits_pct: f64,
    pub audits: usize,
    /// Audits ÷ worker-rounds: the audit rate this run drew (the job asks `audit_per_mille`).
    pub audited_fraction: f64,
    pub audit_per_mille: u16,
    pub cheats_caught: usize,
    pub cheats_tried: usize,
    pub false_slashes: usize,
    /// The smallest relative perturbation of an update the audits caught (the tries: 1e-2 down
    /// to 1e-7; below about 6e-8 an f32 scaled by 1 + R is the same number).
    pub min_perturbation_caught: Option<f64>,
    pub tokens_per_s_per_worker: f64,
    /// Seconds per worker: in the protocol (all of it), training, auditing, aggregating, and
    /// the same steps trained plainly.
    pub worker_seconds: Breakdown,
    pub seconds: f64,
    pub chart: String,
    pub losses: String,
}

#[derive(Serialize)]
pub struct Breakdown {
    pub busy: f64,
    pub train: f64,
    pub audit: f64,
    pub aggregate: f64,
    pub plain: f64,
}

#[derive(Serialize)]
struct RoundLoss {
    round: u32,
    tokens: u64,
    eval_loss: f64,
    baseline_eval_loss: Option<f64>,
}

pub fn run(o: &TrainBenchOpts) -> Result<TrainBenchReport> {
    let t_all = Instant::now();
    let p = profile(&o.profile);
    let out = match &o.out {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("pazar-bench-train-{}", std::process::id())),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let spec = job_spec(&p);

    // The data, the model, and a warm start trained plainly (the regime DiLoCo is for).
    let corpus = data::generate_corpus(11, p.corpus_bytes);
    let dataset = data::Dataset::from_corpus(&corpus)?;
    let chunks: Vec<&[u8]> = data::chunks(&corpus).collect();
    let train_n = dataset.train_count() as usize;
    let eval_chunks: Vec<&[u8]> = chunks[train_n..].to_vec();
    let eval = data::eval_batches(&eval_chunks, 16, p.model.seq_len, p.eval_batches)?;
    let cfg = worker::train_config(&spec, dataset.train_count())?;
    let parallel = Model::new(cfg.model, Threads(2))?;
    let one = Model::new(cfg.model, Threads::ONE)?;
    let warm: Vec<f32> = {
        let work = Work {
            chunks: chunks[..train_n].to_vec(),
            seed: [0x77; 32],
        };
        let mut st = WorkerState::start(
            parallel.init_params(spec.params.seed),
            vec![0.0; parallel.param_count()],
        );
        for s in 0..p.warm_steps {
            data_parallel_step(&one, &cfg, &mut st, &work, s, 2)?;
        }
        st.params
    };
    let warm_loss = round::evaluate(&parallel, &warm, &eval)? as f64;
    tracing::info!(
        seconds = t_all.elapsed().as_secs_f64(),
        warm_loss,
        "bench train: warm start done"
    );

    // The protocol.
    let mut s = sim::job(
        spec.clone(),
        11,
        p.corpus_bytes,
        Some(warm.clone()),
        p.workers,
        Threads::ONE,
    )?;
    let mut curve: Vec<RoundLoss> = Vec::new();
    // Plain training of a round's steps, timed at each evaluation while the protocol runs, so
    // that the protocol and its reference share the machine's speed of the moment (timed
    // minutes apart, this machine's drift moved the overhead between 1 and 12 %).
    let plain_work = Work {
        chunks: chunks[..train_n].to_vec(),
        seed: [0x42; 32],
    };
    let mut plain_samples: Vec<f64> = Vec::new();
    let mut seen = 0usize;
    let max_ticks = u64::from(p.rounds) * 40 + 100;
    let mut ticks = 0u64;
    loop {
        let (over, _) = s.tick()?;
        ticks += 1;
        let events: Vec<(u32, [u8; 32])> = {
            let l = s.ledger.lock().map_err(|_| anyhow!("ledger lock"))?;
            l.events[seen..]
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::TrainCheckpoint { round, checkpoint, .. } => Some((*round, *checkpoint)),
                    _ => None,
                })
                .collect()
        };
        seen = s.ledger.lock().map_err(|_| anyhow!("ledger lock"))?.events.len();
        for (r, c) in events {
            tracing::debug!(
                round = r,
                seconds = t_all.elapsed().as_secs_f64(),
                "bench train: round settled"
            );
            if (r + 1) % p.eval_every == 0 || r + 1 == p.rounds {
                let ck = s.workers[0]
                    .1
                    .checkpoint(&c)
                    .ok_or_else(|| anyhow!("worker 0 lacks the checkpoint"))?;
                curve.push(RoundLoss {
                    round: r + 1,
                    tokens: u64::from(r + 1) * cfg.tokens_per_round() * p.workers as u64,
                    eval_loss: round::evaluate(&parallel, &ck.params, &eval)? as f64,
                    baseline_eval_loss: None,
                });
                plain_samples.push(plain_step_seconds(
                    &one,
                    &cfg,
                    &plain_work,
                    &warm,
                    p.workers,
                    p.inner_steps,
                    r,
                )?);
            }
        }
        if over || ticks > max_ticks {
            break;
        }
    }
    let last = curve.last().ok_or_else(|| anyhow!("no round produced a checkpoint"))?;
    if last.round != p.rounds {
        return Err(anyhow!(
            "only {} of {} rounds produced a checkpoint",
            last.round,
            p.rounds
        ));
    }
    let eval_loss = last.eval_loss;

    tracing::info!(
        seconds = t_all.elapsed().as_secs_f64(),
        eval_loss,
        "bench train: protocol done"
    );
    // The baseline: one process, the same tokens (all workers' batches in one), same start.
    let base_cfg = pazar_train::round::TrainConfig {
        batch: p.batch * p.workers as u32,
        ..cfg.clone()
    };
    let work = Work {
        chunks: chunks[..train_n].to_vec(),
        seed: [0x42; 32],
    };
    let mut st = WorkerState::start(warm.clone(), vec![0.0; parallel.param_count()]);
    let mut ci = 0;
    for r in 0..p.rounds {
        for k in 0..p.inner_steps {
            data_parallel_step(&one, &base_cfg, &mut st, &work, r * p.inner_steps + k, p.workers)?;
        }
        if ci < curve.len() && curve[ci].round == r + 1 {
            curve[ci].baseline_eval_loss = Some(round::evaluate(&parallel, &st.params, &eval)? as f64);
            ci += 1;
        }
    }
    let baseline = curve
        .last()
        .and_then(|c| c.baseline_eval_loss)
        .ok_or_else(|| anyhow!("no baseline evaluation"))?;

    tracing::info!(
        seconds = t_all.elapsed().as_secs_f64(),
        baseline,
        "bench train: baseline done"
    );
    let plain_per_step = plain_samples.iter().sum::<f64>() / plain_samples.len().max(1) as f64;
    let worker_steps = f64::from(p.rounds) * f64::from(p.inner_steps);
    let busy: f64 = s.workers.iter().map(|(_, w)| w.accounting.busy_seconds).sum::<f64>() / p.workers as f64;
    let train_s: f64 = s.workers.iter().map(|(_, w)| w.accounting.train_seconds).sum();
    let audit_s: f64 = s.workers.iter().map(|(_, w)| w.accounting.audit_seconds).sum();
    let audit_per_worker = audit_s / p.workers as f64;
    let audits = {
        let l = s.ledger.lock().map_err(|_| anyhow!("ledger lock"))?;
        l.events
            .iter()
            .filter(|(_, e)| matches!(e, Event::TrainAuditPosted { .. }))
            .count()
    };
    let worker_rounds = f64::from(p.rounds) * p.workers as f64;
    let audit_cost_per_round = if audits == 0 {
        0.0
    } else {
        (audit_s / audits as f64) / (train_s / worker_rounds).max(f64::MIN_POSITIVE)
    };
    let n = one.param_count() as u64;
    let w = p.workers as u64;
    let ddp_bytes = u64::from(p.rounds) * u64::from(p.inner_steps) * 2 * (w - 1) * 4 * n;
    let sent = s.peers.bytes().max(1);
    let per_worker = |f: fn(&worker::Accounting) -> f64| -> f64 {
        s.workers.iter().map(|(_, w)| f(&w.accounting)).sum::<f64>() / p.workers as f64
    };
    let breakdown = Breakdown {
        busy: per_worker(|a| a.busy_seconds),
        train: per_worker(|a| a.train_seconds),
        audit: per_worker(|a| a.audit_seconds),
        aggregate: per_worker(|a| a.aggregate_seconds),
        plain: plain_per_step * f64::from(p.rounds) * f64::from(p.inner_steps),
    };

    tracing::info!(
        seconds = t_all.elapsed().as_secs_f64(),
        "bench train: plain timing done"
    );
    // Cheaters, each among honest workers with every worker audited every round.
    let kinds = [
        Adversary::Lazy,
        Adversary::Noise,
        Adversary::SignFlip,
        Adversary::Copier,
        Adversary::Stale,
        Adversary::Withhold,
        Adversary::Crash,
        Adversary::WrongShards,
        Adversary::FalseAuditor,
        Adversary::LazyAuditor,
        Adversary::BadSeal,
        Adversary::HideUpdate,
        Adversary::SelectiveServe,
        Adversary::DodgeAudit,
    ];
    let perturbations = [1e-2f32, 1e-4, 1e-6, 1e-7];
    let (mut caught, mut tried, mut false_slashes) = (0, 0, 0);
    for k in kinds {
        let t = sim::trial(k)?;
        tried += 1;
        caught += usize::from(t.caught());
        false_slashes += t.false_slashes();
    }
    let mut min_caught: Option<f64> = None;
    for r in perturbations {
        let t = sim::trial(Adversary::Perturb(r))?;
        tried += 1;
        false_slashes += t.false_slashes();
        if t.caught() {
            caught += 1;
            min_caught = Some(min_caught.map_or(f64::from(r), |m: f64| m.min(f64::from(r))));
        }
    }

    // The chart and the curve.
    let chart_path = out.join("loss.svg");
    let svg = chart::line_chart(
        &format!("held-out loss, {} workers, H = {}, int8", p.workers, p.inner_steps),
        "outer round",
        "eval loss (nats per byte)",
        &[
            chart::Series {
                name: "Pazar (DiLoCo, audited)",
                color: "#1f77b4",
                points: curve.iter().map(|c| (f64::from(c.round), c.eval_loss)).collect(),
            },
            chart::Series {
                name: "one process, same tokens",
                color: "#d62728",
                points: curve
                    .iter()
                    .filter_map(|c| c.baseline_eval_loss.map(|b| (f64::from(c.round), b)))
                    .collect(),
            },
        ],
    );
    std::fs::write(&chart_path, svg)?;
    let losses_path = out.join("losses.json");
    std::fs::write(&losses_path, serde_json::to_vec_pretty(&curve)?)?;

    Ok(TrainBenchReport {
        profile: o.profile.clone(),
        params: one.param_count(),
        workers: p.workers,
        inner_steps: p.inner_steps,
        outer_rounds: p.rounds,
        compression: "int8 (blocks of 256, no error feedback)".into(),
        bytes_ratio_vs_ddp: ddp_bytes as f64 / sent as f64,
        bytes_sent: sent,
        ddp_bytes,
        loss_gap_pct: 100.0 * (eval_loss / baseline - 1.0),
        eval_loss,
        baseline_eval_loss: baseline,
        warm_start_eval_loss: warm_loss,
        verify_overhead_pct: 100.0 * audit_s / train_s.max(f64::MIN_POSITIVE),
        audit_cost_per_round,
        verify_overhead_at_asked_rate_pct: audit_cost_per_round * f64::from(p.audit_per_mille) / 10.0,
        protocol_overhead_pct: 100.0 * ((busy - audit_per_worker) / (plain_per_step * worker_steps) - 1.0),
        protocol_overhead_with_audits_pct: 100.0 * (busy / (plain_per_step * worker_steps) - 1.0),
        audits,
        audited_fraction: audits as f64 / (f64::from(p.rounds) * p.workers as f64),
        audit_per_mille: p.audit_per_mille,
        cheats_caught: caught,
        cheats_tried: tried,
        false_slashes,
        min_perturbation_caught: min_caught,
        tokens_per_s_per_worker: cfg.tokens_per_round() as f64 * f64::from(p.rounds) * p.workers as f64
            / train_s.max(f64::MIN_POSITIVE),
        worker_seconds: breakdown,
        seconds: t_all.elapsed().as_secs_f64(),
        chart: chart_path.display().to_string(),
        losses: losses_path.display().to_string(),
    })
}

/// Seconds per step of plain training, as many trainers in parallel as workers (on a 2-core
/// machine two threads slow each other down; that is the machine, not the protocol), each
/// `steps` steps from `start` (step indices after round `round`'s, so each sample trains
/// other batches).
fn plain_step_seconds(
    model: &Model,
    cfg: &round::TrainConfig,
    work: &Work,
    start: &[f32],
    trainers: usize,
    steps: u32,
    round: u32,
) -> Result<f64> {
    let times: Vec<f64> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..trainers)
            .map(|i| {
                sc.spawn(move || -> Result<f64> {
                    let t = Instant::now();
                    let mut st = WorkerState::start(start.to_vec(), vec![0.0; model.param_count()]);
                    let first = (round * trainers as u32 + i as u32) * steps;
                    for k in 0..steps {
                        round::train_step(model, cfg, &mut st, work, first + k)?;
                    }
                    Ok(t.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a trainer panicked"))?)
            .collect::<Result<Vec<f64>>>()
    })?;
    Ok(times.iter().sum::<f64>() / times.len().max(1) as f64 / f64::from(steps.max(1)))
}
