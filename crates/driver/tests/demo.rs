//! Privileged: the README's main command, `scripts/demo.sh`, run with this build's `netdra`
//! (so it skips set-up and build): on the project's containerd 2 it walks the whole lifecycle,
//! exits 0 within 60 s and leaves the host as it found it — network namespaces, links, unix
//! and TCP listening sockets, mounts, the runtime's processes and the demo's temporary
//! directories, snapshotted before and after. Interrupted with SIGINT while the NIC is inside
//! the pod, it cleans up as well. The NRI-harness form (no containerd) is held to the same.
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    io::{BufRead, BufReader},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, mpsc},
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};
use testkit::HostSnapshot;

/// One demo at a time: they use the same link names and containerd.
static SERIAL: Mutex<()> = Mutex::new(());

/// The demo's temporary directories start so.
const TEMP_PREFIX: &str = "netdra-demo-";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn e2e_ready() -> bool {
    let dir = std::env::var_os("NETDRA_E2E_DIR").map_or_else(|| PathBuf::from("/tmp/netdra-e2e"), PathBuf::from);
    dir.join("ready").exists()
}

/// `scripts/demo.sh` with this build's binary, in its own process group (as a terminal runs a
/// foreground job), its standard output sent line by line.
fn spawn_demo(extra_env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut command = Command::new("bash");
    command
        .arg(workspace().join("scripts/demo.sh"))
        .env("NETDRA_BINARY", env!("CARGO_BIN_EXE_netdra"))
        .env("LOG_LEVEL", "warn,netdra=info")
        .stdout(Stdio::piped())
        .process_group(0);
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("| {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for the process to exit (at most `timeout`); its exit code and every line it printed.
fn finish(mut child: Child, lines: &mpsc::Receiver<String>, timeout: Duration) -> (Option<i32>, Vec<String>) {
    let start = Instant::now();
    let mut printed = Vec::new();
    loop {
        printed.extend(lines.try_iter());
        if let Some(status) = child.try_wait().unwrap() {
            std::thread::sleep(Duration::from_millis(100));
            printed.extend(lines.try_iter());
            return (status.code(), printed);
        }
        if start.elapsed() > timeout {
            let _ = nix::sys::signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            panic!("the demo ran past {timeout:?}:\n{}", printed.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn prerequisites(containerd: bool) -> bool {
    testkit::available_or_skip(
        testkit::is_root(),
        "the demo tests need root (veths, namespaces, containerd)",
    ) && (!containerd
        || testkit::available_or_skip(
            e2e_ready(),
            "no containerd e2e environment (run tests/e2e/containerd.sh setup, as scripts/test.sh does)",
        ))
}

fn assert_walked(printed: &[String]) {
    let text = printed.join("\n");
    for step in 1..=9 {
        assert!(text.contains(&format!("[{step}/9 at")), "step {step} missing:\n{text}");
    }
    for shown in [
        "kind: ResourceSlice",
        "reservedFor:",
        "prepared demo-node/ndemo0",
        "inet 10.199.0.2/24 scope global net1",
        "10.198.0.0/16 via 10.199.0.1 dev net1",
        "reason: InterfaceAttached",
        "interfaceName: net1",
        "nothing left behind",
    ] {
        assert!(text.contains(shown), "the demo did not show {shown:?}:\n{text}");
    }
}

#[test]
fn the_demo_walks_the_lifecycle_on_containerd_and_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites(true) {
        return;
    }
    let before = HostSnapshot::take(TEMP_PREFIX);
    let start = Instant::now();
    let (child, lines) = spawn_demo(&[]);
    let (code, printed) = finish(child, &lines, Duration::from_secs(120));
    let took = start.elapsed();
    println!("demo on containerd: exit {code:?} in {:.1}s", took.as_secs_f64());
    assert_eq!(code, Some(0), "{}", printed.join("\n"));
    assert!(printed.iter().any(|l| l.contains("runtime: containerd")), "{printed:?}");
    assert_walked(&printed);
    assert!(took < Duration::from_secs(60), "the demo took {took:?}");
    before.assert_restored(&[]);
}

#[test]
fn the_demo_on_the_nri_harness_leaves_nothing_behind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites(false) {
        return;
    }
    let before = HostSnapshot::take(TEMP_PREFIX);
    let (child, lines) = spawn_demo(&[("NETDRA_DEMO_RUNTIME", "harness")]);
    let (code, printed) = finish(child, &lines, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{}", printed.join("\n"));
    assert!(printed.iter().any(|l| l.contains("NRI runtime harness")), "{printed:?}");
    assert_walked(&printed);
    before.assert_restored(&[]);
}

#[test]
fn a_demo_interrupted_with_the_nic_in_the_pod_cleans_up() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !prerequisites(true) {
        return;
    }
    let before = HostSnapshot::take(TEMP_PREFIX);
    let (child, lines) = spawn_demo(&[("DEMO_STEP_DELAY_MS", "1000")]);
    // Step 7's title is printed once the pod runs with ndemo0 inside it.
    let start = Instant::now();
    let mut printed = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the demo never reached step 7:\n{}", printed.join("\n")));
        let reached = line.contains("[7/9 at");
        printed.push(line);
        if reached {
            break;
        }
    }
    assert!(
        !Path::new("/sys/class/net/ndemo0").exists(),
        "ndemo0 is in the pod when the interrupt comes"
    );
    // As a terminal's Ctrl-C: the whole foreground process group.
    nix::sys::signal::killpg(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let (code, rest) = finish(child, &lines, Duration::from_secs(60));
    printed.extend(rest);
    let text = printed.join("\n");
    println!("interrupted after {:.1}s: exit {code:?}", start.elapsed().as_secs_f64());
    assert_ne!(code, Some(0), "an interrupted demo does not report success:\n{text}");
    assert!(text.contains("interrupted (SIGINT)"), "{text}");
    assert!(text.contains("nothing left behind"), "{text}");
    assert!(
        !text.contains("[8/9 at"),
        "the demo went on after the interrupt:\n{text}"
    );
    before.assert_restored(&[]);
}
