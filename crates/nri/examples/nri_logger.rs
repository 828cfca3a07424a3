//! The NRI SDK's quick-start: a plugin that logs one line per event it receives.
//!
//! ```text
//! cargo run --example nri_logger -- --socket PATH --name NAME --index NN [--fail-pods PREFIX]
//! ```
//!
//! Each line names the event, the pod's namespace/name/UID and its network-namespace path.
//! With `--fail-pods PREFIX`, RunPodSandbox fails for pods whose name starts with PREFIX (the
//! runtime then fails the pod with this plugin's message). Flags also read from the
//! environment (`NRI_SOCKET`, `NRI_PLUGIN_NAME`, `NRI_PLUGIN_IDX`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use nri::{
    ConnectionState, EventSet, HandlerError, Plugin, RuntimeInfo, StubOptions,
    proto::api::{Container, ContainerUpdate, Event, PodSandbox},
};

#[derive(Parser, Debug)]
#[command(about = "An NRI plugin that logs one line per event")]
struct Args {
    /// The runtime's NRI socket.
    #[arg(long, env = "NRI_SOCKET", default_value = nri::DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Plugin name.
    #[arg(long, env = "NRI_PLUGIN_NAME", default_value = "nri-logger")]
    name: String,
    /// Two-digit plugin index.
    #[arg(long, env = "NRI_PLUGIN_IDX", default_value = "10")]
    index: String,
    /// Fail RunPodSandbox for pods whose name starts with this prefix.
    #[arg(long)]
    fail_pods: Option<String>,
}

struct Logger {
    fail_pods: Option<String>,
}

fn line(event: Event, pod: &PodSandbox) {
    println!(
        "event={} pod={}/{} uid={} netns={}",
        event.as_str_name(),
        pod.namespace,
        pod.name,
        pod.uid,
        nri::pod_netns_path(pod).unwrap_or("-")
    );
}

impl Plugin for Logger {
    fn events(&self) -> EventSet {
        EventSet::pod_lifecycle()
    }

    async fn configure(&self, runtime: &RuntimeInfo) -> Result<(), HandlerError> {
        println!("configure runtime={} version={}", runtime.name, runtime.version);
        Ok(())
    }

    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        containers: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        println!("synchronize pods={} containers={}", pods.len(), containers.len());
        for pod in &pods {
            println!(
                "synchronize-pod pod={}/{} uid={} netns={}",
                pod.namespace,
                pod.name,
                pod.uid,
                nri::pod_netns_path(pod).unwrap_or("-")
            );
        }
        Ok(vec![])
    }

    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        line(Event::RunPodSandbox, pod);
        if let Some(prefix) = &self.fail_pods
            && pod.name.starts_with(prefix.as_str())
        {
            return Err(format!("nri-logger refuses pod {}/{}", pod.namespace, pod.name).into());
        }
        Ok(())
    }

    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        line(Event::StopPodSandbox, pod);
        Ok(())
    }

    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        line(Event::RemovePodSandbox, pod);
        Ok(())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let mut options = StubOptions::new(&args.name, &args.index);
    options.socket = args.socket;
    let plugin = nri::connect(
        options,
        Logger {
            fail_pods: args.fail_pods,
        },
    )
    .context("starting the NRI plugin")?;
    let mut state = plugin.watch_state();
    let mut signal = std::pin::pin!(tokio::signal::ctrl_c());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() { break; }
                match &*state.borrow() {
                    ConnectionState::Connected { session, runtime } => println!("connected session={session} runtime={}", runtime.name),
                    ConnectionState::Disconnected { reason } => println!("disconnected reason={reason:?}"),
                    _ => {}
                }
            }
            _ = &mut signal => break,
            _ = term.recv() => break,
        }
    }
    plugin.stop().await;
    Ok(())
}
