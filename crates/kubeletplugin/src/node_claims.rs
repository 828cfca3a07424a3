//! The node-scoped claim cache's state: which ResourceClaims the pods bound to this node
//! reference, and the objects fetched for them. A pure state machine (pod events and fetch
//! answers in, fetches to make out); the shell in `claims.rs` runs the pod watch and the GETs.
//!
//! Its memory and API traffic follow this node's pods, not the cluster's claims. The rules:
//!
//! - A pod references a claim by `spec.resourceClaims[].resourceClaimName` (a standalone claim)
//!   or `status.resourceClaimStatuses[].resourceClaimName` (one made from its template), always
//!   in the pod's namespace, until it ends (`Succeeded` or `Failed`: its claims may be given to
//!   other pods). A claim is kept while a pod of this node references it and dropped with its
//!   last reference.
//! - A copy is served only when nothing makes it suspect: it is allocated, no fetch of it is in
//!   flight, and it is reserved for a pod of this node that references it. Anything else is a
//!   miss, and the caller asks the API server.
//! - A pod that newly references a claim has it fetched, even when it is cached: the cached
//!   object may predate that pod's reservation (a shared claim, a claim re-created for a new
//!   pod). Prepare then finds the claim in memory, allocated and reserved.
//! - A fetch that finds the claim missing or not yet allocated, or that fails, is retried with a
//!   backoff ([`RETRY_FIRST`] doubling, [`RETRIES`] times) while the claim is referenced; after
//!   that the referencing pod's next update starts again (an update during the retries does
//!   not cut them short), and Prepare's miss is a GET.
//! - A fetch asked for while one is in flight is made again once it answers: the answer in
//!   flight may have been read before what asked for the new one.
//! - A relist (the watch restarted, e.g. after its resourceVersion expired) replaces the set of
//!   pods: a pod not listed again is gone, with its references.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::resource::v1::ResourceClaim;
use serde::{Deserialize, Serialize};

/// First retry delay of a fetch that found nothing usable.
pub(crate) const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Retries of a fetch that finds nothing usable before waiting for the pod's next update.
pub(crate) const RETRIES: u32 = 6;

/// A claim by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ClaimKey {
    /// The claim's (and its pods') namespace.
    pub namespace: String,
    /// The claim's name.
    pub name: String,
}

/// A pod as the cache reads it: its metadata and its claim references; the rest of the object
/// is skipped while decoding (a whole `Pod` type would cost decoding time, memory and about
/// 1 MB of binary for fields never read).
pub(crate) type PodObject = kube::core::Object<PodSpecClaims, PodStatusClaims>;

/// `spec.resourceClaims` of a pod.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodSpecClaims {
    #[serde(default)]
    resource_claims: Option<Vec<ClaimName>>,
}

/// `status.phase` and `status.resourceClaimStatuses` of a pod.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodStatusClaims {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    resource_claim_statuses: Option<Vec<ClaimName>>,
}

/// An entry naming a ResourceClaim (absent for a template's claim not made yet).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ClaimName {
    #[serde(default)]
    resource_claim_name: Option<String>,
}

/// What the cache needs of a pod: its identity and the claims it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodClaims {
    /// The pod's UID.
    pub uid: String,
    /// The pod's namespace.
    pub namespace: String,
    /// Names of the claims it references, in its namespace.
    pub claims: BTreeSet<String>,
}

impl PodClaims {
    /// From a pod object; `None` when it lacks a UID or a namespace (then it cannot be tracked).
    pub(crate) fn from_pod(pod: &PodObject) -> Option<Self> {
        let uid = pod.metadata.uid.clone()?;
        let namespace = pod.metadata.namespace.clone()?;
        let ended = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        if ended {
            return Some(Self {
                uid,
                namespace,
                claims: BTreeSet::new(),
            });
        }
        let from_spec = pod
            .spec
            .resource_claims
            .iter()
            .flatten()
            .filter_map(|c| c.resource_claim_name.clone());
        let from_status = pod
            .status
            .iter()
            .flat_map(|s| s.resource_claim_statuses.iter().flatten())
            .filter_map(|c| c.resource_claim_name.clone());
        Some(Self {
            uid,
            namespace,
            claims: from_spec.chain(from_status).collect(),
        })
    }

    fn keys(&self) -> impl Iterator<Item = ClaimKey> + '_ {
        self.claims.iter().map(|name| ClaimKey {
            namespace: self.namespace.clone(),
            name: name.clone(),
        })
    }
}

/// A fetch's answer.
#[derive(Debug, Clone)]
pub(crate) enum Fetched {
    /// The claim as the API server has it.
    Found(Arc<ResourceClaim>),
    /// The API server does not have it.
    NotFound,
    /// The request failed (the shell logs why).
    Failed,
}

/// A GET of a claim to make, `after` a delay; its answer comes back with its `token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetch {
    /// The claim to read.
    pub claim: ClaimKey,
    /// How long to wait before the request.
    pub after: Duration,
    /// Identifies this fetch, so that an answer for a claim dropped and referenced again since
    /// is not taken for the new fetch's.
    pub token: u64,
}

/// A fetch in flight, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FetchState {
    Idle,
    InFlight {
        token: u64,
        /// Asked for again while in flight: fetch once more when it answers.
        again: bool,
        /// Answers without a usable object so far, in this run of retries.
        misses: u32,
    },
}

#[derive(Debug)]
struct Entry {
    object: Option<Arc<ResourceClaim>>,
    pods: BTreeSet<String>,
    fetch: FetchState,
}

/// The claims the pods of this node reference, and their objects.
#[derive(Debug, Default)]
pub(crate) struct NodeClaims {
    pods: HashMap<String, PodClaims>,
    claims: HashMap<ClaimKey, Entry>,
    /// The pods listed so far in a relist; `None` outside one.
    relisted: Option<HashSet<String>>,
    synced: bool,
    next_token: u64,
}

/// Whether `claim`'s `status.reservedFor` names pod `pod_uid`.
pub(crate) fn reserved_for(claim: &ResourceClaim, pod_uid: &str) -> bool {
    claim
        .status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.resource == "pods" && c.api_group.as_deref().unwrap_or("").is_empty() && c.uid == pod_uid)
}

/// Whether a fetched object is what Prepare needs: allocated.
fn usable(object: &ResourceClaim) -> bool {
    object.status.as_ref().is_some_and(|s| s.allocation.is_some())
}

impl NodeClaims {
    /// A pod was added or changed (or listed): track what it references now.
    pub(crate) fn pod_applied(&mut self, pod: PodClaims) -> Vec<Fetch> {
        if let Some(listed) = &mut self.relisted {
            listed.insert(pod.uid.clone());
        }
        let before: BTreeSet<ClaimKey> = self.pods.get(&pod.uid).map(|p| p.keys().collect()).unwrap_or_default();
        let after: BTreeSet<ClaimKey> = pod.keys().collect();
        let mut fetches = Vec::new();
        for gone in before.difference(&after) {
            self.unreference(gone, &pod.uid);
        }
        for key in &after {
            let entry = self.claims.entry(key.clone()).or_insert_with(|| Entry {
                object: None,
                pods: BTreeSet::new(),
                fetch: FetchState::Idle,
            });
            let new_reference = entry.pods.insert(pod.uid.clone());
            // An unchanged reference is fetched again only when nothing usable is cached and
            // the retries have run out: the pod's update is the next chance (during the
            // retries it would cut their backoff short).
            let wanted =
                new_reference || (entry.fetch == FetchState::Idle && !entry.object.as_deref().is_some_and(usable));
            if wanted && let Some(fetch) = Self::ask(&mut self.next_token, key, entry, Duration::ZERO) {
                fetches.push(fetch);
            }
        }
        self.pods.insert(pod.uid.clone(), pod);
        fetches
    }

    /// A pod was deleted: drop its references.
    pub(crate) fn pod_deleted(&mut self, uid: &str) {
        if let Some(pod) = self.pods.remove(uid) {
            for key in pod.keys() {
                self.unreference(&key, uid);
            }
        }
    }

    /// The watch lists the pods again; [`Self::relist_done`] ends the list.
    pub(crate) fn relist_started(&mut self) {
        self.relisted = Some(HashSet::new());
    }

    /// The list is complete: pods not in it are gone.
    pub(crate) fn relist_done(&mut self) {
        let Some(listed) = self.relisted.take() else {
            return;
        };
        let gone: Vec<String> = self.pods.keys().filter(|uid| !listed.contains(*uid)).cloned().collect();
        for uid in gone {
            self.pod_deleted(&uid);
        }
        self.synced = true;
    }

    /// A fetch answered. Returns the fetch to make next, if any.
    pub(crate) fn fetched(&mut self, key: &ClaimKey, token: u64, answer: Fetched) -> Option<Fetch> {
        let entry = self.claims.get_mut(key)?;
        let FetchState::InFlight {
            token: current,
            again,
            misses,
        } = entry.fetch
        else {
            return None;
        };
        if current != token {
            return None;
        }
        entry.fetch = FetchState::Idle;
        let miss = match answer {
            Fetched::Found(object) => {
                let miss = !usable(&object);
                entry.object = Some(object);
                miss
            }
            Fetched::NotFound => {
                entry.object = None;
                true
            }
            // A failed request says nothing new about the claim: keep what is cached.
            Fetched::Failed => true,
        };
        let next_token = &mut self.next_token;
        if again {
            return Self::ask(next_token, key, entry, Duration::ZERO);
        }
        if miss && misses < RETRIES {
            let fetch = Self::ask(next_token, key, entry, RETRY_FIRST * 2u32.pow(misses))?;
            entry.fetch = FetchState::InFlight {
                token: fetch.token,
                again: false,
                misses: misses + 1,
            };
            return Some(fetch);
        }
        None
    }

    /// The cached object of a claim when it can be trusted (see the module's rules): allocated,
    /// not being fetched again (a fetch is asked for when the copy may predate a pod's
    /// reservation), and reserved for a pod of this node that references it.
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<Arc<ResourceClaim>> {
        let key = ClaimKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        let entry = self.claims.get(&key)?;
        let object = entry.object.as_ref()?;
        let trusted =
            entry.fetch == FetchState::Idle && usable(object) && entry.pods.iter().any(|pod| reserved_for(object, pod));
        trusted.then(|| object.clone())
    }

    /// Whether claim `namespace`/`name` (UID `claim_uid`) is reserved for pod `pod_uid`, as far
    /// as the cache can tell; `None` when it cannot: the pod is not known yet (the pod watch
    /// may lag behind the runtime), or it references the claim but the cached copy does not
    /// show the reservation (the copy may be older than the pod).
    pub(crate) fn reserves(&self, namespace: &str, name: &str, claim_uid: &str, pod_uid: &str) -> Option<bool> {
        let pod = self.pods.get(pod_uid)?;
        if pod.namespace != namespace || !pod.claims.contains(name) {
            return Some(false);
        }
        let object = self.get(namespace, name)?;
        (object.metadata.uid.as_deref() == Some(claim_uid) && reserved_for(&object, pod_uid)).then_some(true)
    }

    /// Number of claims with a cached object.
    pub(crate) fn cached(&self) -> usize {
        self.claims.values().filter(|e| e.object.is_some()).count()
    }

    /// Number of pods tracked.
    pub(crate) fn pods(&self) -> usize {
        self.pods.len()
    }

    /// Whether the pods have been listed once and no fetch is in flight.
    pub(crate) fn settled(&self) -> bool {
        self.synced && self.claims.values().all(|e| e.fetch == FetchState::Idle)
    }

    /// Starts a fetch of `key`, or marks the one in flight to be made again.
    fn ask(next_token: &mut u64, key: &ClaimKey, entry: &mut Entry, after: Duration) -> Option<Fetch> {
        match &mut entry.fetch {
            FetchState::InFlight { again, .. } => {
                *again = true;
                None
            }
            FetchState::Idle => {
                *next_token += 1;
                entry.fetch = FetchState::InFlight {
                    token: *next_token,
                    again: false,
                    misses: 0,
                };
                Some(Fetch {
                    claim: key.clone(),
                    after,
                    token: *next_token,
                })
            }
        }
    }

    fn unreference(&mut self, key: &ClaimKey, uid: &str) {
        if let Some(entry) = self.claims.get_mut(key) {
            entry.pods.remove(uid);
            if entry.pods.is_empty() {
                self.claims.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(uid: &str, namespace: &str, claims: &[&str]) -> PodClaims {
        PodClaims {
            uid: uid.into(),
            namespace: namespace.into(),
            claims: claims.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    fn claim(namespace: &str, name: &str, uid: &str, allocated: bool, reserved_for: &[&str]) -> Fetched {
        let reserved: Vec<_> = reserved_for
            .iter()
            .map(|p| json!({"resource": "pods", "name": p, "uid": p}))
            .collect();
        let status = if allocated {
            json!({"allocation": {"devices": {"results": []}}, "reservedFor": reserved})
        } else {
            json!({})
        };
        Fetched::Found(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": namespace, "uid": uid},
                "spec": {},
                "status": status,
            }))
            .unwrap(),
        ))
    }

    fn synced() -> NodeClaims {
        let mut cache = NodeClaims::default();
        cache.relist_started();
        cache.relist_done();
        cache
    }

    fn uid_of(cache: &NodeClaims, namespace: &str, name: &str) -> Option<String> {
        cache.get(namespace, name)?.metadata.uid.clone()
    }

    #[test]
    fn a_pod_of_the_node_has_its_claims_fetched_once_and_served_from_memory() {
        let mut cache = synced();
        let fetches = cache.pod_applied(pod("p1", "ns", &["c1", "c2"]));
        assert_eq!(fetches.len(), 2);
        assert!(fetches.iter().all(|f| f.after.is_zero()));
        assert!(!cache.settled(), "fetches in flight");
        for f in &fetches {
            let answer = claim("ns", &f.claim.name, &format!("uid-{}", f.claim.name), true, &["p1"]);
            assert_eq!(cache.fetched(&f.claim, f.token, answer), None);
        }
        assert!(cache.settled());
        assert_eq!(uid_of(&cache, "ns", "c1").as_deref(), Some("uid-c1"));
        assert_eq!(cache.cached(), 2);
        // The pod's status changes (it starts): its references did not, nothing is fetched.
        assert!(cache.pod_applied(pod("p1", "ns", &["c1", "c2"])).is_empty());
    }

    #[test]
    fn a_pod_seen_before_its_claims_allocation_is_retried_until_allocated() {
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["c1"])).remove(0);
        // Not allocated yet: retried after RETRY_FIRST, then doubling.
        let retry = cache
            .fetched(&f.claim, f.token, claim("ns", "c1", "u1", false, &[]))
            .unwrap();
        assert_eq!(retry.after, RETRY_FIRST);
        let retry = cache.fetched(&retry.claim, retry.token, Fetched::NotFound).unwrap();
        assert_eq!(retry.after, RETRY_FIRST * 2);
        assert!(cache.get("ns", "c1").is_none());
        assert_eq!(
            cache.fetched(&retry.claim, retry.token, claim("ns", "c1", "u1", true, &["p1"])),
            None
        );
        assert_eq!(uid_of(&cache, "ns", "c1").as_deref(), Some("u1"));
        assert!(cache.settled());
    }

    #[test]
    fn retries_end_and_the_pods_next_update_starts_again() {
        let mut cache = synced();
        let mut f = cache.pod_applied(pod("p1", "ns", &["c1"])).remove(0);
        let mut delays = Vec::new();
        while let Some(next) = cache.fetched(&f.claim, f.token, Fetched::Failed) {
            delays.push(next.after);
            f = next;
        }
        assert_eq!(delays.len(), RETRIES as usize);
        assert_eq!(delays.last(), Some(&(RETRY_FIRST * 2u32.pow(RETRIES - 1))));
        assert!(cache.settled());
        let again = cache.pod_applied(pod("p1", "ns", &["c1"]));
        assert_eq!(
            again.len(),
            1,
            "an update of a pod whose claim is not usable fetches it again"
        );
    }

    #[test]
    fn a_pod_added_after_its_claims_allocation_finds_it_allocated() {
        // The scheduler allocates and reserves before binding: the first fetch is usable.
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["c1"])).remove(0);
        assert_eq!(
            cache.fetched(&f.claim, f.token, claim("ns", "c1", "u1", true, &["p1"])),
            None
        );
        assert!(cache.settled() && cache.get("ns", "c1").is_some());
    }

    #[test]
    fn a_claim_re_created_for_a_new_pod_is_fetched_again() {
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["c1"])).remove(0);
        cache.fetched(&f.claim, f.token, claim("ns", "c1", "old", true, &["p1"]));
        cache.pod_deleted("p1");
        assert!(cache.get("ns", "c1").is_none(), "dropped with its last reference");
        // The same name, re-created and allocated for p2.
        let f = cache.pod_applied(pod("p2", "ns", &["c1"])).remove(0);
        cache.fetched(&f.claim, f.token, claim("ns", "c1", "new", true, &["p2"]));
        assert_eq!(uid_of(&cache, "ns", "c1").as_deref(), Some("new"));
    }

    #[test]
    fn a_second_pod_on_a_cached_claim_refreshes_it_for_its_reservation() {
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["shared"])).remove(0);
        cache.fetched(&f.claim, f.token, claim("ns", "shared", "u", true, &["p1"]));
        let f = cache.pod_applied(pod("p2", "ns", &["shared"])).remove(0);
        cache.fetched(&f.claim, f.token, claim("ns", "shared", "u", true, &["p1", "p2"]));
        let object = cache.get("ns", "shared").unwrap();
        let reserved = &object.status.as_ref().unwrap().reserved_for.as_ref().unwrap();
        assert_eq!(reserved.len(), 2);
        // p1 goes; p2 still references it: kept.
        cache.pod_deleted("p1");
        assert!(cache.get("ns", "shared").is_some());
    }

    #[test]
    fn a_fetch_asked_for_while_one_is_in_flight_is_made_again_after_it() {
        let mut cache = synced();
        let first = cache.pod_applied(pod("p1", "ns", &["shared"])).remove(0);
        assert!(
            cache.pod_applied(pod("p2", "ns", &["shared"])).is_empty(),
            "joins the fetch in flight"
        );
        let again = cache
            .fetched(&first.claim, first.token, claim("ns", "shared", "u", true, &["p1"]))
            .expect("fetched again: the answer may predate p2's reservation");
        assert!(again.after.is_zero());
        assert!(!cache.settled());
        cache.fetched(
            &again.claim,
            again.token,
            claim("ns", "shared", "u", true, &["p1", "p2"]),
        );
        assert!(cache.settled());
    }

    #[test]
    fn an_answer_for_a_dropped_claim_is_not_taken_for_a_later_fetch() {
        let mut cache = synced();
        let old = cache.pod_applied(pod("p1", "ns", &["c1"])).remove(0);
        cache.pod_deleted("p1");
        let new = cache.pod_applied(pod("p2", "ns", &["c1"])).remove(0);
        assert_ne!(old.token, new.token);
        assert_eq!(
            cache.fetched(&old.claim, old.token, claim("ns", "c1", "old", true, &["p1"])),
            None
        );
        assert!(
            cache.get("ns", "c1").is_none() && !cache.settled(),
            "the stale answer is ignored"
        );
        cache.fetched(&new.claim, new.token, claim("ns", "c1", "new", true, &["p2"]));
        assert_eq!(uid_of(&cache, "ns", "c1").as_deref(), Some("new"));
    }

    #[test]
    fn a_pod_deleted_drops_claims_no_other_pod_references() {
        let mut cache = synced();
        for f in cache.pod_applied(pod("p1", "ns", &["a", "b"])) {
            cache.fetched(&f.claim, f.token, claim("ns", &f.claim.name, "u", true, &["p1"]));
        }
        // An answer arriving after the pod's deletion is dropped too.
        let late = cache.pod_applied(pod("p2", "ns", &["c"])).remove(0);
        cache.pod_deleted("p1");
        cache.pod_deleted("p2");
        assert_eq!(
            cache.fetched(&late.claim, late.token, claim("ns", "c", "u", true, &["p2"])),
            None
        );
        assert_eq!((cache.cached(), cache.pods()), (0, 0));
        assert!(cache.settled());
    }

    #[test]
    fn a_pod_that_stops_referencing_a_claim_releases_it() {
        let mut cache = synced();
        for f in cache.pod_applied(pod("p1", "ns", &["a", "b"])) {
            cache.fetched(&f.claim, f.token, claim("ns", &f.claim.name, "u", true, &["p1"]));
        }
        assert!(cache.pod_applied(pod("p1", "ns", &["a"])).is_empty());
        assert!(cache.get("ns", "a").is_some() && cache.get("ns", "b").is_none());
    }

    #[test]
    fn a_relist_after_an_expired_watch_drops_the_pods_gone_meanwhile() {
        let mut cache = synced();
        for uid in ["p1", "p2"] {
            for f in cache.pod_applied(pod(uid, "ns", &[uid])) {
                cache.fetched(&f.claim, f.token, claim("ns", uid, uid, true, &[uid]));
            }
        }
        // The watch's resourceVersion expired; p2 was deleted while it was down.
        cache.relist_started();
        assert!(
            cache.pod_applied(pod("p1", "ns", &["p1"])).is_empty(),
            "nothing new to fetch"
        );
        assert!(cache.get("ns", "p2").is_some(), "kept until the list is complete");
        cache.relist_done();
        assert!(cache.get("ns", "p1").is_some() && cache.get("ns", "p2").is_none());
        assert_eq!(cache.pods(), 1);
    }

    #[test]
    fn claims_are_per_namespace() {
        let mut cache = synced();
        let a = cache.pod_applied(pod("p1", "team-a", &["net"])).remove(0);
        let b = cache.pod_applied(pod("p2", "team-b", &["net"])).remove(0);
        assert_eq!(
            (a.claim.namespace.as_str(), b.claim.namespace.as_str()),
            ("team-a", "team-b")
        );
        cache.fetched(&a.claim, a.token, claim("team-a", "net", "ua", true, &["p1"]));
        cache.fetched(&b.claim, b.token, claim("team-b", "net", "ub", true, &["p2"]));
        assert_eq!(uid_of(&cache, "team-a", "net").as_deref(), Some("ua"));
        assert_eq!(uid_of(&cache, "team-b", "net").as_deref(), Some("ub"));
        assert!(
            cache.get("team-c", "net").is_none(),
            "a claim of another namespace is not served"
        );
        cache.pod_deleted("p1");
        assert!(cache.get("team-a", "net").is_none() && cache.get("team-b", "net").is_some());
    }

    #[test]
    fn a_reservation_is_answered_only_when_the_cache_can_know_it() {
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["shared"])).remove(0);
        assert_eq!(cache.reserves("ns", "shared", "u", "p1"), None, "being fetched");
        cache.fetched(&f.claim, f.token, claim("ns", "shared", "u", true, &["p1"]));
        assert_eq!(cache.reserves("ns", "shared", "u", "p1"), Some(true));
        assert_eq!(
            cache.reserves("ns", "shared", "other-uid", "p1"),
            None,
            "another claim of that name"
        );
        assert_eq!(
            cache.reserves("ns", "shared", "u", "p2"),
            None,
            "p2 not seen yet: the watch may lag"
        );
        // p2 arrives referencing the claim: unknown until the copy that reserves it is fetched.
        let f = cache.pod_applied(pod("p2", "ns", &["shared"])).remove(0);
        assert_eq!(cache.reserves("ns", "shared", "u", "p2"), None);
        cache.fetched(&f.claim, f.token, claim("ns", "shared", "u", true, &["p1"]));
        assert_eq!(
            cache.reserves("ns", "shared", "u", "p2"),
            None,
            "still not shown reserved: ask the server"
        );
        // A pod known not to reference the claim is answered without a request.
        cache.pod_applied(pod("p3", "ns", &["own"]));
        assert_eq!(cache.reserves("ns", "shared", "u", "p3"), Some(false));
    }

    #[test]
    fn only_a_copy_nothing_makes_suspect_is_served() {
        let mut cache = synced();
        // Found but not allocated, retries run out: kept, not served (Prepare asks the server).
        let mut f = cache.pod_applied(pod("p1", "ns", &["c"])).remove(0);
        while let Some(next) = cache.fetched(&f.claim, f.token, claim("ns", "c", "u", false, &[])) {
            f = next;
        }
        assert!(cache.settled() && cache.get("ns", "c").is_none());
        // Allocated and reserved for p1: served.
        let f = cache.pod_applied(pod("p1", "ns", &["c"])).remove(0);
        cache.fetched(&f.claim, f.token, claim("ns", "c", "u", true, &["p1"]));
        assert!(cache.get("ns", "c").is_some());
        // p2 references it too, p1 ends: the copy reserved for p1 alone is not served, even
        // once its fetch answered the same (the server may not have moved it yet).
        let f = cache.pod_applied(pod("p2", "ns", &["c"])).remove(0);
        assert!(cache.get("ns", "c").is_none(), "being fetched again");
        cache.pod_applied(pod("p1", "ns", &[]));
        cache.fetched(&f.claim, f.token, claim("ns", "c", "u", true, &["p1"]));
        assert!(cache.get("ns", "c").is_none(), "reserved for no pod that references it");
    }

    #[test]
    fn a_pod_that_ended_releases_its_claims() {
        let object: PodObject = serde_json::from_value(json!({
            "metadata": {"name": "job", "namespace": "ns", "uid": "p1"},
            "spec": {"containers": [], "resourceClaims": [{"name": "nic", "resourceClaimName": "standalone"}]},
            "status": {"phase": "Succeeded"},
        }))
        .unwrap();
        assert!(PodClaims::from_pod(&object).unwrap().claims.is_empty());
    }

    #[test]
    fn a_pod_update_during_retries_does_not_cut_their_backoff() {
        let mut cache = synced();
        let f = cache.pod_applied(pod("p1", "ns", &["c"])).remove(0);
        let retry = cache.fetched(&f.claim, f.token, Fetched::NotFound).unwrap();
        assert!(cache.pod_applied(pod("p1", "ns", &["c"])).is_empty());
        let next = cache.fetched(&retry.claim, retry.token, Fetched::NotFound).unwrap();
        assert_eq!(next.after, RETRY_FIRST * 2, "the backoff went on");
    }

    #[test]
    fn a_pod_names_its_claims_by_spec_and_by_status() {
        let object: PodObject = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "p1"},
            "spec": {"containers": [], "resourceClaims": [
                {"name": "shared", "resourceClaimName": "standalone"},
                {"name": "own", "resourceClaimTemplateName": "tmpl"},
            ]},
            "status": {"resourceClaimStatuses": [{"name": "own", "resourceClaimName": "web-own-x7k2p"}]},
        }))
        .unwrap();
        let pod = PodClaims::from_pod(&object).unwrap();
        assert_eq!(pod.uid, "p1");
        assert_eq!(pod.claims, ["standalone", "web-own-x7k2p"].map(String::from).into());
        let mut no_uid = object;
        no_uid.metadata.uid = None;
        assert_eq!(PodClaims::from_pod(&no_uid), None);
    }
}
