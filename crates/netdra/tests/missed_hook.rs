//! Privileged: a pod whose RunPodSandbox never reached the agent is caught at CreateContainer,
//! through the SDK's runtime-side NRI harness (containerd always delivers RunPodSandbox first,
//! so a real runtime cannot stage this): attached late when its namespace exists, or the
//! container refused, naming claim and device, with `Ready=False` on the claim.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{dra_client, ip_ok as ip, wait_published};
use kubeletplugin::{PluginOptions, proto::dra::v1 as dra};
use netdev::Sysfs;
use netdev_k8s::{DeviceFilter, InventoryConfig};
use nri::{
    StubOptions,
    proto::api::{
        Container, CreateContainerRequest, CreateContainerResponse, LinuxNamespace, LinuxPodSandbox, PodSandbox,
    },
    runtime::{RuntimeListener, RuntimeOptions},
};
use serde_json::{Value, json};
use testkit::is_root;
use testkit::{FakeApiServer, RESOURCE_CLAIMS};

const DRIVER: &str = "missed.netdra.dev";
const NODE: &str = "missed-node";

/// The veths and namespace, deleted by name when dropped.
struct Links;

impl Drop for Links {
    fn drop(&mut self) {
        ip(&["netns", "del", "ndmhns"]);
        for name in ["ndmh0", "ndmh1"] {
            ip(&["link", "del", name]);
        }
    }
}

fn pod(name: &str, netns: &str) -> PodSandbox {
    PodSandbox {
        id: format!("sandbox-{name}"),
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        linux: Some(LinuxPodSandbox {
            namespaces: vec![LinuxNamespace {
                r#type: "network".into(),
                path: netns.into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn claim(name: &str, device: &str, pod: &str) -> Value {
    let parameters = json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig", "name": "net1"});
    json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "netdra"}}]}},
        "status": {
            "allocation": {"devices": {
                "results": [{"request": "nic", "driver": DRIVER, "pool": NODE, "device": device}],
                "config": [{"source": "FromClaim", "opaque": {"driver": DRIVER, "parameters": parameters}}],
            }},
            "reservedFor": [{"resource": "pods", "name": pod, "uid": format!("uid-{pod}")}],
        },
    })
}

async fn wait_ready(api: &FakeApiServer, claim: &str, status: &str) -> Value {
    let start = Instant::now();
    loop {
        let object = api.object(&RESOURCE_CLAIMS, "default", claim).unwrap();
        if let Some(entry) = object.pointer("/status/devices/0")
            && entry["conditions"][0]["status"] == status
        {
            return entry.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{claim} never Ready={status}: {object}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_container_catches_a_missed_run_pod_sandbox() {
    if !testkit::available_or_skip(is_root(), "the missed-hook test needs root (veths, network namespaces)") {
        return;
    }
    let _links = Links;
    for (host, peer) in [("ndmh0", "ndmhp0"), ("ndmh1", "ndmhp1")] {
        ip(&["link", "del", host]);
        assert!(ip(&["link", "add", host, "type", "veth", "peer", "name", peer]));
    }
    ip(&["netns", "del", "ndmhns"]);
    assert!(ip(&["netns", "add", "ndmhns"]));

    let dir = tempfile::tempdir().unwrap();
    let api = FakeApiServer::start().await.unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let mut plugin = PluginOptions::new(DRIVER);
    // The fake API server holds claims, not pods: the claims are watched.
    plugin.claim_cache = kubeletplugin::ClaimCacheMode::Watch;
    plugin.registry_dir = dir.path().join("registry");
    plugin.plugin_dir = dir.path().join("plugins");
    let dra_socket = plugin.dra_socket();
    let mut nri = StubOptions::new("netdra", "10");
    nri.socket = dir.path().join("nri.sock");
    let inventory = InventoryConfig::new(
        DRIVER,
        Sysfs::default(),
        DeviceFilter::parse(Some(&format!(
            "device.attributes[\"{DRIVER}\"].ifName in [\"ndmh0\", \"ndmh1\"]"
        )))
        .unwrap(),
    );
    let agent = netdra::start(
        netdra::AgentOptions::new(plugin, nri, NODE, inventory),
        netdra::HostDevice,
        api.client(),
    )
    .await
    .unwrap();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();

    let devices = wait_published(&api, 2).await;
    let device = |ifname: &str| devices[ifname].clone();
    api.seed(&RESOURCE_CLAIMS, "default", claim("late", &device("ndmh0"), "late"));
    api.seed(&RESOURCE_CLAIMS, "default", claim("lost", &device("ndmh1"), "lost"));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let claims = ["late", "lost"]
        .iter()
        .map(|n| dra::Claim {
            namespace: "default".into(),
            name: (*n).into(),
            uid: format!("uid-{n}"),
        })
        .collect();
    let answer = dra_client(&dra_socket)
        .await
        .node_prepare_resources(dra::NodePrepareResourcesRequest { claims })
        .await
        .unwrap()
        .into_inner();
    assert!(
        answer.claims.values().all(|c| c.error.is_empty()),
        "{:?}",
        answer.claims
    );

    let create = |pod: PodSandbox| CreateContainerRequest {
        pod: Some(pod),
        container: Some(Container {
            id: "c".into(),
            name: "app".into(),
            ..Default::default()
        }),
    };
    // The namespace exists: attached late, the container goes ahead.
    let late = pod("late", "/var/run/netns/ndmhns");
    runtime
        .call::<_, CreateContainerResponse>("CreateContainer", &create(late))
        .await
        .unwrap();
    assert!(
        ip(&["-n", "ndmhns", "link", "show", "net1"]),
        "net1 attached at CreateContainer"
    );
    let entry = wait_ready(&api, "late", "True").await;
    assert_eq!(entry["networkData"]["interfaceName"], "net1");

    // No namespace to attach to: the container is refused, naming claim and device.
    let lost = pod("lost", "/var/run/netns/ndmh-no-such-netns");
    let error = runtime
        .call::<_, CreateContainerResponse>("CreateContainer", &create(lost))
        .await
        .unwrap_err();
    println!("CreateContainer refused: {}", error.message);
    assert!(
        error.message.contains("default/lost") && error.message.contains(&device("ndmh1")),
        "{}",
        error.message
    );
    let entry = wait_ready(&api, "lost", "False").await;
    assert_eq!(entry["conditions"][0]["reason"], "NoNetworkNamespace");
    assert!(ip(&["link", "show", "ndmh1"]), "ndmh1 stays on the host");

    runtime
        .stop_pod_sandbox(pod("late", "/var/run/netns/ndmhns"))
        .await
        .unwrap();
    assert!(ip(&["link", "show", "ndmh0"]), "ndmh0 back on the host");
    drop(runtime);
    agent.shutdown().await;
}
