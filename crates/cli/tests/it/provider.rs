//! The marketplace with the real binaries: a devnet, `pazar provider run` (registers, bids,
//! serves manifests over TLS, runs leases on Docker, withdraws), and a tenant's one-command
//! `pazar deploy` of a deploy.yaml that ends with the service answering over HTTP. The daemon is
//! killed and restarted mid-lease without dropping it; closing the lease removes the workload.

use crate::common;

use common::{free_port, http_get, Daemon};

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pazar_types::market::{BidId, DeploymentId, LeaseCloseReason, LeaseState};
use pazar_types::Denom;

use pazar_api::provider::LeaseStatus;
use pazar_api::ErrorCode;
use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::{LeaseRef, Runtime};

pub(crate) const IMAGE: &str = "pazar-demo:test";
/// The demo image is built here (no registry is reachable from the tests): tenants may run it.
pub(crate) const ALLOW_DEMO: &str = "[images]\nallow_local = [\"pazar-demo:*\"]\n";

fn start_daemon(home: &Path, config: &Path, log: &Path) -> Daemon {
    start_daemon_as("provider", home, config, log)
}

/// `pazar provider run --from KEY`, its stderr appended to `log`.
pub(crate) fn start_daemon_as(key: &str, home: &Path, config: &Path, log: &Path) -> Daemon {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log");
    Daemon(
        Command::new(common::bin())
            .args(["provider", "run", "--from", key, "--config"])
            .arg(config)
            .arg("--home")
            .arg(home)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawns the daemon"),
    )
}

pub(crate) fn build_image() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default()).await.expect("docker");
        build_demo_image(d.docker(), IMAGE).await.expect("image");
    });
}

/// Waits until the daemon has registered the provider key; returns its address.
fn wait_registered(net: &common::Devnet, log: &Path) -> String {
    wait_registered_as(net, "provider", log)
}

/// Waits until the daemon has registered key `key` as a provider; returns its address.
pub(crate) fn wait_registered_as(net: &common::Devnet, key: &str, log: &Path) -> String {
    let provider = net.address(key);
    let t0 = Instant::now();
    while net.cli_raw(&["query", "provider", &provider], &[]).status.code() != Some(0) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "provider did not register: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    provider
}

/// Writes `provider.toml` (listening on a free port, plus `extra` TOML) in `dir`, starts the
/// daemon on it and waits for its registration.
fn provider_with(net: &common::Devnet, dir: &Path, extra: &str) -> (Daemon, std::path::PathBuf) {
    let config = dir.join("provider.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{}\"\n{extra}\n{ALLOW_DEMO}", free_port()),
    )
    .expect("config");
    let log = dir.join("provider.log");
    let daemon = start_daemon(net.home.path(), &config, &log);
    wait_registered(net, &log);
    (daemon, log)
}

/// A one-service SDL of the demo image with `cpu` cores at most `price` uusd per block.
fn web_sdl(dir: &Path, cpu: &str, price: u64) -> std::path::PathBuf {
    let sdl = dir.join("deploy.yaml");
    std::fs::write(
        &sdl,
        format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: {IMAGE}\n    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]\nprofiles:\n  compute:\n    web: {{resources: {{cpu: {{units: {cpu}}}, memory: {{size: 128Mi}}, storage: {{size: 256Mi}}}}}}\n  placement:\n    local: {{pricing: {{web: {{denom: uusd, amount: {price}}}}}}}\ndeployment:\n  web: {{local: {{profile: web, count: 1}}}}\n"
        ),
    )
    .expect("sdl");
    sdl
}

fn lease_present(name: &str) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let d = DockerRuntime::connect(DockerOptions::default()).await.expect("docker");
        d.leases().await.expect("leases").iter().any(|(n, _)| n == name)
    })
}

#[test]
fn deploy_bid_lease_serve_restart_withdraw_and_close_with_the_real_daemon() {
    build_image();
    let net = common::devnet(250);
    let home = net.home.path();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nwithdraw_every_blocks = 4\nstorage_check_ms = 300\n[attributes]\nregion = \"local\"\n{ALLOW_DEMO}"
        ),
    )
    .expect("config");
    let log = dir.path().join("provider.log");
    let daemon = start_daemon(home, &config, &log);
    let provider = wait_registered(&net, &log);

    let sdl = dir.path().join("deploy.yaml");
    std::fs::write(
        &sdl,
        format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: {IMAGE}\n    expose:\n      - port: 8080\n        as: 80\n        to: [{{global: true}}]\nprofiles:\n  compute:\n    web:\n      resources:\n        cpu: {{units: 0.5}}\n        memory: {{size: 128Mi}}\n        storage: {{size: 256Mi}}\n  placement:\n    local:\n      attributes: {{region: local}}\n      pricing:\n        web: {{denom: uusd, amount: 10000}}\ndeployment:\n  web:\n    local: {{profile: web, count: 1}}\n"
        ),
    )
    .expect("sdl");
    let v = net.deploy(&[
        sdl.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        "70",
        "--bid-window-s",
        "1",
    ]);
    let lease = v.lease().lease.clone();
    assert_eq!(lease.provider.to_string(), provider, "{v:?}");
    let st = &v.lease().status;
    assert!(st.ready, "{v:?}");
    let uri = st.uris.first().expect("a URI").uri.clone();
    assert!(http_get(&uri).contains("Hello from a Pazar lease"));

    // Logs through the CLI.
    let lease_id = lease.to_string();
    let out = net.cli_raw(&["lease", "logs", &lease_id, "--from", "alice", "--tail", "20"], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("serving on :8080"), "{text}");

    // Kill the daemon mid-lease and start it again: the lease is adopted, not dropped.
    drop(daemon);
    let daemon = start_daemon(home, &config, &log);
    let t0 = Instant::now();
    loop {
        let out = net.cli_raw(&["lease", "status", &lease_id, "--from", "alice"], &[]);
        if out.status.success() {
            let s: LeaseStatus = serde_json::from_slice(&out.stdout).expect("a lease status");
            if s.ready {
                assert_eq!(s.services[0].restarts, 0, "{s:?}");
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "lease not served after the restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(http_get(&uri).contains("Hello"));
    assert!(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("restored lease"));

    // The escrow pays the provider, and the daemon withdraws on its own.
    let uusd: Denom = "uusd".parse().expect("denom");
    let provider_addr = lease.provider;
    let bal = || {
        net.rpc()
            .balance(&provider_addr, &uusd, false)
            .expect("balance")
            .item
            .amount
    };
    let before = bal();
    let t0 = Instant::now();
    while bal() <= before {
        assert!(t0.elapsed() < Duration::from_secs(30), "no withdrawal");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The workload writes 300 MiB into its 256 MiB of ephemeral storage: where the storage
    // driver cannot cap the writable layer, the daemon evicts the replica and says so.
    let container = format!("{}-web-0", LeaseRef::new(lease.clone()).name());
    let out = Command::new("docker")
        .args([
            "exec",
            &container,
            "/bin/sh",
            "-c",
            "dd if=/dev/zero of=/fill bs=1M count=300",
        ])
        .output()
        .expect("docker exec");
    if engine_evicts() {
        let t0 = Instant::now();
        loop {
            let out = net.cli_raw(&["lease", "status", &lease_id, "--from", "alice"], &[]);
            let s: Option<LeaseStatus> = serde_json::from_slice(&out.stdout).ok();
            if let Some(s) = s.as_ref().filter(|s| s.ready && s.services[0].evictions == 1) {
                let why = s.services[0].last_eviction.as_deref().unwrap_or("");
                assert!(why.contains("268435456 bytes of ephemeral storage"), "{s:?}");
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(30), "no eviction: {s:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(http_get(&uri).contains("Hello"), "serves again after the eviction");
    } else {
        assert!(!out.status.success(), "the storage driver caps the writable layer");
    }

    // Closing the lease removes its workload.
    close_and_wait_removed(&net, &lease);
    drop(daemon);
}

/// Whether this engine's storage driver leaves ephemeral storage to eviction.
fn engine_evicts() -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        DockerRuntime::connect(DockerOptions::default())
            .await
            .expect("docker")
            .evicts()
    })
}

/// Waits (20 s at most) until nothing of the lease is left on the engine.
pub(crate) fn wait_removed(lease: &BidId, why: &str) {
    let name = LeaseRef::new(lease.clone()).name();
    let t0 = Instant::now();
    while lease_present(&name) {
        assert!(t0.elapsed() < Duration::from_secs(20), "workload left running {why}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The tenant closes the lease; the daemon removes its workload.
fn close_and_wait_removed(net: &common::Devnet, lease: &BidId) {
    net.close_lease(lease, "alice");
    wait_removed(lease, "after the lease closed");
}

/// `pazar deploy` taking the first bid.
fn deploy(net: &common::Devnet, sdl: &Path, dseq: &str, extra: &[&str]) -> common::Deployed {
    let file = sdl.to_str().expect("utf8");
    let mut args = vec![file, "--from", "alice", "--dseq", dseq, "--bid-window-s", "0"];
    args.extend_from_slice(extra);
    net.deploy(&args)
}

/// An expensive provider that sells persistent storage: 0.5 CPU costs 100,000 uusd per block.
pub(crate) const EXPENSIVE: &str = "[pricing]\ncpu_milli = \"200\"\nmemory_gib = \"0\"\nstorage_gib = \"0\"\npersistent_gib = \"0\"\n\
                         endpoint = \"0\"\nleased_ip = \"0\"\n[attributes]\n\"capabilities/storage/1/class\" = \"beta2\"\n\
                         \"capabilities/storage/1/persistent\" = \"true\"\n";

/// The demo image with half a CPU at most 200,000 uusd per block and a persistent volume at
/// /data.
pub(crate) fn volume_sdl(dir: &Path) -> std::path::PathBuf {
    let sdl = dir.join("deploy.yaml");
    std::fs::write(
        &sdl,
        format!(
            "version: \"2.0\"\nservices:\n  web:\n    image: {IMAGE}\n    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]\n    \
             params:\n      storage:\n        data: {{mount: /data}}\nprofiles:\n  compute:\n    web:\n      resources:\n        \
             cpu: {{units: 0.5}}\n        memory: {{size: 128Mi}}\n        storage:\n          - size: 256Mi\n          \
             - name: data\n            size: 64Mi\n            attributes: {{persistent: true, class: beta2}}\n  placement:\n    \
             local: {{pricing: {{web: {{denom: uusd, amount: 200000}}}}}}\ndeployment:\n  web: {{local: {{profile: web, count: 1}}}}\n"
        ),
    )
    .expect("sdl");
    sdl
}

/// `docker exec CONTAINER sh -c SCRIPT`: success and standard output.
pub(crate) fn exec(container: &str, script: &str) -> (bool, String) {
    let out = Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", script])
        .output()
        .expect("docker exec");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the engine runs the container (`None`: there is no such container).
fn container_runs(name: &str) -> Option<bool> {
    let out = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Running}}", name])
        .output()
        .expect("docker inspect");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim() == "true")
}

/// The Docker volumes labelled with the lease's id.
pub(crate) fn lease_volumes(lease: &BidId) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=pazar.lease-id={}", LeaseRef::new(lease.clone()).label()),
        ])
        .output()
        .expect("docker volume ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Polls the ledger (every 100 ms, `secs` at most) until the lease's state is `want`.
fn wait_lease_state(net: &common::Devnet, lease: &BidId, want: LeaseState, secs: u64) -> pazar_types::records::Lease {
    let t0 = Instant::now();
    loop {
        let l = net.rpc().lease(lease, false).expect("lease").item.lease;
        if l.state == want {
            return l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "the lease is not {want:?}: {l:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_lease_whose_escrow_runs_dry_stops_in_grace_and_a_deposit_resumes_it_on_the_same_volume() {
    build_image();
    // 80 blocks of grace: 20 s at 250 ms a block.
    let net = common::devnet_with(250, &["--grace-blocks", "80"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, log) = provider_with(&net, dir.path(), EXPENSIVE);
    let sdl = volume_sdl(dir.path());
    // 4,000,000 uusd at 100,000 per block: about 40 blocks (10 s) of service.
    let v = deploy(&net, &sdl, "81", &["--deposit", "4000000uusd"]);
    let lease = v.lease().lease.clone();
    let lease_id = lease.to_string();
    let container = format!("{}-web-0", LeaseRef::new(lease.clone()).name());
    let (ok, _) = exec(&container, "echo written-before-the-grace > /data/mark");
    assert!(ok, "the workload writes into its volume");
    let volumes = lease_volumes(&lease);
    assert_eq!(volumes.len(), 1, "{volumes:?}");

    // The escrow runs dry: the lease is in grace, its container stopped, its volume kept.
    let l = wait_lease_state(&net, &lease, LeaseState::Grace, 60);
    let until = l.grace_until.expect("a lease in grace says until when");
    let t0 = Instant::now();
    while container_runs(&container) != Some(false) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the container still runs in grace: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_after = t0.elapsed();
    assert_eq!(lease_volumes(&lease), volumes, "the volume is kept in grace");
    let status = net.lease_status(&lease, "alice");
    assert_eq!(status.grace_until, Some(until), "{status:?}");
    assert!(!status.ready, "{status:?}");
    // A manifest sent now is refused, and the refusal says what to do.
    let out = net.cli_raw(&["lease", "send-manifest", &lease_id, "--from", "alice"], &[]);
    let e = common::cli_error(&out);
    assert_eq!(e.code, ErrorCode::LeaseInGrace.as_str(), "{e:?}");
    assert!(e.message.contains("grace") && e.message.contains("deposit"), "{e:?}");
    assert_eq!(
        container_runs(&container),
        Some(false),
        "the refused manifest started nothing"
    );

    // A deposit within the grace resumes the lease; the workload runs again on its volume.
    let (height, _) = net.tx_ok(&["deployment", "deposit", "81", "20000000uusd", "--from", "alice"]);
    assert!(
        height <= until,
        "the deposit came within the grace ({height} > {until})"
    );
    wait_lease_state(&net, &lease, LeaseState::Active, 10);
    let t0 = Instant::now();
    let status = loop {
        let s = net.lease_status(&lease, "alice");
        if s.ready {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not serving again: {s:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let resumed_after = t0.elapsed();
    assert_eq!(status.grace_until, None, "{status:?}");
    assert!(http_get(&status.uris[0].uri).contains("Hello"), "serves again");
    let (ok, out) = exec(&container, "cat /data/mark");
    assert!(
        ok && out.contains("written-before-the-grace"),
        "the data is still there: {out:?}"
    );
    assert_eq!(lease_volumes(&lease), volumes, "on the same volume");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("is in grace until height") && text.contains("resumed"),
        "{text}"
    );
    eprintln!("stopped {stopped_after:?} after grace was seen; served again {resumed_after:?} after the deposit");

    close_and_wait_removed(&net, &lease);
    assert!(lease_volumes(&lease).is_empty(), "closing removes the volume");
}

#[test]
fn without_a_deposit_the_lease_closes_after_its_grace_and_the_workload_and_volume_are_removed() {
    build_image();
    // 20 blocks of grace: 5 s.
    let net = common::devnet_with(250, &["--grace-blocks", "20"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, _log) = provider_with(&net, dir.path(), EXPENSIVE);
    let sdl = volume_sdl(dir.path());
    // 2,000,000 uusd at 100,000 per block: about 20 blocks (5 s) of service.
    let v = deploy(&net, &sdl, "80", &["--deposit", "2000000uusd"]);
    let lease = v.lease().lease.clone();
    assert!(
        lease_present(&LeaseRef::new(lease.clone()).name()),
        "the workload runs first"
    );
    assert_eq!(lease_volumes(&lease).len(), 1, "with its volume");
    let grace = wait_lease_state(&net, &lease, LeaseState::Grace, 60);
    let until = grace.grace_until.expect("until");
    let l = wait_lease_state(&net, &lease, LeaseState::InsufficientFunds, 30);
    assert_eq!(l.reason, Some(LeaseCloseReason::InsufficientFunds), "{l:?}");
    assert!(net.height() >= until, "closed only at the end of the grace");
    wait_removed(&lease, "after the grace ran out");
    let t0 = Instant::now();
    while !lease_volumes(&lease).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(20), "the volume is left");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deployment = DeploymentId {
        owner: lease.owner,
        dseq: 80,
    };
    let escrow = net.rpc().escrow(&deployment, false).expect("escrow").item;
    assert_eq!(escrow.view.map(|v| v.balance), Some(0), "{:?}", escrow.account);
}

#[test]
fn a_taken_port_and_a_machine_too_small_for_two_leases_get_clear_answers() {
    build_image();
    let net = common::devnet(250);
    let home = net.home.path();
    let dir = tempfile::tempdir().expect("tempdir");

    // The endpoint's port is taken: the daemon stops at once and says so.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let config = dir.path().join("taken.toml");
    std::fs::write(&config, format!("listen = \"127.0.0.1:{port}\"\n")).expect("config");
    let out = Command::new(common::bin())
        .args(["provider", "run", "--from", "provider", "--config"])
        .arg(&config)
        .arg("--home")
        .arg(home)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve the tenant endpoint on 127.0.0.1:{port}")),
        "{err}"
    );
    drop(taken);

    // A provider selling one CPU: the first 0.75-CPU deployment is leased, the second gets no bid
    // and the daemon says which resource is short.
    let (_daemon, log) = provider_with(&net, dir.path(), "[capacity]\ncpu_millis = 1000\n");
    let sdl = web_sdl(dir.path(), "0.75", 10_000);
    let first = deploy(&net, &sdl, "90", &[]);
    let file = sdl.to_str().expect("utf8");
    assert!(first.lease().status.ready, "{first:?}");
    let out = net.cli_raw(
        &[
            "deploy",
            file,
            "--from",
            "alice",
            "--dseq",
            "91",
            "--bid-timeout-s",
            "3",
        ],
        &[],
    );
    let e = common::cli_error(&out);
    assert_eq!(e.code, "no_bids", "a second lease did not fit: {e:?}");
    assert!(e.message.contains("why-no-bids"), "{e:?}");
    let t0 = Instant::now();
    loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if l.contains("/91/1/1: needs 750 millicores of CPU; the provider has 250 free") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "daemon log does not name the shortage:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    close_and_wait_removed(&net, &first.lease().lease);
}

#[test]
fn a_pricing_script_sets_the_bid_price() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("price.sh");
    // Reads the order (JSON on stdin) and asks 777 per block for the group.
    std::fs::write(
        &script,
        "#!/bin/sh\ngrep -q '\"cpu_millis\":500' && echo 777 || exit 1\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let (_daemon, _log) = provider_with(
        &net,
        dir.path(),
        &format!("pricing_script = \"{}\"\n", script.display()),
    );
    let sdl = web_sdl(dir.path(), "0.5", 1000);
    let v = deploy(&net, &sdl, "95", &[]);
    assert_eq!(v.lease().price.amount, "777".parse().expect("a price"), "{v:?}");
    close_and_wait_removed(&net, &v.lease().lease);
}

/// The first flight of a real TLS client (rustls) for `server_name`.
fn client_hello(server_name: &str) -> Vec<u8> {
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("name");
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("ClientHello");
    hello
}

/// Sends `bytes` to the TLS ingress on `port` and reads `want` bytes back.
fn tls_exchange(port: u16, bytes: &[u8], want: usize) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the TLS ingress listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(bytes).expect("send");
    let mut got = vec![0u8; want];
    s.read_exact(&mut got).expect("an answer");
    got
}

/// Sends one HTTP/1.1 request with `host` to the ingress on `port`; the whole answer.
fn ingress_get(port: u16, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the ingress listens");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_ingress_serves_http_and_passes_tls_through_by_host_name_and_refuses_a_host_another_lease_holds() {
    build_image();
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_daemon, _log) = provider_with(
        &net,
        dir.path(),
        "[ingress]\nlisten = \"127.0.0.1:0\"\ntls_listen = \"127.0.0.1:0\"\ndomain = \"ingress.test\"\n",
    );
    // `web` serves HTTP; `echo` stands for a service that terminates its own TLS: it sends
    // back every byte, so the test sees exactly what the ingress passed through.
    let sdl = dir.path().join("deploy.yaml");
    std::fs::write(
        &sdl,
        format!(
            r#"version: "2.0"
services:
  web:
    image: {IMAGE}
    expose:
      - port: 8080
        as: 80
        accept: [shop.example.com]
        to: [{{global: true}}]
  echo:
    image: {IMAGE}
    command: [/bin/sh, -c]
    args: ["busybox nc -ll -p 8443 -e busybox cat"]
    expose:
      - port: 8443
        as: 443
        accept: [shop.example.com]
        to: [{{global: true}}]
profiles:
  compute:
    small: {{resources: {{cpu: {{units: 0.25}}, memory: {{size: 128Mi}}, storage: {{size: 256Mi}}}}}}
  placement:
    local: {{pricing: {{small: {{denom: uusd, amount: 10000}}}}}}
deployment:
  web: {{local: {{profile: small, count: 1}}}}
  echo: {{local: {{profile: small, count: 1}}}}
"#
        ),
    )
    .expect("sdl");
    let v = deploy(&net, &sdl, "100", &[]);
    let lease = v.lease().lease.clone();
    let lease_id = lease.to_string();
    let ingress: Vec<String> = v
        .lease()
        .status
        .uris
        .iter()
        .filter(|u| u.ingress)
        .map(|u| u.uri.clone())
        .collect();
    let find = |prefix: &str| {
        ingress
            .iter()
            .find_map(|u| u.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix}… in {ingress:?}"))
            .to_string()
    };
    assert_eq!(
        ingress.len(),
        4,
        "made-up names and the accepted host, HTTP and TLS: {v:?}"
    );
    let made = format!(
        "{}:",
        pazar_runtime::ingress::generated_host(&LeaseRef::new(lease.clone()), "web", "ingress.test")
    );
    let port: u16 = find(&format!("http://{made}")).parse().expect("port");
    let host = made.trim_end_matches(':');
    let tls_port: u16 = find("https://shop.example.com:").parse().expect("tls port");
    assert_eq!(find("http://shop.example.com:"), port.to_string());
    find(&format!(
        "https://{}:",
        pazar_runtime::ingress::generated_host(&LeaseRef::new(lease.clone()), "echo", "ingress.test")
    ));

    // TLS: a real ClientHello for shop.example.com reaches `echo` untouched and comes back.
    let hello = client_hello("shop.example.com");
    assert_eq!(
        tls_exchange(tls_port, &hello, hello.len()),
        hello,
        "passed through byte for byte"
    );
    // A name no lease serves gets a TLS alert, unrecognized_name (112), not a bare EOF.
    let alert = tls_exchange(tls_port, &client_hello("nobody.ingress.test"), 7);
    assert_eq!(alert, [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112]);

    let page = ingress_get(port, host);
    assert!(page.contains("Hello from a Pazar lease"), "{page}");
    let page = ingress_get(port, &format!("SHOP.example.com:{port}"));
    assert!(page.contains("Hello from a Pazar lease"), "{page}");
    let page = ingress_get(port, "nobody.ingress.test");
    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
    assert!(
        page.contains("no lease on this provider serves \"nobody.ingress.test\""),
        "{page}"
    );

    // Another deployment accepting the same host: the provider refuses its manifest, saying why.
    let out = net.cli_raw(
        &[
            "deploy",
            sdl.to_str().expect("utf8"),
            "--from",
            "alice",
            "--dseq",
            "101",
            "--bid-window-s",
            "0",
        ],
        &[],
    );
    let e = common::cli_error(&out);
    assert_eq!(
        e.code,
        ErrorCode::HostTaken.as_str(),
        "the second manifest was taken: {e:?}"
    );
    assert!(
        e.message.contains(&format!(
            "accepts host \"shop.example.com\", which lease {lease_id} already serves"
        )),
        "{e:?}"
    );
    assert!(
        ingress_get(port, "shop.example.com").contains("Hello"),
        "the first lease keeps it"
    );

    close_and_wait_removed(&net, &lease);
    let page = ingress_get(port, host);
    assert!(
        page.starts_with("HTTP/1.1 404") || page.starts_with("HTTP/1.1 502"),
        "{page}"
    );
}
