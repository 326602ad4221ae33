//! What SDL tests share: the options of the devnet, and the one edit that makes an Akash file
//! name a Pazar auditor.

#![allow(dead_code)]

use pazar_sdl::Options;
use pazar_types::{Address, Denom};

pub fn options() -> Options {
    Options::new(Denom::new("upzr").expect("denom"), Denom::new("uusd").expect("denom"))
}

/// The Pazar auditor that stands in for Akash's in tests.
pub fn pazar_auditor() -> Address {
    Address::Native([0xa1; 20])
}

/// `text` with every Akash auditor (`akash1` and its bech32 data) replaced by
/// [`pazar_auditor`]: the edit a tenant makes to keep an audit requirement on Pazar.
pub fn with_pazar_auditor(text: &str) -> String {
    let pazar = pazar_auditor().to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("akash1") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + "akash1".len()..];
        let n = tail
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            .count();
        out.push_str(&pazar);
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}
