//! [`PoolConfig`]: how a pool sizes and ages its KeyPackages, and the checks
//! that keep those settings workable.

use openmls::prelude::{
    Capabilities, Ciphersuite, CredentialType, ExtensionType, Extensions, KeyPackage,
};

use crate::error::{Error, Result};

pub(super) const DAY: u64 = 24 * 60 * 60;

/// The longest KeyPackage lifetime OpenMLS accepts from other clients:
/// 84 days (its `MAX_LEAF_NODE_LIFETIME_RANGE_SECONDS` less the hour it
/// back-dates `not_before` by). A longer one would be refused by peers.
pub const MAX_LIFETIME_SECS: u64 = 84 * DAY;

/// How a [`KeyPackagePool`](crate::KeyPackagePool) sizes and ages its
/// KeyPackages.
///
/// The defaults: keep 32 published, top up when fewer than 8 remain, never
/// hold more than 64 one-time KeyPackages on disk, 14-day lifetimes, and
/// replace KeyPackages 2 days before they expire.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// How many KeyPackages [`replenish`](crate::KeyPackagePool::replenish)
    /// brings the pool back to, counting usable and pending ones that are
    /// still valid at the end of the expiry horizon.
    pub target_size: usize,
    /// Below this many usable KeyPackages still valid at the end of the
    /// expiry horizon, `replenish` tops up.
    pub low_watermark: usize,
    /// The most one-time KeyPackages whose private keys the pool keeps on
    /// disk, whatever their status (`failed`, `spent` and expired ones
    /// included, until they are pruned or consumed) and whatever their
    /// credential (those of the pool's signature key and ciphersuite under a
    /// credential it replaced count until they are retired and gone);
    /// [`generate`](crate::KeyPackagePool::generate) refuses to pass it and
    /// `replenish` builds only what fits. Replacing KeyPackages before they
    /// expire needs room for the old and the new at once: a cap of about
    /// twice `target_size`.
    pub hard_cap: usize,
    /// Each KeyPackage's lifetime in seconds, at most [`MAX_LIFETIME_SECS`].
    pub lifetime_secs: u64,
    /// How long before expiry a KeyPackage stops counting towards the pool,
    /// in seconds: one that expires within this horizon is replaced by
    /// `replenish` (or, for the last-resort one,
    /// [`ensure_last_resort`](crate::KeyPackagePool::ensure_last_resort))
    /// while it is still valid. Shorter than `lifetime_secs`.
    pub expiry_horizon_secs: u64,
    /// The ciphersuite of every KeyPackage built. With the credential's
    /// signature key it makes the pool's [scope](crate::PoolScope).
    pub ciphersuite: Ciphersuite,
    /// The leaf-node capabilities every KeyPackage advertises. `None` keeps
    /// OpenMLS's defaults, which list only the Basic credential type: set
    /// them to use X.509 or custom credentials, or to join groups whose
    /// required capabilities go beyond the defaults.
    pub capabilities: Option<Capabilities>,
    /// Extensions carried by every KeyPackage (the last-resort extension is
    /// added where it belongs). Empty by default.
    pub extensions: Extensions<KeyPackage>,
}

/// The capabilities a pool's KeyPackages advertise, worked out once by
/// [`PoolConfig::advertised`].
#[derive(Debug, Clone)]
pub(super) struct Advertised {
    pub one_time: Capabilities,
    pub last_resort: Capabilities,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            target_size: 32,
            low_watermark: 8,
            hard_cap: 64,
            lifetime_secs: 14 * DAY,
            expiry_horizon_secs: 2 * DAY,
            ciphersuite: Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519,
            capabilities: None,
            extensions: Extensions::default(),
        }
    }
}

impl PoolConfig {
    /// Checks that the sizes are ordered (`low_watermark <= target_size <=
    /// hard_cap`, `target_size > 0`), the lifetime is within what peers
    /// accept, and the expiry horizon is shorter than the lifetime (or every
    /// KeyPackage would need replacing from the moment it was built).
    ///
    /// ```
    /// use openmls_keypackage_pool::{Error, PoolConfig};
    ///
    /// assert!(PoolConfig::default().validate().is_ok());
    /// let too_far_ahead = PoolConfig { expiry_horizon_secs: 30 * 86_400, ..Default::default() };
    /// assert!(matches!(too_far_ahead.validate(), Err(Error::InvalidConfig { .. })));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let reason = if self.target_size == 0 {
            "target_size must be at least 1".to_owned()
        } else if self.low_watermark > self.target_size {
            format!(
                "low_watermark {} is above target_size {}",
                self.low_watermark, self.target_size
            )
        } else if self.target_size > self.hard_cap {
            format!(
                "target_size {} is above hard_cap {}",
                self.target_size, self.hard_cap
            )
        } else if self.lifetime_secs == 0 || self.lifetime_secs > MAX_LIFETIME_SECS {
            format!(
                "lifetime_secs {} is outside 1..={MAX_LIFETIME_SECS}, the validity window peers accept",
                self.lifetime_secs
            )
        } else if self.extensions.contains(ExtensionType::LastResort) {
            "extensions must not hold the last-resort extension: it would make every one-time KeyPackage a last-resort one (ensure_last_resort builds those)".to_owned()
        } else if self.expiry_horizon_secs >= self.lifetime_secs {
            format!(
                "expiry_horizon_secs {} is not shorter than lifetime_secs {}: every new KeyPackage would already be due for replacement",
                self.expiry_horizon_secs, self.lifetime_secs
            )
        } else {
            return Ok(());
        };
        Err(Error::InvalidConfig { reason })
    }

    /// This configuration with KeyPackages living `lifetime_secs`, and the
    /// expiry horizon shortened to half of that if it was longer, so that
    /// the result still [validates](Self::validate) for short lifetimes.
    ///
    /// ```
    /// use openmls_keypackage_pool::PoolConfig;
    ///
    /// let hourly = PoolConfig::default().with_lifetime_secs(3_600);
    /// assert_eq!(hourly.expiry_horizon_secs, 1_800);
    /// assert!(hourly.validate().is_ok());
    /// ```
    pub fn with_lifetime_secs(self, lifetime_secs: u64) -> Self {
        Self {
            lifetime_secs,
            expiry_horizon_secs: self.expiry_horizon_secs.min(lifetime_secs / 2),
            ..self
        }
    }

    /// What every KeyPackage of a pool signing with `credential_type`
    /// advertises: the configured capabilities (or OpenMLS's defaults), plus
    /// the credential's own type and the type of every KeyPackage extension
    /// it carries, the last-resort one included. Peers refuse a KeyPackage
    /// whose capabilities do not list them.
    pub(super) fn advertised(&self, credential_type: CredentialType) -> Result<Advertised> {
        Ok(Advertised {
            one_time: self.capabilities_with(credential_type, false)?,
            last_resort: self.capabilities_with(credential_type, true)?,
        })
    }

    fn capabilities_with(
        &self,
        credential_type: CredentialType,
        last_resort: bool,
    ) -> Result<Capabilities> {
        let base = self.capabilities.clone().unwrap_or_default();
        let mut extensions: Vec<ExtensionType> = Vec::new();
        let carried = self
            .extensions
            .iter()
            .map(|e| e.extension_type())
            .chain(last_resort.then_some(ExtensionType::LastResort));
        for extension_type in carried {
            if !base.extensions().contains(&extension_type) && !extensions.contains(&extension_type)
            {
                extensions.push(extension_type);
            }
        }
        let add_credential = !base.credentials().contains(&credential_type);
        if extensions.is_empty() && !add_credential {
            return Ok(base);
        }
        // OpenMLS builds capabilities only from known ciphersuites; editing
        // their serde form keeps every value as it was, GREASE included.
        let invalid = |e: serde_json::Error| Error::InvalidConfig {
            reason: format!("the capabilities cannot be extended: {e}"),
        };
        let mut value = serde_json::to_value(&base).map_err(invalid)?;
        let mut append = |field: &str, added: Vec<serde_json::Value>| {
            if let Some(list) = value.get_mut(field).and_then(|v| v.as_array_mut()) {
                list.extend(added);
            }
        };
        append(
            "extensions",
            extensions
                .iter()
                .map(serde_json::to_value)
                .collect::<std::result::Result<_, _>>()
                .map_err(invalid)?,
        );
        if add_credential {
            append(
                "credentials",
                vec![serde_json::to_value(credential_type).map_err(invalid)?],
            );
        }
        serde_json::from_value(value).map_err(invalid)
    }

    /// The end of the expiry horizon seen from `now`: KeyPackages valid
    /// until then count towards the pool.
    pub(super) fn horizon_end(&self, now: i64) -> i64 {
        // `validate` bounds the horizon by the lifetime, itself at most 84
        // days, so it always fits.
        let horizon = i64::try_from(self.expiry_horizon_secs).unwrap_or(i64::MAX);
        now.saturating_add(horizon)
    }
}
