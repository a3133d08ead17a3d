# syntax=docker/dockerfile:1
#
# The gpucost agent image, for the Kubernetes DaemonSet in deploy/kubernetes/.
#
#   docker build -t REGISTRY/gpucost:0.1.0 .
#
# Two stages: the build uses Rust's Debian image; the runtime image holds the binary and CA
# certificates on debian:bookworm-slim (same glibc as the build), nothing else. The agent needs no
# network at run time besides its own listener. NVML (libnvidia-ml.so.1) is not in the image: the
# NVIDIA container runtime mounts the node driver's copy (NVIDIA_DRIVER_CAPABILITIES=utility).
#
# The image runs as root on purpose: the agent reads /proc/PID/environ of other users'
# processes (CAP_DAC_READ_SEARCH and CAP_SYS_PTRACE, which the DaemonSet grants while dropping
# every other capability) and owns the node folders it writes (the ledger, the job socket). A
# non-root user would need more privileges for that, not fewer.

# Any Rust >= 1.85, the workspace's rust-version.
ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The caches keep crates.io downloads and build outputs between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gpucost \
    && install -D -m 0755 target/release/gpucost /out/gpucost

FROM debian:bookworm-slim
# Unpinned on purpose: the newest security fixes of the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/gpucost /usr/local/bin/gpucost
COPY deploy/config.example.toml /usr/share/doc/gpucost/config.example.toml
EXPOSE 10119
ENTRYPOINT ["/usr/local/bin/gpucost"]
CMD ["agent"]
