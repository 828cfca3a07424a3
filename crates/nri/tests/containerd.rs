//! The SDK against a real containerd (1.7.x and 2.x, NRI enabled) creating real pod sandboxes
//! through CRI. The environment comes from `tests/e2e/containerd.sh setup` (scripts/test.sh
//! runs it). Without it the tests fail under `CI=true` and are skipped, with the reason
//! printed, elsewhere.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    LinuxPodSandboxConfig, ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use nri::{
    EventSet, HandlerError, Plugin, StubOptions,
    proto::api::{Container, ContainerUpdate, PodSandbox},
};
use tonic::transport::Channel;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn e2e_dir() -> PathBuf {
    std::env::var_os("NETDRA_E2E_DIR").map_or_else(|| PathBuf::from("/tmp/netdra-e2e"), PathBuf::from)
}

/// Whether the containerd environment is there; fails loudly in CI when it is not.
fn e2e_ready() -> bool {
    testkit::available_or_skip(
        e2e_dir().join("ready").exists(),
        &format!(
            "containerd e2e environment missing in {} (run tests/e2e/containerd.sh setup, as scripts/test.sh does)",
            e2e_dir().display()
        ),
    )
}

fn script(args: &[&str]) -> String {
    testkit::command_output(
        std::process::Command::new("bash")
            .arg(workspace().join("tests/e2e/containerd.sh"))
            .args(args)
            .env("NETDRA_E2E_DIR", e2e_dir()),
    )
}

struct Containerd {
    flavor: &'static str,
    cri: PathBuf,
    nri: PathBuf,
}

impl Containerd {
    fn start(flavor: &'static str) -> Self {
        let env = script(&["start", flavor]);
        let var = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .map(PathBuf::from)
                .unwrap()
        };
        Self {
            flavor,
            cri: var("CRI_SOCKET"),
            nri: var("NRI_SOCKET"),
        }
    }
}

async fn cri(path: &Path) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(testkit::unix_channel(path).await.unwrap())
}

fn sandbox_config(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: logs.join(name).display().to_string(),
        linux: Some(LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

async fn run_pod(cri: &mut RuntimeServiceClient<Channel>, name: &str, logs: &Path) -> Result<String, tonic::Status> {
    let request = RunPodSandboxRequest {
        config: Some(sandbox_config(name, logs)),
        runtime_handler: String::new(),
    };
    Ok(cri.run_pod_sandbox(request).await?.into_inner().pod_sandbox_id)
}

async fn stop_and_remove(cri: &mut RuntimeServiceClient<Channel>, id: &str) {
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .unwrap();
}

/// Records what reaches the plugin; refuses pods whose name starts with `fail-`.
#[derive(Default, Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    synced: Arc<Mutex<Vec<Vec<String>>>>,
}

impl Recorder {
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Plugin for Recorder {
    fn events(&self) -> EventSet {
        EventSet::pod_lifecycle()
    }
    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        _: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        let pods = pods
            .iter()
            .map(|p| format!("{} {}", p.name, nri::pod_netns_path(p).unwrap_or("-")))
            .collect();
        self.synced.lock().unwrap().push(pods);
        Ok(vec![])
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        if pod.name.starts_with("fail-") {
            return Err(format!("netdra-e2e refuses pod {}/{}", pod.namespace, pod.name).into());
        }
        let netns = nri::pod_netns_path(pod).unwrap_or("-").to_string();
        let exists = Path::new(&netns).exists();
        self.log
            .lock()
            .unwrap()
            .push(format!("run {} {netns} exists={exists}", pod.name));
        Ok(())
    }
    async fn stop_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        self.log.lock().unwrap().push(format!("stop {}", pod.name));
        Ok(())
    }
    async fn remove_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        self.log.lock().unwrap().push(format!("remove {}", pod.name));
        Ok(())
    }
}

/// The nri_logger example binary, built next to this test by `cargo test`.
fn start_logger(socket: &Path) -> (tokio::process::Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let binary = testkit::example_binary("nri_logger");
    let mut child = tokio::process::Command::new(binary)
        .arg("--socket")
        .arg(socket)
        .args(["--name", "nri-logger", "--index", "20"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Collects lines until one contains `needle` (true) or 10 s pass (false).
async fn wait_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: &mut Vec<String>,
    needle: &str,
) -> bool {
    if seen.iter().any(|l| l.contains(needle)) {
        return true;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        let found = line.contains(needle);
        seen.push(line);
        if found {
            return true;
        }
    }
    false
}

async fn lifecycle(ctrd: &Containerd) {
    let flavor = ctrd.flavor.replace('.', "");
    let logs = e2e_dir().join(format!("ctrd-{}", ctrd.flavor)).join("podlogs");
    let mut cri = cri(&ctrd.cri).await;
    let early = format!("early-{flavor}");
    let early_id = run_pod(&mut cri, &early, &logs).await.unwrap();

    let recorder = Recorder::default();
    let mut options = StubOptions::new("netdra-e2e", "10");
    options.socket = ctrd.nri.clone();
    let plugin = nri::connect(options, recorder.clone()).unwrap();
    let runtime = plugin.wait_connected(1, Duration::from_secs(10)).await.unwrap();
    assert_eq!(runtime.name, "containerd");
    println!(
        "containerd {}: Configure said runtime {} {}, NRI {}",
        ctrd.flavor,
        runtime.name,
        runtime.version,
        if runtime.nri_version.is_empty() {
            "(not sent: NRI before v0.12)"
        } else {
            &runtime.nri_version
        }
    );
    if ctrd.flavor == "2.4" {
        assert!(
            runtime.nri_version.starts_with("v0.12."),
            "containerd 2.4 vendors NRI v0.12: {runtime:?}"
        );
    }
    let first_sync = recorder.synced.lock().unwrap()[0].clone();
    assert!(
        first_sync
            .iter()
            .any(|p| p.starts_with(&format!("{early} /var/run/netns/cni-"))),
        "a pod created before the plugin connected appears in Synchronize: {first_sync:?}"
    );

    // The SDK's quick-start example runs next to it, as a second plugin.
    let (mut logger, mut logger_lines) = start_logger(&ctrd.nri);
    let mut lines = Vec::new();
    let connected = wait_line(&mut logger_lines, &mut lines, "connected session=1").await;
    assert!(connected, "nri_logger did not connect: {lines:?}");

    let pod = format!("pod-{flavor}");
    let id = run_pod(&mut cri, &pod, &logs).await.unwrap();
    let logged = wait_line(
        &mut logger_lines,
        &mut lines,
        &format!("event=RUN_POD_SANDBOX pod=default/{pod} uid=uid-{pod} netns=/var/run/netns/cni-"),
    )
    .await;
    assert!(logged, "nri_logger did not log the pod: {lines:?}");
    let _ = logger.kill().await;
    let log = recorder.log();
    let run = log
        .iter()
        .find(|l| l.starts_with(&format!("run {pod} ")))
        .expect("RunPodSandbox delivered");
    assert!(
        run.contains(" /var/run/netns/cni-") && run.ends_with("exists=true"),
        "{run}"
    );
    let netns = run.split(' ').nth(2).unwrap().to_string();
    stop_and_remove(&mut cri, &id).await;
    assert!(!Path::new(&netns).exists(), "{netns} is gone once the pod is removed");
    let log = recorder.log();
    assert!(log.contains(&format!("stop {pod}")), "{log:?}");
    assert!(log.contains(&format!("remove {pod}")), "{log:?}");

    // A failing RunPodSandbox handler fails the pod with the handler's message.
    let refused = run_pod(&mut cri, &format!("fail-{flavor}"), &logs).await.unwrap_err();
    assert!(
        refused
            .message()
            .contains(&format!("netdra-e2e refuses pod default/fail-{flavor}")),
        "{refused:?}"
    );

    // Restarting containerd: the plugin reconnects and sees the still-running pod.
    let restarted = Instant::now();
    script(&["restart", ctrd.flavor]);
    plugin.wait_connected(2, Duration::from_secs(5)).await.unwrap();
    let reconnect = restarted.elapsed();
    assert!(reconnect < Duration::from_secs(5), "reconnected after {reconnect:?}");
    println!(
        "containerd {}: reconnected {reconnect:?} after the restart began",
        ctrd.flavor
    );
    let second_sync = recorder.synced.lock().unwrap().last().unwrap().clone();
    assert!(second_sync.iter().any(|p| p.starts_with(&early)), "{second_sync:?}");

    let mut cri = self::cri(&ctrd.cri).await;
    stop_and_remove(&mut cri, &early_id).await;
    plugin.stop().await;
}

/// Runs `lifecycle`, then removes every pod through CRI and tears containerd down, also when
/// the test failed.
async fn with_containerd(flavor: &'static str) {
    if !e2e_ready() {
        return;
    }
    let ctrd = Arc::new(Containerd::start(flavor));
    let body = tokio::spawn({
        let ctrd = ctrd.clone();
        async move { lifecycle(&ctrd).await }
    })
    .await;
    if let Ok(mut cri) = tokio::time::timeout(Duration::from_secs(5), cri(&ctrd.cri)).await
        && let Ok(list) = cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await
    {
        for pod in list.into_inner().items {
            let id = pod.id;
            let _ = cri
                .stop_pod_sandbox(StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await;
            let _ = cri
                .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
                .await;
        }
    }
    script(&["teardown", flavor]);
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_1_7_pod_lifecycle() {
    with_containerd("1.7").await;
}

/// On the Debian-packaged 2.1 and on 2.4 built from its Go module (the matrix: 2.2, 2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_2_pod_lifecycle() {
    for flavor in testkit::newer_containerd_flavors() {
        with_containerd(flavor).await;
    }
}
