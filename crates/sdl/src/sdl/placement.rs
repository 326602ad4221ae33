//! The placement profiles (`profiles.placement`): the provider attributes a group requires,
//! the auditors that must vouch for them (`signedBy`) and the price of each compute profile,
//! with Akash's denominations and auditors translated or refused.

use std::collections::{BTreeMap, BTreeSet};

use pazar_types::coin::{Dec, Price};
use pazar_types::market::{limits, Attribute, SignedBy};
use pazar_types::{Address, Denom};

use crate::names;
use crate::read::{join, key_pos, show, Ctx};
use crate::yaml::{Node, Pos};
use crate::Options;

/// Akash's USDC denomination over IBC (noble channel), used by pre-ACT files.
const AKASH_USDC_IBC: &str = "ibc/170C677610AC31DF0904FFE09CD3B5C657492170E7E52372E48756B71E56F2F1";

pub(super) struct Placement {
    pub(super) pos: Pos,
    pub(super) attributes: Vec<Attribute>,
    pub(super) signed_by: SignedBy,
    pub(super) pricing: BTreeMap<String, (Pos, Price)>,
}

/// Every placement of the `profiles.placement` mapping, by name.
pub(super) fn read_placements(
    cx: &mut Ctx,
    pl: &Node,
    opts: &Options,
    notes: &mut BTreeSet<String>,
) -> BTreeMap<String, Placement> {
    let mut placements = BTreeMap::new();
    for (name, node) in cx.map(pl, "profiles.placement").unwrap_or_default() {
        let path = format!("profiles.placement.{name}");
        check_group_name(cx, key_pos(pl, name).unwrap_or(node.pos), &path, name);
        if let Some(place) = read_placement(cx, node, &path, opts, notes) {
            placements.insert(name.to_string(), place);
        }
    }
    placements
}

fn check_group_name(cx: &mut Ctx, pos: Pos, path: &str, name: &str) {
    if !names::is_group_name(name) {
        cx.error(
            pos,
            path,
            format!(
                "placement names are 1-{} characters without spaces",
                limits::MAX_NAME_LEN
            ),
        );
    }
}

fn read_placement(
    cx: &mut Ctx,
    n: &Node,
    path: &str,
    opts: &Options,
    notes: &mut BTreeSet<String>,
) -> Option<Placement> {
    let f = cx.fields(n, path, &["attributes", "signedBy", "pricing"])?;
    let mut attributes = Vec::new();
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        for (k, v) in cx.map(a, &apath).unwrap_or_default() {
            if let Some(val) = cx.string(v, &join(&apath, k)) {
                attributes.push(Attribute::new(k, val));
            }
        }
    }
    attributes.sort();
    let mut signed_by = SignedBy::default();
    if let Some(s) = f.get("signedBy") {
        let spath = join(path, "signedBy");
        if let Some(sf) = cx.fields(s, &spath, &["allOf", "anyOf"]) {
            for (field, out) in [("allOf", &mut signed_by.all_of), ("anyOf", &mut signed_by.any_of)] {
                let Some(list) = sf.get(field) else { continue };
                let lpath = join(&spath, field);
                let items = cx.seq(list, &lpath).unwrap_or_default();
                // Akash auditors (akash1…) have no Pazar identity, so no Pazar provider can ever
                // show their signature. Dropping one from allOf, or every one of anyOf, would
                // run the workload on providers nobody vouched for; dropping some of anyOf while
                // a Pazar auditor remains only narrows the choice.
                let mut akash: Vec<(Pos, String)> = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let ipath = format!("{lpath}[{i}]");
                    let Some(a) = cx.string(item, &ipath) else { continue };
                    if let Ok(addr) = a.parse::<Address>() {
                        out.push(addr);
                    } else if a.starts_with("akash1") {
                        akash.push((item.pos, ipath));
                    } else {
                        cx.error(
                            item.pos,
                            &ipath,
                            format!("{a:?} is not an address (pazar1…, 0x…, or an Akash akash1… auditor)"),
                        );
                    }
                }
                let keep_any = field == "anyOf" && !out.is_empty();
                for (pos, ipath) in akash {
                    if keep_any {
                        cx.warn(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity and is left out; the Pazar auditors of anyOf still apply",
                        );
                    } else if opts.accept_unaudited {
                        cx.warn(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity and is left out, as you accepted (--accept-unaudited): providers no auditor vouched for may bid",
                        );
                    } else {
                        cx.error(
                            pos,
                            &ipath,
                            "an Akash auditor has no Pazar identity, so no provider could ever satisfy this requirement here; name a Pazar auditor (pazar1… or 0x…) instead, remove signedBy, or pass --accept-unaudited to run on providers nobody audited",
                        );
                    }
                }
            }
        }
    }
    let mut pricing = BTreeMap::new();
    if let Some(p) = f.need(cx, path, "pricing") {
        let ppath = join(path, "pricing");
        for (profile, v) in cx.map(p, &ppath).unwrap_or_default() {
            let vpath = join(&ppath, profile);
            let Some(pf) = cx.fields(v, &vpath, &["denom", "amount"]) else {
                continue;
            };
            let denom = pf.need(cx, &vpath, "denom").and_then(|d| {
                let s = cx.string(d, &join(&vpath, "denom"))?;
                let mapped = map_denom(&s, opts, notes);
                if mapped.is_none() {
                    cx.error(
                        d.pos,
                        &join(&vpath, "denom"),
                        format!(
                            "unknown denomination {s:?}: use {} (native) or {} (stable); Akash's uakt, uact and USDC are accepted",
                            opts.native, opts.stable
                        ),
                    );
                }
                mapped
            });
            let amount = pf.need(cx, &vpath, "amount").and_then(|a| {
                let apath = join(&vpath, "amount");
                let s = cx.string(a, &apath)?;
                match s.trim().parse::<Dec>() {
                    Ok(d) if d.is_zero() => {
                        cx.error(a.pos, &apath, "must be greater than 0");
                        None
                    }
                    Ok(d) if d > Dec::from_int(limits::MAX_UNIT_PRICE_UNITS).unwrap_or(Dec::ZERO) => {
                        cx.error(
                            a.pos,
                            &apath,
                            format!(
                                "{s} is above the highest unit price, {} per block",
                                limits::MAX_UNIT_PRICE_UNITS
                            ),
                        );
                        None
                    }
                    Ok(d) => Some(d),
                    Err(_) => {
                        cx.error(
                            a.pos,
                            &apath,
                            format!("{} is not a non-negative decimal amount", show(a)),
                        );
                        None
                    }
                }
            });
            if let (Some(denom), Some(amount)) = (denom, amount) {
                pricing.insert(
                    profile.to_string(),
                    (key_pos(p, profile).unwrap_or(v.pos), Price { denom, amount }),
                );
            }
        }
    }
    Some(Placement {
        pos: n.pos,
        attributes,
        signed_by,
        pricing,
    })
}

fn map_denom(s: &str, opts: &Options, notes: &mut BTreeSet<String>) -> Option<Denom> {
    if s == opts.native.as_str() {
        return Some(opts.native.clone());
    }
    if s == opts.stable.as_str() {
        return Some(opts.stable.clone());
    }
    match s {
        "uakt" => {
            notes.insert(format!(
                "pricing: uakt (Akash's native token) is read as {}, Pazar's native token, unit for unit",
                opts.native
            ));
            Some(opts.native.clone())
        }
        "uact" => {
            notes.insert(format!(
                "pricing: uact (Akash's USD-pegged compute token) is read as {}, Pazar's stable coin, unit for unit",
                opts.stable
            ));
            Some(opts.stable.clone())
        }
        AKASH_USDC_IBC => {
            notes.insert(format!(
                "pricing: Akash's USDC IBC denomination is read as {}, Pazar's stable coin, unit for unit",
                opts.stable
            ));
            Some(opts.stable.clone())
        }
        _ => None,
    }
}
