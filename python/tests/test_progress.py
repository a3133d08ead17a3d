"""``report_progress`` against the real agent, and against a missing, stuck or particular one.

The real agent (``tests/agent.py``) takes the ``checkpoint`` field (issue 16). How the package
behaves with an older agent that refuses it, or one that never answers, is checked against a
small HTTP server on a unix socket written here (it records what it is sent); it stands in for
the agent only in those cases.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import gpucost
from gpucost import _progress


def _start_job(agent, monkeypatch, job_id: str) -> gpucost.track:
    """A job for this process, registered over the socket as `gpucost run` would; ended by the
    test."""
    t = gpucost.track(name="progress-test", job_id=job_id)
    t.__enter__()
    assert t.job_id == job_id
    return t


def test_progress_reaches_a_job_whose_id_has_a_slash(use_agent, monkeypatch, caplog):
    t = _start_job(use_agent, monkeypatch, "team-a/run-1")
    try:
        assert os.environ["GPUCOST_JOB_ID"] == "team-a/run-1"
        assert gpucost.report_progress(tokens=1_000, samples=500, steps=10, flops_per_token=4.2e10)
        assert gpucost.report_progress(tokens=3_000, samples=1500, steps=30)
        p = use_agent.wait_for_progress("team-a/run-1", tokens=3_000, samples=1500, steps=30)
        assert p["flops_per_token"] == 4.2e10
        assert p["model_flop"] == pytest.approx(3_000 * 4.2e10)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        t.__exit__(None, None, None)


def test_the_agent_keeps_a_reported_checkpoint(use_agent, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="gpucost")
    t = _start_job(use_agent, monkeypatch, "ckpt-run")
    try:
        assert gpucost.report_progress(steps=5)
        p = use_agent.wait_for_progress("ckpt-run", steps=5)
        assert "checkpoint" not in p
        assert gpucost.report_progress(steps=6, checkpoint=True)
        p = use_agent.wait_for_progress("ckpt-run", steps=6)
        # The cost so far is what a failure from now on would not lose.
        assert p["checkpoint"]["at"] > 0 and p["checkpoint"]["cost"] >= 0, p
        assert _progress._reporter.checkpoint_field is not False
        # A report without one keeps the last.
        assert gpucost.report_progress(steps=7)
        assert use_agent.wait_for_progress("ckpt-run", steps=7)["checkpoint"] == p["checkpoint"]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        t.__exit__(None, None, None)


def test_without_a_job_id_the_agent_finds_the_job_of_the_calling_process(use_agent, monkeypatch):
    t = _start_job(use_agent, monkeypatch, "found-by-pid")
    try:
        # `POST /api/v1/progress`: this process is the registered job's root.
        monkeypatch.delenv("GPUCOST_JOB_ID")
        assert gpucost.report_progress(tokens=77)
        use_agent.wait_for_progress("found-by-pid", tokens=77)
        # The id the agent answered with is remembered for the cost.
        assert gpucost.current_job()["id"] == "found-by-pid"
    finally:
        t.__exit__(None, None, None)


def test_a_refusal_is_one_warning_and_never_an_exception(use_agent, monkeypatch, caplog):
    monkeypatch.setenv("GPUCOST_JOB_ID", "no-such-job")
    monkeypatch.setattr(_progress, "FIRST_RETRY_S", 0.0)
    monkeypatch.setattr(_progress, "RETRY_AFTER_S", 0.0)
    # A job not known yet may be a run's start: the first refusal is quiet and retried soon.
    assert gpucost.report_progress(tokens=1) is False
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    for n in range(2, 5):
        assert gpucost.report_progress(tokens=n) is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "404" in warnings[0].getMessage(), warnings


def test_the_first_refusal_is_retried_sooner(use_agent, monkeypatch):
    monkeypatch.setenv("GPUCOST_JOB_ID", "no-such-job")
    assert gpucost.report_progress(tokens=1) is False
    wait = _progress._reporter.retry_at - time.monotonic()
    assert 0 < wait <= _progress.FIRST_RETRY_S
    _progress._reporter.retry_at = 0.0
    assert gpucost.report_progress(tokens=1) is False
    wait = _progress._reporter.retry_at - time.monotonic()
    assert _progress.FIRST_RETRY_S < wait <= _progress.RETRY_AFTER_S


def test_no_agent_warns_once_and_costs_nothing_after(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("GPUCOST_JOB_ID", "x")
    assert gpucost.report_progress(tokens=1) is False
    started = time.monotonic()
    for n in range(1000):
        assert gpucost.report_progress(tokens=n) is False
    assert time.monotonic() - started < 0.5
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "none.sock" in warnings[0].getMessage()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": -1},
        {"tokens": "many"},
        {"tokens": 1.5},
        {"steps": True},
        {"flops_per_token": 0},
        {"flops_per_token": float("nan")},
        {"flops_per_step": "x"},
    ],
)
def test_bad_values_are_a_warning_not_an_exception(kwargs, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "none.sock"))
    assert gpucost.report_progress(**kwargs) is False
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not reported" in warnings[0].getMessage()


def test_odd_environments_do_not_raise(monkeypatch, tmp_path):
    monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path))  # a folder
    monkeypatch.setenv("GPUCOST_JOB_ID", "a/b?c#d e%")
    assert gpucost.report_progress(tokens=1) is False
    monkeypatch.setenv("GPUCOST_URL", "ftp://nowhere")
    assert gpucost.current_cost() is None


class _Recorder(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: Path, answer=None, hang: bool = False) -> None:
        self.requests = []
        self.answer = answer or (lambda body: (200, {"id": "fake"}))
        self.hang = hang
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                if server.hang:
                    time.sleep(5)
                    return
                status, reply = server.answer(body)
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        super().__init__(str(path), Handler)
        threading.Thread(target=self.serve_forever, args=(0.02,), daemon=True).start()

    # A unix socket's peer has no (host, port) for BaseHTTPRequestHandler.
    def get_request(self):
        conn, _ = self.socket.accept()
        return conn, ("local", 0)


def test_checkpoint_is_sent_only_when_true_and_kept_when_accepted(monkeypatch, tmp_path):
    server = _Recorder(tmp_path / "a.sock")
    try:
        monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "a.sock"))
        monkeypatch.setenv("GPUCOST_JOB_ID", "ns/pod-1")
        assert gpucost.report_progress(tokens=1)
        assert gpucost.report_progress(tokens=2, checkpoint=True)
        assert gpucost.report_progress(tokens=3, checkpoint=True)
        assert [b for _, b in server.requests] == [
            {"tokens": 1},
            {"tokens": 2, "checkpoint": True},
            {"tokens": 3, "checkpoint": True},
        ]
        assert {p for p, _ in server.requests} == {"/api/v1/jobs/ns%2Fpod-1/progress"}
    finally:
        server.shutdown()
        server.server_close()


def test_an_unknown_checkpoint_field_is_retried_without_it_once(monkeypatch, tmp_path):
    def answer(body):
        if "checkpoint" in body:
            return 400, {"error": "unknown field `checkpoint`, expected one of `tokens`"}
        return 200, {"id": "j"}

    server = _Recorder(tmp_path / "b.sock", answer)
    try:
        monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "b.sock"))
        monkeypatch.setenv("GPUCOST_JOB_ID", "j")
        assert gpucost.report_progress(tokens=1, checkpoint=True)
        assert gpucost.report_progress(tokens=2, checkpoint=True)
        assert [b for _, b in server.requests] == [
            {"tokens": 1, "checkpoint": True},
            {"tokens": 1},
            {"tokens": 2},
        ]
    finally:
        server.shutdown()
        server.server_close()


def test_a_stuck_agent_holds_the_loop_for_one_timeout_at_most(monkeypatch, tmp_path, caplog):
    server = _Recorder(tmp_path / "c.sock", hang=True)
    try:
        monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "c.sock"))
        monkeypatch.setenv("GPUCOST_JOB_ID", "j")
        started = time.monotonic()
        assert gpucost.report_progress(tokens=1) is False
        assert gpucost.report_progress(tokens=2) is False
        took = time.monotonic() - started
        assert _progress.TIMEOUT_S * 0.9 <= took < _progress.TIMEOUT_S + 0.5, took
        assert len(server.requests) == 1
        assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    finally:
        server.shutdown()
        server.server_close()


def test_the_socket_is_plain_http_over_af_unix(tmp_path, monkeypatch):
    """What goes over the wire: one HTTP/1.1 request, JSON, to the percent-encoded path."""
    path = tmp_path / "raw.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    got = {}

    def serve():
        conn, _ = listener.accept()
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
        while len(body) < length:
            body += conn.recv(4096)
        got["head"], got["body"] = head.decode(), json.loads(body)
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}')
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    monkeypatch.setenv("GPUCOST_SOCKET", str(path))
    monkeypatch.setenv("GPUCOST_JOB_ID", "default/trainer-0")
    assert gpucost.report_progress(samples=3)
    t.join(5)
    listener.close()
    assert got["head"].startswith("POST /api/v1/jobs/default%2Ftrainer-0/progress HTTP/1.1\r\n")
    assert "Content-Type: application/json" in got["head"]
    assert got["body"] == {"samples": 3}


def test_a_script_under_gpucost_run_reports_to_its_job(use_agent, monkeypatch, tmp_path):
    """The researcher's way: `gpucost run --socket S -- python train.py`, whose script reports
    to the job gpucost run registered, on the socket it was given (no GPUCOST_SOCKET set)."""
    import subprocess
    import sys

    from agent import agent_binary

    monkeypatch.delenv("GPUCOST_SOCKET")
    script = tmp_path / "train.py"
    script.write_text(
        "import os, sys, gpucost\n"
        "ok = gpucost.report_progress(tokens=4096, steps=8, flops_per_token=6e6, checkpoint=True)\n"
        "print(os.environ['GPUCOST_JOB_ID'])\n"
        "sys.exit(0 if ok else 5)\n"
    )
    out = subprocess.run(
        [str(agent_binary()), "run", "--socket", str(use_agent.socket), "--name", "under-run",
         "--", sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip()
    use_agent.wait_for_job(job, outcome="succeeded", name="under-run")
    use_agent.wait_for_progress(job, tokens=4096, steps=8, flops_per_token=6e6)
