//! The prepare/unprepare core behind both DRA service versions.
//!
//! Per kubelet batch: lock every claim it names (a lock per UID, taken in UID order), answer
//! claims already prepared from memory, resolve the others and call the driver for them
//! concurrently, then make the batch's changes durable with one commit to the
//! [`PreparedStore`](crate::PreparedStore). Each claim gets its own result, so one failing
//! claim never fails its neighbours in the same batch.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex as SyncMutex;
use tokio::sync::{Mutex, OwnedMutexGuard};

use crate::{
    checkpoint::PreparedClaims,
    claims::{ClaimError, ClaimLookup, resolve_for_driver},
    driver::{ClaimRef, DraDriver, DriverError, PreparedClaim, PreparedDevice},
    metadata::{ClaimMeta, MetadataDevice, MetadataError, MetadataWriter, RequestDevices},
    store::{DynStore, PreparedChange, PreparedStore, StoreError},
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
    /// The batch's commit to the store failed; the claim's state is as before the call.
    #[error("claim {claim}: the prepared claims could not be stored: {source}")]
    Store {
        /// The claim.
        claim: ClaimRef,
        /// The store's error, shared by every claim of the batch.
        #[source]
        source: StoreError,
    },
    /// The device metadata files could not be written or removed; a prepare was undone.
    /// (Boxed: the error names the claim and a path, and every call's result carries this type.)
    #[error(transparent)]
    Metadata(Box<MetadataError>),
    /// The thread writing the device metadata files was lost.
    #[error("claim {claim}: device metadata: {message}")]
    MetadataLost {
        /// The claim.
        claim: ClaimRef,
        /// Why.
        message: String,
    },
}

impl From<MetadataError> for ClaimCallError {
    fn from(error: MetadataError) -> Self {
        Self::Metadata(Box::new(error))
    }
}

/// One lock per claim UID, created on demand and dropped when no call holds or waits for it.
#[derive(Default)]
struct ClaimLocks {
    locks: SyncMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A held claim lock; dropping it releases the lock and forgets it if nobody waits for it.
struct ClaimGuard<'a> {
    locks: &'a ClaimLocks,
    uid: String,
    /// `None` while still waiting for the lock.
    guard: Option<OwnedMutexGuard<()>>,
}

impl Drop for ClaimGuard<'_> {
    fn drop(&mut self) {
        // Under the map's lock nobody can take a new reference, so a count of one (the map's)
        // means no call holds or waits for this lock.
        let mut locks = self.locks.locks.lock();
        drop(self.guard.take());
        if locks.get(&self.uid).is_some_and(|lock| Arc::strong_count(lock) == 1) {
            locks.remove(&self.uid);
        }
    }
}

impl ClaimLocks {
    /// Locks every UID of `uids`, which must be sorted and distinct: every batch taking its
    /// locks in the same order is what keeps two overlapping batches from deadlocking.
    async fn lock_all<'u>(&self, uids: impl IntoIterator<Item = &'u String>) -> Vec<ClaimGuard<'_>> {
        let mut held = Vec::new();
        for uid in uids {
            let lock = self.locks.lock().entry(uid.clone()).or_default().clone();
            // Made before the wait, so a cancelled wait still forgets an unused lock.
            let mut guard = ClaimGuard {
                locks: self,
                uid: uid.clone(),
                guard: None,
            };
            guard.guard = Some(lock.lock_owned().await);
            held.push(guard);
        }
        held
    }
}

/// What preparing one claim came to, before the batch's commit.
enum Prepared {
    /// Nothing to store: prepared before in this boot, or not allocated to this driver.
    Known(Vec<PreparedDevice>),
    /// The driver prepared it now; it counts once the batch is committed.
    New(PreparedClaim),
}

/// Runs prepare and unprepare for a driver.
pub(crate) struct Preparer<D> {
    driver_name: String,
    driver: Arc<D>,
    lookup: ClaimLookup,
    locks: ClaimLocks,
    store: Box<dyn DynStore>,
    /// Prepared claims by UID, as last committed to the store. Changed only after a
    /// successful commit, and only under the claims' locks.
    prepared: SyncMutex<PreparedClaims>,
    call_timeout: Duration,
    /// This boot; prepared claims of another boot are prepared again.
    boot_id: Option<String>,
    /// Device metadata files (KEP-5304), when the driver turned them on.
    metadata: Option<Arc<MetadataWriter>>,
}

impl<D: DraDriver> Preparer<D> {
    /// Loads the prepared claims from `store`; a store that cannot load is a start-up error.
    pub(crate) async fn new<S: PreparedStore>(
        driver_name: String,
        driver: Arc<D>,
        lookup: ClaimLookup,
        store: S,
        call_timeout: Duration,
        boot_id: Option<String>,
    ) -> Result<Self, S::Error> {
        let prepared: PreparedClaims = store
            .load()
            .await?
            .into_iter()
            .map(|p| (p.claim.uid.clone(), p))
            .collect();
        Ok(Self {
            driver_name,
            driver,
            lookup,
            locks: ClaimLocks::default(),
            store: Box::new(store),
            prepared: SyncMutex::new(prepared),
            call_timeout,
            boot_id,
            metadata: None,
        })
    }

    /// Writes device metadata with `writer` from now on, after removing what it finds of claims
    /// that are not prepared (a crash between a write and the commit, or during an unprepare).
    pub(crate) async fn with_metadata(mut self, writer: MetadataWriter) -> Self {
        let keep: Vec<ClaimRef> = self.prepared.lock().values().map(|p| p.claim.clone()).collect();
        let writer = Arc::new(writer);
        let sweeper = writer.clone();
        match tokio::task::spawn_blocking(move || sweeper.sweep(&keep)).await {
            Ok(Ok(removed)) if removed.is_empty() => {}
            Ok(Ok(removed)) => {
                tracing::info!(removed = ?removed, "removed the device metadata of claims no longer prepared")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not sweep the device metadata of claims no longer prepared")
            }
            Err(error) => tracing::warn!(%error, "the device metadata sweep was lost"),
        }
        self.metadata = Some(writer);
        self
    }

    /// Writes the metadata files of a claim the driver just prepared and adds each request's
    /// CDI device ID to its first device.
    async fn write_metadata(
        &self,
        writer: &Arc<MetadataWriter>,
        meta: ClaimMeta,
        devices: &mut [PreparedDevice],
    ) -> Result<(), ClaimCallError> {
        let mut requests: Vec<RequestDevices> = Vec::new();
        // A device for "all requests" (no names) is in no request's file, as in the Go helper.
        for device in devices.iter() {
            for request in &device.requests {
                let entry = match requests.iter_mut().find(|r| &r.request == request) {
                    Some(entry) => entry,
                    None => {
                        requests.push(RequestDevices {
                            request: request.clone(),
                            devices: Vec::new(),
                        });
                        requests.last_mut().expect("just pushed")
                    }
                };
                entry.devices.push(MetadataDevice::new(&device.pool, &device.device));
            }
        }
        let claim = meta.claim.clone();
        let writer = writer.clone();
        let ids = tokio::task::spawn_blocking(move || writer.write_prepared(&meta, &requests))
            .await
            .map_err(|e| ClaimCallError::MetadataLost {
                claim: claim.clone(),
                message: e.to_string(),
            })??;
        for (base_request, id) in ids {
            let first = devices.iter_mut().find(|d| {
                d.requests
                    .iter()
                    .any(|r| crate::metadata::base_request(r) == base_request)
            });
            if let Some(device) = first {
                device.cdi_device_ids.push(id);
            }
        }
        Ok(())
    }

    /// Removes a claim's metadata files, if metadata is on.
    async fn remove_metadata(&self, claim: &ClaimRef) -> Result<(), ClaimCallError> {
        let Some(writer) = self.metadata.clone() else {
            return Ok(());
        };
        let owned = claim.clone();
        tokio::task::spawn_blocking(move || writer.remove_claim(&owned))
            .await
            .map_err(|e| ClaimCallError::MetadataLost {
                claim: claim.clone(),
                message: e.to_string(),
            })??;
        Ok(())
    }

    pub(crate) fn lookup(&self) -> &ClaimLookup {
        &self.lookup
    }

    pub(crate) fn prepared_claims(&self) -> Vec<PreparedClaim> {
        self.prepared.lock().values().cloned().collect()
    }

    /// Prepares every claim of a batch, with one commit for the claims the driver prepared;
    /// the map has an entry per distinct UID.
    pub(crate) async fn prepare_all(
        &self,
        claims: Vec<ClaimRef>,
    ) -> BTreeMap<String, Result<Vec<PreparedDevice>, ClaimCallError>> {
        let started = Instant::now();
        let unique: BTreeMap<String, ClaimRef> = claims.into_iter().map(|c| (c.uid.clone(), c)).collect();
        // Held until the commit is done, so no other call sees a claim between its driver
        // call and its commit.
        let _locks = self.locks.lock_all(unique.keys()).await;
        let outcomes = futures::future::join_all(unique.values().map(|c| self.prepare_one(c))).await;

        let new: Vec<&PreparedClaim> = outcomes
            .iter()
            .filter_map(|o| match o {
                Ok(Prepared::New(p)) => Some(p),
                _ => None,
            })
            .collect();
        let committed = self
            .commit(new.iter().map(|p| PreparedChange::Prepared((*p).clone())).collect())
            .await;
        match &committed {
            Ok(()) => {
                let mut prepared = self.prepared.lock();
                for p in &new {
                    prepared.insert(p.claim.uid.clone(), (*p).clone());
                }
            }
            Err(error) => {
                // Do not leave prepared devices that no store remembers.
                futures::future::join_all(new.iter().map(|p| async move {
                    if let Err(undo) = self
                        .call_driver(&p.claim, "unprepare", self.driver.unprepare(p))
                        .await
                    {
                        tracing::error!(claim = %p.claim, store_error = %error, error = %undo, "rolling back a prepare after a failed commit also failed");
                    }
                    if let Err(undo) = self.remove_metadata(&p.claim).await {
                        tracing::error!(claim = %p.claim, store_error = %error, error = %undo, "removing the device metadata after a failed commit failed; the next start removes it");
                    }
                }))
                .await;
            }
        }

        unique
            .into_iter()
            .zip(outcomes)
            .map(|((uid, claim), outcome)| {
                let result = match outcome {
                    Ok(Prepared::Known(devices)) => Ok(devices),
                    Ok(Prepared::New(p)) => match &committed {
                        Ok(()) => Ok(p.preparation.devices),
                        Err(source) => Err(ClaimCallError::Store {
                            claim: claim.clone(),
                            source: source.clone(),
                        }),
                    },
                    Err(error) => Err(error),
                };
                match &result {
                    Ok(devices) => tracing::info!(claim = %claim, devices = devices.len(), elapsed_ms = started.elapsed().as_secs_f64() * 1e3, "prepared claim"),
                    Err(error) => tracing::warn!(claim = %claim, %error, "failed to prepare claim"),
                }
                (uid, result)
            })
            .collect()
    }

    /// Unprepares every claim of a batch, with one commit for the claims the driver released.
    pub(crate) async fn unprepare_all(&self, claims: Vec<ClaimRef>) -> BTreeMap<String, Result<(), ClaimCallError>> {
        let unique: BTreeMap<String, ClaimRef> = claims.into_iter().map(|c| (c.uid.clone(), c)).collect();
        let _locks = self.locks.lock_all(unique.keys()).await;
        let known: Vec<Option<PreparedClaim>> = {
            let prepared = self.prepared.lock();
            unique.keys().map(|uid| prepared.get(uid).cloned()).collect()
        };
        let outcomes = futures::future::join_all(unique.values().zip(&known).map(|(c, p)| async move {
            match p {
                // Unknown claims succeed without the driver: unprepare is idempotent.
                None => Ok(false),
                Some(p) => self
                    .call_driver(c, "unprepare", self.driver.unprepare(p))
                    .await
                    .map(|()| true),
            }
        }))
        .await;

        let released: Vec<&PreparedClaim> = known
            .iter()
            .zip(&outcomes)
            .filter_map(|(p, o)| p.as_ref().filter(|_| matches!(o, Ok(true))))
            .collect();
        let committed = self
            .commit(
                released
                    .iter()
                    .map(|p| PreparedChange::Unprepared(p.claim.clone()))
                    .collect(),
            )
            .await;
        if committed.is_ok() {
            let mut prepared = self.prepared.lock();
            for p in &released {
                prepared.remove(&p.claim.uid);
            }
        }
        // On a failed commit the released claims stay prepared: the kubelet retries, and the
        // driver's unprepare runs again (which is why it must be idempotent).

        // The metadata of every claim no longer prepared goes (an unknown claim's too: what a
        // crash left). A prepared claim's removal that fails is the claim's error, and the
        // kubelet's retry removes it; an unknown claim's is logged (the next start's sweep
        // takes it), so a broken CDI directory never fails the Unprepare of a claim this
        // plugin never prepared.
        let committed_ok = committed.is_ok();
        let removals = futures::future::join_all(unique.values().zip(&outcomes).map(|(c, o)| async move {
            match o {
                Ok(false) => {
                    if let Err(error) = self.remove_metadata(c).await {
                        tracing::warn!(claim = %c, %error, "could not remove device metadata left for a claim not prepared; the next start removes it");
                    }
                    Ok(())
                }
                Ok(true) if committed_ok => self.remove_metadata(c).await,
                _ => Ok(()),
            }
        }))
        .await;
        let outcomes: Vec<Result<bool, ClaimCallError>> = outcomes
            .into_iter()
            .zip(removals)
            .map(|(o, removed)| o.and_then(|released| removed.map(|()| released)))
            .collect();

        unique
            .into_iter()
            .zip(outcomes)
            .map(|((uid, claim), outcome)| {
                let result = match (outcome, &committed) {
                    (Ok(true), Err(source)) => Err(ClaimCallError::Store {
                        claim: claim.clone(),
                        source: source.clone(),
                    }),
                    (Ok(_), _) => Ok(()),
                    (Err(error), _) => Err(error),
                };
                match &result {
                    Ok(()) => tracing::info!(claim = %claim, "unprepared claim"),
                    Err(error) => tracing::warn!(claim = %claim, %error, "failed to unprepare claim"),
                }
                (uid, result)
            })
            .collect()
    }

    /// Prepares one claim up to, not including, the commit.
    async fn prepare_one(&self, claim: &ClaimRef) -> Result<Prepared, ClaimCallError> {
        if let Some(done) = self.prepared.lock().get(&claim.uid) {
            // Without a boot ID of its own the plugin cannot tell, and trusts the store.
            if self.boot_id.is_none() || done.boot_id == self.boot_id {
                return Ok(Prepared::Known(done.preparation.devices.clone()));
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
            return Ok(Prepared::Known(Vec::new()));
        }
        let mut preparation = self
            .call_driver(claim, "prepare", self.driver.prepare(&resolved))
            .await?;
        if let Some(writer) = &self.metadata
            && let Err(error) = self
                .write_metadata(writer, ClaimMeta::of(&resolved), &mut preparation.devices)
                .await
        {
            // Undone as a failed commit is: the kubelet retries the whole claim.
            let prepared = PreparedClaim {
                claim: claim.clone(),
                preparation,
                boot_id: self.boot_id.clone(),
            };
            if let Err(undo) = self
                .call_driver(claim, "unprepare", self.driver.unprepare(&prepared))
                .await
            {
                tracing::error!(claim = %claim, %error, error = %undo, "rolling back a prepare after its metadata failed also failed");
            }
            if let Err(undo) = self.remove_metadata(claim).await {
                tracing::warn!(claim = %claim, error = %undo, "removing a partly written metadata failed; the next start removes it");
            }
            return Err(error);
        }
        Ok(Prepared::New(PreparedClaim {
            claim: claim.clone(),
            preparation,
            boot_id: self.boot_id.clone(),
        }))
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

    /// Commits a batch's changes: the batch's one durable write. Nothing to change, no write.
    async fn commit(&self, changes: Vec<PreparedChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let count = changes.len();
        let result = self.store.commit(changes).await;
        tracing::debug!(
            changes = count,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ok = result.is_ok(),
            "committed prepared claims"
        );
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use k8s_openapi::api::resource::v1::ResourceClaim;

    use super::*;
    use crate::{
        checkpoint::FileCheckpoint,
        driver::{DriverError, Preparation, ResolvedClaim},
    };

    const DRIVER: &str = "net.example.com";

    /// A driver whose prepare takes `delay` and records the claims it prepares and unprepares.
    #[derive(Default)]
    struct Driver {
        delay: Duration,
        prepares: AtomicUsize,
        unprepares: AtomicUsize,
        prepared_names: SyncMutex<Vec<String>>,
        unprepared_names: SyncMutex<Vec<String>>,
    }

    impl DraDriver for Driver {
        async fn prepare(&self, claim: &ResolvedClaim) -> Result<Preparation, DriverError> {
            self.prepares.fetch_add(1, Ordering::SeqCst);
            self.prepared_names.lock().push(claim.claim.name.clone());
            tokio::time::sleep(self.delay).await;
            Ok(Preparation::of_allocation(claim))
        }
        async fn unprepare(&self, claim: &PreparedClaim) -> Result<(), DriverError> {
            self.unprepares.fetch_add(1, Ordering::SeqCst);
            self.unprepared_names.lock().push(claim.claim.name.clone());
            Ok(())
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the disk is full")]
    struct DiskFull;

    /// A store that records its commits and fails them while `fail` is set.
    #[derive(Default, Clone)]
    struct RecordingStore {
        commits: Arc<SyncMutex<Vec<Vec<PreparedChange>>>>,
        fail: Arc<AtomicBool>,
    }

    impl RecordingStore {
        fn commits(&self) -> Vec<Vec<PreparedChange>> {
            self.commits.lock().clone()
        }
    }

    impl PreparedStore for RecordingStore {
        type Error = DiskFull;
        async fn load(&self) -> Result<Vec<PreparedClaim>, DiskFull> {
            Ok(Vec::new())
        }
        async fn commit(&self, changes: Vec<PreparedChange>) -> Result<(), DiskFull> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(DiskFull);
            }
            self.commits.lock().push(changes);
            Ok(())
        }
    }

    fn reference(name: &str) -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
        }
    }

    /// A claim `ns/<name>` (uid `uid-<name>`) with one device of this driver.
    fn object(name: &str) -> ResourceClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"devices": {"requests": [{"name": "net", "exactly": {"deviceClassName": "net"}}]}},
            "status": {"allocation": {"devices": {"results": [
                {"request": "net", "driver": DRIVER, "pool": "node1", "device": "eth1"}
            ]}}},
        }))
        .expect("a claim")
    }

    const NAMES: [&str; 3] = ["a", "b", "c"];

    /// A preparer whose lookup knows the claims `c` and `a`, `b`, `c` of [`NAMES`].
    async fn preparer<S: PreparedStore>(driver: Arc<Driver>, store: S, call_timeout: Duration) -> Preparer<Driver> {
        let objects = std::iter::once("c").chain(NAMES).map(object).collect();
        Preparer::new(
            DRIVER.into(),
            driver,
            ClaimLookup::with_cached(objects),
            store,
            call_timeout,
            Some("boot".into()),
        )
        .await
        .unwrap_or_else(|_| panic!("an empty store loads"))
    }

    fn uids(preparer: &Preparer<Driver>) -> Vec<String> {
        let mut uids: Vec<_> = preparer.prepared_claims().into_iter().map(|p| p.claim.uid).collect();
        uids.sort();
        uids
    }

    fn batch() -> Vec<ClaimRef> {
        NAMES.map(reference).to_vec()
    }

    /// Paused time: the 40 s deadline passes without 40 s passing.
    #[tokio::test(start_paused = true)]
    async fn a_driver_slower_than_the_call_timeout_gets_a_per_claim_timeout() {
        let driver = Arc::new(Driver {
            delay: Duration::from_secs(3600),
            ..Driver::default()
        });
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        let started = tokio::time::Instant::now();
        let results = preparer.prepare_all(vec![reference("c")]).await;
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
        assert!(preparer.prepared_claims().is_empty());
        assert!(store.commits().is_empty(), "nothing prepared, nothing committed");
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
            FileCheckpoint::new(dir.path().join("cp")),
            Duration::from_secs(40),
        )
        .await;
        let results = preparer.prepare_all(vec![reference("c")]).await;
        let error = results["uid-c"].as_ref().expect_err("the write failed");
        assert!(matches!(error, ClaimCallError::Store { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("claim ns/c (uid uid-c): the prepared claims could not be stored: checkpoint "),
            "{error}"
        );
        assert_eq!(driver.prepares.load(Ordering::SeqCst), 1);
        assert_eq!(
            driver.unprepares.load(Ordering::SeqCst),
            1,
            "the driver's work was undone"
        );
        assert!(preparer.prepared_claims().is_empty(), "nothing is remembered");
    }

    #[tokio::test]
    async fn a_batch_of_new_claims_is_one_commit() {
        let driver = Arc::new(Driver::default());
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        let results = preparer.prepare_all(batch()).await;
        assert!(
            results.values().all(|r| r.as_ref().is_ok_and(|d| d.len() == 1)),
            "{results:?}"
        );
        let commits = store.commits();
        assert_eq!(commits.len(), 1, "{commits:?}");
        let mut committed: Vec<_> = commits[0]
            .iter()
            .map(|c| match c {
                PreparedChange::Prepared(p) => p.claim.uid.clone(),
                PreparedChange::Unprepared(c) => panic!("unprepared {c} in a prepare"),
            })
            .collect();
        committed.sort();
        assert_eq!(committed, ["uid-a", "uid-b", "uid-c"]);
        assert_eq!(uids(&preparer), ["uid-a", "uid-b", "uid-c"]);
    }

    #[tokio::test]
    async fn a_batch_of_prepared_claims_commits_nothing() {
        let driver = Arc::new(Driver::default());
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        let first = preparer.prepare_all(batch()).await;
        let again = preparer.prepare_all(batch()).await;
        assert_eq!(
            format!("{first:?}"),
            format!("{again:?}"),
            "the same answer from memory"
        );
        assert_eq!(store.commits().len(), 1, "only the first batch changed something");
        assert_eq!(driver.prepares.load(Ordering::SeqCst), 3);
        // Unknown claims: nothing to release, nothing to commit.
        let results = preparer.unprepare_all(vec![reference("x")]).await;
        assert!(results["uid-x"].is_ok());
        assert_eq!(store.commits().len(), 1);
    }

    #[tokio::test]
    async fn a_failed_commit_undoes_every_prepare_of_the_batch_and_the_retry_succeeds() {
        let driver = Arc::new(Driver::default());
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        store.fail.store(true, Ordering::SeqCst);
        let results = preparer.prepare_all(batch()).await;
        for name in NAMES {
            let error = results[&format!("uid-{name}")].as_ref().expect_err("not stored");
            assert!(matches!(error, ClaimCallError::Store { .. }), "{error}");
            assert_eq!(
                error.to_string(),
                format!("claim ns/{name} (uid uid-{name}): the prepared claims could not be stored: the disk is full")
            );
        }
        let mut undone = driver.unprepared_names.lock().clone();
        undone.sort();
        assert_eq!(undone, NAMES, "the driver's work was undone for each claim");
        assert!(preparer.prepared_claims().is_empty(), "nothing is remembered");

        // The kubelet retries once the store works again.
        store.fail.store(false, Ordering::SeqCst);
        let results = preparer.prepare_all(batch()).await;
        assert!(results.values().all(Result::is_ok), "{results:?}");
        assert_eq!(driver.prepares.load(Ordering::SeqCst), 6, "prepared again");
        assert_eq!(store.commits().len(), 1);
        assert_eq!(uids(&preparer), ["uid-a", "uid-b", "uid-c"]);
    }

    #[tokio::test]
    async fn an_unprepare_batch_is_one_commit() {
        let driver = Arc::new(Driver::default());
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        preparer.prepare_all(batch()).await;
        let mut claims = batch();
        claims.push(reference("unknown"));
        let results = preparer.unprepare_all(claims).await;
        assert_eq!(results.len(), 4);
        assert!(results.values().all(Result::is_ok), "{results:?}");
        let commits = store.commits();
        assert_eq!(commits.len(), 2, "one prepare and one unprepare commit: {commits:?}");
        let mut released: Vec<_> = commits[1]
            .iter()
            .map(|c| match c {
                PreparedChange::Unprepared(c) => c.uid.clone(),
                PreparedChange::Prepared(p) => panic!("prepared {} in an unprepare", p.claim),
            })
            .collect();
        released.sort();
        assert_eq!(released, ["uid-a", "uid-b", "uid-c"]);
        assert_eq!(
            driver.unprepares.load(Ordering::SeqCst),
            3,
            "the unknown claim skips the driver"
        );
        assert!(preparer.prepared_claims().is_empty());
    }

    #[tokio::test]
    async fn a_failed_unprepare_commit_keeps_the_claims_prepared_and_the_retry_succeeds() {
        let driver = Arc::new(Driver::default());
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        preparer.prepare_all(batch()).await;
        store.fail.store(true, Ordering::SeqCst);
        let results = preparer.unprepare_all(batch()).await;
        for name in NAMES {
            let error = results[&format!("uid-{name}")].as_ref().expect_err("not stored");
            assert!(matches!(error, ClaimCallError::Store { .. }), "{error}");
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("claim ns/{name} (uid uid-{name}): ")),
                "{error}"
            );
        }
        assert_eq!(uids(&preparer), ["uid-a", "uid-b", "uid-c"], "still prepared");

        // The kubelet retries: the driver's (idempotent) unprepare runs again, then the commit.
        store.fail.store(false, Ordering::SeqCst);
        let results = preparer.unprepare_all(batch()).await;
        assert!(results.values().all(Result::is_ok), "{results:?}");
        assert_eq!(driver.unprepares.load(Ordering::SeqCst), 6);
        assert_eq!(store.commits().len(), 2);
        assert!(preparer.prepared_claims().is_empty());
    }

    /// Paused time: a deadlock would show as the 10 s timeout, at once.
    #[tokio::test(start_paused = true)]
    async fn overlapping_batches_both_finish_and_prepare_the_shared_claim_once() {
        let driver = Arc::new(Driver {
            delay: Duration::from_millis(100),
            ..Driver::default()
        });
        let store = RecordingStore::default();
        let preparer = preparer(driver.clone(), store.clone(), Duration::from_secs(40)).await;
        let (first, second) = tokio::time::timeout(
            Duration::from_secs(10),
            futures::future::join(
                preparer.prepare_all(vec![reference("a"), reference("b")]),
                // Listed out of order: the locks are taken in UID order anyway.
                preparer.prepare_all(vec![reference("c"), reference("b")]),
            ),
        )
        .await
        .expect("both batches finish");
        assert!(first.values().chain(second.values()).all(Result::is_ok));
        assert_eq!(first["uid-b"].as_ref().ok(), second["uid-b"].as_ref().ok());
        let mut prepared = driver.prepared_names.lock().clone();
        prepared.sort();
        assert_eq!(prepared, ["a", "b", "c"], "b was prepared once");
        assert_eq!(store.commits().len(), 2, "one commit per batch");
        assert_eq!(uids(&preparer), ["uid-a", "uid-b", "uid-c"]);
        assert!(preparer.locks.locks.lock().is_empty(), "no lock outlives its batch");
    }
}
