//! The one rule that decides whether a provider may serve an order's group. The ledger applies
//! it to every `CreateBid`, the provider's bid engine applies it before it counts free capacity,
//! and "why no bids" applies it to tell a tenant what each provider lacks. Being one function,
//! the three cannot drift apart; `crates/provider/tests/it/matching.rs` holds them to it.
//!
//! Capacity (free CPU, memory, storage, GPU count) and price are not part of it: only the
//! provider knows them, and its bid engine checks them after this rule.
//!
//! # The rule, and how it relates to Akash's
//! Checked in this order; the first failure is the answer:
//!
//! 1. **Placement attributes.** Every `requirements.attributes` entry must be met by one of the
//!    provider's own attributes with an equal value and a key that the required key matches.
//!    Keys are compared as Akash compares them (`AttributesSubsetOf` in node
//!    `types/v1beta3/attribute.go`, Go's `filepath.Match`): a `*` (which validation allows only
//!    at the end of a required key) matches any run of characters *except `/`*. So `region*`
//!    matches `region` and `region-eu` but not `region/eu`, and `capabilities/cpu/*` matches
//!    `capabilities/cpu/arch` but not `capabilities/cpu/arch/x86`. (`?`, `[` and `\` are globs
//!    in Go too, but attribute keys cannot contain them, so they are compared literally here.)
//! 2. **Auditors (`signedBy`).** An auditor vouches for a provider when it holds an
//!    attestation for it whose signed attributes meet every placement attribute by the same
//!    rule (Akash's `GroupSpec.MatchRequirements`). Every `allOf` auditor must vouch, and one
//!    `anyOf` auditor at least. With no placement attributes, any attestation vouches (the
//!    ledger keeps no empty one). Akash's chain, once `signedBy` is set, looks only at the
//!    auditors' attributes and not the provider's own; Akash's bid engine checks both
//!    (`MatchAttributes`, then `MatchRequirements`). Pazar checks both everywhere, so its
//!    ledger accepts exactly the bids an honest Pazar or Akash bid engine would make.
//! 3. Then each resource unit in order:
//!    - **GPU.** The provider's attributes under `capabilities/gpu/`, prefix removed, are what
//!      it offers (Akash's `GetCapabilitiesMap("gpu")`). A unit with GPUs is served when any of
//!      its GPU attributes matches any offered one, key by the glob rule and value equal
//!      (Akash's `AnyIN`). The SDL writes a unit's GPU as `vendor/<v>/model/<m>[/ram/<r>]
//!      [/interface/<i>] = true`, or `vendor/<v>/model/*` for any model of a vendor; keys are
//!      compared as text, so a provider advertises every form it satisfies:
//!      `…/model/<m>`, `…/model/<m>/ram/<r>`, `…/model/<m>/ram/<r>/interface/<i>` and
//!      `…/model/<m>/interface/<i>`, as Akash providers do (the provider's inventory writes
//!      them). The bid engine picks free GPUs with the same [`gpu_offered`].
//!    - **Storage.** Provider attributes `capabilities/storage/<id>/<key>` form one group per
//!      `<id>` (Akash's `GetCapabilitiesGroup("storage")`); a volume with attributes (`class`,
//!      `persistent`) is served when all of them are in one group (Akash's `IN`). One
//!      difference: Akash's SDL writes `persistent` (`false` by default) on every volume with
//!      attributes and its providers conventionally state it in each group, while Pazar's SDL
//!      writes only `persistent=true` and Pazar providers often advertise a class alone; a group
//!      that does not state `persistent` therefore accepts a volume either way (Akash would
//!      refuse), and one that states it must agree.
//!    - **Leased IP.** A unit with an `ip` endpoint needs the provider attribute
//!      [`LEASED_IP_ATTRIBUTE`]` = true`. Akash's chain has no such check (its provider refuses
//!      when its IP operator is off); without it a Pazar provider would serve the endpoint from
//!      a shared host port, which is not what the tenant asked for.
//!
//! Akash's bid engine also declines orders that lack attributes its operator configured and
//! units with more volumes than a configured maximum; Pazar has neither setting.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::address::Address;
use crate::market::{Attribute, EndpointKind, GroupSpec, StorageVolume};

/// Why a provider does not satisfy an order's group. `Display` is meant for tenants; the
/// serialized form names the kind under `mismatch` for tools that count them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "mismatch", rename_all = "snake_case")]
pub enum Mismatch {
    #[error("the placement requires attribute {key}={value}, which the provider does not have")]
    Attribute { key: String, value: String },
    #[error("auditor {auditor} (signedBy.allOf) has not signed the placement's attributes for this provider")]
    AllOfAuditor { auditor: Address },
    #[error(
        "none of the auditors of signedBy.anyOf ({}) has signed the placement's attributes for this provider",
        list(auditors)
    )]
    AnyOfAuditor { auditors: Vec<Address> },
    #[error("resource unit {unit} wants a GPU ({wanted}) that the provider does not advertise")]
    Gpu { unit: u32, wanted: String },
    #[error(
        "resource unit {unit} wants storage {wanted} for volume {volume:?}; the provider advertises no \
         capabilities/storage/<n>/ group with it"
    )]
    Storage { unit: u32, volume: String, wanted: String },
    #[error(
        "resource unit {unit} wants a leased IP address; the provider does not advertise {}=true",
        LEASED_IP_ATTRIBUTE
    )]
    LeasedIp { unit: u32 },
}

fn list(auditors: &[Address]) -> String {
    auditors.iter().map(Address::to_string).collect::<Vec<_>>().join(", ")
}

/// The provider attribute saying it leases dedicated IP addresses (the key Akash's console
/// reads).
pub const LEASED_IP_ATTRIBUTE: &str = "feat-endpoint-ip";

/// Where a provider's GPU capabilities live among its attributes.
pub const GPU_CAPABILITY_PREFIX: &str = "capabilities/gpu/";

/// Where a provider's storage groups live among its attributes: `capabilities/storage/<id>/<key>`.
pub const STORAGE_CAPABILITY_PREFIX: &str = "capabilities/storage/";

/// Whether the (possibly globbed) required key `pattern` matches `key`, as Go's `filepath.Match`
/// does for the keys attributes may have: `*` matches any run of characters other than `/`.
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let (mut p, mut k) = (pattern.split('/'), key.split('/'));
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some(ps), Some(ks)) if segment_matches(ps.as_bytes(), ks.as_bytes()) => {}
            _ => return false,
        }
    }
}

/// Glob match within one `/`-free segment: `*` matches any run of bytes, the rest literally.
/// Linear-time wildcard matching (backtracking to the last `*` only), so no pattern is costly.
fn segment_matches(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if p.get(pi) == Some(&b'*') {
            star = Some((pi, si));
            pi += 1;
        } else if p.get(pi) == Some(&s[si]) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            // Let the last `*` take one more byte and retry from just after it.
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether the attribute `have` meets the requirement `want`: its key matches and its value is
/// equal (Akash's `Attribute.SubsetOf`).
pub fn attribute_meets(want: &Attribute, have_key: &str, have_value: &str) -> bool {
    want.value == have_value && key_matches(&want.key, have_key)
}

/// Ok when every required attribute is met by one in `have`; otherwise the first that is not.
pub fn attributes_subset(required: &[Attribute], have: &[Attribute]) -> Result<(), Mismatch> {
    match required
        .iter()
        .find(|r| !have.iter().any(|h| attribute_meets(r, &h.key, &h.value)))
    {
        Some(r) => Err(Mismatch::Attribute {
            key: r.key.clone(),
            value: r.value.clone(),
        }),
        None => Ok(()),
    }
}

/// Whether an auditor whose attestation for the provider is `signed` (`None`: it has none)
/// vouches for the placement attributes `required`.
pub fn auditor_vouches(required: &[Attribute], signed: Option<&[Attribute]>) -> bool {
    signed.is_some_and(|s| attributes_subset(required, s).is_ok())
}

/// Whether a unit asking for GPUs described by `wanted` can be served by what `offered` describes
/// (`(key, value)` pairs relative to [`GPU_CAPABILITY_PREFIX`], from a provider's attributes or
/// from one concrete GPU): any wanted attribute met by any offered one. A unit naming no GPU
/// attribute takes any GPU, as on Akash (the SDL and the ledger's validation never leave it
/// empty).
pub fn gpu_offered<'a, I>(wanted: &[Attribute], offered: I) -> bool
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
    I::IntoIter: Clone,
{
    let offered = offered.into_iter();
    wanted.is_empty()
        || wanted
            .iter()
            .any(|w| offered.clone().any(|(k, v)| attribute_meets(w, k, v)))
}

/// A provider's GPU capabilities: its attributes under [`GPU_CAPABILITY_PREFIX`], prefix removed.
pub fn gpu_capabilities(provider_attrs: &[Attribute]) -> impl Iterator<Item = (&str, &str)> + Clone {
    provider_attrs
        .iter()
        .filter_map(|a| a.key.strip_prefix(GPU_CAPABILITY_PREFIX).map(|k| (k, a.value.as_str())))
}

/// A provider's storage groups: `capabilities/storage/<id>/<key> = value` gathered by `<id>`.
/// Keys with more or fewer parts are not part of any group (as on Akash).
fn storage_groups(provider_attrs: &[Attribute]) -> BTreeMap<&str, Vec<(&str, &str)>> {
    let mut groups: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for a in provider_attrs {
        let Some(rest) = a.key.strip_prefix(STORAGE_CAPABILITY_PREFIX) else {
            continue;
        };
        let Some((id, key)) = rest.split_once('/') else {
            continue;
        };
        if id.is_empty() || key.is_empty() || key.contains('/') {
            continue;
        }
        groups.entry(id).or_default().push((key, a.value.as_str()));
    }
    groups
}

/// Whether one storage group serves a volume with attributes `wanted`: each is in the group, or
/// is `persistent` and the group does not state persistence (see the module's notes).
fn storage_group_serves(wanted: &[Attribute], group: &[(&str, &str)]) -> bool {
    wanted.iter().all(|w| {
        group.iter().any(|(k, v)| attribute_meets(w, k, v))
            || (w.key == "persistent" && !group.iter().any(|(k, _)| *k == "persistent"))
    })
}

fn storage_offered(volume: &StorageVolume, groups: &BTreeMap<&str, Vec<(&str, &str)>>) -> bool {
    volume.attributes.is_empty() || groups.values().any(|g| storage_group_serves(&volume.attributes, g))
}

/// Checks a provider against a group: placement attributes, auditors, then per resource unit
/// its GPU, its volumes' storage and its leased IPs (the module's notes give the rule).
/// `audited(auditor)` returns what that auditor signed for this provider, `None` when it has
/// no attestation for it.
pub fn match_group<'a>(
    spec: &GroupSpec,
    provider_attrs: &[Attribute],
    audited: impl Fn(&Address) -> Option<&'a [Attribute]>,
) -> Result<(), Mismatch> {
    let req = &spec.requirements;
    attributes_subset(&req.attributes, provider_attrs)?;
    let vouches = |auditor: &Address| auditor_vouches(&req.attributes, audited(auditor));
    if let Some(auditor) = req.signed_by.all_of.iter().find(|a| !vouches(a)) {
        return Err(Mismatch::AllOfAuditor { auditor: *auditor });
    }
    if !req.signed_by.any_of.is_empty() && !req.signed_by.any_of.iter().any(vouches) {
        return Err(Mismatch::AnyOfAuditor {
            auditors: req.signed_by.any_of.clone(),
        });
    }
    let storage = storage_groups(provider_attrs);
    for unit in &spec.resources {
        let r = &unit.resources;
        if r.gpu.units > 0 && !gpu_offered(&r.gpu.attributes, gpu_capabilities(provider_attrs)) {
            let wanted = r
                .gpu
                .attributes
                .iter()
                .map(|a| a.key.as_str())
                .collect::<Vec<_>>()
                .join(" or ");
            return Err(Mismatch::Gpu { unit: unit.id, wanted });
        }
        if let Some(v) = r.storage.iter().find(|v| !storage_offered(v, &storage)) {
            return Err(Mismatch::Storage {
                unit: unit.id,
                volume: v.name.clone(),
                wanted: v
                    .attributes
                    .iter()
                    .map(|a| format!("{}={}", a.key, a.value))
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        let leases_ip = r.endpoints.iter().any(|e| e.kind == EndpointKind::LeasedIp);
        if leases_ip
            && !provider_attrs
                .iter()
                .any(|h| h.key == LEASED_IP_ATTRIBUTE && h.value == "true")
        {
            return Err(Mismatch::LeasedIp { unit: unit.id });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coin::{Dec, Denom, Price};
    use crate::market::{Endpoint, Gpu, PlacementRequirements, ResourceUnit, Resources, SignedBy};

    fn a(k: &str, v: &str) -> Attribute {
        Attribute::new(k, v)
    }

    fn unit() -> ResourceUnit {
        ResourceUnit {
            id: 1,
            resources: Resources {
                cpu_millis: 100,
                memory_bytes: 1 << 30,
                storage: vec![StorageVolume {
                    name: "default".into(),
                    bytes: 1 << 30,
                    attributes: vec![],
                }],
                gpu: Gpu::default(),
                endpoints: vec![],
            },
            count: 1,
            price: Price {
                denom: Denom::new("uusd").expect("denom"),
                amount: Dec::from_int(10).expect("small"),
            },
        }
    }

    fn group(attrs: Vec<Attribute>) -> GroupSpec {
        GroupSpec {
            name: "dc".into(),
            requirements: PlacementRequirements {
                attributes: attrs,
                signed_by: SignedBy::default(),
            },
            resources: vec![unit()],
        }
    }

    fn check(spec: &GroupSpec, provider: &[Attribute]) -> Result<(), Mismatch> {
        match_group(spec, provider, |_| None)
    }

    #[test]
    fn a_star_matches_any_run_of_characters_within_one_path_segment() {
        for (pattern, key, expect) in [
            ("region", "region", true),
            ("region", "region-eu", false),
            ("region*", "region", true),
            ("region*", "region-eu", true),
            ("region*", "region/eu", false),
            ("region*", "regio", false),
            ("capabilities/cpu/*", "capabilities/cpu/arch", true),
            ("capabilities/cpu/*", "capabilities/cpu", false),
            ("capabilities/cpu/*", "capabilities/cpu/arch/x86", false),
            ("capabilities/cpu/*", "capabilities/cpu/", true),
            ("vendor/nvidia/model/*", "vendor/nvidia/model/h100", true),
            ("vendor/nvidia/model/*", "vendor/nvidia/model/h100/ram/80Gi", false),
            ("vendor/*", "vendor/nvidia/model/h100", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
        ] {
            assert_eq!(key_matches(pattern, key), expect, "{pattern} vs {key}");
        }
    }

    #[test]
    fn placement_attributes_need_an_equal_value_under_a_matching_key() {
        let provider = [a("region-eu", "west"), a("tier", "1")];
        assert_eq!(
            check(&group(vec![a("region*", "west"), a("tier", "1")]), &provider),
            Ok(())
        );
        assert_eq!(
            check(&group(vec![a("region*", "east")]), &provider),
            Err(Mismatch::Attribute {
                key: "region*".into(),
                value: "east".into()
            })
        );
        let e = check(&group(vec![a("tier", "2")]), &provider).expect_err("wrong value");
        assert_eq!(
            e.to_string(),
            "the placement requires attribute tier=2, which the provider does not have"
        );
    }

    #[test]
    fn an_auditor_vouches_when_its_attestation_meets_every_placement_attribute() {
        let (x, y, z) = (
            Address::Native([1; 20]),
            Address::Native([2; 20]),
            Address::Native([3; 20]),
        );
        let mut g = group(vec![a("region*", "eu"), a("tier", "1")]);
        let provider = [a("region", "eu"), a("tier", "1")];
        let audits: BTreeMap<Address, Vec<Attribute>> = BTreeMap::from([
            // Signed both, the first under another key the glob accepts.
            (x, vec![a("region-x", "eu"), a("tier", "1")]),
            // Signed one of the two.
            (y, vec![a("region", "eu")]),
        ]);
        let audited = |who: &Address| audits.get(who).map(Vec::as_slice);
        g.requirements.signed_by = SignedBy {
            all_of: vec![x],
            any_of: vec![],
        };
        assert_eq!(match_group(&g, &provider, audited), Ok(()));
        g.requirements.signed_by.all_of = vec![x, y];
        assert_eq!(
            match_group(&g, &provider, audited),
            Err(Mismatch::AllOfAuditor { auditor: y })
        );
        g.requirements.signed_by = SignedBy {
            all_of: vec![],
            any_of: vec![z, y],
        };
        assert_eq!(
            match_group(&g, &provider, audited),
            Err(Mismatch::AnyOfAuditor { auditors: vec![z, y] })
        );
        g.requirements.signed_by.any_of = vec![z, y, x];
        assert_eq!(match_group(&g, &provider, audited), Ok(()));
        // The provider's own attributes are checked too, even when an auditor vouches.
        assert!(matches!(
            match_group(&g, &[a("tier", "1")], audited),
            Err(Mismatch::Attribute { .. })
        ));
    }

    #[test]
    fn with_no_placement_attributes_any_attestation_vouches() {
        let x = Address::Native([1; 20]);
        let mut g = group(vec![]);
        g.requirements.signed_by.any_of = vec![x];
        let signed = [a("anything", "at all")];
        assert_eq!(match_group(&g, &[], |_| Some(&signed[..])), Ok(()));
        assert!(matches!(
            match_group(&g, &[], |_| None),
            Err(Mismatch::AnyOfAuditor { .. })
        ));
    }

    #[test]
    fn a_gpu_unit_needs_one_of_its_models_among_the_gpu_capabilities() {
        let mut g = group(vec![]);
        g.resources[0].resources.gpu = Gpu {
            units: 1,
            attributes: vec![
                a("vendor/nvidia/model/a100", "true"),
                a("vendor/nvidia/model/h100/ram/80Gi", "true"),
            ],
        };
        let h100 = a("capabilities/gpu/vendor/nvidia/model/h100", "true");
        let h100_80 = a("capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi", "true");
        let e = check(&g, std::slice::from_ref(&h100)).expect_err("no 80Gi advertised");
        assert_eq!(
            e.to_string(),
            "resource unit 1 wants a GPU (vendor/nvidia/model/a100 or vendor/nvidia/model/h100/ram/80Gi) \
             that the provider does not advertise"
        );
        assert_eq!(check(&g, &[h100.clone(), h100_80]), Ok(()));
        g.resources[0].resources.gpu.attributes = vec![a("vendor/nvidia/model/*", "true")];
        assert_eq!(check(&g, std::slice::from_ref(&h100)), Ok(()));
        assert!(check(&g, &[a("capabilities/gpu/vendor/amd/model/mi300x", "true")]).is_err());
        assert!(check(&g, &[a("capabilities/gpu/vendor/nvidia/model/h100", "false")]).is_err());
    }

    #[test]
    fn a_volume_needs_one_storage_group_holding_all_its_attributes() {
        let mut g = group(vec![]);
        g.resources[0].resources.storage.push(StorageVolume {
            name: "data".into(),
            bytes: 1 << 30,
            attributes: vec![a("class", "beta2"), a("persistent", "true")],
        });
        let beta2 = a("capabilities/storage/1/class", "beta2");
        assert_eq!(
            check(&g, std::slice::from_ref(&beta2)),
            Ok(()),
            "a group silent on persistence"
        );
        let persistent = a("capabilities/storage/1/persistent", "true");
        assert_eq!(check(&g, &[beta2.clone(), persistent]), Ok(()));
        let ephemeral = a("capabilities/storage/1/persistent", "false");
        let e = check(&g, &[beta2.clone(), ephemeral]).expect_err("group is not persistent");
        assert_eq!(
            e.to_string(),
            "resource unit 1 wants storage class=beta2 persistent=true for volume \"data\"; the provider \
             advertises no capabilities/storage/<n>/ group with it"
        );
        // Class and persistence must come from the same group.
        let split = [
            a("capabilities/storage/1/class", "beta2"),
            a("capabilities/storage/1/persistent", "false"),
            a("capabilities/storage/2/class", "beta3"),
            a("capabilities/storage/2/persistent", "true"),
        ];
        assert!(check(&g, &split).is_err());
        assert!(
            check(&g, &[a("capabilities/storage/class", "beta2")]).is_err(),
            "no group id"
        );
        assert!(
            check(&g, &[a("capabilities/storage/1/x/class", "beta2")]).is_err(),
            "too deep"
        );
    }

    #[test]
    fn a_leased_ip_endpoint_needs_the_provider_to_lease_ips() {
        let mut g = group(vec![]);
        g.resources[0].resources.endpoints = vec![Endpoint {
            kind: EndpointKind::LeasedIp,
            sequence: 0,
        }];
        assert_eq!(check(&g, &[]), Err(Mismatch::LeasedIp { unit: 1 }));
        assert_eq!(
            check(&g, &[a(LEASED_IP_ATTRIBUTE, "false")]),
            Err(Mismatch::LeasedIp { unit: 1 })
        );
        assert_eq!(check(&g, &[a(LEASED_IP_ATTRIBUTE, "true")]), Ok(()));
    }

    #[test]
    fn gpu_offered_is_the_test_for_one_concrete_gpu_too() {
        let wanted = [a("vendor/nvidia/model/h100/interface/sxm", "true")];
        let sxm = [
            ("vendor/nvidia/model/h100", "true"),
            ("vendor/nvidia/model/h100/interface/sxm", "true"),
        ];
        let pcie = [
            ("vendor/nvidia/model/h100", "true"),
            ("vendor/nvidia/model/h100/interface/pcie", "true"),
        ];
        assert!(gpu_offered(&wanted, sxm.iter().copied()));
        assert!(!gpu_offered(&wanted, pcie.iter().copied()));
        assert!(gpu_offered(&[], pcie.iter().copied()), "no attribute: any GPU");
    }
}
