//! `gpucost report --prometheus URL`: the report of every node at once, from the series the
//! agents export, through Prometheus's HTTP query API (`/api/v1/query`).
//!
//! Each job total is what its counter grew by in the window: its last value in the window less
//! its last value before the window (0 for a job that started in it), summed over the nodes that
//! export the job (a multi-node job's shares add up). Counters are the agents' own totals, which
//! never go backwards and resume after a restart, so no `rate`/`increase` extrapolation is
//! involved. Identity (name, user, scheduler, the exported labels) comes from `gpucost_job_info`,
//! GPUs from `gpucost_gpu_info`, the currency from `gpucost_pricing_info`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use gpucost_core::jobs::{JobRecord, Outcome, Scheduler, Usage};

/// How long one query may take, connection included.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A Prometheus server's query API.
pub(super) struct Prometheus {
    host: String,
    port: u16,
    /// The path prefix (`/prometheus` behind a proxy), without a trailing `/`.
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Prometheus {
    /// `url` is `http://host[:port][/prefix]`, as Grafana's data source would have it.
    pub fn new(url: &str) -> anyhow::Result<Prometheus> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => bail!(
                "--prometheus {url:?}: {scheme} is not supported, only http (put a local proxy, \
                 or kubectl port-forward, in front of a TLS endpoint)"
            ),
            None => url,
        };
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>()
                    .with_context(|| format!("--prometheus {url:?}: {p:?} is not a port"))?,
            ),
            _ => (authority.to_string(), 80),
        };
        if host.is_empty() {
            bail!("--prometheus {url:?}: no host (expected http://host:9090)");
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Prometheus {
            host,
            port,
            prefix: prefix.to_string(),
            runtime,
        })
    }

    /// The instant vector `expr` evaluates to at `time` (unix seconds).
    pub fn query(&self, expr: &str, time: f64) -> anyhow::Result<Vec<Sample>> {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .append_pair("time", &format!("{time:.3}"))
            .finish();
        let text = self
            .runtime
            .block_on(async {
                tokio::time::timeout(QUERY_TIMEOUT, self.post("/api/v1/query", body)).await
            })
            .map_err(|_| anyhow!("no answer in {} s", QUERY_TIMEOUT.as_secs()))
            .and_then(|r| r)
            .with_context(|| format!("Prometheus at {}:{}: {expr}", self.host, self.port))?;
        parse_vector(&text).with_context(|| format!("Prometheus's answer to {expr}"))
    }

    async fn post(&self, path: &str, body: String) -> anyhow::Result<String> {
        let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        let connection = tokio::spawn(conn);
        let request = hyper::Request::post(format!("{}{path}", self.prefix))
            .header(hyper::header::HOST, format!("{}:{}", self.host, self.port))
            .header(
                hyper::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        connection.abort();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        // Prometheus answers errors (a bad query: 400, 422) with a JSON body that says why.
        if !status.is_success() && !text.trim_start().starts_with('{') {
            bail!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            );
        }
        Ok(text)
    }
}

/// The samples of a `/api/v1/query` answer, or the error it reports.
fn parse_vector(text: &str) -> anyhow::Result<Vec<Sample>> {
    let doc: serde_json::Value =
        serde_json::from_str(text).context("not the JSON of Prometheus's query API")?;
    if doc["status"] != "success" {
        bail!(
            "{}: {}",
            doc["errorType"].as_str().unwrap_or("error"),
            doc["error"].as_str().unwrap_or("(no reason given)")
        );
    }
    if doc["data"]["resultType"] != "vector" {
        bail!(
            "expected an instant vector, got {}",
            doc["data"]["resultType"]
        );
    }
    let mut out = Vec::new();
    for r in doc["data"]["result"].as_array().into_iter().flatten() {
        let labels = r["metric"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        // [time, "value"]; Prometheus writes NaN and the infinities as text too.
        let value = r["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("a sample without a value: {r}"))?;
        out.push(Sample { labels, value });
    }
    Ok(out)
}

/// How much counter `metric` grew in the `window_s` seconds before `at`, by `by` labels.
fn growth(metric: &str, by: &str, window_s: u64) -> String {
    format!(
        "sum by ({by}) (last_over_time({metric}[{window_s}s]) - \
         ((last_over_time({metric}[10m] offset {window_s}s) + 0) \
         or (last_over_time({metric}[{window_s}s]) * 0)))"
    )
}

/// What the fleet's series say: the jobs that had series in the window (their usage being what
/// their counters grew by in it; `per_gpu` keyed by the node, `instance`), the GPUs (model per
/// GPU, and each node's model where it has only one), the currency.
pub(super) struct Fleet {
    pub jobs: Vec<JobRecord>,
    pub gpu_models: Vec<String>,
    /// A node (`instance`) -> its GPU model, where all its GPUs are of one model.
    pub model_of: BTreeMap<String, String>,
    pub currency: Option<String>,
    /// The jobs whose pipes every node that held them measured: the `bf16` lever's input, which
    /// the usage read here (no FLOP counts) cannot tell.
    pub pipes_measured: BTreeSet<String>,
}

/// A field of a [`Usage`].
type Field = fn(&mut Usage) -> &mut f64;

/// The job `id`, new (named by its id, started at the window's start, outcome unknown until a
/// series says otherwise) if not there yet.
fn entry<'a>(
    jobs: &'a mut BTreeMap<String, JobRecord>,
    id: &str,
    window_start: f64,
) -> &'a mut JobRecord {
    jobs.entry(id.to_string()).or_insert_with(|| JobRecord {
        id: id.to_string(),
        name: id.to_string(),
        user: String::new(),
        uid: None,
        scheduler: Scheduler::Gpucost,
        labels: BTreeMap::new(),
        started_at: window_start,
        ended_at: None,
        outcome: Outcome::Unknown,
        exit_code: None,
        signal: None,
        reason: None,
        usage: Usage::default(),
        per_gpu: BTreeMap::new(),
        registration: None,
        progress: None,
    })
}

/// Reads the fleet over the `window_s` seconds before `now`.
pub(super) fn read_fleet(p: &Prometheus, now: f64, window_s: u64) -> anyhow::Result<Fleet> {
    let w = window_s;
    let q = |expr: &str| p.query(expr, now);
    let mut jobs: BTreeMap<String, JobRecord> = BTreeMap::new();
    let window_start = now - w as f64;
    // Identity: the last info series of each job (any node's; they agree).
    for s in q(&format!("last_over_time(gpucost_job_info[{w}s])"))? {
        let Some(id) = s.labels.get("job_id").cloned() else {
            continue;
        };
        let j = entry(&mut jobs, &id, window_start);
        for (k, v) in &s.labels {
            match k.as_str() {
                "job_id" | "instance" | "job" | "__name__" => {}
                "name" => j.name = v.clone(),
                "user" => j.user = v.clone(),
                "scheduler" => {
                    if let Some(sc) = Scheduler::parse(v) {
                        j.scheduler = sc;
                    }
                }
                // The labels the agents export (`jobs.export_labels`); empty is unset.
                _ if !v.is_empty() => {
                    j.labels.insert(k.clone(), v.clone());
                }
                _ => {}
            }
        }
    }
    // Usage: each total's growth in the window, per job and node.
    let plain: [(&str, Field); 5] = [
        ("gpucost_job_gpu_seconds_total", |u| &mut u.gpu_seconds),
        ("gpucost_job_energy_joules_total", |u| &mut u.energy_j),
        ("gpucost_job_carbon_grams_total", |u| &mut u.carbon_g),
        ("gpucost_job_idle_gpu_seconds_total", |u| {
            &mut u.idle_gpu_seconds
        }),
        ("gpucost_job_fp32_gpu_seconds_total", |u| {
            &mut u.fp32_seconds
        }),
    ];
    let mut add = |id: &str, instance: &str, v: f64, field: &dyn Fn(&mut Usage) -> &mut f64| {
        let j = entry(&mut jobs, id, window_start);
        *field(&mut j.usage) += v;
        *field(j.per_gpu.entry(instance.to_string()).or_default()) += v;
    };
    let id_of = |s: &Sample| {
        (
            s.labels.get("job_id").cloned().unwrap_or_default(),
            s.labels.get("instance").cloned().unwrap_or_default(),
        )
    };
    for (metric, field) in plain {
        for s in q(&growth(metric, "job_id, instance", w))? {
            let (id, instance) = id_of(&s);
            add(&id, &instance, s.value, &field);
        }
    }
    for s in q(&growth(
        "gpucost_job_cost_total",
        "job_id, instance, component",
        w,
    ))? {
        let (id, instance) = id_of(&s);
        let field: Field = match s.labels.get("component").map(String::as_str) {
            Some("gpu_time") => |u| &mut u.cost_gpu_time,
            Some("energy") => |u| &mut u.cost_energy,
            Some("overhead") => |u| &mut u.cost_overhead,
            _ => continue,
        };
        add(&id, &instance, s.value, &field);
    }
    // The cost a failed or preempted run lost since its last checkpoint, by job.
    let mut lost: BTreeMap<String, f64> = BTreeMap::new();
    for s in q(&growth(
        "gpucost_job_wasted_cost_total",
        "job_id, instance, reason",
        w,
    ))? {
        let (id, instance) = id_of(&s);
        let field: Field = match s.labels.get("reason").map(String::as_str) {
            Some("idle") => |u| &mut u.idle_cost,
            Some("fp32") => |u| &mut u.fp32_saving,
            Some("failed" | "preempted") => {
                *lost.entry(id).or_default() += s.value.max(0.0);
                continue;
            }
            _ => continue,
        };
        add(&id, &instance, s.value, &field);
    }
    for s in q(&growth("gpucost_job_tokens_total", "job_id", w))? {
        if let Some(id) = s.labels.get("job_id") {
            let j = entry(&mut jobs, id, window_start);
            let p = j.progress.get_or_insert_with(Default::default);
            p.tokens += s.value.max(0.0) as u64;
        }
    }
    // Outcome and times, where the agents export them.
    for s in q(&format!(
        "max by (job_id) (last_over_time(gpucost_job_running[{w}s]))"
    ))? {
        if let Some(id) = s.labels.get("job_id") {
            if s.value > 0.0 {
                entry(&mut jobs, id, window_start).outcome = Outcome::Running;
            }
        }
    }
    for s in q(&format!(
        "max by (job_id) (last_over_time(gpucost_job_failed[{w}s]))"
    ))? {
        if let Some(id) = s.labels.get("job_id") {
            let j = entry(&mut jobs, id, window_start);
            if s.value > 0.0 && j.outcome != Outcome::Running {
                j.outcome = Outcome::Failed;
            }
        }
    }
    // The outcome series says more (cancelled, preempted) where the agents export it; a job's
    // nodes may disagree (one part failed, the others were ended): the most telling one wins.
    let rank = |o: Outcome| match o {
        Outcome::Running => 5,
        Outcome::Failed => 4,
        Outcome::Succeeded => 1,
        Outcome::Unknown => 0,
        _ => 3,
    };
    for s in q(&format!("last_over_time(gpucost_job_outcome[{w}s]) > 0"))? {
        let (Some(id), Some(o)) = (
            s.labels.get("job_id"),
            s.labels.get("outcome").and_then(|o| Outcome::parse(o)),
        ) else {
            continue;
        };
        let j = entry(&mut jobs, id, window_start);
        if rank(o) > rank(j.outcome) {
            j.outcome = o;
        }
    }
    for s in q(&format!(
        "min by (job_id) (last_over_time(gpucost_job_start_time_seconds[{w}s]))"
    ))? {
        if let Some(id) = s.labels.get("job_id") {
            entry(&mut jobs, id, window_start).started_at = s.value;
        }
    }
    for s in q(&format!(
        "max by (job_id) (last_over_time(gpucost_job_end_time_seconds[{w}s]))"
    ))? {
        if let Some(id) = s.labels.get("job_id") {
            let j = entry(&mut jobs, id, window_start);
            if j.outcome != Outcome::Running {
                j.ended_at = Some(s.value);
            }
        }
    }
    // What the lost cost says of the last checkpoint: the job's totals less what it lost then
    // (so that `JobRecord::waste` gives back what the agents counted as lost).
    for (id, lost) in lost {
        if let Some(j) = jobs.get_mut(&id) {
            let u = &j.usage;
            let checkpoint = gpucost_core::jobs::Checkpoint {
                at: j.ended_at.unwrap_or(now),
                cost: u.total_cost() - lost,
                idle_cost: u.idle_cost,
                fp32_saving: u.fp32_saving,
            };
            j.progress.get_or_insert_with(Default::default).checkpoint = Some(checkpoint);
        }
    }
    // An agent exports a job's bf16 lever (gpucost_job_savings_potential) only where it
    // measured the job's pipes.
    let bf16: BTreeSet<(String, String)> = q(&format!(
        "last_over_time(gpucost_job_savings_potential{{lever=\"bf16\"}}[{w}s])"
    ))?
    .iter()
    .map(id_of)
    .collect();
    let pipes_measured = jobs
        .values()
        .filter(|j| {
            j.per_gpu.iter().all(|(instance, u)| {
                u.gpu_seconds <= 0.0 || bf16.contains(&(j.id.clone(), instance.clone()))
            })
        })
        .map(|j| j.id.clone())
        .collect();
    // GPUs, and each node's model where it has one.
    let mut gpu_models = Vec::new();
    let mut node_models: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for s in q(&format!("last_over_time(gpucost_gpu_info[{w}s])"))? {
        // A MIG instance is part of its physical GPU, which is the one to count.
        let uuid = s
            .labels
            .get("parent_uuid")
            .filter(|p| !p.is_empty())
            .or_else(|| s.labels.get("uuid"))
            .cloned()
            .unwrap_or_default();
        let instance = s.labels.get("instance").cloned().unwrap_or_default();
        let model = s.labels.get("model").cloned().unwrap_or_default();
        if seen.insert((instance.clone(), uuid)) {
            gpu_models.push(model.clone());
            node_models.entry(instance).or_default().push(model);
        }
    }
    let model_of = node_models
        .into_iter()
        .filter_map(|(node, mut models)| {
            models.dedup();
            (models.len() == 1).then(|| (node, models.remove(0)))
        })
        .collect();
    let currency = q(&format!("last_over_time(gpucost_pricing_info[{w}s])"))?
        .into_iter()
        .find_map(|s| s.labels.get("currency").cloned());
    // A job is in the window when it used anything in it.
    let mut jobs: Vec<JobRecord> = jobs
        .into_values()
        .filter(|j| j.usage.gpu_seconds > 0.0 || j.usage.total_cost() > 0.0)
        .collect();
    jobs.sort_by(|a, b| a.started_at.total_cmp(&b.started_at).then(a.id.cmp(&b.id)));
    Ok(Fleet {
        jobs,
        gpu_models,
        model_of,
        currency,
        pipes_measured,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_answers() {
        let p = Prometheus::new("http://prom.example:9090/prometheus/").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.prefix.as_str()),
            ("prom.example", 9090, "/prometheus")
        );
        let p = Prometheus::new("localhost").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("localhost", 80));
        let p = Prometheus::new("http://[::1]:9090").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 9090));
        let e = Prometheus::new("https://prom:443")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("only http"), "{e}");
        assert!(Prometheus::new("http://prom:ninety").is_err());

        let ok = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"job_id":"7","instance":"a:1"},"value":[1700000000.0,"2.5"]},
            {"metric":{},"value":[1700000000.0,"NaN"]}]}}"#;
        let v = parse_vector(ok).unwrap();
        assert_eq!(v[0].labels["job_id"], "7");
        assert_eq!(v[0].value, 2.5);
        assert!(v[1].value.is_nan());
        let bad = r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        let e = parse_vector(bad).unwrap_err().to_string();
        assert!(e.contains("bad_data") && e.contains("parse error"), "{e}");
        assert!(parse_vector("<html>").is_err());
    }

    #[test]
    fn growth_is_last_value_less_the_one_before_the_window() {
        let q = growth("m", "job_id", 3600);
        assert_eq!(
            q,
            "sum by (job_id) (last_over_time(m[3600s]) - ((last_over_time(m[10m] offset 3600s) + 0) \
             or (last_over_time(m[3600s]) * 0)))"
        );
    }
}
