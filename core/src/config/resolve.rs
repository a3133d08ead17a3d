//! Merging the layers into one [`Config`]: each setting comes from the highest-priority layer
//! that sets it, else its default, and is checked there, so that an error names the layer the bad
//! value came from. One function per section; a section that depends on another (the process
//! interval's default on the sampling interval) takes it as an argument.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{
    defaults, example_pricing, AttributionConfig, BenchConfig, Config, ConfigError, HttpConfig,
    JobsConfig, KubeApi, Layer, NvmlConfig, Origin, Sampling,
};
use crate::account::pricing::{self, Pricing};

/// Merges layers (lowest priority first: file, environment, flags) and validates the result.
pub fn resolve(layers: &[(Origin, Layer)]) -> Result<Config, ConfigError> {
    let layers = Layers(layers);
    let listen = listen(&layers)?;
    let sampling = sampling(&layers)?;
    let nvml = nvml(&layers)?;
    let simulate = simulate(&layers)?;
    let persist_interval = ledger(&layers)?;
    let jobs = jobs(&layers, &sampling)?;
    let (socket, socket_mode) = socket(&layers)?;
    let pod_socket = pod_socket(&layers, &socket)?;
    let attribution = attribution(&layers)?;
    let pricing = pricing(&layers, simulate.is_some())?;
    let bench = bench(&layers)?;
    let http = http(&layers)?;
    Ok(Config {
        listen,
        sampling,
        nvml,
        simulate,
        state_dir: layers.or(|l| l.state_dir.clone(), defaults::STATE_DIR.into()),
        socket,
        socket_mode,
        pod_socket,
        persist_interval,
        jobs,
        attribution,
        pricing,
        bench,
        http,
    })
}

/// The layers, lowest priority first.
struct Layers<'a>(&'a [(Origin, Layer)]);

impl Layers<'_> {
    /// The value of the highest-priority layer that sets it, and that layer.
    fn pick<T>(&self, get: impl Fn(&Layer) -> Option<T>) -> Option<(T, Origin)> {
        self.0
            .iter()
            .rev()
            .find_map(|(origin, layer)| get(layer).map(|v| (v, origin.clone())))
    }

    /// Like [`Self::pick`], with [`Origin::Default`] for the default.
    fn pick_or<T>(&self, get: impl Fn(&Layer) -> Option<T>, default: T) -> (T, Origin) {
        self.pick(get).unwrap_or((default, Origin::Default))
    }

    /// A setting with no check beyond its type.
    fn or<T>(&self, get: impl Fn(&Layer) -> Option<T>, default: T) -> T {
        self.pick_or(get, default).0
    }

    /// A duration, which must lie in `allowed`.
    fn duration(
        &self,
        key: &str,
        get: impl Fn(&Layer) -> Option<Duration>,
        default: Duration,
        allowed: RangeInclusive<Duration>,
    ) -> Result<(Duration, Origin), ConfigError> {
        let (v, origin) = self.pick_or(get, default);
        if !allowed.contains(&v) {
            return Err(err(
                origin,
                key,
                format!(
                    "{} is out of range: allowed {} to {}",
                    humantime::format_duration(v),
                    humantime::format_duration(*allowed.start()),
                    humantime::format_duration(*allowed.end())
                ),
            ));
        }
        Ok((v, origin))
    }

    /// A cap on a number of jobs: at least 1 (0 would refuse every registration; a cap is
    /// lifted by raising it), at most [`MAX_CAP`] (the table, and `/metrics`, stay bounded).
    fn cap(
        &self,
        key: &str,
        get: impl Fn(&Layer) -> Option<u32>,
        default: u32,
    ) -> Result<u32, ConfigError> {
        let (v, origin) = self.pick_or(get, default);
        if !(1..=MAX_CAP).contains(&v) {
            return Err(err(origin, key, format!("must be 1 to {MAX_CAP}, got {v}")));
        }
        Ok(v)
    }
}

/// The largest job cap.
const MAX_CAP: u32 = 1_000_000;

fn err(origin: Origin, key: &str, problem: String) -> ConfigError {
    ConfigError {
        origin,
        key: key.to_string(),
        problem,
    }
}

const MS: Duration = Duration::from_millis(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);
/// The most `http.max_connections` may be: far beyond any scraper's needs (each connection holds
/// an open file).
const MAX_CONNECTIONS: usize = 65_536;

fn listen(layers: &Layers) -> Result<SocketAddr, ConfigError> {
    let Some((text, origin)) = layers.pick(|l| l.listen.clone()) else {
        return Ok(defaults::LISTEN);
    };
    text.parse().map_err(|_| {
        err(
            origin,
            "listen",
            format!(
                "{text:?} is not an address:port such as {} or [::1]:{}",
                defaults::LISTEN,
                defaults::PORT
            ),
        )
    })
}

fn sampling(layers: &Layers) -> Result<Sampling, ConfigError> {
    let (interval, _) = layers.duration(
        "sampling.interval",
        |l| l.sampling.interval,
        defaults::SAMPLING_INTERVAL,
        10 * MS..=HOUR,
    )?;
    let (process_interval, origin) = layers.duration(
        "sampling.process_interval",
        |l| l.sampling.process_interval,
        defaults::process_interval(interval),
        10 * MS..=HOUR,
    )?;
    if process_interval < interval {
        return Err(err(
            origin,
            "sampling.process_interval",
            format!(
                "{} is shorter than sampling.interval ({}); processes cannot be read more often \
                 than the GPUs",
                humantime::format_duration(process_interval),
                humantime::format_duration(interval)
            ),
        ));
    }
    Ok(Sampling {
        interval,
        process_interval,
    })
}

fn nvml(layers: &Layers) -> Result<NvmlConfig, ConfigError> {
    let (retry_interval, _) = layers.duration(
        "nvml.retry_interval",
        |l| l.nvml.retry_interval,
        defaults::NVML_RETRY_INTERVAL,
        100 * MS..=DAY,
    )?;
    let lib = layers.pick(|l| l.nvml.lib.clone());
    if let Some((p, origin)) = &lib {
        if p.as_os_str().is_empty() {
            return Err(err(origin.clone(), "nvml.lib", "is empty".into()));
        }
    }
    Ok(NvmlConfig {
        lib: lib.map(|(p, _)| p),
        retry_interval,
    })
}

fn simulate(layers: &Layers) -> Result<Option<String>, ConfigError> {
    match layers.pick(|l| l.simulate.clone()) {
        Some((s, origin)) if s.trim().is_empty() => Err(err(
            origin,
            "simulate",
            "is empty; use `demo` or the path of a scenario file".into(),
        )),
        Some((s, _)) => Ok(Some(s)),
        None => Ok(None),
    }
}

/// The ledger's persist interval.
fn ledger(layers: &Layers) -> Result<Duration, ConfigError> {
    let (persist_interval, _) = layers.duration(
        "ledger.persist_interval",
        |l| l.ledger.persist_interval,
        defaults::PERSIST_INTERVAL,
        10 * MS..=HOUR,
    )?;
    Ok(persist_interval)
}

fn jobs(layers: &Layers, sampling: &Sampling) -> Result<JobsConfig, ConfigError> {
    let (grace_period, _) = layers.duration(
        "jobs.grace_period",
        |l| l.jobs.grace_period,
        defaults::GRACE_PERIOD,
        Duration::ZERO..=7 * DAY,
    )?;
    let (vanish_after, origin) = layers.duration(
        "jobs.vanish_after",
        |l| l.jobs.vanish_after,
        defaults::vanish_after(sampling.process_interval),
        Duration::ZERO..=DAY,
    )?;
    // Shorter, and a found job would end as soon as one process read missed it (at "0s", at
    // every tick between two reads).
    if vanish_after < sampling.process_interval {
        return Err(err(
            origin,
            "jobs.vanish_after",
            format!(
                "{} is shorter than sampling.process_interval ({}); a found job must be missed by \
                 at least one process read before it ends",
                humantime::format_duration(vanish_after),
                humantime::format_duration(sampling.process_interval)
            ),
        ));
    }
    let (export_labels, origin) = layers.pick_or(|l| l.jobs.export_labels.clone(), Vec::new());
    for k in &export_labels {
        check_job_label(k).map_err(|why| err(origin.clone(), "jobs.export_labels", why))?;
    }
    let max_running_per_user = layers.cap(
        "jobs.max_running_per_user",
        |l| l.jobs.max_running_per_user,
        defaults::MAX_RUNNING_PER_USER,
    )?;
    let max_running = layers.cap(
        "jobs.max_running",
        |l| l.jobs.max_running,
        defaults::MAX_RUNNING,
    )?;
    Ok(JobsConfig {
        grace_period,
        vanish_after,
        export_labels,
        max_running_per_user,
        max_running,
    })
}

/// The job registration socket's path and file mode.
fn socket(layers: &Layers) -> Result<(PathBuf, u32), ConfigError> {
    let path = layers.or(|l| l.socket.clone(), defaults::SOCKET.into());
    let Some((text, origin)) = layers.pick(|l| l.socket_mode.clone()) else {
        return Ok((path, defaults::SOCKET_MODE));
    };
    let mode = u32::from_str_radix(text.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| {
            err(
                origin,
                "socket_mode",
                format!(
                    "{text:?} is not an octal file mode such as \"0{:o}\"",
                    defaults::SOCKET_MODE
                ),
            )
        })?;
    Ok((path, mode))
}

/// The pod socket, off by default. Pods mount its folder, so the job socket must not be there:
/// a pod that reached the job socket could register and end jobs under whatever uid it runs as.
fn pod_socket(layers: &Layers, socket: &Path) -> Result<Option<PathBuf>, ConfigError> {
    let Some((path, origin)) = layers.pick(|l| l.pod_socket.clone()) else {
        return Ok(None);
    };
    if path.as_os_str() == "off" {
        return Ok(None);
    }
    let bad = |problem: String| Err(err(origin.clone(), "pod_socket", problem));
    if path.file_name().is_none() {
        return bad(format!(
            "{path:?} is no socket file path (\"{}\", say, or \"off\")",
            defaults::POD_SOCKET_EXAMPLE
        ));
    }
    if path.parent() == socket.parent() {
        return bad(format!(
            "{} is in the folder of the job socket {}: pods mount the pod socket's folder, so it \
             needs one of its own (\"{}\", say)",
            path.display(),
            socket.display(),
            defaults::POD_SOCKET_EXAMPLE
        ));
    }
    Ok(Some(path))
}

fn attribution(layers: &Layers) -> Result<AttributionConfig, ConfigError> {
    let kubelet_socket = match layers.pick(|l| l.attribution.kubelet_socket.clone()) {
        Some((p, _)) if p.as_os_str() == "off" => None,
        Some((p, _)) => Some(p),
        None => Some(PathBuf::from(defaults::KUBELET_SOCKET)),
    };
    let kubelet_checkpoint = match layers.pick(|l| l.attribution.kubelet_checkpoint.clone()) {
        Some((p, _)) if p.as_os_str() == "off" => None,
        Some((p, _)) => Some(p),
        None => Some(PathBuf::from(defaults::KUBELET_CHECKPOINT)),
    };
    let (scontrol_interval, _) = layers.duration(
        "attribution.scontrol_interval",
        |l| l.attribution.scontrol_interval,
        defaults::SCONTROL_INTERVAL,
        Duration::ZERO..=DAY,
    )?;
    let (kubelet_interval, _) = layers.duration(
        "attribution.kubelet_interval",
        |l| l.attribution.kubelet_interval,
        defaults::KUBELET_INTERVAL,
        100 * MS..=HOUR,
    )?;
    let kube_api = match layers.pick(|l| l.attribution.kube_api.clone()) {
        None => KubeApi::Auto,
        Some((v, origin)) => KubeApi::parse(&v).ok_or_else(|| {
            err(
                origin,
                "attribution.kube_api",
                format!("must be auto, on or off, got {v:?}"),
            )
        })?,
    };
    let kube_node_name = match layers.pick(|l| l.attribution.kube_node_name.clone()) {
        Some((n, origin)) if n.is_empty() || n.len() > 253 || n.contains(char::is_whitespace) => {
            return Err(err(
                origin,
                "attribution.kube_node_name",
                format!("{n:?} is not a node name (1 to 253 characters, no spaces)"),
            ))
        }
        n => n.map(|(n, _)| n),
    };
    let (pairs, origin) = layers.pick_or(|l| l.attribution.kube_labels.clone(), Vec::new());
    let mut kube_labels = Vec::new();
    for pair in &pairs {
        let bad = |why: String| {
            err(
                origin.clone(),
                "attribution.kube_labels",
                format!("{pair:?}: {why}"),
            )
        };
        let Some((job, pod)) = pair.split_once('=') else {
            return Err(bad(
                "must be JOB_LABEL=POD_LABEL, e.g. team=app.kubernetes.io/team".into(),
            ));
        };
        let (job, pod) = (job.trim(), pod.trim());
        check_job_label(job).map_err(&bad)?;
        if !is_pod_label_key(pod) {
            return Err(bad(format!(
                "{pod:?} is not a Kubernetes label key ([prefix/]name: a DNS subdomain prefix, a \
                 name of at most 63 letters, digits, -, _ and .)"
            )));
        }
        kube_labels.push((job.to_string(), pod.to_string()));
    }
    Ok(AttributionConfig {
        proc_root: layers.or(
            |l| l.attribution.proc_root.clone(),
            defaults::PROC_ROOT.into(),
        ),
        cgroup_root: layers.or(
            |l| l.attribution.cgroup_root.clone(),
            defaults::CGROUP_ROOT.into(),
        ),
        scontrol_interval,
        job_map_dir: layers
            .pick(|l| l.attribution.job_map_dir.clone())
            .map(|(p, _)| p),
        kubelet_socket,
        kubelet_resources: layers.or(
            |l| l.attribution.kubelet_resources.clone(),
            defaults::KUBELET_RESOURCES
                .iter()
                .map(|r| r.to_string())
                .collect(),
        ),
        kubelet_checkpoint,
        kubelet_interval,
        kube_api,
        kube_node_name,
        kube_labels,
    })
}

/// Whether `k` may be a job label (a label of `gpucost_job_info`); `Err` says why not.
fn check_job_label(k: &str) -> Result<(), String> {
    let ok = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && !k.starts_with("__")
        && !crate::jobs::RESERVED_LABELS.contains(&k);
    if ok {
        return Ok(());
    }
    Err(format!(
        "{k:?} cannot be a label of gpucost_job_info (letters, digits and _, not starting with a \
         digit or __, and none of {:?})",
        crate::jobs::RESERVED_LABELS
    ))
}

/// A Kubernetes label key: an optional DNS-subdomain prefix and `/`, then a name of 1 to 63
/// letters, digits, `-`, `_` and `.` that starts and ends with a letter or digit
/// (<https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set>).
fn is_pod_label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let alnum_ends = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let name_ok = (1..=63).contains(&name.len())
        && alnum_ends(name)
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let prefix_ok = prefix.is_none_or(|p| {
        (1..=253).contains(&p.len())
            && p.split('.').all(|part| {
                !part.is_empty()
                    && alnum_ends(part)
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            })
    });
    name_ok && prefix_ok
}

fn pricing(layers: &Layers, simulated: bool) -> Result<Pricing, ConfigError> {
    match layers.pick(|l| l.pricing.clone()) {
        Some((v, origin)) => {
            pricing::from_toml_value(&v).map_err(|e| err(origin, &e.key, e.problem))
        }
        // A demo with no prices would show no money: it takes the example config's prices.
        None if simulated => Ok(example_pricing()),
        None => Ok(Pricing::default()),
    }
}

fn bench(layers: &Layers) -> Result<BenchConfig, ConfigError> {
    let (interval, _) = layers.duration(
        "bench.interval",
        |l| l.bench.interval,
        defaults::BENCH_INTERVAL,
        Duration::ZERO..=365 * DAY,
    )?;
    let (min_ratio, origin) = layers.pick_or(|l| l.bench.min_ratio, defaults::BENCH_MIN_RATIO);
    if !(0.0..=1.0).contains(&min_ratio) {
        return Err(err(
            origin,
            "bench.min_ratio",
            format!("must be in [0, 1], got {min_ratio}"),
        ));
    }
    Ok(BenchConfig {
        interval,
        min_ratio,
    })
}

/// The TCP port's limits. hyper counts the header timeout from the moment a connection waits
/// for a request, so a silent connection meets it too: an idle timeout longer than the header
/// timeout could never apply to one, and is refused rather than silently ignored.
fn http(layers: &Layers) -> Result<HttpConfig, ConfigError> {
    let (max_connections, origin) =
        layers.pick_or(|l| l.http.max_connections, defaults::HTTP_MAX_CONNECTIONS);
    if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
        return Err(err(
            origin,
            "http.max_connections",
            format!("{max_connections} is out of range: allowed 1 to {MAX_CONNECTIONS}"),
        ));
    }
    let (header_timeout, _) = layers.duration(
        "http.header_timeout",
        |l| l.http.header_timeout,
        defaults::HTTP_HEADER_TIMEOUT,
        100 * MS..=HOUR,
    )?;
    let (idle_timeout, origin) = layers.duration(
        "http.idle_timeout",
        |l| l.http.idle_timeout,
        defaults::HTTP_IDLE_TIMEOUT,
        100 * MS..=HOUR,
    )?;
    if idle_timeout > header_timeout {
        return Err(err(
            origin,
            "http.idle_timeout",
            format!(
                "{} is longer than http.header_timeout ({}): a connection waiting for a request \
                 is closed at the header timeout, so it would never be idle that long",
                humantime::format_duration(idle_timeout),
                humantime::format_duration(header_timeout)
            ),
        ));
    }
    Ok(HttpConfig {
        max_connections,
        header_timeout,
        idle_timeout,
        hide_identities: layers.or(|l| l.http.hide_identities, defaults::HTTP_HIDE_IDENTITIES),
    })
}
