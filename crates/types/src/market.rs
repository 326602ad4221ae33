//! Market objects: identifiers, group specs (resources, requirements, prices) and the state enums
//! of deployments, groups, orders, bids and leases, with Akash's numbering where users know it.

use std::fmt;

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::coin::{Dec, Price};

/// Bounds on what one deployment may ask for (Akash's validation limits where they exist).
pub mod limits {
    pub const MAX_GROUPS: usize = 20;
    pub const MAX_UNITS_PER_GROUP: usize = 20;
    pub const MAX_UNIT_COUNT: u32 = 50;
    pub const MIN_CPU_MILLIS: u32 = 10;
    pub const MAX_CPU_MILLIS: u32 = 384_000;
    pub const MIN_MEMORY: u64 = 1 << 20;
    pub const MAX_MEMORY: u64 = 2 << 40;
    pub const MIN_STORAGE: u64 = 5 << 20;
    pub const MAX_STORAGE: u64 = 32 << 40;
    pub const MAX_VOLUMES: usize = 8;
    pub const MAX_GPU_UNITS: u32 = 24;
    pub const MAX_ENDPOINTS: usize = 32;
    pub const MAX_ATTRIBUTES: usize = 64;
    pub const MAX_AUDITORS: usize = 16;
    pub const MAX_NAME_LEN: usize = 64;
    pub const MAX_KEY_LEN: usize = 127;
    pub const MAX_VALUE_LEN: usize = 256;
    pub const MAX_URI_LEN: usize = 256;
    /// Highest accepted unit price per block, in whole base units (Akash: 10,000,000).
    pub const MAX_UNIT_PRICE_UNITS: u128 = 10_000_000;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A `key=value` attribute of a provider or a requirement of a placement.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attribute {
    pub key: String,
    pub value: String,
}

impl Attribute {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Validates an attribute list: key syntax (Akash's `^[a-zA-Z][\w/.-]{1,126}$`, plus a trailing
/// `*` where `wildcard`), value length and unique keys.
pub fn validate_attributes(field: &str, attrs: &[Attribute], wildcard: bool) -> Result<(), SpecError> {
    if attrs.len() > limits::MAX_ATTRIBUTES {
        return Err(invalid(field, format!("at most {} attributes", limits::MAX_ATTRIBUTES)));
    }
    let mut keys: Vec<&str> = Vec::with_capacity(attrs.len());
    for a in attrs {
        let key = if wildcard {
            a.key.strip_suffix('*').unwrap_or(&a.key)
        } else {
            a.key.as_str()
        };
        let b = key.as_bytes();
        let ok = (2..=limits::MAX_KEY_LEN).contains(&b.len())
            && b[0].is_ascii_alphabetic()
            && b[1..].iter().all(|c| c.is_ascii_alphanumeric() || b"_/.-".contains(c));
        if !ok {
            return Err(invalid(format!("{field}.{}", a.key), "invalid attribute key"));
        }
        if a.value.len() > limits::MAX_VALUE_LEN || a.value.chars().any(char::is_control) {
            return Err(invalid(format!("{field}.{}", a.key), "invalid attribute value"));
        }
        if keys.contains(&a.key.as_str()) {
            return Err(invalid(format!("{field}.{}", a.key), "duplicate attribute key"));
        }
        keys.push(&a.key);
    }
    Ok(())
}

pub(crate) fn validate_name(field: &str, s: &str, max: usize) -> Result<(), SpecError> {
    if s.is_empty() || s.len() > max || s.chars().any(char::is_control) {
        return Err(invalid(field, format!("must be 1-{max} printable characters")));
    }
    Ok(())
}

/// `signedBy` of a placement: auditors that must (all_of) or may (any_of) have signed the
/// required attributes of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SignedBy {
    pub all_of: Vec<Address>,
    pub any_of: Vec<Address>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlacementRequirements {
    pub attributes: Vec<Attribute>,
    pub signed_by: SignedBy,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndpointKind {
    SharedHttp,
    RandomPort,
    LeasedIp,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Endpoint {
    pub kind: EndpointKind,
    pub sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StorageVolume {
    pub name: String,
    pub bytes: u64,
    /// e.g. `persistent=true`, `class=beta2`.
    pub attributes: Vec<Attribute>,
}

impl StorageVolume {
    pub fn persistent(&self) -> bool {
        self.attributes
            .iter()
            .any(|a| a.key == "persistent" && a.value == "true")
    }
    pub fn class(&self) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.key == "class")
            .map(|a| a.value.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Gpu {
    pub units: u32,
    /// Acceptable GPUs, e.g. `vendor/nvidia/model/a100/ram/80Gi = true`; any one suffices.
    pub attributes: Vec<Attribute>,
}

/// What one replica of a service needs.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub storage: Vec<StorageVolume>,
    pub gpu: Gpu,
    pub endpoints: Vec<Endpoint>,
}

/// `count` replicas of `resources` at `price` per block per replica.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceUnit {
    pub id: u32,
    pub resources: Resources,
    pub count: u32,
    pub price: Price,
}

/// One placement group of a deployment: what the tenant asks providers to bid on.
#[derive(Debug, Clone, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupSpec {
    pub name: String,
    pub requirements: PlacementRequirements,
    pub resources: Vec<ResourceUnit>,
}

impl GroupSpec {
    /// The persistent storage a lease of this group pays for: every persistent volume of every
    /// unit, times the unit's replicas (saturating). The most a restore may stage and write.
    pub fn persistent_bytes(&self) -> u64 {
        self.resources
            .iter()
            .map(|u| {
                let per: u64 = u
                    .resources
                    .storage
                    .iter()
                    .filter(|v| v.persistent())
                    .fold(0u64, |a, v| a.saturating_add(v.bytes));
                per.saturating_mul(u64::from(u.count))
            })
            .fold(0u64, u64::saturating_add)
    }

    /// The highest price per block this group accepts: Σ unit price × count.
    pub fn max_price(&self) -> Option<Price> {
        let first = self.resources.first()?;
        let mut total = Dec::ZERO;
        for unit in &self.resources {
            if unit.price.denom != first.price.denom {
                return None;
            }
            total = total.checked_add(unit.price.amount.checked_mul_int(u128::from(unit.count))?)?;
        }
        Some(Price {
            denom: first.price.denom.clone(),
            amount: total,
        })
    }

    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        validate_name(&format!("{field}.name"), &self.name, limits::MAX_NAME_LEN)?;
        validate_attributes(
            &format!("{field}.requirements.attributes"),
            &self.requirements.attributes,
            true,
        )?;
        let sb = &self.requirements.signed_by;
        if sb.all_of.len() > limits::MAX_AUDITORS || sb.any_of.len() > limits::MAX_AUDITORS {
            return Err(invalid(format!("{field}.requirements.signed_by"), "too many auditors"));
        }
        if self.resources.is_empty() || self.resources.len() > limits::MAX_UNITS_PER_GROUP {
            return Err(invalid(
                format!("{field}.resources"),
                format!("must have 1-{} resource units", limits::MAX_UNITS_PER_GROUP),
            ));
        }
        for (i, unit) in self.resources.iter().enumerate() {
            let f = format!("{field}.resources[{i}]");
            validate_unit(&f, unit)?;
        }
        if self.max_price().is_none() {
            return Err(invalid(
                format!("{field}.resources"),
                "all prices must share one denomination",
            ));
        }
        Ok(())
    }
}

fn validate_unit(f: &str, unit: &ResourceUnit) -> Result<(), SpecError> {
    use limits::*;
    let r = &unit.resources;
    if unit.count == 0 || unit.count > MAX_UNIT_COUNT {
        return Err(invalid(format!("{f}.count"), format!("must be 1-{MAX_UNIT_COUNT}")));
    }
    if !(MIN_CPU_MILLIS..=MAX_CPU_MILLIS).contains(&r.cpu_millis) {
        return Err(invalid(
            format!("{f}.cpu"),
            format!("must be {MIN_CPU_MILLIS}m-{MAX_CPU_MILLIS}m"),
        ));
    }
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&r.memory_bytes) {
        return Err(invalid(format!("{f}.memory"), "must be 1Mi-2Ti"));
    }
    if r.storage.len() > MAX_VOLUMES {
        return Err(invalid(
            format!("{f}.storage"),
            format!("at most {MAX_VOLUMES} volumes"),
        ));
    }
    for (j, v) in r.storage.iter().enumerate() {
        validate_name(&format!("{f}.storage[{j}].name"), &v.name, MAX_NAME_LEN)?;
        if !(MIN_STORAGE..=MAX_STORAGE).contains(&v.bytes) {
            return Err(invalid(format!("{f}.storage[{j}].size"), "must be 5Mi-32Ti"));
        }
        validate_attributes(&format!("{f}.storage[{j}].attributes"), &v.attributes, false)?;
        if r.storage[..j].iter().any(|o| o.name == v.name) {
            return Err(invalid(format!("{f}.storage[{j}].name"), "duplicate volume name"));
        }
    }
    if r.gpu.units > MAX_GPU_UNITS {
        return Err(invalid(format!("{f}.gpu.units"), format!("at most {MAX_GPU_UNITS}")));
    }
    if (r.gpu.units > 0) == r.gpu.attributes.is_empty() {
        return Err(invalid(
            format!("{f}.gpu"),
            "gpu units and gpu attributes must be given together",
        ));
    }
    validate_attributes(&format!("{f}.gpu.attributes"), &r.gpu.attributes, true)?;
    if r.endpoints.len() > MAX_ENDPOINTS {
        return Err(invalid(format!("{f}.endpoints"), format!("at most {MAX_ENDPOINTS}")));
    }
    let max_unit = Dec::from_int(MAX_UNIT_PRICE_UNITS).expect("constant fits");
    if unit.price.amount.is_zero() || unit.price.amount > max_unit {
        return Err(invalid(
            format!("{f}.price"),
            format!("must be > 0 and ≤ {MAX_UNIT_PRICE_UNITS} per block"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Identifiers. Their derived order is the iteration order of the ledger's tables, so ranges over
// a prefix (all bids of an order, all leases of a deployment) are contiguous.

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeploymentId {
    pub owner: Address,
    pub dseq: u64,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupId {
    pub owner: Address,
    pub dseq: u64,
    pub gseq: u32,
}

#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderId {
    pub owner: Address,
    pub dseq: u64,
    pub gseq: u32,
    pub oseq: u32,
}

/// A bid and the lease it may become share one id (Akash: `bseq` is always 0, so it is dropped).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BidId {
    pub owner: Address,
    pub dseq: u64,
    pub gseq: u32,
    pub oseq: u32,
    pub provider: Address,
}

pub type LeaseId = BidId;

impl DeploymentId {
    pub fn group(&self, gseq: u32) -> GroupId {
        GroupId {
            owner: self.owner,
            dseq: self.dseq,
            gseq,
        }
    }
}

impl GroupId {
    pub fn deployment(&self) -> DeploymentId {
        DeploymentId {
            owner: self.owner,
            dseq: self.dseq,
        }
    }
    pub fn order(&self, oseq: u32) -> OrderId {
        OrderId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
            oseq,
        }
    }
}

impl OrderId {
    /// The greatest order id: the upper end of a range over every order.
    pub const MAX: OrderId = OrderId {
        owner: Address::MAX,
        dseq: u64::MAX,
        gseq: u32::MAX,
        oseq: u32::MAX,
    };

    pub fn group(&self) -> GroupId {
        GroupId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
        }
    }
    pub fn deployment(&self) -> DeploymentId {
        DeploymentId {
            owner: self.owner,
            dseq: self.dseq,
        }
    }
    pub fn bid(&self, provider: Address) -> BidId {
        BidId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
            oseq: self.oseq,
            provider,
        }
    }
}

impl BidId {
    /// The greatest bid id: the upper end of a range over every bid.
    pub const MAX: BidId = BidId {
        owner: Address::MAX,
        dseq: u64::MAX,
        gseq: u32::MAX,
        oseq: u32::MAX,
        provider: Address::MAX,
    };

    pub fn order(&self) -> OrderId {
        OrderId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
            oseq: self.oseq,
        }
    }
    pub fn group(&self) -> GroupId {
        GroupId {
            owner: self.owner,
            dseq: self.dseq,
            gseq: self.gseq,
        }
    }
    pub fn deployment(&self) -> DeploymentId {
        DeploymentId {
            owner: self.owner,
            dseq: self.dseq,
        }
    }
}

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.dseq)
    }
}
impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.owner, self.dseq, self.gseq)
    }
}
impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}/{}", self.owner, self.dseq, self.gseq, self.oseq)
    }
}
impl fmt::Display for BidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{}",
            self.owner, self.dseq, self.gseq, self.oseq, self.provider
        )
    }
}

/// A malformed `OWNER/DSEQ/GSEQ/OSEQ/PROVIDER` lease or bid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("lease or bid id {id:?} must be OWNER/DSEQ/GSEQ/OSEQ/PROVIDER: {reason}")]
pub struct BadBidId {
    pub id: String,
    pub reason: String,
}

impl std::str::FromStr for BidId {
    type Err = BadBidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| BadBidId {
            id: s.to_string(),
            reason,
        };
        let p: Vec<&str> = s.split('/').collect();
        let [o, d, g, q, pr] = p.as_slice() else {
            return Err(bad(format!("{} parts instead of 5", p.len())));
        };
        let num = |what: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{what} {v:?} is not a number")))
        };
        Ok(BidId {
            owner: o.parse().map_err(|e| bad(format!("owner: {e}")))?,
            dseq: num("dseq", d)?,
            gseq: u32::try_from(num("gseq", g)?).map_err(|_| bad("gseq too large".into()))?,
            oseq: u32::try_from(num("oseq", q)?).map_err(|_| bad("oseq too large".into()))?,
            provider: pr.parse().map_err(|e| bad(format!("provider: {e}")))?,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// States, numbered as in Akash's protobufs.

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum DeploymentState {
    Active = 1,
    Closed = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum GroupState {
    Open = 1,
    Paused = 2,
    InsufficientFunds = 3,
    Closed = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum OrderState {
    Open = 1,
    Active = 2,
    Closed = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum BidState {
    Open = 1,
    Active = 2,
    Lost = 3,
    Closed = 4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[borsh(use_discriminant = true)]
#[repr(u8)]
pub enum LeaseState {
    Active = 1,
    InsufficientFunds = 2,
    Closed = 3,
    /// The escrow ran dry: the provider is not paid, keeps the lease's volumes and may stop
    /// its containers until a deposit resumes the lease (`active` again) or the grace period
    /// ends it (`insufficient_funds`).
    Grace = 4,
}

impl LeaseState {
    /// Active or in grace: the lease still holds its provider's capacity and its bid.
    pub fn is_live(self) -> bool {
        matches!(self, LeaseState::Active | LeaseState::Grace)
    }
}

/// Why a lease closed; codes as Akash's `LeaseClosedReason` (1..9999 owner, 10000..19999
/// provider, 20000..29999 network).
#[derive(Debug, Clone, Copy, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LeaseCloseReason {
    Owner,
    Unstable,
    Decommission,
    Unspecified,
    ManifestTimeout,
    InsufficientFunds,
    /// The tenant (or its agent) closed the lease because the provider stopped answering.
    ProviderUnresponsive,
}

impl LeaseCloseReason {
    pub fn code(self) -> u32 {
        match self {
            LeaseCloseReason::Owner => 1,
            LeaseCloseReason::Unstable => 10000,
            LeaseCloseReason::Decommission => 10001,
            LeaseCloseReason::Unspecified => 10002,
            LeaseCloseReason::ManifestTimeout => 10003,
            LeaseCloseReason::InsufficientFunds => 20000,
            LeaseCloseReason::ProviderUnresponsive => 2,
        }
    }

    /// Reasons a tenant may give.
    pub fn is_owner_reason(self) -> bool {
        (1..10000).contains(&self.code())
    }

    /// Reasons a provider may give.
    pub fn is_provider_reason(self) -> bool {
        (10000..20000).contains(&self.code())
    }
}

// ---------------------------------------------------------------------------------------------
// Matching: one rule shared by the ledger (a bid must satisfy its order), the bid engine and
// "why no bids", so every side gives the same answer. It lives in `market/matching.rs`; the
// names below keep their `market::` paths.

pub mod matching;

pub use matching::{
    attributes_subset, key_matches, match_group, Mismatch, GPU_CAPABILITY_PREFIX, LEASED_IP_ATTRIBUTE,
    STORAGE_CAPABILITY_PREFIX,
};
