//! NRI events and the subscription mask a plugin answers `Configure` with.

use crate::proto::api::Event;

/// Events valid on runtimes whose NRI is older than v0.10 (containerd 1.7, 2.0, 2.1): a mask
/// with any other bit makes `Configure` fail there.
pub const LEGACY_VALID_EVENTS: u32 = 0x7FF;
/// Events valid on runtimes with NRI v0.10 or newer.
pub const CURRENT_VALID_EVENTS: u32 = 0x3FFF;

/// A set of NRI events, as the bitmask of `ConfigureResponse.events` (bit `1 << (event - 1)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct EventSet(u32);

impl EventSet {
    /// No events.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// This set plus `event`.
    pub const fn with(self, event: Event) -> Self {
        let n = event as i32;
        if n <= 0 || n >= 32 {
            return self;
        }
        Self(self.0 | 1 << (n - 1))
    }

    /// The pod lifecycle events a network plugin needs: run, stop, remove.
    pub const fn pod_lifecycle() -> Self {
        Self::empty()
            .with(Event::RunPodSandbox)
            .with(Event::StopPodSandbox)
            .with(Event::RemovePodSandbox)
    }

    /// A set from a raw mask.
    pub const fn from_mask(mask: u32) -> Self {
        Self(mask)
    }

    /// The raw mask.
    pub const fn mask(self) -> u32 {
        self.0
    }

    /// Whether `event` is in the set.
    pub const fn contains(self, event: Event) -> bool {
        let n = event as i32;
        n > 0 && n < 32 && self.0 & (1 << (n - 1)) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The events in both sets.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The events of this set missing from `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

/// The events a runtime accepts, from the NRI version it reports in `ConfigureRequest`
/// (`NRI_version`, sent since v0.12). An absent or unparsable version means an older runtime,
/// which accepts only the events NRI had before v0.12.
pub fn valid_events(nri_version: &str) -> EventSet {
    let v = nri_version.trim_start_matches('v');
    let mut parts = v.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) if major > 0 || minor >= 10 => EventSet(CURRENT_VALID_EVENTS),
        _ => EventSet(LEGACY_VALID_EVENTS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_event_numbers() {
        assert_eq!(EventSet::pod_lifecycle().mask(), 0x7);
        assert_eq!(
            EventSet::empty().with(Event::ValidateContainerAdjustment).mask(),
            0x2000
        );
        assert_eq!(EventSet::empty().with(Event::Unknown).mask(), 0);
        assert!(EventSet::pod_lifecycle().contains(Event::StopPodSandbox));
        assert!(!EventSet::pod_lifecycle().contains(Event::CreateContainer));
    }

    #[test]
    fn valid_events_by_runtime_version() {
        assert_eq!(valid_events("").mask(), 0x7FF);
        assert_eq!(valid_events("v0.8.0").mask(), 0x7FF);
        assert_eq!(valid_events("v0.10.0").mask(), 0x3FFF);
        assert_eq!(valid_events("v0.12.2").mask(), 0x3FFF);
        assert_eq!(valid_events("v1.0.0").mask(), 0x3FFF);
        assert_eq!(valid_events("garbage").mask(), 0x7FF);
        let wanted = EventSet::pod_lifecycle().with(Event::UpdatePodSandbox);
        assert_eq!(wanted.intersection(valid_events("v0.8.0")), EventSet::pod_lifecycle());
    }
}
