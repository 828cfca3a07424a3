//! The SDK against the runtime-side harness, over a real unix socket.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use nri::{
    Code, ConnectionState, EventSet, HandlerError, Plugin, RuntimeInfo, StubOptions,
    proto::api::{Container, ContainerUpdate, Event, LinuxNamespace, LinuxPodSandbox, PodSandbox},
    runtime::{RuntimeListener, RuntimeOptions},
};

#[derive(Default, Clone)]
struct Recorder {
    log: Arc<Mutex<Vec<String>>>,
    runtime: Arc<Mutex<Option<RuntimeInfo>>>,
    synced: Arc<Mutex<Vec<usize>>>,
    events: EventSet,
}

impl Recorder {
    fn with_events(events: EventSet) -> Self {
        Self {
            events,
            ..Self::default()
        }
    }
    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Plugin for Recorder {
    fn events(&self) -> EventSet {
        self.events
    }
    async fn configure(&self, runtime: &RuntimeInfo) -> Result<(), HandlerError> {
        *self.runtime.lock().unwrap() = Some(runtime.clone());
        Ok(())
    }
    async fn synchronize(
        &self,
        pods: Vec<PodSandbox>,
        _: Vec<Container>,
    ) -> Result<Vec<ContainerUpdate>, HandlerError> {
        self.synced.lock().unwrap().push(pods.len());
        Ok(vec![])
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        if pod.name.starts_with("fail-") {
            return Err(format!("cannot attach net1 to pod {}", pod.name).into());
        }
        if pod.name.starts_with("panic-") {
            panic!("no interface for pod {}", pod.name);
        }
        let netns = nri::pod_netns_path(pod).unwrap_or("-");
        self.log.lock().unwrap().push(format!("run {} {netns}", pod.name));
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

fn pod(name: &str) -> PodSandbox {
    PodSandbox {
        id: format!("id-{name}"),
        name: name.into(),
        uid: format!("uid-{name}"),
        namespace: "default".into(),
        linux: Some(LinuxPodSandbox {
            namespaces: vec![LinuxNamespace {
                r#type: "network".into(),
                path: format!("/var/run/netns/cni-{name}"),
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn options(socket: &std::path::Path) -> StubOptions {
    let mut o = StubOptions::new("recorder", "10");
    o.socket = socket.to_path_buf();
    o
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn registers_configures_and_synchronizes() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(listener.path()), recorder.clone()).unwrap();
    let runtime = listener
        .accept({
            let mut options = RuntimeOptions::default();
            options.pods = vec![pod("a"), pod("b")];
            options.request_timeout = Duration::from_millis(1500);
            options
        })
        .await
        .unwrap();
    assert_eq!((runtime.name.as_str(), runtime.index.as_str()), ("recorder", "10"));
    assert_eq!(runtime.events.mask(), 0x7);
    let info = handle.wait_connected(1, T).await.unwrap();
    assert_eq!(info.name, "netdra-fake-runtime");
    assert_eq!(info.request_timeout, Duration::from_millis(1500));
    assert_eq!(recorder.runtime.lock().unwrap().as_ref(), Some(&info));
    assert_eq!(*recorder.synced.lock().unwrap(), vec![2]);
    handle.stop().await;
}

#[tokio::test]
async fn configure_may_arrive_before_the_register_reply() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(listener.path()), recorder.clone()).unwrap();
    let mut options = RuntimeOptions::default();
    options.configure_before_register_reply = true;
    let runtime = tokio::time::timeout(T, listener.accept(options))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(runtime.events.mask(), 0x7);
    handle.wait_connected(1, T).await.unwrap();
    assert!(recorder.runtime.lock().unwrap().is_some());
    handle.stop().await;
}

#[tokio::test]
async fn split_synchronize_is_joined() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(listener.path()), recorder.clone()).unwrap();
    let pods = (0..5).map(|i| pod(&format!("p{i}"))).collect();
    listener
        .accept({
            let mut options = RuntimeOptions::default();
            options.pods = pods;
            options.sync_chunk_pods = Some(2);
            options
        })
        .await
        .unwrap();
    handle.wait_connected(1, T).await.unwrap();
    assert_eq!(*recorder.synced.lock().unwrap(), vec![5], "one call with all pods");
    handle.stop().await;
}

#[tokio::test]
async fn events_arrive_through_dedicated_rpcs_and_state_change() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(listener.path()), recorder.clone()).unwrap();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();
    runtime.run_pod_sandbox(pod("a")).await.unwrap();
    runtime.stop_pod_sandbox(pod("a")).await.unwrap();
    let remove = nri::proto::api::RemovePodSandboxRequest { pod: Some(pod("a")) };
    runtime
        .call::<_, nri::proto::api::RemovePodSandboxResponse>("RemovePodSandbox", &remove)
        .await
        .unwrap();
    runtime
        .state_change(Event::RunPodSandbox, pod("b"), None)
        .await
        .unwrap();
    runtime
        .state_change(Event::StopPodSandbox, pod("b"), None)
        .await
        .unwrap();
    runtime
        .state_change(Event::RemovePodSandbox, pod("b"), None)
        .await
        .unwrap();
    assert_eq!(
        recorder.log(),
        [
            "run a /var/run/netns/cni-a",
            "stop a",
            "remove a",
            "run b /var/run/netns/cni-b",
            "stop b",
            "remove b"
        ]
    );
    // A handler error reaches the runtime with its message.
    let status = runtime.run_pod_sandbox(pod("fail-c")).await.unwrap_err();
    assert_eq!(status.code, Code::Unknown);
    assert_eq!(status.message, "cannot attach net1 to pod fail-c");
    let status = runtime
        .state_change(Event::RunPodSandbox, pod("fail-d"), None)
        .await
        .unwrap_err();
    assert!(status.message.contains("fail-d"));
    handle.stop().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_and_the_connection_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(listener.path()), recorder.clone()).unwrap();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();
    // Answered at once, not after the runtime's request timeout.
    let started = std::time::Instant::now();
    let status = runtime.run_pod_sandbox(pod("panic-a")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(status.code, Code::Internal, "{status}");
    assert!(
        status.message.contains("RunPodSandbox") && status.message.contains("panicked"),
        "{status}"
    );
    assert!(status.message.contains("no interface for pod panic-a"), "{status}");
    // The same connection serves the next call.
    runtime.run_pod_sandbox(pod("b")).await.unwrap();
    assert_eq!(recorder.log(), ["run b /var/run/netns/cni-b"]);
    assert!(matches!(handle.state(), ConnectionState::Connected { session: 1, .. }));
    handle.stop().await;
}

#[tokio::test]
async fn unknown_methods_and_services_answer_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let handle = nri::connect(
        options(listener.path()),
        Recorder::with_events(EventSet::pod_lifecycle()),
    )
    .unwrap();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();
    let e = runtime
        .call_raw(nri::PLUGIN_SERVICE, "FutureEvent", vec![])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code, e.message.as_str()),
        (Code::Unimplemented, "method FutureEvent")
    );
    let e = runtime
        .call_raw("nri.pkg.api.v1beta1.Plugin", "Configure", vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::Unimplemented);
    // Malformed payloads are an error for that call, not for the connection.
    let e = runtime
        .call_raw(nri::PLUGIN_SERVICE, "RunPodSandbox", vec![0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(e.code, Code::InvalidArgument);
    runtime.run_pod_sandbox(pod("ok")).await.unwrap();
    handle.stop().await;
}

#[tokio::test]
async fn event_mask_never_holds_bits_the_runtime_rejects() {
    let wanted = EventSet::pod_lifecycle().with(Event::UpdatePodSandbox);
    for (nri_version, expected) in [("", 0x7), ("v0.8.0", 0x7), ("v0.12.2", 0x807)] {
        let dir = tempfile::tempdir().unwrap();
        let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
        let handle = nri::connect(options(listener.path()), Recorder::with_events(wanted)).unwrap();
        let runtime = listener
            .accept({
                let mut options = RuntimeOptions::default();
                options.nri_version = nri_version.into();
                options
            })
            .await
            .unwrap();
        assert_eq!(runtime.events.mask(), expected, "runtime NRI {nri_version:?}");
        handle.stop().await;
    }
}

#[tokio::test]
async fn reconnects_after_the_runtime_goes_away_and_resynchronizes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nri.sock");
    let listener = RuntimeListener::bind(&path).unwrap();
    let recorder = Recorder::with_events(EventSet::pod_lifecycle());
    let handle = nri::connect(options(&path), recorder.clone()).unwrap();
    let mut state = handle.watch_state();
    let runtime = listener.accept(RuntimeOptions::default()).await.unwrap();
    handle.wait_connected(1, T).await.unwrap();

    // The runtime restarts: shuts down, removes and recreates its socket.
    runtime.shutdown().await;
    drop(listener);
    state
        .wait_for(|s| matches!(s, ConnectionState::Disconnected { .. }))
        .await
        .unwrap();
    let listener = RuntimeListener::bind(&path).unwrap();
    let started = std::time::Instant::now();
    let runtime = listener
        .accept({
            let mut options = RuntimeOptions::default();
            options.pods = vec![pod("survivor")];
            options
        })
        .await
        .unwrap();
    handle.wait_connected(2, T).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(*recorder.synced.lock().unwrap(), vec![0, 1]);
    runtime.run_pod_sandbox(pod("after")).await.unwrap();
    assert!(
        recorder
            .log()
            .contains(&"run after /var/run/netns/cni-after".to_string())
    );

    // The plugin can also call the runtime.
    let failed = handle
        .update_containers(vec![ContainerUpdate::default()], vec![])
        .await
        .unwrap();
    assert!(failed.is_empty());
    let mut runtime = runtime;
    assert_eq!(runtime.updates.recv().await.unwrap().update.len(), 1);
    handle.stop().await;
}

#[test]
fn invalid_name_or_index_fails_before_connecting() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let e = nri::connect(StubOptions::new("bad name", "10"), Recorder::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("bad name"));
    let e = nri::connect(StubOptions::new("ok", "7"), Recorder::default())
        .err()
        .unwrap();
    assert!(e.to_string().contains("two digits"));
}
