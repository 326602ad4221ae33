//! The Docker runtime on the real engine of this machine: a locally built image (no registry)
//! is deployed from a real SDL, serves HTTP on its published port, logs, reports status, and
//! closing removes every container, network and volume of the lease.

use std::time::{Duration, Instant};

mod common;

use futures_util::StreamExt;

use common::{docker, http_get, lease, IMAGE};
use pazar_provider::runtime::docker::DockerRuntime;
use pazar_provider::runtime::{LeaseRef, Runtime, RuntimeError};

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
