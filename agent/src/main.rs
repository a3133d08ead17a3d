//! The `gpucost` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use gpucost::config::{self, Layer, Origin};

#[derive(Parser)]
#[command(
    name = "gpucost",
    version,
    about = "What each GPU training run costs, and where the money goes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node agent: sample the GPUs, serve /metrics and the API.
    Agent(AgentArgs),
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("GPUCOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::Agent(args) => agent(args),
    }
}

fn agent(args: AgentArgs) -> ExitCode {
    let config = match load_config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gpucost: {e}");
            return ExitCode::from(2);
        }
    };
    match gpucost::agent::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpucost: {e:#}");
            // A bad scenario is bad input, like a bad config.
            if e.downcast_ref::<gpucost_sim::ScenarioError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn load_config(args: AgentArgs) -> Result<config::Config, config::ConfigError> {
    let env_path = std::env::var_os("GPUCOST_CONFIG").map(PathBuf::from);
    let (path, explicit) = match args.config.or(env_path) {
        Some(p) => (p, true),
        None => (PathBuf::from(config::DEFAULT_CONFIG_PATH), false),
    };
    let mut layers = vec![(
        Origin::File(path.clone()),
        config::file_layer(&path, explicit)?,
    )];
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
    config::resolve(&layers)
}
