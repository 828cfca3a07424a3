//! The netdra node agent with the reference host-device driver, for the end-to-end tests
//! (the `netdra` binary, with every flag and subcommand, is a later step).
//!
//! ```text
//! cargo run -p netdra --example agent -- --driver-name NAME --node-name NODE --kubeconfig FILE \
//!     --kubelet-registry-dir DIR --kubelet-plugins-dir DIR --nri-socket PATH [--device-filter CEL]
//! ```
//!
//! Every flag also reads from the environment.
//!
//! For the crash tests, `NETDRA_E2E_STALL=<attach|detach>-<before|after>[:<ms>]` makes the
//! first attach (or detach) stop before or after its kernel work, for `ms` milliseconds or for
//! good, after logging `stalled at <step>`: the test then kills the agent at that journal step,
//! or stops the pod while the attach is under way.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kubeletplugin::PluginOptions;
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, InventoryConfig};
use nri::StubOptions;

#[derive(Parser, Debug)]
#[command(about = "netdra node agent (reference host-device driver)")]
struct Args {
    /// DRA driver name (a DNS subdomain).
    #[arg(long, env = "DRIVER_NAME")]
    driver_name: String,
    /// This node's name.
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Directory the kubelet watches for registration sockets.
    #[arg(long, env = "KUBELET_REGISTRY_DIR", default_value = kubeletplugin::DEFAULT_REGISTRY_DIR)]
    kubelet_registry_dir: PathBuf,
    /// Parent of the per-driver plugin directory (sockets, checkpoint, state).
    #[arg(long, env = "KUBELET_PLUGINS_DIR", default_value = kubeletplugin::DEFAULT_PLUGINS_DIR)]
    kubelet_plugins_dir: PathBuf,
    /// The runtime's NRI socket.
    #[arg(long, env = "NRI_SOCKET", default_value = nri::DEFAULT_SOCKET)]
    nri_socket: PathBuf,
    /// NRI plugin index (two digits).
    #[arg(long, env = "NRI_PLUGIN_INDEX", default_value = "10")]
    nri_plugin_index: String,
    /// CEL device filter; the default rule without it.
    #[arg(long, env = "DEVICE_FILTER")]
    device_filter: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let client = kubeletplugin::api_client(args.kubeconfig.as_deref()).await?;
    let mut plugin = PluginOptions::new(&args.driver_name);
    // The e2e tests' fake API server holds claims, not pods: the claims are watched.
    plugin.claim_cache = kubeletplugin::ClaimCacheMode::Watch;
    plugin.registry_dir = args.kubelet_registry_dir;
    plugin.plugin_dir = args.kubelet_plugins_dir.join(&args.driver_name);
    let mut nri = StubOptions::new("netdra", &args.nri_plugin_index);
    nri.socket = args.nri_socket;
    let filter = DeviceFilter::parse(args.device_filter.as_deref()).context("--device-filter")?;
    let inventory = InventoryConfig::new(args.driver_name.clone(), Sysfs::default(), filter);
    let options = netdra::AgentOptions::new(plugin, nri, &args.node_name, inventory);
    let stall = std::env::var("NETDRA_E2E_STALL")
        .ok()
        .map(|s| Stall::parse(&s))
        .transpose()?;
    let kernel = Stalling {
        stall: std::sync::Mutex::new(stall),
    };
    let agent = netdra::start_with_kernel(options, netdra::HostDevice, kernel, client)
        .await
        .context("starting the netdra agent")?;
    let signal = kubeletplugin::shutdown_signal()
        .await
        .context("installing signal handlers")?;
    tracing::info!(signal, "shutting down");
    agent.shutdown().await;
    Ok(())
}

/// Where the test wants the agent to stop.
#[derive(Debug, Clone, PartialEq)]
struct Stall {
    operation: String,
    before: bool,
    /// `None`: for good (the test kills the agent).
    pause: Option<std::time::Duration>,
}

impl Stall {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (step, pause) = match text.split_once(':') {
            Some((step, ms)) => (
                step,
                Some(std::time::Duration::from_millis(
                    ms.parse().context("NETDRA_E2E_STALL: ms")?,
                )),
            ),
            None => (text, None),
        };
        let (operation, when) = step
            .split_once('-')
            .context("NETDRA_E2E_STALL is <attach|detach>-<before|after>[:<ms>]")?;
        anyhow::ensure!(
            matches!(operation, "attach" | "detach") && matches!(when, "before" | "after"),
            "NETDRA_E2E_STALL is <attach|detach>-<before|after>[:<ms>], not {text:?}"
        );
        Ok(Self {
            operation: operation.into(),
            before: when == "before",
            pause,
        })
    }
}

/// The real kernel, stopping once where [`Stall`] says.
struct Stalling {
    stall: std::sync::Mutex<Option<Stall>>,
}

impl Stalling {
    /// Stops if this is the step; only once.
    async fn at(&self, operation: &str, before: bool) {
        let stall = {
            let mut stall = self.stall.lock().unwrap_or_else(|e| e.into_inner());
            match &*stall {
                Some(s) if s.operation == operation && s.before == before => stall.take(),
                _ => None,
            }
        };
        let Some(stall) = stall else { return };
        let step = format!("{operation}-{}", if before { "before" } else { "after" });
        tracing::warn!(step, "stalled at {step}");
        match stall.pause {
            Some(pause) => tokio::time::sleep(pause).await,
            None => std::future::pending::<()>().await,
        }
    }
}

impl netdra::Kernel for Stalling {
    type Netns = <netdra::Netdev as netdra::Kernel>::Netns;

    async fn open(
        &self,
        path: &std::path::Path,
    ) -> Result<(std::sync::Arc<Self::Netns>, netdra::NetnsRef), netdra::KernelError> {
        netdra::Netdev.open(path).await
    }

    fn identify(&self, path: &std::path::Path) -> Result<netdra::NetnsRef, netdra::KernelError> {
        netdra::Netdev.identify(path)
    }

    async fn record(
        &self,
        netns: netdra::NetnsRef,
        specs: std::sync::Arc<Vec<netdra::AttachSpec>>,
    ) -> Result<Vec<netdev::RestoreRecord>, netdra::KernelError> {
        netdra::Netdev.record(netns, specs).await
    }

    async fn attach(
        &self,
        netns: std::sync::Arc<Self::Netns>,
        specs: std::sync::Arc<Vec<netdra::AttachSpec>>,
        records: Vec<netdev::RestoreRecord>,
    ) -> Result<(), netdra::KernelError> {
        self.at("attach", true).await;
        let result = netdra::Netdev.attach(netns, specs, records).await;
        self.at("attach", false).await;
        result
    }

    async fn detach(&self, record: netdev::RestoreRecord) -> Result<netdev::Detached, netdra::KernelError> {
        self.at("detach", true).await;
        let result = netdra::Netdev.detach(record).await;
        self.at("detach", false).await;
        result
    }

    async fn locate(&self, record: netdev::RestoreRecord) -> Result<netdra::Location, netdra::KernelError> {
        netdra::Netdev.locate(record).await
    }

    async fn host_links(&self) -> Result<Vec<netdev::LinkState>, netdra::KernelError> {
        netdra::Netdev.host_links().await
    }

    async fn pod_link(&self, record: netdev::RestoreRecord) -> Result<Option<netdev::LinkState>, netdra::KernelError> {
        netdra::Netdev.pod_link(record).await
    }
}
