//! Generates the pod-resources messages, client and server from `proto/v1/api.proto`. protox
//! parses the proto in Rust, so the build needs no `protoc`.

const PROTO: &str = "proto/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    tonic_prost_build::configure()
        // Callers dial the kubelet's unix socket themselves, so no `connect(uri)` helper.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
