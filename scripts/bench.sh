#!/usr/bin/env bash
# The agent's own costs, measured: `scripts/bench.sh` prints the table of docs/performance.md.
# Builds release binaries, runs everything against the fake NVML library (no GPU needed), and
# compares with a Python pynvml loop (nvidia-ml-py) reading the same fields from the same library.
# Takes about 3 minutes. Figures depend on the machine: compare rows of one run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

cargo build --release --quiet -p gpucost -p fake-nvml
agent=$root/target/release/gpucost
lib=$root/target/release/libnvidia_ml.so

# A node of N GPUs with 64 processes in all: on each GPU one job of 64/N processes.
scenario() {
  local n=$1 f=$work/node$1.toml k=$((64 / $1))
  { echo 'name = "bench"'; echo 'duration_s = 3600'
    for ((g = 0; g < n; g++)); do
      printf '[[gpu]]\nmodel = "NVIDIA H100 80GB HBM3"\nmemory_total_mib = 81559\npower_limit_w = 700\nidle_power_w = 70\n'
    done
    for ((g = 0; g < n; g++)); do
      p=$((100000 + g * 100))
      workers=$(seq -s ', ' $((p + 1)) $((p + k - 1)))
      printf '[[job]]\nname = "j%d"\npid = %d\nworker_pids = [%s]\ngpus = [%d]\n' "$g" "$p" "$workers" "$g"
      printf '[[job.phase]]\nseconds = 3600\nutilization = 0.9\npower_w = 500\nmemory_mib = 1000\nprecision = "bf16"\n'
    done; } > "$f"
  echo "$f"
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# CPU per sampling cycle: the agent at a 10 ms interval for 10 s; process lists every cycle
# (worst case) or every 5 s (default).
cycle_cost() { # gpus process_interval
  local f; f=$(scenario "$1")
  rm -rf "$work/st"
  GPUCOST_FAKE_NVML_SCENARIO=$f GPUCOST_SAMPLING_INTERVAL=10ms GPUCOST_SAMPLING_PROCESS_INTERVAL=$2 \
    GPUCOST_ATTRIBUTION_KUBELET_SOCKET=off "$agent" agent --listen 127.0.0.1:10991 \
    --state-dir "$work/st" --socket "$work/s.sock" --nvml-lib "$lib" 2>/dev/null &
  local pid=$!; sleep 2
  local t0 s0 t1 s1
  t0=$(ticks $pid); s0=$(curl -s localhost:10991/metrics | awk '/^gpucost_agent_samples_total/{print $2}')
  sleep 10
  t1=$(ticks $pid); s1=$(curl -s localhost:10991/metrics | awk '/^gpucost_agent_samples_total/{print $2}')
  kill $pid; wait $pid 2>/dev/null || true
  python3 -c "print(f'| sampling cycle, $1 GPU(s), 64 processes, process lists every $2 | {($t1-$t0)/$hz/($s1-$s0)*1e3:.3f} ms CPU |')"
}

echo "| what | figure |"
echo "|---|---|"
for n in 1 8 16; do cycle_cost $n 5s; done
cycle_cost 8 10ms

# The same 8-GPU reads from Python (nvidia-ml-py), the way exporters built on pynvml do it.
python3 -m venv "$work/py" >/dev/null && "$work/py/bin/pip" install -q nvidia-ml-py >/dev/null
mkdir -p "$work/lib" && ln -sf "$lib" "$work/lib/libnvidia-ml.so.1"
f=$(scenario 8)
GPUCOST_FAKE_NVML_SCENARIO=$f LD_LIBRARY_PATH=$work/lib "$work/py/bin/python" - <<'PY'
import time, resource, pynvml as n
n.nvmlInit()
hs = [n.nvmlDeviceGetHandleByIndex(i) for i in range(n.nvmlDeviceGetCount())]
def cycle(procs):
    for h in hs:
        n.nvmlDeviceGetTotalEnergyConsumption(h); n.nvmlDeviceGetPowerUsage(h)
        n.nvmlDeviceGetEnforcedPowerLimit(h); n.nvmlDeviceGetUtilizationRates(h)
        n.nvmlDeviceGetMemoryInfo(h); n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM)
        n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU)
        n.nvmlDeviceGetCurrentClocksThrottleReasons(h)
        if procs: n.nvmlDeviceGetComputeRunningProcesses(h)
for procs, label in ((False, "every 5s"), (True, "every 10ms")):
    t0 = resource.getrusage(resource.RUSAGE_SELF); k = 1000
    for _ in range(k): cycle(procs)
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (t1.ru_utime - t0.ru_utime + t1.ru_stime - t0.ru_stime) / k * 1e3
    print(f"| peer: Python pynvml loop, same reads, 8 GPUs, 64 processes, process lists {label} (no accounting, no HTTP) | {cpu:.3f} ms CPU |")
PY

# The demo agent at its default 1 s interval: CPU share and memory over 60 s.
rm -rf "$work/st"
GPUCOST_ATTRIBUTION_KUBELET_SOCKET=off "$agent" agent --simulate demo --listen 127.0.0.1:10992 \
  --state-dir "$work/st" --socket "$work/s2.sock" 2>/dev/null &
pid=$!; sleep 3; t0=$(ticks $pid); sleep 60; t1=$(ticks $pid)
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
kill $pid; wait $pid 2>/dev/null || true
python3 -c "print(f'| demo agent, 1 s interval, 60 s: CPU | {($t1-$t0)/$hz/60*100:.3f} % of one core |'); print(f'| demo agent: resident memory | {$rss/1024:.1f} MiB |')"

# /metrics rendering and a ledger persist, in process.
cargo bench --quiet -p gpucost --bench agent_costs 2>/dev/null | sed 's/^/| /; s/: /  | /; s/$/ |/'
