//! The `services` section: each service's image, command, environment, exposes (read in
//! [`super::expose`]), `params` (volume mounts, TEE type, permissions), registry credentials
//! and dependencies.

use std::collections::BTreeMap;

use super::expose::{read_expose, SdlExpose};
use crate::manifest::Credentials;
use crate::names::{self, is_env_name as valid_env_name};
use crate::read::{join, key_pos, Ctx};
use crate::yaml::{Kind, Node, Pos};

/// `params.tee` values (Akash: CPU-only, or CPU and GPU confidential computing).
const TEE_TYPES: &[&str] = &["cpu", "cpu-gpu"];

pub(super) struct Mount {
    pub(super) pos: Pos,
    pub(super) volume: String,
    pub(super) path: String,
    pub(super) read_only: bool,
}

pub(super) struct Service {
    pub(super) pos: Pos,
    pub(super) image: String,
    pub(super) command: Vec<String>,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<String>,
    pub(super) expose: Vec<SdlExpose>,
    pub(super) mounts: Vec<Mount>,
    pub(super) credentials: Option<Credentials>,
    /// `params.tee`: the confidential-computing type the service must run under.
    pub(super) tee: Option<(Pos, String)>,
}

/// Every service of the `services` mapping, by name.
pub(super) fn read_services(cx: &mut Ctx, s: &Node) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
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
    services
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
        if let Some(pf) = cx.fields(p, &ppath, &["storage", "permissions", "tee"]) {
            if let Some(st) = pf.get("storage") {
                let spath = join(&ppath, "storage");
                for (vol, m) in cx.map(st, &spath).unwrap_or_default() {
                    let vpath = join(&spath, vol);
                    let Some(mf) = cx.fields(m, &vpath, &["mount", "readOnly"]) else {
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
            if let Some(df) = cx.fields(item, &dpath, &["service"]) {
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
    let f = cx.fields(n, path, &["host", "username", "password", "email"])?;
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
