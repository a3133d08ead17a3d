"""``GpucostCallback`` for Lightning, against the real agent.

Lightning imports torch, which does not fit CI (a 5.6 GB install, 2m20s measured). Where
``lightning`` is importable the real ``Callback`` base class is used; elsewhere a stand-in
module provides one. Either way the trainer is a stand-in built from Lightning's documented
callback API (``lightning.pytorch.callbacks.Callback``): it calls ``on_train_start(trainer,
pl_module)``, ``on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)`` after every
batch (``global_step`` counting optimizer steps, one per ``accumulate_grad_batches`` batches),
``on_save_checkpoint(trainer, pl_module, checkpoint)`` while a checkpoint is put together, and
``on_train_end(trainer, pl_module)``; it has ``global_rank``, ``world_size``,
``accumulate_grad_batches`` and ``loggers`` (each with ``log_metrics(metrics, step)``). Batches
are dicts of stand-in tensors (``shape``, ``numel()``). ``test_real_trainers.py`` runs the real
Lightning ``Trainer`` where torch is there.
"""

from __future__ import annotations

import importlib
import sys
import types

import pytest

import gpucost


@pytest.fixture(scope="module")
def integration():
    """``gpucost.integrations.lightning``, on the real Lightning or on a stand-in module."""
    added = []
    try:
        importlib.import_module("lightning.pytorch.callbacks")
    except ImportError:
        class Callback:
            """The documented hooks, doing nothing."""

            def on_train_start(self, trainer, pl_module):
                pass

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                pass

            def on_save_checkpoint(self, trainer, pl_module, checkpoint):
                pass

            def on_train_end(self, trainer, pl_module):
                pass

        for name in ("lightning", "lightning.pytorch", "lightning.pytorch.callbacks"):
            sys.modules[name] = types.ModuleType(name)
            added.append(name)
        sys.modules["lightning.pytorch.callbacks"].Callback = Callback
    sys.modules.pop("gpucost.integrations.lightning", None)
    module = importlib.import_module("gpucost.integrations.lightning")
    yield module
    sys.modules.pop("gpucost.integrations.lightning", None)
    for name in added:
        sys.modules.pop(name, None)


class Tensor:
    def __init__(self, *shape: int) -> None:
        self.shape = shape

    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class Logger:
    def __init__(self) -> None:
        self.metrics = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


class Module:
    """A LightningModule with ``flops_per_batch``, as ``ThroughputMonitor`` reads it."""

    flops_per_batch = 3e9


class Trainer:
    def __init__(self, callbacks, rank=0, world_size=2, accumulate=2) -> None:
        self.callbacks = callbacks
        self.global_rank = rank
        self.world_size = world_size
        self.accumulate_grad_batches = accumulate
        self.global_step = 0
        self.loggers = [Logger()]

    def fit(self, module, batches, save_every=None):
        for cb in self.callbacks:
            cb.on_train_start(self, module)
        for i, batch in enumerate(batches):
            if (i + 1) % self.accumulate_grad_batches == 0:
                self.global_step += 1
            for cb in self.callbacks:
                cb.on_train_batch_end(self, module, {"loss": 1.0}, batch, i)
            if save_every and (i + 1) % save_every == 0:
                for cb in self.callbacks:
                    cb.on_save_checkpoint(self, module, {})
        for cb in self.callbacks:
            cb.on_train_end(self, module)


def batches(n, size=8, length=64):
    return [{"input_ids": Tensor(size, length), "labels": Tensor(size, length)} for _ in range(n)]


def test_progress_flops_and_cost(integration, use_agent, monkeypatch):
    monkeypatch.setenv("GPUCOST_JOB_ID", "pl-run")
    cb = integration.GpucostCallback(interval=0)
    trainer = Trainer([cb])
    trainer.fit(Module(), batches(20), save_every=10)
    p = use_agent.wait_for_progress("pl-run", steps=10)
    # Counted on rank 0 for both ranks.
    assert p["samples"] == 20 * 8 * 2
    assert p["tokens"] == 20 * 8 * 64 * 2
    # flops_per_batch is one device's batch: a step is world size x accumulation batches.
    assert p["flops_per_step"] == 3e9 * 2 * 2
    assert p["model_flop"] == pytest.approx(10 * 3e9 * 4)
    logged = trainer.loggers[0].metrics
    assert logged and all("gpucost/cost" in m for _, m in logged)
    step, last = logged[-1]
    assert step == 10 and last["gpucost/cost"] > 0 and "gpucost/mfu" in last


def test_only_rank_zero_reports(integration, use_agent, monkeypatch):
    monkeypatch.setenv("GPUCOST_JOB_ID", "pl-run")
    before = use_agent.job("pl-run")["progress"]
    trainer = Trainer([integration.GpucostCallback(interval=0)], rank=1)
    trainer.fit(Module(), batches(4))
    assert use_agent.job("pl-run")["progress"] == before
    assert trainer.loggers[0].metrics == []


def test_a_checkpoint_is_reported_after_it_is_written(integration, monkeypatch):
    sent = []
    common = sys.modules["gpucost.integrations._common"]
    monkeypatch.setattr(common, "report_progress", lambda **kw: sent.append(kw) or True)
    monkeypatch.setattr(integration.Session, "cost_metrics", lambda self, force=False: {})
    cb = integration.GpucostCallback(interval=3600)
    Trainer([cb]).fit(Module(), batches(6), save_every=3)
    # The first batch (due), the batch after the first save, and the end after the second.
    assert [kw["checkpoint"] for kw in sent] == [False, True, True]
    assert sent[1]["steps"] == 2 and sent[-1]["steps"] == 3


def test_batches_without_tokens_and_given_counts(integration):
    assert integration.batch_size(Tensor(5, 3)) == 5
    assert integration.batch_size((Tensor(7, 2), Tensor(7))) == 7
    assert integration.batch_size({"x": [Tensor(3)]}) == 3
    assert integration.batch_size([1, 2, 3]) == 3
    assert integration.batch_size(object()) is None
    assert integration.input_tokens({"input_ids": Tensor(2, 10)}) == 20
    assert integration.input_tokens((Tensor(2, 10),)) is None


def test_fits_in_one_process_add_up(integration, use_agent, monkeypatch):
    with gpucost.track(name="two-fits", job_id="pl-two-fits"):
        use_agent.wait_for_job("pl-two-fits")
        cb = integration.GpucostCallback(interval=0, tokens_per_sample=100, flops_per_token=6e6)
        Trainer([cb], world_size=1, accumulate=1).fit(Module(), [(Tensor(4, 100),)] * 3)
        Trainer([cb], world_size=1, accumulate=1).fit(Module(), [(Tensor(4, 100),)] * 2)
        p = use_agent.wait_for_progress("pl-two-fits", steps=5)
        assert (p["samples"], p["tokens"]) == (20, 2000)
        assert p["flops_per_token"] == 6e6


def test_a_hook_never_raises_into_the_trainer(integration, caplog):
    cb = integration.GpucostCallback()
    assert cb.on_train_start(object(), None) is None
    assert cb.on_train_batch_end(object(), None, None, None, 0) is None
    assert cb.on_train_end(None, None) is None
    assert [r.levelname for r in caplog.records].count("WARNING") == 3
