//! The Docker runtime on the real engine of this machine: a locally built image (no registry)
//! is deployed from a real SDL, serves HTTP on its published port, logs, reports status, and
//! closing removes every container, network and volume of the lease. A manifest update leaves
//! exactly the new group's containers and volumes, whatever the earlier manifests were. A
//! stopped lease keeps its containers and volume, stays stopped, and a deploy starts it again
//! on the same data.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common;

use futures_util::StreamExt;

use common::{docker, http_get, lease, IMAGE};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::{LeaseRef, Runtime, RuntimeError};

fn sdl(image: &str) -> String {
    format!(
        r#"
version: "2.0"
services:
  web:
    image: {image}
    env: [GREETING=hello-from-test]
    expose:
      - port: 8080
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data: {{mount: /data}}
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 0.25}}
        memory: {{size: 64Mi}}
        storage:
          - size: 64Mi
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local:
      pricing:
        web: {{denom: uusd, amount: 100}}
deployment:
  web:
    local: {{profile: web, count: 1}}
"#
    )
}

fn group(image: &str) -> pazar_sdl::ValidGroup {
    common::group(&sdl(image))
}

async fn leftovers(rt: &DockerRuntime, lease: &LeaseRef) -> Vec<String> {
    rt.leases()
        .await
        .expect("list")
        .into_iter()
        .filter(|(n, _)| *n == lease.name())
        .map(|(n, _)| n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_serves_logs_reports_status_and_closes_without_leftovers() {
    let rt = docker().await;
    let g = group(IMAGE);
    let l = lease(1);

    rt.deploy(&l, &g).await.expect("deploys");
    // Deploying again (a restarted daemon adopting its lease) changes nothing.
    rt.deploy(&l, &g).await.expect("idempotent");

    let t0 = Instant::now();
    let (status, body) = loop {
        let st = rt.status(&l, &g).await.expect("status");
        if st.all_running() {
            if let Some(f) = st.services[0].forwards.first() {
                if let Ok(body) = http_get(f.host_port) {
                    if body.contains("200 OK") {
                        break (st, body);
                    }
                }
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "not serving: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("Hello from a Pazar lease"), "{body}");
    assert!(body.contains("hello-from-test"), "env reaches the service: {body}");
    let svc = &status.services[0];
    assert_eq!((svc.name.as_str(), svc.replicas, svc.running), ("web", 1, 1));
    assert_eq!(svc.forwards[0].port, 8080);

    let lines: Vec<String> = rt
        .logs(&l, Some("web"), 100, false)
        .await
        .expect("logs")
        .filter_map(|l| async move { l.ok().map(|l| l.line) })
        .collect()
        .await;
    assert!(
        lines.iter().any(|l| l.contains("pazar demo: serving on :8080")),
        "{lines:?}"
    );
    assert!(
        matches!(
            rt.logs(&l, Some("nope"), 10, false).await,
            Err(RuntimeError::UnknownService(_))
        ),
        "an unknown service is named in the error"
    );

    assert_eq!(leftovers(&rt, &l).await, vec![l.name()]);
    rt.close(&l).await.expect("closes");
    assert!(leftovers(&rt, &l).await.is_empty(), "containers or network left behind");
    let vols = rt
        .docker()
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .expect("volumes");
    assert!(
        !vols
            .volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name.starts_with(&l.name())),
        "volume left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_does_not_exist_is_a_clear_error_and_leaves_nothing() {
    let rt = docker().await;
    let g = group("pazar-no-such-image:404");
    let l = lease(2);
    let err = rt.deploy(&l, &g).await.expect_err("no such image");
    let msg = err.to_string();
    assert!(
        msg.contains("pazar-no-such-image:404") && msg.contains("not available"),
        "{msg}"
    );
    assert!(leftovers(&rt, &l).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_service_reports_restarts_and_keeps_its_logs() {
    let rt = docker().await;
    let sdl = sdl(IMAGE).replace(
        "    env: [GREETING=hello-from-test]\n",
        "    command: [/bin/sh, -c]\n    args: [\"echo boom; exit 3\"]\n",
    );
    let g = common::group(&sdl);
    let l = lease(5);
    rt.deploy(&l, &g).await.expect("deploys");
    let t0 = Instant::now();
    let st = loop {
        let st = rt.status(&l, &g).await.expect("status");
        if st.services[0].restarts >= 2 {
            break st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no restarts: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!st.all_running());
    let lines: Vec<String> = rt
        .logs(&l, None, 100, false)
        .await
        .expect("logs")
        .filter_map(|l| async move { l.ok().map(|l| l.line) })
        .collect()
        .await;
    // The output of every run is kept across restarts.
    assert!(lines.iter().filter(|l| l.contains("boom")).count() >= 2, "{lines:?}");
    rt.close(&l).await.expect("close");
    assert!(leftovers(&rt, &l).await.is_empty());
}

/// One service `name` of `count` replicas of the demo image, with `env` and a persistent volume
/// `data`, on one leased unit of resources (what every manifest below fits).
fn unit_sdl(name: &str, count: u32, env: &str) -> String {
    format!(
        r#"
version: "2.0"
services:
  {name}:
    image: {IMAGE}
    env: [{env}]
    params:
      storage:
        data: {{mount: /data}}
profiles:
  compute:
    p:
      resources:
        cpu: {{units: 0.1}}
        memory: {{size: 32Mi}}
        storage:
          - size: 16Mi
          - name: data
            size: 16Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    dc: {{pricing: {{p: {{denom: uusd, amount: 1}}}}}}
deployment:
  {name}: {{dc: {{profile: p, count: {count}}}}}
"#
    )
}

/// Every container labelled with the lease's id, running or not: name to (id, start time).
async fn containers(rt: &DockerRuntime, l: &LeaseRef) -> BTreeMap<String, (String, String)> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![format!("pazar.lease-id={}", l.label())])]);
    let list = rt
        .docker()
        .list_containers(Some(bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let mut out = BTreeMap::new();
    for c in list {
        let name = c.names.expect("names")[0].trim_start_matches('/').to_string();
        let id = c.id.expect("id");
        let info = rt
            .docker()
            .inspect_container(&id, None::<bollard::query_parameters::InspectContainerOptions>)
            .await
            .expect("inspect");
        let started = info.state.and_then(|s| s.started_at).unwrap_or_default();
        out.insert(name, (id, started));
    }
    out
}

/// Every Docker volume labelled with the lease's id.
async fn volumes(rt: &DockerRuntime, l: &LeaseRef) -> BTreeSet<String> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![format!("pazar.lease-id={}", l.label())])]);
    let vols = rt
        .docker()
        .list_volumes(Some(bollard::query_parameters::ListVolumesOptions {
            filters: Some(filters),
        }))
        .await
        .expect("list volumes");
    vols.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect()
}

/// The volume files (`.ext4`) in the runtime's state directory.
fn volume_files(state: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(state.join("volumes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .into_string()
                .ok()?
                .strip_suffix(".ext4")
                .map(str::to_string)
        })
        .collect()
}

fn names(l: &LeaseRef, replicas: &[(&str, u32)]) -> BTreeSet<String> {
    replicas.iter().map(|(s, r)| format!("{}-{s}-{r}", l.name())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_leaves_exactly_the_new_groups_containers_and_volumes() {
    let state = tempfile::tempdir().expect("tempdir");
    let rt = Arc::new(
        common::docker_with(DockerOptions {
            state_dir: Some(state.path().to_path_buf()),
            ..common::options()
        })
        .await,
    );
    let l = lease(6);
    let steps = {
        let (rt, l, dir) = (rt.clone(), l.clone(), state.path().to_path_buf());
        tokio::spawn(async move { updates(&rt, &l, &dir).await }).await
    };
    rt.close(&l).await.expect("closes");
    if let Err(e) = steps {
        std::panic::resume_unwind(e.into_panic());
    }
    assert!(containers(&rt, &l).await.is_empty(), "a container outlives the lease");
    assert!(volumes(&rt, &l).await.is_empty(), "a volume outlives the lease");
    assert!(
        volume_files(state.path()).is_empty(),
        "a volume file outlives the lease"
    );
}

async fn updates(rt: &DockerRuntime, l: &LeaseRef, state: &std::path::Path) {
    let vol = |svc: &str| BTreeSet::from([format!("{}.{svc}.data", l.name())]);
    let deploy = |sdl: String| async move {
        rt.deploy(l, &common::group(&sdl)).await.expect("deploys");
        containers(rt, l).await
    };

    let first = deploy(unit_sdl("s0", 1, "V=1")).await;
    assert_eq!(first.keys().cloned().collect::<BTreeSet<_>>(), names(l, &[("s0", 0)]));
    assert_eq!(volumes(rt, l).await, vol("s0"));

    // The same manifest again (a restarted daemon adopting its lease) restarts nothing.
    assert_eq!(
        deploy(unit_sdl("s0", 1, "V=1")).await,
        first,
        "a redeploy touched a container"
    );

    // The one service renamed: the old one's container and volume go, file and all.
    let renamed = deploy(unit_sdl("s1", 1, "V=1")).await;
    assert_eq!(renamed.keys().cloned().collect::<BTreeSet<_>>(), names(l, &[("s1", 0)]));
    assert_eq!(volumes(rt, l).await, vol("s1"));
    assert_eq!(volume_files(state), vol("s1"));

    // Scaled up: the running replica stays as it is, one more is made.
    let scaled = deploy(unit_sdl("s1", 2, "V=1")).await;
    assert_eq!(
        scaled.keys().cloned().collect::<BTreeSet<_>>(),
        names(l, &[("s1", 0), ("s1", 1)])
    );
    assert_eq!(
        scaled[&format!("{}-s1-0", l.name())],
        renamed[&format!("{}-s1-0", l.name())]
    );

    // Scaled down with another environment: replica 1 goes, replica 0 is made again from the
    // new spec (it would otherwise go on running the old one).
    let changed = deploy(unit_sdl("s1", 1, "V=2")).await;
    assert_eq!(changed.keys().cloned().collect::<BTreeSet<_>>(), names(l, &[("s1", 0)]));
    let key = format!("{}-s1-0", l.name());
    assert_ne!(
        changed[&key].0, scaled[&key].0,
        "the replica still runs the old environment"
    );
    let (_, env) = common::exec(rt, &key, "echo \"V=$V\"").await;
    assert!(env.contains("V=2"), "{env}");
    assert_eq!(volumes(rt, l).await, vol("s1"), "a kept service keeps its volume");
}

struct Ledger {
    version: Mutex<pazar_types::Hash32>,
    group: pazar_types::market::GroupSpec,
}

impl pazar_provider::server::Chain for Ledger {
    fn lease(&self, _: &pazar_types::market::BidId) -> Result<Option<pazar_provider::server::LeaseFacts>, String> {
        Ok(Some(pazar_provider::server::LeaseFacts {
            active: true,
            grace_until: None,
            version: *self.version.lock().expect("not poisoned"),
            group: self.group.clone(),
        }))
    }
}

fn put(port: u16, target: &str, auth: &str, body: &[u8]) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connects");
    write!(
        s,
        "PUT {target} HTTP/1.1\r\nhost: x\r\n{}: {auth}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        pazar_types::auth::AUTH_HEADER,
        body.len()
    )
    .expect("sends");
    s.write_all(body).expect("sends");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    out
}

/// The reviewer's attack through the provider's manifest endpoint: a lease of one replica whose
/// tenant renames its one service at every update (each manifest fits the lease on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_the_one_service_at_each_update_never_runs_a_second_container() {
    use pazar_types::{Address, KeyScheme, SigningKey};
    let rt = Arc::new(common::docker().await);
    let key = SigningKey::from_secret(KeyScheme::Ed25519, &[42; 32]).expect("key");
    let provider = Address::Native([9; 20]);
    let opts = pazar_sdl::Options::new(
        pazar_types::Denom::new("upzr").expect("denom"),
        pazar_types::Denom::new("uusd").expect("denom"),
    );
    let parse = |svc: &str| pazar_sdl::parse(unit_sdl(svc, 1, "V=1").as_bytes(), &opts).expect("valid sdl");
    let first = parse("s0");
    let ledger = Arc::new(Ledger {
        version: Mutex::new(first.manifest_version),
        group: first.groups[0].clone(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Arc::new(pazar_provider::server::LeaseServer::new(
        "c".into(),
        provider,
        "127.0.0.1".into(),
        ledger.clone(),
        rt.clone(),
        dir.path().to_path_buf(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(server.clone().serve(listener));
    // A lease id no other run uses (the tenant's key is fixed, so the dseq differs).
    let dseq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let id = pazar_types::market::BidId {
        owner: key.address(),
        dseq,
        gseq: 1,
        oseq: 1,
        provider,
    };
    let l = LeaseRef::new(id.clone());
    let target = format!("/lease/{}/{}/1/1/manifest", key.address(), id.dseq);
    let mut seen = Vec::new();
    for n in 0..4u8 {
        let svc = format!("s{n}");
        let d = parse(&svc);
        assert_eq!(d.groups[0], ledger.group, "the same leased group every time");
        // The tenant's MsgUpdateDeployment: only the version changes on the ledger.
        *ledger.version.lock().expect("not poisoned") = d.manifest_version;
        let body = serde_json::to_vec(&d.manifest).expect("json");
        let auth = pazar_types::auth::RequestScope {
            chain_id: "c",
            provider: &provider,
            method: "PUT",
            target: &target,
            body: &body,
        }
        .sign(&key, pazar_provider::server::now_ms(), [n; 16])
        .to_header();
        let answer = put(port, &target, &auth, &body);
        seen.push((
            answer.lines().next().unwrap_or("").to_string(),
            containers(&rt, &l).await.into_keys().collect::<BTreeSet<_>>(),
            volumes(&rt, &l).await,
        ));
    }
    rt.close(&l).await.expect("closes");
    for (n, (answer, running, vols)) in seen.iter().enumerate() {
        assert!(answer.starts_with("HTTP/1.1 2"), "manifest {n}: {answer}");
        assert_eq!(running, &names(&l, &[(&format!("s{n}"), 0)]), "after manifest {n}");
        assert_eq!(
            vols,
            &BTreeSet::from([format!("{}.s{n}.data", l.name())]),
            "after manifest {n}"
        );
    }
    assert!(containers(&rt, &l).await.is_empty());
}

/// `docker exec CONTAINER sh -c SCRIPT`: its exit status and standard output.
fn exec(container: &str, script: &str) -> (bool, String) {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "/bin/sh", "-c", script])
        .output()
        .expect("docker runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether the engine says the container runs.
async fn container_runs(rt: &DockerRuntime, name: &str) -> bool {
    let info = rt
        .docker()
        .inspect_container(name, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .expect("the container is kept");
    info.state.and_then(|s| s.running) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_lease_keeps_its_volume_stays_stopped_and_a_deploy_starts_it_on_the_same_data() {
    let rt = docker().await;
    let g = group(IMAGE);
    let l = lease(7);
    let container = format!("{}-web-0", l.name());
    rt.deploy(&l, &g).await.expect("deploys");
    let serving = |why: &'static str| {
        let (rt, l, g) = (&rt, &l, &g);
        async move {
            let t0 = Instant::now();
            loop {
                let st = rt.status(l, g).await.expect("status");
                if st.all_running() {
                    return st;
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "not serving {why}: {st:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    serving("after the deploy").await;
    let (ok, _) = exec(&container, "echo kept-through-the-stop > /data/mark");
    assert!(ok, "writes into its volume");
    let vols = volumes(&rt, &l).await;
    assert_eq!(vols.len(), 1, "{vols:?}");

    let t0 = Instant::now();
    rt.stop(&l).await.expect("stops");
    let took = t0.elapsed();
    assert!(!container_runs(&rt, &container).await, "the replica no longer runs");
    let st = rt.status(&l, &g).await.expect("status of a stopped lease");
    assert_eq!(st.services[0].running, 0, "{st:?}");
    assert!(!st.all_running(), "{st:?}");
    assert_eq!(volumes(&rt, &l).await, vols, "the volume is kept");
    assert_eq!(leftovers(&rt, &l).await, vec![l.name()], "the lease is still listed");
    // `unless-stopped`: the engine does not bring it back on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!container_runs(&rt, &container).await, "still stopped");
    // Stopping again, or a lease that has nothing here, is no error.
    rt.stop(&l).await.expect("stops again");
    rt.stop(&lease(8)).await.expect("nothing to stop");

    rt.deploy(&l, &g).await.expect("starts again");
    serving("after the restart").await;
    let (ok, out) = exec(&container, "cat /data/mark");
    assert!(
        ok && out.contains("kept-through-the-stop"),
        "the data survived: {out:?}"
    );
    assert_eq!(volumes(&rt, &l).await, vols, "on the same volume");

    rt.close(&l).await.expect("closes");
    assert!(leftovers(&rt, &l).await.is_empty());
    assert!(volumes(&rt, &l).await.is_empty());
    eprintln!("stop took {took:?}");
}
