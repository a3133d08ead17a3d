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

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="switches uids: run as root (CI does)"),
    # The agent's log is read by a thread of this process; the forked child only reports and
    # exits (Python 3.12 and later warn about any fork of a threaded process).
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

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


def test_a_pod_gets_its_cost_from_the_socket_without_the_tcp_api(agent):
    """A pod reaches its node's agent over the socket only: the callbacks' cost figures come
    from the agent's answer to the last report (the MFU needs the TCP API)."""

    def report_and_read():
        from gpucost.integrations._common import COST, MFU, Session

        os.environ["GPUCOST_URL"] = "http://127.0.0.1:9"  # nothing there
        session = Session(interval=0, log_cost=True)
        if not session.report(tokens=300, steps=3):
            return False
        figures = session.cost_metrics()
        return figures.get(COST, 0) > 0 and MFU not in figures and "gpucost/cost_per_1m_tokens" in figures

    assert _as_nobody(agent, None, report_and_read) == 0


def test_the_cost_of_a_reports_answer_adds_up_as_the_agents(use_agent):
    """The parts of `cost_total` (`Usage::total_cost`) are the ones the package adds up."""
    from gpucost.integrations._common import COST, figures_of

    record = use_agent.job("cost-run")
    usage_only = {k: v for k, v in record.items() if k != "cost_total"}
    assert figures_of(usage_only)[COST] == pytest.approx(record["cost_total"], rel=1e-12)
