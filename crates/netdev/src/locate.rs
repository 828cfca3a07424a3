//! Where a recorded interface is now, changing nothing: what recovery after a crash asks before
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use crate::netns::{Netns, NetnsError};
use crate::record::{LinkSelector, LinkView, RestoreRecord, dump_links, get_link};
use crate::rtnl::{Rtnl, RtnlError};
use crate::subinterface::dump_macvlans;
use crate::sysfs::Sysfs;

/// Where a recorded interface is now.
///
/// Exhaustive on purpose: every caller must handle each place, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// In its pod's namespace.
    InPod {
        /// Its name there.
        name: String,
    },
    /// On the host (never moved, moved back, or returned by the kernel when its namespace died).
    OnHost {
        /// Its name on the host.
        name: String,
    },
    /// Neither: it ceased to exist (a veth does with its namespace).
    Gone,
}

/// Looking for an interface failed; what was read says nothing about where it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// The pod's namespace exists but could not be entered.
    #[error("locate {device}: {source}")]
    Netns {
        /// The interface's original name.
        device: String,
        /// Why.
        #[source]
        source: NetnsError,
    },
    /// Netlink could not be asked, in the pod or on the host.
    #[error("locate {device}: {step}: {source}")]
    Read {
        /// The interface's original name.
        device: String,
        /// Where it was being looked for.
        step: String,
        /// Why.
        #[source]
        source: RtnlError,
    },
}

/// Where `record`'s interface is now.
///
/// Where a recorded interface is now, changing nothing: what recovery after a crash asks before
/// it decides whether an attach happened and what a detach must do.
///
/// The interface is looked for where [`detach`](crate::detach()) would look, in the same order
/// and by the same rules: in its pod's namespace (opened by its recorded inode when there is
/// one, so a namespace whose path is gone but which a bind mount or a process still holds is
/// found; see [`Netns::open_expecting`]) under its pod name or by identity, then on the host
/// under its original name or by identity (PCI function, else permanent MAC, else a MAC it
/// had). Nowhere means it ceased to exist with its namespace, as a veth does.
///
/// A subinterface (a record with [`RestoreRecord::subinterface`]) is found by its tag, never
/// as its parent: in the pod's namespace under its pod name carrying the tag, else any link
/// there carrying it, else an untagged `macvlan` under the tag's temporary name (a crash came
/// between its creation and its rename: see [`crate::subinterface_temporary_name`])
/// ([`Location::InPod`]); else a host `macvlan` carrying the tag, moved there by someone ([`Location::OnHost`]: a leftover to delete, which [`detach`](crate::detach())
/// does); else [`Location::Gone`], as it is once its namespace is. The parent, which is on the
/// host under the recorded name all along, is never looked at.
///
/// Like [`attach_all`](crate::attach_all), this blocks and runs in the host namespace.
pub fn locate(record: &RestoreRecord) -> Result<Location, LocateError> {
    let device = &record.host.name;
    // `find_in_pod` identifies a subinterface by its tag; on the host only the tag is looked for.
    let netns_error = |source| LocateError::Netns {
        device: device.clone(),
        source,
    };
    if let Some(pod_ns) = pod_namespace(record).map_err(netns_error)? {
        let read = |source| LocateError::Read {
            device: device.clone(),
            step: format!("look in {}", pod_ns.path().display()),
            source,
        };
        let mut pod = Rtnl::from_socket(pod_ns.socket().map_err(netns_error)?);
        let found = match &record.subinterface {
            Some(subinterface) => crate::subinterface::find_in_pod(&mut pod, &record.name_in_pod, &subinterface.tag),
            None => find_in_pod(&mut pod, record),
        };
        if let Some(link) = found.map_err(read)? {
            return Ok(Location::InPod { name: link.name });
        }
    }
    let read = |source| LocateError::Read {
        device: device.clone(),
        step: "look on the host".into(),
        source,
    };
    let mut host = Rtnl::new().map_err(read)?;
    let found = match &record.subinterface {
        Some(subinterface) => find_tagged_on_host(&mut host, record, &subinterface.tag),
        None => find_on_host(&mut host, record),
    };
    Ok(match found.map_err(read)? {
        Some(link) => Location::OnHost { name: link.name },
        None => Location::Gone,
    })
}

/// The record's pod namespace, opened by its inode when recorded; `None` when it is gone (or
/// its path, with no inode recorded, is no longer a namespace).
pub(crate) fn pod_namespace(record: &RestoreRecord) -> Result<Option<Netns>, NetnsError> {
    match Netns::open_expecting(&record.netns, record.netns_inode) {
        Ok(netns) => Ok(Some(netns)),
        Err(NetnsError::Missing { .. } | NetnsError::NotANetworkNamespace { .. } | NetnsError::Gone { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The interface in the pod: under its pod name if that is it, else by identity.
pub(crate) fn find_in_pod(pod: &mut Rtnl, record: &RestoreRecord) -> Result<Option<LinkView>, RtnlError> {
    if let Some(link) = get_link(pod, LinkSelector::Name(&record.name_in_pod))?
        && record.identifies(&link, None)
    {
        return Ok(Some(link));
    }
    Ok(dump_links(pod)?.into_iter().find(|l| record.identifies(l, None)))
}

/// A subinterface on the host: a `macvlan` carrying `tag` that is not its parent (which keeps
/// the recorded name and is never taken for it).
pub(crate) fn find_tagged_on_host(
    host: &mut Rtnl,
    record: &RestoreRecord,
    tag: &str,
) -> Result<Option<LinkView>, RtnlError> {
    Ok(dump_macvlans(host)?
        .into_iter()
        .find(|l| l.alias.as_deref() == Some(tag) && l.name != record.host.name))
}

/// The interface on the host: under its original name if that is it, else by identity.
pub(crate) fn find_on_host(host: &mut Rtnl, record: &RestoreRecord) -> Result<Option<LinkView>, RtnlError> {
    let sysfs = Sysfs::default();
    let pci = |name: &str| {
        record
            .host
            .pci_address
            .as_ref()
            .and_then(|_| sysfs.interface(name).pci.map(|p| p.address))
    };
    if let Some(link) = get_link(host, LinkSelector::Name(&record.host.name))?
        && record.identifies(&link, pci(&link.name).as_deref())
    {
        return Ok(Some(link));
    }
    Ok(dump_links(host)?
        .into_iter()
        .find(|l| record.identifies(l, pci(&l.name).as_deref())))
}
