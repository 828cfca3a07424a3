//! Running a plugin against a runtime: connect, register, serve, and reconnect when the runtime
//! goes away or recreates its socket.

use parking_lot::Mutex;
use std::{path::PathBuf, sync::Arc, time::Duration};

use prost::Message;
use tokio::{net::UnixStream, sync::watch, task::JoinHandle};

use crate::{
    endpoint::{Code, Endpoint, Status},
    frame::{PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN},
    plugin::{Plugin, RuntimeInfo},
    proto::api::{
        ContainerEviction, ContainerUpdate, RegisterPluginRequest, UpdateContainersRequest, UpdateContainersResponse,
    },
    service::{PluginService, RUNTIME_SERVICE, Session},
};

/// The NRI version whose API this SDK speaks (sent in `RegisterPluginRequest.NRI_version`).
pub const NRI_VERSION: &str = "v0.12.2";
/// The default socket of an NRI-enabled runtime.
pub const DEFAULT_SOCKET: &str = "/var/run/nri/nri.sock";
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Backoff cap: a restarted runtime is found again within about a second.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The plugin's settings were rejected before connecting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The name is empty or has characters outside `[a-zA-Z0-9_.+-]` (the runtime checks this).
    #[error("invalid NRI plugin name {0:?}: use 1 or more of the characters a-z A-Z 0-9 _ . + -")]
    InvalidName(String),
    /// The index is not exactly two ASCII digits.
    #[error("invalid NRI plugin index {0:?}: it must be exactly two digits, e.g. \"10\"")]
    InvalidIndex(String),
}

/// Settings of a plugin connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StubOptions {
    /// Plugin name, as the runtime logs it.
    pub name: String,
    /// Two-digit index: plugins are called in ascending index order.
    pub index: String,
    /// The runtime's NRI socket.
    pub socket: PathBuf,
    /// Reconnect when the connection is lost (true), or stop (false).
    pub reconnect: bool,
    /// Deadline for the RegisterPlugin call.
    pub registration_timeout: Duration,
}

impl StubOptions {
    /// Defaults: the standard socket, reconnecting, 5 s registration deadline.
    pub fn new(name: impl Into<String>, index: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            index: index.into(),
            socket: PathBuf::from(DEFAULT_SOCKET),
            reconnect: true,
            registration_timeout: Duration::from_secs(5),
        }
    }

    /// Checks name and index as the runtime will.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-'));
        if !name_ok {
            return Err(ConfigError::InvalidName(self.name.clone()));
        }
        if self.index.len() != 2 || !self.index.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ConfigError::InvalidIndex(self.index.clone()));
        }
        Ok(())
    }
}

/// Where the plugin's connection to the runtime stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting or registering (initially, and between reconnects).
    Connecting,
    /// Registered, configured and synchronized: events flow. `session` counts connections.
    Connected {
        /// 1 for the first connection, incremented on every reconnect.
        session: u64,
        /// What the runtime said in `Configure`.
        runtime: RuntimeInfo,
    },
    /// The connection was lost (or failed to come up), with the reason.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The plugin was stopped, or the connection was lost with reconnecting off.
    Stopped,
}

/// Closes an endpoint when dropped.
struct CloseOnDrop(Endpoint);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// A running plugin. Dropping it stops the plugin, as [`Stub::stop`] does without
/// waiting.
pub struct Stub {
    state: watch::Receiver<ConnectionState>,
    endpoint: Arc<Mutex<Option<Endpoint>>>,
    task: JoinHandle<()>,
}

/// Validates the options and starts the plugin's connection loop.
pub fn connect<P: Plugin>(options: StubOptions, plugin: P) -> Result<Stub, ConfigError> {
    options.validate()?;
    let (state_tx, state) = watch::channel(ConnectionState::Connecting);
    let endpoint = Arc::new(Mutex::new(None));
    let task = tokio::spawn(run(options, Arc::new(plugin), state_tx, endpoint.clone()));
    Ok(Stub { state, endpoint, task })
}

async fn run<P: Plugin>(
    options: StubOptions,
    plugin: Arc<P>,
    state: watch::Sender<ConnectionState>,
    current: Arc<Mutex<Option<Endpoint>>>,
) {
    let mut session_number = 0u64;
    let mut backoff = FIRST_BACKOFF;
    loop {
        state.send_replace(ConnectionState::Connecting);
        let reason = match session(&options, &plugin, &state, &current, session_number + 1).await {
            Ok(reason) => {
                session_number += 1;
                backoff = FIRST_BACKOFF;
                reason
            }
            Err(error) => error.to_string(),
        };
        *current.lock() = None;
        tracing::warn!(socket = %options.socket.display(), %reason, "NRI connection lost");
        if !options.reconnect {
            state.send_replace(ConnectionState::Stopped);
            return;
        }
        state.send_replace(ConnectionState::Disconnected { reason });
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Why a connection to the runtime did not get to synchronized.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    /// The runtime's socket did not accept the connection.
    #[error("cannot connect to {}: {source}", socket.display())]
    Connect {
        socket: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The runtime refused or did not answer `RegisterPlugin`.
    #[error("registration as {plugin} failed: {source}")]
    Registration {
        plugin: String,
        #[source]
        source: Status,
    },
    /// The session's state went away before `Synchronize`.
    #[error("session ended before synchronization")]
    EndedBeforeSync,
    /// The runtime closed the connection before `Synchronize`.
    #[error("closed before synchronization: {0}")]
    ClosedBeforeSync(String),
}

/// One connection: `Ok(reason)` once it was established and then closed with that reason, an
/// error if it never got to synchronized.
async fn session<P: Plugin>(
    options: &StubOptions,
    plugin: &Arc<P>,
    state: &watch::Sender<ConnectionState>,
    current: &Mutex<Option<Endpoint>>,
    number: u64,
) -> Result<String, SessionError> {
    let stream = UnixStream::connect(&options.socket)
        .await
        .map_err(|source| SessionError::Connect {
            socket: options.socket.clone(),
            source,
        })?;
    let session = Arc::new(Session::default());
    let mut synchronized = session.synchronized.subscribe();
    let service = Arc::new(PluginService {
        plugin: plugin.clone(),
        session: session.clone(),
    });
    // The Plugin service is served before RegisterPlugin is sent: the runtime may call
    // Configure before it answers the registration.
    let endpoint = Endpoint::start(stream, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, service);
    // This session owns the connection: however it ends, including by the connection loop
    // being aborted mid-registration (`stop`, a dropped handle), the endpoint's tasks end too.
    let _owner = CloseOnDrop(endpoint.clone());
    let register = RegisterPluginRequest {
        plugin_name: options.name.clone(),
        plugin_idx: options.index.clone(),
        nri_version: NRI_VERSION.to_string(),
    };
    if let Err(e) = endpoint
        .call(
            RUNTIME_SERVICE,
            "RegisterPlugin",
            register.encode_to_vec(),
            options.registration_timeout,
        )
        .await
    {
        return Err(SessionError::Registration {
            plugin: format!("{}-{}", options.index, options.name),
            source: e,
        });
    }
    tokio::select! {
        ready = synchronized.wait_for(|s| *s) => if ready.is_err() {
            return Err(SessionError::EndedBeforeSync);
        },
        reason = endpoint.closed() => return Err(SessionError::ClosedBeforeSync(reason)),
    }
    let runtime = session.runtime.lock().clone().unwrap_or_default();
    tracing::info!(plugin = %format!("{}-{}", options.index, options.name), runtime = %runtime.name, session = number, "connected to the runtime");
    *current.lock() = Some(endpoint.clone());
    state.send_replace(ConnectionState::Connected {
        session: number,
        runtime,
    });
    Ok(endpoint.closed().await)
}

impl Stub {
    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        self.state.borrow().clone()
    }

    /// A receiver that sees every state change: the "connected / disconnected" signal.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Waits until connected with a session number of at least `session`.
    pub async fn wait_connected(&self, session: u64, timeout: Duration) -> Result<RuntimeInfo, ConnectionState> {
        let mut state = self.state.clone();
        let found = tokio::time::timeout(
            timeout,
            state.wait_for(|s| matches!(s, ConnectionState::Connected { session: n, .. } if *n >= session)),
        )
        .await;
        match found {
            Ok(Ok(s)) => match &*s {
                ConnectionState::Connected { runtime, .. } => Ok(runtime.clone()),
                other => Err(other.clone()),
            },
            _ => Err(self.state()),
        }
    }

    /// Asks the runtime to update or evict containers outside of an event (`UpdateContainers`);
    /// returns the updates that failed.
    pub async fn update_containers(
        &self,
        update: Vec<ContainerUpdate>,
        evict: Vec<ContainerEviction>,
    ) -> Result<Vec<ContainerUpdate>, Status> {
        let endpoint = self.endpoint.lock().clone();
        let endpoint = endpoint.ok_or_else(|| Status::new(Code::Unavailable, "not connected to the runtime"))?;
        let payload = UpdateContainersRequest { update, evict }.encode_to_vec();
        let reply = endpoint
            .call(RUNTIME_SERVICE, "UpdateContainers", payload, Duration::from_secs(5))
            .await?;
        let response = UpdateContainersResponse::decode(reply)
            .map_err(|e| Status::new(Code::Internal, format!("malformed UpdateContainers response: {e}")))?;
        Ok(response.failed)
    }

    /// Stops the plugin and closes its connection.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        if let Some(e) = self.endpoint.lock().take() {
            e.close();
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        // The connection loop owns the session, whose endpoint closes when the loop is dropped.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that accepts the connection and never answers: registration stays in flight.
    /// Stopping the plugin then must close its connection (the peer reads end of file), which
    /// only happens once the endpoint's reader and writer tasks are gone.
    #[tokio::test]
    async fn stop_during_registration_closes_the_connection() {
        use tokio::io::AsyncReadExt;

        for stop_by_drop in [false, true] {
            let dir = tempfile::tempdir().expect("temp dir");
            let socket = dir.path().join("nri.sock");
            let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
            let mut options = StubOptions::new("stuck", "10");
            options.socket = socket;
            options.reconnect = false;
            options.registration_timeout = Duration::from_secs(60);
            struct Nothing;
            impl Plugin for Nothing {
                fn events(&self) -> crate::EventSet {
                    crate::EventSet::pod_lifecycle()
                }
            }
            let plugin = connect(options, Nothing).expect("valid options");
            let (mut peer, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .expect("the plugin connects")
                .expect("accept");
            // The RegisterPlugin request arrives; it is never answered.
            let mut buffer = vec![0u8; 4096];
            let read = peer.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the registration request was sent");
            assert_eq!(plugin.state(), ConnectionState::Connecting);

            if stop_by_drop {
                drop(plugin);
            } else {
                plugin.stop().await;
            }
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match peer.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            assert!(
                end.is_ok(),
                "the connection was closed (stopped by drop: {stop_by_drop})"
            );
        }
    }

    #[test]
    fn names_and_indexes_are_validated_up_front() {
        assert!(StubOptions::new("net-dra_1.0+x", "10").validate().is_ok());
        assert_eq!(
            StubOptions::new("", "10").validate(),
            Err(ConfigError::InvalidName(String::new()))
        );
        assert!(matches!(
            StubOptions::new("a b", "10").validate(),
            Err(ConfigError::InvalidName(_))
        ));
        assert!(matches!(
            StubOptions::new("a/b", "10").validate(),
            Err(ConfigError::InvalidName(_))
        ));
        for idx in ["1", "100", "ab", "1a", ""] {
            assert!(
                matches!(StubOptions::new("n", idx).validate(), Err(ConfigError::InvalidIndex(_))),
                "{idx}"
            );
        }
    }
}
