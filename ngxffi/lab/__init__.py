"""The fd-exhaustion lab: any server under RLIMIT_NOFILE, real clients, measured from
outside with psutil (``ngxffi exhaust`` is its command line, :mod:`ngxffi.testing`
its pytest face).

One module per step: :mod:`~ngxffi.lab.target` is what to test and
:mod:`~ngxffi.lab.presets` the built-in ones (:mod:`~ngxffi.lab.servers` their code),
:mod:`~ngxffi.lab.options` how, :mod:`~ngxffi.lab.child` starts and stops the server,
:mod:`~ngxffi.lab.clients` are the waves, :mod:`~ngxffi.lab.sampler` watches the
process tree, :mod:`~ngxffi.lab.fds` minds the lab's own descriptors,
:mod:`~ngxffi.lab.experiment` runs it all into an
:class:`~ngxffi.lab.result.ExhaustResult`, :mod:`~ngxffi.lab.report` and
:mod:`~ngxffi.lab.plot` show it. Above the event core and ``http/``; only ``cli/``
and ``testing/`` import it.
"""

from __future__ import annotations

from ngxffi.lab.experiment import exhaust
from ngxffi.lab.options import Options
from ngxffi.lab.presets import PRESETS, preset
from ngxffi.lab.result import ExhaustResult
from ngxffi.lab.target import LabError, Target

__all__ = [
    "PRESETS",
    "ExhaustResult",
    "LabError",
    "Options",
    "Target",
    "exhaust",
    "preset",
]
