//! The read-only HTTP server: `/metrics`, `/healthz` and the JSON API.
//!
//! Handlers read the latest [`Snapshot`] from a watch channel; none of them touches the hardware
//! or blocks on the sampler. [`serve`] takes a bound listener, so tests can bind port 0.

use std::sync::Arc;
use std::time::Duration;

use gpucost_core::clock::Clock;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::metrics;
use crate::snapshot::Snapshot;

/// The last `/metrics` text and the snapshot it was rendered from.
type RenderCache = Arc<std::sync::Mutex<Option<(Arc<Snapshot>, Bytes)>>>;

#[derive(Clone)]
struct AppState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// A last finished cycle older than this means the node thread is stuck: `/healthz` answers
    /// 503.
    stale_after: Duration,
    /// For the age of the last sample.
    clock: Arc<dyn Clock>,
    /// The last rendered `/metrics` and the snapshot it was rendered from: scrapes between two
    /// samples (several Prometheus servers, dashboards hitting the agent) share one rendering.
    rendered: RenderCache,
    /// Keeps each job's encoded series between renderings.
    renderer: Arc<std::sync::Mutex<metrics::Renderer>>,
}

impl AppState {
    fn latest(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

pub fn router(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stale_after: Duration,
    clock: Arc<dyn Clock>,
) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route("/api/v1/gpus", get(get_gpus))
        .route("/api/v1/gpus/{index}", get(get_gpu))
        .route("/api/v1/jobs", get(get_jobs))
        .route("/api/v1/jobs/{id}", get(get_job))
        .fallback(not_found)
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "this port is read-only; changes go through the agent's unix socket",
            )
        })
        .with_state(AppState {
            snapshots,
            stale_after,
            clock,
            rendered: Arc::default(),
            renderer: Arc::default(),
        })
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stale_after: Duration,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(snapshots, stale_after, clock))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn get_metrics(State(app): State<AppState>) -> Response {
    let snap = app.latest();
    // Before the first sample there is nothing true to say (totals are still being loaded from
    // the ledger): a scrape fails rather than show counters at zero.
    if snap.taken_at.is_none() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet");
    }
    let cached = {
        let guard = app.rendered.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .filter(|(s, _)| Arc::ptr_eq(s, &snap))
            .map(|(_, text)| text.clone())
    };
    let text = match cached {
        Some(t) => t,
        None => {
            let t = app
                .renderer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .render(&snap);
            *app.rendered.lock().unwrap_or_else(|e| e.into_inner()) = Some((snap, t.clone()));
            t
        }
    };
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// Liveness is the node thread's own heartbeat: the time of its last finished sampling cycle.
/// A GPU that is stuck, lost or failing does not hold it back (each GPU's read has a deadline),
/// and restarting the agent would not bring such a GPU back, so those are listed in
/// `stale_gpus` and never make this fail; nor does a GPU library that is missing, failing or
/// released on request (`nvml_up`, `nvml_paused`).
async fn get_healthz(State(app): State<AppState>) -> Response {
    let snap = app.latest();
    let now = app.clock.mono();
    let age = snap.age(now);
    let alive = snap.fresh(now, app.stale_after);
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let stale_gpus: Vec<_> = snap
        .stale_gpus()
        .map(|g| {
            json!({
                "gpu": g.info.index,
                "uuid": g.info.uuid,
                "reason": g.health.down_reason,
                "last_reading_age_seconds": g
                    .health
                    .last_reading_at
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
        })
        .collect();
    let body = json!({
        "status": if alive { "ok" } else { "the node thread has stalled or not started" },
        "last_sample_age_seconds": age.map(|a| a.as_secs_f64()),
        "nvml_up": snap.backend_up,
        "nvml_error": snap.backend_error,
        "nvml_paused": snap.backend_paused,
        "ledger_up": snap.ledger_error.is_none(),
        "ledger_error": snap.ledger_error,
        "source": snap.source,
        "simulated": snap.simulated,
        "gpus": snap.gpus.len(),
        "stale_gpus": stale_gpus,
    });
    (status, Json(body)).into_response()
}

async fn get_gpus(State(app): State<AppState>) -> Response {
    let snap = app.latest();
    let gpus: Vec<_> = snap
        .gpus
        .iter()
        .map(|g| g.view(snap.source, &snap.published))
        .collect();
    Json(json!({ "simulated": snap.simulated, "gpus": gpus })).into_response()
}

async fn get_gpu(
    State(app): State<AppState>,
    index: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(index)) = index else {
        return error(StatusCode::BAD_REQUEST, "the GPU index is not valid UTF-8");
    };
    let snap = app.latest();
    match index
        .parse::<u32>()
        .ok()
        .and_then(|i| snap.gpus.iter().find(|g| g.info.index == i))
    {
        Some(g) => Json(g.view(snap.source, &snap.published)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no GPU with index {index:?}"),
        ),
    }
}

/// A job as `/api/v1/jobs` shows it: its record with the cost totals and rates derived from it.
pub fn job_json(j: &gpucost_core::jobs::JobRecord, currency: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(j).unwrap_or_default();
    v["cost_total"] = json!(j.usage.total_cost());
    v["wasted_cost"] = json!(j.wasted_cost());
    if let Some(tokens) = j.progress.as_ref().map(|p| p.tokens).filter(|t| *t > 0) {
        v["cost_per_million_tokens"] = json!(j.usage.total_cost() / tokens as f64 * 1e6);
        v["joules_per_token"] = json!(j.usage.energy_j / tokens as f64);
    }
    v["currency"] = json!(currency);
    v
}

async fn get_jobs(State(app): State<AppState>) -> Response {
    let snap = app.latest();
    let jobs: Vec<_> = snap
        .published
        .jobs
        .iter()
        .map(|j| job_json(j, &snap.currency))
        .collect();
    Json(json!({ "simulated": snap.simulated, "currency": snap.currency, "jobs": jobs }))
        .into_response()
}

async fn get_job(State(app): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::BAD_REQUEST, "the job id is not valid UTF-8");
    };
    let snap = app.latest();
    match snap.published.jobs.iter().find(|j| j.id == id) {
        Some(j) => Json(job_json(j, &snap.currency)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no job {id:?} on this node's metrics (finished jobs past their grace period are in the ledger: gpucost report --job)"),
        ),
    }
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
