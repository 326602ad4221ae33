//! The keyring: one file per key under `<home>/keys/`, mode 0600.
//!
//! The `file` backend (the default) encrypts the secret with ChaCha20-Poly1305 under a key
//! derived from a passphrase by Argon2id; the passphrase comes from `PAZAR_KEYRING_PASSPHRASE`
//! or a prompt. The `test` backend keeps the secret in clear, for throwaway devnet keys only (as
//! Cosmos SDK's `--keyring-backend test`). A secret is never printed except by an explicit export.

use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Serialize};

use pazar_types::{Address, KeyScheme, SigningKey};

/// Argon2id cost: 64 MiB, 3 passes (OWASP's second recommended setting).
const KDF_M_KIB: u32 = 64 * 1024;
const KDF_T: u32 = 3;
const KDF_P: u32 = 1;
/// Bounds on the KDF parameters a key file may ask for. A key file can come from elsewhere
/// (a backup, another machine); its numbers must not make unlocking it take gigabytes of memory
/// or hours, nor be so weak that a stolen file is cheap to brute-force.
const KDF_M_KIB_RANGE: std::ops::RangeInclusive<u32> = (8 * 1024)..=(1024 * 1024);
const KDF_T_RANGE: std::ops::RangeInclusive<u32> = 1..=16;
const KDF_P_RANGE: std::ops::RangeInclusive<u32> = 1..=16;
const _: () = assert!(KDF_M_KIB >= *KDF_M_KIB_RANGE.start() && KDF_M_KIB <= *KDF_M_KIB_RANGE.end());
/// Largest key file read: a few hundred bytes are expected.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;
/// Longest key name.
pub const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key name {0:?} is invalid: use 1-64 letters, digits, '-', '_' or '.' (not starting with '.')")]
    BadName(String),
    #[error("no key named {name:?} in {dir} (see `pazar keys list`, or add one with `pazar keys add {name}`)")]
    NotFound { name: String, dir: String },
    #[error("a key named {0:?} already exists (delete it first or pick another name)")]
    Exists(String),
    #[error("wrong passphrase for key {0:?} (or the key file was altered)")]
    WrongPassphrase(String),
    #[error("a passphrase is needed for key {0:?}: set PAZAR_KEYRING_PASSPHRASE or run in a terminal")]
    NoPassphrase(String),
    #[error("key file {path} is unreadable: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("key error: {0}")]
    Key(String),
    #[error("keyring I/O error on {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    File,
    Test,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "file" => Ok(Backend::File),
            "test" => Ok(Backend::Test),
            _ => Err(format!("unknown keyring backend {s:?} (file or test)")),
        }
    }
}

/// What is kept secret; wiped from memory when dropped.
#[derive(Serialize, Deserialize)]
struct Secret {
    secret: String,
    mnemonic: Option<String>,
    index: u32,
}

impl Drop for Secret {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret.zeroize();
        self.mnemonic.zeroize();
    }
}

#[derive(Serialize, Deserialize)]
struct Sealed {
    salt: String,
    nonce: String,
    ciphertext: String,
    m_kib: u32,
    t: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    name: String,
    scheme: KeyScheme,
    address: Address,
    backend: Backend,
    #[serde(skip_serializing_if = "Option::is_none")]
    sealed: Option<Sealed>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plain: Option<Secret>,
}

/// Public facts of a stored key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    pub name: String,
    pub scheme: KeyScheme,
    pub address: Address,
    pub backend: Backend,
}

/// What `export` reveals.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub name: String,
    pub address: Address,
    pub scheme: KeyScheme,
    pub secret_hex: String,
    pub mnemonic: Option<String>,
    pub index: u32,
}

impl Drop for Exported {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.secret_hex.zeroize();
        self.mnemonic.zeroize();
    }
}

/// Where the passphrase comes from.
pub type PassphraseFn<'a> = &'a dyn Fn(&str, bool) -> Option<String>;

pub struct Keyring {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyringError + '_ {
    move |source| KeyringError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn check_name(name: &str) -> Result<(), KeyringError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(KeyringError::BadName(name.into()))
    }
}

fn derive(pass: &str, salt: &[u8], m: u32, t: u32, p: u32) -> Result<zeroize::Zeroizing<[u8; 32]>, KeyringError> {
    let params = Params::new(m, t, p, Some(32)).map_err(|e| KeyringError::Key(e.to_string()))?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(pass.as_bytes(), salt, &mut out[..])
        .map_err(|e| KeyringError::Key(e.to_string()))?;
    Ok(out)
}

impl Keyring {
    pub fn new(home: &Path) -> Keyring {
        Keyring { dir: home.join("keys") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Stores `key` under `name`. `mnemonic`/`index` are kept so `export` can give them back.
    pub fn add(
        &self,
        name: &str,
        key: &SigningKey,
        mnemonic: Option<&str>,
        index: u32,
        backend: Backend,
        passphrase: PassphraseFn,
    ) -> Result<KeyInfo, KeyringError> {
        check_name(name)?;
        let path = self.path(name);
        if path.exists() {
            return Err(KeyringError::Exists(name.into()));
        }
        let secret = Secret {
            secret: hex::encode(*key.secret_bytes()),
            mnemonic: mnemonic.map(str::to_string),
            index,
        };
        let (sealed, plain) = match backend {
            Backend::Test => (None, Some(secret)),
            Backend::File => {
                let pass = zeroize::Zeroizing::new(
                    passphrase(name, true).ok_or_else(|| KeyringError::NoPassphrase(name.into()))?,
                );
                let mut salt = [0u8; 16];
                let mut nonce = [0u8; 12];
                OsRng.fill_bytes(&mut salt);
                OsRng.fill_bytes(&mut nonce);
                let k = derive(&pass, &salt, KDF_M_KIB, KDF_T, KDF_P)?;
                let cipher = ChaCha20Poly1305::new(&Key::from(*k));
                let plaintext =
                    zeroize::Zeroizing::new(serde_json::to_vec(&secret).map_err(|e| KeyringError::Key(e.to_string()))?);
                let ct = cipher
                    .encrypt(&Nonce::from(nonce), plaintext.as_slice())
                    .map_err(|e| KeyringError::Key(e.to_string()))?;
                (
                    Some(Sealed {
                        salt: hex::encode(salt),
                        nonce: hex::encode(nonce),
                        ciphertext: hex::encode(ct),
                        m_kib: KDF_M_KIB,
                        t: KDF_T,
                        p: KDF_P,
                    }),
                    None,
                )
            }
        };
        let file = KeyFile {
            name: name.into(),
            scheme: key.scheme(),
            address: key.address(),
            backend,
            sealed,
            plain,
        };
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let json = serde_json::to_vec_pretty(&file).map_err(|e| KeyringError::Key(e.to_string()))?;
        write_private(&path, &json)?;
        Ok(KeyInfo {
            name: name.into(),
            scheme: file.scheme,
            address: file.address,
            backend,
        })
    }

    fn read(&self, name: &str) -> Result<KeyFile, KeyringError> {
        check_name(name)?;
        let path = self.path(name);
        let bytes = match read_bounded(&path, MAX_KEY_FILE_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::NotFound {
                    name: name.into(),
                    dir: self.dir.display().to_string(),
                })
            }
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| KeyringError::Corrupt {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn show(&self, name: &str) -> Result<KeyInfo, KeyringError> {
        let f = self.read(name)?;
        Ok(KeyInfo {
            name: f.name,
            scheme: f.scheme,
            address: f.address,
            backend: f.backend,
        })
    }

    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyringError> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&self.dir)(e)),
        };
        for e in entries {
            let e = e.map_err(io(&self.dir))?;
            let fname = e.file_name().to_string_lossy().into_owned();
            if let Some(name) = fname.strip_suffix(".json") {
                if check_name(name).is_ok() {
                    out.push(self.show(name)?);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn secret(&self, name: &str, passphrase: PassphraseFn) -> Result<(KeyFile, Secret), KeyringError> {
        let mut f = self.read(name)?;
        let corrupt = |reason: String| KeyringError::Corrupt {
            path: self.path(name).display().to_string(),
            reason,
        };
        let secret = match (f.plain.take(), &f.sealed) {
            (Some(p), _) => p,
            (None, Some(s)) => {
                if !KDF_M_KIB_RANGE.contains(&s.m_kib) || !KDF_T_RANGE.contains(&s.t) || !KDF_P_RANGE.contains(&s.p) {
                    return Err(corrupt(format!(
                        "key derivation parameters m={} KiB, t={}, p={} are outside the accepted bounds (m {}..={} KiB, t {}..={}, p {}..={})",
                        s.m_kib,
                        s.t,
                        s.p,
                        KDF_M_KIB_RANGE.start(),
                        KDF_M_KIB_RANGE.end(),
                        KDF_T_RANGE.start(),
                        KDF_T_RANGE.end(),
                        KDF_P_RANGE.start(),
                        KDF_P_RANGE.end()
                    )));
                }
                let pass = zeroize::Zeroizing::new(
                    passphrase(name, false).ok_or_else(|| KeyringError::NoPassphrase(name.into()))?,
                );
                let salt = hex::decode(&s.salt).map_err(|e| corrupt(e.to_string()))?;
                let nonce = hex::decode(&s.nonce).map_err(|e| corrupt(e.to_string()))?;
                let ct = hex::decode(&s.ciphertext).map_err(|e| corrupt(e.to_string()))?;
                let nonce: [u8; 12] = nonce.try_into().map_err(|_| corrupt("nonce must be 12 bytes".into()))?;
                if !(8..=64).contains(&salt.len()) {
                    return Err(corrupt(format!("salt must be 8 to 64 bytes, not {}", salt.len())));
                }
                let k = derive(&pass, &salt, s.m_kib, s.t, s.p)?;
                let pt = zeroize::Zeroizing::new(
                    ChaCha20Poly1305::new(&Key::from(*k))
                        .decrypt(&Nonce::from(nonce), ct.as_slice())
                        .map_err(|_| KeyringError::WrongPassphrase(name.into()))?,
                );
                serde_json::from_slice(&pt).map_err(|e| corrupt(e.to_string()))?
            }
            (None, None) => return Err(corrupt("no secret in the file".into())),
        };
        Ok((f, secret))
    }

    /// The signing key named `name`, checked against its recorded address.
    pub fn signer(&self, name: &str, passphrase: PassphraseFn) -> Result<SigningKey, KeyringError> {
        let (f, s) = self.secret(name, passphrase)?;
        let bytes: zeroize::Zeroizing<[u8; 32]> = hex::decode(&s.secret)
            .ok()
            .map(zeroize::Zeroizing::new)
            .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
            .map(zeroize::Zeroizing::new)
            .ok_or_else(|| KeyringError::Corrupt {
                path: self.path(name).display().to_string(),
                reason: "secret is not 32 hex bytes".into(),
            })?;
        let key = SigningKey::from_secret(f.scheme, &bytes).map_err(|e| KeyringError::Key(e.to_string()))?;
        if key.address() != f.address {
            return Err(KeyringError::Corrupt {
                path: self.path(name).display().to_string(),
                reason: "secret does not match the recorded address".into(),
            });
        }
        Ok(key)
    }

    pub fn export(&self, name: &str, passphrase: PassphraseFn) -> Result<Exported, KeyringError> {
        let (f, s) = self.secret(name, passphrase)?;
        Ok(Exported {
            name: f.name.clone(),
            address: f.address,
            scheme: f.scheme,
            secret_hex: s.secret.clone(),
            mnemonic: s.mnemonic.clone(),
            index: s.index,
        })
    }

    pub fn delete(&self, name: &str) -> Result<KeyInfo, KeyringError> {
        let info = self.show(name)?;
        let path = self.path(name);
        std::fs::remove_file(&path).map_err(io(&path))?;
        Ok(info)
    }
}

/// Writes a file readable only by its owner, atomically and durably
/// ([`crate::files::write_atomic`]).
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyringError> {
    crate::files::write_atomic(path, bytes, 0o600).map_err(io(path))
}

/// Reads at most `max` bytes of `path`; a longer file is an error, not a truncation.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    std::fs::File::open(path)?.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes: not a key file"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(p: &'static str) -> impl Fn(&str, bool) -> Option<String> {
        move |_, _| Some(p.to_string())
    }

    #[test]
    fn encrypted_key_round_trips_and_refuses_a_wrong_passphrase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kr = Keyring::new(dir.path());
        let key = SigningKey::from_secret(KeyScheme::Eth, &[7; 32]).expect("key");
        kr.add("alice", &key, None, 0, Backend::File, &pass("hunter2"))
            .expect("adds");
        let raw = std::fs::read_to_string(kr.path("alice")).expect("reads");
        assert!(!raw.contains(&hex::encode([7u8; 32])), "secret stored in clear");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(kr.path("alice")).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = kr.signer("alice", &pass("hunter2")).expect("decrypts");
        assert_eq!(back.address(), key.address());
        assert!(matches!(
            kr.signer("alice", &pass("wrong")),
            Err(KeyringError::WrongPassphrase(_))
        ));
        assert!(matches!(
            kr.add("alice", &key, None, 0, Backend::Test, &pass("x")),
            Err(KeyringError::Exists(_))
        ));
        assert!(matches!(kr.show("bob"), Err(KeyringError::NotFound { .. })));
        assert!(matches!(kr.show("../etc/passwd"), Err(KeyringError::BadName(_))));
        assert_eq!(kr.list().expect("lists").len(), 1);
    }

    #[test]
    fn a_key_file_asking_for_unbounded_kdf_work_or_too_large_is_refused_before_any_derivation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kr = Keyring::new(dir.path());
        let key = SigningKey::from_secret(KeyScheme::Ed25519, &[9; 32]).expect("key");
        kr.add("k", &key, None, 0, Backend::File, &pass("pw")).expect("adds");
        let raw = std::fs::read_to_string(kr.path("k")).expect("reads");
        let mut v: serde_json::Value = serde_json::from_str(&raw).expect("json");
        for (field, value) in [("m_kib", u32::MAX as u64), ("t", 1_000_000), ("p", 0), ("m_kib", 8)] {
            let mut evil = v.clone();
            evil["sealed"][field] = value.into();
            std::fs::write(kr.path("k"), serde_json::to_vec(&evil).expect("json")).expect("write");
            let e = kr.signer("k", &pass("pw")).expect_err("refused");
            assert!(
                e.to_string().contains("outside the accepted bounds"),
                "{field}={value}: {e}"
            );
        }
        v["padding"] = "x".repeat(100 << 10).into();
        std::fs::write(kr.path("k"), serde_json::to_vec(&v).expect("json")).expect("write");
        let e = kr.show("k").expect_err("refused");
        assert!(e.to_string().contains("not a key file"), "{e}");
    }
}
