"""The framework recipes of docs/asyncio.md, run by tests/test_recipes.py: the apps
uvicorn and aiohttp serve, and two pytest configurations (pytest-asyncio's loop
factories hook, anyio's ``anyio_backend``), each in its own folder as a project's
tests would be. The suite does not collect this folder (tests/conftest.py): the
configurations are shown working by a pytest run of their own."""

from __future__ import annotations

import asyncio


def selector_name() -> str:
    """The class name of the running loop's selector: what each recipe answers, so a
    test sees which selector the framework really ran it on."""
    loop = asyncio.get_running_loop()
    return type(loop._selector).__name__  # type: ignore[attr-defined]
