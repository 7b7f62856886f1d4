"""Helpers for writing fd-exhaustion tests, and the pytest plugin that serves them
as fixtures (:mod:`ngxffi.testing.plugin`, registered through the ``pytest11`` entry
point: installing ngxffi is enough).

* :func:`nofile_limit` lowers this process's soft RLIMIT_NOFILE for a block;
* :func:`hold_fds` takes every free descriptor but ``leave`` for a block, so the code
  under test meets EMFILE at once, without opening thousands of sockets itself;
* :func:`exhaust` is ``ngxffi exhaust`` as a function: a server (a command, or a
  built-in preset) under RLIMIT_NOFILE, the waves of clients, an
  :class:`~ngxffi.lab.ExhaustResult` whose attributes are the ``--json`` keys.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shlex
from collections.abc import Iterator, Sequence

from ngxffi.event.listening import Listening
from ngxffi.lab import PRESETS, ExhaustResult, LabError, Options, Target, preset
from ngxffi.lab.experiment import exhaust as _exhaust
from ngxffi.lab.fds import free_fds
from ngxffi.lab.options import START_TIMEOUT_S

__all__ = ["ExhaustResult", "LabError", "exhaust", "hold_fds", "nofile_limit"]


@contextlib.contextmanager
def nofile_limit(n: int) -> Iterator[int]:
    """Set this process's soft RLIMIT_NOFILE to ``n`` for the block, then restore
    it; yields ``n``. Descriptors already open above ``n`` stay open (the kernel only
    refuses new ones); ``n`` above the hard limit is a ValueError."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if n < 0 or (hard != resource.RLIM_INFINITY and n > hard):
        raise ValueError(f"nofile_limit({n}): the soft limit must be 0..{hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))
    try:
        yield n
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextlib.contextmanager
def hold_fds(leave: int = 0) -> Iterator[list[int]]:
    """Open placeholders (``/dev/null``, close-on-exec) until only ``leave``
    descriptors are free, and close them after the block; yields their numbers.
    ValueError when fewer than ``leave`` are free to begin with."""
    free = free_fds()
    if leave < 0 or leave > free:
        raise ValueError(f"hold_fds(leave={leave}): {free} descriptors are free")
    held: list[int] = []
    try:
        for _ in range(free - leave):
            held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        yield held
    finally:
        for fd in held:
            os.close(fd)


def exhaust(
    cmd: str | Sequence[str] | Target,
    nofile: int = 64,
    clients: int = 300,
    hold: float = 2.0,
    *,
    nofile_hard: int | None = None,
    second_wave: int = 20,
    timeout: float = 60.0,
    path: str = "/",
    port: int | None = None,
    name: str | None = None,
    inject: Sequence[str] = (),
    inject_seed: int = 0,
    start_timeout: float = START_TIMEOUT_S,
    policy: str = Listening.emfile_policy,
    resume: bool = True,
    verbose: bool = False,
) -> ExhaustResult:
    """Run the lab on ``cmd``: a preset's name (``"ngxffi"``, ``"asyncio"``,
    ``"nginx"``; ``policy`` and ``resume`` are the ngxffi preset's), a command line
    (a list, or a string split as a shell would) where ``{port}`` is the port, or a
    :class:`~ngxffi.lab.Target`. The other keywords are the CLI's flags of the same
    names. Raises :class:`~ngxffi.lab.LabError` for what the CLI calls a usage error;
    a server that never listens is a result with ``started`` false."""
    if isinstance(cmd, Target):
        target = cmd
    elif isinstance(cmd, str) and cmd in PRESETS:
        target = preset(cmd, policy, resume, nofile)
    else:
        argv = tuple(shlex.split(cmd) if isinstance(cmd, str) else cmd)
        label = name or (os.path.basename(argv[0]) if argv else "server")
        target = Target(label, argv, port=port)
    options = Options(
        nofile=nofile,
        nofile_hard=nofile_hard,
        clients=clients,
        hold=hold,
        second_wave=second_wave,
        timeout=timeout,
        path=path,
        inject=tuple(inject),
        inject_seed=inject_seed,
        verbose=verbose,
        start_timeout=start_timeout,
    )
    return _exhaust(target, options)
