//! The rules that span sections: every deployment names a declared service, compute profile
//! and priced placement; every service is deployed; exposes name declared services and
//! endpoints; a host name is accepted once per ingress kind; mounts name volumes of every
//! profile the service runs with; and the limits on the whole file (placements).

use std::collections::{BTreeMap, BTreeSet};

use pazar_types::market::limits;
use pazar_types::Denom;

use super::Doc;
use crate::read::{join, Ctx};
use crate::yaml::Pos;

/// Cross-references between sections.
pub(super) fn check(cx: &mut Ctx, doc: &Doc) {
    let mut deployed: BTreeSet<&str> = BTreeSet::new();
    for d in &doc.deployments {
        let path = format!("deployment.{}.{}", d.service, d.placement);
        if !doc.services.contains_key(&d.service) {
            cx.error(
                d.pos,
                &format!("deployment.{}", d.service),
                format!("service {:?} is not declared under services", d.service),
            );
        }
        deployed.insert(d.service.as_str());
        if !doc.compute.contains_key(&d.profile) {
            cx.error(
                d.profile_pos,
                &join(&path, "profile"),
                format!("compute profile {:?} is not declared under profiles.compute", d.profile),
            );
        }
        match doc.placements.get(&d.placement) {
            None => cx.error(
                d.pos,
                &path,
                format!("placement {:?} is not declared under profiles.placement", d.placement),
            ),
            Some(p) if !p.pricing.contains_key(&d.profile) => cx.error(
                d.pos,
                &path,
                format!(
                    "placement {:?} has no price for compute profile {:?} (add it under pricing)",
                    d.placement, d.profile
                ),
            ),
            Some(_) => {}
        }
    }
    for (name, svc) in &doc.services {
        if !deployed.contains(name.as_str()) {
            cx.error(
                svc.pos,
                &join("services", name),
                "service is never deployed (add it under deployment)",
            );
        }
    }
    for (name, p) in &doc.placements {
        let used = doc.deployments.iter().any(|d| &d.placement == name);
        if !used {
            cx.warn(
                p.pos,
                &join("profiles.placement", name),
                "placement is not used by any deployment; ignored",
            );
        }
        let denoms: BTreeSet<&Denom> = p.pricing.values().map(|(_, pr)| &pr.denom).collect();
        if denoms.len() > 1 {
            cx.error(
                p.pos,
                &format!("profiles.placement.{name}.pricing"),
                "all prices of one placement must use one denomination",
            );
        }
    }
    for (name, c) in &doc.compute {
        if !doc.deployments.iter().any(|d| &d.profile == name) {
            cx.warn(
                c.pos,
                &join("profiles.compute", name),
                "compute profile is not used by any deployment; ignored",
            );
        }
    }

    // Exposes: destinations, IP endpoints, hostnames; at least one global.
    let mut used_endpoints = BTreeSet::new();
    let mut any_global = false;
    // A host name leads to one exposure per ingress kind: HTTP (`as: 80` and other ports) or
    // TLS passthrough (`as: 443`), so one name can serve both.
    let mut hosts: BTreeMap<(&str, bool), Pos> = BTreeMap::new();
    for (name, svc) in &doc.services {
        for (i, e) in svc.expose.iter().enumerate() {
            let epath = format!("services.{name}.expose[{i}]");
            for (j, t) in e.to.iter().enumerate() {
                let tpath = format!("{epath}.to[{j}]");
                any_global |= t.global;
                if !t.service.is_empty() && !doc.services.contains_key(&t.service) {
                    cx.error(
                        t.pos,
                        &join(&tpath, "service"),
                        format!("service {:?} is not declared", t.service),
                    );
                }
                if !t.ip.is_empty() {
                    if doc.endpoints.contains_key(&t.ip) {
                        used_endpoints.insert(t.ip.as_str());
                    } else {
                        cx.error(
                            t.pos,
                            &join(&tpath, "ip"),
                            format!("endpoint {:?} is not declared under endpoints", t.ip),
                        );
                    }
                }
            }
            for (pos, h) in &e.accept {
                if let Some(first) = hosts.insert((h, e.external == 443), *pos) {
                    cx.error(
                        *pos,
                        &epath,
                        format!("hostname {h:?} is already accepted at line {}", first.line),
                    );
                }
            }
        }
        // Mounts: the volume exists in every profile the service is deployed with.
        let mut paths: BTreeMap<&str, Pos> = BTreeMap::new();
        for m in &svc.mounts {
            let mpath = format!("services.{name}.params.storage.{}", m.volume);
            if let Some(first) = paths.insert(m.path.as_str(), m.pos) {
                cx.error(
                    m.pos,
                    &mpath,
                    format!("mount path {:?} is already used at line {}", m.path, first.line),
                );
            }
            for d in doc.deployments.iter().filter(|d| &d.service == name) {
                let Some(c) = doc.compute.get(&d.profile) else { continue };
                match c.storage.iter().find(|v| v.name == m.volume) {
                    None => cx.error(
                        m.pos,
                        &mpath,
                        format!(
                            "compute profile {:?} has no storage volume named {:?}",
                            d.profile, m.volume
                        ),
                    ),
                    Some(v) if v.name == "default" && !v.persistent && v.class.is_none() => cx.error(
                        m.pos,
                        &mpath,
                        "the root volume cannot be mounted; mount a named persistent or ram volume",
                    ),
                    Some(_) => {}
                }
            }
        }
        // Persistent volumes of its profiles must be mounted by it.
        for d in doc.deployments.iter().filter(|d| &d.service == name) {
            let Some(c) = doc.compute.get(&d.profile) else { continue };
            for v in c.storage.iter().filter(|v| v.persistent) {
                if !svc.mounts.iter().any(|m| m.volume == v.name) {
                    cx.warn(
                        v.pos,
                        &format!("profiles.compute.{}.resources.storage", d.profile),
                        format!(
                            "persistent volume {:?} is not mounted by service {name}, so its data is lost with the container (Akash refuses this; add it under params.storage)",
                            v.name
                        ),
                    );
                }
            }
        }
    }
    for (name, pos) in &doc.endpoints {
        if !used_endpoints.contains(name.as_str()) {
            cx.error(
                *pos,
                &join("endpoints", name),
                "endpoint is declared but no expose uses it",
            );
        }
    }
    if !any_global {
        cx.warn(
            Pos { line: 1, col: 1 },
            "services",
            "no service is exposed globally, so nothing can reach the deployment from outside (Akash refuses such files; add to: [{global: true}] to an expose if that is not meant)",
        );
    }
    let groups: BTreeSet<&str> = doc.deployments.iter().map(|d| d.placement.as_str()).collect();
    if groups.len() > limits::MAX_GROUPS {
        cx.error(
            Pos { line: 1, col: 1 },
            "deployment",
            format!("uses {} placements; at most {}", groups.len(), limits::MAX_GROUPS),
        );
    }
}
