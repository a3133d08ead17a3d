"""What the package says: through :mod:`logging` (the ``gpucost`` logger), never the
:mod:`warnings` module, which a ``-W error`` setting would turn into an exception in the training
loop. Each kind of trouble is a warning once per process, then debug lines."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Set

log = logging.getLogger("gpucost")

_said: Set[str] = set()
_lock = threading.Lock()


def warn_once(kind: str, msg: str, *args: Any) -> None:
    """A warning the first time ``kind`` happens, a debug line after."""
    with _lock:
        first = kind not in _said
        _said.add(kind)
    log.log(logging.WARNING if first else logging.DEBUG, msg, *args)


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def forget() -> None:
    """Every kind may warn again (tests)."""
    with _lock:
        _said.clear()
