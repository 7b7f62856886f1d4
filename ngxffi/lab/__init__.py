"""The fd-exhaustion lab: any server under RLIMIT_NOFILE, real clients, measured from
outside with psutil (``ngxffi exhaust`` is its command line, :mod:`ngxffi.testing`
its pytest face).

One module per step: :mod:`~ngxffi.lab.target` starts the server and knows its
process tree, :mod:`~ngxffi.lab.clients` are the waves, :mod:`~ngxffi.lab.sampler`
watches the tree, :mod:`~ngxffi.lab.experiment` runs it all into an
:class:`~ngxffi.lab.experiment.ExhaustResult`, :mod:`~ngxffi.lab.report` and
:mod:`~ngxffi.lab.plot` show it; :mod:`~ngxffi.lab.servers` holds the built-in
servers. Above the event core and ``http/``; only ``cli/`` and ``testing/`` import it.
"""

from __future__ import annotations

from ngxffi.lab.experiment import ExhaustResult, Options, exhaust
from ngxffi.lab.target import PRESETS, LabError, Target, preset

__all__ = [
    "PRESETS",
    "ExhaustResult",
    "LabError",
    "Options",
    "Target",
    "exhaust",
    "preset",
]
