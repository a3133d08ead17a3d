//! A fake Kubernetes API server for pods: `GET /api/v1/pods` lists and watches them over plain
//! HTTP/1.1, as the real server does for a client with a kubeconfig pointing at it.
//!
//! What it keeps of the real server's behaviour
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/>):
//! - a list is a `PodList` with `metadata.resourceVersion`; the field selector
//!   `spec.nodeName=NODE` keeps the pods of one node (a list without it gets every pod);
//! - `?watch=1&resourceVersion=N` streams the changes after version N as one JSON object per
//!   line, `{"type": "ADDED" | "MODIFIED" | "DELETED", "object": Pod}`, over a chunked response
//!   that stays open; each change bumps the resource version and is stamped into the object's
//!   `metadata.resourceVersion`;
//! - a watch from a version older than the server keeps (after [`FakeApiServer::expire`])
//!   gets an `ERROR` event whose object is a `Status` with code 410 (`Expired`), and ends.
//!
//! The objects are what a test gives, as JSON (`kubectl get pod -o json`); the server adds only
//! the resource version.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

type Body = BoxBody<Bytes, Infallible>;
/// Where a watch's lines go.
type Lines = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Event {
    version: u64,
    kind: &'static str,
    pod: Value,
}

#[derive(Default)]
struct State {
    /// The pods by UID.
    pods: BTreeMap<String, Value>,
    version: u64,
    history: Vec<Event>,
    /// Watches from versions below this get 410.
    oldest: u64,
    /// Open watches: the node they select (None: every pod) and where their events go.
    watchers: Vec<(Option<String>, Lines)>,
    /// Every request's path and query, in order.
    requests: Vec<String>,
}

/// The fake API server; stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
}

fn node_of(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str)
}

fn uid_of(pod: &Value) -> String {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .expect("a pod needs metadata.uid")
        .to_string()
}

fn line(e: &Event) -> Bytes {
    let mut text = json!({"type": e.kind, "object": e.pod}).to_string();
    text.push('\n');
    Bytes::from(text)
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

impl FakeApiServer {
    /// Serves `pods` on a free port of 127.0.0.1.
    pub async fn start(pods: Vec<Value>) -> FakeApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, mut stopped) = oneshot::channel();
        let server = FakeApiServer {
            addr,
            state: state.clone(),
            stop: Some(stop),
        };
        for p in pods {
            server.change("ADDED", p);
        }
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig that points a client at this server (no credentials: it asks for none).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: agent\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    \
             cluster: fake\n    user: agent\ncurrent-context: fake\n",
            self.url()
        )
    }

    /// The pod is created or changed (by its UID): ADDED or MODIFIED to the watches.
    pub fn apply(&self, pod: Value) {
        let known = self.state.lock().unwrap().pods.contains_key(&uid_of(&pod));
        self.change(if known { "MODIFIED" } else { "ADDED" }, pod);
    }

    /// The pod is deleted: DELETED (with its last state) to the watches.
    pub fn delete(&self, pod: Value) {
        self.change("DELETED", pod);
    }

    /// The server forgets its history: open watches get 410 Gone and end, as do watches from
    /// any version before now (a client must list again).
    pub fn expire(&self) {
        let mut s = self.state.lock().unwrap();
        s.oldest = s.version + 1;
        s.history.clear();
        let gone = Event {
            version: s.version,
            kind: "ERROR",
            pod: status(410, "Expired", "too old resource version"),
        };
        for (_, w) in s.watchers.drain(..) {
            let _ = w.send(Ok(Frame::data(line(&gone))));
        }
    }

    /// Every request so far: path and query.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn change(&self, kind: &'static str, mut pod: Value) {
        let mut s = self.state.lock().unwrap();
        s.version += 1;
        let version = s.version;
        pod["metadata"]["resourceVersion"] = json!(version.to_string());
        let uid = uid_of(&pod);
        if kind == "DELETED" {
            s.pods.remove(&uid);
        } else {
            s.pods.insert(uid, pod.clone());
        }
        let e = Event { version, kind, pod };
        s.watchers.retain(|(node, w)| {
            if node.as_deref().is_some_and(|n| node_of(&e.pod) != Some(n)) {
                return !w.is_closed();
            }
            w.send(Ok(Frame::data(line(&e)))).is_ok()
        });
        s.history.push(e);
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.state.lock().unwrap().watchers.clear();
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn answer(state: &Mutex<State>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let uri = req.uri().clone();
    let mut s = state.lock().unwrap();
    s.requests.push(uri.to_string());
    if req.method() != hyper::Method::GET || uri.path() != "/api/v1/pods" {
        let msg = format!(
            "the server could not find the requested resource ({})",
            uri.path()
        );
        return json_response(StatusCode::NOT_FOUND, &status(404, "NotFound", &msg));
    }
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let node = match query.get("fieldSelector") {
        None => None,
        Some(f) => match f.strip_prefix("spec.nodeName=") {
            Some(n) => Some(n.to_string()),
            None => {
                let msg = format!("field label not supported: {f}");
                return json_response(StatusCode::BAD_REQUEST, &status(400, "BadRequest", &msg));
            }
        },
    };
    let selected = |p: &Value| node.as_deref().is_none_or(|n| node_of(p) == Some(n));
    let watch = query.get("watch").is_some_and(|w| w == "1" || w == "true");
    if !watch {
        let items: Vec<Value> = s.pods.values().filter(|p| selected(p)).cloned().collect();
        let list = json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": s.version.to_string()},
            "items": items,
        });
        return json_response(StatusCode::OK, &list);
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(s.version);
    let (tx, rx) = mpsc::unbounded_channel();
    if from + 1 < s.oldest {
        let gone = Event {
            version: s.version,
            kind: "ERROR",
            pod: status(410, "Expired", &format!("too old resource version: {from}")),
        };
        let _ = tx.send(Ok(Frame::data(line(&gone))));
        drop(tx);
    } else {
        for e in s
            .history
            .iter()
            .filter(|e| e.version > from && selected(&e.pod))
        {
            let _ = tx.send(Ok(Frame::data(line(e))));
        }
        s.watchers.push((node, tx));
    }
    let body = StreamBody::new(UnboundedReceiverStream::new(rx).map(|f| f));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(body))
        .unwrap()
}
