//! Shared by the privileged tests and the benchmark: root detection, and links and network
//! namespaces that are removed by the names recorded at creation, even when a test fails.
#![allow(dead_code, missing_docs, clippy::unwrap_used)]

use std::process::Command;

/// Whether this process may create links and namespaces. Under `CI=true` a missing privilege
/// fails loudly; elsewhere the caller skips with the printed reason.
pub fn privileged(what: &str) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    let ip = Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success());
    testkit::available_or_skip(
        root && ip,
        &format!("{what} needs root and iproute2 (root: {root}, ip: {ip})"),
    )
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

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

/// Links and namespaces this test created, removed by name when dropped.
#[derive(Default)]
pub struct Created {
    /// Host links, with the namespace their veth peer was created in (if not the host's).
    links: Vec<(String, Option<String>)>,
    netns: Vec<String>,
}

impl Created {
    /// A veth pair in the host namespace; `peer_netns` puts the peer in that namespace.
    pub fn veth(&mut self, name: &str, peer: &str, peer_netns: Option<&str>) {
        self.links.push((name.to_owned(), peer_netns.map(str::to_owned)));
        match peer_netns {
            Some(ns) => ip(&["link", "add", name, "type", "veth", "peer", "name", peer, "netns", ns]),
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
}

impl Drop for Created {
    fn drop(&mut self) {
        // Namespaces first: the kernel dismantles a namespace's veths in one batch, and their
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
        if !batch.is_empty() {
            let _ = std::panic::catch_unwind(|| ip_batch(&batch));
        }
    }
}

/// A prefix for link names unique to this process (link names are at most 15 bytes).
pub fn prefix(tag: &str) -> String {
    format!("{tag}{:04}", std::process::id() % 10_000)
}
