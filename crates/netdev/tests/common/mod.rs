//! Shared by the privileged tests and the benchmark: root detection, and links and network
//! namespaces that are removed by the names recorded at creation, even when a test fails.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

/// Whether this process may create links and namespaces. Under `CI=true` a missing privilege
/// fails loudly; elsewhere the caller skips with the printed reason.
pub fn privileged(what: &str) -> bool {
    let root = testkit::is_root();
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    testkit::available_or_skip(
        root && ip,
        &format!("{what} needs root and iproute2 (root: {root}, ip: {ip})"),
    )
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub use testkit::ip;

/// Feeds `commands` to `ip -batch -` (one process for many links).
pub fn ip_batch(commands: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-force", "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write batch");
    let out = child.wait_with_output().expect("wait ip -batch");
    assert!(
        out.status.success(),
        "ip -batch: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Whether link `name` exists in the host namespace.
pub fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The names of the host namespace's links, from one `ip -o link show`.
pub fn host_links() -> std::collections::BTreeSet<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// Links, namespaces, the mounts holding namespaces and the processes in them that this test
/// created, removed by name (or process ID) when dropped.
#[derive(Default)]
pub struct Created {
    /// Host links, with the namespace their veth peer was created in (if not the host's).
    links: Vec<(String, Option<String>)>,
    netns: Vec<String>,
    /// Files a namespace is bind-mounted onto.
    holds: Vec<PathBuf>,
    /// Processes started inside a namespace.
    processes: Vec<Child>,
}

impl Created {
    /// A veth pair in the host namespace; `peer_netns` puts the peer in that namespace.
    pub fn veth(&mut self, name: &str, peer: &str, peer_netns: Option<&str>) {
        self.links.push((name.to_owned(), peer_netns.map(str::to_owned)));
        match peer_netns {
            Some(ns) => {
                ip(&["link", "add", name, "type", "veth", "peer", "name", peer, "netns", ns]);
            }
            None => {
                self.links.push((peer.to_owned(), None));
                ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
            }
        }
    }

    /// Records a host link created some other way (e.g. by a batch), whose veth peer, if any,
    /// is in `peer_netns`.
    pub fn record_link(&mut self, name: &str, peer_netns: Option<&str>) {
        self.links.push((name.to_owned(), peer_netns.map(str::to_owned)));
    }

    /// A named network namespace.
    pub fn netns(&mut self, name: &str) {
        self.netns.push(name.to_owned());
        ip(&["netns", "add", name]);
    }

    /// Holds namespace `name` alive past `ip netns del` with a bind mount of its file onto a
    /// new file, as a runtime or an operator might; that file's path.
    pub fn hold(&mut self, name: &str) -> PathBuf {
        let hold = std::env::temp_dir().join(format!("netdev-hold-{name}"));
        std::fs::File::create(&hold).unwrap();
        self.holds.push(hold.clone());
        let out = Command::new("mount")
            .arg("--bind")
            .arg(netns_path(name))
            .arg(&hold)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {}", String::from_utf8_lossy(&out.stderr));
        hold
    }

    /// Releases a hold made by [`Created::hold`] now: unmounts it and removes its file.
    pub fn release(&mut self, hold: &Path) {
        self.holds.retain(|h| h != hold);
        unhold(hold);
    }

    /// A process sleeping inside namespace `name`, which holds it alive; its PID.
    pub fn process_in(&mut self, name: &str) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", name, "sleep", "600"])
            .spawn()
            .unwrap();
        let pid = child.id();
        self.processes.push(child);
        // `ip netns exec` enters the namespace, then becomes `sleep`.
        let ns = std::fs::metadata(netns_path(name)).unwrap().ino();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino()).ok() != Some(ns) {
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} never entered {name}"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        pid
    }
}

/// Unmounts a hold and removes its file, quietly (a test may have done it).
fn unhold(hold: &Path) {
    let _ = Command::new("umount").arg(hold).output();
    let _ = std::fs::remove_file(hold);
}

impl Drop for Created {
    fn drop(&mut self) {
        // What holds a namespace first, or deleting it would not end it.
        for child in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        for hold in &self.holds {
            unhold(hold);
        }
        // Namespaces next: the kernel dismantles a namespace's veths in one batch, and their
        // host peers with them, far faster than deleting 1,000 links one by one.
        for ns in &self.netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        // That happens asynchronously: wait (bounded) for those host peers to go.
        let in_deleted_ns = |peer_ns: &Option<String>| peer_ns.as_ref().is_some_and(|ns| self.netns.contains(ns));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut existing = host_links();
        while self
            .links
            .iter()
            .any(|(l, ns)| in_deleted_ns(ns) && existing.contains(l))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
            existing = host_links();
        }
        // Whatever is left goes by name.
        let mut batch = String::new();
        for (link, _) in self.links.iter().filter(|(l, _)| existing.contains(l)) {
            batch.push_str(&format!("link del {link}\n"));
        }
        // Quietly: deleting one end of a veth takes its peer along, so a later line may fail
        // (`-force` goes on past it).
        if !batch.is_empty() {
            use std::io::Write;
            if let Ok(mut child) = Command::new("ip")
                .args(["-force", "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
            {
                if let Some(mut stdin) = child.stdin.take() {
                    let _ = stdin.write_all(batch.as_bytes());
                }
                let _ = child.wait();
            }
        }
    }
}

/// A prefix for link names unique to this process (link names are at most 15 bytes).
pub fn prefix(tag: &str) -> String {
    format!("{tag}{:04}", std::process::id() % 10_000)
}

/// `/var/run/netns/NAME`.
pub fn netns_path(name: &str) -> String {
    format!("/var/run/netns/{name}")
}

/// `ip -j ARGS`, parsed.
pub fn ip_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip").arg("-j").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip -j {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// What detach must restore, as `ip` shows it: name, MTU, MAC, up flag, addresses and routes.
#[derive(Debug, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    pub mtu: u64,
    pub mac: String,
    pub up: bool,
    pub addresses: BTreeSet<String>,
    pub routes: BTreeSet<String>,
}

/// Host link `name` as `ip` shows it.
pub fn host_view(name: &str) -> HostView {
    let link = &ip_json(&["link", "show", "dev", name])[0];
    let addresses = ip_json(&["addr", "show", "dev", name])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        // The IPv6 link-local address follows the MAC; its DAD state varies with timing.
        .filter(|a| a["scope"] != "link")
        .map(|a| format!("{}/{} {}", a["local"], a["prefixlen"], a["scope"]))
        .collect();
    let routes = ["-4", "-6"]
        .iter()
        .flat_map(|family| {
            ip_json(&[family, "route", "show", "dev", name])
                .as_array()
                .cloned()
                .unwrap()
        })
        .filter(|r| !r["dst"].as_str().unwrap_or_default().starts_with("fe80"))
        .map(|r| format!("{} via {} proto {}", r["dst"], r["gateway"], r["protocol"]))
        .collect();
    HostView {
        name: link["ifname"].as_str().unwrap().to_owned(),
        mtu: link["mtu"].as_u64().unwrap(),
        mac: link["address"].as_str().unwrap().to_owned(),
        up: link["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        addresses,
        routes,
    }
}

/// A veth `host` (peer `peer`, up) with an address and a route, in the given up/down state.
pub fn host_veth(created: &mut Created, host: &str, peer: &str, third_octet: u8, up: bool) {
    created.veth(host, peer, None);
    ip(&["link", "set", peer, "up"]);
    ip(&["link", "set", host, "mtu", "1450"]);
    if up {
        ip(&["link", "set", host, "up"]);
    }
    ip(&["addr", "add", &format!("192.168.{third_octet}.5/24"), "dev", host]);
    if up {
        ip(&[
            "route",
            "add",
            &format!("198.51.{third_octet}.0/24"),
            "via",
            &format!("192.168.{third_octet}.1"),
            "dev",
            host,
        ]);
    }
}

/// Waits (bounded) until the kernel has dismantled a deleted namespace, which it does
/// asynchronously: the host end `peer` of a veth whose other end was in it is gone.
pub fn wait_gone(peer: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while link_exists(peer) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// What the kernel does to a physical NIC when its namespace dies: it comes back to the host
/// under a name of its choosing, with what it had in the pod. A veth would die instead, so the
/// tests move `name_in_pod` out of namespace `ns` as `host_name`, then delete `ns`.
pub fn return_as_physical_nic(ns: &str, name_in_pod: &str, host_name: &str) {
    let pid = std::process::id().to_string();
    ip(&["-n", ns, "link", "set", name_in_pod, "netns", &pid, "name", host_name]);
    ip(&["netns", "del", ns]);
}
