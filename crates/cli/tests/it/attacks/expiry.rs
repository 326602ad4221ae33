//! Capacity griefing: a tenant who never accepts a bid cannot hold a provider's capacity and
//! deposit, nor keep an order open, for longer than the chain's `bid_timeout_blocks` and
//! `order_timeout_blocks`. At the end of a bid's last block the ledger closes it, returns the
//! deposit exactly and announces `bid_closed` (which the provider daemon answers by releasing
//! its reservation); an order nobody leased closes as `expired` with its open bids, and its
//! group pauses so the tenant sees why and starts it again or closes it.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, amount, Devnet};

/// A devnet whose genesis has these market parameters: the devnet is initialised, stopped, its
/// genesis edited and its store removed, then started again on the edited genesis.
pub(crate) fn devnet_with_params(block_time_ms: u64, params: &[(&str, u64)]) -> Devnet {
    let mut net = common::devnet(block_time_ms);
    let home = net.home.path().to_path_buf();
    let _ = net.child.kill();
    let _ = net.child.wait();
    let path = home.join("genesis.json");
    let mut g: Value = serde_json::from_slice(&std::fs::read(&path).expect("genesis")).expect("genesis json");
    for (k, v) in params {
        g["params"][*k] = (*v).into();
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&g).expect("json")).expect("write genesis");
    std::fs::remove_dir_all(home.join("data")).expect("remove the store");
    std::fs::remove_file(home.join("rpc.addr")).expect("remove rpc.addr");
    let bt = block_time_ms.to_string();
    net.child = common::spawn(
        &["devnet", "--rpc-listen", "127.0.0.1:0", "--block-time-ms", &bt],
        &home,
    );
    net.url = common::wait_ready(&home, &mut net.child, Duration::from_secs(30));
    let p = net.cli(&["query", "status"]);
    assert!(p.is_object(), "{p}");
    net
}

/// A one-service SDL asking for `cpu` cores, at most 10,000 uusd per block.
fn web_sdl(dir: &Path, name: &str, cpu: &str) -> std::path::PathBuf {
    let sdl = dir.join(name);
    std::fs::write(
        &sdl,
        format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: nginx:1.25\n    expose: [{{port: 80, to: [{{global: true}}]}}]\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: {cpu}}}, memory: {{size: 128Mi}}, storage: {{size: 256Mi}}}}}}\n  placement:\n    dc: {{pricing: {{web: {{denom: uusd, amount: 10000}}}}}}\ndeployment:\n  web: {{dc: {{profile: web, count: 1}}}}\n"
        ),
    )
    .expect("sdl");
    sdl
}

pub(crate) fn create_only(net: &Devnet, sdl: &Path, dseq: &str) {
    let v = net.cli(&[
        "deploy",
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        dseq,
        "--create-only",
    ]);
    assert_eq!(v["tx"]["receipt"]["code"], 0, "{v}");
}

/// A transaction that must commit and fail; returns its receipt. It is broadcast without the
/// CLI's simulation (`--no-simulate`): these tests prove the ledger itself refuses it.
pub(crate) fn tx_failed(net: &Devnet, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--no-simulate");
    let out = net.cli_raw(&args, &[]);
    assert!(!out.status.success(), "{args:?} succeeded");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(v["status"], "committed", "{v}");
    assert_ne!(v["receipt"]["code"], 0, "{v}");
    v["receipt"].clone()
}

fn balance(net: &Devnet, who: &str, denom: &str) -> u128 {
    let a = net.address(who);
    amount(&net.cli(&["query", "balance", &a, denom])["amount"])
}

/// The chain closes a bid nobody accepted, exactly the deposit goes back, and the tenant can no
/// longer take it; the order that nobody leased closes as expired and pauses its group, which
/// the tenant starts again with a fresh order.
#[test]
fn a_bid_nobody_accepts_expires_with_its_deposit_and_an_unleased_order_pauses_its_group() {
    let net = devnet_with_params(
        150,
        &[
            ("bid_timeout_blocks", 8),
            ("order_timeout_blocks", 30),
            ("max_auto_accept_blocks", 4),
        ],
    );
    let params = net.cli(&["query", "params"]);
    assert_eq!(params["params"]["bid_timeout_blocks"], 8, "{params}");
    net.tx_ok(&[
        "tx",
        "provider",
        "create",
        "--from",
        "provider",
        "--host-uri",
        "https://127.0.0.1:1",
        "--tls-fingerprint",
        &"11".repeat(32),
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    create_only(&net, &web_sdl(dir.path(), "web.yaml", "0.5"), "7");
    let alice = net.address("alice");
    let provider = net.address("provider");
    let order = format!("{alice}/7/1/1");
    let bid = format!("{order}/{provider}");

    let before = balance(&net, "provider", "upzr");
    let (_, placed) = net.tx_ok(&[
        "tx",
        "bid",
        "create",
        &order,
        "--price",
        "5uusd",
        "--deposit",
        "500000upzr",
        "--from",
        "provider",
    ]);
    let fee = placed.fee.expect("a committed transaction paid its fee").amount;
    assert_eq!(balance(&net, "provider", "upzr"), before - fee - 500_000);
    let b = net.cli(&["query", "bid", &bid]);
    let expires_at = b["bid"]["expires_at"].as_u64().expect("expires_at");
    assert_eq!(b["bid"]["state"], "open", "{b}");

    net.wait_height(expires_at + 1);
    let b = net.cli(&["query", "bid", &bid]);
    assert_eq!(
        (&b["bid"]["state"], &b["bid"]["expired"]),
        (&"closed".into(), &true.into()),
        "{b}"
    );
    // Exactly the deposit came back: the provider paid only its bid's fee.
    assert_eq!(balance(&net, "provider", "upzr"), before - fee);
    // Too late to take it.
    let late = tx_failed(&net, &["tx", "lease", "create", &bid, "--from", "alice"]);
    assert!(late["log"].as_str().unwrap_or("").contains("not open"), "{late}");

    // The order waits out its own timeout, then closes and pauses the group.
    let o = net.cli(&["query", "order", &order]);
    let order_expires = o["order"]["expires_at"].as_u64().expect("expires_at");
    net.wait_height(order_expires + 1);
    let o = net.cli(&["query", "order", &order]);
    assert_eq!(
        (&o["order"]["state"], &o["order"]["expired"]),
        (&"closed".into(), &true.into()),
        "{o}"
    );
    let d = net.cli(&["query", "deployment", &format!("{alice}/7")]);
    assert_eq!(d["groups"][0]["group"]["state"], "paused", "{d}");
    assert_eq!(d["deployment"]["state"], "active", "{d}");
    // Nothing can bid on the closed order; the tenant starts the group and gets a fresh one.
    let refused = tx_failed(
        &net,
        &[
            "tx",
            "bid",
            "create",
            &order,
            "--price",
            "5uusd",
            "--deposit",
            "500000upzr",
            "--from",
            "provider",
        ],
    );
    assert!(refused["log"].as_str().unwrap_or("").contains("not open"), "{refused}");
    net.tx_ok(&["tx", "group", "start", "--dseq", "7", "--gseq", "1", "--from", "alice"]);
    let o2 = net.cli(&["query", "order", &format!("{alice}/7/1/2")]);
    assert_eq!(o2["order"]["state"], "open", "{o2}");
}

/// A `pazar provider run` child, killed when dropped.
pub(crate) struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the provider daemon of key `provider` on a free port with `extra` TOML, logging to
/// `dir/provider.log`, and waits until it has registered. Returns the daemon and its log path.
pub(crate) fn start_daemon(net: &Devnet, dir: &Path, extra: &str) -> (Daemon, std::path::PathBuf) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let config = dir.join("provider.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n{extra}")).expect("config");
    let log = dir.join("provider.log");
    let log_file = std::fs::File::create(&log).expect("log");
    let daemon = Daemon(
        Command::new(common::bin())
            .args(["provider", "run", "--from", "provider", "--config"])
            .arg(&config)
            .arg("--home")
            .arg(net.home.path())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawns the daemon"),
    );
    let provider = net.address("provider");
    wait_for("the provider to register", Duration::from_secs(30), || {
        net.cli_raw(&["query", "provider", &provider], &[]).status.success()
    });
    (daemon, log)
}

pub(crate) fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The real provider daemon, selling one CPU: an order it bid on holds 800 millicores, so a
/// second order gets no bid while the tenant sits on the first; once the chain expires that bid
/// the daemon's `bid_closed` handler gives the capacity back and it bids on the next order.
#[test]
fn a_tenant_who_never_leases_holds_a_provider_s_capacity_only_until_the_bid_expires() {
    let net = devnet_with_params(
        200,
        &[
            ("bid_timeout_blocks", 15),
            ("order_timeout_blocks", 200),
            ("max_auto_accept_blocks", 4),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, log) = start_daemon(&net, dir.path(), "[capacity]\ncpu_millis = 1000\n");
    let provider = net.address("provider");
    let alice = net.address("alice");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let bid_on = |dseq: &str| {
        let id = format!("{alice}/{dseq}/1/1/{provider}");
        let out = net.cli_raw(&["query", "bid", &id], &[]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).expect("json"))
    };

    // Order A: the daemon bids and reserves 800 of its 1,000 millicores.
    let sdl = web_sdl(dir.path(), "web.yaml", "0.8");
    create_only(&net, &sdl, "1");
    wait_for("a bid on order A", Duration::from_secs(30), || bid_on("1").is_some());
    let a = bid_on("1").expect("bid on A");
    let expires_at = a["bid"]["expires_at"].as_u64().expect("expires_at");

    // Order B while A's bid is open: no capacity, no bid, and the daemon says why.
    create_only(&net, &sdl, "2");
    wait_for("the daemon to refuse order B", Duration::from_secs(30), || {
        read_log().contains("/2/1/1: needs 800 millicores of CPU; the provider has 200 free")
    });
    assert!(bid_on("2").is_none(), "order B got a bid while A held the capacity");
    assert!(
        net.height() < expires_at,
        "the test was too slow to see the capacity held (height {} ≥ {expires_at})",
        net.height()
    );

    // The tenant never leases A: at the end of its last block the chain closes the bid.
    net.wait_height(expires_at + 1);
    let a = bid_on("1").expect("bid on A");
    assert_eq!(
        (&a["bid"]["state"], &a["bid"]["expired"]),
        (&"closed".into(), &true.into()),
        "{a}"
    );

    // Order C: the capacity A held is free again, so the daemon bids.
    create_only(&net, &sdl, "3");
    wait_for("a bid on order C", Duration::from_secs(30), || bid_on("3").is_some());
    assert_eq!(bid_on("3").expect("bid on C")["bid"]["state"], "open");
    assert!(
        !read_log().contains("/3/1/1: needs"),
        "the daemon still counted A's reservation:\n{}",
        read_log()
    );
}
