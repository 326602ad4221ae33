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
    /// The escrow could not pay a full block: its leases closed with `insufficient_funds`.
    EscrowDepleted {
        id: DeploymentId,
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
}
