//! The whole market flow against the real binary: devnet up, keys, send, provider, deployment,
//! bid, lease, blocks pass and pay, withdraw with the take, close; checked through CLI JSON and
//! RPC, with proofs, the event stream, metrics and bad input.

use crate::common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::amount;
use serde_json::Value;

use pazar_api::request::SubmitMode;
use pazar_api::ErrorCode;
use pazar_types::market::{Endpoint, EndpointKind, Gpu, GroupSpec, PlacementRequirements, ResourceUnit, Resources};
use pazar_types::{Dec, Denom, Price};

fn groups_file(dir: &std::path::Path) -> std::path::PathBuf {
    groups_file_priced(dir, 1000)
}

/// One group (0.5 CPU, 512 MiB, an HTTP endpoint) whose price ceiling is `max_uusd` a block,
/// written as the JSON `pazar tx deployment create --groups` reads.
pub(super) fn groups_file_priced(dir: &std::path::Path, max_uusd: u64) -> std::path::PathBuf {
    let spec = GroupSpec {
        name: "web".into(),
        requirements: PlacementRequirements::default(),
        resources: vec![ResourceUnit {
            id: 1,
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                storage: vec![],
                gpu: Gpu::default(),
                endpoints: vec![Endpoint {
                    kind: EndpointKind::SharedHttp,
                    sequence: 0,
                }],
            },
            count: 1,
            price: Price {
                denom: Denom::new("uusd").expect("denom"),
                amount: Dec::from_int(u128::from(max_uusd)).expect("small"),
            },
        }],
    };
    let p = dir.join("groups.json");
    std::fs::write(&p, serde_json::to_vec(&vec![spec]).expect("json")).expect("writes");
    p
}

/// What the tests read of the node's OpenAPI document.
#[derive(serde::Deserialize)]
struct ApiDocument {
    openapi: String,
    paths: std::collections::BTreeMap<String, Value>,
}

#[test]
fn market_flow_end_to_end_through_cli_and_rpc() {
    let net = common::devnet(200);
    let rpc = net.rpc();
    let supply0 = rpc.get("/supply").expect("supply")["supply"].clone();

    // Keys: the devnet's, plus an encrypted one.
    let keys = net.cli(&["keys", "list"]);
    let names: Vec<&str> = keys["keys"]
        .as_array()
        .expect("list")
        .iter()
        .map(|k| k["name"].as_str().unwrap_or(""))
        .collect();
    for n in ["alice", "bob", "provider", "faucet", "validator"] {
        assert!(names.contains(&n), "missing key {n}");
    }
    let pass = [("PAZAR_KEYRING_PASSPHRASE", "correct horse")];
    let out = net.cli_raw(&["keys", "add", "carol", "--scheme", "eth"], &pass);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let carol = net.address("carol");
    assert!(carol.starts_with("0x"));
    let out = net.cli_raw(&["keys", "export", "carol"], &pass);
    assert!(!out.status.success(), "export without confirmation must refuse");
    let out = net.cli_raw(
        &["keys", "export", "carol", "--unsafe-show-secret"],
        &[("PAZAR_KEYRING_PASSPHRASE", "wrong")],
    );
    let e = common::cli_error(&out);
    assert_eq!(e.code, "key", "{e:?}");
    assert!(e.message.contains("wrong passphrase"), "{e:?}");

    // Send from an Ethereum key to the new key; verify the balance with a proof.
    let alice = net.address("alice");
    let provider = net.address("provider");
    net.tx_ok(&["tx", "send", &carol, "1000000upzr", "--from", "bob"]);
    let b = net.cli(&["query", "balance", &carol, "upzr", "--prove"]);
    assert_eq!(amount(&b["amount"]), 1_000_000);
    assert_eq!(b["proof"]["verified"], true);
    // carol (encrypted key) pays back.
    let out = net.cli_raw(&["tx", "send", "alice", "1000upzr", "--from", "carol"], &pass);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Provider registers; tenant deploys; the order opens.
    net.tx_ok(&[
        "tx",
        "provider",
        "create",
        "--from",
        "provider",
        "--host-uri",
        "https://p.example:8443",
        "--attr",
        "region=eu",
    ]);
    let p = net.cli(&["query", "provider", &provider]);
    assert_eq!(p["provider"]["host_uri"], "https://p.example:8443");
    let gf = groups_file(net.home.path());
    net.tx_ok(&[
        "tx",
        "deployment",
        "create",
        "--from",
        "alice",
        "--dseq",
        "7",
        "--groups",
        gf.to_str().expect("utf8"),
        "--deposit",
        "5000000uusd",
    ]);
    let orders = net.cli(&["query", "orders", "--owner", "alice", "--state", "open"]);
    let order = &orders["orders"][0]["id"];
    let order_id = format!(
        "{}/{}/{}/{}",
        order["owner"].as_str().expect("o"),
        order["dseq"],
        order["gseq"],
        order["oseq"]
    );
    assert_eq!(order_id, format!("{alice}/7/1/1"));

    // Bid, accept, pay per block.
    net.tx_ok(&[
        "tx",
        "bid",
        "create",
        &order_id,
        "--from",
        "provider",
        "--price",
        "800uusd",
        "--deposit",
        "500000uusd",
    ]);
    let lease_id = format!("{order_id}/{provider}");
    net.tx_ok(&["tx", "lease", "create", &lease_id, "--from", "alice"]);
    let l = net.cli(&["query", "lease", &lease_id, "--prove"]);
    assert_eq!(l["lease"]["state"], "active");
    assert_eq!(l["proof"]["verified"], true);
    let created = l["lease"]["created_at"].as_u64().expect("created_at");
    net.wait_height(created + 5);
    let e = net.cli(&["query", "escrow", &format!("{alice}/7")]);
    assert!(e["view"]["runway_blocks"].as_u64().expect("runway") > 100);
    let before = amount(&net.cli(&["query", "balance", &provider, "uusd"])["amount"]);
    let (h, _) = net.tx_ok(&["tx", "withdraw", &lease_id, "--from", "provider"]);
    let after = amount(&net.cli(&["query", "balance", &provider, "uusd"])["amount"]);
    // Paid 800 per block since the lease began; 20 % take on stable; the withdraw fee was native.
    let gross = 800 * u128::from(h - created);
    assert_eq!(
        after - before,
        gross - gross * 2000 / 10_000,
        "provider payout after take"
    );

    // Close: lease, then deployment; every escrowed token returns.
    net.tx_ok(&["tx", "lease", "close", &lease_id, "--from", "alice"]);
    net.tx_ok(&["tx", "deployment", "close", "--from", "alice", "--dseq", "7"]);
    let d = net.cli(&["query", "deployment", &format!("{alice}/7")]);
    assert_eq!(d["deployment"]["state"], "closed");
    let esc = rpc.get(&format!("/escrow/{alice}/7")).expect("escrow");
    assert_eq!(amount(&esc["account"]["balance"]), 0);
    assert_eq!(rpc.get("/supply").expect("supply")["supply"], supply0, "supply changed");

    // A failed transaction is committed with its error and the fee charged; the CLI says so.
    let out = net.cli_raw(&["tx", "lease", "close", &lease_id, "--from", "alice"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(v["receipt"]["code"], 0);

    // The event stream replays from height 1 and carries our transactions' events.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let resp = agent.get(&format!("{}/events?from=1", net.url)).call().expect("events");
    let mut lines = BufReader::new(resp.into_body().into_reader()).lines();
    let mut heights = Vec::new();
    let mut saw_lease = false;
    while heights.len() < (h as usize) {
        let line = lines.next().expect("stream open").expect("line");
        if let Some(id) = line.strip_prefix("id: ") {
            heights.push(id.parse::<u64>().expect("height id"));
        }
        if line.starts_with("data: ") && line.contains("\"lease_created\"") {
            saw_lease = true;
        }
    }
    assert_eq!(heights, (1..=h).collect::<Vec<_>>(), "replay in order without gaps");
    assert!(saw_lease, "lease_created event not streamed");

    // Metrics and the API description.
    let m = agent
        .get(&format!("{}/metrics", net.url))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("text");
    assert!(m.contains("pazar_block_height"), "{m}");
    assert!(m.contains("pazar_txs_committed_total"));
    // The API description parses as an OpenAPI 3 document and describes every route served.
    let doc: ApiDocument = serde_json::from_value(rpc.get("/openapi.json").expect("openapi"))
        .expect("the document has a version and paths");
    assert!(doc.openapi.starts_with("3."), "OpenAPI {}", doc.openapi);
    let mut served = pazar_node::rpc::ROUTES.to_vec();
    served.sort_unstable();
    assert_eq!(doc.paths.keys().map(String::as_str).collect::<Vec<_>>(), served);
}

#[test]
fn bad_input_gets_clear_errors_and_changes_nothing() {
    let net = common::devnet(200);
    let rpc = net.rpc();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let post = |path: &str, ct: &str, body: &[u8]| {
        let mut r = agent
            .post(&format!("{}{path}", net.url))
            .header("content-type", ct)
            .send(body)
            .expect("answers");
        let status = r.status().as_u16();
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("JSON error body");
        (status, v)
    };
    // Garbage JSON, garbage bytes, an oversized transaction.
    let (s, v) = post("/txs", "application/json", b"{not json");
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "bad_request");
    let (s, v) = post("/txs", "application/octet-stream", &[0xff; 100]);
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("decode")));
    let (s, v) = post("/txs", "application/octet-stream", &vec![0u8; 70 * 1024]);
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("too_large")));
    let big = format!("{{\"txs\": [{}]}}", vec!["\"00\""; 6000].join(","));
    let (s, v) = post("/txs/batch", "application/json", big.as_bytes());
    assert_eq!((s, v["error"]["code"].as_str()), (413, Some("batch_too_large")));

    // A transaction for another chain, then a duplicate.
    let key = pazar_client::keyring::Keyring::new(net.home.path())
        .signer("alice", &|_, _| None)
        .expect("alice");
    let body = |chain: &str, seq: u64| pazar_types::TxBody {
        chain_id: chain.into(),
        sender: key.address(),
        sequence: seq,
        fee: pazar_types::Coin::new(100, Denom::new("upzr").expect("d")),
        msgs: vec![pazar_types::Msg::Send {
            to: key.address(),
            amount: pazar_types::Coin::new(1, Denom::new("upzr").expect("d")),
        }],
        memo: String::new(),
    };
    let other = body("another-chain", 0).sign(&key).encode();
    let e = rpc.submit(&other, SubmitMode::Sync).expect_err("wrong chain refused");
    assert_eq!(e.code(), Some(ErrorCode::WrongChain));
    let good = body("pazar-devnet-1", 0).sign(&key).encode();
    rpc.submit(&good, SubmitMode::Sync).expect("accepted");
    let e = rpc.submit(&good, SubmitMode::Sync).expect_err("duplicate refused");
    assert_eq!(e.code(), Some(ErrorCode::Duplicate));
    // A forged signature: flip a byte of the signature at the end.
    let mut forged = body("pazar-devnet-1", 1).sign(&key).encode();
    let n = forged.len();
    forged[n - 2] ^= 1;
    let e = rpc.submit(&forged, SubmitMode::Sync).expect_err("forged refused");
    assert!(
        matches!(e.code(), Some(ErrorCode::Signature) | Some(ErrorCode::Decode)),
        "{e}"
    );

    // Missing objects and unknown routes are 404 with a code.
    let e = rpc
        .get("/deployments/pazar1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqk2wlw3/1")
        .expect_err("missing");
    assert!(
        matches!(e, pazar_client::ClientError::Api { status: 404 | 400, .. }),
        "{e}"
    );
    let e = rpc
        .get(&format!("/leases/{}/1/1/1/{}", key.address(), key.address()))
        .expect_err("missing lease");
    assert!(matches!(e, pazar_client::ClientError::Api { status: 404, .. }), "{e}");
    let e = rpc.get("/nope").expect_err("no route");
    assert_eq!(e.code(), Some(ErrorCode::NoRoute));

    // A second node on the same home refuses to start, saying why; the first keeps going.
    let out = std::process::Command::new(common::bin())
        .args(["node", "start", "--rpc-listen", "127.0.0.1:0", "--home"])
        .arg(net.home.path())
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use by another process"), "{err}");
    let h = net.height();
    net.wait_height(h + 2);
}
