//! The whole protocol on the real ledger (in one process): honest workers train, audit each
//! other, aggregate and get paid; each kind of cheater is caught; no honest worker is ever
//! slashed.

use std::collections::BTreeMap;
use std::time::Duration;

use pazar_train::blobs::FETCH_TIMEOUT;
use pazar_train::ops::Threads;
use pazar_train::sim::{self, small_spec};
use pazar_train::worker::Adversary;
use pazar_types::train::{AuditOutcome, JobState};
use pazar_types::{Address, Event};

/// One vote: the voter, its checkpoint and the updates it left out.
type Vote = (Address, [u8; 32], Vec<Address>);

/// Each round's votes.
fn votes(ev: &[Event]) -> BTreeMap<u32, Vec<Vote>> {
    let mut out: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for e in ev {
        if let Event::TrainCheckpointVoted {
            round,
            worker,
            checkpoint,
            left_out,
            ..
        } = e
        {
            out.entry(*round)
                .or_default()
                .push((*worker, *checkpoint, left_out.clone()));
        }
    }
    out
}

/// Each settled round's checkpoint and the workers it left out as unserved.
fn checkpoints(ev: &[Event]) -> BTreeMap<u32, ([u8; 32], Vec<Address>)> {
    ev.iter()
        .filter_map(|e| match e {
            Event::TrainCheckpoint {
                round,
                checkpoint,
                unserved,
                ..
            } => Some((*round, (*checkpoint, unserved.clone()))),
            _ => None,
        })
        .collect()
}

/// Every one of `honest` voted in each of `rounds` rounds, all for the round's checkpoint with
/// the same left-out set.
fn assert_honest_agree(ev: &[Event], honest: &[Address], rounds: u32) {
    let settled = checkpoints(ev);
    let votes = votes(ev);
    for r in 0..rounds {
        let (checkpoint, unserved) = settled.get(&r).unwrap_or_else(|| panic!("round {r} did not settle"));
        let theirs: Vec<_> = votes
            .get(&r)
            .map(|v| v.iter().filter(|(w, _, _)| honest.contains(w)).collect())
            .unwrap_or_default();
        assert_eq!(theirs.len(), honest.len(), "round {r}: an honest worker did not vote");
        for (w, c, left_out) in theirs {
            assert_eq!((c, left_out), (checkpoint, unserved), "round {r}: {w} voted apart");
        }
    }
}

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
    let t = sim::trial(Adversary::LazyAuditor).expect("the job runs");
    // Paid each round for its own (honest) update only: none of its audits earned anything.
    let paid = t.tokens(&t.cheat);
    assert_eq!(paid.iter().map(|(r, _)| *r).collect::<Vec<_>>(), vec![0, 1, 2]);
    for (round, tokens) in paid {
        assert_eq!(
            u128::from(tokens),
            t.round_tokens,
            "round {round}: the lazy auditor was paid for an audit"
        );
    }
    // An audit does earn tokens (else the check above could not fail): the honest auditors'.
    assert!(t
        .honest
        .iter()
        .any(|h| t.tokens(h).iter().any(|(_, k)| u128::from(*k) > t.round_tokens)));
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
    // The hider earned, each round, exactly what its upheld audits earn: nothing for its update.
    for r in 0..3 {
        let upheld = t
            .events
            .iter()
            .filter(|e| {
                matches!(e, Event::TrainAuditSettled {
                    round,
                    auditor,
                    outcome: AuditOutcome::Pass | AuditOutcome::Caught,
                    ..
                } if *round == r && *auditor == t.cheat)
            })
            .count() as u128;
        let paid = t
            .tokens(&t.cheat)
            .iter()
            .find(|(x, _)| *x == r)
            .map_or(0, |(_, k)| u128::from(*k));
        assert_eq!(
            paid,
            upheld * t.round_tokens,
            "round {r}: the hider was paid for its hidden update"
        );
    }
}

#[test]
fn a_worker_that_serves_its_update_to_one_aggregator_only_cannot_split_the_vote() {
    let t = sim::trial(Adversary::SelectiveServe).expect("the job runs");
    assert!(t.caught(), "a round failed: {:?}", votes(&t.events));
    assert_eq!(t.false_slashes(), 0, "{:?}", t.slashes());
    // The first aggregator to fetch it served it again to the others: every honest vote is
    // the same, and the update is in every checkpoint.
    assert_honest_agree(&t.events, &t.honest, 3);
    for (r, (_, unserved)) in checkpoints(&t.events) {
        assert!(unserved.is_empty(), "round {r} left out {unserved:?}");
    }
    for h in &t.honest {
        assert_eq!(t.paid_rounds(h), vec![0, 1, 2]);
    }
}

#[test]
fn a_peer_that_never_answers_is_left_out_and_every_round_still_settles() {
    // Nobody is audited, so the hanging worker's update reaches the aggregate.
    let mut s = sim::job(
        small_spec(3, 0),
        3,
        8 * pazar_train::data::CHUNK_BYTES,
        None,
        4,
        Threads::ONE,
    )
    .expect("sim");
    s.peers.hang(&sim::worker_uri(0));
    s.run(400).expect("the job finishes");
    let ev: Vec<Event> = s
        .ledger
        .lock()
        .expect("ledger")
        .events
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    let hanging = s.workers[0].0.key.address();
    let honest: Vec<Address> = s.workers[1..].iter().map(|(h, _)| h.key.address()).collect();
    assert_honest_agree(&ev, &honest, 3);
    for (r, (_, unserved)) in checkpoints(&ev) {
        assert_eq!(unserved, vec![hanging], "round {r}");
    }
    assert!(!ev.iter().any(|e| matches!(e, Event::TrainSlashed { .. })));
    let paid = |who: &Address| -> Vec<u32> {
        ev.iter()
            .filter_map(|e| match e {
                Event::TrainRewarded { worker, round, .. } if worker == who => Some(*round),
                _ => None,
            })
            .collect()
    };
    for h in &honest {
        assert_eq!(paid(h), vec![0, 1, 2]);
    }
    assert!(paid(&hanging).is_empty(), "paid for an update nobody could fetch");
    // Each fetch from it waited out a limit the chain's pace set, below the old fixed 60 s.
    let hung = s.peers.hung_limits();
    assert!(!hung.is_empty(), "nobody asked the hanging worker");
    assert!(hung.iter().all(|d| *d < FETCH_TIMEOUT), "{hung:?}");
}

/// Every event of a sim so far.
fn events_of(s: &sim::Sim) -> Vec<Event> {
    s.ledger
        .lock()
        .expect("ledger")
        .events
        .iter()
        .map(|(_, e)| e.clone())
        .collect()
}

/// A block every half second: time spent waiting on a peer costs blocks, as on a chain.
const PACE: Duration = Duration::from_millis(500);

#[test]
fn a_worker_that_hides_its_trace_from_its_auditor_is_reported_unavailable_in_time_and_unpaid() {
    // Its server hangs on the trace: every fetch of it waits out its whole time limit, so a
    // verdict that waited for one more fetch at the end would land after the audit closed.
    let mut s = sim::job(
        small_spec(1, 1000),
        3,
        8 * pazar_train::data::CHUNK_BYTES,
        None,
        4,
        Threads::ONE,
    )
    .expect("sim");
    s.workers[0].1.adversary = Some(Adversary::DodgeAudit);
    s.peers.hang_on_missing(&sim::worker_uri(0));
    s.pace(PACE);
    s.run(200).expect("the job finishes");
    let ev = events_of(&s);
    let cheat = s.workers[0].0.key.address();
    let honest: Vec<Address> = s.workers[1..].iter().map(|(h, _)| h.key.address()).collect();
    let of_cheat: Vec<AuditOutcome> = ev
        .iter()
        .filter_map(|e| match e {
            Event::TrainAuditSettled { target, outcome, .. } if *target == cheat => Some(*outcome),
            _ => None,
        })
        .collect();
    let late = s.ledger.lock().expect("ledger").refused_late.clone();
    assert_eq!(of_cheat, vec![AuditOutcome::Unavailable], "late messages: {late:?}");
    // Not paid for its update: whatever it earned is for audits it ran.
    let upheld = ev
        .iter()
        .filter(|e| {
            matches!(e, Event::TrainAuditSettled {
                auditor,
                outcome: AuditOutcome::Pass | AuditOutcome::Caught,
                ..
            } if *auditor == cheat)
        })
        .count() as u128;
    let paid: u128 = ev
        .iter()
        .filter_map(|e| match e {
            Event::TrainRewarded { worker, tokens, .. } if *worker == cheat => Some(u128::from(*tokens)),
            _ => None,
        })
        .sum();
    assert_eq!(
        paid,
        upheld * s.spec().round_tokens(),
        "paid for a round nobody could audit"
    );
    let (_, unserved) = checkpoints(&ev).get(&0).cloned().expect("round 0 settled");
    assert!(unserved.is_empty(), "{unserved:?}");
    assert!(!ev.iter().any(|e| matches!(e, Event::TrainSlashed { .. })));
    for h in &honest {
        assert!(
            ev.iter()
                .any(|e| matches!(e, Event::TrainRewarded { worker, .. } if worker == h)),
            "an honest worker was not paid"
        );
    }
}

#[test]
fn an_auditor_that_hangs_its_server_cannot_keep_referees_from_overturning_its_false_verdict() {
    // The false auditor's server never answers: referees that asked it before the target for
    // the segment's start would spend the whole answer window on it, and the false verdict
    // would stand undecided (the honest target left out, nobody slashed).
    let mut s = sim::job(
        small_spec(1, 1000),
        3,
        8 * pazar_train::data::CHUNK_BYTES,
        None,
        4,
        Threads::ONE,
    )
    .expect("sim");
    s.workers[0].1.adversary = Some(Adversary::FalseAuditor);
    s.peers.hang(&sim::worker_uri(0));
    s.pace(PACE);
    s.run(200).expect("the job finishes");
    let ev = events_of(&s);
    let cheat = s.workers[0].0.key.address();
    let late = s.ledger.lock().expect("ledger").refused_late.clone();
    let slashed: Vec<_> = ev
        .iter()
        .filter_map(|e| match e {
            Event::TrainSlashed { worker, reason, .. } => Some((*worker, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        slashed,
        vec![(cheat, pazar_types::train::SlashReason::FalseAudit)],
        "late messages: {late:?}"
    );
    let overturned = ev
        .iter()
        .filter(|e| matches!(e, Event::TrainAuditSettled { auditor, outcome: AuditOutcome::Overturned, .. } if *auditor == cheat))
        .count();
    assert_eq!(overturned, 1);
}

#[test]
fn a_selective_server_cannot_split_the_vote_with_a_two_block_aggregate_and_a_member_that_hangs() {
    // Every fetch of the aggregate is a last one (two blocks), and the member with the lowest
    // address (the first an address-ordered fallback would ask) never answers: the other
    // aggregators must still get the selective worker's update from the one it served.
    let mut spec = small_spec(3, 0);
    spec.phases.aggregate = 2;
    let mut s = sim::job(spec, 3, 8 * pazar_train::data::CHUNK_BYTES, None, 5, Threads::ONE).expect("sim");
    s.workers[0].1.adversary = Some(Adversary::SelectiveServe);
    let hanger = (1..s.workers.len())
        .min_by_key(|i| s.workers[*i].0.key.address())
        .expect("workers");
    s.peers.hang(&sim::worker_uri(hanger));
    s.run(400).expect("the job finishes");
    let ev = events_of(&s);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::TrainRoundFailed { .. })),
        "a round failed: {:?}",
        votes(&ev)
    );
    let hanging = s.workers[hanger].0.key.address();
    // The hanging member may be the one the selective worker served (then nobody else can
    // get the update); every other honest aggregator votes the round's checkpoint.
    let others: Vec<Address> = s.workers[1..]
        .iter()
        .map(|(h, _)| h.key.address())
        .filter(|a| *a != hanging)
        .collect();
    assert_honest_agree(&ev, &others, 3);
    for (r, (_, unserved)) in checkpoints(&ev) {
        assert!(unserved.contains(&hanging), "round {r}: {unserved:?}");
    }
}
