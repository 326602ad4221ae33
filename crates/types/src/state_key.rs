//! The layout of the ledger's state in its Merkle tree: every entry of every table is stored
//! under `table id ‖ Borsh(key)`, so a client that holds a proof knows which key it is about
//! without linking the ledger or a database.

use borsh::BorshSerialize;

/// The id of each table of the ledger's state (the first byte of its store keys).
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
    pub const VALIDATOR_RECORDS: u8 = 19;
    pub const DOUBLE_SIGNS: u8 = 20;
    pub const COMMIT_CURSOR: u8 = 21;
    pub const VALIDATOR_SETS: u8 = 22;
    pub const VALIDATOR_VOTES: u8 = 23;
    pub const EPOCH_LENGTH: u8 = 24;
    /// Dataset root → `train::DatasetRecord`.
    pub const DATASETS: u8 = 25;
    /// Job id (u64) → `train::TrainJob`.
    pub const TRAIN_JOBS: u8 = 26;
    /// (job, worker) → `train::Member`.
    pub const TRAIN_MEMBERS: u8 = 27;
    /// (job, round, worker) → `train::RoundWork`, for the current round's workers.
    pub const TRAIN_ROUND_WORK: u8 = 28;
    /// (job, round, target) → `train::AuditRecord`, for the current round's audits.
    pub const TRAIN_AUDITS: u8 = 29;
    /// (height, job) → (): running jobs whose phase ends at the end of that height.
    pub const TRAIN_DEADLINES: u8 = 30;
    /// (job, round) → `train::RoundRecord`: the provenance of every checkpoint.
    pub const TRAIN_ROUNDS: u8 = 31;
    /// (checkpoint, job) → round: which round of which job made a checkpoint.
    pub const TRAIN_CHECKPOINTS: u8 = 32;
    /// () → the next job id.
    pub const TRAIN_NEXT_JOB: u8 = 33;
    /// Deployment id → `records::EscrowPolicy` (runway threshold, top-up allowance).
    pub const ESCROW_POLICIES: u8 = 34;
    /// (height, deployment) → (): deployments whose runway falls to their threshold then.
    pub const ESCROW_LOW: u8 = 35;
    /// (height, lease) → (): leases in grace that close at the end of that height.
    pub const GRACE_EXPIRY: u8 = 36;
}

/// The store key of entry `key` of table `table` (an id from [`table_id`]): proofs are about
/// these keys. E.g. an account's balance is `store_key(table_id::BALANCES, &(address, denom))`.
pub fn store_key<K: BorshSerialize>(table: u8, key: &K) -> Vec<u8> {
    let mut out = vec![table];
    key.serialize(&mut out).expect("writing into a Vec cannot fail");
    out
}
