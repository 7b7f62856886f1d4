"""The core: the cycle and its connection pool, logging, time (≈ nginx's src/core)."""
