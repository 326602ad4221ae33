//! The manifest: what providers run for a deployment, sent to them off-chain. Its canonical
//! encoding is JSON with keys sorted at every level and no insignificant whitespace (as Akash's
//! `Manifest.Version` does); the SHA-256 of those bytes is the deployment version recorded on
//! the ledger, which a provider checks before it runs anything.
//!
//! A manifest that hashes to the ledger's version proves only that the tenant chose it, not that
//! it is sane: the tenant can put the hash of any hand-written manifest on the ledger. So a
//! provider never uses the wire types directly: [`ValidManifest::decode`] bounds the bytes, the
//! list lengths and the fields (no unknown ones), then holds every value to the SDL reader's
//! rules ([`crate::names`]); [`ValidManifest`] and [`ValidGroup`] can only be made that way.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use pazar_types::market::{limits as ledger, validate_attributes, Endpoint, EndpointKind, Resources};
use pazar_types::Hash32;

use crate::names::{self, shorten};

/// Bounds of a manifest beyond the ledger's own ([`pazar_types::market::limits`]).
pub mod limits {
    /// Largest manifest a provider reads.
    pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
    /// Services in one group (SDL 2.1 lets several share one resource unit).
    pub const MAX_SERVICES: usize = 64;
    /// Entries of `command`, of `args`, and of `env`, each.
    pub const MAX_LIST: usize = 256;
    /// Bytes of one command word, argument or environment entry.
    pub const MAX_STRING: usize = 32 << 10;
    /// Exposes of one service (one per destination of each SDL expose).
    pub const MAX_EXPOSES: usize = 64;
    /// Host names of one expose.
    pub const MAX_HOSTS: usize = 32;
    /// `next_cases` of one expose (there are ten cases).
    pub const MAX_NEXT_CASES: usize = 10;
    /// Volumes one service mounts: at most every volume of its unit.
    pub const MAX_MOUNTS: usize = pazar_types::market::limits::MAX_VOLUMES;
    /// Bytes of a registry credential field.
    pub const MAX_CREDENTIAL: usize = 1024;
    /// Akash's bounds on `http_options`.
    pub const MAX_BODY_SIZE: u32 = 104_857_600;
    pub const MAX_TIMEOUT_MS: u32 = 60_000;
    pub const MAX_NEXT_TRIES: u32 = 1_000;

    // A manifest of the most groups, each of the most services, is still bounded by the bytes.
    const _: () = assert!(MAX_STRING < MAX_MANIFEST_BYTES);
}

/// Storage classes of the SDL (`class` attribute of a volume).
pub const STORAGE_CLASSES: &[&str] = &["default", "beta1", "beta2", "beta3", "ram"];
/// Akash's `next_cases` of `http_options`.
pub const NEXT_CASES: &[&str] = &[
    "error", "timeout", "500", "502", "503", "504", "403", "404", "429", "off",
];

/// Why a manifest was refused, in words a tenant can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes; at most {max}", max = limits::MAX_MANIFEST_BYTES)]
    TooLarge(usize),
    #[error("manifest does not decode: {0}")]
    Decode(String),
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Deserializes a list of at most `N` items, failing as soon as one more arrives (so a long
/// list is refused before it is held in memory).
fn bounded<'de, D, T, const N: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Bounded<T, const N: usize>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for Bounded<T, N> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a list of at most {N} items")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element()? {
                if out.len() == N {
                    return Err(de::Error::custom(format_args!("a list of more than {N} items")));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, N>(PhantomData))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "UPPERCASE")]
pub enum Proto {
    Tcp,
    Udp,
}

/// Ingress settings of an HTTP expose (Akash's defaults and bounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    pub max_body_size: u32,
    pub read_timeout_ms: u32,
    pub send_timeout_ms: u32,
    pub next_tries: u32,
    pub next_timeout_ms: u32,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_NEXT_CASES }>")]
    pub next_cases: Vec<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_size: 1_048_576,
            read_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
            next_tries: 3,
            next_timeout_ms: 0,
            next_cases: vec!["error".into(), "timeout".into()],
        }
    }
}

/// One port a service exposes, to one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expose {
    /// Port the container listens on.
    pub port: u16,
    /// Port the outside sees (80 with TCP and `global` means HTTP ingress by hostname).
    pub external_port: u16,
    pub proto: Proto,
    /// Service allowed to connect (empty: none named).
    pub service: String,
    /// Reachable from outside the deployment.
    pub global: bool,
    /// Hostnames accepted by the ingress.
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_HOSTS }>")]
    pub hosts: Vec<String>,
    pub http_options: HttpOptions,
    /// Name of the leased-IP endpoint, if any.
    pub ip: String,
    /// Sequence number of that endpoint (1-based), 0 without one.
    pub endpoint_sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageMount {
    pub name: String,
    pub mount: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub host: String,
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub image: String,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_LIST }>")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_LIST }>")]
    pub args: Vec<String>,
    /// `KEY=value` entries.
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_LIST }>")]
    pub env: Vec<String>,
    /// Id of the group's resource unit this service runs on.
    pub resource_id: u32,
    pub resources: Resources,
    pub count: u32,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_EXPOSES }>")]
    pub expose: Vec<Expose>,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_MOUNTS }>")]
    pub storage: Vec<StorageMount>,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// The placement name, which is also the name of the deployment group on the ledger.
    pub name: String,
    #[serde(deserialize_with = "bounded::<_, _, { limits::MAX_SERVICES }>")]
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(deserialize_with = "bounded::<_, _, { ledger::MAX_GROUPS }>")]
    pub groups: Vec<Group>,
}

impl Manifest {
    /// Compact JSON with the keys of every object sorted (explicitly, so the encoding does not
    /// depend on whether some crate in the build turns on serde_json's `preserve_order`).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("a manifest always encodes to JSON");
        let mut out = Vec::new();
        write_canonical(&value, &mut out);
        out
    }

    /// SHA-256 of [`Manifest::canonical_bytes`]: the deployment version.
    pub fn version(&self) -> Hash32 {
        Sha256::digest(self.canonical_bytes()).into()
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

fn write_canonical(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend(serde_json::to_vec(k).expect("a string always encodes"));
                out.push(b':');
                write_canonical(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend(serde_json::to_vec(scalar).expect("a scalar always encodes")),
    }
}

/// The endpoints a resource unit needs for these exposes: HTTP ingress for global TCP on
/// external port 80, a random host port for other global exposes, and a leased IP where one is
/// named. The SDL builds units with it, and a manifest's units must agree with it.
pub fn unit_endpoints(exposes: &[Expose]) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for x in exposes.iter().filter(|x| x.global) {
        let kind = if x.proto == Proto::Tcp && x.external_port == 80 {
            EndpointKind::SharedHttp
        } else {
            EndpointKind::RandomPort
        };
        out.push(Endpoint { kind, sequence: 0 });
        if x.endpoint_sequence > 0 {
            out.push(Endpoint {
                kind: EndpointKind::LeasedIp,
                sequence: x.endpoint_sequence,
            });
        }
    }
    out
}

/// A manifest that decoded within bounds and keeps every rule of the SDL reader. The only ways
/// to make one are [`ValidManifest::decode`] and [`ValidManifest::new`], which check; it reads
/// as the wire [`Manifest`] through `Deref`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ValidManifest(Manifest);

impl ValidManifest {
    /// Decodes untrusted bytes: at most [`limits::MAX_MANIFEST_BYTES`], JSON of exactly the
    /// manifest's fields with bounded lists, then [`ValidManifest::new`]'s rules.
    pub fn decode(bytes: &[u8]) -> Result<ValidManifest, ManifestError> {
        if bytes.len() > limits::MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        ValidManifest::new(m)
    }

    /// Checks a manifest: every group (see [`ValidGroup::new`]), 1 to
    /// [`ledger::MAX_GROUPS`] groups with distinct names, a host name accepted by one expose
    /// per kind (HTTP or TLS) in the whole manifest, and exposes that name only its services.
    pub fn new(m: Manifest) -> Result<ValidManifest, ManifestError> {
        if m.groups.is_empty() || m.groups.len() > ledger::MAX_GROUPS {
            return Err(invalid(
                "groups",
                format!("a manifest has 1 to {} groups", ledger::MAX_GROUPS),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, g) in m.groups.iter().enumerate() {
            check_group(g, &format!("groups[{i}]"))?;
            if !names.insert(g.name.as_str()) {
                return Err(invalid(
                    format!("groups[{i}]"),
                    format!("group {:?} appears twice", g.name),
                ));
            }
        }
        let services: BTreeSet<&str> = m
            .groups
            .iter()
            .flat_map(|g| g.services.iter().map(|s| s.name.as_str()))
            .collect();
        let mut hosts: BTreeMap<(&str, bool), String> = BTreeMap::new();
        for g in &m.groups {
            for s in &g.services {
                for (k, x) in s.expose.iter().enumerate() {
                    let at = format!("{}.{}.expose[{k}]", g.name, s.name);
                    if !x.service.is_empty() && !services.contains(x.service.as_str()) {
                        return Err(invalid(
                            &at,
                            format!("names service {:?}, which the manifest does not have", x.service),
                        ));
                    }
                    // An expose with several destinations repeats its hosts once per destination.
                    let distinct: BTreeSet<&str> = x.hosts.iter().map(String::as_str).collect();
                    for h in distinct {
                        let key = (h, x.external_port == 443);
                        match hosts.get(&key) {
                            Some(first) if *first != format!("{}.{}.{}", g.name, s.name, x.port) => {
                                return Err(invalid(&at, format!("host {h:?} is already accepted by {first}")));
                            }
                            Some(_) => {}
                            None => {
                                hosts.insert(key, format!("{}.{}.{}", g.name, s.name, x.port));
                            }
                        }
                    }
                }
            }
        }
        Ok(ValidManifest(m))
    }

    /// The group named `name`, valid on its own.
    pub fn group(&self, name: &str) -> Option<ValidGroup> {
        self.0.group(name).cloned().map(ValidGroup)
    }

    pub fn into_inner(self) -> Manifest {
        self.0
    }
}

impl Deref for ValidManifest {
    type Target = Manifest;
    fn deref(&self) -> &Manifest {
        &self.0
    }
}

/// One group of a valid manifest: what a runtime is given to run. Made only by
/// [`ValidGroup::new`] (which checks), from a [`ValidManifest`], or by deserializing, which
/// checks the same way (a group read back from disk is held to the same rules).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Group")]
pub struct ValidGroup(Group);

impl Serialize for ValidGroup {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl ValidGroup {
    /// Checks a group on its own: its name; 1 to [`limits::MAX_SERVICES`] services with distinct
    /// names, each with a valid image, bounded commands, arguments and environment (POSIX names,
    /// no NUL), 1 to [`ledger::MAX_UNIT_COUNT`] replicas, resources within the ledger's limits,
    /// exposes with valid ports, host names and HTTP options, mounts of its own non-root volumes
    /// on valid, distinct paths; services sharing a resource unit ask for the same resources, and
    /// each unit's endpoints are exactly those its services' global exposes need.
    pub fn new(g: Group) -> Result<ValidGroup, ManifestError> {
        check_group(&g, "group")?;
        Ok(ValidGroup(g))
    }

    pub fn into_inner(self) -> Group {
        self.0
    }
}

#[cfg(feature = "unchecked")]
impl ValidGroup {
    /// A group taken as valid without the checks, for tests of a runtime's own defences (what
    /// it refuses even if a group got past this parser). Only with the `unchecked` feature,
    /// which only test builds turn on (as a dev-dependency feature, it never reaches a binary).
    pub fn unchecked(g: Group) -> ValidGroup {
        ValidGroup(g)
    }
}

impl TryFrom<Group> for ValidGroup {
    type Error = ManifestError;
    fn try_from(g: Group) -> Result<ValidGroup, ManifestError> {
        ValidGroup::new(g)
    }
}

impl Deref for ValidGroup {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.0
    }
}

fn check_group(g: &Group, at: &str) -> Result<(), ManifestError> {
    if !names::is_group_name(&g.name) {
        return Err(invalid(
            format!("{at}.name"),
            format!(
                "{:?} is not a placement name (1-{} characters without spaces)",
                shorten(&g.name),
                ledger::MAX_NAME_LEN
            ),
        ));
    }
    let at = g.name.as_str();
    if g.services.is_empty() {
        return Err(invalid(at, "the group has no service"));
    }
    let mut seen = BTreeSet::new();
    for (i, s) in g.services.iter().enumerate() {
        if !names::is_service_name(&s.name) {
            return Err(invalid(
                format!("{at}.services[{i}].name"),
                format!(
                    "{:?} is not a service name (1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-')",
                    shorten(&s.name)
                ),
            ));
        }
        if !seen.insert(s.name.as_str()) {
            return Err(invalid(
                format!("{at}.{}", s.name),
                "the service appears twice in the group",
            ));
        }
        check_service(s, &format!("{at}.{}", s.name))?;
    }
    // Services on one unit share its resources; the unit's endpoints are what their global
    // exposes need, no more and no fewer (a unit leased without a port cannot get one).
    let mut units: BTreeMap<u32, (&Resources, Vec<Endpoint>)> = BTreeMap::new();
    for s in &g.services {
        let needed = unit_endpoints(&s.expose);
        match units.get_mut(&s.resource_id) {
            None => {
                units.insert(s.resource_id, (&s.resources, needed));
            }
            Some((r, eps)) => {
                if **r != s.resources {
                    return Err(invalid(
                        format!("{at}.{}.resources", s.name),
                        format!(
                            "differ from those of another service on resource unit {}",
                            s.resource_id
                        ),
                    ));
                }
                eps.extend(needed);
            }
        }
    }
    for (id, (r, mut needed)) in units {
        let mut have = r.endpoints.clone();
        needed.sort_by_key(|e| (e.kind, e.sequence));
        have.sort_by_key(|e| (e.kind, e.sequence));
        if needed != have {
            return Err(invalid(
                format!("{at}.resources[{id}].endpoints"),
                format!(
                    "the unit has {} endpoint(s) but its services' global exposes need {} ({:?} vs {:?})",
                    have.len(),
                    needed.len(),
                    have.iter().map(|e| e.kind).collect::<Vec<_>>(),
                    needed.iter().map(|e| e.kind).collect::<Vec<_>>()
                ),
            ));
        }
    }
    Ok(())
}

/// A string of at most `max` bytes without NUL (what an `execve` argument or environment entry
/// can carry).
fn check_string(path: &str, what: &str, s: &str, max: usize) -> Result<(), ManifestError> {
    if s.len() > max {
        return Err(invalid(path, format!("{what} is {} bytes; at most {max}", s.len())));
    }
    if s.contains('\0') {
        return Err(invalid(path, format!("{what} contains a NUL byte")));
    }
    Ok(())
}

fn check_service(s: &Service, at: &str) -> Result<(), ManifestError> {
    names::check_image(&s.image).map_err(|r| invalid(format!("{at}.image"), format!("{:?} {r}", shorten(&s.image))))?;
    for (field, list) in [("command", &s.command), ("args", &s.args)] {
        for (i, a) in list.iter().enumerate() {
            check_string(&format!("{at}.{field}[{i}]"), "the entry", a, limits::MAX_STRING)?;
        }
    }
    for (i, e) in s.env.iter().enumerate() {
        let path = format!("{at}.env[{i}]");
        check_string(&path, "the entry", e, limits::MAX_STRING)?;
        let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
        if !names::is_env_name(name) {
            return Err(invalid(
                path,
                format!(
                    "{:?} is not an environment variable name (letters, digits and '_', not starting with a digit; write KEY=value)",
                    shorten(name)
                ),
            ));
        }
    }
    if s.resource_id == 0 {
        return Err(invalid(
            format!("{at}.resource_id"),
            "resource units are numbered from 1",
        ));
    }
    if s.count == 0 || s.count > ledger::MAX_UNIT_COUNT {
        return Err(invalid(
            format!("{at}.count"),
            format!("{} replicas; a service runs 1 to {}", s.count, ledger::MAX_UNIT_COUNT),
        ));
    }
    check_resources(&s.resources, &format!("{at}.resources"))?;
    for (k, x) in s.expose.iter().enumerate() {
        check_expose(x, &format!("{at}.expose[{k}]"))?;
    }
    let mut volumes = BTreeSet::new();
    let mut paths = BTreeSet::new();
    for (k, m) in s.storage.iter().enumerate() {
        let path = format!("{at}.storage[{k}]");
        if !names::is_volume_name(&m.name) {
            return Err(invalid(
                format!("{path}.name"),
                format!(
                    "{:?} is not a volume name (1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit)",
                    shorten(&m.name)
                ),
            ));
        }
        names::check_mount_path(&m.mount)
            .map_err(|r| invalid(format!("{path}.mount"), format!("{:?} {r}", shorten(&m.mount))))?;
        if !volumes.insert(m.name.as_str()) {
            return Err(invalid(&path, format!("volume {:?} is mounted twice", m.name)));
        }
        let normalised = if m.mount.len() > 1 {
            m.mount.trim_end_matches('/')
        } else {
            m.mount.as_str()
        };
        if !paths.insert(normalised) {
            return Err(invalid(&path, format!("mount path {:?} is used twice", m.mount)));
        }
        match s.resources.storage.iter().find(|v| v.name == m.name) {
            None => {
                return Err(invalid(
                    &path,
                    format!("mounts volume {:?}, which the service's resources do not have", m.name),
                ))
            }
            Some(v) if v.name == "default" && !v.persistent() && v.class().is_none() => {
                return Err(invalid(
                    &path,
                    "the root volume cannot be mounted; mount a named persistent or ram volume",
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(c) = &s.credentials {
        for (field, v) in [
            ("host", &c.host),
            ("email", &c.email),
            ("username", &c.username),
            ("password", &c.password),
        ] {
            if v.len() > limits::MAX_CREDENTIAL || v.chars().any(char::is_control) {
                return Err(invalid(
                    format!("{at}.credentials.{field}"),
                    format!(
                        "must be at most {} bytes without control characters",
                        limits::MAX_CREDENTIAL
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The ledger's bounds on one unit's resources (its own check is not public), plus volume
/// names that are safe as host paths and known storage classes.
fn check_resources(r: &Resources, at: &str) -> Result<(), ManifestError> {
    if !(ledger::MIN_CPU_MILLIS..=ledger::MAX_CPU_MILLIS).contains(&r.cpu_millis) {
        return Err(invalid(
            format!("{at}.cpu_millis"),
            format!("{} is out of range: a unit may have 10m to 384 cores", r.cpu_millis),
        ));
    }
    if !(ledger::MIN_MEMORY..=ledger::MAX_MEMORY).contains(&r.memory_bytes) {
        return Err(invalid(format!("{at}.memory_bytes"), "must be 1Mi to 2Ti"));
    }
    if r.storage.len() > ledger::MAX_VOLUMES {
        return Err(invalid(
            format!("{at}.storage"),
            format!("at most {} volumes", ledger::MAX_VOLUMES),
        ));
    }
    let mut seen = BTreeSet::new();
    for (j, v) in r.storage.iter().enumerate() {
        let path = format!("{at}.storage[{j}]");
        if !names::is_volume_name(&v.name) {
            return Err(invalid(
                format!("{path}.name"),
                format!("{:?} is not a volume name", shorten(&v.name)),
            ));
        }
        if !seen.insert(v.name.as_str()) {
            return Err(invalid(&path, format!("volume {:?} appears twice", v.name)));
        }
        if !(ledger::MIN_STORAGE..=ledger::MAX_STORAGE).contains(&v.bytes) {
            return Err(invalid(format!("{path}.bytes"), "must be 5Mi to 32Ti"));
        }
        validate_attributes(&path, &v.attributes, false).map_err(|e| invalid(&path, e.to_string()))?;
        if let Some(c) = v.class() {
            if !STORAGE_CLASSES.contains(&c) {
                return Err(invalid(&path, format!("{:?} is not a storage class", shorten(c))));
            }
        }
    }
    if r.gpu.units > ledger::MAX_GPU_UNITS {
        return Err(invalid(
            format!("{at}.gpu.units"),
            format!("at most {}", ledger::MAX_GPU_UNITS),
        ));
    }
    validate_attributes(&format!("{at}.gpu"), &r.gpu.attributes, true)
        .map_err(|e| invalid(format!("{at}.gpu"), e.to_string()))?;
    if r.endpoints.len() > ledger::MAX_ENDPOINTS {
        return Err(invalid(
            format!("{at}.endpoints"),
            format!("at most {}", ledger::MAX_ENDPOINTS),
        ));
    }
    Ok(())
}

fn check_expose(x: &Expose, at: &str) -> Result<(), ManifestError> {
    if x.port == 0 || x.external_port == 0 {
        return Err(invalid(at, "ports are 1 to 65535"));
    }
    if !x.service.is_empty() && !names::is_service_name(&x.service) {
        return Err(invalid(
            format!("{at}.service"),
            format!("{:?} is not a service name", shorten(&x.service)),
        ));
    }
    for (h, host) in x.hosts.iter().enumerate() {
        if !names::is_hostname(host) {
            return Err(invalid(
                format!("{at}.hosts[{h}]"),
                format!("{:?} is not a valid host name", shorten(host)),
            ));
        }
    }
    if !x.ip.is_empty() {
        if !names::is_endpoint_name(&x.ip) {
            return Err(invalid(
                format!("{at}.ip"),
                format!("{:?} is not an endpoint name", shorten(&x.ip)),
            ));
        }
        if !x.global {
            return Err(invalid(format!("{at}.ip"), "an IP endpoint needs global: true"));
        }
    }
    if x.ip.is_empty() != (x.endpoint_sequence == 0) {
        return Err(invalid(
            format!("{at}.endpoint_sequence"),
            "an IP endpoint has a sequence number from 1, and only an IP endpoint has one",
        ));
    }
    let h = &x.http_options;
    for (field, v, max) in [
        ("max_body_size", h.max_body_size, limits::MAX_BODY_SIZE),
        ("read_timeout_ms", h.read_timeout_ms, limits::MAX_TIMEOUT_MS),
        ("send_timeout_ms", h.send_timeout_ms, limits::MAX_TIMEOUT_MS),
        ("next_timeout_ms", h.next_timeout_ms, limits::MAX_TIMEOUT_MS),
        ("next_tries", h.next_tries, limits::MAX_NEXT_TRIES),
    ] {
        if v > max {
            return Err(invalid(
                format!("{at}.http_options.{field}"),
                format!("{v} is above {max}"),
            ));
        }
    }
    for c in &h.next_cases {
        if !NEXT_CASES.contains(&c.as_str()) {
            return Err(invalid(
                format!("{at}.http_options.next_cases"),
                format!("{:?} is not one of {}", shorten(c), NEXT_CASES.join(", ")),
            ));
        }
    }
    if h.next_cases.iter().any(|c| c == "off") && h.next_cases.len() > 1 {
        return Err(invalid(
            format!("{at}.http_options.next_cases"),
            "\"off\" must be the only case",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest pazar-sdl builds from its reference file (one web service with a
    /// persistent volume and an HTTP expose), as a provider receives it. pazar-sdl's tests pin
    /// that its file yields exactly this manifest, by [`FIXTURE_VERSION`].
    const FIXTURE: &str = r#"{
  "groups": [
    {
      "name": "dc",
      "services": [
        {
          "args": [
            "exec web"
          ],
          "command": [
            "/bin/sh",
            "-c"
          ],
          "count": 1,
          "credentials": null,
          "env": [
            "MODE=prod",
            "EMPTY=",
            "FLAG"
          ],
          "expose": [
            {
              "endpoint_sequence": 0,
              "external_port": 80,
              "global": true,
              "hosts": [
                "shop.example.com"
              ],
              "http_options": {
                "max_body_size": 1048576,
                "next_cases": [
                  "error",
                  "timeout"
                ],
                "next_timeout_ms": 0,
                "next_tries": 3,
                "read_timeout_ms": 60000,
                "send_timeout_ms": 60000
              },
              "ip": "",
              "port": 8080,
              "proto": "TCP",
              "service": ""
            }
          ],
          "image": "example/web:1.2",
          "name": "web",
          "resource_id": 1,
          "resources": {
            "cpu_millis": 500,
            "endpoints": [
              {
                "kind": "SHARED_HTTP",
                "sequence": 0
              }
            ],
            "gpu": {
              "attributes": [],
              "units": 0
            },
            "memory_bytes": 268435456,
            "storage": [
              {
                "attributes": [],
                "bytes": 1073741824,
                "name": "default"
              },
              {
                "attributes": [
                  {
                    "key": "class",
                    "value": "default"
                  },
                  {
                    "key": "persistent",
                    "value": "true"
                  }
                ],
                "bytes": 1073741824,
                "name": "data"
              }
            ]
          },
          "storage": [
            {
              "mount": "/data",
              "name": "data",
              "read_only": false
            }
          ]
        }
      ]
    }
  ]
}"#;

    /// SHA-256 of the fixture's canonical bytes: the deployment version.
    const FIXTURE_VERSION: &str = "5e13635ef2715cc99e1882c03e0e1f778d818396695685e4152c023a585d4833";

    fn manifest() -> Manifest {
        serde_json::from_str(FIXTURE).expect("the fixture is a manifest")
    }

    /// Applies `change` to the fixture and checks the refusal mentions `expect`.
    fn check(change: impl FnOnce(&mut Manifest), expect: &str) {
        let mut m = manifest();
        change(&mut m);
        let err = ValidManifest::decode(&m.canonical_bytes())
            .expect_err(expect)
            .to_string();
        assert!(err.contains(expect), "{err:?} does not mention {expect:?}");
    }

    fn web(m: &mut Manifest) -> &mut Service {
        &mut m.groups[0].services[0]
    }

    #[test]
    fn the_canonical_bytes_are_sorted_compact_json_and_hash_to_the_pinned_version() {
        let m = manifest();
        let bytes = m.canonical_bytes();
        // Keys in order at every level, no whitespace between tokens.
        assert!(bytes.starts_with(br#"{"groups":[{"name":"dc","services":[{"args":["exec web"],"command":"#));
        assert!(!bytes.contains(&b'\n'));
        assert_eq!(hex::encode(m.version()), FIXTURE_VERSION);
    }

    #[test]
    fn a_valid_manifest_decodes_from_its_canonical_bytes_unchanged() {
        let m = manifest();
        let v = ValidManifest::decode(&m.canonical_bytes()).expect("valid");
        assert_eq!(*v, m);
        assert_eq!(v.version(), m.version());
        let g = v.group("dc").expect("group");
        let back: ValidGroup = serde_json::from_slice(&serde_json::to_vec(&g).expect("json")).expect("reads back");
        assert_eq!(back, g);
    }

    #[test]
    fn hand_written_manifests_that_break_a_rule_are_refused_with_the_reason() {
        check(|m| web(m).name = "../../x".into(), "is not a service name");
        check(
            |m| {
                let twin = m.groups[0].services[0].clone();
                m.groups[0].services.push(twin);
            },
            "appears twice",
        );
        check(|m| web(m).storage[0].name = "..".into(), "is not a volume name");
        check(
            |m| web(m).storage[0].name = "logs".into(),
            "which the service's resources do not have",
        );
        check(
            |m| web(m).storage[0].name = "default".into(),
            "the root volume cannot be mounted",
        );
        check(|m| web(m).storage[0].mount = "/data/../../etc".into(), ". or ..");
        check(|m| web(m).storage[0].mount = "/proc/self".into(), "under /proc");
        check(
            |m| web(m).storage[0].mount = "/etc/hosts".into(),
            "written by the runtime",
        );
        check(
            |m| web(m).resources.storage[1].name = "../v".into(),
            "is not a volume name",
        );
        check(
            |m| web(m).env.push("A-B=1".into()),
            "is not an environment variable name",
        );
        check(|m| web(m).env.push("A=x\0y".into()), "NUL");
        check(|m| web(m).args.push("x".repeat(limits::MAX_STRING + 1)), "at most");
        check(|m| web(m).image = "../../etc/passwd".into(), "image");
        check(|m| web(m).image = "a b".into(), "spaces");
        check(|m| web(m).count = 0, "a service runs 1 to 50");
        check(|m| web(m).count = 51, "a service runs 1 to 50");
        check(|m| web(m).resource_id = 0, "numbered from 1");
        check(|m| web(m).resources.cpu_millis = 1, "out of range");
        check(|m| web(m).expose[0].port = 0, "ports are 1 to 65535");
        check(
            |m| web(m).expose[0].hosts.push("a_b.com".into()),
            "not a valid host name",
        );
        check(
            |m| web(m).expose[0].http_options.next_cases = vec!["bogus".into()],
            "is not one of",
        );
        check(
            |m| web(m).expose[0].http_options.read_timeout_ms = 60_001,
            "above 60000",
        );
        check(|m| web(m).expose[0].ip = "vip".into(), "sequence number");
        // A second global expose the unit was not leased with: one more host port.
        check(
            |m| {
                let mut x = web(m).expose[0].clone();
                x.external_port = 9000;
                x.hosts.clear();
                web(m).expose.push(x);
            },
            "endpoint(s)",
        );
        check(
            |m| {
                let mut other = m.groups[0].services[0].clone();
                other.name = "api".into();
                other.resources.cpu_millis += 1;
                m.groups[0].services.push(other);
            },
            "differ from those of another service",
        );
        check(
            |m| {
                let twin = m.groups[0].clone();
                m.groups.push(twin);
            },
            "appears twice",
        );
        check(|m| m.groups.clear(), "1 to 20 groups");
    }

    #[test]
    fn decoding_is_bounded_and_refuses_unknown_fields() {
        let bytes = manifest().canonical_bytes();
        let big = vec![b' '; limits::MAX_MANIFEST_BYTES + 1];
        assert_eq!(
            ValidManifest::decode(&big),
            Err(ManifestError::TooLarge(limits::MAX_MANIFEST_BYTES + 1))
        );
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["groups"][0]["services"][0]["privileged"] = true.into();
        let err = ValidManifest::decode(v.to_string().as_bytes()).expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `privileged`"), "{err}");
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["groups"][0]["services"][0]["env"] = vec!["A=1"; limits::MAX_LIST + 1].into();
        let err = ValidManifest::decode(v.to_string().as_bytes()).expect_err("long list");
        assert!(err.to_string().contains("more than 256 items"), "{err}");
        for junk in [&b""[..], b"null", b"[]", b"{\"groups\": 5}", b"\xff"] {
            assert!(matches!(ValidManifest::decode(junk), Err(ManifestError::Decode(_))));
        }
    }

    #[test]
    fn a_group_read_back_from_disk_is_checked_like_a_received_one() {
        let mut g = manifest().groups.remove(0);
        g.services[0].storage[0].mount = "/../../host".into();
        let text = serde_json::to_string(&g).expect("json");
        let err = serde_json::from_str::<ValidGroup>(&text).expect_err("invalid");
        assert!(err.to_string().contains(". or .."), "{err}");
    }
}
