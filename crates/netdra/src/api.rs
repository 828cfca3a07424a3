//! The seam to the API server: what the framework reads of a claim (its identity, its
//! consumers, its status entries) and the one write it makes (a merge patch of the status), as
//! a trait with the real implementation on `kube` ([`Kube`]) and, for tests, a fake whose
//! answers can be scripted (conflicts, refusals, dropped connections).

use std::{future::Future, pin::Pin, sync::Arc};

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::{
    api::{Api, DynamicObject, Patch, PatchParams},
    discovery::ApiResource,
};
use kubeletplugin::{ClaimCacheReader, ClaimRef};
use serde_json::Value;

/// A boxed future, so that the trait stays object-safe.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A pod that a claim is reserved for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Consumer {
    /// The pod's name.
    pub name: String,
    /// The pod's UID.
    pub uid: String,
}

/// What the framework reads of a claim.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ClaimObject {
    /// Its UID.
    pub uid: Option<String>,
    /// Its resourceVersion, the precondition of a status write.
    pub resource_version: Option<String>,
    /// The pods in `status.reservedFor`.
    pub consumers: Vec<Consumer>,
    /// `status.devices`, as the server has them (other drivers' entries untouched).
    pub devices: Vec<Value>,
}

impl ClaimObject {
    fn from_value(data: &Value, uid: Option<String>, resource_version: Option<String>) -> Self {
        let consumers = data
            .pointer("/status/reservedFor")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|c| {
                c.get("resource").and_then(Value::as_str) == Some("pods")
                    && c.get("apiGroup").and_then(Value::as_str).unwrap_or("").is_empty()
            })
            .filter_map(|c| {
                Some(Consumer {
                    name: c.get("name")?.as_str()?.to_owned(),
                    uid: c.get("uid")?.as_str()?.to_owned(),
                })
            })
            .collect();
        Self {
            uid,
            resource_version,
            consumers,
            devices: data
                .pointer("/status/devices")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// From a typed claim (the watch cache's): identity and consumers only, read in place (a
    /// hook may look at every claim of a namespace; no copy of the object is made).
    pub(crate) fn from_claim(claim: &ResourceClaim) -> Self {
        let consumers = crate::plan::pod_consumers(claim)
            .map(|c| Consumer {
                name: c.name.clone(),
                uid: c.uid.clone(),
            })
            .collect();
        Self {
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            consumers,
            devices: Vec::new(),
        }
    }
}

/// Why an API request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum ApiError {
    /// The server answered with an error status.
    #[error("{code}: {message}")]
    Status {
        /// The HTTP status.
        code: u16,
        /// The server's message.
        message: String,
    },
    /// No answer: the connection failed or dropped.
    #[error("no answer from the API server: {0}")]
    Transport(String),
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub(crate) fn code(&self) -> Option<u16> {
        match self {
            Self::Status { code, .. } => Some(*code),
            Self::Transport(_) => None,
        }
    }
}

impl From<kube::Error> for ApiError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => Self::Status {
                code: s.code,
                message: s.message,
            },
            other => Self::Transport(other.to_string()),
        }
    }
}

/// What the framework asks of the API server about claims.
pub(crate) trait ClaimApi: Send + Sync + 'static {
    /// The claim as the server has it now; `None` when it does not exist.
    fn get(&self, claim: &ClaimRef) -> BoxFuture<'_, Result<Option<ClaimObject>, ApiError>>;

    /// The claim as the watch cache has it, when there is one (no request).
    fn cached(&self, claim: &ClaimRef) -> Option<ClaimObject>;

    /// Whether the cached claim (this UID) reserves pod `pod_uid`; `None` when the cache cannot
    /// tell (not cached, or a reservation it may not have seen yet): then the server is asked.
    /// A hook asks this of every claim of a namespace: no copy is made.
    fn reserves(&self, claim: &ClaimRef, pod_uid: &str) -> Option<bool> {
        let object = self.cached(claim)?;
        Some(object.uid.as_deref() == Some(claim.uid.as_str()) && object.consumers.iter().any(|c| c.uid == pod_uid))
    }

    /// Sends a JSON merge patch of the claim's `status` subresource.
    fn patch_status(&self, claim: &ClaimRef, field_manager: &str, body: Value) -> BoxFuture<'_, Result<(), ApiError>>;
}

/// The API server through `kube`, with the kubelet plugin's claim cache for cached reads.
pub(crate) struct Kube {
    client: kube::Client,
    resource: ApiResource,
    cache: std::sync::OnceLock<ClaimCacheReader>,
}

impl Kube {
    pub(crate) fn new(client: kube::Client) -> Self {
        Self {
            client,
            resource: ApiResource::erase::<ResourceClaim>(&()),
            cache: std::sync::OnceLock::new(),
        }
    }

    /// Reads cached claims through the kubelet plugin's watch cache, once it has started.
    pub(crate) fn set_cache(&self, reader: ClaimCacheReader) {
        let _ = self.cache.set(reader);
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }
}

impl ClaimApi for Kube {
    fn get(&self, claim: &ClaimRef) -> BoxFuture<'_, Result<Option<ClaimObject>, ApiError>> {
        let api = self.api(&claim.namespace);
        let name = claim.name.clone();
        Box::pin(async move {
            match api.get_opt(&name).await? {
                None => Ok(None),
                Some(object) => Ok(Some(ClaimObject::from_value(
                    &object.data,
                    object.metadata.uid,
                    object.metadata.resource_version,
                ))),
            }
        })
    }

    fn cached(&self, claim: &ClaimRef) -> Option<ClaimObject> {
        let object = self.cache.get()?.get(&claim.namespace, &claim.name)?;
        Some(ClaimObject::from_claim(&object))
    }

    fn reserves(&self, claim: &ClaimRef, pod_uid: &str) -> Option<bool> {
        self.cache.get()?.reserves(claim, pod_uid)
    }

    fn patch_status(&self, claim: &ClaimRef, field_manager: &str, body: Value) -> BoxFuture<'_, Result<(), ApiError>> {
        let api = self.api(&claim.namespace);
        let name = claim.name.clone();
        let params = PatchParams {
            field_manager: Some(field_manager.to_owned()),
            ..PatchParams::default()
        };
        Box::pin(async move {
            api.patch_status(&name, &params, &Patch::Merge(&body)).await?;
            Ok(())
        })
    }
}

impl<T: ClaimApi> ClaimApi for Arc<T> {
    fn get(&self, claim: &ClaimRef) -> BoxFuture<'_, Result<Option<ClaimObject>, ApiError>> {
        (**self).get(claim)
    }
    fn cached(&self, claim: &ClaimRef) -> Option<ClaimObject> {
        (**self).cached(claim)
    }
    fn reserves(&self, claim: &ClaimRef, pod_uid: &str) -> Option<bool> {
        (**self).reserves(claim, pod_uid)
    }
    fn patch_status(&self, claim: &ClaimRef, field_manager: &str, body: Value) -> BoxFuture<'_, Result<(), ApiError>> {
        (**self).patch_status(claim, field_manager, body)
    }
}

/// An API server in memory, for the framework's unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use std::collections::{BTreeMap, VecDeque};

    use parking_lot::Mutex;

    use super::*;

    /// Claims by (namespace, name), answers scripted per request kind.
    #[derive(Default)]
    pub(crate) struct FakeApi {
        pub claims: Mutex<BTreeMap<(String, String), ClaimObject>>,
        /// Failures the next patches answer, in order.
        pub patch_failures: Mutex<VecDeque<ApiError>>,
        /// Failures the next GETs answer, in order.
        pub get_failures: Mutex<VecDeque<ApiError>>,
        /// Every patch body received, successful or not.
        pub patches: Mutex<Vec<Value>>,
        /// GETs received.
        pub gets: Mutex<usize>,
        /// Whether cached reads find the claims (a watch cache) or not (`get-only`).
        pub watch_cache: std::sync::atomic::AtomicBool,
    }

    impl FakeApi {
        /// A claim the server holds, reserved for `consumers`.
        pub(crate) fn put(&self, claim: &ClaimRef, consumers: &[(&str, &str)]) {
            let mut claims = self.claims.lock();
            let entry = claims
                .entry((claim.namespace.clone(), claim.name.clone()))
                .or_insert_with(|| ClaimObject {
                    uid: Some(claim.uid.clone()),
                    resource_version: Some("1".into()),
                    ..ClaimObject::default()
                });
            entry.consumers = consumers
                .iter()
                .map(|(name, uid)| Consumer {
                    name: (*name).into(),
                    uid: (*uid).into(),
                })
                .collect();
        }

        /// This claim's `status.devices` on the server.
        pub(crate) fn devices(&self, claim: &ClaimRef) -> Vec<Value> {
            self.claims
                .lock()
                .get(&(claim.namespace.clone(), claim.name.clone()))
                .map(|c| c.devices.clone())
                .unwrap_or_default()
        }
    }

    impl ClaimApi for FakeApi {
        fn get(&self, claim: &ClaimRef) -> BoxFuture<'_, Result<Option<ClaimObject>, ApiError>> {
            *self.gets.lock() += 1;
            if let Some(failure) = self.get_failures.lock().pop_front() {
                return Box::pin(async move { Err(failure) });
            }
            let found = self
                .claims
                .lock()
                .get(&(claim.namespace.clone(), claim.name.clone()))
                .cloned();
            Box::pin(async move { Ok(found) })
        }

        fn cached(&self, claim: &ClaimRef) -> Option<ClaimObject> {
            if !self.watch_cache.load(std::sync::atomic::Ordering::SeqCst) {
                return None;
            }
            self.claims
                .lock()
                .get(&(claim.namespace.clone(), claim.name.clone()))
                .cloned()
        }

        fn patch_status(&self, claim: &ClaimRef, _: &str, body: Value) -> BoxFuture<'_, Result<(), ApiError>> {
            self.patches.lock().push(body.clone());
            let result = match self.patch_failures.lock().pop_front() {
                Some(failure) => Err(failure),
                None => {
                    let mut claims = self.claims.lock();
                    match claims.get_mut(&(claim.namespace.clone(), claim.name.clone())) {
                        None => Err(ApiError::Status {
                            code: 404,
                            message: "not found".into(),
                        }),
                        Some(object) => {
                            let precondition = body.pointer("/metadata/resourceVersion").and_then(Value::as_str);
                            if precondition != object.resource_version.as_deref() {
                                Err(ApiError::Status {
                                    code: 409,
                                    message: "the object has been modified".into(),
                                })
                            } else {
                                object.devices = body
                                    .pointer("/status/devices")
                                    .and_then(Value::as_array)
                                    .cloned()
                                    .unwrap_or_default();
                                let version: u64 =
                                    object.resource_version.as_deref().unwrap_or("0").parse().unwrap_or(0);
                                object.resource_version = Some((version + 1).to_string());
                                Ok(())
                            }
                        }
                    }
                }
            };
            Box::pin(async move { result })
        }
    }
}
