//! `netdra`: the node agent of a Kubernetes DRA network driver, with the reference host-device
//! driver of `template.rs`.
//!
//! ```text
//! netdra [run]      the node agent (the default)
//! netdra inventory  print the ResourceSlices this node would publish, as YAML (no cluster)
//! netdra demo       a pod's whole network lifecycle on this host, no cluster (root; the
//!                   `demo` feature, left out of the image)
//! ```
//!
//! Every flag also reads from an environment variable (`netdra --help` lists them). A bad value
//! stops start-up with a message naming the flag.

#[cfg(feature = "demo")]
mod demo;
mod health;
mod template;

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use kubeletplugin::{ClaimCacheMode, PluginOptions, PoolSpec};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, Inventory, InventoryConfig};
use nri::StubOptions;

#[derive(Parser, Debug)]
#[command(
    name = "netdra",
    version,
    about = "netdra: a Kubernetes DRA network driver's node agent (host-device reference driver)"
)]
struct Cli {
    #[command(flatten)]
    flags: Flags,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug, Clone)]
enum Command {
    /// Run the node agent (the default).
    Run,
    /// Print the ResourceSlices this node would publish, as YAML; needs no cluster.
    Inventory,
    #[cfg(feature = "demo")]
    /// Walk a pod's network lifecycle on this host with no cluster (needs root): veth NICs,
    /// the agent against an in-process API server, the scheduler's and the kubelet's parts
    /// played here, pods on containerd (--cri-socket) or else on the NRI runtime harness.
    Demo {
        /// containerd's CRI socket (with --nri-socket pointing at its NRI socket); the NRI
        /// runtime harness stands in for the runtime when absent.
        #[arg(long, env = "CRI_SOCKET")]
        cri_socket: Option<PathBuf>,
        /// Milliseconds to pause before each step, for following it live.
        #[arg(long, env = "DEMO_STEP_DELAY_MS", default_value_t = 0)]
        step_delay_ms: u64,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CacheFlag {
    /// Watch this node's pods and fetch the claims they reference as they are bound: no API
    /// request at Prepare; memory follows the node's pods.
    Node,
    /// A cluster-wide watch of ResourceClaims: memory grows with the cluster's claims.
    Watch,
    /// One GET per claim at Prepare: no watch at all.
    GetOnly,
}

#[derive(clap::Args, Debug)]
struct Flags {
    /// DRA driver name (a DNS subdomain) that DeviceClasses select.
    #[arg(long, env = "DRIVER_NAME", default_value = template::DEFAULT_DRIVER_NAME, global = true)]
    driver_name: String,
    /// This node's name (from the downward API in a DaemonSet); the host name when absent.
    #[arg(long, env = "NODE_NAME", global = true)]
    node_name: Option<String>,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG", global = true)]
    kubeconfig: Option<PathBuf>,
    /// Directory the kubelet watches for registration sockets.
    #[arg(long, env = "KUBELET_REGISTRY_DIR", default_value = kubeletplugin::DEFAULT_REGISTRY_DIR, global = true)]
    kubelet_registry_dir: PathBuf,
    /// Parent of the kubelet's per-driver plugin directories (the DRA socket lives there).
    #[arg(long, env = "KUBELET_PLUGINS_DIR", default_value = kubeletplugin::DEFAULT_PLUGINS_DIR, global = true)]
    kubelet_plugins_dir: PathBuf,
    /// The container runtime's NRI socket.
    #[arg(long, env = "NRI_SOCKET", default_value = nri::DEFAULT_SOCKET, global = true)]
    nri_socket: PathBuf,
    /// NRI plugin index: two digits; plugins are called in ascending order.
    #[arg(long, env = "NRI_PLUGIN_INDEX", default_value = "10", global = true)]
    nri_plugin_index: String,
    /// Where the checkpoint and the state file live; the driver's plugin directory when absent.
    #[arg(long, env = "STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    /// How claims are looked up.
    #[arg(long, env = "CLAIM_CACHE", value_enum, default_value_t = CacheFlag::Node, global = true)]
    claim_cache: CacheFlag,
    /// CEL expression selecting the devices to publish, over a DeviceClass-like `device`;
    /// the default rule (device-backed interfaces, not the uplink or pod networking) when absent.
    #[arg(long, env = "DEVICE_FILTER", global = true)]
    device_filter: Option<String>,
    /// Address of the /metrics, /healthz and /readyz endpoints. The agent runs on the host's
    /// network: loopback keeps them off the node's other addresses unless asked.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "127.0.0.1:9177", global = true)]
    metrics_address: SocketAddr,
    /// Report each published device's health (its link's carrier and state, on the host or in
    /// its pod) to the kubelet, which shows it in the pods' `allocatedResourcesStatus`.
    #[arg(long, env = "DEVICE_HEALTH", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    device_health: bool,
    /// How often device health is read, in milliseconds (a change reaches the kubelet within
    /// about this plus its stream's latency); at most 20 s, inside the kubelet's 30 s window.
    #[arg(long, env = "DEVICE_HEALTH_INTERVAL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(50..=20_000), global = true)]
    device_health_interval_ms: u64,
    /// Give each workload container a file describing its network devices (KEP-5304: the
    /// interface's name, addresses and MAC in the pod, the device's attributes), injected by
    /// the runtime through CDI. Needs CDI in the runtime (on by default in containerd 2.x).
    #[arg(long, env = "DEVICE_METADATA", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    device_metadata: bool,
    /// The container runtime's CDI spec directory, where the metadata's CDI specs are written.
    #[arg(long, env = "CDI_DIR", default_value = kubeletplugin::MetadataWriter::DEFAULT_CDI_DIR, global = true)]
    cdi_dir: PathBuf,
    /// What a pod gets: `host-device` moves a whole host interface into one pod;
    /// `shared-nic` publishes each interface once with `--shared-slots` slots and gives each
    /// claim a macvlan subinterface of it.
    #[arg(long, env = "DRIVER_MODE", value_enum, default_value_t = ModeFlag::HostDevice, global = true)]
    mode: ModeFlag,
    /// In `shared-nic` mode, how many claims one interface serves at a time.
    #[arg(long, env = "SHARED_SLOTS", default_value = "8", value_parser = shared_slots, global = true)]
    shared_slots: std::num::NonZeroU32,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Log level, or a tracing filter such as `info,netdra=debug`.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", global = true)]
    log_level: String,
}

/// `--shared-slots`: 1 to 4096.
fn shared_slots(text: &str) -> Result<std::num::NonZeroU32, String> {
    let n: u32 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    std::num::NonZeroU32::new(n)
        .filter(|n| n.get() <= 4096)
        .ok_or_else(|| format!("{n} is not in 1..=4096"))
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ModeFlag {
    HostDevice,
    SharedNic,
}

/// The reference driver in the mode the flags ask for.
fn driver(flags: &Flags) -> template::Driver {
    template::Driver {
        mode: match flags.mode {
            ModeFlag::HostDevice => template::Mode::HostDevice,
            ModeFlag::SharedNic => template::Mode::SharedNic(netdra::SharedNic::new(flags.shared_slots)),
        },
    }
}

fn init_logging(flags: &Flags) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&flags.log_level)
        .with_context(|| format!("--log-level {:?}", flags.log_level))?;
    // Colours only for a terminal: `kubectl logs` and log collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match flags.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn node_name(flags: &Flags) -> anyhow::Result<String> {
    if let Some(name) = &flags.node_name {
        return Ok(name.clone());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("--node-name (NODE_NAME) is not set and the host name cannot be read")?
        .trim()
        .to_owned();
    if name.is_empty() {
        bail!("--node-name (NODE_NAME) is not set and the host name is empty");
    }
    Ok(name)
}

fn inventory_config(flags: &Flags) -> anyhow::Result<InventoryConfig> {
    kubeletplugin::validate_driver_name(&flags.driver_name).context("--driver-name")?;
    Ok(InventoryConfig::new(
        flags.driver_name.clone(),
        Sysfs::default(),
        DeviceFilter::parse(flags.device_filter.as_deref()).context("--device-filter")?,
    ))
}

async fn inventory(flags: &Flags) -> anyhow::Result<()> {
    use netdra::NetworkDriver;
    let node = node_name(flags)?;
    let scan = Inventory::new(inventory_config(flags)?)
        .scan()
        .await
        .context("scanning the node's interfaces")?;
    for (interface, why) in &scan.left_out {
        eprintln!("left out {interface}: {why}");
    }
    let driver = driver(flags);
    let devices: Vec<_> = scan.published.into_iter().filter_map(|d| driver.publish(d)).collect();
    let pool = PoolSpec::new(flags.driver_name.clone(), node);
    for op in kubeletplugin::plan_slices(&pool, &devices, &[]) {
        if let kubeletplugin::SliceOp::Create(slice) = op {
            print!("---\n{}", serde_yaml_ng::to_string(&slice)?);
        }
    }
    Ok(())
}

async fn run(flags: &Flags) -> anyhow::Result<()> {
    let node = node_name(flags)?;
    let inventory = inventory_config(flags)?;
    let mut nri = StubOptions::new("netdra", &flags.nri_plugin_index);
    nri.socket = flags.nri_socket.clone();
    nri.validate().context("--nri-plugin-index")?;
    let mut plugin = PluginOptions::new(&flags.driver_name);
    plugin.registry_dir = flags.kubelet_registry_dir.clone();
    plugin.plugin_dir = flags.kubelet_plugins_dir.join(&flags.driver_name);
    plugin.claim_cache = match flags.claim_cache {
        CacheFlag::Node => ClaimCacheMode::Node {
            node_name: node.clone(),
        },
        CacheFlag::Watch => ClaimCacheMode::Watch,
        CacheFlag::GetOnly => ClaimCacheMode::GetOnly,
    };
    plugin.device_metadata = flags.device_metadata.then(|| flags.cdi_dir.clone());
    let client = kubeletplugin::api_client(flags.kubeconfig.as_deref()).await?;
    let mut options = netdra::AgentOptions::new(plugin, nri, &node, inventory);
    if let Some(dir) = &flags.state_dir {
        options.state_file = dir.join("netdra-state");
    }
    options.device_health = flags
        .device_health
        .then(|| std::time::Duration::from_millis(flags.device_health_interval_ms));
    let mut registry = prometheus_client::registry::Registry::default();
    options.metrics = netdra::Metrics::register(&mut registry);

    let agent = netdra::start(options, driver(flags), client)
        .await
        .context("starting the agent")?;
    // The probe reads readiness on its own: a scraper's keep-alive connection never keeps the
    // agent from its ordered shutdown.
    let probe = {
        let readiness = agent.readiness_probe();
        Arc::new(move || readiness.readiness()) as health::ReadinessProbe
    };
    let server = health::serve(flags.metrics_address, registry, probe)
        .await
        .with_context(|| format!("--metrics-address {}", flags.metrics_address))?;
    tracing::info!(address = %server.addr, "serving /metrics, /healthz and /readyz");

    let signal = kubeletplugin::shutdown_signal()
        .await
        .context("installing signal handlers")?;
    tracing::info!(signal, "shutting down");
    drop(server);
    agent.shutdown().await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match init_logging(&cli.flags) {
        Ok(()) => match cli.command.clone().unwrap_or(Command::Run) {
            Command::Run => run(&cli.flags).await,
            Command::Inventory => inventory(&cli.flags).await,
            #[cfg(feature = "demo")]
            Command::Demo {
                cri_socket,
                step_delay_ms,
            } => {
                demo::run(demo::DemoOptions {
                    driver: cli.flags.driver_name.clone(),
                    cri_socket,
                    step_delay: std::time::Duration::from_millis(step_delay_ms),
                    nri_socket: cli.flags.nri_socket.clone(),
                    nri_plugin_index: cli.flags.nri_plugin_index.clone(),
                })
                .await
            }
        },
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the flag first: what an operator reads in `kubectl logs`.
            eprintln!("netdra: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
