//! The node's RPC: what each endpoint answers. The node serializes these, clients deserialize
//! them; the JSON shape of each is what the OpenAPI document describes.
//!
//! Hashes and byte strings travel as lowercase hex, amounts as decimal strings (they exceed
//! JavaScript's safe integers), everything else as plain JSON.

use serde::{Deserialize, Serialize};

use pazar_types::market::GroupSpec;
use pazar_types::records::{
    Bid, Deployment, EscrowAccount, EscrowView, Group, Lease, Order, Params, Payment, Provider, ProviderLoad, Receipt,
};
use pazar_types::train::{hex_opt, AuditRecord, DatasetRecord, Member, Phase, RoundRecord, RoundWork, TrainJob};
use pazar_types::tx::hex_array;
use pazar_types::{Address, Attribute, BidId, Coin, Denom, DeploymentId, Event, Hash32, Header, LeaseId, OrderId, Tx};

use crate::error::ErrorBody;
use crate::proof::Proof;

/// Most items one list query returns; a longer list comes in pages (`next`, `?cursor=`).
pub const MAX_LIST: usize = 1_000;
/// Items a list query returns when it names no `limit`.
pub const DEFAULT_LIST: usize = 100;

/// `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Status {
    pub chain_id: String,
    /// SHA-256 of the chain's genesis file: with `chain_id`, what names the chain (votes and
    /// certificates are signed under both).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub genesis_hash: Hash32,
    /// Height of the last committed block.
    pub height: u64,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub block_hash: Hash32,
    /// State root after the last committed block.
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub state_root: Hash32,
    pub time_ms: u64,
    pub mempool: MempoolSize,
    pub block_time_ms: u64,
    /// The node's software version.
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MempoolSize {
    pub txs: u64,
    pub bytes: u64,
}

/// Where a transaction is: what `POST /txs`, `POST /txs/batch` and `GET /txs/{hash}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TxState {
    /// Admitted to the mempool, not yet in a block.
    Pending,
    /// In block `height` at position `index`, with its receipt (which says whether it succeeded).
    Committed { height: u64, index: u32, receipt: Receipt },
    /// Left the mempool without being committed (expired, or made invalid by a block).
    Dropped { reason: String },
    /// Not admitted (in a batch answer only; a single submission answers with an error).
    Refused { error: ErrorBody },
}

/// One transaction's state, by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxResult {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub hash: Hash32,
    #[serde(flatten)]
    pub state: TxState,
}

/// `POST /txs/batch`: one result per submitted transaction, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchResults {
    pub results: Vec<TxResult>,
}

/// `POST /txs/simulate`: what would become of a signed transaction submitted now, found by
/// running it on a copy of the committed state (after the sender's pending transactions that
/// precede it), so a transaction that would fail is caught before it costs a fee.
///
/// `admission` is the error `POST /txs` would answer (wrong chain, fee, sequence, payability,
/// signature, duplicate), if any: the transaction would then never reach a block. `receipt` is
/// what block `height` would record were it run there: its code, log and events (for a refused
/// transaction, the ledger's own reason: a send of more than the balance is `unpayable` to the
/// mempool and `insufficient funds` to the ledger).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SimulateResult {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub hash: Hash32,
    /// Admitted, and its receipt's code is 0.
    pub would_succeed: bool,
    /// The height it was run at: the next block's.
    pub height: u64,
    pub receipt: Receipt,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admission: Option<ErrorBody>,
}

/// `GET /txs/{hash}`: the state, and the decoded transaction once committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxLookup {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub hash: Hash32,
    #[serde(flatten)]
    pub state: TxState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<Tx>,
}

/// `GET /blocks/{height}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BlockResponse {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub hash: Hash32,
    pub header: Header,
    /// Hashes of the block's transactions, in order (hex).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<pazar_types::openapi::Hash>))]
    pub txs: Vec<String>,
    pub receipts: Vec<Receipt>,
    /// Events of the block's end-of-block work (escrow depletion, expiries, auto-accepted bids).
    pub end_block_events: Vec<Event>,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub state_root_after: Hash32,
}

/// `GET /params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ParamsResponse {
    pub height: u64,
    pub params: Params,
}

/// One validator of an epoch's set, with what the ledger recorded of its conduct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorEntry {
    /// Its ed25519 consensus key (its account is this key's address).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub key: Hash32,
    pub account: Address,
    pub power: u64,
    /// Commits whose certificate holds its vote, and those that do not.
    pub signed: u64,
    pub missed: u64,
    /// Height of the last commit it missed (0: none).
    pub last_missed: u64,
    /// Views in which it signed conflicting votes.
    pub double_signs: u64,
}

/// The validator set of one epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EpochSet {
    pub epoch: u64,
    /// The epoch's first height.
    pub first_height: u64,
    /// The set's name (SHA-256 of its ledger entry): what a node that state-syncs past the
    /// epochs its genesis names is given as its trust anchor (`state_sync_trust`).
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub set_hash: Hash32,
    /// In consensus order (by key).
    pub validators: Vec<ValidatorEntry>,
}

/// A change of the set voted on in the current epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorVote {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub key: Hash32,
    /// The power voted for (0: removal).
    pub power: u64,
    /// Consensus keys of the validators who voted for it, hex.
    pub voters: Vec<String>,
    /// Votes it needs to pass by the epoch's end.
    pub needed: u32,
}

/// `GET /validators`: the sets of the current epoch and of the epochs already fixed after it,
/// and the changes voted on now. A chain without a set on its ledger (one validator signing
/// alone) has no epochs: `epoch_length` is absent and `sets` empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidatorsResponse {
    pub height: u64,
    pub epoch_length: Option<u64>,
    /// The epoch of the next block.
    pub epoch: u64,
    pub sets: Vec<EpochSet>,
    pub votes: Vec<ValidatorVote>,
}

/// `GET /supply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupplyResponse {
    pub height: u64,
    pub supply: Vec<Coin>,
}

/// A single-object answer at a height, with a Merkle proof of its store entry when asked
/// (`?prove=true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Proven<T> {
    #[serde(flatten)]
    pub item: T,
    pub height: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

/// `GET /accounts/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountInfo {
    pub address: Address,
    /// The sequence the account's next transaction must carry.
    pub sequence: u64,
    pub balances: Vec<Coin>,
}

/// `GET /accounts/{address}/balances/{denom}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Balance {
    pub address: Address,
    pub denom: Denom,
    #[serde(with = "pazar_types::coin::u128_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Amount))]
    pub amount: u128,
}

/// A provider in `GET /providers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderEntry {
    pub owner: Address,
    pub provider: Provider,
    pub load: ProviderLoad,
}

/// The attributes one auditor signed for a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Audit {
    pub auditor: Address,
    pub attributes: Vec<Attribute>,
}

/// `GET /providers/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderDetail {
    pub owner: Address,
    pub provider: Provider,
    pub load: ProviderLoad,
    pub audits: Vec<Audit>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupEntry {
    pub gseq: u32,
    pub group: Group,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseRef {
    pub id: LeaseId,
    pub lease: Lease,
}

/// A deployment with its groups, leases and escrow: an item of `GET /deployments` and the
/// answer of `GET /deployments/{owner}/{dseq}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentDetail {
    pub id: DeploymentId,
    pub deployment: Deployment,
    pub groups: Vec<GroupEntry>,
    pub leases: Vec<LeaseRef>,
    pub escrow: Option<EscrowView>,
}

/// `GET /escrow/{owner}/{dseq}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EscrowDetail {
    pub id: DeploymentId,
    /// Settled up to the answer's height.
    pub view: Option<EscrowView>,
    /// As stored (settled at `account.settled_at`).
    pub account: EscrowAccount,
}

/// An order in `GET /orders`, with the group spec it asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderEntry {
    pub id: OrderId,
    pub order: Order,
    pub group: Option<GroupSpec>,
}

/// A bid in `GET /bids`, `GET /bids/{...}` and an order's bids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BidEntry {
    pub id: BidId,
    pub bid: Bid,
}

/// `GET /orders/{owner}/{dseq}/{gseq}/{oseq}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderDetail {
    pub id: OrderId,
    pub order: Order,
    pub group: Option<GroupSpec>,
    pub bids: Vec<BidEntry>,
}

/// A lease in `GET /leases`, with what it has been paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseEntry {
    pub id: LeaseId,
    pub lease: Lease,
    pub payment: Option<Payment>,
}

/// `GET /leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}`: the lease, its payment and its
/// deployment's escrow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseDetail {
    pub id: LeaseId,
    pub lease: Lease,
    pub payment: Option<Payment>,
    pub escrow: Option<EscrowView>,
}

/// A page of a list: its items, the height they were read at, and the cursor of the next page
/// (`None` only at the end, so a list is never cut short silently).
pub trait Page {
    type Item;
    /// The name of the item list in the JSON answer (`"leases"`).
    const FIELD: &'static str;
    /// The list's path (`"/leases"`).
    const PATH: &'static str;
    fn into_parts(self) -> (Vec<Self::Item>, Option<String>);
}

macro_rules! page {
    ($(#[$doc:meta])* $name:ident, $field:ident, $item:ty) => {
        page!($(#[$doc])* $name, $field, $item, concat!("/", stringify!($field)));
    };
    ($(#[$doc:meta])* $name:ident, $field:ident, $item:ty, $path:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub struct $name {
            pub height: u64,
            pub $field: Vec<$item>,
            /// Pass as `?cursor=` for the next page; `None` at the end of the list.
            pub next: Option<String>,
        }

        impl Page for $name {
            type Item = $item;
            const FIELD: &'static str = stringify!($field);
            const PATH: &'static str = $path;
            fn into_parts(self) -> (Vec<$item>, Option<String>) {
                (self.$field, self.next)
            }
        }
    };
}

page!(
    /// `GET /providers`.
    ProviderPage, providers, ProviderEntry
);
page!(
    /// `GET /deployments`.
    DeploymentPage, deployments, DeploymentDetail
);
page!(
    /// `GET /orders`.
    OrderPage, orders, OrderEntry
);
page!(
    /// `GET /bids`.
    BidPage, bids, BidEntry
);
page!(
    /// `GET /leases`.
    LeasePage, leases, LeaseEntry
);
page!(
    /// `GET /train/jobs`: training jobs by id, oldest first.
    TrainJobPage, jobs, TrainJobEntry, "/train/jobs"
);

// ---------------------------------------------------------------------------------------------
// Training (issue 15): datasets, jobs, their members, rounds and checkpoints' provenance.

/// `GET /train/datasets/{root}`: a registered dataset. (Wrapped: the record's own `height`, when
/// it was registered, would collide with the answer's.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DatasetEntry {
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub root: Hash32,
    pub dataset: DatasetRecord,
}

/// A training job with its id: an item of `GET /train/jobs` and the answer of
/// `GET /train/jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainJobEntry {
    pub id: u64,
    pub job: TrainJob,
}

/// A member of a training job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainMemberEntry {
    pub address: Address,
    pub member: Member,
}

/// `GET /train/jobs/{id}/members`: every member of a job (at most
/// [`pazar_types::train::MAX_WORKERS`], so never paged), in address order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainMembers {
    pub height: u64,
    pub job: u64,
    pub members: Vec<TrainMemberEntry>,
}

/// One worker's part in a live round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundWorker {
    pub address: Address,
    pub work: RoundWork,
}

/// One audit of a live round: `audit.auditor` replays `target`'s round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RoundAudit {
    pub target: Address,
    pub audit: AuditRecord,
}

/// Where a round of a job is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RoundStatus {
    /// The job's current round: what a worker polls to know what to do next.
    Live {
        phase: Phase,
        /// The round's first height.
        round_start: u64,
        /// The height at whose end the phase ends at the latest (earlier once everyone acted).
        deadline: u64,
        /// The last height at which audits may be posted (0 before the audit phase).
        audit_deadline: u64,
        /// The round's beacon, once reveal closed.
        #[serde(with = "hex_opt")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<pazar_types::openapi::Hash>))]
        beacon: Option<Hash32>,
        /// The checkpoint the round trains from.
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
        checkpoint: Hash32,
        /// Every worker of the round, in address order.
        workers: Vec<RoundWorker>,
        /// Every audit drawn when reveal closed, by target in address order.
        audits: Vec<RoundAudit>,
    },
    /// The round ended. `record` is the provenance of the checkpoint it produced, `None` when
    /// it produced none (no checkpoint had a majority).
    Settled { record: Option<RoundRecord> },
}

/// `GET /train/jobs/{id}/rounds/{round}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TrainRound {
    pub height: u64,
    pub job: u64,
    pub round: u32,
    #[serde(flatten)]
    pub status: RoundStatus,
}

/// `GET /train/checkpoints/{hash}`: the provenance record of every round that produced a
/// checkpoint (one per job that did). Follow `previous` to the checkpoint before, until a
/// record's `previous_round` is `None`: its `previous` is the job's initial checkpoint, and
/// `dataset` names the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckpointProvenance {
    pub height: u64,
    #[serde(with = "hex_array")]
    #[cfg_attr(feature = "openapi", schema(value_type = pazar_types::openapi::Hash))]
    pub checkpoint: Hash32,
    /// By job id.
    pub rounds: Vec<RoundRecord>,
}

/// The filters and paging of the list queries (`GET /providers`, `/deployments`, `/orders`,
/// `/bids`, `/leases`, `/train/jobs`); each list reads the filters that apply to it and refuses
/// unknown ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Address>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dseq: Option<u64>,
    /// The state to list (`open`, `active`, `closed`, ...: the states of the listed object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Items per page, 1 to [`MAX_LIST`] (default [`DEFAULT_LIST`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The query string (`?owner=…&state=active`), empty when nothing is set. Values are
    /// addresses, numbers, state names and hex cursors: none needs escaping, and a state or
    /// cursor that would is refused rather than sent.
    pub fn to_query_string(&self) -> Result<String, String> {
        let mut parts = Vec::new();
        if let Some(o) = &self.owner {
            parts.push(format!("owner={o}"));
        }
        if let Some(p) = &self.provider {
            parts.push(format!("provider={p}"));
        }
        if let Some(d) = self.dseq {
            parts.push(format!("dseq={d}"));
        }
        let plain = |what: &str, v: &str| {
            if v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                Ok(())
            } else {
                Err(format!("{what} {v:?} may only hold letters, digits and '_'"))
            }
        };
        if let Some(s) = &self.state {
            plain("state", s)?;
            parts.push(format!("state={s}"));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if let Some(c) = &self.cursor {
            plain("cursor", c)?;
            parts.push(format!("cursor={c}"));
        }
        Ok(if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        })
    }
}

/// `POST /faucet` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FaucetRequest {
    pub address: Address,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::records::Receipt;

    fn receipt() -> Receipt {
        Receipt {
            tx_hash: [3; 32],
            code: 0,
            codespace: String::new(),
            log: String::new(),
            fee: None,
            events: vec![],
        }
    }

    #[test]
    fn a_tx_result_is_flat_json_with_its_status() {
        let r = TxResult {
            hash: [1; 32],
            state: TxState::Committed {
                height: 7,
                index: 2,
                receipt: receipt(),
            },
        };
        let v = serde_json::to_value(&r).expect("serializes");
        assert_eq!(v["status"], "committed");
        assert_eq!(v["height"], 7);
        assert_eq!(v["hash"], hex::encode([1u8; 32]));
        let back: TxResult = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, r);
        let pending: TxResult = serde_json::from_str(&format!(
            r#"{{"hash":"{}","status":"pending"}}"#,
            hex::encode([2u8; 32])
        ))
        .expect("reads");
        assert_eq!(pending.state, TxState::Pending);
    }

    #[test]
    fn a_page_names_its_list_and_cursor() {
        let p = BidPage {
            height: 4,
            bids: vec![],
            next: Some("0a".into()),
        };
        let v = serde_json::to_value(&p).expect("serializes");
        assert!(v[BidPage::FIELD].is_array());
        assert_eq!(p.into_parts().1.as_deref(), Some("0a"));
    }

    #[test]
    fn a_page_knows_its_path() {
        assert_eq!((BidPage::PATH, BidPage::FIELD), ("/bids", "bids"));
        assert_eq!((TrainJobPage::PATH, TrainJobPage::FIELD), ("/train/jobs", "jobs"));
    }

    #[test]
    fn a_training_round_is_flat_json_with_its_status() {
        let live = TrainRound {
            height: 9,
            job: 2,
            round: 1,
            status: RoundStatus::Live {
                phase: Phase::Audit,
                round_start: 3,
                deadline: 12,
                audit_deadline: 12,
                beacon: Some([4; 32]),
                checkpoint: [5; 32],
                workers: vec![],
                audits: vec![],
            },
        };
        let v = serde_json::to_value(&live).expect("serializes");
        assert_eq!(
            (v["status"].as_str(), v["phase"].as_str()),
            (Some("live"), Some("audit"))
        );
        assert_eq!(v["beacon"], hex::encode([4u8; 32]));
        assert_eq!(serde_json::from_value::<TrainRound>(v).expect("reads back"), live);
        let settled = TrainRound {
            status: RoundStatus::Settled { record: None },
            ..live
        };
        let v = serde_json::to_value(&settled).expect("serializes");
        assert_eq!((v["status"].as_str(), v["height"].as_u64()), (Some("settled"), Some(9)));
        assert_eq!(serde_json::from_value::<TrainRound>(v).expect("reads back"), settled);
    }

    #[test]
    fn a_list_query_refuses_values_that_would_need_escaping() {
        let q = ListQuery {
            state: Some("active&limit=1".into()),
            ..ListQuery::default()
        };
        assert!(q.to_query_string().is_err());
        let q = ListQuery {
            dseq: Some(5),
            state: Some("active".into()),
            limit: Some(10),
            ..ListQuery::default()
        };
        assert_eq!(q.to_query_string().expect("plain"), "?dseq=5&state=active&limit=10");
        assert_eq!(ListQuery::default().to_query_string().expect("empty"), "");
    }
}
