//! Privileged: link health read from the kernel. An interface attached into a pod's namespace
//! loses its carrier, and is judged unhealthy, while the other end of its veth is down on the
//! host, and is healthy again when it comes back up; set down inside the pod it is unhealthy;
//! once its namespace is gone there is nothing to read. A host veth is listed with its flags.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use netdev::{
    Health, InterfaceConfig, LinkState, Mac, Netns, OperState, Place, RestoreRecord, attach, host_link_states, judge,
    pod_link_state,
};

/// How long the kernel may take to settle a link's operational state: it is updated
/// asynchronously (linkwatch) after the carrier changes.
const SETTLE: Duration = Duration::from_secs(5);

/// Polls `read` until its answer satisfies `done`; the last answer, or a panic naming `what`.
fn until<T: std::fmt::Debug>(what: &str, mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + SETTLE;
    loop {
        let answer = read();
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {SETTLE:?}, last {answer:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `record`'s interface in its pod, once it is judged `health` there.
fn in_pod_until(record: &RestoreRecord, what: &str, health: Health) -> LinkState {
    until(
        what,
        || pod_link_state(record).unwrap(),
        |state| state.as_ref().is_some_and(|s| judge(s, Place::Pod).health == health),
    )
    .unwrap()
}

/// Host link `name`, once it is judged `health` on the host.
fn on_host_until(name: &str, what: &str, health: Health) -> LinkState {
    until(
        what,
        || host_link_states().unwrap().into_iter().find(|s| s.name == name),
        |state| state.as_ref().is_some_and(|s| judge(s, Place::Host).health == health),
    )
    .unwrap()
}

#[test]
fn a_pod_interface_follows_its_veth_peer_and_is_gone_with_its_namespace() {
    if !privileged("the pod link health test") {
        return;
    }
    let p = prefix("ndhl");
    let mut created = Created::default();
    let (host, peer, ns) = (format!("{p}ah"), format!("{p}ap"), format!("{p}ans"));
    created.veth(&host, &peer, None);
    created.netns(&ns);
    ip(&["link", "set", &peer, "up"]);

    let netns = Netns::open(netns_path(&ns)).unwrap();
    let config = InterfaceConfig {
        name: Some("net1".into()),
        ..InterfaceConfig::default()
    }
    .validate()
    .unwrap();
    let record = attach(&netns, &host, &config).unwrap();
    drop(netns);

    let state = in_pod_until(&record, "attached, peer up", Health::Healthy);
    assert_eq!(state.name, "net1", "named as in the pod");
    assert!(state.admin_up && state.carrier, "{state:?}");
    assert_eq!(state.oper, OperState::Up);

    // The other end of the pair down on the host: no carrier in the pod.
    ip(&["link", "set", &peer, "down"]);
    let state = in_pod_until(&record, "peer down", Health::Unhealthy);
    assert!(state.admin_up && !state.carrier, "{state:?}");
    let verdict = judge(&state, Place::Pod);
    assert!(verdict.message.starts_with("net1 has no carrier"), "{verdict:?}");

    ip(&["link", "set", &peer, "up"]);
    let state = in_pod_until(&record, "peer up again", Health::Healthy);
    assert!(state.carrier, "{state:?}");

    // Set down by someone inside the pod.
    ip(&["-n", &ns, "link", "set", "net1", "down"]);
    let state = in_pod_until(&record, "set down in the pod", Health::Unhealthy);
    assert!(!state.admin_up, "{state:?}");
    assert_eq!(judge(&state, Place::Pod).message, "net1 was set down inside the pod");

    // A record of another interface: the namespace is there, the interface is not.
    let mut other = record.clone();
    other.name_in_pod = "net9".into();
    other.mac_in_pod = Some(Mac([2, 0, 0, 0xd, 0xe, 0xf]));
    other.host.mac = other.mac_in_pod;
    other.host.permanent_mac = None;
    other.host.pci_address = None;
    assert_eq!(pod_link_state(&other).unwrap(), None);

    // The namespace deleted: the veth dies with it, and there is nothing to read.
    ip(&["netns", "del", &ns]);
    wait_gone(&peer);
    assert!(!link_exists(&peer), "the veth died with its namespace");
    assert_eq!(pod_link_state(&record).unwrap(), None);
}

#[test]
fn host_link_states_list_a_host_veth_with_its_flags() {
    if !privileged("the host link health test") {
        return;
    }
    let p = prefix("ndhl");
    let mut created = Created::default();
    let (one, other) = (format!("{p}bh"), format!("{p}bp"));
    created.veth(&one, &other, None);

    // Created down: nothing to check yet.
    let state = on_host_until(&one, "created down", Health::Unknown);
    assert!(!state.admin_up && !state.carrier, "{state:?}");
    assert!(
        judge(&state, Place::Host).message.contains("administratively down"),
        "{state:?}"
    );

    // Up, its peer down: no carrier.
    ip(&["link", "set", &one, "up"]);
    let state = on_host_until(&one, "up, peer down", Health::Unhealthy);
    assert!(state.admin_up && !state.carrier, "{state:?}");
    assert!(
        matches!(state.oper, OperState::Down | OperState::LowerLayerDown),
        "{state:?}"
    );

    // Both ends up.
    ip(&["link", "set", &other, "up"]);
    let state = on_host_until(&one, "both ends up", Health::Healthy);
    assert!(state.admin_up && state.carrier, "{state:?}");
    assert_eq!(state.oper, OperState::Up);
    assert_eq!(judge(&state, Place::Host).message, format!("{one}: link up"));
}
