//! The inventory on fixture sysfs trees: an SR-IOV PF with two VFs, an RDMA NIC on NUMA node 1,
//! a veth, an interface whose name is not a DNS label, and the node's loopback and uplink.
//! No root needed; the netlink side is written by hand.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kubeletplugin::{PoolSpec, SliceOp, plan_slices};
use netdev::{AddressFacts, LinkFacts, NetlinkSnapshot, Sysfs};
use netdev_k8s::{DeviceFilter, InventoryConfig, select};

const DRIVER: &str = "netdra.example.com";

/// A sysfs tree in a temporary directory, laid out as the kernel lays out `/sys`.
struct Tree {
    dir: tempfile::TempDir,
}

/// The relative path from directory `from` to `to` (both under the tree).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

impl Tree {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn write(&self, path: &Path, content: &str) {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, format!("{content}\n")).expect("write");
    }

    /// A link at `link` pointing at `target`, relative as in sysfs.
    fn link(&self, link: &Path, target: &Path) {
        fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
        fs::create_dir_all(target).expect("mkdir target");
        symlink(relative(link.parent().expect("parent"), target), link).expect("symlink");
    }

    /// A PCI function at `devices/<root>/<chain…>/<address>` bound to `driver`.
    fn pci_function(&self, chain: &[&str], vendor: &str, device: &str, driver: &str, numa: i32) -> PathBuf {
        let mut dir = self.root().join("devices");
        for c in chain {
            dir.push(c);
        }
        fs::create_dir_all(&dir).expect("mkdir");
        self.write(&dir.join("vendor"), vendor);
        self.write(&dir.join("device"), device);
        self.write(&dir.join("numa_node"), &numa.to_string());
        self.link(&dir.join("driver"), &self.root().join("bus/pci/drivers").join(driver));
        dir
    }

    /// Interface `name` of the device directory `parent` (a PCI function or a child of one).
    fn netdev(&self, name: &str, parent: &Path, speed: Option<u32>) {
        let dir = parent.join("net").join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        self.link(&dir.join("device"), parent);
        if let Some(speed) = speed {
            self.write(&dir.join("speed"), &speed.to_string());
        }
        self.link(&self.root().join("class/net").join(name), &dir);
    }

    /// A software interface under `devices/virtual/net`.
    fn virtual_netdev(&self, name: &str) {
        let dir = self.root().join("devices/virtual/net").join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        self.link(&self.root().join("class/net").join(name), &dir);
    }
}

fn link(index: u32, name: &str, kind: Option<&str>) -> LinkFacts {
    LinkFacts {
        index,
        name: name.into(),
        mac: Some(format!("02:00:00:00:00:{index:02x}")),
        mtu: Some(1500),
        oper_state: "up".into(),
        info_kind: kind.map(str::to_owned),
        ..LinkFacts::default()
    }
}

/// The node of these tests, on disk and in netlink.
fn node() -> (Tree, NetlinkSnapshot) {
    let tree = Tree::new();
    // The uplink: a virtio NIC (its interface hangs below a virtio child of the PCI function).
    let virtio = tree.pci_function(&["pci0000:00", "0000:00:03.0"], "0x1af4", "0x1000", "virtio-pci", -1);
    let virtio_child = virtio.join("virtio2");
    fs::create_dir_all(&virtio_child).expect("mkdir");
    tree.link(
        &virtio_child.join("driver"),
        &tree.root().join("bus/virtio/drivers/virtio_net"),
    );
    tree.netdev("eth0", &virtio_child, None);

    // An SR-IOV PF with two VFs behind a root port of PCIe root pci0000:3a.
    let pf = tree.pci_function(
        &["pci0000:3a", "0000:3a:00.0", "0000:3b:00.0"],
        "0x8086",
        "0x1593",
        "ice",
        0,
    );
    tree.write(&pf.join("sriov_totalvfs"), "8");
    tree.write(&pf.join("sriov_numvfs"), "2");
    tree.netdev("enp59s0f0", &pf, Some(25000));
    for (i, name) in ["enp59s0f0v0", "enp59s0f0v1"].iter().enumerate() {
        let vf = tree.pci_function(
            &["pci0000:3a", "0000:3a:00.0", &format!("0000:3b:01.{i}")],
            "0x8086",
            "0x1889",
            "iavf",
            0,
        );
        tree.link(&vf.join("physfn"), &pf);
        tree.link(&pf.join(format!("virtfn{i}")), &vf);
        tree.netdev(name, &vf, Some(25000));
    }

    // An RDMA-capable NIC on NUMA node 1.
    let mlx = tree.pci_function(
        &["pci0000:ae", "0000:ae:00.0", "0000:af:00.0"],
        "0x15b3",
        "0x101d",
        "mlx5_core",
        1,
    );
    fs::create_dir_all(mlx.join("infiniband/mlx5_0")).expect("mkdir");
    tree.netdev("ens5f0np0", &mlx, Some(100000));

    // Software interfaces: loopback, a veth, and a VLAN whose name is no DNS label.
    tree.virtual_netdev("lo");
    tree.virtual_netdev("veth0");
    tree.virtual_netdev("Storage_VLAN");

    let snapshot = NetlinkSnapshot {
        links: vec![
            LinkFacts {
                loopback: true,
                mac: None,
                ..link(1, "lo", None)
            },
            link(2, "eth0", None),
            link(3, "enp59s0f0", None),
            link(4, "enp59s0f0v0", None),
            link(5, "enp59s0f0v1", None),
            link(6, "ens5f0np0", None),
            link(7, "veth0", Some("veth")),
            LinkFacts {
                lower: Some(3),
                ..link(8, "Storage_VLAN", Some("vlan"))
            },
        ],
        addresses: vec![
            AddressFacts {
                index: 2,
                cidr: "10.0.0.5/24".into(),
                ipv6: false,
            },
            AddressFacts {
                index: 6,
                cidr: "192.168.50.7/24".into(),
                ipv6: false,
            },
            AddressFacts {
                index: 6,
                cidr: "fd00:50::7/64".into(),
                ipv6: true,
            },
        ],
        default_route_interfaces: [2].into(),
        ..NetlinkSnapshot::default()
    };
    (tree, snapshot)
}

fn config(tree: &Tree, filter: Option<&str>) -> InventoryConfig {
    InventoryConfig::new(
        DRIVER,
        Sysfs::new(tree.root()),
        DeviceFilter::parse(filter).expect("filter parses"),
    )
}

fn attr<'a>(d: &'a Device, name: &str) -> &'a k8s_openapi::api::resource::v1::DeviceAttribute {
    d.attributes
        .as_ref()
        .and_then(|a| a.get(name))
        .unwrap_or_else(|| panic!("{} has no attribute {name}", d.name))
}

fn s<'a>(d: &'a Device, name: &str) -> &'a str {
    attr(d, name)
        .string
        .as_deref()
        .unwrap_or_else(|| panic!("{}.{name} is not a string", d.name))
}

fn i(d: &Device, name: &str) -> i64 {
    attr(d, name)
        .int
        .unwrap_or_else(|| panic!("{}.{name} is not an int", d.name))
}

fn b(d: &Device, name: &str) -> bool {
    attr(d, name)
        .bool
        .unwrap_or_else(|| panic!("{}.{name} is not a bool", d.name))
}

fn has(d: &Device, name: &str) -> bool {
    d.attributes.as_ref().is_some_and(|a| a.contains_key(name))
}

#[test]
fn sriov_pf_and_its_vfs() {
    let (tree, snapshot) = node();
    let scan = select(&snapshot, &config(&tree, None));
    let pf = scan
        .published("pci-0000-3b-00-0")
        .expect("PF published under its PCI name");
    assert_eq!(s(pf, "ifName"), "enp59s0f0");
    assert_eq!(s(pf, "kind"), "physical");
    assert!(b(pf, "sriov"));
    assert_eq!(i(pf, "sriovTotalVfs"), 8);
    assert_eq!(i(pf, "sriovNumVfs"), 2);
    assert_eq!(s(pf, "pciVendor"), "8086");
    assert_eq!(s(pf, "pciDevice"), "1593");
    assert_eq!(s(pf, "kernelDriver"), "ice");
    assert_eq!(s(pf, "resource.kubernetes.io/pcieRoot"), "pci0000:3a");
    assert_eq!(s(pf, "resource.kubernetes.io/pciBusID"), "0000:3b:00.0");
    assert_eq!(i(pf, "speedMbps"), 25000);
    assert!(!has(pf, "sriovVf"));

    for (n, name) in ["enp59s0f0v0", "enp59s0f0v1"].iter().enumerate() {
        let vf = scan.published(&format!("pci-0000-3b-01-{n}")).expect("VF published");
        assert_eq!(s(vf, "ifName"), *name);
        assert_eq!(s(vf, "kind"), "sriov-vf");
        assert!(b(vf, "sriovVf"));
        assert_eq!(s(vf, "sriovPfPciAddress"), "0000:3b:00.0");
        assert_eq!(s(vf, "sriovPfName"), "enp59s0f0");
        assert_eq!(s(vf, "pciDevice"), "1889");
        assert_eq!(s(vf, "kernelDriver"), "iavf");
        assert_eq!(s(vf, "resource.kubernetes.io/pcieRoot"), "pci0000:3a");
        assert!(!has(vf, "sriov"));
    }
}

#[test]
fn rdma_nic_on_numa_node_one() {
    let (tree, snapshot) = node();
    let scan = select(&snapshot, &config(&tree, None));
    let nic = scan.published("pci-0000-af-00-0").expect("RDMA NIC published");
    assert_eq!(s(nic, "ifName"), "ens5f0np0");
    assert_eq!(i(nic, "numaNode"), 1);
    assert!(b(nic, "rdma"));
    assert_eq!(s(nic, "rdmaDevice"), "mlx5_0");
    assert_eq!(s(nic, "pciVendor"), "15b3");
    assert_eq!(s(nic, "resource.kubernetes.io/pcieRoot"), "pci0000:ae");
    assert_eq!(s(nic, "ipv4"), "192.168.50.7/24");
    assert_eq!(s(nic, "ipv6"), "fd00:50::7/64");
    assert_eq!(i(nic, "speedMbps"), 100000);
    // The PF has no RDMA device: the attribute says so rather than being absent.
    assert!(!b(scan.published("pci-0000-3b-00-0").expect("PF"), "rdma"));
}

#[test]
fn veth_and_a_name_that_is_no_dns_label() {
    let (tree, snapshot) = node();
    // By default the veth is pod networking and the VLAN a software interface: both stay out.
    let scan = select(&snapshot, &config(&tree, None));
    assert!(scan.published("veth0").is_none());
    assert!(
        scan.left_out
            .iter()
            .any(|(n, why)| n == "veth0" && why.contains("veth")),
        "{:?}",
        scan.left_out
    );
    assert!(
        scan.left_out
            .iter()
            .any(|(n, why)| n == "Storage_VLAN" && why.contains("software interface (vlan)")),
        "{:?}",
        scan.left_out
    );
    // An operator's filter can still publish it.
    let scan = select(
        &snapshot,
        &config(
            &tree,
            Some(r#"device.attributes["netdra.example.com"].ifName == "Storage_VLAN""#),
        ),
    );
    let vlan = scan
        .published
        .iter()
        .find(|d| s(d, "ifName") == "Storage_VLAN")
        .expect("VLAN published");
    assert!(vlan.name.starts_with("storage-vlan-"), "{}", vlan.name);
    assert!(k8snames::is_dns_label(&vlan.name));
    assert_eq!(s(vlan, "kind"), "virtual");
    assert_eq!(s(vlan, "linkType"), "vlan");
    assert!(b(vlan, "virtual"));
    assert!(!has(vlan, "pciAddress"));

    // A filter that selects veths publishes it with its veth attributes.
    let scan = select(
        &snapshot,
        &config(&tree, Some(r#"device.attributes["netdra.example.com"].kind == "veth""#)),
    );
    let names: Vec<&str> = scan.published.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["veth0"]);
    let veth = &scan.published[0];
    assert_eq!(s(veth, "kind"), "veth");
    assert_eq!(s(veth, "mac"), "02:00:00:00:00:07");
    assert_eq!(i(veth, "mtu"), 1500);
    assert_eq!(s(veth, "state"), "up");
}

#[test]
fn loopback_and_uplink_stay_out_by_default() {
    let (tree, snapshot) = node();
    let scan = select(&snapshot, &config(&tree, None));
    let left_out: Vec<&str> = scan.left_out.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(left_out, ["lo", "eth0", "veth0", "Storage_VLAN"]);
    let eth0 = scan.devices.iter().find(|d| d.if_name == "eth0").expect("eth0 scanned");
    assert_eq!(eth0.name, "pci-0000-00-03-0", "virtio NIC named after its PCI function");
    assert_eq!(eth0.kernel_driver.as_deref(), Some("virtio_net"));
}

#[test]
fn cel_filter_selects_instead_of_the_default_and_sees_the_default_verdict() {
    let (tree, snapshot) = node();
    let numa1 = select(
        &snapshot,
        &config(&tree, Some(r#"device.attributes["netdra.example.com"].numaNode == 1"#)),
    );
    let names: Vec<&str> = numa1.published.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["pci-0000-af-00-0"],
        "devices without numaNode fail the expression and stay out"
    );

    let vfs = select(
        &snapshot,
        &config(
            &tree,
            Some(r#"device.selectedByDefault && "sriovVf" in device.attributes["netdra.example.com"]"#),
        ),
    );
    let names: Vec<&str> = vfs.published.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["pci-0000-3b-01-0", "pci-0000-3b-01-1"]);
}

/// The ResourceSlice the node would publish, compared with `tests/snapshots/node.yaml`
/// (`NETDRA_UPDATE_SNAPSHOTS=1` rewrites it).
#[test]
fn rendered_resource_slice_matches_the_snapshot() {
    let (tree, snapshot) = node();
    let scan = select(&snapshot, &config(&tree, None));
    let pool = PoolSpec::new(DRIVER, "node-a");
    let slices: Vec<ResourceSlice> = plan_slices(&pool, &scan.published, &[])
        .into_iter()
        .filter_map(|op| match op {
            SliceOp::Create(s) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(slices.len(), 1);
    let yaml = serde_yaml_ng::to_string(&slices[0]).expect("yaml");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/node.yaml");
    if std::env::var_os("NETDRA_UPDATE_SNAPSHOTS").is_some() {
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, &yaml).expect("write snapshot");
    }
    let expected = fs::read_to_string(&path).expect("snapshot exists (NETDRA_UPDATE_SNAPSHOTS=1 creates it)");
    assert_eq!(yaml, expected, "rendered slice differs from {}", path.display());
}

#[test]
fn a_value_over_the_limit_is_cut_and_reported() {
    let (tree, mut snapshot) = node();
    let long = "uplink to the storage fabric, rack 12, top-of-rack switch B, port 48, do not unplug";
    snapshot.links[5].alias = Some(long.into());
    let scan = select(&snapshot, &config(&tree, None));
    let nic = scan.published("pci-0000-af-00-0").expect("RDMA NIC published");
    assert_eq!(
        s(nic, "alias"),
        &long[..64] /* the API's longest string attribute */
    );
    assert_eq!(
        scan.limited,
        [(
            "pci-0000-af-00-0".to_owned(),
            netdev_k8s::LimitAction::Cut {
                name: "alias".into(),
                length: long.len()
            }
        )]
    );
}
