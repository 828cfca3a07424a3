//! Moves a host interface into a network namespace and configures it, or brings it back.
//!
//! ```text
//! netns_attach attach --netns PATH --device IFNAME [--name N] [--mtu N] [--mac MAC]
//!                     [--address CIDR]... [--route DST[,via=GW][,src=IP][,metric=N][,scope=S]]... [--down]
//! netns_attach detach --state FILE
//! ```
//!
//! `attach` prints the restore record as JSON on stdout; save it, and `detach --state FILE`
//! restores the interface from it. A configuration error exits non-zero with the field's
//! message on stderr before anything is changed. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use netdev::{DetachOutcome, InterfaceConfig, Netns, RestoreRecord, RouteConfig};

/// Move an interface into a network namespace, configured, and back.
#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Move DEVICE into the namespace at NETNS and configure it; print the restore record.
    Attach {
        /// The target network namespace (`/var/run/netns/NAME`, `/proc/PID/ns/net`).
        #[arg(long)]
        netns: PathBuf,
        /// The interface on the host.
        #[arg(long)]
        device: String,
        /// Its name inside the namespace.
        #[arg(long)]
        name: Option<String>,
        /// Its MTU.
        #[arg(long)]
        mtu: Option<u32>,
        /// Its MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// An address in CIDR form (repeatable).
        #[arg(long = "address")]
        addresses: Vec<String>,
        /// A route: `DST[,via=GW][,src=IP][,metric=N][,scope=global|link|host]`, DST a CIDR or
        /// `default` (repeatable).
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Leave the link down.
        #[arg(long)]
        down: bool,
    },
    /// Bring an interface back to the host from a restore record.
    Detach {
        /// The restore record printed by `attach`.
        #[arg(long)]
        state: PathBuf,
    },
}

/// `DST[,key=value]...` into a route.
fn parse_route(text: &str) -> anyhow::Result<RouteConfig> {
    let mut parts = text.split(',');
    let mut route = RouteConfig {
        destination: parts.next().unwrap_or_default().to_owned(),
        ..RouteConfig::default()
    };
    for part in parts {
        let Some((key, value)) = part.split_once('=') else {
            bail!("--route {text}: {part:?} is not KEY=VALUE");
        };
        match key {
            "via" => route.gateway = Some(value.to_owned()),
            "src" => route.source = Some(value.to_owned()),
            "scope" => route.scope = Some(value.to_owned()),
            "metric" => {
                route.metric = Some(
                    value
                        .parse()
                        .with_context(|| format!("--route {text}: metric {value:?} is not a number"))?,
                );
            }
            other => bail!("--route {text}: unknown key {other:?} (via, src, metric, scope)"),
        }
    }
    Ok(route)
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Attach {
            netns,
            device,
            name,
            mtu,
            mac,
            addresses,
            routes,
            down,
        } => {
            let config = InterfaceConfig {
                name,
                mtu,
                hardware_address: mac,
                addresses,
                routes: routes.iter().map(|r| parse_route(r)).collect::<anyhow::Result<_>>()?,
                up: Some(!down),
                ..InterfaceConfig::default()
            };
            let config = config.validate().context("invalid configuration")?;
            let netns = Netns::open(&netns)?;
            let record = netdev::attach(&netns, &device, &config)?;
            println!("{}", serde_json::to_string_pretty(&record)?);
        }
        Command::Detach { state } => {
            let text = std::fs::read_to_string(&state).with_context(|| format!("reading {}", state.display()))?;
            let record: RestoreRecord =
                serde_json::from_str(&text).with_context(|| format!("{} is not a restore record", state.display()))?;
            let detached = netdev::detach(&record)?;
            match detached.outcome {
                DetachOutcome::Returned => eprintln!("{} is back on the host", record.host.name),
                DetachOutcome::FoundOnHost { name } => {
                    eprintln!("{} was already on the host as {name}; restored", record.host.name);
                }
                DetachOutcome::Vanished => eprintln!("{} no longer exists; nothing to restore", record.host.name),
                DetachOutcome::Deleted => {
                    eprintln!("{}'s subinterface {} is deleted", record.host.name, record.name_in_pod)
                }
            }
            for problem in &detached.incomplete {
                eprintln!("not restored: {problem}");
            }
            if !detached.incomplete.is_empty() {
                bail!("{} restore steps failed", detached.incomplete.len());
            }
        }
    }
    Ok(())
}
