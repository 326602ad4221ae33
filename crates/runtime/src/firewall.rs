//! Keeps a lease's containers away from the provider host and its network. Two sets of rules per
//! lease bridge, for IPv4 (`iptables`) and IPv6 (`ip6tables`):
//!
//! - **Host**: in `INPUT`, packets that enter the host from the bridge and do not belong to a
//!   connection the host opened are dropped, so a workload reaches none of the host's addresses
//!   (the daemon's ports, anything listening on the host, link-local IPv6 included). Replies to
//!   connections the host makes (Docker's port proxy, readiness probes) still pass.
//! - **Egress**: in Docker's `DOCKER-USER` chain (or `FORWARD` where Docker made none), new
//!   connections forwarded out of the bridge go through the lease's own chain: traffic to its
//!   own bridge (its replicas) and replies pass, then the destinations the operator allows
//!   (`[egress] allow`), then DNS to the host's resolvers, then every link-local, cloud-metadata,
//!   private, shared (CGNAT), loopback, multicast and reserved range is refused; the public
//!   internet passes on to Docker's own rules.
//!
//! Traffic between leases is already dropped by Docker's isolation chains (one bridge per
//! lease) and by the private ranges above. These commands run as root: their arguments are only
//! the bridge's name, which the runtime derives from the lease id's hash and this module checks
//! ([`is_lease_iface`]), and addresses parsed from the operator's configuration
//! ([`Cidr`]) and the host's resolver list; nothing a tenant wrote reaches them.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::str::FromStr;

use super::RuntimeError;

/// Comment on the host rule of every lease bridge.
const HOST_COMMENT: &str = "pazar lease isolation";
/// Comment on the jump from Docker's chain into a lease's egress chain.
const EGRESS_COMMENT: &str = "pazar lease egress";
/// The environment of every firewall command: fixed, nothing inherited.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// IPv4 destinations a workload may not open connections to, unless the operator allows them.
pub const BLOCKED_V4: &[&str] = &[
    // "This network", loopback, link-local (cloud metadata at 169.254.169.254 included).
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    // Private ranges (RFC 1918) and shared address space (RFC 6598: carrier-grade NAT, and
    // Alibaba Cloud's metadata at 100.100.100.200).
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    // IETF protocol assignments, benchmarking, multicast, reserved and broadcast.
    "192.0.0.0/24",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    // Azure's host endpoint (WireServer), a public-range address only the platform answers.
    "168.63.129.16/32",
];

/// IPv6 destinations a workload may not open connections to, unless the operator allows them.
pub const BLOCKED_V6: &[&str] = &[
    "::/128",
    "::1/128",
    // IPv4-mapped addresses, which would name the IPv4 ranges above.
    "::ffff:0:0/96",
    // Unique local addresses (AWS's metadata at fd00:ec2::254 included), link-local, multicast.
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

/// An address range, `ADDRESS/PREFIX` (a bare address is one host), parsed from the operator's
/// configuration: the prefix fits the family and the address has no bits past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address range (ADDRESS/PREFIX, e.g. 10.1.2.0/24 or fd12::/64): {why}")]
pub struct CidrError {
    text: String,
    why: String,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("the prefix is longer than {max} bits"));
        }
        let c = Cidr { addr, prefix };
        if c.network() != addr {
            return Err(format!(
                "it has bits set past the prefix (the range starts at {})",
                c.network()
            ));
        }
        Ok(c)
    }

    /// One host.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            prefix: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.is_ipv4() {
            return false;
        }
        Cidr { addr: ip, ..*self }.network() == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let err = |why: String| CidrError {
            text: text.to_string(),
            why,
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IPv4 or IPv6 address".into()))?;
        let prefix = match prefix {
            None => Cidr::host(addr).prefix,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().map_err(|_| err("the prefix is not a number".into()))?
            }
            Some(_) => return Err(err("the prefix is not a number".into())),
        };
        Cidr::new(addr, prefix).map_err(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a lease's workloads may reach beyond their own network and the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Ranges the operator opens although they are blocked by default (`[egress] allow`).
    pub allow: Vec<Cidr>,
    /// Resolvers workloads may query on port 53 (Docker's embedded DNS forwards to the host's
    /// resolvers from inside the container, so a resolver on a private address would otherwise
    /// be cut off). Filled from the host's `resolv.conf` by [`EgressPolicy::with_host_resolvers`].
    pub resolvers: Vec<IpAddr>,
}

impl EgressPolicy {
    /// The operator's ranges, and the host's resolvers.
    pub fn with_host_resolvers(allow: Vec<Cidr>) -> EgressPolicy {
        EgressPolicy {
            allow,
            resolvers: host_resolvers(),
        }
    }
}

/// The non-loopback nameservers of the host's `resolv.conf` (and systemd-resolved's upstream
/// list, which Docker uses when the host's own points at the local stub).
pub fn host_resolvers() -> Vec<IpAddr> {
    let mut out = Vec::new();
    for path in ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"] {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        out.extend(parse_resolvers(&text));
    }
    out.sort();
    out.dedup();
    out
}

fn parse_resolvers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .collect()
}

/// Whether `iface` is a lease bridge's name as the Docker runtime makes it: `pz-` and 12
/// lowercase hex digits. Nothing else is ever passed to the firewall commands.
pub fn is_lease_iface(iface: &str) -> bool {
    iface.len() == 15
        && iface.starts_with("pz-")
        && iface[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_iface(iface: &str) -> Result<(), RuntimeError> {
    if is_lease_iface(iface) {
        Ok(())
    } else {
        Err(RuntimeError::Backend(format!(
            "{iface:?} is not a lease bridge name (pz- and 12 hex digits); no firewall rule is made for it"
        )))
    }
}

/// The lease's egress chain (28 bytes at most, iptables' limit).
pub fn egress_chain(iface: &str) -> String {
    format!("{iface}-out")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }

    fn reject(self) -> &'static str {
        match self {
            Family::V4 => "icmp-admin-prohibited",
            Family::V6 => "icmp6-adm-prohibited",
        }
    }

    fn blocked(self) -> Vec<Cidr> {
        let list = match self {
            Family::V4 => BLOCKED_V4,
            Family::V6 => BLOCKED_V6,
        };
        list.iter()
            .map(|c| c.parse().expect("the built-in ranges are valid"))
            .collect()
    }

    fn holds(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == (self == Family::V4)
    }
}

/// The families this host filters: IPv4 always, IPv6 when the kernel has it.
fn families() -> Vec<Family> {
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        vec![Family::V4, Family::V6]
    } else {
        vec![Family::V4]
    }
}

fn command(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.env_clear().env("PATH", PATH);
    c
}

/// Runs `tool -w ARGS`; `Ok(false)` for exit status 1 where `one_is_no` (`-C`: no such rule).
fn run(tool: &str, args: &[&str], one_is_no: bool) -> Result<bool, String> {
    let out = command(tool)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if out.status.success() {
        return Ok(true);
    }
    if one_is_no && out.status.code() == Some(1) {
        return Ok(false);
    }
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(format!("{tool} {} failed: {err}", args.join(" ")))
}

fn host_rule(iface: &str) -> Vec<&str> {
    vec![
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
        HOST_COMMENT,
    ]
}

/// Docker's chain for rules of its users when it made one, else `FORWARD`.
fn parent(f: Family) -> &'static str {
    if run(f.tool(), &["-S", "DOCKER-USER"], false).is_ok() {
        "DOCKER-USER"
    } else {
        "FORWARD"
    }
}

fn jump_rule<'a>(parent: &'a str, iface: &'a str, chain: &'a str) -> Vec<&'a str> {
    vec![
        parent,
        "-i",
        iface,
        "-m",
        "comment",
        "--comment",
        EGRESS_COMMENT,
        "-j",
        chain,
    ]
}

/// The lease's egress chain as `iptables-restore` input: declaring the chain creates it or
/// empties it, and the whole table change is applied at once, so the chain is never seen
/// half-filled.
fn egress_rules(f: Family, iface: &str, policy: &EgressPolicy) -> String {
    let chain = egress_chain(iface);
    let mut s = format!("*filter\n:{chain} - [0:0]\n");
    let mut add = |rule: String| s.push_str(&format!("-A {chain} {rule}\n"));
    // Its own replicas, and replies to connections made from outside (published ports).
    add(format!("-o {iface} -j RETURN"));
    add("-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN".into());
    for c in policy.allow.iter().filter(|c| f.holds(c.addr)) {
        add(format!("-d {c} -j RETURN"));
    }
    for ip in policy.resolvers.iter().filter(|ip| f.holds(**ip)) {
        let host = Cidr::host(*ip);
        add(format!("-d {host} -p udp --dport 53 -j RETURN"));
        add(format!("-d {host} -p tcp --dport 53 -j RETURN"));
    }
    for c in f.blocked() {
        add(format!("-d {c} -j REJECT --reject-with {}", f.reject()));
    }
    s.push_str("COMMIT\n");
    s
}

fn restore(f: Family, input: &str) -> Result<(), String> {
    let tool = format!("{}-restore", f.tool());
    let mut child = command(&tool)
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(input.as_bytes())
        .map_err(|e| format!("cannot write to {tool}: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("{tool}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Installs the host and egress rules of bridge `iface` (idempotent: the egress chain is
/// written afresh, the two jumps are added where missing).
pub fn isolate(iface: &str, egress: &EgressPolicy) -> Result<(), RuntimeError> {
    check_iface(iface)?;
    let fail = |e: String| RuntimeError::Backend(format!("cannot isolate lease network {iface}: {e}"));
    let chain = egress_chain(iface);
    for f in families() {
        let host = host_rule(iface);
        if !run(f.tool(), &[&["-C"], &host[..]].concat(), true).map_err(fail)? {
            run(f.tool(), &[&["-I"], &host[..]].concat(), false).map_err(fail)?;
        }
        restore(f, &egress_rules(f, iface, egress)).map_err(fail)?;
        let parent = parent(f);
        let jump = jump_rule(parent, iface, &chain);
        if !run(f.tool(), &[&["-C"], &jump[..]].concat(), true).map_err(fail)? {
            // At the top: Docker may end its chain with a RETURN for everything.
            run(f.tool(), &[&["-I"], &jump[..]].concat(), false).map_err(fail)?;
        }
    }
    Ok(())
}

/// Removes every rule of bridge `iface` and its egress chain (absent is fine).
pub fn release(iface: &str) -> Result<(), RuntimeError> {
    check_iface(iface)?;
    let fail = |e: String| RuntimeError::Backend(format!("cannot remove the firewall rules of {iface}: {e}"));
    let chain = egress_chain(iface);
    for f in families() {
        let host = host_rule(iface);
        while run(f.tool(), &[&["-C"], &host[..]].concat(), true).unwrap_or(false) {
            run(f.tool(), &[&["-D"], &host[..]].concat(), false).map_err(fail)?;
        }
        for parent in ["DOCKER-USER", "FORWARD"] {
            let jump = jump_rule(parent, iface, &chain);
            while run(f.tool(), &[&["-C"], &jump[..]].concat(), true).unwrap_or(false) {
                run(f.tool(), &[&["-D"], &jump[..]].concat(), false).map_err(fail)?;
            }
        }
        if run(f.tool(), &["-S", &chain], false).is_ok() {
            run(f.tool(), &["-F", &chain], false).map_err(fail)?;
            run(f.tool(), &["-X", &chain], false).map_err(fail)?;
        }
    }
    Ok(())
}

/// Bridges that have any rule or egress chain of this module, in either family.
pub fn isolated_interfaces() -> Vec<String> {
    let mut out = Vec::new();
    for f in families() {
        let Ok(listing) = command(f.tool()).args(["-w", "-S"]).output() else {
            continue;
        };
        for line in String::from_utf8_lossy(&listing.stdout).lines() {
            let mut words = line.split_whitespace();
            let iface = match (words.next(), words.next()) {
                // A lease's egress chain: `-N pz-…-out`.
                (Some("-N"), Some(chain)) => chain.strip_suffix("-out").map(str::to_string),
                // A host rule or a jump: `… -i pz-… … "pazar lease …"`.
                _ if line.contains(HOST_COMMENT) || line.contains(EGRESS_COMMENT) => {
                    let mut it = line.split_whitespace();
                    it.find(|w| *w == "-i").and_then(|_| it.next()).map(str::to_string)
                }
                _ => None,
            };
            if let Some(i) = iface.filter(|i| is_lease_iface(i)) {
                out.push(i);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The rules of `iface` as `iptables -S` prints them, both families (for tests and operators).
pub fn listing(iface: &str) -> Result<String, RuntimeError> {
    check_iface(iface)?;
    let mut s = String::new();
    for f in families() {
        let out = command(f.tool())
            .args(["-w", "-S", &egress_chain(iface)])
            .output()
            .map_err(|e| RuntimeError::Backend(format!("cannot run {}: {e}", f.tool())))?;
        s.push_str(&format!("# {}\n{}", f.tool(), String::from_utf8_lossy(&out.stdout)));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_only_when_the_prefix_fits_and_no_host_bits_are_set() {
        for (text, shown) in [
            ("10.1.2.0/24", "10.1.2.0/24"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("fd12:3456::/32", "fd12:3456::/32"),
            ("fd00:ec2::254", "fd00:ec2::254/128"),
        ] {
            assert_eq!(
                text.parse::<Cidr>().map(|c| c.to_string()),
                Ok(shown.to_string()),
                "{text}"
            );
        }
        for bad in [
            "10.1.2.3/24",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/8 -j ACCEPT",
            "eth0",
            "",
            "10.0.0.0/08x",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} was accepted");
        }
        let err = "10.1.2.3/24".parse::<Cidr>().expect_err("host bits");
        assert!(err.to_string().contains("starts at 10.1.2.0"), "{err}");
    }

    #[test]
    fn the_built_in_ranges_cover_metadata_and_private_addresses_but_not_the_internet() {
        let blocked = |ip: &str| {
            let ip: IpAddr = ip.parse().expect("ip");
            BLOCKED_V4
                .iter()
                .chain(BLOCKED_V6)
                .any(|c| c.parse::<Cidr>().expect("valid").contains(ip))
        };
        for ip in [
            "169.254.169.254",
            "100.100.100.200",
            "168.63.129.16",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "127.0.0.1",
            "fd00:ec2::254",
            "fe80::1",
            "::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(blocked(ip), "{ip} is not blocked");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "172.32.0.1", "2606:4700::1111", "192.0.2.2"] {
            assert!(!blocked(ip), "{ip} is blocked");
        }
    }

    #[test]
    fn only_bridge_names_the_runtime_makes_reach_the_firewall() {
        assert!(is_lease_iface("pz-0123456789ab"));
        for bad in [
            "pz-0123456789AB",
            "pz-0123456789a",
            "eth0",
            "pz-0123456789ab ",
            "pz-01234567-9ab",
            "-j ACCEPT",
        ] {
            assert!(!is_lease_iface(bad), "{bad:?}");
            assert!(release(bad).is_err());
        }
    }

    #[test]
    fn the_egress_chain_lets_the_lease_and_allowed_ranges_through_before_refusing_private_ones() {
        let policy = EgressPolicy {
            allow: vec!["10.1.2.0/24".parse().expect("cidr"), "fd12::/64".parse().expect("cidr")],
            resolvers: vec!["10.255.255.53".parse().expect("ip")],
        };
        let v4 = egress_rules(Family::V4, "pz-0123456789ab", &policy);
        let lines: Vec<&str> = v4.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "*filter",
                ":pz-0123456789ab-out - [0:0]",
                "-A pz-0123456789ab-out -o pz-0123456789ab -j RETURN",
                "-A pz-0123456789ab-out -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"
            ]
        );
        let pos = |needle: &str| {
            lines
                .iter()
                .position(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in\n{v4}"))
        };
        assert!(pos("-d 10.1.2.0/24 -j RETURN") < pos("-d 10.0.0.0/8 -j REJECT"));
        assert!(pos("-d 10.255.255.53/32 -p udp --dport 53 -j RETURN") < pos("-d 10.0.0.0/8 -j REJECT"));
        assert!(pos("-d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited") > 0);
        assert!(!v4.contains("fd12::"), "no IPv6 range in the IPv4 chain");
        assert_eq!(lines.last(), Some(&"COMMIT"));
        let v6 = egress_rules(Family::V6, "pz-0123456789ab", &policy);
        assert!(
            v6.contains("-d fd12::/64 -j RETURN")
                && v6.contains("-d fc00::/7 -j REJECT --reject-with icmp6-adm-prohibited"),
            "{v6}"
        );
        assert!(!v6.contains("10.1.2.0"), "{v6}");
    }

    #[test]
    fn resolvers_are_read_from_resolv_conf_without_loopback_stubs() {
        let got = parse_resolvers(
            "# x\nnameserver 10.255.255.53\nnameserver 127.0.0.53\nnameserver fd00::53 # v6\nsearch lan\n",
        );
        assert_eq!(
            got,
            [
                "10.255.255.53".parse::<IpAddr>().expect("ip"),
                "fd00::53".parse().expect("ip")
            ]
        );
    }
}
