//! The KeyPackage lifecycle: its statuses and the transitions between them.
//!
//! This is the one place that decides which status changes are allowed.

use std::{fmt, str::FromStr};

use crate::error::Error;

/// Where a one-time KeyPackage is in its life.
///
/// ```text
/// created ──► uploaded ──► available ──► reserved ──► spent
///    │  ▲       │ │ │          │  ▲          │
///    ▼  │       │ │ │          │  └──────────┘ (reservation lapsed)
///   failed ◄────┘ │ │          └──────────────────► spent
///                 │ └───────────────────► reserved
///                 └─────────────────────────────────► spent
///
/// every status but spent ──► expired
/// ```
///
/// `uploaded` may move straight to `reserved` or `spent`, for servers that
/// have no separate "confirmed available" step; `available` is for those
/// that do. `spent` and `expired` are final. Stored in the database as the lowercase
/// name returned by [`as_str`](Self::as_str).
///
/// ```
/// use openmls_keypackage_pool::KeyPackageStatus;
///
/// let status: KeyPackageStatus = "uploaded".parse().unwrap();
/// assert_eq!(status, KeyPackageStatus::Uploaded);
/// assert!(status.can_transition_to(KeyPackageStatus::Available));
/// assert!(!status.can_transition_to(KeyPackageStatus::Created));
/// assert!("shredded".parse::<KeyPackageStatus>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPackageStatus {
    /// Built and stored locally, not yet sent to the server.
    Created,
    /// Sent to the server.
    Uploaded,
    /// Confirmed by the server as published and claimable.
    Available,
    /// Claimed by someone on the server, not yet used in a Welcome.
    Reserved,
    /// Reported used (for example by the server) before this client saw the
    /// Welcome. When OpenMLS consumes a one-time KeyPackage from a Welcome it
    /// deletes the bundle and this row with it, so rows stay `spent` only
    /// when the application marks them so, for last-resort KeyPackages, or,
    /// with a grace window, for consumed ones until the window ends (the
    /// window sets it from any status).
    Spent,
    /// Past its `not_after`; must not be advertised. With a grace window,
    /// also a KeyPackage withdrawn before its time, until the window ends
    /// (the window sets it from any status).
    Expired,
    /// Upload failed; may be retried by moving back to `Created`.
    Failed,
}

impl KeyPackageStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [KeyPackageStatus; 7] = [
        Self::Created,
        Self::Uploaded,
        Self::Available,
        Self::Reserved,
        Self::Spent,
        Self::Expired,
        Self::Failed,
    ];

    /// The lowercase name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Uploaded => "uploaded",
            Self::Available => "available",
            Self::Reserved => "reserved",
            Self::Spent => "spent",
            Self::Expired => "expired",
            Self::Failed => "failed",
        }
    }

    /// Whether a KeyPackage in this status may move to `to`.
    ///
    /// Moving to the status it already has is not a transition and returns
    /// `false`; the metadata store treats it as an idempotent no-op instead.
    pub const fn can_transition_to(self, to: KeyPackageStatus) -> bool {
        use KeyPackageStatus::*;
        matches!(
            (self, to),
            (Created, Uploaded | Failed | Expired)
                | (Uploaded, Available | Reserved | Spent | Failed | Expired)
                | (Available, Reserved | Spent | Expired)
                | (Reserved, Spent | Available | Expired)
                | (Failed, Created | Expired)
        )
    }

    /// Whether a KeyPackage in this status is still in play: its private
    /// keys may yet be needed for a Welcome (the SQL of the pool's queries
    /// spells the same set as `LIVE`).
    pub(crate) const fn is_live(self) -> bool {
        matches!(self, Self::Created) || self.is_published()
    }

    /// Whether a server holds a KeyPackage in this status (`PUBLISHED` in
    /// the pool's queries).
    pub(crate) const fn is_published(self) -> bool {
        matches!(self, Self::Uploaded | Self::Available | Self::Reserved)
    }

    /// Whether no transition leaves this status.
    pub const fn is_final(self) -> bool {
        matches!(self, Self::Spent | Self::Expired)
    }

    /// The statuses from which `self` can be reached.
    pub(crate) fn predecessors(self) -> impl Iterator<Item = KeyPackageStatus> {
        Self::ALL
            .into_iter()
            .filter(move |from| from.can_transition_to(self))
    }
}

impl fmt::Display for KeyPackageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyPackageStatus {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| Error::InvalidStatus {
                text: text.to_owned(),
                keypackage_ref: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_its_text() {
        for status in KeyPackageStatus::ALL {
            assert_eq!(status.as_str().parse::<KeyPackageStatus>().unwrap(), status);
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn unknown_text_is_an_error_naming_it() {
        let err = "Created".parse::<KeyPackageStatus>().unwrap_err();
        assert!(err.to_string().contains("\"Created\""), "{err}");
    }

    #[test]
    fn final_statuses_have_no_way_out() {
        for from in KeyPackageStatus::ALL {
            let exits = KeyPackageStatus::ALL
                .into_iter()
                .filter(|to| from.can_transition_to(*to))
                .count();
            assert_eq!(exits == 0, from.is_final(), "{from}");
        }
    }

    #[test]
    fn the_live_and_published_sets_match_the_queries() {
        use crate::metadata::{LIVE, PUBLISHED};
        for status in KeyPackageStatus::ALL {
            let quoted = format!("'{status}'");
            assert_eq!(status.is_live(), LIVE.contains(&quoted), "{status}");
            assert_eq!(
                status.is_published(),
                PUBLISHED.contains(&quoted),
                "{status}"
            );
        }
    }

    #[test]
    fn no_status_transitions_to_itself() {
        for status in KeyPackageStatus::ALL {
            assert!(!status.can_transition_to(status));
        }
    }
}
