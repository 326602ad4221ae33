//! One way to name market objects in every command:
//!
//! | object     | form                                   | example                |
//! |------------|----------------------------------------|------------------------|
//! | deployment | `[OWNER/]DSEQ`                         | `12`, `alice/12`       |
//! | group      | `[OWNER/]DSEQ/GSEQ`                    | `12/1`                 |
//! | order      | `[OWNER/]DSEQ/GSEQ/OSEQ`               | `12/1/1`               |
//! | bid, lease | `[OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER`      | `12/1/1/provider`      |
//!
//! OWNER and PROVIDER are addresses (`pazar1…`, `0x…`) or names of keys in the keyring. An id
//! without its owner is the signer's (`--from`): the number of parts tells which form it is, so
//! `pazar lease status 12/1/1/pazar1…` names the lease of one's own deployment 12.

use std::path::Path;

use anyhow::{anyhow, Result};

use pazar_client::keyring::Keyring;
use pazar_types::market::GroupId;
use pazar_types::{Address, BidId, DeploymentId, OrderId};

use crate::failure::Failure;

/// The kinds of ids and their forms, for messages and help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Deployment,
    Group,
    Order,
    Lease,
    Bid,
}

impl Kind {
    /// Parts after the owner.
    fn parts(self) -> usize {
        match self {
            Kind::Deployment => 1,
            Kind::Group => 2,
            Kind::Order => 3,
            Kind::Lease | Kind::Bid => 4,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "deployment",
            Kind::Group => "group",
            Kind::Order => "order",
            Kind::Lease => "lease",
            Kind::Bid => "bid",
        }
    }

    pub fn form(self) -> &'static str {
        match self {
            Kind::Deployment => "[OWNER/]DSEQ",
            Kind::Group => "[OWNER/]DSEQ/GSEQ",
            Kind::Order => "[OWNER/]DSEQ/GSEQ/OSEQ",
            Kind::Lease | Kind::Bid => "[OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER",
        }
    }
}

/// An id's parts: its owner and its numbers (and provider), unresolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    owner: Address,
    dseq: u64,
    gseq: u32,
    oseq: u32,
    provider: Option<Address>,
}

/// Parses `s` as an id of `kind`. `resolve` turns an OWNER or PROVIDER part (an address or a key
/// name) into an address; `signer` gives the owner when the id leaves it out.
fn parse(
    kind: Kind,
    s: &str,
    resolve: &dyn Fn(&str) -> Result<Address>,
    signer: &dyn Fn() -> Result<Address>,
) -> Result<Parts> {
    let bad = |why: String| -> anyhow::Error {
        Failure::input(format!("{} id {s:?} must be {}: {why}", kind.name(), kind.form())).into()
    };
    let all: Vec<&str> = s.split('/').collect();
    let n = kind.parts();
    let (owner, rest) = if all.len() == n + 1 {
        (resolve(all[0]).map_err(|e| bad(format!("owner: {e}")))?, &all[1..])
    } else if all.len() == n {
        let owner = signer().map_err(|e| {
            Failure::input(format!(
                "{} id {s:?} leaves out the owner, which is then the signer: {e}",
                kind.name()
            ))
        })?;
        (owner, &all[..])
    } else {
        return Err(bad(format!("{} part(s)", all.len())));
    };
    let num = |what: &str, v: &str| -> Result<u64> {
        v.parse::<u64>()
            .map_err(|_| bad(format!("{what} {v:?} is not a number")))
    };
    let small = |what: &str, v: &str| -> Result<u32> {
        u32::try_from(num(what, v)?).map_err(|_| bad(format!("{what} {v:?} is too large")))
    };
    Ok(Parts {
        owner,
        dseq: num("DSEQ", rest[0])?,
        gseq: if n > 1 { small("GSEQ", rest[1])? } else { 0 },
        oseq: if n > 2 { small("OSEQ", rest[2])? } else { 0 },
        provider: if n > 3 {
            Some(resolve(rest[3]).map_err(|e| bad(format!("provider: {e}")))?)
        } else {
            None
        },
    })
}

/// Resolves ids for one command: key names through the keyring of `home`, the owner left out
/// through `from` (the `--from` key name or address), read only when an id needs it.
pub struct Ids<'a> {
    home: &'a Path,
    from: Option<&'a str>,
}

/// An address, or the address of a key in the keyring (no passphrase needed).
pub fn address(home: &Path, s: &str) -> Result<Address> {
    if let Ok(a) = s.parse::<Address>() {
        return Ok(a);
    }
    Keyring::new(home)
        .show(s)
        .map(|k| k.address)
        .map_err(|_| anyhow!("{s:?} is neither an address nor a key name"))
}

impl<'a> Ids<'a> {
    pub fn new(home: &'a Path, from: Option<&'a str>) -> Ids<'a> {
        Ids { home, from }
    }

    fn parts(&self, kind: Kind, s: &str) -> Result<Parts> {
        let resolve = |p: &str| address(self.home, p);
        let signer = || match self.from {
            Some(f) => address(self.home, f),
            None => Err(anyhow!("give OWNER/… or --from KEY")),
        };
        parse(kind, s, &resolve, &signer)
    }

    pub fn deployment(&self, s: &str) -> Result<DeploymentId> {
        let p = self.parts(Kind::Deployment, s)?;
        Ok(DeploymentId {
            owner: p.owner,
            dseq: p.dseq,
        })
    }

    pub fn group(&self, s: &str) -> Result<GroupId> {
        let p = self.parts(Kind::Group, s)?;
        Ok(GroupId {
            owner: p.owner,
            dseq: p.dseq,
            gseq: p.gseq,
        })
    }

    pub fn order(&self, s: &str) -> Result<OrderId> {
        let p = self.parts(Kind::Order, s)?;
        Ok(OrderId {
            owner: p.owner,
            dseq: p.dseq,
            gseq: p.gseq,
            oseq: p.oseq,
        })
    }

    fn bid_like(&self, kind: Kind, s: &str) -> Result<BidId> {
        let p = self.parts(kind, s)?;
        Ok(BidId {
            owner: p.owner,
            dseq: p.dseq,
            gseq: p.gseq,
            oseq: p.oseq,
            provider: p
                .provider
                .ok_or_else(|| anyhow!("a {} id names its provider", kind.name()))?,
        })
    }

    pub fn lease(&self, s: &str) -> Result<BidId> {
        self.bid_like(Kind::Lease, s)
    }

    pub fn bid(&self, s: &str) -> Result<BidId> {
        self.bid_like(Kind::Bid, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(b: u8) -> Address {
        Address::Native([b; 20])
    }

    /// `alice` is key 1, `provider` key 2, and the signer is alice.
    fn check(kind: Kind, s: &str, signer: Option<Address>) -> Result<Parts> {
        let resolve = |p: &str| match p {
            "alice" => Ok(addr(1)),
            "provider" => Ok(addr(2)),
            p => p.parse::<Address>().map_err(|e| anyhow!("{e}")),
        };
        let sign = || signer.ok_or_else(|| anyhow!("give OWNER/… or --from KEY"));
        parse(kind, s, &resolve, &sign)
    }

    #[test]
    fn an_id_without_its_owner_is_the_signer_s() {
        let full = format!("{}/12/1/1/{}", addr(1), addr(2));
        let a = check(Kind::Lease, &full, None).expect("full id");
        let b = check(Kind::Lease, &format!("12/1/1/{}", addr(2)), Some(addr(1))).expect("short id");
        let c = check(Kind::Lease, "alice/12/1/1/provider", None).expect("key names");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(
            check(Kind::Deployment, "12", Some(addr(1))).expect("dseq").owner,
            addr(1)
        );
        let g = check(Kind::Group, "alice/12/3", None).expect("group");
        assert_eq!((g.dseq, g.gseq), (12, 3));
    }

    #[test]
    fn a_malformed_id_names_its_form_and_what_is_wrong() {
        let e = check(Kind::Lease, "12/1", Some(addr(1))).expect_err("too few parts");
        assert!(
            e.to_string().contains("[OWNER/]DSEQ/GSEQ/OSEQ/PROVIDER: 2 part(s)"),
            "{e}"
        );
        let e = check(Kind::Order, "12/x/1", Some(addr(1))).expect_err("not a number");
        assert!(e.to_string().contains("GSEQ \"x\" is not a number"), "{e}");
        let e = check(Kind::Deployment, "7", None).expect_err("no signer");
        assert!(e.to_string().contains("--from KEY"), "{e}");
        let e = check(Kind::Group, "alice/1/99999999999", None).expect_err("gseq overflows");
        assert!(e.to_string().contains("too large"), "{e}");
        let e = check(Kind::Deployment, "nobody/7", None).expect_err("unknown owner");
        assert!(e.to_string().contains("owner:"), "{e}");
    }
}
