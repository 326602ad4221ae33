//! Root filesystems for the sandbox runtime. An image is a directory under the store:
//! `<store>/<name>/rootfs/` and `<store>/<name>/config.json` (entrypoint, cmd, env, workdir),
//! where `<name>` is the image reference with `/` written `+` and `:latest` added when no tag
//! is given. It gets there by hand (a rootfs the operator assembled), from a tar file
//! ([`ImageStore::import_tar`]), or exported from a local Docker engine
//! ([`ImageStore::import_from_docker`]), which keeps the image's config.

use std::io::Read;
use std::path::{Path, PathBuf};

use bollard::query_parameters::{CreateContainerOptions, RemoveContainerOptions};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::RuntimeError;

/// Longest image reference accepted (Docker's limit on a repository name is 255).
const MAX_REFERENCE: usize = 512;

/// An image reference as a tenant writes it, checked against Docker's grammar
/// (`[REGISTRY[:PORT]/]PATH[:TAG][@DIGEST]`): lowercase path components, a tag of at most 128
/// word characters, dots and dashes, a `sha256:` or `sha512:` digest. No tag means `latest`,
/// exactly as Docker reads it; a digest, when given, is what is pulled and run.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageRef {
    /// `[REGISTRY/]PATH` as written.
    pub repository: String,
    pub tag: String,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, String> {
        if text.is_empty() || text.len() > MAX_REFERENCE {
            return Err(format!("an image reference has 1 to {MAX_REFERENCE} bytes"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d)?)),
            None => (text, None),
        };
        // A tag follows the last `:` after the last `/` (a registry's port comes before it).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
            None => (rest, None),
        };
        let tag = match tag {
            Some(t) => {
                check_tag(t)?;
                t.to_string()
            }
            None => "latest".to_string(),
        };
        check_repository(repository)?;
        Ok(ImageRef {
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What is pulled and run: `REPOSITORY@DIGEST`, or `REPOSITORY:TAG`.
    pub fn reference(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.repository),
            None => format!("{}:{}", self.repository, self.tag),
        }
    }

    /// The tag or digest asked of the registry.
    pub fn tag_or_digest(&self) -> &str {
        self.digest.as_deref().unwrap_or(&self.tag)
    }

    /// The registry the image comes from (`docker.io` when none is named).
    pub fn registry(&self) -> &str {
        match self.repository.split_once('/') {
            Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
            _ => "docker.io",
        }
    }

    /// The repository as Docker names it in full (`docker.io/library/busybox` for `busybox`),
    /// so that two spellings of one image match the same policy entry.
    pub fn full_repository(&self) -> String {
        let path = match self.repository.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => rest,
            _ => &self.repository,
        };
        let registry = match self.registry() {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            r => r,
        };
        if registry == "docker.io" && !path.contains('/') {
            format!("docker.io/library/{path}")
        } else {
            format!("{registry}/{path}")
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reference())
    }
}

fn parse_digest(d: &str) -> Result<String, String> {
    let ok = match d.split_once(':') {
        Some(("sha256", hex)) => hex.len() == 64,
        Some(("sha512", hex)) => hex.len() == 128,
        _ => false,
    } && d
        .split_once(':')
        .is_some_and(|(_, h)| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok {
        Ok(d.to_string())
    } else {
        Err(format!(
            "{d:?} is not an image digest (sha256: and 64 lowercase hex digits)"
        ))
    }
}

fn check_tag(t: &str) -> Result<(), String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.bytes().next().is_some_and(word)
        && t.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is not valid (1 to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-')"
        ))
    }
}

/// `[REGISTRY[:PORT]/]COMPONENT(/COMPONENT)*`, components lowercase alphanumerics joined by
/// one `.`, one or two `_`, or dashes.
fn check_repository(r: &str) -> Result<(), String> {
    let mut parts: Vec<&str> = r.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.') || first.contains(':') || first == "localhost" {
            check_registry(first)?;
            parts.remove(0);
        }
    }
    if r.len() > 255 {
        return Err("the repository name is longer than 255 bytes".into());
    }
    for p in parts {
        if !path_component(p) {
            return Err(format!(
                "{p:?} is not a valid repository name component (lowercase letters and digits, \
                 joined by '.', '_', '__' or dashes)"
            ));
        }
    }
    Ok(())
}

fn path_component(p: &str) -> bool {
    let b = p.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &p[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

fn check_registry(host: &str) -> Result<(), String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if name.split('.').all(label) && port_ok {
        Ok(())
    } else {
        Err(format!("{host:?} is not a registry host name"))
    }
}

/// One `[images] allow_local` entry: `REPOSITORY:TAG`, or `REPOSITORY:*` for every tag (and
/// digest) of it; `REPOSITORY` alone means its `latest` tag, as Docker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    text: String,
    repository: String,
    /// `None`: any tag.
    tag: Option<String>,
}

impl std::str::FromStr for LocalImage {
    type Err = String;

    fn from_str(text: &str) -> Result<LocalImage, String> {
        let err = |why: String| format!("[images] allow_local entry {text:?}: {why}");
        let (r, tag) = match text.strip_suffix(":*") {
            Some(repo) => (ImageRef::parse(repo).map_err(err)?, None),
            None => {
                let r = ImageRef::parse(text).map_err(err)?;
                if r.digest.is_some() {
                    return Err(err("name a tag or `:*`, not a digest".into()));
                }
                let tag = Some(r.tag.clone());
                (r, tag)
            }
        };
        Ok(LocalImage {
            text: text.to_string(),
            repository: r.full_repository(),
            tag,
        })
    }
}

impl serde::Serialize for LocalImage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for LocalImage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<LocalImage, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// Which images a tenant may run from what is already on this host. Everything else comes
/// from its registry, pulled anonymously for the tenant at exactly the tag it names: the
/// operator's own images (built here, or pulled with the operator's credentials) are not the
/// tenants' to run unless listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    pub allow_local: Vec<LocalImage>,
}

impl ImagePolicy {
    /// A policy from `[images] allow_local` entries (see [`LocalImage`]).
    pub fn allowing<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<ImagePolicy, String> {
        Ok(ImagePolicy {
            allow_local: entries.into_iter().map(str::parse).collect::<Result<_, _>>()?,
        })
    }

    /// Whether a tenant may run the local copy of `image`.
    pub fn allows_local(&self, image: &ImageRef) -> bool {
        let repo = image.full_repository();
        self.allow_local.iter().any(|p| {
            p.repository == repo
                && match &p.tag {
                    None => true,
                    Some(t) => image.digest.is_none() && *t == image.tag,
                }
        })
    }

    /// Checks a reference the sandbox would run from its image store, where every image is
    /// local: only those the operator allows.
    pub fn admit_local(&self, image: &str) -> Result<ImageRef, RuntimeError> {
        let r = ImageRef::parse(image).map_err(|why| image_err(image, why))?;
        if self.allows_local(&r) {
            Ok(r)
        } else {
            Err(image_err(
                image,
                "this provider offers tenants only the local images its operator allows, and this is not one".into(),
            ))
        }
    }
}

/// What Docker keeps beside the layers and the sandbox needs to start the image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: String,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// Directories every rootfs needs as mount points (the rootfs is mounted read-only).
const MOUNT_POINTS: [&str; 6] = ["proc", "dev", "tmp", "run", "etc", "sys"];

fn image_err(image: &str, reason: String) -> RuntimeError {
    RuntimeError::Image {
        image: image.to_string(),
        reason,
    }
}

impl ImageStore {
    pub fn new(dir: impl Into<PathBuf>) -> ImageStore {
        ImageStore { dir: dir.into() }
    }

    /// The directory name of an image reference.
    pub fn dir_name(image: &str) -> String {
        let last = image.rsplit('/').next().unwrap_or(image);
        let tagged = if last.contains(':') || last.contains('@') {
            image.to_string()
        } else {
            format!("{image}:latest")
        };
        tagged.replace('/', "+")
    }

    fn image_dir(&self, image: &str) -> PathBuf {
        self.dir.join(Self::dir_name(image))
    }

    /// The image's rootfs and config, if the store has it.
    pub fn get(&self, image: &str) -> Option<(PathBuf, ImageConfig)> {
        let dir = self.image_dir(image);
        let rootfs = dir.join("rootfs");
        if !rootfs.is_dir() {
            return None;
        }
        let config = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Some((rootfs, config))
    }

    /// Writes a rootfs from `files` (relative path, mode, contents or `None` for a directory).
    pub fn put_files<'a>(
        &self,
        image: &str,
        files: impl IntoIterator<Item = (&'a str, u32, Option<&'a [u8]>)>,
        config: &ImageConfig,
    ) -> Result<(), RuntimeError> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e: std::io::Error| image_err(image, format!("cannot write the rootfs: {e}"));
        let staging = self.staging(image).map_err(io)?;
        let rootfs = staging.join("rootfs");
        for (path, mode, data) in files {
            let p = rootfs.join(path);
            match data {
                None => std::fs::create_dir_all(&p).map_err(io)?,
                Some(d) => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::write(&p, d).map_err(io)?;
                }
            }
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        self.commit(image, staging, config)
    }

    /// Unpacks a tar of a root filesystem (what `docker export` writes).
    pub fn import_tar(&self, image: &str, tar: impl Read, config: &ImageConfig) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| image_err(image, format!("cannot unpack the rootfs: {e}"));
        let staging = self.staging(image).map_err(io)?;
        let mut archive = tar::Archive::new(tar);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        // Entries are unpacked one by one so that device nodes (which a sandbox gets from its
        // own /dev) are skipped rather than failing the import.
        for entry in archive.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            let kind = entry.header().entry_type();
            if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
                continue;
            }
            entry.unpack_in(staging.join("rootfs")).map_err(io)?;
        }
        self.commit(image, staging, config)
    }

    /// Exports `image` from the local Docker engine into the store.
    pub async fn import_from_docker(&self, docker: &Docker, image: &str) -> Result<(), RuntimeError> {
        let info = docker
            .inspect_image(image)
            .await
            .map_err(|e| image_err(image, format!("not in the local Docker engine either: {e}")))?;
        let c = info.config.unwrap_or_default();
        let config = ImageConfig {
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
            env: c.env.unwrap_or_default(),
            workdir: c.working_dir.unwrap_or_default(),
        };
        let name = format!("pz-export-{}", std::process::id());
        // The export container, left by an earlier run or made here; absent is fine.
        let remove = async || {
            let opts = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.remove_container(&name, Some(opts)).await;
        };
        remove().await;
        docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                bollard::models::ContainerCreateBody {
                    image: Some(image.to_string()),
                    entrypoint: Some(vec!["/".into()]),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| image_err(image, format!("cannot create a container to export: {e}")))?;
        let tmp = self.dir.join(format!(".{name}.tar"));
        let result = async {
            let mut file = std::fs::File::create(&tmp).map_err(|e| image_err(image, e.to_string()))?;
            let mut stream = docker.export_container(&name);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| image_err(image, format!("export failed: {e}")))?;
                std::io::Write::write_all(&mut file, &chunk).map_err(|e| image_err(image, e.to_string()))?;
            }
            let file = std::fs::File::open(&tmp).map_err(|e| image_err(image, e.to_string()))?;
            self.import_tar(image, std::io::BufReader::new(file), &config)
        }
        .await;
        let _ = std::fs::remove_file(&tmp);
        remove().await;
        result
    }

    fn staging(&self, image: &str) -> std::io::Result<PathBuf> {
        let staging = self.dir.join(format!(".staging-{}", Self::dir_name(image)));
        if staging.exists() {
            std::fs::remove_dir_all(&staging)?;
        }
        std::fs::create_dir_all(staging.join("rootfs"))?;
        Ok(staging)
    }

    /// Adds the mount points and the config, then swaps the staged image in.
    fn commit(&self, image: &str, staging: PathBuf, config: &ImageConfig) -> Result<(), RuntimeError> {
        let io = |e: std::io::Error| image_err(image, format!("cannot store the image: {e}"));
        let rootfs = staging.join("rootfs");
        for d in MOUNT_POINTS {
            let p = rootfs.join(d);
            if !p.exists() {
                std::fs::create_dir_all(&p).map_err(io)?;
            }
        }
        let hosts = rootfs.join("etc/hosts");
        if !hosts.exists() {
            std::fs::write(&hosts, "").map_err(io)?;
        }
        let json = serde_json::to_vec_pretty(config).map_err(|e| image_err(image, e.to_string()))?;
        std::fs::write(staging.join("config.json"), json).map_err(io)?;
        let dest = self.image_dir(image);
        if dest.exists() {
            std::fs::remove_dir_all(&dest).map_err(io)?;
        }
        std::fs::rename(&staging, &dest).map_err(io)
    }

    /// Makes `mount` (an absolute path inside the image) exist as a directory, so a volume can
    /// be mounted there on the read-only rootfs.
    pub fn ensure_mount_point(rootfs: &Path, mount: &str) -> std::io::Result<()> {
        // Component by component, refusing symlinks: the image's own links must not lead the
        // daemon (root) to make directories outside the rootfs.
        let mut p = rootfs.to_path_buf();
        for c in mount.split('/').filter(|c| !c.is_empty() && *c != ".") {
            if c == ".." {
                return Err(std::io::Error::other(format!("mount path {mount:?} leaves the image")));
            }
            p.push(c);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(std::io::Error::other(format!(
                        "mount path {mount:?} goes through a symbolic link in the image"
                    )))
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(std::io::Error::other(format!(
                        "mount path {mount:?} is a file in the image"
                    )))
                }
                Err(_) => std::fs::create_dir(&p)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_read_as_docker_reads_them_with_latest_when_no_tag_is_named() {
        let check = |text: &str, repo: &str, run: &str, registry: &str, full: &str| {
            let r = ImageRef::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                (
                    r.repository.as_str(),
                    r.reference().as_str(),
                    r.registry(),
                    r.full_repository().as_str()
                ),
                (repo, run, registry, full),
                "{text}"
            );
        };
        check(
            "busybox",
            "busybox",
            "busybox:latest",
            "docker.io",
            "docker.io/library/busybox",
        );
        check(
            "busybox:1.36",
            "busybox",
            "busybox:1.36",
            "docker.io",
            "docker.io/library/busybox",
        );
        check(
            "library/busybox",
            "library/busybox",
            "library/busybox:latest",
            "docker.io",
            "docker.io/library/busybox",
        );
        check(
            "ghcr.io/o/app:v1",
            "ghcr.io/o/app",
            "ghcr.io/o/app:v1",
            "ghcr.io",
            "ghcr.io/o/app",
        );
        check(
            "localhost:5000/app",
            "localhost:5000/app",
            "localhost:5000/app:latest",
            "localhost:5000",
            "localhost:5000/app",
        );
        check(
            "my_app__x.y-z:V_1.0-rc",
            "my_app__x.y-z",
            "my_app__x.y-z:V_1.0-rc",
            "docker.io",
            "docker.io/library/my_app__x.y-z",
        );
        let digest = format!("sha256:{}", "ab".repeat(32));
        let r = ImageRef::parse(&format!("app:v1@{digest}")).expect("tag and digest");
        assert_eq!(r.reference(), format!("app@{digest}"), "the digest is what runs");
        assert_eq!(r.tag_or_digest(), digest);
    }

    #[test]
    fn malformed_references_are_refused_with_the_reason() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox:.x",
            "a//b",
            "/abs",
            "app:v1:v2",
            "app@sha256:abc",
            "app@md5:0123456789abcdef0123456789abcdef",
            "bad host:5000/app",
            "registry.io:port/app",
            "app:*",
            "../../etc/passwd",
            "a b",
            "app\n",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = format!("app:{}", "t".repeat(129));
        assert!(ImageRef::parse(&long).is_err());
        let e = ImageRef::parse("Busybox").expect_err("upper case");
        assert!(
            e.contains("\"Busybox\" is not a valid repository name component"),
            "{e}"
        );
    }

    #[test]
    fn only_local_images_the_operator_lists_are_allowed_at_the_tag_listed() {
        let p =
            ImagePolicy::allowing(["pazar-demo:*", "docker.io/library/tools:1", "ghcr.io/me/base"]).expect("policy");
        let allowed = |text: &str| p.allows_local(&ImageRef::parse(text).expect("valid"));
        assert!(allowed("pazar-demo:1") && allowed("pazar-demo") && allowed("docker.io/library/pazar-demo:x"));
        assert!(allowed("tools:1") && allowed("library/tools:1"));
        assert!(!allowed("tools:2") && !allowed("tools"), "another tag of a listed one");
        assert!(allowed("ghcr.io/me/base:latest") && !allowed("ghcr.io/me/base:v2"));
        assert!(!allowed("pazar-demo-x:1") && !allowed("other/pazar-demo:1") && !allowed("busybox"));
        assert!(!ImagePolicy::default().allows_local(&ImageRef::parse("pazar-demo:1").expect("valid")));
        let e = ImagePolicy::default()
            .admit_local("pazar-demo:1")
            .expect_err("nothing local by default");
        assert!(e.to_string().contains("local images its operator allows"), "{e}");
        for bad in [
            "",
            "x:*:*",
            "X:*",
            "app@sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(ImagePolicy::allowing([bad]).is_err(), "{bad:?}");
        }
    }
}
