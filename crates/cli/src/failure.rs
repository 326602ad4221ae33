//! How a command fails: one table of exit codes, a stable code per failure, and the one place
//! that prints an error (as `error: …` for people, as `{"error": {"code", "message"}}` on stdout
//! under `-o json`).
//!
//! Codes from a node or a provider are their `pazar_api::ErrorCode` names; failures of the CLI
//! itself have the codes of [`CLI_CODES`]. Scripts match on the exit code and the `code`, never
//! on the message.

use std::fmt;

use serde::Serialize;

use pazar_client::deploy::DeployError;
use pazar_client::keyring::KeyringError;
use pazar_client::tenant::{ChannelError, TenantError};
use pazar_client::ClientError;

/// The exit codes of `pazar`, the one table (printed by `pazar --help` and in README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what it was asked.
    Ok = 0,
    /// Bad usage or a local failure: arguments, files, ids, keys, passphrases.
    Local = 1,
    /// A transaction did not take effect: committed with an error (the fee was charged), dropped
    /// from the mempool, or refused at submission. Its result is printed (`-o json`: the
    /// transaction result, whose `status` and `receipt` say why).
    TxFailed = 2,
    /// A node or a provider answered with an error (not found, unauthenticated, bad manifest…).
    Refused = 3,
    /// The node or the provider cannot be reached (connection, TLS, certificate pin).
    Unreachable = 4,
    /// A wait ran out: no bid, services not serving, a transaction not committed in time.
    Timeout = 5,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// The exit code table as printed at the end of `pazar --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  bad usage or a local failure (arguments, files, ids, keys, passphrases)
  2  a transaction did not take effect (failed in its block, dropped or refused); its result is printed
  3  the node or the provider answered with an error
  4  the node or the provider cannot be reached
  5  a wait ran out (no bid, services not serving, a transaction not committed in time)

Errors: `error: MESSAGE` on stderr; with -o json, {\"error\": {\"code\": \"...\", \"message\": \"...\"}} on
stdout instead (a failed transaction prints its result). Codes: the node's or provider's error code
(exit 3), or one of the CLI's: usage, invalid_input, key, not_owner, groups_changed,
deployment_closed, internal, bad_bundle (1), tx_failed (2), bad_answer, proof_failed, update_failed,
bundle_refused (3), unreachable, fingerprint_mismatch, unavailable (4), tx_timeout, no_bids,
not_ready (5).
Logs and progress go to stderr: RUST_LOG=debug (or -v) for more, --log-format json for JSON lines.";

/// The CLI's own codes with the exit code each comes with.
pub const CLI_CODES: &[(&str, Exit)] = &[
    ("usage", Exit::Local),
    ("invalid_input", Exit::Local),
    ("key", Exit::Local),
    ("not_owner", Exit::Local),
    ("groups_changed", Exit::Local),
    ("deployment_closed", Exit::Local),
    ("internal", Exit::Local),
    ("bad_bundle", Exit::Local),
    ("tx_failed", Exit::TxFailed),
    ("bad_answer", Exit::Refused),
    ("proof_failed", Exit::Refused),
    ("update_failed", Exit::Refused),
    ("bundle_refused", Exit::Refused),
    ("unreachable", Exit::Unreachable),
    ("fingerprint_mismatch", Exit::Unreachable),
    ("unavailable", Exit::Unreachable),
    ("tx_timeout", Exit::Timeout),
    ("no_bids", Exit::Timeout),
    ("not_ready", Exit::Timeout),
];

/// A failure already classified: its exit code, its code, its message, and whether the command
/// has already printed what there is to say (a failed transaction's result).
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub code: String,
    pub message: String,
    pub reported: bool,
}

impl Failure {
    pub fn new(exit: Exit, code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure {
            exit,
            code: code.into(),
            message: message.into(),
            reported: false,
        }
    }

    /// A failure whose output the command has printed itself; `main` only exits with its code.
    pub fn reported(exit: Exit, code: &str, message: impl Into<String>) -> Failure {
        Failure {
            reported: true,
            ..Failure::new(exit, code, message)
        }
    }

    /// A local failure of the user's input (exit 1, `invalid_input`).
    pub fn input(message: impl Into<String>) -> Failure {
        Failure::new(Exit::Local, "invalid_input", message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit code and code of a node client's error.
fn of_client(e: &ClientError) -> (Exit, String) {
    match e {
        ClientError::Connect { .. } => (Exit::Unreachable, "unreachable".into()),
        ClientError::Api { code, .. } => (Exit::Refused, code.as_str().into()),
        ClientError::Decode(_) | ClientError::List { .. } => (Exit::Refused, "bad_answer".into()),
        ClientError::Request(_) => (Exit::Local, "invalid_input".into()),
        ClientError::Proof(_) => (Exit::Refused, "proof_failed".into()),
        ClientError::Timeout { .. } => (Exit::Timeout, "tx_timeout".into()),
    }
}

/// The exit code and code of a failed connection to a provider.
fn of_channel(e: &ChannelError) -> (Exit, String) {
    match e {
        ChannelError::Fingerprint { .. } => (Exit::Unreachable, "fingerprint_mismatch".into()),
        ChannelError::Setup(_) => (Exit::Local, "internal".into()),
        ChannelError::Connect { .. }
        | ChannelError::Handshake { .. }
        | ChannelError::Http { .. }
        | ChannelError::BadUri(_) => (Exit::Unreachable, "unreachable".into()),
    }
}

/// The exit code and code of a provider channel's error.
fn of_tenant(e: &TenantError) -> (Exit, String) {
    match e {
        TenantError::Channel(e) => of_channel(e),
        TenantError::Ledger { .. } => (Exit::Unreachable, "unreachable".into()),
        TenantError::Refused { code, .. } => (Exit::Refused, code.as_str().into()),
        TenantError::Decode(_) => (Exit::Refused, "bad_answer".into()),
        TenantError::Node(e) => of_client(e),
    }
}

fn of_deploy(e: &DeployError) -> (Exit, String) {
    match e {
        DeployError::Node(e) => of_client(e),
        DeployError::Provider(e) | DeployError::ManifestRefused { source: e, .. } => of_tenant(e),
        DeployError::Tx { .. } => (Exit::TxFailed, "tx_failed".into()),
        DeployError::NoBids { .. } => (Exit::Timeout, "no_bids".into()),
        DeployError::NotReady { .. } => (Exit::Timeout, "not_ready".into()),
        DeployError::NotOwner { .. } => (Exit::Local, "not_owner".into()),
        DeployError::Runtime(_) => (Exit::Local, "internal".into()),
        // Decided locally from what the ledger says, before anything is submitted.
        DeployError::GroupsChanged { .. } => (Exit::Local, "groups_changed".into()),
        DeployError::Closed(_) => (Exit::Local, "deployment_closed".into()),
        // The provider kept the earlier version serving and said why.
        DeployError::UpdateFailed { .. } => (Exit::Refused, "update_failed".into()),
        // `main` prints a dry run and exits by its verdict before this table is read.
        DeployError::DryRun(_) => (Exit::TxFailed, "tx_failed".into()),
    }
}

/// The exit code and code of any error: the first error in its chain that says more than
/// "something local failed" decides.
pub fn classify(e: &anyhow::Error) -> (Exit, String) {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.exit, f.code.clone());
        }
        if let Some(e) = cause.downcast_ref::<DeployError>() {
            return of_deploy(e);
        }
        if let Some(e) = cause.downcast_ref::<TenantError>() {
            return of_tenant(e);
        }
        if let Some(e) = cause.downcast_ref::<ChannelError>() {
            return of_channel(e);
        }
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return of_client(e);
        }
        if cause.downcast_ref::<KeyringError>().is_some() {
            return (Exit::Local, "key".into());
        }
    }
    (Exit::Local, "invalid_input".into())
}

/// What `-o json` prints for a failure: the shape of the node's own error envelope.
#[derive(Serialize)]
pub struct ErrorOut<'a> {
    pub error: ErrorBody<'a>,
}

#[derive(Serialize)]
pub struct ErrorBody<'a> {
    pub code: &'a str,
    pub message: &'a str,
}
