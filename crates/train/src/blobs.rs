//! Content-addressed blobs between workers: a worker serves its updates, residuals, traces and
//! checkpoints by hash over plain HTTP (`GET /v1/blobs/{64 hex}`), and fetches others' the same
//! way. Nothing fetched is trusted: the caller decodes it strictly (the decoders know the model's
//! size) and recomputes its hash before using it, so a peer can waste a bounded download but never
//! change what a worker trains on. The address is always a hash the caller took from the ledger,
//! and the URL's path is built here from its hex, never from a peer's string.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::state::Hash32;

/// How long one blob download may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("blob {addr} from {base}: {reason}")]
    Transport { base: String, addr: String, reason: String },
    #[error("blob {addr} from {base}: HTTP {status}")]
    Status { base: String, addr: String, status: u16 },
    #[error("blob {addr} from {base}: larger than the {limit} bytes it may be")]
    TooLarge { base: String, addr: String, limit: usize },
    #[error("peer address {0:?} is not an http:// or https:// URL")]
    BadBase(String),
}

/// The blobs a worker serves, by address. Bounded: the oldest entries go first when full.
pub struct BlobStore {
    inner: Mutex<Entries>,
    max_entries: usize,
}

struct Entries {
    by_addr: BTreeMap<Hash32, (u64, Arc<Vec<u8>>)>,
    next: u64,
}

impl BlobStore {
    pub fn new(max_entries: usize) -> Arc<BlobStore> {
        Arc::new(BlobStore {
            inner: Mutex::new(Entries {
                by_addr: BTreeMap::new(),
                next: 0,
            }),
            max_entries: max_entries.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock cannot leave the map half-written (each operation is
        // one insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put(&self, addr: Hash32, bytes: Vec<u8>) {
        let mut e = self.lock();
        let seq = e.next;
        e.next += 1;
        e.by_addr.insert(addr, (seq, Arc::new(bytes)));
        while e.by_addr.len() > self.max_entries {
            let oldest = e.by_addr.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a);
            match oldest {
                Some(a) => {
                    e.by_addr.remove(&a);
                }
                None => break,
            }
        }
    }

    pub fn get(&self, addr: &Hash32) -> Option<Arc<Vec<u8>>> {
        self.lock().by_addr.get(addr).map(|(_, b)| b.clone())
    }

    pub fn len(&self) -> usize {
        self.lock().by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn parse_addr(s: &str) -> Option<Hash32> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

async fn get_blob(State(store): State<Arc<BlobStore>>, Path(addr): Path<String>) -> Response {
    let Some(addr) = parse_addr(&addr) else {
        return (StatusCode::BAD_REQUEST, "a blob address is 64 hex digits").into_response();
    };
    match store.get(&addr) {
        Some(bytes) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            bytes.as_ref().clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such blob").into_response(),
    }
}

/// The blob server's routes.
pub fn router(store: Arc<BlobStore>) -> Router {
    Router::new().route("/v1/blobs/{addr}", get(get_blob)).with_state(store)
}

/// Serves `store` on `listener` until the task is dropped.
pub async fn serve(store: Arc<BlobStore>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router(store)).await
}

/// Fetches blob `addr` from the worker at `base` (its `blob_uri` on the ledger), refusing more
/// than `limit` bytes. Blocking: call it from a thread that may wait.
pub fn fetch(base: &str, addr: &Hash32, limit: usize) -> Result<Vec<u8>, FetchError> {
    let base = base.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(FetchError::BadBase(base.to_string()));
    }
    let hex_addr = hex::encode(addr);
    let url = format!("{base}/v1/blobs/{hex_addr}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(FETCH_TIMEOUT))
        // A peer's redirect would take the request somewhere the ledger never named.
        .max_redirects(0)
        .build()
        .into();
    let transport = |reason: String| FetchError::Transport {
        base: base.to_string(),
        addr: hex_addr.clone(),
        reason,
    };
    let mut resp = agent.get(&url).call().map_err(|e| transport(e.to_string()))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(FetchError::Status {
            base: base.to_string(),
            addr: hex_addr,
            status,
        });
    }
    // Read one byte past the limit to tell "exactly the limit" from "more".
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(limit as u64 + 1)
        .read_to_vec()
        .map_err(|e| transport(e.to_string()))?;
    if bytes.len() > limit {
        return Err(FetchError::TooLarge {
            base: base.to_string(),
            addr: hex_addr,
            limit,
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_forgets_the_oldest_blob_when_full() {
        let s = BlobStore::new(2);
        s.put([1; 32], vec![1]);
        s.put([2; 32], vec![2]);
        s.put([3; 32], vec![3]);
        assert!(s.get(&[1; 32]).is_none());
        assert_eq!(s.get(&[3; 32]).map(|b| b.to_vec()), Some(vec![3]));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn only_64_hex_digits_are_an_address() {
        assert!(parse_addr(&"ab".repeat(32)).is_some());
        assert!(parse_addr(&"ab".repeat(31)).is_none());
        assert!(parse_addr(&format!("{}zz", "ab".repeat(31))).is_none());
        assert!(parse_addr("../../etc/passwd").is_none());
    }

    #[test]
    fn blobs_are_served_by_address_and_bounded_on_fetch() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let store = BlobStore::new(8);
        store.put([7; 32], vec![9; 1000]);
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binds");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = store.clone();
        std::thread::spawn(move || rt.block_on(serve(server, listener)));
        assert_eq!(fetch(&base, &[7; 32], 1000).expect("fetches"), vec![9; 1000]);
        assert!(matches!(fetch(&base, &[7; 32], 999), Err(FetchError::TooLarge { .. })));
        assert!(matches!(
            fetch(&base, &[8; 32], 1000),
            Err(FetchError::Status { status: 404, .. })
        ));
        assert!(matches!(
            fetch("file:///etc", &[7; 32], 10),
            Err(FetchError::BadBase(_))
        ));
    }
}
