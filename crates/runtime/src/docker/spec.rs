//! What a replica becomes as a Docker container: its name, labels and the hash of the service
//! it was made from, its limits (CPU, memory and swap, processes), capabilities, restart and log
//! policy, ports, mounts and GPU requests. Pure: nothing here talks to the engine, so what a
//! tenant's service turns into can be read and tested in one place. Must not know the engine's
//! state, the network's firewall or how images are pulled.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use pazar_api::manifest::{Proto, Service};

use super::DockerRuntime;
use crate::images::ImageRef;
use crate::LeaseRef;

pub(super) const LABEL_LEASE: &str = "pazar.lease";

pub(super) const LABEL_LEASE_ID: &str = "pazar.lease-id";

pub(super) const LABEL_SERVICE: &str = "pazar.service";

pub(super) const LABEL_REPLICA: &str = "pazar.replica";

/// Times this replica was evicted, carried from container to container.
pub(super) const LABEL_EVICTIONS: &str = "pazar.evictions";

/// Why it was evicted last.
pub(super) const LABEL_EVICTED: &str = "pazar.evicted";

/// Restarts of the containers this replica had before its last eviction.
pub(super) const LABEL_RESTARTS: &str = "pazar.restarts-before";

/// The [`spec_hash`] of the service a container was made from: a deploy keeps a container only
/// while the group asks for exactly what it runs.
pub(super) const LABEL_SPEC: &str = "pazar.spec";

/// The deployment version (hex SHA-256 of the manifest) a container was made for.
pub(super) const LABEL_VERSION: &str = "pazar.version";

/// Hashed into every [`spec_hash`]: changed when containers are made differently from the same
/// service (a new volume naming, a new mount option), so a deploy makes them again.
const SPEC_FORMAT: &[u8] = b"pazar-docker-container/2";

/// Mount options of persistent volumes: a tenant that writes a setuid binary or a device node
/// into its volume gains nothing by it.
pub(super) const VOLUME_MOUNT_OPTIONS: &str = "nosuid,nodev";

/// Capabilities ordinary images need (Docker's defaults without NET_RAW, MKNOD, AUDIT_WRITE).
const CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
];

/// Processes one replica may run.
const PIDS_LIMIT: i64 = 1024;

/// What a replica of `svc` is made from (image, command, args, env, resources, ports, mounts,
/// credentials), as a hex SHA-256; the replica count is left out, so scaling a service up or down
/// leaves its other replicas running.
pub(super) fn spec_hash(svc: &Service) -> String {
    use sha2::{Digest, Sha256};
    let unit = Service {
        count: 0,
        ..svc.clone()
    };
    let mut h = Sha256::new();
    h.update(SPEC_FORMAT);
    h.update(serde_json::to_vec(&unit).expect("a manifest service always serializes"));
    hex::encode(h.finalize())
}

impl DockerRuntime {
    pub(super) fn labels(lease: &LeaseRef) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_LEASE.to_string(), lease.name()),
            (LABEL_LEASE_ID.to_string(), lease.label()),
        ])
    }

    /// Everything of the lease, found by its full id.
    pub(super) fn filter(lease: &LeaseRef) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_string(), vec![format!("{LABEL_LEASE_ID}={}", lease.label())])])
    }

    pub(super) fn container_name(lease: &LeaseRef, service: &str, replica: u32) -> String {
        format!("{}-{service}-{replica}", lease.name())
    }

    /// `<lease>.<service>.<volume>`: `.` is in neither the service nor the volume name grammar
    /// (but in Docker's volume names and [`crate::loopfs`]'s), so two pairs of a lease never
    /// share a volume, as `a`/`b-c` and `a-b`/`c` would with `-`.
    pub(super) fn volume_name(lease: &LeaseRef, service: &str, volume: &str) -> String {
        format!("{}.{service}.{volume}", lease.name())
    }

    pub(super) fn container_body(
        &self,
        lease: &LeaseRef,
        net: &str,
        svc: &Service,
        replica: u32,
    ) -> ContainerCreateBody {
        let r = &svc.resources;
        let mut labels = Self::labels(lease);
        labels.insert(LABEL_SERVICE.into(), svc.name.clone());
        labels.insert(LABEL_REPLICA.into(), replica.to_string());
        labels.insert(LABEL_SPEC.into(), spec_hash(svc));
        let mut exposed = Vec::new();
        let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for x in &svc.expose {
            let key = port_key(x.port, x.proto);
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            if x.global {
                bindings.insert(
                    key,
                    Some(vec![PortBinding {
                        host_ip: Some("0.0.0.0".into()),
                        host_port: Some(String::new()),
                    }]),
                );
            }
        }
        let mut mounts = Vec::new();
        for m in &svc.storage {
            let vol = crate::volume(svc, &m.name);
            mounts.push(if crate::is_ram(svc, &m.name) {
                Mount {
                    target: Some(m.mount.clone()),
                    typ: Some(MountType::TMPFS),
                    tmpfs_options: Some(bollard::models::MountTmpfsOptions {
                        size_bytes: vol.map(|v| v.bytes as i64),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            } else {
                Mount {
                    target: Some(m.mount.clone()),
                    source: Some(Self::volume_name(lease, &svc.name, &m.name)),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(m.read_only),
                    ..Default::default()
                }
            });
        }
        let device_requests = (self.opts.gpus && r.gpu.units > 0).then(|| {
            vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(i64::from(r.gpu.units)),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]
        });
        let memory = i64::try_from(r.memory_bytes).unwrap_or(i64::MAX);
        ContainerCreateBody {
            image: Some(run_reference(&svc.image)),
            hostname: Some(svc.name.clone()),
            entrypoint: (!svc.command.is_empty()).then(|| svc.command.clone()),
            cmd: (!svc.args.is_empty()).then(|| svc.args.clone()),
            env: Some(svc.env.clone()),
            labels: Some(labels),
            exposed_ports: Some(exposed),
            host_config: Some(HostConfig {
                nano_cpus: Some(i64::from(r.cpu_millis) * 1_000_000),
                memory: Some(memory),
                memory_swap: Some(memory),
                pids_limit: Some(PIDS_LIMIT),
                cap_drop: Some(vec!["ALL".into()]),
                cap_add: Some(CAPS.iter().map(|c| (*c).to_string()).collect()),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                privileged: Some(false),
                network_mode: Some(net.to_string()),
                port_bindings: Some(bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".into()),
                    config: Some(HashMap::from([
                        ("max-size".to_string(), "10m".to_string()),
                        ("max-file".to_string(), "3".to_string()),
                    ])),
                }),
                mounts: Some(mounts),
                storage_opt: self
                    .storage_quota
                    .then(|| crate::ephemeral_bytes(svc))
                    .flatten()
                    .map(|b| HashMap::from([("size".to_string(), b.to_string())])),
                device_requests,
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    net.to_string(),
                    EndpointSettings {
                        aliases: Some(vec![svc.name.clone()]),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        }
    }
}

/// The reference a container is made from: the tenant's image as pulled (`REPOSITORY:TAG`,
/// `latest` when no tag was named, or `REPOSITORY@DIGEST`).
fn run_reference(image: &str) -> String {
    ImageRef::parse(image).map_or_else(|_| image.to_string(), |r| r.reference())
}

/// Docker's name of a container port, e.g. `8080/tcp`.
pub(super) fn port_key(port: u16, proto: Proto) -> String {
    match proto {
        Proto::Tcp => format!("{port}/tcp"),
        Proto::Udp => format!("{port}/udp"),
    }
}

#[cfg(test)]
mod tests {
    use super::spec_hash;
    use crate::docker::DockerRuntime;
    use crate::LeaseRef;
    use pazar_types::market::BidId;
    use pazar_types::{Address, Denom};

    fn service(env: &str, count: u32) -> pazar_api::manifest::Service {
        let sdl = format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: busybox\n    env: [{env}]\nprofiles:\n  compute:\n    \
             p: {{resources: {{cpu: {{units: 0.1}}, memory: {{size: 16Mi}}, storage: {{size: 64Mi}}}}}}\n  placement:\n    \
             dc: {{pricing: {{p: {{denom: uusd, amount: 1}}}}}}\ndeployment:\n  web: {{dc: {{profile: p, count: {count}}}}}\n"
        );
        let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
        let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
        d.manifest.groups[0].services[0].clone()
    }

    #[test]
    fn a_spec_changes_with_what_a_replica_runs_but_not_with_the_replica_count() {
        assert_eq!(spec_hash(&service("A=1", 1)), spec_hash(&service("A=1", 3)));
        assert_ne!(spec_hash(&service("A=1", 1)), spec_hash(&service("A=2", 1)));
        let mut other = service("A=1", 1);
        other.image = "busybox:1".into();
        assert_ne!(spec_hash(&service("A=1", 1)), spec_hash(&other));
    }

    #[test]
    fn two_service_and_volume_pairs_of_a_lease_never_share_a_volume() {
        let lease = LeaseRef::new(BidId {
            owner: Address::Native([1; 20]),
            dseq: 1,
            gseq: 1,
            oseq: 1,
            provider: Address::Native([2; 20]),
        });
        let a = DockerRuntime::volume_name(&lease, "a", "b-c");
        let b = DockerRuntime::volume_name(&lease, "a-b", "c");
        assert_ne!(a, b);
        assert_eq!(a, format!("{}.a.b-c", lease.name()));
        assert!(pazar_api::names::is_service_name("a-b") && pazar_api::names::is_volume_name("b-c"));
    }
}
