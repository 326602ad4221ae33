//! provider: registration of the machines that sell compute; audit: auditors' attestations.

use pazar_types::{Address, Attribute, Event, Hash32, ProviderInfo};

use crate::error::{AuditError, ProviderError};
use crate::state::{Provider, ProviderLoad, State};
use crate::Ctx;

impl State {
    pub fn provider(&self, owner: &Address) -> Option<&Provider> {
        self.providers.get(owner)
    }

    pub fn providers(&self) -> impl Iterator<Item = (&Address, &Provider)> {
        self.providers.iter()
    }

    pub fn provider_load(&self, owner: &Address) -> ProviderLoad {
        self.provider_load.get(owner).copied().unwrap_or_default()
    }

    /// Attributes `auditor` has signed for `provider`.
    pub fn audited_attributes(&self, provider: &Address, auditor: &Address) -> Option<&[Attribute]> {
        self.audits.get(&(*provider, *auditor)).map(Vec::as_slice)
    }

    /// Every attestation of `provider`: (auditor, attributes).
    pub fn audits_of(&self, provider: &Address) -> impl Iterator<Item = (&Address, &Vec<Attribute>)> {
        self.audits
            .range((*provider, Address::MIN)..=(*provider, Address::MAX))
            .map(|((_, a), v)| (a, v))
    }

    pub(crate) fn update_load(&mut self, owner: Address, f: impl FnOnce(&mut ProviderLoad)) {
        let mut load = self.provider_load(&owner);
        f(&mut load);
        if load == ProviderLoad::default() {
            self.provider_load.remove(&owner);
        } else {
            self.provider_load.insert(owner, load);
        }
    }

    pub(crate) fn exec_create_provider(
        &mut self,
        ctx: &mut Ctx,
        host_uri: &str,
        tls_fingerprint: &Hash32,
        attributes: &[Attribute],
        info: &ProviderInfo,
        update: bool,
    ) -> Result<(), ProviderError> {
        let existing = self.providers.get(&ctx.sender).cloned();
        let created_at = match (&existing, update) {
            (Some(_), false) => return Err(ProviderError::AlreadyExists(ctx.sender)),
            (None, true) => return Err(ProviderError::NotFound(ctx.sender)),
            (Some(p), true) => p.created_at,
            (None, false) => ctx.height,
        };
        let mut attributes = attributes.to_vec();
        attributes.sort();
        self.providers.insert(
            ctx.sender,
            Provider {
                host_uri: host_uri.to_string(),
                tls_fingerprint: *tls_fingerprint,
                attributes,
                info: info.clone(),
                created_at,
            },
        );
        ctx.events.push(if update {
            Event::ProviderUpdated { owner: ctx.sender }
        } else {
            Event::ProviderCreated { owner: ctx.sender }
        });
        Ok(())
    }

    pub(crate) fn exec_delete_provider(&mut self, ctx: &mut Ctx) -> Result<(), ProviderError> {
        if !self.providers.contains(&ctx.sender) {
            return Err(ProviderError::NotFound(ctx.sender));
        }
        let load = self.provider_load(&ctx.sender);
        if load != ProviderLoad::default() {
            return Err(ProviderError::Busy {
                open_bids: load.open_bids,
                active_leases: load.active_leases,
            });
        }
        self.providers.remove(&ctx.sender);
        ctx.events.push(Event::ProviderDeleted { owner: ctx.sender });
        Ok(())
    }

    pub(crate) fn exec_sign_attributes(
        &mut self,
        ctx: &mut Ctx,
        provider: Address,
        attributes: &[Attribute],
    ) -> Result<(), AuditError> {
        if !self.providers.contains(&provider) {
            return Err(AuditError::ProviderNotFound(provider));
        }
        let key = (provider, ctx.sender);
        let first = !self.audits.contains(&key);
        let mut signed = self.audits.get(&key).cloned().unwrap_or_default();
        for a in attributes {
            match signed.iter_mut().find(|s| s.key == a.key) {
                Some(s) => s.value = a.value.clone(),
                None => signed.push(a.clone()),
            }
        }
        let max = pazar_types::market::limits::MAX_ATTRIBUTES;
        if signed.len() > max {
            return Err(AuditError::TooManyAttributes(max));
        }
        signed.sort();
        if first {
            // Decoding refuses an empty attribute list, so a new attestation vouches for something.
            let n = self.auditors.get(&ctx.sender).copied().unwrap_or(0);
            self.auditors.insert(ctx.sender, n.saturating_add(1));
        }
        self.audits.insert(key, signed);
        ctx.events.push(Event::ProviderAttributesSigned {
            provider,
            auditor: ctx.sender,
        });
        Ok(())
    }

    pub(crate) fn exec_delete_attributes(
        &mut self,
        ctx: &mut Ctx,
        provider: Address,
        keys: &[String],
    ) -> Result<(), AuditError> {
        let key = (provider, ctx.sender);
        let Some(mut signed) = self.audits.get(&key).cloned() else {
            return Err(AuditError::NoAttestation {
                provider,
                auditor: ctx.sender,
            });
        };
        for k in keys {
            let before = signed.len();
            signed.retain(|a| a.key != *k);
            if signed.len() == before {
                return Err(AuditError::AttributeNotFound(k.clone()));
            }
        }
        if keys.is_empty() || signed.is_empty() {
            self.audits.remove(&key);
            match self.auditors.get(&ctx.sender).copied().unwrap_or(0) {
                0 | 1 => {
                    self.auditors.remove(&ctx.sender);
                }
                n => self.auditors.insert(ctx.sender, n - 1),
            }
        } else {
            self.audits.insert(key, signed);
        }
        ctx.events.push(Event::ProviderAttributesDeleted {
            provider,
            auditor: ctx.sender,
        });
        Ok(())
    }
}
