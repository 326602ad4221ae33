//! What this machine can sell: CPU, memory and disk from the OS and its cgroup limits, GPUs
//! through NVML when the NVIDIA library is present, and overrides from the configuration.

use std::path::Path;

use serde::{Deserialize, Serialize};

use pazar_types::market::matching::gpu_offered;
use pazar_types::market::{Attribute, GPU_CAPABILITY_PREFIX};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuInfo {
    /// `nvidia` or `amd`.
    pub vendor: String,
    /// Lowercase model name as SDL files write it, e.g. `h100`, `a100`, `rtx4090`.
    pub model: String,
    /// The name the driver reports, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    pub memory_bytes: u64,
    /// `pcie` or `sxm`.
    pub interface: String,
    pub uuid: String,
}

impl GpuInfo {
    /// What this GPU offers, as GPU capability keys (relative to `capabilities/gpu/`, value
    /// `true`) in the SDL's encoding of a unit's GPU: `vendor/<v>/model/<m>`, and with its
    /// memory and interface when known `…/ram/<r>`, `…/ram/<r>/interface/<i>` and
    /// `…/interface/<i>`. The matching rule compares keys as text, so every form a tenant may
    /// write is listed (as Akash providers list them).
    pub fn capabilities(&self) -> Vec<Attribute> {
        let model = format!("vendor/{}/model/{}", self.vendor, self.model);
        let ram = ram_label(self.memory_bytes);
        let interface = (!self.interface.is_empty()).then(|| self.interface.to_ascii_lowercase());
        let mut keys = vec![model.clone()];
        if let Some(r) = &ram {
            keys.push(format!("{model}/ram/{r}"));
            if let Some(i) = &interface {
                keys.push(format!("{model}/ram/{r}/interface/{i}"));
            }
        }
        if let Some(i) = &interface {
            keys.push(format!("{model}/interface/{i}"));
        }
        keys.into_iter().map(|k| Attribute::new(k, "true")).collect()
    }

    /// Whether this GPU can serve a resource unit whose GPU attributes are `wanted`: the
    /// matching rule's own [`gpu_offered`] over [`GpuInfo::capabilities`], so the bid engine
    /// picks GPUs exactly as the ledger judges the provider's advertised ones.
    pub fn serves(&self, wanted: &[Attribute]) -> bool {
        let caps = self.capabilities();
        gpu_offered(wanted, caps.iter().map(|a| (a.key.as_str(), a.value.as_str())))
    }

    /// Whether this GPU serves a unit asking for the one GPU attribute key `key` (`= true`).
    pub fn satisfies(&self, key: &str) -> bool {
        self.serves(&[Attribute::new(key, "true")])
    }
}

/// The provider attributes that advertise `gpus`: every capability of every GPU under
/// `capabilities/gpu/`, sorted, each once.
pub fn gpu_attributes(gpus: &[GpuInfo]) -> Vec<Attribute> {
    let mut out: Vec<Attribute> = gpus
        .iter()
        .flat_map(GpuInfo::capabilities)
        .map(|a| Attribute::new(format!("{GPU_CAPABILITY_PREFIX}{}", a.key), a.value))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Memory sizes GPUs are sold with, in GiB.
const GPU_RAM_SIZES_GIB: &[u64] = &[
    1, 2, 3, 4, 6, 8, 10, 11, 12, 16, 20, 24, 32, 40, 48, 64, 80, 94, 96, 128, 141, 180, 192, 256, 288,
];

/// The size a GPU is sold as (`80Gi`, the form SDL files write) from the memory its driver
/// reports, which is often a little less (an H100 80GB reports 79.6 GiB, a T4 16GB 15 GiB, an
/// L4 24GB 22.5 GiB): the smallest sold size at least the reported memory (less 1/64 for
/// rounding) and at most 1/8 above it, else the reported memory in whole GiB. `None` when the
/// memory is unknown.
pub fn ram_label(bytes: u64) -> Option<String> {
    const GIB: u64 = 1 << 30;
    if bytes == 0 {
        return None;
    }
    let gib = GPU_RAM_SIZES_GIB
        .iter()
        .copied()
        .find(|&s| {
            let size = s * GIB;
            size >= bytes - bytes / 64 && size <= bytes.saturating_add(bytes / 8)
        })
        .unwrap_or_else(|| bytes.saturating_add(GIB / 2) / GIB);
    Some(format!("{gib}Gi"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    /// Free space where volumes and container layers go.
    pub storage_bytes: u64,
    pub gpus: Vec<GpuInfo>,
    /// Where each number came from (for `pazar provider inventory`).
    pub sources: Vec<String>,
}

/// Configured values that replace what the probe found (e.g. to sell only part of a machine).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
    /// Replaces the GPU list (for hosts whose GPUs NVML cannot see).
    pub gpus: Option<Vec<GpuInfo>>,
}

/// Probes the machine. `data_dir` is where the provider stores volumes.
pub fn probe(data_dir: &Path, overrides: &Overrides) -> Inventory {
    let mut sources = Vec::new();
    let (cpu_millis, src) = cpu_millis();
    sources.push(src);
    let (memory_bytes, src) = memory_bytes();
    sources.push(src);
    let (storage_bytes, src) = storage_bytes(data_dir);
    sources.push(src);
    let (gpus, src) = nvidia_gpus();
    sources.push(src);
    let mut inv = Inventory {
        cpu_millis,
        memory_bytes,
        storage_bytes,
        gpus,
        sources,
    };
    if let Some(v) = overrides.cpu_millis {
        inv.cpu_millis = v;
        inv.sources.push("cpu: overridden by configuration".into());
    }
    if let Some(v) = overrides.memory_bytes {
        inv.memory_bytes = v;
        inv.sources.push("memory: overridden by configuration".into());
    }
    if let Some(v) = overrides.storage_bytes {
        inv.storage_bytes = v;
        inv.sources.push("storage: overridden by configuration".into());
    }
    if let Some(g) = &overrides.gpus {
        inv.gpus = g.clone();
        inv.sources.push("gpus: overridden by configuration".into());
    }
    inv
}

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// CPUs the process may use (affinity and cgroup quota, which `available_parallelism` reads),
/// refined by a fractional cgroup v2 quota (`cpu.max`, e.g. 150000 100000 = 1.5 CPUs).
fn cpu_millis() -> (u64, String) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let mut millis = n * 1000;
    let mut src = format!("cpu: {n} CPUs available to this process");
    if let Some(q) = read("/sys/fs/cgroup/cpu.max").and_then(|s| parse_cpu_max(&s)) {
        if q < millis {
            millis = q;
            src = format!("cpu: cgroup cpu.max quota, {q}m");
        }
    }
    (millis, src)
}

fn parse_cpu_max(s: &str) -> Option<u64> {
    let mut it = s.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?; // "max" fails to parse: no quota
    let period: u64 = it.next()?.parse().ok()?;
    (period > 0).then(|| quota * 1000 / period)
}

/// Physical memory, capped by the cgroup's limit (v2 `memory.max` or v1 `limit_in_bytes`).
fn memory_bytes() -> (u64, String) {
    let total = read("/proc/meminfo").and_then(|s| parse_meminfo_total(&s)).unwrap_or(0);
    let limit = read("/sys/fs/cgroup/memory.max")
        .or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
        .and_then(|s| s.trim().parse::<u64>().ok());
    match limit {
        Some(l) if l < total => (l, format!("memory: cgroup limit {l} bytes")),
        _ => (total, "memory: /proc/meminfo MemTotal".into()),
    }
}

fn parse_meminfo_total(s: &str) -> Option<u64> {
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn storage_bytes(dir: &Path) -> (u64, String) {
    let probe_dir = dir.ancestors().find(|p| p.exists()).unwrap_or_else(|| Path::new("/"));
    match nix::sys::statvfs::statvfs(probe_dir) {
        Ok(s) => {
            let free = s.blocks_available().saturating_mul(s.fragment_size());
            (free, format!("storage: free space under {}", probe_dir.display()))
        }
        Err(e) => (0, format!("storage: cannot stat {}: {e}", probe_dir.display())),
    }
}

/// NVML's `NVML_NVLINK_MAX_LINKS`.
const NVLINK_MAX_LINKS: u32 = 18;

/// GPUs through NVML, loaded at run time: a host without the NVIDIA driver has none.
fn nvidia_gpus() -> (Vec<GpuInfo>, String) {
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => return (vec![], format!("gpus: NVML not available ({e}); no NVIDIA GPU sold")),
    };
    let count = nvml.device_count().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..count {
        let Ok(d) = nvml.device_by_index(i) else { continue };
        let name = d.name().unwrap_or_default();
        let memory_bytes = d.memory_info().map(|m| m.total).unwrap_or(0);
        let uuid = d.uuid().unwrap_or_default();
        // NVLink-capable boards are SXM modules; others sit in a PCIe slot.
        let sxm = (0..NVLINK_MAX_LINKS).any(|l| d.link_wrapper_for(l).is_active().unwrap_or(false));
        out.push(GpuInfo {
            vendor: "nvidia".into(),
            model: model_of(&name),
            name,
            memory_bytes,
            interface: if sxm { "sxm" } else { "pcie" }.into(),
            uuid,
        });
    }
    let src = format!(
        "gpus: NVML driver {} found {count}",
        nvml.sys_driver_version().unwrap_or_default()
    );
    (out, src)
}

/// `NVIDIA H100 80GB HBM3` → `h100`; `NVIDIA GeForce RTX 4090` → `rtx4090`; `Tesla T4` → `t4`.
pub fn model_of(name: &str) -> String {
    let skip = ["nvidia", "geforce", "tesla", "quadro"];
    let words: Vec<String> = name
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .filter(|w| !skip.contains(&w.as_str()))
        .collect();
    match words.as_slice() {
        [first, second, ..] if matches!(first.as_str(), "rtx" | "gtx") => format!("{first}{second}"),
        [first, ..] => first.split('-').next().unwrap_or(first).to_string(),
        [] => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100() -> GpuInfo {
        GpuInfo {
            vendor: "nvidia".into(),
            model: "h100".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_bytes: 81_559_379_968,
            interface: "sxm".into(),
            uuid: "GPU-1".into(),
        }
    }

    #[test]
    fn gpu_attribute_keys_match_model_ram_and_interface() {
        let g = h100();
        assert!(g.satisfies("vendor/nvidia/model/h100"));
        assert!(g.satisfies("vendor/nvidia/model/*"));
        assert!(g.satisfies("vendor/nvidia/model/h100/ram/80Gi"));
        assert!(g.satisfies("vendor/nvidia/model/h100/ram/80Gi/interface/sxm"));
        assert!(!g.satisfies("vendor/nvidia/model/h100/interface/pcie"));
        assert!(!g.satisfies("vendor/nvidia/model/h100/ram/40Gi"));
        assert!(!g.satisfies("vendor/nvidia/model/a100"));
        assert!(!g.satisfies("vendor/amd/model/*"));
    }

    #[test]
    fn a_gpu_advertises_every_form_of_its_model_ram_and_interface() {
        let keys: Vec<String> = gpu_attributes(&[h100(), h100()]).into_iter().map(|a| a.key).collect();
        assert_eq!(
            keys,
            [
                "capabilities/gpu/vendor/nvidia/model/h100",
                "capabilities/gpu/vendor/nvidia/model/h100/interface/sxm",
                "capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi",
                "capabilities/gpu/vendor/nvidia/model/h100/ram/80Gi/interface/sxm",
            ]
        );
        let unknown = GpuInfo {
            memory_bytes: 0,
            interface: String::new(),
            ..h100()
        };
        assert_eq!(
            unknown.capabilities(),
            [Attribute::new("vendor/nvidia/model/h100", "true")]
        );
    }

    #[test]
    fn reported_gpu_memory_becomes_the_size_it_is_sold_as() {
        const MIB: u64 = 1 << 20;
        for (reported_mib, sold) in [
            (81_559, "80Gi"),   // H100 80GB HBM3
            (81_920, "80Gi"),   // A100 80GB
            (40_960, "40Gi"),   // A100 40GB
            (15_360, "16Gi"),   // T4
            (23_034, "24Gi"),   // L4
            (24_564, "24Gi"),   // RTX 4090
            (46_068, "48Gi"),   // L40S
            (95_830, "94Gi"),   // H100 NVL
            (143_771, "141Gi"), // H200
            (11_264, "11Gi"),   // RTX 2080 Ti
            (10_240, "10Gi"),   // RTX 3080
            (97_887, "96Gi"),   // RTX PRO 6000
            (196_608, "192Gi"), // MI300X
            (700 * 1024, "700Gi"),
            (5 * 1024, "5Gi"),
        ] {
            assert_eq!(
                ram_label(reported_mib * MIB).as_deref(),
                Some(sold),
                "{reported_mib} MiB"
            );
        }
        assert_eq!(ram_label(0), None);
    }

    #[test]
    fn driver_names_become_sdl_model_names() {
        assert_eq!(model_of("NVIDIA H100 80GB HBM3"), "h100");
        assert_eq!(model_of("NVIDIA A100-SXM4-80GB"), "a100");
        assert_eq!(model_of("NVIDIA GeForce RTX 4090"), "rtx4090");
        assert_eq!(model_of("Tesla T4"), "t4");
        assert_eq!(model_of("NVIDIA RTX A6000"), "rtxa6000");
    }

    #[test]
    fn cgroup_files_parse() {
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1500));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(
            parse_meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
    }

    #[test]
    fn probing_this_machine_finds_cpu_memory_and_disk() {
        let dir = std::env::temp_dir();
        let inv = probe(&dir, &Overrides::default());
        assert!(inv.cpu_millis >= 1000, "{inv:?}");
        assert!(inv.memory_bytes > 64 << 20, "{inv:?}");
        assert!(inv.storage_bytes > 0, "{inv:?}");
        let o = Overrides {
            cpu_millis: Some(500),
            ..Overrides::default()
        };
        assert_eq!(probe(&dir, &o).cpu_millis, 500);
    }
}
