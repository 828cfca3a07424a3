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
    /// Loads the checkpoint (on a blocking thread); a damaged one is a start-up error.
    pub(crate) async fn new(
        driver_name: String,
        driver: Arc<D>,
        lookup: ClaimLookup,
        checkpoint: Checkpoint,
        call_timeout: Duration,
        boot_id: Option<String>,
    ) -> Result<Self, CheckpointError> {
        let reader = checkpoint.clone();
        let prepared = tokio::task::spawn_blocking(move || reader.load())
            .await
            .map_err(|source| CheckpointError::TaskFailed {
                path: checkpoint.path().to_path_buf(),
                source,
            })??;
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
        let preparation = self
            .call_driver(claim, "prepare", self.driver.prepare(&resolved))
            .await?;
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
        self.call_driver(claim, "unprepare", self.driver.unprepare(&prepared))
            .await?;
        self.persist(|claims| {
            claims.remove(&claim.uid);
        })
        .await
        .map_err(|source| ClaimCallError::Checkpoint {
            claim: claim.clone(),
            source,
        })
    }

    /// Runs one driver call within the call timeout.
    async fn call_driver<T>(
        &self,
        claim: &ClaimRef,
        call: &'static str,
        driver_call: impl Future<Output = Result<T, DriverError>>,
    ) -> Result<T, ClaimCallError> {
        tokio::time::timeout(self.call_timeout, driver_call)
            .await
            .map_err(|_| ClaimCallError::Timeout {
                claim: claim.clone(),
                call,
                after: self.call_timeout,
            })?
            .map_err(|source| ClaimCallError::Driver {
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
            .map_err(|e| CheckpointError::TaskFailed {
                path: self.checkpoint.path().to_path_buf(),
                source: e,
            })??;
        *prepared = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::resource::v1::ResourceClaim;

    use super::*;
    use crate::driver::{DriverError, Preparation, ResolvedClaim};

    const DRIVER: &str = "net.example.com";

    /// A driver whose prepare takes `delay` and counts its calls.
    #[derive(Default)]
    struct Driver {
        delay: Duration,
        prepares: AtomicUsize,
        unprepares: AtomicUsize,
    }

    impl DraDriver for Driver {
        async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
            self.prepares.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            Ok(Preparation::of_allocation(claim))
        }
        async fn unprepare(&self, _claim: &PreparedClaim) -> Result<(), DriverError> {
            self.unprepares.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    fn claim() -> (ClaimRef, ResourceClaim) {
        let object = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "uid-c"},
            "spec": {"devices": {"requests": [{"name": "net", "exactly": {"deviceClassName": "net"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "net", "driver": DRIVER, "pool": "node1", "device": "eth1"}
            ]}}},
        }))
        .expect("a claim");
        let reference = ClaimRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "uid-c".into(),
        };
        (reference, object)
    }

    async fn preparer(driver: Arc<Driver>, checkpoint: Checkpoint, call_timeout: Duration) -> Preparer<Driver> {
        let (_, object) = claim();
        Preparer::new(
            DRIVER.into(),
            driver,
            ClaimLookup::with_cached(vec![object]),
            checkpoint,
            call_timeout,
            Some("boot".into()),
        )
        .await
        .expect("an empty checkpoint loads")
    }

    /// Paused time: the 40 s deadline passes without 40 s passing.
    #[tokio::test(start_paused = true)]
    async fn a_driver_slower_than_the_call_timeout_gets_a_per_claim_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let driver = Arc::new(Driver {
            delay: Duration::from_secs(3600),
            ..Driver::default()
        });
        let preparer = preparer(
            driver.clone(),
            Checkpoint::new(dir.path().join("cp")),
            Duration::from_secs(40),
        )
        .await;
        let (reference, _) = claim();
        let started = tokio::time::Instant::now();
        let results = preparer.prepare_all(vec![reference]).await;
        assert_eq!(started.elapsed(), Duration::from_secs(40));
        let error = results["uid-c"].as_ref().expect_err("timed out");
        assert!(
            matches!(error, ClaimCallError::Timeout { call: "prepare", .. }),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "claim ns/c (uid uid-c): driver prepare timed out after 40s"
        );
        assert_eq!(driver.prepares.load(Ordering::SeqCst), 1);
        assert!(preparer.prepared_claims().await.is_empty());
    }

    #[tokio::test]
    async fn a_checkpoint_that_cannot_be_written_rolls_the_prepare_back() {
        // A directory where the checkpoint's temporary file goes: the (empty) checkpoint loads,
        // every write fails (even for root).
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("cp.tmp")).expect("mkdir");
        let driver = Arc::new(Driver::default());
        let preparer = preparer(
            driver.clone(),
            Checkpoint::new(dir.path().join("cp")),
            Duration::from_secs(40),
        )
        .await;
        let (reference, _) = claim();
        let results = preparer.prepare_all(vec![reference]).await;
        let error = results["uid-c"].as_ref().expect_err("the write failed");
        assert!(matches!(error, ClaimCallError::Checkpoint { .. }), "{error}");
        assert!(
            error.to_string().starts_with("claim ns/c (uid uid-c): checkpoint "),
            "{error}"
        );
        assert_eq!(driver.prepares.load(Ordering::SeqCst), 1);
        assert_eq!(
            driver.unprepares.load(Ordering::SeqCst),
            1,
            "the driver's work was undone"
        );
        assert!(preparer.prepared_claims().await.is_empty(), "nothing is remembered");
    }
}
