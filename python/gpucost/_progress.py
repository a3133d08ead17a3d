"""``report_progress``: the current job's cumulative progress, sent to the agent's socket."""

from __future__ import annotations

import math
import os
import threading
import time
from typing import Any, Dict, Optional

from . import _agent
from ._log import log, warn_once

#: Seconds a report may take; the agent answers between two samples, within milliseconds.
TIMEOUT_S = 1.0
#: After a failed report, seconds during which reports are skipped (they are cumulative, so
#: nothing is lost), so that a missing or stuck agent costs the loop no more than one timeout
#: per minute.
RETRY_AFTER_S = 60.0
#: A job the agent does not know yet (404), or a process it has not yet seen on its GPU (403 on
#: the pod socket: processes are sampled every few seconds) is the normal start of a run: the
#: first such refusal is tried again after this long, and only a second one is warned about.
FIRST_RETRY_S = 10.0

_COUNTS = ("tokens", "samples", "steps")
_FLOPS = ("flops_per_token", "flops_per_step")


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{name} must be a whole number, not {v!r}")
    try:
        n = int(v)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a whole number, not {v!r}") from None
    if n != v or n < 0:
        raise ValueError(f"{name} must be a whole number >= 0, not {v!r}")
    return n


def _flops(name: str, v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number, not {v!r}") from None
    if not (math.isfinite(f) and f > 0):
        raise ValueError(f"{name} must be a positive number of FLOPs, not {v!r}")
    return f


def job_id() -> Optional[str]:
    """The current job's id: ``GPUCOST_JOB_ID`` (set by ``gpucost run`` and :func:`track`),
    else the id the agent gave in its last answer to a report, else ``None``."""
    env = os.environ.get("GPUCOST_JOB_ID", "").strip()
    return env or _reporter.learned_id


class _Reporter:
    """The process's one reporter: what it learned about the agent, and when to try again."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._clear()

    def _clear(self) -> None:
        # None: not known yet; False: the agent refused the field once (an agent from before
        # checkpoints were reported), so it is no longer sent.
        self.checkpoint_field: Optional[bool] = None
        self.retry_at = 0.0
        # Refusals in a row that may be a run's start (403, 404).
        self.early_refusals = 0
        self.learned_id: Optional[str] = None
        # The job's record as the agent answered the last report (what it had counted then).
        self.last_job: Optional[Dict[str, Any]] = None
        self.failing = False

    def reset(self) -> None:
        """Forgets what was learned (tests)."""
        with self.lock:
            self._clear()

    def report(self, fields: Dict[str, Any], checkpoint: bool) -> bool:
        with self.lock:
            if time.monotonic() < self.retry_at:
                return False
            body = dict(fields)
            if checkpoint and self.checkpoint_field is not False:
                body["checkpoint"] = True
            job = os.environ.get("GPUCOST_JOB_ID", "").strip()
            # Without an id the agent finds the job from the calling process (a pod, a Slurm
            # job, a process below a registered job); on the pod socket it always does.
            path = (
                f"/api/v1/jobs/{_agent.quote_id(job)}/progress" if job else "/api/v1/progress"
            )
            try:
                try:
                    answer = _agent.post(path, body, TIMEOUT_S)
                except _agent.Refused as e:
                    if not ("checkpoint" in body and e.status == 400 and "checkpoint" in e.message):
                        raise
                    # An agent that does not take checkpoints yet: say so once, and from now on
                    # report without them.
                    self.checkpoint_field = False
                    log.info(
                        "gpucost: this agent does not take checkpoint reports yet (%s); "
                        "progress is reported without them",
                        e.message,
                    )
                    del body["checkpoint"]
                    answer = _agent.post(path, body, TIMEOUT_S)
            except _agent.Unreachable as e:
                self._failed()
                warn_once(
                    "unreachable",
                    "gpucost: no agent answers (%s); training goes on, progress is not "
                    "reported (tried again every %d s)",
                    e,
                    RETRY_AFTER_S,
                )
                return False
            except _agent.Refused as e:
                if e.status in (403, 404) and self.early_refusals == 0:
                    self.early_refusals += 1
                    self._failed(FIRST_RETRY_S)
                    log.debug("gpucost: progress refused (%s); tried again in %d s", e, FIRST_RETRY_S)
                    return False
                self._failed()
                warn_once(
                    f"refused-{e.status}",
                    "gpucost: the agent refused a progress report (%s); training goes on "
                    "(tried again every %d s)",
                    e,
                    RETRY_AFTER_S,
                )
                return False
            if "checkpoint" in body:
                self.checkpoint_field = True
            if isinstance(answer.get("id"), str):
                self.learned_id = answer["id"]
                self.last_job = answer
            if self.failing:
                log.debug("gpucost: progress reports reach the agent again")
            self.failing = False
            self.early_refusals = 0
            return True

    def _failed(self, retry_s: Optional[float] = None) -> None:
        self.failing = True
        self.retry_at = time.monotonic() + (RETRY_AFTER_S if retry_s is None else retry_s)

    def after_fork(self) -> None:
        # A lock another thread held at the fork would stay held in the child forever.
        self.lock = threading.Lock()


_reporter = _Reporter()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reporter.after_fork)


def report_progress(
    tokens: Optional[int] = None,
    samples: Optional[int] = None,
    steps: Optional[int] = None,
    flops_per_token: Optional[float] = None,
    flops_per_step: Optional[float] = None,
    checkpoint: bool = False,
) -> bool:
    """Tells the agent how far the current job has got.

    Counts are cumulative since the job started (``tokens``, ``samples`` and ``steps`` processed
    by the whole job, all ranks together: report from one rank only). ``flops_per_token`` (or
    ``flops_per_step``) is the model's FLOPs for one token (step), forward and backward: about
    6 x the parameter count per token for a decoder; with it the agent works out the job's
    achieved FLOP/s and MFU. ``checkpoint=True`` says a checkpoint has just been written, so
    that a run that fails later is counted as wasted only since then.

    The job is ``GPUCOST_JOB_ID`` (``gpucost run`` and :func:`gpucost.track` set it); without
    one the agent finds the job the calling process belongs to. The agent is reached on
    ``GPUCOST_SOCKET`` (default ``/run/gpucost/agent.sock``), with a timeout of a second.

    Never raises: when no agent answers, or it refuses, a warning is logged once (logger
    ``gpucost``) and reports are skipped for a minute. Returns whether the agent took the report.
    """
    try:
        fields: Dict[str, Any] = {}
        try:
            for name, v in zip(_COUNTS, (tokens, samples, steps)):
                if v is not None:
                    fields[name] = _count(name, v)
            for name, v in zip(_FLOPS, (flops_per_token, flops_per_step)):
                if v is not None:
                    fields[name] = _flops(name, v)
        except ValueError as e:
            # One warning per field (the message starts with its name), whatever the values.
            warn_once(f"invalid-{str(e).split()[0]}", "gpucost: progress not reported: %s", e)
            return False
        return _reporter.report(fields, bool(checkpoint))
    except Exception as e:  # noqa: BLE001 - nothing may reach the training loop
        warn_once("bug", "gpucost: progress not reported: %r", e)
        return False
