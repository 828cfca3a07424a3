//! Prints this node's network devices as the `resource.k8s.io/v1` ResourceSlices netdra would
//! publish. No cluster needed.
//!
//! ```text
//! cargo run --example inventory -- [--driver-name NAME] [--node-name NAME] [--filter CEL] [--sysfs-root DIR]
//! ```
//!
//! What the default filter (or the CEL filter) leaves out is listed on stderr with the reason.

use anyhow::Context as _;
use clap::Parser;
use kubeletplugin::{PoolSpec, SliceOp, plan_slices};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, Inventory, InventoryConfig};

/// Print this node's network devices as ResourceSlice YAML.
#[derive(Debug, Parser)]
struct Args {
    /// The DRA driver name (also the domain of the driver's attributes).
    #[arg(long, env = "DRIVER_NAME", default_value = "netdra.dev")]
    driver_name: String,
    /// The node name; defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// A CEL expression selecting the devices to publish instead of the default rule.
    #[arg(long, env = "DEVICE_FILTER")]
    filter: Option<String>,
    /// The sysfs root to read (a fixture tree in tests).
    #[arg(long, env = "SYSFS_ROOT", default_value = "/sys")]
    sysfs_root: std::path::PathBuf,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = DeviceFilter::parse(args.filter.as_deref())?;
    let node_name = args.node_name.unwrap_or_else(host_name);
    let inventory = Inventory::new(InventoryConfig::new(
        args.driver_name.clone(),
        Sysfs::new(&args.sysfs_root),
        filter,
    ));
    let scan = inventory.scan().await.context("scanning the node's interfaces")?;
    for (interface, why) in &scan.left_out {
        eprintln!("left out {interface}: {why}");
    }
    for (device, action) in &scan.limited {
        eprintln!("{device}: {action}");
    }
    let pool = PoolSpec::new(args.driver_name, node_name);
    for op in plan_slices(&pool, &scan.published, &[]) {
        if let SliceOp::Create(slice) = op {
            print!("---\n{}", serde_yaml_ng::to_string(&slice)?);
        }
    }
    Ok(())
}
