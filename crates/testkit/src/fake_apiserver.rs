//! The HTTP shell around [`Store`]: routes, watch streams, the request log and fault injection.

use parking_lot::Mutex;
use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::broadcast, task::JoinHandle};
use tokio_stream::wrappers::BroadcastStream;

use crate::{
    path::{self, Target},
    resources::ResourceType,
    store::{ApiError, Event, PatchKind, Selectors, Store, event_matches},
};

/// One request as the fake API server received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// Request path without the query.
    pub path: String,
    /// Raw query string (empty when absent).
    pub query: String,
    /// Whether this was a watch request.
    pub watch: bool,
}

/// A failure the server answers instead of serving matching requests, a given number of times.
#[derive(Debug, Clone)]
pub struct InjectedFailure {
    /// Only requests with this method match.
    pub method: Method,
    /// Only requests whose path contains this string match.
    pub path_contains: String,
    /// HTTP status to answer, e.g. 409 or 500.
    pub code: u16,
    /// How many matching requests fail before the failure is used up.
    pub times: usize,
}

struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Event>,
    requests: Mutex<Vec<RecordedRequest>>,
    failures: Mutex<Vec<InjectedFailure>>,
    /// Response body bytes sent, watch streams included: what clients received.
    bytes_sent: AtomicU64,
    /// Bumped to end every open watch stream.
    watch_ends: tokio::sync::watch::Sender<u64>,
}

/// An in-process Kubernetes API server on a loopback port. Dropping it stops the server.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApiServer {
    /// Starts the server on `127.0.0.1` with an OS-chosen port.
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events: broadcast::channel(16 * 1024).0,
            requests: Mutex::default(),
            failures: Mutex::default(),
            bytes_sent: AtomicU64::new(0),
            watch_ends: tokio::sync::watch::Sender::new(0),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "fake API server stopped");
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Base URL, e.g. `http://127.0.0.1:43121`, for `kube::Config::new`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` talking to this server.
    ///
    /// # Panics
    /// Never in practice: the URL is always a valid `http://` URI.
    pub fn client(&self) -> kube::Client {
        let url = self.url().parse().expect("the server's URL is a valid URI");
        kube::Client::try_from(kube::Config::new(url)).expect("a plain-HTTP client needs no TLS setup")
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().clone()
    }

    /// Number of requests with `method` whose path contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Number of writes (POST, PUT, PATCH, DELETE) so far.
    pub fn write_count(&self) -> usize {
        self.shared
            .requests
            .lock()
            .iter()
            .filter(|r| matches!(r.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
            .count()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared.requests.lock().clear();
    }

    /// Response body bytes sent so far, watch streams included.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.bytes_sent.load(Ordering::Relaxed)
    }

    /// Forgets the event history up to now, as etcd's compaction does: a watch resuming from
    /// an older resourceVersion gets `410 Expired` and must list again.
    pub fn compact(&self) {
        self.shared.store.lock().compact();
    }

    /// Ends every open watch stream, as a server restart or a watch timeout does: the clients
    /// resume from the last resourceVersion they saw.
    pub fn end_watches(&self) {
        self.shared.watch_ends.send_modify(|n| *n += 1);
    }

    /// Makes matching requests fail; see [`InjectedFailure`].
    pub fn inject_failure(&self, failure: InjectedFailure) {
        self.shared.failures.lock().push(failure);
    }

    /// Stores an object directly, as if a controller had written it: unlike an HTTP create, its
    /// status and a given `metadata.uid` are kept. Watchers see an `ADDED` event. Returns the
    /// stored object (with resourceVersion). Panics if the object already exists.
    pub fn seed(&self, resource: &ResourceType, namespace: &str, object: Value) -> Value {
        self.write(|s| s.create(resource, namespace, object, true))
            .expect("seeded object already exists or is not a JSON object")
    }

    /// Replaces an object's status directly (as the scheduler or another controller would).
    pub fn set_status(&self, resource: &ResourceType, namespace: &str, name: &str, status: Value) -> Option<Value> {
        let object = json!({"status": status});
        self.write(|s| s.update(resource, namespace, name, object, true)).ok()
    }

    /// Deletes an object directly (watchers see `DELETED`); `None` if it did not exist.
    pub fn remove(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.write(|s| s.delete(resource, namespace, name)).ok()
    }

    /// The stored object, if any.
    pub fn object(&self, resource: &ResourceType, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store.lock().get(resource, namespace, name).ok()
    }

    /// All stored objects of a type.
    pub fn objects(&self, resource: &ResourceType) -> Vec<Value> {
        self.shared.store.lock().list(resource, None, &Selectors::default())
    }

    fn write(&self, op: impl FnOnce(&mut Store) -> Result<(Value, Event), ApiError>) -> Result<Value, ApiError> {
        write(&self.shared, op)
    }
}

/// Runs a store write and publishes its event while the store is still locked, so watchers
/// never see events out of order or miss one between their replay and their subscription.
fn write(shared: &Shared, op: impl FnOnce(&mut Store) -> Result<(Value, Event), ApiError>) -> Result<Value, ApiError> {
    let mut store = shared.store.lock();
    let (object, event) = op(&mut store)?;
    let _ = shared.events.send(event);
    Ok(object)
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error_response(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.to_status())
}

fn take_injected_failure(shared: &Shared, method: &Method, path: &str) -> Option<u16> {
    let mut failures = shared.failures.lock();
    let f = failures
        .iter_mut()
        .find(|f| f.times > 0 && f.method == method && path.contains(&f.path_contains))?;
    f.times -= 1;
    Some(f.code)
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let response = respond(&shared, method, uri, query, headers, body);
    // A watch stream counts its lines as it sends them; every other body has a known length.
    if let Some(length) = axum::body::HttpBody::size_hint(response.body()).exact() {
        shared.bytes_sent.fetch_add(length, Ordering::Relaxed);
    }
    response
}

fn respond(
    shared: &Arc<Shared>,
    method: Method,
    uri: Uri,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    shared.requests.lock().push(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        watch,
    });
    if let Some(code) = take_injected_failure(shared, &method, uri.path()) {
        let e = ApiError {
            code,
            reason: if code == 409 { "Conflict" } else { "InternalError" },
            message: format!("injected failure for {method} {}", uri.path()),
        };
        return error_response(&e);
    }
    let Some(target) = path::parse(uri.path()) else {
        let e = ApiError {
            code: 404,
            reason: "NotFound",
            message: format!("the server could not find the requested resource ({})", uri.path()),
        };
        return error_response(&e);
    };
    let namespace = target.namespace.clone().unwrap_or_default();
    let body_json =
        || serde_json::from_slice::<Value>(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")));
    let result = match (&method, target.name.as_deref()) {
        (&Method::GET, None) if watch => return watch_response(shared, &target, &query),
        (&Method::GET, None) => Ok(list(shared, &target, &query)),
        (&Method::GET, Some(name)) => shared.store.lock().get(&target.resource, &namespace, name),
        (&Method::POST, None) => {
            body_json().and_then(|b| write(shared, |s| s.create(&target.resource, &namespace, b, false)))
        }
        (&Method::PUT, Some(name)) => body_json().and_then(|b| {
            write(shared, |s| {
                s.update(&target.resource, &namespace, name, b, target.status)
            })
        }),
        (&Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let kind = match content_type {
                "application/apply-patch+yaml" => Ok(PatchKind::Apply),
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => Ok(PatchKind::Merge),
                other => Err(ApiError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!("the fake API server does not support patch type {other:?}"),
                }),
            };
            kind.and_then(|k| {
                body_json().and_then(|b| {
                    write(shared, |s| {
                        let manager = query.get("fieldManager").map(String::as_str);
                        s.patch(&target.resource, &namespace, name, b, k, target.status, manager)
                    })
                })
            })
        }
        (&Method::DELETE, Some(name)) => write(shared, |s| s.delete(&target.resource, &namespace, name)),
        _ => Err(ApiError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!("{method} is not supported on {}", uri.path()),
        }),
    };
    match result {
        Ok(v) => {
            let code = if method == Method::POST {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            json_response(code, &v)
        }
        Err(e) => error_response(&e),
    }
}

fn selectors(query: &HashMap<String, String>) -> Selectors {
    Selectors::parse(
        query.get("labelSelector").map(String::as_str),
        query.get("fieldSelector").map(String::as_str),
    )
}

fn list(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Value {
    let store = shared.store.lock();
    let items = store.list(&target.resource, target.namespace.as_deref(), &selectors(query));
    json!({
        "apiVersion": target.resource.api_version(),
        "kind": format!("{}List", target.resource.kind),
        "metadata": {"resourceVersion": store.revision().to_string()},
        "items": items,
    })
}

/// A watch stream: newline-delimited JSON events. Replays history after the requested
/// resourceVersion (or the current objects as `ADDED` when none is given), then streams live
/// events until `timeoutSeconds`.
fn watch_response(shared: &Arc<Shared>, target: &Target, query: &HashMap<String, String>) -> Response {
    let selectors = selectors(query);
    let since = query
        .get("resourceVersion")
        .and_then(|rv| rv.parse::<u64>().ok())
        .unwrap_or(0);
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let (replay, live) = {
        let store = shared.store.lock();
        let replay: Vec<String> = if since == 0 {
            store
                .list(&target.resource, target.namespace.as_deref(), &selectors)
                .into_iter()
                .map(|object| json!({"type": "ADDED", "object": object}).to_string() + "\n")
                .collect()
        } else {
            match store.events_since(&target.resource, target.namespace.as_deref(), &selectors, since) {
                Ok(events) => events.iter().map(Event::to_json_line).collect(),
                // The real server answers 200 and one ERROR event carrying the 410 status.
                Err(expired) => {
                    let line = json!({"type": "ERROR", "object": expired.to_status()}).to_string() + "\n";
                    shared.bytes_sent.fetch_add(line.len() as u64, Ordering::Relaxed);
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from_stream(stream::iter([Ok::<_, Infallible>(Bytes::from(
                            line,
                        ))])))
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
            }
        };
        (replay, shared.events.subscribe())
    };
    let (resource, namespace) = (target.resource, target.namespace.clone());
    let live = BroadcastStream::new(live)
        // A lagging watcher ends its stream; the client re-lists, as with a real server.
        .take_while(|r| futures::future::ready(r.is_ok()))
        .filter_map(move |r| {
            let line = r
                .ok()
                .filter(|e| event_matches(e, &resource, namespace.as_deref(), &selectors))
                .map(|e| e.to_json_line());
            futures::future::ready(line)
        });
    let counter = shared.clone();
    let mut ends = shared.watch_ends.subscribe();
    let ended = async move {
        let _ = ends.changed().await;
    };
    let lines = stream::iter(replay)
        .chain(live)
        .take_until(tokio::time::sleep(Duration::from_secs(timeout)))
        .take_until(ended)
        .map(move |line| {
            counter.bytes_sent.fetch_add(line.len() as u64, Ordering::Relaxed);
            Ok::<_, Infallible>(Bytes::from(line))
        });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
