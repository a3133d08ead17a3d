"""What the callbacks share: when to report, and the cost figures they log."""

from __future__ import annotations

import time
from typing import Dict, Optional

from .. import _agent
from .._log import warn_once
from .._progress import job_id, report_progress
from .._track import current_job

#: Names of the figures the callbacks log.
COST = "gpucost/cost"
COST_PER_1M_TOKENS = "gpucost/cost_per_1m_tokens"
MFU = "gpucost/mfu"


def _prometheus_label(value: str) -> str:
    """A label value as the Prometheus text format writes it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
            job = job_id()
            record = current_job(job) if job else None
            if not record:
                return {}
            out: Dict[str, float] = {}
            for key, field in ((COST, "cost_total"), (COST_PER_1M_TOKENS, "cost_per_million_tokens")):
                v = record.get(field)
                if isinstance(v, (int, float)):
                    out[key] = float(v)
            try:
                mfu = job_mfu(str(record.get("id") or job))
            except _agent.AgentError as e:
                warn_once("mfu", "gpucost: cannot read the job's MFU from the agent: %s", e)
                mfu = None
            if mfu is not None:
                out[MFU] = mfu
            return out
        except Exception as e:  # noqa: BLE001 - nothing may reach the training loop
            warn_once("bug-cost", "gpucost: cannot read the job's cost: %r", e)
            return {}
