//! What users of a CLI rely on, against the real binary: documented exit codes and JSON errors
//! under `-o json`, completion scripts for every shell, one id form with the owner optional,
//! and a mnemonic imported from stdin without a terminal.

use crate::common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `pazar ARGS` with `stdin` piped in (nothing when `None`).
fn pazar(args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = Command::new(common::bin())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("PAZAR_NODE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs pazar");
    let mut input = c.stdin.take().expect("stdin");
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).expect("writes stdin");
    }
    drop(input);
    c.wait_with_output().expect("pazar ends")
}

/// The one JSON document a command printed on stdout.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The code and exit status of a failed command under `-o json`.
fn error_of(out: &Output) -> (Option<i32>, String) {
    let v = json(out);
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code: {v}"));
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (out.status.code(), code.to_string())
}

/// A node URL nothing listens on.
fn dead_node() -> String {
    format!("http://127.0.0.1:{}", common::free_port())
}

#[test]
fn an_unreachable_node_exits_4_with_a_json_error_on_stdout() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path().to_str().expect("utf8");
    let node = dead_node();
    let out = pazar(&["query", "status", "--node", &node, "--home", h, "-o", "json"], None);
    assert_eq!(error_of(&out), (Some(4), "unreachable".into()));
    // Text: the message on stderr, nothing on stdout, the same exit code.
    let out = pazar(&["query", "status", "--node", &node, "--home", h], None);
    assert_eq!(out.status.code(), Some(4));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: cannot reach the node"));
    // A transaction command fails the same way before it signs anything.
    let out = pazar(
        &[
            "tx", "send", "bob", "1upzr", "--from", "alice", "--node", &node, "--home", h, "-o", "json",
        ],
        None,
    );
    // No key alice in this home: a local failure comes first, exit 1 with the code `key`.
    assert_eq!(error_of(&out), (Some(1), "key".into()));
}

#[test]
fn usage_errors_and_bad_ids_exit_1_with_their_codes() {
    let out = pazar(&["query", "nonsense", "-o", "json"], None);
    assert_eq!(error_of(&out), (Some(1), "usage".into()));
    let out = pazar(&["query", "nonsense"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = pazar(&["query", "lease", "12/1", "--node", &dead_node(), "-o", "json"], None);
    let (exit, code) = error_of(&out);
    assert_eq!((exit, code.as_str()), (Some(1), "invalid_input"));
    assert!(json(&out)["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("[OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER")));
    // --help is not an error.
    let out = pazar(&["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes:"));
}

#[test]
fn completions_generate_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = pazar(&["completions", shell], None);
        assert!(
            out.status.success(),
            "{shell}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let script = String::from_utf8_lossy(&out.stdout);
        for word in ["pazar", "lease", "send-manifest", "why-no-bids"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = pazar(&["completions", "tcsh"], None);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn keys_import_reads_the_mnemonic_from_stdin_and_refuses_it_as_an_argument() {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path().to_str().expect("utf8");
    let test = ["--keyring-backend", "test", "--home", h, "-o", "json"];
    let added = pazar(&[&["keys", "add", "first"][..], &test].concat(), None);
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let added = json(&added);
    let phrase = added["mnemonic"].as_str().expect("mnemonic").to_string();

    // Piped, with stray whitespace and line breaks: no terminal, no prompt.
    let spaced = format!("  {}\n", phrase.replace(' ', "   \n "));
    let out = pazar(&[&["keys", "import", "second"][..], &test].concat(), Some(&spaced));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(json(&out)["key"]["address"], added["key"]["address"]);

    // Words on the command line are refused, and no key is written.
    let words: Vec<&str> = phrase.split(' ').collect();
    let out = pazar(&[&["keys", "import", "third"][..], &words, &test].concat(), None);
    assert_eq!(error_of(&out), (Some(1), "invalid_input".into()));
    assert!(json(&out)["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("shell's history")));
    let out = pazar(&["keys", "show", "third", "--home", h, "-o", "json"], None);
    assert_eq!(error_of(&out), (Some(1), "key".into()));

    // Nothing on stdin: said so.
    let out = pazar(&[&["keys", "import", "fourth"][..], &test].concat(), Some(""));
    assert_eq!(error_of(&out), (Some(1), "invalid_input".into()));
}

fn groups_file(dir: &std::path::Path) -> std::path::PathBuf {
    super::devnet::groups_file_priced(dir, 1000)
}

#[test]
fn an_id_with_or_without_its_owner_names_the_same_lease() {
    let net = common::devnet(100);
    let alice = net.address("alice");
    let provider = net.address("provider");
    net.tx_ok(&[
        "tx",
        "provider",
        "create",
        "--from",
        "provider",
        "--host-uri",
        // Nothing listens there: the lease's provider cannot be reached.
        &format!("https://127.0.0.1:{}", common::free_port()),
    ]);
    let gf = groups_file(net.home.path());
    let gf = gf.to_str().expect("utf8");
    net.tx_ok(&[
        "tx",
        "deployment",
        "create",
        "--from",
        "alice",
        "--dseq",
        "12",
        "--groups",
        gf,
        "--deposit",
        "5000000uusd",
    ]);
    // Key names stand for addresses, in the owner's place and the provider's.
    net.tx_ok(&[
        "tx",
        "bid",
        "create",
        "alice/12/1/1",
        "--from",
        "provider",
        "--price",
        "800uusd",
        "--deposit",
        "500000uusd",
    ]);
    // The tenant leaves out the owner: it is the signer.
    net.tx_ok(&["tx", "lease", "create", "12/1/1/provider", "--from", "alice"]);

    let full = net.cli(&["query", "lease", &format!("{alice}/12/1/1/{provider}")]);
    assert_eq!(full["lease"]["state"], "active", "{full}");
    for short in [
        vec!["query", "lease", "12/1/1/provider", "--from", "alice"],
        vec!["query", "lease", "alice/12/1/1/provider"],
        vec!["query", "lease", &format!("12/1/1/{provider}"), "--from", &alice],
    ] {
        assert_eq!(net.cli(&short)["lease"], full["lease"], "{short:?}");
    }
    let d = net.cli(&["query", "deployment", "12", "--from", "alice"]);
    assert_eq!(d["deployment"]["state"], "active", "{d}");

    // Without --from an id that leaves out its owner cannot be resolved: exit 1, said why.
    let out = net.cli_raw(&["query", "lease", "12/1/1/provider"], &[]);
    let (exit, code) = error_of(&out);
    assert_eq!((exit, code.as_str()), (Some(1), "invalid_input"));
    assert!(json(&out)["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("--from")));

    // Something the node does not have: its own code, exit 3.
    let out = net.cli_raw(&["query", "lease", "12/1/2/provider", "--from", "alice"], &[]);
    assert_eq!(error_of(&out), (Some(3), "not_found".into()));

    // The lease's provider cannot be reached: exit 4 and a JSON error.
    let out = net.cli_raw(&["lease", "status", "12/1/1/provider", "--from", "alice"], &[]);
    assert_eq!(error_of(&out), (Some(4), "unreachable".into()));

    // One's own group by its short id; another's deployment is refused before signing.
    net.tx_ok(&["tx", "group", "pause", "12/1", "--from", "alice"]);
    let out = net.cli_raw(&["deployment", "close", "alice/12", "--from", "bob"], &[]);
    assert_eq!(error_of(&out), (Some(1), "not_owner".into()));

    // A failed transaction prints its result and exits 2 (the group is paused: no lease to close).
    // `--no-simulate` broadcasts it, so that it fails in its block rather than before.
    let out = net.cli_raw(
        &["lease", "close", "12/1/1/provider", "--from", "alice", "--no-simulate"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(json(&out)["tx"]["status"].is_string(), "{}", json(&out));
}
