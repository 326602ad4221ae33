//! Training on the RPC (issue 15): a job opened and run through one round by real signed
//! transactions on a running node, every training endpoint read back through the typed client
//! (and its JSON held to the OpenAPI document), unknown ids answered 404 and malformed ones 400.

// This test writes its own genesis (a faster block time): it uses the shared keys only.
#[allow(dead_code)]
use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pazar_api::node::{ListQuery, RoundStatus, TrainJobPage, TrainRound, TxState};
use pazar_api::openapi_check::check_answer;
use pazar_api::request::SubmitMode;
use pazar_api::{ErrorCode, ErrorEnvelope};
use pazar_client::{ClientError, Rpc};
use pazar_node::consensus::{Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Node, NodeConfig};
use pazar_types::state_key::{store_key, table_id};
use pazar_types::train::{
    loss_seal, update_commitment, Compression, Contributor, DatasetSpec, JobSpec, JobState, ModelSpec, Phase,
    PhaseBlocks, Reveal, TrainParams, Verdict,
};
use pazar_types::{Address, Coin, Hash32, Msg, ProviderInfo, SigningKey};

use common::{key, upzr, CHAIN};

const DATASET: Hash32 = [0xda; 32];
const INIT: Hash32 = [0x11; 32];
const CHECKPOINT: Hash32 = [0xc1; 32];

/// A one-validator node on loopback with 100 ms blocks, stopped when dropped.
struct Devnet {
    rpc: Rpc,
    stop: tokio::sync::watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Devnet {
    fn start(funded: &[&SigningKey]) -> Devnet {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let balances: Vec<Value> = funded
            .iter()
            .map(|k| json!({"address": k.address(), "coins": [{"denom": "upzr", "amount": "1000000000"}]}))
            .collect();
        let genesis = json!({
            "genesis_time_ms": 1,
            "chain_id": CHAIN,
            "params": pazar_ledger::Params::devnet("upzr", "uusd"),
            "balances": balances,
            "validators": [{"name": "v", "address": Address::module("v"), "power": 1}],
        });
        let path = dir.path().join("genesis.json");
        std::fs::write(&path, serde_json::to_vec(&genesis).expect("JSON")).expect("genesis written");
        let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
        let block_time = Duration::from_millis(100);
        let config = NodeConfig {
            block_time,
            ..NodeConfig::default()
        };
        let node = Node::open(&dir.path().join("db"), &genesis, Address::module("v"), config).expect("node opens");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let engine = Solo {
            block_time,
            clock: Arc::new(SystemClock),
        };
        rt.spawn(pazar_node::run(node, engine, listener, rx));
        Devnet {
            rpc: Rpc::new(&format!("http://{addr}")),
            stop,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// Signs `msgs` from `k`, submits them in `commit` mode and insists they succeeded.
    fn commit(&self, k: &SigningKey, msgs: Vec<Msg>) {
        let fee = Coin::new(1_000 * msgs.len() as u128, upzr());
        let tx = pazar_client::sign(&self.rpc, CHAIN, k, msgs, fee, "").expect("signed");
        let r = self.rpc.submit(&tx, SubmitMode::Commit).expect("submitted");
        match r.state {
            TxState::Committed { receipt, .. } => assert_eq!(receipt.code, 0, "{}", receipt.log),
            other => panic!("not committed: {other:?}"),
        }
    }

    /// The live round `round` of `job`, polled until it is in `phase` (a phase ends in the block
    /// after the last worker acted).
    fn live_in(&self, job: u64, round: u32, phase: Phase) -> TrainRound {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.rpc.train_round(job, round).expect("the round reads");
            if matches!(&r.status, RoundStatus::Live { phase: p, .. } if *p == phase) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "round {round} never reached {phase:?}: {r:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn doc() -> Value {
    serde_json::from_str(pazar_node::openapi::json()).expect("the document is JSON")
}

/// `GET path` as JSON, held to what the document says route `template` answers with 200.
fn checked(rpc: &Rpc, doc: &Value, template: &str, path: &str) -> Value {
    let v = rpc.get(path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let problems = check_answer(doc, "get", template, 200, &v);
    assert!(problems.is_empty(), "GET {path}: {problems:#?}\n{v:#}");
    v
}

/// `GET path` refused with `status` and `code`, a status the document lists for `template`.
fn refused(rpc: &Rpc, doc: &Value, template: &str, path: &str, status: u16, code: ErrorCode) {
    match rpc.get(path) {
        Err(ClientError::Api {
            status: s,
            code: c,
            message,
        }) => {
            assert_eq!((s, c), (status, code), "GET {path}: {message}");
            let envelope = serde_json::to_value(ErrorEnvelope::new(c, message)).expect("JSON");
            let problems = check_answer(doc, "get", template, status, &envelope);
            assert!(problems.is_empty(), "GET {path}: {problems:#?}");
        }
        other => panic!("GET {path}: expected {status} {code}, got {other:?}"),
    }
}

fn spec(name: &str, min_workers: u16) -> JobSpec {
    JobSpec {
        name: name.into(),
        model: ModelSpec {
            vocab: 256,
            dim: 64,
            layers: 2,
            heads: 4,
            ffn_dim: 256,
            seq_len: 64,
        },
        dataset: DATASET,
        init_checkpoint: INIT,
        params: TrainParams {
            inner_steps: 8,
            segment_steps: 4,
            batch: 4,
            inner_lr_micro: 1_000,
            weight_decay_micro: 0,
            outer_lr_milli: 700,
            outer_momentum_milli: 900,
            compression: Compression::Int8,
            seed: 1,
        },
        min_workers,
        max_workers: 4,
        rounds: 2,
        // Long phases: each ends early, in the block after every worker acted.
        phases: PhaseBlocks {
            train: 500,
            commit: 100,
            reveal: 100,
            audit: 100,
            dispute: 20,
            aggregate: 100,
        },
        budget: Coin::new(1_000_000, upzr()),
        bond: Coin::new(10_000, upzr()),
        audit_per_mille: 1_000,
        referees: 1,
    }
}

#[test]
fn a_job_run_by_signed_transactions_reads_back_typed_on_every_training_endpoint() {
    let owner = key(1);
    let workers = [key(10), key(11)];
    let net = Devnet::start(&[&owner, &workers[0], &workers[1]]);
    let (rpc, doc) = (&net.rpc, doc());

    net.commit(
        &owner,
        vec![
            Msg::RegisterDataset {
                spec: DatasetSpec {
                    name: "corpus".into(),
                    root: DATASET,
                    chunks: 4,
                    bytes: 4_096,
                    contributors: vec![Contributor {
                        address: owner.address(),
                        chunks: 4,
                    }],
                },
            },
            Msg::OpenJob {
                spec: spec("tiny-llama", 2),
            },
            // A second job that waits for three workers and so stays recruiting.
            Msg::OpenJob {
                spec: spec("waiting", 3),
            },
        ],
    );
    for w in &workers {
        net.commit(
            w,
            vec![
                Msg::CreateProvider {
                    host_uri: "https://provider.example.com:8443".into(),
                    tls_fingerprint: [7; 32],
                    attributes: vec![],
                    info: ProviderInfo::default(),
                },
                Msg::JoinJob {
                    job: 0,
                    blob_uri: "http://127.0.0.1:9000/blobs".into(),
                },
            ],
        );
    }

    // The dataset and the jobs, proven.
    let d = rpc.train_dataset(&DATASET, true).expect("the dataset");
    assert_eq!(
        (d.item.root, d.item.dataset.spec.chunks, d.item.dataset.registrant),
        (DATASET, 4, owner.address())
    );
    let dataset_key = store_key(table_id::DATASETS, &DATASET);
    assert!(rpc.verify_proven(&d, &dataset_key).expect("the proof checks").is_some());
    let j = rpc.train_job(0, true).expect("job 0");
    assert_eq!(
        (j.item.id, j.item.job.state, j.item.job.members),
        (0, JobState::Running, 2)
    );
    let job_key = store_key(table_id::TRAIN_JOBS, &0u64);
    assert!(rpc.verify_proven(&j, &job_key).expect("the proof checks").is_some());
    checked(
        rpc,
        &doc,
        "/train/datasets/{root}",
        &format!("/train/datasets/{}?prove=true", hex::encode(DATASET)),
    );
    checked(rpc, &doc, "/train/jobs/{id}", "/train/jobs/0?prove=true");

    // Several entries proven at one height (what a model bundle carries), one of them absent.
    let absent = store_key(table_id::TRAIN_JOBS, &99u64);
    let keys = vec![dataset_key.clone(), job_key.clone(), absent.clone()];
    let proofs = rpc.state_proofs(&keys).expect("proofs");
    let header = rpc
        .wait_header(proofs.height + 1, Duration::from_secs(10))
        .expect("the header after");
    assert_eq!(proofs.proofs.len(), 3);
    for (p, k) in proofs.proofs.iter().zip(&keys) {
        assert_eq!(p.height, proofs.height, "one height for all");
        let v = p
            .verify(&header.state_root, k)
            .expect("each proof checks against one root");
        assert_eq!(
            v.is_some(),
            k != &absent,
            "present entries carry their value, the absent one none"
        );
    }

    // The list, by id, filtered and paged.
    let all = rpc.train_jobs(&ListQuery::default()).expect("every job");
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), vec![0, 1]);
    let first: TrainJobPage = rpc
        .list_page(&ListQuery {
            limit: Some(1),
            ..ListQuery::default()
        })
        .expect("a page");
    assert_eq!(first.jobs.len(), 1);
    let second: TrainJobPage = rpc
        .list_page(&ListQuery {
            limit: Some(1),
            cursor: first.next.clone(),
            ..ListQuery::default()
        })
        .expect("the next page");
    assert_eq!((second.jobs[0].id, second.next), (1, None));
    let waiting = rpc
        .train_jobs(&ListQuery {
            owner: Some(owner.address()),
            state: Some("recruiting".into()),
            ..ListQuery::default()
        })
        .expect("filtered");
    assert_eq!(waiting.iter().map(|e| e.id).collect::<Vec<_>>(), vec![1]);
    assert!(rpc
        .train_jobs(&ListQuery {
            owner: Some(workers[0].address()),
            ..ListQuery::default()
        })
        .expect("filtered")
        .is_empty());
    checked(rpc, &doc, "/train/jobs", "/train/jobs?state=running&limit=1");

    // The members.
    let m = rpc.train_members(0).expect("members");
    let mut addrs: Vec<Address> = workers.iter().map(SigningKey::address).collect();
    addrs.sort();
    assert_eq!(m.members.iter().map(|e| e.address).collect::<Vec<_>>(), addrs);
    assert!(m
        .members
        .iter()
        .all(|e| e.member.bond == 10_000 && e.member.active_from == 0));
    checked(rpc, &doc, "/train/jobs/{id}/members", "/train/jobs/0/members");

    // Round 0, live: the workers commit, reveal, audit each other and vote, reading the round
    // between the steps as a worker would.
    let r = net.live_in(0, 0, Phase::Train);
    let RoundStatus::Live {
        workers: work,
        checkpoint,
        ..
    } = &r.status
    else {
        unreachable!("live_in returns a live round")
    };
    assert_eq!((work.len(), *checkpoint), (2, INIT));
    checked(rpc, &doc, "/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/0");
    // What a replay of worker i's round gives as its loss digest.
    let digest = |i: u8| [0x70 + i; 32];
    let reveal = |i: u8| Reveal {
        update: [0x40 + i; 32],
        trace: [0x50 + i; 32],
        ef_in: [0; 32],
        ef_out: [0x60 + i; 32],
        seal: loss_seal(0, 0, &workers[usize::from(i)].address(), &digest(i)),
    };
    for (i, w) in workers.iter().enumerate() {
        let commitment = update_commitment(0, 0, &w.address(), &reveal(i as u8));
        net.commit(
            w,
            vec![Msg::CommitUpdate {
                job: 0,
                round: 0,
                commitment,
            }],
        );
    }
    net.live_in(0, 0, Phase::Reveal);
    for (i, w) in workers.iter().enumerate() {
        let r = reveal(i as u8);
        net.commit(
            w,
            vec![Msg::RevealUpdate {
                job: 0,
                round: 0,
                update: r.update,
                trace: r.trace,
                ef_in: r.ef_in,
                ef_out: r.ef_out,
                seal: r.seal,
            }],
        );
    }
    let r = net.live_in(0, 0, Phase::Audit);
    let RoundStatus::Live {
        workers: work,
        audits,
        beacon,
        ..
    } = &r.status
    else {
        unreachable!("live_in returns a live round")
    };
    assert!(beacon.is_some());
    assert!(work
        .iter()
        .all(|w| w.work.commitment.is_some() && w.work.reveal.is_some()));
    // Every worker audited (1000 ‰), each by the other.
    assert_eq!(audits.len(), 2);
    for a in audits {
        assert_ne!(a.target, a.audit.auditor);
        assert!(a.audit.verdict.is_none());
    }
    checked(rpc, &doc, "/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/0");
    for a in audits {
        let auditor = workers
            .iter()
            .find(|w| w.address() == a.audit.auditor)
            .expect("a worker");
        net.commit(
            auditor,
            vec![Msg::PostAudit {
                job: 0,
                round: 0,
                target: a.target,
                verdict: Verdict::Pass {
                    digest: digest(workers.iter().position(|w| w.address() == a.target).expect("a worker") as u8),
                },
            }],
        );
    }
    net.live_in(0, 0, Phase::Aggregate);
    for w in &workers {
        net.commit(
            w,
            vec![Msg::PostCheckpoint {
                job: 0,
                round: 0,
                checkpoint: CHECKPOINT,
                left_out: Vec::new(),
            }],
        );
    }

    // Round 0 settled with its provenance; round 1 is live from the new checkpoint.
    let r1 = net.live_in(0, 1, Phase::Train);
    assert!(matches!(r1.status, RoundStatus::Live { checkpoint, .. } if checkpoint == CHECKPOINT));
    let r0 = rpc.train_round(0, 0).expect("round 0");
    let RoundStatus::Settled { record: Some(rec) } = &r0.status else {
        panic!("round 0 settled with a checkpoint: {r0:?}")
    };
    assert_eq!(
        (rec.checkpoint, rec.previous, rec.previous_round),
        (CHECKPOINT, INIT, None)
    );
    assert_eq!((rec.included.len(), rec.audits.len(), rec.dataset), (2, 2, DATASET));
    checked(rpc, &doc, "/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/0");

    // The checkpoint's provenance walks back to the initial checkpoint and the dataset.
    let p = rpc.train_checkpoint(&CHECKPOINT).expect("the checkpoint's rounds");
    assert_eq!(p.rounds, vec![rec.clone()]);
    checked(
        rpc,
        &doc,
        "/train/checkpoints/{hash}",
        &format!("/train/checkpoints/{}", hex::encode(CHECKPOINT)),
    );

    // A round not yet started, and the initial checkpoint (no round produced it), are not found.
    for (template, path) in [
        ("/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/2".to_string()),
        ("/train/jobs/{id}/rounds/{round}", "/train/jobs/1/rounds/0".to_string()),
        (
            "/train/checkpoints/{hash}",
            format!("/train/checkpoints/{}", hex::encode(INIT)),
        ),
    ] {
        refused(rpc, &doc, template, &path, 404, ErrorCode::NotFound);
    }
}

#[test]
fn unknown_training_ids_are_not_found_and_malformed_ones_are_bad_requests() {
    let net = Devnet::start(&[&key(1)]);
    let (rpc, doc) = (&net.rpc, doc());
    let unknown = hex::encode([0xab; 32]);
    for (template, path) in [
        ("/train/datasets/{root}", format!("/train/datasets/{unknown}")),
        ("/train/jobs/{id}", "/train/jobs/7".to_string()),
        ("/train/jobs/{id}/members", "/train/jobs/7/members".to_string()),
        ("/train/jobs/{id}/rounds/{round}", "/train/jobs/7/rounds/0".to_string()),
        ("/train/checkpoints/{hash}", format!("/train/checkpoints/{unknown}")),
    ] {
        refused(rpc, &doc, template, &path, 404, ErrorCode::NotFound);
    }
    assert!(rpc.train_job(7, false).expect_err("unknown").is_not_found());
    for (template, path) in [
        ("/train/datasets/{root}", "/train/datasets/zz"),
        ("/train/datasets/{root}", "/train/datasets/abcd"),
        ("/train/jobs/{id}", "/train/jobs/first"),
        ("/train/jobs/{id}", "/train/jobs/-1"),
        ("/train/jobs/{id}", "/train/jobs/0?prove=yes"),
        ("/train/jobs/{id}/members", "/train/jobs/x/members"),
        ("/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/last"),
        ("/train/jobs/{id}/rounds/{round}", "/train/jobs/0/rounds/4294967296"),
        ("/train/checkpoints/{hash}", "/train/checkpoints/00"),
        ("/train/jobs", "/train/jobs?dseq=1"),
        ("/train/jobs", "/train/jobs?state=sleeping"),
        ("/train/jobs", "/train/jobs?cursor=zz"),
        ("/train/jobs", "/train/jobs?limit=0"),
    ] {
        refused(rpc, &doc, template, path, 400, ErrorCode::BadRequest);
    }
    // Proofs of store keys: none, too many, too long, or twice, are bad requests; a body longer
    // than 256 keys of 512 bytes could ever be is refused before it is parsed.
    let key = |b: u8| json!(hex::encode([b; 8]));
    let too_many: Vec<Value> = (0..257u32).map(|i| json!(hex::encode(i.to_le_bytes()))).collect();
    for body in [
        json!({"keys": []}),
        json!({"keys": too_many}),
        json!({"keys": [hex::encode([1u8; 513])]}),
        json!({"keys": [key(1), key(2), key(1)]}),
        json!({"keys": [key(1)], "height": 3}),
        json!({"keys": ["zz"]}),
    ] {
        match rpc.post("/state/proofs", &body) {
            Err(ClientError::Api { status: 400, .. }) => {}
            other => panic!("{body}: {other:?}"),
        }
    }
    let huge = json!({ "keys": vec![""; 200_000] });
    match rpc.post("/state/proofs", &huge) {
        Err(ClientError::Api { status: 413, .. }) => {}
        other => panic!("a huge body: {other:?}"),
    }

    // An empty chain lists no job, and says the list ends.
    let page = checked(rpc, &doc, "/train/jobs", "/train/jobs");
    assert_eq!((page["jobs"].clone(), page["next"].clone()), (json!([]), Value::Null));
}
