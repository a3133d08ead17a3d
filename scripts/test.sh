#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing, so it works
# on a fresh machine; safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# promtool (Debian package `prometheus`) checks the /metrics output in the integration tests.
if ! command -v promtool >/dev/null 2>&1; then
  echo "test.sh: installing promtool (Debian package prometheus)..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# NVRTC, ptxas and nvdisasm (PyPI wheels, pinned) compile and inspect the CUDA kernels in CI.
echo "test.sh: CUDA compilers for the kernel checks"
bash scripts/install-cuda-tools.sh

echo "test.sh: formatting"
cargo fmt --all -- --check
echo "test.sh: lints"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
echo "test.sh: tests"
cargo test --workspace --locked
echo "test.sh: fuzzing the config, the cgroup-path parser and the API bodies (20 s each)"
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
# cargo fuzz needs unstable compiler flags; RUSTC_BOOTSTRAP lets this stable toolchain take them.
for target in config cgroup_path api_body; do
  (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" -- -max_total_time=20 -rss_limit_mb=2048 2>&1 | tail -n 2)
done
echo "test.sh: deployment"
./scripts/check-deploy.sh
