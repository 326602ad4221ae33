//! The `endpoints` section: the leased IP endpoints a deployment declares, which exposes name
//! with `to: [{ip: …}]`.

use std::collections::BTreeMap;

use crate::names::is_endpoint_name as valid_endpoint_name;
use crate::read::{join, key_pos, Ctx};
use crate::yaml::{Node, Pos};

/// Every declared endpoint, name → position of its key.
pub(super) fn read_endpoints(cx: &mut Ctx, e: &Node) -> BTreeMap<String, Pos> {
    let mut endpoints = BTreeMap::new();
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
        if let Some(ef) = cx.fields(node, &path, &["kind"]) {
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
    endpoints
}
