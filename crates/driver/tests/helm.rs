//! Privileged: netdra deployed as users deploy it, on the real single-node Kubernetes of
//! `tests/cluster`. The image `scripts/image.sh` built without Docker is imported into the
//! node's containerd; the project's `helm` (built from its Go module) installs the chart; the
//! agent runs as the DaemonSet's pod, not privileged, with the chart's mounts and capabilities.
//! Each step is read back from the real components:
//! - the agent's pod Running and Ready (its probes answer), restart count 0; its NIC published;
//! - a workload pod with a claim runs with `net1` configured as the claim says (`ip -n` in its
//!   namespace); the claim's status says Ready=True; the agent's log, read through the pod log
//!   API (`kubectl logs`), names the claim it prepared;
//! - with the agent's own token (the one the kubelet mounted in its pod): a ResourceSlice for
//!   another node is refused by the chart's admission policy, one for its own node is accepted;
//!   a status write for another driver's entries is refused by the API server;
//! - the agent's pod deleted while the workload runs: the DaemonSet brings a new one, the
//!   workload keeps its interface; the workload deleted afterwards: the interface comes home;
//! - `helm uninstall`: the agent's pod and its sockets go; the cluster stopped: nothing of it is
//!   left on the host.
#![allow(missing_docs, clippy::unwrap_used)]

mod real_node;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::Pod,
    resource::v1::{ResourceClaim, ResourceSlice},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
};
use real_node::*;
use serde_json::{Value, json};
use testkit::HostSnapshot;

const NAMESPACE: &str = "netdra";
const AGENT_SELECTOR: &str = "app.kubernetes.io/name=netdra";

/// The project's helm against the cluster.
fn helm_on(cluster: &Cluster, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.extend(["--kubeconfig", cluster.var("KUBECONFIG")]);
    helm(&args)
}

/// The chart's release: uninstalled (waiting for its pods to go) when dropped before
/// [`Release::uninstall`], so a failing test leaves no DaemonSet recreating the agent while
/// the cluster stops.
struct Release<'a> {
    cluster: &'a Cluster,
    installed: bool,
}

impl Release<'_> {
    fn uninstall(mut self) -> String {
        self.installed = false;
        helm_on(
            self.cluster,
            &["uninstall", "netdra", "--namespace", NAMESPACE, "--wait"],
        )
    }
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if self.installed {
            let _ = Command::new("bash")
                .arg(workspace().join("scripts/helm.sh"))
                .args([
                    "uninstall",
                    "netdra",
                    "--namespace",
                    NAMESPACE,
                    "--wait",
                    "--timeout",
                    "60s",
                ])
                .args(["--kubeconfig", self.cluster.var("KUBECONFIG")])
                .status();
        }
    }
}

/// The chart's values for this node: its kubelet's root directory, its containerd's NRI socket,
/// the API server on the host (no kube-proxy here), the image imported (never pulled), the
/// test's NIC only.
fn values(cluster: &Cluster) -> Value {
    let (host, port) = cluster.var("API_SERVER").rsplit_once(':').unwrap();
    json!({
        "kubeletRootDir": cluster.var("KUBELET_ROOT"),
        "nriSocket": cluster.var("NRI_SOCKET"),
        "cdiDir": cluster.var("CDI_DIR"),
        "apiServer": {"host": host, "port": port},
        "image": {"pullPolicy": "Never"},
        "deviceFilter": format!("device.attributes[\"{DRIVER}\"].ifName == \"{NIC}\""),
    })
}

/// The agent's pod, Running and Ready, other than `replaced` (a pod that was deleted).
async fn ready_agent(pods: &Api<Pod>, replaced: Option<&str>, timeout: Duration) -> Pod {
    eventually("the agent's pod Running and Ready", timeout, || {
        let pods = pods.clone();
        let replaced = replaced.map(str::to_owned);
        async move {
            let list = pods.list(&ListParams::default().labels(AGENT_SELECTOR)).await.ok()?;
            list.items.into_iter().find(|p| {
                let status = p.status.as_ref();
                p.metadata.uid.as_deref() != replaced.as_deref()
                    && p.metadata.deletion_timestamp.is_none()
                    && status.and_then(|s| s.phase.as_deref()) == Some("Running")
                    && status
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        }
    })
    .await
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status.as_ref().unwrap().container_statuses.as_ref().unwrap()[0].restart_count
}

/// The token the kubelet mounted in the agent's pod: the agent's own credentials.
fn mounted_token(cluster: &Cluster, pod: &Pod) -> String {
    let volumes = Path::new(cluster.var("KUBELET_ROOT"))
        .join("pods")
        .join(pod.metadata.uid.as_deref().unwrap())
        .join("volumes/kubernetes.io~projected");
    let dir = std::fs::read_dir(&volumes)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("kube-api-access-"))
        .unwrap_or_else(|| panic!("no service account token volume in {}", volumes.display()));
    std::fs::read_to_string(dir.path().join("token")).unwrap()
}

/// A one-device ResourceSlice of `driver` for `node`, its pool named `pool`.
fn slice(driver: &str, node: &str, pool: &str) -> ResourceSlice {
    serde_json::from_value(json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": format!("policy-check-{pool}")},
        "spec": {"driver": driver, "nodeName": node, "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "policy-check"}]},
    }))
    .unwrap()
}

/// The API server's refusal, or the test fails.
fn refusal(result: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

/// What the agent's own token may and may not write: ResourceSlices of its own driver on its own
/// node only (the chart's admission policy), its own driver's entries of a claim's status only
/// (the API server's per-driver check on Kubernetes >= 1.36, the chart's second policy before).
async fn least_privilege(admin: &Client, agent: &Client, node: &str, claim: &ResourceClaim) {
    let slices: Api<ResourceSlice> = Api::all(agent.clone());
    let params = PostParams::default();
    let refused = refusal(
        slices
            .create(&params, &slice(DRIVER, "another-node", "another-node"))
            .await,
    );
    println!(
        "agent token, create a ResourceSlice of node another-node: refused ({} {}): {}",
        refused.code, refused.reason, refused.message
    );
    assert!(
        refused.message.contains(&format!(
            "the netdra agent on node {node} may not write ResourceSlices of node another-node"
        )),
        "{refused:?}"
    );
    // Another node's slice that exists (the admin made it): neither changed nor deleted.
    let theirs = Api::<ResourceSlice>::all(admin.clone())
        .create(&params, &slice(DRIVER, "another-node", "another-node"))
        .await
        .unwrap();
    let name = theirs.metadata.name.clone().unwrap();
    let mut changed = theirs.clone();
    changed.spec.pool.generation += 1;
    let refused = refusal(slices.replace(&name, &params, &changed).await);
    assert!(
        refused
            .message
            .contains("may not write ResourceSlices of node another-node"),
        "{refused:?}"
    );
    let refused = refusal(slices.delete(&name, &DeleteParams::default()).await);
    println!(
        "agent token, update and delete of node another-node's slice: refused: {}",
        refused.message
    );
    assert!(
        refused
            .message
            .contains("may not write ResourceSlices of node another-node"),
        "{refused:?}"
    );
    Api::<ResourceSlice>::all(admin.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    // Another driver's slice on its own node.
    let refused = refusal(
        slices
            .create(&params, &slice("other.example.com", node, "other-driver"))
            .await,
    );
    println!(
        "agent token, a slice of driver other.example.com on its node: refused: {}",
        refused.message
    );
    assert!(
        refused.message.contains(&format!(
            "the netdra agent of driver {DRIVER} may not write ResourceSlices of driver other.example.com"
        )),
        "{refused:?}"
    );
    let own = slice(DRIVER, node, "policy-check");
    slices.create(&params, &own).await.unwrap();
    slices
        .delete(own.metadata.name.as_deref().unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    println!("agent token, a ResourceSlice of its own node {node}: accepted (and deleted)");

    // Claims are read one by one (those of its node's pods); the cluster's claims are not
    // listed or watched: the agent's token may not.
    let refused = refusal(
        Api::<ResourceClaim>::all(agent.clone())
            .list(&ListParams::default())
            .await,
    );
    println!(
        "agent token, list every ResourceClaim: refused ({} {})",
        refused.code, refused.reason
    );
    assert_eq!(refused.code, 403, "{refused:?}");

    let claims: Api<ResourceClaim> = Api::namespaced(agent.clone(), "default");
    let mut devices = serde_json::to_value(&claim.status.as_ref().unwrap().devices).unwrap();
    devices
        .as_array_mut()
        .unwrap()
        .push(json!({"driver": "other.example.com", "pool": node, "device": "other0"}));
    let refused = refusal(
        claims
            .patch_status(
                claim.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"devices": devices}})),
            )
            .await,
    );
    println!(
        "agent token, another driver's entry on claim {}: refused ({} {}): {}",
        claim.metadata.name.as_deref().unwrap(),
        refused.code,
        refused.reason,
        refused.message
    );
    // Kubernetes >= 1.36 refuses it in its own per-driver check; 1.34 and 1.35 refuse this one
    // in validation already (the device is not allocated), before the chart's policy.
    let by_server = refused
        .message
        .contains(r#"changing status.devices requires resource="resourceclaims/driver""#)
        && refused.message.contains("other.example.com");
    let by_validation = refused.message.contains("must be an allocated device in the claim");
    assert!(by_server || by_validation, "{refused:?}");

    // Taking the claim from its pod (its reservation): the server's `resourceclaims/binding`
    // check on >= 1.36, the chart's claim-status policy on 1.34 and 1.35.
    let refused = refusal(
        claims
            .patch_status(
                claim.metadata.name.as_deref().unwrap(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"reservedFor": []}})),
            )
            .await,
    );
    println!(
        "agent token, the claim's reservedFor emptied: refused ({} {}): {}",
        refused.code, refused.reason, refused.message
    );
    let by_server = refused
        .message
        .contains(r#"changing status.allocation or status.reservedFor requires resource="resourceclaims/binding""#);
    let by_policy = refused
        .message
        .contains("the netdra agent may not change a claim's reservedFor");
    assert!(by_server || by_policy, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netdra_installed_by_helm_on_a_real_kubernetes_node() {
    if !cluster_available()
        || !testkit::available_or_skip(
            image_archive().exists(),
            &format!(
                "no netdra image at {} (scripts/image.sh, as scripts/test.sh does)",
                image_archive().display()
            ),
        )
    {
        return;
    }
    let host_before = HostSnapshot::take("netdra-helm");
    let started = Instant::now();
    let (veth, cluster) = start_cluster();
    let client = admin(&cluster).await;
    let node = cluster.var("NODE_NAME").to_owned();
    cluster.load(&image_archive());

    // helm install, as a user runs it (with this node's values).
    let dir = tempfile::tempdir().unwrap();
    let values_file = dir.path().join("values.yaml");
    std::fs::write(&values_file, serde_yaml_ng::to_string(&values(&cluster)).unwrap()).unwrap();
    let install = helm_on(
        &cluster,
        &[
            "install",
            "netdra",
            "deploy/helm/netdra",
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            "--values",
            values_file.to_str().unwrap(),
        ],
    );
    let release = Release {
        cluster: &cluster,
        installed: true,
    };
    println!("helm install:\n{install}");
    let agents: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let agent = ready_agent(&agents, None, Duration::from_secs(90)).await;
    let agent_name = agent.metadata.name.clone().unwrap();
    let security = serde_json::to_value(
        agent.spec.as_ref().unwrap().containers[0]
            .security_context
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(security["privileged"], false, "{security}");
    println!(
        "agent pod {agent_name} Running and Ready (probes answered), not privileged: {}",
        security["capabilities"]
    );

    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let device = wait_published(&slices, &node).await;
    println!("published {NIC} as device {device} on node {node}, from the agent's pod");

    // A workload with a claim: its interface configured as the claim says.
    let (running, claim_name) = run_workload(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod_uid = running.metadata.uid.clone().unwrap();
    let netns = pod_netns(cluster.var("CRI_SOCKET"), &pod_uid).await;
    assert_net1_configured(&netns);
    println!("pod {pod_uid}: net1 in {netns} with 10.230.0.2/24, MTU 1400, the route");
    let claims: Api<ResourceClaim> = Api::namespaced(client.clone(), "default");
    let entry = wait_ready(&claims, &claim_name).await;
    assert_eq!(entry["networkData"]["interfaceName"], "net1");
    println!("claim {claim_name}: {}", entry["networkData"]);

    // `kubectl logs`: the agent's JSON log, through the API server and the kubelet.
    let logs = agents.logs(&agent_name, &LogParams::default()).await.unwrap();
    let prepared = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["fields"]["message"] == "claim prepared")
        .unwrap_or_else(|| panic!("no `claim prepared` in the agent's log:\n{logs}"));
    assert!(prepared.to_string().contains(&claim_name), "{prepared}");
    println!("kubectl logs {agent_name}: {prepared}");

    // With the agent's own token.
    let token_kubeconfig = dir.path().join("agent.kubeconfig");
    cluster.token_kubeconfig(&mounted_token(&cluster, &agent), &token_kubeconfig);
    let as_agent = kubeconfig_client(&token_kubeconfig).await;
    least_privilege(&client, &as_agent, &node, &claims.get(&claim_name).await.unwrap()).await;

    // The agent's pod deleted under the running workload: the DaemonSet brings a new one.
    let agent = agents.get(&agent_name).await.unwrap();
    assert_eq!(restart_count(&agent), 0, "the agent restarted in its pod");
    agents.delete(&agent_name, &DeleteParams::default()).await.unwrap();
    let replacement = ready_agent(&agents, agent.metadata.uid.as_deref(), Duration::from_secs(90)).await;
    assert_eq!(restart_count(&replacement), 0);
    assert!(ip(&["-n", &netns, "addr", "show", "dev", "net1"]).contains("10.230.0.2/24"));
    assert!(ready_entry(&claims.get(&claim_name).await.unwrap()).is_some());
    println!(
        "agent pod {agent_name} deleted: the DaemonSet's {} Ready (restarts 0); the pod keeps net1",
        replacement.metadata.name.as_deref().unwrap()
    );

    // The workload deleted: the new agent returns the interface.
    pods.delete("with-secondary-nic", &DeleteParams::default())
        .await
        .unwrap();
    wait_nic_home(Duration::from_secs(60)).await;
    wait_pod_gone(&pods, "with-secondary-nic").await;
    println!("pod deleted: {NIC} back on the host");

    // helm uninstall: the agent's pod and its sockets go.
    println!("helm uninstall:\n{}", release.uninstall());
    eventually("the agent's pod gone", Duration::from_secs(60), || {
        let agents = agents.clone();
        async move {
            let list = agents.list(&ListParams::default().labels(AGENT_SELECTOR)).await.ok()?;
            list.items.is_empty().then_some(())
        }
    })
    .await;
    let root = Path::new(cluster.var("KUBELET_ROOT"));
    for socket in [
        root.join(format!("plugins_registry/{DRIVER}-reg.sock")),
        root.join(format!("plugins/{DRIVER}/dra.sock")),
    ] {
        assert!(!socket.exists(), "{} is left", socket.display());
    }
    println!("uninstalled: the agent's pod and sockets are gone");
    println!("the whole run took {:.1}s", started.elapsed().as_secs_f64());

    drop(veth);
    drop(cluster);
    host_before.assert_restored(&[]);
    println!("stopped: no namespace, link, socket, mount or process left");
}
