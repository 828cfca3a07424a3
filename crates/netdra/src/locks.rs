//! Locks by key, taken together: a step over several claims holds each claim's lock, taken in
//! key order so that two steps over overlapping sets cannot deadlock. A key's lock exists only
//! while someone holds or waits for it.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use parking_lot::Mutex;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// One async mutex per key, made on demand.
#[derive(Default)]
pub(crate) struct KeyLocks {
    locks: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// The locks of a set of keys; released on drop.
pub(crate) struct Held<'a> {
    owner: &'a KeyLocks,
    guards: Vec<(String, OwnedMutexGuard<()>)>,
}

impl KeyLocks {
    /// Takes the locks of `keys` (duplicates ignored), in key order.
    pub(crate) async fn lock(&self, keys: impl IntoIterator<Item = String>) -> Held<'_> {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let mut guards = Vec::with_capacity(keys.len());
        for key in keys {
            let lock = self.locks.lock().entry(key.clone()).or_default().clone();
            guards.push((key, lock.lock_owned().await));
        }
        Held { owner: self, guards }
    }
}

impl Held<'_> {
    /// Whether `key` is among the held keys.
    pub(crate) fn holds(&self, key: &str) -> bool {
        self.guards.iter().any(|(k, _)| k == key)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        for (key, guard) in self.guards.drain(..) {
            let lock = OwnedMutexGuard::mutex(&guard).clone();
            drop(guard);
            let mut locks = self.owner.locks.lock();
            // The map's reference and ours: nobody else holds or waits for it.
            if Arc::strong_count(&lock) == 2 {
                locks.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn overlapping_sets_in_any_order_do_not_deadlock_and_locks_are_dropped() {
        let locks = Arc::new(KeyLocks::default());
        let mut tasks = Vec::new();
        for keys in [vec!["b", "a"], vec!["a", "c"], vec!["c", "b"]] {
            let locks = locks.clone();
            tasks.push(tokio::spawn(async move {
                let _held = locks.lock(keys.into_iter().map(String::from)).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(1), task)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(locks.locks.lock().is_empty());
    }
}
