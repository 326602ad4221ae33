//! A round end to end without a network: workers train from a checkpoint, an auditor replays
//! their segments and compression step, an aggregator takes the outer step, and cheats change
//! the bits an auditor compares.

use pazar_train::compress::{update_hash, Method};
use pazar_train::data::{self, CHUNK_BYTES};
use pazar_train::model::{Config, Model};
use pazar_train::ops::Threads;
use pazar_train::optim::{AdamW, Nesterov};
use pazar_train::round::{self, RoundOutput, TrainConfig, Work};
use pazar_train::state::Checkpoint;

fn config() -> TrainConfig {
    TrainConfig {
        model: Config {
            vocab: 256,
            dim: 32,
            layers: 2,
            heads: 2,
            ffn: 64,
            seq_len: 32,
        },
        batch: 4,
        inner_steps: 12,
        segment_steps: 4,
        adam: AdamW::new(3e-3, 0.0),
        outer: Nesterov { lr: 0.7, momentum: 0.9 },
        method: Method::TopKInt8 { per_mille: 100 },
        shard_chunks: 2,
    }
}

struct Fixture {
    corpus: Vec<u8>,
    cfg: TrainConfig,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            corpus: data::generate_corpus(5, 12 * CHUNK_BYTES),
            cfg: config(),
        }
    }

    fn chunks(&self) -> Vec<&[u8]> {
        data::chunks(&self.corpus).collect()
    }

    /// The work of `worker` in `round` from `checkpoint`: its shards and batch seed.
    fn work(&self, round: u32, checkpoint: &Checkpoint, worker: &[u8]) -> Work<'_> {
        let all = self.chunks();
        let train = (all.len() - data::eval_count(all.len() as u32) as usize) as u32;
        let seed = round::round_seed(1, round, &checkpoint.hash());
        let shards = data::assign_shards(&seed, worker, train, self.cfg.shard_chunks).expect("shards");
        Work {
            chunks: shards.iter().map(|&i| all[i as usize]).collect(),
            seed: round::batch_seed(&seed, worker),
        }
    }

    fn eval(&self, model: &Model, params: &[f32]) -> f32 {
        let all = self.chunks();
        let n = all.len() as u32;
        let eval: Vec<&[u8]> = all[(n - data::eval_count(n)) as usize..].to_vec();
        let batches = data::eval_batches(&eval, 8, self.cfg.model.seq_len as u32, 4).expect("eval");
        round::evaluate(model, params, &batches).expect("evaluates")
    }
}

fn model(cfg: &TrainConfig, threads: usize) -> Model {
    Model::new(cfg.model, Threads(threads)).expect("valid model")
}

#[test]
fn two_workers_and_the_outer_step_lower_the_held_out_loss() {
    let f = Fixture::new();
    let m = model(&f.cfg, 1);
    let mut ckpt = Checkpoint::initial(m.init_params(1));
    let start = f.eval(&m, &ckpt.params);
    let workers: [&[u8]; 2] = [b"worker-a", b"worker-b"];
    let mut residuals = vec![vec![0.0f32; m.param_count()]; 2];
    for r in 0..4 {
        let mut updates = Vec::new();
        for (w, ef) in workers.iter().zip(residuals.iter_mut()) {
            let out = round::run_round(&m, &f.cfg, &ckpt, ef.clone(), &f.work(r, &ckpt, w)).expect("trains");
            *ef = out.ef_out;
            updates.push(out.update);
        }
        ckpt = round::aggregate(&f.cfg, &ckpt, &updates).expect("aggregates");
    }
    let end = f.eval(&m, &ckpt.params);
    assert!(end < start - 0.5, "held-out loss {start} → {end}");
}

fn one_round(f: &Fixture, threads: usize) -> (Checkpoint, RoundOutput) {
    let m = model(&f.cfg, threads);
    let ckpt = Checkpoint::initial(m.init_params(2));
    let out = round::run_round(&m, &f.cfg, &ckpt, vec![0.0; m.param_count()], &f.work(0, &ckpt, b"w")).expect("trains");
    (ckpt, out)
}

#[test]
fn an_auditor_with_another_thread_count_replays_every_segment_and_the_compression_bit_for_bit() {
    let f = Fixture::new();
    let (ckpt, out) = one_round(&f, 1);
    let auditor = model(&f.cfg, 3);
    let work = f.work(0, &ckpt, b"w");
    assert_eq!(out.trace.len() as u32, f.cfg.segments() + 1);
    assert_eq!(out.boundaries[0].params, ckpt.params);
    for s in 0..f.cfg.segments() {
        let steps = round::replay_segment(&auditor, &f.cfg, &out.boundaries[s as usize], &work, s).expect("replays");
        assert_eq!(steps.len() as u32, f.cfg.segment_steps);
        assert_eq!(steps.last(), Some(&out.trace[s as usize + 1]), "segment {s}");
    }
    let [u, c] = round::replay_finish(&f.cfg, &ckpt.params, out.boundaries.last().expect("end")).expect("replays");
    assert_eq!(u, out.update_hash);
    assert_eq!(c, out.ef_out_hash);
}

#[test]
fn a_perturbation_of_one_part_in_a_million_changes_the_compression_audit() {
    let f = Fixture::new();
    let (ckpt, out) = one_round(&f, 1);
    let mut end = out.boundaries.last().expect("end").clone();
    // A cheat that sends the honest pseudo-gradient scaled by 1 + 1e-6 (the update, not the
    // weights: a change of the weights this small vanishes in the quantisation of the update
    // and only moves the residual).
    for (x, s) in end.params.iter_mut().zip(&ckpt.params) {
        *x = s - (s - *x) * (1.0 + 1e-6);
    }
    let (cheat, _) = round::finish(&f.cfg, &ckpt.params, &end).expect("compresses");
    let cheat_hash = update_hash(&cheat.encode());
    assert_ne!(cheat_hash, out.update_hash);
    // The auditor, from the committed end state, computes the honest update, not the cheat.
    let [u, _] = round::replay_finish(&f.cfg, &ckpt.params, out.boundaries.last().expect("end")).expect("replays");
    assert_ne!(u, cheat_hash);
}

#[test]
fn a_lazy_worker_that_skips_steps_or_trains_on_other_shards_fails_the_replay() {
    let f = Fixture::new();
    let (ckpt, out) = one_round(&f, 1);
    let m = model(&f.cfg, 1);
    let work = f.work(0, &ckpt, b"w");
    // Lazy: claims the start of segment 1 is the state after segment 0 without training.
    let lazy_end = out.boundaries[0].hash();
    let replayed = round::replay_segment(&m, &f.cfg, &out.boundaries[0], &work, 0).expect("replays");
    assert_ne!(replayed.last(), Some(&lazy_end));
    // Wrong shards: another worker's batches give another trajectory.
    let other = f.work(0, &ckpt, b"someone-else");
    let wrong = round::replay_segment(&m, &f.cfg, &out.boundaries[0], &other, 0).expect("replays");
    assert_ne!(wrong.last(), Some(&out.trace[1]));
    // Stale: training from an older checkpoint gives a start state that is not the checkpoint.
    let older = Checkpoint::initial(m.init_params(99));
    assert_ne!(older.hash(), ckpt.hash());
    let stale = round::run_round(&m, &f.cfg, &older, vec![0.0; m.param_count()], &work).expect("trains");
    assert_ne!(stale.trace[0], out.trace[0]);
}

#[test]
fn the_round_is_the_same_bits_for_every_thread_count() {
    let f = Fixture::new();
    let (_, a) = one_round(&f, 1);
    let (_, b) = one_round(&f, 2);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.update_hash, b.update_hash);
    assert_eq!(a.ef_out_hash, b.ef_out_hash);
}

#[test]
fn an_update_beyond_what_training_can_move_is_clamped_in_the_aggregate() {
    let f = Fixture::new();
    let (ckpt, out) = one_round(&f, 1);
    let bound = round::update_bound(&f.cfg, &ckpt.params);
    // Honest updates are inside the bound: the clamp changes nothing for them.
    assert!(out.update.decompress().iter().all(|x| x.abs() <= bound));
    let n = ckpt.params.len();
    let huge: Vec<f32> = (0..n).map(|i| if i % 2 == 0 { 1e30 } else { -1e30 }).collect();
    let (bad, _) = pazar_train::compress::compress(f.cfg.method, &huge, &vec![0.0; n]).expect("compresses");
    let next = round::aggregate(&f.cfg, &ckpt, &[out.update.clone(), bad]).expect("aggregates");
    assert!(next.params.iter().all(|x| x.is_finite()));
    // Each coordinate moved by at most lr·(g + μ·u) with |g| ≤ bound and u = g on a fresh momentum.
    let most = f.cfg.outer.lr * (1.0 + f.cfg.outer.momentum) * bound * 1.0001;
    for (a, b) in next.params.iter().zip(&ckpt.params) {
        assert!((a - b).abs() <= most, "moved {} > {most}", (a - b).abs());
    }
}
