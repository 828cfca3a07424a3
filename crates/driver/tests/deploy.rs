//! Every document in `deploy/` parses into its typed Kubernetes object with nothing left over
//! (a field the type does not know would be lost on the way back, and fails the test), and the
//! Helm chart (`deploy/helm/netdra`, rendered by the project's `helm`, `scripts/helm.sh`) is what
//! `install.yaml` says: equal to its default rendering, lint-clean, and every place the driver's
//! name appears follows its `driverName` value.
#![allow(missing_docs, clippy::unwrap_used)]

mod real_node;

use std::process::Command;

use k8s_openapi::{
    api::{
        admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
        apps::v1::DaemonSet,
        core::v1::{Namespace, Pod, ServiceAccount},
        rbac::v1::{ClusterRole, ClusterRoleBinding},
        resource::v1::{DeviceClass, ResourceClaimTemplate},
    },
    serde::{Serialize, de::DeserializeOwned},
};
use real_node::{helm, workspace};
use serde_json::Value;

fn documents(file: &str) -> Vec<Value> {
    parse(&std::fs::read_to_string(workspace().join("deploy").join(file)).unwrap())
}

fn parse(text: &str) -> Vec<Value> {
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
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => strict::<ValidatingAdmissionPolicy>(doc),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            strict::<ValidatingAdmissionPolicyBinding>(doc)
        }
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
            "DeviceClass",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding"
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
    // The driver's own plugin directory, not every driver's (their sockets and checkpoints).
    assert_eq!(
        mounts,
        [
            "/var/lib/kubelet/plugins_registry",
            "/var/lib/kubelet/plugins/netdra.dev",
            "/var/run/nri",
            "/var/run/netns",
            "/var/run/cdi",
        ]
    );
    assert_eq!(pod.host_network, Some(true));
    let security = c.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(false));
    let capabilities = security.capabilities.as_ref().unwrap();
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert_eq!(
        capabilities.add.as_deref(),
        Some(&["NET_ADMIN".to_owned(), "SYS_ADMIN".to_owned()][..])
    );
    // The metrics listener is the node's own address (host networking): loopback unless asked.
    assert!(c.args.iter().flatten().any(|a| a == "--metrics-address=127.0.0.1:9177"));
    // Device metadata's CDI specs go where the runtime reads them, writable.
    let args: Vec<&str> = c.args.iter().flatten().map(String::as_str).collect();
    assert!(
        args.contains(&"--device-metadata=true") && args.contains(&"--cdi-dir=/var/run/cdi"),
        "{args:?}"
    );
    let cdi = c.volume_mounts.iter().flatten().find(|m| m.name == "cdi").unwrap();
    assert_ne!(cdi.read_only, Some(true));
}

#[test]
fn install_yaml_is_the_charts_default_rendering() {
    helm(&["lint", "--strict", "deploy/helm/netdra"]);
    let out = Command::new("bash")
        .arg(workspace().join("deploy/render.sh"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rendered = String::from_utf8(out.stdout).unwrap();
    let file = std::fs::read_to_string(workspace().join("deploy/install.yaml")).unwrap();
    assert!(
        rendered == file,
        "deploy/install.yaml differs from the chart's default rendering: run deploy/render.sh"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn every_use_of_the_driver_name_follows_the_charts_value() {
    const NAME: &str = "nics.example.com";
    let docs = parse(&helm(&[
        "template",
        "nics",
        "deploy/helm/netdra",
        "--namespace",
        "nic-system",
        "--set",
        &format!("driverName={NAME}"),
        "--set",
        "kubeletRootDir=/srv/kubelet",
    ]));
    for doc in &docs {
        check(doc);
    }
    let text = serde_json::to_string(&docs).unwrap();
    assert!(
        !text.contains("netdra.dev"),
        "the default driver name is left somewhere: {text}"
    );

    let rules = find(&docs, "ClusterRole")["rules"].as_array().unwrap();
    let driver_rule = rules
        .iter()
        .find(|r| r["resources"][0] == "resourceclaims/driver")
        .unwrap();
    assert_eq!(driver_rule["resourceNames"], serde_json::json!([NAME]));

    let class = find(&docs, "DeviceClass");
    assert_eq!(class["metadata"]["name"], NAME);
    assert_eq!(
        class["spec"]["selectors"][0]["cel"]["expression"],
        format!("device.driver == \"{NAME}\"")
    );

    let container = &find(&docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&format!("--driver-name={NAME}").as_str()), "{args:?}");
    assert!(args.contains(&"--kubelet-plugins-dir=/srv/kubelet/plugins"), "{args:?}");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert!(
        mounts.contains(&format!("/srv/kubelet/plugins/{NAME}").as_str()),
        "{mounts:?}"
    );

    let policy = find(&docs, "ValidatingAdmissionPolicy");
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        "request.userInfo.username == \"system:serviceaccount:nic-system:nics\""
    );
    let validations = policy["spec"]["validations"].as_array().unwrap();
    assert!(
        validations
            .iter()
            .any(|v| v["expression"] == format!("variables.slice.spec.driver == \"{NAME}\"")),
        "{validations:?}"
    );
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .collect();
    let bound: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ValidatingAdmissionPolicyBinding")
        .map(|b| &b["spec"]["policyName"])
        .collect();
    for policy in &policies {
        assert!(
            bound.contains(&&policy["metadata"]["name"]),
            "{} is not bound",
            policy["metadata"]["name"]
        );
        assert_eq!(
            policy["spec"]["matchConditions"][0]["expression"],
            "request.userInfo.username == \"system:serviceaccount:nic-system:nics\""
        );
    }
    let status_policy = policies
        .iter()
        .find(|p| p["metadata"]["name"] == "nics-claim-status")
        .unwrap();
    let status_rules = serde_json::to_string(&status_policy["spec"]["validations"]).unwrap();
    assert!(
        status_rules.contains(&format!("d.driver != \\\"{NAME}\\\"")),
        "{status_rules}"
    );
}

/// kind's own schema (only the fields used), unknown fields rejected.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[allow(dead_code)]
struct KindCluster {
    kind: String,
    api_version: String,
    name: String,
    /// kind's `featureGates`: set on every component.
    #[serde(default)]
    feature_gates: std::collections::BTreeMap<String, bool>,
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
fn the_kind_cluster_enables_nri_and_consumable_capacity_on_kubernetes_1_34_or_later() {
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
        // Shared NICs need consumable capacity, on by default only from 1.36.
        assert!(
            minor >= 36 || cluster.feature_gates.get("DRAConsumableCapacity") == Some(&true),
            "{} without DRAConsumableCapacity",
            node.image
        );
    }
    assert!(
        cluster
            .containerd_config_patches
            .iter()
            .any(|p| p.contains("io.containerd.nri.v1.nri") && p.contains("disable = false"))
    );
}
