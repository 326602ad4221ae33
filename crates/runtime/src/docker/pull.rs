//! Images for Docker leases: the host's own copy where the operator allows it, otherwise a pull
//! of exactly the tenant's tag or digest, anonymous, within a time and a size limit, its
//! progress kept for the lease's status. A failed pull is told to the tenant in words of its own
//! image and registry, never in the engine's. Must not know containers or networks.

use std::collections::HashMap;
use std::sync::Mutex;

use bollard::query_parameters::{CreateImageOptions, RemoveImageOptions};
use futures_util::StreamExt;

use super::DockerRuntime;
use crate::images::ImageRef;
use crate::{LeaseRef, RuntimeError};
use pazar_api::provider::PullProgress;

/// Removes a pull's progress when the pull ends, however it ends.
struct PullEntry<'a> {
    pulls: &'a Mutex<HashMap<(String, String), PullProgress>>,
    key: (String, String),
}

impl PullEntry<'_> {
    fn set(&self, p: PullProgress) {
        if let Ok(mut m) = self.pulls.lock() {
            m.insert(self.key.clone(), p);
        }
    }
}

impl Drop for PullEntry<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.pulls.lock() {
            m.remove(&self.key);
        }
    }
}

/// What a tenant is told of a failed pull: what failed, in words of its own image and
/// registry, never the engine's message (which can carry registry credentials' realms, host
/// paths and daemon internals). The operator gets the engine's message in the daemon's log.
fn pull_failure(image: &ImageRef, detail: &str) -> String {
    let d = detail.to_ascii_lowercase();
    let registry = image.registry();
    let has = |words: &[&str]| words.iter().any(|w| d.contains(w));
    if has(&["toomanyrequests", "too many requests", "rate limit"]) {
        format!("the registry {registry} is limiting pulls from this provider; try again later")
    } else if has(&[
        "unauthorized",
        "authentication required",
        "denied",
        "forbidden",
        "may require 'docker login'",
    ]) {
        format!("the registry {registry} does not give this image without credentials (this provider pulls public images only), or has no such repository")
    } else if has(&[
        "manifest unknown",
        "not found",
        "does not exist",
        "no matching manifest",
    ]) {
        format!(
            "the registry {registry} has no {} {:?} of this repository",
            if image.digest.is_some() { "digest" } else { "tag" },
            image.tag_or_digest()
        )
    } else if has(&[
        "dial tcp",
        "lookup",
        "no such host",
        "connection refused",
        "i/o timeout",
        "network is unreachable",
        "tls",
        "x509",
        "certificate",
        "eof",
        "connection reset",
        "timeout",
        "server gave http response",
    ]) {
        format!("cannot reach the registry {registry} from this provider")
    } else if has(&["no space left"]) {
        "this provider has no room for the image now".to_string()
    } else {
        format!("the pull from {registry} failed")
    }
}

fn lossless_u64(v: Option<i64>) -> u64 {
    v.unwrap_or(0).max(0) as u64
}

impl DockerRuntime {
    /// Bytes of images pulled for tenants since the runtime started, as the registry's layers
    /// arrived (layers already on the host cost nothing).
    pub fn pulled_bytes(&self) -> u64 {
        self.pulled_bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The image is allowed from the host's own copies and is here, or it is pulled now.
    pub(super) async fn ensure_image(
        &self,
        lease: &LeaseRef,
        service: &str,
        image: &ImageRef,
    ) -> Result<(), RuntimeError> {
        if self.opts.images.allows_local(image) && self.docker.inspect_image(&image.reference()).await.is_ok() {
            return Ok(());
        }
        self.pull(lease, service, image).await
    }

    /// Pulls exactly `image` (its tag or digest; never every tag, which is what the engine does
    /// when asked for a repository without one), anonymously, within the time and size limits,
    /// keeping its progress for the lease's status. A pull stopped early is abandoned by
    /// dropping the engine's stream, which cancels it.
    async fn pull(&self, lease: &LeaseRef, service: &str, image: &ImageRef) -> Result<(), RuntimeError> {
        let fail = |reason: String| RuntimeError::Image {
            image: image.to_string(),
            reason,
        };
        let entry = PullEntry {
            pulls: &self.pulls,
            key: (lease.name(), service.to_string()),
        };
        let mut progress = PullProgress {
            image: image.to_string(),
            bytes: 0,
            total: 0,
        };
        entry.set(progress.clone());
        let max = self.opts.max_image_bytes;
        let too_big = |n: u64| {
            fail(format!(
                "the image is larger than {max} bytes ({n} bytes at least), this provider's limit"
            ))
        };
        let mut stream = self.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(image.repository.clone()),
                tag: Some(image.tag_or_digest().to_string()),
                ..Default::default()
            }),
            None,
            None,
        );
        let deadline = tokio::time::Instant::now() + self.opts.pull_timeout;
        // Per layer: bytes downloaded, and its size once the download starts.
        let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
        loop {
            let item = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => {
                    return Err(fail(format!(
                        "the pull took longer than {} s, this provider's limit (pulled {} of {} bytes)",
                        self.opts.pull_timeout.as_secs(),
                        progress.bytes,
                        progress.total
                    )))
                }
                Ok(None) => break,
                Ok(Some(item)) => item,
            };
            let info = match item {
                Ok(info) => info,
                Err(e) => {
                    tracing::warn!("the pull of {image} failed: {e}");
                    return Err(fail(pull_failure(image, &e.to_string())));
                }
            };
            if let Some(msg) = info.error_detail.and_then(|d| d.message) {
                tracing::warn!("the pull of {image} failed: {msg}");
                return Err(fail(pull_failure(image, &msg)));
            }
            let (Some(id), Some(status)) = (info.id, info.status) else {
                continue;
            };
            let detail = info.progress_detail.unwrap_or_default();
            let layer = layers.entry(id).or_default();
            match status.as_str() {
                "Downloading" => {
                    layer.1 = lossless_u64(detail.total).max(layer.1);
                    layer.0 = lossless_u64(detail.current).min(layer.1.max(1) * 2);
                }
                "Download complete" | "Verifying Checksum" => layer.0 = layer.1,
                _ => {}
            }
            let bytes = layers.values().map(|l| l.0).sum();
            if bytes > progress.bytes {
                self.pulled_bytes
                    .fetch_add(bytes - progress.bytes, std::sync::atomic::Ordering::Relaxed);
            }
            progress.bytes = bytes;
            progress.total = layers.values().map(|l| l.1).sum();
            entry.set(progress.clone());
            // Compressed layers are smaller than what they unpack to: a pull whose layers
            // already add up past the limit is stopped before it downloads them.
            if progress.total > max {
                return Err(too_big(progress.total));
            }
        }
        drop(stream);
        let size = match self.docker.inspect_image(&image.reference()).await {
            Ok(i) => lossless_u64(i.size),
            Err(e) => {
                tracing::warn!("the pulled image {image} cannot be inspected: {e}");
                return Err(fail(format!("the pull from {} failed", image.registry())));
            }
        };
        if size > max {
            // Unless a container of someone else uses it, the image goes again.
            let _ = self
                .docker
                .remove_image(&image.reference(), None::<RemoveImageOptions>, None)
                .await;
            return Err(too_big(size));
        }
        Ok(())
    }
}
