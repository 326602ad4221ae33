//! Attacks of class `sandbox_env` (see mod.rs): a tenant's environment must reach its workload
//! and nothing else. The provider starts a sandboxed replica through host commands that run as
//! root before privileges are dropped (`sh`, `nsenter`, `setpriv`, `bwrap`); if the SDL's `env`
//! reached them, `PATH` or `LD_PRELOAD` pointing into the tenant's own volume would run the
//! tenant's code as root on the host.
//!
//! The attack is performed for real against `pazar provider run` on the sandbox runtime: the
//! workload plants a fake `sh`, `nsenter`, `setpriv` and `bwrap` and a preloadable library in
//! its persistent volume (which sits on the host under the sandbox's directory), then exits so
//! that the daemon launches it again with the tenant's `PATH` and `LD_PRELOAD` naming them. Each
//! planted program and the library's constructor write a marker on the host; none may appear,
//! while the workload itself prints the tenant's variables.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pazar_runtime::demo_image::store_demo_rootfs;
use pazar_runtime::images::ImageStore;
use pazar_runtime::sandbox::host_volume_dir;
use pazar_runtime::LeaseRef;
use pazar_types::market::BidId;

use crate::common::{self, free_port, http_get, Daemon};

const IMAGE: &str = "pazar-demo:sandbox-env";
const DSEQ: u64 = 4242;

/// A shared library whose constructor appends `ld_preload` to `marker` in whatever process
/// loads it, built with the host's C compiler (Rust links with it, so it is there), gzipped and
/// base64-encoded for the tenant to carry in its SDL.
fn evil_library(dir: &Path, marker: &Path) -> String {
    let src = dir.join("evil.c");
    std::fs::write(
        &src,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n__attribute__((constructor)) static void evil(void) {{\n  \
             int fd = open(\"{}\", O_WRONLY | O_CREAT | O_APPEND, 0644);\n  \
             if (fd >= 0) {{ write(fd, \"ld_preload\\n\", 11); close(fd); }}\n}}\n",
            marker.display()
        ),
    )
    .expect("source");
    let so = dir.join("evil.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Os", "-s", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .expect("the host's C compiler (cc) runs");
    assert!(out.status.success(), "cc: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -9c \"$0\" | base64 -w0")
        .arg(&so)
        .output()
        .expect("gzip and base64");
    assert!(out.status.success());
    String::from_utf8(out.stdout).expect("base64 is ASCII")
}

/// The workload: on its first run it plants the fake host programs and the library in its
/// volume and exits; on the next it prints its environment and serves.
fn workload(marker_dir: &Path, library: &str) -> String {
    let fake = |tool: &str, real: &str| {
        format!(
            "printf '#!/bin/sh\\necho {tool} >> {m}/path-{tool}\\nexec {real} \"$@\"\\n' > /data/bin/{tool}\n\
             /bin/busybox chmod 755 /data/bin/{tool}\n",
            m = marker_dir.display()
        )
    };
    let mut s = String::from("if [ ! -e /data/planted ]; then\n/bin/busybox mkdir -p /data/bin\n");
    s += &fake("sh", "/bin/sh");
    s += &fake("nsenter", "/usr/bin/nsenter");
    s += &fake("setpriv", "/usr/bin/setpriv");
    s += &fake("bwrap", "/usr/bin/bwrap");
    s += &format!("echo '{library}' | /bin/busybox base64 -d | /bin/busybox gunzip > /data/evil.so\n");
    s += "/bin/busybox touch /data/planted\necho planted; exit 0\nfi\n";
    s += "echo \"workload PATH=$PATH\"\necho \"workload LD_PRELOAD=$LD_PRELOAD\"\n";
    s += "echo \"<p>${GREETING}</p>\" > /tmp/index.html\nexec /bin/busybox httpd -f -p 8080 -h /tmp\n";
    s
}

fn sdl(volume: &Path, script: &str) -> String {
    let v = volume.display();
    let script = script.replace('\n', "\n        ");
    format!(
        r#"version: "2.0"
services:
  web:
    image: {IMAGE}
    env:
      - PATH={v}/bin:/usr/sbin:/usr/bin:/sbin:/bin
      - LD_PRELOAD={v}/evil.so
      - GREETING=tenant-env-reached-the-workload
    command: [/bin/sh, -c]
    args:
      - |
        {script}
    expose:
      - port: 8080
        as: 80
        to: [{{global: true}}]
    params:
      storage:
        data: {{mount: /data}}
profiles:
  compute:
    web:
      resources:
        cpu: {{units: 0.25}}
        memory: {{size: 128Mi}}
        storage:
          - size: 64Mi
          - name: data
            size: 64Mi
            attributes: {{persistent: true, class: beta2}}
  placement:
    local:
      pricing:
        web: {{denom: uusd, amount: 10000}}
deployment:
  web:
    local: {{profile: web, count: 1}}
"#
    )
}

/// Where the lease's volume `data` of service `web` lies on the host: the runtime's own
/// layout, so the attack follows it wherever it puts volumes.
fn host_volume(sandbox: &Path, lease: &LeaseRef) -> PathBuf {
    host_volume_dir(sandbox, lease, "web", "data").expect("valid names")
}

#[test]
fn a_tenant_path_or_ld_preload_reaches_only_its_workload_never_the_hosts_launch_commands() {
    let net = common::devnet(250);
    let dir = tempfile::tempdir().expect("tempdir");
    // The sandbox user must be able to walk down to the sandbox's directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let sandbox = dir.path().join("sandbox");
    let markers = dir.path().join("markers");
    std::fs::create_dir_all(&markers).expect("markers");
    // Writable by anyone, so a fake `bwrap` run after the drop to `nobody` would leave its mark.
    std::fs::set_permissions(&markers, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    store_demo_rootfs(&ImageStore::new(sandbox.join("images")), IMAGE).expect("demo rootfs");

    let config = dir.path().join("provider.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{}\"\nruntime = \"sandbox\"\n[sandbox]\ndir = \"{}\"\ndocker_images = false\n\
             [images]\nallow_local = [\"pazar-demo:*\"]\n\
             [attributes]\n\"capabilities/storage/1/class\" = \"beta2\"\n",
            free_port(),
            sandbox.display()
        ),
    )
    .expect("config");
    let log = dir.path().join("provider.log");
    let daemon = Daemon(
        Command::new(common::bin())
            .args(["provider", "run", "--from", "provider", "--config"])
            .arg(&config)
            .arg("--home")
            .arg(net.home.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawns the daemon"),
    );
    let provider = net.address("provider");
    let t0 = Instant::now();
    while net.cli_raw(&["query", "provider", &provider], &[]).status.code() != Some(0) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the provider did not register: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The tenant knows where its volume lies on the host: the layout is public and the lease id
    // is its own choice (owner, dseq) and the provider's address.
    let id: BidId = format!("{}/{DSEQ}/1/1/{provider}", net.address("alice"))
        .parse()
        .expect("a lease id");
    let lease = LeaseRef::new(id);
    let volume = host_volume(&sandbox, &lease);
    let library = evil_library(dir.path(), &markers.join("ld_preload"));
    let file = dir.path().join("deploy.yaml");
    let mut f = std::fs::File::create(&file).expect("sdl");
    f.write_all(sdl(&volume, &workload(&markers, &library)).as_bytes())
        .expect("sdl");
    drop(f);
    let v = net.cli(&[
        "deploy",
        file.to_str().expect("utf8"),
        "--from",
        "alice",
        "--dseq",
        &DSEQ.to_string(),
        "--bid-window-s",
        "0",
    ]);
    let lease_id = v["leases"][0]["lease"].as_str().expect("a lease").to_string();
    assert_eq!(lease_id, lease.label(), "{v}");
    assert_eq!(v["leases"][0]["status"]["ready"], true, "{v}");

    // The second run is the one that prints: by then the daemon has launched it again with the
    // planted files in place.
    let t0 = Instant::now();
    let text = loop {
        let out = net.cli_raw(&["lease", "logs", &lease_id, "--from", "alice", "--tail", "200"], &[]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("workload LD_PRELOAD=") {
            break text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the workload never ran twice: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(text.contains("planted"), "{text}");
    for planted in ["bin/sh", "bin/nsenter", "bin/setpriv", "bin/bwrap", "evil.so"] {
        assert!(
            volume.join(planted).is_file(),
            "the attack is staged: {planted} is in the tenant's volume on the host"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&markers)
        .expect("markers")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "host processes ran the tenant's code: {left:?}\n{text}"
    );
    assert!(
        !text.contains("ld.so"),
        "the host's dynamic loader read LD_PRELOAD: {text}"
    );
    // The tenant's variables still reach the workload, verbatim.
    assert!(
        text.contains(&format!("workload PATH={}/bin:/usr/sbin", volume.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("workload LD_PRELOAD={}/evil.so", volume.display())),
        "{text}"
    );
    let uri = v["leases"][0]["status"]["uris"][0]["uri"]
        .as_str()
        .expect("uri")
        .to_string();
    let page = http_get(&uri);
    assert!(page.contains("tenant-env-reached-the-workload"), "{page}");

    // The sandbox's replicas outlive the daemon: it removes them before the test ends.
    net.close_lease(&lease.id, "alice");
    let said = format!("lease {lease_id} closed");
    let t0 = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&said) {
            assert!(!text.contains(&format!("{said} but removing")), "{text}");
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "the daemon did not remove the lease:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(daemon);
}
