//! The provider endpoint (pinned TLS, every request signed by the lease's owner): what it
//! answers about itself, a manifest sent to it, a lease's status and its log lines.

use serde::{Deserialize, Serialize};

use pazar_types::Address;

use crate::manifest::Proto;

/// `GET /status`: who this endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProviderStatus {
    pub provider: Address,
    pub chain_id: String,
}

/// `PUT /lease/{owner}/{dseq}/{gseq}/{oseq}/manifest`: the manifest was accepted and its
/// workloads are starting (the lease's status tells when they serve).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ManifestAccepted {
    /// The lease's label on this provider.
    pub lease: String,
    /// Always `deployed`.
    pub status: String,
}

/// What a service's replicas are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Every replica runs.
    Running,
    /// The image is being pulled (see [`ServiceStatus::pull`]).
    Pulling,
    /// A replica was created and has not started yet.
    Starting,
    /// A replica stopped and is being restarted.
    Restarting,
    /// A replica stopped and will not be restarted.
    Exited,
    /// A replica the provider should run does not exist.
    Missing,
    /// A state this client does not know (from a newer provider).
    #[serde(other)]
    Unknown,
}

/// Where one exposed port of one replica can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Forward {
    pub port: u16,
    pub proto: Proto,
    pub host_port: u16,
    /// Replica index.
    pub replica: u32,
}

/// How far an image pull has come, as the registry announced its layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PullProgress {
    pub image: String,
    /// Bytes downloaded so far.
    pub bytes: u64,
    /// Bytes of the layers whose size is known so far (layers already on the host excluded).
    pub total: u64,
}

/// One service of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceStatus {
    pub name: String,
    /// Replicas asked for.
    pub replicas: u32,
    /// Replicas running now.
    pub running: u32,
    /// Restarts summed over replicas (kept across restarts: containers are restarted in place).
    pub restarts: u64,
    pub state: ServiceState,
    pub forwards: Vec<Forward>,
    /// The last exit code or error, when a replica is not running.
    pub last_error: Option<String>,
    /// Replicas evicted (removed and started afresh) for writing more than their ephemeral
    /// storage, where the runtime cannot cap it outright; summed over replicas.
    #[serde(default)]
    pub evictions: u64,
    /// Why the last eviction happened.
    #[serde(default)]
    pub last_eviction: Option<String>,
    /// The image pull under way for this service (state `pulling`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullProgress>,
    /// The deployment version (hex SHA-256 of the manifest) every replica of the service runs:
    /// a replica an update left unchanged runs the new version as it is. `None` while replicas
    /// run different versions (an update replaces them one at a time), or from a provider that
    /// does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why the lease's last manifest update was not applied (the image could not be had, a new
    /// replica did not serve in time): the replicas of the version above keep serving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_error: Option<String>,
}

/// An address a tenant reaches a service at: a host port, or a name on the provider's ingress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceUri {
    pub service: String,
    /// The service's own port.
    pub port: u16,
    /// The replica behind a host port (`None` for an ingress name, which balances them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// Served by the provider's ingress (a host name) rather than a host port.
    #[serde(default)]
    pub ingress: bool,
    pub uri: String,
}

/// `GET /lease/{owner}/{dseq}/{gseq}/{oseq}/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseStatus {
    pub lease: String,
    /// Every replica of every service runs.
    pub ready: bool,
    pub services: Vec<ServiceStatus>,
    pub uris: Vec<ServiceUri>,
    /// The lease is in grace until the end of this block: its escrow ran dry, so its workload
    /// is stopped (its volumes kept) until a deposit resumes it; after that block it closes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_until: Option<u64>,
}

/// Which of a replica's outputs a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Both in one file, where the runtime keeps them so (the sandbox).
    Output,
}

/// One line of `GET /lease/{owner}/{dseq}/{gseq}/{oseq}/logs` (newline-delimited JSON): a line
/// of a replica's output, or an error that ended the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum LogItem {
    Line(LogLine),
    Error { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogLine {
    pub service: String,
    pub replica: u32,
    pub stream: LogStream,
    pub line: String,
}

/// The query of the logs request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// One service's lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Lines of history to start with (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Keep the stream open and send lines as they come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_stream_reads_lines_and_its_closing_error() {
        let line: LogItem =
            serde_json::from_str(r#"{"service":"web","replica":0,"stream":"stdout","line":"hi"}"#).expect("line");
        assert!(matches!(line, LogItem::Line(LogLine { ref line, .. }) if line == "hi"));
        let err: LogItem = serde_json::from_str(r#"{"error":"gone"}"#).expect("error");
        assert_eq!(err, LogItem::Error { error: "gone".into() });
    }

    #[test]
    fn a_service_state_from_a_newer_provider_reads_as_unknown() {
        let s: ServiceState = serde_json::from_str("\"hibernating\"").expect("reads");
        assert_eq!(s, ServiceState::Unknown);
        assert_eq!(
            serde_json::to_string(&ServiceState::Pulling).expect("json"),
            "\"pulling\""
        );
    }
}
