//! The unix-socket servers: the node's job socket (registrations, endings, progress) and the
//! pod socket (progress only, for the caller's own job).
//!
//! Every request carries its caller's uid and pid from SO_PEERCRED, not from anything the caller
//! says. Bodies are limited to [`MAX_BODY`] bytes; malformed requests get a 4xx with a JSON error
//! and change nothing.
//!
//! The pod socket ([`pods_router`]) is for callers whose uid means nothing on the node: training
//! pods, whose uids are whatever their images chose (and root in many). It takes one thing, a
//! progress report, and applies it to the job the agent itself finds the calling process in
//! (`Node`'s `job_of_process`), whatever job the path names; it registers, ends and relabels
//! nothing.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::IncomingStream;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::UnixListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::node::Message;
use gpucost_core::jobs::JobRecord;
use gpucost_core::tracker::{EndRequest, ProgressRequest, RegisterRequest, RequestError};

/// Largest accepted request body.
pub const MAX_BODY: usize = 64 * 1024;

/// Who is on the other end of a connection, as the kernel saw it connect.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: Option<u32>,
    /// In the agent's PID namespace (the kernel translates it), so a pod's process appears
    /// under its node pid when the agent runs in the node's namespace (`hostPID`).
    pub pid: Option<u32>,
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        let cred = stream.io().peer_cred().ok();
        Peer {
            uid: cred.map(|c| c.uid()),
            // 0: the caller is in a PID namespace the agent cannot see into.
            pid: cred
                .and_then(|c| c.pid())
                .and_then(|p| u32::try_from(p).ok())
                .filter(|p| *p != 0),
        }
    }
}

/// How long a caller waits for the node's answer; past it the node drops the request unanswered.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct AppState {
    /// Bounded: when the node is behind, a request is refused at once (503) instead of queueing
    /// without end.
    inbox: SyncSender<Message>,
}

/// Why the job socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "another process answers on the socket {} (another gpucost agent?): it is left alone; \
         stop that agent, or give this one its own socket (--socket, pod_socket)",
        .path.display()
    )]
    InUse { path: PathBuf },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The socket file an agent bound, told apart from any other at the same path by its device and
/// inode, so that the agent removes it on the way out only while it is still its own.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one this agent bound; one that replaced it
    /// (another agent's) is left alone. Whether it was removed.
    pub fn remove_if_ours(&self) -> io::Result<bool> {
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                std::fs::remove_file(&self.path).map(|()| true)
            }
            Ok(_) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Binds the socket: creates its folder, replaces a stale socket file (one that nothing answers
/// on, left by an agent that was killed), sets `mode`. A socket that answers is never replaced
/// ([`BindError::InUse`]), nor one whose state cannot be told.
pub fn bind(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), BindError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Does anything answer there? unix(7): connect fails with ECONNREFUSED when "the remote
    // address specified by connect(2) was not a listening socket", which is also what a file that
    // is not a socket gives; ENOENT when there is nothing.
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            return Err(BindError::InUse {
                path: path.to_owned(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    }
    let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
        // Bound by another process since it was found stale or missing.
        io::ErrorKind::AddrInUse => BindError::InUse {
            path: path.to_owned(),
        },
        _ => e.into(),
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    let m = std::fs::symlink_metadata(path)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            dev: m.dev(),
            ino: m.ino(),
        },
    ))
}

pub fn router(inbox: SyncSender<Message>) -> Router {
    Router::new()
        .route("/api/v1/jobs", post(register))
        .route("/api/v1/jobs/{id}/end", post(end))
        .route("/api/v1/jobs/{id}/progress", post(progress))
        .route("/api/v1/progress", post(own_progress))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { inbox })
}

/// The pod socket's routes: a progress report, which goes to the caller's own job whatever the
/// path names (`/api/v1/jobs/{id}/progress` is taken too, for clients that always name one).
pub fn pods_router(inbox: SyncSender<Message>) -> Router {
    Router::new()
        .route("/api/v1/progress", post(pod_progress))
        .route("/api/v1/jobs/{id}/progress", post(pod_progress))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "this socket takes only progress reports (POST /api/v1/progress), for the job the \
                 calling process belongs to; jobs are registered and ended on the node's socket"
                    .into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed here".into(),
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(AppState { inbox })
}

/// Serves the node's job socket.
pub async fn serve(
    listener: UnixListener,
    inbox: SyncSender<Message>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, router(inbox), shutdown).await
}

/// Serves the pod socket.
pub async fn serve_pods(
    listener: UnixListener,
    inbox: SyncSender<Message>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_router(listener, pods_router(inbox), shutdown).await
}

async fn serve_router(
    listener: UnixListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

/// Creates the pod socket's folder, readable and searchable by everyone (pods mount it; a
/// umask such as systemd's `UMask=0077` would shut them out), and binds the socket there with
/// mode 0666: any uid may connect, since on this socket a caller changes only its own job's
/// progress, found from its pid.
pub fn bind_pods(path: &Path) -> Result<(UnixListener, SocketFile), BindError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    bind(path, POD_SOCKET_MODE)
}

/// The pod socket's file mode.
pub const POD_SOCKET_MODE: u32 = 0o666;

/// The caller's uid and the parsed body, or the 4xx that says what is wrong with the request.
fn checked<T>(peer: Peer, body: Result<Json<T>, JsonRejection>) -> Result<(u32, T), Refusal> {
    let Some(uid) = peer.uid else {
        return Err((
            StatusCode::FORBIDDEN,
            "cannot tell who is calling (no peer credentials)".into(),
        ));
    };
    match body {
        Ok(Json(r)) => Ok((uid, r)),
        Err(e) => Err(rejection(e)),
    }
}

/// A 4xx status and what is wrong.
type Refusal = (StatusCode, String);

/// The job id of the URL, or a 400.
fn job_id(id: Result<UrlPath<String>, PathRejection>) -> Result<String, Refusal> {
    id.map(|UrlPath(id)| id)
        .map_err(|e| (StatusCode::BAD_REQUEST, e.body_text()))
}

async fn register(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    let (uid, req) = match checked(peer, body) {
        Ok(c) => c,
        Err((status, msg)) => return error(status, msg),
    };
    let (reply, rx) = oneshot::channel();
    let deadline = Instant::now() + ANSWER_WITHIN;
    let cmd = Message::Register {
        req,
        uid,
        deadline,
        reply,
    };
    ask(&app, cmd, rx, StatusCode::CREATED).await
}

async fn end(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    id: Result<UrlPath<String>, PathRejection>,
    body: Result<Json<EndRequest>, JsonRejection>,
) -> Response {
    let (id, (uid, req)) = match job_id(id).and_then(|id| Ok((id, checked(peer, body)?))) {
        Ok(c) => c,
        Err((status, msg)) => return error(status, msg),
    };
    let (reply, rx) = oneshot::channel();
    let cmd = Message::End {
        id,
        req,
        uid,
        deadline: Instant::now() + ANSWER_WITHIN,
        reply,
    };
    ask(&app, cmd, rx, StatusCode::OK).await
}

async fn progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    id: Result<UrlPath<String>, PathRejection>,
    body: Result<Json<ProgressRequest>, JsonRejection>,
) -> Response {
    let (id, (uid, req)) = match job_id(id).and_then(|id| Ok((id, checked(peer, body)?))) {
        Ok(c) => c,
        Err((status, msg)) => return error(status, msg),
    };
    let (reply, rx) = oneshot::channel();
    let cmd = Message::Progress {
        id,
        req,
        uid,
        deadline: Instant::now() + ANSWER_WITHIN,
        reply,
    };
    ask(&app, cmd, rx, StatusCode::OK).await
}

/// `POST /api/v1/progress` on the job socket: progress for the job the calling process belongs
/// to, which must also be the caller's (by uid) as on `/api/v1/jobs/{id}/progress`.
async fn own_progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<ProgressRequest>, JsonRejection>,
) -> Response {
    let (uid, req) = match checked(peer, body) {
        Ok(c) => c,
        Err((status, msg)) => return error(status, msg),
    };
    caller_progress(&app, peer, Some(uid), req).await
}

/// Progress on the pod socket: for the job the calling process belongs to; its uid is not
/// asked about (a pod's uid says nothing on the node), nor the job the path names.
async fn pod_progress(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Json<ProgressRequest>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            let (status, msg) = rejection(e);
            return error(status, msg);
        }
    };
    caller_progress(&app, peer, None, req).await
}

async fn caller_progress(
    app: &AppState,
    peer: Peer,
    uid: Option<u32>,
    req: ProgressRequest,
) -> Response {
    let Some(pid) = peer.pid else {
        return error(
            StatusCode::FORBIDDEN,
            "cannot tell which process is calling (no peer pid: is the caller in a PID namespace \
             the agent does not see?)"
                .into(),
        );
    };
    let (reply, rx) = oneshot::channel();
    let cmd = Message::CallerProgress {
        pid,
        uid,
        req,
        deadline: Instant::now() + ANSWER_WITHIN,
        reply,
    };
    ask(app, cmd, rx, StatusCode::OK).await
}

async fn ask(
    app: &AppState,
    cmd: Message,
    rx: oneshot::Receiver<Result<JobRecord, RequestError>>,
    ok: StatusCode,
) -> Response {
    match app.inbox.try_send(cmd) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is busy (too many requests waiting); try again shortly".into(),
            )
        }
        Err(TrySendError::Disconnected(_)) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the agent is shutting down".into(),
            )
        }
    }
    match tokio::time::timeout(ANSWER_WITHIN, rx).await {
        Ok(Ok(Ok(job))) => (ok, Json(job)).into_response(),
        Ok(Ok(Err(e))) => {
            let status = match e {
                RequestError::Invalid(_) => StatusCode::BAD_REQUEST,
                RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
                RequestError::NotFound(_) => StatusCode::NOT_FOUND,
                RequestError::Conflict(_) => StatusCode::CONFLICT,
                RequestError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
                RequestError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            };
            error(status, e.to_string())
        }
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the agent did not answer in time".into(),
        ),
    }
}

fn rejection(e: JsonRejection) -> Refusal {
    let status = match e {
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        JsonRejection::BytesRejection(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    (status, e.body_text())
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
