"""The package itself: Python 3.9 grammar, standard library only, the agent's version."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import gpucost

PACKAGE = Path(gpucost.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]


def test_every_module_parses_as_python_3_9():
    for path in sorted(PACKAGE.rglob("*.py")):
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))


def test_importing_the_core_imports_no_library():
    code = (
        "import sys, gpucost, gpucost.integrations\n"
        "loaded = {'torch', 'transformers', 'lightning', 'pytorch_lightning', 'numpy'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_version_is_the_agents():
    cargo = (REPO / "Cargo.toml").read_text()
    workspace = re.search(r'^\[workspace\.package\][^\[]*?^version = "([^"]+)"', cargo, re.M | re.S)
    assert workspace, "no [workspace.package] version in Cargo.toml"
    assert gpucost.__version__ == workspace.group(1)


def test_declared_gpus_follow_gpucost_runs_rules(monkeypatch):
    """Issue 15: UUIDs first, then Slurm's indices; CUDA_VISIBLE_DEVICES's indices inside a
    Slurm job count the job's own GPUs from 0 and are not declared (as ``gpucost run``)."""
    from gpucost._track import _visible_gpus

    uuid = "GPU-8ab4c2d0-1e3f-4a5b-9c8d-7e6f5a4b3c2d"
    cases = [
        ({"CUDA_VISIBLE_DEVICES": uuid, "SLURM_JOB_GPUS": "3"}, [uuid]),
        ({"SLURM_JOB_ID": "41871", "SLURM_STEP_GPUS": "3", "CUDA_VISIBLE_DEVICES": "0"}, ["3"]),
        ({"SLURM_JOB_ID": "41871", "CUDA_VISIBLE_DEVICES": "0,1"}, None),
        ({"NVIDIA_VISIBLE_DEVICES": "1, 2"}, ["1", "2"]),
        ({"NVIDIA_VISIBLE_DEVICES": "all"}, None),
        ({}, None),
    ]
    names = ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "SLURM_JOB_ID", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
    for env, want in cases:
        for n in names:
            monkeypatch.delenv(n, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert _visible_gpus() == want, env
