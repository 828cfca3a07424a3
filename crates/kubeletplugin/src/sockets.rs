//! Unix-socket lifecycle for the kubelet-facing gRPC servers.
//!
//! The kubelet registers a plugin when its registration socket appears and deregisters it when
//! the socket disappears, so the socket file *is* the registration: it is created fresh (a
//! stale one left by a crash is removed first), re-created if something deletes it while the
//! plugin runs, and removed on shutdown.

use std::{
    io,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::TryStreamExt;
use tokio::{net::UnixListener, sync::watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;

use crate::normalized_stream::NormalizedStream;

/// Longest path a unix socket address can hold (`sun_path` is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;
/// How long in-flight calls get to finish at shutdown before their connections are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// A socket could not be set up. Every variant names the path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The path is too long for a unix socket address.
    #[error("socket path {path} is {len} bytes; unix sockets allow at most {MAX_SOCKET_PATH}")]
    PathTooLong {
        /// The socket path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// Something that is not a socket sits at the path; it is not removed.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Creating the directory, removing a stale socket, or binding failed.
    #[error("socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SocketError + '_ {
    move |source| SocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Binds a listener at `path`: creates missing directories and removes a stale socket.
/// Returns the listener and the socket file's identity, to recognise it later.
pub(crate) fn bind(path: &Path) -> Result<(UnixListener, FileId), SocketError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(SocketError::PathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(path))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(path = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(io_error(path))?;
        }
        Ok(_) => {
            return Err(SocketError::NotASocket {
                path: path.to_path_buf(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_error(path))?;
    let id = FileId::of(&std::fs::metadata(path).map_err(io_error(path))?);
    Ok((listener, id))
}

/// Identifies a socket file. The kernel reuses a freed inode number at once, so the change
/// time is part of the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    inode: u64,
    ctime: (i64, i64),
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            inode: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// Whether the socket we bound is still at `path` (the stat on a blocking thread).
async fn still_ours(path: &Path, id: FileId) -> bool {
    tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.file_type().is_socket() && FileId::of(&m) == id)
}

/// [`bind`] on a blocking thread: it creates directories and removes a stale file.
async fn bind_off_runtime(path: &Path) -> Result<(UnixListener, FileId), SocketError> {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || bind(&owned))
        .await
        .unwrap_or_else(|e| Err(io_error(path)(io::Error::other(format!("the bind task failed: {e}")))))
}

/// Serves gRPC on `path` until `shutdown` turns true, then removes the socket file.
/// `make_router` is called for each (re)binding. `first` is a listener already bound by
/// [`bind`], so start-up errors surface before this task is spawned.
pub(crate) async fn serve(
    path: PathBuf,
    first: (UnixListener, FileId),
    make_router: impl Fn() -> Router,
    mut shutdown: watch::Receiver<bool>,
    check_interval: Duration,
) {
    let mut bound = Some(first);
    loop {
        let (listener, id) = match bound.take() {
            Some(b) => b,
            None => match bind_off_runtime(&path).await {
                Ok(b) => {
                    tracing::info!(path = %path.display(), "re-created socket");
                    b
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot re-create socket; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(check_interval) => continue,
                        _ = shutdown.wait_for(|s| *s) => return,
                    }
                }
            },
        };
        let incoming = UnixListenerStream::new(listener).map_ok(NormalizedStream::new);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut server = tokio::spawn(make_router().serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        }));
        let mut ticker = tokio::time::interval(check_interval);
        let shutting_down = loop {
            // The select only says what happened; the awaits that follow run outside it, where
            // it holds no watch guard.
            let tick = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => break true,
                result = &mut server => {
                    tracing::error!(path = %path.display(), ?result, "gRPC server stopped unexpectedly; re-binding");
                    break false;
                }
                _ = ticker.tick() => true,
            };
            if tick && !still_ours(&path, id).await {
                tracing::warn!(path = %path.display(), "socket was removed or replaced; re-creating it");
                break false;
            }
        };
        let _ = stop_tx.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await.is_err() {
            server.abort();
        }
        if shutting_down {
            if still_ours(&path, id).await
                && let Err(e) = tokio::fs::remove_file(&path).await
            {
                tracing::warn!(path = %path.display(), error = %e, "could not remove socket at shutdown");
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bind_creates_directories_and_replaces_stale_sockets_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/plugin.sock");
        let (l, first) = bind(&path).unwrap();
        assert!(still_ours(&path, first).await);
        drop(l); // The file stays behind, as after a crash.
        assert!(path.exists());
        let (_l, second) = bind(&path).unwrap();
        assert!(still_ours(&path, second).await);
        std::fs::remove_file(&path).unwrap();
        assert!(!still_ours(&path, second).await);

        let file = dir.path().join("regular");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(bind(&file), Err(SocketError::NotASocket { .. })));
        assert!(file.exists());

        let long = dir.path().join("x".repeat(120));
        assert!(matches!(bind(&long), Err(SocketError::PathTooLong { .. })));
    }
}
