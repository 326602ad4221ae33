//! The SDL v2 sections and their rules (Akash's, see shared/reference/akash.md section 7): the
//! top level (version, and what Pazar refuses outright) is read here, each section in its own
//! module, then the cross-checks between sections ([`check`]) and the building of ledger
//! groups and the manifest ([`build`]).

mod build;
mod check;
mod compute;
mod deployment;
mod endpoints;
mod expose;
mod placement;
mod services;

use std::collections::{BTreeMap, BTreeSet};

use crate::manifest::{self, ValidManifest};
use crate::read::Ctx;
use crate::yaml::{self, Kind, Node, Pos};
use crate::{Deployment, Diagnostic, Options, SdlVersion};

use self::compute::Compute;
use self::deployment::DeployEntry;
use self::placement::Placement;
use self::services::Service;

/// The file's sections as read, each on its own; [`check`] then holds them to each other.
struct Doc {
    version: SdlVersion,
    services: BTreeMap<String, Service>,
    compute: BTreeMap<String, Compute>,
    placements: BTreeMap<String, Placement>,
    deployments: Vec<DeployEntry>,
    /// Declared IP endpoints, name → position.
    endpoints: BTreeMap<String, Pos>,
}

pub fn parse(bytes: &[u8], opts: &Options) -> Result<Deployment, Vec<Diagnostic>> {
    let root = match yaml::parse_bytes(bytes, opts.limits) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(vec![Diagnostic {
                pos: Pos { line: 1, col: 1 },
                path: String::new(),
                message: "file is empty; an SDL needs version, services, profiles and deployment".into(),
            }])
        }
        Err(e) => {
            return Err(vec![Diagnostic {
                pos: e.pos,
                path: String::new(),
                message: format!("invalid YAML: {}", e.message),
            }])
        }
    };
    let mut cx = Ctx::default();
    let mut notes = BTreeSet::new();
    let doc = read_doc(&mut cx, &root, opts, &mut notes);
    let built = match doc {
        Some(doc) if cx.errors.is_empty() => {
            check::check(&mut cx, &doc);
            build::build(&mut cx, &doc, &mut notes)
        }
        _ => None,
    };
    // The manifest is held to the rules providers apply, so a file accepted here is never
    // refused by them; what the checks above already placed in the file is not repeated.
    if let Some((_, manifest)) = &built {
        if cx.errors.is_empty() {
            if let Err(e) = ValidManifest::new(manifest.clone()) {
                let (path, message) = match e {
                    manifest::ManifestError::Invalid { path, reason } => (path, reason),
                    other => (String::new(), other.to_string()),
                };
                cx.error(Pos { line: 1, col: 1 }, &path, message);
            }
        }
    }
    match built {
        Some((groups, manifest)) if cx.errors.is_empty() => {
            let manifest_version = manifest.version();
            let mut warnings = cx.warnings;
            warnings.sort_by_key(|w| w.pos);
            Ok(Deployment {
                version: if built_v21(&root) {
                    SdlVersion::V2_1
                } else {
                    SdlVersion::V2_0
                },
                groups,
                manifest,
                manifest_version,
                warnings,
                notes: notes.into_iter().collect(),
            })
        }
        _ => {
            let mut errors = cx.errors;
            errors.sort_by(|a, b| a.pos.cmp(&b.pos).then_with(|| a.path.cmp(&b.path)));
            errors.dedup();
            Err(errors)
        }
    }
}

fn built_v21(root: &Node) -> bool {
    let Kind::Map(entries) = &root.kind else { return false };
    entries
        .iter()
        .find(|(k, _)| k.scalar() == Some("version"))
        .and_then(|(_, v)| v.scalar())
        .and_then(parse_version)
        == Some(SdlVersion::V2_1)
}

/// Akash reads the version with semver's tolerant parser: `2`, `2.0`, `v2.0.0` are 2.0.
fn parse_version(s: &str) -> Option<SdlVersion> {
    let t = s.trim().trim_start_matches(['v', 'V']);
    let mut parts = t.split('.');
    let major = parts.next()?;
    let minor = parts.next().unwrap_or("0");
    let patch = parts.next().unwrap_or("0");
    if parts.next().is_some() || patch.parse::<u32>().is_err() {
        return None;
    }
    match (major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?) {
        (2, 0) => Some(SdlVersion::V2_0),
        (2, 1) => Some(SdlVersion::V2_1),
        _ => None,
    }
}

fn read_doc(cx: &mut Ctx, root: &Node, opts: &Options, notes: &mut BTreeSet<String>) -> Option<Doc> {
    let f = cx.top_level_fields(
        root,
        &[
            "version",
            "services",
            "profiles",
            "deployment",
            "endpoints",
            "include",
            "reclamation",
        ],
    )?;
    let version = f.need(cx, "", "version").and_then(|v| {
        let s = cx.string(v, "version")?;
        let parsed = parse_version(&s);
        if parsed.is_none() {
            cx.error(
                v.pos,
                "version",
                format!("{s:?} is not a supported version (2.0 or 2.1)"),
            );
        } else if !matches!(s.trim(), "2.0" | "2.1") {
            cx.warn(
                v.pos,
                "version",
                format!(
                    "{s:?} read as {}",
                    if parsed == Some(SdlVersion::V2_1) { "2.1" } else { "2.0" }
                ),
            );
        }
        parsed
    });
    if let Some(inc) = f.get("include") {
        cx.error(
            inc.pos,
            "include",
            "include is not supported: put the included services in this file",
        );
    }
    if let Some(r) = f.get("reclamation") {
        // A minimum reclamation window is a promise the tenant asks of the provider; Pazar's
        // leases carry none, so keeping the deployment would silently drop the promise.
        cx.error(
            r.pos,
            "reclamation",
            "reclamation windows are not supported: a Pazar provider may close a lease at any time (with a reason), so this promise cannot be kept; remove reclamation to deploy without it",
        );
    }

    let services = match f.need(cx, "", "services") {
        Some(s) => services::read_services(cx, s),
        None => BTreeMap::new(),
    };

    let mut compute = BTreeMap::new();
    let mut placements = BTreeMap::new();
    if let Some(p) = f.need(cx, "", "profiles") {
        if let Some(pf) = cx.fields(p, "profiles", &["compute", "placement"]) {
            if let Some(c) = pf.need(cx, "profiles", "compute") {
                compute = compute::read_compute_profiles(cx, c);
            }
            if let Some(pl) = pf.need(cx, "profiles", "placement") {
                placements = placement::read_placements(cx, pl, opts, notes);
            }
        }
    }

    let deployments = match f.need(cx, "", "deployment") {
        Some(d) => deployment::read_deployment(cx, d),
        None => Vec::new(),
    };

    let endpoints = match f.get("endpoints") {
        Some(e) => endpoints::read_endpoints(cx, e),
        None => BTreeMap::new(),
    };
    Some(Doc {
        version: version?,
        services,
        compute,
        placements,
        deployments,
        endpoints,
    })
}
