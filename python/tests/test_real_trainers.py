"""The callbacks in the real ``transformers.Trainer`` and ``lightning.Trainer``, on the CPU,
against the real agent: a two-layer GPT-2 built from a config (nothing downloaded) and a linear
model. Skipped where torch, transformers or lightning is missing, which is the case in CI (torch
is a 5.6 GB install there); run them with ``pip install torch transformers accelerate lightning``
into the environment of the package's tests.
"""

from __future__ import annotations

import csv
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
L = pytest.importorskip("lightning")

import gpucost  # noqa: E402


def test_hugging_face_trainer(use_agent, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    from gpucost.integrations.huggingface import GpucostCallback

    class Recorder(TrainerCallback):
        """Before the gpucost callback in the list, as the Trainer's reporting callbacks are."""

        logged = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.logged.append(dict(logs or {}))

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=128, n_positions=32))
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 128, (64, 32))]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=12,
        logging_steps=4,
        save_steps=6,
        save_strategy="steps",
        include_num_input_tokens_seen=True,
        use_cpu=True,
        report_to=[],
        disable_tqdm=True,
    )
    with gpucost.track(name="real-hf", job_id="real-hf"):
        use_agent.wait_for_job("real-hf")
        trainer = Trainer(
            model=model, args=args, train_dataset=data, callbacks=[Recorder(), GpucostCallback(interval=0)]
        )
        trainer.train()
        p = use_agent.wait_for_progress("real-hf", steps=12)
    assert p["tokens"] == 12 * 4 * 32
    assert p["samples"] == 12 * 4
    assert p["flops_per_token"] == pytest.approx(6 * model.num_parameters(exclude_embeddings=True))
    figures = [log for log in Recorder.logged if "gpucost/cost" in log]
    assert figures and figures[-1]["gpucost/cost"] > 0
    assert "gpucost/mfu" in figures[-1]
    assert any("gpucost/cost" in h for h in trainer.state.log_history)


def test_lightning_trainer(use_agent, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader, TensorDataset

    from gpucost.integrations.lightning import GpucostCallback

    class Model(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(16, 1)
            self.flops_per_batch = 1e6

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(TensorDataset(torch.randn(64, 16), torch.randn(64, 1)), batch_size=8)
    logger = CSVLogger(save_dir=str(tmp_path))
    trainer = L.Trainer(
        max_steps=8,
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[GpucostCallback(interval=0), ModelCheckpoint(dirpath=str(tmp_path), every_n_train_steps=4)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with gpucost.track(name="real-pl", job_id="real-pl"):
        use_agent.wait_for_job("real-pl")
        trainer.fit(Model(), data)
        p = use_agent.wait_for_progress("real-pl", steps=8)
    assert p["samples"] == 64
    assert p["flops_per_step"] == 1e6
    assert p["model_flop"] == pytest.approx(8e6)
    with open(os.path.join(logger.log_dir, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("gpucost/cost") for r in rows)
