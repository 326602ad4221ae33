//! The node's settings in TOML: a new devnet writes `node.toml`, `pazar node start` runs from a
//! file named by `--config` with flags over it, and an unknown key is refused by name.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts `pazar ARGS --home HOME` and waits for its RPC: the child and its block time.
fn started(args: &[&str], home: &std::path::Path) -> (Child, u64) {
    let _ = std::fs::remove_file(home.join("rpc.addr"));
    let mut child = common::spawn(args, home);
    let url = common::wait_ready(home, &mut child, Duration::from_secs(30));
    let status = pazar_client::Rpc::new(&url).status().expect("status");
    (child, status.block_time_ms)
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_node_starts_from_its_toml_file_with_flags_over_it_and_an_unknown_key_is_refused_by_name() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let (devnet, block_time) = started(&["devnet", "--rpc-listen", "127.0.0.1:0", "--block-time-ms", "150"], h);
    stop(devnet);
    assert_eq!(block_time, 150);
    let written = std::fs::read_to_string(h.join("node.toml")).expect("the devnet wrote node.toml");
    assert!(written.contains("block_time_ms = 150"), "{written}");

    // Another file, named by --config: its settings run the node.
    let other = h.join("other.toml");
    std::fs::write(&other, written.replace("block_time_ms = 150", "block_time_ms = 250")).expect("writes");
    let other_arg = other.to_str().expect("a UTF-8 path");
    let (node, block_time) = started(&["node", "start", "--config", other_arg], h);
    stop(node);
    assert_eq!(block_time, 250);
    // A flag wins over the file.
    let (node, block_time) = started(&["node", "start", "--config", other_arg, "--block-time-ms", "300"], h);
    stop(node);
    assert_eq!(block_time, 300);

    // A misspelt key is refused, naming it, before anything starts.
    let bad = h.join("bad.toml");
    std::fs::write(&bad, format!("{written}block_time = 5\n")).expect("writes");
    let out = Command::new(common::bin())
        .args(["node", "start", "--config", bad.to_str().expect("UTF-8"), "--home"])
        .arg(h)
        .stdin(Stdio::null())
        .output()
        .expect("runs pazar");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `block_time`") && err.contains("bad.toml"),
        "{err}"
    );
}
