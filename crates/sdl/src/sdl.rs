//! The SDL v2 sections, their rules (Akash's, see shared/reference/akash.md section 7) and the
//! building of ledger groups and the manifest.

use std::collections::{BTreeMap, BTreeSet};

use pazar_types::coin::{Dec, Price};
use pazar_types::market::{
    limits, Attribute, Gpu, GroupSpec, PlacementRequirements, ResourceUnit, Resources, SignedBy, StorageVolume,
};
use pazar_types::{Address, Denom};

use crate::manifest::{
    self, unit_endpoints, Credentials, Expose, HttpOptions, Manifest, Proto, StorageMount, ValidManifest, NEXT_CASES,
    STORAGE_CLASSES,
};
use crate::names::{
    self, is_endpoint_name as valid_endpoint_name, is_env_name as valid_env_name, is_hostname as valid_hostname,
};
use crate::read::{join, key_pos, show, Ctx};
use crate::units::{parse_cpu, parse_size};
use crate::yaml::{self, Kind, Node, Pos};
use crate::{Deployment, Diagnostic, Options, SdlVersion};

/// Akash's USDC denomination over IBC (noble channel), used by pre-ACT files.
const AKASH_USDC_IBC: &str = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1";
/// `params.tee` values (Akash: CPU-only, or CPU and GPU confidential computing).
const TEE_TYPES: &[&str] = &["cpu", "cpu-gpu"];
/// The placement attribute a TEE type becomes, as Akash projects it: only providers that carry
/// it can bid.
const TEE_ATTRIBUTE: &str = "tee/type";

struct ExposeTo {
    pos: Pos,
    service: String,
    global: bool,
    ip: String,
}

struct SdlExpose {
    port: u16,
    external: u16,
    proto: Proto,
    to: Vec<ExposeTo>,
    accept: Vec<(Pos, String)>,
    http: HttpOptions,
}

struct Mount {
    pos: Pos,
    volume: String,
    path: String,
    read_only: bool,
}

struct Service {
    pos: Pos,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    env: Vec<String>,
    expose: Vec<SdlExpose>,
    mounts: Vec<Mount>,
    credentials: Option<Credentials>,
    /// `params.tee`: the confidential-computing type the service must run under.
    tee: Option<(Pos, String)>,
}

struct Volume {
    pos: Pos,
    name: String,
    bytes: u64,
    persistent: bool,
    class: Option<String>,
}

struct Compute {
    pos: Pos,
    cpu_millis: u32,
    memory: u64,
    storage: Vec<Volume>,
    gpu: Gpu,
}

struct Placement {
    pos: Pos,
    attributes: Vec<Attribute>,
    signed_by: SignedBy,
    pricing: BTreeMap<String, (Pos, Price)>,
}

struct DeployEntry {
    pos: Pos,
    service: String,
    placement: String,
    profile: String,
    profile_pos: Pos,
    count: u32,
}

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
            check(&mut cx, &doc);
            build(&mut cx, &doc, &mut notes)
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
    let f = cx.fields(
        root,
        "",
        &[
            "version",
            "services",
            "profiles",
            "deployment",
            "endpoints",
            "include",
            "reclamation",
        ],
        true,
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

    let mut services = BTreeMap::new();
    if let Some(s) = f.need(cx, "", "services") {
        for (name, node) in cx.map(s, "services").unwrap_or_default() {
            let path = join("services", name);
            check_service_name(cx, key_pos(s, name).unwrap_or(node.pos), &path, name);
            if let Some(svc) = read_service(cx, node, &path) {
                services.insert(name.to_string(), svc);
            }
        }
        if services.is_empty() && cx.errors.is_empty() {
            cx.error(s.pos, "services", "declares no service");
        }
    }

    let mut compute = BTreeMap::new();
    let mut placements = BTreeMap::new();
    if let Some(p) = f.need(cx, "", "profiles") {
        if let Some(pf) = cx.fields(p, "profiles", &["compute", "placement"], true) {
            if let Some(c) = pf.need(cx, "profiles", "compute") {
                for (name, node) in cx.map(c, "profiles.compute").unwrap_or_default() {
                    let path = format!("profiles.compute.{name}");
                    if let Some(comp) = read_compute(cx, node, &path) {
                        compute.insert(name.to_string(), comp);
                    }
                }
            }
            if let Some(pl) = pf.need(cx, "profiles", "placement") {
                for (name, node) in cx.map(pl, "profiles.placement").unwrap_or_default() {
                    let path = format!("profiles.placement.{name}");
                    check_group_name(cx, key_pos(pl, name).unwrap_or(node.pos), &path, name);
                    if let Some(place) = read_placement(cx, node, &path, opts, notes) {
                        placements.insert(name.to_string(), place);
                    }
                }
            }
        }
    }

    let mut deployments = Vec::new();
    if let Some(d) = f.need(cx, "", "deployment") {
        for (svc, node) in cx.map(d, "deployment").unwrap_or_default() {
            let spath = join("deployment", svc);
            let spos = key_pos(d, svc).unwrap_or(node.pos);
            for (place, entry) in cx.map(node, &spath).unwrap_or_default() {
                let path = join(&spath, place);
                let Some(ef) = cx.fields(entry, &path, &["profile", "count"], true) else {
                    continue;
                };
                let profile = ef
                    .need(cx, &path, "profile")
                    .and_then(|n| cx.string(n, &join(&path, "profile")));
                let count = ef
                    .need(cx, &path, "count")
                    .and_then(|n| cx.uint(n, &join(&path, "count"), 1, u64::from(limits::MAX_UNIT_COUNT)));
                if let (Some(profile), Some(count)) = (profile, count) {
                    deployments.push(DeployEntry {
                        pos: key_pos(node, place).unwrap_or(spos),
                        service: svc.to_string(),
                        placement: place.to_string(),
                        profile,
                        profile_pos: ef.get("profile").map_or(entry.pos, |n| n.pos),
                        count: count as u32,
                    });
                }
            }
        }
    }

    let mut endpoints = BTreeMap::new();
    if let Some(e) = f.get("endpoints") {
        for (name, node) in cx.map(e, "endpoints").unwrap_or_default() {
            let path = join("endpoints", name);
            let pos = key_pos(e, name).unwrap_or(node.pos);
            if !valid_endpoint_name(name) {
                cx.error(
                    pos,
                    &path,
                    "endpoint names are lowercase letters, digits, '-' and '_', starting with a letter",
                );
            }
            if let Some(ef) = cx.fields(node, &path, &["kind"], true) {
                match ef
                    .need(cx, &path, "kind")
                    .and_then(|k| cx.string(k, &join(&path, "kind")))
                {
                    Some(k) if k == "ip" => {}
                    Some(k) => cx.error(
                        ef.pos_of("kind"),
                        &join(&path, "kind"),
                        format!("unknown endpoint kind {k:?} (only \"ip\")"),
                    ),
                    None => {}
                }
            }
            endpoints.insert(name.to_string(), pos);
        }
    }
    Some(Doc {
        version: version?,
        services,
        compute,
        placements,
        deployments,
        endpoints,
    })
}

fn check_service_name(cx: &mut Ctx, pos: Pos, path: &str, name: &str) {
    if !names::is_service_name(name) {
        cx.error(
            pos,
            path,
            "service names are 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'",
        );
    }
}

fn check_group_name(cx: &mut Ctx, pos: Pos, path: &str, name: &str) {
    if !names::is_group_name(name) {
        cx.error(
            pos,
            path,
            format!(
                "placement names are 1-{} characters without spaces",
                limits::MAX_NAME_LEN
            ),
        );
    }
}

fn read_service(cx: &mut Ctx, node: &Node, path: &str) -> Option<Service> {
    let f = cx.fields(
        node,
        path,
        &[
            "image",
            "command",
            "args",
            "env",
            "expose",
            "params",
            "credentials",
            "dependencies",
        ],
        false,
    )?;
    let image = f
        .need(cx, path, "image")
        .and_then(|n| cx.string(n, &join(path, "image")));
    if let (Some(img), Some(n)) = (&image, f.get("image")) {
        if let Err(why) = names::check_image(img) {
            cx.error(n.pos, &join(path, "image"), format!("{:?} {why}", names::shorten(img)));
        }
    }
    let list = |cx: &mut Ctx, k: &str| f.get(k).and_then(|n| cx.strings(n, &join(path, k))).unwrap_or_default();
    let command = list(cx, "command");
    let args = list(cx, "args");
    let env = list(cx, "env");
    if let Some(en) = f.get("env") {
        if let Kind::Seq(items) = &en.kind {
            for (i, (e, item)) in env.iter().zip(items).enumerate() {
                let name = e.split_once('=').map_or(e.as_str(), |(k, _)| k);
                if !valid_env_name(name) {
                    cx.error(
                        item.pos,
                        &format!("{path}.env[{i}]"),
                        format!("{name:?} is not a valid environment variable name (write KEY=value)"),
                    );
                }
            }
        }
    }
    let mut expose = Vec::new();
    if let Some(ex) = f.get("expose") {
        for (i, item) in cx.seq(ex, &join(path, "expose")).unwrap_or_default().iter().enumerate() {
            if let Some(e) = read_expose(cx, item, &format!("{path}.expose[{i}]")) {
                expose.push(e);
            }
        }
    }
    let mut mounts = Vec::new();
    let mut tee = None;
    if let Some(p) = f.get("params") {
        let ppath = join(path, "params");
        if let Some(pf) = cx.fields(p, &ppath, &["storage", "permissions", "tee"], false) {
            if let Some(st) = pf.get("storage") {
                let spath = join(&ppath, "storage");
                for (vol, m) in cx.map(st, &spath).unwrap_or_default() {
                    let vpath = join(&spath, vol);
                    let Some(mf) = cx.fields(m, &vpath, &["mount", "readOnly"], false) else {
                        continue;
                    };
                    let mount = mf
                        .need(cx, &vpath, "mount")
                        .and_then(|n| cx.string(n, &join(&vpath, "mount")));
                    let read_only = mf
                        .get("readOnly")
                        .and_then(|n| cx.boolean(n, &join(&vpath, "readOnly")))
                        .unwrap_or(false);
                    if let Some(mount) = mount {
                        if let Err(why) = names::check_mount_path(&mount) {
                            cx.error(
                                mf.pos_of("mount"),
                                &join(&vpath, "mount"),
                                format!("{:?} {why}", names::shorten(&mount)),
                            );
                        }
                        mounts.push(Mount {
                            pos: key_pos(st, vol).unwrap_or(m.pos),
                            volume: vol.to_string(),
                            path: mount,
                            read_only,
                        });
                    }
                }
            }
            if let Some(t) = pf.get("tee") {
                let tpath = join(&ppath, "tee");
                if let Some(kind) = cx.string(t, &tpath) {
                    if TEE_TYPES.contains(&kind.as_str()) {
                        tee = Some((t.pos, kind));
                    } else {
                        cx.error(
                            t.pos,
                            &tpath,
                            format!("{kind:?} is not a TEE type ({})", TEE_TYPES.join(" or ")),
                        );
                    }
                }
            }
            if let Some(pm) = pf.get("permissions") {
                // Akash grants the service read access to its own deployment's logs or events
                // through the provider's API; Pazar grants a workload nothing on the host, so
                // the grant is announced as refused rather than dropped unseen.
                cx.warn(
                    pm.pos,
                    &join(&ppath, "permissions"),
                    "permissions grant nothing on Pazar: a workload cannot read its deployment's logs or events from the provider",
                );
            }
        }
    }
    let credentials = f
        .get("credentials")
        .and_then(|c| read_credentials(cx, c, &join(path, "credentials")));
    if let Some(d) = f.get("dependencies") {
        for (i, item) in cx
            .seq(d, &join(path, "dependencies"))
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let dpath = format!("{path}.dependencies[{i}]");
            if let Some(df) = cx.fields(item, &dpath, &["service"], false) {
                df.need(cx, &dpath, "service");
            }
        }
    }
    Some(Service {
        pos: node.pos,
        image: image?,
        command,
        args,
        env,
        expose,
        mounts,
        credentials,
        tee,
    })
}

fn read_credentials(cx: &mut Ctx, n: &Node, path: &str) -> Option<Credentials> {
    let f = cx.fields(n, path, &["host", "username", "password", "email"], false)?;
    let host = f
        .get("host")
        .and_then(|v| cx.string(v, &join(path, "host")))
        .unwrap_or_default();
    let username = f
        .need(cx, path, "username")
        .and_then(|v| cx.string(v, &join(path, "username")));
    let password = f
        .need(cx, path, "password")
        .and_then(|v| cx.string(v, &join(path, "password")));
    let email = f
        .get("email")
        .and_then(|v| cx.string(v, &join(path, "email")))
        .unwrap_or_default();
    if let Some(p) = &password {
        if p.chars().count() < 6 {
            cx.error(
                f.pos_of("password"),
                &join(path, "password"),
                "must have at least 6 characters",
            );
        }
    }
    if !email.is_empty() && email.chars().count() < 5 {
        cx.error(
            f.pos_of("email"),
            &join(path, "email"),
            "must have at least 5 characters",
        );
    }
    Some(Credentials {
        host,
        email,
        username: username?,
        password: password?,
    })
}

fn read_expose(cx: &mut Ctx, n: &Node, path: &str) -> Option<SdlExpose> {
    let f = cx.fields(n, path, &["port", "as", "proto", "to", "accept", "http_options"], false)?;
    let port = f
        .need(cx, path, "port")
        .and_then(|v| cx.uint(v, &join(path, "port"), 1, 65535));
    let external = match f.get("as") {
        Some(v) => cx.uint(v, &join(path, "as"), 1, 65535),
        None => port,
    };
    let proto = match f.get("proto") {
        None => Some(Proto::Tcp),
        Some(v) => match cx.string(v, &join(path, "proto"))?.to_ascii_lowercase().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            other => {
                cx.error(
                    v.pos,
                    &join(path, "proto"),
                    format!("{other:?} is not a protocol (tcp or udp)"),
                );
                None
            }
        },
    };
    let mut to = Vec::new();
    if let Some(t) = f.get("to") {
        let items: &[Node] = match &t.kind {
            Kind::Map(_) => {
                cx.warn(
                    t.pos,
                    &join(path, "to"),
                    "a mapping read as a one-item list (Akash refuses this form: write to: [{global: true}])",
                );
                std::slice::from_ref(t)
            }
            _ => cx.seq(t, &join(path, "to")).unwrap_or_default(),
        };
        for (i, item) in items.iter().enumerate() {
            let tpath = format!("{path}.to[{i}]");
            let Some(tf) = cx.fields(item, &tpath, &["service", "global", "ip"], false) else {
                continue;
            };
            let service = tf
                .get("service")
                .and_then(|v| cx.string(v, &join(&tpath, "service")))
                .unwrap_or_default();
            let global = tf
                .get("global")
                .and_then(|v| cx.boolean(v, &join(&tpath, "global")))
                .unwrap_or(false);
            let ip = tf
                .get("ip")
                .and_then(|v| cx.string(v, &join(&tpath, "ip")))
                .unwrap_or_default();
            if !ip.is_empty() && !global {
                cx.error(
                    tf.pos_of("ip"),
                    &join(&tpath, "ip"),
                    "an IP endpoint needs global: true",
                );
            }
            to.push(ExposeTo {
                pos: item.pos,
                service,
                global,
                ip,
            });
        }
    }
    let mut accept = Vec::new();
    if let Some(a) = f.get("accept") {
        let hosts = cx.strings(a, &join(path, "accept")).unwrap_or_default();
        let items = cx.seq(a, &join(path, "accept")).unwrap_or_default();
        for (i, (h, item)) in hosts.into_iter().zip(items).enumerate() {
            if !valid_hostname(&h) {
                cx.error(
                    item.pos,
                    &format!("{path}.accept[{i}]"),
                    format!("{h:?} is not a valid hostname"),
                );
            }
            accept.push((item.pos, h));
        }
    }
    let http = match f.get("http_options") {
        Some(h) => read_http_options(cx, h, &join(path, "http_options")).unwrap_or_default(),
        None => HttpOptions::default(),
    };
    Some(SdlExpose {
        port: port? as u16,
        external: external? as u16,
        proto: proto?,
        to,
        accept,
        http,
    })
}

fn read_http_options(cx: &mut Ctx, n: &Node, path: &str) -> Option<HttpOptions> {
    let f = cx.fields(
        n,
        path,
        &[
            "max_body_size",
            "read_timeout",
            "send_timeout",
            "next_tries",
            "next_timeout",
            "next_cases",
            "proxy_buffer_size",
        ],
        false,
    )?;
    let d = HttpOptions::default();
    // Values above Akash's bounds are clamped with a warning (Akash refuses them; the files
    // that carry them are otherwise fine).
    let num = |cx: &mut Ctx, k: &str, max: u64, default: u32| -> u32 {
        let Some(v) = f.get(k) else { return default };
        match cx.uint(v, &join(path, k), 0, u64::from(u32::MAX)) {
            Some(x) if x > max => {
                cx.warn(
                    v.pos,
                    &join(path, k),
                    format!("{x} is above the maximum {max}; {max} is used (Akash refuses it)"),
                );
                max as u32
            }
            Some(x) => x as u32,
            None => default,
        }
    };
    let max_body_size = num(cx, "max_body_size", 104_857_600, d.max_body_size);
    let read_timeout_ms = num(cx, "read_timeout", 60_000, d.read_timeout_ms);
    let send_timeout_ms = num(cx, "send_timeout", 60_000, d.send_timeout_ms);
    let next_tries = num(cx, "next_tries", 1_000, d.next_tries);
    let next_timeout_ms = num(cx, "next_timeout", 60_000, d.next_timeout_ms);
    num(cx, "proxy_buffer_size", 1 << 20, 0);
    let next_cases = match f.get("next_cases") {
        None => d.next_cases,
        Some(v) => {
            let cases = cx.strings(v, &join(path, "next_cases")).unwrap_or_default();
            for c in &cases {
                if !NEXT_CASES.contains(&c.as_str()) {
                    cx.error(
                        v.pos,
                        &join(path, "next_cases"),
                        format!("{c:?} is not one of {}", NEXT_CASES.join(", ")),
                    );
                }
            }
            if cases.iter().any(|c| c == "off") && cases.len() > 1 {
                cx.error(v.pos, &join(path, "next_cases"), "\"off\" must be the only case");
            }
            cases
        }
    };
    Some(HttpOptions {
        max_body_size,
        read_timeout_ms,
        send_timeout_ms,
        next_tries,
        next_timeout_ms,
        next_cases,
    })
}

fn read_compute(cx: &mut Ctx, n: &Node, path: &str) -> Option<Compute> {
    let f = cx.fields(n, path, &["resources"], false)?;
    let rpath = join(path, "resources");
    let r = f.need(cx, path, "resources")?;
    let rf = cx.fields(r, &rpath, &["cpu", "memory", "storage", "gpu"], false)?;

    let cpu = rf.need(cx, &rpath, "cpu").and_then(|c| {
        let cpath = join(&rpath, "cpu");
        let units = match &c.kind {
            Kind::Map(_) => {
                let cf = cx.fields(c, &cpath, &["units", "attributes"], false)?;
                if let Some(a) = cf.get("attributes") {
                    // CPU attributes (e.g. arch) restrict where the unit may run, and a ledger
                    // resource unit has nowhere to carry them: refused rather than dropped.
                    let empty = a.is_null() || matches!(&a.kind, Kind::Map(m) if m.is_empty());
                    if !empty {
                        cx.error(
                            a.pos,
                            &join(&cpath, "attributes"),
                            "CPU attributes (e.g. arch) are not enforced by Pazar; require a provider attribute under profiles.placement.<name>.attributes instead (e.g. capabilities/cpu/arch: amd64)",
                        );
                    }
                }
                cf.need(cx, &cpath, "units")?
            }
            _ => c,
        };
        let upath = join(&cpath, "units");
        let units = match &units.kind {
            Kind::Seq(items) if items.len() == 1 => {
                cx.warn(
                    units.pos,
                    &upath,
                    "a one-item list read as its item (Akash refuses this form: write units: 16)",
                );
                &items[0]
            }
            _ => units,
        };
        let text = cx.string(units, &upath)?;
        match parse_cpu(&text) {
            Ok(m) if (u64::from(limits::MIN_CPU_MILLIS)..=u64::from(limits::MAX_CPU_MILLIS)).contains(&m) => {
                Some(m as u32)
            }
            Ok(m) => {
                cx.error(
                    units.pos,
                    &upath,
                    format!(
                        "{m}m is out of range: a unit may have 10m to 384 cores ({}m)",
                        limits::MAX_CPU_MILLIS
                    ),
                );
                None
            }
            Err(e) => {
                cx.error(units.pos, &upath, e.to_string());
                None
            }
        }
    });

    let memory = rf.need(cx, &rpath, "memory").and_then(|m| {
        let mpath = join(&rpath, "memory");
        let mf = cx.fields(m, &mpath, &["size"], false)?;
        let size = mf.need(cx, &mpath, "size")?;
        size_in(
            cx,
            size,
            &join(&mpath, "size"),
            limits::MIN_MEMORY,
            limits::MAX_MEMORY,
            "1Mi to 2Ti",
        )
    });

    let mut storage = Vec::new();
    if let Some(s) = rf.need(cx, &rpath, "storage") {
        let spath = join(&rpath, "storage");
        let items: Vec<(String, &Node)> = match &s.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, it)| (format!("{spath}[{i}]"), it))
                .collect(),
            _ => vec![(spath.clone(), s)],
        };
        for (vpath, item) in items {
            if let Some(v) = read_volume(cx, item, &vpath) {
                if storage.iter().any(|o: &Volume| o.name == v.name) {
                    cx.error(
                        v.pos,
                        &join(&vpath, "name"),
                        format!("duplicate volume name {:?}", v.name),
                    );
                }
                storage.push(v);
            }
        }
        if storage.len() > limits::MAX_VOLUMES {
            cx.error(s.pos, &spath, format!("at most {} volumes", limits::MAX_VOLUMES));
        }
        if storage.is_empty() && cx.errors.is_empty() {
            cx.error(s.pos, &spath, "needs at least one volume");
        }
    }

    let gpu = match rf.get("gpu") {
        None => Gpu {
            units: 0,
            attributes: vec![],
        },
        Some(g) => read_gpu(cx, g, &join(&rpath, "gpu"))?,
    };
    Some(Compute {
        pos: n.pos,
        cpu_millis: cpu?,
        memory: memory?,
        storage,
        gpu,
    })
}

fn size_in(cx: &mut Ctx, n: &Node, path: &str, min: u64, max: u64, range: &str) -> Option<u64> {
    let text = cx.string(n, path)?;
    match parse_size(&text) {
        Ok(b) if (min..=max).contains(&b) => Some(b),
        Ok(b) => {
            cx.error(
                n.pos,
                path,
                format!("{text} ({b} bytes) is out of range: must be {range}"),
            );
            None
        }
        Err(e) => {
            cx.error(n.pos, path, e.to_string());
            None
        }
    }
}

fn read_volume(cx: &mut Ctx, n: &Node, path: &str) -> Option<Volume> {
    let f = cx.fields(n, path, &["name", "size", "attributes"], false)?;
    let name = f
        .get("name")
        .and_then(|v| cx.string(v, &join(path, "name")))
        .unwrap_or_else(|| "default".into());
    if !names::is_volume_name(&name) {
        cx.error(
            f.pos_of("name"),
            &join(path, "name"),
            format!(
                "{:?} is not a volume name (1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit)",
                names::shorten(&name)
            ),
        );
    }
    let bytes = f.need(cx, path, "size").and_then(|v| {
        size_in(
            cx,
            v,
            &join(path, "size"),
            limits::MIN_STORAGE,
            limits::MAX_STORAGE,
            "5Mi to 32Ti",
        )
    });
    let mut persistent = false;
    let mut class = None;
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        if let Some(af) = cx.fields(a, &apath, &["persistent", "class"], false) {
            if let Some(p) = af.get("persistent") {
                persistent = cx.boolean(p, &join(&apath, "persistent")).unwrap_or(false);
            }
            if let Some(c) = af.get("class") {
                if let Some(c) = cx.string(c, &join(&apath, "class")) {
                    if !STORAGE_CLASSES.contains(&c.as_str()) {
                        cx.error(
                            af.pos_of("class"),
                            &join(&apath, "class"),
                            format!("{c:?} is not a storage class ({})", STORAGE_CLASSES.join(", ")),
                        );
                    }
                    class = Some(c);
                }
            }
        }
        match (persistent, class.as_deref()) {
            (true, Some("ram")) => cx.error(a.pos, &apath, "class ram cannot be persistent"),
            (false, Some(c)) if c != "ram" => cx.error(
                a.pos,
                &apath,
                format!("class {c} is for persistent volumes: add persistent: true"),
            ),
            (true, None) => class = Some("default".into()),
            _ => {}
        }
    }
    Some(Volume {
        pos: n.pos,
        name,
        bytes: bytes?,
        persistent,
        class,
    })
}

fn read_gpu(cx: &mut Ctx, n: &Node, path: &str) -> Option<Gpu> {
    let f = cx.fields(n, path, &["units", "attributes"], false)?;
    let units = match f.get("units") {
        Some(u) => cx.uint(u, &join(path, "units"), 0, u64::from(limits::MAX_GPU_UNITS))? as u32,
        None => 0,
    };
    let mut attributes = Vec::new();
    let mut vendors = 0;
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        let af = cx.fields(a, &apath, &["vendor"], false)?;
        if let Some(v) = af.need(cx, &apath, "vendor") {
            let vpath = join(&apath, "vendor");
            for (vendor, models) in cx.map(v, &vpath).unwrap_or_default() {
                vendors += 1;
                let mpath = join(&vpath, vendor);
                if !matches!(vendor, "nvidia" | "amd") {
                    cx.error(
                        key_pos(v, vendor).unwrap_or(v.pos),
                        &mpath,
                        format!("unknown GPU vendor {vendor:?} (nvidia or amd)"),
                    );
                    continue;
                }
                let list = cx.seq(models, &mpath).unwrap_or_default();
                if list.is_empty() {
                    attributes.push(Attribute::new(format!("vendor/{vendor}/model/*"), "true"));
                }
                for (i, m) in list.iter().enumerate() {
                    let ipath = format!("{mpath}[{i}]");
                    let Some(mf) = cx.fields(m, &ipath, &["model", "ram", "interface"], false) else {
                        continue;
                    };
                    let Some(model) = mf
                        .need(cx, &ipath, "model")
                        .and_then(|x| cx.string(x, &join(&ipath, "model")))
                    else {
                        continue;
                    };
                    let model = model.to_ascii_lowercase();
                    if model.is_empty() || model.contains('/') || model.len() > 64 {
                        cx.error(
                            mf.pos_of("model"),
                            &join(&ipath, "model"),
                            format!("{model:?} is not a GPU model name"),
                        );
                        continue;
                    }
                    let mut key = format!("vendor/{vendor}/model/{model}");
                    if let Some(r) = mf.get("ram") {
                        if let Some(ram) = cx.string(r, &join(&ipath, "ram")) {
                            if parse_size(&ram).is_err() {
                                cx.error(
                                    r.pos,
                                    &join(&ipath, "ram"),
                                    format!("{ram:?} is not a size such as 80Gi"),
                                );
                            }
                            key.push_str(&format!("/ram/{ram}"));
                        }
                    }
                    if let Some(x) = mf.get("interface") {
                        if let Some(iface) = cx.string(x, &join(&ipath, "interface")) {
                            let iface = iface.to_ascii_lowercase();
                            if !matches!(iface.as_str(), "pcie" | "sxm") {
                                cx.error(
                                    x.pos,
                                    &join(&ipath, "interface"),
                                    format!("{iface:?} is not a GPU interface (pcie or sxm)"),
                                );
                            }
                            key.push_str(&format!("/interface/{iface}"));
                        }
                    }
                    attributes.push(Attribute::new(key, "true"));
                }
            }
        }
    }
    attributes.sort();
    attributes.dedup();
    if units > 0 && vendors == 0 {
        cx.error(
            n.pos,
            path,
            "GPU units need attributes naming the vendor (and models): attributes: {vendor: {nvidia: }}",
        );
    }
    if units == 0 && !attributes.is_empty() {
        cx.error(n.pos, &join(path, "units"), "GPU attributes are given but units is 0");
    }
    Some(Gpu { units, attributes })
}

fn read_placement(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    opts: &Options,
    notes: &mut BTreeSet<String>,
) -> Option<Placement> {
    let f = cx.fields(n, path, &["attributes", "signedBy", "pricing"], false)?;
    let mut attributes = Vec::new();
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        for (k, v) in cx.map(a, &apath).unwrap_or_default() {
            if let Some(val) = cx.string(v, &join(&apath, k)) {
                attributes.push(Attribute::new(k, val));
            }
        }
    }
    attributes.sort();
    let mut signed_by = SignedBy::default();
    if let Some(s) = f.get("signedBy") {
        let spath = join(path, "signedBy");
        if let Some(sf) = cx.fields(s, &spath, &["allOf", "anyOf"], false) {
            for (field, out) in [("allOf", &mut signed_by.all_of), ("anyOf", &mut signed_by.any_of)] {
                let Some(list) = sf.get(field) else { continue };
                let lpath = join(&spath, field);
                let items = cx.seq(list, &lpath).unwrap_or_default();
                // Akash auditors (akash1…) have no Pazar identity, so no Pazar provider can ever
                // show their signature. Dropping one from allOf, or every one of anyOf, would
                // run the workload on providers nobody vouched for; dropping some of anyOf while
                // a Pazar auditor remains only narrows the choice.
                let mut akash: Vec<(Pos, String)> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{lpath}[{i}]");
                    let Some(a) = cx.string(item, &ipath) else { continue };
                    if let Ok(addr) = a.parse::<Address>() {
                        out.push(addr);
                    } else if a.starts_with("akash1") {
                        akash.push((item.pos, ipath));
                    } else {
                        cx.error(
                            item.pos,
                            &ipath,
                            format!("{a:?} is not an address (pazar1…, 0x…, or an Akash akash1… auditor)"),
                        );
                    }
                }
                let keep_any = field == "anyOf" && !out.is_empty();
                for (pos, ipath) in akash {
                    if keep_any {
                        cx.warn(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity and is left out; the Pazar auditors of anyOf still apply",
                        );
                    } else if opts.accept_unaudited {
                        cx.warn(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity and is left out, as you accepted (--accept-unaudited): providers no auditor vouched for may bid",
                        );
                    } else {
                        cx.error(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity, so no provider could ever satisfy this requirement here; name a Pazar auditor (pazar1… or 0x…) instead, remove signedBy, or pass --accept-unaudited to run on providers nobody audited",
                        );
                    }
                }
            }
        }
    }
    let mut pricing = BTreeMap::new();
    if let Some(p) = f.need(cx, path, "pricing") {
        let ppath = join(path, "pricing");
        for (profile, v) in cx.map(p, &ppath).unwrap_or_default() {
            let vpath = join(&ppath, profile);
            let Some(pf) = cx.fields(v, &vpath, &["denom", "amount"], false) else {
                continue;
            };
            let denom = pf.need(cx, &vpath, "denom").and_then(|d| {
                let s = cx.string(d, &join(&vpath, "denom"))?;
                let mapped = map_denom(&s, opts, notes);
                if mapped.is_none() {
                    cx.error(
                        d.pos,
                        &join(&vpath, "denom"),
                        format!(
                            "unknown denomination {s:?}: use {} (native) or {} (stable); Akash's uakt, uact and USDC are accepted",
                            opts.native, opts.stable
                        ),
                    );
                }
                mapped
            });
            let amount = pf.need(cx, &vpath, "amount").and_then(|a| {
                let apath = join(&vpath, "amount");
                let s = cx.string(a, &apath)?;
                match s.trim().parse::<Dec>() {
                    Ok(d) if d.is_zero() => {
                        cx.error(a.pos, &apath, "must be greater than 0");
                        None
                    }
                    Ok(d) if d > Dec::from_int(limits::MAX_UNIT_PRICE_UNITS).unwrap_or(Dec::ZERO) => {
                        cx.error(
                            a.pos,
                            &apath,
                            format!(
                                "{s} is above the highest unit price, {} per block",
                                limits::MAX_UNIT_PRICE_UNITS
                            ),
                        );
                        None
                    }
                    Ok(d) => Some(d),
                    Err(_) => {
                        cx.error(
                            a.pos,
                            &apath,
                            format!("{} is not a non-negative decimal amount", show(a)),
                        );
                        None
                    }
                }
            });
            if let (Some(denom), Some(amount)) = (denom, amount) {
                pricing.insert(
                    profile.to_string(),
                    (key_pos(p, profile).unwrap_or(v.pos), Price { denom, amount }),
                );
            }
        }
    }
    Some(Placement {
        pos: n.pos,
        attributes,
        signed_by,
        pricing,
    })
}

fn map_denom(s: &str, opts: &Options, notes: &mut BTreeSet<String>) -> Option<Denom> {
    if s == opts.native.as_str() {
        return Some(opts.native.clone());
    }
    if s == opts.stable.as_str() {
        return Some(opts.stable.clone());
    }
    match s {
        "uakt" => {
            notes.insert(format!(
                "pricing: uakt (Akash's native token) is read as {}, Pazar's native token, unit for unit",
                opts.native
            ));
            Some(opts.native.clone())
        }
        "uact" => {
            notes.insert(format!(
                "pricing: uact (Akash's USD-pegged compute token) is read as {}, Pazar's stable coin, unit for unit",
                opts.stable
            ));
            Some(opts.stable.clone())
        }
        AKASH_USDC_IBC => {
            notes.insert(format!(
                "pricing: Akash's USDC IBC denomination is read as {}, Pazar's stable coin, unit for unit",
                opts.stable
            ));
            Some(opts.stable.clone())
        }
        _ => None,
    }
}

/// Cross-references between sections.
fn check(cx: &mut Ctx, doc: &Doc) {
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
fn build(cx: &mut Ctx, doc: &Doc, notes: &mut BTreeSet<String>) -> Option<(Vec<GroupSpec>, Manifest)> {
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
