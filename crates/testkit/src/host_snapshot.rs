//! A snapshot of what a privileged test could leave behind on the host, compared before and
//! after: network namespaces, links, listening unix and TCP sockets, mounts, the runtime's and
//! the driver's processes, and temporary directories with a given prefix.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

/// What a run could leave behind on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    namespaces: BTreeSet<String>,
    links: BTreeSet<String>,
    unix_listeners: BTreeSet<String>,
    tcp_listeners: BTreeSet<String>,
    mounts: BTreeSet<String>,
    processes: BTreeSet<String>,
    temp_dirs: BTreeSet<String>,
    temp_prefix: String,
}

/// Programs whose processes are watched: the runtime's, the driver's, Kubernetes' and `ip`.
/// Other work on the machine (builds, the test harness) comes and goes and says nothing here.
const WATCHED: &[&str] = &[
    "netdra",
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v2",
    "runc",
    "pause",
    "ip",
    "etcd",
    "kube-apiserver",
    "kube-controller",
    "kube-scheduler",
    "kubelet",
];

fn lines_of(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn names_in(dir: &str, keep: impl Fn(&str) -> bool) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| keep(n))
                .collect()
        })
        .unwrap_or_default()
}

impl HostSnapshot {
    /// The host now; temporary directories are those whose names start with `temp_prefix`.
    pub fn take(temp_prefix: &str) -> Self {
        // Listening unix sockets (flags 00010000, __SO_ACCEPTCON), by path.
        let unix_listeners = lines_of("/proc/net/unix")
            .iter()
            .skip(1)
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 8 && cols[3] == "00010000").then(|| cols[7].to_owned())
            })
            .collect();
        let tcp_listeners = ["/proc/net/tcp", "/proc/net/tcp6"]
            .iter()
            .flat_map(|f| lines_of(f).into_iter().skip(1))
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() > 3 && cols[3] == "0A").then(|| cols[1].to_owned())
            })
            .collect();
        let mounts = lines_of("/proc/self/mountinfo")
            .iter()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .collect();
        let processes = names_in("/proc", |n| n.bytes().all(|b| b.is_ascii_digit()))
            .into_iter()
            .filter_map(|pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
                let comm = comm.trim();
                WATCHED.contains(&comm).then(|| format!("{pid} {comm}"))
            })
            .collect();
        Self {
            namespaces: names_in("/run/netns", |_| true),
            links: names_in("/sys/class/net", |_| true),
            unix_listeners,
            tcp_listeners,
            mounts,
            processes,
            temp_dirs: names_in(&std::env::temp_dir().display().to_string(), |n| {
                n.starts_with(temp_prefix)
            }),
            temp_prefix: temp_prefix.to_owned(),
        }
    }

    /// Waits (up to 10 s, for processes still exiting) until the host is as this snapshot,
    /// ignoring the mount points listed in `ignored_mounts`.
    ///
    /// # Panics
    /// When it is not, with what was left behind and what went missing, by kind.
    pub fn assert_restored(&self, ignored_mounts: &[&str]) {
        let start = Instant::now();
        let without = |s: &Self| {
            let mut s = s.clone();
            s.mounts.retain(|m| !ignored_mounts.contains(&m.as_str()));
            s
        };
        let before = without(self);
        loop {
            let now = without(&Self::take(&self.temp_prefix));
            if now == before {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let diff = |name: &str, a: &BTreeSet<String>, b: &BTreeSet<String>| {
                    let added: Vec<_> = b.difference(a).collect();
                    let removed: Vec<_> = a.difference(b).collect();
                    (!added.is_empty() || !removed.is_empty())
                        .then(|| format!("{name}: left behind {added:?}, gone {removed:?}"))
                };
                let report: Vec<String> = [
                    diff("namespaces", &before.namespaces, &now.namespaces),
                    diff("links", &before.links, &now.links),
                    diff("unix listeners", &before.unix_listeners, &now.unix_listeners),
                    diff("tcp listeners", &before.tcp_listeners, &now.tcp_listeners),
                    diff("mounts", &before.mounts, &now.mounts),
                    diff("processes", &before.processes, &now.processes),
                    diff("temporary directories", &before.temp_dirs, &now.temp_dirs),
                ]
                .into_iter()
                .flatten()
                .collect();
                panic!("the host is not as it was before:\n{}", report.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
