//! Every document in `deploy/` parses into its typed Kubernetes object with nothing left over
//! (a field the type does not know would be lost on the way back, and fails the test).
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Namespace, Pod, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
        resource::v1::{DeviceClass, ResourceClaimTemplate},
    },
    serde::{Serialize, de::DeserializeOwned},
};
use serde_json::Value;

fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    text.split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<Value>(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn strict<T: DeserializeOwned + Serialize>(doc: &Value) {
    let typed: T = serde_json::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{} {}: {e}", doc["kind"], doc["metadata"]["name"]));
    assert_eq!(
        &serde_json::to_value(&typed).unwrap(),
        doc,
        "{} {} has fields its type does not know",
        doc["kind"],
        doc["metadata"]["name"]
    );
}

fn check(doc: &Value) -> String {
    let kind = doc["kind"].as_str().unwrap().to_owned();
    match (doc["apiVersion"].as_str().unwrap(), kind.as_str()) {
        ("v1", "Namespace") => strict::<Namespace>(doc),
        ("v1", "ServiceAccount") => strict::<ServiceAccount>(doc),
        ("v1", "Pod") => strict::<Pod>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => strict::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => strict::<ClusterRoleBinding>(doc),
        ("apps/v1", "DaemonSet") => strict::<DaemonSet>(doc),
        ("resource.k8s.io/v1", "DeviceClass") => strict::<DeviceClass>(doc),
        ("resource.k8s.io/v1", "ResourceClaimTemplate") => strict::<ResourceClaimTemplate>(doc),
        (api, kind) => panic!("unexpected {api} {kind}"),
    }
    kind
}

#[test]
fn install_and_example_parse_into_their_types() {
    let kinds: Vec<String> = documents("install.yaml").iter().map(check).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "DeviceClass"
        ]
    );
    let kinds: Vec<String> = documents("example.yaml").iter().map(check).collect();
    assert_eq!(kinds, ["ResourceClaimTemplate", "Pod"]);
}

#[test]
fn the_daemonset_reads_its_node_name_and_probes_the_health_endpoints() {
    let docs = documents("install.yaml");
    let ds: DaemonSet =
        serde_json::from_value(docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap().clone()).unwrap();
    let pod = ds.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let env = c.env.as_ref().unwrap();
    let node = env.iter().find(|e| e.name == "NODE_NAME").unwrap();
    assert_eq!(
        node.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
        "spec.nodeName"
    );
    let path =
        |p: &Option<k8s_openapi::api::core::v1::Probe>| p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone();
    assert_eq!(path(&c.liveness_probe).as_deref(), Some("/healthz"));
    assert_eq!(path(&c.readiness_probe).as_deref(), Some("/readyz"));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    for needed in [
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/kubelet/plugins",
        "/var/run/nri",
        "/var/run/netns",
    ] {
        assert!(mounts.contains(&needed), "{needed} not mounted: {mounts:?}");
    }
    assert_eq!(pod.host_network, Some(true));
}

/// kind's own schema (only the fields used), unknown fields rejected.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KindCluster {
    kind: String,
    api_version: String,
    name: String,
    nodes: Vec<KindNode>,
    containerd_config_patches: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct KindNode {
    role: String,
    image: String,
}

#[test]
fn the_kind_cluster_enables_nri_on_kubernetes_1_34_or_later() {
    let docs = documents("kind.yaml");
    let cluster: KindCluster = serde_json::from_value(docs[0].clone()).unwrap();
    assert_eq!(
        (cluster.kind.as_str(), cluster.api_version.as_str()),
        ("Cluster", "kind.x-k8s.io/v1alpha4")
    );
    for node in &cluster.nodes {
        let minor: u32 = node
            .image
            .split(":v1.")
            .nth(1)
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(minor >= 34, "{}", node.image);
    }
    assert!(
        cluster
            .containerd_config_patches
            .iter()
            .any(|p| p.contains("io.containerd.nri.v1.nri") && p.contains("disable = false"))
    );
}
