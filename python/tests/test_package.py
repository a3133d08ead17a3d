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
