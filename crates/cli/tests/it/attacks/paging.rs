//! Attacks of class `paging` (see mod.rs): no silent truncation. A list longer than a page once
//! made a restarted provider read only the first page of its leases and remove the workloads of
//! the rest. The node's list endpoints page with an opaque cursor (`next`, `?cursor=`), the
//! client walks every page, and a real daemon reading its lists two at a time restores every
//! one of its five leases after a `kill -9`, removing none.

use std::collections::BTreeSet;

use serde_json::Value;

use pazar_types::market::BidId;
use pazar_types::Address;

use super::manifest::{build_image, deploy, docker_runs, start_daemon, web_sdl};
use crate::common;

const LEASES: u64 = 5;

fn ids(page: &Value, field: &str) -> Vec<BidId> {
    page[field]
        .as_array()
        .expect("a list")
        .iter()
        .map(|x| serde_json::from_value(x["id"].clone()).expect("an id"))
        .collect()
}

#[test]
fn lists_page_with_a_cursor_and_a_restarted_provider_restores_every_lease_across_pages() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon = start_daemon(&net, dir.path(), "docker", "list_page = 2", "");
    let provider: Address = net.address("provider").parse().expect("address");
    let sdl = web_sdl(dir.path(), "web.yaml", 1);
    let leases: Vec<BidId> = (0..LEASES)
        .map(|i| deploy(&net, &sdl, if i % 2 == 0 { "alice" } else { "bob" }, 60 + i))
        .collect();

    // Two at a time, each page naming the next, until the node says the list ends: every
    // lease once, in key order, and the last page has no `next`.
    let rpc = net.rpc();
    let base = format!("/leases?provider={provider}&state=active&limit=2");
    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let url = match &cursor {
            None => base.clone(),
            Some(c) => format!("{base}&cursor={c}"),
        };
        let page = rpc.get(&url).expect("page");
        pages += 1;
        let got = ids(&page, "leases");
        assert!(got.len() <= 2, "{page}");
        seen.extend(got);
        match page["next"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3, "five leases in pages of two");
    let mut want = leases.clone();
    want.sort();
    assert_eq!(seen, want, "every lease once, in order");
    let all = rpc
        .list_all::<pazar_api::node::LeasePage>(&pazar_api::node::ListQuery {
            provider: Some(provider),
            state: Some("active".into()),
            limit: Some(2),
            ..Default::default()
        })
        .expect("all pages");
    assert_eq!(all.len() as u64, LEASES);
    // A page of one list does not continue another, and a made-up cursor is refused.
    let bids = rpc.get(&format!("/bids?provider={provider}&limit=1")).expect("bids");
    let foreign = bids["next"].as_str().expect("more bids than one");
    for c in [foreign, "00ff", "not-hex"] {
        let e = rpc.get(&format!("{base}&cursor={c}")).expect_err("refused");
        assert!(e.to_string().contains("invalid cursor"), "{e}");
    }

    // The daemon reads its leases two at a time when it starts again: all five are restored,
    // none is taken for ended.
    let before = daemon.log_text().len();
    daemon.restart();
    let log = daemon.log_text()[before..].to_string();
    let restored: BTreeSet<&str> = log.lines().filter_map(|l| l.split("restored lease ").nth(1)).collect();
    assert_eq!(restored.len() as u64, LEASES, "{log}");
    assert!(
        !log.contains("removed workload") && !log.contains("removed orphaned"),
        "{log}"
    );
    for l in &leases {
        assert!(docker_runs(l), "{l} still runs");
    }
    for (i, l) in leases.iter().enumerate() {
        let from = if i % 2 == 0 { "alice" } else { "bob" };
        daemon.close_and_wait_removed(&net, l, from);
    }
}
