"""``GpucostCallback`` for the Hugging Face ``Trainer``, against the real agent.

The callback runs among transformers' own objects: ``TrainingArguments``, ``TrainerState``,
``TrainerControl``, the ``CallbackHandler`` that calls every callback and ``DefaultFlowCallback``
that decides when to log and save; these import without torch. The ``Trainer`` itself and its
models need torch (a 5.6 GB install on CI, 2m20s measured), so the training loop here is a
stand-in that drives the handler in the order ``Trainer._inner_training_loop`` and
``Trainer._maybe_log_save_evaluate`` do (transformers 5.x): ``on_init_end``, ``on_train_begin``,
per step ``on_step_begin``/``on_step_end``, then when asked ``store_flos`` + ``log`` (the log
appended to ``log_history``, then ``on_log``) and ``on_save`` after a checkpoint, and
``on_train_end``. The model is a stand-in with transformers' ``num_parameters``, and the
FLOPs total grows as the Trainer's ``floating_point_ops`` makes it (6 x parameters without
embeddings x tokens). ``test_real_trainers.py`` runs the real ``Trainer`` where torch is there.
"""

from __future__ import annotations

import pytest

transformers = pytest.importorskip("transformers")

from transformers import TrainerCallback, TrainingArguments  # noqa: E402
from transformers.trainer_callback import (  # noqa: E402
    CallbackHandler,
    DefaultFlowCallback,
    TrainerControl,
    TrainerState,
)

from gpucost.integrations.huggingface import GpucostCallback  # noqa: E402

PARAMS = 1_000_000
TOKENS_PER_STEP = 4 * 2 * 128  # per-device batch x accumulation x sequence length


class TinyModel:
    """Stands in for a ``PreTrainedModel``: its ``num_parameters`` as transformers defines it."""

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        return PARAMS if exclude_embeddings else PARAMS + 250_000


class Logger(TrainerCallback):
    """Stands in for the Trainer's reporting callbacks (TensorBoard, W&B, ...), which the
    Trainer puts before the callbacks a user passes: what it logs is what they would."""

    def __init__(self) -> None:
        self.logged = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logged.append(dict(logs or {}))


def train(tmp_path, callback, steps=20, world_zero=True, state=None):
    """The Trainer's sequence of events for ``steps`` optimizer steps."""
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        logging_steps=5,
        save_steps=10,
        max_steps=steps,
        report_to=[],
    )
    logger = Logger()
    handler = CallbackHandler([DefaultFlowCallback(), logger, callback], TinyModel(), None, None, None)
    state = state or TrainerState()
    state.is_world_process_zero = world_zero
    state.logging_steps, state.save_steps, state.max_steps = 5, 10, state.global_step + steps
    state.train_batch_size = 4
    control = TrainerControl()
    control = handler.on_init_end(args, state, control)
    control = handler.on_train_begin(args, state, control)
    current_flos = 0.0
    for _ in range(steps):
        control = handler.on_step_begin(args, state, control)
        state.global_step += 1
        state.num_input_tokens_seen += TOKENS_PER_STEP
        current_flos += 6.0 * PARAMS * TOKENS_PER_STEP
        state.epoch = state.global_step / steps
        control = handler.on_step_end(args, state, control)
        if control.should_log:
            state.total_flos += current_flos  # Trainer.store_flos
            current_flos = 0.0
            logs = {"loss": 1.0, "learning_rate": 1e-4, "epoch": state.epoch}
            state.log_history.append({**logs, "step": state.global_step})
            control = handler.on_log(args, state, control, logs)
        if control.should_save:
            control = handler.on_save(args, state, control)
    control = handler.on_train_end(args, state, control)
    return handler, logger, state


def test_progress_flops_and_cost_reach_the_agent_and_the_loggers(use_agent, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUCOST_JOB_ID", "hf-run")
    callback = GpucostCallback(interval=0)
    handler, logger, state = train(tmp_path, callback)
    p = use_agent.wait_for_progress("hf-run", steps=20)
    assert p["tokens"] == 20 * TOKENS_PER_STEP
    assert p["samples"] == 20 * 4 * 2
    # The Trainer's own estimate: its FLOPs total over its tokens.
    assert p["flops_per_token"] == pytest.approx(6.0 * PARAMS)
    assert p["model_flop"] == pytest.approx(6.0 * PARAMS * 20 * TOKENS_PER_STEP, rel=1e-9)
    # The callback went first, so the loggers before it in the list saw its figures.
    assert handler.callbacks[0] is callback
    costs = [log["gpucost/cost"] for log in logger.logged if "gpucost/cost" in log]
    assert len(costs) == len(logger.logged) == 4
    assert costs[-1] > 0 and costs == sorted(costs)
    last = logger.logged[-1]
    assert last["gpucost/cost_per_1m_tokens"] > 0
    assert 0 < last["gpucost/mfu"]
    # trainer_state.json keeps them too.
    assert state.log_history[-1]["gpucost/cost"] == last["gpucost/cost"]


def test_only_the_world_process_zero_reports(use_agent, monkeypatch, tmp_path):
    monkeypatch.setenv("GPUCOST_JOB_ID", "hf-run")
    before = use_agent.job("hf-run")["progress"]
    _, logger, _ = train(tmp_path, GpucostCallback(interval=0), world_zero=False)
    assert use_agent.job("hf-run")["progress"] == before
    assert not any("gpucost/cost" in log for log in logger.logged)


def test_a_resumed_run_counts_from_its_checkpoint(use_agent, monkeypatch, tmp_path):
    # A new job (GPUCOST_JOB_ID of a job registered for this run) resuming at step 20 of an
    # earlier one reports only what it does itself.
    with __import__("gpucost").track(name="resumed", job_id="hf-resumed"):
        use_agent.wait_for_job("hf-resumed")
        resumed = TrainerState(global_step=20, num_input_tokens_seen=20 * TOKENS_PER_STEP)
        resumed.total_flos = 6.0 * PARAMS * 20 * TOKENS_PER_STEP
        train(tmp_path, GpucostCallback(interval=0), steps=10, state=resumed)
        p = use_agent.wait_for_progress("hf-resumed", steps=10)
        assert p["tokens"] == 10 * TOKENS_PER_STEP
        assert p["samples"] == 10 * 4 * 2


def test_flops_given_by_the_user_win(use_agent, monkeypatch, tmp_path):
    with __import__("gpucost").track(name="given", job_id="hf-given"):
        use_agent.wait_for_job("hf-given")
        train(tmp_path, GpucostCallback(flops_per_step=1e12, interval=0), steps=5)
        p = use_agent.wait_for_progress("hf-given", steps=5)
        assert p["flops_per_step"] == 1e12 and p["flops_per_token"] is None
        assert p["model_flop"] == pytest.approx(5e12)


def test_a_hook_never_raises_into_the_trainer(caplog, tmp_path):
    callback = GpucostCallback()
    # Objects no Trainer would pass: one warning, no exception.
    assert callback.on_log(None, object(), None, logs={}) is None
    assert callback.on_train_begin(None, None, None) is None
    assert callback.on_save(None, None, None) is None
    assert [r.levelname for r in caplog.records].count("WARNING") == 3
