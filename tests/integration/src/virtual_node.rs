//! The agent's node in virtual time: the node `gpucost agent --simulate` runs (wired by
//! `gpucost::agent::build_node` from a config), with a real SQLite ledger in a temporary
//! directory, driven tick by tick on a manual clock. For tests whose subject is what the agent
//! computes over minutes of scenario time, not the process, its sockets or its timing: a
//! 10-minute scenario runs in a fraction of a second, and every scenario time is exact.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gpucost::agent::{build_node, first_snapshot, Wiring};
use gpucost::export::metrics::Renderer;
use gpucost::ledger::LedgerStore;
use gpucost::node::{Message, Node};
use gpucost::snapshot::Snapshot;
use gpucost_core::clock::{Clock, ManualClock};
use gpucost_core::config::Config;
use gpucost_core::jobs::JobRecord;
use gpucost_core::tracker::{ProgressRequest, RegisterRequest};
use gpucost_sim::Scenario;
use tokio::sync::{oneshot, watch};

use crate::Metrics;

/// 2026-06-01T00:00:00Z, where virtual time starts.
pub const START_UNIX: f64 = 1_780_272_000.0;

pub struct VirtualNode {
    pub node: Node,
    pub clock: Arc<ManualClock>,
    pub state_dir: tempfile::TempDir,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    started: Instant,
    next: Instant,
    renderer: Renderer,
    _pods: watch::Sender<Vec<gpucost_core::attribute::PodGpu>>,
}

/// The default config (as with no file, no environment and no flags), changed by `tweak`.
pub fn config(tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = gpucost_core::config::resolve(&[]).expect("the defaults are a valid config");
    tweak(&mut c);
    c
}

impl VirtualNode {
    /// A node simulating `scenario` with `config`; the scenario's time starts now.
    pub fn simulate(scenario: &Scenario, config: &Config) -> VirtualNode {
        let clock = Arc::new(ManualClock::new(START_UNIX));
        let state_dir = tempfile::tempdir().expect("temp dir");
        let (tx, snapshots) = watch::channel(Arc::new(first_snapshot(Some(scenario))));
        let (pods_tx, pods) = watch::channel(Vec::new());
        let (_, kube_pods) = watch::channel(Arc::default());
        let node = build_node(
            config,
            Some(scenario),
            Wiring {
                store: Box::new(LedgerStore::new(state_dir.path())),
                clock: clock.clone(),
                hostname: "virtual".into(),
                pods,
                kube_pods,
                tx,
            },
        );
        let started = clock.mono();
        VirtualNode {
            node,
            state_dir,
            snapshots,
            started,
            next: started,
            renderer: Renderer::default(),
            _pods: pods_tx,
            clock,
        }
    }

    /// Scenario seconds since the start (at the scenario's speed 1).
    pub fn now_s(&self) -> f64 {
        self.clock
            .mono()
            .saturating_duration_since(self.started)
            .as_secs_f64()
    }

    /// Runs ticks as `Node::run` does until scenario time `t` (seconds) has been reached.
    pub fn run_until(&mut self, t: f64) {
        let end = self.started + Duration::from_secs_f64(t);
        while self.next <= end {
            let wait = self.next.saturating_duration_since(self.clock.mono());
            self.clock.advance(wait);
            self.node.tick();
            self.next = self.node.schedule(self.next);
        }
        let rest = end.saturating_duration_since(self.clock.mono());
        self.clock.advance(rest);
    }

    /// Time passes without a tick (between two samples).
    pub fn wait(&mut self, d: Duration) {
        let t = self.now_s() + d.as_secs_f64();
        self.run_until(t);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.borrow().clone()
    }

    /// What `/metrics` would serve now.
    pub fn metrics(&mut self) -> Metrics {
        let snap = self.snapshot();
        let text = self.renderer.render(&snap);
        Metrics::parse(&String::from_utf8_lossy(&text))
    }

    /// What `/api/v1/jobs/{id}` would serve now.
    pub fn job_json(&self, id: &str) -> Option<serde_json::Value> {
        let snap = self.snapshot();
        let job = snap.published.jobs.iter().find(|j| j.id == id)?.clone();
        Some(gpucost::export::http::job_json(&job, &snap.currency))
    }

    /// Registers a job as uid `uid` would over the socket.
    pub fn register(&mut self, req: RegisterRequest, uid: u32) -> Result<JobRecord, String> {
        let (reply, rx) = oneshot::channel();
        self.node.handle(Message::Register {
            deadline: far_future(),
            req,
            uid,
            reply,
        });
        rx.blocking_recv()
            .expect("a reply")
            .map_err(|e| e.to_string())
    }

    /// Reports progress as uid `uid` would over the socket.
    pub fn progress(
        &mut self,
        id: &str,
        req: ProgressRequest,
        uid: u32,
    ) -> Result<JobRecord, String> {
        let (reply, rx) = oneshot::channel();
        self.node.handle(Message::Progress {
            deadline: far_future(),
            id: id.into(),
            req,
            uid,
            reply,
        });
        rx.blocking_recv()
            .expect("a reply")
            .map_err(|e| e.to_string())
    }

    /// Persists and writes everything, as the agent does on its way out.
    pub fn stop(&mut self) {
        self.node.shutdown();
    }
}

/// A deadline no test reaches (requests past theirs are dropped by the node).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}
