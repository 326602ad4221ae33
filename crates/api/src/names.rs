//! The name and grammar rules that the SDL reader and the manifest parser share, so that a file
//! the SDL accepts always yields a manifest providers accept, and a manifest written by hand is
//! held to exactly the same rules. On a provider these names become host resources (container,
//! cgroup, directory and log file names), so every rule also keeps them free of `/`, `..`,
//! control characters and unbounded lengths.

/// Longest service or volume name (a DNS label).
pub const MAX_LABEL: usize = 63;
/// Longest image reference (Docker's limit on the name part is 255; tag and digest come on top).
pub const MAX_IMAGE_LEN: usize = 512;
/// Longest repository name of an image reference (Docker's `NameTotalLengthMax`).
const MAX_IMAGE_NAME_LEN: usize = 255;
/// Longest mount path.
pub const MAX_PATH_LEN: usize = 1024;
/// Longest component of a mount path (Linux's `NAME_MAX`).
const MAX_PATH_COMPONENT: usize = 255;
/// Longest environment variable name.
pub const MAX_ENV_NAME: usize = 255;
/// Longest host name (DNS).
pub const MAX_HOSTNAME: usize = 253;

/// Where no volume may be mounted: the runtimes build these themselves (the process table, the
/// kernel's and the devices' views, and the files that name the lease's services), and a volume
/// over them would hide or replace what the workload's isolation relies on.
const RESERVED_TREES: &[&str] = &["/proc", "/sys", "/dev"];
const RESERVED_FILES: &[&str] = &["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"];
/// The one place under a reserved tree a volume may go: Akash's `ram` volumes are mounted there
/// for shared memory.
const ALLOWED_UNDER_RESERVED: &[&str] = &["/dev/shm"];

/// Akash's service name rule (`^[a-z]([-a-z0-9]*[a-z0-9])?$`), at most 63 characters: a DNS
/// label, since services are reached by name inside a lease.
pub fn is_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// A storage volume name: 1-63 lowercase letters, digits, `-` and `_`, starting and ending with
/// a letter or digit (Kubernetes, where Akash runs volumes, takes DNS labels; `_` is kept because
/// deploy files use it).
pub fn is_volume_name(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
}

/// A POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 characters.
pub fn is_env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ENV_NAME
        && !b[0].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// A host name a service accepts on the ingress: lowercase DNS labels joined by dots (a leading
/// `*.` wildcard allowed), at most 253 characters.
pub fn is_hostname(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= MAX_HOSTNAME
        && h.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_LABEL
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// Akash's endpoint name rule (`^[a-z]+[-_0-9a-z]+$`), at most 63 characters.
pub fn is_endpoint_name(n: &str) -> bool {
    let b = n.as_bytes();
    b.len() >= 2
        && b.len() <= MAX_LABEL
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// A placement (group) name: 1-64 characters, none of them a space or a control character.
pub fn is_group_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= pazar_types::market::limits::MAX_NAME_LEN
        && !n.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Checks where a volume is mounted: an absolute, normalised path (no empty, `.` or `..`
/// components; one trailing `/` is tolerated, as deploy files write `/mnt/`), not `/`, and not
/// over what the runtime itself provides (`/proc`, `/sys`, `/dev` but `/dev/shm`, and the files
/// that name the lease's services). The reason is a sentence.
pub fn check_mount_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if p.len() > MAX_PATH_LEN {
        return Err(format!("is longer than {MAX_PATH_LEN} bytes"));
    }
    if p.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    let body = if p.len() > 1 {
        p.strip_suffix('/').unwrap_or(p)
    } else {
        p
    };
    if body == "/" {
        return Err("cannot be / (the root of the container)".into());
    }
    for c in body[1..].split('/') {
        match c {
            "" => return Err("is not normalised (it has an empty component, //)".into()),
            "." | ".." => return Err("must not contain . or .. components".into()),
            c if c.len() > MAX_PATH_COMPONENT => {
                return Err(format!("has a component longer than {MAX_PATH_COMPONENT} bytes"))
            }
            _ => {}
        }
    }
    let under = |tree: &str| body == tree || body.strip_prefix(tree).is_some_and(|rest| rest.starts_with('/'));
    if ALLOWED_UNDER_RESERVED.contains(&body) {
        return Ok(());
    }
    if let Some(tree) = RESERVED_TREES.iter().find(|t| under(t)) {
        return Err(format!("is under {tree}, which the runtime provides"));
    }
    if RESERVED_FILES.contains(&body) {
        return Err(format!("{body} is written by the runtime"));
    }
    Ok(())
}

/// Checks an image reference against Docker's grammar (distribution/reference): an optional
/// registry host (with port), a repository path of alphanumeric components joined by `.`, `_`,
/// `__` or dashes, an optional tag `[\w][\w.-]{0,127}` and an optional digest
/// `algorithm:hex` (at least 32 hex digits). One deviation: upper case is accepted in the
/// repository path, because deploy templates carry placeholders such as
/// `YOUR_USERNAME/app` that Akash accepts (the registry refuses them at pull time, with its
/// own message); it changes nothing about what the reference can reach. The reason is a
/// sentence.
pub fn check_image(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_IMAGE_LEN {
        return Err(format!("is longer than {MAX_IMAGE_LEN} bytes"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not an image reference (it contains spaces or control characters)".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if !is_digest(d) {
            return Err(format!(
                "has an invalid digest {:?} (write sha256:<64 hex digits>)",
                shorten(d)
            ));
        }
    }
    let last_slash = rest.rfind('/');
    let (name, tag) = match rest.rfind(':') {
        Some(i) if last_slash.is_none_or(|j| i > j) => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !is_tag(t) {
            return Err(format!(
                "has an invalid tag {:?} (letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-')",
                shorten(t)
            ));
        }
    }
    if name.len() > MAX_IMAGE_NAME_LEN {
        return Err(format!("has a repository name longer than {MAX_IMAGE_NAME_LEN} bytes"));
    }
    // As Docker does: the first component is a registry when it has a '.' or ':' or is
    // `localhost`.
    let (domain, path) = match name.split_once('/') {
        Some((first, path)) if first.contains(['.', ':']) || first == "localhost" => (Some(first), path),
        _ => (None, name),
    };
    if let Some(d) = domain {
        if !is_registry(d) {
            return Err(format!("has an invalid registry host {:?}", shorten(d)));
        }
    }
    if path.is_empty() || !path.split('/').all(is_path_component) {
        return Err(format!(
            "has an invalid repository {:?} (letters and digits, separated by '.', '_', '__', '-' or '/')",
            shorten(path)
        ));
    }
    Ok(())
}

/// At most 64 characters of `s`, for quoting untrusted values in messages.
pub fn shorten(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    !b.is_empty() && b.len() <= 128 && word(&b[0]) && b.iter().all(|c| word(c) || *c == b'.' || *c == b'-')
}

fn is_digest(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = !alg.is_empty()
        && alg.split(['+', '.', '-', '_']).all(|c| {
            let b = c.as_bytes();
            !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
        });
    alg_ok && hex.len() >= 32 && hex.len() <= 128 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

fn is_registry(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.len() <= MAX_HOSTNAME
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b.len() <= MAX_LABEL
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
        })
}

/// `[a-zA-Z0-9]+(?:(?:[._]|__|[-]+)[a-zA-Z0-9]+)*`
fn is_path_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_alphanumeric();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__', or one or more '-'.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_follow_docker_s_grammar() {
        for ok in [
            "nginx",
            "mysql",
            "pazar-demo:test",
            "library/nginx:1.25",
            "ghcr.io/berriai/litellm-database:latest@sha256:069da8855c7bf0a39861fcd9884f134670128b79aa930a4af0c9219a0433b83f",
            "quay.io/vpavlin0/radicle-seed@sha256:d5070f85cd965bfbb4f9b22415b6ed19d9922c5afaa3e8a3320f5c32e2714b7e",
            "localhost:5000/a/b__c.d-e---f:v1.2_3",
            "registry.example.com:443/team/app",
        ] {
            assert_eq!(check_image(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "../../etc",
            "a/../b",
            "a//b",
            ".hidden",
            "x:",
            "x:-tag",
            "x@sha256:abc",
            "x@sha256",
            "a/b/",
            "bad_host:99999999/x",
            "a\u{0}b",
        ] {
            assert!(check_image(bad).is_err(), "{bad:?}");
        }
        assert!(check_image(&"a".repeat(300)).is_err());
        assert_eq!(
            check_image("YOUR_USERNAME/app:latest"),
            Ok(()),
            "a template's placeholder"
        );
    }

    #[test]
    fn mount_paths_are_absolute_normalised_and_off_the_runtime_s_own_paths() {
        for ok in [
            "/data",
            "/mnt/",
            "/root/.cache",
            "/dev/shm",
            "/var/lib/postgresql/data",
            "/etc/letsencrypt",
        ] {
            assert_eq!(check_mount_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "data",
            "/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/../../etc",
            "/..",
            "/proc",
            "/proc/1",
            "/sys/fs/cgroup",
            "/dev",
            "/dev/sda",
            "/dev/shm/../sda",
            "/etc/hosts",
            "/etc/resolv.conf/",
            "/a\u{0}b",
            "/a\nb",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?}");
        }
        assert!(
            check_mount_path("/procfs").is_ok(),
            "a sibling of /proc is not under it"
        );
    }

    #[test]
    fn names_that_become_host_paths_cannot_leave_their_directory() {
        for bad in ["..", ".", "a/b", "../x", "A", "-a", "a-", "", "a.b", "a\u{0}"] {
            assert!(!is_volume_name(bad), "{bad:?}");
            assert!(!is_service_name(bad), "{bad:?}");
        }
        assert!(is_volume_name("db_data") && is_volume_name("data") && is_volume_name("0cache"));
        assert!(is_service_name("web") && is_service_name("a-1") && !is_service_name("1a"));
        assert!(!is_service_name(&"a".repeat(64)) && is_service_name(&"a".repeat(63)));
    }

    #[test]
    fn environment_names_are_posix_names() {
        for ok in ["A", "_x", "PATH", "a_1"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A.B", "A=B", "A B", "Ä"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }
}
