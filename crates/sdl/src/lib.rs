//! Akash SDL v2 (`deploy.yaml`) for Pazar: parsing with line and column in every error,
//! validation with Akash's limits, and the two outputs of a deployment file: the groups the
//! ledger holds (one per placement) and the manifest providers run, whose canonical SHA-256 is
//! the deployment version.
//!
//! ```text
//! bytes ──yaml::parse_bytes──▶ tree with positions ──read──▶ typed sections ──build──▶ groups + manifest
//! ```

mod read;
mod sdl;
pub mod units;
pub mod yaml;

use std::fmt;

use pazar_types::market::GroupSpec;
use pazar_types::{Denom, Hash32};
use serde::Serialize;

pub use crate::yaml::{Limits, Pos};
/// The manifest and the name rules live in the contract crate, which providers read manifests
/// with; they stay reachable here so SDL users name them where the SDL builds them.
pub use pazar_api::manifest::{Manifest, ManifestError, ValidGroup, ValidManifest};
pub use pazar_api::{manifest, names};

/// One finding, located in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    #[serde(flatten)]
    pub pos: Pos,
    /// Where in the document, e.g. `services.web.expose[0].port`.
    pub path: String,
    pub message: String,
}

impl Diagnostic {
    /// `FILE:LINE:COL: path: message`, the form editors and CI logs link from.
    pub fn render(&self, file: &str) -> String {
        if self.path.is_empty() {
            format!("{file}:{}:{}: {}", self.pos.line, self.pos.col, self.message)
        } else {
            format!(
                "{file}:{}:{}: {}: {}",
                self.pos.line, self.pos.col, self.path, self.message
            )
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.render("sdl"))
    }
}

/// The chain's denominations, which prices are mapped onto.
#[derive(Debug, Clone)]
pub struct Options {
    pub native: Denom,
    pub stable: Denom,
    pub limits: Limits,
    /// The tenant has said yes to running where no auditor it named can vouch: Akash auditors
    /// (`akash1…`), which have no Pazar identity, are then left out of `signedBy` with a
    /// warning instead of refusing the file. Off by default: a requirement is never dropped
    /// without the tenant's consent.
    pub accept_unaudited: bool,
}

impl Options {
    pub fn new(native: Denom, stable: Denom) -> Options {
        Options {
            native,
            stable,
            limits: Limits::default(),
            accept_unaudited: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SdlVersion {
    #[serde(rename = "2.0")]
    V2_0,
    #[serde(rename = "2.1")]
    V2_1,
}

/// A valid deployment file.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub version: SdlVersion,
    /// For the ledger, one per placement, in name order.
    pub groups: Vec<GroupSpec>,
    /// For providers.
    pub manifest: Manifest,
    /// SHA-256 of the manifest's canonical encoding.
    pub manifest_version: Hash32,
    pub warnings: Vec<Diagnostic>,
    /// How Akash-specific values were translated (denominations, auditors).
    pub notes: Vec<String>,
}

/// Parses and validates an SDL file. On failure, every error found, in file order.
pub fn parse(bytes: &[u8], opts: &Options) -> Result<Deployment, Vec<Diagnostic>> {
    sdl::parse(bytes, opts)
}
