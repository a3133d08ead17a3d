"""``track`` and ``current_cost`` against the real agent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

import gpucost


def test_a_tracked_block_is_a_job_of_this_process(use_agent):
    with gpucost.track(name="notebook", labels={"team": "nlp", "lr": 3e-4}) as t:
        job = use_agent.wait_for_job(t.job_id)
        assert job["outcome"] == "running"
        assert job["name"] == "notebook"
        assert job["labels"] == {"team": "nlp", "lr": "0.0003"}
        assert job["registration"]["pid"] == os.getpid()
        # Child processes see the job.
        out = subprocess.run(
            [sys.executable, "-c", "import os; print(os.environ['GPUCOST_JOB_ID'])"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.strip() == t.job_id
        assert isinstance(gpucost.current_cost(), float)
        assert t.cost() == gpucost.current_cost(t.job_id)
    assert "GPUCOST_JOB_ID" not in os.environ
    job = use_agent.wait_for_job(t.job_id, outcome="succeeded")
    assert job["exit_code"] == 0


def test_an_exception_fails_the_job_and_goes_on(use_agent):
    with pytest.raises(ZeroDivisionError):
        with gpucost.track(name="crash") as t:
            1 / 0
    job = use_agent.wait_for_job(t.job_id, outcome="failed")
    assert job["exit_code"] == 1


def test_ctrl_c_is_signal_2(use_agent):
    with pytest.raises(KeyboardInterrupt):
        with gpucost.track(name="interrupted") as t:
            raise KeyboardInterrupt
    job = use_agent.wait_for_job(t.job_id, outcome="failed")
    assert job["signal"] == 2 and job["exit_code"] is None


def test_sys_exit_is_its_code(use_agent):
    with pytest.raises(SystemExit):
        with gpucost.track(name="exits") as t:
            sys.exit(3)
    assert use_agent.wait_for_job(t.job_id, outcome="failed")["exit_code"] == 3
    with pytest.raises(SystemExit):
        with gpucost.track(name="exits-0") as t:
            sys.exit(0)
    use_agent.wait_for_job(t.job_id, outcome="succeeded")


def test_a_given_id_and_a_job_inside_a_job(use_agent, monkeypatch):
    with gpucost.track(name="outer", job_id="sweep/7") as outer:
        assert outer.job_id == "sweep/7"
        use_agent.wait_for_job("sweep/7")
        # What `gpucost run` leaves for a script that uses track too: the inner block joins.
        with gpucost.track(name="inner") as inner:
            assert inner.job_id == "sweep/7"
        assert use_agent.job("sweep/7")["outcome"] == "running"
        assert os.environ["GPUCOST_JOB_ID"] == "sweep/7"
    use_agent.wait_for_job("sweep/7", outcome="succeeded")


def test_the_cost_of_a_job_on_a_gpu(use_agent):
    # cost-run holds a busy simulated H100: its cost grows.
    first = gpucost.current_cost("cost-run")
    assert first is not None and first > 0
    deadline = time.monotonic() + 5
    while gpucost.current_cost("cost-run") <= first:
        assert time.monotonic() < deadline, "the cost did not grow"
        time.sleep(0.05)
    assert gpucost.current_cost("nobody's") is None
    assert gpucost.current_job("cost-run")["currency"] == "USD"


def test_no_agent_runs_the_block_untracked(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("GPUCOST_SOCKET", str(tmp_path / "none.sock"))
    monkeypatch.setenv("GPUCOST_URL", "http://127.0.0.1:9")
    ran = []
    with gpucost.track(name="offline") as t:
        ran.append(True)
        assert t.job_id is None
        assert gpucost.current_cost() is None
    assert ran
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    with pytest.raises(ValueError):
        with gpucost.track():
            raise ValueError("the block's own error goes on")
