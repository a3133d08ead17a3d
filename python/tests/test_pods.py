"""Progress from unprivileged containers: the agent's pod socket, through the real binary.

A pod's process is not root, its uid means nothing on the node, and it cannot reach the node's
job socket. On the pod socket (mode 0666) it reports progress only for the job its own process
belongs to, as the agent finds it from the caller's pid (SO_PEERCRED), whatever id it sends.

Here this test process holds GPU 0 of the simulated node as the job ``ml/train-0`` (see
``conftest.py``). A forked child that becomes uid 65534 (``nobody``) is a process of that job;
a grandchild whose parent has exited (re-parented away from this process) is of none. Needs root
to change uids, as CI runs.
"""

from __future__ import annotations

import os
import time

import pytest

import gpucost

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switches uids: run as root (CI does)")

NOBODY = 65534


def _as_nobody(agent, job_env, report, orphan=False) -> int:
    """Runs ``report()`` in a forked process of uid 65534 connected to the pod socket, with
    ``GPUCOST_JOB_ID`` as ``job_env`` (``None``: unset); its exit status says whether the agent
    took the report. ``orphan``: from a grandchild whose parent has exited."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            os.close(r)
            if orphan:
                parent = os.getpid()
                if os.fork() != 0:
                    os._exit(0)
                deadline = time.monotonic() + 5
                while os.getppid() == parent and time.monotonic() < deadline:
                    time.sleep(0.01)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.environ["GPUCOST_SOCKET"] = str(agent.pod_socket)
            os.environ.pop("GPUCOST_JOB_ID", None)
            if job_env is not None:
                os.environ["GPUCOST_JOB_ID"] = job_env
            code = 0 if report() else 1
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    data = os.read(r, 1)
    os.close(r)
    assert data, "the reporting process died"
    return data[0]


def _tokens(agent, job):
    p = agent.job(job)["progress"]
    return p["tokens"] if p else 0


def test_a_pod_reports_for_its_own_job_whatever_id_it_sends(agent):
    assert os.stat(agent.pod_socket).st_mode & 0o777 == 0o666
    before = _tokens(agent, "hf-run")
    # No id: the agent finds the job.
    assert _as_nobody(agent, None, lambda: gpucost.report_progress(tokens=100, steps=1)) == 0
    agent.wait_for_progress("ml/train-0", tokens=100)
    # Another job's id: the report still goes to the caller's own job.
    assert _as_nobody(agent, "hf-run", lambda: gpucost.report_progress(tokens=200, steps=2)) == 0
    agent.wait_for_progress("ml/train-0", tokens=200)
    assert _tokens(agent, "hf-run") == before


def test_a_process_of_no_job_is_refused(agent):
    before = _tokens(agent, "ml/train-0")
    assert _as_nobody(agent, "ml/train-0", lambda: gpucost.report_progress(tokens=10**6), orphan=True) == 1
    time.sleep(0.3)  # a few snapshots
    assert _tokens(agent, "ml/train-0") == before


def test_the_pod_socket_registers_and_ends_nothing(agent, monkeypatch):
    monkeypatch.setenv("GPUCOST_SOCKET", str(agent.pod_socket))
    monkeypatch.setenv("GPUCOST_URL", agent.url)
    with gpucost.track(name="from-a-pod") as t:
        assert t.job_id is None
    assert agent.job("ml/train-0")["outcome"] == "running"
