//! The bid engine's decision, pure: does this provider match an order's group, has it the free
//! capacity, and at what price. Whether it matches (attributes, auditors, GPU models, storage
//! classes, leased IPs) is the ledger's own rule, `pazar_types::market::match_group`, which
//! "why no bids" applies too, so the engine never bids where the ledger would refuse and a
//! tenant is told the same reason. Capacity and price come after it and only the provider
//! knows them; every refusal says exactly what is missing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use pazar_types::coin::{Dec, Price, DEC_SCALE};
use pazar_types::market::{match_group, Attribute, EndpointKind, GroupSpec, Mismatch, Resources};
use pazar_types::Address;

use crate::inventory::{GpuInfo, Inventory};

/// Prices per block, in base units of the order's denomination, before the margin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceList {
    /// Per millicore.
    pub cpu_milli: Dec,
    /// Per GiB of memory.
    pub memory_gib: Dec,
    /// Per GiB of ephemeral storage.
    pub storage_gib: Dec,
    /// Per GiB of persistent storage.
    pub persistent_gib: Dec,
    /// Per GPU, by model (`h100`, …); `*` prices any other model.
    #[serde(default)]
    pub gpu: BTreeMap<String, Dec>,
    /// Per exposed port or HTTP ingress.
    pub endpoint: Dec,
    /// Per leased IP.
    pub leased_ip: Dec,
    /// Added to the computed price, in percent.
    #[serde(default)]
    pub margin_percent: u32,
    /// Denominations this provider accepts (empty: any).
    #[serde(default)]
    pub denoms: Vec<String>,
}

impl Default for PriceList {
    fn default() -> Self {
        let d = |s: &str| s.parse::<Dec>().expect("constant decimal");
        PriceList {
            cpu_milli: d("0.1"),
            memory_gib: d("50"),
            storage_gib: d("2"),
            persistent_gib: d("5"),
            gpu: BTreeMap::from([("*".to_string(), d("5000"))]),
            endpoint: d("1"),
            leased_ip: d("100"),
            margin_percent: 0,
            denoms: Vec::new(),
        }
    }
}

/// What the provider looks like on the ledger.
#[derive(Debug, Clone, Default)]
pub struct ProviderView {
    pub address: Option<Address>,
    pub attributes: Vec<Attribute>,
    /// Attributes each auditor signed for this provider.
    pub audits: BTreeMap<Address, Vec<Attribute>>,
}

/// Resources not yet promised to a lease or an open bid.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Free {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    /// GPUs not in use, by index into the inventory's list.
    pub gpus: Vec<GpuInfo>,
}

impl Free {
    pub fn of(inv: &Inventory) -> Free {
        Free {
            cpu_millis: inv.cpu_millis,
            memory_bytes: inv.memory_bytes,
            storage_bytes: inv.storage_bytes,
            gpus: inv.gpus.clone(),
        }
    }
}

/// What a group needs in all (every unit × its count).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Demand {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    /// GPUs taken from the free list for this group.
    pub gpus: Vec<GpuInfo>,
}

/// Why a provider does not bid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    /// The matching rule refuses it: the ledger would refuse the bid for this reason.
    Requirements(Mismatch),
    Gpu {
        needed: u64,
        matching_free: u64,
        wanted: Vec<String>,
    },
    Capacity {
        resource: &'static str,
        needed: u64,
        free: u64,
    },
    Denom {
        denom: String,
        accepted: Vec<String>,
    },
    Price {
        ask: String,
        ceiling: String,
        denom: String,
    },
    Overflow,
}

impl Refusal {
    /// The kind of refusal as a fixed name (the `reason` it serializes with), for counting.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Requirements(_) => "requirements",
            Refusal::Gpu { .. } => "gpu",
            Refusal::Capacity { .. } => "capacity",
            Refusal::Denom { .. } => "denom",
            Refusal::Price { .. } => "price",
            Refusal::Overflow => "overflow",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Requirements(m) => write!(f, "{m}"),
            Refusal::Gpu {
                needed,
                matching_free,
                wanted,
            } => write!(
                f,
                "needs {needed} GPU(s) matching {}; the provider has {matching_free} free",
                wanted.join(" or ")
            ),
            Refusal::Capacity { resource, needed, free } => {
                write!(f, "needs {needed} {resource}; the provider has {free} free")
            }
            Refusal::Denom { denom, accepted } => {
                write!(f, "priced in {denom}; the provider accepts {}", accepted.join(", "))
            }
            Refusal::Price { ask, ceiling, denom } => write!(
                f,
                "the provider asks {ask} {denom} per block; the order's ceiling is {ceiling} {denom}"
            ),
            Refusal::Overflow => write!(f, "the order's numbers overflow"),
        }
    }
}

/// The placement's requirements, by the ledger's rule: attributes, auditors, GPU models,
/// storage classes and leased IPs.
pub fn check_requirements(group: &GroupSpec, p: &ProviderView) -> Result<(), Refusal> {
    match_group(group, &p.attributes, |auditor| p.audits.get(auditor).map(Vec::as_slice)).map_err(Refusal::Requirements)
}

fn unit_storage(r: &Resources) -> u64 {
    r.storage.iter().map(|v| v.bytes).sum()
}

/// Takes what `group` needs out of `free`, or says which resource is short.
pub fn reserve(group: &GroupSpec, free: &Free) -> Result<Demand, Refusal> {
    let mut d = Demand::default();
    let mut gpus = free.gpus.clone();
    for u in &group.resources {
        let n = u64::from(u.count);
        let r = &u.resources;
        d.cpu_millis = d.cpu_millis.saturating_add(n.saturating_mul(u64::from(r.cpu_millis)));
        d.memory_bytes = d.memory_bytes.saturating_add(n.saturating_mul(r.memory_bytes));
        d.storage_bytes = d.storage_bytes.saturating_add(n.saturating_mul(unit_storage(r)));
        let need = n.saturating_mul(u64::from(r.gpu.units));
        if need > 0 {
            // The same test the ledger's rule applies to the advertised GPUs, on each free one.
            let matching: Vec<usize> = gpus
                .iter()
                .enumerate()
                .filter(|(_, g)| g.serves(&r.gpu.attributes))
                .map(|(i, _)| i)
                .collect();
            if (matching.len() as u64) < need {
                return Err(Refusal::Gpu {
                    needed: need,
                    matching_free: matching.len() as u64,
                    wanted: r.gpu.attributes.iter().map(|a| a.key.clone()).collect(),
                });
            }
            for i in matching.into_iter().take(need as usize).rev() {
                d.gpus.push(gpus.remove(i));
            }
        }
    }
    for (resource, needed, have) in [
        ("millicores of CPU", d.cpu_millis, free.cpu_millis),
        ("bytes of memory", d.memory_bytes, free.memory_bytes),
        ("bytes of storage", d.storage_bytes, free.storage_bytes),
    ] {
        if needed > have {
            return Err(Refusal::Capacity {
                resource,
                needed,
                free: have,
            });
        }
    }
    Ok(d)
}

impl Free {
    pub fn take(&mut self, d: &Demand) {
        self.cpu_millis = self.cpu_millis.saturating_sub(d.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_sub(d.memory_bytes);
        self.storage_bytes = self.storage_bytes.saturating_sub(d.storage_bytes);
        for g in &d.gpus {
            if let Some(i) = self.gpus.iter().position(|x| x.uuid == g.uuid) {
                self.gpus.remove(i);
            }
        }
    }

    pub fn give_back(&mut self, d: &Demand) {
        self.cpu_millis = self.cpu_millis.saturating_add(d.cpu_millis);
        self.memory_bytes = self.memory_bytes.saturating_add(d.memory_bytes);
        self.storage_bytes = self.storage_bytes.saturating_add(d.storage_bytes);
        self.gpus.extend(d.gpus.iter().cloned());
    }
}

/// `price × amount / per`, all in Dec raw units, or `None` on overflow.
fn scaled(price: Dec, amount: u128, per: u128) -> Option<Dec> {
    price.raw().checked_mul(amount).map(|v| Dec(v / per))
}

/// The price this list asks for one replica of `r`, with the GPUs it would get.
fn unit_price(prices: &PriceList, r: &Resources, gpus: &[GpuInfo]) -> Option<Dec> {
    const GIB: u128 = 1 << 30;
    let mut total = prices.cpu_milli.checked_mul_int(u128::from(r.cpu_millis))?;
    total = total.checked_add(scaled(prices.memory_gib, u128::from(r.memory_bytes), GIB)?)?;
    for v in &r.storage {
        let p = if v.persistent() {
            prices.persistent_gib
        } else {
            prices.storage_gib
        };
        total = total.checked_add(scaled(p, u128::from(v.bytes), GIB)?)?;
    }
    for _ in 0..r.gpu.units {
        // The cheapest model that would serve it (the engine hands out any matching GPU).
        let p = gpus
            .iter()
            .filter(|g| g.serves(&r.gpu.attributes))
            .filter_map(|g| prices.gpu.get(&g.model).or_else(|| prices.gpu.get("*")))
            .min()
            .or_else(|| prices.gpu.get("*"))?;
        total = total.checked_add(*p)?;
    }
    for e in &r.endpoints {
        let p = match e.kind {
            EndpointKind::LeasedIp => prices.leased_ip,
            EndpointKind::SharedHttp | EndpointKind::RandomPort => prices.endpoint,
        };
        total = total.checked_add(p)?;
    }
    Some(total)
}

/// The bid for a whole group: Σ count × unit price, plus the margin, rounded up to a whole
/// base unit; refused when above the order's ceiling or in a denomination not accepted.
pub fn quote(group: &GroupSpec, prices: &PriceList, demand: &Demand) -> Result<Price, Refusal> {
    let ceiling = group.max_price().ok_or(Refusal::Overflow)?;
    if !prices.denoms.is_empty() && !prices.denoms.iter().any(|d| d == ceiling.denom.as_str()) {
        return Err(Refusal::Denom {
            denom: ceiling.denom.to_string(),
            accepted: prices.denoms.clone(),
        });
    }
    let mut total = Dec::ZERO;
    for u in &group.resources {
        let p = unit_price(prices, &u.resources, &demand.gpus).ok_or(Refusal::Overflow)?;
        total = total
            .checked_add(p.checked_mul_int(u128::from(u.count)).ok_or(Refusal::Overflow)?)
            .ok_or(Refusal::Overflow)?;
    }
    let with_margin = scaled(total, 100 + u128::from(prices.margin_percent), 100).ok_or(Refusal::Overflow)?;
    // Whole base units: escrow pays whole units every block.
    let whole = with_margin.raw().div_ceil(DEC_SCALE).max(1);
    let ask = Dec::from_int(whole).ok_or(Refusal::Overflow)?;
    if ask > ceiling.amount {
        return Err(Refusal::Price {
            ask: ask.to_string(),
            ceiling: ceiling.amount.to_string(),
            denom: ceiling.denom.to_string(),
        });
    }
    Ok(Price {
        denom: ceiling.denom,
        amount: ask,
    })
}

/// The whole decision: the matching rule first, then capacity, then price.
pub fn evaluate(
    group: &GroupSpec,
    p: &ProviderView,
    free: &Free,
    prices: &PriceList,
) -> Result<(Price, Demand), Refusal> {
    check_requirements(group, p)?;
    let demand = reserve(group, free)?;
    let price = quote(group, prices, &demand)?;
    Ok((price, demand))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pazar_types::market::{Endpoint, Gpu, PlacementRequirements, ResourceUnit, SignedBy, StorageVolume};
    use pazar_types::Denom;

    fn group(cpu: u32, count: u32, gpus: u32, ceiling: u128) -> GroupSpec {
        GroupSpec {
            name: "dc".into(),
            requirements: PlacementRequirements::default(),
            resources: vec![ResourceUnit {
                id: 1,
                resources: Resources {
                    cpu_millis: cpu,
                    memory_bytes: 1 << 30,
                    storage: vec![StorageVolume {
                        name: "default".into(),
                        bytes: 1 << 30,
                        attributes: vec![],
                    }],
                    gpu: Gpu {
                        units: gpus,
                        attributes: if gpus > 0 {
                            vec![Attribute::new("vendor/nvidia/model/h100", "true")]
                        } else {
                            vec![]
                        },
                    },
                    endpoints: vec![Endpoint {
                        kind: EndpointKind::SharedHttp,
                        sequence: 0,
                    }],
                },
                count,
                price: Price {
                    denom: Denom::new("uusd").expect("denom"),
                    amount: Dec::from_int(ceiling).expect("small"),
                },
            }],
        }
    }

    fn gpu(model: &str, uuid: &str) -> GpuInfo {
        GpuInfo {
            vendor: "nvidia".into(),
            model: model.into(),
            name: model.into(),
            memory_bytes: 80 << 30,
            interface: "pcie".into(),
            uuid: uuid.into(),
        }
    }

    /// A provider that advertises the GPUs of `free`, as the daemon does with its inventory's.
    fn advertising(free: &Free) -> ProviderView {
        ProviderView {
            attributes: crate::inventory::gpu_attributes(&free.gpus),
            ..ProviderView::default()
        }
    }

    fn free() -> Free {
        Free {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            storage_bytes: 100 << 30,
            gpus: vec![gpu("h100", "a"), gpu("a100", "b")],
        }
    }

    #[test]
    fn a_matching_order_gets_the_price_list_price_with_margin() {
        let prices = PriceList {
            margin_percent: 10,
            ..PriceList::default()
        };
        // 1000m × 0.1 + 1 GiB × 50 + 1 GiB × 2 + 1 endpoint × 1 = 153 per replica; ×2 = 306; +10 % = 336.6 → 337.
        let (price, demand) =
            evaluate(&group(1000, 2, 0, 1000), &ProviderView::default(), &free(), &prices).expect("bids");
        assert_eq!(price.amount, Dec::from_int(337).expect("small"));
        assert_eq!(price.denom.as_str(), "uusd");
        assert_eq!((demand.cpu_millis, demand.memory_bytes), (2000, 2 << 30));
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let prices = PriceList::default();
        let f = free();
        let p = advertising(&f);
        assert!(matches!(
            evaluate(&group(1000, 5, 0, 1000), &p, &f, &prices),
            Err(Refusal::Capacity {
                resource: "millicores of CPU",
                needed: 5000,
                free: 4000
            })
        ));
        assert!(matches!(
            evaluate(&group(1000, 1, 2, 100_000), &p, &f, &prices),
            Err(Refusal::Gpu {
                needed: 2,
                matching_free: 1,
                ..
            })
        ));
        let e = evaluate(&group(1000, 1, 0, 10), &p, &f, &prices).expect_err("too cheap");
        assert_eq!(
            e.to_string(),
            "the provider asks 153 uusd per block; the order's ceiling is 10 uusd"
        );

        let mut g = group(100, 1, 0, 1000);
        g.requirements.attributes = vec![Attribute::new("region", "eu")];
        assert_eq!(
            evaluate(&g, &p, &f, &prices).expect_err("attr").to_string(),
            "the placement requires attribute region=eu, which the provider does not have"
        );
        let mut denoms = prices.clone();
        denoms.denoms = vec!["upzr".into()];
        assert!(matches!(
            evaluate(&group(100, 1, 0, 1000), &p, &f, &denoms),
            Err(Refusal::Denom { .. })
        ));
    }

    #[test]
    fn a_refusal_serializes_with_its_reason_and_the_rule_s_mismatch() {
        let r = Refusal::Requirements(Mismatch::LeasedIp { unit: 3 });
        assert_eq!(
            serde_json::to_value(&r).expect("serializes"),
            serde_json::json!({"reason": "requirements", "mismatch": "leased_ip", "unit": 3})
        );
    }

    #[test]
    fn a_refusal_s_counted_reason_is_the_reason_it_serializes_with() {
        let all = [
            Refusal::Requirements(Mismatch::LeasedIp { unit: 3 }),
            Refusal::Gpu {
                needed: 1,
                matching_free: 0,
                wanted: vec![],
            },
            Refusal::Capacity {
                resource: "cpu",
                needed: 2,
                free: 1,
            },
            Refusal::Denom {
                denom: "uusd".into(),
                accepted: vec![],
            },
            Refusal::Price {
                ask: "2".into(),
                ceiling: "1".into(),
                denom: "uusd".into(),
            },
            Refusal::Overflow,
        ];
        #[derive(serde::Deserialize)]
        struct Tagged {
            reason: String,
        }
        for r in all {
            let json = serde_json::to_string(&r).expect("serializes");
            let tagged: Tagged = serde_json::from_str(&json).expect("tagged");
            assert_eq!(tagged.reason, r.reason(), "{json}");
        }
    }

    #[test]
    fn auditors_must_have_signed_the_required_attributes() {
        let auditor = Address::Native([7; 20]);
        let mut g = group(100, 1, 0, 1000);
        g.requirements = PlacementRequirements {
            attributes: vec![Attribute::new("tier", "1")],
            signed_by: SignedBy {
                all_of: vec![],
                any_of: vec![auditor],
            },
        };
        let mut p = ProviderView {
            attributes: vec![Attribute::new("tier", "1")],
            ..ProviderView::default()
        };
        let prices = PriceList::default();
        assert_eq!(
            evaluate(&g, &p, &free(), &prices).map(|_| ()),
            Err(Refusal::Requirements(Mismatch::AnyOfAuditor {
                auditors: vec![auditor]
            }))
        );
        p.audits.insert(auditor, vec![Attribute::new("tier", "1")]);
        assert!(evaluate(&g, &p, &free(), &prices).is_ok());
    }

    #[test]
    fn gpus_are_picked_by_the_rule_that_judges_the_advertised_ones() {
        let prices = PriceList::default();
        let mut f = free();
        f.gpus[0].interface = "sxm".into();
        let p = advertising(&f);
        let mut g = group(1000, 1, 1, 100_000);
        // Only the a100 (80 GiB, PCIe) is this; the h100 comes first in the free list.
        g.resources[0].resources.gpu.attributes = vec![Attribute::new(
            "vendor/nvidia/model/a100/ram/80Gi/interface/pcie",
            "true",
        )];
        let (_, d) = evaluate(&g, &p, &f, &prices).expect("the a100");
        assert_eq!(d.gpus.iter().map(|g| g.uuid.as_str()).collect::<Vec<_>>(), ["b"]);
        // No GPU here is a PCIe h100, so none is advertised as one and the ledger would refuse:
        // the engine refuses with the ledger's reason before it looks at free GPUs.
        g.resources[0].resources.gpu.attributes =
            vec![Attribute::new("vendor/nvidia/model/h100/interface/pcie", "true")];
        assert!(matches!(
            evaluate(&g, &p, &f, &prices),
            Err(Refusal::Requirements(Mismatch::Gpu { unit: 1, .. }))
        ));
    }

    #[test]
    fn reserved_gpus_and_capacity_are_not_offered_twice() {
        let prices = PriceList::default();
        let mut f = free();
        let p = advertising(&f);
        let (_, d) = evaluate(&group(1000, 1, 1, 100_000), &p, &f, &prices).expect("first");
        f.take(&d);
        assert_eq!(f.gpus.len(), 1);
        assert!(matches!(
            evaluate(&group(1000, 1, 1, 100_000), &p, &f, &prices),
            Err(Refusal::Gpu { matching_free: 0, .. })
        ));
        f.give_back(&d);
        assert!(evaluate(&group(1000, 1, 1, 100_000), &p, &f, &prices).is_ok());
    }
}
