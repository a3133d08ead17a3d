#!/usr/bin/env python3
"""The agent against a ground-truth training run: the helpers of scripts/gpu-validation.sh.

  poll URL OUT            every 0.25 s until killed: the agent's jobs (/api/v1/jobs) and its
                          per-job MFU gauges (/metrics), one JSON line per poll
  analyze DIR             compares the agent (polls, recording, final jobs) with the workload's
                          PHASE lines and writes DIR/validation.json and DIR/validation.md
  bench-table BENCH REF    `gpucost bench --json` next to reference.py (PyTorch) and the
                          datasheet, per precision, as a markdown table
  fixture DIR NAME        turns a validation run into a CI fixture: tests/fixtures/traces/NAME.toml
                          (the recording) and NAME.json (the workload's phases on the recording's
                          clock, the live agent's final figures for the job, card and driver)
  stand-in                for the dry run without a GPU: prints PHASE lines like workload.py,
                          timed by a scenario's phases, with energy from the (fake) NVML library

Standard library only: the GPU machine has no network.
"""
import argparse
import bisect
import ctypes
import json
import math
import os
import re
import shutil
import sys
import time
import urllib.request

# Targets of the validation (issue "Proof on a real GPU").
ENERGY_TOLERANCE = 0.01      # job energy vs the workload's NVML energy, per phase and in total
MFU_TOLERANCE = 0.05         # absolute, in MFU points
FP32_SHARE_MIN = 0.8         # the fp32 phase is FP32-bound for at least this share of its time


def poll(url, out):
    with open(out, "a") as f:
        while True:
            t = time.time()
            row = {"t": t}
            try:
                # The sample the answers come from: now minus its age, before and after.
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    before = time.time() - json.load(r)["last_sample_age_seconds"]
                with urllib.request.urlopen(url + "/api/v1/jobs", timeout=2) as r:
                    row["jobs"] = json.load(r)["jobs"]
                with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
                    mfu = {}
                    for line in r.read().decode().splitlines():
                        m = re.match(r'gpucost_job_mfu_ratio\{job_id="([^"]*)",source="counters"[^}]*\} (\S+)', line)
                        if m:
                            mfu[m.group(1)] = float(m.group(2))
                    row["mfu"] = mfu
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    after = time.time() - json.load(r)["last_sample_age_seconds"]
                # A sample between the two reads: the rows may mix two samples.
                row["sample_t"] = before if abs(after - before) < 0.02 else None
            except Exception as e:  # the agent starting or stopping: keep polling
                row["error"] = str(e)
            f.write(json.dumps(row) + "\n")
            f.flush()
            time.sleep(max(0.0, 0.25 - (time.time() - t)))


def read_phases(path):
    phases, model = [], None
    for line in open(path, errors="replace"):
        if line.startswith("PHASE "):
            phases.append(json.loads(line[6:]))
        elif line.startswith("MODEL "):
            model = json.loads(line[6:])
    return phases, model


def read_recording(path):
    """The recording's start (unix) and its first GPU's trace columns."""
    text = open(path).read()
    m = re.search(r"Scenario time 0 is unix time ([0-9]+(?:\.[0-9]+)?)", text)
    start = float(m.group(1)) if m else None
    cols = {}
    section = None
    for line in text.splitlines():
        if line.startswith("["):
            section = line.strip()
            continue
        if section == "[gpu.trace]" and not cols.get("done"):
            m = re.match(r"(\w+) = \[(.*)\]$", line)
            if m:
                cols[m.group(1)] = [float(v) for v in m.group(2).split(",") if v.strip()]
        elif section and section.startswith("[[gpu]]") and "t_s" in cols:
            cols["done"] = True  # only the first GPU
    cols.pop("done", None)
    return start, cols


def interp(ts, vs, t):
    """Linear interpolation of a cumulative series at t (clamped to its ends)."""
    if not ts:
        return None
    i = bisect.bisect_left(ts, t)
    if i == 0:
        return vs[0]
    if i >= len(ts):
        return vs[-1]
    t0, t1 = ts[i - 1], ts[i]
    return vs[i - 1] + (vs[i] - vs[i - 1]) * (t - t0) / (t1 - t0)


def analyze(d, interval):
    phases, model = read_phases(f"{d}/workload.log")
    polls = [json.loads(l) for l in open(f"{d}/polls.jsonl") if l.strip()]
    polls = [p for p in polls if "jobs" in p and p.get("sample_t")]
    final = json.load(open(f"{d}/jobs.json"))["jobs"]
    exit_code = int(open(f"{d}/run.exit").read().strip())
    rec_start, cols = read_recording(f"{d}/recording.toml")
    job = max(final, key=lambda j: j["usage"]["gpu_seconds"])
    jid = job["id"]

    def series(field):
        ts, vs = [], []
        for p in polls:
            j = next((j for j in p["jobs"] if j["id"] == jid), None)
            if j is not None and (not ts or p["sample_t"] > ts[-1]):
                ts.append(p["sample_t"])
                vs.append(j["usage"][field])
        return ts, vs

    def delta(field, a, b):
        ts, vs = series(field)
        return interp(ts, vs, b) - interp(ts, vs, a)

    rows, checks = [], []
    timed = [p for p in phases if "end" in p]
    total_agent = total_truth = 0.0
    for p in timed:
        a, b = p["start"], p["end"]
        wall = b - a
        row = {"phase": p["phase"], "seconds": wall}
        truth = p.get("energy_j")
        if truth:
            # The agent's job energy over the phase (its totals at the samples around each end).
            agent_e = delta("energy_j", a, b)
            row["agent_energy_j"] = agent_e
            row["workload_energy_j"] = truth
            row["energy_error"] = agent_e / truth - 1
            total_agent += agent_e
            total_truth += truth
        if truth and rec_start is not None and cols.get("energy_j"):
            # The agent resolves energy per sample: within a phase, its samples' mean power
            # against the workload's over the phase (a phase boundary falls inside a sample).
            ts = [rec_start + t for t in cols["t_s"]]
            k0 = bisect.bisect_left(ts, a + 0.5)
            k1 = bisect.bisect_right(ts, b - 0.5) - 1
            if k1 > k0:
                agent_w = (cols["energy_j"][k1] - cols["energy_j"][k0]) / (ts[k1] - ts[k0])
                truth_w = truth / wall
                row["agent_power_w"] = agent_w
                row["workload_power_w"] = truth_w
                row["power_error"] = agent_w / truth_w - 1
                checks.append((f"{p['phase']}: energy per second within {ENERGY_TOLERANCE:.0%}",
                               abs(row["power_error"]) <= ENERGY_TOLERANCE,
                               f"{agent_w:.1f} W vs {truth_w:.1f} W ({row['power_error']:+.2%}) over "
                               f"{ts[k1] - ts[k0]:.1f} s of samples"))
        row["idle_s"] = delta("idle_gpu_seconds", a, b)
        row["fp32_s"] = delta("fp32_seconds", a, b)
        inside = [pl["mfu"].get(jid) for pl in polls if a + 3 <= pl["sample_t"] <= b - 1 and "mfu" in pl]
        inside = [v for v in inside if v is not None]
        row["agent_mfu"] = sum(inside) / len(inside) if inside else None
        row["workload_mfu"] = p.get("mfu_vs_dense_bf16_peak")
        if p["phase"] in ("fp32", "bf16", "tf32") and row["workload_mfu"] is not None:
            ok = row["agent_mfu"] is not None and abs(row["agent_mfu"] - row["workload_mfu"]) <= MFU_TOLERANCE
            checks.append((f"{p['phase']}: MFU within {MFU_TOLERANCE * 100:.0f} points", ok,
                           f"agent {fmt(row['agent_mfu'], '.3f')} vs workload {row['workload_mfu']:.3f}"))
        if p["phase"] == "idle":
            checks.append(("idle: idle seconds within one sample interval",
                           abs(row["idle_s"] - wall) <= interval,
                           f"{row['idle_s']:.2f} s vs {wall:.2f} s"))
        if p["phase"] == "fp32":
            checks.append(("fp32: FP32-bound for most of the phase",
                           row["fp32_s"] >= FP32_SHARE_MIN * wall,
                           f"{row['fp32_s']:.1f} s of {wall:.1f} s"))
        elif p["phase"] in ("bf16", "idle", "tf32"):
            checks.append((f"{p['phase']}: no FP32-bound time",
                           row["fp32_s"] <= interval,
                           f"{row['fp32_s']:.2f} s"))
        rows.append(row)
    if total_truth:
        err = total_agent / total_truth - 1
        checks.append((f"the job's energy over all timed phases within {ENERGY_TOLERANCE:.0%}",
                       abs(err) <= ENERGY_TOLERANCE,
                       f"{total_agent:.0f} J vs {total_truth:.0f} J ({err:+.2%})"))
    checks.append(("outcome failed (the run crashed)", job["outcome"] == "failed" and exit_code == 1,
                   f"outcome {job['outcome']}, exit code {exit_code}"))
    result = {"job": jid, "gpu": (model or {}).get("gpu"), "interval_s": interval,
              "job_usage": job["usage"], "phases": rows,
              "checks": [{"check": c, "pass": ok, "figures": f} for c, ok, f in checks]}
    json.dump(result, open(f"{d}/validation.json", "w"), indent=1)
    lines = [f"Job {jid} on {result['gpu']}, sampling every {interval} s", "",
             "| phase | s | agent J | workload J | error | agent W | workload W | error | idle s | FP32-bound s | agent MFU | workload MFU |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['phase']} | {r['seconds']:.1f} | {fmt(r.get('agent_energy_j'), '.0f')} | "
                     f"{fmt(r.get('workload_energy_j'), '.0f')} | {fmt(r.get('energy_error'), '+.2%')} | "
                     f"{fmt(r.get('agent_power_w'), '.1f')} | {fmt(r.get('workload_power_w'), '.1f')} | "
                     f"{fmt(r.get('power_error'), '+.2%')} | "
                     f"{r['idle_s']:.1f} | {r['fp32_s']:.1f} | {fmt(r['agent_mfu'], '.3f')} | "
                     f"{fmt(r['workload_mfu'], '.3f')} |")
    lines += ["", "| check | result | figures |", "|---|---|---|"]
    lines += [f"| {c} | {'PASS' if ok else 'FAIL'} | {f} |" for c, ok, f in checks]
    open(f"{d}/validation.md", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return all(ok for _, ok, _ in checks)


def bench_table(bench_path, ref_path):
    try:
        gpu = json.load(open(bench_path))["gpus"][0]
    except (OSError, ValueError, KeyError, IndexError) as e:
        print(f"no gpucost bench result in {bench_path}: {e}")
        return
    try:
        ref = json.load(open(ref_path))
    except (OSError, ValueError) as e:
        ref = {"matmul": {}, "copy": {}}
        print(f"(no PyTorch reference: {e})")
    rate = {(r["precision"], r["method"]): r for r in gpu["results"]}
    lines = [f"{gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['sm_count']} SMs): "
             f"SM clock {fmt(gpu.get('sm_clock_hz') and gpu['sm_clock_hz'] / 1e6, '.0f')} MHz, "
             f"{fmt(gpu.get('power_w'), '.0f')} W, {fmt(gpu.get('temperature_c'), '.0f')} C during the run; "
             f"PyTorch {ref.get('torch', '-')} (CUDA {ref.get('cuda', '-')})", "",
             "| precision | kernel TFLOP/s | library TFLOP/s | PyTorch TFLOP/s | datasheet TFLOP/s | kernel/PyTorch | kernel % datasheet | PyTorch clock MHz, W |",
             "|---|---|---|---|---|---|---|---|"]
    for p in ["fp64", "fp64_tensor", "fp32", "tf32", "fp16", "bf16", "fp8", "int8"]:
        k, lib = rate.get((p, "kernel")), rate.get((p, "library"))
        t = ref.get("matmul", {}).get(p)
        if not (k or lib or t):
            continue
        best = k or lib
        sheet = best["flops_per_s"] / best["of_datasheet"] / 1e12 if best and best.get("of_datasheet") else None
        kt = k["flops_per_s"] / 1e12 if k else None
        lt = lib["flops_per_s"] / 1e12 if lib else None
        tt = t["tflops"] if t else None
        lines.append(f"| {p} | {fmt(kt, '.1f')} | {fmt(lt, '.1f')} | {fmt(tt, '.1f')} | {fmt(sheet, '.1f')} | "
                     f"{fmt(kt / tt if kt and tt else None, '.2f')} | {fmt(k and k.get('of_datasheet'), '.1%')} | "
                     f"{fmt(t and t.get('sm_clock_mhz'), '.0f')}, {fmt(t and t.get('power_w'), '.0f')} |")
    mem = {m["op"]: m for m in gpu.get("memory", [])}
    if "copy" in mem or ref.get("copy"):
        ours = mem.get("copy", {}).get("bytes_per_s")
        theirs = ref.get("copy", {}).get("tbytes_per_s")
        lines.append(f"| copy (TB/s, read + write) | {fmt(ours and ours / 1e12, '.2f')} | | {fmt(theirs, '.2f')} | | "
                     f"{fmt(ours / 1e12 / theirs if ours and theirs else None, '.2f')} | "
                     f"{fmt(mem.get('copy', {}).get('of_datasheet'), '.1%')} | |")
    print("\n".join(lines))


def fixture(d, name, dest):
    phases, model = read_phases(f"{d}/workload.log")
    rec_start, _ = read_recording(f"{d}/recording.toml")
    v = json.load(open(f"{d}/validation.json"))
    final = json.load(open(f"{d}/jobs.json"))["jobs"]
    job = next(j for j in final if j["id"] == v["job"])
    gpu = open(f"{d}/gpu.txt").read().strip() if os.path.exists(f"{d}/gpu.txt") else None
    meta = {
        "source": gpu or (model or {}).get("gpu"),
        "workload": open(f"{d}/workload.cmd").read().strip() if os.path.exists(f"{d}/workload.cmd") else None,
        "job": {"id": job["id"], "outcome": job["outcome"], "usage": job["usage"]},
        "phases": [{"phase": p["phase"], "start_s": p["start"] - rec_start, "end_s": p["end"] - rec_start,
                    "energy_j": p.get("energy_j"), "mfu": p.get("mfu_vs_dense_bf16_peak"),
                    "agent_mfu": r.get("agent_mfu")}
                   for p, r in zip([p for p in phases if "end" in p], v["phases"])],
        "checks": v["checks"],
    }
    os.makedirs(dest, exist_ok=True)
    shutil.copy(f"{d}/recording.toml", f"{dest}/{name}.toml")
    json.dump(meta, open(f"{dest}/{name}.json", "w"), indent=1)
    print(f"wrote {dest}/{name}.toml and {dest}/{name}.json")


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def stand_in(args):
    """PHASE lines like workload.py's, for a scenario job on the fake NVML library."""
    lib = ctypes.CDLL(args.nvml_lib)
    assert lib.nvmlInit_v2() == 0, "nvmlInit_v2 failed"
    dev = ctypes.c_void_p()
    assert lib.nvmlDeviceGetHandleByIndex_v2(0, ctypes.byref(dev)) == 0

    def energy_j():
        mj = ctypes.c_ulonglong()
        assert lib.nvmlDeviceGetTotalEnergyConsumption(dev, ctypes.byref(mj)) == 0
        return mj.value / 1e3

    print(f"MODEL {json.dumps({'gpu': 'fake NVML', 'params': 0, 'flops_per_token': 0})}", flush=True)
    t = args.start_unix + args.offset
    for spec in args.phases.split(","):
        name, _, secs = spec.partition(":")
        if name == "crash":
            print(f"PHASE {json.dumps({'phase': 'crash', 'start': time.time()})}", flush=True)
            sys.exit(1)
        time.sleep(max(0.0, t - time.time()))
        e0, t0 = energy_j(), time.time()
        t += float(secs)
        time.sleep(max(0.0, t - time.time()))
        e1, t1 = energy_j(), time.time()
        row = {"phase": name, "start": t0, "end": t1, "energy_j": e1 - e0,
               "mfu_vs_dense_bf16_peak": None}
        print(f"PHASE {json.dumps(row)}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("poll")
    a.add_argument("url")
    a.add_argument("out")
    a = sub.add_parser("analyze")
    a.add_argument("dir")
    a.add_argument("--interval", type=float, default=0.25)
    a = sub.add_parser("bench-table")
    a.add_argument("bench")
    a.add_argument("reference")
    a = sub.add_parser("fixture")
    a.add_argument("dir")
    a.add_argument("name")
    a.add_argument("--dest", default="tests/fixtures/traces")
    a = sub.add_parser("stand-in")
    a.add_argument("--nvml-lib", required=True)
    a.add_argument("--start-unix", type=float, required=True)
    a.add_argument("--offset", type=float, default=1.0, help="scenario time of the first phase")
    a.add_argument("--phases", required=True)
    args = p.parse_args()
    if args.cmd == "poll":
        poll(args.url, args.out)
    elif args.cmd == "bench-table":
        bench_table(args.bench, args.reference)
    elif args.cmd == "fixture":
        fixture(args.dir, args.name, args.dest)
    elif args.cmd == "analyze":
        sys.exit(0 if analyze(args.dir, args.interval) else 1)
    else:
        stand_in(args)


if __name__ == "__main__":
    main()
