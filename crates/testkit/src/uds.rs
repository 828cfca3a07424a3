//! A gRPC client channel over a Unix socket, as the kubelet and crictl reach the plugin's DRA,
//! registration and CRI sockets.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// The socket could not be connected.
#[derive(Debug, thiserror::Error)]
#[error("connecting to {}", path.display())]
#[non_exhaustive]
pub struct UnixChannelError {
    /// The socket.
    pub path: PathBuf,
    /// Why the connection failed.
    #[source]
    pub source: tonic::transport::Error,
}

/// A tonic channel to the gRPC server on the Unix socket `path`, connected now.
///
/// The `:authority` is `localhost`, as most clients send; the kubelet sends the socket path
/// instead, and the plugin accepts both. Each reconnect dials the same path again.
pub async fn unix_channel(path: &Path) -> Result<Channel, UnixChannelError> {
    let socket = path.to_path_buf();
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|source| UnixChannelError {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let dir = std::env::temp_dir().join(format!("testkit-uds-{}", std::process::id()));
        let path = dir.join("absent.sock");
        let err = unix_channel(&path).await.expect_err("nothing listens there");
        assert_eq!(err.path, path);
        assert_eq!(err.to_string(), format!("connecting to {}", path.display()));
    }
}
