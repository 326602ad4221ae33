//! The contracts between Pazar's processes. Everything a node, a provider daemon or a client
//! sends to another process is a type here: the sender serializes it, the receiver deserializes
//! it, and the OpenAPI documents are generated from the same types. No I/O and no async runtime:
//! of Pazar's crates this one depends on `pazar-types` only, so any client (CLI, console, training worker) can
//! speak to a node or a provider without linking a database, Docker or a GPU library.

pub mod manifest;
pub mod names;

pub use crate::manifest::{Manifest, ManifestError, ValidGroup, ValidManifest};
pub mod error;
pub mod events;
pub mod node;
#[cfg(feature = "test-support")]
pub mod openapi_check;
pub mod proof;
pub mod provider;
pub mod request;
pub mod sync;

pub use crate::error::{ErrorBody, ErrorCode, ErrorEnvelope};
pub use pazar_types::state_key;
