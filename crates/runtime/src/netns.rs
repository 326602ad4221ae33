//! Network namespaces for sandboxed leases: one per lease, holding only a loopback interface,
//! so a lease reaches neither other leases, nor the daemon's ports, nor the host's network.
//! They are named (`ip netns add`, under `/run/netns`) so they outlive a daemon restart.
//! The daemon reaches into one by moving a short-lived thread into it (`setns`): a socket made
//! there stays there, and is then used from the daemon's own threads.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::{setns, CloneFlags};

/// Where `ip netns` keeps named namespaces.
const DIR: &str = "/run/netns";

/// Refuses a name that is not safe as one file name under [`DIR`] and one argument of `ip`:
/// 1-200 ASCII lower-case letters, digits and `-`, not starting with `-`. The sandbox names
/// namespaces after lease keys, which always pass; this is the last check before the host.
fn checked(name: &str) -> Result<&str, String> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 200
        && b[0] != b'-'
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if ok {
        Ok(name)
    } else {
        Err(format!("{name:?} cannot name a network namespace"))
    }
}

/// Where the namespace `name` is mounted.
pub fn path(name: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(DIR).join(checked(name)?))
}

pub fn exists(name: &str) -> bool {
    path(name).is_ok_and(|p| p.exists())
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = super::sandbox::host_command("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (Debian's iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Creates the namespace (kept if it exists) with loopback up, and lets unprivileged
/// processes in it bind low ports (the sysctl is per namespace).
pub fn create(name: &str) -> Result<(), String> {
    let name = checked(name)?;
    if !exists(name) {
        ip(&["netns", "add", name])?;
    }
    ip(&["-n", name, "link", "set", "lo", "up"])?;
    run_in(name, || {
        std::fs::write("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0")
            .map_err(|e| format!("cannot set ip_unprivileged_port_start: {e}"))
    })?
}

/// Removes the namespace; absent is fine.
pub fn delete(name: &str) -> Result<(), String> {
    let name = checked(name)?;
    if exists(name) {
        ip(&["netns", "delete", name])?;
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has joined the namespace.
pub fn run_in<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    let p = path(name)?;
    std::thread::spawn(move || {
        let fd = File::open(&p).map_err(|e| format!("cannot open {}: {e}", p.display()))?;
        setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| format!("cannot enter {}: {e}", p.display()))?;
        Ok(f())
    })
    .join()
    .map_err(|_| "the namespace thread panicked".to_string())?
}

/// Opens a TCP connection to `127.0.0.1:port` inside the namespace.
pub async fn connect(name: &str, port: u16, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let name = name.to_string();
    let std_stream = tokio::task::spawn_blocking(move || {
        run_in(&name, move || {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&addr, timeout)
        })
        .map_err(std::io::Error::other)?
    })
    .await
    .map_err(std::io::Error::other)??;
    std_stream.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(std_stream)
}
