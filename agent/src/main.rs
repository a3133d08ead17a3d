//! The `gpucost` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gpucost::cli;
use gpucost_core::config::{self, Layer, Origin};
use gpucost_core::report::whatif::WhatIfOptions;

#[derive(Parser)]
#[command(
    name = "gpucost",
    version,
    about = "What each GPU training run costs, and where the money goes"
)]
struct Cli {
    #[command(subcommand)]
    command: CliCommand,
}

#[derive(Subcommand)]
enum CliCommand {
    /// Run the node agent: sample the GPUs, serve /metrics and the API.
    Agent(AgentArgs),
    /// Run a command as a tracked job: `gpucost run --name exp1 -- python train.py`.
    Run(RunArgs),
    /// Scheduler hooks (Slurm prolog/epilog); never fail the hook.
    #[command(subcommand)]
    Job(JobCommand),
    /// Per-job cost breakdown from the ledger.
    Report(ReportArgs),
    /// Achieved FLOP/s per precision and memory bandwidth of each GPU, now.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Only this GPU: its index as the agent's `gpu` label shows it (NVML's), or its UUID
    #[arg(long, value_name = "N|UUID")]
    gpu: Option<String>,
    /// JSON instead of a table
    #[arg(long)]
    json: bool,
    /// At most 3 s per GPU instead of 10
    #[arg(long, conflicts_with = "duration")]
    quick: bool,
    /// Sustained: about this long per GPU (10s to 1h, e.g. 60s), each row holding its load
    /// for its share; reports each row's median, spread, and the clock and power it settled at
    #[arg(long, value_name = "D", value_parser = cli::bench::parse_duration)]
    duration: Option<std::time::Duration>,
    /// Path of libnvidia-ml, for clocks and power during the run
    #[arg(long, value_name = "PATH")]
    nvml_lib: Option<PathBuf>,
}

#[derive(Args)]
struct ReportArgs {
    /// The agent's state directory [default: state_dir of the config, else /var/lib/gpucost]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Only jobs running since: a duration (7d, 36h) or a UTC date (2026-11-01); with
    /// --prometheus, the window the report covers [default there: 30d]
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// The whole fleet's report from Prometheus (http://host:9090), summed over every node
    /// that exported each job, instead of this node's ledger
    #[arg(long, value_name = "URL", conflicts_with = "state_dir")]
    prometheus: Option<String>,
    /// Only this job
    #[arg(long, value_name = "ID")]
    job: Option<String>,
    /// One row per value of a job label: label:KEY (a sweep's or a team's total)
    #[arg(long, value_name = "label:KEY")]
    group_by: Option<String>,
    /// table, json or csv
    #[arg(long, default_value = "table")]
    format: String,
    /// Compare renting these GPUs with buying them, from the observed use and [pricing]
    #[arg(long)]
    breakeven: bool,
    /// Add what each job (or group) would have cost on spot or reserved capacity, at the
    /// cheapest tariff, in BF16 instead of FP32, and without its idle GPU time
    #[arg(long)]
    what_if: bool,
    /// With --what-if: the share of a spot run done again after interruptions (0 to 1)
    #[arg(long, value_name = "RATIO", default_value_t = 0.1, value_parser = ratio)]
    spot_rerun: f64,
    /// Config file for [pricing] and state_dir [default: /etc/gpucost/config.toml, if present]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// Job name [default: the command's name]
    #[arg(long)]
    name: Option<String>,
    /// A label KEY=VALUE (repeatable)
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = cli::parse_label)]
    labels: Vec<(String, String)>,
    /// The agent's socket [default: /run/gpucost/agent.sock; env: GPUCOST_SOCKET]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The command and its arguments
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Subcommand)]
enum JobCommand {
    /// Register a job (a Slurm prolog: reads SLURM_JOB_ID, SLURM_JOB_USER, SLURM_JOB_UID, SLURM_JOB_GPUS)
    Start {
        /// Job id [default: SLURM_JOB_ID, else GPUCOST_JOB_ID]
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// The job's user (root only) [default: SLURM_JOB_USER]
        #[arg(long)]
        user: Option<String>,
        /// The job's uid (root only) [default: SLURM_JOB_UID]
        #[arg(long)]
        uid: Option<u32>,
        /// GPUs allocated, indices or UUIDs, comma-separated [default: SLURM_JOB_GPUS]
        #[arg(long)]
        gpus: Option<String>,
        #[arg(long = "label", value_name = "KEY=VALUE", value_parser = cli::parse_label)]
        labels: Vec<(String, String)>,
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The agent's state directory, whose spool/ keeps what the agent did not get
        /// [default: GPUCOST_STATE_DIR, else /var/lib/gpucost]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
    /// End a job (a Slurm epilog)
    End {
        /// Job id [default: SLURM_JOB_ID, else GPUCOST_JOB_ID]
        #[arg(long)]
        id: Option<String>,
        /// The job's exit code, when known (non-zero: failed) [default in a Slurm epilog:
        /// SLURM_JOB_EXIT_CODE2, else `scontrol show job`]
        #[arg(long)]
        exit_code: Option<i32>,
        /// succeeded, failed, cancelled, preempted or unknown
        #[arg(long)]
        outcome: Option<String>,
        /// Why it failed: exit_code, signal, time_limit, oom or node_fail
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// The agent's state directory, whose spool/ keeps what the agent did not get
        /// [default: GPUCOST_STATE_DIR, else /var/lib/gpucost]
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct AgentArgs {
    /// Config file [default: /etc/gpucost/config.toml, if present; env: GPUCOST_CONFIG]
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address for /metrics and the API [default: 0.0.0.0:10119]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Path of libnvidia-ml to load [default: libnvidia-ml.so.1 through the dynamic loader]
    #[arg(long, value_name = "PATH")]
    nvml_lib: Option<PathBuf>,
    /// Run on a simulated node: `demo`, or a scenario file (see sim/README.md)
    #[arg(long, value_name = "SCENARIO")]
    simulate: Option<String>,
    /// Where the ledger lives [default: /var/lib/gpucost]
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The job registration socket [default: /run/gpucost/agent.sock; env: GPUCOST_SOCKET]
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Also write what is read, as a scenario that `--simulate FILE` replays (rewritten every
    /// persist interval, less often once long, and at exit)
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
}

/// The log filter `GPUCOST_LOG` asks for (`info` when unset or not a filter). kube-rs's client
/// logs every failed request at ERROR; the agent says what failed itself, once, so the
/// client's lines are off unless the filter names `kube_client`.
fn log_filter(spec: Option<&str>) -> tracing_subscriber::EnvFilter {
    let spec = spec.unwrap_or("info");
    let spec = if spec.contains("kube_client") {
        spec.to_string()
    } else {
        format!("{spec},kube_client=off")
    };
    tracing_subscriber::EnvFilter::try_new(spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube_client=off"))
}

fn main() -> ExitCode {
    // CUDA numbers GPUs fastest first unless told otherwise, NVML by PCI bus; the benchmarks read
    // a GPU through both, so CUDA is made to count like NVML (before any thread starts).
    if std::env::var_os("CUDA_DEVICE_ORDER").is_none() {
        std::env::set_var("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
    }
    let cli = Cli::parse();
    let filter = log_filter(std::env::var("GPUCOST_LOG").ok().as_deref());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        CliCommand::Agent(args) => agent(args),
        CliCommand::Run(a) => exit_code(cli::run::run(cli::run::RunArgs {
            name: a.name,
            labels: a.labels.into_iter().collect(),
            socket: cli::socket_path(a.socket),
            command: a.command,
        })),
        CliCommand::Job(JobCommand::Start {
            id,
            name,
            user,
            uid,
            gpus,
            labels,
            socket,
            state_dir,
        }) => exit_code(cli::job::start(cli::job::StartArgs {
            id,
            name,
            user,
            uid,
            gpus,
            labels: labels.into_iter().collect(),
            socket: cli::socket_path(socket),
            state_dir: cli::hook_state_dir(state_dir),
        })),
        CliCommand::Report(a) => report(a),
        CliCommand::Bench(a) => exit_code(cli::bench::run(cli::bench::BenchArgs {
            gpu: a.gpu,
            json: a.json,
            pace: match (a.quick, a.duration) {
                (_, Some(d)) => gpucost_kernels::suite::Pace::Sustained(d),
                (true, None) => gpucost_kernels::suite::Pace::Quick,
                (false, None) => gpucost_kernels::suite::Pace::Normal,
            },
            nvml_lib: a.nvml_lib,
        })),
        CliCommand::Job(JobCommand::End {
            id,
            exit_code: code,
            outcome,
            reason,
            socket,
            state_dir,
        }) => exit_code(cli::job::end(cli::job::EndArgs {
            id,
            exit_code: code,
            outcome,
            reason,
            socket: cli::socket_path(socket),
            state_dir: cli::hook_state_dir(state_dir),
        })),
    }
}

fn report(a: ReportArgs) -> ExitCode {
    let format = match a.format.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("gpucost: {e}");
            return ExitCode::from(2);
        }
    };
    let (path, explicit) = cli::config_path(a.config);
    let file = match config::file_layer(&path, explicit) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("gpucost: {e}");
            return ExitCode::from(2);
        }
    };
    let mut layers = vec![(Origin::File(path), file)];
    if let Some(dir) = cli::report_state_dir() {
        let l = Layer {
            state_dir: Some(dir),
            ..Layer::default()
        };
        layers.insert(0, (Origin::UserDefault, l));
    }
    if let Some(dir) = a.state_dir {
        let l = Layer {
            state_dir: Some(dir),
            ..Layer::default()
        };
        layers.push((Origin::Flag("state-dir"), l));
    }
    let cfg = match config::resolve(&layers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpucost: {e}");
            return ExitCode::from(2);
        }
    };
    let args = cli::report::ReportArgs {
        state_dir: cfg.state_dir,
        prometheus: a.prometheus,
        since: a.since,
        job: a.job,
        group_by: a.group_by,
        format,
        breakeven: a.breakeven,
        what_if: a.what_if.then_some(WhatIfOptions {
            spot_rerun: a.spot_rerun,
        }),
        pricing: cfg.pricing,
        pricing_named: explicit,
    };
    match cli::report::report(args) {
        Ok(text) => {
            use std::io::Write;
            // `gpucost report | head` closes the pipe early: the reader has what it wanted,
            // so that ends the report quietly, as it does for other command-line tools.
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("gpucost: cannot write the report: {e}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("gpucost: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A share from 0 to 1, for clap.
fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share from 0 to 1 (10% is 0.1)")),
    }
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn agent(args: AgentArgs) -> ExitCode {
    // A mistyped variable would otherwise be ignored without a word (its value is not logged).
    let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
    for (name, closest) in config::unknown_env_vars(names) {
        tracing::warn!(
            "environment variable {name} is not one gpucost reads, ignored; did you mean {closest}?"
        );
    }
    let record = args.record.clone();
    if let Some(path) = &record {
        // Bad input, like a bad config: said before anything starts.
        let open = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path);
        if let Err(e) = open {
            eprintln!(
                "gpucost: flag --record: cannot write {}: {e}",
                path.display()
            );
            return ExitCode::from(2);
        }
    }
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpucost: {e}");
            return ExitCode::from(2);
        }
    };
    match gpucost::agent::run(config, record) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpucost: {e:#}");
            // A bad scenario is bad input, like a bad config; another agent in the way is a
            // setup to fix, not a failure to retry.
            if e.downcast_ref::<gpucost_sim::ScenarioError>().is_some()
                || e.downcast_ref::<gpucost::agent::InUse>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(args: AgentArgs) -> Result<config::Config, config::ConfigError> {
    let (path, explicit) = cli::config_path(args.config);
    let mut layers = vec![(
        Origin::File(path.clone()),
        config::file_layer(&path, explicit)?,
    )];
    // Not root: the user's own places, under everything that names one.
    if let Some(u) = cli::current_user_paths() {
        let l = Layer {
            state_dir: Some(u.state_dir),
            socket: Some(u.socket),
            ..Layer::default()
        };
        layers.insert(0, (Origin::UserDefault, l));
    }
    layers.extend(config::env_layer(|v| std::env::var(v).ok())?);
    let flag = |name, layer| (Origin::Flag(name), layer);
    if let Some(listen) = args.listen {
        layers.push(flag(
            "listen",
            Layer {
                listen: Some(listen),
                ..Layer::default()
            },
        ));
    }
    if let Some(lib) = args.nvml_lib {
        let mut l = Layer::default();
        l.nvml.lib = Some(lib);
        layers.push(flag("nvml-lib", l));
    }
    if let Some(simulate) = args.simulate {
        layers.push(flag(
            "simulate",
            Layer {
                simulate: Some(simulate),
                ..Layer::default()
            },
        ));
    }
    if let Some(dir) = args.state_dir {
        let l = Layer {
            state_dir: Some(dir),
            ..Layer::default()
        };
        layers.push(flag("state-dir", l));
    }
    if let Some(socket) = args.socket {
        let l = Layer {
            socket: Some(socket),
            ..Layer::default()
        };
        layers.push(flag("socket", l));
    }
    config::resolve(&layers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18, item 4: `gpucost bench --duration D`, sustained; not with `--quick`.
    #[test]
    fn issue_18_bench_takes_a_duration() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["gpucost", "bench"].iter().chain(args)).map(|c| c.command)
        };
        match parse(&["--duration", "60s", "--json"]) {
            Ok(CliCommand::Bench(a)) => {
                assert_eq!(a.duration, Some(std::time::Duration::from_secs(60)));
                assert!(a.json && !a.quick);
            }
            _ => panic!("gpucost bench --duration 60s --json"),
        }
        match parse(&[]) {
            Ok(CliCommand::Bench(a)) => assert_eq!(a.duration, None),
            _ => panic!("gpucost bench"),
        }
        for bad in [
            &["--duration", "60s", "--quick"][..],
            &["--duration", "5s"],
            &["--duration"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
