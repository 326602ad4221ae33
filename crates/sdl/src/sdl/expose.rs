//! One item of a service's `expose` list: ports, protocol, destinations (`to`), accepted host
//! names and the ingress's `http_options`.

use crate::manifest::{HttpOptions, Proto, NEXT_CASES};
use crate::names::is_hostname as valid_hostname;
use crate::read::{join, Ctx};
use crate::yaml::{Kind, Node, Pos};

pub(super) struct ExposeTo {
    pub(super) pos: Pos,
    pub(super) service: String,
    pub(super) global: bool,
    pub(super) ip: String,
}

pub(super) struct SdlExpose {
    pub(super) port: u16,
    pub(super) external: u16,
    pub(super) proto: Proto,
    pub(super) to: Vec<ExposeTo>,
    pub(super) accept: Vec<(Pos, String)>,
    pub(super) http: HttpOptions,
}

pub(super) fn read_expose(cx: &mut Ctx, n: &Node, path: &str) -> Option<SdlExpose> {
    let f = cx.fields(n, path, &["port", "as", "proto", "to", "accept", "http_options"])?;
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
            let Some(tf) = cx.fields(item, &tpath, &["service", "global", "ip"]) else {
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
