//! Attacks of class `lease_identity` (see mod.rs), Docker runtime: a tenant chooses its lease's
//! dseq, so a lease name made of a few bits of the id's hash could be ground until it equals
//! another tenant's, and whatever is kept under that name (containers, network, volumes, kept
//! logs, firewall rules) would be adopted, reused or removed as the other lease's. Names now
//! carry the whole SHA-256 of the id, and only the bridge interface keeps 48 bits (the kernel
//! allows 15 bytes); so the attacks below plant what a collision would leave — another lease's
//! network on the victim's bridge name, another lease's container under the victim's container
//! name — and show each refused without touching the other lease's objects.

use std::process::Command;

use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::firewall::{self, EgressPolicy};
use pazar_runtime::images::ImagePolicy;
use pazar_runtime::{LeaseRef, Runtime};

use super::egress::{demo_group, lease_of, wait_running};

const IMAGE: &str = "pazar-demo:identity";

async fn runtime() -> DockerRuntime {
    let rt = DockerRuntime::connect(DockerOptions {
        images: ImagePolicy::allowing(["pazar-demo:*"]).expect("policy"),
        ..DockerOptions::default()
    })
    .await
    .expect("this machine has a Docker engine");
    build_demo_image(rt.docker(), IMAGE).await.expect("demo image");
    rt
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker runs");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn exists(kind: &str, name: &str) -> bool {
    Command::new("docker")
        .args([kind, "inspect", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Labels as the runtime puts them on `holder`'s objects.
fn labels(holder: &LeaseRef) -> Vec<String> {
    vec![
        "--label".into(),
        format!("pazar.lease={}", holder.name()),
        "--label".into(),
        format!("pazar.lease-id={}", holder.label()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_of_a_lease_is_named_after_the_whole_hash_of_its_id() {
    let rt = runtime().await;
    let (l, g) = (lease_of(0x11), demo_group(IMAGE, 2));
    rt.deploy(&l, &g).await.expect("deploys");
    wait_running(&rt, &l, &g).await;
    assert_eq!(l.name().len(), 3 + 64, "pz- and the 64 hex digits of SHA-256");
    let filter = format!("label=pazar.lease-id={}", l.label());
    let containers = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    let networks = docker(&["network", "ls", "--filter", &filter, "--format", "{{.Name}}"]);
    let names: Vec<&str> = containers.lines().chain(networks.lines()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with(&l.name())), "{names:?}");
    let bridge = docker(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        &l.name(),
    ]);
    assert_eq!(bridge, l.short_name(), "only the bridge interface has the short name");
    rt.close(&l).await.expect("closes");
    assert!(!exists("network", &l.name()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_bridge_name_another_lease_holds_is_refused_and_leaves_the_holder_alone() {
    let rt = runtime().await;
    let (victim, holder) = (lease_of(0x12), lease_of(0x13));
    let iface = victim.short_name();
    // What a ground collision of the 48-bit bridge name leaves: the holder's network on the
    // victim's bridge interface, with its firewall rules.
    let mut args = vec!["network", "create", "-o"];
    let bridge_opt = format!("com.docker.network.bridge.name={iface}");
    args.push(&bridge_opt);
    let lab = labels(&holder);
    args.extend(lab.iter().map(String::as_str));
    let holder_net = holder.name();
    args.push(&holder_net);
    docker(&args);
    firewall::isolate(&iface, &EgressPolicy::default()).expect("the holder's rules");

    let err = rt.deploy(&victim, &demo_group(IMAGE, 1)).await.expect_err("refused");
    let msg = err.to_string();
    // Whatever else happens, the planted objects go at the end.
    let cleanup = || {
        let _ = firewall::release(&iface);
        let _ = Command::new("docker").args(["network", "rm", &holder_net]).output();
    };
    let outcome = std::panic::catch_unwind(|| {
        assert!(
            msg.contains(&format!("host interface name {iface}")) && msg.contains("another"),
            "{msg}"
        );
        assert!(
            !msg.contains(&holder.label()),
            "the other lease is not named to the tenant: {msg}"
        );
        assert!(!exists("network", &victim.name()), "no network made for the victim");
    });
    if let Err(panic) = outcome {
        cleanup();
        std::panic::resume_unwind(panic);
    }
    // The victim's lease ends: its close removes nothing of the holder's.
    rt.close(&victim).await.expect("closes");
    let held = exists("network", &holder_net);
    let rules = firewall::isolated_interfaces().contains(&iface);
    // A daemon restart's sweep keeps them too: a network holds the bridge.
    let swept = rt.sweep_firewall().await.expect("sweep");
    let rules_after_sweep = firewall::isolated_interfaces().contains(&iface);
    cleanup();
    assert!(held, "the holder's network survives the victim's close");
    assert!(rules, "the holder's firewall rules survive the victim's close");
    assert!(
        rules_after_sweep,
        "the sweep keeps rules of a held bridge ({swept} swept)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_under_a_lease_name_with_another_lease_id_is_neither_adopted_nor_removed() {
    let rt = runtime().await;
    let (victim, other) = (lease_of(0x14), lease_of(0x15));
    let name = format!("{}-web-0", victim.name());
    let mut args = vec!["create", "--name", &name];
    let lab = labels(&other);
    args.extend(lab.iter().map(String::as_str));
    args.extend(["--entrypoint", "/bin/sh", IMAGE, "-c", "sleep 600"]);
    docker(&args);

    let err = rt.deploy(&victim, &demo_group(IMAGE, 1)).await.expect_err("refused");
    let msg = err.to_string();
    // Neither the lease's status nor the ingress's way in reports or reaches it as the victim's.
    let status = rt
        .status(&victim, &demo_group(IMAGE, 1))
        .await
        .map(|s| s.services[0].state);
    let dial = rt.dial(&victim, "web", 0, 8080).await.map(|_| ());
    rt.close(&victim).await.expect("closes");
    let kept = exists("container", &name);
    let _ = Command::new("docker").args(["rm", "-f", &name]).output();
    let refused = format!("container {name} does not belong to lease {}", victim.label());
    assert!(msg.contains(&refused), "{msg}");
    assert!(kept, "closing the victim's lease leaves the other lease's container");
    assert!(
        matches!(&status, Err(e) if e.to_string().contains(&refused)),
        "{status:?}"
    );
    assert!(matches!(&dial, Err(e) if e.to_string().contains(&refused)), "{dial:?}");
}
