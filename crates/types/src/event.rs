//! Typed events: every state change the ledger makes is announced by one, so providers and
//! consoles can follow the market from the event stream alone.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::coin::{Coin, Price};
use crate::market::{BidId, DeploymentId, GroupId, GroupState, LeaseCloseReason, LeaseId, OrderId};
use crate::tx::{hex_array, Hash32};

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Transfer {
        from: Address,
        to: Address,
        amount: Coin,
    },
    FeePaid {
        payer: Address,
        amount: Coin,
    },
    ProviderCreated {
        owner: Address,
    },
    ProviderUpdated {
        owner: Address,
    },
    ProviderDeleted {
        owner: Address,
    },
    ProviderAttributesSigned {
        provider: Address,
        auditor: Address,
    },
    ProviderAttributesDeleted {
        provider: Address,
        auditor: Address,
    },
    DeploymentCreated {
        id: DeploymentId,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        version: Hash32,
    },
    DeploymentUpdated {
        id: DeploymentId,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        version: Hash32,
    },
    DeploymentClosed {
        id: DeploymentId,
    },
    GroupStateChanged {
        id: GroupId,
        state: GroupState,
    },
    OrderCreated {
        id: OrderId,
    },
    OrderClosed {
        id: OrderId,
    },
    BidCreated {
        id: BidId,
        price: Price,
    },
    /// A bid left the open state without becoming a lease (`lost` or `closed`); its deposit went back.
    BidClosed {
        id: BidId,
        lost: bool,
    },
    LeaseCreated {
        id: LeaseId,
        price: Price,
    },
    LeaseClosed {
        id: LeaseId,
        reason: LeaseCloseReason,
    },
    EscrowDeposited {
        id: DeploymentId,
        depositor: Address,
        amount: Coin,
    },
    EscrowRefunded {
        id: DeploymentId,
        to: Address,
        amount: Coin,
    },
    /// The escrow could not pay a full block: its leases went into grace (`lease_grace`), or
    /// closed with `insufficient_funds` where the grace period is 0.
    EscrowDepleted {
        id: DeploymentId,
    },
    /// The tenant set (or, with no threshold and no allowance, cleared) its escrow policy.
    EscrowPolicySet {
        id: DeploymentId,
        policy: crate::records::EscrowPolicySpec,
    },
    /// The runway fell to `low_blocks` or fewer: `runway_blocks` are left at current rates.
    /// Announced once per crossing; a rise above the threshold re-arms it.
    EscrowLow {
        id: DeploymentId,
        runway_blocks: u64,
        low_blocks: u64,
    },
    /// An automatic top-up moved `amount` from `from` (the owner) into the escrow under its
    /// allowance; `remaining` is left of the allowance.
    EscrowToppedUp {
        id: DeploymentId,
        from: Address,
        amount: Coin,
        #[serde(with = "crate::coin::u128_string")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Amount))]
        remaining: u128,
    },
    /// A top-up was due and could not be made (`reason`); the escrow runs on.
    EscrowTopUpSkipped {
        id: DeploymentId,
        reason: TopUpSkipped,
    },
    /// The escrow ran dry: the provider is not paid from now on and keeps the lease's volumes;
    /// at the end of block `until` the lease closes unless a deposit resumes it first.
    LeaseGrace {
        id: LeaseId,
        until: u64,
    },
    /// A deposit ended the grace period: the lease is active and paid again.
    LeaseResumed {
        id: LeaseId,
    },
    /// A provider was paid `paid`; `take` went to the fee pool.
    LeaseWithdrawn {
        id: LeaseId,
        paid: Coin,
        take: Coin,
    },
    /// A validator of the current epoch voted for a change of the validator set: `key` to
    /// have `power` (0: removed). `votes` of the `needed` have been cast in this epoch.
    ValidatorVoted {
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        voter: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        key: Hash32,
        power: u64,
        votes: u32,
        needed: u32,
    },
    /// At the end of an epoch: the validator set of epoch `epoch` (the epoch after next) is
    /// fixed, with the changes that passed.
    ValidatorSetScheduled {
        epoch: u64,
        first_height: u64,
        validators: Vec<crate::records::SetMember>,
    },
    /// train: a dataset was registered.
    DatasetRegistered {
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        root: Hash32,
        registrant: Address,
        chunks: u32,
    },
    /// train: a job opened; `budget` moved into the training escrow.
    TrainJobOpened {
        job: u64,
        owner: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        dataset: Hash32,
        budget: Coin,
    },
    /// train: a provider joined a job, bonding `bond`; it takes part from round `active_from`.
    TrainJoined {
        job: u64,
        worker: Address,
        bond: Coin,
        active_from: u32,
    },
    /// train: round `round` starts at height `start` from `checkpoint` with `workers`; its
    /// train phase ends at the end of height `train_ends` (earlier if all commit).
    TrainRoundStarted {
        job: u64,
        round: u32,
        start: u64,
        train_ends: u64,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        checkpoint: Hash32,
        workers: Vec<Address>,
    },
    /// train: a later phase of the round began; it ends at the end of height `ends_at` at the
    /// latest (the audit phase may run on while disputes are open).
    TrainPhaseStarted {
        job: u64,
        round: u32,
        phase: crate::train::Phase,
        ends_at: u64,
    },
    TrainCommitted {
        job: u64,
        round: u32,
        worker: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        commitment: Hash32,
    },
    TrainRevealed {
        job: u64,
        round: u32,
        worker: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        update: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        trace: Hash32,
    },
    /// train: reveal closed; the round's beacon and the audits it drew.
    TrainAuditsAssigned {
        job: u64,
        round: u32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        beacon: Hash32,
        audits: Vec<crate::train::AuditAssignment>,
    },
    TrainAuditPosted {
        job: u64,
        round: u32,
        target: Address,
        auditor: Address,
        verdict: crate::train::Verdict,
    },
    /// train: `target` disputed its failing audit; the states first differ at step `index`,
    /// which the `referees` recompute.
    TrainDisputed {
        job: u64,
        round: u32,
        target: Address,
        auditor: Address,
        index: u32,
        referees: Vec<Address>,
    },
    TrainRefereePosted {
        job: u64,
        round: u32,
        target: Address,
        referee: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        hash: Hash32,
    },
    /// train: how an audit settled when the audit phase ended.
    TrainAuditSettled {
        job: u64,
        round: u32,
        target: Address,
        auditor: Address,
        outcome: crate::train::AuditOutcome,
    },
    /// train: `amount` of `worker`'s bond was slashed: `rewarded` to `to` (the honest side of
    /// an audit, if any), the rest (`pooled`) to the fee pool.
    TrainSlashed {
        job: u64,
        round: u32,
        worker: Address,
        reason: crate::train::SlashReason,
        amount: Coin,
        to: Option<Address>,
        rewarded: Coin,
        pooled: Coin,
    },
    TrainCheckpointVoted {
        job: u64,
        round: u32,
        worker: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        checkpoint: Hash32,
        left_out: Vec<Address>,
    },
    /// train: the round settled with a checkpoint voted by more than half of its `included`
    /// workers; its provenance record is stored under (job, round).
    TrainCheckpoint {
        job: u64,
        round: u32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        checkpoint: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        previous: Hash32,
        included: u16,
        /// Workers whose updates the majority's vote left out as unfetchable (unpaid for them).
        unserved: Vec<Address>,
    },
    /// train: a worker or auditor was paid for the round's verified tokens; `take` went to the
    /// fee pool.
    TrainRewarded {
        job: u64,
        round: u32,
        worker: Address,
        tokens: u64,
        paid: Coin,
        take: Coin,
    },
    /// train: no checkpoint reached a majority: nobody is paid, the round's budget stays.
    TrainRoundFailed {
        job: u64,
        round: u32,
    },
    /// train: a member left the job; `refunded` is what came back of its bond.
    TrainMemberLeft {
        job: u64,
        worker: Address,
        reason: crate::train::LeaveReason,
        refunded: Coin,
    },
    /// train: too few members for round `round`: the job recruits again.
    TrainJobWaiting {
        job: u64,
        round: u32,
    },
    /// train: the job ended (`cancelled` by its owner, or every round ran); `refunded` of the
    /// budget went back to the owner.
    TrainJobEnded {
        job: u64,
        cancelled: bool,
        refunded: Coin,
    },
}

/// Why a due top-up was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TopUpSkipped {
    /// The allowance is spent.
    AllowanceSpent,
    /// The allowance expired.
    Expired,
    /// The owner's account holds none of the denomination.
    NoFunds,
}
