"""A Lightning ``Callback`` that reports a run's progress to the gpucost agent and logs what it
has cost so far::

    from gpucost.integrations.lightning import GpucostCallback

    trainer = lightning.Trainer(callbacks=[GpucostCallback(tokens_per_sample=2048)])
    trainer.fit(model, data)

From global rank 0 only (a multi-GPU run is counted once): optimizer steps
(``trainer.global_step``), samples (each training batch's size, found from the batch or given,
x the world size), tokens (``count_tokens(batch)``, or the ``input_ids`` of a dict batch, or
``tokens_per_sample`` x samples, x the world size) and the model's FLOPs: what you give, else
the LightningModule's ``flops_per_batch`` (the attribute Lightning's ``ThroughputMonitor``
reads, from ``lightning.fabric.utilities.throughput.measure_flops``: one batch of one device,
forward and backward). Every ``interval`` seconds at a batch's end, after a checkpoint
(``checkpoint=True``) and at the end. ``gpucost/cost``, ``gpucost/cost_per_1m_tokens`` and
``gpucost/mfu`` go to every logger of the trainer (``trainer.loggers``).

Works with ``lightning`` (``lightning.pytorch``) and the older ``pytorch_lightning`` package.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

from ._common import Session, quiet

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - depends on the environment
    try:
        from pytorch_lightning.callbacks import Callback  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError(
            "gpucost.integrations.lightning needs Lightning: pip install 'gpucost[lightning]'"
        ) from e


def batch_size(batch: Any) -> Optional[int]:
    """Samples in a batch: the first dimension of its first tensor (a tensor, or the first one
    found in a dict, list or tuple), else its length."""
    shape = getattr(batch, "shape", None)
    if shape is not None:
        try:
            return int(shape[0]) if len(shape) else None
        except (TypeError, IndexError, ValueError):
            return None
    if isinstance(batch, Mapping):
        for v in batch.values():
            n = batch_size(v)
            if n is not None:
                return n
        return None
    if isinstance(batch, (list, tuple)):
        if batch and all(isinstance(x, (int, float, str)) for x in batch):
            return len(batch)
        for v in batch:
            n = batch_size(v)
            if n is not None:
                return n
    return None


def input_tokens(batch: Any) -> Optional[int]:
    """Tokens in a dict batch with ``input_ids`` (padding included)."""
    if isinstance(batch, Mapping) and "input_ids" in batch:
        numel = getattr(batch["input_ids"], "numel", None)
        if callable(numel):
            return int(numel())
    return None


class GpucostCallback(Callback):
    """Reports progress and logs cost; see the module's documentation.

    - ``flops_per_token`` / ``flops_per_step``: the model's FLOPs (forward and backward) per
      token, or per optimizer step of the whole job.
    - ``tokens_per_sample``: tokens in each sample (the sequence length).
    - ``count_tokens``: a function giving the tokens of one batch (on one device).
    - ``batch_size``: samples per batch on one device, when the batch does not tell.
    - ``interval``: seconds between reports (and cost reads).
    - ``log_cost``: log the cost figures to the trainer's loggers.
    """

    def __init__(
        self,
        flops_per_token: Optional[float] = None,
        flops_per_step: Optional[float] = None,
        tokens_per_sample: Optional[int] = None,
        count_tokens: Optional[Callable[[Any], int]] = None,
        batch_size: Optional[int] = None,
        interval: float = 30.0,
        log_cost: bool = True,
    ) -> None:
        super().__init__()
        self.flops_per_token = flops_per_token
        self.flops_per_step = flops_per_step
        self.tokens_per_sample = tokens_per_sample
        self.count_tokens = count_tokens
        self.batch_size = batch_size
        self.session = Session(interval, log_cost)
        self._counts: Dict[str, int] = {"samples": 0, "tokens": 0, "steps": 0}
        self._tokens_known = False
        self._step_base = 0
        self._steps_carried = 0
        self._checkpoint_pending = False

    # --- Lightning hooks ------------------------------------------------------------------------

    @quiet
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # A resumed run starts at its checkpoint's step; the job's steps are those since the job
        # started (also over several fits in one process).
        self._step_base = int(trainer.global_step)
        self._steps_carried = self._counts["steps"]

    @quiet
    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_rank != 0:
            return
        try:
            self._count(trainer, batch)
        except Exception:  # noqa: BLE001 - a batch we do not understand counts nothing
            pass
        if self._checkpoint_pending or self.session.due():
            self._report(trainer, pl_module)

    @quiet
    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: Dict[str, Any]) -> None:
        # Called while the checkpoint is being put together, before it is written: it is
        # reported with the next report, once training has gone on (or ended).
        self._checkpoint_pending = True

    @quiet
    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.global_rank != 0:
            return
        self._report(trainer, pl_module, force_cost=True)

    # --- helpers --------------------------------------------------------------------------------

    def _count(self, trainer: Any, batch: Any) -> None:
        world = max(1, int(getattr(trainer, "world_size", 1) or 1))
        n = self.batch_size if self.batch_size is not None else batch_size(batch)
        if n is not None:
            self._counts["samples"] += int(n) * world
        tokens: Optional[int] = None
        if self.count_tokens is not None:
            tokens = int(self.count_tokens(batch))
        elif self.tokens_per_sample is not None and n is not None:
            tokens = int(n) * int(self.tokens_per_sample)
        else:
            tokens = input_tokens(batch)
        if tokens is not None:
            self._tokens_known = True
            self._counts["tokens"] += tokens * world

    def _flops_per_step(self, trainer: Any, pl_module: Any) -> Optional[float]:
        per_batch = getattr(pl_module, "flops_per_batch", None)
        if not isinstance(per_batch, (int, float)) or per_batch <= 0:
            return None
        world = max(1, int(getattr(trainer, "world_size", 1) or 1))
        accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
        return float(per_batch) * world * accumulate

    def _report(self, trainer: Any, pl_module: Any, force_cost: bool = False) -> None:
        steps = self._steps_carried + max(0, int(trainer.global_step) - self._step_base)
        self._counts["steps"] = steps
        # FLOPs per token only with tokens to multiply them by.
        fpt = self.flops_per_token if self._tokens_known else None
        fps = self.flops_per_step
        if fpt is None and fps is None:
            fps = self._flops_per_step(trainer, pl_module)
        checkpoint, self._checkpoint_pending = self._checkpoint_pending, False
        self.session.report(
            tokens=self._counts["tokens"] if self._tokens_known else None,
            samples=self._counts["samples"] or None,
            steps=steps,
            flops_per_token=fpt,
            flops_per_step=fps,
            checkpoint=checkpoint,
        )
        figures = self.session.cost_metrics(force=force_cost)
        if figures:
            for logger in getattr(trainer, "loggers", None) or []:
                try:
                    logger.log_metrics(figures, step=int(trainer.global_step))
                except Exception:  # noqa: BLE001 - one logger's trouble is not the loop's
                    pass
