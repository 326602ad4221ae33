//! Training jobs: datasets, bonds, rounds, audits, disputes, slashes and rewards. The ledger
//! keeps jobs, bonds and provenance records, never tensors (issue 15).
//!
//! **Money.** A job's budget and every member's bond sit in the `train_escrow` module account;
//! per job `budget = escrow + paid + take + refunded` and the module holds Σ `escrow + bonds`
//! ([`crate::invariants`]). A round that ends with a checkpoint pays `escrow / rounds left`
//! (integer division: the remainder rolls over) in proportion to verified tokens: each
//! included worker `inner_steps × batch × seq_len`, and as much to each auditor per upheld
//! verdict (an audit replays the target's whole round). The lease escrow's take rate of the
//! denomination goes to the fee pool; rounding dust stays in escrow. A slashed bond goes half
//! to the honest side of the audit, the rest to the fee pool (a withheld reveal's all to
//! the fee pool). When the last round settles or the escrow is empty, the rest of the budget
//! goes back to the owner and every bond to its member.
//!
//! **Rounds**, by block height: train → commit → reveal → audit → aggregate. Each phase ends at
//! the end of its deadline height, or earlier: train and commit once every worker of the
//! round committed, reveal once every committer revealed, audit once every assigned audit is
//! posted and no failing verdict can still be disputed or refereed, aggregate once a
//! checkpoint has votes from more than half of the included workers. The next phase's
//! deadline counts from the block its predecessor ended in. Running jobs are indexed by
//! deadline height, so end-of-block work visits only the jobs due in that block.
//!
//! **Audits.** When reveal closes, the beacon (`pazar_types::train::round_beacon`) of the
//! revealed updates draws the audits (`draw_audits`: each worker with the job's
//! `audit_per_mille` chance, copies always). An auditor replays its target's whole round and
//! passes it, or fails it naming the first segment whose end differs, its hash of the state
//! after each step of that segment and the target's trace as fetched. A failing verdict is
//! accepted only as proof against the target's commitment (`check_failing_verdict`): the
//! trace must be the one the target revealed (`trace_root`), and the auditor's segment must end
//! elsewhere than the committed boundary (or, for the compression step, differ from the
//! revealed update and `ef_out`). So a target can always dispute a failing verdict with its own
//! hashes of the same steps, and referees (`draw_referees`) recompute the first step where they
//! differ. An auditor that cannot fetch what the target committed to posts `Unavailable`. See
//! [`State::settle_audits`] for who is slashed, excluded and paid.

use std::collections::BTreeMap;

use pazar_types::train::{
    draw_audits, draw_referees, first_divergence, loss_seal, round_beacon, trace_root, update_commitment, AuditOutcome,
    AuditRecord, AuditSummary, DatasetRecord, DatasetSpec, Dispute, IncludedUpdate, JobSpec, JobState, LeaveReason,
    Member, Phase, RefereeAnswer, Reveal, RevealedUpdate, RoundRecord, RoundWork, SlashReason, TrainJob, Verdict,
    MAX_MISSES,
};
use pazar_types::{Address, Coin, Denom, Event, Hash32};

use crate::error::{TrainError, TxError};
use crate::state::{State, BPS};
use crate::Ctx;

/// `floor(a × b / c)` without intermediate overflow when `b ≤ c`.
fn mul_div_floor(a: u128, b: u128, c: u128) -> u128 {
    debug_assert!(c > 0 && b <= c);
    (a / c) * b + (a % c) * b / c
}

/// Every key of one round's table (work or audits) of `job`.
fn round_keys(job: u64, round: u32) -> std::ops::RangeInclusive<(u64, u32, Address)> {
    (job, round, Address::MIN)..=(job, round, Address::MAX)
}

/// Every member key of `job`.
fn member_keys(job: u64) -> std::ops::RangeInclusive<(u64, Address)> {
    (job, Address::MIN)..=(job, Address::MAX)
}

fn add(a: u128, b: u128) -> Result<u128, TrainError> {
    a.checked_add(b).ok_or(TrainError::Overflow)
}

fn sub(a: u128, b: u128) -> Result<u128, TrainError> {
    a.checked_sub(b).ok_or(TrainError::Overflow)
}

/// Whether a failing verdict on `segment` proves a mismatch with what its target committed
/// (`reveal`), or which rule it breaks: `steps` holds as many hashes as the segment has steps
/// ([`JobSpec::verdict_steps`]); `trace` holds `K + 1` boundary hashes and hashes to the
/// revealed `trace`; a training segment `s < K` ends elsewhere than `trace[s + 1]`, and the
/// compression step (`s == K`) differs from `[update, ef_out]` as revealed. Without the last
/// two, an auditor could fail a worker with its honest hashes, which it could not dispute.
fn check_failing_verdict(
    spec: &JobSpec,
    reveal: &Reveal,
    segment: u32,
    steps: &[Hash32],
    trace: &[Hash32],
) -> Result<(), TrainError> {
    let k = spec.params.segments();
    let want = spec
        .verdict_steps(segment)
        .ok_or(TrainError::NoSuchSegment { got: segment, max: k })?;
    if steps.len() != want {
        return Err(TrainError::VerdictSteps {
            segment,
            want,
            got: steps.len(),
        });
    }
    let want = spec.params.trace_len();
    if trace.len() != want {
        return Err(TrainError::TraceLength { want, got: trace.len() });
    }
    let got = trace_root(trace);
    if got != reveal.trace {
        return Err(TrainError::TraceMismatch {
            committed: reveal.trace,
            got,
        });
    }
    if segment < k {
        // `trace.len() == k + 1`, so the segment's end boundary exists.
        let boundary = trace[segment as usize + 1];
        if steps.last() == Some(&boundary) {
            return Err(TrainError::BoundaryMatches { segment, boundary });
        }
    } else if steps == [reveal.update, reveal.ef_out] {
        return Err(TrainError::CompressionMatches);
    }
    Ok(())
}

impl State {
    // -----------------------------------------------------------------------------------------
    // Queries.

    /// A registered dataset by its root.
    pub fn dataset(&self, root: &Hash32) -> Option<&DatasetRecord> {
        self.datasets.get(root)
    }

    pub fn train_job(&self, job: u64) -> Option<&TrainJob> {
        self.train_jobs.get(&job)
    }

    /// Every job, in id order.
    pub fn train_jobs(&self) -> impl Iterator<Item = (u64, &TrainJob)> {
        self.train_jobs.iter().map(|(id, j)| (*id, j))
    }

    pub fn train_member(&self, job: u64, worker: &Address) -> Option<&Member> {
        self.train_members.get(&(job, *worker))
    }

    /// The members of `job`, in address order.
    pub fn train_members(&self, job: u64) -> impl Iterator<Item = (Address, &Member)> {
        self.train_members.range(member_keys(job)).map(|((_, a), m)| (*a, m))
    }

    /// A worker's part in `job`'s current round (`round` must be it; past rounds are in
    /// [`State::round_record`]).
    pub fn round_work(&self, job: u64, round: u32, worker: &Address) -> Option<&RoundWork> {
        self.train_round_work.get(&(job, round, *worker))
    }

    /// The workers of `job`'s current round, in address order.
    pub fn round_workers(&self, job: u64, round: u32) -> impl Iterator<Item = (Address, &RoundWork)> {
        self.train_round_work
            .range(round_keys(job, round))
            .map(|((_, _, a), w)| (*a, w))
    }

    /// The audits of `job`'s current round by target, in address order.
    pub fn train_audits(&self, job: u64, round: u32) -> impl Iterator<Item = (Address, &AuditRecord)> {
        self.train_audits
            .range(round_keys(job, round))
            .map(|((_, _, a), r)| (*a, r))
    }

    /// The provenance record of the checkpoint round `round` of `job` made.
    pub fn round_record(&self, job: u64, round: u32) -> Option<&RoundRecord> {
        self.train_rounds.get(&(job, round))
    }

    /// Every (job, round) that made `checkpoint`.
    pub fn checkpoint_rounds(&self, checkpoint: &Hash32) -> Vec<(u64, u32)> {
        self.train_checkpoints
            .range((*checkpoint, 0)..=(*checkpoint, u64::MAX))
            .map(|((_, job), round)| (*job, *round))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Helpers.

    fn load_job(&self, job: u64) -> Result<TrainJob, TrainError> {
        self.train_jobs.get(&job).cloned().ok_or(TrainError::JobNotFound(job))
    }

    /// A running job in round `round`, or why not.
    fn running_job(&self, job: u64, round: u32) -> Result<TrainJob, TrainError> {
        let j = self.load_job(job)?;
        if j.state != JobState::Running {
            return Err(TrainError::NotRunning { job, state: j.state });
        }
        if j.round != round {
            return Err(TrainError::WrongRound {
                current: j.round,
                got: round,
            });
        }
        Ok(j)
    }

    /// Saves `j`, moving its deadline index entry: a running job is indexed at its deadline.
    fn save_job(&mut self, id: u64, j: TrainJob) {
        let indexed = |j: &TrainJob| (j.state == JobState::Running).then_some(j.deadline);
        let old = self.train_jobs.get(&id).and_then(indexed);
        let new = indexed(&j);
        if old != new {
            if let Some(h) = old {
                self.train_deadlines.remove(&(h, id));
            }
            if let Some(h) = new {
                self.train_deadlines.insert((h, id), ());
            }
        }
        self.train_jobs.insert(id, j);
    }

    fn pay_from_train_escrow(&mut self, to: Address, amount: u128, denom: &Denom) -> Result<(), TxError> {
        self.transfer(self.train_escrow(), to, &Coin::new(amount, denom.clone()))?;
        Ok(())
    }

    /// Returns a member's whole bond and removes it.
    fn remove_member(
        &mut self,
        id: u64,
        j: &mut TrainJob,
        worker: Address,
        reason: LeaveReason,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Some(m) = self.train_members.remove(&(id, worker)) else {
            return Ok(());
        };
        let denom = j.spec.bond.denom.clone();
        self.pay_from_train_escrow(worker, m.bond, &denom)?;
        j.bonds = sub(j.bonds, m.bond)?;
        j.members = j.members.checked_sub(1).ok_or(TrainError::Overflow)?;
        events.push(Event::TrainMemberLeft {
            job: id,
            worker,
            reason,
            refunded: Coin::new(m.bond, denom),
        });
        Ok(())
    }

    /// Slashes `worker`'s bond (all of it): `rewarded` (half) to `to` when given,
    /// the rest to the fee pool. A member slashed whole is removed from the job.
    fn slash(
        &mut self,
        id: u64,
        j: &mut TrainJob,
        worker: Address,
        reason: SlashReason,
        to: Option<Address>,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let Some(m) = self.train_members.get(&(id, worker)).cloned() else {
            return Ok(());
        };
        // Every slash takes the whole bond. A withheld reveal too: the last worker to reveal can
        // compute the round's audit draw with and without its reveal, so withholding must cost
        // what being caught costs, or a cheater would withhold whenever it is drawn.
        let amount = m.bond;
        let rewarded = if to.is_some() { amount / 2 } else { 0 };
        let pooled = amount - rewarded;
        let denom = j.spec.bond.denom.clone();
        if let Some(t) = to {
            self.pay_from_train_escrow(t, rewarded, &denom)?;
        }
        self.pay_from_train_escrow(self.fee_pool(), pooled, &denom)?;
        j.bonds = sub(j.bonds, amount)?;
        events.push(Event::TrainSlashed {
            job: id,
            round: j.round,
            worker,
            reason,
            amount: Coin::new(amount, denom.clone()),
            to,
            rewarded: Coin::new(rewarded, denom.clone()),
            pooled: Coin::new(pooled, denom.clone()),
        });
        self.train_members.remove(&(id, worker));
        j.members = j.members.checked_sub(1).ok_or(TrainError::Overflow)?;
        events.push(Event::TrainMemberLeft {
            job: id,
            worker,
            reason: LeaveReason::Slashed,
            refunded: Coin::new(0, denom),
        });
        Ok(())
    }

    fn excluded(&mut self, id: u64, round: u32, worker: Address) {
        if let Some(mut w) = self.train_round_work.get(&(id, round, worker)).cloned() {
            w.excluded = true;
            self.train_round_work.insert((id, round, worker), w);
        }
    }

    fn phase_started(id: u64, j: &TrainJob, events: &mut Vec<Event>) {
        events.push(Event::TrainPhaseStarted {
            job: id,
            round: j.round,
            phase: j.phase,
            ends_at: j.deadline,
        });
    }

    // -----------------------------------------------------------------------------------------
    // Messages.

    pub(crate) fn exec_register_dataset(&mut self, ctx: &mut Ctx, spec: &DatasetSpec) -> Result<(), TxError> {
        if self.datasets.contains(&spec.root) {
            return Err(TrainError::DatasetExists(spec.root).into());
        }
        self.datasets.insert(
            spec.root,
            DatasetRecord {
                spec: spec.clone(),
                registrant: ctx.sender,
                height: ctx.height,
            },
        );
        ctx.events.push(Event::DatasetRegistered {
            root: spec.root,
            registrant: ctx.sender,
            chunks: spec.chunks,
        });
        Ok(())
    }

    pub(crate) fn exec_open_job(&mut self, ctx: &mut Ctx, spec: &JobSpec) -> Result<(), TxError> {
        if !self.datasets.contains(&spec.dataset) {
            return Err(TrainError::DatasetNotFound(spec.dataset).into());
        }
        self.transfer(ctx.sender, self.train_escrow(), &spec.budget)?;
        let id = self.train_next_job.get(&()).copied().unwrap_or(0);
        self.train_next_job
            .insert((), id.checked_add(1).ok_or(TrainError::Overflow)?);
        let j = TrainJob {
            owner: ctx.sender,
            spec: spec.clone(),
            state: JobState::Recruiting,
            opened_at: ctx.height,
            round: 0,
            phase: Phase::Train,
            round_start: 0,
            deadline: 0,
            audit_deadline: 0,
            beacon: None,
            checkpoint: spec.init_checkpoint,
            checkpoint_round: None,
            escrow: spec.budget.amount,
            bonds: 0,
            paid: 0,
            take: 0,
            refunded: 0,
            members: 0,
            round_workers: 0,
            committed: 0,
            revealed: 0,
            included: 0,
            rounds_ok: 0,
            rounds_failed: 0,
        };
        self.save_job(id, j);
        ctx.events.push(Event::TrainJobOpened {
            job: id,
            owner: ctx.sender,
            dataset: spec.dataset,
            budget: spec.budget.clone(),
        });
        Ok(())
    }

    pub(crate) fn exec_join_job(&mut self, ctx: &mut Ctx, id: u64, blob_uri: &str) -> Result<(), TxError> {
        let mut j = self.load_job(id)?;
        if matches!(j.state, JobState::Finished | JobState::Cancelled) {
            return Err(TrainError::JobEnded(id).into());
        }
        if !self.providers.contains(&ctx.sender) {
            return Err(TrainError::NotProvider(ctx.sender).into());
        }
        if self.train_members.contains(&(id, ctx.sender)) {
            return Err(TrainError::AlreadyMember(id).into());
        }
        if j.members >= j.spec.max_workers {
            return Err(TrainError::JobFull {
                job: id,
                max: j.spec.max_workers,
            }
            .into());
        }
        self.transfer(ctx.sender, self.train_escrow(), &j.spec.bond)?;
        // A member joining while a round runs takes part from the next one (elastic); one
        // joining in the block that started the round, before its first height, takes part in
        // it, as if the round had started a block later.
        let joins_now = j.state == JobState::Running && ctx.height < j.round_start;
        let active_from = match j.state {
            JobState::Running if !joins_now => j.round.checked_add(1).ok_or(TrainError::Overflow)?,
            _ => j.round,
        };
        if joins_now {
            self.train_round_work
                .insert((id, j.round, ctx.sender), RoundWork::default());
            j.round_workers += 1;
        }
        self.train_members.insert(
            (id, ctx.sender),
            Member {
                bond: j.spec.bond.amount,
                blob_uri: blob_uri.to_string(),
                joined_at: ctx.height,
                active_from,
                ef_out: [0; 32],
                missed: 0,
                audits_missed: 0,
                leaving: false,
            },
        );
        j.members += 1;
        j.bonds = add(j.bonds, j.spec.bond.amount)?;
        ctx.events.push(Event::TrainJoined {
            job: id,
            worker: ctx.sender,
            bond: j.spec.bond.clone(),
            active_from,
        });
        if j.state == JobState::Recruiting && j.members >= j.spec.min_workers {
            self.start_round(id, &mut j, ctx.height, ctx.events)?;
        }
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_leave_job(&mut self, ctx: &mut Ctx, id: u64) -> Result<(), TxError> {
        let mut j = self.load_job(id)?;
        let mut m = self
            .train_members
            .get(&(id, ctx.sender))
            .cloned()
            .ok_or(TrainError::NotMember {
                job: id,
                sender: ctx.sender,
            })?;
        if m.leaving {
            return Err(TrainError::AlreadyLeaving(id).into());
        }
        let in_round = j.state == JobState::Running && self.train_round_work.contains(&(id, j.round, ctx.sender));
        if in_round {
            // Its round may still slash it: the bond comes back when the round settles.
            m.leaving = true;
            self.train_members.insert((id, ctx.sender), m);
        } else {
            self.remove_member(id, &mut j, ctx.sender, LeaveReason::Left, ctx.events)?;
        }
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_commit_update(
        &mut self,
        ctx: &mut Ctx,
        id: u64,
        round: u32,
        commitment: Hash32,
    ) -> Result<(), TxError> {
        let mut j = self.running_job(id, round)?;
        if !matches!(j.phase, Phase::Train | Phase::Commit) {
            return Err(TrainError::WrongPhase {
                phase: j.phase,
                action: "commit an update",
            }
            .into());
        }
        if ctx.height < j.round_start {
            return Err(TrainError::RoundNotStarted { start: j.round_start }.into());
        }
        let key = (id, round, ctx.sender);
        let mut w = self
            .train_round_work
            .get(&key)
            .cloned()
            .ok_or(TrainError::NotInRound(ctx.sender))?;
        if w.commitment.is_some() {
            return Err(TrainError::AlreadyCommitted.into());
        }
        w.commitment = Some(commitment);
        self.train_round_work.insert(key, w);
        j.committed += 1;
        if j.committed == j.round_workers {
            j.deadline = ctx.height;
        }
        ctx.events.push(Event::TrainCommitted {
            job: id,
            round,
            worker: ctx.sender,
            commitment,
        });
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_reveal_update(&mut self, ctx: &mut Ctx, id: u64, round: u32, r: Reveal) -> Result<(), TxError> {
        let mut j = self.job_in_phase(id, round, Phase::Reveal, "reveal an update")?;
        let key = (id, round, ctx.sender);
        let mut w = self
            .train_round_work
            .get(&key)
            .cloned()
            .ok_or(TrainError::NotInRound(ctx.sender))?;
        let commitment = w.commitment.ok_or(TrainError::NotCommitted)?;
        if w.reveal.is_some() {
            return Err(TrainError::AlreadyRevealed.into());
        }
        let opened = update_commitment(id, round, &ctx.sender, &r);
        if opened != commitment {
            return Err(TrainError::CommitmentMismatch(commitment).into());
        }
        let m = self.train_members.get(&(id, ctx.sender)).ok_or(TrainError::NotMember {
            job: id,
            sender: ctx.sender,
        })?;
        if m.ef_out != r.ef_in {
            return Err(TrainError::EfChainBroken {
                expected: m.ef_out,
                got: r.ef_in,
            }
            .into());
        }
        w.reveal = Some(r);
        self.train_round_work.insert(key, w);
        j.revealed += 1;
        if j.revealed == j.committed {
            j.deadline = ctx.height;
        }
        ctx.events.push(Event::TrainRevealed {
            job: id,
            round,
            worker: ctx.sender,
            update: r.update,
            trace: r.trace,
        });
        self.save_job(id, j);
        Ok(())
    }

    /// The running job `id` in `round`, refused unless its round is in `phase`.
    fn job_in_phase(&self, id: u64, round: u32, phase: Phase, action: &'static str) -> Result<TrainJob, TrainError> {
        let j = self.running_job(id, round)?;
        if j.phase != phase {
            return Err(TrainError::WrongPhase { phase: j.phase, action });
        }
        Ok(j)
    }

    fn load_audit(&self, id: u64, round: u32, target: Address) -> Result<AuditRecord, TrainError> {
        self.train_audits
            .get(&(id, round, target))
            .cloned()
            .ok_or(TrainError::NoAssignment(target))
    }

    pub(crate) fn exec_post_audit(
        &mut self,
        ctx: &mut Ctx,
        id: u64,
        round: u32,
        target: Address,
        verdict: &Verdict,
    ) -> Result<(), TxError> {
        let mut j = self.job_in_phase(id, round, Phase::Audit, "post an audit")?;
        if ctx.height > j.audit_deadline {
            return Err(TrainError::AuditClosed(j.audit_deadline).into());
        }
        let mut a = self.load_audit(id, round, target)?;
        if a.auditor != ctx.sender {
            return Err(TrainError::NotAuditor(a.auditor).into());
        }
        if a.verdict.is_some() {
            return Err(TrainError::AlreadyPosted.into());
        }
        // Audits are drawn from revealed workers only, and a round's work stays until it
        // settles.
        let reveal = self
            .train_round_work
            .get(&(id, round, target))
            .and_then(|w| w.reveal)
            .ok_or(TrainError::NoAssignment(target))?;
        match verdict {
            Verdict::Fail { segment, steps, trace } => check_failing_verdict(&j.spec, &reveal, *segment, steps, trace)?,
            // A pass must show the replay was done: only the round's loss digest opens the seal.
            Verdict::Pass { digest } if loss_seal(id, round, &target, digest) != reveal.seal => {
                return Err(TrainError::SealNotOpened(target).into())
            }
            Verdict::Pass { .. } | Verdict::Unavailable => {}
        }
        a.verdict = Some(verdict.clone());
        a.posted_at = Some(ctx.height);
        self.train_audits.insert((id, round, target), a);
        ctx.events.push(Event::TrainAuditPosted {
            job: id,
            round,
            target,
            auditor: ctx.sender,
            verdict: verdict.clone(),
        });
        j.deadline = self.audit_ends_at(id, &j).max(ctx.height);
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_dispute_audit(
        &mut self,
        ctx: &mut Ctx,
        id: u64,
        round: u32,
        steps: &[Hash32],
    ) -> Result<(), TxError> {
        let mut j = self.job_in_phase(id, round, Phase::Audit, "dispute an audit")?;
        let target = ctx.sender;
        let mut a = self.load_audit(id, round, target)?;
        let Some(Verdict::Fail {
            steps: theirs,
            segment,
            trace,
        }) = &a.verdict
        else {
            return Err(TrainError::NotFailed.into());
        };
        // The target stands by its own commitment: its hashes end at its trace's boundary (a
        // training segment) or at its revealed update and ef_out (the compression step).
        // Anything else disputes what it committed to, not what the auditor claimed.
        let reveal = self
            .round_work(id, round, &target)
            .and_then(|w| w.reveal)
            .ok_or(TrainError::NotFailed)?;
        let own_end_ok = if *segment < j.spec.params.segments() {
            steps.last() == trace.get(*segment as usize + 1)
        } else {
            steps == [reveal.update, reveal.ef_out]
        };
        if a.dispute.is_some() {
            return Err(TrainError::AlreadyDisputed.into());
        }
        let until = a
            .posted_at
            .unwrap_or(0)
            .saturating_add(u64::from(j.spec.phases.dispute));
        if ctx.height > until {
            return Err(TrainError::WindowClosed(until).into());
        }
        if steps.len() != theirs.len() {
            return Err(TrainError::StepsLength {
                want: theirs.len(),
                got: steps.len(),
            }
            .into());
        }
        let index = first_divergence(theirs, steps).ok_or(TrainError::NothingToDispute)?;
        if !own_end_ok {
            return Err(TrainError::DisputeContradictsCommitment.into());
        }
        let candidates: Vec<Address> = self
            .round_workers(id, round)
            .filter(|(w, work)| work.reveal.is_some() && *w != target && *w != a.auditor)
            .map(|(w, _)| w)
            .collect();
        let beacon = j.beacon.unwrap_or([0; 32]);
        let referees = draw_referees(&beacon, &target, &candidates, j.spec.referees);
        ctx.events.push(Event::TrainDisputed {
            job: id,
            round,
            target,
            auditor: a.auditor,
            index: index as u32,
            referees: referees.clone(),
        });
        a.dispute = Some(Dispute {
            steps: steps.to_vec(),
            index: index as u32,
            opened_at: ctx.height,
            referees,
            answers: Vec::new(),
        });
        self.train_audits.insert((id, round, target), a);
        j.deadline = self.audit_ends_at(id, &j).max(ctx.height);
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_post_referee(
        &mut self,
        ctx: &mut Ctx,
        id: u64,
        round: u32,
        target: Address,
        hash: Hash32,
    ) -> Result<(), TxError> {
        let mut j = self.job_in_phase(id, round, Phase::Audit, "referee a dispute")?;
        let mut a = self.load_audit(id, round, target)?;
        let d = a.dispute.as_mut().ok_or(TrainError::NoDispute(target))?;
        if !d.referees.contains(&ctx.sender) {
            return Err(TrainError::NotReferee(ctx.sender).into());
        }
        if d.answers.iter().any(|x| x.referee == ctx.sender) {
            return Err(TrainError::AlreadyPosted.into());
        }
        let until = d.opened_at.saturating_add(u64::from(j.spec.phases.dispute));
        if ctx.height > until {
            return Err(TrainError::WindowClosed(until).into());
        }
        d.answers.push(RefereeAnswer {
            referee: ctx.sender,
            hash,
        });
        self.train_audits.insert((id, round, target), a);
        ctx.events.push(Event::TrainRefereePosted {
            job: id,
            round,
            target,
            referee: ctx.sender,
            hash,
        });
        j.deadline = self.audit_ends_at(id, &j).max(ctx.height);
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_post_checkpoint(
        &mut self,
        ctx: &mut Ctx,
        id: u64,
        round: u32,
        checkpoint: Hash32,
        left_out: &[Address],
    ) -> Result<(), TxError> {
        let mut j = self.job_in_phase(id, round, Phase::Aggregate, "vote for a checkpoint")?;
        // One form per set, so equal sets are equal votes (decoding checks it too; this holds
        // for every path into the state).
        if left_out.windows(2).any(|w| w[0] >= w[1]) {
            return Err(TrainError::LeftOutOrder.into());
        }
        // Only another included worker's update can be left out (the voter has its own).
        for who in left_out {
            let included = self
                .train_round_work
                .get(&(id, round, *who))
                .is_some_and(|w| w.reveal.is_some() && !w.excluded);
            if *who == ctx.sender || !included {
                return Err(TrainError::NotLeavable(*who).into());
            }
        }
        let key = (id, round, ctx.sender);
        let mut w = self
            .train_round_work
            .get(&key)
            .cloned()
            .ok_or(TrainError::NotInRound(ctx.sender))?;
        if w.reveal.is_none() || w.excluded {
            return Err(TrainError::NotIncluded.into());
        }
        if w.vote.is_some() {
            return Err(TrainError::AlreadyVoted.into());
        }
        w.vote = Some(checkpoint);
        w.left_out = left_out.to_vec();
        self.train_round_work.insert(key, w);
        let votes = self
            .round_workers(id, round)
            .filter(|(_, w)| w.vote == Some(checkpoint) && w.left_out == left_out)
            .count();
        if 2 * votes > usize::from(j.included) {
            j.deadline = ctx.height;
        }
        ctx.events.push(Event::TrainCheckpointVoted {
            job: id,
            round,
            worker: ctx.sender,
            checkpoint,
            left_out: left_out.to_vec(),
        });
        self.save_job(id, j);
        Ok(())
    }

    pub(crate) fn exec_cancel_job(&mut self, ctx: &mut Ctx, id: u64) -> Result<(), TxError> {
        let mut j = self.load_job(id)?;
        if j.owner != ctx.sender {
            return Err(TrainError::NotOwner {
                job: id,
                sender: ctx.sender,
            }
            .into());
        }
        if j.state != JobState::Recruiting {
            return Err(TrainError::NotRecruiting {
                job: id,
                state: j.state,
            }
            .into());
        }
        self.end_job(id, &mut j, true, ctx.events)?;
        self.save_job(id, j);
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Rounds.

    /// Starts round `j.round` at `height + 1` with every member whose `active_from` has come,
    /// or sends the job back to recruiting when they are fewer than `min_workers`.
    fn start_round(&mut self, id: u64, j: &mut TrainJob, height: u64, events: &mut Vec<Event>) -> Result<(), TxError> {
        let workers: Vec<Address> = self
            .train_members(id)
            .filter(|(_, m)| m.active_from <= j.round && !m.leaving)
            .map(|(a, _)| a)
            .collect();
        if workers.len() < usize::from(j.spec.min_workers) {
            j.state = JobState::Recruiting;
            events.push(Event::TrainJobWaiting {
                job: id,
                round: j.round,
            });
            return Ok(());
        }
        for w in &workers {
            self.train_round_work.insert((id, j.round, *w), RoundWork::default());
        }
        j.state = JobState::Running;
        j.phase = Phase::Train;
        j.round_start = height + 1;
        j.deadline = height + u64::from(j.spec.phases.train);
        j.audit_deadline = 0;
        j.beacon = None;
        j.round_workers = workers.len() as u16;
        j.committed = 0;
        j.revealed = 0;
        j.included = 0;
        events.push(Event::TrainRoundStarted {
            job: id,
            round: j.round,
            start: j.round_start,
            train_ends: j.deadline,
            checkpoint: j.checkpoint,
            workers,
        });
        Ok(())
    }

    /// End-of-block: moves every job whose phase ends in this block.
    pub(crate) fn process_training(&mut self, events: &mut Vec<Event>) {
        let height = self.height;
        let due: Vec<u64> = self
            .train_deadlines
            .range(..=(height, u64::MAX))
            .map(|((_, job), ())| *job)
            .collect();
        for id in due {
            let mark = events.len();
            match self.advance_job(id, height, events) {
                Ok(()) => self.commit(),
                Err(_) => {
                    // Cannot happen for a consistent state; the job's index entry stays
                    // overdue, which the invariant checks in tests flag.
                    self.rollback();
                    events.truncate(mark);
                }
            }
        }
    }

    /// Phases of one round that end at `height`, in order (several may, e.g. an audit phase
    /// with no audit). Bounded: a round has five phases, and the next round's train phase
    /// lasts at least a block.
    fn advance_job(&mut self, id: u64, height: u64, events: &mut Vec<Event>) -> Result<(), TxError> {
        let mut j = self.load_job(id)?;
        for _ in 0..8 {
            if j.state != JobState::Running || j.deadline > height {
                break;
            }
            self.advance_phase(id, &mut j, height, events)?;
        }
        self.save_job(id, j);
        Ok(())
    }

    fn advance_phase(
        &mut self,
        id: u64,
        j: &mut TrainJob,
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        match j.phase {
            Phase::Train if j.committed < j.round_workers => {
                j.phase = Phase::Commit;
                j.deadline = height + u64::from(j.spec.phases.commit);
                Self::phase_started(id, j, events);
            }
            Phase::Train | Phase::Commit => {
                j.phase = Phase::Reveal;
                j.deadline = height + u64::from(j.spec.phases.reveal);
                Self::phase_started(id, j, events);
                if j.committed == 0 {
                    j.deadline = height;
                }
            }
            Phase::Reveal => self.close_reveal(id, j, height, events)?,
            Phase::Audit => {
                let ends = self.audit_ends_at(id, j);
                if ends > height {
                    j.deadline = ends;
                } else {
                    self.settle_audits(id, j, height, events)?;
                }
            }
            Phase::Aggregate => self.settle_round(id, j, height, events)?,
        }
        Ok(())
    }

    /// Reveal closed: a committer that did not reveal loses its whole bond and is
    /// excluded; the beacon of the revealed updates draws the audits.
    fn close_reveal(&mut self, id: u64, j: &mut TrainJob, height: u64, events: &mut Vec<Event>) -> Result<(), TxError> {
        let round = j.round;
        let works: Vec<(Address, RoundWork)> = self.round_workers(id, round).map(|(a, w)| (a, w.clone())).collect();
        let mut revealed = Vec::new();
        for (worker, w) in &works {
            match (&w.commitment, &w.reveal) {
                (Some(_), None) => {
                    self.slash(id, j, *worker, SlashReason::WithheldReveal, None, events)?;
                    self.excluded(id, round, *worker);
                }
                (_, Some(r)) => revealed.push(RevealedUpdate {
                    worker: *worker,
                    update: r.update,
                    trace: r.trace,
                }),
                (None, None) => {}
            }
        }
        let beacon = round_beacon(id, round, &revealed);
        let audits = draw_audits(&beacon, &revealed, j.spec.audit_per_mille);
        for a in &audits {
            self.train_audits.insert(
                (id, round, a.target),
                AuditRecord {
                    auditor: a.auditor,
                    verdict: None,
                    posted_at: None,
                    dispute: None,
                    outcome: None,
                },
            );
        }
        j.beacon = Some(beacon);
        events.push(Event::TrainAuditsAssigned {
            job: id,
            round,
            beacon,
            audits: audits.clone(),
        });
        j.phase = Phase::Audit;
        j.audit_deadline = height + u64::from(j.spec.phases.audit);
        j.deadline = j.audit_deadline;
        Self::phase_started(id, j, events);
        if audits.is_empty() {
            j.deadline = height;
        }
        Ok(())
    }

    /// The first height at whose end the audit phase may end, given what is posted: the audit
    /// deadline while an assigned audit is missing, a failing verdict's dispute window while it
    /// is undisputed, a dispute's referee window while an answer is missing. 0: now.
    fn audit_ends_at(&self, id: u64, j: &TrainJob) -> u64 {
        let window = u64::from(j.spec.phases.dispute);
        self.train_audits(id, j.round)
            .map(|(_, a)| match (&a.verdict, &a.dispute) {
                (None, _) => j.audit_deadline,
                (Some(Verdict::Pass { .. } | Verdict::Unavailable), _) => 0,
                (Some(Verdict::Fail { .. }), None) => a.posted_at.unwrap_or(0).saturating_add(window),
                (Some(Verdict::Fail { .. }), Some(d)) if d.answers.len() < d.referees.len() => {
                    d.opened_at.saturating_add(window)
                }
                (Some(Verdict::Fail { .. }), Some(_)) => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// Settles every audit of the round:
    /// - no verdict: the auditor is not paid for it and its `audits_missed` grows; no slash;
    /// - `Pass`: nothing happens (the auditor is paid for the round it replayed);
    /// - `Unavailable`: the target is excluded, nobody is slashed and the auditor is not paid
    ///   (the ledger cannot tell who withheld the data; the auditor gains nothing by the claim);
    /// - `Fail` undisputed: the target loses its whole bond (half to the auditor) and is
    ///   excluded;
    /// - `Fail` disputed: more than half of the drawn referees posting the target's hash of
    ///   the first differing step → the auditor loses its whole bond (half to the target) and
    ///   its own update is excluded; more than half posting the auditor's → as undisputed;
    ///   otherwise (or with no referee) the target is excluded, nobody is slashed and the
    ///   auditor is not paid.
    fn settle_audits(
        &mut self,
        id: u64,
        j: &mut TrainJob,
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let round = j.round;
        let audits: Vec<(Address, AuditRecord)> = self.train_audits(id, round).map(|(t, a)| (t, a.clone())).collect();
        for (target, mut a) in audits {
            let outcome = match (&a.verdict, &a.dispute) {
                (None, _) => {
                    if let Some(mut m) = self.train_members.get(&(id, a.auditor)).cloned() {
                        m.audits_missed = m.audits_missed.saturating_add(1);
                        self.train_members.insert((id, a.auditor), m);
                    }
                    AuditOutcome::Missing
                }
                (Some(Verdict::Pass { .. }), _) => AuditOutcome::Pass,
                (Some(Verdict::Unavailable), _) => AuditOutcome::Unavailable,
                (Some(Verdict::Fail { .. }), None) => AuditOutcome::Caught,
                (Some(Verdict::Fail { steps, .. }), Some(d)) => {
                    let i = d.index as usize;
                    let theirs = d.steps.get(i);
                    let auditors = steps.get(i);
                    let count = |h: Option<&Hash32>| d.answers.iter().filter(|x| Some(&x.hash) == h).count();
                    let m = d.referees.len();
                    if 2 * count(theirs) > m {
                        AuditOutcome::Overturned
                    } else if 2 * count(auditors) > m {
                        AuditOutcome::Caught
                    } else {
                        AuditOutcome::Undecided
                    }
                }
            };
            match outcome {
                AuditOutcome::Caught => {
                    self.slash(id, j, target, SlashReason::FailedAudit, Some(a.auditor), events)?;
                    self.excluded(id, round, target);
                }
                AuditOutcome::Overturned => {
                    self.slash(id, j, a.auditor, SlashReason::FalseAudit, Some(target), events)?;
                    self.excluded(id, round, a.auditor);
                }
                AuditOutcome::Undecided | AuditOutcome::Unavailable => self.excluded(id, round, target),
                AuditOutcome::Missing | AuditOutcome::Pass => {}
            }
            events.push(Event::TrainAuditSettled {
                job: id,
                round,
                target,
                auditor: a.auditor,
                outcome,
            });
            a.outcome = Some(outcome);
            self.train_audits.insert((id, round, target), a);
        }
        let included = self
            .round_workers(id, round)
            .filter(|(_, w)| w.reveal.is_some() && !w.excluded)
            .count();
        j.included = included as u16;
        j.phase = Phase::Aggregate;
        j.deadline = height + u64::from(j.spec.phases.aggregate);
        Self::phase_started(id, j, events);
        if included == 0 {
            j.deadline = height;
        }
        Ok(())
    }

    /// Aggregate closed: with a checkpoint voted by more than half of the included workers, the
    /// round's budget is paid and its provenance recorded; without, the round fails. Then
    /// commitments are counted (three misses in a row remove a member), leavers get their
    /// bonds, and the next round starts or the job ends.
    fn settle_round(&mut self, id: u64, j: &mut TrainJob, height: u64, events: &mut Vec<Event>) -> Result<(), TxError> {
        let round = j.round;
        let works: Vec<(Address, RoundWork)> = self.round_workers(id, round).map(|(a, w)| (a, w.clone())).collect();
        let audits: Vec<(Address, AuditRecord)> = self.train_audits(id, round).map(|(t, a)| (t, a.clone())).collect();
        let included: Vec<(Address, Reveal)> = works
            .iter()
            .filter(|(_, w)| !w.excluded)
            .filter_map(|(a, w)| w.reveal.map(|r| (*a, r)))
            .collect();
        // A vote is its checkpoint and the updates it left out: the majority's set is the round's.
        let mut tally: BTreeMap<(Hash32, &[Address]), usize> = BTreeMap::new();
        for (_, w) in &works {
            if let (Some(v), Some(_), false) = (w.vote, w.reveal, w.excluded) {
                *tally.entry((v, w.left_out.as_slice())).or_default() += 1;
            }
        }
        let winner = tally
            .into_iter()
            .find(|(_, n)| 2 * n > included.len())
            .map(|((h, left_out), _)| (h, left_out.to_vec()));
        match winner {
            Some((checkpoint, unserved)) => {
                let used: Vec<(Address, Reveal)> = included
                    .iter()
                    .filter(|(a, _)| !unserved.contains(a))
                    .copied()
                    .collect();
                self.pay_round(id, j, checkpoint, &used, &unserved, &audits, height, events)?
            }
            None => {
                j.rounds_failed += 1;
                events.push(Event::TrainRoundFailed { job: id, round });
            }
        }
        for (worker, w) in &works {
            let Some(mut m) = self.train_members.get(&(id, *worker)).cloned() else {
                continue;
            };
            if w.commitment.is_some() {
                m.missed = 0;
            } else {
                m.missed = m.missed.saturating_add(1);
            }
            let (leaving, missed) = (m.leaving, m.missed);
            self.train_members.insert((id, *worker), m);
            if leaving {
                self.remove_member(id, j, *worker, LeaveReason::Left, events)?;
            } else if missed >= MAX_MISSES {
                self.remove_member(id, j, *worker, LeaveReason::Missed, events)?;
            }
        }
        for (worker, _) in &works {
            self.train_round_work.remove(&(id, round, *worker));
        }
        for (target, _) in &audits {
            self.train_audits.remove(&(id, round, *target));
        }
        j.round = round.checked_add(1).ok_or(TrainError::Overflow)?;
        if j.round >= j.spec.rounds || j.escrow == 0 {
            self.end_job(id, j, false, events)
        } else {
            self.start_round(id, j, height, events)
        }
    }

    /// Pays the round's budget (`escrow / rounds left`) for verified tokens and records the
    /// checkpoint's provenance.
    #[allow(clippy::too_many_arguments)]
    fn pay_round(
        &mut self,
        id: u64,
        j: &mut TrainJob,
        checkpoint: Hash32,
        included: &[(Address, Reveal)],
        unserved: &[Address],
        audits: &[(Address, AuditRecord)],
        height: u64,
        events: &mut Vec<Event>,
    ) -> Result<(), TxError> {
        let round = j.round;
        let rounds_left = u128::from(j.spec.rounds.saturating_sub(round).max(1));
        let budget = j.escrow / rounds_left;
        // Tokens per account, in address order; members slashed out of the job earn nothing.
        let mut tokens: BTreeMap<Address, u128> = BTreeMap::new();
        for (worker, _) in included {
            if self.train_members.contains(&(id, *worker)) {
                *tokens.entry(*worker).or_default() += j.spec.round_tokens();
            }
        }
        for (_, a) in audits {
            let upheld = matches!(a.outcome, Some(AuditOutcome::Pass | AuditOutcome::Caught));
            if upheld && self.train_members.contains(&(id, a.auditor)) {
                *tokens.entry(a.auditor).or_default() += j.spec.round_tokens();
            }
        }
        // A worker left out as unavailable or undecided keeps its share in the escrow (it rolls
        // over to later rounds): excluding someone must not raise the others' pay, or an
        // auditor would gain by claiming its target unavailable.
        let withheld = audits
            .iter()
            .filter(|(_, a)| matches!(a.outcome, Some(AuditOutcome::Unavailable | AuditOutcome::Undecided)))
            .count() as u128
            * j.spec.round_tokens()
            // So does the share of an update the majority could not fetch.
            + unserved.len() as u128 * j.spec.round_tokens();
        let total: u128 = tokens.values().sum::<u128>() + withheld;
        let denom = j.spec.budget.denom.clone();
        let take_bps = u128::from(self.params.denom(&denom).map_or(0, |d| d.take_bps));
        if total > 0 {
            for (worker, t) in &tokens {
                let gross = mul_div_floor(budget, *t, total);
                let take = mul_div_floor(gross, take_bps, BPS);
                let paid = gross - take;
                self.pay_from_train_escrow(*worker, paid, &denom)?;
                self.pay_from_train_escrow(self.fee_pool(), take, &denom)?;
                j.escrow = sub(j.escrow, gross)?;
                j.paid = add(j.paid, paid)?;
                j.take = add(j.take, take)?;
                events.push(Event::TrainRewarded {
                    job: id,
                    round,
                    worker: *worker,
                    tokens: u64::try_from(*t).unwrap_or(u64::MAX),
                    paid: Coin::new(paid, denom.clone()),
                    take: Coin::new(take, denom.clone()),
                });
            }
        }
        for (worker, r) in included {
            if let Some(mut m) = self.train_members.get(&(id, *worker)).cloned() {
                m.ef_out = r.ef_out;
                self.train_members.insert((id, *worker), m);
            }
        }
        let record = RoundRecord {
            job: id,
            round,
            checkpoint,
            previous: j.checkpoint,
            previous_round: j.checkpoint_round,
            dataset: j.spec.dataset,
            included: included
                .iter()
                .map(|(worker, r)| IncludedUpdate {
                    worker: *worker,
                    update: r.update,
                    trace: r.trace,
                })
                .collect(),
            unserved: unserved.to_vec(),
            audits: audits
                .iter()
                .map(|(target, a)| AuditSummary {
                    target: *target,
                    auditor: a.auditor,
                    outcome: a.outcome.unwrap_or(AuditOutcome::Missing),
                })
                .collect(),
            height,
        };
        self.train_rounds.insert((id, round), record);
        self.train_checkpoints.insert((checkpoint, id), round);
        events.push(Event::TrainCheckpoint {
            job: id,
            round,
            checkpoint,
            previous: j.checkpoint,
            included: included.len() as u16,
            unserved: unserved.to_vec(),
        });
        j.checkpoint = checkpoint;
        j.checkpoint_round = Some(round);
        j.rounds_ok += 1;
        Ok(())
    }

    /// Ends a job: the rest of the budget to the owner, every bond to its member.
    fn end_job(&mut self, id: u64, j: &mut TrainJob, cancelled: bool, events: &mut Vec<Event>) -> Result<(), TxError> {
        let denom = j.spec.budget.denom.clone();
        let refund = j.escrow;
        self.pay_from_train_escrow(j.owner, refund, &denom)?;
        j.refunded = add(j.refunded, refund)?;
        j.escrow = 0;
        let members: Vec<Address> = self.train_members(id).map(|(a, _)| a).collect();
        for m in members {
            self.remove_member(id, j, m, LeaveReason::JobEnded, events)?;
        }
        j.state = if cancelled {
            JobState::Cancelled
        } else {
            JobState::Finished
        };
        events.push(Event::TrainJobEnded {
            job: id,
            cancelled,
            refunded: Coin::new(refund, denom),
        });
        Ok(())
    }
}
