//! `gpucost agent`: wires the sampler thread to the HTTP server and runs until SIGTERM/Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use gpucost_sim::Scenario;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::Config;
use crate::export::http;
use crate::sample::sampler::{BackendSpec, Cadence, Sampler};
use crate::sample::Source;
use crate::snapshot::Snapshot;

/// Runs the agent until a shutdown signal. Errors are start-up errors (a bad scenario, a port in
/// use); once running, nothing about the GPUs stops it.
pub fn run(config: Config) -> anyhow::Result<()> {
    let spec = match &config.simulate {
        Some(s) => BackendSpec::Simulated(Scenario::load(s)?),
        None => BackendSpec::Nvml {
            lib: config.nvml.lib.clone(),
        },
    };
    // Every log line of a simulated agent carries this span, so no one mistakes it for a node.
    let span = match &spec {
        BackendSpec::Simulated(s) => tracing::info_span!("simulated", scenario = %s.name),
        BackendSpec::Nvml { .. } => tracing::Span::none(),
    };
    let _entered = span.enter();
    if let BackendSpec::Simulated(s) = &spec {
        warn!(
            "SIMULATED NODE: scenario {:?} ({} GPUs): {}. Nothing here is measured; every \
             series carries simulated=\"true\"",
            s.name,
            s.gpus.len(),
            s.description
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(TcpListener::bind(config.listen))
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;

    let (source, sim_name) = match &spec {
        BackendSpec::Simulated(s) => (Source::Simulated, Some(s.name.clone())),
        BackendSpec::Nvml { .. } => (Source::Nvml, None),
    };
    let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(source, sim_name)));
    let cadence = Cadence {
        interval: config.sampling.interval,
        process_interval: config.sampling.process_interval,
        retry_interval: config.nvml.retry_interval,
    };
    let (stop_sampler, stop_rx) = std::sync::mpsc::channel::<()>();
    let sampler_span = span.clone();
    let sampler = std::thread::Builder::new()
        .name("gpucost-sampler".into())
        .spawn(move || {
            let _e = sampler_span.enter();
            Sampler::new(spec, cadence, tx).run(stop_rx)
        })
        .context("cannot start the sampler thread")?;

    let shutdown = CancellationToken::new();
    // A sampler that misses three ticks (plus slack for slow NVML calls) is stuck.
    let stale_after = config.sampling.interval * 3 + Duration::from_secs(5);
    info!(
        "listening on http://{local} (/metrics, /healthz, /api/v1/gpus); sampling every {}",
        humantime::format_duration(config.sampling.interval)
    );
    let server = http::serve(listener, rx, stale_after, shutdown.clone());
    let result = runtime.block_on(
        async {
            tokio::select! {
                r = server => r.context("HTTP server failed"),
                () = shutdown_signal() => {
                    info!("shutting down");
                    shutdown.cancel();
                    Ok(())
                }
            }
        }
        .instrument(span.clone()),
    );
    let _ = stop_sampler.send(());
    if sampler.join().is_err() {
        warn!("the sampler thread panicked");
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    info!("stopped");
    result
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
