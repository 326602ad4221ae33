//! Attacks of class `images` (see mod.rs): a tenant names an image to get something it should
//! not — another tag than the one it named, the operator's own local images (built here, or
//! pulled with the operator's credentials), a pull too large or too slow for the provider's
//! disk and time, or the registry's and the engine's internal detail in an error.
//!
//! No registry is reachable from the tests, so they serve one: a small Docker Registry HTTP API
//! v2 server on 127.0.0.1 (the engine pulls from `localhost:PORT` over plain HTTP) holding
//! images made of the demo root filesystem, one repository that demands credentials, one image
//! too large and one served too slowly. The real Docker engine pulls from it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use pazar_runtime::demo_image::{build_demo_image, demo_files};
use pazar_runtime::docker::{DockerOptions, DockerRuntime};
use pazar_runtime::images::ImagePolicy;
use pazar_runtime::{LeaseRef, Runtime, RuntimeError};

use super::egress::{demo_group, exec, lease_of, wait_running};

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar archive of `(path, mode, contents or None for a directory)`, as a layer is.
fn tar(entries: &[(&str, u32, Option<&[u8]>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, mode, data) in entries {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        let size = data.map_or(0, <[u8]>::len);
        let field = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
            let s = format!("{v:0w$o}\0", w = width - 1);
            h[at..at + width].copy_from_slice(s.as_bytes());
        };
        field(&mut h, 100, 8, u64::from(*mode));
        field(&mut h, 108, 8, 0);
        field(&mut h, 116, 8, 0);
        field(&mut h, 124, 12, size as u64);
        field(&mut h, 136, 12, 0);
        h[156] = if data.is_some() { b'0' } else { b'5' };
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        if let Some(d) = data {
            out.extend_from_slice(d);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// What the registry holds.
#[derive(Default)]
struct Content {
    /// (repository, tag) → manifest bytes.
    manifests: HashMap<(String, String), Vec<u8>>,
    blobs: HashMap<String, Arc<Vec<u8>>>,
    /// Blobs sent in 64 KiB pieces, one every `slow` interval.
    slow: HashMap<String, Duration>,
    /// Repositories that answer every request with 401.
    private: Vec<String>,
}

impl Content {
    /// Adds an image of the demo root filesystem plus `/tag.txt` holding `marker` and any
    /// `extra` layer, as `repo:tag`.
    fn add(&mut self, repo: &str, tag: &str, marker: &str, extra: Option<Vec<u8>>) -> Vec<String> {
        let files = demo_files().expect("busybox-static is installed");
        let base: Vec<(&str, u32, Option<&[u8]>)> = files.iter().map(|f| (f.path, f.mode, f.data.as_deref())).collect();
        let mut layers = vec![tar(&base), tar(&[("tag.txt", 0o644, Some(marker.as_bytes()))])];
        layers.extend(extra);
        let diff_ids: Vec<String> = layers.iter().map(|l| digest(l)).collect();
        let arch = match std::env::consts::ARCH {
            "aarch64" => "arm64",
            _ => "amd64",
        };
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/bin/sh", "/serve.sh"], "ExposedPorts": {"8080/tcp": {}}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": config.len(),
                "digest": digest(&config),
            },
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": l.len(),
                "digest": digest(l),
            })).collect::<Vec<_>>(),
        })
        .to_string()
        .into_bytes();
        self.blobs.insert(digest(&config), Arc::new(config));
        for l in layers {
            self.blobs.insert(digest(&l), Arc::new(l));
        }
        self.manifests.insert((repo.to_string(), tag.to_string()), manifest);
        diff_ids
    }
}

/// The registry: serves `content` until the test ends; counts the blob bytes it sent.
struct Registry {
    port: u16,
    sent: Arc<AtomicU64>,
}

impl Registry {
    fn start(content: Content) -> Registry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sent = Arc::new(AtomicU64::new(0));
        let (content, counter) = (Arc::new(content), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (content, counter) = (content.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = answer(conn, &content, &counter);
                });
            }
        });
        Registry { port, sent }
    }

    fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }
}

/// Answers one request (the engine's TLS probe gets a plain 400, after which it speaks HTTP).
fn answer(mut conn: TcpStream, content: &Content, sent: &AtomicU64) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        if conn.read(&mut byte)? == 0 {
            break;
        }
        // A TLS ClientHello (the engine tries HTTPS first): a plain answer at once, which sends
        // it to plain HTTP.
        if head.is_empty() && byte[0] == 0x16 {
            return conn.write_all(b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut words = text.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let reply = |conn: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]| {
        let mut h = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\nDocker-Distribution-API-Version: registry/2.0\r\n",
            body.len()
        );
        for (k, v) in headers {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        conn.write_all(h.as_bytes())?;
        if method != "HEAD" {
            conn.write_all(body)?;
        }
        Ok(())
    };
    let Some(rest) = path.strip_prefix("/v2/") else {
        return reply(&mut conn, "400 Bad Request", &[], b"");
    };
    if rest.is_empty() {
        return reply(
            &mut conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            b"{}",
        );
    }
    let (repo, kind, reference) = match (rest.rsplit_once("/manifests/"), rest.rsplit_once("/blobs/")) {
        (Some((r, t)), _) => (r, "manifest", t),
        (_, Some((r, d))) => (r, "blob", d),
        _ => return reply(&mut conn, "404 Not Found", &[], b""),
    };
    if content.private.iter().any(|p| p == repo) {
        let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required: see /srv/registry/internal-auth.conf on 127.0.0.1"}]}"#;
        return reply(
            &mut conn,
            "401 Unauthorized",
            &[
                ("WWW-Authenticate", "Basic realm=\"internal-realm-7731\"".into()),
                ("Content-Type", "application/json".into()),
            ],
            body,
        );
    }
    if kind == "manifest" {
        let found = content
            .manifests
            .get(&(repo.to_string(), reference.to_string()))
            .or_else(|| content.manifests.values().find(|m| digest(m) == reference));
        return match found {
            Some(m) => reply(
                &mut conn,
                "200 OK",
                &[
                    ("Content-Type", MANIFEST_TYPE.into()),
                    ("Docker-Content-Digest", digest(m)),
                ],
                m,
            ),
            None => reply(
                &mut conn,
                "404 Not Found",
                &[("Content-Type", "application/json".into())],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
            ),
        };
    }
    let Some(blob) = content.blobs.get(reference) else {
        return reply(&mut conn, "404 Not Found", &[], b"");
    };
    match content.slow.get(reference) {
        None => {
            reply(
                &mut conn,
                "200 OK",
                &[("Content-Type", "application/octet-stream".into())],
                blob,
            )?;
            sent.fetch_add(blob.len() as u64, Ordering::SeqCst);
        }
        Some(pause) => {
            conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                    blob.len()
                )
                .as_bytes(),
            )?;
            for piece in blob.chunks(64 << 10) {
                conn.write_all(piece)?;
                sent.fetch_add(piece.len() as u64, Ordering::SeqCst);
                std::thread::sleep(*pause);
            }
        }
    }
    Ok(())
}

async fn runtime(images: &[&str], max_image_bytes: u64, pull_timeout: Duration) -> DockerRuntime {
    DockerRuntime::connect(DockerOptions {
        images: ImagePolicy::allowing(images.iter().copied()).expect("policy"),
        max_image_bytes,
        pull_timeout,
        ..DockerOptions::default()
    })
    .await
    .expect("this machine has a Docker engine")
}

fn image_present(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn remove_images(prefix: &str) {
    let out = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker images");
    for r in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|r| r.starts_with(prefix))
    {
        let _ = Command::new("docker").args(["rmi", "-f", r]).output();
    }
}

/// The refusal a tenant reads when deploying `image` on `rt` (nothing of the lease is left).
async fn refusal(rt: &DockerRuntime, tag: u8, image: &str) -> String {
    let (l, g) = (lease_of(tag), demo_group(image, 1));
    let err = rt.deploy(&l, &g).await.expect_err("refused");
    assert!(matches!(err, RuntimeError::Image { .. }), "{err}");
    let left = rt.leases().await.expect("leases");
    assert!(
        !left.iter().any(|(n, _)| *n == l.name()),
        "nothing made for a refused image"
    );
    rt.close(&l).await.expect("close");
    eprintln!("images: the tenant reads: {err}");
    err.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_exactly_the_tag_it_names_never_another_nor_a_local_copy() {
    let mut content = Content::default();
    for tag in ["v1", "v2", "latest"] {
        content.add("pz/app", tag, tag, None);
    }
    let registry = Registry::start(content);
    let repo = format!("{}/pz/app", registry.host());
    let rt = runtime(&[], 1 << 30, Duration::from_secs(60)).await;
    // The operator's own images under the same name: one at a tag the registry also has, one
    // at a tag only this host has.
    build_demo_image(rt.docker(), &format!("{repo}:v1"))
        .await
        .expect("local image");
    build_demo_image(rt.docker(), &format!("{repo}:v3"))
        .await
        .expect("local image");

    let rt = Arc::new(rt);
    let (a, b) = (lease_of(0xa1), lease_of(0xa2));
    let outcome = tokio::spawn(exact_tags(rt.clone(), a.clone(), b.clone(), repo)).await;
    rt.close(&a).await.expect("close");
    rt.close(&b).await.expect("close");
    remove_images(&registry.host());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn exact_tags(rt: Arc<DockerRuntime>, a: LeaseRef, b: LeaseRef, repo: String) {
    {
        let g = demo_group(&format!("{repo}:v1"), 1);
        rt.deploy(&a, &g).await.expect("v1 deploys");
        wait_running(&rt, &a, &g).await;
        let (_, tag) = exec(&format!("{}-web-0", a.name()), "cat /tag.txt");
        assert_eq!(tag, "v1", "the registry's v1 runs, not the operator's local copy");
        assert!(!image_present(&format!("{repo}:v2")), "another tag was pulled");

        let g = demo_group(&repo, 1);
        rt.deploy(&b, &g).await.expect("no tag deploys");
        wait_running(&rt, &b, &g).await;
        let (_, tag) = exec(&format!("{}-web-0", b.name()), "cat /tag.txt");
        assert_eq!(tag, "latest", "no tag means latest");

        let msg = refusal(&rt, 0xa3, &format!("{repo}:v3")).await;
        assert!(
            msg.contains("has no tag \"v3\""),
            "a tag only this host has is refused: {msg}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_past_the_size_or_time_limit_is_stopped_and_its_progress_is_shown_meanwhile() {
    const MAX: u64 = 16 << 20;
    let mut content = Content::default();
    let big = tar(&[("big.bin", 0o644, Some(&vec![0u8; 40 << 20]))]);
    let big_digest = digest(&big);
    let big_len = big.len() as u64;
    content.add("pz/big", "v1", "big", Some(big));
    content.slow.insert(big_digest, Duration::from_millis(20));
    let slow = tar(&[("slow.bin", 0o644, Some(&vec![1u8; 4 << 20]))]);
    content.slow.insert(digest(&slow), Duration::from_millis(100));
    content.add("pz/slow", "v1", "slow", Some(slow));
    let registry = Registry::start(content);
    let rt = Arc::new(runtime(&[], MAX, Duration::from_secs(3)).await);

    let big = format!("{}/pz/big:v1", registry.host());
    let msg = refusal(&rt, 0xb1, &big).await;
    assert!(msg.contains(&format!("larger than {MAX} bytes")), "{msg}");
    assert!(!image_present(&big), "the refused image is not kept");
    let sent = registry.sent.load(Ordering::SeqCst);
    assert!(
        sent < big_len,
        "the pull was stopped early: {sent} of {big_len} bytes sent"
    );

    // The slow one: its progress is in the lease's status while it lasts, then the time limit.
    let (l, g) = (
        lease_of(0xb2),
        demo_group(&format!("{}/pz/slow:v1", registry.host()), 1),
    );
    let deploy = {
        let (rt, l, g) = (rt.clone(), l.clone(), g.clone());
        tokio::spawn(async move { rt.deploy(&l, &g).await })
    };
    let mut seen = None;
    while !deploy.is_finished() {
        let st = rt.status(&l, &g).await.expect("status");
        if let Some(p) = st.services[0].pull.clone().filter(|p| p.bytes > 0 && p.total > 0) {
            assert_eq!(st.services[0].state, pazar_api::provider::ServiceState::Pulling);
            seen = Some(p);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = deploy.await.expect("deploy task").expect_err("too slow");
    assert!(err.to_string().contains("took longer than 3 s"), "{err}");
    let p = seen.expect("the pull's progress was shown");
    assert!(p.bytes <= p.total && p.image.ends_with("/pz/slow:v1"), "{p:?}");
    let st = rt.status(&l, &g).await.expect("status");
    assert!(st.services[0].pull.is_none(), "no progress once the pull ended: {st:?}");
    rt.close(&l).await.expect("close");
    remove_images(&registry.host());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_says_what_failed_without_the_registrys_or_the_engines_words() {
    let mut content = Content::default();
    content.add("pz/app", "v1", "v1", None);
    content.private.push("corp/secret".into());
    let registry = Registry::start(content);
    let rt = runtime(&[], 1 << 30, Duration::from_secs(60)).await;
    let leaks = [
        "internal-realm",
        "/srv/",
        "UNAUTHORIZED",
        "127.0.0.1",
        "dial tcp",
        "Error response",
        "10.255.255.53",
        "docker login",
    ];
    let check = |msg: &str, says: &str| {
        assert!(msg.contains(says), "{msg:?} does not say {says:?}");
        for l in leaks {
            assert!(!msg.contains(l), "{msg:?} shows {l:?}");
        }
    };
    let msg = refusal(&rt, 0xc1, &format!("{}/corp/secret:v1", registry.host())).await;
    check(&msg, "without credentials");
    let msg = refusal(&rt, 0xc2, &format!("{}/pz/app:nope", registry.host())).await;
    check(&msg, "has no tag \"nope\"");
    // A registry this host cannot reach (no route to the internet from the tests).
    let msg = refusal(&rt, 0xc3, "pazar-unreachable.invalid/app:v1").await;
    check(&msg, "cannot reach the registry pazar-unreachable.invalid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_local_images_run_only_where_the_operator_allows_them() {
    const LOCAL: &str = "pazar-demo:images-local";
    let closed = runtime(&[], 1 << 30, Duration::from_secs(60)).await;
    build_demo_image(closed.docker(), LOCAL).await.expect("local image");
    let msg = refusal(&closed, 0xd1, LOCAL).await;
    assert!(msg.contains("cannot reach the registry docker.io"), "{msg}");

    let open = runtime(&["pazar-demo:*"], 1 << 30, Duration::from_secs(60)).await;
    let (l, g) = (lease_of(0xd2), demo_group(LOCAL, 1));
    open.deploy(&l, &g).await.expect("allowed");
    wait_running(&open, &l, &g).await;
    open.close(&l).await.expect("close");

    // The sandbox's image store is local by nature: the same policy decides.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = pazar_runtime::sandbox::SandboxOptions::new(dir.path().join("sandbox"));
    opts.docker_images = false;
    let sandbox = pazar_runtime::sandbox::SandboxRuntime::new(opts).expect("sandbox runtime");
    pazar_runtime::demo_image::store_demo_rootfs(sandbox.images(), LOCAL).expect("rootfs");
    let l = lease_of(0xd3);
    let err = sandbox.deploy(&l, &g).await.expect_err("not allowed");
    assert!(err.to_string().contains("local images its operator allows"), "{err}");
    sandbox.close(&l).await.expect("close");
}
