//! The ledger's state: parameters, genesis, the stored objects of every module and the tables
//! that hold them.

use std::sync::LazyLock;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_types::market::{BidState, DeploymentState, GroupSpec, GroupState, LeaseCloseReason, LeaseState, OrderState};
use pazar_types::{
    Address, Attribute, BidId, Coin, Denom, DeploymentId, GroupId, Hash32, LeaseId, OrderId, Price, ProviderInfo,
};

use crate::table::{StateChange, Table};

/// Parameters of one accepted denomination.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DenomParams {
    pub denom: Denom,
    /// Share of every provider payout that goes to the fee pool, in basis points.
    pub take_bps: u32,
    /// Fee per message of a transaction.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub min_fee_per_msg: u128,
    /// Smallest initial deposit of a deployment priced in this denomination.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub min_deployment_deposit: u128,
    /// Smallest deposit a provider must lock with a bid.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub min_bid_deposit: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Params {
    pub native: DenomParams,
    pub stable: DenomParams,
    /// Most bids one order accepts (open, active and closed together), as Akash's OrderMaxBids.
    pub max_bids_per_order: u32,
    /// Longest auto-accept delay a deployment may ask for. Below both timeouts, so every bid
    /// placed before an order's auto-accept moment is still open at that moment.
    pub max_auto_accept_blocks: u32,
    /// Blocks an open bid waits to be accepted; at the end of its last block it closes and its
    /// deposit goes back. Bounds how long a tenant who never leases can hold a provider's
    /// capacity and deposit (Akash leaves this to the provider's own `bid-timeout`).
    #[serde(default = "default_bid_timeout_blocks")]
    pub bid_timeout_blocks: u32,
    /// Blocks an order stays open without a lease; then it closes with its open bids and its
    /// group pauses, so the tenant sees why and starts the group again or closes it.
    #[serde(default = "default_order_timeout_blocks")]
    pub order_timeout_blocks: u32,
}

/// Default of [`Params::bid_timeout_blocks`]: ten minutes of one-second blocks (Akash's provider
/// gives up on a bid after five).
pub const DEFAULT_BID_TIMEOUT_BLOCKS: u32 = 600;
/// Default of [`Params::order_timeout_blocks`]: an hour of one-second blocks.
pub const DEFAULT_ORDER_TIMEOUT_BLOCKS: u32 = 3_600;
/// Default of [`Params::max_auto_accept_blocks`]: five minutes of one-second blocks.
pub const DEFAULT_MAX_AUTO_ACCEPT_BLOCKS: u32 = 300;

const _: () = assert!(DEFAULT_MAX_AUTO_ACCEPT_BLOCKS < DEFAULT_BID_TIMEOUT_BLOCKS);
const _: () = assert!(DEFAULT_BID_TIMEOUT_BLOCKS <= DEFAULT_ORDER_TIMEOUT_BLOCKS);

fn default_bid_timeout_blocks() -> u32 {
    DEFAULT_BID_TIMEOUT_BLOCKS
}

fn default_order_timeout_blocks() -> u32 {
    DEFAULT_ORDER_TIMEOUT_BLOCKS
}

/// Most depositors one escrow account records (refunds go back to each).
pub const MAX_DEPOSITORS: usize = 32;
/// Basis points in one whole.
pub const BPS: u128 = 10_000;

impl Params {
    /// Devnet defaults: take 4 % native, 20 % stable; 0.5-token minimum deposits (Akash's).
    pub fn devnet(native: &str, stable: &str) -> Params {
        let d = |name: &str, take_bps| DenomParams {
            denom: Denom::new(name).expect("devnet denominations are valid"),
            take_bps,
            min_fee_per_msg: 100,
            min_deployment_deposit: 500_000,
            min_bid_deposit: 500_000,
        };
        Params {
            native: d(native, 400),
            stable: d(stable, 2_000),
            max_bids_per_order: 20,
            max_auto_accept_blocks: DEFAULT_MAX_AUTO_ACCEPT_BLOCKS,
            bid_timeout_blocks: DEFAULT_BID_TIMEOUT_BLOCKS,
            order_timeout_blocks: DEFAULT_ORDER_TIMEOUT_BLOCKS,
        }
    }

    /// The rules between parameters that the market relies on: timeouts of at least one block,
    /// and an auto-accept moment that comes before any bid or order placed in time can expire.
    pub fn validate(&self) -> Result<(), GenesisError> {
        if self.native.denom == self.stable.denom {
            return Err(GenesisError::SameDenoms);
        }
        for dp in [&self.native, &self.stable] {
            if u128::from(dp.take_bps) > BPS {
                return Err(GenesisError::TakeRate(dp.take_bps));
            }
        }
        for (name, v) in [
            ("bid_timeout_blocks", self.bid_timeout_blocks),
            ("order_timeout_blocks", self.order_timeout_blocks),
        ] {
            if v == 0 {
                return Err(GenesisError::ZeroTimeout(name));
            }
        }
        if self.max_auto_accept_blocks >= self.bid_timeout_blocks.min(self.order_timeout_blocks) {
            return Err(GenesisError::AutoAcceptAfterExpiry {
                max_auto_accept_blocks: self.max_auto_accept_blocks,
                bid_timeout_blocks: self.bid_timeout_blocks,
                order_timeout_blocks: self.order_timeout_blocks,
            });
        }
        Ok(())
    }

    pub fn denom(&self, denom: &Denom) -> Option<&DenomParams> {
        if *denom == self.native.denom {
            Some(&self.native)
        } else if *denom == self.stable.denom {
            Some(&self.stable)
        } else {
            None
        }
    }

    pub fn denoms(&self) -> [&Denom; 2] {
        [&self.native.denom, &self.stable.denom]
    }
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
}

// ---------------------------------------------------------------------------------------------
// Stored objects.

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Account {
    /// The sequence the account's next transaction must carry.
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Provider {
    pub host_uri: String,
    #[serde(with = "pazar_types::tx::hex_array")]
    pub tls_fingerprint: Hash32,
    pub attributes: Vec<Attribute>,
    pub info: ProviderInfo,
    pub created_at: u64,
}

/// Counters that decide whether a provider may deregister.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct ProviderLoad {
    pub open_bids: u32,
    pub active_leases: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Deployment {
    pub state: DeploymentState,
    #[serde(with = "pazar_types::tx::hex_array")]
    pub version: Hash32,
    pub created_at: u64,
    pub groups: u32,
    pub auto_accept_after: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Group {
    pub state: GroupState,
    pub spec: GroupSpec,
    pub created_at: u64,
    /// The group's open or active order, if any (at most one at a time).
    pub current_order: Option<u32>,
    /// Orders ever created for this group; the next one gets `orders + 1`.
    pub orders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Order {
    pub state: OrderState,
    pub created_at: u64,
    /// Open bids on this order (what `max_bids_per_order` caps); a withdrawn bid leaves no record.
    pub bids: u32,
    /// Height at whose end the order closes if it is still open (no bid accepted by then).
    pub expires_at: u64,
    /// The order closed because no bid was accepted by `expires_at`; its group was paused.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Bid {
    pub state: BidState,
    pub price: Price,
    /// Locked in the escrow module while the bid is open or active.
    pub deposit: Coin,
    pub created_at: u64,
    /// Height at whose end the bid closes, deposit returned, if it is still open: its own
    /// timeout or its order's, whichever comes first.
    pub expires_at: u64,
    /// The bid closed because it was not accepted by `expires_at`.
    pub expired: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Lease {
    pub state: LeaseState,
    pub price: Price,
    pub created_at: u64,
    pub closed_at: Option<u64>,
    pub reason: Option<LeaseCloseReason>,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Deposit {
    pub depositor: Address,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub amount: u128,
}

/// The escrow of one deployment. Funds leave it only to payments (as leases accrue) and as
/// refunds; `deposited = balance + transferred + refunded` always holds.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct EscrowAccount {
    pub denom: Denom,
    /// Σ `deposits[].amount`.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub balance: u128,
    /// What remains of each deposit, spent first-in first-out and refunded to its depositor.
    pub deposits: Vec<Deposit>,
    /// Height up to which every open payment has been paid.
    pub settled_at: u64,
    /// Leases currently paid from this account, in id order.
    pub open_payments: Vec<LeaseId>,
    /// First height at which the balance cannot pay a full block (indexed for end-of-block).
    pub depletes_at: Option<u64>,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub deposited: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub transferred: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub refunded: u128,
    pub closed: bool,
}

/// What one lease has been paid. `received = balance + withdrawn` where `withdrawn` includes the
/// take; the take is `floor(withdrawn × take_bps / 10000)` at all times, so no rounding drifts.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize)]
pub struct Payment {
    /// Price per block.
    pub rate: Price,
    /// Fraction of a base unit owed but not yet transferred (scaled by 10^18).
    #[serde(with = "pazar_types::coin::u128_string")]
    pub carry: u128,
    /// Accrued and not yet withdrawn.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub balance: u128,
    /// Total moved in from the escrow account.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub received: u128,
    /// Gross withdrawn (provider share plus take).
    #[serde(with = "pazar_types::coin::u128_string")]
    pub withdrawn: u128,
    #[serde(with = "pazar_types::coin::u128_string")]
    pub take: u128,
    pub take_bps: u32,
    /// Owed when the escrow ran dry and not paid.
    #[serde(with = "pazar_types::coin::u128_string")]
    pub unsettled: u128,
    pub open: bool,
}

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
    }};
}

/// Store ids of the state's tables: the first byte of every store key (see [`store_key`]).
pub mod table_id {
    pub const ACCOUNTS: u8 = 1;
    pub const BALANCES: u8 = 2;
    pub const SUPPLY: u8 = 3;
    pub const PROVIDERS: u8 = 4;
    pub const PROVIDER_LOAD: u8 = 5;
    pub const AUDITS: u8 = 6;
    pub const DEPLOYMENTS: u8 = 7;
    pub const GROUPS: u8 = 8;
    pub const ORDERS: u8 = 9;
    pub const BIDS: u8 = 10;
    pub const LEASES: u8 = 11;
    pub const ESCROW: u8 = 12;
    pub const PAYMENTS: u8 = 13;
    pub const DEPLETION: u8 = 14;
    pub const AUTO_ACCEPT: u8 = 15;
    pub const BID_EXPIRY: u8 = 16;
    pub const ORDER_EXPIRY: u8 = 17;
    pub const AUDITORS: u8 = 18;
}

/// The store key of entry `key` of table `table` (an id from [`table_id`]): proofs are about
/// these keys. E.g. an account's balance is `store_key(table_id::BALANCES, &(address, denom))`.
pub fn store_key<K: BorshSerialize>(table: u8, key: &K) -> Vec<u8> {
    crate::table::encode_key(table, key)
}

/// Store key of the state's own fields (chain id, height, parameters).
pub const META_KEY: &[u8] = &[0];

/// Adapters so the macro can call every table operation with the same arguments.
trait Named {
    fn commit_named(&mut self, _name: &str, _id: u8);
    fn pending_named(&self, _name: &str, _id: u8, total: &mut usize);
    fn rollback_named(&mut self, _name: &str, _id: u8);
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

/// The module accounts' addresses, derived once: every transaction pays its fee to the fee pool,
/// and deriving an address hashes its name. A pure function of a constant, so nothing ambient.
pub(crate) static ESCROW_ADDRESS: LazyLock<Address> = LazyLock::new(|| Address::module(ESCROW_MODULE));
pub(crate) static FEE_POOL_ADDRESS: LazyLock<Address> = LazyLock::new(|| Address::module(FEE_POOL_MODULE));

impl State {
    pub fn from_genesis(genesis: &Genesis) -> Result<State, GenesisError> {
        let g = genesis;
        if g.chain_id.is_empty() || g.chain_id.len() > 64 || g.chain_id.chars().any(char::is_control) {
            return Err(GenesisError::ChainId);
        }
        g.params.validate()?;
        let mut s = State::empty(g.chain_id.clone(), 0, g.params.clone());
        for d in s.params.denoms().map(Clone::clone) {
            s.supply.insert(d, 0);
        }
        let modules = [Address::module(ESCROW_MODULE), Address::module(FEE_POOL_MODULE)];
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
        }
    }

    pub(crate) fn commit(&mut self) {
        for_each_table!(self, commit_named);
    }

    pub(crate) fn rollback(&mut self) {
        for_each_table!(self, rollback_named);
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
}
