//! Resolving the claims the kubelet names (namespace, name, UID) into [`ResolvedClaim`]s.
//!
//! The lookup serves claims from memory so the pod-creation path makes no API round trip, and
//! falls back to one GET on a miss. With [`ClaimCacheMode::Node`] (the netdra driver's default)
//! it watches only the pods bound to this node and fetches the claims they reference as they appear
//! (`node_claims.rs` holds the rules), so its memory and API traffic follow the node's pods, not
//! the cluster's claims. A cluster-wide claim watch and GET-only remain as modes. Extracting
//! what concerns this driver from a claim is a pure function, [`resolve_for_driver`].

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::StreamExt;
use k8s_openapi::api::{core::v1::Pod, resource::v1::ResourceClaim};
use kube::{
    Api, Client, ResourceExt,
    discovery::ApiResource,
    runtime::{WatchStreamExt, reflector, reflector::ObjectRef, watcher},
};
use parking_lot::Mutex;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    driver::{AllocatedDevice, ClaimRef, ConfigSource, DeviceConfig, ResolvedClaim},
    node_claims::{ClaimKey, Fetch, Fetched, NodeClaims, PodClaims, PodObject, reserved_for},
};

/// GETs of claims in flight at once: a node's worth of pods listed at start is fetched in
/// parallel without a burst of a hundred requests.
const FETCH_CONCURRENCY: usize = 8;

/// Why a claim could not be resolved. Every variant names the claim.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// The API server does not know the claim.
    #[error("claim {claim} not found in the API server")]
    NotFound {
        /// The claim asked for.
        claim: ClaimRef,
    },
    /// A claim of that name exists with another UID: the one the kubelet means is gone.
    #[error("claim {claim}: the API server has uid {found_uid}; the claim was deleted and recreated")]
    UidMismatch {
        /// The claim asked for.
        claim: ClaimRef,
        /// The UID the API server has.
        found_uid: String,
    },
    /// The claim has no allocation yet.
    #[error("claim {claim} is not allocated")]
    NotAllocated {
        /// The claim asked for.
        claim: ClaimRef,
    },
    /// The API request failed.
    #[error("claim {claim}: API request failed: {source}")]
    Api {
        /// The claim asked for.
        claim: ClaimRef,
        /// The client's error (boxed: it is large and this is the rare path).
        #[source]
        source: Box<kube::Error>,
    },
}

/// How claims are looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimCacheMode {
    /// Watch the pods bound to node `node_name` (a field selector on `spec.nodeName`, as the
    /// kubelet does) and keep the claims they reference, fetched as the pods appear; GET on a
    /// miss. Memory and API traffic follow the node's pods. Needs pods get/list/watch and
    /// claims get.
    Node {
        /// This node's name, as in the pods' `spec.nodeName`.
        node_name: String,
    },
    /// Watch every ResourceClaim in the cluster; GET on a miss. Memory and the API server's
    /// watch fan-out grow with the cluster's claims: for small clusters, or where the agent
    /// may not read pods. Needs claims get/list/watch.
    Watch,
    /// No cache: one GET per claim at Prepare. Needs claims get.
    GetOnly,
}

/// Extracts what concerns `driver_name` from a claim object: its allocation results for this
/// driver, each with the opaque configurations that apply to it (class first, then claim).
pub fn resolve_for_driver(
    driver_name: &str,
    claim: &ClaimRef,
    object: Arc<ResourceClaim>,
) -> Result<ResolvedClaim, ClaimError> {
    let found_uid = object.metadata.uid.clone().unwrap_or_default();
    if found_uid != claim.uid {
        return Err(ClaimError::UidMismatch {
            claim: claim.clone(),
            found_uid,
        });
    }
    let allocation = object
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .ok_or_else(|| ClaimError::NotAllocated { claim: claim.clone() })?;
    let (results, configs) = allocation
        .devices
        .as_ref()
        .map(|d| {
            (
                d.results.as_deref().unwrap_or_default(),
                d.config.as_deref().unwrap_or_default(),
            )
        })
        .unwrap_or_default();
    let mut ours: Vec<_> = configs
        .iter()
        .filter_map(|c| {
            let opaque = c.opaque.as_ref().filter(|o| o.driver == driver_name)?;
            let source = if c.source == "FromClass" {
                ConfigSource::Class
            } else {
                ConfigSource::Claim
            };
            Some((source, c.requests.as_deref().unwrap_or_default(), &opaque.parameters.0))
        })
        .collect();
    // Stable sort: class configuration before claim configuration, each in listed order.
    ours.sort_by_key(|(source, _, _)| *source == ConfigSource::Claim);
    let devices = results
        .iter()
        .filter(|r| r.driver == driver_name)
        .map(|r| AllocatedDevice {
            request: r.request.clone(),
            pool: r.pool.clone(),
            device: r.device.clone(),
            share_id: r.share_id.clone(),
            configs: ours
                .iter()
                .filter(|(_, requests, _)| applies_to(requests, &r.request))
                .map(|(source, _, parameters)| DeviceConfig {
                    source: *source,
                    parameters: (*parameters).clone(),
                })
                .collect(),
        })
        .collect();
    Ok(ResolvedClaim {
        claim: claim.clone(),
        devices,
        object,
    })
}

/// A configuration applies when it names no requests, the result's request, or the parent
/// request of a subrequest result (`parent/sub`).
fn applies_to(requests: &[String], request: &str) -> bool {
    let parent = request.split_once('/').map_or(request, |(p, _)| p);
    requests.is_empty() || requests.iter().any(|r| r == request || r == parent)
}

/// Where cached claims live.
#[derive(Clone)]
enum Cache {
    None,
    /// The cluster-wide watch's store, and whether it has synced.
    Watch(reflector::Store<ResourceClaim>, Arc<AtomicBool>),
    /// The claims of this node's pods.
    Node(Arc<Mutex<NodeClaims>>),
}

/// Finds claim objects: cache first (when enabled), else one GET.
#[derive(Clone)]
pub struct ClaimLookup {
    client: Client,
    cache: Cache,
}

impl ClaimLookup {
    /// A lookup over `client`. With a cache it also returns the future that keeps the cache;
    /// the caller spawns it (and owns the task).
    pub fn new(client: Client, mode: &ClaimCacheMode) -> (Self, Option<impl Future<Output = ()> + Send + 'static>) {
        let (cache, task) = match mode {
            ClaimCacheMode::Watch => {
                let (reader, writer) = reflector::store::<ResourceClaim>();
                let ready = Arc::new(AtomicBool::new(false));
                let api: Api<ResourceClaim> = Api::all(client.clone());
                let stream = watcher(api, watcher::Config::default())
                    .default_backoff()
                    // managedFields are large and never read here.
                    .modify(|c| c.managed_fields_mut().clear())
                    .reflect(writer);
                let (ready_flag, ready_reader) = (ready.clone(), reader.clone());
                let task = async move {
                    let mark_ready = async move {
                        if ready_reader.wait_until_ready().await.is_ok() {
                            ready_flag.store(true, Ordering::Release);
                            tracing::info!(claims = ready_reader.len(), "claim cache synced");
                        }
                    };
                    let drive = stream.for_each(|event| async move {
                        if let Err(e) = event {
                            tracing::warn!(error = %e, "claim watch failed; retrying with backoff");
                        }
                    });
                    futures::join!(mark_ready, drive);
                };
                (Cache::Watch(reader, ready), Some(futures::future::Either::Left(task)))
            }
            ClaimCacheMode::Node { node_name } => {
                let state = Arc::new(Mutex::new(NodeClaims::default()));
                let task = keep_node_claims(client.clone(), node_name.clone(), state.clone());
                (Cache::Node(state), Some(futures::future::Either::Right(task)))
            }
            ClaimCacheMode::GetOnly => (Cache::None, None),
        };
        (Self { client, cache }, task)
    }

    /// A lookup whose synced cache holds `claims`, over a client that must not be needed: for
    /// tests of what happens after the lookup, without an API server or real I/O.
    #[cfg(test)]
    pub(crate) fn with_cached(claims: Vec<ResourceClaim>) -> Self {
        let (reader, mut writer) = reflector::store::<ResourceClaim>();
        for claim in claims {
            writer.apply_watcher_event(&watcher::Event::Apply(claim));
        }
        let config = kube::Config::new("http://127.0.0.1:1".parse().expect("a URL"));
        Self {
            client: Client::try_from(config).expect("a client"),
            cache: Cache::Watch(reader, Arc::new(AtomicBool::new(true))),
        }
    }

    /// Whether the cache has synced (the claims, or this node's pods, listed once and, for
    /// the node's pods, their claims fetched).
    pub fn cache_ready(&self) -> bool {
        match &self.cache {
            Cache::None => false,
            Cache::Watch(_, ready) => ready.load(Ordering::Acquire),
            Cache::Node(state) => state.lock().settled(),
        }
    }

    /// The cached object of claim `namespace`/`name`, if the cache has it (no API request).
    pub fn cached(&self, namespace: &str, name: &str) -> Option<Arc<ResourceClaim>> {
        match &self.cache {
            Cache::None => None,
            Cache::Watch(store, _) => store.get(&reflector::ObjectRef::new(name).within(namespace)),
            Cache::Node(state) => state.lock().get(namespace, name),
        }
    }

    /// Whether `claim` is reserved for pod `pod_uid`, from the cache, without a request; `None`
    /// when the cache cannot tell (not cached, not synced, or, for the node-scoped cache, a pod
    /// or reservation newer than what it holds): then ask the API server.
    pub fn reserves(&self, claim: &ClaimRef, pod_uid: &str) -> Option<bool> {
        match &self.cache {
            Cache::None => None,
            Cache::Watch(store, ready) => {
                if !ready.load(Ordering::Acquire) {
                    return None;
                }
                let object = store.get(&ObjectRef::new(&claim.name).within(&claim.namespace))?;
                // Not reserved in the store may be a reservation the watch has not delivered
                // yet: only the server can say no.
                (object.metadata.uid.as_deref() == Some(claim.uid.as_str()) && reserved_for(&object, pod_uid))
                    .then_some(true)
            }
            Cache::Node(state) => state
                .lock()
                .reserves(&claim.namespace, &claim.name, &claim.uid, pod_uid),
        }
    }

    /// Number of claims in the cache (0 without one).
    pub fn cached_claims(&self) -> usize {
        match &self.cache {
            Cache::None => 0,
            Cache::Watch(store, _) => store.len(),
            Cache::Node(state) => state.lock().cached(),
        }
    }

    /// The claim object the kubelet means. A cached object with another UID may be stale, so
    /// it is confirmed with a GET before the UID mismatch is reported.
    pub async fn fetch(&self, claim: &ClaimRef) -> Result<Arc<ResourceClaim>, ClaimError> {
        let cached = match &self.cache {
            Cache::Watch(store, ready) if ready.load(Ordering::Acquire) => {
                store.get(&ObjectRef::new(&claim.name).within(&claim.namespace))
            }
            // Only fetched objects are in it: no need to wait for a sync.
            Cache::Node(state) => state.lock().get(&claim.namespace, &claim.name),
            _ => None,
        };
        if let Some(object) = cached
            && object.metadata.uid.as_deref() == Some(claim.uid.as_str())
        {
            return Ok(object);
        }
        let api: Api<ResourceClaim> = Api::namespaced(self.client.clone(), &claim.namespace);
        match api.get_opt(&claim.name).await {
            Ok(Some(object)) => Ok(Arc::new(object)),
            Ok(None) => Err(ClaimError::NotFound { claim: claim.clone() }),
            Err(source) => Err(ClaimError::Api {
                claim: claim.clone(),
                source: Box::new(source),
            }),
        }
    }
}

/// Keeps `state` to the claims of the pods bound to `node_name`: drives the pod watch and runs
/// the fetches the state asks for. The fetches are owned here: dropping the future stops them.
async fn keep_node_claims(client: Client, node_name: String, state: Arc<Mutex<NodeClaims>>) {
    let pods: Api<PodObject> = Api::all_with(client.clone(), &ApiResource::erase::<Pod>(&()));
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut events = watcher(pods, config).default_backoff().boxed();
    let mut fetches = JoinSet::new();
    // Which fetch each task runs: a task that panicked still gives its fetch an answer, or the
    // claim would wait for it forever.
    let mut running: HashMap<tokio::task::Id, Fetch> = HashMap::new();
    let limit = Arc::new(Semaphore::new(FETCH_CONCURRENCY));
    let mut was_settled = false;
    loop {
        let asked: Vec<Fetch> = tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => apply_pod_event(&mut state.lock(), event),
                Some(Err(e)) => {
                    tracing::warn!(node = %node_name, error = %e, "pod watch failed; retrying with backoff");
                    Vec::new()
                }
                // The watcher never ends on its own; the stream is gone only with the client.
                None => return,
            },
            Some(done) = fetches.join_next_with_id(), if !fetches.is_empty() => {
                let (id, answer) = match done {
                    Ok((id, answer)) => (id, answer),
                    Err(e) => {
                        tracing::error!(error = %e, "a claim fetch task failed; counted as a failed read");
                        (e.id(), Fetched::Failed)
                    }
                };
                match running.remove(&id) {
                    Some(fetch) => state.lock().fetched(&fetch.claim, fetch.token, answer).into_iter().collect(),
                    None => Vec::new(),
                }
            }
        };
        for fetch in asked {
            let (client, limit, claim, after) = (client.clone(), limit.clone(), fetch.claim.clone(), fetch.after);
            let task = fetches.spawn(async move {
                tokio::time::sleep(after).await;
                // The semaphore is never closed: it lives as long as this future.
                let _permit = limit.acquire_owned().await;
                get_claim(client, &claim).await
            });
            running.insert(task.id(), fetch);
        }
        let settled = state.lock().settled();
        if settled && !was_settled {
            let state = state.lock();
            tracing::info!(node = %node_name, pods = state.pods(), claims = state.cached(), "claim cache synced to the node's pods");
        }
        was_settled = settled;
    }
}

fn apply_pod_event(state: &mut NodeClaims, event: watcher::Event<PodObject>) -> Vec<Fetch> {
    match event {
        watcher::Event::Init => {
            state.relist_started();
            Vec::new()
        }
        watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => match PodClaims::from_pod(&pod) {
            Some(pod) => state.pod_applied(pod),
            None => {
                tracing::warn!(pod = %pod.name_any(), "a pod without a UID or namespace is ignored");
                Vec::new()
            }
        },
        watcher::Event::InitDone => {
            state.relist_done();
            Vec::new()
        }
        watcher::Event::Delete(pod) => {
            if let Some(uid) = pod.metadata.uid.as_deref() {
                state.pod_deleted(uid);
            }
            Vec::new()
        }
    }
}

async fn get_claim(client: Client, claim: &ClaimKey) -> Fetched {
    let api: Api<ResourceClaim> = Api::namespaced(client, &claim.namespace);
    match api.get_opt(&claim.name).await {
        Ok(Some(mut object)) => {
            // managedFields are large and never read here.
            object.managed_fields_mut().clear();
            Fetched::Found(Arc::new(object))
        }
        Ok(None) => Fetched::NotFound,
        Err(e) => {
            tracing::warn!(claim = %format!("{}/{}", claim.namespace, claim.name), error = %e,
                "reading a claim of this node's pods failed; retrying (Prepare reads it itself if still missing)");
            Fetched::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim_ref() -> ClaimRef {
        ClaimRef {
            namespace: "ns".into(),
            name: "c".into(),
            uid: "u1".into(),
        }
    }

    fn object(status: serde_json::Value) -> Arc<ResourceClaim> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
                "spec": {},
                "status": status,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn keeps_only_this_drivers_results_and_configs_in_order() {
        let obj = object(json!({"allocation": {"devices": {
            "results": [
                {"request": "net", "driver": "net.example.com", "pool": "node1", "device": "eth1"},
                {"request": "gpu", "driver": "gpu.example.com", "pool": "node1", "device": "gpu0"},
                {"request": "alt/fast", "driver": "net.example.com", "pool": "node1", "device": "eth2"},
            ],
            "config": [
                {"source": "FromClaim", "requests": ["net"], "opaque": {"driver": "net.example.com", "parameters": {"mtu": 9000}}},
                {"source": "FromClass", "opaque": {"driver": "net.example.com", "parameters": {"mtu": 1500}}},
                {"source": "FromClass", "opaque": {"driver": "gpu.example.com", "parameters": {"x": 1}}},
                {"source": "FromClaim", "requests": ["alt"], "opaque": {"driver": "net.example.com", "parameters": {"name": "fast0"}}},
            ],
        }}}));
        let r = resolve_for_driver("net.example.com", &claim_ref(), obj).unwrap();
        assert_eq!(r.devices.len(), 2);
        let eth1 = &r.devices[0];
        assert_eq!((eth1.request.as_str(), eth1.device.as_str()), ("net", "eth1"));
        let params: Vec<_> = eth1.configs.iter().map(|c| (c.source, c.parameters.clone())).collect();
        assert_eq!(
            params,
            vec![
                (ConfigSource::Class, json!({"mtu": 1500})),
                (ConfigSource::Claim, json!({"mtu": 9000}))
            ]
        );
        let eth2 = &r.devices[1];
        assert_eq!(eth2.configs.len(), 2, "class config plus the parent-request config");
        assert_eq!(eth2.configs[1].parameters, json!({"name": "fast0"}));
    }

    #[test]
    fn other_drivers_claim_resolves_to_no_devices() {
        let obj = object(json!({"allocation": {"devices": {"results": [
            {"request": "gpu", "driver": "gpu.example.com", "pool": "p", "device": "d"}]}}}));
        let r = resolve_for_driver("net.example.com", &claim_ref(), obj).unwrap();
        assert!(r.devices.is_empty());
    }

    #[test]
    fn uid_mismatch_and_missing_allocation_are_errors_naming_the_claim() {
        let mut stale = claim_ref();
        stale.uid = "old".into();
        let e = resolve_for_driver("d", &stale, object(json!({}))).unwrap_err();
        assert!(matches!(e, ClaimError::UidMismatch { ref found_uid, .. } if found_uid == "u1"));
        assert!(e.to_string().contains("ns/c (uid old)"), "{e}");
        let e = resolve_for_driver("d", &claim_ref(), object(json!({}))).unwrap_err();
        assert!(matches!(e, ClaimError::NotAllocated { .. }));
        assert!(e.to_string().contains("ns/c"));
    }
}
