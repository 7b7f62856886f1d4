"""anyio's pytest plugin runs the tests here on asyncio, with loops from ngxffi's
loop factory."""

from __future__ import annotations

from typing import Any

import pytest

from ngxffi import selector


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return "asyncio", {"loop_factory": selector.new_event_loop}
