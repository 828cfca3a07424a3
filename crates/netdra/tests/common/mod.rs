//! The end-to-end environment: a real containerd (from `tests/e2e/containerd.sh`), the fake
//! API server, host veth pairs standing in for NICs, the agent example as a separate process
//! (so it can be SIGKILLed), and a kubelet-like gRPC client on the real sockets.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    ListPodSandboxRequest, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, RemovePodSandboxRequest,
    RunPodSandboxRequest, StopPodSandboxRequest, runtime_service_client::RuntimeServiceClient,
};
use kubeletplugin::proto::dra::v1 as dra;
use serde_json::{Value, json};
use testkit::{FakeApiServer, RESOURCE_CLAIMS, RESOURCE_SLICES};
use tonic::transport::Channel;

pub const DRIVER: &str = "e2e.netdra.dev";
pub const NODE: &str = "e2e-node";

/// Only one environment at a time: they share containerd and the host's links.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn e2e_dir() -> PathBuf {
    std::env::var_os("NETDRA_E2E_DIR").map_or_else(|| PathBuf::from("/tmp/netdra-e2e"), PathBuf::from)
}

pub fn e2e_ready() -> bool {
    testkit::available_or_skip(
        e2e_dir().join("ready").exists(),
        &format!(
            "containerd e2e environment missing in {} (run tests/e2e/containerd.sh setup, as scripts/test.sh does)",
            e2e_dir().display()
        ),
    )
}

pub fn script(args: &[&str]) -> String {
    testkit::command_output(
        Command::new("bash")
            .arg(workspace().join("tests/e2e/containerd.sh"))
            .args(args)
            .env("NETDRA_E2E_DIR", e2e_dir()),
    )
}

/// Runs `ip ARGS`; its output, or the test fails with its stderr.
pub use testkit::ip;

pub fn ip_ok(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `ip -j` output for one link, in the host namespace (`netns` None) or a named one.
pub fn link_json(netns: Option<&str>, name: &str) -> Option<Value> {
    let mut args = vec![];
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-j", "addr", "show", "dev", name]);
    let out = Command::new("ip").args(&args).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first().cloned()
}

pub fn addresses(link: &Value) -> Vec<String> {
    link["addr_info"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct Containerd {
    pub flavor: &'static str,
    pub cri: PathBuf,
    pub nri: PathBuf,
    /// The CDI spec directory this containerd reads.
    pub cdi: PathBuf,
}

impl Containerd {
    pub fn start(flavor: &'static str) -> Self {
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
            cdi: var("CDI_DIR"),
        }
    }

    pub fn restart(&self) {
        script(&["restart", self.flavor]);
    }
}

/// A TCP proxy in front of the fake API server that a test can cut (connections closed, the
/// port refusing) and restore (the same port listening again): the API server unreachable.
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    target: std::net::SocketAddr,
    tasks: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let mut proxy = Self {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            tasks: Default::default(),
        };
        proxy.addr = proxy.listen();
        proxy
    }

    fn listen(&self) -> std::net::SocketAddr {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(self.addr).unwrap();
        let listener = socket.listen(128).unwrap();
        let addr = listener.local_addr().unwrap();
        let (target, tasks) = (self.target, self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
        addr
    }

    /// Closes every connection and stops listening: connects are refused.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub fn restore(&self) {
        self.listen();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

/// One test's world: its own API server, veths, agent and state; the shared containerd.
pub struct Env {
    pub ctrd: Containerd,
    pub dir: tempfile::TempDir,
    pub api: FakeApiServer,
    /// What the agent talks to instead of the API server directly.
    pub proxy: Proxy,
    pub kubeconfig: PathBuf,
    pub agent: Option<tokio::process::Child>,
    pub tag: String,
    /// Host ends of the veth pairs this test created (peers are `ndp<tag><n>`).
    pub veths: Vec<String>,
    pub cri: RuntimeServiceClient<Channel>,
    pub pods: HashMap<String, String>,
    /// The agent's program and the arguments it gets besides the common ones.
    pub program: PathBuf,
    pub extra_args: Vec<String>,
    /// Environment for the next agent started (e.g. `NETDRA_E2E_STALL`).
    pub agent_env: Vec<(String, String)>,
    /// Bind mounts this test made to hold pods' namespaces, unmounted by path at the end.
    pub holds: Vec<PathBuf>,
}

/// Runs `ip -force -batch` on `commands`; with `check`, a failing line fails the test (and its
/// error is shown).
pub fn ip_batch(commands: &str, check: bool) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(if check { Stdio::inherit() } else { Stdio::null() })
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(commands.as_bytes()).unwrap();
    let ok = child.wait().unwrap().success();
    assert!(ok || !check, "ip -batch failed:\n{commands}");
}

/// `count` network namespaces `<tag>ns<i>` and veth pairs `<tag>h<i>` (on the host) and
/// `<tag>p<i>` (up), made in one `ip -batch`, deleted by name when dropped.
pub struct PodVeths {
    tag: &'static str,
    count: usize,
}

impl PodVeths {
    pub fn create(tag: &'static str, count: usize) -> Self {
        let mut batch = String::new();
        for i in 0..count {
            batch.push_str(&format!(
                "netns add {tag}ns{i}\nlink add {tag}h{i} type veth peer name {tag}p{i}\nlink set {tag}p{i} up\n"
            ));
        }
        ip_batch(&batch, true);
        Self { tag, count }
    }

    /// The host end of pair `i`.
    pub fn host(&self, i: usize) -> String {
        format!("{}h{i}", self.tag)
    }

    /// The name of namespace `i` (under `/var/run/netns`).
    pub fn netns(&self, i: usize) -> String {
        format!("{}ns{i}", self.tag)
    }
}

impl Drop for PodVeths {
    fn drop(&mut self) {
        let mut batch = String::new();
        for i in 0..self.count {
            batch.push_str(&format!("netns del {}\nlink del {}\n", self.netns(i), self.host(i)));
        }
        ip_batch(&batch, false);
    }
}

pub fn veth_name(tag: &str, n: usize) -> String {
    format!("nde{tag}{n}")
}

impl Env {
    /// The environment with the `agent` example as the agent.
    pub async fn new(flavor: &'static str, tag: &str, veths: usize) -> Self {
        Self::with_agent(flavor, tag, veths, testkit::example_binary("agent"), Vec::new()).await
    }

    /// The environment with `program` as the agent (it takes the `netdra` binary's flags).
    pub async fn with_agent(
        flavor: &'static str,
        tag: &str,
        veths: usize,
        program: PathBuf,
        extra_args: Vec<String>,
    ) -> Self {
        let ctrd = Containerd::start(flavor);
        let dir = tempfile::tempdir().unwrap();
        let api = FakeApiServer::start().await.unwrap();
        let proxy = Proxy::start(api.url().trim_start_matches("http://").parse().unwrap()).await;
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: fake\n    user: u\ncurrent-context: c\n",
                format_args!("http://{}", proxy.addr)
            ),
        )
        .unwrap();
        let mut names = Vec::new();
        for n in 0..veths {
            let name = veth_name(tag, n);
            let peer = format!("ndp{tag}{n}");
            let _ = ip_ok(&["link", "del", &name]);
            ip(&["link", "add", &name, "type", "veth", "peer", "name", &peer]);
            ip(&["link", "set", &peer, "up"]);
            names.push(name);
        }
        let cri = connect_cri(&ctrd.cri).await;
        let mut env = Self {
            ctrd,
            dir,
            api,
            proxy,
            kubeconfig,
            agent: None,
            tag: tag.into(),
            veths: names,
            cri,
            pods: HashMap::new(),
            program,
            extra_args,
            agent_env: Vec::new(),
            holds: Vec::new(),
        };
        env.start_agent();
        env
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn registry_dir(&self) -> PathBuf {
        self.dir.path().join("registry")
    }

    pub fn state_file(&self) -> PathBuf {
        self.plugins_dir().join(DRIVER).join("netdra-state")
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn start_agent(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .unwrap();
        let filter = format!("device.attributes[\"{DRIVER}\"].ifName.startsWith(\"nde{}\")", self.tag);
        let child = tokio::process::Command::new(&self.program)
            .args(["--driver-name", DRIVER, "--node-name", NODE])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--kubelet-registry-dir")
            .arg(self.registry_dir())
            .arg("--kubelet-plugins-dir")
            .arg(self.plugins_dir())
            .arg("--nri-socket")
            .arg(&self.ctrd.nri)
            .args(["--device-filter", &filter])
            .args(&self.extra_args)
            // The driver binary's device metadata: CDI specs where this containerd reads them,
            // never the host's (an environment variable: other agents ignore it).
            .env("CDI_DIR", &self.ctrd.cdi)
            .envs(self.agent_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        self.agent = Some(child);
    }

    /// SIGKILL, and wait for the process to be gone.
    pub async fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            child.kill().await.unwrap();
        }
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    pub async fn dra(&self) -> dra::dra_plugin_client::DraPluginClient<Channel> {
        let socket = self.plugins_dir().join(DRIVER).join("dra.sock");
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no DRA socket: {}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A SIGKILLed agent leaves its socket file behind until the next one serves it.
        loop {
            if let Ok(stream) = tokio::net::UnixStream::connect(&socket).await {
                drop(stream);
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "DRA socket not served: {}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        dra_client(&socket).await
    }

    /// Registers as the kubelet does: GetInfo on the registration socket (the name, the DRA
    /// socket and the versions must be right), then NotifyRegistrationStatus.
    pub async fn register(&self) {
        let socket = self.registry_dir().join(format!("{DRIVER}-reg.sock"));
        let info = testkit::register_plugin(&socket, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{:#}\n{}", anyhow::Error::from(e), self.agent_log()));
        assert_eq!(info.name, DRIVER);
        assert_eq!(info.r#type, "DRAPlugin");
        assert_eq!(
            Path::new(&info.endpoint),
            self.plugins_dir().join(DRIVER).join("dra.sock")
        );
        assert!(
            info.supported_versions.contains(&"v1.DRAPlugin".to_owned()),
            "{:?}",
            info.supported_versions
        );
    }

    /// The published device whose interface is `ifname` (waits for it).
    pub async fn device(&self, ifname: &str) -> String {
        let start = Instant::now();
        loop {
            for slice in self.api.objects(&RESOURCE_SLICES) {
                for d in slice
                    .pointer("/spec/devices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if d.pointer("/attributes/ifName/string").and_then(Value::as_str) == Some(ifname) {
                        return d["name"].as_str().unwrap().to_owned();
                    }
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{ifname} never published: {}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A claim allocated to `devices` (request, device), with an opaque claim config per
    /// request when given, reserved for pod `pod` (name, uid).
    pub fn seed_claim(
        &self,
        name: &str,
        devices: &[(&str, &str)],
        configs: &[(Option<&str>, Value)],
        pod: (&str, &str),
    ) -> String {
        let uid = format!("uid-{name}-{}", self.tag);
        let results: Vec<Value> = devices
            .iter()
            .map(|(r, d)| json!({"request": r, "driver": DRIVER, "pool": NODE, "device": d}))
            .collect();
        let requests: Vec<Value> = devices
            .iter()
            .map(|(r, _)| json!({"name": r, "exactly": {"deviceClassName": "netdra"}}))
            .collect();
        let config: Vec<Value> = configs
            .iter()
            .map(|(request, parameters)| {
                let mut c = json!({"opaque": {"driver": DRIVER, "parameters": parameters}});
                if let Some(r) = request {
                    c["requests"] = json!([r]);
                }
                c
            })
            .collect();
        let mut alloc_config: Vec<Value> = config.clone();
        for c in &mut alloc_config {
            c["source"] = json!("FromClaim");
        }
        self.api.seed(
            &RESOURCE_CLAIMS,
            "default",
            json!({
                "metadata": {"name": name, "namespace": "default", "uid": uid},
                "spec": {"devices": {"requests": requests, "config": config}},
                "status": {
                    "allocation": {"devices": {"results": results, "config": alloc_config}},
                    "reservedFor": [{"resource": "pods", "name": pod.0, "uid": pod.1}],
                },
            }),
        );
        uid
    }

    /// Moves a claim's reservation to another pod, as the scheduler would.
    pub fn reserve_for(&self, claim: &str, pod: (&str, &str)) {
        let mut status = self.claim(claim)["status"].clone();
        status["reservedFor"] = json!([{"resource": "pods", "name": pod.0, "uid": pod.1}]);
        self.api.set_status(&RESOURCE_CLAIMS, "default", claim, status).unwrap();
    }

    pub fn claim(&self, name: &str) -> Value {
        self.api.object(&RESOURCE_CLAIMS, "default", name).unwrap()
    }

    /// This driver's status entries of a claim, by device.
    pub fn status_entries(&self, name: &str) -> Vec<Value> {
        self.claim(name)
            .pointer("/status/devices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d["driver"] == DRIVER)
            .cloned()
            .collect()
    }

    pub async fn wait_ready(&self, name: &str, status: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let entries = self.status_entries(name);
            if !entries.is_empty() && entries.iter().all(|e| e["conditions"][0]["status"] == status) {
                return entries;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "claim {name} never Ready={status}: {entries:?}\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn claim_ref(&self, name: &str) -> dra::Claim {
        dra::Claim {
            namespace: "default".into(),
            name: name.into(),
            uid: format!("uid-{name}-{}", self.tag),
        }
    }

    /// NodePrepareResources for `names`, as the kubelet sends it; the per-claim errors.
    pub async fn prepare_once(&self, names: &[&str]) -> HashMap<String, String> {
        let claims = names.iter().map(|n| self.claim_ref(n)).collect();
        let response = self
            .dra()
            .await
            .node_prepare_resources(dra::NodePrepareResourcesRequest { claims })
            .await
            .unwrap()
            .into_inner();
        response.claims.into_iter().map(|(uid, r)| (uid, r.error)).collect()
    }

    /// Prepares, retrying while the runtime hook is not connected yet (as the kubelet does);
    /// panics on any other error.
    pub async fn prepare(&self, names: &[&str]) {
        let start = Instant::now();
        loop {
            let errors = self.prepare_once(names).await;
            let failed: Vec<&String> = errors.values().filter(|e| !e.is_empty()).collect();
            if failed.is_empty() {
                return;
            }
            assert!(
                failed.iter().all(|e| e.contains("not connected")) && start.elapsed() < Duration::from_secs(20),
                "prepare {names:?}: {failed:?}\n{}",
                self.agent_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn unprepare(&self, names: &[&str]) -> HashMap<String, String> {
        let claims = names.iter().map(|n| self.claim_ref(n)).collect();
        let response = self
            .dra()
            .await
            .node_unprepare_resources(dra::NodeUnprepareResourcesRequest { claims })
            .await
            .unwrap()
            .into_inner();
        response.claims.into_iter().map(|(uid, r)| (uid, r.error)).collect()
    }

    pub async fn run_pod(&mut self, name: &str, uid: &str) -> Result<String, tonic::Status> {
        let logs = e2e_dir().join("podlogs");
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.join(name).display().to_string(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let id = self
            .cri
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config),
                runtime_handler: String::new(),
            })
            .await?
            .into_inner()
            .pod_sandbox_id;
        self.pods.insert(name.into(), id.clone());
        Ok(id)
    }

    pub async fn create_container(&mut self, pod: &str, uid: &str) -> Result<String, tonic::Status> {
        let id = self.pods[pod].clone();
        let sandbox = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.into(),
                uid: uid.into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: e2e_dir().join("podlogs").join(pod).display().to_string(),
            linux: Some(LinuxPodSandboxConfig::default()),
            ..Default::default()
        };
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: "localhost/pause:netdra".into(),
                ..Default::default()
            }),
            log_path: "app.log".into(),
            ..Default::default()
        };
        Ok(self
            .cri
            .create_container(CreateContainerRequest {
                pod_sandbox_id: id,
                config: Some(config),
                sandbox_config: Some(sandbox),
            })
            .await?
            .into_inner()
            .container_id)
    }

    /// The pod's network namespace name (under /var/run/netns).
    pub async fn netns(&mut self, pod: &str) -> String {
        let id = self.pods[pod].clone();
        let status = self
            .cri
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        testkit::sandbox_netns(status.info.values()).expect("the sandbox's info names its netns")
    }

    pub async fn stop_pod(&mut self, pod: &str) {
        let id = self.pods[pod].clone();
        self.cri
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }

    pub async fn remove_pod(&mut self, pod: &str) {
        let id = self.pods.remove(pod).unwrap();
        self.cri
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id })
            .await
            .unwrap();
    }

    /// The agent's journal replayed: every key's last value (an independent reader of the
    /// format: `<crc> <record>` lines after the header; a torn last line is skipped).
    pub fn journal(&self) -> std::collections::BTreeMap<String, Value> {
        let text = std::fs::read_to_string(self.state_file()).unwrap_or_default();
        let mut entries = std::collections::BTreeMap::new();
        for line in text.lines().skip(1) {
            let Some((_, json)) = line.split_once(' ') else {
                continue;
            };
            let Ok(record) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            if let Some(put) = record.get("put") {
                entries.insert(put["key"].as_str().unwrap().to_owned(), put["value"].clone());
            } else if let Some(delete) = record.get("delete") {
                entries.remove(delete["key"].as_str().unwrap());
            }
        }
        entries
    }

    /// The claims in the agent's journal that are not released: UID → phase.
    pub fn journal_claims(&self) -> std::collections::BTreeMap<String, String> {
        self.journal()
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("claim/")?.to_owned(), v["phase"].as_str()?.to_owned())))
            .filter(|(_, phase)| phase != "released")
            .collect()
    }

    /// The claim UIDs in the agent's journal (released ones excepted).
    pub fn state_claims(&self) -> Vec<String> {
        self.journal_claims().into_keys().collect()
    }

    /// Waits until the journal holds nothing at all (released claims forgotten too).
    pub async fn wait_journal_empty(&self) {
        wait_until("the journal to be empty", Duration::from_secs(20), || {
            self.journal().is_empty()
        })
        .await;
    }

    /// Holds pod network namespace `ns` (under /var/run/netns) with a bind mount of this test,
    /// so that a veth left in it stays visible after the runtime deletes it.
    pub fn hold_netns(&mut self, ns: &str) -> PathBuf {
        let hold = self.dir.path().join(format!("hold-{ns}"));
        std::fs::write(&hold, b"").unwrap();
        let status = Command::new("mount")
            .arg("--bind")
            .arg(Path::new("/var/run/netns").join(ns))
            .arg(&hold)
            .status()
            .unwrap();
        assert!(status.success(), "bind-mount {ns}");
        self.holds.push(hold.clone());
        hold
    }

    /// Releases the holds this test made, by their paths.
    pub fn release_holds(&mut self) {
        for hold in self.holds.drain(..) {
            // A namespace still in use makes a plain unmount busy (seen once in CI): detach it
            // lazily then, by the same path, so the hold never outlives the test.
            let unmounted = Command::new("umount").arg(&hold).status().is_ok_and(|s| s.success());
            if !unmounted {
                let _ = Command::new("umount").arg("--lazy").arg(&hold).status();
            }
        }
    }

    /// Waits for `step` in the agent's log (`NETDRA_E2E_STALL`).
    pub async fn wait_stalled(&self, step: &str) {
        let needle = format!("stalled at {step}");
        wait_until(&needle, Duration::from_secs(20), || self.agent_log().contains(&needle)).await;
    }

    /// Removes every pod through CRI, stops the agent, deletes the veths it created.
    pub async fn teardown(mut self) {
        if let Ok(list) = self.cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await {
            for pod in list.into_inner().items {
                let _ = self
                    .cri
                    .stop_pod_sandbox(StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await;
                let _ = self
                    .cri
                    .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id })
                    .await;
            }
        }
        self.kill_agent().await;
        self.release_holds();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.release_holds();
        for name in &self.veths {
            let _ = ip_ok(&["link", "del", name]);
        }
    }
}

/// The devices the fake API server's slices hold, interface name -> device name.
pub fn published_devices(api: &FakeApiServer) -> std::collections::BTreeMap<String, String> {
    api.objects(&RESOURCE_SLICES)
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| {
            Some((
                d.pointer("/attributes/ifName/string")?.as_str()?.to_owned(),
                d["name"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Waits until `count` devices are published; interface name -> device name.
pub async fn wait_published(api: &FakeApiServer, count: usize) -> std::collections::BTreeMap<String, String> {
    let start = Instant::now();
    loop {
        let found = published_devices(api);
        if found.len() == count {
            return found;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "published: {found:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A DRA client on the plugin's socket, as the kubelet dials it.
pub async fn dra_client(socket: &Path) -> dra::dra_plugin_client::DraPluginClient<Channel> {
    dra::dra_plugin_client::DraPluginClient::new(testkit::unix_channel(socket).await.unwrap())
}

pub async fn connect_cri(path: &Path) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(testkit::unix_channel(path).await.unwrap())
}

/// Runs `body` with containerd `flavor` up, alone, and tears containerd down afterwards, also
/// when the body panicked (whose panic is then re-raised).
pub fn serially<F, Fut>(flavor: &'static str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !e2e_ready() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async { tokio::spawn(body()).await });
    drop(runtime);
    script(&["teardown", flavor]);
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs one scenario in its own environment; whether it held, with the failure and the
/// agent's log when it did not.
pub async fn scenario<F, Fut>(flavor: &'static str, tag: &str, veths: usize, body: F) -> Result<(), String>
where
    F: FnOnce(Env) -> Fut,
    Fut: Future<Output = Env> + Send + 'static,
{
    let env = Env::new(flavor, tag, veths).await;
    let log = env.log_file();
    let dir_keep = env.dir.path().to_owned();
    let outcome = tokio::spawn(body(env)).await;
    match outcome {
        Ok(env) => {
            env.teardown().await;
            Ok(())
        }
        Err(e) => {
            // The environment was dropped with the panicking task: clean what it held.
            let mut cri = connect_cri(&Containerd::start(flavor).cri).await;
            if let Ok(list) = cri.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await {
                for pod in list.into_inner().items {
                    let _ = cri
                        .stop_pod_sandbox(StopPodSandboxRequest {
                            pod_sandbox_id: pod.id.clone(),
                        })
                        .await;
                    let _ = cri
                        .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod.id })
                        .await;
                }
            }
            let message = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_else(|| "the scenario task failed".into());
            let _ = (log, dir_keep);
            Err(message)
        }
    }
}
