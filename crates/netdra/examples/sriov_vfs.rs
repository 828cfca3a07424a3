//! A second driver on the same trait, to show it is not tied to the reference driver: it
//! publishes only SR-IOV virtual functions, adds an attribute of its own, and gives every pod
//! a fixed configuration (jumbo MTU, no addresses: those come from the pod's own IPAM).
//!
//! ```text
//! cargo run -p netdra --example sriov_vfs -- --node-name NODE [--kubeconfig FILE] [--mtu 9000]
//! ```

use std::path::PathBuf;

use clap::Parser;
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute};
use kubeletplugin::{DriverError, PluginOptions};
use netdev::{InterfaceConfig, Sysfs};
use netdev_k8s::{DeviceFilter, InventoryConfig};
use netdra::{InterfacePlan, InterfaceRequest, NetworkDriver};

/// Only VFs, at a fixed MTU, named by the claim (`vf0` when it does not say).
struct SriovVfs {
    mtu: u32,
}

impl NetworkDriver for SriovVfs {
    fn publish(&self, mut device: Device) -> Option<Device> {
        let attributes = device.attributes.get_or_insert_with(Default::default);
        if attributes.get("kind").and_then(|a| a.string.as_deref()) != Some("sriov-vf") {
            return None;
        }
        // Lets a DeviceClass select VFs able to carry jumbo frames.
        attributes.insert(
            "maxPodMtu".into(),
            DeviceAttribute {
                int: Some(i64::from(self.mtu)),
                ..Default::default()
            },
        );
        Some(device)
    }

    fn plan_interface(&self, request: &InterfaceRequest<'_>) -> Result<InterfacePlan, DriverError> {
        let claimed = request.config.cloned().unwrap_or_default();
        if !claimed.addresses.is_empty() || !claimed.routes.is_empty() {
            return Err("addresses, routes: this driver assigns none (the pod's IPAM does); remove them".into());
        }
        let config = InterfaceConfig {
            name: Some(claimed.name.unwrap_or_else(|| "vf0".into())),
            mtu: Some(self.mtu),
            ..Default::default()
        };
        Ok(InterfacePlan::new(config.validate()?))
    }
}

#[derive(Parser, Debug)]
#[command(about = "netdra example driver: SR-IOV VFs only, jumbo MTU, no addresses")]
struct Args {
    /// DRA driver name.
    #[arg(long, env = "DRIVER_NAME", default_value = "vfs.netdra.dev")]
    driver_name: String,
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The MTU every VF gets in its pod.
    #[arg(long, env = "VF_MTU", default_value_t = 9000)]
    mtu: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let args = Args::parse();
    let client = kubeletplugin::api_client(args.kubeconfig.as_deref()).await?;
    let inventory = InventoryConfig::new(args.driver_name.clone(), Sysfs::default(), DeviceFilter::Default);
    let mut plugin = PluginOptions::new(&args.driver_name);
    plugin.claim_cache = kubeletplugin::ClaimCacheMode::Node {
        node_name: args.node_name.clone(),
    };
    let options = netdra::AgentOptions::new(
        plugin,
        nri::StubOptions::new("netdra-vfs", "11"),
        &args.node_name,
        inventory,
    );
    let agent = netdra::start(options, SriovVfs { mtu: args.mtu }, client).await?;
    kubeletplugin::shutdown_signal().await?;
    agent.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kubeletplugin::ClaimRef;

    fn device(kind: &str) -> Device {
        serde_json::from_value(serde_json::json!({
            "name": "d", "attributes": {"kind": {"string": kind}, "ifName": {"string": "eth3"}}
        }))
        .unwrap()
    }

    #[test]
    fn only_vfs_are_published_with_the_extra_attribute() {
        let driver = SriovVfs { mtu: 9000 };
        assert!(driver.publish(device("physical")).is_none());
        let vf = driver.publish(device("sriov-vf")).unwrap();
        assert_eq!(vf.attributes.unwrap()["maxPodMtu"].int, Some(9000));
    }

    #[test]
    fn the_configuration_is_fixed_and_addresses_are_refused() {
        let driver = SriovVfs { mtu: 9000 };
        let claim = ClaimRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u".into(),
        };
        let vf = device("sriov-vf");
        let request = |config| InterfaceRequest::new(&claim, "vf", &vf, "eth3", config);
        let plan = driver.plan_interface(&request(None)).unwrap();
        assert_eq!(
            (plan.config.name.as_deref(), plan.config.mtu),
            (Some("vf0"), Some(9000))
        );
        assert!(!plan.carry_host_addresses);
        let with_address = InterfaceConfig {
            addresses: vec!["10.0.0.2/24".into()],
            ..Default::default()
        };
        let e = driver.plan_interface(&request(Some(&with_address))).unwrap_err();
        assert!(e.to_string().starts_with("addresses, routes:"), "{e}");
    }
}
