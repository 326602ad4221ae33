//! Transactions, their messages and their canonical encoding.
//!
//! The encoding is Borsh: one byte string per value (fixed-width integers, length-prefixed
//! sequences, one-byte enum tags). [`Tx::decode`] rejects trailing bytes, lengths that run past
//! the input, unknown tags, invalid UTF-8 and invalid denominations, then checks every bound in
//! [`TxBody::validate`]. `decode(bytes).encode() == bytes` for every accepted input.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::coin::{Coin, Price};
use crate::keys::{SignatureError, SigningKey, TxSignature};
use crate::market::{
    limits, validate_attributes, validate_name, Attribute, BidId, DeploymentId, GroupSpec, LeaseCloseReason, LeaseId,
    OrderId, SpecError,
};
use crate::train::{DatasetSpec, JobSpec, Verdict};

/// Largest encoded transaction accepted.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Most messages in one transaction.
pub const MAX_MSGS: usize = 16;
pub const MAX_MEMO_LEN: usize = 256;
pub const MAX_CHAIN_ID_LEN: usize = 64;
/// Field names of the messages in errors, one per place (`MAX_MSGS` of them): every decoded
/// transaction validates its messages, and naming them from a table spares an allocation each.
const MSG_FIELDS: [&str; MAX_MSGS] = [
    "msgs[0]", "msgs[1]", "msgs[2]", "msgs[3]", "msgs[4]", "msgs[5]", "msgs[6]", "msgs[7]", "msgs[8]", "msgs[9]",
    "msgs[10]", "msgs[11]", "msgs[12]", "msgs[13]", "msgs[14]", "msgs[15]",
];
/// Domain separator of the ed25519 sign digest.
const SIGN_DOMAIN: &[u8] = b"pazar/tx/v1\0";

/// A 32-byte SHA-256 digest.
pub type Hash32 = [u8; 32];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("transaction is {0} bytes; the limit is {MAX_TX_BYTES}")]
    TooLarge(usize),
    #[error("malformed transaction encoding: {0}")]
    Malformed(String),
    #[error("invalid transaction: {0}")]
    Invalid(#[from] SpecError),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderInfo {
    pub email: String,
    pub website: String,
}

/// Every state change a transaction can ask for. The Borsh tag of each variant is its position:
/// append new variants at the end, never reorder.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// bank: move coins to another account.
    Send {
        to: Address,
        amount: Coin,
    },
    /// provider: register the signer as a provider.
    CreateProvider {
        host_uri: String,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        tls_fingerprint: Hash32,
        attributes: Vec<Attribute>,
        info: ProviderInfo,
    },
    /// provider: replace host, fingerprint, attributes and info.
    UpdateProvider {
        host_uri: String,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        tls_fingerprint: Hash32,
        attributes: Vec<Attribute>,
        info: ProviderInfo,
    },
    /// provider: deregister (only with no open bid and no active lease).
    DeleteProvider,
    /// audit: the signer, as auditor, vouches for attributes of `provider`.
    SignProviderAttributes {
        provider: Address,
        attributes: Vec<Attribute>,
    },
    /// audit: withdraw some (or, with no keys, all) of the signer's attestations for `provider`.
    DeleteProviderAttributes {
        provider: Address,
        keys: Vec<String>,
    },
    /// deployment: create with one order per group and an initial escrow deposit.
    CreateDeployment {
        dseq: u64,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        version: Hash32,
        groups: Vec<GroupSpec>,
        deposit: Coin,
        /// Accept the lowest bid automatically this many blocks after each order opens.
        auto_accept_after: Option<u32>,
    },
    /// escrow: anyone may top up a deployment's escrow; refunds go back to each depositor.
    DepositDeployment {
        id: DeploymentId,
        amount: Coin,
    },
    /// deployment: point at a new manifest version.
    UpdateDeployment {
        dseq: u64,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        version: Hash32,
    },
    CloseDeployment {
        dseq: u64,
    },
    CloseGroup {
        dseq: u64,
        gseq: u32,
    },
    PauseGroup {
        dseq: u64,
        gseq: u32,
    },
    StartGroup {
        dseq: u64,
        gseq: u32,
    },
    /// market: a provider offers to serve an order at `price` per block.
    CreateBid {
        order: OrderId,
        price: Price,
        deposit: Coin,
    },
    /// market: a provider withdraws an open bid.
    CloseBid {
        bid: BidId,
    },
    /// market: the tenant accepts a bid.
    CreateLease {
        bid: BidId,
    },
    /// market: the tenant (reason `owner`) or the provider (a provider reason) ends a lease.
    CloseLease {
        lease: LeaseId,
        reason: LeaseCloseReason,
    },
    /// escrow: the provider collects what its lease has earned.
    WithdrawLease {
        lease: LeaseId,
    },
    /// validators: the signer, a validator of the current epoch (its account is its consensus
    /// key's), votes to give the validator `key` the voting power `power` (0 removes it). A
    /// change that more than two thirds of the epoch's validators vote for within the epoch
    /// takes effect at the start of the epoch after next, whose height is known in advance;
    /// votes last until their epoch ends.
    VoteValidator {
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        key: Hash32,
        power: u64,
    },
    /// train: register a dataset (the Merkle root of its content-addressed chunks and its
    /// contributors); a root registers once.
    RegisterDataset {
        spec: DatasetSpec,
    },
    /// train: open a training job on a registered dataset; the budget moves into the training
    /// escrow.
    OpenJob {
        spec: JobSpec,
    },
    /// train: a registered provider joins a job as a worker, bonding the job's bond; its
    /// updates are served under `blob_uri`.
    JoinJob {
        job: u64,
        blob_uri: String,
    },
    /// train: a member leaves; its bond comes back when its round settles.
    LeaveJob {
        job: u64,
    },
    /// train: a worker of the round commits to its update
    /// ([`crate::train::update_commitment`]).
    CommitUpdate {
        job: u64,
        round: u32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        commitment: Hash32,
    },
    /// train: a committer opens its commitment.
    RevealUpdate {
        job: u64,
        round: u32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        update: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        trace: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        ef_in: Hash32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        ef_out: Hash32,
        /// [`crate::train::loss_seal`] of the round's loss digest, which only a replay yields:
        /// a passing audit must open it.
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        seal: Hash32,
    },
    /// train: the assigned auditor's verdict on `target`'s audited segment.
    PostAudit {
        job: u64,
        round: u32,
        target: Address,
        verdict: Verdict,
    },
    /// train: the target of a failing audit disputes it with its own state hashes.
    DisputeAudit {
        job: u64,
        round: u32,
        #[serde(with = "crate::train::hex_hashes")]
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::openapi::Hash>))]
        steps: Vec<Hash32>,
    },
    /// train: a drawn referee's hash of the state after the disputed step.
    PostReferee {
        job: u64,
        round: u32,
        target: Address,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        hash: Hash32,
    },
    /// train: an included worker's vote for the round's new checkpoint, made from every included
    /// update but those of `left_out` (the included workers whose update the voter could not
    /// fetch, in address order). The majority's set is the round's: a worker left out by it is
    /// not paid for its update, which no checkpoint used.
    PostCheckpoint {
        job: u64,
        round: u32,
        #[serde(with = "hex_array")]
        #[cfg_attr(feature = "openapi", schema(value_type = crate::openapi::Hash))]
        checkpoint: Hash32,
        #[serde(default)]
        left_out: Vec<Address>,
    },
    /// train: the owner cancels a job that is recruiting; budget and bonds are refunded.
    CancelJob {
        job: u64,
    },
    /// escrow: the owner of deployment `dseq` sets its escrow policy (a runway threshold for
    /// `escrow_low`, an allowance for automatic top-ups), replacing the previous one; a policy
    /// with neither clears it. Revoking the allowance is setting a policy without it.
    SetEscrowPolicy {
        dseq: u64,
        policy: crate::records::EscrowPolicySpec,
    },
}

impl Msg {
    /// Stable snake_case name, used in events and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Send { .. } => "send",
            Msg::CreateProvider { .. } => "create_provider",
            Msg::UpdateProvider { .. } => "update_provider",
            Msg::DeleteProvider => "delete_provider",
            Msg::SignProviderAttributes { .. } => "sign_provider_attributes",
            Msg::DeleteProviderAttributes { .. } => "delete_provider_attributes",
            Msg::CreateDeployment { .. } => "create_deployment",
            Msg::DepositDeployment { .. } => "deposit_deployment",
            Msg::UpdateDeployment { .. } => "update_deployment",
            Msg::CloseDeployment { .. } => "close_deployment",
            Msg::CloseGroup { .. } => "close_group",
            Msg::PauseGroup { .. } => "pause_group",
            Msg::StartGroup { .. } => "start_group",
            Msg::CreateBid { .. } => "create_bid",
            Msg::CloseBid { .. } => "close_bid",
            Msg::CreateLease { .. } => "create_lease",
            Msg::CloseLease { .. } => "close_lease",
            Msg::WithdrawLease { .. } => "withdraw_lease",
            Msg::VoteValidator { .. } => "vote_validator",
            Msg::RegisterDataset { .. } => "register_dataset",
            Msg::OpenJob { .. } => "open_job",
            Msg::JoinJob { .. } => "join_job",
            Msg::LeaveJob { .. } => "leave_job",
            Msg::CommitUpdate { .. } => "commit_update",
            Msg::RevealUpdate { .. } => "reveal_update",
            Msg::PostAudit { .. } => "post_audit",
            Msg::DisputeAudit { .. } => "dispute_audit",
            Msg::PostReferee { .. } => "post_referee",
            Msg::PostCheckpoint { .. } => "post_checkpoint",
            Msg::CancelJob { .. } => "cancel_job",
            Msg::SetEscrowPolicy { .. } => "set_escrow_policy",
        }
    }

    /// Stateless checks: bounds, syntax, non-zero amounts.
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        let bad = |f: &str, r: &str| {
            Err(SpecError::Invalid {
                field: format!("{field}.{f}"),
                reason: r.into(),
            })
        };
        match self {
            Msg::Send { amount, .. } if amount.amount == 0 => bad("amount", "must be greater than zero"),
            Msg::CreateProvider {
                host_uri,
                attributes,
                info,
                ..
            }
            | Msg::UpdateProvider {
                host_uri,
                attributes,
                info,
                ..
            } => {
                validate_host_uri(&format!("{field}.host_uri"), host_uri)?;
                validate_attributes(&format!("{field}.attributes"), attributes, false)?;
                if info.email.len() > limits::MAX_VALUE_LEN || info.website.len() > limits::MAX_URI_LEN {
                    return bad("info", "email or website too long");
                }
                Ok(())
            }
            Msg::SignProviderAttributes { attributes, .. } => {
                if attributes.is_empty() {
                    return bad("attributes", "must not be empty");
                }
                validate_attributes(&format!("{field}.attributes"), attributes, false)
            }
            Msg::DeleteProviderAttributes { keys, .. } => {
                if keys.len() > limits::MAX_ATTRIBUTES {
                    return bad("keys", "too many keys");
                }
                for k in keys {
                    validate_name(&format!("{field}.keys"), k, limits::MAX_KEY_LEN)?;
                }
                Ok(())
            }
            Msg::CreateDeployment { groups, deposit, .. } => {
                if groups.is_empty() || groups.len() > limits::MAX_GROUPS {
                    return bad("groups", &format!("must have 1-{} groups", limits::MAX_GROUPS));
                }
                for (i, g) in groups.iter().enumerate() {
                    g.validate(&format!("{field}.groups[{i}]"))?;
                    if groups[..i].iter().any(|o| o.name == g.name) {
                        return bad(&format!("groups[{i}].name"), "duplicate group name");
                    }
                    if g.resources[0].price.denom != groups[0].resources[0].price.denom {
                        return bad(&format!("groups[{i}]"), "all groups must be priced in one denomination");
                    }
                }
                if deposit.amount == 0 {
                    return bad("deposit", "must be greater than zero");
                }
                Ok(())
            }
            Msg::DepositDeployment { amount, .. } if amount.amount == 0 => bad("amount", "must be greater than zero"),
            Msg::CreateBid { price, deposit, .. } => {
                if price.amount.is_zero() {
                    return bad("price", "must be greater than zero");
                }
                if deposit.amount == 0 {
                    return bad("deposit", "must be greater than zero");
                }
                Ok(())
            }
            // A key that is no ed25519 point could never sign a vote, and a set holding it could
            // not be built by any validator's engine.
            Msg::VoteValidator { key, .. } if !crate::keys::is_ed25519_public_key(key) => {
                bad("key", "is not an ed25519 public key")
            }
            Msg::RegisterDataset { spec } => spec.validate(&format!("{field}.spec")),
            Msg::OpenJob { spec } => spec.validate(&format!("{field}.spec")),
            Msg::JoinJob { blob_uri, .. } => validate_blob_uri(&format!("{field}.blob_uri"), blob_uri),
            Msg::PostAudit { verdict, .. } => verdict.validate(&format!("{field}.verdict")),
            Msg::DisputeAudit { steps, .. } => crate::train::validate_steps(&format!("{field}.steps"), steps),
            Msg::PostCheckpoint { left_out, .. } => {
                crate::train::validate_left_out(&format!("{field}.left_out"), left_out)
            }
            Msg::SetEscrowPolicy { policy, .. } => policy.validate(&format!("{field}.policy")),
            _ => Ok(()),
        }
    }
}

/// Akash's rule: an absolute `https://host[:port]` URL with no path.
fn validate_host_uri(field: &str, uri: &str) -> Result<(), SpecError> {
    let bad = |r: &str| {
        Err(SpecError::Invalid {
            field: field.into(),
            reason: r.into(),
        })
    };
    if uri.len() > limits::MAX_URI_LEN {
        return bad("too long");
    }
    let Some(rest) = uri.strip_prefix("https://") else {
        return bad("must start with https://");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '@']) {
        return bad("must be https://host[:port] with no path, query or credentials");
    }
    Ok(())
}

/// Where a worker serves its content-addressed blobs: an absolute `https://` or `http://` URL
/// (blobs are checked by hash, so plain HTTP cannot forge one; a local demo serves on
/// loopback), at most [`limits::MAX_URI_LEN`] bytes, with a host, no credentials, no spaces or
/// control characters, no query or fragment.
fn validate_blob_uri(field: &str, uri: &str) -> Result<(), SpecError> {
    let bad = |r: &str| {
        Err(SpecError::Invalid {
            field: field.into(),
            reason: r.into(),
        })
    };
    if uri.len() > limits::MAX_URI_LEN {
        return bad("too long");
    }
    let Some(rest) = uri.strip_prefix("https://").or_else(|| uri.strip_prefix("http://")) else {
        return bad("must start with https:// or http://");
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return bad("must name a host, without credentials");
    }
    if rest
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '?' || c == '#')
    {
        return bad("must have no spaces, control characters, query or fragment");
    }
    Ok(())
}

/// What the sender signs: everything in a transaction but the signature.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TxBody {
    pub chain_id: String,
    pub sender: Address,
    pub sequence: u64,
    pub fee: Coin,
    pub msgs: Vec<Msg>,
    pub memo: String,
}

impl Msg {
    /// Tokens this message moves out of the sender's account when it succeeds (transfers,
    /// escrow deposits, bid deposits), known from its bytes alone. The mempool adds them to
    /// the fee to check, per sender and denomination, that everything pending can be paid.
    pub fn outflow(&self) -> Option<&Coin> {
        match self {
            Msg::Send { amount, .. } => Some(amount),
            Msg::CreateDeployment { deposit, .. } => Some(deposit),
            Msg::DepositDeployment { amount, .. } => Some(amount),
            Msg::CreateBid { deposit, .. } => Some(deposit),
            Msg::OpenJob { spec } => Some(&spec.budget),
            // The bond of `JoinJob` is the job's, known only from the state: the mempool cannot
            // count it, and the ledger refuses a join its sender cannot pay.
            Msg::JoinJob { .. }
            | Msg::RegisterDataset { .. }
            | Msg::LeaveJob { .. }
            | Msg::CommitUpdate { .. }
            | Msg::RevealUpdate { .. }
            | Msg::PostAudit { .. }
            | Msg::DisputeAudit { .. }
            | Msg::PostReferee { .. }
            | Msg::PostCheckpoint { .. }
            | Msg::CancelJob { .. }
            // An allowance moves nothing when it is granted; each top-up is checked against
            // the owner's balance when it is due.
            | Msg::SetEscrowPolicy { .. }
            | Msg::CreateProvider { .. }
            | Msg::UpdateProvider { .. }
            | Msg::DeleteProvider
            | Msg::SignProviderAttributes { .. }
            | Msg::DeleteProviderAttributes { .. }
            | Msg::UpdateDeployment { .. }
            | Msg::CloseDeployment { .. }
            | Msg::CloseGroup { .. }
            | Msg::PauseGroup { .. }
            | Msg::StartGroup { .. }
            | Msg::VoteValidator { .. }
            | Msg::CloseBid { .. }
            | Msg::CreateLease { .. }
            | Msg::CloseLease { .. }
            | Msg::WithdrawLease { .. } => None,
        }
    }
}

impl TxBody {
    /// The most this transaction can take from its sender, per denomination: the fee plus
    /// every message's [`Msg::outflow`], saturating. Sorted by denomination.
    pub fn max_spend(&self) -> Vec<Coin> {
        let mut by_denom: std::collections::BTreeMap<&crate::coin::Denom, u128> = std::collections::BTreeMap::new();
        for c in std::iter::once(&self.fee).chain(self.msgs.iter().filter_map(Msg::outflow)) {
            let e = by_denom.entry(&c.denom).or_insert(0);
            *e = e.saturating_add(c.amount);
        }
        by_denom.into_iter().map(|(d, a)| Coin::new(a, d.clone())).collect()
    }

    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name("chain_id", &self.chain_id, MAX_CHAIN_ID_LEN)?;
        if self.memo.len() > MAX_MEMO_LEN {
            return Err(SpecError::Invalid {
                field: "memo".into(),
                reason: format!("at most {MAX_MEMO_LEN} bytes"),
            });
        }
        if self.msgs.is_empty() || self.msgs.len() > MAX_MSGS {
            return Err(SpecError::Invalid {
                field: "msgs".into(),
                reason: format!("must have 1-{MAX_MSGS} messages"),
            });
        }
        for (m, field) in self.msgs.iter().zip(MSG_FIELDS) {
            m.validate(field)?;
        }
        Ok(())
    }

    /// The digest an ed25519 key signs and that the readable rendering ends with.
    pub fn sign_digest(&self) -> Hash32 {
        digest_of_body_bytes(&borsh::to_vec(self).expect("encoding into a Vec cannot fail"))
    }

    /// The text an Ethereum wallet shows and signs with `personal_sign`. It ends with the sign
    /// digest, so two different bodies never render to the same text.
    pub fn readable(&self, digest: &Hash32) -> String {
        let msgs = serde_json::to_string_pretty(&self.msgs).expect("messages serialise to JSON");
        format!(
            "Pazar transaction\nchain: {}\nsender: {}\nsequence: {}\nfee: {}\nmemo: {}\nmessages: {}\ndigest: 0x{}",
            self.chain_id,
            self.sender,
            self.sequence,
            self.fee,
            self.memo,
            msgs,
            hex::encode(digest)
        )
    }

    /// Signs this body with `key`.
    pub fn sign(self, key: &SigningKey) -> Tx {
        let digest = self.sign_digest();
        let signature = key.sign_tx(&digest, &self.readable(&digest));
        Tx { body: self, signature }
    }
}

/// The sign digest of an encoded body: `SHA-256(domain ‖ body bytes)`.
fn digest_of_body_bytes(body: &[u8]) -> Hash32 {
    let mut h = Sha256::new();
    h.update(SIGN_DOMAIN);
    h.update(body);
    h.finalize().into()
}

/// A signed transaction.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tx {
    pub body: TxBody,
    pub signature: TxSignature,
}

impl Tx {
    /// Decodes and validates canonical bytes (see the module docs).
    pub fn decode(bytes: &[u8]) -> Result<Tx, DecodeError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(DecodeError::TooLarge(bytes.len()));
        }
        let tx: Tx = borsh::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        tx.body.validate()?;
        Ok(tx)
    }

    /// Decodes like [`Tx::decode`] and returns the sign digest too, hashed straight from the
    /// input: the encoding is canonical, so the body's bytes are the prefix before the signature.
    pub fn decode_with_digest(bytes: &[u8]) -> Result<(Tx, Hash32), DecodeError> {
        let tx = Tx::decode(bytes)?;
        let sig_len = borsh::object_length(&tx.signature).expect("length of an in-memory value");
        let digest = digest_of_body_bytes(&bytes[..bytes.len() - sig_len]);
        debug_assert_eq!(digest, tx.body.sign_digest());
        Ok((tx, digest))
    }

    pub fn encode(&self) -> Vec<u8> {
        borsh::to_vec(self).expect("encoding into a Vec cannot fail")
    }

    /// Verifies the signature alone (no state): the signer's key must derive the sender address.
    pub fn verify_signature(&self) -> Result<(), SignatureError> {
        self.verify_signature_with(&self.body.sign_digest())
    }

    /// [`Tx::verify_signature`] with the body's sign digest already computed.
    pub fn verify_signature_with(&self, digest: &Hash32) -> Result<(), SignatureError> {
        self.signature
            .verify(&self.body.sender, digest, || self.body.readable(digest))
    }
}

/// The one signature rule of the ledger, for many transactions at once: a transaction's
/// signature is valid only if it verifies over its sign digest **and** the signing key is the
/// sender's (for ed25519 the key must derive `body.sender`; for Ethereum keys the recovered
/// address must be it). Every path that admits or executes a transaction (single submit, batch
/// submit, a block's execution) calls this or [`Tx::verify_signature_with`], which applies the
/// same rule to one transaction, so no shortcut can skip a part of it.
///
/// Ed25519 signatures whose key derives the sender are checked in one batch (ZIP-215 rules,
/// which make batch and single verification agree); if the batch fails, each is checked alone
/// to find the culprits. The batch's random coefficients come from a ChaCha20 stream seeded
/// with the SHA-256 of everything verified, so the result is a pure function of the input (the
/// ledger may use it) and a signer cannot predict the coefficients without fixing its signature
/// first. Results are in input order; `items[i] = (tx, sign digest of tx)`.
pub fn verify_signatures(items: &[(&Tx, &Hash32)]) -> Vec<Result<(), SignatureError>> {
    use rand_chacha::rand_core::SeedableRng;
    let mut results: Vec<Result<(), SignatureError>> = Vec::with_capacity(items.len());
    let mut batch = ed25519_zebra::batch::Verifier::new();
    let mut seed = Sha256::new();
    seed.update(b"pazar/batch-verify/v1");
    let mut batched = Vec::new();
    for (i, (tx, digest)) in items.iter().enumerate() {
        match &tx.signature {
            TxSignature::Ed25519 { pubkey, sig } => {
                let key_address = Address::from_ed25519(pubkey);
                if key_address != tx.body.sender {
                    results.push(Err(SignatureError::NotSender {
                        signer: key_address,
                        sender: tx.body.sender,
                    }));
                    continue;
                }
                seed.update(pubkey);
                seed.update(sig);
                seed.update(digest);
                batch.queue((
                    ed25519_zebra::VerificationKeyBytes::from(*pubkey),
                    ed25519_zebra::Signature::from(*sig),
                    &digest[..],
                ));
                batched.push(i);
                results.push(Ok(()));
            }
            TxSignature::Eth { .. } => results.push(tx.verify_signature_with(digest)),
        }
    }
    if batched.is_empty() {
        return results;
    }
    let rng = rand_chacha::ChaCha20Rng::from_seed(seed.finalize().into());
    if batch.verify(rng).is_err() {
        for i in batched {
            let (tx, digest) = items[i];
            results[i] = tx.verify_signature_with(digest);
        }
    }
    results
}

/// SHA-256 of a transaction's bytes: its id in receipts and queries.
pub fn tx_hash(bytes: &[u8]) -> Hash32 {
    Sha256::digest(bytes).into()
}

/// Serde helper: fixed-size byte arrays as hex strings.
pub mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let raw = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(raw.trim_start_matches("0x"), &mut out).map_err(serde::de::Error::custom)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_field_names_are_their_places() {
        for (i, field) in MSG_FIELDS.iter().enumerate() {
            assert_eq!(*field, format!("msgs[{i}]"));
        }
    }
}
