"""What the callbacks share: when to report, and the cost figures they log."""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional, TypeVar

from .. import _agent, _progress
from .._log import log, warn_once
from .._progress import job_id, report_progress
from .._track import TIMEOUT_S

F = TypeVar("F", bound=Callable[..., Any])


def quiet(hook: F) -> F:
    """A callback hook that never raises into the trainer: whatever goes wrong in it is one
    warning (logger ``gpucost``), and the hook returns ``None``."""

    @functools.wraps(hook)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return hook(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - nothing may reach the training loop
            warn_once(f"bug-{hook.__name__}", "gpucost: %s failed: %r", hook.__qualname__, e)
            return None

    return guarded  # type: ignore[return-value]


#: Names of the figures the callbacks log.
COST = "gpucost/cost"
COST_PER_1M_TOKENS = "gpucost/cost_per_1m_tokens"
MFU = "gpucost/mfu"


def _prometheus_label(value: str) -> str:
    """A label value as the Prometheus text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: Seconds without TCP reads after one failed.
TCP_RETRY_AFTER_S = 300.0

#: The parts of a job's cost, as the agent adds them up (``Usage::total_cost``, core/src/jobs.rs;
#: a test checks the sum against the agent's ``cost_total``).
COST_PARTS = ("cost_gpu_time", "cost_energy", "cost_overhead")


def figures_of(record: Dict[str, Any]) -> Dict[str, float]:
    """``gpucost/cost`` and ``gpucost/cost_per_1m_tokens`` of a job's record: the TCP API's,
    or one the socket answered a report with (which has the usage, not the totals)."""
    out: Dict[str, float] = {}
    cost = record.get("cost_total")
    if not isinstance(cost, (int, float)):
        usage = record.get("usage") or {}
        parts = [usage.get(k) for k in COST_PARTS]
        if not all(isinstance(p, (int, float)) for p in parts):
            return out
        cost = sum(parts)
    out[COST] = float(cost)
    tokens = (record.get("progress") or {}).get("tokens")
    if isinstance(tokens, int) and tokens > 0:
        out[COST_PER_1M_TOKENS] = float(cost) / tokens * 1e6
    return out


def job_mfu(job: str, timeout: float = 2.0) -> Optional[float]:
    """The job's MFU as the agent exports it (``gpucost_job_mfu_ratio``): from the model FLOPs
    the job reported where it did (``source="reported"``), else from the GPUs' pipe counters.
    ``None`` when the agent has neither."""
    want = f'job_id="{_prometheus_label(job)}"'
    found: Dict[str, float] = {}
    for line in _agent.get_lines("/metrics", "gpucost_job_mfu_ratio{", timeout):
        labels, _, rest = line.rpartition("}")
        if want not in labels:
            continue
        for source in ("reported", "counters"):
            if f'source="{source}"' in labels:
                try:
                    found[source] = float(rest.split()[0])
                except (IndexError, ValueError):
                    pass
    return found.get("reported", found.get("counters"))


class Session:
    """A callback's reporting state: progress at most every ``interval`` seconds between the
    events that always report (a log, a checkpoint, the end), and the cost read as often."""

    def __init__(self, interval: float, log_cost: bool) -> None:
        self.interval = float(interval)
        self.log_cost = log_cost
        self._reported_at: Optional[float] = None
        self._read_at: Optional[float] = None
        self._tcp_retry_at = 0.0

    def due(self) -> bool:
        return self._reported_at is None or time.monotonic() - self._reported_at >= self.interval

    def report(
        self,
        tokens: Optional[int] = None,
        samples: Optional[int] = None,
        steps: Optional[int] = None,
        flops_per_token: Optional[float] = None,
        flops_per_step: Optional[float] = None,
        checkpoint: bool = False,
    ) -> bool:
        self._reported_at = time.monotonic()
        return report_progress(
            tokens=tokens,
            samples=samples,
            steps=steps,
            flops_per_token=flops_per_token,
            flops_per_step=flops_per_step,
            checkpoint=checkpoint,
        )

    def cost_metrics(self, force: bool = False) -> Dict[str, float]:
        """``gpucost/cost``, ``gpucost/cost_per_1m_tokens`` and ``gpucost/mfu``, those the
        agent knows, read at most every ``interval`` seconds (unless ``force``); empty between
        reads and when the job or the agent is unknown. Never raises."""
        if not self.log_cost:
            return {}
        now = time.monotonic()
        if not force and self._read_at is not None and now - self._read_at < self.interval:
            return {}
        self._read_at = now
        try:
            return self._read()
        except Exception as e:  # noqa: BLE001 - nothing may reach the training loop
            warn_once("bug-cost", "gpucost: cannot read the job's cost: %r", e)
            return {}

    def _read(self) -> Dict[str, float]:
        job = job_id()
        record = None
        if job and time.monotonic() >= self._tcp_retry_at:
            try:
                record = _agent.job(job, TIMEOUT_S)
            except _agent.AgentError as e:
                # A pod often cannot reach its node's agent over TCP: the socket's answers
                # still carry the cost, but not the MFU. Not tried again for a while, so that
                # an address that swallows packets does not cost a timeout at every read.
                self._tcp_retry_at = time.monotonic() + TCP_RETRY_AFTER_S
                log.debug("gpucost: cannot read the job from the agent's TCP API: %s", e)
        if record is None:
            # The agent's answer to the last report is this process's job as it was then.
            last = _progress._reporter.last_job
            return figures_of(last) if last else {}
        out = figures_of(record)
        try:
            mfu = job_mfu(str(record.get("id") or job))
        except _agent.AgentError as e:
            warn_once("mfu", "gpucost: cannot read the job's MFU from the agent: %s", e)
            mfu = None
        if mfu is not None:
            out[MFU] = mfu
        return out
