#!/usr/bin/env bash
# The kernels' one-call check on a GPU machine (H100/H200): every kernel verified and timed
# (shipped PTX, then NVRTC) against its ceiling at the clock it ran at, and the libraries'
# delivered GEMM rates (8192^3 and a training shape) next to PyTorch's on the same card.
#
#   bash kernels/device-check.sh prepare   # here, on the development machine (no GPU needed):
#                                          # builds the test binary and the bench example into
#                                          # .device/ (ignored by .gitignore) and
#                                          # copies ../shared/device/reference.py beside them
#   bash kernels/device-check.sh run       # there: the device tool's command, carry [".device"]
#
# `run` writes its logs to $OUT (or .device/out) as it goes and prints a side-by-side table
# last. About 2-3 minutes: two full benchmarks (~10 s each), the bench example, reference.py.
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
  set -e
  mkdir -p .device
  cargo build --release -p gpucost-kernels --example bench
  cp target/release/examples/bench .device/kernels-bench
  local bin
  bin=$(cargo test --release -p gpucost-kernels --lib --no-run 2>&1 |
    grep -o 'target/release/deps/gpucost_kernels-[0-9a-f]*' | tail -1)
  cp "$bin" .device/kernels-tests
  cp ../shared/device/reference.py .device/
  ls -la .device
}

run() {
  local out="${OUT:-$PWD/.device/out}"
  mkdir -p "$out"
  # The CUDA 13 toolkit's unversioned names (libnvrtc.so, libcublasLt.so) are among the names
  # cudarc tries; its .so.13 files are not.
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit --format=csv | tee "$out/gpu.txt"
  echo "== kernels from the shipped PTX (NVRTC off)"
  GPUCOST_NVRTC=0 timeout 180 .device/kernels-tests --ignored --nocapture --test-threads=1 \
    bench_on_a_real_gpu 2>&1 | tee "$out/test-shipped.log"
  echo "== kernels compiled by NVRTC when it loads"
  timeout 180 .device/kernels-tests --ignored --nocapture --test-threads=1 \
    bench_on_a_real_gpu 2>&1 | tee "$out/test-nvrtc.log"
  echo "== bench example"
  timeout 120 .device/kernels-bench 2>&1 | tee "$out/bench.log"
  echo "== PyTorch reference"
  PYTHONUNBUFFERED=1 timeout 300 python3 .device/reference.py --json-out "$out/reference.json" \
    2>&1 | tee "$out/reference.log"
  python3 - "$out/bench.log" "$out/reference.json" <<'EOF' | tee "$out/table.txt"
import json, sys
ours = json.loads([l for l in open(sys.argv[1]) if l.startswith('{"gpu"')][-1])
try:
    ref = json.load(open(sys.argv[2]))
except Exception as e:
    ref = {"matmul": {}, "copy": {}}
    print("no reference.json:", e)
def row(p, method, shape=None):
    return next((r for r in ours["results"]
                 if r["precision"] == p and r["method"] == method
                 and (shape is None or r.get("shape") == shape)), None)
print(f"{ours['gpu']}: our kernels against their ceiling (the device's SMs x FLOP/clock/SM at the")
print("clock the kernel's own blocks measured), the libraries against PyTorch (TFLOP/s; copy TB/s)")
print(f"{'precision':<12}{'kernel':>9}{'ceiling':>9}{'k/ceil':>8}{'lib 8192^3':>12}{'lib train':>11}"
      f"{'torch':>9}{'lib/torch':>11}")
f = lambda v, w=9: f"{v:{w}.1f}" if v is not None else f"{'-':>{w}}"
r2 = lambda a, b, w: f"{a / b:{w}.2f}" if a and b else f"{'-':>{w}}"
for p in ["fp64", "fp64_tensor", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"]:
    k = row(p, "kernel")
    kt, ceil = (k or {}).get("tflops"), (k or {}).get("ceiling_tflops")
    sq = (row(p, "library", "8192^3") or {}).get("tflops")
    tr = (row(p, "library", "8192x8192x2048") or {}).get("tflops")
    # PyTorch's DGEMM is our fp64_tensor library row where the GPU has FP64 tensor cores.
    t = ref.get("matmul", {}).get("fp64" if p == "fp64_tensor" else p, {}).get("tflops")
    print(f"{p:<12}{f(kt)}{f(ceil)}{r2(kt, ceil, 8)}{f(sq, 12)}{f(tr, 11)}{f(t)}{r2(sq, t, 11)}")
copy = {m["op"]: m["tbytes_per_s"] for m in ours["memory"]}
tc = ref.get("copy", {}).get("tbytes_per_s")
print(f"{'copy':<12}{copy.get('copy', float('nan')):9.3f}{'':>40}{tc if tc else float('nan'):9.3f}"
      f"{(copy.get('copy', 0) / tc) if tc else float('nan'):11.2f}")
EOF
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run" >&2; exit 2 ;;
esac
