"""The pytest-asyncio recipe: its conftest.py gives every asyncio test an NgxSelector
loop (pytest-asyncio's ``pytest_asyncio_loop_factories`` hook, 1.4+)."""
