//! A network namespace, held open by a file descriptor that was checked to be one.
//!
//! The rest of this documentation is on the public item it governs, below, where users read it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use parking_lot::Mutex;

/// Why a namespace could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetnsError {
    /// The path does not exist (any more).
    #[error("network namespace {path}: does not exist")]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The path exists but could not be opened or inspected.
    #[error("network namespace {path}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a network namespace: a regular file, another namespace type…
    #[error("{path} is not a network namespace: {reason}")]
    NotANetworkNamespace {
        /// The path given.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// The namespace recorded with this path and inode is no longer anywhere: the path is gone
    /// or names another namespace, and no mount or process holds the recorded one.
    #[error("network namespace {path} (net:[{inode}]): gone, and nothing else holds it")]
    Gone {
        /// The path recorded.
        path: PathBuf,
        /// The inode recorded.
        inode: u64,
    },
    /// Entering the namespace or creating a socket in it failed.
    #[error("netlink socket in network namespace {path}: {source}")]
    Socket {
        /// The namespace's path.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
}

/// An open network namespace.
///
/// A network namespace, held open by a file descriptor that was checked to be one.
///
/// A path handed over by a runtime (`/var/run/netns/cni-…`, `/proc/PID/ns/net`) is checked
/// before anything is moved into it: its file system must be `nsfs`, and the namespace it
/// names must be a network namespace. The kernel answers the second question in
/// `setns(fd, CLONE_NEWNET)`, which fails with `EINVAL` for any other kind of namespace (the
/// `NS_GET_NSTYPE` ioctl has no safe wrapper, and this workspace forbids `unsafe`).
///
/// That `setns` is not wasted: a netlink socket belongs to the namespace of the thread that
/// created it, so [`Netns::open`] starts a short-lived OS thread that enters the namespace,
/// creates the routing netlink socket later requests go through, and ends. No other thread,
/// and never an async runtime's worker, changes namespace.
///
/// A path is only a name: once its pod is gone it may be unmounted while the namespace lives on
/// elsewhere, or name another namespace. [`Netns::open_expecting`] opens a recorded namespace
/// by its identity, its inode, wherever it is still held ([`find_netns`](crate::find_netns)).
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
    /// The routing netlink socket made inside it while checking it, until a request takes it.
    socket: Mutex<Option<netlink_sys::Socket>>,
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Netns {
    /// Opens `path` and checks that it is a network namespace.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, NetnsError> {
        let path = path.as_ref();
        Self::from_fd(open_file(path)?.into(), path)
    }

    /// Opens the namespace recorded as `path` with, when known, `inode` (its [`Netns::inode`]
    /// then).
    ///
    /// A path can outlive its namespace's use: after the pod it belonged to died, it may be
    /// unmounted while the namespace lives on, held by a bind mount elsewhere or a process in
    /// it, or be reused for another namespace (a new pod's, under the same name). So with an
    /// inode, a path that is missing, not a namespace, or another namespace is not used: the
    /// namespace is looked for by its inode ([`find_netns`](crate::holders::find_netns)) and
    /// opened where found, and [`path`](Self::path) is then that holder's path.
    /// [`NetnsError::Gone`] when it is nowhere. Without an inode this is [`Netns::open`].
    pub fn open_expecting(path: impl AsRef<Path>, inode: Option<u64>) -> Result<Self, NetnsError> {
        let Some(inode) = inode else {
            return Self::open(path);
        };
        let (file, found) = holder_of(path.as_ref(), inode)?;
        Self::from_fd(file.into(), found)
    }

    /// The calling thread's own network namespace (`/proc/thread-self/ns/net`): the kernel
    /// made it a network namespace, so it is not entered to check.
    pub fn current() -> Result<Self, NetnsError> {
        let path = PathBuf::from("/proc/thread-self/ns/net");
        let file = File::open(&path).map_err(|source| NetnsError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            fd: file.into(),
            path,
            socket: Mutex::new(None),
        })
    }

    /// Takes an already open descriptor, checked like a path; `label` names it in errors.
    pub fn from_fd(fd: OwnedFd, label: impl Into<PathBuf>) -> Result<Self, NetnsError> {
        let path = label.into();
        let stat = fstatfs(&fd).map_err(|errno| NetnsError::Io {
            path: path.clone(),
            source: errno.into(),
        })?;
        if stat.filesystem_type() != NSFS_MAGIC {
            return Err(NetnsError::NotANetworkNamespace {
                path,
                reason: format!("its file system is not nsfs (magic {:#x})", stat.filesystem_type().0),
            });
        }
        let socket = socket_inside(&fd).map_err(|source| match source.raw_os_error() {
            Some(code) if code == Errno::EINVAL as i32 => NetnsError::NotANetworkNamespace {
                path: path.clone(),
                reason: "it is another kind of namespace".into(),
            },
            _ => NetnsError::Socket {
                path: path.clone(),
                source,
            },
        })?;
        Ok(Self {
            fd,
            path,
            socket: Mutex::new(Some(socket)),
        })
    }

    /// The path (or label) this namespace was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The identity of the namespace: the inode of its nsfs file (what `ip netns identify`
    /// and `/proc/PID/ns/net` show as `net:[N]`).
    pub fn inode(&self) -> Result<u64, NetnsError> {
        nix::sys::stat::fstat(&self.fd)
            .map(|s| s.st_ino)
            .map_err(|errno| NetnsError::Io {
                path: self.path.clone(),
                source: errno.into(),
            })
    }

    /// A routing netlink socket that belongs to this namespace: the one made while checking
    /// it, else a new one from a short-lived thread that enters it.
    pub(crate) fn socket(&self) -> Result<netlink_sys::Socket, NetnsError> {
        let made = self.socket.lock().take();
        match made {
            Some(socket) => Ok(socket),
            None => socket_inside(&self.fd).map_err(|source| NetnsError::Socket {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Runs `work` on a short-lived thread that has entered this namespace, and returns what it
    /// returned: for what only a thread inside can do, such as writing the namespace's
    /// `/proc/sys/net` files, which show the namespace of the task that opens them.
    pub(crate) fn run_inside<T: Send>(&self, work: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let fd = self.fd.as_fd();
        let entered = std::thread::scope(|scope| {
            std::thread::Builder::new()
                .name("netdev-netns".into())
                .spawn_scoped(scope, move || -> std::io::Result<T> {
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
                    Ok(work())
                })?
                .join()
                .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
        });
        entered.map_err(|source| NetnsError::Socket {
            path: self.path.clone(),
            source,
        })
    }

    /// The descriptor, for `IFLA_NET_NS_FD`.
    pub(crate) fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// The namespace of inode `inode`, opened: at `path` if that is still it, else wherever it is
/// held; with the path it was opened by.
fn holder_of(path: &Path, inode: u64) -> Result<(File, PathBuf), NetnsError> {
    if let Some(file) = open_if(path, inode)? {
        return Ok((file, path.to_owned()));
    }
    let gone = || NetnsError::Gone {
        path: path.to_owned(),
        inode,
    };
    let found = crate::holders::find_netns(inode).ok_or_else(gone)?;
    // The holder may have let go since it was found (its process ended).
    let file = open_if(&found, inode)?.ok_or_else(gone)?;
    Ok((file, found))
}

/// `path` opened if it is the nsfs file of inode `inode`; `None` when it is missing, not nsfs,
/// or another namespace. Checked before [`Netns::from_fd`] enters it: no thread is spent on a
/// namespace that is not the one.
fn open_if(path: &Path, inode: u64) -> Result<Option<File>, NetnsError> {
    let file = match open_file(path) {
        Ok(file) => file,
        Err(NetnsError::Missing { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let is_it = nix::sys::stat::fstat(&file).is_ok_and(|s| s.st_ino == inode)
        && fstatfs(&file).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC);
    Ok(is_it.then_some(file))
}

/// Opens `path` read-only; a missing one is [`NetnsError::Missing`].
fn open_file(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => NetnsError::Missing { path: path.to_owned() },
        _ => NetnsError::Io {
            path: path.to_owned(),
            source,
        },
    })
}

/// Creates a routing netlink socket inside the namespace `fd` on a thread of its own, which
/// ends with the call (see [`Netns`]).
pub(crate) fn socket_inside(fd: &OwnedFd) -> std::io::Result<netlink_sys::Socket> {
    let fd = fd.as_fd();
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netdev-netns".into())
            .spawn_scoped(scope, move || -> std::io::Result<netlink_sys::Socket> {
                nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
                crate::rtnl::new_socket()
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_is_a_network_namespace() {
        let own = Netns::current().expect("own namespace");
        assert!(own.inode().expect("inode") > 0);
    }

    #[test]
    fn a_regular_file_is_refused() {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let err = Netns::open(file.path()).expect_err("not a namespace");
        assert!(matches!(err, NetnsError::NotANetworkNamespace { .. }), "{err}");
        assert!(err.to_string().contains("not nsfs"), "{err}");
    }

    #[test]
    fn another_namespace_type_is_refused() {
        let err = Netns::open("/proc/self/ns/mnt").expect_err("a mount namespace");
        assert!(matches!(err, NetnsError::NotANetworkNamespace { .. }), "{err}");
        assert!(err.to_string().contains("another kind of namespace"), "{err}");
    }

    #[test]
    fn a_namespace_is_found_by_its_inode_wherever_it_is_held() {
        // `holder_of` rather than `open_expecting`: entering a namespace, even our own, needs
        // CAP_SYS_ADMIN, and these run without root.
        let own = Netns::current().expect("own namespace").inode().expect("inode");
        let (_, found) = holder_of(Path::new("/proc/self/ns/net"), own).expect("the path is it");
        assert_eq!(found, Path::new("/proc/self/ns/net"));
        // The path is gone, or not a namespace: found through a process in it.
        let file = tempfile::NamedTempFile::new().expect("temp file");
        for path in [Path::new("/nonexistent/netns/pod"), file.path()] {
            let (held, found) = holder_of(path, own).expect("found elsewhere");
            assert_ne!(found, path);
            assert_eq!(nix::sys::stat::fstat(&held).expect("stat").st_ino, own);
        }
        // Without an inode, only the path counts.
        let err = Netns::open_expecting("/nonexistent/netns/pod", None).expect_err("missing");
        assert!(matches!(err, NetnsError::Missing { .. }), "{err}");
    }

    #[test]
    fn a_path_naming_another_namespace_is_not_taken_for_the_recorded_one() {
        // No namespace has inode 1: our own namespace at the path is another one.
        let err = Netns::open_expecting("/proc/self/ns/net", Some(1)).expect_err("gone");
        assert!(matches!(err, NetnsError::Gone { inode: 1, .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "network namespace /proc/self/ns/net (net:[1]): gone, and nothing else holds it"
        );
    }

    #[test]
    fn a_missing_path_says_so() {
        let err = Netns::open("/nonexistent/netns/pod").expect_err("missing");
        assert!(matches!(err, NetnsError::Missing { .. }), "{err}");
    }
}
