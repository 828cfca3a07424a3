//! The smallest complete DRA driver on the kubeletplugin SDK.
//!
//! It allocates nothing itself: for each claim the kubelet names, it reports the devices the
//! scheduler allocated to this driver, as the API says. Without a reachable API server it still
//! registers and answers every claim with a per-claim error.
//!
//! ```text
//! cargo run --example minimal_driver -- --driver-name NAME --registry-dir DIR --plugins-dir DIR [--kubeconfig FILE]
//! ```
//!
//! Every flag also reads from the environment (`DRIVER_NAME`, `REGISTRY_DIR`, `PLUGINS_DIR`,
//! `KUBECONFIG`, `CLAIM_CACHE`).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kubeletplugin::{ClaimCacheMode, DraDriver, DriverError, PluginOptions, Preparation, PreparedClaim, ResolvedClaim};

#[derive(Parser, Debug)]
#[command(about = "A minimal DRA kubelet plugin: answers each claim with its allocated devices")]
struct Args {
    /// DRA driver name (a DNS subdomain).
    #[arg(long, env = "DRIVER_NAME")]
    driver_name: String,
    /// Directory the kubelet watches for registration sockets.
    #[arg(long, env = "REGISTRY_DIR", default_value = kubeletplugin::DEFAULT_REGISTRY_DIR)]
    registry_dir: PathBuf,
    /// Parent of the per-driver plugin directory (holds dra.sock and the checkpoint).
    #[arg(long, env = "PLUGINS_DIR", default_value = kubeletplugin::DEFAULT_PLUGINS_DIR)]
    plugins_dir: PathBuf,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Claim lookup: a cluster-wide watch cache, or one GET per claim.
    #[arg(long, env = "CLAIM_CACHE", value_enum, default_value_t = CacheFlag::Watch)]
    claim_cache: CacheFlag,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CacheFlag {
    Watch,
    GetOnly,
}

/// Reports what the scheduler allocated; keeps no state of its own.
struct MinimalDriver;

impl DraDriver for MinimalDriver {
    async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
        Ok(Preparation::of_allocation(claim))
    }

    async fn unprepare(&self, _claim: &PreparedClaim) -> Result<(), DriverError> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let client = kubeletplugin::api_client(args.kubeconfig.as_deref()).await?;
    let mut options = PluginOptions::new(&args.driver_name);
    options.registry_dir = args.registry_dir;
    options.plugin_dir = args.plugins_dir.join(&args.driver_name);
    options.claim_cache = match args.claim_cache {
        CacheFlag::Watch => ClaimCacheMode::Watch,
        CacheFlag::GetOnly => ClaimCacheMode::GetOnly,
    };
    let plugin = kubeletplugin::start(options, MinimalDriver, client)
        .await
        .context("starting the kubelet plugin")?;
    let signal = kubeletplugin::shutdown_signal()
        .await
        .context("installing signal handlers")?;
    tracing::info!(signal, "shutting down");
    plugin.shutdown().await;
    Ok(())
}
