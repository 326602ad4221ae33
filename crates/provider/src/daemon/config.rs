//! `provider.toml`: what the operator decides (addresses, runtime, prices, capacity, images,
//! egress, ingress, metrics), read and checked before the daemon starts anything. Every setting
//! has a default that is safe on a shared host; a value that cannot work (an unknown runtime, a
//! page size the node refuses, an ingress domain that is no DNS name) is refused with the reason.
//!
//! Must not know: the chain, the node client, or how leases run; it only turns the file into
//! the runtimes' options.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use pazar_runtime::docker::DockerOptions;
use pazar_runtime::sandbox::SandboxOptions;

use super::DaemonError;
use crate::bidding::PriceList;
use crate::inventory::Overrides;

/// `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the TLS endpoint listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// What tenants connect to (recorded on the ledger); default `https://` + `listen`.
    pub host_uri: Option<String>,
    /// Host name or address put in the URIs of running services.
    #[serde(default = "default_public_host")]
    pub public_host: String,
    /// Where the TLS identity and accepted manifests are kept; default `<home>/provider`.
    pub data_dir: Option<PathBuf>,
    /// `docker`, `sandbox`, or `auto` (the default: Docker when its engine answers, the
    /// sandbox otherwise).
    #[serde(default = "default_runtime")]
    pub runtime: String,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// HTTP ingress by host name (off without it).
    pub ingress: Option<IngressConfig>,
    /// Deposit locked with each bid, in base units of the order's denomination.
    #[serde(default = "default_bid_deposit")]
    pub bid_deposit: u128,
    /// Withdraw earnings of every lease this often (blocks).
    #[serde(default = "default_withdraw_every")]
    pub withdraw_every_blocks: u64,
    /// Drop what workloads send to this host, and their connections to link-local, cloud
    /// metadata and private addresses (needs root, iptables and ip6tables).
    #[serde(default = "default_true")]
    pub isolate_host: bool,
    /// `[egress]`: private ranges workloads may reach nonetheless.
    #[serde(default)]
    pub egress: EgressConfig,
    /// `[images]`: which local images tenants may run, and the limits of pulls.
    #[serde(default)]
    pub images: ImagesConfig,
    /// How often (milliseconds) the Docker runtime measures replicas' writable layers and
    /// evicts those over their ephemeral storage, where the storage driver cannot cap them.
    #[serde(default = "default_storage_check_ms")]
    pub storage_check_ms: u64,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default)]
    pub pricing: PriceList,
    /// An executable that prices orders instead of the price list (as Akash's bid price
    /// script): it gets the order as JSON on stdin and prints the price per block of the whole
    /// group in the order's denomination; a non-zero exit or empty output means no bid.
    pub pricing_script: Option<PathBuf>,
    #[serde(default)]
    pub capacity: Overrides,
    /// Items per page when the daemon reads a list from the node (leases, bids and orders at
    /// restore), at most 1,000 (the node's largest page). Every page is read whatever the size;
    /// small values only make more requests.
    #[serde(default = "default_list_page")]
    pub list_page: usize,
    /// `[metrics]`: Prometheus metrics on an address of their own (off without it).
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]` in `provider.toml`. Off unless the section is there: a listening port is the
/// operator's decision. The metrics are aggregates (no tenant, lease or image name), but they
/// tell the provider's business (leases, bids, traffic), so the example binds loopback and a
/// Prometheus on another host is reached through the operator's own tunnel or proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address `GET /metrics` is served on (plain HTTP), e.g. `127.0.0.1:9464`.
    pub listen: SocketAddr,
}

fn default_list_page() -> usize {
    1_000
}

fn default_listen() -> String {
    "127.0.0.1:8443".into()
}
fn default_public_host() -> String {
    "127.0.0.1".into()
}
fn default_runtime() -> String {
    "auto".into()
}

/// `[ingress]` in `provider.toml`: one listener that routes HTTP by `Host` to every lease's
/// `as: 80` services.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressConfig {
    /// Address it listens on for HTTP (services exposed `as: 80`), e.g. `0.0.0.0:80`.
    pub listen: String,
    /// Address it listens on for TLS, passed through by server name to services exposed
    /// `as: 443` (which hold their own certificates), e.g. `0.0.0.0:443`.
    pub tls_listen: Option<String>,
    /// Services are named `<service>-<lease>.<domain>`; point a wildcard DNS record
    /// `*.<domain>` at this machine.
    pub domain: String,
}

/// `[egress]` in `provider.toml`. Workloads reach their own lease's replicas and the public
/// internet; link-local and cloud-metadata addresses, private, shared (CGNAT) and unique-local
/// ranges, and this host itself are refused, except the ranges listed here.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Ranges opened to workloads, e.g. `["10.1.2.0/24"]` (an address alone is one host).
    #[serde(default)]
    pub allow: Vec<pazar_runtime::firewall::Cidr>,
}

/// `[images]` in `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// Images tenants may run from this host's own copies (built here, or pulled by the
    /// operator), e.g. `["pazar-demo:*"]`: `NAME:TAG`, `NAME:*` for every tag. Every other image
    /// is pulled anonymously from its registry at exactly the tag the tenant names.
    #[serde(default)]
    pub allow_local: Vec<pazar_runtime::images::LocalImage>,
    /// Longest a pull may take, in seconds.
    #[serde(default = "default_pull_timeout_s")]
    pub pull_timeout_s: u64,
    /// Largest image a tenant may pull, in bytes as stored on this host.
    #[serde(default = "default_max_image_bytes")]
    pub max_bytes: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            allow_local: Vec::new(),
            pull_timeout_s: default_pull_timeout_s(),
            max_bytes: default_max_image_bytes(),
        }
    }
}

fn default_pull_timeout_s() -> u64 {
    pazar_runtime::docker::DEFAULT_PULL_TIMEOUT.as_secs()
}
fn default_max_image_bytes() -> u64 {
    pazar_runtime::docker::DEFAULT_MAX_IMAGE_BYTES
}

impl ImagesConfig {
    pub fn policy(&self) -> pazar_runtime::images::ImagePolicy {
        pazar_runtime::images::ImagePolicy {
            allow_local: self.allow_local.clone(),
        }
    }
}

/// `[sandbox]` in `provider.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// Lease state, logs and volumes. Default `<data_dir>/sandbox`, or
    /// `/var/lib/pazar/sandbox-<hash of data_dir>` when the sandbox user cannot reach that.
    pub dir: Option<PathBuf>,
    /// The image store (`<name>/rootfs`, `<name>/config.json`); default `<dir>/images`.
    pub images: Option<PathBuf>,
    #[serde(default = "default_nobody")]
    pub uid: u32,
    #[serde(default = "default_nobody")]
    pub gid: u32,
    #[serde(default = "default_bwrap")]
    pub bwrap: PathBuf,
    /// Export images missing from the store from a local Docker engine.
    #[serde(default = "default_true")]
    pub docker_images: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            dir: None,
            images: None,
            uid: default_nobody(),
            gid: default_nobody(),
            bwrap: default_bwrap(),
            docker_images: true,
        }
    }
}

fn default_nobody() -> u32 {
    65534
}
fn default_bwrap() -> PathBuf {
    PathBuf::from("bwrap")
}

impl SandboxConfig {
    /// The runtime's options for a daemon whose data directory is `data`.
    pub fn options(&self, data: &Path) -> SandboxOptions {
        let dir = self.dir.clone().unwrap_or_else(|| {
            let own = data.join("sandbox");
            if pazar_runtime::sandbox::blocking_ancestor(&own, self.uid).is_none() {
                own
            } else {
                let h = <sha2::Sha256 as sha2::Digest>::digest(data.to_string_lossy().as_bytes());
                PathBuf::from(format!("/var/lib/pazar/sandbox-{}", hex::encode(&h[..6])))
            }
        });
        let mut o = SandboxOptions::new(dir);
        if let Some(i) = &self.images {
            o.images = i.clone();
        }
        o.uid = self.uid;
        o.gid = self.gid;
        o.bwrap = self.bwrap.clone();
        o.docker_images = self.docker_images;
        o
    }
}

fn default_bid_deposit() -> u128 {
    500_000
}
fn default_withdraw_every() -> u64 {
    20
}
fn default_true() -> bool {
    true
}
fn default_storage_check_ms() -> u64 {
    5_000
}

impl Config {
    pub fn read(path: &Path) -> Result<Config, DaemonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DaemonError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| DaemonError::Config(format!("{}: {e}", path.display())))
    }

    /// Refuses the values that parse but cannot work, with the reason.
    pub fn validate(&self) -> Result<(), DaemonError> {
        if !(1..=pazar_api::node::MAX_LIST).contains(&self.list_page) {
            return Err(DaemonError::Config(format!(
                "list_page is {}; it must be 1 to {}",
                self.list_page,
                pazar_api::node::MAX_LIST
            )));
        }
        if !["docker", "sandbox", "auto"].contains(&self.runtime.as_str()) {
            return Err(DaemonError::Config(format!(
                "runtime {:?} is not known (use \"docker\", \"sandbox\" or \"auto\")",
                self.runtime
            )));
        }
        if let Some(ing) = &self.ingress {
            if !pazar_runtime::ingress::is_dns_name(&pazar_runtime::ingress::normalize_host(&ing.domain)) {
                return Err(DaemonError::Config(format!(
                    "ingress domain {:?} is not a DNS name (labels of letters, digits and inner hyphens)",
                    ing.domain
                )));
            }
        }
        Ok(())
    }

    /// The Docker runtime's options for a daemon whose data directory is `data`.
    pub fn docker_options(&self, gpus: bool, data: &Path) -> DockerOptions {
        DockerOptions {
            gpus,
            isolate_host: self.isolate_host,
            egress: pazar_runtime::firewall::EgressPolicy::with_host_resolvers(self.egress.allow.clone()),
            images: self.images.policy(),
            pull_timeout: Duration::from_secs(self.images.pull_timeout_s),
            max_image_bytes: self.images.max_bytes,
            state_dir: Some(data.join("docker")),
        }
    }

    /// The sandbox runtime's options for a daemon whose data directory is `data`.
    pub fn sandbox_options(&self, data: &Path) -> SandboxOptions {
        let mut o = self.sandbox.options(data);
        o.local_images = self.images.policy();
        o
    }

    pub fn host_uri(&self) -> String {
        self.host_uri
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.listen))
    }
}

#[cfg(test)]
mod tests {
    use super::Config;

    #[test]
    fn egress_ranges_and_local_images_are_checked_when_the_config_is_read() {
        let parse = |t: &str| toml::from_str::<Config>(t).map_err(|e| e.to_string());
        let cfg =
            parse("[egress]\nallow = [\"10.1.2.0/24\", \"fd00::1\"]\n[images]\nallow_local = [\"pazar-demo:*\"]\n")
                .expect("valid");
        assert_eq!(cfg.egress.allow[1].to_string(), "fd00::1/128");
        assert!(cfg
            .images
            .policy()
            .allows_local(&pazar_runtime::images::ImageRef::parse("pazar-demo:1").expect("ref")));
        let none = parse("").expect("defaults");
        assert!(
            none.egress.allow.is_empty() && none.images.allow_local.is_empty(),
            "nothing opened by default"
        );
        for (bad, says) in [
            ("[egress]\nallow = [\"10.1.2.3/24\"]\n", "starts at 10.1.2.0"),
            ("[egress]\nallow = [\"10.0.0.0/8 -j ACCEPT\"]\n", "not an address range"),
            ("[images]\nallow_local = [\"Bad Name\"]\n", "allow_local entry"),
            ("[images]\nallowed = []\n", "unknown field"),
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    /// README's `provider.toml`, with its commented-out settings switched on, is a valid
    /// configuration: the documentation cannot drift from the parser.
    #[test]
    fn the_provider_toml_in_the_readme_parses_with_every_option_on() {
        let readme = include_str!("../../../../README.md");
        let start = readme.find("<<'TOML'\n").expect("README has a provider.toml") + "<<'TOML'\n".len();
        let end = start + readme[start..].find("\nTOML\n").expect("the block ends");
        let text: String = readme[start..end]
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let cfg: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(cfg.runtime, "sandbox");
        assert_eq!(cfg.storage_check_ms, 5000);
        assert!(cfg.pricing_script.is_some());
        let ingress = cfg.ingress.expect("[ingress]");
        assert_eq!(ingress.listen, "0.0.0.0:80");
        assert_eq!(ingress.tls_listen.as_deref(), Some("0.0.0.0:443"));
        assert_eq!(cfg.sandbox.uid, 65534);
        assert_eq!(cfg.egress.allow.len(), 2);
        assert_eq!(cfg.images.allow_local.len(), 1);
        assert_eq!((cfg.images.pull_timeout_s, cfg.images.max_bytes), (600, 20 << 30));
        let metrics = cfg.metrics.expect("[metrics]");
        assert!(
            metrics.listen.ip().is_loopback(),
            "the example keeps metrics on loopback"
        );
    }

    #[test]
    fn metrics_are_off_unless_configured_and_their_address_must_be_one() {
        let parse = |t: &str| toml::from_str::<Config>(t).map_err(|e| e.to_string());
        assert!(
            parse("").expect("defaults").metrics.is_none(),
            "nothing listens by default"
        );
        let cfg = parse("[metrics]\nlisten = \"127.0.0.1:9464\"\n").expect("valid");
        assert_eq!(cfg.metrics.expect("on").listen.port(), 9464);
        for bad in [
            "[metrics]\nlisten = \"localhost\"\n",
            "[metrics]\nlisten = \"127.0.0.1:9464 --web\"\n",
            "[metrics]\n",
            "[metrics]\nlisten = \"127.0.0.1:9464\"\npath = \"/m\"\n",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_that_parse_but_cannot_work_are_refused_before_anything_starts() {
        let check = |t: &str| {
            toml::from_str::<Config>(t)
                .expect("parses")
                .validate()
                .map_err(|e| e.to_string())
        };
        assert_eq!(check(""), Ok(()));
        for (bad, says) in [
            ("list_page = 0\n", "list_page is 0; it must be 1 to 1000"),
            ("list_page = 1001\n", "it must be 1 to 1000"),
            ("runtime = \"kubernetes\"\n", "runtime \"kubernetes\" is not known"),
            (
                "[ingress]\nlisten = \"0.0.0.0:80\"\ndomain = \"bad domain\"\n",
                "is not a DNS name",
            ),
        ] {
            let err = check(bad).expect_err(bad);
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
