"""The lab's own descriptors: how many are free, and room for its clients."""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Iterator

from ngxffi.lab.target import LabError


def free_fds() -> int:
    """How many descriptors this process can still open: the numbers below the soft
    limit that are not open (the kernel gives the lowest free one, and none at or
    above the limit)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    open_now = 0
    for name in os.listdir("/proc/self/fd"):  # one of them was the listing's own
        fd = int(name)
        with contextlib.suppress(OSError):
            os.fstat(fd)
            open_now += fd < soft
    return soft - open_now


@contextlib.contextmanager
def room_for(clients: int) -> Iterator[None]:
    """Raise this process's soft limit, for the block, so that ``clients`` more
    descriptors are free (each client holds one), then put it back; LabError when the
    hard limit does not allow it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    missing = clients - free_fds()
    if missing <= 0:
        yield
        return
    if hard != resource.RLIM_INFINITY and soft + missing > hard:
        raise LabError(
            f"the lab needs {clients} free descriptors for its clients and has "
            f"{clients - missing}; its hard limit ({hard}) allows no more"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft + missing, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
