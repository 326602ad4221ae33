//! The error envelope every Pazar service answers with: `{"error": {"code": "...", "message":
//! "..."}}` and a fitting HTTP status. The code is for programs (a stable name from
//! [`ErrorCode`]); the message is for people.

use serde::{Deserialize, Serialize};

/// Every error code a node or a provider endpoint answers with. Clients match on these, never on
/// messages. A code this version does not know (a newer server) reads as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    // Any service.
    /// The request is malformed (a path segment, a query parameter or a body that does not parse).
    BadRequest,
    /// The thing asked about does not exist.
    NotFound,
    /// No such endpoint.
    NoRoute,
    /// The server failed; the request may be retried.
    Internal,
    /// A body or a field is larger than the service accepts.
    TooLarge,

    // Transaction submission.
    /// The transaction's bytes do not decode to a valid transaction.
    Decode,
    /// The transaction is for another chain.
    WrongChain,
    /// The signature does not verify or is not the sender's.
    Signature,
    /// The transaction is already in the mempool or committed.
    Duplicate,
    /// The fee is not in the native denomination.
    FeeDenom,
    /// The fee is below the node's minimum.
    FeeTooLow,
    /// The sequence was already used by a committed transaction.
    StaleSequence,
    /// The sequence is too far ahead of the account's.
    SequenceTooFar,
    /// Another pending transaction holds this sequence.
    SequenceTaken,
    /// An earlier sequence of this sender is missing from the mempool.
    SequenceGap,
    /// The sender cannot pay this fee on top of its pending transactions.
    FeeUnpayable,
    /// The mempool is full; retry later.
    MempoolFull,
    /// A batch holds more transactions than allowed.
    BatchTooLarge,

    // Event stream.
    /// `Last-Event-ID` is not a block height.
    BadLastEventId,
    /// The node serves as many event streams as it allows; retry later.
    TooManySubscribers,

    // Faucet.
    /// This node has no faucet (only a devnet does).
    NoFaucet,
    /// The faucet could not pay.
    Faucet,

    // Provider endpoint.
    /// The request is not signed by the lease's owner, or the signature is stale or replayed.
    Unauthenticated,
    /// A lease id in the path does not parse.
    BadLeaseId,
    /// The manifest does not decode, is invalid, does not hash to the deployment's version, or
    /// asks for more than the lease pays for.
    BadManifest,
    /// The lease is closed.
    LeaseClosed,
    /// The lease is in grace: its escrow ran dry, its workload is stopped (its volumes kept)
    /// until a deposit resumes it.
    LeaseInGrace,
    /// The provider runs nothing for this lease (yet).
    NotRunning,
    /// The lease has no service of that name.
    UnknownService,
    /// An ingress host name asked for is served for another lease.
    HostTaken,
    /// An image could not be pulled or is not allowed.
    Image,
    /// The workload runtime failed.
    Runtime,
    /// The provider's storage failed.
    Storage,
    /// The provider cannot read the ledger.
    Chain,
    /// Too many log or status streams are open.
    TooManyStreams,
    /// The signer is not the lease's owner.
    NotOwner,
    /// This provider holds no such lease (or it is not active).
    NoLease,
    /// No manifest was sent for this lease yet.
    NoManifest,
    /// The manifest does not hash to the deployment's version on the ledger.
    VersionMismatch,
    /// The manifest asks for more than the lease pays for (replicas or resources).
    NotLeased,
    /// The body did not arrive in time.
    SlowBody,
    /// Another request holds this lease; retry.
    Busy,

    /// A code this client does not know (from a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's wire name (`"not_found"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NoRoute => "no_route",
            ErrorCode::Internal => "internal",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Decode => "decode",
            ErrorCode::WrongChain => "wrong_chain",
            ErrorCode::Signature => "signature",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::FeeDenom => "fee_denom",
            ErrorCode::FeeTooLow => "fee_too_low",
            ErrorCode::StaleSequence => "stale_sequence",
            ErrorCode::SequenceTooFar => "sequence_too_far",
            ErrorCode::SequenceTaken => "sequence_taken",
            ErrorCode::SequenceGap => "sequence_gap",
            ErrorCode::FeeUnpayable => "fee_unpayable",
            ErrorCode::MempoolFull => "mempool_full",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::BadLastEventId => "bad_last_event_id",
            ErrorCode::TooManySubscribers => "too_many_subscribers",
            ErrorCode::NoFaucet => "no_faucet",
            ErrorCode::Faucet => "faucet",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::BadLeaseId => "bad_lease_id",
            ErrorCode::BadManifest => "bad_manifest",
            ErrorCode::LeaseClosed => "lease_closed",
            ErrorCode::LeaseInGrace => "lease_in_grace",
            ErrorCode::NotRunning => "not_running",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::HostTaken => "host_taken",
            ErrorCode::Image => "image",
            ErrorCode::Runtime => "runtime",
            ErrorCode::Storage => "storage",
            ErrorCode::Chain => "chain",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::NotOwner => "not_owner",
            ErrorCode::NoLease => "no_lease",
            ErrorCode::NoManifest => "no_manifest",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::NotLeased => "not_leased",
            ErrorCode::SlowBody => "slow_body",
            ErrorCode::Busy => "busy",
            ErrorCode::Unknown => "unknown",
        }
    }

    /// The HTTP status a server answers this code with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::NotFound
            | ErrorCode::NoRoute
            | ErrorCode::NoFaucet
            | ErrorCode::NotRunning
            | ErrorCode::UnknownService
            | ErrorCode::NoLease
            | ErrorCode::NoManifest => 404,
            ErrorCode::Internal | ErrorCode::Unknown | ErrorCode::Runtime | ErrorCode::Storage => 500,
            ErrorCode::TooLarge | ErrorCode::BatchTooLarge => 413,
            ErrorCode::Duplicate | ErrorCode::HostTaken | ErrorCode::VersionMismatch | ErrorCode::LeaseInGrace => 409,
            ErrorCode::MempoolFull | ErrorCode::TooManySubscribers | ErrorCode::Faucet => 503,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::NotOwner => 403,
            ErrorCode::SlowBody => 408,
            ErrorCode::LeaseClosed => 410,
            ErrorCode::Image => 422,
            ErrorCode::TooManyStreams | ErrorCode::Busy => 429,
            ErrorCode::Chain => 502,
            _ => 400,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of an error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// `{"error": {...}}`: what every failed request gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorEnvelope {
        ErrorEnvelope {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_from_its_wire_name() {
        let all = [
            ErrorCode::BadRequest,
            ErrorCode::NotFound,
            ErrorCode::NoRoute,
            ErrorCode::Internal,
            ErrorCode::TooLarge,
            ErrorCode::Decode,
            ErrorCode::WrongChain,
            ErrorCode::Signature,
            ErrorCode::Duplicate,
            ErrorCode::FeeDenom,
            ErrorCode::FeeTooLow,
            ErrorCode::StaleSequence,
            ErrorCode::SequenceTooFar,
            ErrorCode::SequenceTaken,
            ErrorCode::SequenceGap,
            ErrorCode::FeeUnpayable,
            ErrorCode::MempoolFull,
            ErrorCode::BatchTooLarge,
            ErrorCode::BadLastEventId,
            ErrorCode::TooManySubscribers,
            ErrorCode::NoFaucet,
            ErrorCode::Faucet,
            ErrorCode::Unauthenticated,
            ErrorCode::BadLeaseId,
            ErrorCode::BadManifest,
            ErrorCode::LeaseClosed,
            ErrorCode::LeaseInGrace,
            ErrorCode::NotRunning,
            ErrorCode::UnknownService,
            ErrorCode::HostTaken,
            ErrorCode::Image,
            ErrorCode::Runtime,
            ErrorCode::Storage,
            ErrorCode::Chain,
            ErrorCode::TooManyStreams,
            ErrorCode::NotOwner,
            ErrorCode::NoLease,
            ErrorCode::NoManifest,
            ErrorCode::VersionMismatch,
            ErrorCode::NotLeased,
            ErrorCode::SlowBody,
            ErrorCode::Busy,
        ];
        for code in all {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).expect("reads back"), code);
        }
    }

    #[test]
    fn a_code_from_a_newer_server_reads_as_unknown() {
        let e: ErrorEnvelope =
            serde_json::from_str(r#"{"error":{"code":"quota_exceeded","message":"later"}}"#).expect("reads");
        assert_eq!(e.error.code, ErrorCode::Unknown);
        assert_eq!(e.error.message, "later");
    }
}
