//! A handler that uses more than half of the runtime's request timeout is logged as a warning
//! with its duration (its own test binary: it installs a global log capture).
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use nri::{
    EventSet, HandlerError, Plugin, RuntimeInfo, StubOptions,
    proto::api::PodSandbox,
    runtime::{RuntimeListener, RuntimeOptions},
};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Slow {
    timeout_seen: Mutex<Option<Duration>>,
}

impl Plugin for Slow {
    fn events(&self) -> EventSet {
        EventSet::pod_lifecycle()
    }
    async fn configure(&self, runtime: &RuntimeInfo) -> Result<(), HandlerError> {
        *self.timeout_seen.lock().unwrap() = Some(runtime.request_timeout);
        Ok(())
    }
    async fn run_pod_sandbox(&self, pod: &PodSandbox) -> Result<(), HandlerError> {
        if pod.name == "slow" {
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn slow_handlers_are_logged_with_their_duration() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let listener = RuntimeListener::bind(dir.path().join("nri.sock")).unwrap();
    let mut options = StubOptions::new("slow", "10");
    options.socket = listener.path().to_path_buf();
    let handle = nri::connect(options, Slow::default()).unwrap();
    let runtime = listener
        .accept({
            let mut options = RuntimeOptions::default();
            options.request_timeout = Duration::from_millis(1000);
            options
        })
        .await
        .unwrap();
    runtime
        .run_pod_sandbox(PodSandbox {
            name: "fast".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let before = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(!before.contains("more than half"), "{before}");
    runtime
        .run_pod_sandbox(PodSandbox {
            name: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("more than half of the runtime's request timeout"))
        .unwrap_or_else(|| panic!("no warning in {logs}"));
    assert!(line.contains("WARN") && line.contains("method=RunPodSandbox"), "{line}");
    assert!(line.contains("timeout_ms=1000"), "{line}");
    let elapsed: f64 = line
        .split("elapsed_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no elapsed_ms in {line}"));
    assert!((600.0..1000.0).contains(&elapsed), "{line}");
    handle.stop().await;
}
