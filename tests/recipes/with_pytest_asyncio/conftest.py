"""Every ``@pytest.mark.asyncio`` test here, and the async fixtures it uses, runs on
an NgxSelector loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest

from ngxffi import selector


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"ngxffi": selector.new_event_loop}
