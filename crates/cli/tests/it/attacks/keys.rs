//! Keys and files: a key file is another party's bytes when it comes from a backup or another
//! machine. One that asks for unbounded key-derivation work (gigabytes of memory, millions of
//! passes) or is not a key file at all is refused at once with the reason, before any
//! derivation runs, and the keys beside it keep working.

use crate::common;

#[test]
fn a_key_file_demanding_unbounded_kdf_work_is_refused_before_deriving_and_other_keys_still_sign() {
    let net = common::devnet(200);
    let pass = [("PAZAR_KEYRING_PASSPHRASE", "correct horse")];
    let out = net.cli_raw(&["keys", "add", "mallory", "--keyring-backend", "file"], &pass);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = net.home.path().join("keys/mallory.json");
    let mut file: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("key file")).expect("json");
    // 4 TiB of memory and a million passes: a naive reader would try.
    file["sealed"]["m_kib"] = (u32::MAX).into();
    file["sealed"]["t"] = 1_000_000.into();
    std::fs::write(&path, serde_json::to_vec(&file).expect("json")).expect("write");
    let bob = net.address("bob");
    let out = net.cli_raw(&["tx", "send", &bob, "1upzr", "--from", "mallory"], &pass);
    let e = common::cli_error(&out);
    assert_eq!(e.code, "key", "a key file with unbounded parameters was used: {e:?}");
    assert!(
        e.message.contains("outside the accepted bounds"),
        "unclear reason: {e:?}"
    );

    // A huge file in the key directory is not read whole either.
    std::fs::write(net.home.path().join("keys/huge.json"), vec![b' '; 8 << 20]).expect("write");
    let out = net.cli_raw(&["keys", "show", "huge"], &[]);
    let e = common::cli_error(&out);
    assert_eq!(e.code, "key", "{e:?}");
    assert!(e.message.contains("not a key file"), "{e:?}");

    // The devnet's own keys are untouched and still sign.
    net.tx_ok(&["tx", "send", &bob, "1upzr", "--from", "alice"]);
}
