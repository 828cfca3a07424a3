//! Whether an interface's link works: what a node agent reports for each published device as
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::path::PathBuf;

use netlink_packet_route::link::State;

use crate::locate::{find_in_pod, pod_namespace};
use crate::netns::NetnsError;
use crate::record::{LinkView, RestoreRecord, dump_links};
use crate::rtnl::{Rtnl, RtnlError};

/// A link's operational state (RFC 2863, the kernel's `IF_OPER_*` in `IFLA_OPERSTATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OperState {
    /// Not reported: what virtual drivers say, and any state newer than this crate.
    #[default]
    Unknown,
    /// A component of the link is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because the link it is stacked on (or a veth's peer) is down.
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Up, but waiting for an external event (802.1X authentication, a wireless association).
    Dormant,
    /// Up: ready to carry packets.
    Up,
}

impl From<State> for OperState {
    fn from(state: State) -> Self {
        match state {
            State::NotPresent => Self::NotPresent,
            State::Down => Self::Down,
            State::LowerLayerDown => Self::LowerLayerDown,
            State::Testing => Self::Testing,
            State::Dormant => Self::Dormant,
            State::Up => Self::Up,
            // `Unknown`, and states newer than this crate (`Other`, or variants added later).
            _ => Self::Unknown,
        }
    }
}

/// What netlink says about one link's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Its name (inside the pod, for an interface in one).
    pub name: String,
    /// Whether it is administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Whether it has a carrier (`IFF_LOWER_UP`).
    pub carrier: bool,
    /// Its operational state.
    pub oper: OperState,
}

impl From<LinkView> for LinkState {
    fn from(link: LinkView) -> Self {
        Self {
            name: link.name,
            admin_up: link.up,
            carrier: link.carrier,
            oper: link.oper,
        }
    }
}

/// A device's health, as the kubelet takes it.
///
/// Exhaustive on purpose: every caller must handle each verdict, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// The link works.
    Healthy,
    /// The link does not work.
    Unhealthy,
    /// The link cannot be checked now.
    Unknown,
}

/// A device's health and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The health.
    pub health: Health,
    /// One short sentence naming the interface, for the user.
    pub message: String,
}

/// Where an interface is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Place {
    /// On the host: published and not in use, and an operator may keep it administratively down.
    Host,
    /// Inside a pod's network namespace, where netdra brought it up.
    Pod,
}

/// The health of `state`'s link at `place`, by the rules below.
///
/// Whether an interface's link works: what a node agent reports for each published device as
/// its DRA device health (KEP-4680), Healthy, Unhealthy or Unknown, with a message a user can act
/// on.
///
/// [`judge`] is pure. It reads a [`LinkState`] — the administrative flag (`IFF_UP`), the carrier
/// (`IFF_LOWER_UP`) and the RFC 2863 operational state (`IFLA_OPERSTATE`) — and where the
/// interface is ([`Place`]). The first row that matches decides:
///
/// | Admin | Carrier | Operational state | On the host | In a pod |
/// |---|---|---|---|---|
/// | down | any | any | Unknown: administratively down, cannot be checked | Unhealthy: set down inside the pod |
/// | up | any | `Up` | Healthy: link up | Healthy: link up |
/// | up | any | `NotPresent` | Unhealthy: hardware not present | Unhealthy: hardware not present |
/// | up | any | `Dormant`, `Testing` | Unhealthy, naming the state | Unhealthy, naming the state |
/// | up | no | `Unknown`, `Down`, `LowerLayerDown` | Unhealthy: no carrier | Unhealthy: no carrier |
/// | up | yes | `Down`, `LowerLayerDown` | Unhealthy: no carrier | Unhealthy: no carrier |
/// | up | yes | `Unknown` | Healthy: carrier up | Healthy: carrier up |
///
/// Admin down comes first because the kernel then reports the operational state as down
/// whatever the link, so nothing else says anything about the link. On the host a published
/// interface is not in use and an operator may keep it down, so its health is unknown, not bad;
/// in a pod netdra brought it up, so down there means something in the pod set it down. The last
/// row is for virtual drivers (tap, some veths) that never report an operational state and say
/// `UNKNOWN` while they work. Every message names the interface and is one short sentence (the
/// kubelet truncates messages above 1024 characters).
///
/// [`host_link_states`] and [`pod_link_state`] read the states. Like [`locate`](crate::locate()),
/// they block and run in the host namespace: a caller on an async runtime uses
/// `spawn_blocking`.
pub fn judge(state: &LinkState, place: Place) -> Verdict {
    let name = &state.name;
    let verdict = |health, message: String| Verdict { health, message };
    if !state.admin_up {
        return match place {
            Place::Host => verdict(
                Health::Unknown,
                format!("{name} is administratively down: its link cannot be checked until it is brought up"),
            ),
            Place::Pod => verdict(Health::Unhealthy, format!("{name} was set down inside the pod")),
        };
    }
    match state.oper {
        OperState::Up => verdict(Health::Healthy, format!("{name}: link up")),
        OperState::NotPresent => verdict(Health::Unhealthy, format!("{name}: hardware not present")),
        OperState::Dormant => verdict(
            Health::Unhealthy,
            format!("{name} is dormant: up, but waiting for an external event such as 802.1X authentication"),
        ),
        OperState::Testing => verdict(Health::Unhealthy, format!("{name} is in a test mode")),
        OperState::Unknown if state.carrier => verdict(Health::Healthy, format!("{name}: carrier up")),
        OperState::Unknown | OperState::Down | OperState::LowerLayerDown => verdict(
            Health::Unhealthy,
            format!("{name} has no carrier: the cable, the switch port or the other end of the pair is down"),
        ),
    }
}

/// Reading link states failed; what was read says nothing about their health.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The host's links could not be dumped.
    #[error("link health on the host: {source}")]
    Host {
        /// Why.
        #[source]
        source: RtnlError,
    },
    /// The pod's namespace exists but could not be entered.
    #[error("link health of {device}: {source}")]
    Netns {
        /// The interface's original (host) name.
        device: String,
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// Netlink could not be asked inside the pod's namespace.
    #[error("link health of {device} in {}: {source}", netns.display())]
    Pod {
        /// The interface's original (host) name.
        device: String,
        /// The namespace it was looked for in.
        netns: PathBuf,
        /// Why.
        #[source]
        source: RtnlError,
    },
}

/// The state of every link in the calling thread's namespace (the host's): one netlink dump.
pub fn host_link_states() -> Result<Vec<LinkState>, HealthError> {
    let read = |source| HealthError::Host { source };
    let mut host = Rtnl::new().map_err(read)?;
    Ok(dump_links(&mut host)
        .map_err(read)?
        .into_iter()
        .map(LinkState::from)
        .collect())
}

/// The state of `record`'s interface inside its pod's namespace, found there as
/// [`locate`](crate::locate()) finds it (under its pod name, else by identity: for a
/// subinterface, its tag, never its parent's state); its name is the one it has in the pod.
/// `None` when the namespace is gone or the interface is not in it.
pub fn pod_link_state(record: &RestoreRecord) -> Result<Option<LinkState>, HealthError> {
    let device = &record.host.name;
    let netns_error = |source| HealthError::Netns {
        device: device.clone(),
        source,
    };
    let Some(pod_ns) = pod_namespace(record).map_err(netns_error)? else {
        return Ok(None);
    };
    let mut pod = Rtnl::from_socket(pod_ns.socket().map_err(netns_error)?);
    let link = find_in_pod(&mut pod, record).map_err(|source| HealthError::Pod {
        device: device.clone(),
        netns: pod_ns.path().to_owned(),
        source,
    })?;
    Ok(link.map(LinkState::from))
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};

    use super::*;

    const ALL: [OperState; 7] = [
        OperState::Unknown,
        OperState::NotPresent,
        OperState::Down,
        OperState::LowerLayerDown,
        OperState::Testing,
        OperState::Dormant,
        OperState::Up,
    ];

    fn state(admin_up: bool, carrier: bool, oper: OperState) -> LinkState {
        LinkState {
            name: "net1".into(),
            admin_up,
            carrier,
            oper,
        }
    }

    /// A state and where the interface is.
    type Case = (LinkState, Place);

    /// Every case a row of the module's table covers.
    fn row(admin_up: bool, carrier: &[bool], opers: &[OperState], places: &[Place]) -> Vec<Case> {
        let mut cases = Vec::new();
        for &carrier in carrier {
            for &oper in opers {
                for &place in places {
                    cases.push((state(admin_up, carrier, oper), place));
                }
            }
        }
        cases
    }

    #[test]
    fn each_row_of_the_table_decides_as_documented() {
        use OperState::*;
        const BOTH: &[bool] = &[false, true];
        const PLACES: &[Place] = &[Place::Host, Place::Pod];
        // (row, its cases, the health, words the message must have).
        let table: Vec<(&str, Vec<Case>, Health, &str)> = vec![
            (
                "admin down on the host",
                row(false, BOTH, &ALL, &[Place::Host]),
                Health::Unknown,
                "net1 is administratively down: its link cannot be checked until it is brought up",
            ),
            (
                "admin down in a pod",
                row(false, BOTH, &ALL, &[Place::Pod]),
                Health::Unhealthy,
                "net1 was set down inside the pod",
            ),
            (
                "operationally up",
                row(true, BOTH, &[Up], PLACES),
                Health::Healthy,
                "net1: link up",
            ),
            (
                "hardware not present",
                row(true, BOTH, &[NotPresent], PLACES),
                Health::Unhealthy,
                "net1: hardware not present",
            ),
            (
                "dormant",
                row(true, BOTH, &[Dormant], PLACES),
                Health::Unhealthy,
                "net1 is dormant",
            ),
            (
                "testing",
                row(true, BOTH, &[Testing], PLACES),
                Health::Unhealthy,
                "net1 is in a test mode",
            ),
            (
                "no carrier",
                row(true, &[false], &[Unknown, Down, LowerLayerDown], PLACES),
                Health::Unhealthy,
                "net1 has no carrier: the cable, the switch port or the other end of the pair is down",
            ),
            (
                "carrier but operationally down",
                row(true, &[true], &[Down, LowerLayerDown], PLACES),
                Health::Unhealthy,
                "net1 has no carrier",
            ),
            (
                "carrier, state not reported (tap, veth)",
                row(true, &[true], &[Unknown], PLACES),
                Health::Healthy,
                "net1: carrier up",
            ),
        ];
        let mut covered = 0;
        for (what, cases, health, words) in &table {
            assert!(!cases.is_empty(), "{what}: no cases");
            for (state, place) in cases {
                let verdict = judge(state, *place);
                assert_eq!(verdict.health, *health, "{what}: {state:?} at {place:?}");
                assert!(verdict.message.contains(words), "{what}: {:?}", verdict.message);
                covered += 1;
            }
        }
        // The rows cover every combination exactly once: 2 admin × 2 carrier × 7 states × 2 places.
        assert_eq!(covered, 2 * 2 * ALL.len() * 2);
    }

    #[test]
    fn every_message_names_the_interface_and_is_short() {
        // The longest name the kernel allows (IFNAMSIZ - 1).
        let name = "a-fifteen-char0";
        for admin_up in [false, true] {
            for carrier in [false, true] {
                for oper in ALL {
                    for place in [Place::Host, Place::Pod] {
                        let state = LinkState {
                            name: name.into(),
                            ..state(admin_up, carrier, oper)
                        };
                        let message = judge(&state, place).message;
                        assert!(message.starts_with(name), "{message:?}");
                        assert!(message.len() < 128, "{} characters: {message:?}", message.len());
                    }
                }
            }
        }
    }

    #[test]
    fn the_kernel_states_map_one_to_one_and_newer_ones_are_unknown() {
        let pairs = [
            (State::Unknown, OperState::Unknown),
            (State::NotPresent, OperState::NotPresent),
            (State::Down, OperState::Down),
            (State::LowerLayerDown, OperState::LowerLayerDown),
            (State::Testing, OperState::Testing),
            (State::Dormant, OperState::Dormant),
            (State::Up, OperState::Up),
            (State::Other(42), OperState::Unknown),
        ];
        for (wire, ours) in pairs {
            assert_eq!(OperState::from(wire), ours, "{wire:?}");
        }
        // IF_OPER_* numbers, as the kernel sends them.
        assert_eq!(OperState::from(State::from(6)), OperState::Up);
        assert_eq!(OperState::from(State::from(2)), OperState::Down);
    }

    #[test]
    fn a_link_message_gives_its_flags_and_operational_state() {
        let mut message = LinkMessage::default();
        message.header.index = 4;
        message.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        message.attributes.push(LinkAttribute::IfName("eth3".into()));
        message.attributes.push(LinkAttribute::OperState(State::Dormant));
        let state = LinkState::from(LinkView::from_message(&message));
        assert_eq!(
            state,
            LinkState {
                name: "eth3".into(),
                admin_up: true,
                carrier: true,
                oper: OperState::Dormant,
            }
        );
        // No IFLA_OPERSTATE, no flags: down, no carrier, unknown.
        let mut message = LinkMessage::default();
        message.attributes.push(LinkAttribute::IfName("eth4".into()));
        let state = LinkState::from(LinkView::from_message(&message));
        assert!(!state.admin_up && !state.carrier);
        assert_eq!(state.oper, OperState::Unknown);
    }
}
