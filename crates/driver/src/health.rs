//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (registered with
//! the kubelet, connected to the runtime, slices published) on one small HTTP server.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, http::header, response::IntoResponse, routing::get};
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, task::JoinHandle};

/// What `/readyz` asks.
pub type ReadinessProbe = Arc<dyn Fn() -> netdra::Readiness + Send + Sync>;

struct Shared {
    registry: Registry,
    readiness: ReadinessProbe,
}

/// The running server; dropping it stops it.
pub struct HealthServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves the three endpoints.
pub async fn serve(addr: SocketAddr, registry: Registry, readiness: ReadinessProbe) -> std::io::Result<HealthServer> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared { registry, readiness });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics and health server stopped");
        }
    });
    Ok(HealthServer { addr, task })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding the metrics failed: {e}\n"),
        ),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let r = (shared.readiness)();
    let body = format!(
        "registered: {}\nnri_connected: {}\nslices_published: {}\n",
        r.registered, r.nri_connected, r.slices_published
    );
    let code = if r.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}
