//! The real single-node Kubernetes of `tests/cluster/cluster.sh` for the tests that run netdra
//! on it (`cluster.rs`: the agent as a host process; `helm.rs`: as the chart's DaemonSet), and
//! what they both read back from it.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::Pod,
    resource::v1::{ResourceClaim, ResourceSlice},
};
use kube::{
    Api, Client,
    api::{DynamicObject, ListParams, PostParams},
    core::GroupVersionKind,
};
use serde_json::{Value, json};

/// The driver name the tests deploy (the chart's and `install.yaml`'s default).
pub const DRIVER: &str = "netdra.dev";
/// The test's NIC: a veth on the host, the only device the tests let the agent publish.
pub const NIC: &str = "ndk8s0";
/// The NIC's peer, which stays on the host: set down, the NIC in the pod loses its carrier.
pub const NIC_PEER: &str = "ndk8s0p";
/// Where the workload container finds the metadata of its claim `nic`'s request `nic` (KEP-5304;
/// a claim from a template is found under the pod's own name for it).
pub const METADATA_IN_CONTAINER: &str =
    "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/nic/nic/netdra.dev-metadata.json";

/// The repository's root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image archive `scripts/image.sh` wrote: `NETDRA_IMAGE_ARCHIVE` (scripts/test.sh sets
/// it), else the script's default path in the cargo target directory.
pub fn image_archive() -> PathBuf {
    if let Some(path) = std::env::var_os("NETDRA_IMAGE_ARCHIVE") {
        return path.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace().join("target"), PathBuf::from);
    target.join("image/netdra.tar")
}

/// The project's helm (`scripts/helm.sh`, which builds it once) run in the repository's root;
/// its output, or the test fails with what it printed.
pub fn helm(args: &[&str]) -> String {
    testkit::command_output(
        Command::new("bash")
            .arg(workspace().join("scripts/helm.sh"))
            .args(args)
            .current_dir(workspace()),
    )
}

/// `tests/cluster/cluster.sh ARGS`; its output, or the test fails.
pub fn cluster_cmd(args: &str) -> String {
    testkit::command_output(
        Command::new("bash")
            .arg(workspace().join("tests/cluster/cluster.sh"))
            .arg(args),
    )
}

/// Whether the cluster's binaries are built (`cluster.sh built`).
pub fn built() -> bool {
    let out = Command::new("bash")
        .arg(workspace().join("tests/cluster/cluster.sh"))
        .arg("built")
        .output()
        .unwrap();
    out.status.success()
}

/// `ip ARGS`; its output, or the test fails with its stderr.
pub use testkit::ip;

/// The running cluster: stopped (every process, mount and cgroup) when dropped.
pub struct Cluster {
    env: BTreeMap<String, String>,
}

impl Cluster {
    /// `cluster.sh start`, its environment kept for [`Cluster::var`].
    pub fn start() -> Self {
        // The guard exists before the start, so a start that panics still stops what ran.
        let mut cluster = Self { env: BTreeMap::new() };
        cluster.env = cluster_cmd("start")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cluster
    }

    /// A variable `cluster.sh start` printed (`KUBECONFIG`, `NODE_NAME`, `CRI_SOCKET`, ...).
    pub fn var(&self, name: &str) -> &str {
        &self.env[name]
    }

    /// The kubelet's log so far (it runs at `-v 4`).
    pub fn kubelet_log(&self) -> String {
        std::fs::read_to_string(self.var("KUBELET_LOG")).unwrap_or_default()
    }

    /// Imports an OCI image archive into the node's containerd, for `imagePullPolicy: Never`.
    pub fn load(&self, archive: &Path) {
        testkit::command_output(
            Command::new("bash")
                .arg(workspace().join("tests/cluster/cluster.sh"))
                .arg("load")
                .arg(archive),
        );
    }

    /// A kubeconfig at `path` that authenticates with `token` to this cluster's API server.
    pub fn token_kubeconfig(&self, token: &str, path: &Path) {
        let admin = std::fs::read_to_string(self.var("KUBECONFIG")).unwrap();
        let server = admin.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap();
        let ca = admin
            .lines()
            .find_map(|l| l.trim().strip_prefix("certificate-authority: "))
            .unwrap();
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n"
            ),
        )
        .unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(workspace().join("tests/cluster/cluster.sh"))
            .arg("stop")
            .status();
    }
}

/// The test's veth pair, deleted by name when dropped.
pub struct Veth;

impl Veth {
    /// The pair `ndk8s0`/`ndk8s0p`, replacing one a crashed run left.
    pub fn create() -> Self {
        let _ = Command::new("ip").args(["link", "del", NIC]).output();
        ip(&["link", "add", NIC, "type", "veth", "peer", "name", &format!("{NIC}p")]);
        ip(&["link", "set", &format!("{NIC}p"), "up"]);
        Self
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", NIC]).output();
    }
}

/// Polls `f` every 200 ms until it gives a value; fails the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client with the cluster's admin credentials.
pub async fn admin(cluster: &Cluster) -> Client {
    kubeconfig_client(Path::new(cluster.var("KUBECONFIG"))).await
}

/// A client from a kubeconfig file.
pub async fn kubeconfig_client(path: &Path) -> Client {
    kubeletplugin::api_client(Some(path)).await.unwrap()
}

/// Every document of a deploy manifest.
pub fn documents(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(workspace().join("deploy").join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The API of `object`'s kind, found by discovery; namespaced when the object names one.
pub async fn dynamic_api(client: &Client, object: &Value) -> Api<DynamicObject> {
    let (group, version) = match object["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_owned(), v.to_owned()),
        None => (String::new(), object["apiVersion"].as_str().unwrap().to_owned()),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, object["kind"].as_str().unwrap());
    let (resource, capabilities) = kube::discovery::pinned_kind(client, &gvk).await.unwrap();
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) if capabilities.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    }
}

/// Creates `object` (for real, or as a server-side dry run), naming it on failure.
pub async fn create(client: &Client, object: &Value, dry_run: bool) {
    let api = dynamic_api(client, object).await;
    let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    if let Err(e) = api.create(&params, &dynamic).await {
        panic!(
            "{} {} (dry run: {dry_run}): {e}",
            object["kind"], object["metadata"]["name"]
        );
    }
}

/// The published device whose interface is `ifname`, from the real API server.
pub async fn published(slices: &Api<ResourceSlice>, node: &str, ifname: &str) -> Option<String> {
    let list = slices.list(&ListParams::default()).await.ok()?;
    list.items
        .iter()
        .filter(|s| s.spec.driver == DRIVER && s.spec.node_name.as_deref() == Some(node))
        .flat_map(|s| s.spec.devices.iter().flatten())
        .find(|d| if_name(d) == Some(ifname))
        .map(|d| d.name.clone())
}

/// A published device's `ifName` attribute.
pub fn if_name(device: &k8s_openapi::api::resource::v1::Device) -> Option<&str> {
    device.attributes.as_ref()?.get("ifName")?.string.as_deref()
}

/// The pod sandbox's network namespace name, through CRI.
pub async fn pod_netns(cri_socket: &str, pod_uid: &str) -> String {
    use k8s_cri::v1::{
        ListPodSandboxRequest, PodSandboxFilter, PodSandboxStatusRequest, runtime_service_client::RuntimeServiceClient,
    };
    let channel = testkit::unix_channel(Path::new(cri_socket)).await.unwrap();
    let mut cri = RuntimeServiceClient::new(channel);
    let filter = PodSandboxFilter {
        label_selector: [("io.kubernetes.pod.uid".to_owned(), pod_uid.to_owned())].into(),
        ..Default::default()
    };
    let sandboxes = cri
        .list_pod_sandbox(ListPodSandboxRequest { filter: Some(filter) })
        .await
        .unwrap()
        .into_inner()
        .items;
    let id = sandboxes.first().expect("the pod has a sandbox").id.clone();
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id,
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    testkit::sandbox_netns(status.info.values()).expect("the sandbox names its netns")
}

/// The ResourceClaimTemplate `secondary-nic`: one device of the driver's class matching
/// `device_selector`, configured as `net1` with 10.230.0.2/24, MTU 1400 and a route.
pub fn template(device_selector: &str) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": "secondary-nic", "namespace": "default"},
        "spec": {"spec": {"devices": {
            "requests": [{"name": "nic", "exactly": {
                "deviceClassName": DRIVER,
                "selectors": [{"cel": {"expression": device_selector}}],
            }}],
            // Keys in this order on purpose: not sorted, as a client other than kubectl sends them.
            "config": [{"requests": ["nic"], "opaque": {"driver": DRIVER, "parameters": {
                "kind": "InterfaceConfig",
                "apiVersion": "netdra.dev/v1alpha1",
                "name": "net1",
                "mtu": 1400,
                "addresses": ["10.230.0.2/24"],
                "routes": [{"destination": "10.231.0.0/16", "gateway": "10.230.0.1"}],
            }}}],
        }}},
    })
}

/// The pod `with-secondary-nic`, with a claim from [`template`].
pub fn pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "with-secondary-nic", "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "nic", "resourceClaimTemplateName": "secondary-nic"}],
            // A shell: the container prints what it was given (the device metadata file) and
            // what it sees (`ip`), between markers, then sleeps.
            "containers": [{"name": "app", "image": "localhost/busybox:netdra", "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", format!(
                    "echo '--- metadata'; cat {METADATA_IN_CONTAINER}; echo '--- ip'; ip -o addr show dev net1; ip -o link show dev net1; echo '--- end'; exec sleep 100000"
                )],
                "resources": {"claims": [{"name": "nic"}]}}],
        },
    })
}

/// The pod as the API server has it, every field kept (the typed `Pod` drops those newer than
/// the k8s-openapi version the tests build with).
pub async fn pod_json(client: &Client, name: &str) -> Option<Value> {
    let resource = kube::core::ApiResource::erase::<Pod>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    Some(api.get(name).await.ok()?.data)
}

/// What the kubelet shows for the resource `resource_id` in the pod's
/// `allocatedResourcesStatus`: its health and message. The kubelet names a device by its first
/// CDI device ID when Prepare gave it one (with device metadata on, the request's first device
/// has the metadata's), else `<driver>/<pool>/<device>`.
pub fn device_health(pod: &Value, resource_id: &str) -> Option<(String, String)> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .flat_map(|c| c["allocatedResourcesStatus"].as_array().into_iter().flatten())
        .flat_map(|r| r["resources"].as_array().into_iter().flatten())
        .find(|r| r["resourceID"] == resource_id)
        .map(|r| {
            (
                r["health"].as_str().unwrap_or_default().to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
}

/// Waits until the kubelet shows `resource_id` (see [`device_health`]) of pod `name` as
/// `health`; how long it took and the message. On a timeout, the failure shows the pod's
/// container statuses as last read.
pub async fn wait_health(
    client: &Client,
    name: &str,
    resource_id: &str,
    health: &str,
    timeout: Duration,
) -> (Duration, String) {
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Some(pod) = pod_json(client, name).await {
            if let Some((now, message)) = device_health(&pod, resource_id)
                && now == health
            {
                return (start.elapsed(), message);
            }
            last = pod["status"]["containerStatuses"].clone();
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {resource_id} {health} in pod {name}'s status; its container statuses: {last:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The container's log of pod `name` (what the shell printed), from the API server.
pub async fn container_log(client: &Client, name: &str) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.logs(name, &Default::default()).await.unwrap_or_default()
}

/// The lines between `--- {section}` and the next `---` marker of a container's log.
pub fn log_section<'a>(log: &'a str, section: &str) -> Vec<&'a str> {
    log.lines()
        .skip_while(|l| *l != format!("--- {section}"))
        .skip(1)
        .take_while(|l| !l.starts_with("--- "))
        .collect()
}

/// The pod once it is Running.
pub async fn running_pod(pods: &Api<Pod>, name: &str, timeout: Duration) -> Pod {
    eventually(&format!("pod {name} running"), timeout, || {
        let pods = pods.clone();
        let name = name.to_owned();
        async move {
            let p = pods.get(&name).await.ok()?;
            (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
        }
    })
    .await
}

/// Whether the kubelet's log (at -v 4) has `message` for `claim_uid` without an error.
pub fn kubelet_called(log: &str, message: &str, claim_uid: &str) -> bool {
    log.lines()
        .any(|l| l.contains(message) && l.contains(claim_uid) && l.contains("err=null"))
}

/// The driver's entry in the claim's `status.devices` when its Ready condition is True.
pub fn ready_entry(claim: &ResourceClaim) -> Option<Value> {
    let entry = claim
        .status
        .as_ref()?
        .devices
        .as_ref()?
        .iter()
        .find(|d| d.driver == DRIVER)?;
    let ready = entry
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ready.then(|| serde_json::to_value(entry).unwrap())
}

/// The NIC's device name once this node's slice publishes it.
pub async fn wait_published(slices: &Api<ResourceSlice>, node: &str) -> String {
    eventually("the NIC published", Duration::from_secs(30), || async move {
        published(slices, node, NIC).await
    })
    .await
}

/// The workload: `template()` selecting the NIC and `pod()` using it, created and Running.
/// Returns the pod and the name of the claim the controller-manager made for it.
pub async fn run_workload(client: &Client) -> (Pod, String) {
    create(
        client,
        &template(&format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\"")),
        false,
    )
    .await;
    create(client, &pod(), false).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = running_pod(&pods, "with-secondary-nic", Duration::from_secs(90)).await;
    let claim = running
        .status
        .as_ref()
        .unwrap()
        .resource_claim_statuses
        .as_ref()
        .unwrap()[0]
        .resource_claim_name
        .clone()
        .unwrap();
    (running, claim)
}

/// `net1` in the namespace as `template()`'s config says: up, 10.230.0.2/24, MTU 1400, the
/// route to 10.231.0.0/16.
pub fn assert_net1_configured(netns: &str) {
    let link: Value = serde_json::from_str(&ip(&["-n", netns, "-j", "addr", "show", "dev", "net1"])).unwrap();
    let link = &link[0];
    assert_eq!(link["mtu"], 1400);
    assert!(link["flags"].as_array().unwrap().contains(&json!("UP")), "{link}");
    assert!(
        link["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == "10.230.0.2" && a["prefixlen"] == 24),
        "{link}"
    );
    let routes = ip(&["-n", netns, "route"]);
    assert!(routes.contains("10.231.0.0/16 via 10.230.0.1 dev net1"), "{routes}");
}

/// The driver's entry in the claim's status once it says Ready=True.
pub async fn wait_ready(claims: &Api<ResourceClaim>, name: &str) -> Value {
    eventually("Ready=True on the claim", Duration::from_secs(30), || async move {
        ready_entry(&claims.get(name).await.ok()?)
    })
    .await
}

/// Waits until the NIC is back in the host's namespace.
pub async fn wait_nic_home(timeout: Duration) {
    eventually("the NIC back on the host", timeout, || async {
        Path::new("/sys/class/net").join(NIC).exists().then_some(())
    })
    .await;
}

/// Waits until the pod is gone from the API server.
pub async fn wait_pod_gone(pods: &Api<Pod>, name: &str) {
    eventually(&format!("pod {name} gone"), Duration::from_secs(60), || async move {
        pods.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Whether the machine can run a cluster test: root, and the Kubernetes binaries built.
/// Otherwise the reason is printed (a failure in CI, where both must hold).
pub fn cluster_available() -> bool {
    testkit::available_or_skip(
        testkit::is_root(),
        "the cluster tests need root (kubelet, containerd, veths)",
    ) && testkit::available_or_skip(
        built(),
        "Kubernetes is not built (tests/cluster/cluster.sh setup, as scripts/test.sh does)",
    )
}

/// The test's veth pair, then the cluster. The veth is made first so that it is dropped after
/// the cluster: a failing test stops the pods first (the agent returns the NIC), then deletes
/// the veth.
pub fn start_cluster() -> (Veth, Cluster) {
    let started = Instant::now();
    let veth = Veth::create();
    let cluster = Cluster::start();
    println!(
        "cluster up in {:.1}s: Kubernetes {} on containerd {}",
        started.elapsed().as_secs_f64(),
        cluster.var("KUBERNETES_VERSION"),
        cluster.var("CONTAINERD")
    );
    (veth, cluster)
}
