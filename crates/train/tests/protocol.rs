//! The whole protocol on the real ledger (in one process): honest workers train, audit each
//! other, aggregate and get paid; each kind of cheater is caught; no honest worker is ever
//! slashed.

use pazar_train::ops::Threads;
use pazar_train::sim::{self, small_spec};
use pazar_train::worker::Adversary;
use pazar_types::train::{AuditOutcome, JobState};
use pazar_types::Event;

#[test]
fn honest_workers_train_every_round_agree_on_checkpoints_and_are_paid_for_each() {
    let mut s = sim::job(
        small_spec(3, 1000),
        3,
        8 * pazar_train::data::CHUNK_BYTES,
        None,
        4,
        Threads::ONE,
    )
    .expect("sim");
    s.run(400).expect("the job finishes");
    let ev: Vec<Event> = s
        .ledger
        .lock()
        .expect("ledger")
        .events
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        !ev.iter().any(|e| matches!(e, Event::TrainSlashed { .. })),
        "nobody cheated"
    );
    // Every worker is audited every round, and every audit passed: each auditor's replay
    // opened its target's loss seal.
    let outcomes: Vec<AuditOutcome> = ev
        .iter()
        .filter_map(|e| match e {
            Event::TrainAuditSettled { outcome, .. } => Some(*outcome),
            _ => None,
        })
        .collect();
    assert_eq!(outcomes, vec![AuditOutcome::Pass; 12]);
    for (h, _) in &s.workers {
        let paid: Vec<u32> = ev
            .iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, round, .. } if *worker == h.key.address() => Some(*round),
                _ => None,
            })
            .collect();
        assert_eq!(paid, vec![0, 1, 2]);
    }
    let checkpoints: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::TrainCheckpoint { checkpoint, .. } => Some(*checkpoint),
            _ => None,
        })
        .collect();
    assert_eq!(checkpoints.len(), 3);
    // Every worker computed the final checkpoint itself (it voted for it) and holds it.
    for (_, w) in &s.workers {
        assert!(w.checkpoint(&checkpoints[2]).is_some());
    }
    let l = s.ledger.lock().expect("ledger");
    assert_eq!(l.state.train_job(s.job).expect("job").state, JobState::Finished);
}

fn assert_caught(kind: Adversary) {
    let t = sim::trial(kind).expect("the job runs");
    assert!(t.caught(), "{kind:?} was not caught: {:?}", t.slashes());
    assert_eq!(
        t.false_slashes(),
        0,
        "{kind:?}: an honest worker was slashed: {:?}",
        t.slashes()
    );
    for h in &t.honest {
        assert!(
            !t.paid_rounds(h).is_empty(),
            "{kind:?}: an honest worker was never paid"
        );
    }
}

#[test]
fn a_lazy_worker_is_caught() {
    assert_caught(Adversary::Lazy);
}

#[test]
fn a_noise_update_is_caught() {
    assert_caught(Adversary::Noise);
}

#[test]
fn a_sign_flipped_update_is_caught() {
    assert_caught(Adversary::SignFlip);
}

#[test]
fn a_copier_is_caught() {
    assert_caught(Adversary::Copier);
}

#[test]
fn a_stale_worker_is_caught() {
    assert_caught(Adversary::Stale);
}

#[test]
fn a_worker_on_wrong_shards_is_caught() {
    assert_caught(Adversary::WrongShards);
}

#[test]
fn a_perturbation_of_one_part_in_a_million_is_caught() {
    assert_caught(Adversary::Perturb(1e-6));
}

#[test]
fn a_withheld_reveal_costs_the_whole_bond() {
    assert_caught(Adversary::Withhold);
}

#[test]
fn a_worker_that_crashes_mid_round_is_not_paid_and_the_job_goes_on() {
    let t = sim::trial(Adversary::Crash).expect("the job runs");
    assert!(t.caught());
    assert_eq!(t.paid_rounds(&t.cheat), vec![0]);
    assert!(t.slashes().is_empty());
    for h in &t.honest {
        assert_eq!(t.paid_rounds(h), vec![0, 1, 2]);
    }
}

#[test]
fn an_auditor_that_fails_honest_workers_is_overturned_and_slashed_itself() {
    assert_caught(Adversary::FalseAuditor);
}

#[test]
fn an_auditor_that_passes_without_replaying_is_refused_and_paid_nothing_for_it() {
    assert_caught(Adversary::LazyAuditor);
}

#[test]
fn a_worker_whose_loss_seal_no_replay_opens_is_left_out_and_nobody_is_slashed() {
    let t = sim::trial(Adversary::BadSeal).expect("the job runs");
    assert!(t.caught(), "a bad seal was passed: {:?}", t.audits(|_, _| true));
    assert!(t.slashes().is_empty(), "nobody proved a fault: {:?}", t.slashes());
    for h in &t.honest {
        assert_eq!(t.paid_rounds(h), vec![0, 1, 2]);
    }
}

#[test]
fn an_update_nobody_can_fetch_is_left_out_of_the_checkpoint_and_unpaid_and_the_rounds_go_on() {
    let t = sim::trial(Adversary::HideUpdate).expect("the job runs");
    assert!(t.caught(), "a checkpoint used the hidden update");
    assert!(
        t.slashes().is_empty(),
        "withholding an update is not provable: {:?}",
        t.slashes()
    );
    for h in &t.honest {
        assert_eq!(
            t.paid_rounds(h),
            vec![0, 1, 2],
            "every round still produced a checkpoint"
        );
    }
}
