//! Privileged, and the strongest test there is: netdra on a real single-node Kubernetes
//! (`tests/cluster/cluster.sh`: kube-apiserver, kube-controller-manager, kube-scheduler and a
//! kubelet built from the Kubernetes Go modules, etcd, the project's containerd 2 with NRI).
//!
//! The `deploy/` manifests pass a server-side dry run; the driver's Namespace, ServiceAccount,
//! ClusterRole, binding and DeviceClass are created for real, and the `netdra` binary runs as a
//! host process with that ServiceAccount's token, so every request it makes is authorized by the
//! shipped RBAC. Then, each step read back from the real components:
//! - the real API server accepts the node's ResourceSlice;
//! - a Pod with a ResourceClaimTemplate (CEL selector on netdra's attributes, an opaque
//!   `InterfaceConfig`): the scheduler allocates, the controller-manager creates the claim, the
//!   kubelet prepares (its log says so), the pod runs with `net1` up in its namespace with the
//!   configured address, route and MTU; the claim's status shows `networkData` and Ready=True;
//! - inside the workload container (busybox), the device metadata file (KEP-5304) names the
//!   interface, addresses and MAC that `ip` there shows;
//! - device health (KEP-4680) in the pod's status: Healthy; the host end of the pair set down:
//!   Unhealthy within 5 s; up: Healthy again;
//! - the driver stopped for 35 s while the pod runs (what the kubelet then shows is printed),
//!   started again: it re-registers, the slice stays, the state holds, Healthy again;
//! - the pod deleted: the interface is back on the host, the kubelet unprepared, nothing of the
//!   claim's device metadata left in the CDI directory or the plugin's;
//! - a standalone claim held by a running pod and referenced by a second pod (the kubelet
//!   prepares a claim once, so no Prepare reaches the driver for the second): the second pod's
//!   sandbox fails with an error naming the claim and the pod holding it, for as long as that pod
//!   holds it; once it is deleted, the kubelet's retry gets the interface, the second pod runs
//!   with it, and the claim says Ready=True for it;
//! - the driver stopped past the kubelet's grace period: the kubelet wipes its slices; started
//!   again: republished;
//! - a burst: 20 pods with a NIC each and 20 without claims created at once, each timed from
//!   its create request to Running (printed: what DRA and netdra add to a pod's start), every
//!   NIC pod with `net1`.
#![allow(missing_docs, clippy::unwrap_used)]

mod real_node;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
    core::v1::{Event, Node, Pod, ServiceAccount},
    resource::v1::{ResourceClaim, ResourceSlice},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
};
use real_node::*;
use serde_json::{Value, json};
use testkit::HostSnapshot;

/// How long the test watches the pod's status with the driver stopped: past the kubelet's 30 s
/// health window.
const HEALTH_WATCH_AWAY: Duration = Duration::from_secs(35);

/// The netdra binary as a host process, with its log in a file.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    fn start(cluster: &Cluster, kubeconfig: &Path, dir: &Path) -> Self {
        Self::publishing(
            cluster,
            kubeconfig,
            dir,
            &format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\""),
        )
    }

    /// The driver publishing the interfaces `device_filter` selects.
    fn publishing(cluster: &Cluster, kubeconfig: &Path, dir: &Path, device_filter: &str) -> Self {
        Self::with_args(cluster, kubeconfig, dir, device_filter, &[])
    }

    /// The driver in shared-NIC mode, `slots` claims per interface, publishing the NIC.
    fn shared(cluster: &Cluster, kubeconfig: &Path, dir: &Path, slots: u32) -> Self {
        Self::with_args(
            cluster,
            kubeconfig,
            dir,
            &format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\""),
            &["--mode", "shared-nic", "--shared-slots", &slots.to_string()],
        )
    }

    fn with_args(cluster: &Cluster, kubeconfig: &Path, dir: &Path, device_filter: &str, extra: &[&str]) -> Self {
        let log = dir.join("netdra.log");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let root = Path::new(cluster.var("KUBELET_ROOT"));
        let child = Command::new(env!("CARGO_BIN_EXE_netdra"))
            .arg("run")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--node-name", cluster.var("NODE_NAME")])
            .arg("--kubelet-registry-dir")
            .arg(root.join("plugins_registry"))
            .arg("--kubelet-plugins-dir")
            .arg(root.join("plugins"))
            .args(["--nri-socket", cluster.var("NRI_SOCKET")])
            .args(["--cdi-dir", cluster.var("CDI_DIR")])
            .args(["--metrics-address", "127.0.0.1:0"])
            .args(["--device-filter", device_filter])
            .args(extra)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (the agent removes its sockets: the kubelet deregisters it) and wait.
    fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "netdra did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- netdra's log ----\n{}", self.log());
        }
    }
}

/// A kubeconfig with the netdra ServiceAccount's token: the driver runs under install.yaml's RBAC.
/// The token is bound to the node, as a DaemonSet pod's projected token is (through its pod): the
/// API server then knows the writer is on the claim's node, which is what the
/// `resourceclaims/driver` `associated-node:*` verbs grant (Kubernetes ≥ 1.36).
async fn service_account_kubeconfig(client: &Client, cluster: &Cluster, path: &Path) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get(cluster.var("NODE_NAME")).await.unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "netdra");
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: node.metadata.name.clone(),
                uid: node.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let token: TokenRequest = accounts
        .create_subresource("token", "netdra", &PostParams::default(), &request)
        .await
        .unwrap();
    cluster.token_kubeconfig(&token.status.unwrap().token, path);
}

/// A standalone claim for the NIC: pods reference it by name, so several can share it.
fn shared_claim() -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": "shared-nic", "namespace": "default"},
        "spec": {"devices": {
            "requests": [{"name": "nic", "exactly": {
                "deviceClassName": DRIVER,
                "selectors": [{"cel": {"expression": format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\"")}}],
            }}],
            "config": [{"requests": ["nic"], "opaque": {"driver": DRIVER, "parameters": {
                "apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig",
                "name": "net1", "addresses": ["10.232.0.2/24"],
            }}}],
        }},
    })
}

/// A pod using the claim `shared-nic`.
fn pod_with_shared_claim(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "nic", "resourceClaimName": "shared-nic"}],
            "containers": [{"name": "app", "image": "localhost/pause:netdra", "imagePullPolicy": "Never",
                "resources": {"claims": [{"name": "nic"}]}}],
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netdra_on_a_real_kubernetes_node() {
    if !cluster_available() {
        return;
    }
    let host_before = HostSnapshot::take("netdra-cluster");
    let started = Instant::now();
    let (veth, cluster) = start_cluster();
    let dir = tempfile::tempdir().unwrap();
    let client = admin(&cluster).await;
    let node = cluster.var("NODE_NAME").to_owned();

    // deploy/: every document passes a server-side dry run; the driver's own objects are made.
    let install = documents("install.yaml");
    let namespace = install.iter().find(|d| d["kind"] == "Namespace").unwrap();
    create(&client, namespace, true).await;
    create(&client, namespace, false).await;
    for document in install.iter().chain(&documents("example.yaml")) {
        if document["kind"] != "Namespace" {
            create(&client, document, true).await;
        }
    }
    for kind in ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DeviceClass"] {
        let document = install.iter().find(|d| d["kind"] == kind).unwrap();
        create(&client, document, false).await;
    }
    println!("deploy/: every document accepted by a server-side dry run");
    let kubeconfig = dir.path().join("netdra.kubeconfig");
    service_account_kubeconfig(&client, &cluster, &kubeconfig).await;

    // Published: the real API server validates and stores the slice.
    let driver = Driver::start(&cluster, &kubeconfig, dir.path());
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let device = wait_published(&slices, &node).await;
    println!("published {NIC} as device {device} on node {node}");

    // The scheduler allocates, the controller-manager makes the claim, the kubelet prepares.
    let (running, claim_name) = run_workload(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_uid = running.metadata.uid.clone().unwrap();
    let claims: Api<ResourceClaim> = Api::namespaced(client.clone(), "default");
    let claim = claims.get(&claim_name).await.unwrap();
    let results = claim
        .status
        .as_ref()
        .unwrap()
        .allocation
        .as_ref()
        .unwrap()
        .devices
        .as_ref()
        .unwrap()
        .results
        .clone()
        .unwrap();
    assert_eq!(
        (
            results[0].driver.as_str(),
            results[0].pool.as_str(),
            results[0].device.as_str()
        ),
        (DRIVER, node.as_str(), device.as_str()),
        "the scheduler allocated the published NIC"
    );
    let claim_uid = claim.metadata.uid.clone().unwrap();
    assert!(
        driver
            .log()
            .contains(&format!("claim prepared claim=default/{claim_name}")),
        "the kubelet's Prepare reached netdra:\n{}",
        driver.log()
    );
    assert!(
        kubelet_called(
            &cluster.kubelet_log(),
            "Done calling NodePrepareResources rpc",
            &claim_uid
        ),
        "the kubelet's log shows its NodePrepareResources call for claim {claim_uid} answered"
    );

    // Inside the pod's namespace, as configured.
    let netns = pod_netns(cluster.var("CRI_SOCKET"), &pod_uid).await;
    assert_net1_configured(&netns);
    assert!(!Path::new("/sys/class/net").join(NIC).exists(), "{NIC} left the host");
    println!("pod {pod_uid}: net1 in {netns} with 10.230.0.2/24, MTU 1400, the route");

    // The claim's status, read back from the real API server.
    let entry = wait_ready(&claims, &claim_name).await;
    assert_eq!(entry["networkData"]["interfaceName"], "net1");
    assert_eq!(entry["networkData"]["ips"], json!(["10.230.0.2/24"]));
    println!("claim {claim_name}: {}", entry["networkData"]);

    // Device metadata (KEP-5304): inside the container, the file names what `ip` shows there.
    let log = eventually("the workload's output", Duration::from_secs(30), || {
        let client = client.clone();
        async move {
            let log = container_log(&client, "with-secondary-nic").await;
            log.contains("--- end").then_some(log)
        }
    })
    .await;
    let metadata: Value = serde_json::Deserializer::from_str(&log_section(&log, "metadata").join("\n"))
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no metadata document in the container's output:\n{log}"));
    assert_eq!(
        metadata["apiVersion"], "metadata.resource.k8s.io/v1beta1",
        "newest first: {metadata}"
    );
    let in_container = &metadata["requests"][0]["devices"][0];
    assert_eq!(
        (&in_container["pool"], &in_container["name"]),
        (&json!(node), &json!(device)),
        "{metadata}"
    );
    let network = &in_container["networkData"];
    let ip_lines = log_section(&log, "ip").join("\n");
    let name = network["interfaceName"]
        .as_str()
        .unwrap_or_else(|| panic!("no interfaceName: {metadata}"));
    assert!(
        ip_lines.contains(&format!(": {name} ")) || ip_lines.contains(&format!(": {name}@")),
        "{name} in:\n{ip_lines}"
    );
    for address in network["ips"].as_array().unwrap() {
        assert!(
            ip_lines.contains(&format!("inet {} ", address.as_str().unwrap())),
            "{address} in:\n{ip_lines}"
        );
    }
    let mac = network["hardwareAddress"]
        .as_str()
        .unwrap_or_else(|| panic!("no hardwareAddress: {metadata}"));
    assert!(
        ip_lines.contains(&format!("link/ether {mac} ")),
        "{mac} in:\n{ip_lines}"
    );
    println!("inside the container: {METADATA_IN_CONTAINER} says {network}, as `ip` there shows");

    // Device health (KEP-4680): the kubelet shows it in the pod's status, naming the device by
    // its first CDI device ID: the metadata's.
    let resource = format!("{DRIVER}/metadata={claim_uid}_nic");
    let workload_health =
        |health: &'static str, within: Duration| wait_health(&client, "with-secondary-nic", &resource, health, within);
    let (took, message) = workload_health("Healthy", Duration::from_secs(30)).await;
    println!("device health: Healthy after {:.1}s ({message})", took.as_secs_f64());
    ip(&["link", "set", NIC_PEER, "down"]);
    let (took, message) = workload_health("Unhealthy", Duration::from_secs(5)).await;
    println!(
        "host end of the pair down: Unhealthy in the pod's status after {:.1}s ({message})",
        took.as_secs_f64()
    );
    assert!(message.contains("net1"), "the message names the interface: {message}");
    ip(&["link", "set", NIC_PEER, "up"]);
    let (took, _) = workload_health("Healthy", Duration::from_secs(5)).await;
    println!("host end up again: Healthy after {:.1}s", took.as_secs_f64());

    // The driver restarted while the pod runs: re-registered, slice kept, state intact.
    let registrations = |log: &str| log.matches("Registered DRA plugin").count();
    let before = registrations(&cluster.kubelet_log());
    driver.stop();
    // The kubelet's own handling of a driver gone: observed (its health stream ended) and
    // printed, not asserted (v1.37.2 showed Unknown about a second after the stop: the README's
    // compatibility table).
    let gone = Instant::now();
    let mut seen = Vec::new();
    while gone.elapsed() < HEALTH_WATCH_AWAY {
        let now = pod_json(&client, "with-secondary-nic")
            .await
            .and_then(|p| device_health(&p, &resource))
            .map_or_else(|| "absent".to_owned(), |(h, _)| h);
        if seen.last().is_none_or(|(_, last)| *last != now) {
            seen.push((gone.elapsed(), now));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seen: Vec<String> = seen
        .iter()
        .map(|(t, h)| format!("{h} at {:.1}s", t.as_secs_f64()))
        .collect();
    println!(
        "driver stopped: the pod's status showed the NIC {}",
        seen.join(", then ")
    );
    let driver = Driver::start(&cluster, &kubeconfig, dir.path());
    let (took, _) = workload_health("Healthy", Duration::from_secs(30)).await;
    println!("driver back: Healthy after {:.1}s", took.as_secs_f64());
    eventually("the kubelet registering netdra again", Duration::from_secs(30), || {
        let n = registrations(&cluster.kubelet_log());
        async move { (n > before).then_some(()) }
    })
    .await;
    assert!(
        published(&slices, &node, NIC).await.is_some(),
        "the slice is still there"
    );
    assert!(ip(&["-n", &netns, "link", "show", "net1"]).contains("net1"));
    assert!(ready_entry(&claims.get(&claim_name).await.unwrap()).is_some());
    println!("driver restarted: registered again, slice and pod untouched");

    // The pod deleted: the NIC comes home, the kubelet unprepares.
    pods.delete("with-secondary-nic", &DeleteParams::default())
        .await
        .unwrap();
    wait_pod_gone(&pods, "with-secondary-nic").await;
    wait_nic_home(Duration::from_secs(20)).await;
    eventually("the kubelet's Unprepare", Duration::from_secs(30), || {
        let log = driver.log();
        let name = claim_name.clone();
        async move {
            log.contains(&format!("claim unprepared claim=default/{name}"))
                .then_some(())
        }
    })
    .await;
    assert!(
        kubelet_called(
            &cluster.kubelet_log(),
            "Done calling NodeUnprepareResources rpc",
            &claim_uid
        ),
        "the kubelet's log shows its NodeUnprepareResources call for claim {claim_uid} answered"
    );
    // Nothing of the claim's device metadata is left: its CDI spec and its file.
    let cdi_left: Vec<String> = std::fs::read_dir(cluster.var("CDI_DIR"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(&claim_uid))
        .collect();
    assert!(cdi_left.is_empty(), "CDI files of claim {claim_uid} left: {cdi_left:?}");
    let metadata_dir = Path::new(cluster.var("KUBELET_ROOT"))
        .join("plugins")
        .join(DRIVER)
        .join("dra-device-metadata")
        .join(format!("default_{claim_name}"));
    assert!(!metadata_dir.exists(), "{} left", metadata_dir.display());
    println!("pod deleted: {NIC} back on the host, claim unprepared, its CDI spec and metadata file gone");

    // A standalone claim held by one pod and referenced by a second (finding 4 of issue 17).
    create(&client, &shared_claim(), false).await;
    create(&client, &pod_with_shared_claim("holder"), false).await;
    let holder = running_pod(&pods, "holder", Duration::from_secs(90)).await;
    let holder_uid = holder.metadata.uid.clone().unwrap();
    let holder_ns = pod_netns(cluster.var("CRI_SOCKET"), &holder_uid).await;
    assert!(ip(&["-n", &holder_ns, "addr", "show", "dev", "net1"]).contains("10.232.0.2/24"));
    let shared_uid = claims.get("shared-nic").await.unwrap().metadata.uid.unwrap();
    create(&client, &pod_with_shared_claim("second"), false).await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let refusal = eventually("the second pod's sandbox refused", Duration::from_secs(60), || {
        let events = events.clone();
        async move {
            let list = events
                .list(&ListParams::default().fields("involvedObject.name=second"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .filter_map(|e| e.message)
                .find(|m| m.contains("claim default/shared-nic"))
        }
    })
    .await;
    println!("second pod, while holder holds the claim: {refusal}");
    assert!(
        refusal.contains(&format!("pod default/holder (uid {holder_uid})")),
        "the refusal names the pod holding the claim: {refusal}"
    );
    // For as long as the holder holds it, the second pod does not run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = pods.get("second").await.unwrap();
    assert_ne!(
        second.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running"),
        "the second pod never runs without its interface"
    );
    assert!(ip(&["-n", &holder_ns, "link", "show", "net1"]).contains("net1"));
    // The holder goes: the kubelet's retry of the second pod's sandbox gets the interface.
    pods.delete("holder", &DeleteParams::default()).await.unwrap();
    let second = running_pod(&pods, "second", Duration::from_secs(180)).await;
    let second_uid = second.metadata.uid.clone().unwrap();
    let second_ns = pod_netns(cluster.var("CRI_SOCKET"), &second_uid).await;
    let addresses = ip(&["-n", &second_ns, "addr", "show", "dev", "net1"]);
    assert!(addresses.contains("10.232.0.2/24"), "{addresses}");
    let entry = eventually(
        "Ready=True on the shared claim for the second pod",
        Duration::from_secs(30),
        || {
            let claims = claims.clone();
            async move {
                let claim = claims.get("shared-nic").await.ok()?;
                let entry = ready_entry(&claim)?;
                entry["conditions"][0]["message"]
                    .as_str()?
                    .contains("net1")
                    .then_some(entry)
            }
        },
    )
    .await;
    assert_eq!(entry["networkData"]["ips"], json!(["10.232.0.2/24"]));
    assert!(
        driver.log().contains(&format!("pod=default/second (uid {second_uid})")),
        "the driver's log names the second pod"
    );
    println!("holder deleted: the second pod runs with net1, claim {shared_uid} Ready=True");
    pods.delete("second", &DeleteParams::default()).await.unwrap();
    wait_nic_home(Duration::from_secs(60)).await;
    eventually("the shared claim unprepared", Duration::from_secs(60), || {
        let log = cluster.kubelet_log();
        let uid = shared_uid.clone();
        async move { kubelet_called(&log, "Done calling NodeUnprepareResources rpc", &uid).then_some(()) }
    })
    .await;
    claims.delete("shared-nic", &DeleteParams::default()).await.unwrap();

    // Stopped past the kubelet's grace period: the kubelet wipes the slices; back: republished.
    driver.stop();
    eventually("the kubelet wiping the slices", Duration::from_secs(90), || {
        let (slices, node) = (slices.clone(), node.clone());
        async move { published(&slices, &node, NIC).await.is_none().then_some(()) }
    })
    .await;
    let driver = Driver::start(&cluster, &kubeconfig, dir.path());
    wait_published(&slices, &node).await;
    println!("driver away past the grace period: slices wiped, then republished");
    assert!(
        !driver.log().contains(" 403 ") && !driver.log().contains("forbidden"),
        "the ServiceAccount's RBAC was enough:\n{}",
        driver.log()
    );
    driver.stop();

    // A burst, measured: pods with a NIC each and pods without claims, created at once.
    let burst_nics = BurstNics::create();
    let driver = Driver::publishing(
        &cluster,
        &kubeconfig,
        dir.path(),
        &format!("device.attributes[\"{DRIVER}\"].ifName.startsWith(\"{BURST_NIC}\")"),
    );
    burst(&client, &cluster, &slices, &node).await;
    assert!(
        !driver.log().contains(" 403 ") && !driver.log().contains("forbidden"),
        "the ServiceAccount's RBAC was enough for the burst:\n{}",
        driver.log()
    );
    driver.stop();
    drop(burst_nics);

    shared_nic(&client, &cluster, &kubeconfig, dir.path(), &slices, &node).await;
    println!("the whole run took {:.1}s", started.elapsed().as_secs_f64());

    // Stopped: nothing of the cluster, the driver or the pod is left on the host.
    drop(veth);
    drop(cluster);
    host_before.assert_restored(&[]);
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|h| Some(h.ok()?.path().join("netdra-cluster")))
        .filter(|p| p.exists())
        .collect();
    assert!(cgroups.is_empty(), "the kubelet's cgroups are left: {cgroups:?}");
    println!("stopped: no namespace, link, socket, mount, process or cgroup left");
}

/// Pods of each kind in the burst.
const BURST: usize = 20;
/// The burst's NICs: `ndkb0`… (veth pairs with `ndkp0`…).
const BURST_NIC: &str = "ndkb";

/// The burst's veth pairs, deleted by name when dropped.
struct BurstNics;

impl BurstNics {
    fn create() -> Self {
        for i in 0..BURST {
            // The peers' names do not start with BURST_NIC: only the NICs are published.
            let (nic, peer) = (format!("{BURST_NIC}{i}"), format!("ndkp{i}"));
            let _ = Command::new("ip").args(["link", "del", &nic]).output();
            ip(&["link", "add", &nic, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "up"]);
        }
        Self
    }
}

impl Drop for BurstNics {
    fn drop(&mut self) {
        for i in 0..BURST {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{BURST_NIC}{i}")])
                .output();
        }
    }
}

/// A burst pod: `burst-nic-N` with a claim from the `burst-nic` template, or `burst-plain-N`
/// without claims.
fn burst_pod(name: &str, with_nic: bool) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"netdra-burst": "1"}},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "app", "image": "localhost/pause:netdra", "imagePullPolicy": "Never"}],
        },
    });
    if with_nic {
        pod["spec"]["resourceClaims"] = json!([{"name": "nic", "resourceClaimTemplateName": "burst-nic"}]);
        pod["spec"]["containers"][0]["resources"] = json!({"claims": [{"name": "nic"}]});
    }
    pod
}

fn quantiles(report: &mut String, label: &str, times: &mut [Duration]) -> [f64; 3] {
    times.sort();
    let q = [0.5, 0.9, 0.99].map(|p| testkit::percentile(times, p).as_secs_f64());
    report.push_str(&format!(
        "  {label:<26} p50 {:>6.2} s  p90 {:>6.2} s  p99 {:>6.2} s  (n={})\n",
        q[0],
        q[1],
        q[2],
        times.len()
    ));
    q
}

/// [`BURST`] pods with one NIC each and [`BURST`] without claims, created at once (alternating),
/// each timed from its create request to the watch showing it Running; every NIC pod has `net1`
/// in its namespace. Figures printed, not asserted: a benchmark on a real node.
async fn burst(client: &Client, cluster: &Cluster, slices: &Api<ResourceSlice>, node: &str) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    eventually("the burst's NICs published", Duration::from_secs(60), || async move {
        let list = slices.list(&ListParams::default()).await.ok()?;
        let count = list
            .items
            .iter()
            .filter(|s| s.spec.node_name.as_deref() == Some(node))
            .flat_map(|s| s.spec.devices.iter().flatten())
            .filter(|d| if_name(d).is_some_and(|n| n.starts_with(BURST_NIC)))
            .count();
        (count == BURST).then_some(())
    })
    .await;
    let mut template = template(&format!(
        "device.attributes[\"{DRIVER}\"].ifName.startsWith(\"{BURST_NIC}\")"
    ));
    template["metadata"]["name"] = json!("burst-nic");
    create(client, &template, false).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let selector = watcher::Config::default().labels("netdra-burst=1");
    let mut running = std::pin::pin!(watcher(pods.clone(), selector).applied_objects().default_backoff());
    let names: Vec<(String, bool)> = (0..BURST)
        .flat_map(|i| [(format!("burst-nic-{i}"), true), (format!("burst-plain-{i}"), false)])
        .collect();
    let sent: std::collections::HashMap<String, Instant> =
        futures::future::join_all(names.iter().map(|(name, nic)| {
            let pods = pods.clone();
            let object: Pod = serde_json::from_value(burst_pod(name, *nic)).unwrap();
            async move {
                let at = Instant::now();
                pods.create(&PostParams::default(), &object).await.unwrap();
                (name.clone(), at)
            }
        }))
        .await
        .into_iter()
        .collect();
    let mut started = std::collections::HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while started.len() < names.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, running.next()).await.unwrap_or_else(|_| {
            panic!(
                "only {} of {} burst pods Running after 240 s",
                started.len(),
                names.len()
            )
        });
        let Some(Ok(pod)) = event else { continue };
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            && let Some(at) = sent.get(&name)
        {
            started.entry(name).or_insert_with(|| at.elapsed());
        }
    }
    let (mut with, mut without): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for (name, nic) in &names {
        if *nic { &mut with } else { &mut without }.push(started[name]);
    }
    let mut report =
        format!("burst on the real node: {BURST} pods with one NIC each and {BURST} without claims, created at once\n");
    let w = quantiles(&mut report, "creation -> Running, NIC", &mut with);
    let p = quantiles(&mut report, "creation -> Running, none", &mut without);
    report.push_str(&format!(
        "  what DRA and netdra add to a pod's start: p50 {:+.2} s  p90 {:+.2} s  p99 {:+.2} s\n",
        w[0] - p[0],
        w[1] - p[1],
        w[2] - p[2]
    ));
    print!("{report}");
    // The test command captures a passing test's output: it prints this file with the
    // benchmarks.
    if let Some(path) = std::env::var_os("NETDRA_BURST_REPORT") {
        std::fs::write(path, &report).unwrap();
    }
    for (name, _) in names.iter().filter(|(_, nic)| *nic) {
        let uid = pods.get(name).await.unwrap().metadata.uid.unwrap();
        let netns = pod_netns(cluster.var("CRI_SOCKET"), &uid).await;
        assert!(
            ip(&["-n", &netns, "link", "show", "net1"]).contains("net1"),
            "{name} runs without net1"
        );
    }
    println!("  every NIC pod runs with net1 in its namespace");
    for (name, _) in &names {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for (name, _) in &names {
        wait_pod_gone(&pods, name).await;
    }
    eventually("the burst's NICs home", Duration::from_secs(60), || async {
        (0..BURST)
            .all(|i| Path::new("/sys/class/net").join(format!("{BURST_NIC}{i}")).exists())
            .then_some(())
    })
    .await;
    let templates: Api<kube::api::DynamicObject> = dynamic_api(client, &template).await;
    templates.delete("burst-nic", &DeleteParams::default()).await.unwrap();
}

/// How many claims the shared NIC serves at once in the test.
const SHARED_SLOTS: u32 = 2;

/// A standalone claim `shared-N` on the NIC, configured as `net1` with `10.233.0.(10+N)/24`;
/// the first asks for its slot explicitly, as the README's example does, the others take the
/// request policy's default.
fn shared_nic_claim(n: usize) -> Value {
    let mut claim = json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": format!("shared-{n}"), "namespace": "default"},
        "spec": {"devices": {
            "requests": [{"name": "nic", "exactly": {
                "deviceClassName": DRIVER,
                "selectors": [{"cel": {"expression": format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\"")}}],
            }}],
            "config": [{"requests": ["nic"], "opaque": {"driver": DRIVER, "parameters": {
                "apiVersion": "netdra.dev/v1alpha2", "kind": "InterfaceConfig",
                "name": "net1", "addresses": [format!("10.233.0.{}/24", 10 + n)],
            }}}],
        }},
    });
    if n == 0 {
        claim["spec"]["devices"]["requests"][0]["exactly"]["capacity"] = json!({"requests": {netdra::SLOTS: "1"}});
    }
    claim
}

/// The pod `shared-N` on claim `shared-N`: busybox pinging `peer` (a bounded number of
/// tries) and printing the outcome, then sleeping.
fn shared_nic_pod(n: usize, peer: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("shared-{n}"), "namespace": "default"},
        "spec": {
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "resourceClaims": [{"name": "nic", "resourceClaimName": format!("shared-{n}")}],
            "containers": [{"name": "app", "image": "localhost/busybox:netdra", "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sh", "-c", format!(
                    "for i in $(seq 30); do if ping -c 1 -W 1 {peer} >/dev/null; then echo PING-OK; break; fi; sleep 1; done; echo PING-DONE; exec sleep 100000"
                )],
                "resources": {"claims": [{"name": "nic"}]}}],
        },
    })
}

/// The NIC as the host shows it: `ip -d link` and its addresses.
fn parent_state() -> String {
    let link = ip(&["-d", "-o", "link", "show", "dev", NIC]);
    let addresses = ip(&["-o", "addr", "show", "dev", NIC]);
    format!("{link} {addresses}")
}

/// `state` less what the kernel changes by itself: an IPv6 address's `tentative` while
/// duplicate address detection runs and, with `while_shared`, the promiscuity a macvlan in
/// bridge mode sets on its parent while it exists.
fn comparable(state: &str, while_shared: bool) -> String {
    let mut words = Vec::new();
    let mut skip_next = false;
    for word in state.split_whitespace() {
        if std::mem::take(&mut skip_next) || word == "tentative" {
            continue;
        }
        if while_shared && word == "promiscuity" {
            skip_next = true;
            continue;
        }
        words.push(word);
    }
    words.join(" ")
}

/// Shared-NIC mode on the real node: the scheduler allocates one parent to two claims
/// (consumable capacity), each pod gets its own macvlan and reaches the other through it, a
/// third claim waits for a slot, and nothing is left when the pods are gone.
async fn shared_nic(
    client: &Client,
    cluster: &Cluster,
    kubeconfig: &Path,
    dir: &Path,
    slices: &Api<ResourceSlice>,
    node: &str,
) {
    // A macvlan has carrier only while its parent is up.
    ip(&["link", "set", NIC, "up"]);
    let parent_before = parent_state();
    let driver = Driver::shared(cluster, kubeconfig, dir, SHARED_SLOTS);
    let device = eventually(
        "the NIC published as shareable",
        Duration::from_secs(30),
        || async move {
            let list = slices.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .filter(|s| s.spec.driver == DRIVER && s.spec.node_name.as_deref() == Some(node))
                .flat_map(|s| s.spec.devices.iter().flatten())
                .find(|d| if_name(d) == Some(NIC) && d.allow_multiple_allocations == Some(true))
                .cloned()
        },
    )
    .await;
    let slots = &device.capacity.as_ref().expect("capacity published")[netdra::SLOTS];
    assert_eq!(slots.value.0, SHARED_SLOTS.to_string(), "{device:?}");
    println!(
        "shared NIC: {NIC} published once as {} with {} slots",
        device.name, slots.value.0
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let claims: Api<ResourceClaim> = Api::namespaced(client.clone(), "default");
    for n in 0..3 {
        create(client, &shared_nic_claim(n), false).await;
    }
    // Each pings the other's address.
    create(client, &shared_nic_pod(0, "10.233.0.11"), false).await;
    create(client, &shared_nic_pod(1, "10.233.0.10"), false).await;
    let mut macs = Vec::new();
    let mut share_ids = Vec::new();
    let mut namespaces = Vec::new();
    for n in 0..2 {
        let name = format!("shared-{n}");
        let pod = running_pod(&pods, &name, Duration::from_secs(90)).await;
        let netns = pod_netns(cluster.var("CRI_SOCKET"), pod.metadata.uid.as_deref().unwrap()).await;
        let link = ip(&["-n", &netns, "-d", "-o", "link", "show", "dev", "net1"]);
        assert!(
            link.contains("macvlan mode bridge"),
            "{name}: net1 is a macvlan: {link}"
        );
        // A link whose parent is in another namespace shows as `net1@ifN`.
        assert!(link.contains("net1@if"), "{name}: on a parent outside the pod: {link}");
        let addresses = ip(&["-n", &netns, "-o", "addr", "show", "dev", "net1"]);
        assert!(addresses.contains(&format!("10.233.0.{}/24", 10 + n)), "{addresses}");
        namespaces.push(netns);
        let mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("a MAC in {link}"))
            .to_owned();
        macs.push(mac);
        let claim = claims.get(&name).await.unwrap();
        let result = &claim
            .status
            .as_ref()
            .unwrap()
            .allocation
            .as_ref()
            .unwrap()
            .devices
            .as_ref()
            .unwrap()
            .results
            .as_ref()
            .unwrap()[0];
        assert_eq!(result.device, device.name, "{name}: allocated the shared NIC");
        let share_id = result
            .share_id
            .clone()
            .unwrap_or_else(|| panic!("{name}: a share ID: {result:?}"));
        let entry = wait_ready(&claims, &name).await;
        assert_eq!(
            entry["shareID"],
            json!(share_id),
            "{name}: the status entry carries the share ID: {entry}"
        );
        assert_eq!(entry["networkData"]["ips"], json!([format!("10.233.0.{}/24", 10 + n)]));
        share_ids.push(share_id);
    }
    assert_ne!(macs[0], macs[1], "each macvlan has its own MAC");
    assert_ne!(share_ids[0], share_ids[1], "two allocations of one device");
    assert_eq!(
        comparable(&parent_state(), true),
        comparable(&parent_before, true),
        "the parent stays on the host, unchanged"
    );
    for n in 0..2 {
        let name = format!("shared-{n}");
        let log = eventually(&format!("{name}'s ping"), Duration::from_secs(60), || {
            let client = client.clone();
            let name = name.clone();
            async move {
                let log = container_log(&client, &name).await;
                log.contains("PING-DONE").then_some(log)
            }
        })
        .await;
        assert!(
            log.contains("PING-OK"),
            "{name} reached its peer over the shared NIC:\n{log}"
        );
    }
    println!(
        "shared NIC: two pods, macvlans {} and {}, reach each other",
        macs[0], macs[1]
    );

    // A third claim beyond the capacity: the scheduler leaves it unallocated, the pod pending.
    create(client, &shared_nic_pod(2, "10.233.0.10"), false).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let third = pods.get("shared-2").await.unwrap();
    let scheduled = third
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "PodScheduled"))
        .map(|c| (c.status.clone(), c.reason.clone()));
    assert_eq!(
        scheduled,
        Some(("False".to_owned(), Some("Unschedulable".to_owned()))),
        "the third pod waits for a slot"
    );
    let claim = claims.get("shared-2").await.unwrap();
    assert!(
        claim.status.as_ref().and_then(|s| s.allocation.as_ref()).is_none(),
        "the third claim stays unallocated: {:?}",
        claim.status
    );
    println!("shared NIC: a third claim stays unallocated while both slots are taken");

    // A slot freed: the third pod gets it.
    pods.delete("shared-0", &DeleteParams::default()).await.unwrap();
    wait_pod_gone(&pods, "shared-0").await;
    running_pod(&pods, "shared-2", Duration::from_secs(90)).await;
    println!("shared NIC: a slot freed, the third pod runs");
    // The second pod's namespace held past its pod: a macvlan dies with its namespace, so only
    // while it is held does its absence show that the agent's detach deleted it.
    let held = HeldNetns::hold(&namespaces[1], dir);
    for n in [1, 2] {
        pods.delete(&format!("shared-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    for n in [1, 2] {
        wait_pod_gone(&pods, &format!("shared-{n}")).await;
    }
    for n in 0..3 {
        claims
            .delete(&format!("shared-{n}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    let left = held.links();
    assert!(
        left.contains(": lo:") && !left.contains("net1"),
        "the agent deleted the macvlan of the stopped pod, whose namespace is still held: {left}"
    );
    drop(held);
    let macvlans = ip(&["-d", "-o", "link", "show", "type", "macvlan"]);
    assert!(macvlans.trim().is_empty(), "no subinterface on the host: {macvlans}");
    assert_eq!(
        comparable(&parent_state(), false),
        comparable(&parent_before, false),
        "the parent as it was, promiscuity included"
    );
    assert!(
        !driver.log().contains(" 403 ") && !driver.log().contains("forbidden"),
        "the ServiceAccount's RBAC was enough for shared NICs:\n{}",
        driver.log()
    );
    driver.stop();
    println!("shared NIC: pods gone, no subinterface left, the parent as it was");
}

/// A pod's network namespace held by a bind mount past its pod, released when dropped.
struct HeldNetns {
    mount: PathBuf,
}

impl HeldNetns {
    /// Holds the namespace named `name` (under `/var/run/netns`) at a file in `dir`.
    fn hold(name: &str, dir: &Path) -> Self {
        let mount = dir.join(format!("held-{name}"));
        std::fs::write(&mount, b"").unwrap();
        let source = Path::new("/var/run/netns").join(name);
        let status = Command::new("mount")
            .arg("--bind")
            .arg(&source)
            .arg(&mount)
            .status()
            .unwrap();
        assert!(status.success(), "bind-mount {}", source.display());
        Self { mount }
    }

    /// `ip link` inside the held namespace.
    fn links(&self) -> String {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.mount.display()))
            .args(["ip", "-o", "link", "show"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for HeldNetns {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.mount);
    }
}
