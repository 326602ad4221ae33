//! The demo workload's image, built locally with no registry: `FROM scratch` with a static
//! busybox (Debian's `busybox-static`) serving a page over HTTP and logging each request.

use bollard::query_parameters::BuildImageOptions;
use bollard::Docker;
use futures_util::StreamExt;

use crate::RuntimeError;

/// Where the static busybox comes from (`apt-get install busybox-static`).
pub const BUSYBOX: &str = "/bin/busybox";

const DOCKERFILE: &str = r#"FROM scratch
COPY rootfs/ /
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "/serve.sh"]
"#;

/// Prints its banner and the environment it was given, then serves `/www` on port 8080
/// (`PORT` overrides), logging every request to stderr.
const SERVE: &str = r#"echo "pazar demo: serving on :${PORT:-8080} as ${HOSTNAME}"
echo "<html><body><h1>Hello from a Pazar lease</h1><p>${GREETING:-served by busybox httpd}</p></body></html>" > /tmp/index.html
exec /bin/busybox httpd -f -v -p "${PORT:-8080}" -h /tmp
"#;

/// The demo image's entrypoint.
pub const ENTRYPOINT: [&str; 2] = ["/bin/sh", "/serve.sh"];

/// One entry of the demo root filesystem.
pub struct DemoFile {
    pub path: &'static str,
    pub mode: u32,
    /// `None` for a directory.
    pub data: Option<Vec<u8>>,
}

/// The demo root filesystem: busybox, its `sh`, the serving script and `/tmp`.
pub fn demo_files() -> Result<Vec<DemoFile>, RuntimeError> {
    let busybox = std::fs::read(BUSYBOX).map_err(|e| RuntimeError::Image {
        image: "pazar-demo".into(),
        reason: format!("cannot read {BUSYBOX} ({e}); install Debian's busybox-static"),
    })?;
    Ok(vec![
        DemoFile {
            path: "bin",
            mode: 0o755,
            data: None,
        },
        DemoFile {
            path: "tmp",
            mode: 0o1777,
            data: None,
        },
        DemoFile {
            path: "bin/busybox",
            mode: 0o755,
            data: Some(busybox.clone()),
        },
        DemoFile {
            path: "bin/sh",
            mode: 0o755,
            data: Some(busybox),
        },
        DemoFile {
            path: "serve.sh",
            mode: 0o644,
            data: Some(SERVE.as_bytes().to_vec()),
        },
    ])
}

fn append(b: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: Option<&[u8]>) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    match data {
        Some(d) => h.set_size(d.len() as u64),
        None => {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        }
    }
    h.set_mode(mode);
    h.set_cksum();
    b.append_data(&mut h, path, data.unwrap_or_default())
}

/// The build context: Dockerfile and the demo root filesystem under `rootfs/`.
pub fn demo_context() -> Result<Vec<u8>, RuntimeError> {
    let io = |e: std::io::Error| RuntimeError::Backend(format!("cannot assemble the build context: {e}"));
    let mut b = tar::Builder::new(Vec::new());
    append(&mut b, "Dockerfile", 0o644, Some(DOCKERFILE.as_bytes())).map_err(io)?;
    for f in demo_files()? {
        append(&mut b, &format!("rootfs/{}", f.path), f.mode, f.data.as_deref()).map_err(io)?;
    }
    b.into_inner().map_err(io)
}

/// Builds the demo image as `tag` in the local engine.
pub async fn build_demo_image(docker: &Docker, tag: &str) -> Result<(), RuntimeError> {
    let ctx = demo_context()?;
    let mut stream = docker.build_image(
        BuildImageOptions {
            t: Some(tag.to_string()),
            dockerfile: "Dockerfile".into(),
            rm: true,
            forcerm: true,
            ..Default::default()
        },
        None,
        Some(bollard::body_full(ctx.into())),
    );
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| RuntimeError::Image {
            image: tag.to_string(),
            reason: format!("build failed: {e}"),
        })?;
        if let Some(err) = info.error_detail.and_then(|d| d.message) {
            return Err(RuntimeError::Image {
                image: tag.to_string(),
                reason: format!("build failed: {err}"),
            });
        }
    }
    Ok(())
}

/// Puts the demo image as `tag` in a sandbox image store (no Docker needed).
pub fn store_demo_rootfs(store: &crate::images::ImageStore, tag: &str) -> Result<(), RuntimeError> {
    let files = demo_files()?;
    let config = crate::images::ImageConfig {
        entrypoint: ENTRYPOINT.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    store.put_files(tag, files.iter().map(|f| (f.path, f.mode, f.data.as_deref())), &config)
}
