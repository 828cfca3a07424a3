//! What the node agent knows about its claims and pods, and the file that keeps it across
//! restarts.
//!
//! [`NodeState`] is plain data: each prepared claim's plan and, once attached, the restore
//! records of its interfaces and the namespace they are in. It is written before Prepare
//! answers and after every attach and detach, so that after a crash the agent knows which
//! devices to keep published, which pods have which interfaces, and how to give them back.
//!
//! File format (as the kubelet plugin's checkpoint, with its own magic): one header line
//! `netdra-state v<VERSION> crc32=<8 hex>`, then the JSON body. Writes are atomic (temporary
//! file, fsync, rename). A damaged file or one of another version stops start-up with an
//! error naming it, and is left in place: it may be the only record of interfaces sitting in
//! pods.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
};

use netdev::RestoreRecord;
use serde::{Deserialize, Serialize};

use crate::plan::{ClaimPlan, PodRef};

/// The version this code writes and reads.
pub const STATE_VERSION: u32 = 1;
const MAGIC: &str = "netdra-state";

/// Where a claim's interfaces are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attachment {
    /// The pod's network namespace path, as the runtime gave it.
    pub netns: PathBuf,
    /// One record per device of the plan, in plan order.
    pub records: Vec<RestoreRecord>,
}

/// One prepared claim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimEntry {
    /// What Prepare decided.
    pub plan: ClaimPlan,
    /// Set while the interfaces are in the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Attachment>,
}

/// Every prepared claim of this node, by claim UID.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Prepared claims by UID.
    pub claims: BTreeMap<String, ClaimEntry>,
}

impl NodeState {
    /// The UIDs of the claims planned for pod `uid`, in UID order.
    pub fn claims_of_pod(&self, uid: &str) -> Vec<String> {
        self.claims
            .iter()
            .filter(|(_, e)| e.plan.pod.uid == uid)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The pods that have interfaces attached, with their namespaces.
    pub fn attached_pods(&self) -> BTreeMap<String, (PodRef, PathBuf)> {
        self.claims
            .values()
            .filter_map(|e| {
                Some((
                    e.plan.pod.uid.clone(),
                    (e.plan.pod.clone(), e.attached.as_ref()?.netns.clone()),
                ))
            })
            .collect()
    }
}

/// Why the state file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is damaged or of another version.
    #[error(
        "state file {path} cannot be used ({reason}); it was left untouched: it may be the only record of interfaces sitting in pods"
    )]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The blocking I/O task failed.
    #[error("state file {path}: the I/O task failed: {source}")]
    Task {
        /// The file.
        path: PathBuf,
        /// What became of the task.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Encodes a state as file bytes.
pub fn encode(state: &NodeState) -> Vec<u8> {
    let body = serde_json::to_vec(state).expect("the node state always serialises");
    let mut out = format!("{MAGIC} v{STATE_VERSION} crc32={:08x}\n", crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Decodes file bytes; `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<NodeState, StateError> {
    let unusable = |reason: String| StateError::Unusable {
        path: path.to_owned(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| unusable("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| unusable("the header is not UTF-8".into()))?;
    let body = &bytes[newline + 1..];
    let expected = format!("{MAGIC} v{STATE_VERSION} crc32=");
    let Some(crc) = header.strip_prefix(&expected) else {
        return Err(unusable(format!(
            "header {header:?} is not \"{expected}…\" (not a state file, or another version)"
        )));
    };
    let crc = u32::from_str_radix(crc, 16).map_err(|_| unusable(format!("header {header:?} has no checksum")))?;
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(unusable(format!(
            "checksum mismatch: header says {crc:08x}, the {} byte body has {actual:08x}",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| unusable(format!("invalid body: {e}")))
}

/// The state file of one agent.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file at `path` (created on the first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state.
    pub async fn load(&self) -> Result<NodeState, StateError> {
        let path = self.path.clone();
        let task_path = path.clone();
        tokio::task::spawn_blocking(move || match std::fs::read(&task_path) {
            Ok(bytes) => decode(&task_path, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(source) => Err(StateError::Io {
                path: task_path,
                source,
            }),
        })
        .await
        .map_err(|source| StateError::Task { path, source })?
    }

    /// Writes `bytes` (from [`encode`]) atomically: a temporary file, fsync, rename, fsync of
    /// the directory.
    pub async fn store(&self, bytes: Vec<u8>) -> Result<(), StateError> {
        let path = self.path.clone();
        let task_path = path.clone();
        tokio::task::spawn_blocking(move || {
            write_atomically(&task_path, &bytes).map_err(|source| StateError::Io {
                path: task_path,
                source,
            })
        })
        .await
        .map_err(|source| StateError::Task { path, source })?
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_empty_state_has_golden_bytes() {
        let bytes = encode(&NodeState::default());
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            format!(
                "netdra-state v1 crc32={:08x}\n{{\"claims\":{{}}}}",
                crc32fast::hash(b"{\"claims\":{}}")
            )
        );
        assert_eq!(decode(Path::new("s"), &bytes).unwrap(), NodeState::default());
    }

    #[test]
    fn damage_and_other_versions_are_refused_with_the_path() {
        let good = encode(&NodeState::default());
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        let other = String::from_utf8(good.clone())
            .unwrap()
            .replace(" v1 ", " v2 ")
            .into_bytes();
        for (bytes, why) in [
            (&good[..good.len() - 1], "checksum"),
            (&flipped[..], "checksum"),
            (&other[..], "another version"),
            (&b"no newline"[..], "no header"),
        ] {
            let e = decode(Path::new("/x/netdra-state"), bytes).unwrap_err().to_string();
            assert!(e.contains("/x/netdra-state") && e.contains(why), "{e}");
        }
    }

    proptest! {
        /// Any bytes give a state or an error, never a panic.
        #[test]
        fn decoding_outside_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Path::new("s"), &bytes);
        }

        #[test]
        fn decoding_a_valid_header_with_any_body_never_panics(body in ".{0,64}") {
            let mut bytes = format!("{MAGIC} v{STATE_VERSION} crc32={:08x}\n", crc32fast::hash(body.as_bytes())).into_bytes();
            bytes.extend_from_slice(body.as_bytes());
            let _ = decode(Path::new("s"), &bytes);
        }
    }
}
