"""A ``transformers.TrainerCallback`` that reports a ``Trainer``'s progress to the gpucost agent
and logs what the run has cost so far::

    from gpucost.integrations.huggingface import GpucostCallback

    trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[GpucostCallback()])
    trainer.train()

From the world process zero only (a multi-GPU run is counted once): optimizer steps
(``state.global_step``), tokens (``state.num_input_tokens_seen``, counted when
``TrainingArguments(include_num_input_tokens_seen=...)`` is on, or ``tokens_per_sample`` x
samples), samples (steps x the global batch), and the model's FLOPs: the Trainer's own estimate
(``state.total_flos``, which comes from the model's ``floating_point_ops``: 6 x the parameters
without embeddings per token), or what you give. Every ``interval`` seconds at a step's end, at
every log, at every checkpoint (``checkpoint=True``) and at the end. At each log it adds
``gpucost/cost``, ``gpucost/cost_per_1m_tokens`` and ``gpucost/mfu`` (those the agent knows) to
the logs, which every logger of the Trainer (TensorBoard, W&B, MLflow, ...) then records.
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional

from ._common import Session, quiet

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "gpucost.integrations.huggingface needs transformers: pip install 'gpucost[huggingface]'"
    ) from e


def _world_size(args: Any) -> int:
    # TrainingArguments.world_size asks torch.distributed; without torch (or before it is set
    # up) the run is one process.
    try:
        return max(1, int(args.world_size))
    except Exception:  # noqa: BLE001
        return 1


class GpucostCallback(TrainerCallback):
    """Reports progress and logs cost; see the module's documentation.

    - ``flops_per_token`` / ``flops_per_step``: the model's FLOPs (forward and backward) per
      token or per optimizer step of the whole job, instead of the Trainer's estimate.
    - ``tokens_per_sample``: tokens in each sample (the sequence length), when the Trainer does
      not count tokens.
    - ``global_batch_size``: samples per optimizer step of the whole job; default the per-device
      batch x gradient accumulation x world size (data parallelism).
    - ``interval``: seconds between reports (and cost reads) between logs.
    - ``log_cost``: add the cost figures to the Trainer's logs.
    """

    def __init__(
        self,
        flops_per_token: Optional[float] = None,
        flops_per_step: Optional[float] = None,
        tokens_per_sample: Optional[int] = None,
        global_batch_size: Optional[int] = None,
        interval: float = 30.0,
        log_cost: bool = True,
    ) -> None:
        self.flops_per_token = flops_per_token
        self.flops_per_step = flops_per_step
        self.tokens_per_sample = tokens_per_sample
        self.global_batch_size = global_batch_size
        self.session = Session(interval, log_cost)
        # The Trainer's counts when this training began (a resumed run starts from its
        # checkpoint's), and what earlier trainings of this process reported: the job's counts
        # are those since the job started.
        self._base: Dict[str, int] = {"steps": 0, "tokens": 0}
        self._carried: Dict[str, int] = {"steps": 0, "tokens": 0, "samples": 0}
        self._last: Dict[str, int] = dict(self._carried)
        # Model FLOPs per token from the model, per step from the Trainer's running total.
        self._model_flops_per_token: Optional[float] = None
        self._trainer_flops_per_step: Optional[float] = None
        self._trainer_flops_per_token: Optional[float] = None

    # --- Trainer events -------------------------------------------------------------------------

    @quiet
    def on_init_end(self, args, state, control, **kwargs):
        self._go_first()

    @quiet
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._go_first()
        self._base = {
            "steps": int(state.global_step or 0),
            "tokens": int(getattr(state, "num_input_tokens_seen", 0) or 0),
        }
        self._carried = dict(self._last)
        self._model_flops_per_token = self._model_estimate(model)

    @quiet
    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.session.due():
            self._report(args, state)

    @quiet
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        # The Trainer's FLOPs total is brought up to date just before a log.
        self._learn_trainer_flops(state)
        self._report(args, state)
        figures = self.session.cost_metrics()
        if figures and isinstance(logs, dict):
            logs.update(figures)
            # trainer_state.json keeps them too.
            history = getattr(state, "log_history", None)
            if history and history[-1].get("step") == state.global_step:
                history[-1].update(figures)

    @quiet
    def on_save(self, args, state, control, **kwargs):
        # Called once the checkpoint is written.
        if state.is_world_process_zero:
            self._learn_trainer_flops(state)
            self._report(args, state, checkpoint=True)

    @quiet
    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._learn_trainer_flops(state)
            self._report(args, state)

    # --- helpers --------------------------------------------------------------------------------

    def _go_first(self) -> None:
        """Moves this callback to the front of the Trainer's callback list, so that the figures
        it adds to a log reach the loggers (the Trainer puts them before user callbacks). The
        list is the ``callbacks`` of the ``CallbackHandler`` calling us; where it cannot be
        found, the figures reach only the callbacks after this one and ``log_history``."""
        try:
            frame = sys._getframe(1)
            for _ in range(4):
                if frame is None:
                    return
                callbacks = getattr(frame.f_locals.get("self"), "callbacks", None)
                if isinstance(callbacks, list):
                    mine = [i for i, c in enumerate(callbacks) if c is self]
                    if mine:
                        # The handler is iterating over this list: taking this callback out of
                        # place i and putting it first leaves the one after it at i + 1.
                        if mine[0] > 0:
                            callbacks.insert(0, callbacks.pop(mine[0]))
                        return
                frame = frame.f_back
        except Exception:  # noqa: BLE001 - best effort
            return

    @staticmethod
    def _model_estimate(model: Any) -> Optional[float]:
        """The model's FLOPs per token of training, as transformers estimates them for
        ``floating_point_ops``: 6 x the parameters without the embeddings."""
        count = getattr(model, "num_parameters", None)
        if not callable(count):
            return None
        try:
            n = count(exclude_embeddings=True)
        except Exception:  # noqa: BLE001
            return None
        return 6.0 * n if n else None

    def _learn_trainer_flops(self, state: Any) -> None:
        total = float(getattr(state, "total_flos", 0) or 0)
        steps = int(state.global_step or 0)
        tokens = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        if total > 0 and steps > 0:
            self._trainer_flops_per_step = total / steps
            if tokens > 0:
                self._trainer_flops_per_token = total / tokens

    def _counts(self, args: Any, state: Any) -> Dict[str, Optional[int]]:
        steps = max(0, int(state.global_step or 0) - self._base["steps"])
        batch = self.global_batch_size
        if batch is None:
            per_device = getattr(state, "train_batch_size", None) or args.per_device_train_batch_size
            batch = int(per_device) * int(args.gradient_accumulation_steps or 1) * _world_size(args)
        samples = steps * int(batch)
        seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        tokens: Optional[int] = None
        if seen > 0:
            tokens = max(0, seen - self._base["tokens"])
        elif self.tokens_per_sample:
            tokens = samples * int(self.tokens_per_sample)
        return {"steps": steps, "samples": samples, "tokens": tokens}

    def _report(self, args: Any, state: Any, checkpoint: bool = False) -> None:
        try:
            c = self._counts(args, state)
            steps = self._carried["steps"] + int(c["steps"] or 0)
            samples = self._carried["samples"] + int(c["samples"] or 0)
            tokens = None if c["tokens"] is None else self._carried["tokens"] + c["tokens"]
            fpt, fps = self.flops_per_token, self.flops_per_step
            if fpt is None and fps is None:
                if tokens is not None:
                    fpt = self._trainer_flops_per_token or self._model_flops_per_token
                if fpt is None:
                    fps = self._trainer_flops_per_step
            self._last = {"steps": steps, "samples": samples, "tokens": tokens or 0}
        except Exception:  # noqa: BLE001 - a Trainer we do not understand: report nothing
            return
        self.session.report(
            tokens=tokens,
            samples=samples,
            steps=steps,
            flops_per_token=fpt,
            flops_per_step=fps,
            checkpoint=checkpoint,
        )
