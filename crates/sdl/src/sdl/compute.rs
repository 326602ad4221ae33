//! The compute profiles (`profiles.compute`): CPU, memory, storage volumes and GPUs of one
//! resource unit, held to the ledger's bounds.

use std::collections::BTreeMap;

use pazar_types::market::{limits, Attribute, Gpu};

use crate::manifest::STORAGE_CLASSES;
use crate::names;
use crate::read::{join, key_pos, Ctx};
use crate::units::{parse_cpu, parse_size};
use crate::yaml::{Kind, Node, Pos};

pub(super) struct Volume {
    pub(super) pos: Pos,
    pub(super) name: String,
    pub(super) bytes: u64,
    pub(super) persistent: bool,
    pub(super) class: Option<String>,
}

pub(super) struct Compute {
    pub(super) pos: Pos,
    pub(super) cpu_millis: u32,
    pub(super) memory: u64,
    pub(super) storage: Vec<Volume>,
    pub(super) gpu: Gpu,
}

/// Every profile of the `profiles.compute` mapping, by name.
pub(super) fn read_compute_profiles(cx: &mut Ctx, c: &Node) -> BTreeMap<String, Compute> {
    let mut compute = BTreeMap::new();
    for (name, node) in cx.map(c, "profiles.compute").unwrap_or_default() {
        let path = format!("profiles.compute.{name}");
        if let Some(comp) = read_compute(cx, node, &path) {
            compute.insert(name.to_string(), comp);
        }
    }
    compute
}

fn read_compute(cx: &mut Ctx, n: &Node, path: &str) -> Option<Compute> {
    let f = cx.fields(n, path, &["resources"])?;
    let rpath = join(path, "resources");
    let r = f.need(cx, path, "resources")?;
    let rf = cx.fields(r, &rpath, &["cpu", "memory", "storage", "gpu"])?;

    let cpu = rf.need(cx, &rpath, "cpu").and_then(|c| {
        let cpath = join(&rpath, "cpu");
        let units = match &c.kind {
            Kind::Map(_) => {
                let cf = cx.fields(c, &cpath, &["units", "attributes"])?;
                if let Some(a) = cf.get("attributes") {
                    // CPU attributes (e.g. arch) restrict where the unit may run, and a ledger
                    // resource unit has nowhere to carry them: refused rather than dropped.
                    let empty = a.is_null() || matches!(&a.kind, Kind::Map(m) if m.is_empty());
                    if !empty {
                        cx.error(
                            a.pos,
                            &join(&cpath, "attributes"),
                            "CPU attributes (e.g. arch) are not enforced by Pazar; require a provider attribute under profiles.placement.<name>.attributes instead (e.g. capabilities/cpu/arch: amd64)",
                        );
                    }
                }
                cf.need(cx, &cpath, "units")?
            }
            _ => c,
        };
        let upath = join(&cpath, "units");
        let units = match &units.kind {
            Kind::Seq(items) if items.len() == 1 => {
                cx.warn(
                    units.pos,
                    &upath,
                    "a one-item list read as its item (Akash refuses this form: write units: 16)",
                );
                &items[0]
            }
            _ => units,
        };
        let text = cx.string(units, &upath)?;
        match parse_cpu(&text) {
            Ok(m) if (u64::from(limits::MIN_CPU_MILLIS)..=u64::from(limits::MAX_CPU_MILLIS)).contains(&m) => {
                Some(m as u32)
            }
            Ok(m) => {
                cx.error(
                    units.pos,
                    &upath,
                    format!(
                        "{m}m is out of range: a unit may have 10m to 384 cores ({}m)",
                        limits::MAX_CPU_MILLIS
                    ),
                );
                None
            }
            Err(e) => {
                cx.error(units.pos, &upath, e.to_string());
                None
            }
        }
    });

    let memory = rf.need(cx, &rpath, "memory").and_then(|m| {
        let mpath = join(&rpath, "memory");
        let mf = cx.fields(m, &mpath, &["size"])?;
        let size = mf.need(cx, &mpath, "size")?;
        size_in(
            cx,
            size,
            &join(&mpath, "size"),
            limits::MIN_MEMORY,
            limits::MAX_MEMORY,
            "1Mi to 2Ti",
        )
    });

    let mut storage = Vec::new();
    if let Some(s) = rf.need(cx, &rpath, "storage") {
        let spath = join(&rpath, "storage");
        let items: Vec<(String, &Node)> = match &s.kind {
            Kind::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, it)| (format!("{spath}[{i}]"), it))
                .collect(),
            _ => vec![(spath.clone(), s)],
        };
        for (vpath, item) in items {
            if let Some(v) = read_volume(cx, item, &vpath) {
                if storage.iter().any(|o: &Volume| o.name == v.name) {
                    cx.error(
                        v.pos,
                        &join(&vpath, "name"),
                        format!("duplicate volume name {:?}", v.name),
                    );
                }
                storage.push(v);
            }
        }
        if storage.len() > limits::MAX_VOLUMES {
            cx.error(s.pos, &spath, format!("at most {} volumes", limits::MAX_VOLUMES));
        }
        if storage.is_empty() && cx.errors.is_empty() {
            cx.error(s.pos, &spath, "needs at least one volume");
        }
    }

    let gpu = match rf.get("gpu") {
        None => Gpu {
            units: 0,
            attributes: vec![],
        },
        Some(g) => read_gpu(cx, g, &join(&rpath, "gpu"))?,
    };
    Some(Compute {
        pos: n.pos,
        cpu_millis: cpu?,
        memory: memory?,
        storage,
        gpu,
    })
}

fn size_in(cx: &mut Ctx, n: &Node, path: &str, min: u64, max: u64, range: &str) -> Option<u64> {
    let text = cx.string(n, path)?;
    match parse_size(&text) {
        Ok(b) if (min..=max).contains(&b) => Some(b),
        Ok(b) => {
            cx.error(
                n.pos,
                path,
                format!("{text} ({b} bytes) is out of range: must be {range}"),
            );
            None
        }
        Err(e) => {
            cx.error(n.pos, path, e.to_string());
            None
        }
    }
}

fn read_volume(cx: &mut Ctx, n: &Node, path: &str) -> Option<Volume> {
    let f = cx.fields(n, path, &["name", "size", "attributes"])?;
    let name = f
        .get("name")
        .and_then(|v| cx.string(v, &join(path, "name")))
        .unwrap_or_else(|| "default".into());
    if !names::is_volume_name(&name) {
        cx.error(
            f.pos_of("name"),
            &join(path, "name"),
            format!(
                "{:?} is not a volume name (1-63 lowercase letters, digits, '-' and '_', starting and ending with a letter or digit)",
                names::shorten(&name)
            ),
        );
    }
    let bytes = f.need(cx, path, "size").and_then(|v| {
        size_in(
            cx,
            v,
            &join(path, "size"),
            limits::MIN_STORAGE,
            limits::MAX_STORAGE,
            "5Mi to 32Ti",
        )
    });
    let mut persistent = false;
    let mut class = None;
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        if let Some(af) = cx.fields(a, &apath, &["persistent", "class"]) {
            if let Some(p) = af.get("persistent") {
                persistent = cx.boolean(p, &join(&apath, "persistent")).unwrap_or(false);
            }
            if let Some(c) = af.get("class") {
                if let Some(c) = cx.string(c, &join(&apath, "class")) {
                    if !STORAGE_CLASSES.contains(&c.as_str()) {
                        cx.error(
                            af.pos_of("class"),
                            &join(&apath, "class"),
                            format!("{c:?} is not a storage class ({})", STORAGE_CLASSES.join(", ")),
                        );
                    }
                    class = Some(c);
                }
            }
        }
        match (persistent, class.as_deref()) {
            (true, Some("ram")) => cx.error(a.pos, &apath, "class ram cannot be persistent"),
            (false, Some(c)) if c != "ram" => cx.error(
                a.pos,
                &apath,
                format!("class {c} is for persistent volumes: add persistent: true"),
            ),
            (true, None) => class = Some("default".into()),
            _ => {}
        }
    }
    Some(Volume {
        pos: n.pos,
        name,
        bytes: bytes?,
        persistent,
        class,
    })
}

fn read_gpu(cx: &mut Ctx, n: &Node, path: &str) -> Option<Gpu> {
    let f = cx.fields(n, path, &["units", "attributes"])?;
    let units = match f.get("units") {
        Some(u) => cx.uint(u, &join(path, "units"), 0, u64::from(limits::MAX_GPU_UNITS))? as u32,
        None => 0,
    };
    let mut attributes = Vec::new();
    let mut vendors = 0;
    if let Some(a) = f.get("attributes") {
        let apath = join(path, "attributes");
        let af = cx.fields(a, &apath, &["vendor"])?;
        if let Some(v) = af.need(cx, &apath, "vendor") {
            let vpath = join(&apath, "vendor");
            for (vendor, models) in cx.map(v, &vpath).unwrap_or_default() {
                vendors += 1;
                let mpath = join(&vpath, vendor);
                if !matches!(vendor, "nvidia" | "amd") {
                    cx.error(
                        key_pos(v, vendor).unwrap_or(v.pos),
                        &mpath,
                        format!("unknown GPU vendor {vendor:?} (nvidia or amd)"),
                    );
                    continue;
                }
                let list = cx.seq(models, &mpath).unwrap_or_default();
                if list.is_empty() {
                    attributes.push(Attribute::new(format!("vendor/{vendor}/model/*"), "true"));
                }
                for (i, m) in list.iter().enumerate() {
                    let ipath = format!("{mpath}[{i}]");
                    let Some(mf) = cx.fields(m, &ipath, &["model", "ram", "interface"]) else {
                        continue;
                    };
                    let Some(model) = mf
                        .need(cx, &ipath, "model")
                        .and_then(|x| cx.string(x, &join(&ipath, "model")))
                    else {
                        continue;
                    };
                    let model = model.to_ascii_lowercase();
                    if model.is_empty() || model.contains('/') || model.len() > 64 {
                        cx.error(
                            mf.pos_of("model"),
                            &join(&ipath, "model"),
                            format!("{model:?} is not a GPU model name"),
                        );
                        continue;
                    }
                    let mut key = format!("vendor/{vendor}/model/{model}");
                    if let Some(r) = mf.get("ram") {
                        if let Some(ram) = cx.string(r, &join(&ipath, "ram")) {
                            match parse_size(&ram) {
                                Err(_) => cx.error(
                                    r.pos,
                                    &join(&ipath, "ram"),
                                    format!("{ram:?} is not a size such as 80Gi"),
                                ),
                                // Providers advertise GPU memory as whole GiB (`80Gi`, the size a
                                // card is sold as) and attributes match as text, so the same size
                                // written another way (`81920Mi`, `80gi`) is written as they are.
                                Ok(bytes) if bytes > 0 && bytes % (1 << 30) == 0 => {
                                    key.push_str(&format!("/ram/{}Gi", bytes >> 30));
                                }
                                Ok(bytes) => {
                                    cx.warn(
                                        r.pos,
                                        &join(&ipath, "ram"),
                                        format!(
                                            "GPU ram {ram:?} is {:.1} GiB; providers advertise the size a card \
                                             is sold as in whole GiB, so this matches none of them: did you \
                                             mean {}Gi?",
                                            bytes as f64 / f64::from(1u32 << 30),
                                            // `80G` is a card sold as 80 GB: the same number in Gi.
                                            if bytes % 1_000_000_000 == 0 {
                                                bytes / 1_000_000_000
                                            } else {
                                                (bytes + (1 << 29)) >> 30
                                            }
                                        ),
                                    );
                                    key.push_str(&format!("/ram/{ram}"));
                                }
                            }
                        }
                    }
                    if let Some(x) = mf.get("interface") {
                        if let Some(iface) = cx.string(x, &join(&ipath, "interface")) {
                            let iface = iface.to_ascii_lowercase();
                            if !matches!(iface.as_str(), "pcie" | "sxm") {
                                cx.error(
                                    x.pos,
                                    &join(&ipath, "interface"),
                                    format!("{iface:?} is not a GPU interface (pcie or sxm)"),
                                );
                            }
                            key.push_str(&format!("/interface/{iface}"));
                        }
                    }
                    attributes.push(Attribute::new(key, "true"));
                }
            }
        }
    }
    attributes.sort();
    attributes.dedup();
    if units > 0 && vendors == 0 {
        cx.error(
            n.pos,
            path,
            "GPU units need attributes naming the vendor (and models): attributes: {vendor: {nvidia: }}",
        );
    }
    if units == 0 && !attributes.is_empty() {
        cx.error(n.pos, &join(path, "units"), "GPU attributes are given but units is 0");
    }
    Some(Gpu { units, attributes })
}
