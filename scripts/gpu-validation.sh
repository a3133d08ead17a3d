#!/usr/bin/env bash
# Proof on a real GPU, in one call: `gpucost bench` next to PyTorch, then the agent (real NVML, no
# simulation) while `gpucost run` runs a ground-truth training workload, compared phase by phase,
# and the run recorded as a scenario for the CI fixture (docs/gpu-validation.md).
#
#   bash scripts/gpu-validation.sh prepare   # here: builds gpucost (release) into .device/ with
#                                            # this script's helper and ../shared/device/*.py
#   bash scripts/gpu-validation.sh run       # on the GPU machine (device tool, carry [".device"]):
#                                            # about 6 minutes; everything lands in $OUT
#   bash scripts/gpu-validation.sh dry-run   # here, no GPU: the same steps on the fake NVML
#                                            # library with a stand-in workload (about 1 minute)
#
# Outputs (in $OUT, or .device/out): gpu.txt, bench.json, reference.json, bench.md, agent.log,
# workload.log, polls.jsonl, jobs.json, report.json, recording.toml, validation.{json,md}.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# The validation run samples every 250 ms so that phase boundaries cost little accuracy, and
# persists (so publishes its totals) after every sample.
export GPUCOST_SAMPLING_INTERVAL=250ms GPUCOST_SAMPLING_PROCESS_INTERVAL=250ms \
  GPUCOST_LEDGER_PERSIST_INTERVAL=200ms GPUCOST_BENCH_INTERVAL=0s \
  GPUCOST_ATTRIBUTION_KUBELET_SOCKET=off
PORT=${GPUCOST_VALIDATION_PORT:-10119}

prepare() {
  set -e
  mkdir -p .device
  cargo build --release -p gpucost -p fake-nvml
  cp target/release/gpucost scripts/gpu-validation.py .device/
  cp ../shared/device/workload.py ../shared/device/reference.py .device/
  ls -la .device
}

http_ok() { # PATH: exit 0 when the agent answers 200
  python3 -c "import sys, urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT' + sys.argv[1], timeout=2)" "$1" 2>/dev/null
}

# validate OUT BIN EPILOG AGENT_ARGS... -- WORKLOAD...: the agent with a recording and a poller,
# the workload under `gpucost run`, then the analysis. EPILOG runs after the workload with its
# exit code (the dry run's scheduler; "true" on the GPU).
validate() {
  local out=$1 bin=$2 epilog=$3; shift 3
  local agent_args=()
  while [ "$1" != "--" ]; do agent_args+=("$1"); shift; done
  shift
  local tmp; tmp=$(mktemp -d)
  export GPUCOST_SOCKET=$tmp/agent.sock
  "$bin" agent --listen "127.0.0.1:$PORT" --state-dir "$tmp/state" \
    --record "$out/recording.toml" "${agent_args[@]}" 2> "$out/agent.log" &
  local agent=$!
  for _ in $(seq 100); do http_ok /metrics && break; sleep 0.1; done
  http_ok /metrics || { echo "the agent did not start:"; tail -20 "$out/agent.log"; kill $agent; return 1; }
  python3 .device/gpu-validation.py poll "http://127.0.0.1:$PORT" "$out/polls.jsonl" &
  local poller=$!
  echo "== workload: $*"
  echo "gpucost run --name ground-truth -- $*" > "$out/workload.cmd"
  "$bin" run --name ground-truth --label validation=gpu -- "$@" > "$out/workload.log" 2>&1
  local rc=$?
  echo "$rc" > "$out/run.exit"
  $epilog "$rc"
  tail -8 "$out/workload.log"
  sleep 2
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/api/v1/jobs').read().decode())" > "$out/jobs.json"
  kill $poller
  kill -TERM $agent; wait $agent
  "$bin" report --state-dir "$tmp/state" --format json > "$out/report.json" 2>&1
  echo "== the agent vs the workload"
  python3 .device/gpu-validation.py analyze "$out" --interval 0.25
}

run() {
  local out="${OUT:-$root/.device/out}"
  mkdir -p "$out"
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,power.limit,memory.total --format=csv \
    | tee "$out/gpu.txt"
  echo "== gpucost bench"
  timeout 240 .device/gpucost bench --json > "$out/bench.json" 2> "$out/bench.log"
  echo "bench exit $?"
  echo "== PyTorch reference"
  PYTHONUNBUFFERED=1 timeout 240 python3 .device/reference.py --json-out "$out/reference.json" \
    > "$out/reference.log" 2>&1
  echo "reference exit $?"
  python3 .device/gpu-validation.py bench-table "$out/bench.json" "$out/reference.json" | tee "$out/bench.md"
  validate "$out" .device/gpucost true -- \
    python3 .device/workload.py --phases fp32:45,bf16:45,idle:20,crash
}

# The dry run's scheduler: job 4711's epilog reports the stand-in's exit code.
dry_epilog() { "$root/target/release/gpucost" job end --id 4711 --exit-code "$1"; }

dry_run() {
  set -e
  cargo build --release -q -p gpucost -p fake-nvml
  mkdir -p .device
  cp scripts/gpu-validation.py .device/
  local out="${OUT:-$root/.device/dry-run}"
  rm -rf "$out" && mkdir -p "$out"
  # One H100 whose job (pid 4242, Slurm job 4711 in a fake /proc) runs the workload's phases.
  local phases="fp32:8,bf16:8,idle:5"
  {
    printf 'name = "dry-run"\nduration_s = 40\nripple = 0.0\n'
    printf '[[gpu]]\nmodel = "NVIDIA H100 80GB HBM3"\nmemory_total_mib = 81559\npower_limit_w = 700\nidle_power_w = 70\n'
    printf '[[job]]\nname = "train"\npid = 4242\ngpus = [0]\nstart_s = 1\nexit_code = 1\n'
    printf '[[job.phase]]\nseconds = 8\nutilization = 0.97\npower_w = 420\nmemory_mib = 30000\nprecision = "fp32"\n'
    printf '[[job.phase]]\nseconds = 8\nutilization = 0.99\npower_w = 610\nmemory_mib = 30000\nprecision = "bf16"\n'
    printf '[[job.phase]]\nseconds = 5\nutilization = 0\npower_w = 95\nmemory_mib = 30000\nprecision = "idle"\n'
  } > "$out/scenario.toml"
  echo "dry run: the fake NVML library (tests/fake-nvml) playing one H100 with an fp32/bf16/idle job; no GPU" > "$out/gpu.txt"
  local proc="$out/proc/4242" uid; uid=$(id -u)
  mkdir -p "$proc"
  echo "4242 (python3) S 1 4242 0 0 -1 4194560 0 0 0 0 10 5 0 0 20 0 1 0 777 1000 100 0" > "$proc/stat"
  printf 'Name:\tpython3\nUid:\t%s\t%s\t%s\t%s\n' "$uid" "$uid" "$uid" "$uid" > "$proc/status"
  echo "0::/system.slice/slurmstepd.scope/job_4711/step_0" > "$proc/cgroup"
  printf '\0' > "$proc/environ"
  local start; start=$(python3 -c "import time; print(time.time() + 1.5)")
  export GPUCOST_FAKE_NVML_SCENARIO="$out/scenario.toml" GPUCOST_FAKE_NVML_START_UNIX="$start"
  export GPUCOST_ATTRIBUTION_PROC_ROOT="$out/proc"
  set +e
  validate "$out" "$root/target/release/gpucost" dry_epilog \
    --nvml-lib "$root/target/release/libnvidia_ml.so" -- \
    python3 .device/gpu-validation.py stand-in --nvml-lib "$root/target/release/libnvidia_ml.so" \
    --start-unix "$start" --offset 1 --phases "$phases,crash"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  dry-run) dry_run ;;
  *) echo "usage: $0 prepare|run|dry-run" >&2; exit 2 ;;
esac
