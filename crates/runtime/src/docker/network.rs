//! A Docker lease's network: one bridge per lease, its host interface named after the lease's
//! hash (refused when another lease's network holds that short name), the firewall rules that
//! keep its workloads from the host and private ranges ([`crate::firewall`]), released before
//! the network goes, and a replica's address on it. Must not know containers' specs or images.

use std::collections::HashMap;

use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptions;

use super::spec::LABEL_LEASE_ID;
use super::{backend, check_owner, is_not_found, DockerRuntime};
use crate::{LeaseRef, RuntimeError};

/// The network option that names the bridge interface on the host.
const BRIDGE_OPTION: &str = "com.docker.network.bridge.name";

impl DockerRuntime {
    /// The network (name, lease id label) whose host bridge interface is `iface`.
    async fn bridge_holder(&self, iface: &str) -> Result<Option<(String, Option<String>)>, RuntimeError> {
        let nets = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(backend)?;
        Ok(nets
            .into_iter()
            .find(|n| {
                n.options
                    .as_ref()
                    .and_then(|o| o.get(BRIDGE_OPTION))
                    .map(String::as_str)
                    == Some(iface)
            })
            .map(|n| {
                let id = n.labels.as_ref().and_then(|l| l.get(LABEL_LEASE_ID)).cloned();
                (n.name.unwrap_or_default(), id)
            }))
    }

    pub(super) async fn ensure_network(&self, lease: &LeaseRef) -> Result<String, RuntimeError> {
        let name = lease.name();
        let iface = lease.short_name();
        match self.docker.inspect_network(&name, None).await {
            Ok(n) => {
                check_owner(n.labels.as_ref(), lease, "network", &name)?;
                if n.options.as_ref().and_then(|o| o.get(BRIDGE_OPTION)) != Some(&iface) {
                    return Err(RuntimeError::Backend(format!(
                        "network {name} is not on bridge {iface}: it is left alone and the lease cannot use it"
                    )));
                }
            }
            Err(e) if is_not_found(&e) => {
                if self.bridge_holder(&iface).await?.is_some() {
                    return Err(RuntimeError::Backend(format!(
                        "the host interface name {iface} (48 bits of this lease's hash) is held by another \
                         lease's network; this lease cannot run on this provider"
                    )));
                }
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: name.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(Self::labels(lease)),
                        // The host interface carries a short form of the lease's name, so the
                        // firewall can name it (15 characters, the kernel's limit).
                        options: Some(HashMap::from([(BRIDGE_OPTION.to_string(), iface.clone())])),
                        ..Default::default()
                    })
                    .await
                    .map_err(backend)?;
            }
            Err(e) => return Err(backend(e)),
        }
        if self.opts.isolate_host {
            let egress = self.opts.egress.clone();
            let i = iface.clone();
            tokio::task::spawn_blocking(move || crate::firewall::isolate(&i, &egress))
                .await
                .map_err(backend)??;
        }
        Ok(name)
    }

    /// Removes firewall rules left for bridges no network holds any more (a crash between
    /// removing a lease's rules and its network). Returns how many bridges' rules went.
    pub async fn sweep_firewall(&self) -> Result<usize, RuntimeError> {
        let mut removed = 0;
        let ifaces = tokio::task::spawn_blocking(crate::firewall::isolated_interfaces)
            .await
            .map_err(backend)?;
        for iface in ifaces {
            if self.bridge_holder(&iface).await?.is_none() {
                tokio::task::spawn_blocking(move || crate::firewall::release(&iface))
                    .await
                    .map_err(backend)??;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes the lease's firewall rules, unless another lease's network holds its bridge's
    /// name, and then its networks.
    pub(super) async fn release_network(&self, lease: &LeaseRef) -> Result<(), RuntimeError> {
        // The rules go before the network, so a lease whose network is gone has no rule left;
        // rules on a bridge another lease's network holds are that lease's, and stay.
        let iface = lease.short_name();
        let holder = self.bridge_holder(&iface).await?;
        if self.opts.isolate_host
            && holder
                .as_ref()
                .is_none_or(|(_, id)| id.as_ref() == Some(&lease.label()))
        {
            tokio::task::spawn_blocking(move || crate::firewall::release(&iface))
                .await
                .map_err(backend)??;
        }
        let nets = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(Self::filter(lease)),
            }))
            .await
            .map_err(backend)?;
        for n in nets {
            let Some(name) = n.name else { continue };
            match self.docker.remove_network(&name).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }
}

/// A container's address on its lease network, which the host reaches; `None` when it has
/// none (not running).
pub(super) fn lease_address(
    info: &bollard::models::ContainerInspectResponse,
    lease: &LeaseRef,
) -> Option<std::net::IpAddr> {
    info.network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(&lease.name())?
        .ip_address
        .as_deref()?
        .parse()
        .ok()
}
