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
