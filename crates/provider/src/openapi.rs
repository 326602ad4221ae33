//! The tenant endpoint's OpenAPI 3.1 document, generated as the node's is: from the contract
//! types it answers with (`pazar_api::provider`'s `ToSchema` derives) and the `#[utoipa::path]`
//! description of each handler in `server.rs`. Error answers are grouped by HTTP status from the
//! [`ErrorCode`]s each route can answer, each an [`ErrorEnvelope`].
//!
//! Must not know: how requests are checked or leases run; it describes what `server.rs` answers.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, OpenApi, ToSchema};

use pazar_api::provider::{LogItem, LogLine, LogStream};
use pazar_api::{ErrorBody, ErrorCode, ErrorEnvelope};

use crate::server;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Pazar provider endpoint",
        description = "What a tenant sends a provider and asks it, over TLS pinned to the \
            certificate fingerprint on the ledger: a lease's manifest, its status, its logs, and \
            snapshots of its persistent volumes (listed, fetched by chunk, restored into a new lease). \
            Every request about a lease is signed by the lease's owner (`x-pazar-auth`: chain, \
            provider, method, path and query, body hash, time, nonce). Every error is an \
            `ErrorEnvelope` whose `error.code` programs match on.",
    ),
    paths(
        server::provider_status, server::put_manifest, server::lease_status, server::lease_logs,
        server::get_snapshot, server::get_snapshot_chunks, server::put_restore, server::put_restore_chunk,
    ),
    // The log stream's lines are described by a hand-built response, which registers no
    // schema of its own; the envelope is referenced from the grouped error responses.
    components(schemas(LogItem, LogLine, LogStream, ErrorEnvelope, ErrorBody, ErrorCode)),
    tags(
        (name = "provider", description = "Who this endpoint is."),
        (name = "lease", description = "A lease's manifest, status, logs and volume snapshots (signed by its owner)."),
    ),
)]
pub struct ProviderApi;

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ProviderApi::openapi)
}

/// The document as JSON.
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        document()
            .to_json()
            .expect("an OpenAPI document of plain values serializes")
    })
}

/// The error responses of a route answering `codes`, each with its HTTP status: one response
/// per status, an [`ErrorEnvelope`] whose description names the codes answered with it.
fn error_responses(codes: &[(ErrorCode, u16)]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for (code, status) in codes {
        by_status.entry(*status).or_default().push(*code);
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
                        .schema(Some(utoipa::openapi::Ref::from_schema_name(ErrorEnvelope::name())))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

macro_rules! errors {
    ($(#[$doc:meta])* $name:ident: [$($code:ident),* $(,)?] $(+ [$(($other:ident, $status:literal)),* $(,)?])?) => {
        $(#[$doc])*
        pub struct $name;

        impl $name {
            /// The codes this route answers with, and their HTTP statuses.
            pub fn codes() -> Vec<(ErrorCode, u16)> {
                let mut v: Vec<(ErrorCode, u16)> =
                    vec![$((ErrorCode::$code, ErrorCode::$code.http_status())),*];
                $($(v.push((ErrorCode::$other, $status));)*)?
                v
            }
        }

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                error_responses(&Self::codes())
            }
        }
    };
}

errors!(
    /// A request about a lease: the path, the signature, the owner, the ledger's lease, the
    /// nonce (`busy` is a 429 for one signer's burst, a 503 when the nonce store is full).
    LeaseErrors: [BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain, Internal]
        + [(Busy, 503)]
);
errors!(
    /// A manifest: the lease's checks, then the body, the manifest's own rules, its hash, the
    /// lease's resources, the ingress's hosts, and the deploy.
    ManifestErrors: [
        BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, LeaseInGrace, Busy, Chain,
        Internal, TooLarge, SlowBody, BadManifest, VersionMismatch, NotLeased, HostTaken, Image,
        Runtime, Storage, NotRunning,
    ] + [(Busy, 503)]
);
errors!(
    /// A lease's status: the lease's checks, then its manifest and the runtime.
    StatusErrors: [
        BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain, Internal,
        NoManifest, NotRunning, UnknownService, Image, Runtime,
    ] + [(Busy, 503)]
);
errors!(
    /// A lease's logs: the query, the lease's checks, the stream bounds and the runtime (a
    /// malformed service name is a 400, an unknown one a 404).
    LogsErrors: [
        BadRequest, BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain,
        Internal, TooManyStreams, NotRunning, UnknownService, Image, Runtime,
    ] + [(Busy, 503), (UnknownService, 400)]
);

errors!(
    /// A snapshot listing: the lease's checks, its manifest, the runtime, the listing's bounds
    /// and the host's storage.
    SnapshotErrors: [
        BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain, Internal,
        NoManifest, NotRunning, UnknownService, Image, Runtime, TooLarge, BadRequest, Storage,
    ] + [(Busy, 503)]
);
errors!(
    /// A chunk fetch: the body, the lease's checks, its manifest, the runtime and the host.
    ChunksErrors: [
        BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain, Internal,
        TooLarge, SlowBody, BadRequest, NoManifest, NotRunning, UnknownService, Image, Runtime, Storage,
    ] + [(Busy, 503)]
);
errors!(
    /// A restore's chunk or listing: the body, the lease's checks, the chunk's hash or the
    /// listing's rules, the lease's persistent storage, and a lease that has a manifest already
    /// (`bad_request` with 409).
    RestoreErrors: [
        BadLeaseId, Unauthenticated, NotOwner, NoLease, LeaseClosed, Busy, Chain, Internal,
        TooLarge, SlowBody, BadRequest, Storage,
    ] + [(Busy, 503), (BadRequest, 409)]
);

/// The chunks asked for, framed (`application/octet-stream`, see `ChunkFrames`).
pub struct ChunkFramesBody;

impl IntoResponses for ChunkFramesBody {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let ok = ResponseBuilder::new()
            .description(
                "For each chunk asked for, in order: one tag byte (0: its bytes follow, as a 4-byte big-endian \
                 length and the bytes; 1: the file changed since the listing, list again; 2: the last listing \
                 named no such chunk).",
            )
            .content(
                "application/octet-stream",
                ContentBuilder::new()
                    .schema(Some(
                        utoipa::openapi::ObjectBuilder::new()
                            .schema_type(utoipa::openapi::schema::Type::String)
                            .content_media_type("application/octet-stream"),
                    ))
                    .build(),
            )
            .build();
        BTreeMap::from([("200".to_string(), RefOr::T(ok))])
    }
}

/// The log stream: one [`LogItem`] per line (`application/x-ndjson`).
pub struct LogLines;

impl IntoResponses for LogLines {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let ok = ResponseBuilder::new()
            .description(
                "Newline-delimited JSON: one `LogItem` per line (a replica's line, or the error that \
                 ended the stream), flushed as lines arrive while `follow`.",
            )
            .content(
                "application/x-ndjson",
                ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name(LogItem::name())))
                    .build(),
            )
            .build();
        BTreeMap::from([("200".to_string(), RefOr::T(ok))])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_api::openapi_check::{check_component, check_document};

    #[test]
    fn the_generated_document_is_valid_openapi_3_1_and_types_every_answer() {
        let doc: serde_json::Value = serde_json::from_str(json()).expect("the document is JSON");
        let problems = check_document(&doc);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_log_line_and_a_closing_error_are_log_items_and_nothing_else_is() {
        let doc: serde_json::Value = serde_json::from_str(json()).expect("the document is JSON");
        let line = LogItem::Line(LogLine {
            service: "web".into(),
            replica: 0,
            stream: LogStream::Output,
            line: "hi".into(),
        });
        let error = LogItem::Error { error: "gone".into() };
        for item in [line, error] {
            let v = serde_json::to_value(&item).expect("serializes");
            let problems = check_component(&doc, "LogItem", &v);
            assert!(problems.is_empty(), "{v}: {problems:#?}");
        }
        let stranger = serde_json::json!({"service": "web", "replica": 0, "stream": "stdin", "line": "x"});
        assert!(!check_component(&doc, "LogItem", &stranger).is_empty());
    }

    #[test]
    fn the_document_describes_exactly_the_served_routes() {
        let mut documented: Vec<&str> = document().paths.paths.keys().map(String::as_str).collect();
        let mut served = server::ROUTES.to_vec();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
