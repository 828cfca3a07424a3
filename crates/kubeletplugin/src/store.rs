//! Where the prepared claims are kept across restarts: the [`PreparedStore`] trait.
//!
//! The plugin commits each kubelet batch to its store in one call, before the kubelet gets its
//! answer, so a batch costs one durable write however many claims it names. The default store
//! is the checkpoint file ([`FileCheckpoint`](crate::FileCheckpoint)); a driver that keeps
//! durable state of its own (a journal, a database) implements the trait over it, so that its
//! own state and the plugin's prepared claims reach the disk in the same write.

use std::{error::Error, future::Future, pin::Pin, sync::Arc};

use crate::driver::{ClaimRef, PreparedClaim};

/// One change to the prepared claims, committed with the others of its batch.
///
/// Exhaustive on purpose: every caller must handle each change, so a new one should
/// fail their build rather than fall into a wildcard.
#[derive(Debug, Clone)]
pub enum PreparedChange {
    /// The claim is prepared as described (replacing whatever was kept for its UID).
    Prepared(PreparedClaim),
    /// The claim is no longer prepared; forget what was kept for its UID.
    Unprepared(ClaimRef),
}

/// Where the plugin keeps its prepared claims across restarts.
///
/// The plugin calls [`load`](Self::load) once at start-up and then [`commit`](Self::commit)
/// once per kubelet batch that changed something. Batches that share no claim may commit
/// concurrently; a store that writes one file or journal must serialise its commits itself.
pub trait PreparedStore: Send + Sync + 'static {
    /// Why loading or committing failed; shown in the claim's error.
    type Error: Error + Send + Sync + 'static;

    /// The prepared claims at start-up.
    fn load(&self) -> impl Future<Output = Result<Vec<PreparedClaim>, Self::Error>> + Send;

    /// Makes a batch of changes durable, all or none, before the kubelet gets its answer.
    ///
    /// On an error none of the changes may survive a restart: the plugin undoes the prepares
    /// of the batch (and keeps the unprepared claims) and the kubelet retries.
    fn commit(&self, changes: Vec<PreparedChange>) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A store's error, shared by every claim of the batch whose commit it failed.
pub(crate) type StoreError = Arc<dyn Error + Send + Sync>;

/// The object-safe face of a [`PreparedStore`], so that the preparer and the plugin handle are
/// not generic over the store.
pub(crate) trait DynStore: Send + Sync {
    /// [`PreparedStore::commit`], boxed.
    fn commit(&self, changes: Vec<PreparedChange>)
    -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
}

impl<S: PreparedStore> DynStore for S {
    fn commit(
        &self,
        changes: Vec<PreparedChange>,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            PreparedStore::commit(self, changes)
                .await
                .map_err(|e| Arc::new(e) as StoreError)
        })
    }
}
