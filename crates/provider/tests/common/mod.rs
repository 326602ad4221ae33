//! Shared by the provider's real-engine tests: the engine with the demo image, unique lease ids,
//! and groups from SDL text.

#![allow(dead_code)]

use pazar_runtime::demo_image::build_demo_image;
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use std::time::{Duration, Instant};

use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::StreamExt;

use pazar_runtime::{GroupStatus, LeaseRef, Runtime};
use pazar_sdl::{parse, Options};
use pazar_types::market::BidId;
use pazar_types::{Address, Denom};

pub const IMAGE: &str = "pazar-demo:test";

/// The local Docker engine (the test fails without one) with the demo image built.
pub async fn docker() -> DockerRuntime {
    docker_with(options()).await
}

/// The runtime's defaults, with the locally built demo image allowed to tenants (no registry
/// is reachable from the tests).
pub fn options() -> DockerOptions {
    DockerOptions {
        images: pazar_runtime::images::ImagePolicy::allowing(["pazar-demo:*"]).expect("a valid policy"),
        ..DockerOptions::default()
    }
}

/// As [`docker`], with these options.
pub async fn docker_with(opts: DockerOptions) -> DockerRuntime {
    let rt = DockerRuntime::connect(opts)
        .await
        .expect("this machine has a Docker engine");
    build_demo_image(rt.docker(), IMAGE)
        .await
        .expect("builds the demo image locally");
    rt
}

/// A lease id no other test run uses.
pub fn lease(tag: u8) -> LeaseRef {
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

/// The first manifest group of a valid SDL.
pub fn group(sdl: &str) -> pazar_sdl::ValidGroup {
    let opts = Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"));
    let d = parse(sdl.as_bytes(), &opts).expect("valid sdl");
    pazar_sdl::ValidGroup::new(d.manifest.groups.into_iter().next().expect("one group")).expect("a valid group")
}

/// A plain HTTP/1.0 GET of `/` on `127.0.0.1:port`: the whole answer.
pub fn http_get(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Runs `sh -c script` in the container; returns the exit code and the output.
pub async fn exec(rt: &DockerRuntime, container: &str, script: &str) -> (i64, String) {
    let d = rt.docker();
    let e = d
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(vec!["/bin/sh".to_string(), "-c".to_string(), script.to_string()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .expect("exec created");
    let mut out = String::new();
    if let StartExecResults::Attached { mut output, .. } = d.start_exec(&e.id, None).await.expect("exec started") {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    }
    let code = d.inspect_exec(&e.id).await.expect("inspect").exit_code.unwrap_or(-1);
    (code, out)
}

pub async fn wait_status<R: Runtime>(
    rt: &R,
    l: &LeaseRef,
    g: &pazar_sdl::ValidGroup,
    ok: impl Fn(&GroupStatus) -> bool,
) -> GroupStatus {
    let t0 = Instant::now();
    loop {
        let st = rt.status(l, g).await.expect("status");
        if ok(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "status never matched: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn log_text<R: Runtime>(rt: &R, l: &LeaseRef) -> String {
    let lines: Vec<_> = rt.logs(l, None, 1000, false).await.expect("logs").collect().await;
    lines.into_iter().map(|l| l.expect("line").line + "\n").collect()
}

/// One `web` service of the test image with a 32 MiB persistent volume (class `beta2`) at
/// `/data`.
pub fn persistent_web_sdl() -> String {
    format!(
        r#"
version: "2.0"
services:
  web:
    image: {IMAGE}
    expose: [{{port: 8080, as: 80, to: [{{global: true}}]}}]
    params:
      storage:
        data: {{mount: /data}}
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 0.25}}
        memory: {{size: 128Mi}}
        storage:
          - size: 32Mi
          - name: data
            size: 32Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local: {{pricing: {{web: {{denom: uusd, amount: 100}}}}}}
deployment:
  web: {{local: {{profile: web, count: 1}}}}
"#
    )
}
