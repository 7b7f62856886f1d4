"""The event core: events, actions, timers, posted queues, modules (≈ src/event)."""
