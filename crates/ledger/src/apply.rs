//! Block application: decode, verify every signature in one batch, run each transaction
//! atomically, then the end-of-block work (escrow depletion, auto-accept, expiry of bids and orders).

use pazar_types::market::GroupState;
use pazar_types::{tx_hash, verify_signatures, Address, Coin, Event, Hash32, Msg, SignatureError, Tx};

use crate::error::{AuthError, BankError, BlockError, TxError};
use crate::state::{Account, State};
use crate::{BlockHeader, BlockOutcome, Ctx, Receipt};

/// A transaction decoded and hashed once, ready for signature checks.
struct Prepared {
    tx: Tx,
    digest: Hash32,
}

/// A transaction's id and, when its bytes decode, the decoded transaction.
///
/// The id is hashed here, in the pass that decodes and digests the same bytes: hashed later, in
/// the loop that runs the transactions, the bytes have been pushed out of the cache by the
/// block's signature check and are read from memory a second time.
fn prepare(bytes: &[u8]) -> (Hash32, Result<Prepared, AuthError>) {
    let hash = tx_hash(bytes);
    let prepared = Tx::decode_with_digest(bytes)
        .map(|(tx, digest)| Prepared { tx, digest })
        .map_err(AuthError::from);
    (hash, prepared)
}

/// Verifies every signature of a block with the ledger's one rule
/// ([`pazar_types::verify_signatures`]: the signature verifies and the key is the sender's;
/// ed25519 in one batch with coefficients derived from the batch itself, so the ledger stays
/// free of ambient randomness). `preverified[i]` skips transaction `i`: see
/// [`State::apply_block_preverified`] for when a caller may say so.
fn verify_block(
    prepared: &[(Hash32, Result<Prepared, AuthError>)],
    preverified: &[bool],
) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Result<(), SignatureError>> = vec![Ok(()); prepared.len()];
    let mut todo = Vec::with_capacity(prepared.len());
    let mut items = Vec::with_capacity(prepared.len());
    for (i, (_, p)) in prepared.iter().enumerate() {
        // Decode errors are reported separately.
        let Ok(p) = p else { continue };
        if preverified.get(i).copied().unwrap_or(false) {
            continue;
        }
        todo.push(i);
        items.push((&p.tx, &p.digest));
    }
    for (i, r) in todo.into_iter().zip(verify_signatures(&items)) {
        results[i] = r;
    }
    results
}

impl State {
    /// Applies a block: `(state, header, txs) → (state', receipts, events)`. A block with the
    /// wrong chain or height is refused whole. Within a block, a transaction that fails
    /// authentication changes nothing; one whose messages fail pays its fee, uses its sequence
    /// and changes nothing else.
    pub fn apply_block(&mut self, header: &BlockHeader, txs: &[Vec<u8>]) -> Result<BlockOutcome, BlockError> {
        self.apply_block_preverified(header, txs, &[])
    }

    /// [`State::apply_block`] where `preverified[i]` says the caller has already checked the
    /// signature of exactly the bytes `txs[i]` with the same rule
    /// ([`pazar_types::verify_signatures`] or [`Tx::verify_signature_with`]: valid signature
    /// *and* the sender's key), as a node's mempool does on entry, so it is not checked twice.
    /// Signature validity is a pure function of the bytes: the result is the same. A block
    /// proposed by anyone else must be applied with no transaction marked.
    pub fn apply_block_preverified(
        &mut self,
        header: &BlockHeader,
        txs: &[Vec<u8>],
        preverified: &[bool],
    ) -> Result<BlockOutcome, BlockError> {
        self.check_block_header(header)?;
        self.height = header.height;
        let receipts = self.deliver_all(txs, preverified);
        let events = self.end_block();
        Ok(BlockOutcome {
            receipts,
            end_block_events: events,
        })
    }

    /// The receipts `txs` would get as the first transactions of the block `header` names,
    /// changing nothing: the transactions run on this state under a savepoint, which is then
    /// undone (see [`State::apply_block_preverified`] for `preverified`). The end-of-block work
    /// is not run; it comes after every transaction and cannot change their receipts. The cost
    /// is the transactions' own work, whatever the size of the state, so a node can answer
    /// "would this succeed?" without copying its state. Refused whole like a block.
    pub fn simulate_txs(
        &mut self,
        header: &BlockHeader,
        txs: &[Vec<u8>],
        preverified: &[bool],
    ) -> Result<Vec<Receipt>, BlockError> {
        self.check_block_header(header)?;
        Ok(self.under_savepoint(|st| {
            st.height = header.height;
            st.deliver_all(txs, preverified)
        }))
    }

    fn check_block_header(&self, header: &BlockHeader) -> Result<(), BlockError> {
        if header.chain_id != self.chain_id {
            return Err(BlockError::WrongChain {
                expected: self.chain_id.clone(),
                got: header.chain_id.clone(),
            });
        }
        if header.height != self.height + 1 {
            return Err(BlockError::WrongHeight {
                current: self.height,
                got: header.height,
            });
        }
        Ok(())
    }

    /// Decodes, verifies and runs each transaction in order, one receipt each.
    fn deliver_all(&mut self, txs: &[Vec<u8>], preverified: &[bool]) -> Vec<Receipt> {
        let prepared: Vec<(Hash32, Result<Prepared, AuthError>)> = txs.iter().map(|b| prepare(b)).collect();
        let sigs = verify_block(&prepared, preverified);
        let mut receipts = Vec::with_capacity(txs.len());
        // By reference: a decoded transaction is a few hundred bytes, not worth moving around.
        for ((hash, p), sig) in prepared.iter().zip(sigs) {
            let hash = *hash;
            let receipt = match (p, sig) {
                (Ok(p), Ok(())) => self.deliver(hash, &p.tx),
                (Err(e), _) => failed(hash, &TxError::from(e.clone()), None, Vec::new()),
                (Ok(_), Err(e)) => failed(hash, &TxError::from(AuthError::from(e)), None, Vec::new()),
            };
            receipts.push(receipt);
        }
        receipts
    }

    /// Runs one authenticated transaction.
    fn deliver(&mut self, hash: Hash32, tx: &Tx) -> Receipt {
        let body = &tx.body;
        // The fee is taken as the last check of authentication: it fails, changing nothing,
        // exactly when the sender cannot pay it.
        if let Err(e) = self.check_auth(tx).and_then(|()| self.pay_fee(body.sender, &body.fee)) {
            return failed(hash, &e.into(), None, Vec::new());
        }
        // Fee and sequence are final whatever the messages do.
        let mut events = Vec::new();
        self.accounts.insert(
            body.sender,
            Account {
                sequence: body.sequence + 1,
            },
        );
        events.push(Event::FeePaid {
            payer: body.sender,
            amount: body.fee.clone(),
        });
        self.commit();
        let mut ctx = Ctx {
            height: self.height,
            sender: body.sender,
            events: &mut events,
        };
        let result = body.msgs.iter().try_for_each(|m| self.execute(&mut ctx, m));
        match result {
            Ok(()) => {
                self.commit();
                Receipt {
                    tx_hash: hash,
                    code: 0,
                    codespace: String::new(),
                    log: String::new(),
                    fee: Some(body.fee.clone()),
                    events,
                }
            }
            Err(e) => {
                self.rollback();
                events.truncate(1);
                failed(hash, &e, Some(body.fee.clone()), events)
            }
        }
    }

    /// Every check of authentication but the fee's payment, which [`State::pay_fee`] makes
    /// as it takes the fee (reading the sender's balance once).
    fn check_auth(&self, tx: &Tx) -> Result<(), AuthError> {
        let body = &tx.body;
        if body.chain_id != self.chain_id {
            return Err(AuthError::WrongChain {
                expected: self.chain_id.clone(),
                got: body.chain_id.clone(),
            });
        }
        let expected = self.accounts.get(&body.sender).map_or(0, |a| a.sequence);
        if body.sequence != expected {
            return Err(AuthError::WrongSequence {
                expected,
                got: body.sequence,
            });
        }
        let dp = self
            .params
            .denom(&body.fee.denom)
            .ok_or_else(|| AuthError::FeeDenom(body.fee.denom.clone()))?;
        let min = dp.min_fee_per_msg.saturating_mul(body.msgs.len() as u128);
        if body.fee.amount < min {
            return Err(AuthError::FeeTooLow {
                min: Coin::new(min, body.fee.denom.clone()),
                got: body.fee.clone(),
            });
        }
        Ok(())
    }

    /// Moves the fee (in a denomination [`State::check_auth`] accepted) from `sender` to the fee
    /// pool, or refuses with [`AuthError::FeeUnpayable`] changing nothing.
    fn pay_fee(&mut self, sender: Address, fee: &Coin) -> Result<(), AuthError> {
        let pool = self.fee_pool();
        if sender == pool {
            // A transfer to oneself moves nothing, but the fee must still be payable.
            let have = self.balance(&sender, &fee.denom);
            if have < fee.amount {
                return Err(AuthError::FeeUnpayable {
                    need: fee.clone(),
                    have,
                });
            }
            return Ok(());
        }
        match self.transfer_known(sender, pool, fee) {
            Ok(()) => Ok(()),
            Err(BankError::InsufficientFunds { have, .. }) => Err(AuthError::FeeUnpayable {
                need: fee.clone(),
                have,
            }),
            // The denomination is known and an overflow of the pool's balance cannot happen
            // while balances sum to the supply (a `u128`); the transfer changed nothing.
            Err(e) => {
                debug_assert!(false, "a checked fee failed to move: {e}");
                Ok(())
            }
        }
    }

    fn execute(&mut self, ctx: &mut Ctx, msg: &Msg) -> Result<(), TxError> {
        match msg {
            Msg::Send { to, amount } => Ok(self.exec_send(ctx, *to, amount)?),
            Msg::CreateProvider {
                host_uri,
                tls_fingerprint,
                attributes,
                info,
            }
            | Msg::UpdateProvider {
                host_uri,
                tls_fingerprint,
                attributes,
                info,
            } => {
                let update = matches!(msg, Msg::UpdateProvider { .. });
                Ok(self.exec_create_provider(ctx, host_uri, tls_fingerprint, attributes, info, update)?)
            }
            Msg::DeleteProvider => Ok(self.exec_delete_provider(ctx)?),
            Msg::SignProviderAttributes { provider, attributes } => {
                Ok(self.exec_sign_attributes(ctx, *provider, attributes)?)
            }
            Msg::DeleteProviderAttributes { provider, keys } => Ok(self.exec_delete_attributes(ctx, *provider, keys)?),
            Msg::CreateDeployment {
                dseq,
                version,
                groups,
                deposit,
                auto_accept_after,
            } => self.exec_create_deployment(ctx, *dseq, version, groups, deposit, *auto_accept_after),
            Msg::DepositDeployment { id, amount } => self.exec_deposit(ctx, id, amount),
            Msg::UpdateDeployment { dseq, version } => self.exec_update_deployment(ctx, *dseq, version),
            Msg::CloseDeployment { dseq } => self.exec_close_deployment(ctx, *dseq),
            Msg::CloseGroup { dseq, gseq } => self.exec_group_state(ctx, *dseq, *gseq, GroupState::Closed),
            Msg::PauseGroup { dseq, gseq } => self.exec_group_state(ctx, *dseq, *gseq, GroupState::Paused),
            Msg::StartGroup { dseq, gseq } => self.exec_group_state(ctx, *dseq, *gseq, GroupState::Open),
            Msg::CreateBid { order, price, deposit } => self.exec_create_bid(ctx, order, price, deposit),
            Msg::CloseBid { bid } => self.exec_close_bid(ctx, bid),
            Msg::CreateLease { bid } => self.exec_create_lease(ctx, bid),
            Msg::CloseLease { lease, reason } => self.exec_close_lease(ctx, lease, *reason),
            Msg::WithdrawLease { lease } => self.exec_withdraw(ctx, lease),
            Msg::VoteValidator { key, power } => Ok(self.exec_vote_validator(ctx, *key, *power)?),
            Msg::RegisterDataset { spec } => self.exec_register_dataset(ctx, spec),
            Msg::OpenJob { spec } => self.exec_open_job(ctx, spec),
            Msg::JoinJob { job, blob_uri } => self.exec_join_job(ctx, *job, blob_uri),
            Msg::LeaveJob { job } => self.exec_leave_job(ctx, *job),
            Msg::CommitUpdate { job, round, commitment } => self.exec_commit_update(ctx, *job, *round, *commitment),
            Msg::RevealUpdate {
                job,
                round,
                update,
                trace,
                ef_in,
                ef_out,
                seal,
            } => self.exec_reveal_update(
                ctx,
                *job,
                *round,
                pazar_types::train::Reveal {
                    update: *update,
                    trace: *trace,
                    ef_in: *ef_in,
                    ef_out: *ef_out,
                    seal: *seal,
                },
            ),
            Msg::PostAudit {
                job,
                round,
                target,
                verdict,
            } => self.exec_post_audit(ctx, *job, *round, *target, verdict),
            Msg::DisputeAudit { job, round, steps } => self.exec_dispute_audit(ctx, *job, *round, steps),
            Msg::PostReferee {
                job,
                round,
                target,
                hash,
            } => self.exec_post_referee(ctx, *job, *round, *target, *hash),
            Msg::PostCheckpoint {
                job,
                round,
                checkpoint,
                left_out,
            } => self.exec_post_checkpoint(ctx, *job, *round, *checkpoint, left_out),
            Msg::CancelJob { job } => self.exec_cancel_job(ctx, *job),
            Msg::SetEscrowPolicy { dseq, policy } => self.exec_set_escrow_policy(ctx, *dseq, policy),
        }
    }

    /// Executes messages for `sender` without signature, sequence or fee, atomically. For
    /// building large states in benchmarks and tests quickly; no transaction reaches it.
    #[doc(hidden)]
    pub fn deliver_unchecked(&mut self, sender: Address, msgs: &[Msg]) -> Result<Vec<Event>, TxError> {
        let mut events = Vec::new();
        self.commit();
        let mut ctx = Ctx {
            height: self.height,
            sender,
            events: &mut events,
        };
        let r = msgs.iter().try_for_each(|m| self.execute(&mut ctx, m));
        match r {
            Ok(()) => {
                self.commit();
                Ok(events)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// Advances the height without transactions, running only the end-of-block work.
    #[doc(hidden)]
    pub fn skip_to(&mut self, height: u64) -> Vec<Event> {
        let mut events = Vec::new();
        while self.height < height {
            self.height += 1;
            events.extend(self.end_block());
        }
        events
    }

    fn end_block(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        self.commit();
        let mut ctx = Ctx {
            height: self.height,
            sender: self.escrow_module(),
            events: &mut events,
        };
        // Runway thresholds and top-ups first (a top-up due in the block the escrow would run
        // dry keeps it from running dry), then depletion, then the end of grace periods. None
        // of them can fail for a consistent state; if one ever did, its work is rolled back
        // rather than half committed (the invariant checks in tests would then flag it).
        for step in [
            State::process_low_runways,
            State::process_depletions,
            State::process_grace_expiries,
        ] {
            let mark = ctx.events.len();
            match step(self, &mut ctx) {
                Ok(()) => self.commit(),
                Err(_) => {
                    self.rollback();
                    ctx.events.truncate(mark);
                }
            }
        }
        let due = self.due_auto_accepts(self.height);
        self.commit();
        for oid in due {
            let mark = ctx.events.len();
            match self.auto_accept(&mut ctx, &oid) {
                Ok(()) => self.commit(),
                Err(_) => {
                    // E.g. escrow cannot pay a block at the best price: the order stays open.
                    self.rollback();
                    ctx.events.truncate(mark);
                }
            }
        }
        // Expiry runs last, so a bid is open for the whole of its last block: a lease made or an
        // auto-accept due in that block still takes it.
        let (orders, bids) = self.due_expiries(self.height);
        self.commit();
        for oid in orders {
            let mark = ctx.events.len();
            match self.expire_order(&mut ctx, &oid) {
                Ok(()) => self.commit(),
                Err(_) => {
                    // Cannot happen for a consistent state; its index entry is gone, so the
                    // invariant checks in tests flag it, and no later block retries it.
                    self.rollback();
                    ctx.events.truncate(mark);
                }
            }
        }
        for bid in bids {
            let mark = ctx.events.len();
            match self.expire_bid(&mut ctx, &bid) {
                Ok(()) => self.commit(),
                Err(_) => {
                    self.rollback();
                    ctx.events.truncate(mark);
                }
            }
        }
        // Training rounds whose phase ends in this block, after every transaction of it.
        self.process_training(&mut events);
        self.commit();
        // Last: the epoch's votes are complete once its last block's transactions ran.
        self.end_epoch(&mut events);
        self.commit();
        events
    }
}

/// The receipt of a transaction that failed with `e` (having paid `fee`, if any).
fn failed(tx_hash: Hash32, e: &TxError, fee: Option<Coin>, events: Vec<Event>) -> Receipt {
    Receipt {
        tx_hash,
        code: e.code(),
        codespace: e.codespace().to_string(),
        log: e.to_string(),
        fee,
        events,
    }
}
