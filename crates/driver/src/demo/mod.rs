//! `netdra demo`: a pod's whole network lifecycle on this host's real kernel namespaces, with
//! no cluster.
//!
//! The agent is the real one (the reference driver of `template.rs`, started as `netdra run`
//! starts it). The demo plays the rest of a cluster around it:
//! - the API server: testkit's in-process fake, which keeps resourceVersions, watches, the
//!   status subresource and server-side apply;
//! - the scheduler: a function that allocates the first NIC the driver published;
//! - the kubelet: registration, `NodePrepareResources` and `NodeUnprepareResources` over the
//!   plugin's real sockets ([`kubelet`]);
//! - the container runtime: a real containerd through CRI when `--cri-socket` names one
//!   (`scripts/demo.sh` starts the project's private containerd), or else the NRI runtime
//!   harness with a namespace made here ([`pods`]);
//! - the NICs: veth pairs ([`host`]).
//!
//! Everything it makes is recorded before it is made, so a failing step or Ctrl-C (SIGINT or
//! SIGTERM) removes exactly that: the pods, the namespaces, the links, the sockets and the
//! temporary directory.

mod host;
mod kubelet;
mod pods;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use kubeletplugin::{ClaimCacheMode, PluginOptions, proto::dra::v1 as dra};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, InventoryConfig};
use nri::StubOptions;
use serde_json::{Value, json};
use testkit::{FakeApiServer, PODS, RESOURCE_CLAIMS, RESOURCE_SLICES};
use tokio::signal::unix::{SignalKind, signal};

use host::{Created, NICS};
use pods::{Pod, PodRuntime};

/// The node the demo's pool and slices name.
const NODE: &str = "demo-node";
/// The claim's namespace and name.
const NAMESPACE: &str = "default";
const CLAIM: &str = "demo-nic";
/// How long the demo waits for something the agent does on its own (publish, status).
const WAIT: Duration = Duration::from_secs(20);

/// What `netdra demo` is given.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The DRA driver name.
    pub driver: String,
    /// containerd's CRI socket; the NRI harness when absent.
    pub cri_socket: Option<PathBuf>,
    /// containerd's NRI socket (with `cri_socket`).
    pub nri_socket: PathBuf,
    /// The NRI plugin index.
    pub nri_plugin_index: String,
    /// A pause before each step, for following it live.
    pub step_delay: Duration,
}

/// Runs the demo; every step is printed to standard output, the agent's log goes to standard
/// error. Cleans up on success, failure and SIGINT/SIGTERM.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    host::require_root()?;
    // Installed before anything is created: from here on a signal means "clean up".
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let mut demo = Demo::new(options).await?;
    let outcome = tokio::select! {
        outcome = demo.walk() => outcome,
        _ = interrupt.recv() => Err(anyhow::anyhow!("interrupted (SIGINT)")),
        _ = terminate.recv() => Err(anyhow::anyhow!("interrupted (SIGTERM)")),
    };
    if let Err(e) = &outcome {
        println!("\nthe demo stopped: {e:#}");
    }
    println!("\n==> cleaning up: pods, namespaces, links, sockets, the API server");
    let failed = demo.clean_up().await;
    for f in &failed {
        println!("    could not clean up: {f}");
    }
    if failed.is_empty() {
        println!("    nothing left behind");
    }
    outcome?;
    if !failed.is_empty() {
        bail!("the demo ran, but its cleanup failed: {}", failed.join("; "));
    }
    Ok(())
}

struct Demo {
    options: DemoOptions,
    /// Registry, plugin and state directories, pod logs, the harness's NRI socket.
    dir: tempfile::TempDir,
    api: FakeApiServer,
    created: Created,
    runtime: Option<PodRuntime>,
    agent: Option<netdra::Agent<crate::template::Driver>>,
    pod: Pod,
    claim: dra::Claim,
    step: usize,
    started: Instant,
}

impl Demo {
    async fn new(options: DemoOptions) -> anyhow::Result<Self> {
        // Every option is checked before anything is made.
        kubeletplugin::validate_driver_name(&options.driver).context("--driver-name")?;
        StubOptions::new("netdra", &options.nri_plugin_index)
            .validate()
            .context("--nri-plugin-index")?;
        let dir = tempfile::Builder::new()
            .prefix("netdra-demo-")
            .tempdir()
            .context("creating the demo's temporary directory")?;
        let api = FakeApiServer::start().await.context("starting the fake API server")?;
        let run = format!("{}-{}", std::process::id(), unix_seconds());
        Ok(Self {
            options,
            dir,
            api,
            created: Created::default(),
            runtime: None,
            agent: None,
            pod: Pod {
                namespace: NAMESPACE.into(),
                name: "demo-pod".into(),
                uid: format!("pod-{run}"),
            },
            claim: dra::Claim {
                namespace: NAMESPACE.into(),
                name: CLAIM.into(),
                uid: format!("claim-{run}"),
            },
            step: 0,
            started: Instant::now(),
        })
    }

    async fn step(&mut self, title: &str) {
        tokio::time::sleep(self.options.step_delay).await;
        self.step += 1;
        println!(
            "\n==> [{}/9 at {:.1}s] {title}",
            self.step,
            self.started.elapsed().as_secs_f64()
        );
    }

    async fn walk(&mut self) -> anyhow::Result<()> {
        self.step("NICs: two veth pairs stand in for the node's network cards")
            .await;
        for nic in NICS {
            self.created.veth(nic)?;
        }
        print_indented(&testkit::try_ip(&["-br", "link", "show", "dev", NICS[0]])?);
        print_indented(&testkit::try_ip(&["-br", "link", "show", "dev", NICS[1]])?);

        self.step("driver: the netdra agent starts and the kubelet registers it")
            .await;
        let endpoint = self.start_driver().await?;

        self.step("publish: the driver's ResourceSlice for this node").await;
        let devices = self.published().await?;
        for slice in self.api.objects(&RESOURCE_SLICES) {
            print_yaml(&slice)?;
        }

        self.step("allocate: a claim for one NIC with an InterfaceConfig; the scheduler allocates it")
            .await;
        let device = devices
            .iter()
            .find(|(ifname, _)| ifname == NICS[0])
            .map(|(_, device)| device.clone())
            .with_context(|| format!("{} was not published", NICS[0]))?;
        self.allocate(&device)?;
        print_yaml(&self.claim_object()?)?;

        self.step("prepare: the kubelet calls NodePrepareResources").await;
        let plugin = kubelet::DraPlugin::new(endpoint);
        let prepared = plugin.prepare(&self.claim).await?;
        for d in &prepared {
            println!(
                "    prepared {}/{} for request(s) {}",
                d.pool_name,
                d.device_name,
                d.request_names.join(",")
            );
        }

        self.step("pod start: the runtime creates the pod; the RunPodSandbox hook moves the NIC in")
            .await;
        let runtime = self.runtime.as_mut().context("no runtime")?;
        let netns = runtime.run_pod(&self.pod, &mut self.created).await?;
        println!(
            "    pod {}/{} runs in network namespace {netns}",
            self.pod.namespace, self.pod.name
        );
        println!("    $ ip -n {netns} addr");
        print_indented(&testkit::try_ip(&["-n", &netns, "addr"])?);
        println!("    $ ip -n {netns} route");
        print_indented(&testkit::try_ip(&["-n", &netns, "route"])?);
        if testkit::try_ip(&["-n", &netns, "link", "show", "dev", "net1"]).is_err() {
            bail!("the pod started without its interface net1");
        }
        if host::link_exists(NICS[0]) {
            bail!("{} is still on the host after the pod started", NICS[0]);
        }

        self.step("status: the driver writes what it did onto the claim").await;
        let status = self.wait_ready().await?;
        print_yaml(&json!({"status": {"devices": status}}))?;

        self.step("pod stop: StopPodSandbox returns the NIC to the host; the pod is removed")
            .await;
        let runtime = self.runtime.as_mut().context("no runtime")?;
        runtime.stop_pod(&self.pod).await?;
        if !host::link_exists(NICS[0]) {
            bail!("{} did not come back to the host when the pod stopped", NICS[0]);
        }
        println!("    $ ip -br link show dev {}", NICS[0]);
        print_indented(&testkit::try_ip(&["-br", "link", "show", "dev", NICS[0]])?);
        runtime.remove_pod(&self.pod, &mut self.created).await?;

        self.step("unprepare: the kubelet calls NodeUnprepareResources; the claim's status is cleared")
            .await;
        plugin.unprepare(&self.claim).await?;
        // The status is written from the driver's queue, a moment after the answer.
        let start = Instant::now();
        let entries = loop {
            let entries = self.driver_status_entries()?;
            if entries.is_empty() {
                break entries;
            }
            if start.elapsed() > WAIT {
                bail!("the claim still has this driver's status entries {WAIT:?} after unprepare: {entries:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        print_yaml(&json!({"status": {"devices": entries}}))?;
        println!(
            "\nthe whole lifecycle ran in {:.1}s",
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// Starts the runtime side and the agent, registers the plugin; the DRA socket it announced.
    async fn start_driver(&mut self) -> anyhow::Result<PathBuf> {
        let driver = self.options.driver.clone();
        let (runtime, nri_socket) = match &self.options.cri_socket {
            Some(cri) => {
                let runtime = PodRuntime::containerd(cri, &self.pod.uid, self.dir.path().join("podlogs")).await?;
                (runtime, self.options.nri_socket.clone())
            }
            None => {
                let socket = self.dir.path().join("nri.sock");
                (PodRuntime::harness(&socket)?, socket)
            }
        };
        println!("    runtime: {}", runtime.describe());
        self.runtime = Some(runtime);

        let mut plugin = PluginOptions::new(&driver);
        plugin.claim_cache = ClaimCacheMode::Node { node_name: NODE.into() };
        plugin.registry_dir = self.dir.path().join("registry");
        plugin.plugin_dir = self.dir.path().join("plugins").join(&driver);
        let mut nri = StubOptions::new("netdra", &self.options.nri_plugin_index);
        nri.socket = nri_socket;
        nri.validate().context("--nri-plugin-index")?;
        let filter = format!(
            "device.attributes[\"{driver}\"].ifName in [{}]",
            NICS.map(|n| format!("\"{n}\"")).join(", ")
        );
        let inventory = InventoryConfig::new(
            driver.clone(),
            Sysfs::default(),
            DeviceFilter::parse(Some(&filter)).context("the demo's device filter")?,
        );
        let mut options = netdra::AgentOptions::new(plugin, nri, NODE, inventory);
        options.state_file = self.dir.path().join("netdra-state");
        let agent = netdra::start(options, crate::template::Driver::default(), self.api.client())
            .await
            .context("starting the agent")?;
        self.agent = Some(agent);

        let runtime = self.runtime.as_mut().context("no runtime")?;
        runtime.accept_plugin().await?;
        let info = kubelet::register(&self.dir.path().join("registry"), &driver).await?;
        println!(
            "    registered: {} ({}), DRA socket {}, versions {}",
            info.name,
            info.r#type,
            info.endpoint,
            info.supported_versions.join(",")
        );
        let start = Instant::now();
        loop {
            let readiness = self.agent.as_ref().context("no agent")?.readiness();
            if readiness.nri_connected && readiness.registered {
                break;
            }
            if start.elapsed() > WAIT {
                bail!("the agent is not ready after {WAIT:?}: {readiness:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("    NRI plugin connected; registered with the kubelet");
        Ok(PathBuf::from(info.endpoint))
    }

    /// Waits until both NICs are published; (interface, device name) pairs.
    async fn published(&self) -> anyhow::Result<Vec<(String, String)>> {
        let start = Instant::now();
        loop {
            let devices: Vec<(String, String)> = self
                .api
                .objects(&RESOURCE_SLICES)
                .iter()
                .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
                .filter_map(|d| {
                    Some((
                        d.pointer("/attributes/ifName/string")?.as_str()?.to_owned(),
                        d["name"].as_str()?.to_owned(),
                    ))
                })
                .collect();
            if devices.len() == NICS.len() {
                return Ok(devices);
            }
            if start.elapsed() > WAIT {
                bail!("the driver published {devices:?} after {WAIT:?}, not the demo's {NICS:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Writes the claim as a user would, then its allocation as the scheduler would.
    fn allocate(&self, device: &str) -> anyhow::Result<()> {
        let driver = &self.options.driver;
        let config = json!([{
            "requests": ["nic"],
            "opaque": {"driver": driver, "parameters": {
                "apiVersion": netdra::CONFIG_API_VERSION,
                "kind": netdra::CONFIG_KIND,
                "name": "net1",
                "addresses": ["10.199.0.2/24"],
                "routes": [{"destination": "10.198.0.0/16", "gateway": "10.199.0.1"}],
                "mtu": 1400,
            }},
        }]);
        self.api.seed(
            &RESOURCE_CLAIMS,
            NAMESPACE,
            json!({
                "metadata": {"name": CLAIM, "namespace": NAMESPACE, "uid": self.claim.uid},
                "spec": {"devices": {
                    "requests": [{"name": "nic", "exactly": {"deviceClassName": "netdra"}}],
                    "config": config,
                }},
            }),
        );
        let mut allocated_config = config;
        for c in allocated_config.as_array_mut().into_iter().flatten() {
            c["source"] = json!("FromClaim");
        }
        let status = json!({
            "allocation": {"devices": {
                "results": [{"request": "nic", "driver": driver, "pool": NODE, "device": device}],
                "config": allocated_config,
            }},
            "reservedFor": [{"resource": "pods", "name": self.pod.name, "uid": self.pod.uid}],
        });
        self.api
            .set_status(&RESOURCE_CLAIMS, NAMESPACE, CLAIM, status)
            .context("the fake API server refused the allocation")?;
        // The scheduler binds the pod to this node: the agent, watching this node's pods,
        // fetches the claim before the kubelet asks for it.
        self.api.seed(
            &PODS,
            NAMESPACE,
            json!({
                "metadata": {"name": self.pod.name, "namespace": NAMESPACE, "uid": self.pod.uid},
                "spec": {
                    "nodeName": NODE,
                    "containers": [{"name": "app", "image": "pause"}],
                    "resourceClaims": [{"name": "nic", "resourceClaimName": CLAIM}],
                },
            }),
        );
        Ok(())
    }

    fn claim_object(&self) -> anyhow::Result<Value> {
        self.api
            .object(&RESOURCE_CLAIMS, NAMESPACE, CLAIM)
            .with_context(|| format!("claim {NAMESPACE}/{CLAIM} is gone"))
    }

    fn driver_status_entries(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self
            .claim_object()?
            .pointer("/status/devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d["driver"] == self.options.driver.as_str())
            .cloned()
            .collect())
    }

    /// Waits for the driver's status entries with `Ready=True`; fails on `Ready=False`.
    async fn wait_ready(&self) -> anyhow::Result<Vec<Value>> {
        let start = Instant::now();
        loop {
            let entries = self.driver_status_entries()?;
            let ready = |e: &Value| {
                e["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["type"] == "Ready")
                    .and_then(|c| c["status"].as_str())
                    .map(str::to_owned)
            };
            if !entries.is_empty() && entries.iter().all(|e| ready(e).as_deref() == Some("True")) {
                return Ok(entries);
            }
            if let Some(failed) = entries.iter().find(|e| ready(e).as_deref() == Some("False")) {
                bail!("the driver reported Ready=False: {failed}");
            }
            if start.elapsed() > WAIT {
                bail!("no Ready=True status on the claim after {WAIT:?}: {entries:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes the pods (the agent still running, so their hooks return the NICs), stops the
    /// agent, deletes namespaces and links. What could not be removed.
    async fn clean_up(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        if let Some(runtime) = &mut self.runtime {
            failed.extend(runtime.clean_up().await);
        }
        if let Some(agent) = self.agent.take() {
            agent.shutdown().await;
        }
        self.runtime = None;
        failed.extend(self.created.remove_all());
        failed
    }
}

/// Prints a value as YAML, indented, without `managedFields` (server-side apply bookkeeping
/// that would drown the point).
fn print_yaml(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut value = serde_json::to_value(value)?;
    strip_managed_fields(&mut value);
    print_indented(&serde_yaml_ng::to_string(&value)?);
    Ok(())
}

fn strip_managed_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
                metadata.remove("managedFields");
            }
            map.values_mut().for_each(strip_managed_fields);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_managed_fields),
        _ => {}
    }
}

fn print_indented(text: &str) {
    for line in text.lines() {
        println!("    {line}");
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::strip_managed_fields;
    use serde_json::json;

    #[test]
    fn managed_fields_are_left_out_of_what_is_shown() {
        let mut v =
            json!([{"metadata": {"name": "a", "managedFields": [1]}, "spec": {"metadata": {"managedFields": 2}}}]);
        strip_managed_fields(&mut v);
        assert_eq!(v, json!([{"metadata": {"name": "a"}, "spec": {"metadata": {}}}]));
    }
}
