//! The `deployment` section: which service runs in which placement, with which compute
//! profile and how many replicas.

use pazar_types::market::limits;

use crate::read::{join, key_pos, Ctx};
use crate::yaml::{Node, Pos};

pub(super) struct DeployEntry {
    pub(super) pos: Pos,
    pub(super) service: String,
    pub(super) placement: String,
    pub(super) profile: String,
    pub(super) profile_pos: Pos,
    pub(super) count: u32,
}

/// Every `deployment.<service>.<placement>` entry, in file order.
pub(super) fn read_deployment(cx: &mut Ctx, d: &Node) -> Vec<DeployEntry> {
    let mut deployments = Vec::new();
    for (svc, node) in cx.map(d, "deployment").unwrap_or_default() {
        let spath = join("deployment", svc);
        let spos = key_pos(d, svc).unwrap_or(node.pos);
        for (place, entry) in cx.map(node, &spath).unwrap_or_default() {
            let path = join(&spath, place);
            let Some(ef) = cx.fields(entry, &path, &["profile", "count"]) else {
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
    deployments
}
