//! The prepare/unprepare core behind both DRA service versions.
//!
//! Per claim: serialise calls (a lock per UID), answer an already-prepared claim from the
//! checkpoint, resolve the claim, call the driver, persist. Each claim gets its own result, so
//! one failing claim never fails its neighbours in the same kubelet batch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex as SyncMutex;
use tokio::sync::Mutex;

use crate::{
    checkpoint::{Checkpoint, CheckpointError, PreparedClaims},
    claims::{ClaimError, ClaimLookup, resolve_for_driver},
    driver::{ClaimRef, DraDriver, DriverError, PreparedClaim, PreparedDevice},
};

/// Why one claim's prepare or unprepare failed. Its text is the claim's `error` in the answer
/// to the kubelet, so every variant names the claim.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimCallError {
    /// The claim could not be looked up, or is not what the kubelet named.
    #[error(transparent)]
    Lookup(#[from] ClaimError),
    /// The driver did not answer within the call timeout.
    #[error("claim {claim}: driver {call} timed out after {after:?}")]
    Timeout {
        /// The claim.
        claim: ClaimRef,
        /// `prepare` or `unprepare`.
        call: &'static str,
        /// The call timeout.
        after: Duration,
    },
    /// The driver failed.
    #[error("claim {claim}: {source}")]
    Driver {
        /// The claim.
        claim: ClaimRef,
        /// The driver's error.
        #[source]
        source: DriverError,
    },
    /// The checkpoint could not be written; the claim's state is as before the call.
    #[error("claim {claim}: {source}")]
    Checkpoint {
        /// The claim.
        claim: ClaimRef,
        /// Why.
        #[source]
        source: CheckpointError,
    },
}

/// One lock per claim UID, created on demand and dropped when no call holds or waits for it.
#[derive(Default)]
struct ClaimLocks {
    locks: SyncMutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl ClaimLocks {
    async fn run<T>(&self, uid: &str, f: impl Future<Output = T>) -> T {
        let lock = {
            let mut locks = self.locks.lock();
            locks.entry(uid.to_string()).or_default().clone()
        };
        let result = {
            let _guard = lock.lock().await;
            f.await
        };
        let mut locks = self.locks.lock();
        // Two references: the map's and ours. Anything more is a waiter that still needs it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(uid);
        }
        result
    }
}

/// Runs prepare and unprepare for a driver.
pub(crate) struct Preparer<D> {
    driver_name: String,
    driver: Arc<D>,
    lookup: ClaimLookup,
    locks: ClaimLocks,
    checkpoint: Checkpoint,
    /// Prepared claims by UID; the checkpoint file is written while this is held, so the file
    /// always reflects the latest map.
    prepared: Mutex<PreparedClaims>,
    call_timeout: Duration,
    /// This boot; prepared claims of another boot are prepared again.
    boot_id: Option<String>,
}

impl<D: DraDriver> Preparer<D> {
    /// Loads the checkpoint; a damaged one is a start-up error.
    pub(crate) fn new(
        driver_name: String,
        driver: Arc<D>,
        lookup: ClaimLookup,
        checkpoint: Checkpoint,
        call_timeout: Duration,
        boot_id: Option<String>,
    ) -> Result<Self, CheckpointError> {
        let prepared = checkpoint.load()?;
        if !prepared.is_empty() {
            tracing::info!(claims = prepared.len(), path = %checkpoint.path().display(), "restored prepared claims from checkpoint");
        }
        Ok(Self {
            driver_name,
            driver,
            lookup,
            locks: ClaimLocks::default(),
            checkpoint,
            prepared: Mutex::new(prepared),
            call_timeout,
            boot_id,
        })
    }

    pub(crate) fn lookup(&self) -> &ClaimLookup {
        &self.lookup
    }

    pub(crate) async fn prepared_claims(&self) -> Vec<PreparedClaim> {
        self.prepared.lock().await.values().cloned().collect()
    }

    /// Prepares every claim of a batch concurrently; the map has an entry per distinct UID.
    pub(crate) async fn prepare_all(
        &self,
        claims: Vec<ClaimRef>,
    ) -> BTreeMap<String, Result<Vec<PreparedDevice>, ClaimCallError>> {
        let unique: BTreeMap<String, ClaimRef> = claims.into_iter().map(|c| (c.uid.clone(), c)).collect();
        let results = futures::future::join_all(unique.into_values().map(|c| async move {
            let started = Instant::now();
            let result = self.locks.run(&c.uid, self.prepare_one(&c)).await;
            match &result {
                Ok(devices) => tracing::info!(claim = %c, devices = devices.len(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "prepared claim"),
                Err(error) => tracing::warn!(claim = %c, %error, "failed to prepare claim"),
            }
            (c.uid, result)
        }))
        .await;
        results.into_iter().collect()
    }

    /// Unprepares every claim of a batch concurrently.
    pub(crate) async fn unprepare_all(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimCallError>> {
        let unique: BTreeMap<String, ClaimRef> = claims.into_iter().map(|c| (c.uid.clone(), c)).collect();
        let results = futures::future::join_all(unique.into_values().map(|c| async move {
            let result = self.locks.run(&c.uid, self.unprepare_one(&c)).await;
            match &result {
                Ok(()) => tracing::info!(claim = %c, "unprepared claim"),
                Err(error) => tracing::warn!(claim = %c, %error, "failed to unprepare claim"),
            }
            (c.uid, result)
        }))
        .await;
        results.into_iter().collect()
    }

    async fn prepare_one(&self, claim: &ClaimRef) -> Result<Vec<PreparedDevice>, ClaimCallError> {
        if let Some(done) = self.prepared.lock().await.get(&claim.uid) {
            // Without a boot ID of its own the plugin cannot tell, and trusts the checkpoint.
            if self.boot_id.is_none() || done.boot_id == self.boot_id {
                return Ok(done.preparation.devices.clone());
            }
            tracing::info!(
                claim = %claim,
                prepared_in_boot = done.boot_id.as_deref().unwrap_or("unknown"),
                "claim was prepared in another boot; preparing it again"
            );
        }
        let object = self.lookup.fetch(claim).await?;
        let resolved = resolve_for_driver(&self.driver_name, claim, object)?;
        if resolved.devices.is_empty() {
            // Allocated only to other drivers: nothing to do, nothing to remember.
            return Ok(Vec::new());
        }
        let preparation = tokio::time::timeout(self.call_timeout, self.driver.prepare(&resolved))
            .await
            .map_err(|_| ClaimCallError::Timeout {
                claim: claim.clone(),
                call: "prepare",
                after: self.call_timeout,
            })?
            .map_err(|source| ClaimCallError::Driver {
                claim: claim.clone(),
                source,
            })?;
        let prepared = PreparedClaim {
            claim: claim.clone(),
            preparation,
            boot_id: self.boot_id.clone(),
        };
        let devices = prepared.preparation.devices.clone();
        if let Err(e) = self
            .persist(|claims| {
                claims.insert(claim.uid.clone(), prepared.clone());
            })
            .await
        {
            // Do not leave prepared devices that no checkpoint remembers.
            if let Err(undo) = self.driver.unprepare(&prepared).await {
                tracing::error!(claim = %claim, error = %undo, "rolling back a prepare after a checkpoint failure also failed");
            }
            return Err(ClaimCallError::Checkpoint {
                claim: claim.clone(),
                source: e,
            });
        }
        Ok(devices)
    }

    async fn unprepare_one(&self, claim: &ClaimRef) -> Result<(), ClaimCallError> {
        let Some(prepared) = self.prepared.lock().await.get(&claim.uid).cloned() else {
            return Ok(());
        };
        tokio::time::timeout(self.call_timeout, self.driver.unprepare(&prepared))
            .await
            .map_err(|_| ClaimCallError::Timeout {
                claim: claim.clone(),
                call: "unprepare",
                after: self.call_timeout,
            })?
            .map_err(|source| ClaimCallError::Driver {
                claim: claim.clone(),
                source,
            })?;
        self.persist(|claims| {
            claims.remove(&claim.uid);
        })
        .await
        .map_err(|source| ClaimCallError::Checkpoint {
            claim: claim.clone(),
            source,
        })
    }

    /// Applies `change` and writes the checkpoint; on a write failure the map is left as it was.
    async fn persist(&self, change: impl FnOnce(&mut PreparedClaims)) -> Result<(), CheckpointError> {
        let mut prepared = self.prepared.lock().await;
        let mut next = prepared.clone();
        change(&mut next);
        // Encoded here, so the writer thread gets bytes rather than another copy of the map.
        let bytes = crate::checkpoint::encode(&next);
        let checkpoint = self.checkpoint.clone();
        tokio::task::spawn_blocking(move || checkpoint.store_encoded(&bytes))
            .await
            .map_err(|e| CheckpointError::WriterFailed {
                path: self.checkpoint.path().to_path_buf(),
                source: e,
            })??;
        *prepared = next;
        Ok(())
    }
}
