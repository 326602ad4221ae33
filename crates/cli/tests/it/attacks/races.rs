//! Attacks of class `races` (see mod.rs): a tenant sends its manifest while its lease closes,
//! or just after, hoping the provider starts a workload nobody pays for. Against a real daemon
//! on Docker: deploy and close of a lease take the lease's lock and a deploy reads the ledger
//! again once it holds it, so whichever comes first, once the daemon has handled the close
//! nothing of the lease runs. (The interleavings are forced deterministically in the server's
//! unit tests; here the real processes race as they will.)

use std::time::{Duration, Instant};

use pazar_api::node::{BidPage, ListQuery};
use pazar_api::ErrorCode;
use pazar_client::tenant::TenantError;
use pazar_types::market::BidId;
use pazar_types::Address;

use super::manifest::{build_image, docker_runs, saved_manifest, start_daemon, tenant, web_sdl};
use crate::common;

/// Creates deployment `dseq` without sending its manifest, waits for the daemon's bid and
/// leases it.
fn lease_without_manifest(net: &common::Devnet, sdl: &std::path::Path, dseq: u64, provider: &Address) -> BidId {
    let d = net.deploy(&[
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        &dseq.to_string(),
        "--create-only",
    ]);
    common::assert_committed(&d.tx, "deploy --create-only");
    let owner: Address = net.address("alice").parse().expect("address");
    let bids = ListQuery {
        owner: Some(owner),
        dseq: Some(dseq),
        provider: Some(*provider),
        ..ListQuery::default()
    };
    let t0 = Instant::now();
    while net.rpc().list_all::<BidPage>(&bids).expect("bids").is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no bid on {dseq}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let id = BidId {
        owner,
        dseq,
        gseq: 1,
        oseq: 1,
        provider: *provider,
    };
    net.tx_ok(&["tx", "lease", "create", &id.to_string(), "--from", "alice"]);
    id
}

#[test]
fn a_manifest_that_races_the_close_of_its_lease_never_leaves_a_workload_running() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start_daemon(&net, dir.path(), "docker", "", "");
    let provider: Address = net.address("provider").parse().expect("address");
    let sdl = web_sdl(dir.path(), "web.yaml", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let alice = tenant(&net, "alice", &provider);

    // The close is sent at several points of the manifest's way: before it, with it, and
    // while it is being deployed.
    for (dseq, close_after_ms) in [(40, None), (41, Some(0)), (42, Some(150)), (43, Some(400))] {
        let lease = lease_without_manifest(&net, &sdl, dseq, &provider);
        let manifest = saved_manifest(&net, &lease.owner, dseq);
        let close = {
            let home = net.home.path().to_path_buf();
            let id = lease.to_string();
            move || {
                let out = std::process::Command::new(common::bin())
                    .args(["lease", "close", &id, "--from", "alice", "-o", "json", "--home"])
                    .arg(&home)
                    .output()
                    .expect("runs pazar");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        };
        let answer = match close_after_ms {
            // Just after `lease_closed`: the provider refuses, saying the lease is closed.
            None => {
                close();
                rt.block_on(alice.send_manifest(&lease, &manifest))
            }
            Some(ms) => {
                let closing = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    close();
                });
                let a = rt.block_on(alice.send_manifest(&lease, &manifest));
                closing.join().expect("close");
                a
            }
        };
        match &answer {
            Ok(accepted) => assert_eq!(accepted.status, "deployed", "{accepted:?}"),
            Err(TenantError::Refused {
                status: 410,
                code: ErrorCode::LeaseClosed,
                ..
            }) => {}
            Err(e) => panic!("{dseq}: neither deployed nor refused as closed: {e}"),
        }
        if close_after_ms.is_none() {
            assert!(answer.is_err(), "a manifest after the close is refused");
        }
        // Once the daemon has handled the close, nothing of the lease runs.
        let t0 = Instant::now();
        while !daemon.log_text().contains(&format!("lease {lease} closed")) {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the daemon did not handle the close: {}",
                daemon.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            !docker_runs(&lease),
            "{dseq}: the workload of a closed lease runs ({answer:?})"
        );
        let (status, code, _) = super::manifest::refused(rt.block_on(alice.status(&lease)));
        assert_eq!((status, code), (410, ErrorCode::LeaseClosed));
    }
}
