//! Privileged: the settings a pod's interface gets, on a real veth end inside a network
//! namespace, from a thread that entered it: ethtool features through the ethtool netlink
//! family, GSO/GRO sizes and the queue length in one `RTM_SETLINK`, and per-interface sysctls
//! under `/proc/sys/net` (which follows the thread's namespace). Each is read back, by this
//! crate and by `ip`, and each refusal is checked to change nothing.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;
mod inside;

use std::collections::BTreeMap;
use std::process::Command;

use common::*;
use inside::in_netns;
use netdev::{
    Ethtool, EthtoolError, FeatureState, IpFamily, LinkTuning, RtnlError, Sysctl, SysctlError, TuningError,
    link_tuning, read_sysctl, tune_link, write_sysctl,
};
use nix::errno::Errno;

/// The index of link `link` in namespace `ns`.
fn index_in(ns: &str, link: &str) -> u32 {
    let links = ip_json(&["-n", ns, "link", "show", "dev", link]);
    u32::try_from(links[0]["ifindex"].as_u64().unwrap()).unwrap()
}

/// A namespace with one end of a veth pair in it, both ends named `link`; the namespace's name.
fn veth_in_netns(created: &mut Created, tag: &str) -> (String, String) {
    let p = prefix(tag);
    let (ns, link) = (format!("{p}-ns"), format!("{p}v"));
    created.netns(&ns);
    created.veth(&link, &link, Some(&ns));
    (ns, link)
}

fn one(feature: &str, on: bool) -> BTreeMap<String, bool> {
    BTreeMap::from([(feature.to_owned(), on)])
}

fn kernel_errno(err: &EthtoolError) -> Option<Errno> {
    match err {
        EthtoolError::Kernel { source, .. } => Some(source.errno),
        _ => None,
    }
}

#[test]
fn ethtool_features_toggle_and_refusals_change_nothing() {
    if !privileged("the ethtool features test") {
        return;
    }
    let mut created = Created::default();
    let (ns, link) = veth_in_netns(&mut created, "se");
    let index = index_in(&ns, &link);

    in_netns(&ns, || {
        let mut ethtool = Ethtool::new().unwrap();
        let original = ethtool.features(index).unwrap();
        assert!(original.len() > 30, "{original:?}");
        eprintln!(
            "veth changeable features: {:?}",
            original
                .iter()
                .filter(|(_, s)| s.changeable)
                .map(|(n, _)| n)
                .collect::<Vec<_>>()
        );

        // Each off and on again (or on and off), read back after each change.
        for feature in ["tx-checksum-ip-generic", "rx-gro-list", "rx-gro"] {
            let state = original[feature];
            assert!(state.changeable, "{feature}: {state:?}");
            for on in [!state.active, state.active] {
                let changed = ethtool.set_features(index, &one(feature, on)).unwrap();
                assert_eq!(changed.get(feature), Some(&on), "{feature}: {changed:?}");
                let now = ethtool.features(index).unwrap()[feature];
                assert_eq!((now.active, now.wanted), (on, on), "{feature}");
            }
        }
        assert_eq!(ethtool.features(index).unwrap(), original);

        // An unknown name, with a changeable feature in the same request: refused, nothing sent.
        let flip = !original["rx-gro-list"].active;
        let mut request = one("rx-gro-list", flip);
        request.insert("no-such-feature".into(), true);
        let err = ethtool.set_features(index, &request).expect_err("unknown");
        assert!(
            matches!(&err, EthtoolError::UnknownFeature { index: i, feature } if *i == index && feature == "no-such-feature"),
            "{err}"
        );
        assert_eq!(ethtool.features(index).unwrap(), original);

        // A feature veth cannot change (`[fixed]`), likewise.
        let fixed = original
            .iter()
            .find(|(name, s)| !s.changeable && name.as_str() == "loopback")
            .or_else(|| original.iter().find(|(_, s)| !s.changeable))
            .map(|(name, _)| name.clone())
            .unwrap();
        let mut request = one("rx-gro-list", flip);
        request.insert(fixed.clone(), !original[&fixed].active);
        let err = ethtool.set_features(index, &request).expect_err("fixed");
        assert!(
            matches!(&err, EthtoolError::NotChangeable { feature, .. } if *feature == fixed),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("interface {index}: ethtool feature {fixed} cannot be changed on this device")
        );
        assert_eq!(ethtool.features(index).unwrap(), original);

        // Asked on, left off by the kernel: TSO needs a checksum offload.
        let tso = "tx-tcp-segmentation";
        assert!(original[tso].changeable, "{:?}", original[tso]);
        ethtool
            .set_features(index, &one("tx-checksum-ip-generic", false))
            .unwrap();
        let err = ethtool.set_features(index, &one(tso, true)).expect_err("left off");
        assert!(
            matches!(&err, EthtoolError::NotApplied { feature, wanted: true, .. } if feature == tso),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            format!("interface {index}: asked for {tso} on, the kernel left it off")
        );
        assert_eq!(
            ethtool.features(index).unwrap()[tso],
            FeatureState {
                active: false,
                wanted: true,
                changeable: true
            }
        );
        // Checksums back on: the kernel turns TSO on with them, as it was wanted.
        ethtool
            .set_features(index, &one("tx-checksum-ip-generic", true))
            .unwrap();
        assert_eq!(ethtool.features(index).unwrap(), original);

        // No such interface: the kernel's own refusal, with its errno.
        let err = ethtool.features(999_999).expect_err("no such interface");
        assert_eq!(kernel_errno(&err), Some(Errno::ENODEV), "{err}");
        eprintln!("no such interface: {err}");
    });
}

/// `key VALUE` from `ip -d link show` text, as a number.
fn ip_shows(text: &str, key: &str) -> u64 {
    let mut words = text.split_whitespace();
    words
        .by_ref()
        .find(|w| *w == key)
        .unwrap_or_else(|| panic!("{key} in {text}"));
    words.next().unwrap().parse().unwrap()
}

fn ip_details(ns: &str, link: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-d", "link", "show", "dev", link])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn link_tuning_is_set_in_one_message_read_back_and_restored() {
    if !privileged("the link tuning test") {
        return;
    }
    let mut created = Created::default();
    let (ns, link) = veth_in_netns(&mut created, "sl");
    let index = index_in(&ns, &link);

    let host = in_netns(&ns, || link_tuning(index).unwrap());
    eprintln!("veth as created: {host:?}");
    assert!(host.gso_max_size.is_some() && host.txqueuelen.is_some(), "{host:?}");

    // BIG TCP sizes.
    let big = LinkTuning {
        gso_max_size: Some(185_000),
        gro_max_size: Some(185_000),
        gso_ipv4_max_size: Some(185_000),
        gro_ipv4_max_size: Some(185_000),
        txqueuelen: Some(5000),
    };
    in_netns(&ns, || tune_link(index, &big).unwrap());
    assert_eq!(in_netns(&ns, || link_tuning(index).unwrap()), big);
    let shown = ip_details(&ns, &link);
    assert_eq!(ip_shows(&shown, "gso_max_size"), 185_000, "{shown}");
    assert_eq!(ip_shows(&shown, "gro_max_size"), 185_000, "{shown}");
    assert_eq!(ip_shows(&shown, "qlen"), 5000, "{shown}");

    // veth's limit is its tso_max_size: accepted up to it, refused past it with the kernel's
    // reason, and a refused message changes none of its fields.
    let tso_max = ip_shows(&shown, "tso_max_size");
    let tso_max = u32::try_from(tso_max).unwrap();
    let at_limit = LinkTuning {
        gso_max_size: Some(tso_max),
        ..Default::default()
    };
    in_netns(&ns, || tune_link(index, &at_limit).unwrap());
    assert_eq!(
        in_netns(&ns, || link_tuning(index).unwrap()).gso_max_size,
        Some(tso_max)
    );
    let past = LinkTuning {
        gso_max_size: Some(tso_max + 1),
        txqueuelen: Some(7000),
        ..Default::default()
    };
    let err = in_netns(&ns, || tune_link(index, &past)).expect_err("past tso_max_size");
    let TuningError::Rtnl {
        source: RtnlError::Kernel(refused),
        ..
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(refused.errno, Errno::EINVAL, "{err}");
    eprintln!("past the limit: {err}");
    let after = in_netns(&ns, || link_tuning(index).unwrap());
    assert_eq!(after.gso_max_size, Some(tso_max));
    assert_eq!(after.txqueuelen, Some(5000));

    // What was read first restores it.
    in_netns(&ns, || tune_link(index, &host).unwrap());
    assert_eq!(in_netns(&ns, || link_tuning(index).unwrap()), host);
    let shown = ip_details(&ns, &link);
    assert_eq!(Some(ip_shows(&shown, "gso_max_size")), host.gso_max_size.map(u64::from));
    assert_eq!(Some(ip_shows(&shown, "qlen")), host.txqueuelen.map(u64::from));

    // No such interface.
    let err = in_netns(&ns, || link_tuning(999_999)).expect_err("no such interface");
    assert!(matches!(err, TuningError::NoSuchInterface { .. }), "{err}");
}

#[test]
fn interface_sysctls_follow_the_threads_namespace() {
    if !privileged("the interface sysctl test") {
        return;
    }
    let mut created = Created::default();
    // Both veth ends share the name: the host has a same-named file that must not change.
    let (ns, link) = veth_in_netns(&mut created, "ss");
    let host_arp = read_sysctl(IpFamily::V4, &link, "arp_ignore").unwrap();
    let host_ra = read_sysctl(IpFamily::V6, &link, "accept_ra").unwrap();

    let arp_ignore = Sysctl {
        family: IpFamily::V4,
        name: "arp_ignore".into(),
        value: 1,
    };
    let accept_ra = Sysctl {
        family: IpFamily::V6,
        name: "accept_ra".into(),
        value: 0,
    };
    assert_ne!(
        (host_arp, host_ra),
        (1, 0),
        "the host's defaults already are the values written"
    );
    let read = in_netns(&ns, || {
        write_sysctl(&link, &arp_ignore).unwrap();
        write_sysctl(&link, &accept_ra).unwrap();
        (
            read_sysctl(IpFamily::V4, &link, "arp_ignore").unwrap(),
            read_sysctl(IpFamily::V6, &link, "accept_ra").unwrap(),
        )
    });
    assert_eq!(read, (1, 0));
    // Seen from inside by another process, and unchanged on the host.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns, "cat"])
        .arg(format!("/proc/sys/net/ipv4/conf/{link}/arp_ignore"))
        .arg(format!("/proc/sys/net/ipv6/conf/{link}/accept_ra"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1\n0\n");
    assert_eq!(read_sysctl(IpFamily::V4, &link, "arp_ignore").unwrap(), host_arp);
    assert_eq!(read_sysctl(IpFamily::V6, &link, "accept_ra").unwrap(), host_ra);

    // A setting that does not exist names its path; a name with `..` is refused unopened.
    let err = in_netns(&ns, || {
        write_sysctl(
            &link,
            &Sysctl {
                family: IpFamily::V4,
                name: "no_such_setting".into(),
                value: 1,
            },
        )
    })
    .expect_err("no such setting");
    assert!(
        err.to_string()
            .starts_with(&format!("sysctl /proc/sys/net/ipv4/conf/{link}/no_such_setting: ")),
        "{err}"
    );
    let err = in_netns(&ns, || {
        write_sysctl(
            &link,
            &Sysctl {
                family: IpFamily::V4,
                name: "../all/forwarding".into(),
                value: 1,
            },
        )
    })
    .expect_err("refused");
    assert!(matches!(err, SysctlError::BadName { .. }), "{err}");
}
