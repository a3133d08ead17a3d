//! `gpucost agent`: wires the node's owner thread, the HTTP server, the job socket and the
//! kubelet poller, and runs until SIGTERM/Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gpucost_sim::Scenario;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::api::socket;
use crate::export::{http, server};
use crate::identity::kube_api::{watch_pods, KubeWatch};
use crate::identity::kubelet::{add_pod_uids, list_gpus, read_checkpoint, PodGpu};
use crate::identity::procfs::ProcFs;
use crate::ledger::{LedgerStore, LockError, StateLock};
use crate::node::{Message, Node, NodeConfig, NodeParts, Store};
use crate::notify;
use crate::record::Recorder;
use crate::sample::benchmark::{bench_nvml_gpu, watch_snapshots};
use crate::sample::nvml::NvmlFactory;
use crate::sample::sampler::{Cadence, Sampler};
use crate::sample::sim::{SimEndings, SimFactory, SimProcs};
use crate::sample::BackendFactory;
use crate::snapshot::Snapshot;
use gpucost_core::attribute::pods::{PodDirectory, PodLabels};
use gpucost_core::attribute::process::ProcSource;
use gpucost_core::clock::{Clock, SystemClock};
use gpucost_core::config::{AttributionConfig, Config, KubeApi};
use gpucost_core::reading::Source;
use gpucost_core::tracker::JobLimits;

/// Requests waiting for the node thread at most.
const INBOX_CAPACITY: usize = 1024;

/// Another agent is in the way at start-up: it holds the state directory's lock, or answers on
/// the job socket. Nothing of it was touched; the binary exits with status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InUse(String);

/// Runs the agent until a shutdown signal. Errors are start-up errors (a bad scenario, a port in
/// use, another agent on the state directory or the socket: [`InUse`]); once running, nothing
/// about the GPUs, the ledger or the socket stops it.
pub fn run(config: Config, record: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let scenario = match &config.simulate {
        Some(s) => Some(Scenario::load(s)?),
        None => None,
    };
    // Every log line of a simulated agent carries this span, so no one mistakes it for a node.
    let span = match &scenario {
        Some(s) => tracing::info_span!("simulated", scenario = %s.name),
        None => tracing::Span::none(),
    };
    let _entered = span.enter();
    if let Some(s) = &scenario {
        warn!(
            "SIMULATED NODE: scenario {:?} ({} GPUs): {}. Nothing here is measured; every \
             series carries simulated=\"true\"",
            s.name,
            s.gpus.len(),
            s.description
        );
    }
    for w in config.pricing.warnings(&[]) {
        warn!("pricing: {w}");
    }
    if let Some(u) = crate::cli::current_user_paths() {
        if u.state_dir == config.state_dir || u.socket == config.socket {
            info!(
                "not running as root: the ledger is in {} and the job socket is {} (a user's own places; state_dir and socket, or --state-dir and --socket, change them)",
                config.state_dir.display(),
                config.socket.display()
            );
        }
    }
    // One agent per state directory, so two never write one ledger. A directory that cannot be
    // reached yet is no reason not to start: the store takes the lock before it loads the ledger.
    let lock = match StateLock::acquire(&config.state_dir) {
        Ok(l) => Some(l),
        Err(e @ LockError::Held { .. }) => return Err(InUse(e.to_string()).into()),
        Err(e) => {
            warn!("{e}; the ledger is not opened before this lock is taken, which is tried again with each attempt to load it");
            None
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(async { server::bind(config.listen) })
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    // The job socket, before anything else starts: without it jobs are still found by
    // attribution, but one that another agent answers on is that agent's.
    let (job_listener, job_socket) = {
        let _guard = runtime.enter();
        match socket::bind(&config.socket, config.socket_mode) {
            Ok((l, f)) => (Some(l), Some(f)),
            Err(e @ socket::BindError::InUse { .. }) => return Err(InUse(e.to_string()).into()),
            Err(e) => {
                warn!(
                    "cannot open the job socket {}: {e}; `gpucost run` and `gpucost job` will run untracked (set socket / --socket)",
                    config.socket.display()
                );
                (None, None)
            }
        }
    };
    // The pod socket, when configured: another agent on it is in the way as on the job socket.
    let (pod_listener, pod_socket) = match &config.pod_socket {
        None => (None, None),
        Some(path) => {
            let _guard = runtime.enter();
            match socket::bind_pods(path) {
                Ok((l, f)) => (Some(l), Some(f)),
                Err(e @ socket::BindError::InUse { .. }) => {
                    if let Some(f) = &job_socket {
                        let _ = f.remove_if_ours();
                    }
                    return Err(InUse(e.to_string()).into());
                }
                Err(e) => {
                    warn!(
                        "cannot open the pod socket {}: {e}; pods cannot report progress",
                        path.display()
                    );
                    (None, None)
                }
            }
        }
    };

    let (tx, rx) = watch::channel(Arc::new(first_snapshot(scenario.as_ref())));
    let (pods_tx, pods_rx) = watch::channel(Vec::<PodGpu>::new());
    let (kube_tx, kube_rx) = watch::channel(Arc::new(PodDirectory::new()));
    let recorder = match &record {
        Some(path) => {
            let from = match &scenario {
                Some(s) => format!("simulated scenario {:?}", s.name),
                None => "NVML".to_string(),
            };
            let r = Recorder::new(
                path,
                &from,
                config.sampling.interval.as_secs_f64(),
                clock.wall(),
            )
            .with_context(|| format!("cannot write the recording {}", path.display()))?;
            info!("recording every sample to {}", path.display());
            Some(r)
        }
        None => None,
    };
    // Bounded: a flood of socket requests is refused (503) rather than queued without end.
    let (inbox, inbox_rx) = std::sync::mpsc::sync_channel::<Message>(INBOX_CAPACITY);
    let node_span = span.clone();
    let node_clock = clock.clone();
    let node_config = config.clone();
    let node_scenario = scenario.clone();
    let node = std::thread::Builder::new()
        .name("gpucost-node".into())
        .spawn(move || {
            let _e = node_span.enter();
            let mut node = build_node(
                &node_config,
                node_scenario.as_ref(),
                Wiring {
                    store: Box::new(match lock {
                        Some(l) => LedgerStore::new(&node_config.state_dir).with_lock(l),
                        None => LedgerStore::new(&node_config.state_dir),
                    }),
                    clock: node_clock,
                    hostname: hostname(),
                    pods: pods_rx,
                    kube_pods: kube_rx,
                    tx,
                },
            );
            if let Some(r) = recorder {
                node = node.with_recorder(r);
            }
            node.run(inbox_rx)
        })
        .context("cannot start the node thread")?;

    // Benchmarks of idle GPUs, at start and every bench.interval (not on a simulated node, whose
    // benchmarks come from its scenario).
    if config.simulate.is_none() && !config.bench.interval.is_zero() {
        let (every, inbox, snapshots) = (config.bench.interval, inbox.clone(), rx.clone());
        let span = span.clone();
        std::thread::Builder::new()
            .name("gpucost-bench".into())
            .spawn(move || {
                let _e = span.enter();
                benchmark_loop(every, &inbox, &snapshots)
            })
            .context("cannot start the benchmark thread")?;
    }

    // Slurm jobs whose end never came: asked of the controller every
    // attribution.scontrol_interval, where there is a Slurm controller to ask.
    let scontrol = crate::identity::slurm::find_scontrol()
        .filter(|_| !config.attribution.scontrol_interval.is_zero());
    if let Some(scontrol) = scontrol {
        let every = config.attribution.scontrol_interval;
        let (inbox, snapshots) = (inbox.clone(), rx.clone());
        let span = span.clone();
        std::thread::Builder::new()
            .name("gpucost-slurm".into())
            .spawn(move || {
                let _e = span.enter();
                controller_loop(&scontrol, every, &inbox, &snapshots)
            })
            .context("cannot start the Slurm controller thread")?;
    }

    let shutdown = CancellationToken::new();
    // A sampler that misses three ticks (plus slack for slow NVML calls) is stuck.
    let stale_after = config.sampling.interval * 3 + Duration::from_secs(5);
    info!(
        "listening on http://{local} (/metrics, /healthz, /api/v1/gpus, /api/v1/jobs); sampling every {}; ledger in {}",
        humantime::format_duration(config.sampling.interval),
        config.state_dir.display()
    );
    warn_if_few_files(config.http.max_connections);
    let health = rx.clone();
    let server = http::serve(
        listener,
        rx,
        stale_after,
        clock.clone(),
        config.http.clone(),
        shutdown.clone(),
    );

    let result = runtime.block_on(
        async {
            if let Some(l) = job_listener {
                info!(
                    "job registration on unix socket {}",
                    config.socket.display()
                );
                tokio::spawn(socket::serve(l, inbox.clone(), shutdown.clone()).in_current_span());
            }
            if let (Some(l), Some(f)) = (pod_listener, &pod_socket) {
                info!(
                    "progress reports of pods on unix socket {} (mode 0666; each for the caller's own job)",
                    f.path().display()
                );
                tokio::spawn(
                    socket::serve_pods(l, inbox.clone(), shutdown.clone()).in_current_span(),
                );
            }
            // The API's pods first: the kubelet's first list waits for them (a little), so that
            // a pod is its owner's job from the start, never its own for a moment.
            let mut api_listed = None;
            if let Some(client) = kube_client(&config.attribution).await {
                let node = kube_node_name(&config.attribution);
                let w = KubeWatch {
                    client,
                    node,
                    clock: clock.clone(),
                };
                api_listed = Some(kube_tx.subscribe());
                tokio::spawn(watch_pods(w, kube_tx, shutdown.clone()).in_current_span());
            }
            if let Some(sock) = config.attribution.kubelet_socket.clone() {
                let kubelet = Kubelet {
                    socket: sock,
                    resources: config.attribution.kubelet_resources.clone(),
                    checkpoint: config.attribution.kubelet_checkpoint.clone(),
                    every: config.attribution.kubelet_interval,
                    api_listed,
                };
                tokio::spawn(poll_kubelet(kubelet, pods_tx, shutdown.clone()).in_current_span());
            }
            // systemd (Type=notify): up once both listeners are bound; then the watchdog.
            let _ = notify::ready(&format!("listening on {local}"));
            // SIGHUP (a closed terminal, `systemctl kill -s HUP`, a reload habit) would end the
            // agent without its final persist: persist instead, and go on. SIGUSR1 makes the
            // agent let go of NVML (a driver upgrade, `nvidia-smi --gpu-reset` or a MIG change
            // needs every client gone) and SIGUSR2 takes it back: only root (or the agent's own
            // user) may signal the agent.
            use tokio::signal::unix::SignalKind;
            let signals: [SignalRoute; 3] = [
                (
                    SignalKind::hangup(),
                    "SIGHUP",
                    || Message::Persist,
                    "the totals are persisted at the next interval",
                ),
                (
                    SignalKind::user_defined1(),
                    "SIGUSR1",
                    || Message::ReleaseNvml,
                    "NVML is not released: send SIGUSR1 again",
                ),
                (
                    SignalKind::user_defined2(),
                    "SIGUSR2",
                    || Message::ResumeNvml,
                    "NVML is not taken back: send SIGUSR2 again",
                ),
            ];
            for (kind, name, message, busy) in signals {
                match tokio::signal::unix::signal(kind) {
                    Ok(received) => {
                        tokio::spawn(
                            forward_signal(
                                received,
                                name,
                                message,
                                busy,
                                inbox.clone(),
                                shutdown.clone(),
                            )
                            .in_current_span(),
                        );
                    }
                    Err(e) => warn!("cannot handle {name} ({e}); it will stop the agent"),
                }
            }
            if let Some(every) = notify::watchdog_interval() {
                tokio::spawn(keep_watchdog(
                    health,
                    local,
                    stale_after,
                    every,
                    clock.clone(),
                    shutdown.clone(),
                ));
            }
            tokio::select! {
                r = server => r.context("HTTP server failed"),
                () = shutdown_signal() => {
                    info!("shutting down");
                    let _ = notify::stopping();
                    shutdown.cancel();
                    Ok(())
                }
            }
        }
        .instrument(span.clone()),
    );
    shutdown.cancel();
    let _ = inbox.send(Message::Shutdown);
    if node.join().is_err() {
        warn!("the node thread panicked");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    // Only our own sockets: another agent may have bound one at the same path since.
    for (what, f) in [("job", &job_socket), ("pod", &pod_socket)] {
        let Some(f) = f else { continue };
        match f.remove_if_ours() {
            Ok(true) => {}
            Ok(false) => info!(
                "the {what} socket {} is no longer this agent's (removed or replaced): left as it is",
                f.path().display()
            ),
            Err(e) => warn!("cannot remove the socket {}: {e}", f.path().display()),
        }
    }
    info!("stopped");
    result
}

/// What a node is connected to, besides what the config says.
pub struct Wiring {
    pub store: Box<dyn Store>,
    pub clock: Arc<dyn Clock>,
    /// The node's name, for ids of jobs registered without one.
    pub hostname: String,
    /// Which pod holds which GPU (the kubelet poller's output).
    pub pods: watch::Receiver<Vec<PodGpu>>,
    /// This node's pods as the Kubernetes API shows them (the pod watcher's output).
    pub kube_pods: watch::Receiver<Arc<PodDirectory>>,
    pub tx: watch::Sender<Arc<Snapshot>>,
}

/// The snapshot `/metrics` has before the first sample.
pub fn first_snapshot(scenario: Option<&Scenario>) -> Snapshot {
    match scenario {
        Some(s) => Snapshot::empty(Source::Simulated, Some(s.name.clone())),
        None => Snapshot::empty(Source::Nvml, None),
    }
}

/// The node as the config wires it: NVML or the simulated scenario (with its scheduler and
/// benchmarks), the process source, the cadences, prices and job settings. [`run`] builds it on
/// the node thread; tests build the same node and drive it in virtual time.
pub fn build_node(config: &Config, scenario: Option<&Scenario>, w: Wiring) -> Node {
    let real_procs = ProcFs::new(&config.attribution.proc_root);
    let (factory, procs): (Box<dyn BackendFactory>, Box<dyn ProcSource>) = match scenario {
        Some(s) => (
            Box::new(SimFactory::new(s.clone(), w.clock.clone())),
            Box::new(SimProcs::new(s, real_procs)),
        ),
        None => (
            Box::new(NvmlFactory::new(config.nvml.lib.clone())),
            Box::new(real_procs),
        ),
    };
    let cadence = Cadence {
        interval: config.sampling.interval,
        process_interval: config.sampling.process_interval,
        retry_interval: config.nvml.retry_interval,
        read_timeout: crate::sample::sampler::read_timeout(config.sampling.interval),
    };
    let cfg = NodeConfig {
        interval: config.sampling.interval,
        persist_interval: config.persist_interval,
        job_map_dir: config.attribution.job_map_dir.clone(),
        cgroup_root: Some(config.attribution.cgroup_root.clone()),
        spool_dir: Some(config.state_dir.join(crate::api::spool::DIR)),
        hostname: w.hostname,
        limits: JobLimits {
            max_running_per_user: config.jobs.max_running_per_user as usize,
            max_running: config.jobs.max_running as usize,
        },
        grace_s: config.jobs.grace_period.as_secs_f64(),
        vanish_s: config.jobs.vanish_after.as_secs_f64(),
        export_labels: config.jobs.export_labels.clone(),
        bench_min_ratio: config.bench.min_ratio,
        pod_labels: PodLabels {
            export: config.jobs.export_labels.clone(),
            mapping: config.attribution.kube_labels.clone(),
        },
    };
    let node = Node::new(NodeParts {
        cfg,
        sampler: Sampler::new(factory, cadence, w.clock.clone()),
        pricing: config.pricing.clone(),
        procs,
        pods: w.pods,
        kube_pods: w.kube_pods,
        store: w.store,
        clock: w.clock.clone(),
        tx: w.tx,
    });
    match scenario {
        Some(s) => node
            .with_benchmarks(simulated_benchmarks(s, w.clock.wall()))
            .with_sim_endings(SimEndings::new(s.clone(), w.clock)),
        None => node,
    }
}

/// A signal the agent answers: its kind, its name, the message it sends the node thread, and
/// what happens when the node's inbox is full.
type SignalRoute = (
    tokio::signal::unix::SignalKind,
    &'static str,
    fn() -> Message,
    &'static str,
);

/// Sends the node thread `message()` at each signal `name`; says what happens when its inbox
/// is full (`busy`).
async fn forward_signal(
    mut received: tokio::signal::unix::Signal,
    name: &'static str,
    message: fn() -> Message,
    busy: &'static str,
    inbox: std::sync::mpsc::SyncSender<Message>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            got = received.recv() => {
                if got.is_none() {
                    return;
                }
                if inbox.try_send(message()).is_err() {
                    warn!("{name}: the node is busy; {busy}");
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Pings the systemd watchdog every `every` while the sampler publishes fresh snapshots (the
/// test `/healthz` uses), and keeps `systemctl status` saying how sampling goes. A stuck node
/// thread stops the pings, and systemd restarts the agent.
async fn keep_watchdog(
    snapshots: watch::Receiver<Arc<Snapshot>>,
    local: std::net::SocketAddr,
    stale_after: Duration,
    every: Duration,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) {
    let mut said = String::new();
    loop {
        let (fresh, line) = {
            let snap = snapshots.borrow();
            let fresh = snap.fresh(clock.mono(), stale_after);
            let line = match (&snap.backend_error, snap.backend_up) {
                (_, true) => format!("listening on {local}; sampling {} GPU(s)", snap.gpus.len()),
                (Some(e), false) => format!("listening on {local}; GPU library unavailable: {e}"),
                (None, false) => format!("listening on {local}; GPU library not loaded yet"),
            };
            (fresh, line)
        };
        if fresh {
            let _ = notify::watchdog();
        }
        if line != said {
            let _ = notify::status(&line);
            said = line;
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// Open files the agent needs besides the HTTP port's connections: the job socket's
/// connections, the ledger, the NVIDIA device files, the kubelet socket, the runtime's own.
const FILES_BESIDES_HTTP: u64 = 128;

/// Says at start-up when the soft limit of open files leaves too little beside
/// `http.max_connections`: once it is used up, the job socket and the ledger fail too.
fn warn_if_few_files(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes the limit into `limit`, a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let needed = max_connections as u64 + FILES_BESIDES_HTTP;
    if limit.rlim_cur < needed {
        warn!(
            "the limit of open files is {} (ulimit -n; LimitNOFILE= in the systemd unit): with \
             http.max_connections = {max_connections}, the agent may need {needed}; raise the \
             limit or lower http.max_connections",
            limit.rlim_cur
        );
    }
}

/// Benchmarks each GPU that no process uses, 30 s after start and then every `every`; the
/// results go to the node thread. Stops, saying why once, where there is no CUDA driver. The
/// GPU's clock and power during a run come from the node's own samples, not a second NVML.
fn benchmark_loop(
    every: Duration,
    inbox: &std::sync::mpsc::SyncSender<Message>,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
) {
    std::thread::sleep(Duration::from_secs(30));
    loop {
        if let Err(e) = gpucost_kernels::suite::device_count() {
            info!("GPU benchmarks unavailable: {e}");
            return;
        }
        let gpus: Vec<(u32, String)> = snapshots
            .borrow()
            .gpus
            .iter()
            .filter(|g| g.up)
            // Not a MIG instance: a run would share the GPU with its other instances' jobs,
            // and measure a slice, not the GPU (issue 15).
            .filter(|g| g.info.mig.is_none())
            .map(|g| (g.info.index, g.info.uuid.clone()))
            .collect();
        for (index, uuid) in gpus {
            // Never disturb a job: only a GPU with no process on it right now.
            let busy = snapshots
                .borrow()
                .gpus
                .iter()
                .any(|g| g.info.uuid == uuid && !g.processes.is_empty());
            if busy {
                info!(
                    gpu = index,
                    "GPU {index} is in use: benchmark postponed to the next round"
                );
                continue;
            }
            let watch = watch_snapshots(uuid.clone(), snapshots.clone());
            match bench_nvml_gpu(index, &uuid, gpucost_kernels::suite::Pace::Quick, watch) {
                Ok(b) => {
                    info!(
                        gpu = index,
                        "GPU {index} benchmarked in {:.1} s", b.report.elapsed_s
                    );
                    let result = gpucost_core::benchmark::GpuBenchmark {
                        // One rate per precision and method (the metric's labels): the
                        // library at its square shape, not the training shape as well.
                        flops: b
                            .report
                            .results
                            .iter()
                            .filter(|r| r.shape.is_none_or(|s| s.is_square()))
                            .map(|r| (r.precision, r.method.as_str(), r.flops_per_s))
                            .collect(),
                        memory: b
                            .report
                            .memory
                            .iter()
                            .map(|m| (m.op.as_str(), m.bytes_per_s))
                            .collect(),
                        taken_at: gpucost_core::clock::unix_now(),
                        simulated: false,
                    };
                    if inbox.send(Message::Benchmark { uuid, result }).is_err() {
                        return;
                    }
                }
                Err(e @ gpucost_kernels::suite::BenchError::NoMatch(_)) => {
                    info!(gpu = index, "GPU {index} not benchmarked: {e}");
                }
                Err(e) => warn!(gpu = index, "GPU {index} benchmark failed: {e}"),
            }
        }
        std::thread::sleep(every);
    }
}

/// Asks the Slurm controller, every `every`, about each Slurm job this node has running with no
/// process to follow (every prolog's registration): one that it shows in a final state, or no
/// longer knows, lost its epilog, and the node ends it as the controller says (issue 16). Runs
/// `scontrol` here, off the node thread (each call bounded), since a controller can be slow.
fn controller_loop(
    scontrol: &std::path::Path,
    every: Duration,
    inbox: &std::sync::mpsc::SyncSender<Message>,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
) {
    use gpucost_core::jobs::{Outcome, Scheduler};
    use gpucost_core::tracker::EndRequest;
    info!(
        "asking {} about Slurm jobs with no end reported, every {}",
        scontrol.display(),
        humantime::format_duration(every)
    );
    loop {
        std::thread::sleep(every);
        let ids: Vec<String> = snapshots
            .borrow()
            .published
            .jobs
            .iter()
            .filter(|j| j.outcome == Outcome::Running && j.scheduler == Scheduler::Slurm)
            .filter(|j| j.registration.as_ref().is_some_and(|r| r.pid.is_none()))
            .map(|j| j.id.clone())
            .collect();
        for id in ids {
            let Some((e, why)) =
                crate::identity::slurm::controller_says(scontrol, &id, Duration::from_secs(5))
            else {
                continue;
            };
            let req = EndRequest {
                exit_code: e.exit_code,
                signal: e.signal,
                outcome: Some(e.outcome),
                reason: e.reason,
            };
            if inbox
                .send(Message::ControllerEnded { id, req, why })
                .is_err()
            {
                return;
            }
        }
    }
}

/// A simulated node's benchmarks: each GPU's datasheet peaks times its `bench_efficiency`.
fn simulated_benchmarks(
    s: &Scenario,
    now: f64,
) -> std::collections::BTreeMap<String, gpucost_core::benchmark::GpuBenchmark> {
    let node = gpucost_sim::SimulatedNode::new(s.clone());
    s.gpus
        .iter()
        .enumerate()
        .filter(|(_, g)| g.benchmarked)
        .filter_map(|(i, g)| {
            let b = gpucost_core::benchmark::simulated(&g.model, g.bench_efficiency, now)?;
            Some((node.uuid(i as u32).to_string(), b))
        })
        .collect()
}

/// Where and how often to ask the kubelet.
struct Kubelet {
    socket: std::path::PathBuf,
    resources: Vec<String>,
    /// The device-manager checkpoint, for the pods' UIDs.
    checkpoint: Option<std::path::PathBuf>,
    every: Duration,
    /// The Kubernetes pod watcher's output, when it runs: its first list is waited for.
    api_listed: Option<watch::Receiver<Arc<PodDirectory>>>,
}

/// How long the kubelet's first list waits for the Kubernetes API's.
const API_FIRST_LIST_WAIT: Duration = Duration::from_secs(10);

/// Asks the kubelet which pod holds which GPU, every `every`, and reads the pods' UIDs from its
/// checkpoint; says once when it cannot.
async fn poll_kubelet(k: Kubelet, tx: watch::Sender<Vec<PodGpu>>, shutdown: CancellationToken) {
    let Kubelet {
        socket,
        resources,
        checkpoint,
        every,
        api_listed,
    } = k;
    if let Some(mut rx) = api_listed {
        let waited = tokio::select! {
            r = tokio::time::timeout(API_FIRST_LIST_WAIT, rx.changed()) => r,
            () = shutdown.cancelled() => return,
        };
        if waited.is_err() {
            info!("the Kubernetes API has not listed this node's pods within {API_FIRST_LIST_WAIT:?}: pods are their own jobs until it does");
        }
    }
    let mut said: Option<String> = None;
    let mut said_checkpoint: Option<String> = None;
    loop {
        match list_gpus(&socket, &resources, Duration::from_secs(5)).await {
            Ok(mut pods) => {
                if let Some(path) = checkpoint.as_deref().filter(|_| !pods.is_empty()) {
                    match read_checkpoint(path) {
                        Ok(allocations) => {
                            said_checkpoint = None;
                            add_pod_uids(&mut pods, &allocations);
                        }
                        Err(msg) => {
                            if said_checkpoint.as_deref() != Some(msg.as_str()) {
                                warn!("{msg}; pods sharing a GPU are billed evenly for its processes until it can be read (attribution.kubelet_checkpoint)");
                            }
                            said_checkpoint = Some(msg);
                        }
                    }
                }
                if said.take().is_some() || tx.borrow().is_empty() && !pods.is_empty() {
                    info!(
                        "kubelet pod-resources at {}: {} GPU assignment(s)",
                        socket.display(),
                        pods.len()
                    );
                }
                let _ = tx.send(pods);
            }
            Err(e) => {
                let msg = e.to_string();
                if said.as_deref() != Some(msg.as_str()) {
                    info!("Kubernetes attribution off for now: {msg} (normal outside Kubernetes; set attribution.kubelet_socket = \"off\" to stop trying)");
                }
                said = Some(msg);
                let _ = tx.send(Vec::new());
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Where the kubelet mounts a pod's service account token (automountServiceAccountToken).
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The Kubernetes API client `attribution.kube_api` asks for, or `None` (said why when it was
/// asked for and cannot be had). `auto`: only inside a cluster, in a pod with its service
/// account's token (`KUBERNETES_SERVICE_HOST` set, the token mounted); `on`: the service account, else the
/// kubeconfig (`KUBECONFIG`, `~/.kube/config`).
async fn kube_client(a: &AttributionConfig) -> Option<kube::Client> {
    let config = match a.kube_api {
        KubeApi::Off => return None,
        KubeApi::Auto
            if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none()
                || !std::path::Path::new(SERVICE_ACCOUNT_TOKEN).exists() =>
        {
            debug!("Kubernetes API not watched: not in a pod with a service account token (attribution.kube_api = \"auto\")");
            return None;
        }
        KubeApi::Auto => kube::Config::incluster().map_err(|e| e.to_string()),
        KubeApi::On => kube::Config::infer().await.map_err(|e| e.to_string()),
    };
    let client = config.and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()));
    match client {
        Ok(c) => Some(c),
        Err(e) => {
            warn!("Kubernetes API not watched: {e}; pods are known from the kubelet only (no owners, labels or outcomes)");
            None
        }
    }
}

/// The node whose pods are watched: `attribution.kube_node_name`, else `$NODE_NAME` (the
/// DaemonSet sets it from `spec.nodeName`), else the host name (a node's name by default).
fn kube_node_name(a: &AttributionConfig) -> String {
    a.kube_node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
        .unwrap_or_else(hostname)
}

/// The node's name, for the ids of jobs registered without one.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_string())
}
