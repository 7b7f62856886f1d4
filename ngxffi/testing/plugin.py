"""The pytest plugin (entry point ``pytest11``: ``ngxffi = ngxffi.testing.plugin``):
the helpers of :mod:`ngxffi.testing` as fixtures of the same names, undone at the
end of the test whatever happens.

* ``nofile_limit(n)`` sets the soft RLIMIT_NOFILE until the test ends;
* ``hold_fds(leave=k)`` holds every free descriptor but ``k`` until the test's call
  ends, and returns their numbers: they are released before pytest reports a failure
  (it needs descriptors to read the test's source);
* ``exhaust(cmd, ...)`` is :func:`ngxffi.testing.exhaust` (each server it starts is
  stopped before it returns).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator

import pytest

from ngxffi import testing

__all__ = ["exhaust", "hold_fds", "nofile_limit", "pytest_runtest_call"]

_HELD = pytest.StashKey[contextlib.ExitStack]()


@pytest.fixture(name="nofile_limit")
def nofile_limit() -> Iterator[Callable[[int], int]]:
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(testing.nofile_limit(n))


@pytest.fixture(name="hold_fds")
def hold_fds(request: pytest.FixtureRequest) -> Iterator[Callable[..., list[int]]]:
    with contextlib.ExitStack() as stack:
        request.node.stash[_HELD] = stack
        yield lambda leave=0: stack.enter_context(testing.hold_fds(leave))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Release ``hold_fds``'s placeholders as soon as the test's call ends."""
    yield
    stack = item.stash.get(_HELD, None)
    if stack is not None:
        stack.close()


@pytest.fixture(name="exhaust")
def exhaust() -> Callable[..., testing.ExhaustResult]:
    return testing.exhaust
