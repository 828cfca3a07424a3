//! What sysfs says about a network interface: the device behind it (PCI function, NUMA node,
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::path::{Component, Path, PathBuf};

/// A sysfs tree: `/sys` on a node, a fixture directory in tests.
///
/// What sysfs says about a network interface: the device behind it (PCI function, NUMA node,
/// PCIe root, SR-IOV role, RDMA device), its kernel driver and its speed.
///
/// The sysfs root is a parameter, so the same code reads `/sys` on a node and a fixture tree
/// in a test. Paths are resolved against that root only: links are followed with
/// `canonicalize`, and a target outside the root is not trusted. A missing or unreadable file
/// is an absent fact, never an error: sysfs attributes come and go with drivers and kernels
/// (`speed` of a link that is down fails with EINVAL, `phys_port_name` with EOPNOTSUPP).
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
    /// The root with links resolved, to check that resolved paths stay inside it.
    canonical_root: PathBuf,
}

/// The facts sysfs holds about one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysfsFacts {
    /// The interface has a parent device (`device` link): it is backed by hardware or a
    /// hypervisor's device. False for software interfaces (under `devices/virtual/net`).
    pub has_device: bool,
    /// The kernel driver bound to the interface's parent device (`device/driver`).
    pub kernel_driver: Option<String>,
    /// The PCI function the interface belongs to, if any (possibly a parent, as for virtio).
    pub pci: Option<PciFacts>,
    /// Link speed in Mbit/s, when the link reports one.
    pub speed_mbps: Option<u32>,
    /// The port number of a multi-port device (`dev_port`).
    pub dev_port: Option<u32>,
    /// The physical port name (`phys_port_name`), e.g. `p0` or a representor's `pf0vf1`.
    pub phys_port_name: Option<String>,
}

/// The facts of a PCI function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PciFacts {
    /// The PCI address, `dddd:bb:dd.f`.
    pub address: String,
    /// The vendor id, four hex digits without `0x`.
    pub vendor: Option<String>,
    /// The device id, four hex digits without `0x`.
    pub device: Option<String>,
    /// The NUMA node, when the platform reports one (`-1` means none).
    pub numa_node: Option<i64>,
    /// The PCIe root complex, `pci<domain>:<bus>` (the standard `pcieRoot` attribute).
    pub pcie_root: Option<String>,
    /// SR-IOV physical function: how many VFs it can have.
    pub sriov_total_vfs: Option<u32>,
    /// SR-IOV physical function: how many VFs are configured.
    pub sriov_num_vfs: Option<u32>,
    /// SR-IOV virtual function: the PCI address of its physical function.
    pub physfn: Option<String>,
    /// SR-IOV virtual function: the interface name of its physical function, if it has one.
    pub physfn_interface: Option<String>,
    /// The RDMA device on this function (`infiniband/<name>`), if any.
    pub rdma_device: Option<String>,
}

impl Default for Sysfs {
    fn default() -> Self {
        Self::new("/sys")
    }
}

impl Sysfs {
    /// A sysfs tree rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let canonical_root = std::fs::canonicalize(&root).unwrap_or_else(|_| root.clone());
        Self { root, canonical_root }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads what sysfs knows about interface `name`. An interface sysfs does not show (it
    /// vanished, or lives in another namespace) yields empty facts.
    pub fn interface(&self, name: &str) -> SysfsFacts {
        // An interface name with a path separator cannot exist; never let it walk the tree.
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return SysfsFacts::default();
        }
        let class_dir = self.root.join("class/net").join(name);
        // One readlink tells a software interface (`../../devices/virtual/net/<name>`) from
        // one with a device; software interfaces need nothing more, which keeps a scan of
        // 1,000 veths cheap.
        let Ok(target) = std::fs::read_link(&class_dir) else {
            return SysfsFacts::default();
        };
        if target.components().any(|c| c.as_os_str() == "virtual") {
            return SysfsFacts::default();
        }
        let mut facts = SysfsFacts {
            speed_mbps: read_trimmed(&class_dir.join("speed"))
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| u32::try_from(s).ok())
                .filter(|s| *s > 0),
            dev_port: read_trimmed(&class_dir.join("dev_port")).and_then(|s| s.parse().ok()),
            phys_port_name: read_trimmed(&class_dir.join("phys_port_name")).filter(|s| !s.is_empty()),
            ..SysfsFacts::default()
        };
        let Some(parent) = self.resolve(&class_dir.join("device")) else {
            return facts;
        };
        facts.has_device = true;
        facts.kernel_driver = self.link_name(&parent.join("driver"));
        facts.pci = self.pci_function_of(&parent).map(|dir| self.pci_facts(&dir));
        facts
    }

    /// Follows links and `..` inside the root; `None` when the path does not exist or leaves it.
    fn resolve(&self, path: &Path) -> Option<PathBuf> {
        let real = std::fs::canonicalize(path).ok()?;
        real.starts_with(&self.canonical_root).then_some(real)
    }

    /// The last component of a link's target, e.g. the driver's name for `device/driver`.
    fn link_name(&self, link: &Path) -> Option<String> {
        self.resolve(link)?.file_name()?.to_str().map(str::to_owned)
    }

    /// The nearest directory at or above `dir` named like a PCI address: the interface's PCI
    /// function (virtio-net interfaces hang below a `virtioN` child of it).
    fn pci_function_of(&self, dir: &Path) -> Option<PathBuf> {
        dir.ancestors()
            .take_while(|d| d.starts_with(&self.canonical_root))
            .find(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(is_pci_address))
            .map(Path::to_path_buf)
    }

    fn pci_facts(&self, dir: &Path) -> PciFacts {
        let address = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let hex_id =
            |file: &str| read_trimmed(&dir.join(file)).map(|v| v.trim_start_matches("0x").to_ascii_lowercase());
        let physfn_dir = self.resolve(&dir.join("physfn"));
        PciFacts {
            vendor: hex_id("vendor"),
            device: hex_id("device"),
            numa_node: read_trimmed(&dir.join("numa_node"))
                .and_then(|n| n.parse::<i64>().ok())
                .filter(|n| *n >= 0),
            pcie_root: pcie_root(dir.strip_prefix(&self.canonical_root).unwrap_or(dir)),
            sriov_total_vfs: read_trimmed(&dir.join("sriov_totalvfs")).and_then(|n| n.parse().ok()),
            sriov_num_vfs: read_trimmed(&dir.join("sriov_numvfs")).and_then(|n| n.parse().ok()),
            physfn: physfn_dir
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .map(str::to_owned),
            physfn_interface: physfn_dir.as_deref().and_then(|pf| first_entry(&pf.join("net"))),
            rdma_device: first_entry(&dir.join("infiniband")),
            address,
        }
    }
}

/// `dddd:bb:dd.f` with hex digits: a PCI address as sysfs names PCI functions.
pub fn is_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && hex(11..12)
}

/// The PCIe root complex of a PCI function's sysfs directory (relative to the sysfs root, or
/// absolute under `/sys`): the `pci<domain>:<bus>` directory below `devices` it hangs under.
fn pcie_root(dir: &Path) -> Option<String> {
    let mut after_devices = false;
    for c in dir.components() {
        if let Component::Normal(name) = c {
            let name = name.to_str()?;
            if after_devices && name.starts_with("pci") {
                return Some(name.to_owned());
            }
            after_devices = name == "devices";
        }
    }
    None
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// The alphabetically first entry of a directory, for directories that hold one name.
fn first_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_addresses_are_recognised() {
        assert!(is_pci_address("0000:3b:00.0"));
        assert!(is_pci_address("0000:af:1f.7"));
        assert!(!is_pci_address("virtio2"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("0000:3b:00.00"));
        assert!(!is_pci_address("0000:3g:00.0"));
    }

    #[test]
    fn pcie_root_is_the_pci_directory_below_devices() {
        let dir = Path::new("/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0");
        assert_eq!(pcie_root(dir).as_deref(), Some("pci0000:3a"));
        assert_eq!(pcie_root(Path::new("/sys/devices/virtual/net/veth0")), None);
    }

    #[test]
    fn names_that_walk_the_tree_read_nothing() {
        let sysfs = Sysfs::new("/sys");
        assert_eq!(sysfs.interface("../../etc"), SysfsFacts::default());
        assert_eq!(sysfs.interface(".."), SysfsFacts::default());
    }
}
