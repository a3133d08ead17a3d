"""A real ``gpucost agent`` on a simulated node, for the package's tests.

The binary is ``target/debug/gpucost`` of this repository (``cargo build -p gpucost``), or the
one ``AGENT_BIN`` names. Like the Rust integration tests (``tests/integration/src/lib.rs``) it
listens on a free loopback port, read from its log, with its ledger and sockets in a fresh
folder that every uid may enter (the pod-socket tests connect as another uid).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]


def agent_binary() -> Path:
    return Path(os.environ.get("AGENT_BIN") or REPO / "target" / "debug" / "gpucost")


class Agent:
    def __init__(self, scenario: str = "demo") -> None:
        binary = agent_binary()
        if not binary.exists():
            raise RuntimeError(f"{binary} is missing: run `cargo build -p gpucost` first")
        self.dir = Path(tempfile.mkdtemp(prefix="gpucost-py-"))
        os.chmod(self.dir, 0o755)
        if "\n" in scenario:
            path = self.dir / "scenario.toml"
            path.write_text(scenario)
            scenario = str(path)
        self.socket = self.dir / "agent.sock"
        self.pod_socket = self.dir / "pods" / "agent.sock"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUCOST_")}
        env.update(
            GPUCOST_ATTRIBUTION_KUBELET_SOCKET="off",
            GPUCOST_LEDGER_PERSIST_INTERVAL="100ms",
            GPUCOST_SAMPLING_INTERVAL="100ms",
            GPUCOST_SAMPLING_PROCESS_INTERVAL="100ms",
            GPUCOST_POD_SOCKET=str(self.pod_socket),
            GPUCOST_LOG="info",
        )
        self.proc = subprocess.Popen(
            [
                str(binary),
                "agent",
                "--simulate",
                scenario,
                "--listen",
                "127.0.0.1:0",
                "--state-dir",
                str(self.dir / "state"),
                "--socket",
                str(self.socket),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: List[str] = []
        threading.Thread(target=self._read_log, daemon=True).start()
        line = self.wait_for_log("listening on http://", 20)
        self.addr = line.split("http://", 1)[1].split()[0]
        self.url = f"http://{self.addr}"
        deadline = time.monotonic() + 20
        while self.get_status("/metrics") != 200:
            assert time.monotonic() < deadline, "no first sample within 20 s"
            time.sleep(0.02)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line.rstrip("\n"))

    def wait_for_log(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.log):
                if needle in line:
                    return line
            if self.proc.poll() is not None:
                raise RuntimeError(f"the agent exited ({self.proc.returncode}):\n" + "\n".join(self.log))
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {needle!r} in the agent's log:\n" + "\n".join(self.log))
            time.sleep(0.02)

    def _get(self, path: str):
        conn = http.client.HTTPConnection(self.addr, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def get_status(self, path: str) -> int:
        try:
            return self._get(path)[0]
        except OSError:
            return 0

    def job(self, job_id: str) -> Optional[Dict[str, Any]]:
        status, body = self._get("/api/v1/jobs/" + urllib.parse.quote(job_id, safe=""))
        if status == 404:
            return None
        assert status == 200, body
        return json.loads(body)

    def wait_for_job(self, job_id: str, timeout: float = 10, **want: Any) -> Dict[str, Any]:
        """The job once it exists and each ``want`` key has its value."""
        deadline = time.monotonic() + timeout
        while True:
            j = self.job(job_id)
            if j is not None and all(j.get(k) == v for k, v in want.items()):
                return j
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id!r} not as wanted {want}: {j}")
            time.sleep(0.05)

    def wait_for_progress(self, job_id: str, timeout: float = 10, **want: Any) -> Dict[str, Any]:
        """The job's progress once each ``want`` key has its value. (The socket answers once the
        node has taken a report; the TCP API shows it from the next snapshot on.)"""
        deadline = time.monotonic() + timeout
        while True:
            j = self.job(job_id)
            p = (j or {}).get("progress") or {}
            if all(p.get(k) == v for k, v in want.items()):
                return p
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id!r}: progress not as wanted {want}: {p}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def scenario(gpu_jobs: List[Dict[str, Any]]) -> str:
    """A node of H100s, one per job, each job busy in bf16 for an hour."""
    text = [
        'name = "python-tests"',
        "duration_s = 3600",
        "ripple = 0",
    ]
    for i, _ in enumerate(gpu_jobs):
        text += [
            "[[gpu]]",
            'model = "NVIDIA H100 80GB HBM3"',
            "memory_total_mib = 81559",
            "power_limit_w = 700",
            "idle_power_w = 70",
        ]
    for i, job in enumerate(gpu_jobs):
        text += [
            "[[job]]",
            f'name = "{job["id"]}"',
            f'id = "{job["id"]}"',
            f'pid = {job["pid"]}',
            f"gpus = [{i}]",
            "[[job.phase]]",
            "seconds = 3600",
            "utilization = 0.9",
            "power_w = 600",
            "memory_mib = 40000",
            'precision = "bf16"',
        ]
    return "\n".join(text) + "\n"
