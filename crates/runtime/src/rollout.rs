//! What both backends share when a running lease takes a new manifest
//! ([`Runtime::deploy_version`](crate::Runtime::deploy_version)): how long a new replica has to
//! serve before the update stops, how a version is written, and what a service reports when its
//! replicas run different versions. The backends do the replacing (Docker: a new container
//! beside the old one, then the old one goes; sandbox: the old process stops first, as one
//! network namespace cannot hold two listeners on a port).
//!
//! Why one replica at a time: a tenant's update must not take its whole service down at once,
//! and a new version that does not start must be seen on one replica, not on all of them.

use std::time::Duration;

use pazar_types::Hash32;

/// How long a new replica has to serve (run, and accept connections on every exposed TCP
/// port) before the update stops, unless the operator says otherwise.
pub const DEFAULT_READY_WAIT: Duration = Duration::from_secs(60);

/// How often a new replica is looked at while it starts.
pub const READY_POLL: Duration = Duration::from_millis(250);

/// A version as replicas record it and status reports it: 64 lower-case hex digits.
pub fn version_text(version: &Hash32) -> String {
    hex::encode(version)
}

/// The version every replica runs, or `None` when they differ (an update under way) or one of
/// them does not say (made before versions were recorded).
pub fn common_version<I>(replicas: I) -> Option<String>
where
    I: IntoIterator<Item = Option<String>>,
{
    let mut it = replicas.into_iter();
    let first = it.next()??;
    it.all(|v| v.as_deref() == Some(first.as_str())).then_some(first)
}

/// The sentence of an update stopped because a new replica did not serve in time.
pub fn not_serving(service: &str, replica: u32, version: Option<&str>, waited: Duration, why: &str) -> String {
    let v = version.map_or(String::new(), |v| format!(" of version {}", short(v)));
    format!(
        "replica {replica} of {service:?}{v} did not serve within {} s ({why}); the update stopped there, and \
         the replicas not yet replaced keep serving",
        waited.as_secs()
    )
}

/// The first 12 hex digits of a version, as people read it in a sentence.
pub fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_has_a_version_only_when_every_replica_runs_the_same_one() {
        let v = |s: &str| Some(s.to_string());
        assert_eq!(common_version([v("a"), v("a")]), v("a"));
        assert_eq!(common_version([v("a"), v("b")]), None, "an update under way");
        assert_eq!(common_version([v("a"), None]), None, "a replica that does not say");
        assert_eq!(common_version([None, v("a")]), None);
        assert_eq!(common_version(Vec::<Option<String>>::new()), None, "no replica");
    }

    #[test]
    fn a_stopped_update_names_the_replica_the_version_and_why() {
        let text = not_serving(
            "web",
            1,
            Some(&version_text(&[0xab; 32])),
            Duration::from_secs(60),
            "exited with code 1",
        );
        assert_eq!(
            text,
            "replica 1 of \"web\" of version abababababab did not serve within 60 s (exited with code 1); the \
             update stopped there, and the replicas not yet replaced keep serving"
        );
    }
}
