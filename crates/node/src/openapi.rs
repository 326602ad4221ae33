//! The node's OpenAPI 3.1 document, generated from the types it answers with (`pazar_api`'s
//! `ToSchema` derives) and the `#[utoipa::path]` description of each handler in `rpc/`; served
//! at `/openapi.json`. Error answers are grouped by status from the [`ErrorCode`]s each route
//! can answer, so a status and its codes are written once ([`ErrorCode::http_status`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Ref, Schema, SchemaType, Type};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoParams, IntoResponses, OpenApi, PartialSchema, ToSchema};

use pazar_api::events::{BlockEvents, Lagged};
use pazar_api::node::ListQuery;
use pazar_api::request::SubmitMode;
use pazar_api::{ErrorBody, ErrorCode, ErrorEnvelope};
use pazar_types::openapi::HexBytes;

use crate::rpc;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pazar node RPC",
        description = "Submit transactions, read the ledger (with Merkle proofs on request), follow \
            committed blocks. Amounts are decimal strings and hashes lower-case hex; every error is \
            an `ErrorEnvelope` whose `error.code` programs match on.",
    ),
    paths(
        rpc::status, rpc::openapi, rpc::metrics, rpc::events::events, rpc::txs::submit, rpc::txs::submit_batch,
        rpc::txs::simulate, rpc::txs::tx_by_hash, rpc::queries::block, rpc::queries::params, rpc::queries::supply,
        rpc::queries::validators,
        rpc::queries::account, rpc::queries::balance, rpc::queries::providers, rpc::queries::provider,
        rpc::queries::deployments, rpc::queries::deployment, rpc::queries::escrow, rpc::queries::orders,
        rpc::queries::order, rpc::queries::bids, rpc::queries::bid, rpc::queries::leases, rpc::queries::lease,
        rpc::txs::faucet, rpc::sync::snapshot, rpc::sync::finalization, rpc::sync::handoffs, rpc::queries::state_proofs,
        rpc::train::dataset, rpc::train::jobs, rpc::train::job, rpc::train::members, rpc::train::round,
        rpc::train::checkpoint,
    ),
    // The event stream's payloads and the error envelope are referenced from descriptions and
    // from hand-built responses, which register no schema of their own.
    components(schemas(BlockEvents, Lagged, ErrorEnvelope, ErrorBody, ErrorCode)),
    tags(
        (name = "chain", description = "Blocks, the chain's status and parameters, the event stream."),
        (name = "txs", description = "Submitting transactions and finding them."),
        (name = "bank", description = "Accounts, balances and supply."),
        (name = "providers", description = "Providers and their audits."),
        (name = "market", description = "Deployments, orders, bids and leases."),
        (name = "escrow", description = "Deployments' escrow accounts."),
        (name = "train", description = "Training: datasets, jobs, their members and rounds, and the provenance \
            of checkpoints."),
        (name = "devnet", description = "Only on a development network."),
        (name = "service", description = "This service's description and metrics."),
    ),
)]
pub struct NodeApi;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(NodeApi::openapi)
}

/// The document as served.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("an OpenAPI document of plain values serializes")
    })
}

/// The error responses of a route answering `codes`: one per HTTP status, each an
/// [`ErrorEnvelope`] whose description names the codes answered with that status.
fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for code in codes {
        by_status.entry(code.http_status()).or_default().push(*code);
    }
    by_status
        .into_iter()
        .map(|(status, codes)| {
            let names: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
            let response = ResponseBuilder::new()
                .description(format!("`error.code` is one of {}.", names.join(", ")))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorEnvelope::name())))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

macro_rules! errors {
    ($(#[$doc:meta])* $name:ident: [$($code:ident),* $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            /// The codes this route answers with.
            pub const CODES: &'static [ErrorCode] = &[$(ErrorCode::$code),*];
        }

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(Self::CODES)
            }
        }
    };
}

errors!(
    /// A single object with an optional proof: a malformed path or query, no such object, a
    /// store failure.
    LookupErrors: [BadRequest, NotFound, Internal]
);
errors!(
    /// An account or balance: every well-formed address has one (empty when never used).
    AccountErrors: [BadRequest, Internal]
);
errors!(
    /// A list: a malformed query, a filter the list does not take, or a bad cursor.
    ListErrors: [BadRequest]
);
errors!(
    /// `POST /txs`: every reason a transaction is refused.
    SubmitErrors: [
        BadRequest, TooLarge, Decode, WrongChain, Signature, Duplicate, FeeDenom, FeeTooLow,
        StaleSequence, SequenceTooFar, SequenceTaken, SequenceGap, FeeUnpayable, MempoolFull, Internal,
    ]
);
errors!(
    /// `POST /txs/simulate`: only a body that is no transaction at all; every refusal of the
    /// transaction itself is the answer's `admission`.
    SimulateErrors: [BadRequest, TooLarge, Decode, Internal]
);
errors!(
    /// `POST /txs/batch`: the batch as a whole; each transaction's refusal is in its result.
    BatchErrors: [BadRequest, TooLarge, BatchTooLarge, Internal]
);
errors!(
    /// `GET /events`.
    EventErrors: [BadRequest, BadLastEventId, TooManySubscribers]
);
errors!(
    /// `POST /state/proofs`: a body that names no keys, too many, or keys too long.
    ProofsErrors: [BadRequest, TooLarge, Internal]
);
errors!(
    /// `POST /faucet`.
    FaucetErrors: [BadRequest, TooLarge, NoFaucet, Faucet]
);

/// The parameters of a list: the filters of [`ListQuery`] it takes (`rpc::filters`, which the
/// handler enforces) and its paging.
fn list_params(filters: &[&str], parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
    ListQuery::into_params(parameter_in)
        .into_iter()
        .filter(|p| matches!(p.name.as_str(), "limit" | "cursor") || filters.contains(&p.name.as_str()))
        .collect()
}

macro_rules! list_params {
    ($(#[$doc:meta])* $name:ident, $filters:expr) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoParams for $name {
            fn into_params(parameter_in: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
                list_params($filters, parameter_in)
            }
        }
    };
}

list_params!(
    /// `GET /providers`.
    ProviderListParams,
    rpc::filters::PROVIDERS
);
list_params!(
    /// `GET /deployments`.
    DeploymentListParams,
    rpc::filters::DEPLOYMENTS
);
list_params!(
    /// `GET /orders`.
    OrderListParams,
    rpc::filters::ORDERS
);
list_params!(
    /// `GET /bids` and `GET /leases`.
    BidListParams,
    rpc::filters::BIDS
);
list_params!(
    /// `GET /train/jobs`.
    TrainJobListParams,
    rpc::filters::TRAIN_JOBS
);

/// The JSON form of `POST /txs`. The node reads it with `pazar_api::request::parse_submit`,
/// which bounds the transaction while it reads; this type only describes the shape.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SubmitJson {
    /// The transaction's canonical bytes, hex (an optional `0x` is allowed).
    #[schema(value_type = HexBytes)]
    tx: String,
    /// When to answer (default `sync`).
    #[serde(default)]
    mode: Option<SubmitMode>,
}

/// The JSON form of `POST /txs/simulate` (read by `pazar_api::request::parse_submit`, as
/// `POST /txs` is; a simulation takes no `mode`).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SimulateJson {
    /// The transaction's canonical bytes, hex (an optional `0x` is allowed).
    #[schema(value_type = HexBytes)]
    tx: String,
}

/// The body of `POST /txs/batch` (read by `pazar_api::request::parse_batch`, which stops at the
/// first transaction past the bound; this type only describes the shape).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct BatchJson {
    /// At most 5,000 transactions, each its canonical bytes in hex.
    #[schema(value_type = Vec<HexBytes>, max_items = 5000)]
    txs: Vec<String>,
    /// When to answer (default `sync`).
    #[serde(default)]
    mode: Option<SubmitMode>,
}

/// A transaction's canonical bytes, as the body of `POST /txs` in `application/octet-stream`.
pub struct RawTx;

impl PartialSchema for RawTx {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::String))
            .content_media_type("application/octet-stream")
            .description(Some("The transaction's canonical (Borsh) bytes, at most 64 KiB."))
            .into()
    }
}

impl ToSchema for RawTx {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("RawTx")
    }
}

/// What `/openapi.json` answers: an OpenAPI 3.1 document (its own schema is the OpenAPI
/// Initiative's; these are the fields every document has).
pub struct OpenApiDocument;

impl PartialSchema for OpenApiDocument {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(SchemaType::new(Type::String));
        // Path items and components are JSON Schemas and OpenAPI objects of their own; the
        // official schema describes them, so here they are maps of objects.
        let map = |what: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::new(Type::Object))
                .description(Some(what))
                .additional_properties(Some(
                    ObjectBuilder::new()
                        .schema_type(SchemaType::new(Type::Object))
                        .additional_properties(Some(AdditionalProperties::FreeForm(true))),
                ))
        };
        ObjectBuilder::new()
            .schema_type(SchemaType::new(Type::Object))
            .description(Some(
                "An OpenAPI 3.1 document (https://spec.openapis.org/oas/3.1/schema/2022-10-07).",
            ))
            .property("openapi", string().pattern(Some(r"^3\.1\.\d+(-.+)?$")))
            .required("openapi")
            .property(
                "info",
                ObjectBuilder::new()
                    .schema_type(SchemaType::new(Type::Object))
                    .property("title", string())
                    .required("title")
                    .property("version", string())
                    .required("version")
                    .property("description", string()),
            )
            .required("info")
            .property("paths", map("Every route of this service, by path."))
            .required("paths")
            .property("components", map("The schemas of the answers, by kind and name."))
            .into()
    }
}

impl ToSchema for OpenApiDocument {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("OpenApiDocument")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_exactly_the_served_routes() {
        let mut documented: Vec<&str> = document().paths.paths.keys().map(String::as_str).collect();
        let mut served = rpc::ROUTES.to_vec();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }

    #[test]
    fn each_list_documents_exactly_the_filters_it_takes() {
        let doc: serde_json::Value = serde_json::from_str(json()).expect("the document is JSON");
        for (path, filters) in [
            ("/providers", rpc::filters::PROVIDERS),
            ("/deployments", rpc::filters::DEPLOYMENTS),
            ("/orders", rpc::filters::ORDERS),
            ("/bids", rpc::filters::BIDS),
            ("/leases", rpc::filters::BIDS),
            ("/train/jobs", rpc::filters::TRAIN_JOBS),
        ] {
            let mut names: Vec<&str> = doc["paths"][path]["get"]["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("{path} has parameters"))
                .iter()
                .map(|p| p["name"].as_str().expect("a name"))
                .collect();
            names.sort_unstable();
            let mut want: Vec<&str> = filters.iter().copied().chain(["limit", "cursor"]).collect();
            want.sort_unstable();
            assert_eq!(names, want, "{path}");
        }
    }
}
