//! The kubelet's side of plugin registration, for tests and the demo that play the kubelet.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use kubeletplugin::proto::pluginregistration::{
    InfoRequest, PluginInfo, RegistrationStatus, registration_client::RegistrationClient,
};

use crate::uds::unix_channel;

/// Registration did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistrationError {
    /// No `GetInfo` answer on the socket within the wait.
    #[error("the registration socket {} did not answer GetInfo within {wait:?}", socket.display())]
    NotServed {
        /// The registration socket.
        socket: PathBuf,
        /// How long it was tried.
        wait: Duration,
        /// The last attempt's failure (connecting or the call).
        #[source]
        last: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `NotifyRegistrationStatus` failed after `GetInfo` succeeded.
    #[error("NotifyRegistrationStatus on {}", socket.display())]
    Notify {
        /// The registration socket.
        socket: PathBuf,
        /// The call's status.
        #[source]
        source: tonic::Status,
    },
}

/// Registers the plugin whose registration socket is `socket` as the kubelet does on seeing
/// it: `GetInfo`, then `NotifyRegistrationStatus` (registered). `GetInfo` is retried every
/// 50 ms for up to `wait` (each attempt bounded by what is left of it), while the socket is missing or not served yet (a killed plugin leaves
/// its file behind until the next one replaces it). Returns what the plugin said about itself;
/// checking it is the caller's.
pub async fn register_plugin(socket: &Path, wait: Duration) -> Result<PluginInfo, RegistrationError> {
    let start = Instant::now();
    let (mut client, info) = loop {
        let attempt = async {
            let mut client = RegistrationClient::new(unix_channel(socket).await?);
            let info = client.get_info(InfoRequest {}).await?.into_inner();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((client, info))
        };
        // Each attempt within what is left of the wait: a socket that accepts and never
        // answers must not hold the caller past it.
        let left = wait.saturating_sub(start.elapsed()).max(Duration::from_millis(50));
        let attempt = async {
            match tokio::time::timeout(left, attempt).await {
                Ok(answered) => answered,
                Err(elapsed) => Err(elapsed.into()),
            }
        };
        match attempt.await {
            Ok(answered) => break answered,
            Err(last) if start.elapsed() >= wait => {
                return Err(RegistrationError::NotServed {
                    socket: socket.to_path_buf(),
                    wait,
                    last,
                });
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .map_err(|source| RegistrationError::Notify {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(info)
}
