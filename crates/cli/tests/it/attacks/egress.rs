//! Attacks of class `egress` (see mod.rs): a workload reaches past the internet into what sits
//! beside the provider. From inside a running container of a real lease on the Docker engine it
//! connects to the cloud's metadata service (169.254.169.254, on a "LAN" host behind the
//! provider), to a private address of the provider's LAN, to the ECS-style credentials address
//! 169.254.170.2 on a host interface, and to the provider host itself (its gateway on the lease
//! bridge, its LAN address); every listener counts its connections and none may see one. The
//! controls use the same path: the lease's other replica, a range the operator allows in
//! `[egress] allow`, and a public-route address on the same LAN host are all reached, so the
//! refusals are the firewall's and not the routing's. Closing the lease removes its rules, and
//! rules left by a crash are swept at start.

use std::net::TcpListener;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::firewall::{self, EgressPolicy};
use pazar_runtime::images::ImagePolicy;
use pazar_runtime::{LeaseRef, Runtime};
use pazar_types::market::BidId;
use pazar_types::{Address, Denom};

const IMAGE: &str = "pazar-demo:egress";

/// The provider's "LAN": a network namespace behind a veth pair, with a metadata address, a
/// private host, an address in a range the operator allows, and a public-route address; the
/// host's side of the link also has a link-local address. Removed when dropped.
struct Lan {
    ns: String,
    veth: String,
    routes: Vec<&'static str>,
}

const LAN_HOST: &str = "10.99.0.2";
const ALLOWED_HOST: &str = "10.99.1.2";
const METADATA: &str = "169.254.169.254";
const PUBLIC_HOST: &str = "203.0.113.7";
const HOST_LINK_LOCAL: &str = "169.254.170.2";

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Lan {
    fn new() -> Lan {
        let id = std::process::id() % 100_000;
        let lan = Lan {
            ns: format!("pzt-lan-{id}"),
            veth: format!("pztv{id}"),
            routes: vec!["10.99.1.0/24", "169.254.169.254/32", "203.0.113.7/32"],
        };
        lan.remove();
        let peer = format!("pztp{id}");
        ip(&["netns", "add", &lan.ns]);
        ip(&["link", "add", &lan.veth, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", &peer, "netns", &lan.ns]);
        ip(&["addr", "add", "10.99.0.1/24", "dev", &lan.veth]);
        ip(&["link", "set", &lan.veth, "up"]);
        for a in ["10.99.0.2/24", "10.99.1.2/24", "169.254.169.254/32", "203.0.113.7/32"] {
            ip(&["-n", &lan.ns, "addr", "add", a, "dev", &peer]);
        }
        ip(&["-n", &lan.ns, "link", "set", &peer, "up"]);
        ip(&["-n", &lan.ns, "link", "set", "lo", "up"]);
        ip(&["-n", &lan.ns, "route", "add", "default", "via", "10.99.0.1"]);
        for r in &lan.routes {
            ip(&["route", "add", r, "via", LAN_HOST]);
        }
        // The host's own link-local address, on its side of the LAN link.
        ip(&["addr", "add", &format!("{HOST_LINK_LOCAL}/32"), "dev", &lan.veth]);
        lan
    }

    fn remove(&self) {
        for r in &self.routes {
            let _ = Command::new("ip").args(["route", "del", r]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }

    /// A listener on `addr:80` inside the LAN namespace.
    fn listen(&self, addr: &str) -> Counter {
        let addr = addr.to_string();
        let l = pazar_runtime::netns::run_in(&self.ns, move || TcpListener::bind((addr.as_str(), 80)))
            .expect("enter the LAN namespace")
            .expect("bind in the LAN namespace");
        Counter::serve(l)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A listener that answers `reached` and counts the connections it accepted.
#[derive(Clone)]
struct Counter {
    port: u16,
    hits: Arc<AtomicUsize>,
}

impl Counter {
    fn serve(l: TcpListener) -> Counter {
        let port = l.local_addr().expect("addr").port();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            for mut s in l.incoming().flatten() {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 8\r\n\r\nreached\n");
            }
        });
        Counter { port, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A lease id no other test run uses (`tag` tells apart the tenants of one test).
pub(super) fn lease_of(tag: u8) -> LeaseRef {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    LeaseRef::new(BidId {
        owner: Address::Native([tag; 20]),
        dseq: nanos,
        gseq: 1,
        oseq: 1,
        provider: Address::Native([9; 20]),
    })
}

fn lease() -> LeaseRef {
    lease_of(0xe9)
}

fn group() -> pazar_sdl::ValidGroup {
    demo_group(IMAGE, 2)
}

/// One service `web` of `image` serving on port 8080 (the demo image's), `count` replicas.
pub(super) fn demo_group(image: &str, count: u32) -> pazar_sdl::ValidGroup {
    let sdl = format!(
        r#"
version: "2.0"
services:
  web:
    image: {image}
    expose: [{{port: 8080, to: [{{global: true}}]}}]
profiles:
  compute:
    web: {{resources: {{cpu: {{units: 0.25}}, memory: {{size: 128Mi}}, storage: {{size: 64Mi}}}}}}
  placement:
    local: {{pricing: {{web: {{denom: uusd, amount: 100}}}}}}
deployment:
  web: {{local: {{profile: web, count: {count}}}}}
"#
    );
    let opts = pazar_sdl::Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
    let d = pazar_sdl::parse(sdl.as_bytes(), &opts).expect("valid sdl");
    pazar_sdl::ValidGroup::new(d.manifest.groups.into_iter().next().expect("group")).expect("valid group")
}

/// `sh -c script` in the container: (exit code, output).
pub(super) fn exec(container: &str, script: &str) -> (i32, String) {
    let out = Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", script])
        .output()
        .expect("docker exec runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// An HTTP GET from inside the container: whether the listener's answer came back. (`nc`, as
/// the static busybox's `wget` needs name-service files the demo image does not have.)
fn fetch(container: &str, host: &str, port: u16) -> (bool, String) {
    let (_, out) = exec(
        container,
        &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port} 2>&1; echo rc=$?"),
    );
    (out.contains("reached") || out.contains("Hello"), out)
}

/// The replica's address on the lease network, and its gateway (the host).
fn addresses(container: &str) -> (String, String) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{.Gateway}}{{end}}",
            container,
        ])
        .output()
        .expect("docker inspect runs");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (a, g) = text
        .split_once(' ')
        .unwrap_or_else(|| panic!("addresses of {container}: {text:?}"));
    (a.to_string(), g.to_string())
}

/// This host's first global IPv4 address that is neither Docker's nor this test's.
fn host_lan_address() -> Option<String> {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "scope", "global"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        let dev = *words.get(1)?;
        let skip = ["docker", "br-", "pz", "veth"].iter().any(|p| dev.starts_with(p));
        let addr = words.get(3)?.split('/').next()?;
        (!skip).then(|| addr.to_string())
    })
}

pub(super) async fn wait_running(rt: &DockerRuntime, l: &LeaseRef, g: &pazar_sdl::ValidGroup) {
    let t0 = Instant::now();
    while !rt.status(l, g).await.map(|s| s.all_running()).unwrap_or(false) {
        assert!(t0.elapsed() < Duration::from_secs(60), "the lease did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn runtime() -> DockerRuntime {
    let rt = DockerRuntime::connect(DockerOptions {
        images: ImagePolicy::allowing(["pazar-demo:*"]).expect("policy"),
        egress: EgressPolicy {
            allow: vec!["10.99.1.0/24".parse().expect("cidr")],
            resolvers: Vec::new(),
        },
        ..DockerOptions::default()
    })
    .await
    .expect("this machine has a Docker engine");
    build_demo_image(rt.docker(), IMAGE).await.expect("demo image");
    rt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_reaches_neither_metadata_nor_the_lan_nor_the_host_but_its_peers_and_allowed_ranges() {
    let lan = Lan::new();
    let rt = runtime().await;
    let (l, g) = (lease(), group());
    rt.deploy(&l, &g).await.expect("deploys");
    let outcome = tokio::spawn(attack(
        l.clone(),
        g.clone(),
        lan.listen(METADATA),
        lan.listen(LAN_HOST),
        lan.listen(ALLOWED_HOST),
        lan.listen(PUBLIC_HOST),
    ))
    .await;
    rt.close(&l).await.expect("closes");
    let iface = l.short_name();
    assert!(
        !firewall::isolated_interfaces().contains(&iface),
        "closing the lease removes its rules"
    );
    drop(lan);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn attack(
    l: LeaseRef,
    g: pazar_sdl::ValidGroup,
    metadata: Counter,
    private: Counter,
    allowed: Counter,
    public: Counter,
) {
    let rt = runtime().await;
    wait_running(&rt, &l, &g).await;
    let c0 = format!("{}-web-0", l.name());
    let c1 = format!("{}-web-1", l.name());
    let (peer_ip, gateway) = addresses(&c1);

    // The host: a listener on every address, and a link-local one on a host interface.
    let host = Counter::serve(TcpListener::bind("0.0.0.0:0").expect("bind"));
    let host_ll = Counter::serve(TcpListener::bind((HOST_LINK_LOCAL, 80)).expect("bind link-local"));

    // Controls first: the path works where the rules allow it.
    let (ok, out) = fetch(&c0, &peer_ip, 8080);
    assert!(ok, "a replica reaches its lease's other replica: {out}");
    let (ok, out) = fetch(&c0, ALLOWED_HOST, 80);
    assert!(
        ok && allowed.hits() == 1,
        "the operator's allowed range is reached: {out}"
    );
    let (ok, out) = fetch(&c0, PUBLIC_HOST, 80);
    assert!(ok && public.hits() == 1, "a public-route address is reached: {out}");

    // The attacks.
    let mut targets = vec![
        ("cloud metadata", METADATA.to_string(), 80, metadata.clone()),
        ("a private LAN host", LAN_HOST.to_string(), 80, private.clone()),
        (
            "a link-local address of the host",
            HOST_LINK_LOCAL.to_string(),
            80,
            host_ll.clone(),
        ),
        (
            "the host through the lease's gateway",
            gateway.clone(),
            host.port,
            host.clone(),
        ),
    ];
    if let Some(a) = host_lan_address() {
        targets.push(("the host's LAN address", a, host.port, host.clone()));
    }
    for (what, addr, port, counter) in &targets {
        let before = counter.hits();
        let (ok, out) = fetch(&c0, addr, *port);
        assert!(!ok, "the workload reached {what} at {addr}:{port}: {out}");
        assert_eq!(counter.hits(), before, "{what} saw a connection: {out}");
    }

    // IPv6: the rules are there for the bridge in both families, and a workload that has a
    // link-local IPv6 address cannot reach the host through it.
    let listing = firewall::listing(&l.short_name()).expect("listing");
    for needle in [
        "-d 169.254.0.0/16 -j REJECT",
        "-d 10.99.1.0/24 -j RETURN",
        "-d fc00::/7 -j REJECT",
        "-d fe80::/10 -j REJECT",
    ] {
        assert!(listing.contains(needle), "{needle} missing from\n{listing}");
    }
    assert!(
        !listing.contains("203.0.113"),
        "no rule names a public address:\n{listing}"
    );
    let (_, v6) = exec(&c0, "cat /proc/net/if_inet6 2>/dev/null");
    if v6.lines().any(|l| l.contains("eth0")) {
        let host6 = Counter::serve(TcpListener::bind("[::]:0").expect("bind v6"));
        let gw6 = Command::new("ip")
            .args(["-o", "-6", "addr", "show", "dev", &l.short_name(), "scope", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        if let Some(addr) = gw6.split_whitespace().skip_while(|w| *w != "inet6").nth(1) {
            let addr = addr.split('/').next().unwrap_or(addr);
            let (_, out) = exec(
                &c0,
                &format!("nc -w 3 {addr}%eth0 {} </dev/null; echo rc=$?", host6.port),
            );
            assert_eq!(
                host6.hits(),
                0,
                "the workload reached the host over link-local IPv6: {out}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_left_by_a_crash_are_swept_at_start() {
    let rt = runtime().await;
    // A bridge name no network holds, as after a crash between removing a lease's network
    // and its rules.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    let iface = format!("pz-{:012x}", nanos & 0xffff_ffff_ffff);
    firewall::isolate(&iface, &EgressPolicy::default()).expect("rules installed");
    assert!(firewall::isolated_interfaces().contains(&iface));
    let removed = rt.sweep_firewall().await.expect("sweep");
    assert!(removed >= 1, "{removed}");
    assert!(!firewall::isolated_interfaces().contains(&iface), "swept");
    let listing = firewall::listing(&iface).expect("listing");
    assert!(!listing.contains("-A"), "the egress chain is gone:\n{listing}");
}
