"""``track``: a job for a run that ``gpucost run`` did not start; ``current_cost``: what the
current job has cost so far."""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Type

from . import _agent
from ._log import log, warn_once
from ._progress import job_id as _job_id

#: Seconds a registration, an ending or a read may take.
TIMEOUT_S = 2.0


def current_job(job_id: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The job's record as the agent's read-only JSON API shows it (``GET /api/v1/jobs/{id}``
    on ``GPUCOST_URL``, default ``http://127.0.0.1:10119``): usage and cost per component,
    ``cost_total``, ``currency``, ``progress``, ``cost_per_million_tokens`` once tokens are
    reported. ``job_id`` defaults to the current job. ``None`` when unknown or unreachable;
    never raises."""
    try:
        job = job_id or _job_id()
        if not job:
            return None
        return _agent.job(job, TIMEOUT_S)
    except _agent.AgentError as e:
        warn_once("read", "gpucost: cannot read the job's cost from the agent: %s", e)
        return None
    except Exception as e:  # noqa: BLE001 - nothing may reach the training loop
        warn_once("bug-read", "gpucost: cannot read the job's cost: %r", e)
        return None


def current_cost(job_id: Optional[str] = None) -> Optional[float]:
    """What the current job (or ``job_id``) has cost so far on this node, in the agent's
    currency (``current_job()["currency"]``), or ``None`` when unknown. A multi-node job's
    other nodes are in their own agents (Prometheus sums them)."""
    job = current_job(job_id)
    cost = job.get("cost_total") if job else None
    return float(cost) if isinstance(cost, (int, float)) else None


def _gpu_list(text: Optional[str]) -> List[str]:
    """A comma-separated GPU list, without the container toolkit's words for none or all."""
    gpus = [g.strip() for g in (text or "").split(",")]
    return [g for g in gpus if g and g not in ("all", "none", "void", "NoDevFiles")]


def _visible_gpus() -> Optional[List[str]]:
    """What ``gpucost run`` declares as root, by the same rules: UUIDs in
    ``CUDA_VISIBLE_DEVICES`` or ``NVIDIA_VISIBLE_DEVICES`` (exact whatever the numbering); else
    Slurm's ``SLURM_STEP_GPUS`` or ``SLURM_JOB_GPUS``; else the indices of
    ``CUDA_VISIBLE_DEVICES`` or ``NVIDIA_VISIBLE_DEVICES``, except inside a Slurm job, where
    ``CUDA_VISIBLE_DEVICES`` counts from 0 the GPUs the job sees, not the node's: then none."""
    visible = _gpu_list(os.environ.get("CUDA_VISIBLE_DEVICES")) or _gpu_list(
        os.environ.get("NVIDIA_VISIBLE_DEVICES")
    )
    if visible and all(g.startswith(("GPU-", "MIG-")) for g in visible):
        return visible
    slurm = _gpu_list(os.environ.get("SLURM_STEP_GPUS")) or _gpu_list(os.environ.get("SLURM_JOB_GPUS"))
    if slurm:
        return slurm
    if visible and not os.environ.get("SLURM_JOB_ID", "").strip():
        return visible
    return None


def _end_body(exc_type: Optional[Type[BaseException]], exc: Optional[BaseException]) -> Dict[str, Any]:
    """How the block ended, as ``gpucost run`` reports a command's exit."""
    if exc_type is None:
        return {"exit_code": 0}
    if issubclass(exc_type, KeyboardInterrupt):
        return {"signal": 2}
    if issubclass(exc_type, SystemExit):
        code = getattr(exc, "code", None)
        if code is None:
            return {"exit_code": 0}
        return {"exit_code": code if isinstance(code, int) else 1}
    return {"exit_code": 1}


class track:
    """A job for this process and everything it starts, for runs not started by ``gpucost run``
    (a notebook, a script launched by some other tool)::

        with gpucost.track(name="llama-7b", labels={"team": "nlp"}):
            train()

    Registers the current process (``os.getpid()``) with the agent, as ``gpucost run`` registers
    itself, and puts the job's id in ``os.environ["GPUCOST_JOB_ID"]`` for the processes it starts
    and for :func:`report_progress`. The block's outcome ends the job: success, an exception
    (exit code 1), ``KeyboardInterrupt`` (signal 2) or ``SystemExit`` (its code); the exception
    goes on as it would have. ``job_id`` (default ``GPUCOST_JOB_ID``) gives a multi-node run one
    id on every node.

    Inside a job that is already registered and running (under ``gpucost run``, or a ``track``
    of a parent process) it joins that job and neither registers nor ends it. With no agent it
    warns once and the block runs untracked. Never raises into the block.
    """

    def __init__(
        self,
        name: Optional[str] = None,
        labels: Optional[Mapping[str, Any]] = None,
        job_id: Optional[str] = None,
    ) -> None:
        self.name = name
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self.requested_id = job_id
        #: The job's id while the block runs; ``None`` when untracked.
        self.job_id: Optional[str] = None
        self._registered = False
        self._env_before: Optional[str] = None

    def cost(self) -> Optional[float]:
        """:func:`current_cost` of this job."""
        return current_cost(self.job_id) if self.job_id else None

    def __enter__(self) -> "track":
        try:
            self._enter()
        except Exception as e:  # noqa: BLE001 - the block runs whatever happens here
            warn_once("bug-track", "gpucost: the run is not tracked: %r", e)
        return self

    def _enter(self) -> None:
        self._env_before = os.environ.get("GPUCOST_JOB_ID")
        inherited = (self._env_before or "").strip()
        wanted = (self.requested_id or "").strip() or inherited
        if inherited and wanted == inherited and self._running_registration(inherited):
            self.job_id = inherited
            log.debug("gpucost: joining job %s, registered before", inherited)
            return
        body: Dict[str, Any] = {
            "name": self.name or os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "python"),
            "labels": self.labels,
            "pid": os.getpid(),
        }
        if wanted:
            body["id"] = wanted
        # Only root may declare an allocation; a user's job is billed for the GPUs it uses.
        if os.geteuid() == 0:
            gpus = _visible_gpus()
            if gpus:
                body["gpus"] = gpus
        try:
            job = _agent.post("/api/v1/jobs", body, TIMEOUT_S)
        except _agent.AgentError as e:
            warn_once(
                "register",
                "gpucost: cannot register the run with the agent at %s (%s); it runs untracked",
                _agent.socket_path(),
                e,
            )
            return
        self.job_id = str(job.get("id") or wanted)
        self._registered = True
        os.environ["GPUCOST_JOB_ID"] = self.job_id

    @staticmethod
    def _running_registration(job_id: str) -> bool:
        """Whether the agent has ``job_id`` as a running registered job (``gpucost run``'s, a
        parent's ``track``)."""
        try:
            job = _agent.job(job_id, TIMEOUT_S)
        except _agent.AgentError:
            return False
        return bool(job) and job.get("outcome") == "running" and bool(job.get("registration"))

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> bool:
        try:
            if self._registered and self.job_id:
                path = f"/api/v1/jobs/{_agent.quote_id(self.job_id)}/end"
                try:
                    _agent.post(path, _end_body(exc_type, exc), TIMEOUT_S)
                except _agent.AgentError as e:
                    warn_once("end", "gpucost: could not report the end of job %s: %s", self.job_id, e)
                if self._env_before is None:
                    os.environ.pop("GPUCOST_JOB_ID", None)
                else:
                    os.environ["GPUCOST_JOB_ID"] = self._env_before
        except Exception as e:  # noqa: BLE001
            warn_once("bug-track-end", "gpucost: could not end the job: %r", e)
        self._registered = False
        # The block's own exception, if any, goes on.
        return False
