//! The records the ledger keeps (accounts, providers, deployments, groups, orders, bids,
//! leases, escrow accounts and payments) and its parameters. They live here, not in the ledger,
//! because they cross processes: the node serves them and every client reads them back.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::market::{BidState, DeploymentState, GroupSpec, GroupState, LeaseCloseReason, LeaseState, OrderState};
use crate::{Address, Attribute, Coin, Denom, Event, Hash32, LeaseId, Price, ProviderInfo};

/// Parameters of one accepted denomination.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DenomParams {
    pub denom: Denom,
    /// Share of every provider payout that goes to the fee pool, in basis points.
    pub take_bps: u32,
    /// Fee per message of a transaction.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub min_fee_per_msg: u128,
    /// Smallest initial deposit of a deployment priced in this denomination.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub min_deployment_deposit: u128,
    /// Smallest deposit a provider must lock with a bid.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub min_bid_deposit: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Blocks a lease whose escrow ran dry stays in grace (provider unpaid, volumes kept)
    /// before it closes; a deposit within them resumes it. 0: it closes at once.
    #[serde(default = "default_grace_blocks")]
    pub grace_blocks: u64,
    /// Blocks of every live lease of a deployment that its escrow must pay before leases in
    /// grace resume (at least 1; a value above `grace_blocks` counts as `grace_blocks`). A
    /// smaller balance stays in the escrow and the grace clock runs on, so a deposit of one
    /// block's price cannot buy a fresh grace period: each grace is paid for by at least
    /// `min(resume_min_blocks, grace_blocks)` blocks.
    #[serde(default = "default_resume_min_blocks")]
    pub resume_min_blocks: u64,
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

/// Default of [`Params::grace_blocks`]: an hour of one-second blocks.
pub const DEFAULT_GRACE_BLOCKS: u64 = 3_600;

fn default_grace_blocks() -> u64 {
    DEFAULT_GRACE_BLOCKS
}

/// Default of [`Params::resume_min_blocks`]: as long as the default grace, so a provider is
/// paid at least as long as it holds a lease unpaid, however many times it runs dry.
pub const DEFAULT_RESUME_MIN_BLOCKS: u64 = DEFAULT_GRACE_BLOCKS;

const _: () = assert!(DEFAULT_RESUME_MIN_BLOCKS >= DEFAULT_GRACE_BLOCKS);

fn default_resume_min_blocks() -> u64 {
    DEFAULT_RESUME_MIN_BLOCKS
}

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
            grace_blocks: DEFAULT_GRACE_BLOCKS,
            resume_min_blocks: DEFAULT_RESUME_MIN_BLOCKS,
        }
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

/// One validator of an epoch's set: the ed25519 key that signs its consensus votes (its
/// account is this key's) and its voting power. Simplex counts every member's vote once; the
/// power is what staking will weigh and select by.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetMember {
    #[serde(with = "crate::tx::hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub key: Hash32,
    pub power: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Account {
    /// The sequence the account's next transaction must carry.
    pub sequence: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Provider {
    pub host_uri: String,
    #[serde(with = "crate::tx::hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub tls_fingerprint: Hash32,
    pub attributes: Vec<Attribute>,
    pub info: ProviderInfo,
    pub created_at: u64,
}

/// Counters that decide whether a provider may deregister.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderLoad {
    pub open_bids: u32,
    pub active_leases: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deployment {
    pub state: DeploymentState,
    #[serde(with = "crate::tx::hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub version: Hash32,
    pub created_at: u64,
    pub groups: u32,
    pub auto_accept_after: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Group {
    pub state: GroupState,
    pub spec: GroupSpec,
    pub created_at: u64,
    /// The group's open or active order, if any (at most one at a time).
    pub current_order: Option<u32>,
    /// Orders ever created for this group; the next one gets `orders + 1`.
    pub orders: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    pub state: LeaseState,
    pub price: Price,
    pub created_at: u64,
    pub closed_at: Option<u64>,
    pub reason: Option<LeaseCloseReason>,
    /// In grace: the height at whose end the lease closes unless a deposit resumes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<u64>,
}

/// What a tenant asked of its deployment's escrow ([`crate::Msg::SetEscrowPolicy`]).
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowPolicySpec {
    /// Announce `escrow_low` when the runway falls to this many blocks or fewer (0: never,
    /// except as a top-up's trigger at the last block).
    pub low_blocks: u64,
    /// Refill the escrow from the owner's account when the runway falls that low.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_up: Option<TopUpSpec>,
}

/// An allowance for automatic top-ups: at most `limit` in all, each top-up bringing the runway
/// back to `target_blocks`, until the end of block `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopUpSpec {
    pub limit: Coin,
    pub target_blocks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Most blocks a runway threshold or top-up target may name: about 31 years of one-second
/// blocks. Keeps every "blocks from now" sum far from overflowing.
pub const MAX_RUNWAY_BLOCKS: u64 = 1 << 30;

impl EscrowPolicySpec {
    /// Stateless checks: thresholds within [`MAX_RUNWAY_BLOCKS`], a top-up target above the
    /// threshold (a top-up must lift the runway out of the alert, or it would fire again at
    /// once), a non-zero limit.
    pub fn validate(&self, field: &str) -> Result<(), crate::market::SpecError> {
        let bad = |f: &str, r: String| {
            Err(crate::market::SpecError::Invalid {
                field: format!("{field}.{f}"),
                reason: r,
            })
        };
        if self.low_blocks > MAX_RUNWAY_BLOCKS {
            return bad("low_blocks", format!("must be at most {MAX_RUNWAY_BLOCKS}"));
        }
        if let Some(t) = &self.top_up {
            if t.limit.amount == 0 {
                return bad("top_up.limit", "must be greater than zero".into());
            }
            if t.target_blocks > MAX_RUNWAY_BLOCKS {
                return bad("top_up.target_blocks", format!("must be at most {MAX_RUNWAY_BLOCKS}"));
            }
            if t.target_blocks <= self.low_blocks {
                return bad(
                    "top_up.target_blocks",
                    format!("must be greater than low_blocks ({})", self.low_blocks),
                );
            }
        }
        Ok(())
    }
}

/// A deployment's escrow policy as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowPolicy {
    pub low_blocks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_up: Option<TopUpAllowance>,
    /// `escrow_low` was announced and the runway has not risen above the threshold since.
    pub alerted: bool,
    /// Height indexed for the next crossing of the threshold (`None`: nothing to watch).
    pub low_at: Option<u64>,
}

/// What is left of an allowance.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TopUpAllowance {
    /// Still allowed, in the escrow's denomination.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub remaining: u128,
    /// Moved into the escrow so far.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub spent: u128,
    pub target_blocks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Deposit {
    pub depositor: Address,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub amount: u128,
}

/// The escrow of one deployment. Funds leave it only to payments (as leases accrue) and as
/// refunds; `deposited = balance + transferred + refunded` always holds.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowAccount {
    pub denom: Denom,
    /// Σ `deposits[].amount`.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub balance: u128,
    /// What remains of each deposit, spent first-in first-out and refunded to its depositor.
    pub deposits: Vec<Deposit>,
    /// Height up to which every open payment has been paid.
    pub settled_at: u64,
    /// Leases currently paid from this account, in id order.
    pub open_payments: Vec<LeaseId>,
    /// First height at which the balance cannot pay a full block (indexed for end-of-block).
    pub depletes_at: Option<u64>,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub deposited: u128,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub transferred: u128,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub refunded: u128,
    pub closed: bool,
}

/// What one lease has been paid. `received = balance + withdrawn` where `withdrawn` includes the
/// take; the take is `floor(withdrawn × take_bps / 10000)` at all times, so no rounding drifts.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Payment {
    /// Price per block.
    pub rate: Price,
    /// Fraction of a base unit owed but not yet transferred (scaled by 10^18).
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub carry: u128,
    /// Accrued and not yet withdrawn.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub balance: u128,
    /// Total moved in from the escrow account.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub received: u128,
    /// Gross withdrawn (provider share plus take).
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub withdrawn: u128,
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub take: u128,
    pub take_bps: u32,
    /// Owed when the escrow ran dry and not paid.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub unsettled: u128,
    pub open: bool,
    /// Height the current paid stretch began: the lease's start, or the block a deposit
    /// resumed it from grace.
    #[serde(default)]
    pub since: u64,
    /// Accrued (received plus unsettled) in the stretches before `since`.
    #[serde(default, with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub before: u128,
    /// Height the payment last stopped (the escrow ran dry, or the lease ended); `None` while
    /// it is paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<u64>,
}

/// A read-only projection of an escrow account at some height, for queries and runway alerts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowView {
    pub denom: Denom,
    /// Balance left after settling up to the view height.
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub balance: u128,
    /// Owed to leases since the last settlement (included in neither balance nor payments).
    #[serde(with = "crate::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
    pub accrued: u128,
    /// Blocks the balance still pays at the current rates (`None` with no open lease).
    pub runway_blocks: Option<u64>,
    /// Height at which the account runs dry (`None` with no open lease).
    pub depletes_at: Option<u64>,
    /// The owner's runway policy: alert threshold, top-up allowance and what is left of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<EscrowPolicy>,
    /// `runway_blocks` as wall time at the chain's recent block time, in milliseconds. The
    /// ledger has no clock: the node fills this in from its last blocks' timestamps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runway_ms: Option<u64>,
}

impl EscrowView {
    /// Fills in [`EscrowView::runway_ms`] at `block_ms` milliseconds a block.
    pub fn with_block_time(mut self, block_ms: Option<u64>) -> EscrowView {
        self.runway_ms = self.runway_blocks.zip(block_ms).map(|(b, ms)| b.saturating_mul(ms));
        self
    }
}

/// The outcome of one transaction.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Receipt {
    #[serde(with = "crate::tx::hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
    pub tx_hash: Hash32,
    /// 0 on success, else the error's code within `codespace`.
    pub code: u32,
    pub codespace: String,
    pub log: String,
    /// The fee charged (`None` when the transaction was refused before paying it).
    pub fee: Option<Coin>,
    pub events: Vec<Event>,
}

/// Receipts of a block's transactions and the events of its end-of-block work.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockOutcome {
    pub receipts: Vec<Receipt>,
    /// Events of the end-of-block work (escrow depletion, auto-accepted bids, expiries). Named
    /// as the RPC and the event stream name them; Borsh encodes no field names, so blocks
    /// stored before the rename read back unchanged.
    pub end_block_events: Vec<Event>,
}

impl Receipt {
    pub fn is_ok(&self) -> bool {
        self.code == 0
    }
}
