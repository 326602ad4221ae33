//! "Why no bids?" for tenants: for one order's group, what each registered provider lacks, by
//! the ledger's own matching rule (`pazar_types::market::match_group`), the one the ledger
//! applies to every bid and the providers' bid engine applies before it counts capacity. A
//! provider this says matches can still stay silent, for reasons only it knows (its free
//! capacity, its prices), and the answer says so rather than guess.
//!
//! Pure: the caller reads the ledger and passes what it read.

use std::collections::BTreeMap;
use std::fmt;

use pazar_types::market::{match_group, Attribute, GroupSpec, Mismatch};
use pazar_types::{Address, Price};

/// What the ledger holds about one provider that matters to matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderFacts {
    pub address: Address,
    /// The provider's own attributes.
    pub attributes: Vec<Attribute>,
    /// What each auditor with an attestation for this provider signed.
    pub audits: BTreeMap<Address, Vec<Attribute>>,
}

/// One provider's answer for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The ledger would refuse its bid, and this is why.
    Mismatch(Mismatch),
    /// It may bid: only its free capacity or its prices, which the ledger does not know, can
    /// keep it from doing so. `ceiling` is the group's highest price per block.
    Matches { ceiling: Option<Price> },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Mismatch(m) => write!(f, "{m}"),
            Verdict::Matches { ceiling } => {
                write!(
                    f,
                    "matches the placement but has not bid: its free capacity or its price is above the ceiling"
                )?;
                if let Some(c) = ceiling {
                    write!(f, " of {} {} per block", c.amount, c.denom)?;
                }
                write!(f, " (its log says which; a higher price or a smaller group may help)")
            }
        }
    }
}

/// The verdict for one provider on `group`.
pub fn verdict(group: &GroupSpec, provider: &ProviderFacts) -> Verdict {
    match match_group(group, &provider.attributes, |auditor| {
        provider.audits.get(auditor).map(Vec::as_slice)
    }) {
        Ok(()) => Verdict::Matches {
            ceiling: group.max_price(),
        },
        Err(m) => Verdict::Mismatch(m),
    }
}

/// The verdict of every provider on `group`, by address, in the order given.
pub fn why_no_bids(group: &GroupSpec, providers: &[ProviderFacts]) -> Vec<(Address, Verdict)> {
    providers.iter().map(|p| (p.address, verdict(group, p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::market::{Gpu, PlacementRequirements, ResourceUnit, Resources, SignedBy, StorageVolume};
    use pazar_types::{Dec, Denom};

    fn provider(n: u8, attributes: Vec<Attribute>) -> ProviderFacts {
        ProviderFacts {
            address: Address::Native([n; 20]),
            attributes,
            audits: BTreeMap::new(),
        }
    }

    fn group() -> GroupSpec {
        GroupSpec {
            name: "dc".into(),
            requirements: PlacementRequirements {
                attributes: vec![Attribute::new("region*", "eu")],
                signed_by: SignedBy::default(),
            },
            resources: vec![ResourceUnit {
                id: 1,
                resources: Resources {
                    cpu_millis: 100,
                    memory_bytes: 1 << 30,
                    storage: vec![StorageVolume {
                        name: "default".into(),
                        bytes: 1 << 30,
                        attributes: vec![],
                    }],
                    gpu: Gpu {
                        units: 1,
                        attributes: vec![Attribute::new("vendor/nvidia/model/h100/ram/80Gi", "true")],
                    },
                    endpoints: vec![],
                },
                count: 2,
                price: Price {
                    denom: Denom::new("uusd").expect("denom"),
                    amount: Dec::from_int(10).expect("small"),
                },
            }],
        }
    }

    #[test]
    fn each_provider_gets_the_ledger_s_reason_or_a_match_with_the_ceiling() {
        let h100 = Attribute::new("capabilities/gpu/vendor/nvidia/model/h100", "true");
        let h100_80 = Attribute::new("capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi", "true");
        let providers = [
            provider(1, vec![Attribute::new("region", "us")]),
            provider(2, vec![Attribute::new("region-west", "eu"), h100.clone()]),
            provider(3, vec![Attribute::new("region-west", "eu"), h100, h100_80]),
        ];
        let answers: Vec<String> = why_no_bids(&group(), &providers)
            .into_iter()
            .map(|(a, v)| {
                format!(
                    "{}: {v}",
                    providers.iter().position(|p| p.address == a).expect("one of them")
                )
            })
            .collect();
        assert_eq!(
            answers,
            [
                "0: the placement requires attribute region*=eu, which the provider does not have",
                "1: resource unit 1 wants a GPU (vendor/nvidia/model/h100/ram/80Gi) that the provider does not advertise",
                "2: matches the placement but has not bid: its free capacity or its price is above the ceiling of 20 uusd \
                 per block (its log says which; a higher price or a smaller group may help)",
            ]
        );
    }

    #[test]
    fn an_auditor_counts_only_when_it_signed_the_placement_s_attributes() {
        let auditor = Address::Native([9; 20]);
        let mut g = group();
        g.resources[0].resources.gpu = Gpu::default();
        g.requirements.signed_by.all_of = vec![auditor];
        let mut p = provider(1, vec![Attribute::new("region", "eu")]);
        p.audits.insert(auditor, vec![Attribute::new("region", "us")]);
        assert_eq!(verdict(&g, &p), Verdict::Mismatch(Mismatch::AllOfAuditor { auditor }));
        p.audits.insert(auditor, vec![Attribute::new("region", "eu")]);
        assert!(matches!(verdict(&g, &p), Verdict::Matches { .. }));
    }
}
