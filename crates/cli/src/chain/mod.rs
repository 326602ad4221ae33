//! `pazar devnet`, `node start`, `keys`, `tx` and `query`: the commands that talk to a chain,
//! one file each, and how they print ([`output`]).

mod keys;
mod node;
mod output;
mod query;
pub(crate) mod state_sync;
mod tx;

pub use keys::{key_err, keys, KeysCmd};
pub use node::{devnet, node_start, passphrase_prompt};
pub use output::with_spinner;
pub use query::{query, QueryCmd};
pub use tx::{
    client_err, close_reason, configure, dry_run_of, report_dry_run, signer, submit_as, submit_mode, tx, tx_failed,
    tx_failure, tx_ok, tx_text, TxCmd, TxOpts,
};
