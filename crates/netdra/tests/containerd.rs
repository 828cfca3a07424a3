//! The framework end to end on a real containerd (1.7.x and 2.x, NRI enabled): the fake API
//! server holds the claims, a kubelet-like client prepares over the real sockets, pod sandboxes
//! are created through CRI, and what happens is checked in the kernel (`ip -n <pod netns>`),
//! on the claim's status and in the agent's state file. Then the faults, each its own scenario.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::{path::Path, time::Duration};

use common::*;
use serde_json::{Value, json};
use testkit::{flavor_tag, newer_containerd_flavors};

fn config(extra: Value) -> Value {
    let mut c = json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig"});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

fn net1() -> Value {
    config(json!({
        "name": "net1", "mtu": 1400, "addresses": ["10.10.0.2/24"],
        "routes": [{"destination": "10.20.0.0/16", "gateway": "10.10.0.1"}],
    }))
}

fn routes(ns: &str, dev: &str) -> Vec<String> {
    let out = ip(&["-n", ns, "-j", "route", "show", "dev", dev]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| match r["gateway"].as_str() {
            Some(g) => format!("{} via {g}", r["dst"].as_str().unwrap()),
            None => r["dst"].as_str().unwrap().to_owned(),
        })
        .collect()
}

fn host_mtu(name: &str) -> Option<u64> {
    link_json(None, name).map(|l| l["mtu"].as_u64().unwrap())
}

fn is_up(link: &Value) -> bool {
    link["flags"].as_array().unwrap().iter().any(|f| f == "UP")
}

async fn wait_nri_connected(env: &Env, sessions: usize) {
    let start = std::time::Instant::now();
    while env.agent_log().matches("connected to the runtime").count() < sessions {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "NRI never connected: {}",
            env.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_host_link(env: &Env, name: &str) {
    let start = std::time::Instant::now();
    while link_json(None, name).is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} not back on the host: {}",
            env.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acceptance 1, one pod: prepare, start, check inside the pod and on the claim, stop, remove,
/// unprepare, nothing left.
async fn one_pod(mut env: Env) -> Env {
    env.register().await;
    let host = env.veths[0].clone();
    let mtu = host_mtu(&host).unwrap();
    let device = env.device(&host).await;
    let pod = format!("pod-a-{}", env.tag);
    let claim_uid = env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-a", &pod));
    env.prepare(&["c1"]).await;
    assert_eq!(env.state_claims(), [claim_uid], "persisted before Prepare answered");
    // Which runtime and NRI version this run was against, as the agent was told in Configure.
    wait_nri_connected(&env, 1).await;
    let log = env.agent_log();
    let configured = log.lines().find(|l| l.contains("configured by the runtime")).unwrap();
    println!("containerd {}: {configured}", env.ctrd.flavor);

    env.run_pod("pod-a", &pod).await.unwrap();
    let ns = env.netns("pod-a").await;
    let link = link_json(Some(&ns), "net1").unwrap_or_else(|| panic!("net1 in the pod: {}", env.agent_log()));
    assert_eq!(link["mtu"], 1400);
    assert!(is_up(&link), "{link}");
    assert_eq!(addresses(&link), ["10.10.0.2/24"]);
    assert!(
        routes(&ns, "net1").contains(&"10.20.0.0/16 via 10.10.0.1".to_owned()),
        "{:?}",
        routes(&ns, "net1")
    );
    assert!(link_json(None, &host).is_none(), "{host} left the host");
    assert_eq!(
        env.device(&host).await,
        device,
        "still published while it is in the pod"
    );

    let entries = env.wait_ready("c1", "True").await;
    assert_eq!(entries.len(), 1);
    let data = &entries[0]["networkData"];
    assert_eq!(data["interfaceName"], "net1");
    assert_eq!(data["ips"], json!(["10.10.0.2/24"]));
    assert_eq!(data["hardwareAddress"], link["address"]);
    assert_eq!(entries[0]["device"], device.as_str());

    env.stop_pod("pod-a").await;
    wait_host_link(&env, &host).await;
    assert_eq!(host_mtu(&host), Some(mtu), "original MTU restored");
    env.remove_pod("pod-a").await;
    let errors = env.unprepare(&["c1"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    wait_until("status entries removed", Duration::from_secs(10), || {
        env.status_entries("c1").is_empty()
    })
    .await;
    assert!(env.state_claims().is_empty());
    assert!(
        !Path::new("/var/run/netns").join(&ns).exists(),
        "the pod's netns is gone"
    );
    assert!(link_json(None, &host).is_some());
    env
}

/// Acceptance 1, two pods with one device each, and one pod with two claims.
async fn several(mut env: Env) -> Env {
    let mut devices = Vec::new();
    for v in env.veths.clone() {
        devices.push(env.device(&v).await);
    }
    let tag = env.tag.clone();
    let (p1, p2, p3) = (format!("p1-{tag}"), format!("p2-{tag}"), format!("p3-{tag}"));
    let cfg = |name: &str, addr: &str| config(json!({"name": name, "addresses": [addr]}));
    env.seed_claim(
        "c1",
        &[("nic", &devices[0])],
        &[(None, cfg("net1", "10.1.0.2/24"))],
        ("p1", &p1),
    );
    env.seed_claim(
        "c2",
        &[("nic", &devices[1])],
        &[(None, cfg("net1", "10.1.0.3/24"))],
        ("p2", &p2),
    );
    env.seed_claim(
        "c3",
        &[("nic", &devices[2])],
        &[(None, cfg("net1", "10.3.0.2/24"))],
        ("p3", &p3),
    );
    env.seed_claim(
        "c4",
        &[("nic", &devices[3])],
        &[(None, cfg("net2", "10.4.0.2/24"))],
        ("p3", &p3),
    );
    env.prepare(&["c1", "c2", "c3", "c4"]).await;
    for (pod, uid) in [("p1", &p1), ("p2", &p2), ("p3", &p3)] {
        env.run_pod(pod, uid).await.unwrap();
    }
    let (n1, n2, n3) = (env.netns("p1").await, env.netns("p2").await, env.netns("p3").await);
    assert_eq!(addresses(&link_json(Some(&n1), "net1").unwrap()), ["10.1.0.2/24"]);
    assert_eq!(addresses(&link_json(Some(&n2), "net1").unwrap()), ["10.1.0.3/24"]);
    assert_eq!(addresses(&link_json(Some(&n3), "net1").unwrap()), ["10.3.0.2/24"]);
    assert_eq!(addresses(&link_json(Some(&n3), "net2").unwrap()), ["10.4.0.2/24"]);
    for c in ["c1", "c2", "c3", "c4"] {
        env.wait_ready(c, "True").await;
    }
    for pod in ["p1", "p2", "p3"] {
        env.stop_pod(pod).await;
        env.remove_pod(pod).await;
    }
    for v in env.veths.clone() {
        wait_host_link(&env, &v).await;
    }
    let errors = env.unprepare(&["c1", "c2", "c3", "c4"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(env.state_claims().is_empty());
    env
}

/// A claim without addresses: the interface takes its host address and route into the pod,
/// the claim shows that address, and both come back at stop.
async fn carried(mut env: Env) -> Env {
    let host = env.veths[0].clone();
    ip(&["link", "set", &host, "up"]);
    ip(&["addr", "add", "10.50.0.2/24", "dev", &host]);
    ip(&["route", "add", "10.60.0.0/16", "via", "10.50.0.1", "dev", &host]);
    let device = env.device(&host).await;
    let pod = format!("pod-k-{}", env.tag);
    env.seed_claim(
        "c1",
        &[("nic", &device)],
        &[(None, config(json!({"name": "net1"})))],
        ("pod-k", &pod),
    );
    env.prepare(&["c1"]).await;
    env.run_pod("pod-k", &pod).await.unwrap();
    let ns = env.netns("pod-k").await;
    let link = link_json(Some(&ns), "net1").unwrap_or_else(|| panic!("net1 in the pod: {}", env.agent_log()));
    assert_eq!(addresses(&link), ["10.50.0.2/24"]);
    assert!(
        routes(&ns, "net1").contains(&"10.60.0.0/16 via 10.50.0.1".to_owned()),
        "{:?}",
        routes(&ns, "net1")
    );
    let entries = env.wait_ready("c1", "True").await;
    assert_eq!(entries[0]["networkData"]["ips"], json!(["10.50.0.2/24"]));
    env.stop_pod("pod-k").await;
    wait_host_link(&env, &host).await;
    assert_eq!(addresses(&link_json(None, &host).unwrap()), ["10.50.0.2/24"]);
    let host_routes: Vec<String> = serde_json::from_str::<Value>(&ip(&["-j", "route", "show", "dev", &host]))
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| Some(format!("{} via {}", r["dst"].as_str()?, r["gateway"].as_str()?)))
        .collect();
    assert_eq!(host_routes, ["10.60.0.0/16 via 10.50.0.1"]);
    env.remove_pod("pod-k").await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    env
}

#[test]
fn containerd_1_7_pod_lifecycle() {
    serially("1.7", || async {
        scenario("1.7", "l1", 1, one_pod).await.unwrap();
        scenario("1.7", "m1", 4, several).await.unwrap();
        scenario("1.7", "k1", 1, carried).await.unwrap();
    });
}

/// On each containerd 2.x: the Debian-packaged 2.1 and 2.4 built from its Go module (the
/// matrix: 2.2, 2.3).
#[test]
fn containerd_2_pod_lifecycle() {
    for flavor in newer_containerd_flavors() {
        serially(flavor, move || async move {
            scenario(flavor, &flavor_tag("l", flavor), 1, one_pod).await.unwrap();
            scenario(flavor, &flavor_tag("m", flavor), 4, several).await.unwrap();
            scenario(flavor, &flavor_tag("k", flavor), 1, carried).await.unwrap();
        });
    }
}

/// Acceptance 3: invalid configurations fail Prepare per claim, naming the field; nothing moves.
#[test]
fn invalid_configurations_fail_prepare_naming_the_field() {
    serially("2", || async {
        scenario("2", "iv", 2, |env| async move {
            let d0 = env.device(&env.veths[0]).await;
            let d1 = env.device(&env.veths[1]).await;
            let cases: Vec<(&str, Value, &str)> = vec![
                ("unknown-field", config(json!({"nmae": "net1"})), "nmae"),
                ("api-version", json!({"apiVersion": "netdra.dev/v9", "kind": "InterfaceConfig"}), "apiVersion"),
                ("kind", json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "Bridge"}), "kind"),
                ("malformed-json", json!("{\"name\": \"net1\""), "parameters"),
                ("bad-cidr", config(json!({"addresses": ["10.10.0.300/24"]})), "addresses[0]"),
                ("mtu-range", config(json!({"mtu": 70000})), "mtu"),
                ("bad-name", config(json!({"name": "net/1"})), "name"),
                ("long-name", config(json!({"name": "a-very-long-name"})), "name"),
                ("dup-address", config(json!({"addresses": ["10.1.0.2/24", "10.1.0.2/24"]})), "addresses[1]"),
                (
                    "gw-outside",
                    config(json!({"addresses": ["10.1.0.2/24"], "routes": [{"destination": "10.9.0.0/16", "gateway": "10.30.0.1"}]})),
                    "routes[0].gateway",
                ),
                (
                    "route-family",
                    config(json!({"addresses": ["10.1.0.2/24"], "routes": [{"destination": "fd00::/64", "gateway": "10.1.0.1"}]})),
                    "routes[0]",
                ),
                ("bad-mac", config(json!({"hardwareAddress": "02:00:00:00:00"})), "hardwareAddress"),
            ];
            let pod = ("pod-x", "uid-pod-x");
            let mut refused = 0;
            for (name, parameters, field) in &cases {
                env.seed_claim(name, &[("nic", &d0)], &[(None, parameters.clone())], pod);
                let errors = prepare_until_connected(&env, name).await;
                assert!(
                    errors.contains(field) && errors.contains(name),
                    "{name}: the error names claim and field {field}: {errors}"
                );
                println!("invalid config {name}: {errors}");
                refused += 1;
            }
            // Two devices of one claim given the same name.
            env.seed_claim("same-name", &[("a", &d0), ("b", &d1)], &[(None, config(json!({"name": "net1"})))], pod);
            let errors = prepare_until_connected(&env, "same-name").await;
            assert!(errors.contains("name") && errors.contains("already the name"), "{errors}");
            refused += 1;
            // A configuration naming a request the claim lacks.
            env.seed_claim("no-such-request", &[("nic", &d0)], &[(Some("nci"), config(json!({"mtu": 1400})))], pod);
            let errors = prepare_until_connected(&env, "no-such-request").await;
            assert!(errors.contains("requests[0]") && errors.contains("nci"), "{errors}");
            refused += 1;
            println!("invalid configurations refused at Prepare: {refused}/{}", cases.len() + 2);
            assert!(env.state_claims().is_empty(), "nothing prepared");
            for v in &env.veths {
                assert!(link_json(None, v).is_some(), "{v} still on the host");
            }
            env
        })
        .await
        .unwrap();
    });
}

async fn prepare_until_connected(env: &Env, name: &str) -> String {
    loop {
        let errors = env.prepare_once(&[name]).await;
        let error = errors.into_values().next().unwrap();
        if !error.contains("not connected") {
            assert!(!error.is_empty(), "{name} was prepared");
            return error;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Acceptance 4: an attach failure in the pod fails RunPodSandbox, shows on the claim, and the
/// interface is back on the host. On each containerd 2.x.
#[test]
fn an_attach_failure_fails_the_sandbox_and_shows_on_the_claim() {
    for flavor in newer_containerd_flavors() {
        serially(flavor, move || async move { attach_failure(flavor).await });
    }
}

async fn attach_failure(flavor: &'static str) {
    scenario(flavor, &flavor_tag("nt", flavor), 1, |mut env| async move {
        let host = env.veths[0].clone();
        let device = env.device(&host).await;
        let pod = format!("pod-t-{}", env.tag);
        // The pod's CNI interface is eth0: the name is taken.
        let taken = config(json!({"name": "eth0", "addresses": ["10.10.0.2/24"]}));
        env.seed_claim("c1", &[("nic", &device)], &[(None, taken)], ("pod-t", &pod));
        env.prepare(&["c1"]).await;
        let error = env.run_pod("pod-t", &pod).await.unwrap_err();
        println!("RunPodSandbox failed: {}", error.message());
        assert!(
            error.message().contains("eth0") && error.message().contains("c1") && error.message().contains(&device),
            "{}",
            error.message()
        );
        let entries = env.wait_ready("c1", "False").await;
        let message = entries[0]["conditions"][0]["message"].as_str().unwrap();
        assert_eq!(entries[0]["conditions"][0]["reason"], "AttachFailed");
        assert!(message.contains("eth0") && message.contains("c1"), "{message}");
        assert!(link_json(None, &host).is_some(), "{host} back on the host");
        env
    })
    .await
    .unwrap();
}

/// Starts a pod with claim c1 (net1 config) on device 0 and waits until it is attached.
async fn attached_pod(env: &mut Env, pod: &str) -> (String, String) {
    attached_pod_with(env, pod, net1()).await
}

/// Starts a pod with claim c1 (`parameters`) on device 0 and waits until it is attached.
async fn attached_pod_with(env: &mut Env, pod: &str, parameters: Value) -> (String, String) {
    let host = env.veths[0].clone();
    let device = env.device(&host).await;
    let uid = format!("{pod}-{}", env.tag);
    env.seed_claim("c1", &[("nic", &device)], &[(None, parameters)], (pod, &uid));
    env.prepare(&["c1"]).await;
    env.run_pod(pod, &uid).await.unwrap();
    let ns = env.netns(pod).await;
    assert!(link_json(Some(&ns), "net1").is_some(), "{}", env.agent_log());
    env.wait_ready("c1", "True").await;
    (uid, ns)
}

async fn fault_a(mut env: Env) -> Env {
    let host = env.veths[0].clone();
    let device = env.device(&host).await;
    let uid = format!("pod-a-{}", env.tag);
    env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-a", &uid));
    env.prepare(&["c1"]).await;
    env.kill_agent().await;
    // The sandbox starts while no hook is there to attach.
    env.run_pod("pod-a", &uid).await.unwrap();
    let ns = env.netns("pod-a").await;
    assert!(link_json(Some(&ns), "net1").is_none());
    env.start_agent();
    wait_until("the late attach", Duration::from_secs(20), || {
        link_json(Some(&ns), "net1").is_some()
    })
    .await;
    env.wait_ready("c1", "True").await;
    // Its container starts with the interface there.
    env.create_container("pod-a", &uid).await.unwrap();
    env
}

async fn fault_b(mut env: Env) -> Env {
    let (_, _) = attached_pod(&mut env, "pod-b").await;
    env.kill_agent().await;
    env.start_agent();
    wait_nri_connected(&env, 2).await;
    env.stop_pod("pod-b").await;
    wait_host_link(&env, &env.veths[0].clone()).await;
    assert_eq!(host_mtu(&env.veths[0]), Some(1500));
    env.remove_pod("pod-b").await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    assert!(env.state_claims().is_empty());
    env
}

async fn fault_c(mut env: Env) -> Env {
    let (_, ns) = attached_pod(&mut env, "pod-c").await;
    let host = env.veths[0].clone();
    let peer = host.replacen("nde", "ndp", 1);
    let id = env.pods["pod-c"].clone();
    let mut cri = connect_cri(&env.ctrd.cri).await;
    let stop = tokio::spawn(async move {
        cri.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: id })
            .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    env.kill_agent().await;
    stop.await.unwrap().unwrap();
    env.start_agent();
    wait_nri_connected(&env, 2).await;
    env.remove_pod("pod-c").await;
    let errors = env.unprepare(&["c1"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(env.state_claims().is_empty());
    assert!(!Path::new("/var/run/netns").join(&ns).exists());
    // Back on the host, or (a veth, destroyed with the pod's namespace together with its
    // peer) gone from the node: never left in a namespace.
    let home = link_json(None, &host).is_some();
    let destroyed = link_json(None, &host).is_none() && link_json(None, &peer).is_none();
    assert!(home || destroyed, "{host}: home={home}");
    println!(
        "fault (c): {host} {}",
        if home {
            "returned to the host"
        } else {
            "destroyed with the namespace (veth)"
        }
    );
    env
}

async fn fault_d(mut env: Env) -> Env {
    let (_, ns) = attached_pod(&mut env, "pod-d").await;
    let host = env.veths[0].clone();
    env.ctrd.restart();
    wait_nri_connected(&env, 2).await;
    assert!(
        link_json(Some(&ns), "net1").is_some(),
        "still in the pod after the restart"
    );
    assert_eq!(env.state_claims().len(), 1);
    env.cri = connect_cri(&env.ctrd.cri).await;
    // A pod started after the restart gets its interface and gives it back at stop.
    let device = env.device(&env.veths[1]).await;
    let uid = format!("pod-d2-{}", env.tag);
    env.seed_claim("c2", &[("nic", &device)], &[(None, net1())], ("pod-d2", &uid));
    env.prepare(&["c2"]).await;
    env.run_pod("pod-d2", &uid).await.unwrap();
    let ns2 = env.netns("pod-d2").await;
    assert!(link_json(Some(&ns2), "net1").is_some(), "{}", env.agent_log());
    env.wait_ready("c2", "True").await;
    env.stop_pod("pod-d2").await;
    wait_host_link(&env, &env.veths[1].clone()).await;
    env.remove_pod("pod-d2").await;
    // The pod from before the restart: containerd 2.1 does not call the NRI stop and remove
    // hooks for a sandbox it restored (observed), so the kubelet's Unprepare is what returns
    // its interface, or finds it gone with the namespace.
    env.stop_pod("pod-d").await;
    env.remove_pod("pod-d").await;
    let errors = env.unprepare(&["c1", "c2"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(env.state_claims().is_empty());
    let home = link_json(None, &host).is_some();
    println!(
        "fault (d): {host} of the restored pod {}",
        if home {
            "returned to the host"
        } else {
            "destroyed with the namespace (veth)"
        }
    );
    env
}

async fn fault_e(env: Env) -> Env {
    let device = env.device(&env.veths[0]).await;
    wait_nri_connected(&env, 1).await;
    script(&["stop", env.ctrd.flavor]);
    env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-e", "uid-pod-e"));
    // The agent sees the connection drop when containerd's socket closes.
    wait_until("the NRI connection to drop", Duration::from_secs(10), || {
        env.agent_log().contains("NRI connection lost")
    })
    .await;
    let error = env.prepare_once(&["c1"]).await.into_values().next().unwrap();
    println!("fault (e): Prepare answered: {error}");
    assert!(error.contains("not connected") && error.contains("c1"), "{error}");
    assert!(env.state_claims().is_empty());
    Containerd::start(env.ctrd.flavor);
    env.prepare(&["c1"]).await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    env
}

async fn fault_f(mut env: Env) -> Env {
    let host = env.veths[0].clone();
    let device = env.device(&host).await;
    let uid = format!("pod-f-{}", env.tag);
    env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-f", &uid));
    env.prepare(&["c1"]).await;
    // The API server becomes unreachable (connections closed, connects refused).
    env.proxy.cut();
    env.run_pod("pod-f", &uid).await.unwrap();
    let ns = env.netns("pod-f").await;
    assert!(
        link_json(Some(&ns), "net1").is_some(),
        "the pod started with its device"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env.status_entries("c1").is_empty(), "no status while unreachable");
    assert!(
        env.agent_log().contains("claim status write failed; will retry"),
        "{}",
        env.agent_log()
    );
    env.proxy.restore();
    env.wait_ready("c1", "True").await;
    env
}

async fn fault_g(mut env: Env) -> Env {
    let (_, ns) = attached_pod(&mut env, "pod-g").await;
    let host = env.veths[0].clone();
    env.kill_agent().await;
    env.stop_pod("pod-g").await;
    env.remove_pod("pod-g").await;
    env.start_agent();
    wait_nri_connected(&env, 2).await;
    let errors = env.unprepare(&["c1"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(env.state_claims().is_empty());
    assert!(!Path::new("/var/run/netns").join(&ns).exists());
    let home = link_json(None, &host).is_some();
    println!(
        "fault (g): {host} {}",
        if home {
            "returned to the host"
        } else {
            "destroyed with the namespace (veth)"
        }
    );
    env
}

/// (g) for a device-backed NIC, which the kernel returns to the host under a name of its own
/// (`dev<index>`) when the pod's namespace dies, keeping the MTU it had in the pod. A veth is
/// destroyed instead, so the test stages what the kernel does, while the agent is down.
async fn fault_g_returned(mut env: Env) -> Env {
    let (_, ns) = attached_pod(&mut env, "pod-r").await;
    let host = env.veths[0].clone();
    env.kill_agent().await;
    let index = link_json(Some(&ns), "net1").unwrap()["ifindex"].as_u64().unwrap();
    let stray = format!("dev{index}");
    ip(&["-n", &ns, "link", "set", "net1", "netns", "1", "name", &stray]);
    env.stop_pod("pod-r").await;
    env.remove_pod("pod-r").await;
    assert_eq!(host_mtu(&stray), Some(1400), "returned as the pod left it");
    env.start_agent();
    wait_nri_connected(&env, 2).await;
    // Synchronize finds the pod gone and restores the interface it finds by identity.
    wait_host_link(&env, &host).await;
    assert_eq!(host_mtu(&host), Some(1500), "original MTU");
    assert!(link_json(None, &stray).is_none(), "{stray} renamed back");
    let errors = env.unprepare(&["c1"]).await;
    assert!(errors.values().all(String::is_empty), "{errors:?}");
    assert!(env.state_claims().is_empty());
    env
}

async fn fault_h(mut env: Env) -> Env {
    let (_, _) = attached_pod(&mut env, "pod-h1").await;
    env.stop_pod("pod-h1").await;
    env.remove_pod("pod-h1").await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    let uid = format!("pod-h2-{}", env.tag);
    env.reserve_for("c1", ("pod-h2", &uid));
    env.prepare(&["c1"]).await;
    env.run_pod("pod-h2", &uid).await.unwrap();
    let ns = env.netns("pod-h2").await;
    assert!(link_json(Some(&ns), "net1").is_some(), "{}", env.agent_log());
    env.wait_ready("c1", "True").await;
    env
}

/// (h) when Prepare read the claim before the claim cache saw its reservation move to the new
/// pod: the plan still names the old pod; RunPodSandbox of the new one finds the claim
/// reserved for it in the cache (no API request) and attaches.
async fn fault_h_stale(mut env: Env) -> Env {
    let (_, _) = attached_pod(&mut env, "pod-s1").await;
    env.stop_pod("pod-s1").await;
    env.remove_pod("pod-s1").await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    // Prepared while the claim still says pod-s1.
    env.prepare(&["c1"]).await;
    let uid = format!("pod-s2-{}", env.tag);
    env.reserve_for("c1", ("pod-s2", &uid));
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.run_pod("pod-s2", &uid).await.unwrap();
    let ns = env.netns("pod-s2").await;
    assert!(link_json(Some(&ns), "net1").is_some(), "{}", env.agent_log());
    env.wait_ready("c1", "True").await;
    assert!(
        env.agent_log().contains("its plan now follows it"),
        "{}",
        env.agent_log()
    );
    env
}

/// The agent restarted with `NETDRA_E2E_STALL` set to `step` (or unset with `None`).
async fn restart_agent(env: &mut Env, stall: Option<&str>, sessions: usize) {
    env.kill_agent().await;
    env.agent_env = stall
        .map(|s| vec![("NETDRA_E2E_STALL".to_owned(), s.to_owned())])
        .unwrap_or_default();
    env.start_agent();
    wait_nri_connected(env, sessions).await;
}

/// No test "NIC" sits in another namespace: each veth pair is whole on the host, or gone
/// (a veth dies with its namespace). The peer stays on the host; `ip -d` shows a
/// `link_netnsid` on it while its other end is in some other namespace.
fn assert_home_or_gone(env: &Env) {
    for (n, v) in env.veths.iter().enumerate() {
        let peer = format!("ndp{}{n}", env.tag);
        let out = std::process::Command::new("ip")
            .args(["-j", "-d", "link", "show", &peer])
            .output()
            .unwrap();
        if !out.status.success() {
            continue;
        }
        let links: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            links[0].get("link_netnsid").is_none(),
            "{v} sits in another namespace (netnsid {}) with the journal empty",
            links[0]["link_netnsid"]
        );
    }
}

/// The links of a namespace this test holds (its runtime path may be gone), as `ip -j` shows them.
fn links_in_held(hold: &Path) -> String {
    testkit::command_output(
        std::process::Command::new("nsenter")
            .arg(format!("--net={}", hold.display()))
            .args(["ip", "-j", "link", "show"]),
    )
}

/// SIGKILL at an attach's journal step (`attach-before`: the intent is durable, nothing moved;
/// `attach-after`: moved, the outcome not written). The pod keeps running; after the restart its
/// interface is in it, Ready=True; once the pod is gone the journal is empty.
async fn kill_during_attach(mut env: Env, step: &'static str) -> Env {
    let host = env.veths[0].clone();
    let mtu = host_mtu(&host).unwrap();
    let device = env.device(&host).await;
    let uid = format!("pod-k-{}", env.tag);
    env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-k", &uid));
    wait_nri_connected(&env, 1).await;
    restart_agent(&mut env, Some(step), 2).await;
    env.prepare(&["c1"]).await;
    let started = std::time::Instant::now();
    env.run_pod("pod-k", &uid).await.unwrap();
    println!(
        "{step}: RunPodSandbox answered in {:?} with the attach stalled",
        started.elapsed()
    );
    env.wait_stalled(step).await;
    let journaled = env.journal_claims();
    assert_eq!(journaled.values().collect::<Vec<_>>(), ["attaching"], "{journaled:?}");
    env.kill_agent().await;
    env.agent_env.clear();
    env.start_agent();
    let ns = env.netns("pod-k").await;
    wait_until("the interface in the running pod", Duration::from_secs(20), || {
        link_json(Some(&ns), "net1").is_some()
    })
    .await;
    env.wait_ready("c1", "True").await;
    let link = link_json(Some(&ns), "net1").unwrap();
    assert_eq!(addresses(&link), ["10.10.0.2/24"], "configured as the claim says");
    assert_eq!(link["mtu"], 1400);
    assert_eq!(env.journal_claims().values().collect::<Vec<_>>(), ["attached"]);
    env.create_container("pod-k", &uid).await.unwrap();
    env.stop_pod("pod-k").await;
    wait_host_link(&env, &host).await;
    assert_eq!(host_mtu(&host), Some(mtu));
    env.remove_pod("pod-k").await;
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    env.wait_journal_empty().await;
    assert_home_or_gone(&env);
    println!("{step}: after SIGKILL and restart the pod had its interface; returned at stop; journal empty");
    env
}

/// SIGKILL in the middle of a detach (`detach-before`: the intent to return is durable, the
/// interface still in the pod, whose namespace this test holds; `detach-after`: moved back, the
/// outcome not written). After the restart it is on the host with its name, MTU and address.
async fn kill_during_detach(mut env: Env, step: &'static str) -> Env {
    let host = env.veths[0].clone();
    ip(&["link", "set", &host, "up"]);
    ip(&["addr", "add", "10.70.0.2/24", "dev", &host]);
    let mtu = host_mtu(&host).unwrap();
    let (_, ns) = attached_pod_with(&mut env, "pod-s", config(json!({"name": "net1", "mtu": 1400}))).await;
    env.hold_netns(&ns);
    restart_agent(&mut env, Some(step), 2).await;
    let id = env.pods["pod-s"].clone();
    let mut cri = connect_cri(&env.ctrd.cri).await;
    let stop = tokio::spawn(async move {
        cri.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: id })
            .await
    });
    env.wait_stalled(step).await;
    assert_eq!(env.journal_claims().values().collect::<Vec<_>>(), ["detaching"]);
    env.kill_agent().await;
    stop.await.unwrap().unwrap();
    env.agent_env.clear();
    env.start_agent();
    wait_host_link(&env, &host).await;
    let link = link_json(None, &host).unwrap();
    assert_eq!(link["mtu"].as_u64(), Some(mtu), "MTU restored");
    assert_eq!(addresses(&link), ["10.70.0.2/24"], "address restored");
    env.remove_pod("pod-s").await;
    env.release_holds();
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    env.wait_journal_empty().await;
    assert_home_or_gone(&env);
    println!("{step}: after SIGKILL mid-detach and restart, {host} is home with its MTU and address");
    env
}

/// A pod stopped while its attach is under way (moved, then the agent pauses 3 s), its
/// namespace held so a veth left inside would stay visible: the stop hook answers within its
/// budget, and the interface comes home once the attach has ended.
async fn stop_during_attach(mut env: Env) -> Env {
    let host = env.veths[0].clone();
    let mtu = host_mtu(&host).unwrap();
    let device = env.device(&host).await;
    let uid = format!("pod-sa-{}", env.tag);
    env.seed_claim("c1", &[("nic", &device)], &[(None, net1())], ("pod-sa", &uid));
    restart_agent(&mut env, Some("attach-after:3000"), 2).await;
    env.prepare(&["c1"]).await;
    env.run_pod("pod-sa", &uid).await.unwrap();
    env.wait_stalled("attach-after").await;
    let ns = env.netns("pod-sa").await;
    let hold = env.hold_netns(&ns);
    assert!(link_json(Some(&ns), "net1").is_some(), "moved, the attach not ended");
    let started = std::time::Instant::now();
    env.stop_pod("pod-sa").await;
    let took = started.elapsed();
    println!("stop during attach: StopPodSandbox answered in {took:?}");
    assert!(took < Duration::from_secs(2), "within the runtime's timeout: {took:?}");
    wait_host_link(&env, &host).await;
    assert_eq!(host_mtu(&host), Some(mtu));
    let inside = links_in_held(&hold);
    assert!(!inside.contains("net1"), "nothing left in the held namespace: {inside}");
    env.remove_pod("pod-sa").await;
    env.release_holds();
    assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));
    env.wait_journal_empty().await;
    env
}

/// Every pod of the test stopped at once, their namespaces held: each stop hook answers in
/// time and every interface comes home (none left in a held namespace).
async fn burst_of_stops(mut env: Env) -> Env {
    let tag = env.tag.clone();
    let mut pods = Vec::new();
    let mut holds = Vec::new();
    for (i, v) in env.veths.clone().iter().enumerate() {
        let device = env.device(v).await;
        let pod = format!("pb{i}");
        let uid = format!("{pod}-{tag}");
        let claim = format!("c{i}");
        env.seed_claim(
            &claim,
            &[("nic", &device)],
            &[(None, config(json!({"name": "net1"})))],
            (&pod, &uid),
        );
        env.prepare(&[&claim]).await;
        env.run_pod(&pod, &uid).await.unwrap();
        let ns = env.netns(&pod).await;
        assert!(link_json(Some(&ns), "net1").is_some(), "{}", env.agent_log());
        holds.push(env.hold_netns(&ns));
        pods.push(pod);
    }
    let mut stops = Vec::new();
    for pod in &pods {
        let id = env.pods[pod].clone();
        let mut cri = connect_cri(&env.ctrd.cri).await;
        stops.push(tokio::spawn(async move {
            let started = std::time::Instant::now();
            cri.stop_pod_sandbox(k8s_cri::v1::StopPodSandboxRequest { pod_sandbox_id: id })
                .await
                .unwrap();
            started.elapsed()
        }));
    }
    let mut slowest = Duration::ZERO;
    for stop in stops {
        slowest = slowest.max(stop.await.unwrap());
    }
    println!(
        "burst: {} pods stopped at once; slowest StopPodSandbox {slowest:?}",
        pods.len()
    );
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    for v in env.veths.clone() {
        wait_host_link(&env, &v).await;
    }
    for hold in &holds {
        let inside = links_in_held(hold);
        assert!(!inside.contains("net1"), "nothing left in a held namespace: {inside}");
    }
    for pod in &pods {
        env.remove_pod(pod).await;
    }
    env.release_holds();
    let claims: Vec<String> = (0..pods.len()).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = claims.iter().map(String::as_str).collect();
    assert!(env.unprepare(&names).await.values().all(String::is_empty));
    env.wait_journal_empty().await;
    assert_home_or_gone(&env);
    env
}

/// Acceptance 2 of the journal: SIGKILL at each journal step of an attach and in the middle of
/// a detach, on one containerd.
async fn journal_steps(flavor: &'static str, prefix: &str) {
    let mut results = Vec::new();
    for (step, tag) in [("attach-before", "ja"), ("attach-after", "jb")] {
        let outcome = scenario(flavor, &format!("{prefix}{tag}"), 1, move |env| {
            kill_during_attach(env, step)
        })
        .await;
        results.push((step, outcome));
    }
    for (step, tag) in [("detach-before", "jc"), ("detach-after", "jd")] {
        let outcome = scenario(flavor, &format!("{prefix}{tag}"), 1, move |env| {
            kill_during_detach(env, step)
        })
        .await;
        results.push((step, outcome));
    }
    for (step, outcome) in &results {
        println!(
            "containerd {flavor}: SIGKILL at {step}: {}",
            match outcome {
                Ok(()) => "converged".to_owned(),
                Err(e) => format!("FAILED: {e}"),
            }
        );
    }
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}

#[test]
fn sigkill_at_each_journal_step_on_containerd_1_7() {
    serially("1.7", || journal_steps("1.7", "a"));
}

/// On each containerd 2.x.
#[test]
fn sigkill_at_each_journal_step_on_containerd_2() {
    for flavor in newer_containerd_flavors() {
        serially(flavor, move || async move {
            journal_steps(flavor, &flavor_tag("b", flavor)).await
        });
    }
}

/// Stop during an attach, and a burst of stops, with the pods' namespaces held. On each
/// containerd 2.x.
#[test]
fn stops_during_attach_and_in_a_burst_return_every_interface() {
    for flavor in newer_containerd_flavors() {
        serially(flavor, move || async move {
            scenario(flavor, &flavor_tag("sa", flavor), 1, stop_during_attach)
                .await
                .unwrap();
            scenario(flavor, &flavor_tag("sb", flavor), 6, burst_of_stops)
                .await
                .unwrap();
        });
    }
}

/// Acceptance 2: each fault in its own environment; the tally is printed. On each containerd
/// 2.x.
#[test]
fn faults_on_containerd_2() {
    for flavor in newer_containerd_flavors() {
        serially(flavor, move || faults(flavor));
    }
}

async fn faults(flavor: &'static str) {
    let mut results = Vec::new();
    macro_rules! fault {
        ($name:literal, $tag:literal, $f:expr) => {{
            let outcome = scenario(flavor, &flavor_tag($tag, flavor), 1, $f).await;
            println!(
                "containerd {flavor}: fault {}: {}",
                $name,
                match &outcome {
                    Ok(()) => "survived".to_owned(),
                    Err(e) => format!("FAILED: {e}"),
                }
            );
            results.push(($name, outcome));
        }};
    }
    fault!("(a) SIGKILL after Prepare, before the sandbox", "fa", fault_a);
    fault!("(b) SIGKILL after attach", "fb", fault_b);
    fault!("(c) SIGKILL during StopPodSandbox", "fc", fault_c);
    let outcome = scenario(flavor, &flavor_tag("fd", flavor), 2, fault_d).await;
    println!(
        "containerd {flavor}: fault (d) containerd restarted while pods run: {}",
        match &outcome {
            Ok(()) => "survived".to_owned(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    results.push(("(d) containerd restarted while pods run", outcome));
    fault!("(e) Prepare while NRI is disconnected", "fe", fault_e);
    fault!("(f) API server unreachable during attach", "ff", fault_f);
    fault!(
        "(g) pod deleted while the driver is down (veth: destroyed)",
        "fg",
        fault_g
    );
    fault!(
        "(g) pod deleted while the driver is down (NIC returned by the kernel, staged)",
        "fr",
        fault_g_returned
    );
    fault!("(h) the claim reused by a new pod", "fh", fault_h);
    fault!(
        "(h) the claim reused, Prepare before the cache saw the new reservation",
        "fs",
        fault_h_stale
    );
    let survived = results.iter().filter(|(_, r)| r.is_ok()).count();
    println!("containerd {flavor}: faults survived: {survived}/{}", results.len());
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
}
