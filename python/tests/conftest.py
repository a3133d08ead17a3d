"""Fixtures: one real agent for the session, on a simulated node whose GPU 0 is held by this
test process (so the pod-socket tests have a process of a job to call from), and a clean slate
of the package's state and environment for every test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent import Agent, scenario  # noqa: E402

import gpucost._log  # noqa: E402
import gpucost._progress  # noqa: E402

#: The simulated node's GPU jobs: id -> pid. This process holds GPU 0 as job "ml/train-0" (a
#: Kubernetes-style id, to need its `/` percent-encoded); the callbacks' tests report for the
#: others (processes of the scenario only).
GPU_JOBS = {"ml/train-0": os.getpid(), "hf-run": 7101, "pl-run": 7201, "cost-run": 7301}


@pytest.fixture(scope="session")
def agent():
    a = Agent(scenario([{"id": k, "pid": v} for k, v in GPU_JOBS.items()]))
    try:
        # Found at the first process sample.
        for job in GPU_JOBS:
            a.wait_for_job(job)
        yield a
    finally:
        a.stop()


@pytest.fixture(autouse=True)
def clean_slate(monkeypatch):
    for k in list(os.environ):
        if k.startswith("GPUCOST_"):
            monkeypatch.delenv(k)
    gpucost._progress._reporter.reset()
    gpucost._log.forget()
    yield
    gpucost._progress._reporter.reset()
    gpucost._log.forget()


@pytest.fixture
def use_agent(agent, monkeypatch):
    """The package pointed at the session's agent."""
    monkeypatch.setenv("GPUCOST_SOCKET", str(agent.socket))
    monkeypatch.setenv("GPUCOST_URL", agent.url)
    return agent
