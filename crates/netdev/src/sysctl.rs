//! Per-interface sysctls, `/proc/sys/net/{ipv4,ipv6}/conf/<interface>/<name>`, read and written
//! in the calling thread's network namespace.
//!
//! Rules:
//! - `/proc/sys/net` shows the network namespace of the task that opens the file, not the one
//!   `/proc` was mounted from: a thread that entered a pod's namespace (`setns`) reads and
//!   writes the pod's settings here, with no mount of its own.
//! - The path is built only from a family, an interface name and a setting name that are
//!   single path components: a name that is empty, `.` or `..`, or contains `/` or a NUL, is
//!   refused before anything is opened (defence in depth; configuration validation already
//!   restricts the names).
//! - Values are integers, written as their decimal text; every error names the path.

use std::path::PathBuf;

use crate::config::{IpFamily, Sysctl};

/// The root of the network sysctls.
const NET_ROOT: &str = "/proc/sys/net";

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SysctlError {
    /// The interface or setting name is not a single path component.
    #[error("sysctl {path}: {what} {name:?} is not a plain name")]
    BadName {
        /// The path it would have made.
        path: String,
        /// `interface` or `setting`.
        what: &'static str,
        /// The name refused.
        name: String,
    },
    /// Opening, reading or writing the file failed (no such interface or setting in this
    /// namespace: `NotFound`).
    #[error("sysctl {path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The file did not hold an integer.
    #[error("sysctl {path}: {text:?} is not an integer", path = path.display())]
    NotAnInteger {
        /// The file.
        path: PathBuf,
        /// What it held.
        text: String,
    },
}

/// Whether `name` is one path component that names a file in its directory.
fn plain(name: &str) -> bool {
    !name.is_empty() && name != "." && !name.contains("..") && !name.contains(['/', '\0'])
}

/// The sysctl file of setting `name` of `interface` for `family`; refuses names that are not
/// plain.
pub(crate) fn sysctl_path(family: IpFamily, interface: &str, name: &str) -> Result<PathBuf, SysctlError> {
    let path = format!("{NET_ROOT}/{}/conf/{interface}/{name}", family.sysctl_dir());
    for (what, value) in [("interface", interface), ("setting", name)] {
        if !plain(value) {
            return Err(SysctlError::BadName {
                path,
                what,
                name: value.to_owned(),
            });
        }
    }
    Ok(PathBuf::from(path))
}

/// The integer a sysctl file holds (its text, trimmed).
pub(crate) fn parse_value(path: PathBuf, text: &str) -> Result<i64, SysctlError> {
    text.trim().parse().map_err(|_| SysctlError::NotAnInteger {
        path,
        text: text.to_owned(),
    })
}

/// Reads setting `name` of `interface` for `family` in the calling thread's namespace.
pub fn read_sysctl(family: IpFamily, interface: &str, name: &str) -> Result<i64, SysctlError> {
    let path = sysctl_path(family, interface, name)?;
    match std::fs::read_to_string(&path) {
        Ok(text) => parse_value(path, &text),
        Err(source) => Err(SysctlError::Io { path, source }),
    }
}

/// Writes `sysctl` for `interface` in the calling thread's namespace.
pub fn write_sysctl(interface: &str, sysctl: &Sysctl) -> Result<(), SysctlError> {
    let path = sysctl_path(sysctl.family, interface, &sysctl.name)?;
    // An existing file only: a missing one is a missing interface or setting, not one to make.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, sysctl.value.to_string().as_bytes()));
    written.map_err(|source| SysctlError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_is_the_familys_conf_directory_of_the_interface() {
        assert_eq!(
            sysctl_path(IpFamily::V4, "net1", "arp_ignore").expect("plain"),
            PathBuf::from("/proc/sys/net/ipv4/conf/net1/arp_ignore")
        );
        assert_eq!(
            sysctl_path(IpFamily::V6, "eth0.100", "accept_ra").expect("plain"),
            PathBuf::from("/proc/sys/net/ipv6/conf/eth0.100/accept_ra")
        );
    }

    #[test]
    fn names_that_leave_their_directory_are_refused_naming_the_path() {
        for (interface, name) in [
            ("..", "arp_ignore"),
            ("net1", "../../all/forwarding"),
            ("a/b", "arp_ignore"),
            ("net1", ""),
            (".", "arp_ignore"),
            ("net1", "x\0y"),
        ] {
            let err = sysctl_path(IpFamily::V4, interface, name).expect_err("refused");
            assert!(matches!(err, SysctlError::BadName { .. }), "{err}");
        }
        let err = sysctl_path(IpFamily::V6, "net1", "../forwarding").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "sysctl /proc/sys/net/ipv6/conf/net1/../forwarding: setting \"../forwarding\" is not a plain name"
        );
    }

    #[test]
    fn values_are_trimmed_integers() {
        let path = || PathBuf::from("/proc/sys/net/ipv4/conf/lo/arp_ignore");
        assert_eq!(parse_value(path(), "1\n").expect("integer"), 1);
        assert_eq!(parse_value(path(), "-1\n").expect("integer"), -1);
        let err = parse_value(path(), "on\n").expect_err("not an integer");
        assert_eq!(
            err.to_string(),
            "sysctl /proc/sys/net/ipv4/conf/lo/arp_ignore: \"on\\n\" is not an integer"
        );
    }

    #[test]
    fn a_real_setting_is_read_and_a_missing_interface_names_the_path() {
        // Readable without root.
        read_sysctl(IpFamily::V4, "lo", "arp_ignore").expect("lo has arp_ignore");
        let err = read_sysctl(IpFamily::V4, "netdra-none0", "arp_ignore").expect_err("no such interface");
        assert!(
            matches!(&err, SysctlError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("sysctl /proc/sys/net/ipv4/conf/netdra-none0/arp_ignore: ")
        );
    }

    proptest::proptest! {
        /// Any text decodes to an integer or an error, never a panic.
        #[test]
        fn arbitrary_values_never_panic(text in ".*") {
            let _ = parse_value(PathBuf::new(), &text);
        }
    }
}
