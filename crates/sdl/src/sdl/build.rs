//! What a valid file becomes: one ledger [`GroupSpec`] per placement, in name order (v2.0: one
//! resource unit per service; v2.1: services of one profile share a unit), validated with the
//! ledger's own rules, and the [`Manifest`] providers run.

use std::collections::{BTreeMap, BTreeSet};

use pazar_types::market::{Attribute, GroupSpec, PlacementRequirements, ResourceUnit, Resources, StorageVolume};

use super::compute::Volume;
use super::deployment::DeployEntry;
use super::services::Service;
use super::Doc;
use crate::manifest::{self, unit_endpoints, Expose, Manifest, StorageMount};
use crate::read::Ctx;
use crate::yaml::Pos;
use crate::SdlVersion;

/// The placement attribute a TEE type becomes, as Akash projects it: only providers that carry
/// it can bid.
const TEE_ATTRIBUTE: &str = "tee/type";

fn storage_attributes(v: &Volume) -> Vec<Attribute> {
    let mut out = Vec::new();
    if let Some(c) = &v.class {
        out.push(Attribute::new("class", c.clone()));
    }
    if v.persistent {
        out.push(Attribute::new("persistent", "true"));
    }
    out
}

/// Ledger groups and the manifest, one group per placement in name order.
pub(super) fn build(cx: &mut Ctx, doc: &Doc, notes: &mut BTreeSet<String>) -> Option<(Vec<GroupSpec>, Manifest)> {
    let endpoint_seq: BTreeMap<&str, u32> = doc
        .endpoints
        .keys()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32 + 1))
        .collect();
    let mut groups = Vec::new();
    let mut mgroups = Vec::new();
    for (pname, placement) in &doc.placements {
        let mut entries: Vec<&DeployEntry> = doc.deployments.iter().filter(|d| &d.placement == pname).collect();
        if entries.is_empty() {
            continue;
        }
        entries.sort_by(|a, b| a.service.cmp(&b.service));
        let mut units: Vec<ResourceUnit> = Vec::new();
        let mut by_profile: BTreeMap<&str, usize> = BTreeMap::new();
        let mut services = Vec::new();
        // The placement's TEE type (one per placement, as Akash): its first service's position,
        // the type, and that service.
        let mut group_tee: Option<(Pos, String, String)> = None;
        for d in entries {
            let svc = doc.services.get(&d.service)?;
            let compute = doc.compute.get(&d.profile)?;
            let (_, price) = placement.pricing.get(&d.profile)?;
            if let Some((tpos, kind)) = &svc.tee {
                let tpath = format!("services.{}.params.tee", d.service);
                if kind == "cpu-gpu" && compute.gpu.units == 0 {
                    cx.error(
                        *tpos,
                        &tpath,
                        format!("tee cpu-gpu needs GPUs, and compute profile {:?} has none", d.profile),
                    );
                }
                match &group_tee {
                    Some((_, k, other)) if k != kind => cx.error(
                        *tpos,
                        &tpath,
                        format!(
                            "placement {pname:?} already runs service {other} under tee {k}; one placement has one TEE type"
                        ),
                    ),
                    Some(_) => {}
                    None => group_tee = Some((*tpos, kind.clone(), d.service.clone())),
                }
            }
            let exposes = manifest_exposes(svc, &endpoint_seq);
            let endpoints = unit_endpoints(&exposes);
            let shared = if doc.version == SdlVersion::V2_1 {
                by_profile.get(d.profile.as_str()).copied()
            } else {
                None
            };
            let idx = match shared {
                Some(i) => {
                    // As Akash's 2.1 builder: the shared unit runs every service's replicas, so
                    // its count (what the lease pays for) is their sum.
                    units[i].count = units[i].count.saturating_add(d.count);
                    units[i].resources.endpoints.extend(endpoints);
                    i
                }
                None => {
                    units.push(ResourceUnit {
                        id: units.len() as u32 + 1,
                        resources: Resources {
                            cpu_millis: compute.cpu_millis,
                            memory_bytes: compute.memory,
                            storage: compute
                                .storage
                                .iter()
                                .map(|v| StorageVolume {
                                    name: v.name.clone(),
                                    bytes: v.bytes,
                                    attributes: storage_attributes(v),
                                })
                                .collect(),
                            gpu: compute.gpu.clone(),
                            endpoints,
                        },
                        count: d.count,
                        price: price.clone(),
                    });
                    by_profile.insert(d.profile.as_str(), units.len() - 1);
                    units.len() - 1
                }
            };
            services.push(manifest::Service {
                name: d.service.clone(),
                image: svc.image.clone(),
                command: svc.command.clone(),
                args: svc.args.clone(),
                env: svc.env.clone(),
                resource_id: units[idx].id,
                resources: units[idx].resources.clone(),
                count: d.count,
                expose: exposes,
                storage: svc
                    .mounts
                    .iter()
                    .map(|m| StorageMount {
                        name: m.volume.clone(),
                        mount: m.path.clone(),
                        read_only: m.read_only,
                    })
                    .collect(),
                credentials: svc.credentials.clone(),
            });
        }
        // Under 2.1 a shared unit's endpoints grew after services copied it: refresh them.
        for s in &mut services {
            if let Some(u) = units.iter().find(|u| u.id == s.resource_id) {
                s.resources = u.resources.clone();
            }
        }
        // A TEE becomes a placement requirement, as Akash projects it, so the ledger accepts
        // bids only from providers that declare that kind of confidential computing.
        let mut attributes = placement.attributes.clone();
        if let Some((tpos, kind, service)) = group_tee {
            match attributes.iter().find(|a| a.key == TEE_ATTRIBUTE) {
                Some(a) if a.value != kind => cx.error(
                    tpos,
                    &format!("services.{service}.params.tee"),
                    format!(
                        "placement {pname:?} requires attribute {TEE_ATTRIBUTE}={}, which contradicts tee {kind}",
                        a.value
                    ),
                ),
                Some(_) => {}
                None => {
                    attributes.push(Attribute::new(TEE_ATTRIBUTE, kind.clone()));
                    attributes.sort();
                }
            }
            notes.insert(format!(
                "tee: placement {pname} requires provider attribute {TEE_ATTRIBUTE}={kind}; only a provider that declares confidential computing can bid (Pazar's own Docker and sandbox runtimes provide none), so name an auditor under signedBy to trust that claim"
            ));
        }
        let spec = GroupSpec {
            name: pname.clone(),
            requirements: PlacementRequirements {
                attributes,
                signed_by: placement.signed_by.clone(),
            },
            resources: units,
        };
        if let Err(e) = spec.validate(&format!("profiles.placement.{pname}")) {
            let (path, message) = match &e {
                pazar_types::market::SpecError::Invalid { field, reason } => (field.clone(), reason.clone()),
            };
            cx.error(placement.pos, &path, message);
        }
        groups.push(spec);
        mgroups.push(manifest::Group {
            name: pname.clone(),
            services,
        });
    }
    Some((groups, Manifest { groups: mgroups }))
}

fn manifest_exposes(svc: &Service, endpoint_seq: &BTreeMap<&str, u32>) -> Vec<Expose> {
    let mut out = Vec::new();
    for e in &svc.expose {
        let hosts: Vec<String> = e.accept.iter().map(|(_, h)| h.clone()).collect();
        let base = Expose {
            port: e.port,
            external_port: e.external,
            proto: e.proto,
            service: String::new(),
            global: false,
            hosts,
            http_options: e.http.clone(),
            ip: String::new(),
            endpoint_sequence: 0,
        };
        if e.to.is_empty() {
            out.push(base);
            continue;
        }
        for t in &e.to {
            let mut x = base.clone();
            x.service = t.service.clone();
            x.global = t.global;
            x.ip = t.ip.clone();
            x.endpoint_sequence = endpoint_seq.get(t.ip.as_str()).copied().unwrap_or(0);
            out.push(x);
        }
    }
    out.sort_by(|a, b| {
        (a.port, a.external_port, a.proto, &a.service, a.global, &a.ip).cmp(&(
            b.port,
            b.external_port,
            b.proto,
            &b.service,
            b.global,
            &b.ip,
        ))
    });
    out
}
