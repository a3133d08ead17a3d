//! `fake-kubelet --socket PATH --pods FILE.json [--checkpoint FILE]`: serves the pods in
//! FILE.json on the kubelet pod-resources API at PATH until Ctrl-C / SIGTERM, and writes their
//! UIDs to the device-manager checkpoint FILE when given. For demos and manual testing of the agent's
//! Kubernetes attribution without a cluster. The JSON shape is in README.md.

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: fake-kubelet --socket PATH --pods FILE.json [--checkpoint FILE]";

type Args = (PathBuf, PathBuf, Option<PathBuf>);

fn parse_args() -> Result<Args, String> {
    let (mut socket, mut pods, mut checkpoint) = (None, None, None);
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.to_str() {
            Some("--socket") => &mut socket,
            Some("--pods") => &mut pods,
            Some("--checkpoint") => &mut checkpoint,
            Some("-h" | "--help") => return Err(USAGE.into()),
            _ => return Err(format!("unexpected argument {arg:?}\n{USAGE}")),
        };
        let value = args
            .next()
            .ok_or_else(|| format!("{arg:?} needs a value\n{USAGE}"))?;
        *slot = Some(PathBuf::from(value));
    }
    match (socket, pods) {
        (Some(socket), Some(pods)) => Ok((socket, pods, checkpoint)),
        _ => Err(USAGE.into()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let (socket, pods_file, checkpoint) = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let pods = match std::fs::read_to_string(&pods_file)
        .map_err(|e| e.to_string())
        .and_then(|text| fake_kubelet::pods_from_json(&text).map_err(|e| e.to_string()))
    {
        Ok(pods) => pods,
        Err(e) => {
            eprintln!("fake-kubelet: {}: {e}", pods_file.display());
            return ExitCode::from(2);
        }
    };
    let count = pods.len();
    let fake = fake_kubelet::FakeKubelet::start(&socket, pods).await;
    if let Some(path) = &checkpoint {
        fake.write_checkpoint_to(path);
    }
    eprintln!(
        "fake-kubelet: serving {count} pod(s) on {}",
        socket.display()
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    fake.shutdown().await;
    ExitCode::SUCCESS
}
