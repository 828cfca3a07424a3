//! Ethtool features and link tuning (see the rules in [`super`]).

use std::collections::BTreeMap;

use super::{ConfigError, EthtoolConfig, InterfaceConfig, LinkTuning};

/// `ETH_GSTRING_LEN`: the kernel's buffer for a feature name, its NUL included.
pub const ETH_GSTRING_LEN: usize = 32;
/// The largest `gsoMaxSize` and `gsoIPv4MaxSize`: the kernel's `GSO_MAX_SIZE`
/// (`8 * GSO_MAX_SEGS`, include/linux/netdevice.h).
pub const MAX_GSO_SIZE: u32 = 8 * 65535;
/// The largest `groMaxSize` and `groIPv4MaxSize`: the kernel's `GRO_MAX_SIZE` (`8 * 65535`,
/// include/linux/netdevice.h).
pub const MAX_GRO_SIZE: u32 = 8 * 65535;

/// The `ethtool` command's own names (`ethtool -k`'s unindented lines) and the kernel features
/// they stand for: the kernel knows only the latter.
const ETHTOOL_COMMAND_NAMES: &[(&str, &str)] = &[
    ("rx-checksumming", "rx-checksum"),
    (
        "tx-checksumming",
        "tx-checksum-ipv4, tx-checksum-ip-generic, tx-checksum-ipv6, tx-checksum-fcoe-crc, tx-checksum-sctp",
    ),
    ("scatter-gather", "tx-scatter-gather, tx-scatter-gather-fraglist"),
    (
        "tcp-segmentation-offload",
        "tx-tcp-segmentation, tx-tcp-ecn-segmentation, tx-tcp-mangleid-segmentation, tx-tcp6-segmentation",
    ),
    ("generic-segmentation-offload", "tx-generic-segmentation"),
    ("generic-receive-offload", "rx-gro"),
    ("large-receive-offload", "rx-lro"),
    ("rx-vlan-offload", "rx-vlan-hw-parse"),
    ("tx-vlan-offload", "tx-vlan-hw-insert"),
    ("ntuple-filters", "rx-ntuple-filter"),
    ("receive-hashing", "rx-hashing"),
];

fn check_feature_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() >= ETH_GSTRING_LEN {
        return Err(format!(
            "a feature name is 1 to {} bytes long; this one is {}",
            ETH_GSTRING_LEN - 1,
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{c:?} is not in a kernel feature name (lowercase letters, digits, '-', '_')"
        ));
    }
    if let Some((_, kernel)) = ETHTOOL_COMMAND_NAMES.iter().find(|(alias, _)| *alias == name) {
        return Err(format!(
            "{name:?} is the ethtool command's name; give the kernel's: {kernel}"
        ));
    }
    Ok(())
}

/// Validates `ethtool.features` by syntax; the device's answer comes at attach.
pub(super) fn validate_features(ethtool: Option<&EthtoolConfig>) -> Result<BTreeMap<String, bool>, ConfigError> {
    let Some(ethtool) = ethtool else {
        return Ok(BTreeMap::new());
    };
    for name in ethtool.features.keys() {
        check_feature_name(name).map_err(|m| ConfigError::new(format!("ethtool.features[{name:?}]"), m))?;
    }
    Ok(ethtool.features.clone())
}

/// Validates the offload sizes and the transmit queue length.
pub(super) fn validate_tuning(config: &InterfaceConfig) -> Result<LinkTuning, ConfigError> {
    let size = |field: &str, value: Option<u32>, max: u32| match value {
        Some(v) if !(1..=max).contains(&v) => Err(ConfigError::new(
            field,
            format!("{v} is outside 1..={max}, the kernel's limit"),
        )),
        _ => Ok(value),
    };
    let tuning = LinkTuning {
        gso_max_size: size("gsoMaxSize", config.gso_max_size, MAX_GSO_SIZE)?,
        gro_max_size: size("groMaxSize", config.gro_max_size, MAX_GRO_SIZE)?,
        gso_ipv4_max_size: size("gsoIPv4MaxSize", config.gso_ipv4_max_size, MAX_GSO_SIZE)?,
        gro_ipv4_max_size: size("groIPv4MaxSize", config.gro_ipv4_max_size, MAX_GRO_SIZE)?,
        txqueuelen: config.tx_queue_len,
    };
    if tuning.txqueuelen == Some(0) {
        return Err(ConfigError::new(
            "txQueueLen",
            "0 leaves the link without a working queue (the default pfifo_fast refuses a zero-length one, pfifo holds no packet)",
        ));
    }
    Ok(tuning)
}
