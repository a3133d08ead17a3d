#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need when it is missing, so it works
# on a fresh machine; safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# step NAME: starts a step; the time each took is printed as it ends and in a table at the end.
started=$SECONDS
step_name="" step_start=$SECONDS timings=""
end_step() {
  if [ -n "$step_name" ]; then
    local took=$((SECONDS - step_start))
    timings+=$(printf '  %-28s %4d s' "$step_name" "$took")$'\n'
  fi
}
step() {
  end_step
  step_name="$1" step_start=$SECONDS
  echo "test.sh: $1"
}
trap 'end_step; step_name=""; printf "test.sh: time per step\n%s  %-28s %4d s\n" "$timings" total $((SECONDS - started))' EXIT

# promtool (Debian package `prometheus`) checks the /metrics output in the integration tests.
step "tools"
if ! command -v promtool >/dev/null 2>&1; then
  echo "test.sh: installing promtool (Debian package prometheus)..."
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# NVRTC, ptxas and nvdisasm (PyPI wheels, pinned) compile and inspect the CUDA kernels in CI.
echo "test.sh: CUDA compilers for the kernel checks"
bash scripts/install-cuda-tools.sh

step "formatting"
cargo fmt --all -- --check
step "lints"
cargo clippy --workspace --all-targets --locked --quiet -- -D warnings
step "tests"
cargo test --workspace --locked
step "python package"
# python/ against the agent just built, in a virtual environment under target/ with the pinned
# test requirements (installed again only when they change); the package itself is rebuilt and
# installed each run, so the tests use what pip would install.
venv=target/python/venv
reqs=python/tests/requirements.txt
if ! cmp -s "$reqs" "$venv/requirements.txt"; then
  echo "test.sh: installing the Python test requirements ($reqs)"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --no-compile --disable-pip-version-check -r "$reqs"
  cp "$reqs" "$venv/requirements.txt"
fi
"$venv/bin/pip" install --quiet --no-compile --disable-pip-version-check --no-deps \
  --no-build-isolation --force-reinstall ./python
cargo build --quiet --locked -p gpucost
(cd python && "../$venv/bin/pytest" -q)
step "fuzzing (20 s a target)"
echo "test.sh: the config, the cgroup-path parser and the API bodies"
# libFuzzer targets (libfuzzer-sys) built with the instrumentation cargo-fuzz would add: the
# sanitizer-coverage pass and AddressSanitizer, for the host target only (so build scripts run
# uninstrumented). Building them directly saves installing cargo-fuzz (a minute and a half of
# compiling on a fresh machine). RUSTC_BOOTSTRAP lets this stable toolchain take the unstable
# flags.
host=$(rustc -vV | sed -n 's/^host: //p')
fuzz_flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
fuzz_flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
fuzz_flags+=" -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares"
fuzz_flags+=" --cfg fuzzing -Zsanitizer=address -Cdebug-assertions -Coverflow-checks"
(cd fuzz && RUSTC_BOOTSTRAP=1 RUSTFLAGS="$fuzz_flags" cargo build --quiet --release --locked \
  --target "$host" --bins)
mkdir -p target/fuzz-logs
for target in config cgroup_path api_body; do
  log="target/fuzz-logs/$target.log"
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  if "fuzz/target/$host/release/$target" -max_total_time=20 -rss_limit_mb=2048 \
    -artifact_prefix="fuzz/artifacts/$target/" "fuzz/corpus/$target" >"$log" 2>&1; then
    tail -n 1 "$log"
  else
    echo "test.sh: fuzz target $target FAILED; the panic and the input that caused it (whole log: $log):"
    grep -A3 -m1 "panicked at" "$log" || tail -n 20 "$log"
    grep -E "Test unit written to|artifact_prefix" "$log" | tail -n 2
    exit 1
  fi
done
step "deployment"
./scripts/check-deploy.sh
