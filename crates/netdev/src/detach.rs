//! Bringing an interface back from a pod to the host, as it was before the attach.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::path::PathBuf;

use nix::errno::Errno;

use crate::attach::{LinkChange, restore_addresses_and_routes, restoring, set_link, single};
use crate::locate::{find_in_pod, find_on_host, find_tagged_on_host, pod_namespace};
use crate::netns::{Netns, NetnsError};
use crate::record::{LinkSelector, LinkView, RestoreRecord, Subinterface, get_link};
use crate::rtnl::{Rtnl, RtnlError};
use crate::subinterface::{DeleteOutcome, SubinterfaceError, delete_in, delete_on_host};

/// Where the interface was found.
///
/// Exhaustive on purpose: every caller must handle each outcome, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachOutcome {
    /// In the pod, and moved back.
    Returned,
    /// Already on the host (the kernel or someone else moved it), under this name.
    FoundOnHost {
        /// The name it had when found.
        name: String,
    },
    /// Nowhere: it ceased to exist with its namespace (a veth does, and a subinterface).
    Vanished,
    /// The subinterface made for the pod was deleted.
    Deleted,
}

/// A detach that happened, possibly with parts that could not be restored.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Detached {
    /// Where the interface was found.
    pub outcome: DetachOutcome,
    /// Restore steps that failed (an address the host refused…), as messages; empty when the
    /// interface is back exactly as recorded.
    pub incomplete: Vec<String>,
}

impl Detached {
    /// A detach found at `outcome`, with the restore steps that failed (none: `vec![]`), for
    /// implementations of a kernel seam other than this crate's.
    pub fn new(outcome: DetachOutcome, incomplete: Vec<String>) -> Self {
        Self { outcome, incomplete }
    }
}

/// A detach that could not bring the interface back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetachError {
    /// The host's own namespace or netlink could not be used.
    #[error("detach {device}: {source}")]
    Host {
        /// The interface's original name.
        device: String,
        /// Why.
        #[source]
        source: RtnlError,
    },
    /// The pod's namespace exists but could not be entered.
    #[error("detach {device}: {source}")]
    Netns {
        /// The interface's original name.
        device: String,
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// The subinterface could not be looked for or deleted.
    #[error("detach {device}: {source}")]
    Subinterface {
        /// Its parent's name.
        device: String,
        /// Why.
        #[source]
        source: Box<SubinterfaceError>,
    },
    /// The interface is in the pod and the kernel refused to move it out.
    #[error("detach {device}: move {name} out of {netns} to the host: {source}", netns = netns.display())]
    Stranded {
        /// The interface's original name.
        device: String,
        /// Its name in the pod.
        name: String,
        /// The pod's namespace.
        netns: PathBuf,
        /// The kernel's answer.
        #[source]
        source: RtnlError,
    },
}

/// Brings the recorded interface back to the host.
///
/// Bringing an interface back from a pod to the host, as it was before the attach.
///
/// Best effort and idempotent. The interface is looked for in the pod's namespace first (under
/// its pod name, else by identity), which is opened by its recorded inode when there is one:
/// a namespace whose path was unmounted, or now names another namespace, is still found while
/// a bind mount elsewhere or a process holds it ([`Netns::open_expecting`]). If it is there, one `RTM_SETLINK` on a socket inside the pod
/// moves it to the host under its original name with its MTU, MAC and up/down state. If the
/// namespace is gone, or the interface is not in it, it is looked for on the host: the kernel
/// returns a physical interface to the host when its namespace is destroyed, under a name of
/// its own choosing (`dev7`), so it is found by its recorded identity (PCI function, else
/// permanent MAC, else the MAC it had) and given back its name and settings. Either way its
/// addresses, routes and recorded settings are added again, to the interface found by that
/// identity: never to another interface that took its name on the host meanwhile. A veth dies
/// with its namespace: then there is nothing to bring back, which is not an error.
///
/// A subinterface (a record with [`RestoreRecord::subinterface`]: a macvlan made for the pod
/// on a parent that never moved) is deleted, never returned, and its parent is never looked
/// for nor touched (the record's host state is the parent's, and nothing of it is restored):
/// - in the pod's namespace, wherever it is still held, the link under its pod name carrying
///   its tag, else any link carrying the tag, else an untagged `macvlan` under the tag's
///   temporary name (left by a crash before its rename), is deleted: [`DetachOutcome::Deleted`];
/// - else, a host `macvlan` carrying exactly the tag (someone moved it there) is deleted by it,
///   the parent excepted: [`DetachOutcome::Deleted`] too;
/// - else it went with its namespace: [`DetachOutcome::Vanished`].
///
/// Like [`attach_all`](crate::attach_all), this blocks and runs in the host namespace.
pub fn detach(record: &RestoreRecord) -> Result<Detached, DetachError> {
    // Before anything looks for the recorded host interface: for a subinterface that is the
    // parent, which must not be "restored".
    if let Some(subinterface) = &record.subinterface {
        return detach_subinterface(record, subinterface);
    }
    let device = record.host.name.clone();
    let host_error = |source| DetachError::Host {
        device: device.clone(),
        source,
    };
    let host_ns = Netns::current().map_err(|source| DetachError::Netns {
        device: device.clone(),
        source,
    })?;
    let mut host = Rtnl::new().map_err(host_error)?;

    // In the pod while its namespace is anywhere; when it is gone (or, with no inode recorded,
    // its path is no longer a namespace), on the host.
    let pod_ns = pod_namespace(record).map_err(|source| DetachError::Netns {
        device: device.clone(),
        source,
    })?;
    if let Some(pod_ns) = pod_ns {
        let mut pod = Rtnl::from_socket(pod_ns.socket().map_err(|source| DetachError::Netns {
            device: device.clone(),
            source,
        })?);
        if let Some(link) = find_in_pod(&mut pod, record).map_err(host_error)? {
            move_out(&mut pod, &host_ns, &link, record)?;
            return Ok(Detached {
                outcome: DetachOutcome::Returned,
                incomplete: restore_addresses_and_routes(&mut host, record),
            });
        }
    }

    let Some(link) = find_on_host(&mut host, record).map_err(host_error)? else {
        tracing::info!(
            device = %record.host.name,
            netns = %record.netns.display(),
            "interface gone with its namespace; nothing to bring back"
        );
        return Ok(Detached {
            outcome: DetachOutcome::Vanished,
            incomplete: Vec::new(),
        });
    };
    let mut incomplete = restore_in_place(&mut host, &link, record);
    incomplete.extend(restore_addresses_and_routes(&mut host, record));
    Ok(Detached {
        outcome: DetachOutcome::FoundOnHost { name: link.name },
        incomplete,
    })
}

/// Moves `link` out of the pod, restoring it in the same message. If the original name is
/// taken on the host, the interface still comes out (under its pod name, or one the kernel
/// picks), since stranded is worse than misnamed.
fn move_out(pod: &mut Rtnl, host_ns: &Netns, link: &LinkView, record: &RestoreRecord) -> Result<(), DetachError> {
    let full = set_link(&restoring(link.index, Some(host_ns.raw_fd()), &record.host));
    let first = crate::attach::timed_move(|| single(pod.execute(vec![(full, 0)])));
    let Err(error) = first else { return Ok(()) };
    // A rename refused after the move leaves it on the host: done, misnamed.
    if error.errno() == Some(Errno::EEXIST) && get_link(pod, LinkSelector::Index(link.index)).ok().flatten().is_none() {
        tracing::warn!(
            device = %record.host.name,
            name = %link.name,
            "interface back on the host but its name is taken there: {error}"
        );
        return Ok(());
    }
    let bare = set_link(&LinkChange {
        index: link.index,
        netns_fd: Some(host_ns.raw_fd()),
        name: None,
        mtu: Some(record.host.mtu),
        mac: record.host.mac,
        up: None,
    });
    single(pod.execute(vec![(bare, 0)])).map_err(|_| DetachError::Stranded {
        device: record.host.name.clone(),
        name: link.name.clone(),
        netns: record.netns.clone(),
        source: error,
    })?;
    tracing::warn!(
        device = %record.host.name,
        name = %link.name,
        "interface back on the host under its pod name: {} is taken",
        record.host.name
    );
    Ok(())
}

/// Gives a link found on the host its recorded name and settings. A rename needs the link
/// down, so an up link is brought down first.
fn restore_in_place(host: &mut Rtnl, link: &LinkView, record: &RestoreRecord) -> Vec<String> {
    let mut problems = Vec::new();
    if link.name != record.host.name && link.up {
        let down = set_link(&LinkChange {
            index: link.index,
            netns_fd: None,
            name: None,
            mtu: None,
            mac: None,
            up: Some(false),
        });
        if let Err(e) = single(host.execute(vec![(down, 0)])) {
            problems.push(format!("bring {} down to rename it: {e}", link.name));
        }
    }
    let restore = set_link(&restoring(link.index, None, &record.host));
    if let Err(e) = single(host.execute(vec![(restore, 0)])) {
        problems.push(format!(
            "restore {} as {} (mtu {}, {}): {e}",
            link.name,
            record.host.name,
            record.host.mtu,
            if record.host.up { "up" } else { "down" }
        ));
    }
    problems
}

/// Deletes a subinterface wherever its tag is, never touching its parent (see the module
/// documentation).
fn detach_subinterface(record: &RestoreRecord, subinterface: &Subinterface) -> Result<Detached, DetachError> {
    let device = &record.host.name;
    let tag = &subinterface.tag;
    let netns_error = |source| DetachError::Netns {
        device: device.clone(),
        source,
    };
    let failed = |source| DetachError::Subinterface {
        device: device.clone(),
        source: Box::new(source),
    };
    let done = |outcome| Detached {
        outcome,
        incomplete: Vec::new(),
    };
    if let Some(pod_ns) = pod_namespace(record).map_err(netns_error)? {
        let mut pod = Rtnl::from_socket(pod_ns.socket().map_err(netns_error)?);
        if delete_in(&mut pod, pod_ns.path(), &record.name_in_pod, tag).map_err(failed)? == DeleteOutcome::Deleted {
            return Ok(done(DetachOutcome::Deleted));
        }
    }
    let host_error = |source| DetachError::Host {
        device: device.clone(),
        source,
    };
    let mut host = Rtnl::new().map_err(host_error)?;
    if let Some(link) = find_tagged_on_host(&mut host, record, tag).map_err(host_error)? {
        tracing::warn!(device = %device, name = %link.name, tag = %tag, "subinterface found on the host; deleting it");
        if delete_on_host(link.index, tag).map_err(failed)? == DeleteOutcome::Deleted {
            return Ok(done(DetachOutcome::Deleted));
        }
    }
    tracing::info!(
        device = %device,
        name = %record.name_in_pod,
        netns = %record.netns.display(),
        "subinterface gone with its namespace; nothing to delete"
    );
    Ok(done(DetachOutcome::Vanished))
}
