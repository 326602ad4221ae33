//! Errors of each module. Every variant has a stable numeric code within its codespace (the
//! module), which receipts carry; codes are never reused or renumbered.

use pazar_types::market::{BidState, DeploymentId, GroupId, GroupState, LeaseState, Mismatch, OrderState};
use pazar_types::train::{JobState, Phase};
use pazar_types::{Address, BidId, Coin, DecodeError, Denom, Hash32, OrderId, Price, SignatureError};

use pazar_types::market::LeaseCloseReason;
type LeaseId = BidId;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("transaction is for chain {got:?}, this chain is {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("bad signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("account sequence mismatch: expected {expected}, got {got} (query the account for its next sequence)")]
    WrongSequence { expected: u64, got: u64 },
    #[error("fee denomination {0} is not accepted; pay fees in the native or stable denomination")]
    FeeDenom(Denom),
    #[error("fee {got} is below the minimum {min} for this transaction")]
    FeeTooLow { min: Coin, got: Coin },
    #[error("cannot pay fee {need}: balance is {have}")]
    FeeUnpayable { need: Coin, have: u128 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    #[error("unknown denomination {0}")]
    UnknownDenom(Denom),
    #[error("insufficient funds: {address} has {have}{}, needs {need}", need.denom)]
    InsufficientFunds { address: Address, need: Coin, have: u128 },
    #[error("amount overflows the largest representable balance")]
    Overflow,
    #[error("{0} is a module account and cannot receive transfers")]
    ModuleRecipient(Address),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider {0} is already registered; use update_provider")]
    AlreadyExists(Address),
    #[error("{0} is not a registered provider")]
    NotFound(Address),
    #[error("provider still has {open_bids} open bids and {active_leases} active leases; close them first")]
    Busy { open_bids: u32, active_leases: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("{0} is not a registered provider")]
    ProviderNotFound(Address),
    #[error("auditor {auditor} has signed no attributes of provider {provider}")]
    NoAttestation { provider: Address, auditor: Address },
    #[error("auditor has not signed attribute {0:?}")]
    AttributeNotFound(String),
    #[error("an attestation may hold at most {0} attributes")]
    TooManyAttributes(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarketError {
    #[error("deployment {0} already exists; choose another dseq")]
    DeploymentExists(DeploymentId),
    #[error("deployment {0} not found")]
    DeploymentNotFound(DeploymentId),
    #[error("deployment {0} is closed")]
    DeploymentClosed(DeploymentId),
    #[error("deployment already has this version; nothing to update")]
    SameVersion,
    #[error("group {0} not found")]
    GroupNotFound(GroupId),
    #[error("group {id} is {state:?}: cannot {action}")]
    GroupState {
        id: GroupId,
        state: GroupState,
        action: &'static str,
    },
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    #[error("order {id} is {state:?}, not open: bids are only accepted on open orders")]
    OrderNotOpen { id: OrderId, state: OrderState },
    #[error("provider already bid on order {0}")]
    BidExists(OrderId),
    #[error("bid {0} not found")]
    BidNotFound(BidId),
    #[error("bid {id} is {state:?}, not open")]
    BidNotOpen { id: BidId, state: BidState },
    #[error("bid {0} is active (it became a lease): close the lease instead")]
    BidActive(BidId),
    #[error("order {order} already has the maximum of {max} bids")]
    TooManyBids { order: OrderId, max: u32 },
    #[error("{0} is not a registered provider; create the provider first")]
    NotProvider(Address),
    #[error("price denomination {got} does not match the order's {want}")]
    PriceDenom { want: Denom, got: Denom },
    #[error("bid price {got} per block exceeds the order's maximum {max}")]
    PriceAboveMax { max: Price, got: Price },
    #[error("provider does not satisfy the order: {0}")]
    RequirementsNotMet(Mismatch),
    #[error("{sender} does not own deployment {id}")]
    NotOwner { id: DeploymentId, sender: Address },
    #[error("only the bidding provider may close bid {0}")]
    NotBidProvider(BidId),
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("lease {id} is {state:?}, not active")]
    LeaseNotActive { id: LeaseId, state: LeaseState },
    #[error("{0} is neither the tenant nor the provider of this lease")]
    NotLeaseParty(Address),
    #[error("close reason {reason:?} cannot be given by the {who}")]
    BadCloseReason {
        reason: LeaseCloseReason,
        who: &'static str,
    },
    #[error("auto-accept delay {got} exceeds the maximum of {max} blocks")]
    AutoAcceptTooLong { got: u32, max: u32 },
    #[error("price denomination {0} is not accepted on this chain")]
    UnknownPriceDenom(Denom),
    #[error(
        "group {group}: signedBy.allOf names {auditor}, who has audited no provider, so no provider \
         can ever satisfy it; name an auditor that has (a provider's audits list them)"
    )]
    UnknownAuditor { group: String, auditor: Address },
    #[error(
        "group {group}: none of the {count} auditors in signedBy.anyOf has audited a provider, so no \
         provider can ever satisfy it; name an auditor that has (a provider's audits list them)"
    )]
    NoKnownAuditor { group: String, count: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    #[error("deposit {got} is below the minimum {min}")]
    DepositTooSmall { min: Coin, got: Coin },
    #[error("escrow is in {want}; deposit of {got} has the wrong denomination")]
    DenomMismatch { want: Denom, got: Denom },
    #[error("escrow account already has the maximum of {0} depositors")]
    TooManyDepositors(usize),
    #[error("bid deposit {got} is below the minimum {min}")]
    BidDepositTooSmall { min: Coin, got: Coin },
    #[error("escrow holds {balance}{denom}, less than one block at {per_block}{denom} per block; deposit first")]
    InsufficientEscrow {
        balance: u128,
        per_block: u128,
        denom: Denom,
    },
    #[error("only the lease's provider may withdraw from it")]
    NotLeaseProvider,
    #[error("no escrow payment for lease {0}")]
    PaymentNotFound(LeaseId),
    #[error("escrow arithmetic overflow")]
    Overflow,
    #[error("deployment {0} has no escrow account")]
    AccountNotFound(DeploymentId),
    #[error("the allowance expires at height {expires_at}, which is not after the current height {height}")]
    AllowanceExpired { expires_at: u64, height: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidatorError {
    #[error("this chain has no validator set on the ledger (a single validator signs its blocks)")]
    NoSet,
    #[error("{0} is not the account of a validator of the current epoch: only they vote on the set")]
    NotValidator(Address),
    #[error("the validator already has power {power} in the next epoch's set: nothing to vote on")]
    NoChange { power: u64 },
    #[error("this validator already voted for this change in this epoch")]
    AlreadyVoted,
    #[error("this validator already has {0} votes open in this epoch (the most); they end with the epoch")]
    TooManyProposals(usize),
}

/// Lower-case hex of a hash, for messages.
fn hex(h: &Hash32) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrainError {
    #[error("dataset {} is already registered", hex(.0))]
    DatasetExists(Hash32),
    #[error("no dataset with root {} is registered; register it first", hex(.0))]
    DatasetNotFound(Hash32),
    #[error("training job {0} not found")]
    JobNotFound(u64),
    #[error("training job {0} has ended")]
    JobEnded(u64),
    #[error("{0} is not a registered provider: workers are providers, create the provider first")]
    NotProvider(Address),
    #[error("already a member of job {0}")]
    AlreadyMember(u64),
    #[error("job {job} already has its maximum of {max} workers")]
    JobFull { job: u64, max: u16 },
    #[error("{sender} is not a member of job {job}")]
    NotMember { job: u64, sender: Address },
    #[error("already leaving job {0}: the bond comes back when the round settles")]
    AlreadyLeaving(u64),
    #[error("job {job} is {state:?}, not running a round")]
    NotRunning { job: u64, state: JobState },
    #[error("job is in round {current}, not {got}")]
    WrongRound { current: u32, got: u32 },
    #[error("the round is in its {phase:?} phase: cannot {action}")]
    WrongPhase { phase: Phase, action: &'static str },
    #[error("the round starts at height {start}")]
    RoundNotStarted { start: u64 },
    #[error("{0} is not a worker of this round (a member joining mid-round takes part from the next)")]
    NotInRound(Address),
    #[error("already committed in this round")]
    AlreadyCommitted,
    #[error("no commitment to reveal in this round")]
    NotCommitted,
    #[error("already revealed in this round")]
    AlreadyRevealed,
    #[error("the reveal does not open the commitment {}", hex(.0))]
    CommitmentMismatch(Hash32),
    #[error("ef_in {} is not the residual {} carried out of the worker's last included round", hex(.got), hex(.expected))]
    EfChainBroken { expected: Hash32, got: Hash32 },
    #[error("no audit of {0} is assigned in this round")]
    NoAssignment(Address),
    #[error("the audit of this target is assigned to {0}")]
    NotAuditor(Address),
    #[error("already posted")]
    AlreadyPosted,
    #[error("audits could be posted until height {0}")]
    AuditClosed(u64),
    #[error("{got} state hashes for segment {segment}; a failing verdict on it gives exactly {want}")]
    VerdictSteps { segment: u32, want: usize, got: usize },
    #[error("the audit did not fail: nothing to dispute")]
    NotFailed,
    #[error("the audit is already disputed")]
    AlreadyDisputed,
    #[error("the window closed at height {0}")]
    WindowClosed(u64),
    #[error("the dispute must give {want} state hashes, as the auditor did; got {got}")]
    StepsLength { want: usize, got: usize },
    #[error("the dispute's state hashes equal the auditor's: nothing to dispute")]
    NothingToDispute,
    #[error("the audit of {0} is not disputed")]
    NoDispute(Address),
    #[error("{0} is not a referee of this dispute")]
    NotReferee(Address),
    #[error("only workers whose update is included in the round vote for its checkpoint")]
    NotIncluded,
    #[error("already voted in this round")]
    AlreadyVoted,
    #[error("{sender} does not own job {job}")]
    NotOwner { job: u64, sender: Address },
    #[error("job {job} is {state:?}: only a recruiting job can be cancelled")]
    NotRecruiting { job: u64, state: JobState },
    #[error("training escrow arithmetic overflow")]
    Overflow,
    #[error(
        "segment {got} does not exist: a round of this job has segments 0..={max} ({max} is the compression step)"
    )]
    NoSuchSegment { got: u32, max: u32 },
    #[error(
        "the failing verdict gives {got} boundary hashes of the target's trace; a round of this job has {want} (segments + 1)"
    )]
    TraceLength { want: usize, got: usize },
    #[error(
        "the failing verdict's trace hashes to {}, not to the trace {} the target revealed: give the target's committed trace", hex(.got), hex(.committed)
    )]
    TraceMismatch { committed: Hash32, got: Hash32 },
    #[error(
        "the auditor's segment {segment} ends at the target's committed boundary {}: no mismatch to claim", hex(.boundary)
    )]
    BoundaryMatches { segment: u32, boundary: Hash32 },
    #[error("the compression step's hashes equal the update and ef_out the target revealed: no mismatch to claim")]
    CompressionMatches,
    #[error("a dispute must end where the worker's own commitment does (its trace's boundary, or its revealed update and ef_out)")]
    DisputeContradictsCommitment,
    #[error(
        "the pass's loss digest does not open the seal {0} revealed: a pass must carry the digest of the losses \
         of the whole round, replayed"
    )]
    SealNotOpened(Address),
    #[error("{0} is not another included worker of this round: a vote can leave out only those updates")]
    NotLeavable(Address),
    #[error("left_out must be in strictly ascending address order")]
    LeftOutOrder,
}

impl TrainError {
    fn code(&self) -> u32 {
        match self {
            TrainError::DatasetExists(_) => 1,
            TrainError::DatasetNotFound(_) => 2,
            TrainError::JobNotFound(_) => 3,
            TrainError::JobEnded(_) => 4,
            TrainError::NotProvider(_) => 5,
            TrainError::AlreadyMember(_) => 6,
            TrainError::JobFull { .. } => 7,
            TrainError::NotMember { .. } => 8,
            TrainError::AlreadyLeaving(_) => 9,
            TrainError::NotRunning { .. } => 10,
            TrainError::WrongRound { .. } => 11,
            TrainError::WrongPhase { .. } => 12,
            TrainError::RoundNotStarted { .. } => 13,
            TrainError::NotInRound(_) => 14,
            TrainError::AlreadyCommitted => 15,
            TrainError::NotCommitted => 16,
            TrainError::AlreadyRevealed => 17,
            TrainError::CommitmentMismatch(_) => 18,
            TrainError::EfChainBroken { .. } => 19,
            TrainError::NoAssignment(_) => 20,
            TrainError::NotAuditor(_) => 21,
            TrainError::AlreadyPosted => 22,
            TrainError::AuditClosed(_) => 23,
            TrainError::VerdictSteps { .. } => 24,
            TrainError::NotFailed => 25,
            TrainError::AlreadyDisputed => 26,
            TrainError::WindowClosed(_) => 27,
            TrainError::StepsLength { .. } => 28,
            TrainError::NothingToDispute => 29,
            TrainError::NoDispute(_) => 30,
            TrainError::NotReferee(_) => 31,
            TrainError::NotIncluded => 32,
            TrainError::AlreadyVoted => 33,
            TrainError::NotOwner { .. } => 34,
            TrainError::NotRecruiting { .. } => 35,
            TrainError::Overflow => 36,
            TrainError::NoSuchSegment { .. } => 37,
            TrainError::TraceLength { .. } => 38,
            TrainError::TraceMismatch { .. } => 39,
            TrainError::BoundaryMatches { .. } => 40,
            TrainError::CompressionMatches => 41,
            TrainError::DisputeContradictsCommitment => 42,
            TrainError::SealNotOpened(_) => 43,
            TrainError::NotLeavable(_) => 44,
            TrainError::LeftOutOrder => 45,
        }
    }
}

/// Why a transaction failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Bank(#[from] BankError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Market(#[from] MarketError),
    #[error(transparent)]
    Escrow(#[from] EscrowError),
    #[error(transparent)]
    Validators(#[from] ValidatorError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

impl TxError {
    pub fn codespace(&self) -> &'static str {
        match self {
            TxError::Auth(_) => "auth",
            TxError::Bank(_) => "bank",
            TxError::Provider(_) => "provider",
            TxError::Audit(_) => "audit",
            TxError::Market(_) => "market",
            TxError::Escrow(_) => "escrow",
            TxError::Validators(_) => "validators",
            TxError::Train(_) => "train",
        }
    }

    /// Stable non-zero code within the codespace.
    pub fn code(&self) -> u32 {
        match self {
            TxError::Auth(e) => match e {
                AuthError::Decode(_) => 1,
                AuthError::WrongChain { .. } => 2,
                AuthError::Signature(_) => 3,
                AuthError::WrongSequence { .. } => 4,
                AuthError::FeeDenom(_) => 5,
                AuthError::FeeTooLow { .. } => 6,
                AuthError::FeeUnpayable { .. } => 7,
            },
            TxError::Bank(e) => match e {
                BankError::UnknownDenom(_) => 1,
                BankError::InsufficientFunds { .. } => 2,
                BankError::Overflow => 3,
                BankError::ModuleRecipient(_) => 4,
            },
            TxError::Provider(e) => match e {
                ProviderError::AlreadyExists(_) => 1,
                ProviderError::NotFound(_) => 2,
                ProviderError::Busy { .. } => 3,
            },
            TxError::Audit(e) => match e {
                AuditError::ProviderNotFound(_) => 1,
                AuditError::NoAttestation { .. } => 2,
                AuditError::AttributeNotFound(_) => 3,
                AuditError::TooManyAttributes(_) => 4,
            },
            TxError::Market(e) => match e {
                MarketError::DeploymentExists(_) => 1,
                MarketError::DeploymentNotFound(_) => 2,
                MarketError::DeploymentClosed(_) => 3,
                MarketError::SameVersion => 4,
                MarketError::GroupNotFound(_) => 5,
                MarketError::GroupState { .. } => 6,
                MarketError::OrderNotFound(_) => 7,
                MarketError::OrderNotOpen { .. } => 8,
                MarketError::BidExists(_) => 9,
                MarketError::BidNotFound(_) => 10,
                MarketError::BidNotOpen { .. } => 11,
                MarketError::BidActive(_) => 12,
                MarketError::TooManyBids { .. } => 13,
                MarketError::NotProvider(_) => 14,
                MarketError::PriceDenom { .. } => 15,
                MarketError::PriceAboveMax { .. } => 16,
                MarketError::RequirementsNotMet(_) => 17,
                MarketError::NotOwner { .. } => 18,
                MarketError::NotBidProvider(_) => 19,
                MarketError::LeaseNotFound(_) => 20,
                MarketError::LeaseNotActive { .. } => 21,
                MarketError::NotLeaseParty(_) => 22,
                MarketError::BadCloseReason { .. } => 23,
                MarketError::AutoAcceptTooLong { .. } => 24,
                MarketError::UnknownPriceDenom(_) => 25,
                MarketError::UnknownAuditor { .. } => 26,
                MarketError::NoKnownAuditor { .. } => 27,
            },
            TxError::Escrow(e) => match e {
                EscrowError::DepositTooSmall { .. } => 1,
                EscrowError::DenomMismatch { .. } => 2,
                EscrowError::TooManyDepositors(_) => 3,
                EscrowError::BidDepositTooSmall { .. } => 4,
                EscrowError::InsufficientEscrow { .. } => 5,
                EscrowError::NotLeaseProvider => 6,
                EscrowError::PaymentNotFound(_) => 7,
                EscrowError::Overflow => 8,
                EscrowError::AccountNotFound(_) => 9,
                EscrowError::AllowanceExpired { .. } => 10,
            },
            TxError::Validators(e) => match e {
                ValidatorError::NoSet => 1,
                ValidatorError::NotValidator(_) => 2,
                ValidatorError::NoChange { .. } => 3,
                ValidatorError::AlreadyVoted => 4,
                ValidatorError::TooManyProposals(_) => 5,
            },
            TxError::Train(e) => e.code(),
        }
    }
}

/// Why a whole block was refused (nothing in it was applied).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block is for chain {got:?}, this chain is {expected:?}")]
    WrongChain { expected: String, got: String },
    #[error("block height {got} does not follow the current height {current}")]
    WrongHeight { current: u64, got: u64 },
    #[error("block evidence refused: {0}")]
    Evidence(crate::evidence::EvidenceError),
}
