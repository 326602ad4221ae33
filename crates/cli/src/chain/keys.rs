//! `pazar keys`: the keyring.

use std::io::{IsTerminal, Read};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use serde_json::json;

use pazar_client::keyring::{Backend, Keyring};
use pazar_types::{KeyScheme, SigningKey};

use crate::failure::Failure;
use crate::{home, ClientOpts};

use super::node::passphrase_prompt;
use super::output::{emit, scheme_name, text_of};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a new key from a fresh mnemonic (shown once).
    #[command(
        after_help = "Examples:\n  pazar keys add alice\n  pazar keys add bob --scheme eth\n  \
                            pazar keys add dev --keyring-backend test -o json"
    )]
    Add {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// `file` (encrypted, default) or `test` (clear text, throwaway devnet keys only).
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
    },
    /// Import a key from a BIP-39 mnemonic (MetaMask's phrase works with --scheme eth): typed at
    /// a prompt that does not echo it, or read from stdin when stdin is not a terminal. Never
    /// give it as an argument: it would stay in the shell's history and show in `ps`.
    #[command(
        after_help = "Examples:\n  pazar keys import alice                      # prompts, without echo\n  \
                            pazar keys import metamask --scheme eth --index 1\n  \
                            pazar keys import ci-key < mnemonic.txt      # non-interactive"
    )]
    Import {
        name: String,
        #[arg(long, default_value = "ed25519")]
        scheme: KeyScheme,
        /// Account index in the derivation path.
        #[arg(long, default_value_t = 0)]
        index: u32,
        #[arg(long, default_value = "file")]
        keyring_backend: Backend,
        /// Refused: the words of a mnemonic given on the command line.
        #[arg(hide = true, num_args = 0..)]
        words: Vec<String>,
    },
    /// Every key: name, scheme, address.
    #[command(after_help = "Examples:\n  pazar keys list\n  pazar keys list -o json")]
    List,
    /// A key's address.
    #[command(after_help = "Examples:\n  pazar keys show alice\n  pazar keys show alice -o json")]
    Show { name: String },
    /// Print the secret key and mnemonic. Anyone who sees them controls the account.
    #[command(after_help = "Examples:\n  pazar keys export alice --unsafe-show-secret")]
    Export {
        name: String,
        /// Required: confirms that the secret may be printed.
        #[arg(long)]
        unsafe_show_secret: bool,
    },
    /// Delete a key file (the account and its tokens stay on the chain).
    #[command(after_help = "Examples:\n  pazar keys delete old-key")]
    Delete { name: String },
}

/// Longest mnemonic read from stdin (24 words of at most 8 letters are 215 bytes).
const MAX_MNEMONIC: u64 = 4096;

/// The mnemonic of `keys import`: from a prompt without echo when stdin is a terminal, else
/// from stdin; words on the command line are refused.
fn read_mnemonic(words: &[String]) -> Result<String> {
    if !words.is_empty() {
        return Err(Failure::input(
            "a mnemonic given on the command line stays in the shell's history and shows in `ps`: \
             run `pazar keys import NAME` and type it at the prompt (not echoed), or pipe it on stdin \
             (`pazar keys import NAME < mnemonic.txt`)",
        )
        .into());
    }
    let raw = if std::io::stdin().is_terminal() {
        rpassword::prompt_password("mnemonic (not echoed): ").context("reading the mnemonic from the terminal")?
    } else {
        let mut raw = String::new();
        std::io::Read::take(std::io::stdin().lock(), MAX_MNEMONIC)
            .read_to_string(&mut raw)
            .context("reading the mnemonic from stdin")?;
        raw
    };
    let phrase = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if phrase.is_empty() {
        return Err(Failure::input("no mnemonic: type it at the prompt or pipe it on stdin").into());
    }
    Ok(phrase)
}

/// A keyring error, kept typed so it is reported with the code `key`.
pub fn key_err(e: pazar_client::keyring::KeyringError) -> anyhow::Error {
    anyhow::Error::new(e)
}

pub fn keys(cmd: KeysCmd, opts: &ClientOpts) -> Result<()> {
    let home = home::resolve(opts.home.clone());
    let kr = Keyring::new(&home);
    match cmd {
        KeysCmd::Add {
            name,
            scheme,
            keyring_backend,
        } => {
            let phrase = pazar_types::keys::generate_mnemonic(&mut rand_core::OsRng);
            let key = SigningKey::from_mnemonic(scheme, &phrase, 0).map_err(|e| anyhow!("{e}"))?;
            let info = kr
                .add(&name, &key, Some(&phrase), 0, keyring_backend, &passphrase_prompt)
                .map_err(key_err)?;
            let v = json!({"key": info, "mnemonic": phrase});
            emit(opts.output, &v, |_| {
                format!(
                    "added {} ({}) {}\n\nWrite down this mnemonic; it is the only way to recover the key:\n\n{phrase}",
                    info.name,
                    scheme_name(info.scheme),
                    info.address
                )
            });
        }
        KeysCmd::Import {
            name,
            scheme,
            index,
            keyring_backend,
            words,
        } => {
            let phrase = read_mnemonic(&words)?;
            let key = SigningKey::from_mnemonic(scheme, &phrase, index).map_err(|e| anyhow!("{e}"))?;
            let info = kr
                .add(&name, &key, Some(&phrase), index, keyring_backend, &passphrase_prompt)
                .map_err(key_err)?;
            let v = json!({ "key": info });
            emit(opts.output, &v, |_| format!("imported {} {}", info.name, info.address));
        }
        KeysCmd::List => {
            let list = kr.list().map_err(key_err)?;
            let v = json!({ "keys": list });
            emit(opts.output, &v, |_| {
                list.iter()
                    .map(|k| format!("{:<16} {:<8} {}", k.name, scheme_name(k.scheme), k.address))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
        }
        KeysCmd::Show { name } => {
            let info = kr.show(&name).map_err(key_err)?;
            emit(opts.output, &json!(info), |_| info.address.to_string());
        }
        KeysCmd::Export {
            name,
            unsafe_show_secret,
        } => {
            if !unsafe_show_secret {
                bail!("export prints the secret key; add --unsafe-show-secret to confirm");
            }
            let e = kr.export(&name, &passphrase_prompt).map_err(key_err)?;
            emit(opts.output, &json!(e), text_of);
        }
        KeysCmd::Delete { name } => {
            let info = kr.delete(&name).map_err(key_err)?;
            emit(opts.output, &json!({ "deleted": info }), |_| format!("deleted {name}"));
        }
    }
    Ok(())
}
