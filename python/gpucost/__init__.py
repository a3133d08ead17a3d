"""gpucost for training code: tell the node's gpucost agent how far a run got, and read what it
has cost so far.

- :func:`report_progress`: tokens, samples, steps and model FLOPs, cumulative, over the agent's
  unix socket; never raises into the training loop.
- :class:`track`: a job for a run not started by ``gpucost run``.
- :func:`current_cost`, :func:`current_job`: the job's cost so far, from the agent's read-only
  TCP API.
- ``gpucost.integrations.huggingface`` and ``gpucost.integrations.lightning``: callbacks that do
  all of this from a ``Trainer``.

Standard library only; Python 3.9 and later.
"""

from ._progress import report_progress
from ._track import current_cost, current_job, track

__version__ = "0.1.0"

__all__ = ["__version__", "current_cost", "current_job", "report_progress", "track"]
