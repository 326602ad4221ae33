//! The node's OpenAPI document, held to the OpenAPI Initiative's schema by a validator that is
//! not its generator (`pazar_api::openapi_check`), and a real node's answers on every route,
//! successes and errors, checked against what the document says they are.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pazar_api::openapi_check::{check_answer, check_component, check_document, edited};
use pazar_node::consensus::{Solo, SystemClock};
use pazar_node::genesis::GenesisOnDisk;
use pazar_node::{Faucet, Node, NodeConfig};
use pazar_types::market::{
    BidId, DeploymentId, Endpoint, EndpointKind, Gpu, GroupSpec, OrderId, PlacementRequirements, ResourceUnit,
    Resources, StorageVolume,
};
use pazar_types::{Address, Coin, Denom, KeyScheme, Msg, Price, ProviderInfo, SigningKey, TxBody};

const CHAIN: &str = "openapi-test";

fn doc() -> Value {
    serde_json::from_str(pazar_node::openapi::json()).expect("the document is JSON")
}

#[test]
fn the_generated_document_is_valid_openapi_3_1_and_types_every_answer() {
    let problems = check_document(&doc());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_document_check_refuses_what_our_rules_forbid() {
    let doc = doc();
    let cases = [
        (
            edited(&doc, "/paths/~1status/get/responses/200", |r| {
                r.remove("content");
            }),
            "has no content",
        ),
        (
            edited(
                &doc,
                "/paths/~1status/get/responses/200/content/application~1json",
                |c| {
                    c.insert("schema".into(), json!({"type": "object"}));
                },
            ),
            "no described properties",
        ),
        (
            edited(&doc, "/components/schemas/Status/properties", |p| {
                p.insert("extra".into(), json!({}));
            }),
            "untyped schema",
        ),
        (
            edited(
                &doc,
                "/paths/~1blocks~1{height}/get/responses/404/content/application~1json",
                |c| {
                    c.insert("schema".into(), json!({"$ref": "#/components/schemas/Status"}));
                },
            ),
            "is an error answer but not",
        ),
        (
            edited(
                &doc,
                "/paths/~1params/get/responses/200/content/application~1json",
                |c| {
                    c.insert("schema".into(), json!({"$ref": "#/components/schemas/Nothing"}));
                },
            ),
            "resolves to nothing",
        ),
        (
            edited(&doc, "", |d| {
                d.insert("openapi".into(), json!("2.0"));
            }),
            "not OpenAPI 3.1",
        ),
        (
            edited(&doc, "/components/schemas/Lagged", |l| {
                l.insert("type".into(), json!("record"));
            }),
            "is not a valid JSON Schema",
        ),
    ];
    for (broken, expect) in cases {
        let problems = check_document(&broken);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "expected a problem with {expect:?}, got {problems:#?}"
        );
    }
    // An answer the document does not describe is caught too.
    let wrong = json!({"chain_id": CHAIN, "height": "seven"});
    assert!(!check_answer(&doc, "get", "/status", 200, &wrong).is_empty());
    assert!(!check_component(&doc, "Lagged", &json!({"resume": 3})).is_empty());
}

/// A one-validator node on loopback with a faucet, stopped when dropped.
struct Devnet {
    addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl Drop for Devnet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn key(scheme: KeyScheme, seed: u8) -> SigningKey {
    SigningKey::from_secret(scheme, &[seed; 32]).expect("a fixed test key")
}

fn upzr() -> Denom {
    Denom::new("upzr").expect("valid")
}

fn coins(amount: u128) -> Value {
    json!([{"denom": "upzr", "amount": amount.to_string()}, {"denom": "uusd", "amount": amount.to_string()}])
}

impl Devnet {
    fn start(funded: &[Address], faucet: SigningKey) -> Devnet {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut balances: Vec<Value> = funded
            .iter()
            .map(|a| json!({"address": a, "coins": coins(1_000_000_000_000)}))
            .collect();
        balances.push(json!({"address": faucet.address(), "coins": coins(1_000_000_000_000)}));
        let genesis = json!({
            "genesis_time_ms": 1,
            "chain_id": CHAIN,
            "params": pazar_ledger::Params::devnet("upzr", "uusd"),
            "balances": balances,
            // A consensus key puts the set on the ledger, so `/validators` answers with one.
            "validators": [{
                "name": "v",
                "address": Address::module("v"),
                "power": 1,
                "consensus_key": hex::encode(key(KeyScheme::Ed25519, 9).public_key_bytes()),
            }],
            "epoch_length": 4,
        });
        let path = dir.path().join("genesis.json");
        std::fs::write(&path, serde_json::to_vec(&genesis).expect("JSON")).expect("genesis written");
        let genesis = GenesisOnDisk::open(&path).expect("genesis reads");
        let block_time = Duration::from_millis(100);
        let config = NodeConfig {
            block_time,
            faucet: Some(Faucet {
                key: faucet,
                amounts: vec![Coin::new(50_000_000, upzr())],
                fee: Coin::new(1_000, upzr()),
            }),
            ..NodeConfig::default()
        };
        let node = Node::open(&dir.path().join("db"), &genesis, Address::module("v"), config).expect("node opens");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port");
        let addr = listener.local_addr().expect("an address");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let engine = Solo {
            block_time,
            clock: Arc::new(SystemClock),
        };
        rt.spawn(pazar_node::run(node, engine, listener, rx));
        Devnet {
            addr,
            stop,
            rt: Some(rt),
            _dir: dir,
        }
    }

    /// One HTTP/1.1 exchange: the status and the body.
    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).expect("the node accepts");
        s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
        let mut head = format!(
            "{} {path} HTTP/1.1\r\nHost: node\r\nConnection: close\r\nContent-Length: {}\r\n",
            method.to_uppercase(),
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("request head");
        s.write_all(body).expect("request body");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("an answer");
        split_answer(&raw)
    }

    /// `method path` answered, its JSON body checked against the document's response for
    /// `template` (the route) and the status it came with.
    fn json(&self, doc: &Value, method: &str, template: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let (bytes, headers): (Vec<u8>, &[(&str, &str)]) = match body {
            Some(b) => (
                serde_json::to_vec(b).expect("JSON"),
                &[("Content-Type", "application/json")],
            ),
            None => (Vec::new(), &[]),
        };
        let (status, raw) = self.call(method, path, headers, &bytes);
        self.checked(doc, method, template, path, status, &raw)
    }

    fn checked(&self, doc: &Value, method: &str, template: &str, path: &str, status: u16, raw: &[u8]) -> (u16, Value) {
        let v: Value = serde_json::from_slice(raw).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: {status}, not JSON ({e}): {}",
                String::from_utf8_lossy(raw)
            )
        });
        let problems = check_answer(doc, method, template, status, &v);
        assert!(problems.is_empty(), "{method} {path}: {problems:#?}\n{v:#}");
        (status, v)
    }

    fn get(&self, doc: &Value, template: &str, path: &str) -> Value {
        let (status, v) = self.json(doc, "get", template, path, None);
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    fn error(&self, doc: &Value, method: &str, template: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let (status, v) = self.json(doc, method, template, path, body);
        assert!(status >= 400, "{method} {path} succeeded: {v}");
        let code = v["error"]["code"].as_str().expect("an error code").to_string();
        (status, code)
    }

    fn sequence(&self, doc: &Value, who: &Address) -> u64 {
        let v = self.get(doc, "/accounts/{address}", &format!("/accounts/{who}"));
        v["sequence"].as_u64().expect("a sequence")
    }

    fn signed(&self, doc: &Value, key: &SigningKey, msgs: Vec<Msg>) -> Vec<u8> {
        TxBody {
            chain_id: CHAIN.into(),
            sender: key.address(),
            sequence: self.sequence(doc, &key.address()),
            fee: Coin::new(10_000, upzr()),
            msgs,
            memo: String::new(),
        }
        .sign(key)
        .encode()
    }

    /// Submits in `commit` mode and insists the transaction succeeded.
    fn commit(&self, doc: &Value, key: &SigningKey, msgs: Vec<Msg>) -> Value {
        let tx = self.signed(doc, key, msgs);
        let body = json!({"tx": hex::encode(tx), "mode": "commit"});
        let (status, v) = self.json(doc, "post", "/txs", "/txs", Some(&body));
        assert_eq!((status, v["status"].as_str()), (200, Some("committed")), "{v}");
        assert_eq!(v["receipt"]["code"], 0, "{v}");
        v
    }
}

fn split_answer(raw: &[u8]) -> (u16, Vec<u8>) {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("an HTTP head");
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = raw[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).expect("a chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 4 + size..];
    }
}

fn group() -> GroupSpec {
    GroupSpec {
        name: "web".into(),
        requirements: PlacementRequirements::default(),
        resources: vec![ResourceUnit {
            id: 1,
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 512 << 20,
                storage: vec![StorageVolume {
                    name: "default".into(),
                    bytes: 1 << 30,
                    attributes: vec![],
                }],
                gpu: Gpu::default(),
                endpoints: vec![Endpoint {
                    kind: EndpointKind::SharedHttp,
                    sequence: 0,
                }],
            },
            count: 1,
            price: Price {
                denom: upzr(),
                amount: "10".parse().expect("a price"),
            },
        }],
    }
}

#[test]
fn every_answer_of_a_real_node_is_what_its_document_says() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let provider = key(KeyScheme::Ed25519, 2);
    let eth = key(KeyScheme::Eth, 3);
    let net = Devnet::start(&[tenant.address(), provider.address()], key(KeyScheme::Ed25519, 4));
    let doc = doc();

    // The served document is the generated one.
    let (status, raw) = net.call("GET", "/openapi.json", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&raw).expect("JSON"), doc);
    let (status, raw) = net.call("GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&raw).contains("pazar_block_height"));

    net.get(&doc, "/status", "/status");
    net.get(&doc, "/params", "/params");
    net.get(&doc, "/supply", "/supply");
    let v = net.get(&doc, "/validators", "/validators");
    assert_eq!(v["epoch_length"], 4);
    assert_eq!(v["sets"][0]["validators"][0]["power"], 1, "{v}");
    // A node that made no validator-set hand-off record (a single validator) answers with none.
    let v = net.get(&doc, "/sync/handoffs", "/sync/handoffs?from=1");
    assert_eq!(v["handoffs"], json!([]), "{v}");

    // The faucet pays an Ethereum address; that key sends raw bytes back (an `eth` signature).
    let (status, v) = net.json(
        &doc,
        "post",
        "/faucet",
        "/faucet",
        Some(&json!({"address": eth.address()})),
    );
    assert_eq!((status, v["status"].as_str()), (200, Some("committed")), "{v}");
    let back = net.signed(
        &doc,
        &eth,
        vec![Msg::Send {
            to: tenant.address(),
            amount: Coin::new(1_000, upzr()),
        }],
    );
    let (status, raw) = net.call("POST", "/txs", &[("Content-Type", "application/octet-stream")], &back);
    let (_, v) = net.checked(&doc, "post", "/txs", "/txs", status, &raw);
    assert_eq!(v["status"], "pending", "{v}");
    let hash = v["hash"].as_str().expect("a hash").to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let looked = loop {
        let v = net.get(&doc, "/txs/{hash}", &format!("/txs/{hash}"));
        if v["status"] == "committed" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(looked["tx"]["signature"]["scheme"], "eth", "{looked}");
    // Submitting the same bytes again is a duplicate.
    let (status, raw) = net.call("POST", "/txs", &[("Content-Type", "application/octet-stream")], &back);
    let (_, v) = net.checked(&doc, "post", "/txs", "/txs", status, &raw);
    assert_eq!((status, v["error"]["code"].as_str()), (409, Some("duplicate")));

    // A provider, a deployment, a bid and a lease, so every list and detail has an item.
    net.commit(
        &doc,
        &provider,
        vec![Msg::CreateProvider {
            host_uri: "https://provider.example.com:8443".into(),
            tls_fingerprint: [7; 32],
            attributes: vec![],
            info: ProviderInfo::default(),
        }],
    );
    net.commit(
        &doc,
        &tenant,
        vec![Msg::CreateDeployment {
            dseq: 1,
            version: [1; 32],
            groups: vec![group()],
            deposit: Coin::new(5_000_000, upzr()),
            auto_accept_after: None,
        }],
    );
    let order = OrderId {
        owner: tenant.address(),
        dseq: 1,
        gseq: 1,
        oseq: 1,
    };
    net.commit(
        &doc,
        &provider,
        vec![Msg::CreateBid {
            order: order.clone(),
            price: Price {
                denom: upzr(),
                amount: "2.5".parse().expect("a price"),
            },
            deposit: Coin::new(500_000, upzr()),
        }],
    );
    let bid = BidId {
        owner: tenant.address(),
        dseq: 1,
        gseq: 1,
        oseq: 1,
        provider: provider.address(),
    };
    let leased = net.commit(&doc, &tenant, vec![Msg::CreateLease { bid: bid.clone() }]);

    let (t, p) = (tenant.address(), provider.address());
    let id = DeploymentId { owner: t, dseq: 1 };
    let bid_path = format!("{t}/1/1/1/{p}");
    for (template, path, list) in [
        ("/providers", "/providers".to_string(), Some("providers")),
        ("/deployments", "/deployments".to_string(), Some("deployments")),
        (
            "/deployments",
            format!("/deployments?owner={t}&limit=1"),
            Some("deployments"),
        ),
        (
            "/orders",
            format!("/orders?owner={t}&dseq=1&state=active"),
            Some("orders"),
        ),
        ("/bids", format!("/bids?provider={p}&state=active"), Some("bids")),
        (
            "/leases",
            format!("/leases?owner={t}&provider={p}&dseq=1&state=active"),
            Some("leases"),
        ),
        ("/providers/{address}", format!("/providers/{p}?prove=true"), None),
        ("/accounts/{address}", format!("/accounts/{t}?prove=true"), None),
        (
            "/accounts/{address}/balances/{denom}",
            format!("/accounts/{t}/balances/upzr?prove=true"),
            None,
        ),
        (
            "/deployments/{owner}/{dseq}",
            format!("/deployments/{}/{}?prove=true", id.owner, id.dseq),
            None,
        ),
        ("/escrow/{owner}/{dseq}", format!("/escrow/{t}/1?prove=true"), None),
        (
            "/orders/{owner}/{dseq}/{gseq}/{oseq}",
            format!("/orders/{t}/1/1/1?prove=true"),
            None,
        ),
        (
            "/bids/{owner}/{dseq}/{gseq}/{oseq}/{provider}",
            format!("/bids/{bid_path}?prove=true"),
            None,
        ),
        (
            "/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}",
            format!("/leases/{bid_path}?prove=true"),
            None,
        ),
        (
            "/leases/{owner}/{dseq}/{gseq}/{oseq}/{provider}",
            format!("/leases/{bid_path}"),
            None,
        ),
        ("/blocks/{height}", "/blocks/latest".to_string(), None),
        ("/blocks/{height}", format!("/blocks/{}", leased["height"]), None),
    ] {
        let v = net.get(&doc, template, &path);
        match list {
            Some(field) => assert!(
                !v[field].as_array().expect("a list").is_empty(),
                "{path} lists nothing: {v}"
            ),
            None if path.contains("prove=true") => assert!(v["proof"].is_object(), "{path}: {v}"),
            None => {}
        }
    }

    // A batch: one transaction committed, one refused on its own.
    let ok = net.signed(
        &doc,
        &tenant,
        vec![Msg::Send {
            to: p,
            amount: Coin::new(1, upzr()),
        }],
    );
    let body = json!({"txs": [hex::encode(ok), "00"], "mode": "commit"});
    let (status, v) = net.json(&doc, "post", "/txs/batch", "/txs/batch", Some(&body));
    assert_eq!(status, 200);
    assert_eq!(v["results"][0]["status"], "committed", "{v}");
    assert_eq!(v["results"][1]["status"], "refused", "{v}");
    assert_eq!(v["results"][1]["error"]["code"], "decode", "{v}");

    // Errors: each an envelope with the status and code the document lists.
    let unknown = "ab".repeat(32);
    for (method, template, path, body, want) in [
        (
            "get",
            "/blocks/{height}",
            "/blocks/999999".to_string(),
            None,
            (404, "not_found"),
        ),
        (
            "get",
            "/blocks/{height}",
            "/blocks/tall".to_string(),
            None,
            (400, "bad_request"),
        ),
        ("get", "/txs/{hash}", "/txs/zz".to_string(), None, (400, "bad_request")),
        (
            "get",
            "/txs/{hash}",
            format!("/txs/{unknown}"),
            None,
            (404, "not_found"),
        ),
        (
            "get",
            "/accounts/{address}",
            "/accounts/nobody".to_string(),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/accounts/{address}",
            format!("/accounts/{t}?prove=yes"),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/bids",
            "/bids?colour=red".to_string(),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/bids",
            "/bids?cursor=zz".to_string(),
            None,
            (400, "bad_request"),
        ),
        ("get", "/bids", "/bids?limit=0".to_string(), None, (400, "bad_request")),
        (
            "get",
            "/providers",
            format!("/providers?owner={t}"),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/deployments",
            "/deployments?state=active".to_string(),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/orders",
            "/orders?state=sleeping".to_string(),
            None,
            (400, "bad_request"),
        ),
        (
            "get",
            "/deployments/{owner}/{dseq}",
            format!("/deployments/{t}/999"),
            None,
            (404, "not_found"),
        ),
        (
            "get",
            "/escrow/{owner}/{dseq}",
            format!("/escrow/{p}/1"),
            None,
            (404, "not_found"),
        ),
        (
            "post",
            "/txs",
            "/txs".to_string(),
            Some(json!({"tx": "zz"})),
            (400, "bad_request"),
        ),
        (
            "post",
            "/txs",
            "/txs".to_string(),
            Some(json!({"tx": "00"})),
            (400, "decode"),
        ),
        (
            "post",
            "/txs/batch",
            "/txs/batch".to_string(),
            Some(json!({"txs": vec!["00"; 5001]})),
            (413, "batch_too_large"),
        ),
        (
            "post",
            "/faucet",
            "/faucet".to_string(),
            Some(json!({})),
            (400, "bad_request"),
        ),
        (
            "get",
            "/sync/handoffs",
            "/sync/handoffs?from=first".to_string(),
            None,
            (400, "bad_request"),
        ),
    ] {
        let got = net.error(&doc, method, template, &path, body.as_ref());
        assert_eq!((got.0, got.1.as_str()), want, "{method} {path}");
    }
    let (status, raw) = net.call("GET", "/events", &[("Last-Event-ID", "soon")], b"");
    let (_, v) = net.checked(&doc, "get", "/events", "/events", status, &raw);
    assert_eq!((status, v["error"]["code"].as_str()), (400, Some("bad_last_event_id")));
    // A path that is no route still answers with the envelope.
    let (status, raw) = net.call("GET", "/nowhere", &[], b"");
    let v: Value = serde_json::from_slice(&raw).expect("JSON");
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("no_route")));
    assert!(check_component(&doc, "ErrorEnvelope", &v).is_empty());
    // So does a route asked with a method it does not take, with HTTP's status for that.
    let (status, raw) = net.call("DELETE", "/status", &[], b"");
    let v: Value = serde_json::from_slice(&raw).expect("JSON");
    assert_eq!((status, v["error"]["code"].as_str()), (405, Some("no_route")));
    assert!(check_component(&doc, "ErrorEnvelope", &v).is_empty());

    // The event stream: every block replayed from height 1 is a `BlockEvents`, with its
    // receipts and end-of-block events under those names.
    let events = block_events(net.addr, 1, leased["height"].as_u64().expect("a height"));
    assert!(!events.is_empty());
    let mut saw_lease = false;
    for e in &events {
        let problems = check_component(&doc, "BlockEvents", e);
        assert!(problems.is_empty(), "{problems:#?}\n{e}");
        assert!(e["receipts"].is_array() && e["end_block_events"].is_array(), "{e}");
        saw_lease |= e.to_string().contains("\"lease_created\"");
    }
    assert!(saw_lease, "the lease's block was streamed");
}

/// The `block` events from `/events?from=from` up to height `to`, as JSON. HTTP/1.0, so the
/// stream comes without chunk framing and each `data:` line arrives whole.
fn block_events(addr: SocketAddr, from: u64, to: u64) -> Vec<Value> {
    let mut s = TcpStream::connect(addr).expect("the node accepts");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    write!(s, "GET /events?from={from} HTTP/1.0\r\nHost: node\r\n\r\n").expect("request");
    let mut pending = Vec::new();
    let mut buf = [0u8; 8192];
    let mut out: Vec<Value> = Vec::new();
    while out.last().and_then(|e| e["height"].as_u64()).is_none_or(|h| h < to) {
        let n = s.read(&mut buf).expect("the stream");
        assert!(n > 0, "the stream ended before height {to}");
        pending.extend_from_slice(&buf[..n]);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                out.push(serde_json::from_str(data).expect("each event's data is JSON"));
            }
        }
    }
    out
}

/// `POST /txs/simulate` on a real node: a valid send would succeed with its events, a send of
/// more than the balance would fail with the ledger's reason, a wrong sequence, chain or fee is
/// the admission error `POST /txs` would give; no simulation moves a balance or a sequence.
#[test]
fn a_simulation_says_what_would_happen_and_changes_nothing() {
    let tenant = key(KeyScheme::Ed25519, 1);
    let to = key(KeyScheme::Ed25519, 9).address();
    let net = Devnet::start(&[tenant.address()], key(KeyScheme::Ed25519, 4));
    let doc = doc();
    // An account's sequence and balances, without the height the answer was read at.
    let account = |who: &Address| {
        let v = net.get(&doc, "/accounts/{address}", &format!("/accounts/{who}"));
        (v["sequence"].clone(), v["balances"].clone())
    };
    let before = (account(&tenant.address()), account(&to));
    let send = |amount: u128| Msg::Send {
        to,
        amount: Coin::new(amount, upzr()),
    };
    let simulate = |tx: &[u8]| {
        let body = json!({ "tx": hex::encode(tx) });
        let (status, v) = net.json(&doc, "post", "/txs/simulate", "/txs/simulate", Some(&body));
        assert_eq!(status, 200, "{v}");
        v
    };

    let ok = simulate(&net.signed(&doc, &tenant, vec![send(5_000)]));
    assert_eq!(ok["would_succeed"], true, "{ok}");
    assert!(ok.get("admission").is_none(), "{ok}");
    assert_eq!(ok["receipt"]["code"], 0, "{ok}");
    let events = ok["receipt"]["events"].to_string();
    assert!(events.contains("fee_paid") && events.contains("transfer"), "{ok}");
    // The raw form answers the same.
    let tx = net.signed(&doc, &tenant, vec![send(5_000)]);
    let (status, raw) = net.call(
        "POST",
        "/txs/simulate",
        &[("Content-Type", "application/octet-stream")],
        &tx,
    );
    let (_, raw_answer) = net.checked(&doc, "post", "/txs/simulate", "/txs/simulate", status, &raw);
    assert_eq!(raw_answer["receipt"], ok["receipt"]);

    let too_much = simulate(&net.signed(&doc, &tenant, vec![send(2_000_000_000_000)]));
    assert_eq!(too_much["would_succeed"], false, "{too_much}");
    assert_eq!(too_much["admission"]["code"], "fee_unpayable", "{too_much}");
    assert_ne!(too_much["receipt"]["code"], 0, "{too_much}");
    assert!(
        too_much["receipt"]["log"].as_str().is_some_and(|l| !l.is_empty()),
        "the ledger's reason: {too_much}"
    );

    let signed_with = |chain: &str, sequence: u64, fee: u128| {
        TxBody {
            chain_id: chain.into(),
            sender: tenant.address(),
            sequence,
            fee: Coin::new(fee, upzr()),
            msgs: vec![send(5)],
            memo: String::new(),
        }
        .sign(&tenant)
        .encode()
    };
    for (tx, code) in [
        (signed_with(CHAIN, 7, 10_000), "sequence_gap"),
        (signed_with("another-chain", 0, 10_000), "wrong_chain"),
        (signed_with(CHAIN, 0, 0), "fee_too_low"),
    ] {
        let v = simulate(&tx);
        assert_eq!(v["would_succeed"], false, "{v}");
        assert_eq!(v["admission"]["code"], code, "{v}");
    }
    // Bytes that are no transaction are the request's error, as for `POST /txs`.
    let (status, code) = net.error(
        &doc,
        "post",
        "/txs/simulate",
        "/txs/simulate",
        Some(&json!({"tx": "00"})),
    );
    assert_eq!((status, code.as_str()), (400, "decode"));

    // Blocks went by meanwhile; nothing was submitted, so nothing moved.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!((account(&tenant.address()), account(&to)), before);
    assert_eq!(net.get(&doc, "/status", "/status")["mempool"]["txs"], 0);
}
