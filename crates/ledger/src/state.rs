//! The ledger's state: parameters, genesis, the stored objects of every module and the tables
//! that hold them.

use std::sync::LazyLock;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_types::{Address, Attribute, BidId, Coin, Denom, DeploymentId, GroupId, Hash32, LeaseId, OrderId};

use crate::error::BlockError;
use crate::table::{StateChange, Table};
use crate::BlockHeader;

pub use pazar_types::records::{
    Account, Bid, DenomParams, Deployment, Deposit, EscrowAccount, Group, Lease, Order, Params, Payment, Provider,
    ProviderLoad, BPS, DEFAULT_BID_TIMEOUT_BLOCKS, DEFAULT_MAX_AUTO_ACCEPT_BLOCKS, DEFAULT_ORDER_TIMEOUT_BLOCKS,
    MAX_DEPOSITORS,
};

/// The rules between parameters that the market relies on: timeouts and the resumption
/// minimum of at least one block, and an auto-accept moment that comes before any bid or order placed in time can expire.
pub fn validate_params(params: &Params) -> Result<(), GenesisError> {
    if params.native.denom == params.stable.denom {
        return Err(GenesisError::SameDenoms);
    }
    for dp in [&params.native, &params.stable] {
        if u128::from(dp.take_bps) > BPS {
            return Err(GenesisError::TakeRate(dp.take_bps));
        }
    }
    for (name, v) in [
        ("bid_timeout_blocks", u64::from(params.bid_timeout_blocks)),
        ("order_timeout_blocks", u64::from(params.order_timeout_blocks)),
        // 0 would let a deposit of nothing resume a lease in grace (see `runway.rs`).
        ("resume_min_blocks", params.resume_min_blocks),
    ] {
        if v == 0 {
            return Err(GenesisError::ZeroTimeout(name));
        }
    }
    if params.max_auto_accept_blocks >= params.bid_timeout_blocks.min(params.order_timeout_blocks) {
        return Err(GenesisError::AutoAcceptAfterExpiry {
            max_auto_accept_blocks: params.max_auto_accept_blocks,
            bid_timeout_blocks: params.bid_timeout_blocks,
            order_timeout_blocks: params.order_timeout_blocks,
        });
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisBalance {
    pub address: Address,
    pub coins: Vec<Coin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    pub params: Params,
    pub balances: Vec<GenesisBalance>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GenesisError {
    #[error("chain id must be 1-64 printable characters")]
    ChainId,
    #[error("native and stable denominations must differ")]
    SameDenoms,
    #[error("take rate {0} bps is above 100 %")]
    TakeRate(u32),
    #[error("genesis balance of {address} is in unknown denomination {denom}")]
    UnknownDenom { address: Address, denom: Denom },
    #[error("genesis supply of {0} overflows")]
    Overflow(Denom),
    #[error("{0} is a module account and cannot hold a genesis balance")]
    ModuleAccount(Address),
    #[error("parameter {0} must be at least 1 block")]
    ZeroTimeout(&'static str),
    #[error(
        "max_auto_accept_blocks ({max_auto_accept_blocks}) must be below bid_timeout_blocks \
         ({bid_timeout_blocks}) and order_timeout_blocks ({order_timeout_blocks}): otherwise bids \
         and orders expire before they can be accepted automatically"
    )]
    AutoAcceptAfterExpiry {
        max_auto_accept_blocks: u32,
        bid_timeout_blocks: u32,
        order_timeout_blocks: u32,
    },
    #[error("genesis validator set: {0}")]
    Validators(String),
}

/// A block as [`State::speculate`] runs it: its header, its transactions, and which of them a
/// caller has already checked the signature of (see [`State::apply_block_preverified`]; empty
/// for none).
#[derive(Debug, Clone, Copy)]
pub struct Pending<'a> {
    pub header: &'a BlockHeader,
    pub txs: &'a [Vec<u8>],
    pub preverified: &'a [bool],
}

// ---------------------------------------------------------------------------------------------
// Stored objects.

/// The whole ledger state. Tables are private to the crate; read access goes through the query
/// methods so that invariants stay in one place.
#[derive(Debug, Clone)]
pub struct State {
    pub chain_id: String,
    pub height: u64,
    pub params: Params,
    pub(crate) accounts: Table<Address, Account>,
    pub(crate) balances: Table<(Address, Denom), u128>,
    pub(crate) supply: Table<Denom, u128>,
    pub(crate) providers: Table<Address, Provider>,
    pub(crate) provider_load: Table<Address, ProviderLoad>,
    pub(crate) audits: Table<(Address, Address), Vec<Attribute>>,
    pub(crate) deployments: Table<DeploymentId, Deployment>,
    pub(crate) groups: Table<GroupId, Group>,
    pub(crate) orders: Table<OrderId, Order>,
    pub(crate) bids: Table<BidId, Bid>,
    pub(crate) leases: Table<LeaseId, Lease>,
    pub(crate) escrow: Table<DeploymentId, EscrowAccount>,
    pub(crate) payments: Table<LeaseId, Payment>,
    /// (height, account): accounts that run dry at that height.
    pub(crate) depletion: Table<(u64, DeploymentId), ()>,
    /// (height, order): orders whose lowest bid is accepted automatically at that height.
    pub(crate) auto_accept: Table<(u64, OrderId), ()>,
    /// (height, bid): open bids that expire at the end of that height.
    pub(crate) bid_expiry: Table<(u64, BidId), ()>,
    /// (height, order): open orders that expire at the end of that height.
    pub(crate) order_expiry: Table<(u64, OrderId), ()>,
    /// Auditors with at least one standing attestation, and how many providers they vouch for.
    pub(crate) auditors: Table<Address, u32>,
    /// Consensus key → signed and missed commits, double signings ([`crate::evidence`]).
    pub(crate) validator_records: Table<crate::evidence::ValidatorKey, crate::evidence::ValidatorRecord>,
    /// (consensus key, epoch, view) → a recorded double signing.
    pub(crate) double_signs: Table<(crate::evidence::ValidatorKey, u64, u64), crate::evidence::DoubleSignRecord>,
    /// The last height whose commit is recorded (absent: none).
    pub(crate) commit_cursor: Table<(), u64>,
    /// Epoch → its validator set, in key order ([`crate::validators`]).
    pub(crate) validator_sets: Table<u64, Vec<pazar_types::records::SetMember>>,
    /// (key, power) → the validators of the current epoch who voted for that change, in order.
    pub(crate) validator_votes: Table<(crate::evidence::ValidatorKey, u64), Vec<crate::evidence::ValidatorKey>>,
    /// Blocks per epoch (absent: no validator set, one epoch).
    pub(crate) epoch_length: Table<(), u64>,
    /// Registered datasets by root ([`crate::training`]).
    pub(crate) datasets: Table<Hash32, pazar_types::train::DatasetRecord>,
    /// Training jobs by id.
    pub(crate) train_jobs: Table<u64, pazar_types::train::TrainJob>,
    /// (job, worker) → membership.
    pub(crate) train_members: Table<(u64, Address), pazar_types::train::Member>,
    /// (job, round, worker) → the worker's part in the job's current round.
    pub(crate) train_round_work: Table<(u64, u32, Address), pazar_types::train::RoundWork>,
    /// (job, round, target) → the audits of the job's current round.
    pub(crate) train_audits: Table<(u64, u32, Address), pazar_types::train::AuditRecord>,
    /// (height, job): running jobs whose phase ends at the end of that height.
    pub(crate) train_deadlines: Table<(u64, u64), ()>,
    /// (job, round) → provenance of the checkpoint the round made.
    pub(crate) train_rounds: Table<(u64, u32), pazar_types::train::RoundRecord>,
    /// (checkpoint, job) → the round that made it.
    pub(crate) train_checkpoints: Table<(Hash32, u64), u32>,
    /// The next job id (absent: 0).
    pub(crate) train_next_job: Table<(), u64>,
    /// Deployment → its escrow policy ([`crate::runway`]).
    pub(crate) escrow_policies: Table<DeploymentId, pazar_types::records::EscrowPolicy>,
    /// (height, deployment): runways that fall to their threshold at that height.
    pub(crate) escrow_low: Table<(u64, DeploymentId), ()>,
    /// (height, lease): leases in grace that close at the end of that height.
    pub(crate) grace_expiry: Table<(u64, LeaseId), ()>,
}

/// Calls `$m` on every table of the state with its name and store id. The ids are part of the
/// store's format and of the state commitment: append new tables, never renumber.
macro_rules! for_each_table {
    ($s:expr, $m:ident $(, $arg:expr)*) => {{
        $s.accounts.$m("accounts", table_id::ACCOUNTS $(, $arg)*);
        $s.balances.$m("balances", table_id::BALANCES $(, $arg)*);
        $s.supply.$m("supply", table_id::SUPPLY $(, $arg)*);
        $s.providers.$m("providers", table_id::PROVIDERS $(, $arg)*);
        $s.provider_load.$m("provider_load", table_id::PROVIDER_LOAD $(, $arg)*);
        $s.audits.$m("audits", table_id::AUDITS $(, $arg)*);
        $s.deployments.$m("deployments", table_id::DEPLOYMENTS $(, $arg)*);
        $s.groups.$m("groups", table_id::GROUPS $(, $arg)*);
        $s.orders.$m("orders", table_id::ORDERS $(, $arg)*);
        $s.bids.$m("bids", table_id::BIDS $(, $arg)*);
        $s.leases.$m("leases", table_id::LEASES $(, $arg)*);
        $s.escrow.$m("escrow", table_id::ESCROW $(, $arg)*);
        $s.payments.$m("payments", table_id::PAYMENTS $(, $arg)*);
        $s.depletion.$m("depletion", table_id::DEPLETION $(, $arg)*);
        $s.auto_accept.$m("auto_accept", table_id::AUTO_ACCEPT $(, $arg)*);
        $s.bid_expiry.$m("bid_expiry", table_id::BID_EXPIRY $(, $arg)*);
        $s.order_expiry.$m("order_expiry", table_id::ORDER_EXPIRY $(, $arg)*);
        $s.auditors.$m("auditors", table_id::AUDITORS $(, $arg)*);
        $s.validator_records.$m("validator_records", table_id::VALIDATOR_RECORDS $(, $arg)*);
        $s.double_signs.$m("double_signs", table_id::DOUBLE_SIGNS $(, $arg)*);
        $s.commit_cursor.$m("commit_cursor", table_id::COMMIT_CURSOR $(, $arg)*);
        $s.validator_sets.$m("validator_sets", table_id::VALIDATOR_SETS $(, $arg)*);
        $s.validator_votes.$m("validator_votes", table_id::VALIDATOR_VOTES $(, $arg)*);
        $s.epoch_length.$m("epoch_length", table_id::EPOCH_LENGTH $(, $arg)*);
        $s.datasets.$m("datasets", table_id::DATASETS $(, $arg)*);
        $s.train_jobs.$m("train_jobs", table_id::TRAIN_JOBS $(, $arg)*);
        $s.train_members.$m("train_members", table_id::TRAIN_MEMBERS $(, $arg)*);
        $s.train_round_work.$m("train_round_work", table_id::TRAIN_ROUND_WORK $(, $arg)*);
        $s.train_audits.$m("train_audits", table_id::TRAIN_AUDITS $(, $arg)*);
        $s.train_deadlines.$m("train_deadlines", table_id::TRAIN_DEADLINES $(, $arg)*);
        $s.train_rounds.$m("train_rounds", table_id::TRAIN_ROUNDS $(, $arg)*);
        $s.train_checkpoints.$m("train_checkpoints", table_id::TRAIN_CHECKPOINTS $(, $arg)*);
        $s.train_next_job.$m("train_next_job", table_id::TRAIN_NEXT_JOB $(, $arg)*);
        $s.escrow_policies.$m("escrow_policies", table_id::ESCROW_POLICIES $(, $arg)*);
        $s.escrow_low.$m("escrow_low", table_id::ESCROW_LOW $(, $arg)*);
        $s.grace_expiry.$m("grace_expiry", table_id::GRACE_EXPIRY $(, $arg)*);
    }};
}

/// The store key layout lives in `pazar-types`, so clients check proofs without the ledger.
pub use pazar_types::state_key::{store_key, table_id};

/// Store key of the state's own fields (chain id, height, parameters).
pub const META_KEY: &[u8] = &[0];

/// Adapters so the macro can call every table operation with the same arguments.
trait Named {
    fn commit_named(&mut self, _name: &str, _id: u8);
    fn pending_named(&self, _name: &str, _id: u8, total: &mut usize);
    fn rollback_named(&mut self, _name: &str, _id: u8);
    fn savepoint_named(&mut self, _name: &str, _id: u8, open: bool);
    fn mark_named(&self, _name: &str, _id: u8, marks: &mut Vec<usize>);
    fn changes_since_named(
        &self,
        _name: &str,
        id: u8,
        marks: &mut std::slice::Iter<'_, usize>,
        out: &mut Vec<StateChange>,
    );
    fn hash_named(&self, name: &str, _id: u8, h: &mut Sha256);
    fn drain_named(&mut self, _name: &str, id: u8, out: &mut Vec<StateChange>);
    fn dump_named(&self, _name: &str, id: u8, out: &mut Vec<StateChange>);
    fn load_named(&mut self, name: &str, id: u8, entry: (&[u8], &[u8]), res: &mut Option<Result<(), RestoreError>>);
    fn finish_load_named(&mut self, name: &str, id: u8);
}

impl<K, V> Named for Table<K, V>
where
    K: Ord + Clone + BorshSerialize + BorshDeserialize,
    V: Clone + BorshSerialize + BorshDeserialize,
{
    #[inline]
    fn commit_named(&mut self, _name: &str, _id: u8) {
        self.commit();
    }
    fn pending_named(&self, _name: &str, _id: u8, total: &mut usize) {
        *total += self.pending_changes();
    }
    fn rollback_named(&mut self, _name: &str, _id: u8) {
        self.rollback();
    }
    fn mark_named(&self, _name: &str, _id: u8, marks: &mut Vec<usize>) {
        marks.push(self.journal_mark());
    }
    fn changes_since_named(
        &self,
        _name: &str,
        id: u8,
        marks: &mut std::slice::Iter<'_, usize>,
        out: &mut Vec<StateChange>,
    ) {
        // One mark per table, taken in the same order.
        let mark = marks.next().copied().unwrap_or(usize::MAX);
        self.changes_since(mark, id, out);
    }
    fn savepoint_named(&mut self, _name: &str, _id: u8, open: bool) {
        if open {
            self.open_savepoint();
        } else {
            self.close_savepoint();
        }
    }
    fn hash_named(&self, name: &str, _id: u8, h: &mut Sha256) {
        self.hash_into(name, h);
    }
    fn drain_named(&mut self, _name: &str, id: u8, out: &mut Vec<StateChange>) {
        self.drain_changes(id, out);
    }
    fn dump_named(&self, _name: &str, id: u8, out: &mut Vec<StateChange>) {
        self.dump(id, out);
    }
    fn load_named(&mut self, name: &str, id: u8, entry: (&[u8], &[u8]), res: &mut Option<Result<(), RestoreError>>) {
        let (key, value) = entry;
        if res.is_none() && key.first() == Some(&id) {
            *res = Some(self.load(&key[1..], value).map_err(|e| RestoreError::Entry {
                table: name.to_string(),
                reason: e.to_string(),
            }));
        }
    }
    fn finish_load_named(&mut self, _name: &str, _id: u8) {
        self.finish_load();
    }
}

/// Rebuilds a [`State`] from a stream of stored entries in store key order (metadata first),
/// without holding the raw rows: each row is decoded as it arrives and every table is built in
/// bulk at the end, which is several times faster than inserting rows one by one.
#[derive(Default)]
pub struct StateRestorer {
    state: Option<State>,
}

impl StateRestorer {
    /// Takes the next entry; entries must come in store key order (the metadata entry first).
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), RestoreError> {
        let Some(state) = self.state.as_mut() else {
            if key != META_KEY {
                return Err(RestoreError::NoMeta);
            }
            let (chain_id, height, params): (String, u64, Params) =
                borsh::from_slice(value).map_err(|e| RestoreError::Meta(e.to_string()))?;
            self.state = Some(State::empty(chain_id, height, params));
            return Ok(());
        };
        let mut res = None;
        for_each_table!(state, load_named, (key, value), &mut res);
        match res {
            Some(r) => r,
            None => Err(RestoreError::UnknownTable(key.first().copied().unwrap_or(0))),
        }
    }

    pub fn finish(self) -> Result<State, RestoreError> {
        let mut state = self.state.ok_or(RestoreError::NoMeta)?;
        for_each_table!(state, finish_load_named);
        Ok(state)
    }
}

/// Why a stored state could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("stored state has no metadata entry")]
    NoMeta,
    #[error("stored state metadata is unreadable: {0}")]
    Meta(String),
    #[error("stored entry of table {table} is unreadable: {reason}")]
    Entry { table: String, reason: String },
    #[error("stored entry with unknown table id {0}")]
    UnknownTable(u8),
}

/// Name of the module account holding every escrow balance, unwithdrawn payment and bid deposit.
pub const ESCROW_MODULE: &str = "escrow";
/// Name of the module account collecting transaction fees and take fees.
pub const FEE_POOL_MODULE: &str = "fee_pool";
/// Name of the module account holding every training job's budget and its workers' bonds.
pub const TRAIN_ESCROW_MODULE: &str = "train_escrow";

/// The module accounts' addresses, derived once: every transaction pays its fee to the fee pool,
/// and deriving an address hashes its name. A pure function of a constant, so nothing ambient.
pub(crate) static ESCROW_ADDRESS: LazyLock<Address> = LazyLock::new(|| Address::module(ESCROW_MODULE));
pub(crate) static FEE_POOL_ADDRESS: LazyLock<Address> = LazyLock::new(|| Address::module(FEE_POOL_MODULE));
pub(crate) static TRAIN_ESCROW_ADDRESS: LazyLock<Address> = LazyLock::new(|| Address::module(TRAIN_ESCROW_MODULE));

impl State {
    pub fn from_genesis(genesis: &Genesis) -> Result<State, GenesisError> {
        let g = genesis;
        if g.chain_id.is_empty() || g.chain_id.len() > 64 || g.chain_id.chars().any(char::is_control) {
            return Err(GenesisError::ChainId);
        }
        validate_params(&g.params)?;
        let mut s = State::empty(g.chain_id.clone(), 0, g.params.clone());
        for d in s.params.denoms().map(Clone::clone) {
            s.supply.insert(d, 0);
        }
        let modules = [
            Address::module(ESCROW_MODULE),
            Address::module(FEE_POOL_MODULE),
            Address::module(TRAIN_ESCROW_MODULE),
        ];
        for b in &g.balances {
            if modules.contains(&b.address) {
                return Err(GenesisError::ModuleAccount(b.address));
            }
            for c in &b.coins {
                if s.params.denom(&c.denom).is_none() {
                    return Err(GenesisError::UnknownDenom {
                        address: b.address,
                        denom: c.denom.clone(),
                    });
                }
                let supply = s.supply.get(&c.denom).copied().unwrap_or(0);
                let new_supply = supply
                    .checked_add(c.amount)
                    .ok_or_else(|| GenesisError::Overflow(c.denom.clone()))?;
                s.supply.insert(c.denom.clone(), new_supply);
                let key = (b.address, c.denom.clone());
                let bal = s.balances.get(&key).copied().unwrap_or(0);
                s.balances.insert(key, bal + c.amount);
            }
        }
        s.commit();
        Ok(s)
    }

    fn empty(chain_id: String, height: u64, params: Params) -> State {
        State {
            chain_id,
            height,
            params,
            accounts: Table::default(),
            balances: Table::default(),
            supply: Table::default(),
            providers: Table::default(),
            provider_load: Table::default(),
            audits: Table::default(),
            deployments: Table::default(),
            groups: Table::default(),
            orders: Table::default(),
            bids: Table::default(),
            leases: Table::default(),
            escrow: Table::default(),
            payments: Table::default(),
            depletion: Table::default(),
            auto_accept: Table::default(),
            bid_expiry: Table::default(),
            order_expiry: Table::default(),
            auditors: Table::default(),
            validator_records: Table::default(),
            double_signs: Table::default(),
            commit_cursor: Table::default(),
            validator_sets: Table::default(),
            validator_votes: Table::default(),
            epoch_length: Table::default(),
            datasets: Table::default(),
            train_jobs: Table::default(),
            train_members: Table::default(),
            train_round_work: Table::default(),
            train_audits: Table::default(),
            train_deadlines: Table::default(),
            train_rounds: Table::default(),
            train_checkpoints: Table::default(),
            train_next_job: Table::default(),
            escrow_policies: Table::default(),
            escrow_low: Table::default(),
            grace_expiry: Table::default(),
        }
    }

    pub(crate) fn commit(&mut self) {
        for_each_table!(self, commit_named);
    }

    pub(crate) fn rollback(&mut self) {
        for_each_table!(self, rollback_named);
    }

    /// Runs `f` on this state and then undoes everything it wrote, committed or not: the state
    /// is left exactly as it was (entries, height, the change list for the store). What `f`
    /// returns is kept. Costs what `f`'s writes cost twice, not a copy of the state.
    pub(crate) fn under_savepoint<T>(&mut self, f: impl FnOnce(&mut State) -> T) -> T {
        let height = self.height;
        for_each_table!(self, savepoint_named, true);
        let out = f(self);
        for_each_table!(self, savepoint_named, false);
        self.height = height;
        out
    }

    /// Runs `blocks` in order (each a header, its transactions and which of them are
    /// preverified, as [`State::apply_block_preverified`] takes them, end-of-block work
    /// included), then calls `f` with the state after them and the change set each block would
    /// give the store ([`State::take_changes`] after it), and undoes it all: the state is left
    /// exactly as it was. A validator uses it to know the state, and so the state root, after
    /// blocks that consensus has not finalized yet, without copying the state. A block the
    /// ledger refuses whole (wrong chain or height) is the error, and nothing is changed.
    pub fn speculate<T>(
        &mut self,
        blocks: &[Pending<'_>],
        f: impl FnOnce(&State, Vec<Vec<StateChange>>) -> T,
    ) -> Result<T, BlockError> {
        self.speculate_with_evidence(blocks, &[], f)
    }

    /// [`State::speculate`] with each block's evidence applied after it
    /// ([`State::apply_evidence`]; `evidence[i]` is block `i`'s, missing ones are empty). A
    /// block whose evidence the ledger refuses is the error.
    pub fn speculate_with_evidence<T>(
        &mut self,
        blocks: &[Pending<'_>],
        evidence: &[&pazar_types::block::Evidence],
        f: impl FnOnce(&State, Vec<Vec<StateChange>>) -> T,
    ) -> Result<T, BlockError> {
        self.under_savepoint(|st| {
            let mut sets = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                let mut marks = Vec::with_capacity(32);
                for_each_table!(st, mark_named, &mut marks);
                if let Some(ev) = evidence.get(i) {
                    st.check_evidence(b.header.height, ev).map_err(BlockError::Evidence)?;
                }
                st.apply_block_preverified(b.header, b.txs, b.preverified)?;
                if let Some(ev) = evidence.get(i) {
                    st.apply_evidence(b.header.height, ev).map_err(BlockError::Evidence)?;
                }
                let mut out = vec![st.meta_change()];
                let mut it = marks.iter();
                for_each_table!(st, changes_since_named, &mut it, &mut out);
                sets.push(out);
            }
            Ok(f(st, sets))
        })
    }

    fn meta_change(&self) -> StateChange {
        StateChange {
            key: META_KEY.to_vec(),
            value: Some(crate::table::encode_exact(
                &mut Vec::new(),
                None,
                &(&self.chain_id, self.height, &self.params),
            )),
        }
    }

    /// The entries written since the last call (at most one per key, deletions as `None`), with
    /// the metadata entry first. After genesis, the first call returns the whole genesis state.
    pub fn take_changes(&mut self) -> Vec<StateChange> {
        let mut pending = 1;
        for_each_table!(self, pending_named, &mut pending);
        let mut out = Vec::with_capacity(pending);
        out.push(self.meta_change());
        for_each_table!(self, drain_named, &mut out);
        out
    }

    /// Every entry of the state, metadata first, then each table in id and key order.
    pub fn dump(&self) -> Vec<StateChange> {
        let mut out = vec![self.meta_change()];
        for_each_table!(self, dump_named, &mut out);
        out
    }

    /// Rebuilds a state from stored entries (in any order), as written by [`State::take_changes`]
    /// or [`State::dump`].
    pub fn restore<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Result<State, RestoreError> {
        let mut entries: Vec<_> = entries.into_iter().collect();
        // The metadata entry (key `[0]`) sorts first; the restorer needs it before any table row.
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let mut r = StateRestorer::default();
        for (k, v) in entries {
            r.push(k, v)?;
        }
        r.finish()
    }

    /// SHA-256 over the chain id, height, parameters and every table in key order. The same
    /// blocks give the same hash on every machine.
    pub fn state_hash(&self) -> Hash32 {
        let mut h = Sha256::new();
        h.update(b"pazar/state/v1");
        h.update(borsh::to_vec(&(&self.chain_id, self.height, &self.params)).expect("encoding cannot fail"));
        for_each_table!(self, hash_named, &mut h);
        h.finalize().into()
    }

    pub fn escrow_module(&self) -> Address {
        *ESCROW_ADDRESS
    }

    pub fn fee_pool(&self) -> Address {
        *FEE_POOL_ADDRESS
    }

    /// The module account holding training budgets and bonds ([`crate::training`]).
    pub fn train_escrow(&self) -> Address {
        *TRAIN_ESCROW_ADDRESS
    }
}
