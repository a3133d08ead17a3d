//! The read-only HTTP server: `/metrics`, `/healthz` and the JSON API.
//!
//! Handlers read the latest [`Snapshot`] from a watch channel; none of them touches the hardware
//! or blocks on the sampler. [`serve`] takes a bound listener, so tests can bind port 0; the
//! connections themselves (cap, timeouts) are `server.rs`'s.
//!
//! The two answers that grow with the number of jobs, `/metrics` and `/api/v1/jobs`, are each
//! rendered once per snapshot, on a blocking thread, by the first request that wants them, while
//! other requests for that snapshot wait for the same rendering; at most [`RENDERS`] renderings
//! run at once, and a request that cannot start one within [`RENDER_WAIT`] is answered 503
//! "busy". A rendering is shared by every response that sends it, never copied per request.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use gpucost_core::clock::Clock;
use gpucost_core::config::HttpConfig;
use gpucost_core::jobs::JobRecord;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::{BufMut, Bytes};
use hyper::body::{Frame, SizeHint};
use serde::{Serialize, Serializer};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, OnceCell, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::buffers::Outputs;
use super::metrics::{self, HttpStats};
use super::server;
use crate::snapshot::Snapshot;

/// Renderings that may run at once. Each holds up to a few times its output in memory (tens of
/// MB on a node with many jobs, issue 13), so a burst of requests must not start one each.
const RENDERS: usize = 2;

/// How long a request waits to start a rendering before it is answered 503 "busy".
const RENDER_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct AppState {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// A last finished cycle older than this means the node thread is stuck: `/healthz` answers
    /// 503.
    stale_after: Duration,
    /// For the age of the last sample.
    clock: Arc<dyn Clock>,
    /// Leave users, uids, pids and labels out of the JSON API (`http.hide_identities`).
    hide_identities: bool,
    renders: Arc<Renders>,
    /// The connections' counts, for `/metrics`.
    server: Arc<server::Stats>,
}

impl AppState {
    fn latest(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }
}

/// The large renderings of the latest snapshot, and what limits them.
struct Renders {
    permits: Arc<Semaphore>,
    /// How long a request waits for a permit: [`RENDER_WAIT`].
    wait: Duration,
    /// `/metrics` without the HTTP server's own series, which are rendered per request.
    metrics: Latest,
    /// Keeps each job's encoded series between renderings.
    renderer: Arc<std::sync::Mutex<metrics::Renderer>>,
    /// `/api/v1/jobs`.
    jobs: Latest,
    /// The job list's last outputs, written again once released.
    jobs_out: Arc<std::sync::Mutex<Outputs>>,
    /// Requests answered 503 "busy", by [`BUSY_PATHS`].
    busy: [AtomicU64; 2],
}

/// The paths whose renderings are bounded, in the order of [`Renders::busy`].
const BUSY_PATHS: [&str; 2] = ["/metrics", "/api/v1/jobs"];
const METRICS: usize = 0;
const JOBS: usize = 1;

/// The rendering of one kind for the latest snapshot that any request asked for.
struct Latest {
    /// Whether two snapshots render the same.
    same: fn(&Snapshot, &Snapshot) -> bool,
    latest: std::sync::Mutex<Option<Arc<Rendering>>>,
}

struct Rendering {
    snap: Arc<Snapshot>,
    text: OnceCell<Bytes>,
}

/// No rendering could start within [`RENDER_WAIT`] (or, a bug, one panicked).
struct Busy;

impl Latest {
    fn new(same: fn(&Snapshot, &Snapshot) -> bool) -> Latest {
        Latest {
            same,
            latest: std::sync::Mutex::default(),
        }
    }

    /// The latest snapshot's rendering: the one already made (for it, or for an earlier
    /// snapshot that renders the same), or the one another request is making, or one made now
    /// by `render` on a blocking thread once a permit is free; with the snapshot rendered.
    async fn get(
        &self,
        app: &AppState,
        render: impl FnOnce(&Snapshot) -> Bytes + Send + 'static,
    ) -> Result<(Arc<Snapshot>, Bytes), Busy> {
        let rendering = {
            let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
            // Read under the lock, so that the cached snapshot only ever moves forward.
            let snap = app.latest();
            match latest.as_ref() {
                Some(r) if (self.same)(&r.snap, &snap) => r.clone(),
                _ => {
                    let r = Arc::new(Rendering {
                        snap,
                        text: OnceCell::new(),
                    });
                    *latest = Some(r.clone());
                    r
                }
            }
        };
        let text = rendering
            .text
            .get_or_try_init(|| async {
                let permits = app.renders.permits.clone();
                let permit = tokio::time::timeout(app.renders.wait, permits.acquire_owned())
                    .await
                    .map_err(|_| Busy)?
                    .expect("the semaphore is never closed");
                let snap = rendering.snap.clone();
                // The permit goes with the rendering: a request that gives up waiting for it
                // does not free a permit while the rendering still runs.
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    render(&snap)
                })
                .await
                .map_err(|e| {
                    error!("a rendering failed: {e}");
                    Busy
                })
            })
            .await?;
        Ok((rendering.snap.clone(), text.clone()))
    }
}

/// A response body sent as a few shared buffers one after another: a cached rendering of
/// megabytes goes out to each client without a copy.
struct Chunks(VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

pub fn router(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stale_after: Duration,
    clock: Arc<dyn Clock>,
    http: &HttpConfig,
    server: Arc<server::Stats>,
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
        .with_state(AppState::new(snapshots, stale_after, clock, http, server))
}

impl AppState {
    fn new(
        snapshots: watch::Receiver<Arc<Snapshot>>,
        stale_after: Duration,
        clock: Arc<dyn Clock>,
        http: &HttpConfig,
        server: Arc<server::Stats>,
    ) -> AppState {
        AppState {
            snapshots,
            stale_after,
            clock,
            hide_identities: http.hide_identities,
            renders: Arc::new(Renders {
                permits: Arc::new(Semaphore::new(RENDERS)),
                wait: RENDER_WAIT,
                metrics: Latest::new(|a, b| std::ptr::eq(a, b)),
                renderer: Arc::default(),
                // The node publishes a new job list only when it has persisted (every
                // ledger.persist_interval), not with every sample.
                jobs: Latest::new(|a, b| {
                    Arc::ptr_eq(&a.published.jobs, &b.published.jobs)
                        && a.currency == b.currency
                        && a.simulated == b.simulated
                }),
                jobs_out: Arc::default(),
                busy: Default::default(),
            }),
            server,
        }
    }
}

/// Serves until `shutdown` is cancelled, then finishes in-flight requests and returns.
pub async fn serve(
    listener: TcpListener,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    stale_after: Duration,
    clock: Arc<dyn Clock>,
    http: HttpConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let stats = Arc::new(server::Stats::default());
    let app = router(snapshots, stale_after, clock, &http, stats.clone());
    server::serve(listener, app, http, stats, shutdown).await
}

/// 503: no rendering could start in time.
fn busy(app: &AppState, path: usize) -> Response {
    app.renders.busy[path].fetch_add(1, Ordering::Relaxed);
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the agent is busy rendering for other requests; try again in a few seconds",
    )
}

async fn get_metrics(State(app): State<AppState>) -> Response {
    // Before the first sample there is nothing true to say (totals are still being loaded from
    // the ledger): a scrape fails rather than show counters at zero.
    if app.latest().taken_at.is_none() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting: no sample yet");
    }
    let renderer = app.renders.renderer.clone();
    let render = move |snap: &Snapshot| {
        renderer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .render(snap)
    };
    let Ok((snap, text)) = app.renders.metrics.get(&app, render).await else {
        return busy(&app, METRICS);
    };
    let stats = HttpStats {
        connections: app.server.open(),
        closed: app.server.closed(),
        accept_errors: app.server.accept_errors(),
        busy: BUSY_PATHS
            .iter()
            .zip(&app.renders.busy)
            .map(|(p, n)| (*p, n.load(Ordering::Relaxed)))
            .collect(),
    };
    let own = Bytes::from(metrics::render_http(&stats, snap.simulated.is_some()));
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        Body::new(Chunks(VecDeque::from([text, own]))),
    )
        .into_response()
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
    let gpus: Vec<_> = snap.gpus.iter().map(|g| gpu_json(&app, &snap, g)).collect();
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
        Some(g) if app.hide_identities => Json(gpu_json(&app, &snap, g)).into_response(),
        Some(g) => Json(g.view(snap.source, &snap.published)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("no GPU with index {index:?}"),
        ),
    }
}

/// A GPU as the API's list shows it (as a JSON value, as it always was there); with
/// `hide_identities`, its processes without their pids.
fn gpu_json(
    app: &AppState,
    snap: &Snapshot,
    g: &crate::snapshot::GpuSnapshot,
) -> serde_json::Value {
    let mut v = serde_json::to_value(g.view(snap.source, &snap.published)).unwrap_or_default();
    if app.hide_identities {
        for p in v["processes"].as_array_mut().into_iter().flatten() {
            if let Some(p) = p.as_object_mut() {
                p.remove("pid");
            }
        }
    }
    v
}

/// A job as `/api/v1/jobs` shows it: its record with the cost totals and rates derived from it.
pub fn job_json(j: &JobRecord, currency: &str) -> serde_json::Value {
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

/// [`job_json`], without who runs the job when `hide`: no user, uid, labels, or the pid it was
/// registered with (its GPUs stay).
fn job_view(j: &JobRecord, currency: &str, hide: bool) -> serde_json::Value {
    let mut v = job_json(j, currency);
    if let (true, Some(fields)) = (hide, v.as_object_mut()) {
        for key in ["user", "uid", "labels"] {
            fields.remove(key);
        }
        if let Some(reg) = fields
            .get_mut("registration")
            .and_then(|r| r.as_object_mut())
        {
            reg.remove("pid");
        }
    }
    v
}

/// `/api/v1/jobs` of a snapshot, written one job at a time into a recycled buffer: the list
/// never exists as a JSON tree, only as its text. Keys in the order `json!` sorts them, as before.
fn render_jobs(snap: &Snapshot, hide: bool, outputs: &mut Outputs) -> Bytes {
    #[derive(Serialize)]
    struct List<'a> {
        currency: &'a str,
        jobs: Jobs<'a>,
        simulated: &'a Option<String>,
    }
    struct Jobs<'a> {
        jobs: &'a [Arc<JobRecord>],
        currency: &'a str,
        hide: bool,
    }
    impl Serialize for Jobs<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.collect_seq(
                self.jobs
                    .iter()
                    .map(|j| job_view(j, self.currency, self.hide)),
            )
        }
    }
    let list = List {
        currency: &snap.currency,
        jobs: Jobs {
            jobs: &snap.published.jobs,
            currency: &snap.currency,
            hide,
        },
        simulated: &snap.simulated,
    };
    let mut out = outputs.buffer().writer();
    serde_json::to_writer(&mut out, &list).expect("plain data serializes");
    outputs.keep(out.into_inner())
}

async fn get_jobs(State(app): State<AppState>) -> Response {
    let (hide, outputs) = (app.hide_identities, app.renders.jobs_out.clone());
    let render = move |snap: &Snapshot| {
        render_jobs(
            snap,
            hide,
            &mut outputs.lock().unwrap_or_else(|e| e.into_inner()),
        )
    };
    match app.renders.jobs.get(&app, render).await {
        Ok((_, text)) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(Busy) => busy(&app, JOBS),
    }
}

async fn get_job(State(app): State<AppState>, id: Result<Path<String>, PathRejection>) -> Response {
    let Ok(Path(id)) = id else {
        return error(StatusCode::BAD_REQUEST, "the job id is not valid UTF-8");
    };
    let snap = app.latest();
    match snap.published.jobs.iter().find(|j| j.id == id) {
        Some(j) => Json(job_view(j, &snap.currency, app.hide_identities)).into_response(),
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::snapshot::Published;
    use gpucost_core::clock::SystemClock;
    use gpucost_core::jobs::{Outcome, Registered, Scheduler, Usage};
    use gpucost_core::reading::Source;

    fn job(i: usize) -> JobRecord {
        JobRecord {
            id: format!("job-{i}"),
            name: format!("n{i}"),
            user: "alice".into(),
            uid: Some(1001),
            scheduler: Scheduler::Gpucost,
            labels: BTreeMap::from([("team".to_string(), format!("t{i}"))]),
            started_at: 1.0,
            ended_at: None,
            outcome: Outcome::Running,
            exit_code: None,
            signal: None,
            reason: None,
            usage: Usage {
                gpu_seconds: i as f64,
                ..Usage::default()
            },
            per_gpu: BTreeMap::new(),
            registration: Some(Registered {
                pid: Some(4000 + i as u32),
                gpus: vec!["0".into()],
                by_root: false,
            }),
            progress: None,
        }
    }

    fn snapshot(n: usize) -> Snapshot {
        let mut s = Snapshot::empty(Source::Simulated, Some("test".into()));
        s.currency = "EUR".into();
        s.published = Published {
            jobs: Arc::new((0..n).map(|i| Arc::new(job(i))).collect()),
            ..Published::default()
        };
        s
    }

    fn app(snap: Snapshot) -> (AppState, watch::Sender<Arc<Snapshot>>) {
        let (tx, rx) = watch::channel(Arc::new(snap));
        let http = HttpConfig {
            max_connections: 1,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            hide_identities: false,
        };
        let app = AppState::new(
            rx,
            Duration::from_secs(1),
            Arc::new(SystemClock),
            &http,
            Arc::default(),
        );
        (app, tx)
    }

    /// The job list written one job at a time is the text the whole-list JSON tree gave.
    #[test]
    fn the_job_list_is_the_text_it_was() {
        let snap = snapshot(3);
        let jobs: Vec<_> = snap
            .published
            .jobs
            .iter()
            .map(|j| job_json(j, &snap.currency))
            .collect();
        let before = serde_json::to_vec(
            &json!({ "simulated": snap.simulated, "currency": snap.currency, "jobs": jobs }),
        )
        .unwrap();
        let mut outputs = Outputs::default();
        assert_eq!(render_jobs(&snap, false, &mut outputs), before);
        assert_eq!(
            render_jobs(&snapshot(0), false, &mut outputs).as_ref(),
            br#"{"currency":"EUR","jobs":[],"simulated":"test"}"#
        );
    }

    #[test]
    fn hidden_identities_leave_user_uid_labels_and_pid_out() {
        let j = job(7);
        let shown = job_view(&j, "EUR", false);
        assert_eq!(shown["user"], "alice");
        assert_eq!(shown["registration"]["pid"], 4007);
        let hidden = job_view(&j, "EUR", true);
        for key in ["user", "uid", "labels"] {
            assert!(hidden.get(key).is_none(), "{key}: {hidden}");
        }
        assert!(hidden["registration"].get("pid").is_none(), "{hidden}");
        assert_eq!(hidden["registration"]["gpus"], json!(["0"]));
        // Everything else is as shown.
        let mut rest = shown.clone();
        for key in ["user", "uid", "labels"] {
            rest.as_object_mut().unwrap().remove(key);
        }
        rest["registration"].as_object_mut().unwrap().remove("pid");
        assert_eq!(rest, hidden);
    }

    /// Concurrent requests share one rendering of the job list; a later snapshot with the same
    /// published list shares it too, a new list is rendered again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_rendering_per_job_list() {
        let first = snapshot(2);
        let (app, tx) = app(first.clone());
        let made = Arc::new(AtomicUsize::new(0));
        let get = |app: AppState, made: Arc<AtomicUsize>| async move {
            let render = move |s: &Snapshot| {
                made.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
                render_jobs(s, false, &mut Outputs::default())
            };
            app.renders.jobs.get(&app, render).await.ok().unwrap().1
        };
        let texts: Vec<Bytes> =
            join_all((0..8).map(|_| tokio::spawn(get(app.clone(), made.clone())))).await;
        assert_eq!(made.load(Ordering::Relaxed), 1);
        assert!(
            texts.iter().all(|t| t.as_ptr() == texts[0].as_ptr()),
            "one buffer, shared"
        );
        // The next sample, the same published jobs.
        let mut next = first.clone();
        next.samples_total += 1;
        tx.send(Arc::new(next)).unwrap();
        assert_eq!(
            get(app.clone(), made.clone()).await.as_ptr(),
            texts[0].as_ptr()
        );
        assert_eq!(made.load(Ordering::Relaxed), 1);
        tx.send(Arc::new(snapshot(3))).unwrap();
        let newer = get(app.clone(), made.clone()).await;
        assert_eq!(made.load(Ordering::Relaxed), 2);
        assert_ne!(newer, texts[0]);
    }

    /// With every permit taken, a request waits [`Renders::wait`] and is answered "busy"; once
    /// a permit is free, the rendering is made.
    #[tokio::test]
    async fn busy_when_no_rendering_can_start() {
        let (mut app, _tx) = app(snapshot(1));
        Arc::get_mut(&mut app.renders).unwrap().wait = Duration::from_millis(50);
        let held = app
            .renders
            .permits
            .clone()
            .acquire_many_owned(RENDERS as u32)
            .await
            .unwrap();
        let render = |s: &Snapshot| render_jobs(s, false, &mut Outputs::default());
        assert!(app.renders.jobs.get(&app, render).await.is_err());
        let answer = busy(&app, JOBS);
        assert_eq!(answer.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(app.renders.busy[JOBS].load(Ordering::Relaxed), 1);
        drop(held);
        assert!(app.renders.jobs.get(&app, render).await.is_ok());
    }

    async fn join_all<T>(handles: impl Iterator<Item = tokio::task::JoinHandle<T>>) -> Vec<T> {
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
