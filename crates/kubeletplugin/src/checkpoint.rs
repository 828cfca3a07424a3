//! The versioned checkpoint of prepared claims: the default [`PreparedStore`],
//! [`FileCheckpoint`].
//!
//! File format: one header line `netdra-kubeletplugin-checkpoint v<VERSION> crc32=<8 hex>`,
//! then the JSON body whose CRC-32 the header carries. The checksum catches a torn or
//! bit-flipped file that would still parse as JSON. Writes are atomic (temporary file, fsync,
//! rename), one per committed kubelet batch. A file that is corrupt or of an unknown version
//! is reported with its path and never overwritten: prepared state that cannot be read could
//! mean interfaces still sitting in pods, so an operator decides, not the plugin.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    driver::PreparedClaim,
    store::{PreparedChange, PreparedStore},
};

/// The version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;
const MAGIC: &str = "netdra-kubeletplugin-checkpoint";

/// Why the checkpoint could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing failed.
    #[error("checkpoint {path}: {source}")]
    Io {
        /// The checkpoint file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file is damaged (truncated, not a checkpoint, bad checksum, bad JSON).
    #[error(
        "checkpoint {path} is corrupt ({reason}); it was left untouched: move it aside to start \
         without the prepared-claim state it held"
    )]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The blocking task reading or writing the checkpoint panicked or was cancelled.
    #[error("checkpoint {path}: the I/O task failed: {source}")]
    TaskFailed {
        /// The checkpoint file.
        path: PathBuf,
        /// What became of the task.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The file was written by a version this code does not understand.
    #[error(
        "checkpoint {path} has version {found}, this plugin reads version {CHECKPOINT_VERSION}; \
         it was left untouched"
    )]
    UnsupportedVersion {
        /// The checkpoint file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct Body {
    /// Prepared claims by UID.
    claims: BTreeMap<String, PreparedClaim>,
}

/// Prepared claims by claim UID.
pub type PreparedClaims = BTreeMap<String, PreparedClaim>;

/// Encodes prepared claims as checkpoint bytes.
pub fn encode(claims: &PreparedClaims) -> Vec<u8> {
    #[derive(Serialize)]
    struct BodyRef<'a> {
        claims: &'a PreparedClaims,
    }
    let body = serde_json::to_vec(&BodyRef { claims }).expect("prepared claims always serialise");
    let mut out = format!("{MAGIC} v{CHECKPOINT_VERSION} crc32={:08x}\n", crc32fast::hash(&body)).into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Decodes checkpoint bytes; `path` only names the file in errors.
pub fn decode(path: &Path, bytes: &[u8]) -> Result<PreparedClaims, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let header = std::str::from_utf8(&bytes[..newline]).map_err(|_| corrupt("header is not UTF-8".into()))?;
    let body = &bytes[newline + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err(corrupt(format!("header {header:?} is not a netdra checkpoint header")));
    }
    let version = fields
        .next()
        .and_then(|v| v.strip_prefix('v'))
        .and_then(|v| v.parse::<u32>().ok())
        .ok_or_else(|| corrupt(format!("header {header:?} has no version")))?;
    if version != CHECKPOINT_VERSION {
        return Err(CheckpointError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let crc = fields
        .next()
        .and_then(|c| c.strip_prefix("crc32="))
        .and_then(|c| u32::from_str_radix(c, 16).ok())
        .ok_or_else(|| corrupt(format!("header {header:?} has no checksum")))?;
    let actual = crc32fast::hash(body);
    if actual != crc {
        return Err(corrupt(format!(
            "checksum mismatch: header says {crc:08x}, the {} byte body has {actual:08x} (truncated or damaged)",
            body.len()
        )));
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| corrupt(format!("invalid JSON body: {e}")))?;
    Ok(parsed.claims)
}

/// The checkpoint file of one plugin.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
}

impl Checkpoint {
    /// A checkpoint at `path` (nothing is read or written yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the checkpoint; a missing file means nothing was prepared.
    pub fn load(&self) -> Result<PreparedClaims, CheckpointError> {
        match fs::read(&self.path) {
            Ok(bytes) => decode(&self.path, &bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PreparedClaims::new()),
            Err(source) => Err(CheckpointError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Writes the checkpoint atomically: a crash leaves either the old or the new file.
    ///
    /// The file is fsynced before the rename; the directory is not. Prepared state only means
    /// something within one boot (after a power loss every pod on the node is gone), so
    /// making the rename itself survive a power loss would buy nothing, and it would add a
    /// journal commit to every NodePrepareResources call. The kubelet's own checkpoints are
    /// written the same way.
    #[cfg(test)]
    pub fn store(&self, claims: &PreparedClaims) -> Result<(), CheckpointError> {
        self.store_encoded(&encode(claims))
    }

    /// Writes bytes made by [`encode`]: temp file, fsync, rename (see the type's documentation
    /// for why the directory is not fsynced).
    pub fn store_encoded(&self, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.write_bytes(bytes).map_err(|source| CheckpointError::Io {
            path: self.path.clone(),
            source,
        })
    }

    fn write_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &self.path)
    }
}

/// The default [`PreparedStore`]: the checkpoint file (by default
/// `<plugin dir>/checkpoint`), rewritten once per committed batch.
///
/// It keeps the file's content in memory, so a commit applies its changes and writes the
/// result without reading the file again. The file is read and written on blocking threads.
#[derive(Debug)]
pub struct FileCheckpoint {
    file: Checkpoint,
    /// The file's content as last read or written; `None` until the first read. Held across a
    /// write, so commits are applied one at a time and the file always holds the latest map.
    claims: Mutex<Option<PreparedClaims>>,
}

impl FileCheckpoint {
    /// A checkpoint at `path` (nothing is read or written yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            file: Checkpoint::new(path),
            claims: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    async fn read(&self) -> Result<PreparedClaims, CheckpointError> {
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.load())
            .await
            .map_err(|source| CheckpointError::TaskFailed {
                path: self.path().to_path_buf(),
                source,
            })?
    }
}

impl PreparedStore for FileCheckpoint {
    type Error = CheckpointError;

    async fn load(&self) -> Result<Vec<PreparedClaim>, CheckpointError> {
        let mut claims = self.claims.lock().await;
        let loaded = self.read().await?;
        if !loaded.is_empty() {
            tracing::info!(claims = loaded.len(), path = %self.path().display(), "restored prepared claims from checkpoint");
        }
        let out = loaded.values().cloned().collect();
        *claims = Some(loaded);
        Ok(out)
    }

    async fn commit(&self, changes: Vec<PreparedChange>) -> Result<(), CheckpointError> {
        let mut claims = self.claims.lock().await;
        // Never loaded: read the file first, so a commit cannot replace claims it never saw
        // (and a damaged file stays untouched).
        let mut next = match &*claims {
            Some(current) => current.clone(),
            None => self.read().await?,
        };
        for change in changes {
            match change {
                PreparedChange::Prepared(prepared) => {
                    next.insert(prepared.claim.uid.clone(), prepared);
                }
                PreparedChange::Unprepared(claim) => {
                    next.remove(&claim.uid);
                }
            }
        }
        // Encoded here, so the writer thread gets bytes rather than another copy of the map.
        let bytes = encode(&next);
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.store_encoded(&bytes))
            .await
            .map_err(|source| CheckpointError::TaskFailed {
                path: self.path().to_path_buf(),
                source,
            })??;
        // Only a written map becomes the current one: a failed write leaves the state as it was.
        *claims = Some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{ClaimRef, Preparation, PreparedDevice};
    use proptest::prelude::*;

    fn sample() -> PreparedClaims {
        let claim = ClaimRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u1".into(),
        };
        let prepared = PreparedClaim {
            claim,
            preparation: Preparation {
                devices: vec![PreparedDevice {
                    requests: vec!["net".into()],
                    pool: "node1".into(),
                    device: "eth1".into(),
                    cdi_device_ids: vec![],
                    share_id: None,
                }],
                data: serde_json::json!({"ifName": "net1"}),
            },
            boot_id: Some("b1".into()),
        };
        BTreeMap::from([("u1".to_string(), prepared)])
    }

    #[test]
    fn golden_bytes() {
        let bytes = encode(&sample());
        let text = String::from_utf8(bytes.clone()).unwrap();
        let body = r#"{"claims":{"u1":{"claim":{"namespace":"ns","name":"c","uid":"u1"},"preparation":{"devices":[{"requests":["net"],"pool":"node1","device":"eth1"}],"data":{"ifName":"net1"}},"boot_id":"b1"}}}"#;
        assert_eq!(
            text,
            format!(
                "netdra-kubeletplugin-checkpoint v1 crc32={:08x}\n{body}",
                crc32fast::hash(body.as_bytes())
            )
        );
        assert_eq!(decode(Path::new("x"), &bytes).unwrap(), sample());
    }

    #[test]
    fn store_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint::new(dir.path().join("checkpoint"));
        assert!(cp.load().unwrap().is_empty(), "missing file means empty");
        cp.store(&sample()).unwrap();
        assert_eq!(cp.load().unwrap(), sample());
        assert!(!dir.path().join("checkpoint.tmp").exists());
    }

    #[test]
    fn truncated_file_is_reported_with_its_path_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let cp = Checkpoint::new(&path);
        cp.store(&sample()).unwrap();
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let e = cp.load().unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }));
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(fs::read(&path).unwrap(), &bytes[..bytes.len() - 10]);
    }

    #[test]
    fn unknown_version_is_its_own_error() {
        let e = decode(
            Path::new("/cp"),
            b"netdra-kubeletplugin-checkpoint v7 crc32=00000000\n{}",
        )
        .unwrap_err();
        assert!(matches!(e, CheckpointError::UnsupportedVersion { found: 7, .. }));
        let e = decode(Path::new("/cp"), b"{\"claims\":{}}").unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }));
    }

    fn prepared(uid: &str) -> PreparedClaim {
        let claim = ClaimRef {
            namespace: "ns".into(),
            name: uid.into(),
            uid: uid.into(),
        };
        PreparedClaim {
            claim,
            preparation: Preparation::default(),
            boot_id: None,
        }
    }

    fn uids(claims: &PreparedClaims) -> Vec<&str> {
        claims.keys().map(String::as_str).collect()
    }

    #[tokio::test]
    async fn a_commit_applies_its_changes_on_top_of_what_the_file_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        Checkpoint::new(&path).store(&sample()).unwrap();
        // Not loaded first: the commit reads the file rather than replacing it.
        let store = FileCheckpoint::new(&path);
        store
            .commit(vec![
                PreparedChange::Prepared(prepared("u2")),
                PreparedChange::Prepared(prepared("u3")),
            ])
            .await
            .unwrap();
        assert_eq!(uids(&Checkpoint::new(&path).load().unwrap()), ["u1", "u2", "u3"]);
        store
            .commit(vec![
                PreparedChange::Unprepared(prepared("u1").claim),
                PreparedChange::Unprepared(prepared("u3").claim),
            ])
            .await
            .unwrap();
        assert_eq!(uids(&Checkpoint::new(&path).load().unwrap()), ["u2"]);
        let loaded = FileCheckpoint::new(&path).load().await.unwrap();
        assert_eq!(loaded, vec![prepared("u2")]);
    }

    #[tokio::test]
    async fn a_failed_commit_is_forgotten_and_a_damaged_file_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint");
        let store = FileCheckpoint::new(&path);
        assert!(store.load().await.unwrap().is_empty());
        // A directory where the temporary file goes: the write fails.
        fs::create_dir(dir.path().join("checkpoint.tmp")).unwrap();
        let e = store
            .commit(vec![PreparedChange::Prepared(prepared("lost"))])
            .await
            .unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
        fs::remove_dir(dir.path().join("checkpoint.tmp")).unwrap();
        store
            .commit(vec![PreparedChange::Prepared(prepared("kept"))])
            .await
            .unwrap();
        assert_eq!(uids(&Checkpoint::new(&path).load().unwrap()), ["kept"]);

        fs::write(&path, b"garbage").unwrap();
        let e = FileCheckpoint::new(&path)
            .commit(vec![PreparedChange::Prepared(prepared("x"))])
            .await
            .unwrap_err();
        assert!(matches!(e, CheckpointError::Corrupt { .. }), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"garbage");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(Path::new("x"), &bytes);
        }

        #[test]
        fn round_trip(names in proptest::collection::btree_map("[a-z0-9-]{1,20}", "[ -~]{0,30}", 0..8)) {
            let claims: PreparedClaims = names
                .into_iter()
                .map(|(uid, name)| {
                    let claim = ClaimRef { namespace: "ns".into(), name, uid: uid.clone() };
                    (uid, PreparedClaim { claim, preparation: Preparation::default(), boot_id: Some("b".into()) })
                })
                .collect();
            prop_assert_eq!(decode(Path::new("x"), &encode(&claims)).unwrap(), claims);
        }
    }
}
