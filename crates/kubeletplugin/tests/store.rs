//! Acceptance: a driver-provided store through `start_with_store`: one commit per kubelet
//! batch over the real socket, a failing commit as per-claim errors, and load at start-up.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};

use common::*;
use kubeletplugin::{ClaimCacheMode, PluginError, PreparedChange, PreparedClaim, PreparedStore};
use testkit::FakeApiServer;

#[derive(Debug, thiserror::Error)]
#[error("the journal is read-only")]
struct ReadOnly;

/// A store that keeps its claims in memory, records every commit, and fails while `fail` is set.
#[derive(Default, Clone)]
struct Journal {
    claims: Arc<Mutex<Vec<PreparedClaim>>>,
    commits: Arc<Mutex<Vec<Vec<PreparedChange>>>>,
    fail: Arc<AtomicBool>,
}

impl Journal {
    fn commits(&self) -> Vec<Vec<PreparedChange>> {
        self.commits.lock().unwrap().clone()
    }
}

impl PreparedStore for Journal {
    type Error = ReadOnly;

    async fn load(&self) -> Result<Vec<PreparedClaim>, ReadOnly> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ReadOnly);
        }
        Ok(self.claims.lock().unwrap().clone())
    }

    async fn commit(&self, changes: Vec<PreparedChange>) -> Result<(), ReadOnly> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(ReadOnly);
        }
        let mut claims = self.claims.lock().unwrap();
        for change in &changes {
            match change {
                PreparedChange::Prepared(p) => claims.push(p.clone()),
                PreparedChange::Unprepared(c) => claims.retain(|p| p.claim.uid != c.uid),
            }
        }
        self.commits.lock().unwrap().push(changes);
        Ok(())
    }
}

fn three_claims(api: &FakeApiServer) -> Vec<kubeletplugin::proto::dra::v1::Claim> {
    (0..3)
        .map(|i| {
            seed_claim(api, "ns", &format!("c{i}"), &format!("u{i}"), DRIVER, &["eth1"]);
            claim("ns", &format!("c{i}"), &format!("u{i}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_store_gets_one_commit_per_kubelet_batch_and_is_loaded_at_start() {
    let api = FakeApiServer::start().await.unwrap();
    let claims = three_claims(&api);
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::GetOnly);
    let journal = Journal::default();
    let plugin =
        kubeletplugin::start_with_store(opts.clone(), RecordingDriver::default(), journal.clone(), api.client())
            .await
            .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;

    let response = prepare_v1(&channel, claims.clone()).await;
    assert!(response.claims.values().all(|c| c.error.is_empty()), "{response:?}");
    let commits = journal.commits();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!(commits[0].len(), 3);
    assert!(commits[0].iter().all(|c| matches!(c, PreparedChange::Prepared(_))));
    // A kubelet retry changes nothing and writes nothing.
    prepare_v1(&channel, claims.clone()).await;
    assert_eq!(journal.commits().len(), 1);
    assert!(
        !opts.checkpoint_file().exists(),
        "the driver's store replaces the checkpoint file"
    );
    plugin.shutdown().await;
    drop(channel);

    // A new instance starts from what the store loads.
    let driver = RecordingDriver::default();
    let plugin = kubeletplugin::start_with_store(opts, driver.clone(), journal.clone(), api.client())
        .await
        .unwrap();
    assert_eq!(plugin.prepared_claims().await.len(), 3);
    let channel = uds_channel(plugin.dra_socket()).await;
    let response = unprepare_v1(&channel, claims).await;
    assert!(response.claims.values().all(|c| c.error.is_empty()), "{response:?}");
    assert_eq!(driver.unprepares.load(Ordering::SeqCst), 3);
    let commits = journal.commits();
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(commits[1].len(), 3);
    assert!(commits[1].iter().all(|c| matches!(c, PreparedChange::Unprepared(_))));
    assert!(journal.claims.lock().unwrap().is_empty());
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_commit_is_an_error_for_each_claim_of_the_batch() {
    let api = FakeApiServer::start().await.unwrap();
    let claims = three_claims(&api);
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::default();
    let driver = RecordingDriver::default();
    let plugin = kubeletplugin::start_with_store(
        options(dir.path(), ClaimCacheMode::GetOnly),
        driver.clone(),
        journal.clone(),
        api.client(),
    )
    .await
    .unwrap();
    let channel = uds_channel(plugin.dra_socket()).await;
    journal.fail.store(true, Ordering::SeqCst);
    let response = prepare_v1(&channel, claims.clone()).await;
    assert_eq!(response.claims.len(), 3);
    for (uid, answer) in &response.claims {
        assert_eq!(
            answer.error,
            format!(
                "claim ns/c{} (uid {uid}): the prepared claims could not be stored: the journal is read-only",
                &uid[1..]
            )
        );
        assert!(answer.devices.is_empty());
    }
    assert_eq!(driver.unprepares.load(Ordering::SeqCst), 3, "every prepare was undone");
    assert!(plugin.prepared_claims().await.is_empty());

    journal.fail.store(false, Ordering::SeqCst);
    let response = prepare_v1(&channel, claims).await;
    assert!(response.claims.values().all(|c| c.error.is_empty()), "{response:?}");
    assert_eq!(journal.commits().len(), 1);
    plugin.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_load_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path(), ClaimCacheMode::GetOnly);
    let journal = Journal::default();
    journal.fail.store(true, Ordering::SeqCst);
    let Err(error) =
        kubeletplugin::start_with_store(opts.clone(), RecordingDriver::default(), journal, unreachable_client()).await
    else {
        panic!("a store that cannot load must stop start-up");
    };
    assert!(matches!(error, PluginError::Store(_)), "{error:?}");
    assert_eq!(
        error.to_string(),
        "the prepared claims could not be loaded from the driver's store: the journal is read-only"
    );
    assert!(!opts.registration_socket().exists(), "no registration without state");
}
