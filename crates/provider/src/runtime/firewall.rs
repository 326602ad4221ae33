//! Keeps a lease's containers away from the provider host itself: packets that enter the host
//! from the lease's bridge and do not belong to a connection the host opened are dropped, so a
//! workload cannot reach the daemon's ports (or anything else listening on the host). Replies
//! to connections the host makes (Docker's port proxy, health probes) still pass. Traffic
//! between leases is already dropped by Docker's isolation chains (one bridge per lease).

use std::process::Command;

use super::RuntimeError;

fn rule(iface: &str) -> Vec<String> {
    [
        "INPUT",
        "-i",
        iface,
        "-m",
        "conntrack",
        "!",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "DROP",
        "-m",
        "comment",
        "--comment",
        "pazar lease isolation",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect()
}

fn iptables(tool: &str, action: &str, iface: &str) -> Result<bool, String> {
    let out = Command::new(tool)
        .arg("-w")
        .arg(action)
        .args(rule(iface))
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        return Ok(true);
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    // `-C` answers "does not exist" with exit 1; anything else is a real failure.
    if action == "-C" && out.status.code() == Some(1) {
        return Ok(false);
    }
    Err(format!("{tool} {action} failed: {err}"))
}

/// Installs the rule for bridge `iface` (idempotent).
pub fn isolate(iface: &str) -> Result<(), RuntimeError> {
    let fail = |e: String| RuntimeError::Backend(format!("cannot isolate lease network {iface} from the host: {e}"));
    if !iptables("iptables", "-C", iface).map_err(fail)? {
        iptables("iptables", "-I", iface).map_err(fail)?;
    }
    Ok(())
}

/// Removes the rule (absent is fine).
pub fn release(iface: &str) -> Result<(), RuntimeError> {
    while iptables("iptables", "-C", iface).unwrap_or(false) {
        iptables("iptables", "-D", iface)
            .map_err(|e| RuntimeError::Backend(format!("cannot remove the isolation rule of {iface}: {e}")))?;
    }
    Ok(())
}

/// Interfaces that have an isolation rule.
pub fn isolated_interfaces() -> Vec<String> {
    let Ok(out) = Command::new("iptables").args(["-w", "-S", "INPUT"]).output() else {
        return vec![];
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("pazar lease isolation"))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "-i")?;
            it.next().map(str::to_string)
        })
        .collect()
}
