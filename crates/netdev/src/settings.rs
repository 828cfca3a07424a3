//! The settings of a pod interface beyond its name, MTU, MAC, addresses and routes: offload
//! sizes and queue length ([`LinkTuning`]), ethtool features and per-interface sysctls. Read
//! on the host before anything changes, applied inside the pod after the move, put back on the
//! host after the interface returns.
//!
//! Rules:
//! - **Record** (on the host, before the move, changes nothing): for each setting the
//!   configuration gives, the host's current value, kept in the [`HostSettings`] of the
//!   restore record. A feature the device does not have, a sysctl the host has no file for, or
//!   a GSO size above the device's `tso_max_size` (read with the sizes) refuses the attach
//!   here, before anything moves.
//! - **Apply** (in the pod, after the move): the offload sizes and queue length are one
//!   `RTM_SETLINK` that joins the datagram of addresses and routes (no extra round trip); the
//!   features go through one ethtool socket made inside the pod's namespace (a read, then one
//!   set of only the named features, which the kernel confirms); the sysctls are written from
//!   one thread inside the namespace, by the interface's pod name. A failure rolls the whole
//!   attach back, as any other step's does.
//! - **Restore** (on the host, after the return, best effort): offload sizes, queue length and
//!   features belong to the device and travel with it, so the recorded values are set again.
//!   Per-interface sysctls do not travel: the kernel makes the interface's `conf` directory
//!   anew from the namespace's defaults each time it enters one, so the recorded host values
//!   are written again. What could not be restored is reported, never fatal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::attach::StepError;
use crate::config::{LinkTuning, Neighbour, Rule, Sysctl, ValidConfig};
use crate::ethtool::{Ethtool, EthtoolError};
use crate::netns::Netns;
use crate::rtnl::Rtnl;
use crate::sysctl::{read_sysctl, write_sysctl};
use crate::tuning::{check_gso_sizes, read_with_limit, tune_with, tuning_message};

/// The host's values of the settings an attach changes, and the host state carried into the
/// pod with the interface, recorded before the move. Empty in records written before these
/// settings existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSettings {
    /// The offload sizes and queue length the configuration changes, as the host had them.
    #[serde(default, skip_serializing_if = "LinkTuning::is_empty")]
    pub tuning: LinkTuning,
    /// The ethtool features the configuration changes, as they were active on the host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, bool>,
    /// The per-interface sysctls the configuration sets, with the host's values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sysctls: Vec<Sysctl>,
    /// The host's policy rules that went into the pod with the interface (carried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// The host's permanent neighbour entries of the interface (carried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbour>,
}

impl HostSettings {
    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Reads the host's values of what `config` changes on the interface `name` (index `index`),
/// in the calling thread's (the host's) namespace; the failing step and its error.
pub(crate) fn record(
    host: &mut Rtnl,
    index: u32,
    name: &str,
    config: &ValidConfig,
) -> Result<HostSettings, (String, StepError)> {
    let mut settings = HostSettings::default();
    let wanted = &config.tuning;
    if !wanted.is_empty() {
        let (now, tso_max_size) =
            read_with_limit(host, index).map_err(|e| ("read the offload sizes and queue length".into(), e.into()))?;
        check_gso_sizes(index, wanted, tso_max_size)
            .map_err(|e| ("check the GSO sizes against the device's tso_max_size".into(), e.into()))?;
        settings.tuning = LinkTuning {
            gso_max_size: wanted.gso_max_size.and(now.gso_max_size),
            gro_max_size: wanted.gro_max_size.and(now.gro_max_size),
            gso_ipv4_max_size: wanted.gso_ipv4_max_size.and(now.gso_ipv4_max_size),
            gro_ipv4_max_size: wanted.gro_ipv4_max_size.and(now.gro_ipv4_max_size),
            txqueuelen: wanted.txqueuelen.and(now.txqueuelen),
        };
    }
    if !config.features.is_empty() {
        let step = || "read the ethtool features".to_owned();
        let mut ethtool = Ethtool::new().map_err(|e| (step(), e.into()))?;
        let features = ethtool.features(index).map_err(|e| (step(), e.into()))?;
        for name in config.features.keys() {
            let Some(state) = features.get(name) else {
                return Err((
                    step(),
                    EthtoolError::UnknownFeature {
                        index,
                        feature: name.clone(),
                    }
                    .into(),
                ));
            };
            if !state.changeable {
                return Err((
                    step(),
                    EthtoolError::NotChangeable {
                        index,
                        feature: name.clone(),
                    }
                    .into(),
                ));
            }
            settings.features.insert(name.clone(), state.active);
        }
    }
    for sysctl in &config.sysctls {
        let value = read_sysctl(sysctl.family, name, &sysctl.name)
            .map_err(|e| (format!("read sysctl {}", sysctl_label(sysctl)), e.into()))?;
        settings.sysctls.push(Sysctl {
            value,
            ..sysctl.clone()
        });
    }
    Ok(settings)
}

/// The message that applies `config`'s offload sizes and queue length to the pod interface
/// `index`, for the configuring datagram; `None` when it gives none.
pub(crate) fn tuning_in_pod(index: u32, config: &ValidConfig) -> Option<netlink_packet_route::RouteNetlinkMessage> {
    (!config.tuning.is_empty()).then(|| tuning_message(index, &config.tuning))
}

/// Applies `config`'s features and sysctls to the interface `index`, named `name`, inside
/// `netns`; the failing step and its error.
pub(crate) fn apply_in_pod(
    netns: &Netns,
    index: u32,
    name: &str,
    config: &ValidConfig,
) -> Result<(), (String, StepError)> {
    if config.features.is_empty() && config.sysctls.is_empty() {
        return Ok(());
    }
    let ns = netns.path().display();
    let inside = netns.run_inside(|| -> Result<(), (String, StepError)> {
        if !config.features.is_empty() {
            let step = || format!("set the ethtool features of {name} in {ns}");
            let mut ethtool = Ethtool::new().map_err(|e| (step(), e.into()))?;
            ethtool
                .set_features(index, &config.features)
                .map_err(|e| (step(), e.into()))?;
        }
        for sysctl in &config.sysctls {
            write_sysctl(name, sysctl).map_err(|e| {
                (
                    format!("set sysctl {} of {name} in {ns}", sysctl_label(sysctl)),
                    e.into(),
                )
            })?;
        }
        Ok(())
    });
    inside.map_err(|e| (format!("enter {ns}"), e.into()))?
}

/// Puts the recorded settings back on the host interface `index`, named `name`, in the
/// calling thread's (the host's) namespace; what could not be restored, as messages.
pub(crate) fn restore_on_host(host: &mut Rtnl, index: u32, name: &str, settings: &HostSettings) -> Vec<String> {
    let mut problems = Vec::new();
    if !settings.tuning.is_empty()
        && let Err(e) = tune_with(host, index, &settings.tuning)
    {
        problems.push(format!("restore the offload sizes and queue length of {name}: {e}"));
    }
    if !settings.features.is_empty() {
        let restored = Ethtool::new().and_then(|mut ethtool| ethtool.set_features(index, &settings.features));
        if let Err(e) = restored {
            problems.push(format!("restore the ethtool features of {name}: {e}"));
        }
    }
    for sysctl in &settings.sysctls {
        if let Err(e) = write_sysctl(name, sysctl) {
            problems.push(format!("restore sysctl {} of {name}: {e}", sysctl_label(sysctl)));
        }
    }
    problems
}

/// `ipv4.arp_ignore`: how a configuration names a sysctl.
fn sysctl_label(sysctl: &Sysctl) -> String {
    format!("{}.{}", sysctl.family.sysctl_dir(), sysctl.name)
}
