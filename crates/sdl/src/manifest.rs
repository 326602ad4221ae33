//! The manifest: what providers run for a deployment, sent to them off-chain. Its canonical
//! encoding is JSON with keys sorted at every level and no insignificant whitespace (as Akash's
//! `Manifest.Version` does); the SHA-256 of those bytes is the deployment version recorded on
//! the ledger, which a provider checks before it runs anything.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use pazar_types::market::Resources;
use pazar_types::Hash32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Proto {
    Tcp,
    Udp,
}

/// Ingress settings of an HTTP expose (Akash's defaults and bounds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpOptions {
    pub max_body_size: u32,
    pub read_timeout_ms: u32,
    pub send_timeout_ms: u32,
    pub next_tries: u32,
    pub next_timeout_ms: u32,
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
    pub hosts: Vec<String>,
    pub http_options: HttpOptions,
    /// Name of the leased-IP endpoint, if any.
    pub ip: String,
    /// Sequence number of that endpoint (1-based), 0 without one.
    pub endpoint_sequence: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageMount {
    pub name: String,
    pub mount: String,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub host: String,
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub image: String,
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Id of the group's resource unit this service runs on.
    pub resource_id: u32,
    pub resources: Resources,
    pub count: u32,
    pub expose: Vec<Expose>,
    pub storage: Vec<StorageMount>,
    pub credentials: Option<Credentials>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// The placement name, which is also the name of the deployment group on the ledger.
    pub name: String,
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
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
