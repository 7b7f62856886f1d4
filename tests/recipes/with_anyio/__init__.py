"""The anyio recipe: its conftest.py's ``anyio_backend`` runs every ``anyio`` test on
asyncio with an NgxSelector loop."""
