//! The running `netdra` binary's `/metrics`, `/healthz` and `/readyz`, on the project's real
//! containerd (the netdra crate's end-to-end environment): readiness follows the kubelet's
//! registration and the NRI connection (it drops while containerd is stopped and returns when
//! it is back), and the Prepare and hook metrics count the calls made.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../../netdra/tests/common/mod.rs"]
mod common;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use common::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

async fn wait_status(env: &Env, port: u16, path: &str, code: u16) -> String {
    let start = std::time::Instant::now();
    loop {
        if let Some((got, body)) = get(port, path).await
            && got == code
        {
            return body;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{path} never answered {code}: {:?}\n{}",
            get(port, path).await,
            env.agent_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of the sample whose line starts with `series ` (0 when absent).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_health_and_readiness_follow_the_agent() {
    serially("2", || async {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = vec!["--metrics-address".to_owned(), format!("127.0.0.1:{port}")];
        let mut env = Env::with_agent("2", "mx", 1, PathBuf::from(env!("CARGO_BIN_EXE_netdra")), args).await;

        assert_eq!(wait_status(&env, port, "/healthz", 200).await, "ok\n");
        // Not registered yet: not ready, and /readyz says why.
        let body = wait_status(&env, port, "/readyz", 503).await;
        assert!(body.contains("registered: false"), "{body}");
        env.register().await;
        let body = wait_status(&env, port, "/readyz", 200).await;
        assert!(
            body.contains("nri_connected: true") && body.contains("slices_published: true"),
            "{body}"
        );

        // containerd stopped: not ready; back: ready again.
        script(&["stop", "2"]);
        let body = wait_status(&env, port, "/readyz", 503).await;
        assert!(body.contains("nri_connected: false"), "{body}");
        Containerd::start("2");
        wait_status(&env, port, "/readyz", 200).await;
        env.cri = connect_cri(&env.ctrd.cri).await;

        // One claim prepared and one pod run: the counters and histograms see them.
        let device = env.device(&env.veths[0].clone()).await;
        let uid = format!("pod-m-{}", env.tag);
        let config = json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig", "name": "net1"});
        env.seed_claim("c1", &[("nic", &device)], &[(None, config)], ("pod-m", &uid));
        env.prepare(&["c1"]).await;
        env.run_pod("pod-m", &uid).await.unwrap();
        env.wait_ready("c1", "True").await;
        env.stop_pod("pod-m").await;
        env.remove_pod("pod-m").await;
        assert!(env.unprepare(&["c1"]).await.values().all(String::is_empty));

        let metrics = wait_status(&env, port, "/metrics", 200).await;
        println!("{metrics}");
        assert_eq!(sample(&metrics, "netdra_prepare_total{result=\"ok\"}"), 1.0);
        assert_eq!(sample(&metrics, "netdra_prepare_duration_seconds_count"), 1.0);
        assert_eq!(sample(&metrics, "netdra_unprepare_total{result=\"ok\"}"), 1.0);
        for hook in ["RunPodSandbox", "StopPodSandbox", "RemovePodSandbox"] {
            assert_eq!(
                sample(
                    &metrics,
                    &format!("netdra_nri_hook_total{{hook=\"{hook}\",result=\"ok\"}}")
                ),
                1.0,
                "{hook}"
            );
            assert_eq!(
                sample(
                    &metrics,
                    &format!("netdra_nri_hook_duration_seconds_count{{hook=\"{hook}\"}}")
                ),
                1.0,
                "{hook}"
            );
        }
        assert_eq!(sample(&metrics, "netdra_devices_published"), 1.0);
        assert!(sample(&metrics, "netdra_slice_writes_total") >= 1.0);
        assert!(sample(&metrics, "netdra_claim_status_writes_total{result=\"ok\"}") >= 1.0);
        assert_eq!(sample(&metrics, "netdra_nri_reconnects_total"), 1.0);
        assert_eq!(sample(&metrics, "netdra_attach_failures_total"), 0.0);

        // The rest of what the agent does against the API: a slice update (the MTU changes),
        // a claim read by GET (restarted with --claim-cache get-only), a slice deletion (the
        // device goes away).
        let host = env.veths[0].clone();
        ip(&["link", "set", &host, "mtu", "1450"]);
        wait_until("the slice shows MTU 1450", Duration::from_secs(10), || {
            env.api.objects(&testkit::RESOURCE_SLICES).iter().any(|s| {
                s.pointer("/spec/devices/0/attributes/mtu/int")
                    .and_then(serde_json::Value::as_i64)
                    == Some(1450)
            })
        })
        .await;
        env.kill_agent().await;
        env.extra_args
            .extend(["--claim-cache".to_owned(), "get-only".to_owned()]);
        env.start_agent();
        env.register().await;
        let config = json!({"apiVersion": "netdra.dev/v1alpha1", "kind": "InterfaceConfig"});
        env.seed_claim("c2", &[("nic", &device)], &[(None, config)], ("pod-m2", "uid-pod-m2"));
        env.prepare(&["c2"]).await;
        assert!(env.unprepare(&["c2"]).await.values().all(String::is_empty));
        ip(&["link", "del", &host]);
        wait_until("the slice deleted", Duration::from_secs(10), || {
            env.api.objects(&testkit::RESOURCE_SLICES).is_empty()
        })
        .await;

        let used = used_permissions(&env.api.requests());
        let granted = granted_permissions();
        println!("used: {used:?}");
        assert_eq!(used, granted, "the ClusterRole grants exactly what the agent used");
        env.teardown().await;
    });
}

/// (resource[/subresource], verb) of every request, as the API server's authorizer sees it.
fn used_permissions(requests: &[testkit::RecordedRequest]) -> BTreeSet<(String, String)> {
    requests
        .iter()
        .filter_map(|r| {
            let parts: Vec<&str> = r.path.trim_start_matches('/').split('/').collect();
            // apis/<group>/<version>/[namespaces/<ns>/]<plural>[/<name>[/<subresource>]], or
            // api/<version>/... for the core group.
            let rest = match parts.as_slice() {
                ["apis", _, _, "namespaces", _, rest @ ..]
                | ["apis", _, _, rest @ ..]
                | ["api", _, "namespaces", _, rest @ ..]
                | ["api", _, rest @ ..] => rest,
                _ => return None,
            };
            let (resource, named) = match rest {
                [plural] => ((*plural).to_owned(), false),
                [plural, _name] => ((*plural).to_owned(), true),
                [plural, _name, sub] => (format!("{plural}/{sub}"), true),
                _ => return None,
            };
            let verb = match (r.method.as_str(), named) {
                ("GET", false) if r.watch => "watch",
                ("GET", false) => "list",
                ("GET", true) => "get",
                ("POST", _) => "create",
                ("PUT", _) => "update",
                ("PATCH", _) => "patch",
                ("DELETE", _) => "delete",
                _ => return None,
            };
            Some((resource, verb.to_owned()))
        })
        .collect()
}

/// (resource, verb) pairs the ClusterRole in deploy/install.yaml grants, without the
/// `resourceclaims/driver` rule, which the API server checks on a status write (Kubernetes
/// >= 1.36) rather than a request of its own.
fn granted_permissions() -> BTreeSet<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/install.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let role: serde_json::Value = text
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str::<serde_json::Value>(d).unwrap())
        .find(|d| d["kind"] == "ClusterRole")
        .unwrap();
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for resource in rule["resources"].as_array().unwrap() {
            let resource = resource.as_str().unwrap();
            if resource == "resourceclaims/driver" {
                continue;
            }
            for verb in rule["verbs"].as_array().unwrap() {
                granted.insert((resource.to_owned(), verb.as_str().unwrap().to_owned()));
            }
        }
    }
    granted
}
