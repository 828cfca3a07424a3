//! The demo's host side: veth pairs standing in for NICs, named network namespaces for the
//! harness's pods, and the record of both.
//!
//! It runs the `ip` command rather than netlink: the demo shows the reader what `ip` shows, and
//! the commands it prints are the ones the reader can run afterwards.

use anyhow::{Context, bail};
use testkit::try_ip;

/// Host ends of the demo's veth pairs; the peer of `ndemoN` is `ndemoNp`.
pub const NICS: [&str; 2] = ["ndemo0", "ndemo1"];

/// Fails unless this process runs as root: it creates links and namespaces.
pub fn require_root() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no Uid line in /proc/self/status")?;
    if effective != "0" {
        bail!("netdra demo needs root: it creates veth pairs and network namespaces (run it with sudo)");
    }
    Ok(())
}

/// Whether a link of that name exists in the host namespace.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Whether a named network namespace exists.
pub fn netns_exists(name: &str) -> bool {
    std::path::Path::new("/run/netns").join(name).exists()
}

/// What the demo created on the host, recorded before each creation so an interrupted step
/// is cleaned up too; removal is by these names only.
#[derive(Debug, Default)]
pub struct Created {
    veths: Vec<String>,
    namespaces: Vec<String>,
}

impl Created {
    /// Creates the veth pair `name` / `{name}p`, the peer up (the host end is the "NIC").
    pub fn veth(&mut self, name: &str) -> anyhow::Result<()> {
        let peer = format!("{name}p");
        for link in [name, peer.as_str()] {
            if link_exists(link) {
                bail!(
                    "a link named {link} already exists (left by a demo that was killed?); \
                     remove it with `ip link del {link}` and run the demo again"
                );
            }
        }
        self.veths.push(name.to_owned());
        try_ip(&["link", "add", name, "type", "veth", "peer", "name", &peer])?;
        try_ip(&["link", "set", &peer, "up"])?;
        Ok(())
    }

    /// Creates the named network namespace `name`.
    pub fn netns(&mut self, name: &str) -> anyhow::Result<()> {
        if netns_exists(name) {
            bail!(
                "a network namespace named {name} already exists (left by a demo that was killed?); \
                 remove it with `ip netns del {name}` and run the demo again"
            );
        }
        self.namespaces.push(name.to_owned());
        try_ip(&["netns", "add", name])?;
        Ok(())
    }

    /// Deletes the namespaces. Returns what could not be removed.
    pub fn remove_namespaces(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        for name in self.namespaces.drain(..) {
            if netns_exists(&name)
                && let Err(e) = try_ip(&["netns", "del", &name])
            {
                failed.push(format!("{:#}", anyhow::Error::from(e)));
            }
        }
        failed
    }

    /// Deletes the namespaces, then the veths (a veth still in a namespace went with it).
    /// Returns what could not be removed.
    pub fn remove_all(&mut self) -> Vec<String> {
        let mut failed = self.remove_namespaces();
        for name in self.veths.drain(..) {
            if link_exists(&name)
                && let Err(e) = try_ip(&["link", "del", &name])
            {
                failed.push(format!("{:#}", anyhow::Error::from(e)));
            }
        }
        failed
    }
}
